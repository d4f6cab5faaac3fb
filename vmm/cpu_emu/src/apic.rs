//! The local APIC (xAPIC MMIO and x2APIC MSRs), one per processor.
//!
//! # Architecture
//! The IRR lives in [`VpShared`](crate::partition::VpShared) as atomics, because devices and
//! other processors set bits from their threads; everything else (ISR, TMR, TPR, LVTs, the
//! timer, ICR) belongs to the processor's thread. Interrupt acceptance happens at block
//! boundaries in the run loop.
//!
//! The timer counts at the partition's APIC frequency (the crystal frequency CPUID leaf 0x15
//! reports) derived from the machine's `VmClock`; one-shot, periodic and TSC-deadline modes.
//! Register layout per the Intel SDM vol. 3, chapter 11 ("Advanced Programmable Interrupt
//! Controller").

use std::sync::atomic::Ordering;

use virt::DeliveryMode;
use virt::ExitHandler;
use virt::InterruptRequest;

use crate::cpu::Cpu;

pub(crate) const APIC_BASE_BSP: u64 = 1 << 8;
pub(crate) const APIC_BASE_EXTD: u64 = 1 << 10;
pub(crate) const APIC_BASE_ENABLE: u64 = 1 << 11;

const LVT_TIMER: usize = 0;
const LVT_THERMAL: usize = 1;
const LVT_PERF: usize = 2;
const LVT_LINT0: usize = 3;
const LVT_LINT1: usize = 4;
const LVT_ERROR: usize = 5;
const LVT_CMCI: usize = 6;
const LVT_MASKED: u32 = 1 << 16;

/// The processor-owned part of a local APIC.
#[derive(Debug, Clone)]
pub(crate) struct LocalApic {
    pub base_msr: u64,
    pub id: u32,
    pub tpr: u32,
    pub isr: [u32; 8],
    pub tmr: [u32; 8],
    pub svr: u32,
    pub lvt: [u32; 7],
    pub esr: u32,
    pub icr: u64,
    pub ldr: u32,
    pub dfr: u32,
    pub timer_initial: u32,
    pub timer_divide: u32,
    /// VM time (ns) when the current count was last loaded.
    pub timer_start_ns: u64,
    /// When the timer next fires (VM ns), if armed.
    pub timer_deadline_ns: Option<u64>,
    pub tsc_deadline: u64,
}

impl LocalApic {
    pub(crate) fn new(index: u32) -> LocalApic {
        let mut a = LocalApic {
            base_msr: 0,
            id: index,
            tpr: 0,
            isr: [0; 8],
            tmr: [0; 8],
            svr: 0xff,
            lvt: [LVT_MASKED; 7],
            esr: 0,
            icr: 0,
            ldr: 0,
            dfr: 0xffff_ffff,
            timer_initial: 0,
            timer_divide: 0,
            timer_start_ns: 0,
            timer_deadline_ns: None,
            tsc_deadline: 0,
        };
        a.reset();
        a
    }

    /// RESET/INIT state (the APIC ID and base address survive INIT on real hardware; here the
    /// base MSR returns to its default, which every firmware expects anyway).
    pub(crate) fn reset(&mut self) {
        self.base_msr =
            0xfee0_0000 | APIC_BASE_ENABLE | if self.id == 0 { APIC_BASE_BSP } else { 0 };
        self.tpr = 0;
        self.isr = [0; 8];
        self.tmr = [0; 8];
        self.svr = 0xff;
        self.lvt = [LVT_MASKED; 7];
        if self.id == 0 {
            // Virtual-wire mode on the bootstrap processor, as KVM and QEMU reset it, so the
            // PIC reaches the BSP before firmware programs the APIC.
            self.lvt[LVT_LINT0] = 0x700;
        }
        self.esr = 0;
        self.icr = 0;
        self.ldr = 0;
        self.dfr = 0xffff_ffff;
        self.timer_initial = 0;
        self.timer_divide = 0;
        self.timer_deadline_ns = None;
        self.tsc_deadline = 0;
    }

    pub(crate) fn set_tpr_from_cr8(&mut self, cr8: u64) {
        self.tpr = ((cr8 & 0xf) << 4) as u32;
    }

    pub(crate) fn cr8(&self) -> u64 {
        u64::from(self.tpr >> 4)
    }

    pub(crate) fn hw_enabled(&self) -> bool {
        self.base_msr & APIC_BASE_ENABLE != 0
    }

    pub(crate) fn x2apic(&self) -> bool {
        self.base_msr & APIC_BASE_EXTD != 0
    }

    pub(crate) fn sw_enabled(&self) -> bool {
        self.hw_enabled() && self.svr & 0x100 != 0
    }

    fn highest_isr(&self) -> Option<u8> {
        (0..8).rev().find_map(|i| {
            let w = self.isr[i];
            (w != 0).then(|| (i * 32 + 31 - w.leading_zeros() as usize) as u8)
        })
    }

    /// Processor priority register.
    pub(crate) fn ppr(&self) -> u32 {
        let isrv = self.highest_isr().map_or(0, |v| u32::from(v) & 0xf0);
        if (self.tpr & 0xf0) >= isrv {
            self.tpr
        } else {
            isrv
        }
    }

    fn divisor(&self) -> u64 {
        let d = self.timer_divide & 0xb;
        let code = (d & 3) | ((d >> 1) & 4);
        if code == 7 { 1 } else { 2u64 << code }
    }

    fn timer_mode(&self) -> u32 {
        (self.lvt[LVT_TIMER] >> 17) & 3
    }
}

/// Highest set bit of a 256-bit register held in atomics.
fn highest_atomic(r: &[std::sync::atomic::AtomicU32; 8]) -> Option<u8> {
    (0..8).rev().find_map(|i| {
        let w = r[i].load(Ordering::Acquire);
        (w != 0).then(|| (i * 32 + 31 - w.leading_zeros() as usize) as u8)
    })
}

impl Cpu {
    fn vp_shared(&self) -> &crate::partition::VpShared {
        &self.shared.vps[self.index as usize]
    }

    /// Publishes the state other processors use for destination matching and arbitration.
    fn apic_publish(&self) {
        let s = self.vp_shared();
        s.apic_id.store(
            if self.apic.x2apic() {
                self.apic.id
            } else {
                self.apic.id & 0xff
            },
            Ordering::Relaxed,
        );
        s.ldr.store(self.apic.ldr, Ordering::Relaxed);
        s.dfr.store(self.apic.dfr, Ordering::Relaxed);
        s.tpr.store(self.apic.tpr, Ordering::Relaxed);
        s.apic_enabled
            .store(self.apic.sw_enabled(), Ordering::Release);
    }

    /// Writes IA32_APIC_BASE without checks (set_sregs, reset).
    pub(crate) fn apic_base_write_internal(&mut self, v: u64) {
        self.apic.base_msr = v;
        if self.apic.x2apic() {
            self.apic.ldr = ((self.apic.id >> 4) << 16) | (1 << (self.apic.id & 0xf));
        }
        self.apic_publish();
    }

    /// WRMSR IA32_APIC_BASE; `false` for an invalid transition (#GP).
    pub(crate) fn apic_base_write(&mut self, v: u64) -> bool {
        let reserved = !(0x000f_ffff_ffff_f000 | APIC_BASE_BSP | APIC_BASE_EXTD | APIC_BASE_ENABLE);
        if v & reserved != 0 {
            return false;
        }
        let old = self.apic.base_msr;
        let en = v & APIC_BASE_ENABLE != 0;
        let ext = v & APIC_BASE_EXTD != 0;
        if ext && !en {
            return false;
        }
        // x2APIC -> xAPIC directly is invalid.
        if old & APIC_BASE_EXTD != 0 && en && !ext {
            return false;
        }
        let v = (v & !APIC_BASE_BSP) | (old & APIC_BASE_BSP);
        if !en {
            let id = self.apic.id;
            self.apic.reset();
            self.apic.id = id;
        }
        self.apic_base_write_internal(v);
        self.tlb.flush_all();
        true
    }

    /// Offset within the APIC page if `page` (a guest-physical page) is this processor's
    /// xAPIC MMIO page.
    #[inline]
    pub(crate) fn apic_page_offset(&self, page: u64) -> Option<u32> {
        let a = &self.apic;
        (a.hw_enabled() && !a.x2apic() && page == a.base_msr & 0x000f_ffff_ffff_f000).then_some(0)
    }

    /// Reads an APIC register (xAPIC offset).
    fn apic_reg_read(&mut self, off: u32) -> u32 {
        let a = &self.apic;
        let s = &self.shared.vps[self.index as usize];
        match off {
            0x20 => {
                if a.x2apic() {
                    a.id
                } else {
                    a.id << 24
                }
            }
            0x30 => 0x0005_0014,
            0x80 => a.tpr,
            0x90 => 0,
            0xa0 => a.ppr(),
            0xb0 => 0,
            0xd0 => a.ldr,
            0xe0 => a.dfr,
            0xf0 => a.svr,
            0x100..=0x170 => a.isr[((off - 0x100) >> 4) as usize],
            0x180..=0x1f0 => a.tmr[((off - 0x180) >> 4) as usize],
            0x200..=0x270 => s.irr[((off - 0x200) >> 4) as usize].load(Ordering::Acquire),
            0x280 => a.esr,
            0x2f0 => a.lvt[LVT_CMCI],
            0x300 => a.icr as u32 & !(1 << 12),
            0x310 => (a.icr >> 32) as u32,
            0x320 => a.lvt[LVT_TIMER],
            0x330 => a.lvt[LVT_THERMAL],
            0x340 => a.lvt[LVT_PERF],
            0x350 => a.lvt[LVT_LINT0],
            0x360 => a.lvt[LVT_LINT1],
            0x370 => a.lvt[LVT_ERROR],
            0x380 => a.timer_initial,
            0x390 => self.apic_current_count(),
            0x3e0 => a.timer_divide,
            _ => 0,
        }
    }

    fn apic_current_count(&self) -> u32 {
        let a = &self.apic;
        if a.timer_initial == 0 || a.timer_mode() == 2 {
            return 0;
        }
        let Some(_) = a.timer_deadline_ns else {
            return 0;
        };
        let now = self.shared.clock.now_ns();
        let elapsed = now.saturating_sub(a.timer_start_ns);
        let ticks = (u128::from(elapsed) * u128::from(self.shared.apic_freq)
            / (1_000_000_000u128 * u128::from(a.divisor()))) as u64;
        let init = u64::from(a.timer_initial);
        if a.timer_mode() == 1 {
            (init - ticks % init) as u32
        } else {
            init.saturating_sub(ticks) as u32
        }
    }

    fn apic_timer_arm(&mut self) {
        let now = self.shared.clock.now_ns();
        let a = &mut self.apic;
        a.timer_start_ns = now;
        a.timer_deadline_ns = if a.timer_initial == 0 || a.timer_mode() == 2 {
            None
        } else {
            let ns = u128::from(a.timer_initial) * u128::from(a.divisor()) * 1_000_000_000u128
                / u128::from(self.shared.apic_freq);
            Some(now.saturating_add(ns.max(1) as u64))
        };
        self.countdown = 0;
    }

    /// Arms the TSC-deadline timer from IA32_TSC_DEADLINE.
    pub(crate) fn apic_tsc_deadline_write(&mut self, v: u64) {
        self.apic.tsc_deadline = v;
        if self.apic.timer_mode() != 2 {
            return;
        }
        self.apic.timer_deadline_ns = if v == 0 {
            None
        } else {
            Some(self.tsc_to_ns(v))
        };
        self.countdown = 0;
    }

    /// Writes an APIC register (xAPIC offset).
    fn apic_reg_write(&mut self, off: u32, v: u32, io: &dyn ExitHandler) {
        tracing::debug!(
            off = format_args!("{off:#x}"),
            v = format_args!("{v:#x}"),
            "apic write"
        );
        match off {
            0x20 => {
                if !self.apic.x2apic() {
                    self.apic.id = v >> 24;
                }
            }
            0x80 => {
                self.apic.tpr = v & 0xff;
                self.events_changed();
            }
            0xb0 => self.apic_eoi(io),
            0xd0 => self.apic.ldr = v & 0xff00_0000,
            0xe0 => self.apic.dfr = v | 0x0fff_ffff,
            0xf0 => {
                self.apic.svr = v & 0x13ff;
                if v & 0x100 == 0 {
                    for l in &mut self.apic.lvt {
                        *l |= LVT_MASKED;
                    }
                }
                self.events_changed();
            }
            0x280 => self.apic.esr = 0,
            0x2f0 => self.apic_lvt_write(LVT_CMCI, v),
            0x300 => {
                self.apic.icr = (self.apic.icr & !0xffff_ffff) | u64::from(v);
                self.apic_send_ipi();
            }
            0x310 => self.apic.icr = (self.apic.icr & 0xffff_ffff) | (u64::from(v) << 32),
            0x320 => {
                let old_mode = self.apic.timer_mode();
                self.apic_lvt_write(LVT_TIMER, v);
                if self.apic.timer_mode() != old_mode {
                    self.apic.timer_deadline_ns = None;
                    if self.apic.timer_mode() == 2 {
                        let d = self.apic.tsc_deadline;
                        self.apic_tsc_deadline_write(d);
                    }
                }
            }
            0x330 => self.apic_lvt_write(LVT_THERMAL, v),
            0x340 => self.apic_lvt_write(LVT_PERF, v),
            0x350 => {
                self.apic_lvt_write(LVT_LINT0, v);
                self.events_changed();
            }
            0x360 => self.apic_lvt_write(LVT_LINT1, v),
            0x370 => self.apic_lvt_write(LVT_ERROR, v),
            0x380 => {
                self.apic.timer_initial = v;
                self.apic_timer_arm();
            }
            0x3e0 => self.apic.timer_divide = v & 0xb,
            _ => {}
        }
        self.apic_publish();
    }

    fn apic_lvt_write(&mut self, i: usize, v: u32) {
        let mask = match i {
            LVT_TIMER => 0x7_10ff,
            LVT_LINT0 | LVT_LINT1 => 0x1_a7ff,
            _ => 0x1_07ff,
        };
        let mut v = v & mask;
        if !self.apic.sw_enabled() {
            v |= LVT_MASKED;
        }
        self.apic.lvt[i] = v;
    }

    fn apic_eoi(&mut self, io: &dyn ExitHandler) {
        if let Some(v) = self.apic.highest_isr() {
            let (i, bit) = ((v >> 5) as usize, 1u32 << (v & 31));
            self.apic.isr[i] &= !bit;
            if self.apic.tmr[i] & bit != 0 {
                self.apic.tmr[i] &= !bit;
                io.eoi(v);
            }
        }
        self.events_changed();
    }

    /// Sends the IPI described by the ICR.
    fn apic_send_ipi(&mut self) {
        let icr = self.apic.icr;
        let vector = icr as u8;
        let mode = match (icr >> 8) & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::Startup,
            _ => return,
        };
        let logical = icr & (1 << 11) != 0;
        let level_assert = icr & (1 << 14) != 0;
        let level_trig = icr & (1 << 15) != 0;
        // INIT level de-assert: no action on modern processors.
        if mode == DeliveryMode::Init && level_trig && !level_assert {
            return;
        }
        let dest = if self.apic.x2apic() {
            (icr >> 32) as u32
        } else {
            (icr >> 56) as u32
        };
        let req = InterruptRequest {
            destination: dest,
            logical_destination: logical,
            delivery_mode: mode,
            vector,
            level_triggered: false,
        };
        let me = self.index as usize;
        let n = self.shared.vps.len();
        let targets: Vec<usize> = match (icr >> 18) & 3 {
            0 => {
                if !logical && dest == if self.apic.x2apic() { u32::MAX } else { 0xff } {
                    (0..n).collect()
                } else {
                    self.shared.destinations(&req, Some(self.index))
                }
            }
            1 => vec![me],
            2 => (0..n).collect(),
            _ => (0..n).filter(|&i| i != me).collect(),
        };
        if mode == DeliveryMode::LowestPriority && !targets.is_empty() {
            self.shared.deliver_one(targets[0], &req);
            return;
        }
        for t in targets {
            self.shared.deliver_one(t, &req);
        }
        self.events_changed();
    }

    /// Handles a read of the xAPIC page.
    pub(crate) fn apic_mmio_read(&mut self, off: u32, buf: &mut [u8]) {
        let reg = off & 0xff0;
        let v = self.apic_reg_read(reg);
        let bytes = v.to_le_bytes();
        for (i, b) in buf.iter_mut().enumerate() {
            let pos = (off & 0xf) as usize + i;
            *b = if pos < 4 { bytes[pos] } else { 0 };
        }
    }

    /// Handles a write of the xAPIC page (only aligned 32-bit writes have an effect).
    pub(crate) fn apic_mmio_write(&mut self, off: u32, data: &[u8], io: &dyn ExitHandler) {
        if off & 0xf != 0 || data.len() < 4 {
            return;
        }
        let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        self.apic_reg_write(off & 0xff0, v, io);
    }

    /// RDMSR of an x2APIC register; `None` for #GP.
    pub(crate) fn x2apic_read(&mut self, msr: u32) -> Option<u64> {
        if !self.apic.x2apic() {
            return None;
        }
        let off = (msr - 0x800) << 4;
        match off {
            0x300 => Some(self.apic.icr),
            0x310 | 0xb0 | 0x3f0 => None,
            0x20
            | 0x30
            | 0x80
            | 0xa0
            | 0xd0
            | 0xf0
            | 0x100..=0x270
            | 0x280
            | 0x2f0
            | 0x320..=0x390
            | 0x3e0 => Some(u64::from(self.apic_reg_read(off))),
            _ => None,
        }
    }

    /// WRMSR of an x2APIC register; `false` for #GP.
    pub(crate) fn x2apic_write(&mut self, msr: u32, v: u64, io: &dyn ExitHandler) -> bool {
        if !self.apic.x2apic() {
            return false;
        }
        let off = (msr - 0x800) << 4;
        match off {
            0x300 => {
                self.apic.icr = v;
                self.apic_send_ipi();
                self.apic_publish();
            }
            0x3f0 => {
                // SELF IPI.
                self.shared.vps[self.index as usize].set_irr(v as u8, false);
                self.events_changed();
            }
            0x80 | 0xb0 | 0xf0 | 0x280 | 0x2f0 | 0x320..=0x380 | 0x3e0 => {
                self.apic_reg_write(off, v as u32, io)
            }
            _ => return false,
        }
        true
    }

    /// Fires the timer if its deadline passed; returns the next deadline (VM ns).
    pub(crate) fn apic_timer_poll(&mut self, now: u64) -> Option<u64> {
        let d = self.apic.timer_deadline_ns?;
        if now < d {
            return Some(d);
        }
        let lvt = self.apic.lvt[LVT_TIMER];
        if lvt & LVT_MASKED == 0 {
            self.shared.vps[self.index as usize].set_irr(lvt as u8, false);
        }
        match self.apic.timer_mode() {
            1 => {
                let period = d.saturating_sub(self.apic.timer_start_ns).max(1000);
                // Catch up without firing a storm of missed periods.
                let mut next = d + period;
                if next <= now {
                    next = now + period;
                }
                self.apic.timer_start_ns = next - period;
                self.apic.timer_deadline_ns = Some(next);
            }
            _ => {
                self.apic.timer_deadline_ns = None;
                if self.apic.timer_mode() == 2 {
                    self.apic.tsc_deadline = 0;
                }
            }
        }
        self.apic.timer_deadline_ns
    }

    /// The highest-priority fixed interrupt the APIC would deliver now.
    pub(crate) fn apic_pending_vector(&self) -> Option<u8> {
        if !self.apic.sw_enabled() {
            return None;
        }
        let s = &self.shared.vps[self.index as usize];
        let v = highest_atomic(&s.irr)?;
        (u32::from(v) & 0xf0 > self.apic.ppr() & 0xf0).then_some(v)
    }

    /// Moves `v` from IRR to ISR (the processor accepted it).
    pub(crate) fn apic_accept(&mut self, v: u8) {
        let s = &self.shared.vps[self.index as usize];
        let (i, bit) = ((v >> 5) as usize, 1u32 << (v & 31));
        s.irr[i].fetch_and(!bit, Ordering::AcqRel);
        let level = s.level[i].load(Ordering::Acquire) & bit != 0;
        self.apic.isr[i] |= bit;
        if level {
            self.apic.tmr[i] |= bit;
        } else {
            self.apic.tmr[i] &= !bit;
        }
    }

    /// Whether the PIC's INTR reaches this processor (KVM's rule: APIC globally disabled, or
    /// LINT0 unmasked in ExtINT mode), on the bootstrap processor only.
    pub(crate) fn accepts_pic(&self) -> bool {
        if self.index != 0 {
            return false;
        }
        if !self.apic.hw_enabled() {
            return true;
        }
        let l = self.apic.lvt[LVT_LINT0];
        l & LVT_MASKED == 0 && (l >> 8) & 7 == 7
    }
}
