//! I/O APIC (82093AA register model, version 0x20 with the EOI register).
//!
//! 24 pins, MMIO at 0xfec00000: IOREGSEL at +0x00, IOWIN at +0x10, EOI at +0x40. Registers
//! through the window: 0x00 ID, 0x01 version (0x00170020: 24 entries, version 0x20),
//! 0x02 arbitration ID, 0x10 + 2n / 0x11 + 2n the low/high halves of redirection entry n.
//!
//! A delivered interrupt becomes a [`virt::InterruptRequest`] handed to an [`InterruptSink`]
//! (the machine forwards it to `Partition::request_interrupt`). Edge-triggered pins deliver on a
//! rising edge while unmasked (an edge while masked is lost). Level-triggered pins deliver while
//! asserted and unmasked with remote IRR clear, set remote IRR, and deliver again after the
//! local APIC's EOI for that vector ([`IoApic::eoi`], or the EOI register) if still asserted.
//! Input levels are logical "asserted" values: the polarity bit is stored but not applied,
//! because devices here drive assertion, not wire voltage (QEMU does the same).

use std::sync::Arc;

use device_api::IoError;
use device_api::IoResult;
use device_api::Mmio;
use parking_lot::Mutex;
use virt::DeliveryMode;
use virt::InterruptRequest;

/// Default guest-physical base.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// Size of the MMIO window.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Number of pins (GSIs 0-23).
pub const PIN_COUNT: usize = 24;
/// The version register: max redirection entry 23, version 0x20.
pub const VERSION: u32 = ((PIN_COUNT as u32 - 1) << 16) | 0x20;

const REG_SELECT: u64 = 0x00;
const REG_WINDOW: u64 = 0x10;
const REG_EOI: u64 = 0x40;

const IDX_ID: u8 = 0x00;
const IDX_VERSION: u8 = 0x01;
const IDX_ARBITRATION: u8 = 0x02;
const IDX_REDIRECT: u8 = 0x10;

const RTE_VECTOR: u64 = 0xff;
const RTE_DEST_LOGICAL: u64 = 1 << 11;
const RTE_DELIVERY_STATUS: u64 = 1 << 12;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;
/// Bits the guest may write: vector, delivery mode, destination mode, polarity, trigger, mask,
/// and the 8-bit destination.
const RTE_WRITABLE: u64 = 0xff00_0000_0001_afff;

/// Where interrupt messages go: the machine, which hands them to the local APICs.
pub trait InterruptSink: Send + Sync {
    /// Delivers one interrupt message. Called with the sending device locked: must not block
    /// or call back into it.
    fn request_interrupt(&self, request: InterruptRequest);
}

/// An [`InterruptSink`] that records requests, for tests.
#[derive(Debug, Default)]
pub struct TestInterruptSink {
    requests: Mutex<Vec<InterruptRequest>>,
}

impl TestInterruptSink {
    /// A new recorder behind an `Arc`.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Takes the requests recorded so far.
    pub fn take(&self) -> Vec<InterruptRequest> {
        std::mem::take(&mut *self.requests.lock())
    }
}

impl InterruptSink for TestInterruptSink {
    fn request_interrupt(&self, request: InterruptRequest) {
        self.requests.lock().push(request);
    }
}

/// The I/O APIC.
pub struct IoApic {
    // Fixed configuration.
    base: u64,
    // Runtime glue.
    sink: Arc<dyn InterruptSink>,
    // Volatile state.
    id: u8,
    select: u8,
    redirect: [u64; PIN_COUNT],
    /// Asserted pins, bit n = pin n.
    levels: u32,
}

impl std::fmt::Debug for IoApic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoApic")
            .field("id", &self.id)
            .field("levels", &format_args!("{:#x}", self.levels))
            .finish()
    }
}

impl IoApic {
    /// An I/O APIC with APIC ID `id` at `base`, delivering to `sink`.
    pub fn new(id: u8, base: u64, sink: Arc<dyn InterruptSink>) -> Self {
        Self {
            base,
            sink,
            id: id & 0x0f,
            select: 0,
            redirect: [RTE_MASKED; PIN_COUNT],
            levels: 0,
        }
    }

    /// The MMIO range to register.
    pub fn mmio_range(&self) -> std::ops::RangeInclusive<u64> {
        self.base..=self.base + IOAPIC_SIZE - 1
    }

    /// Platform reset: every entry masked, pin levels kept.
    pub fn reset(&mut self) {
        self.select = 0;
        self.redirect = [RTE_MASKED; PIN_COUNT];
    }

    /// Redirection entry `pin` (for tests and diagnostics).
    pub fn redirection(&self, pin: usize) -> Option<u64> {
        self.redirect.get(pin).copied()
    }

    /// Sets the (logical) level of input `pin`. Pins beyond 23 are ignored.
    pub fn set_irq(&mut self, pin: u32, asserted: bool) {
        let Some(idx) = usize::try_from(pin).ok().filter(|&i| i < PIN_COUNT) else {
            tracing::debug!(pin, "ioapic: no such pin");
            return;
        };
        let bit = 1u32 << idx;
        let was = self.levels & bit != 0;
        if asserted {
            self.levels |= bit;
        } else {
            self.levels &= !bit;
        }
        let entry = self.redirect[idx];
        if entry & RTE_LEVEL != 0 {
            if asserted {
                self.service_level(idx);
            }
        } else if asserted && !was && entry & RTE_MASKED == 0 {
            self.deliver(idx);
        }
    }

    /// A local APIC's EOI broadcast for `vector`: clears remote IRR of level-triggered entries
    /// with that vector and delivers again those still asserted.
    pub fn eoi(&mut self, vector: u8) {
        for idx in 0..PIN_COUNT {
            let entry = self.redirect[idx];
            if entry & RTE_REMOTE_IRR != 0 && (entry & RTE_VECTOR) as u8 == vector {
                self.redirect[idx] &= !RTE_REMOTE_IRR;
                self.service_level(idx);
            }
        }
    }

    /// Delivers a level-triggered pin if it is asserted, unmasked and not awaiting EOI.
    fn service_level(&mut self, idx: usize) {
        let entry = self.redirect[idx];
        if entry & RTE_LEVEL != 0
            && entry & (RTE_MASKED | RTE_REMOTE_IRR) == 0
            && self.levels & (1 << idx) != 0
            && self.deliver(idx)
        {
            self.redirect[idx] |= RTE_REMOTE_IRR;
        }
    }

    /// Sends entry `idx`'s message. Returns whether one was sent.
    fn deliver(&mut self, idx: usize) -> bool {
        let entry = self.redirect[idx];
        let vector = (entry & RTE_VECTOR) as u8;
        let delivery_mode = match (entry >> 8) & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            7 => DeliveryMode::ExtInt,
            mode => {
                tracing::debug!(pin = idx, mode, "ioapic: reserved delivery mode, dropped");
                return false;
            }
        };
        if matches!(
            delivery_mode,
            DeliveryMode::Fixed | DeliveryMode::LowestPriority
        ) && vector < 0x10
        {
            tracing::debug!(pin = idx, vector, "ioapic: illegal vector, dropped");
            return false;
        }
        self.sink.request_interrupt(InterruptRequest {
            destination: (entry >> 56) as u32,
            logical_destination: entry & RTE_DEST_LOGICAL != 0,
            delivery_mode,
            vector,
            level_triggered: entry & RTE_LEVEL != 0,
        });
        true
    }

    fn read_indirect(&self) -> u32 {
        match self.select {
            IDX_ID | IDX_ARBITRATION => u32::from(self.id) << 24,
            IDX_VERSION => VERSION,
            n if n >= IDX_REDIRECT => {
                let idx = usize::from((n - IDX_REDIRECT) / 2);
                match self.redirect.get(idx) {
                    Some(&e) if n & 1 == 0 => e as u32,
                    Some(&e) => (e >> 32) as u32,
                    None => 0,
                }
            }
            _ => 0,
        }
    }

    fn write_indirect(&mut self, value: u32) {
        match self.select {
            IDX_ID => self.id = ((value >> 24) & 0x0f) as u8,
            n if n >= IDX_REDIRECT => {
                let idx = usize::from((n - IDX_REDIRECT) / 2);
                let Some(&old) = self.redirect.get(idx) else {
                    return;
                };
                let merged = if n & 1 == 0 {
                    (old & !0xffff_ffff) | u64::from(value)
                } else {
                    (old & 0xffff_ffff) | (u64::from(value) << 32)
                };
                let mut new =
                    (merged & RTE_WRITABLE) | (old & (RTE_REMOTE_IRR | RTE_DELIVERY_STATUS));
                if new & RTE_LEVEL == 0 {
                    new &= !RTE_REMOTE_IRR;
                }
                self.redirect[idx] = new;
                // Unmasking (or switching to level) with the pin asserted delivers now.
                self.service_level(idx);
            }
            _ => {}
        }
    }
}

impl Mmio for IoApic {
    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> IoResult {
        let offset = addr
            .checked_sub(self.base)
            .ok_or(IoError::InvalidRegister)?;
        let value = match (offset, data.len()) {
            (REG_SELECT, 1..=4) => u32::from(self.select),
            (REG_WINDOW, 4) => self.read_indirect(),
            (REG_SELECT | REG_WINDOW, _) => return Err(IoError::InvalidAccessSize),
            (REG_EOI, 4) => 0,
            _ if offset < IOAPIC_SIZE => 0,
            _ => return Err(IoError::InvalidRegister),
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
        data[n..].fill(0);
        Ok(())
    }

    fn mmio_write(&mut self, addr: u64, data: &[u8]) -> IoResult {
        let offset = addr
            .checked_sub(self.base)
            .ok_or(IoError::InvalidRegister)?;
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        let value = u32::from_le_bytes(bytes);
        match (offset, data.len()) {
            (REG_SELECT, 1..=4) => self.select = value as u8,
            (REG_WINDOW, 4) => self.write_indirect(value),
            (REG_EOI, 4) => self.eoi(value as u8),
            (REG_SELECT | REG_WINDOW | REG_EOI, _) => return Err(IoError::InvalidAccessSize),
            _ if offset < IOAPIC_SIZE => {}
            _ => return Err(IoError::InvalidRegister),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rig() -> (IoApic, Arc<TestInterruptSink>) {
        let sink = TestInterruptSink::new();
        (IoApic::new(4, IOAPIC_BASE, sink.clone()), sink)
    }

    fn write_reg(a: &mut IoApic, index: u8, value: u32) {
        a.mmio_write(IOAPIC_BASE, &u32::from(index).to_le_bytes())
            .unwrap();
        a.mmio_write(IOAPIC_BASE + REG_WINDOW, &value.to_le_bytes())
            .unwrap();
    }

    fn read_reg(a: &mut IoApic, index: u8) -> u32 {
        a.mmio_write(IOAPIC_BASE, &[index]).unwrap();
        let mut b = [0u8; 4];
        a.mmio_read(IOAPIC_BASE + REG_WINDOW, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    fn program(a: &mut IoApic, pin: u8, low: u32, dest: u8) {
        write_reg(a, IDX_REDIRECT + 2 * pin + 1, u32::from(dest) << 24);
        write_reg(a, IDX_REDIRECT + 2 * pin, low);
    }

    #[test]
    fn id_version_and_reset_state() {
        let (mut a, _) = rig();
        assert_eq!(read_reg(&mut a, IDX_ID), 4 << 24);
        assert_eq!(read_reg(&mut a, IDX_VERSION), 0x0017_0020);
        write_reg(&mut a, IDX_ID, 0xff00_0000);
        assert_eq!(read_reg(&mut a, IDX_ID), 0x0f00_0000);
        assert_eq!(read_reg(&mut a, IDX_ARBITRATION), 0x0f00_0000);
        for pin in 0..24 {
            assert_eq!(read_reg(&mut a, IDX_REDIRECT + 2 * pin), 1 << 16, "masked");
        }
        assert_eq!(read_reg(&mut a, IDX_REDIRECT + 48), 0, "past the table");
    }

    #[test]
    fn edge_pin_delivers_on_rising_edges_only_when_unmasked() {
        let (mut a, sink) = rig();
        a.set_irq(2, true);
        a.set_irq(2, false);
        assert!(sink.take().is_empty(), "masked edge is lost");
        program(&mut a, 2, 0x30, 1);
        assert!(
            sink.take().is_empty(),
            "unmasking an edge pin delivers nothing"
        );
        a.set_irq(2, true);
        a.set_irq(2, true);
        let got = sink.take();
        assert_eq!(
            got,
            vec![InterruptRequest {
                destination: 1,
                logical_destination: false,
                delivery_mode: DeliveryMode::Fixed,
                vector: 0x30,
                level_triggered: false,
            }]
        );
        a.set_irq(2, false);
        a.set_irq(2, true);
        assert_eq!(sink.take().len(), 1);
    }

    #[test]
    fn level_pin_waits_for_eoi_and_redelivers_while_asserted() {
        let (mut a, sink) = rig();
        program(&mut a, 9, 0x41 | (1 << 15), 0);
        a.set_irq(9, true);
        assert_eq!(sink.take().len(), 1);
        assert_ne!(
            read_reg(&mut a, IDX_REDIRECT + 18) & (1 << 14),
            0,
            "remote IRR"
        );
        a.set_irq(9, true);
        assert!(sink.take().is_empty(), "remote IRR blocks");
        a.eoi(0x42);
        assert!(sink.take().is_empty(), "other vector");
        a.eoi(0x41);
        assert_eq!(sink.take().len(), 1, "still asserted");
        a.set_irq(9, false);
        a.mmio_write(IOAPIC_BASE + REG_EOI, &0x41u32.to_le_bytes())
            .unwrap();
        assert!(sink.take().is_empty());
        assert_eq!(read_reg(&mut a, IDX_REDIRECT + 18) & (1 << 14), 0);
    }

    #[test]
    fn unmasking_an_asserted_level_pin_delivers() {
        let (mut a, sink) = rig();
        a.set_irq(20, true);
        program(&mut a, 20, 0x55 | (1 << 15) | (1 << 16), 0);
        assert!(sink.take().is_empty());
        write_reg(
            &mut a,
            IDX_REDIRECT + 40,
            0x55 | (1 << 15) | (1 << 11) | (1 << 8),
        );
        let got = sink.take();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].delivery_mode, DeliveryMode::LowestPriority);
        assert!(got[0].logical_destination);
        assert!(got[0].level_triggered);
    }

    #[test]
    fn read_only_bits_are_preserved_and_edge_clears_remote_irr() {
        let (mut a, sink) = rig();
        program(&mut a, 5, 0x60 | (1 << 15), 0);
        a.set_irq(5, true);
        sink.take();
        // Guest writes try to clear remote IRR: ignored.
        write_reg(&mut a, IDX_REDIRECT + 10, 0x60 | (1 << 15));
        assert_ne!(read_reg(&mut a, IDX_REDIRECT + 10) & (1 << 14), 0);
        write_reg(&mut a, IDX_REDIRECT + 10, 0x60);
        assert_eq!(read_reg(&mut a, IDX_REDIRECT + 10) & (1 << 14), 0);
    }

    #[test]
    fn special_delivery_modes_and_illegal_vectors() {
        let (mut a, sink) = rig();
        program(&mut a, 0, 7 << 8, 0);
        program(&mut a, 1, 4 << 8, 0);
        program(&mut a, 3, 0x05, 0);
        program(&mut a, 4, (3 << 8) | 0x40, 0);
        for pin in [0, 1, 3, 4] {
            a.set_irq(pin, true);
        }
        let modes: Vec<_> = sink.take().iter().map(|r| r.delivery_mode).collect();
        assert_eq!(modes, vec![DeliveryMode::ExtInt, DeliveryMode::Nmi]);
    }

    #[test]
    fn bad_accesses() {
        let (mut a, _) = rig();
        let mut b2 = [0u8; 2];
        assert_eq!(
            a.mmio_read(IOAPIC_BASE + REG_WINDOW, &mut b2),
            Err(IoError::InvalidAccessSize)
        );
        let mut b4 = [0xffu8; 4];
        a.mmio_read(IOAPIC_BASE + 0x20, &mut b4).unwrap();
        assert_eq!(b4, [0; 4]);
        assert_eq!(
            a.mmio_write(IOAPIC_BASE + IOAPIC_SIZE, &[0; 4]),
            Err(IoError::InvalidRegister)
        );
        a.set_irq(24, true);
        a.set_irq(u32::MAX, true);
    }

    #[test]
    fn garbage_never_panics() {
        let (mut a, sink) = rig();
        let mut x: u64 = 0xdead_beef_cafe_f00d;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let offset = [0u64, 0x10, 0x40, 0x20, 0xfff][(x % 5) as usize];
            let len = [1usize, 2, 4, 8][((x >> 4) % 4) as usize];
            let bytes = (x >> 8).to_le_bytes();
            match (x >> 12) % 4 {
                0 => {
                    let _ = a.mmio_write(IOAPIC_BASE + offset, &bytes[..len]);
                }
                1 => {
                    let mut b = [0u8; 8];
                    let _ = a.mmio_read(IOAPIC_BASE + offset, &mut b[..len]);
                }
                2 => a.set_irq(((x >> 20) % 30) as u32, x & (1 << 40) != 0),
                _ => a.eoi((x >> 24) as u8),
            }
            sink.take();
        }
    }
}
