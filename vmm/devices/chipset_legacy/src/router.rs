//! Interrupt routing from device lines to the PIC pair and the I/O APIC.
//!
//! On a PC every ISA IRQ is wired to both controllers; the guest decides which one it uses.
//! [`IrqRouter`] implements [`IrqTarget`] with the machine's GSI numbering:
//! - ISA IRQ n (0-15) drives PIC input n and I/O APIC pin n, except IRQ 0, which drives I/O
//!   APIC pin 2 (the MADT's interrupt source override). IRQ 2 is the PIC cascade and is not a
//!   device line.
//! - GSI 16-23 drive only the I/O APIC.
//!
//! [`SharedLine`] ORs several device lines into one input, for IRQs two devices share (COM1
//! and COM3 on IRQ 4, PCI INTx).

use std::sync::Arc;

use device_api::IrqTarget;
use device_api::LineInterrupt;
use device_api::Shared;
use parking_lot::Mutex;

use crate::ioapic::IoApic;
use crate::ioapic::PIN_COUNT;
use crate::pic::DualPic;

/// The I/O APIC pin ISA IRQ 0 is routed to.
pub const IRQ0_GSI: u32 = 2;

/// Routes device lines (GSIs) to the PIC pair and the I/O APIC.
pub struct IrqRouter {
    pic: Shared<DualPic>,
    ioapic: Shared<IoApic>,
}

impl IrqRouter {
    /// A router over the machine's PIC pair and I/O APIC (the same handles the buses hold).
    pub fn new(pic: Shared<DualPic>, ioapic: Shared<IoApic>) -> Arc<Self> {
        Arc::new(Self { pic, ioapic })
    }

    /// The I/O APIC pin an ISA IRQ or GSI arrives on.
    pub fn ioapic_pin(line: u32) -> u32 {
        if line == 0 { IRQ0_GSI } else { line }
    }
}

impl IrqTarget for IrqRouter {
    fn set_irq(&self, line: u32, high: bool) {
        if line == 2 || line as usize >= PIN_COUNT {
            tracing::debug!(line, "irq router: not a device line");
            return;
        }
        if line < 16 {
            self.pic.lock().set_irq(line as u8, high);
        }
        self.ioapic.lock().set_irq(Self::ioapic_pin(line), high);
    }
}

/// Wired-OR of up to 64 device lines onto one input of another [`IrqTarget`].
pub struct SharedLine {
    target: Arc<dyn IrqTarget>,
    line: u32,
    asserted: Mutex<u64>,
}

impl SharedLine {
    /// Combines lines onto input `line` of `target`.
    pub fn new(target: Arc<dyn IrqTarget>, line: u32) -> Arc<Self> {
        Arc::new(Self {
            target,
            line,
            asserted: Mutex::new(0),
        })
    }

    /// Source `index` (0-63) of this shared line, to hand to a device.
    pub fn source(self: &Arc<Self>, index: u32) -> LineInterrupt {
        LineInterrupt::new(self.clone(), index)
    }
}

impl IrqTarget for SharedLine {
    fn set_irq(&self, index: u32, high: bool) {
        let Some(bit) = 1u64.checked_shl(index) else {
            return;
        };
        let mut asserted = self.asserted.lock();
        let before = *asserted != 0;
        if high {
            *asserted |= bit;
        } else {
            *asserted &= !bit;
        }
        let after = *asserted != 0;
        if before != after {
            // Forward under the lock so concurrent sources cannot reorder the output.
            self.target.set_irq(self.line, after);
        }
    }
}

#[cfg(test)]
mod tests {
    use device_api::TestIrqTarget;
    use device_api::shared;

    use super::*;
    use crate::ioapic::IOAPIC_BASE;
    use crate::ioapic::TestInterruptSink;

    #[test]
    fn isa_irqs_reach_both_controllers_and_irq0_lands_on_pin2() {
        let intr = TestIrqTarget::new();
        let sink = TestInterruptSink::new();
        let pic = shared(DualPic::new(intr.line(0)));
        let ioapic = shared(IoApic::new(0, IOAPIC_BASE, sink.clone()));
        let router = IrqRouter::new(pic.clone(), ioapic.clone());
        // PIC: vectors 0x20/0x28, unmasked.
        {
            let mut p = pic.lock();
            for (port, v) in [(0x20, 0x11), (0x21, 0x20), (0x21, 4), (0x21, 1), (0x21, 0)] {
                device_api::PortIo::io_write(&mut *p, port, &[v]).unwrap();
            }
        }
        // I/O APIC: pin 2 -> vector 0x30, pin 20 -> vector 0x50.
        {
            let mut a = ioapic.lock();
            for (sel, val) in [(0x14u32, 0x30u32), (0x38, 0x50)] {
                device_api::Mmio::mmio_write(&mut *a, IOAPIC_BASE, &sel.to_le_bytes()).unwrap();
                device_api::Mmio::mmio_write(&mut *a, IOAPIC_BASE + 0x10, &val.to_le_bytes())
                    .unwrap();
            }
        }
        let irq0 = LineInterrupt::new(router.clone(), 0);
        irq0.pulse();
        assert!(intr.level(0));
        assert_eq!(pic.lock().acknowledge(), Some(0x20));
        let got = sink.take();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].vector, 0x30);

        LineInterrupt::new(router.clone(), 20).set_level(true);
        assert_eq!(sink.take()[0].vector, 0x50);
        assert!(!intr.level(0), "GSI 20 is not on the PIC");

        LineInterrupt::new(router.clone(), 2).pulse();
        LineInterrupt::new(router.clone(), 99).pulse();
        assert!(sink.take().is_empty());
    }

    #[test]
    fn shared_line_is_a_wired_or() {
        let t = TestIrqTarget::new();
        let shared = SharedLine::new(t.clone(), 4);
        let com1 = shared.source(0);
        let com3 = shared.source(1);
        com1.set_level(true);
        com3.set_level(true);
        com1.set_level(false);
        assert!(t.level(4), "COM3 still asserts");
        com3.set_level(false);
        assert!(!t.level(4));
        assert_eq!(t.rising_edges(4), 1);
        shared.source(64).set_level(true);
        assert!(!t.level(4));
    }
}
