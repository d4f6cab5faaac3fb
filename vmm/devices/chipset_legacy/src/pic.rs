//! The PC's pair of 8259A programmable interrupt controllers.
//!
//! Master at ports 0x20-0x21, slave at 0xa0-0xa1 cascaded on master input 2, and the
//! edge/level control registers (ELCR) at 0x4d0-0x4d1. The master's INTR output is an
//! [`LineInterrupt`] the machine forwards to the bootstrap processor's LINT0 (ExtINT); the
//! processor then calls [`DualPic::acknowledge`] for the vector (the INTA cycle).
//!
//! Spec: Intel 8259A datasheet (ICW1-4, OCW1-3, priority resolution, poll mode), PIIX/ICH
//! datasheets for the ELCR. Inputs are edge-triggered unless ICW1.LTIM or their ELCR bit
//! selects level; like QEMU, an edge-latched request stays in IRR when the line falls again.
//! The cascade input (master IR2) follows the slave's output level.

use device_api::IoError;
use device_api::IoResult;
use device_api::LineInterrupt;
use device_api::PortIo;

/// Master command port.
pub const MASTER_CMD: u16 = 0x20;
/// Master data port.
pub const MASTER_DATA: u16 = 0x21;
/// Slave command port.
pub const SLAVE_CMD: u16 = 0xa0;
/// Slave data port.
pub const SLAVE_DATA: u16 = 0xa1;
/// ELCR for IRQ 0-7.
pub const ELCR_MASTER: u16 = 0x4d0;
/// ELCR for IRQ 8-15.
pub const ELCR_SLAVE: u16 = 0x4d1;

/// The master input the slave is cascaded on.
const CASCADE_IRQ: u8 = 2;
/// ELCR bits that exist: IRQ0-2 and IRQ8/IRQ13 are always edge-triggered.
const ELCR_WRITABLE: [u8; 2] = [0xf8, 0xde];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InitStep {
    Ready,
    Icw2,
    Icw3,
    Icw4,
}

/// One 8259A.
#[derive(Debug, Clone)]
struct Pic {
    irr: u8,
    isr: u8,
    imr: u8,
    /// Current input levels (for edge detection and level mode).
    lines: u8,
    elcr: u8,
    vector_base: u8,
    step: InitStep,
    /// ICW1 said an ICW4 follows.
    icw4_needed: bool,
    /// ICW1.SNGL: no cascade.
    single: bool,
    /// ICW1.LTIM: all inputs level-triggered.
    ltim: bool,
    icw3: u8,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    /// The input with the highest priority (0 after init; rotation moves it).
    highest: u8,
    read_isr: bool,
    poll: bool,
    special_mask: bool,
    /// ICW2 has been written at least once, so the vector base is meaningful.
    initialized: bool,
}

impl Pic {
    fn new() -> Self {
        Self {
            irr: 0,
            isr: 0,
            imr: 0,
            lines: 0,
            elcr: 0,
            vector_base: 0,
            step: InitStep::Ready,
            icw4_needed: false,
            single: false,
            ltim: false,
            icw3: 0,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            special_fully_nested: false,
            highest: 0,
            read_isr: false,
            poll: false,
            special_mask: false,
            initialized: false,
        }
    }

    fn level_mode(&self, irq: u8) -> bool {
        self.ltim || self.elcr & (1 << irq) != 0
    }

    fn set_line(&mut self, irq: u8, high: bool) {
        let bit = 1u8 << irq;
        let was_high = self.lines & bit != 0;
        if high {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
        if self.level_mode(irq) {
            if high {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if high && !was_high {
            self.irr |= bit;
        }
    }

    /// Priority rank of `irq` (0 = highest).
    fn rank(&self, irq: u8) -> u8 {
        irq.wrapping_sub(self.highest) & 7
    }

    /// The highest-priority input set in `bits`.
    fn highest_in(&self, bits: u8) -> Option<u8> {
        (0..8u8)
            .map(|p| (self.highest + p) & 7)
            .find(|&irq| bits & (1 << irq) != 0)
    }

    /// The input this PIC would interrupt the processor for now.
    fn output(&self, is_master: bool) -> Option<u8> {
        let irq = self.highest_in(self.irr & !self.imr)?;
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if is_master && self.special_fully_nested {
            // A higher-priority slave request may nest inside a slave request in service.
            in_service &= !(1 << CASCADE_IRQ);
        }
        match self.highest_in(in_service) {
            Some(s) if self.rank(s) <= self.rank(irq) => None,
            _ => Some(irq),
        }
    }

    /// The INTA cycle for `irq`.
    fn ack(&mut self, irq: u8) {
        let bit = 1u8 << irq;
        if !self.level_mode(irq) {
            self.irr &= !bit;
        }
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.highest = (irq + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
    }

    fn non_specific_eoi(&mut self, rotate: bool) {
        if let Some(irq) = self.highest_in(self.isr) {
            self.isr &= !(1 << irq);
            if rotate {
                self.highest = (irq + 1) & 7;
            }
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & 0x10 != 0 {
            // ICW1: start of initialization.
            self.step = InitStep::Icw2;
            self.icw4_needed = value & 0x01 != 0;
            self.single = value & 0x02 != 0;
            self.ltim = value & 0x08 != 0;
            self.imr = 0;
            self.isr = 0;
            // Edge-sense circuitry resets: latched edges are forgotten.
            self.irr &= self.lines & self.level_bits();
            self.highest = 0;
            self.special_mask = false;
            self.read_isr = false;
            self.poll = false;
            if !self.icw4_needed {
                self.auto_eoi = false;
                self.special_fully_nested = false;
            }
            self.rotate_on_auto_eoi = false;
        } else if value & 0x08 == 0 {
            // OCW2.
            let level = value & 7;
            match value >> 5 {
                0b001 => self.non_specific_eoi(false),
                0b011 => self.isr &= !(1 << level),
                0b101 => self.non_specific_eoi(true),
                0b100 => self.rotate_on_auto_eoi = true,
                0b000 => self.rotate_on_auto_eoi = false,
                0b111 => {
                    self.isr &= !(1 << level);
                    self.highest = (level + 1) & 7;
                }
                0b110 => self.highest = (level + 1) & 7,
                _ => {}
            }
        } else {
            // OCW3.
            if value & 0x40 != 0 {
                self.special_mask = value & 0x20 != 0;
            }
            self.poll = value & 0x04 != 0;
            if value & 0x02 != 0 {
                self.read_isr = value & 0x01 != 0;
            }
        }
    }

    fn level_bits(&self) -> u8 {
        if self.ltim { 0xff } else { self.elcr }
    }

    fn write_data(&mut self, value: u8) {
        match self.step {
            InitStep::Ready => self.imr = value,
            InitStep::Icw2 => {
                self.vector_base = value & 0xf8;
                self.initialized = true;
                self.step = if !self.single {
                    InitStep::Icw3
                } else if self.icw4_needed {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                };
            }
            InitStep::Icw3 => {
                self.icw3 = value;
                self.step = if self.icw4_needed {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                };
            }
            InitStep::Icw4 => {
                self.auto_eoi = value & 0x02 != 0;
                self.special_fully_nested = value & 0x10 != 0;
                self.step = InitStep::Ready;
            }
        }
    }

    fn set_elcr(&mut self, value: u8, writable: u8) {
        self.elcr = value & writable;
        // Inputs now level-triggered mirror their line in IRR.
        let level = self.level_bits();
        self.irr = (self.irr & !level) | (self.lines & level);
    }
}

/// The master/slave 8259A pair with its ELCR.
pub struct DualPic {
    pics: [Pic; 2],
    intr: LineInterrupt,
    intr_level: bool,
}

impl std::fmt::Debug for DualPic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DualPic")
            .field("master", &self.pics[0])
            .field("slave", &self.pics[1])
            .field("intr", &self.intr_level)
            .finish()
    }
}

impl DualPic {
    /// A PIC pair whose INTR output drives `intr` (the machine forwards it to
    /// `Partition::set_extint`). The line is driven with the PIC locked: its target must not
    /// call back into the PIC.
    pub fn new(intr: LineInterrupt) -> Self {
        Self {
            pics: [Pic::new(), Pic::new()],
            intr,
            intr_level: false,
        }
    }

    /// The port ranges to register: the two PICs and the ELCR pair.
    pub fn port_ranges() -> [std::ops::RangeInclusive<u16>; 3] {
        [
            MASTER_CMD..=MASTER_DATA,
            SLAVE_CMD..=SLAVE_DATA,
            ELCR_MASTER..=ELCR_SLAVE,
        ]
    }

    /// Platform reset.
    pub fn reset(&mut self) {
        let lines = [self.pics[0].lines, self.pics[1].lines];
        self.pics = [Pic::new(), Pic::new()];
        self.pics[0].lines = lines[0];
        self.pics[1].lines = lines[1];
        self.update();
    }

    /// Sets the level of ISA IRQ `irq` (0-15). IRQ 2 is the cascade and ignores devices.
    pub fn set_irq(&mut self, irq: u8, high: bool) {
        if irq >= 16 || irq == CASCADE_IRQ {
            tracing::debug!(irq, "pic: input out of range or cascade");
            return;
        }
        self.pics[usize::from(irq / 8)].set_line(irq % 8, high);
        self.update();
    }

    /// Whether INTR is asserted.
    pub fn intr(&self) -> bool {
        self.intr_level
    }

    /// The INTA cycle: the vector the processor takes for the pending ExtINT. A request that
    /// went away (or lost to masking) yields the spurious vector of IRQ 7 (master) or IRQ 15
    /// (slave), with no in-service bit set, as on real hardware. `None` only before the guest
    /// initialized the master (there is no vector base yet).
    pub fn acknowledge(&mut self) -> Option<u8> {
        if !self.pics[0].initialized {
            return None;
        }
        let vector = match self.pics[0].output(true) {
            Some(CASCADE_IRQ) if !self.pics[0].single => {
                self.pics[0].ack(CASCADE_IRQ);
                match self.pics[1].output(false) {
                    Some(irq) => {
                        self.pics[1].ack(irq);
                        self.pics[1].vector_base | irq
                    }
                    None => self.pics[1].vector_base | 7,
                }
            }
            Some(irq) => {
                self.pics[0].ack(irq);
                self.pics[0].vector_base | irq
            }
            None => self.pics[0].vector_base | 7,
        };
        self.update();
        Some(vector)
    }

    /// Recomputes the cascade and the INTR output.
    fn update(&mut self) {
        if !self.pics[0].single {
            let slave_out = self.pics[1].output(false).is_some();
            let bit = 1u8 << CASCADE_IRQ;
            if slave_out {
                self.pics[0].lines |= bit;
                self.pics[0].irr |= bit;
            } else {
                self.pics[0].lines &= !bit;
                self.pics[0].irr &= !bit;
            }
        }
        let level = self.pics[0].output(true).is_some();
        if level != self.intr_level {
            self.intr_level = level;
            self.intr.set_level(level);
        }
    }

    /// Poll-mode read: acknowledges like INTA and reports the level.
    fn poll_read(&mut self, chip: usize) -> u8 {
        self.pics[chip].poll = false;
        let is_master = chip == 0;
        let v = match self.pics[chip].output(is_master) {
            Some(irq) => {
                self.pics[chip].ack(irq);
                0x80 | irq
            }
            None => 0,
        };
        self.update();
        v
    }

    fn read_port(&mut self, port: u16) -> Result<u8, IoError> {
        let chip = match port {
            MASTER_CMD | MASTER_DATA => 0,
            SLAVE_CMD | SLAVE_DATA => 1,
            ELCR_MASTER => return Ok(self.pics[0].elcr),
            ELCR_SLAVE => return Ok(self.pics[1].elcr),
            _ => return Err(IoError::InvalidRegister),
        };
        if self.pics[chip].poll {
            return Ok(self.poll_read(chip));
        }
        let pic = &self.pics[chip];
        Ok(if port & 1 == 0 {
            if pic.read_isr { pic.isr } else { pic.irr }
        } else {
            pic.imr
        })
    }

    fn write_port(&mut self, port: u16, value: u8) -> IoResult {
        match port {
            MASTER_CMD => self.pics[0].write_command(value),
            MASTER_DATA => self.pics[0].write_data(value),
            SLAVE_CMD => self.pics[1].write_command(value),
            SLAVE_DATA => self.pics[1].write_data(value),
            ELCR_MASTER => self.pics[0].set_elcr(value, ELCR_WRITABLE[0]),
            ELCR_SLAVE => self.pics[1].set_elcr(value, ELCR_WRITABLE[1]),
            _ => return Err(IoError::InvalidRegister),
        }
        self.update();
        Ok(())
    }
}

impl PortIo for DualPic {
    fn io_read(&mut self, port: u16, data: &mut [u8]) -> IoResult {
        match (port, data.len()) {
            (_, 1) => data[0] = self.read_port(port)?,
            (ELCR_MASTER, 2) => {
                data[0] = self.pics[0].elcr;
                data[1] = self.pics[1].elcr;
            }
            _ => return Err(IoError::InvalidAccessSize),
        }
        Ok(())
    }

    fn io_write(&mut self, port: u16, data: &[u8]) -> IoResult {
        match (port, data) {
            (_, &[v]) => self.write_port(port, v),
            (ELCR_MASTER, &[lo, hi]) => {
                self.write_port(ELCR_MASTER, lo)?;
                self.write_port(ELCR_SLAVE, hi)
            }
            _ => Err(IoError::InvalidAccessSize),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use device_api::TestIrqTarget;

    use super::*;

    fn rig() -> (DualPic, Arc<TestIrqTarget>) {
        let t = TestIrqTarget::new();
        (DualPic::new(t.line(0)), t)
    }

    fn w(p: &mut DualPic, port: u16, v: u8) {
        p.io_write(port, &[v]).unwrap();
    }

    fn r(p: &mut DualPic, port: u16) -> u8 {
        let mut b = [0];
        p.io_read(port, &mut b).unwrap();
        b[0]
    }

    /// What Linux's `init_8259A` and SeaBIOS do: vectors 0x30/0x38, cascade on 2, 8086 mode.
    fn init(p: &mut DualPic, auto_eoi: bool) {
        let icw4 = if auto_eoi { 0x03 } else { 0x01 };
        w(p, MASTER_CMD, 0x11);
        w(p, MASTER_DATA, 0x30);
        w(p, MASTER_DATA, 0x04);
        w(p, MASTER_DATA, icw4);
        w(p, SLAVE_CMD, 0x11);
        w(p, SLAVE_DATA, 0x38);
        w(p, SLAVE_DATA, 0x02);
        w(p, SLAVE_DATA, icw4);
        w(p, MASTER_DATA, 0);
        w(p, SLAVE_DATA, 0);
    }

    #[test]
    fn edge_irq_is_delivered_acknowledged_and_eoied() {
        let (mut p, t) = rig();
        init(&mut p, false);
        p.set_irq(1, true);
        assert!(t.level(0));
        assert_eq!(p.acknowledge(), Some(0x31));
        assert!(!t.level(0));
        w(&mut p, MASTER_CMD, 0x0b); // OCW3: read ISR
        assert_eq!(r(&mut p, MASTER_CMD), 0x02);
        w(&mut p, MASTER_CMD, 0x20); // non-specific EOI
        assert_eq!(r(&mut p, MASTER_CMD), 0);
        // Still high: no new edge, no new interrupt.
        assert!(!t.level(0));
        p.set_irq(1, false);
        p.set_irq(1, true);
        assert!(t.level(0));
    }

    #[test]
    fn edge_latch_survives_the_line_falling() {
        let (mut p, t) = rig();
        init(&mut p, false);
        p.set_irq(4, true);
        p.set_irq(4, false);
        assert!(t.level(0));
        assert_eq!(p.acknowledge(), Some(0x34));
    }

    #[test]
    fn priorities_nest_higher_requests_only() {
        let (mut p, t) = rig();
        init(&mut p, false);
        p.set_irq(3, true);
        p.set_irq(1, true);
        assert_eq!(p.acknowledge(), Some(0x31));
        assert!(!t.level(0), "IRQ3 waits behind IRQ1 in service");
        p.set_irq(0, true);
        assert!(t.level(0), "IRQ0 preempts IRQ1");
        assert_eq!(p.acknowledge(), Some(0x30));
        w(&mut p, MASTER_CMD, 0x20);
        w(&mut p, MASTER_CMD, 0x20);
        assert_eq!(p.acknowledge(), Some(0x33));
    }

    #[test]
    fn slave_interrupts_go_through_the_cascade() {
        let (mut p, t) = rig();
        init(&mut p, false);
        p.set_irq(12, true);
        assert!(t.level(0));
        assert_eq!(p.acknowledge(), Some(0x3c));
        w(&mut p, MASTER_CMD, 0x0b);
        w(&mut p, SLAVE_CMD, 0x0b);
        assert_eq!(r(&mut p, MASTER_CMD), 0x04);
        assert_eq!(r(&mut p, SLAVE_CMD), 0x10);
        p.set_irq(8, true);
        assert!(!t.level(0), "master IR2 in service blocks the cascade");
        w(&mut p, SLAVE_CMD, 0x20);
        w(&mut p, MASTER_CMD, 0x20);
        assert!(t.level(0));
        assert_eq!(p.acknowledge(), Some(0x38));
    }

    #[test]
    fn imr_masks_and_unmasking_delivers() {
        let (mut p, t) = rig();
        init(&mut p, false);
        w(&mut p, MASTER_DATA, 0xff);
        p.set_irq(5, true);
        assert!(!t.level(0));
        assert_eq!(r(&mut p, MASTER_DATA), 0xff);
        w(&mut p, MASTER_CMD, 0x0a); // read IRR
        assert_eq!(r(&mut p, MASTER_CMD), 0x20);
        w(&mut p, MASTER_DATA, 0xdf);
        assert!(t.level(0));
        w(&mut p, SLAVE_DATA, 0xff);
        p.set_irq(9, true);
        assert_eq!(p.acknowledge(), Some(0x35));
    }

    #[test]
    fn spurious_acknowledge_gives_irq7_without_isr() {
        let (mut p, _t) = rig();
        assert_eq!(p.acknowledge(), None, "uninitialized");
        init(&mut p, false);
        assert_eq!(p.acknowledge(), Some(0x37));
        w(&mut p, MASTER_CMD, 0x0b);
        assert_eq!(r(&mut p, MASTER_CMD), 0, "spurious IRQ7 sets no ISR bit");
    }

    #[test]
    fn level_mode_via_elcr_follows_the_line() {
        let (mut p, t) = rig();
        init(&mut p, false);
        w(&mut p, ELCR_SLAVE, 0xff);
        assert_eq!(r(&mut p, ELCR_SLAVE), 0xde, "IRQ8 and IRQ13 stay edge");
        w(&mut p, ELCR_MASTER, 0x07);
        assert_eq!(r(&mut p, ELCR_MASTER), 0, "IRQ0-2 stay edge");
        p.set_irq(9, true);
        assert_eq!(p.acknowledge(), Some(0x39));
        w(&mut p, SLAVE_CMD, 0x20);
        w(&mut p, MASTER_CMD, 0x20);
        assert!(t.level(0), "still asserted: interrupts again after EOI");
        p.set_irq(9, false);
        assert!(!t.level(0), "level request withdrawn");
        let mut both = [0u8; 2];
        p.io_read(ELCR_MASTER, &mut both).unwrap();
        assert_eq!(both, [0, 0xde]);
    }

    #[test]
    fn auto_eoi_leaves_isr_clear() {
        let (mut p, t) = rig();
        init(&mut p, true);
        p.set_irq(3, true);
        assert_eq!(p.acknowledge(), Some(0x33));
        w(&mut p, MASTER_CMD, 0x0b);
        assert_eq!(r(&mut p, MASTER_CMD), 0);
        p.set_irq(4, true);
        assert!(t.level(0), "nothing in service blocks IRQ4");
    }

    #[test]
    fn specific_eoi_and_rotation() {
        let (mut p, _t) = rig();
        init(&mut p, false);
        p.set_irq(1, true);
        p.set_irq(0, true);
        assert_eq!(p.acknowledge(), Some(0x30));
        w(&mut p, MASTER_CMD, 0x60); // specific EOI IRQ0
        assert_eq!(p.acknowledge(), Some(0x31));
        w(&mut p, MASTER_CMD, 0xa0); // rotate on non-specific EOI: IRQ1 becomes lowest
        p.set_irq(1, false);
        p.set_irq(0, false);
        p.set_irq(1, true);
        p.set_irq(3, true);
        assert_eq!(p.acknowledge(), Some(0x33), "IRQ3 now outranks IRQ1");
        w(&mut p, MASTER_CMD, 0xc7); // set priority: IRQ7 lowest, IRQ0 highest
        w(&mut p, MASTER_CMD, 0xe3); // rotate on specific EOI 3
        assert_eq!(p.acknowledge(), Some(0x31));
    }

    #[test]
    fn special_mask_mode_lets_lower_priorities_in() {
        let (mut p, t) = rig();
        init(&mut p, false);
        p.set_irq(1, true);
        assert_eq!(p.acknowledge(), Some(0x31));
        p.set_irq(5, true);
        assert!(!t.level(0));
        w(&mut p, MASTER_DATA, 0x02); // mask IRQ1 (in service)
        w(&mut p, MASTER_CMD, 0x68); // OCW3: set special mask
        assert!(t.level(0));
        assert_eq!(p.acknowledge(), Some(0x35));
        w(&mut p, MASTER_CMD, 0x48); // reset special mask
        w(&mut p, MASTER_CMD, 0x20);
        w(&mut p, MASTER_CMD, 0x20);
    }

    #[test]
    fn poll_mode_reads_and_acknowledges() {
        let (mut p, _t) = rig();
        init(&mut p, false);
        w(&mut p, MASTER_CMD, 0x0c); // OCW3 poll
        assert_eq!(r(&mut p, MASTER_CMD), 0);
        p.set_irq(6, true);
        w(&mut p, MASTER_CMD, 0x0c);
        assert_eq!(r(&mut p, MASTER_DATA), 0x86);
        w(&mut p, MASTER_CMD, 0x0b);
        assert_eq!(r(&mut p, MASTER_CMD), 0x40, "poll acknowledged IRQ6");
    }

    #[test]
    fn reinitialization_clears_state() {
        let (mut p, t) = rig();
        init(&mut p, false);
        p.set_irq(3, true);
        assert!(t.level(0));
        init(&mut p, false);
        assert!(!t.level(0), "ICW1 forgets latched edges");
        assert_eq!(r(&mut p, MASTER_DATA), 0);
        p.reset();
        assert_eq!(p.acknowledge(), None);
    }

    #[test]
    fn bad_accesses_are_bus_errors() {
        let (mut p, _t) = rig();
        let mut four = [0u8; 4];
        assert_eq!(
            p.io_read(MASTER_CMD, &mut four),
            Err(IoError::InvalidAccessSize)
        );
        assert_eq!(p.io_write(0x22, &[0]), Err(IoError::InvalidRegister));
        p.set_irq(2, true);
        p.set_irq(99, true);
    }

    #[test]
    fn garbage_never_panics() {
        let (mut p, t) = rig();
        let ports = [
            MASTER_CMD,
            MASTER_DATA,
            SLAVE_CMD,
            SLAVE_DATA,
            ELCR_MASTER,
            ELCR_SLAVE,
        ];
        let mut x: u32 = 0x1234_5678;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let port = ports[(x % 6) as usize];
            match (x >> 8) % 5 {
                0 => {
                    let _ = p.io_write(port, &[(x >> 16) as u8]);
                }
                1 => {
                    let mut b = [0];
                    let _ = p.io_read(port, &mut b);
                }
                2 => p.set_irq(((x >> 16) % 16) as u8, x & 0x100_0000 != 0),
                3 => {
                    p.acknowledge();
                }
                _ => {}
            }
            assert_eq!(t.level(0), p.intr());
        }
    }
}
