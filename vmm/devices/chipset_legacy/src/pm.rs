//! ACPI fixed-hardware power management block at 0x600.
//!
//! | port | register | width |
//! |---|---|---|
//! | 0x600 | PM1a_STS (write 1 to clear) | 16 |
//! | 0x602 | PM1a_EN | 16 |
//! | 0x604 | PM1a_CNT (SCI_EN, SLP_TYP, SLP_EN) | 16 |
//! | 0x608 | PM_TMR (24-bit, 3.579545 MHz) | 32 |
//! | 0x620 | GPE0_STS (write 1 to clear) | 16 |
//! | 0x622 | GPE0_EN | 16 |
//!
//! Registers are byte-addressable (any access width works, as ACPICA and firmware use the
//! widths the FADT declares). The SCI (ISA IRQ 9, level, active high) is asserted while an
//! enabled PM1 or GPE0 status bit is set. There is no SMI command port in the FADT, so the
//! platform is always in ACPI mode: SCI_EN reads as 1. Writing SLP_EN with SLP_TYP =
//! [`S5_SLP_TYP`] (what the DSDT's `\_S5_` says) powers off through the [`HaltSink`]; other
//! sleep states are not advertised and are ignored. TMR_STS is set each time bit 23 of the
//! timer toggles; [`Poll`] raises it when TMR_EN is set.
//!
//! Spec: ACPI 6.5, section 4.8 (fixed hardware registers).

use std::sync::Arc;

use device_api::HaltRequest;
use device_api::HaltSink;
use device_api::IoError;
use device_api::IoResult;
use device_api::LineInterrupt;
use device_api::Poll;
use device_api::PollWaker;
use device_api::PortIo;
use device_api::VmClock;

/// Default base port of the PM1a event block.
pub const PM_BASE: u16 = 0x600;
/// Offset of the GPE0 block from [`PM_BASE`].
pub const GPE0_OFFSET: u16 = 0x20;
/// Length of the GPE0 block in bytes (status half, enable half).
pub const GPE0_LEN: u16 = 4;
/// SLP_TYP value of S5 (soft off); the DSDT's `\_S5_` package must carry it.
pub const S5_SLP_TYP: u8 = 5;
/// PM timer frequency.
pub const PM_TIMER_HZ: u64 = 3_579_545;

const PM1_STS: u16 = 0x00;
const PM1_EN: u16 = 0x02;
const PM1_CNT: u16 = 0x04;
const PM_TMR: u16 = 0x08;
const PM_TMR_HI: u16 = 0x0a;
const GPE0_STS: u16 = GPE0_OFFSET;
const GPE0_EN: u16 = GPE0_OFFSET + 2;
const PM1_LEN: u16 = 0x0c;

/// PM1 status bits.
pub mod pm1 {
    /// Timer MSB toggled.
    pub const TMR: u16 = 1 << 0;
    /// Bus master activity.
    pub const BM: u16 = 1 << 4;
    /// Global (BIOS) release.
    pub const GBL: u16 = 1 << 5;
    /// Power button pressed.
    pub const PWRBTN: u16 = 1 << 8;
    /// Sleep button pressed.
    pub const SLPBTN: u16 = 1 << 9;
    /// RTC alarm.
    pub const RTC: u16 = 1 << 10;
    /// Wake status.
    pub const WAK: u16 = 1 << 15;
}

/// Status bits that can raise the SCI (and exist in PM1_EN).
const PM1_EN_MASK: u16 = pm1::TMR | pm1::GBL | pm1::PWRBTN | pm1::SLPBTN | pm1::RTC;
const PM1_STS_MASK: u16 = PM1_EN_MASK | pm1::BM | pm1::WAK;

const CNT_SCI_EN: u16 = 1 << 0;
const CNT_GBL_RLS: u16 = 1 << 2;
const CNT_SLP_TYP_SHIFT: u16 = 10;
const CNT_SLP_TYP_MASK: u16 = 7 << CNT_SLP_TYP_SHIFT;
const CNT_SLP_EN: u16 = 1 << 13;
/// PM1_CNT bits that read back.
const CNT_STORED: u16 = 0x0002 | CNT_SLP_TYP_MASK;

/// The timer's MSB: TMR_STS is set when it toggles.
const TIMER_MSB_SHIFT: u32 = 23;

/// PM timer ticks at `ns`.
pub fn pm_timer_ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(PM_TIMER_HZ) / 1_000_000_000) as u64
}

fn ticks_to_ns(ticks: u64) -> u64 {
    let ns = (u128::from(ticks) * 1_000_000_000).div_ceil(u128::from(PM_TIMER_HZ));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// The ACPI PM1a event/control blocks, PM timer and GPE0 block.
pub struct AcpiPm {
    // Fixed configuration.
    base: u16,
    // Runtime glue.
    sci: LineInterrupt,
    clock: VmClock,
    halt: Arc<dyn HaltSink>,
    waker: PollWaker,
    // Volatile state.
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u16,
    gpe_sts: u16,
    gpe_en: u16,
    /// Timer MSB toggles already reflected in TMR_STS.
    timer_toggles: u64,
    sci_level: bool,
}

impl std::fmt::Debug for AcpiPm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcpiPm")
            .field("pm1_sts", &self.pm1_sts)
            .field("pm1_en", &self.pm1_en)
            .field("pm1_cnt", &self.pm1_cnt)
            .finish()
    }
}

impl AcpiPm {
    /// The PM block at `base` (normally [`PM_BASE`]), raising `sci` (ISA IRQ 9).
    pub fn new(
        base: u16,
        sci: LineInterrupt,
        clock: VmClock,
        halt: Arc<dyn HaltSink>,
        waker: PollWaker,
    ) -> Self {
        Self {
            base,
            sci,
            clock,
            halt,
            waker,
            pm1_sts: 0,
            pm1_en: 0,
            pm1_cnt: CNT_SCI_EN,
            gpe_sts: 0,
            gpe_en: 0,
            timer_toggles: 0,
            sci_level: false,
        }
    }

    /// The port ranges to register: PM1a event/control and timer, and GPE0.
    pub fn port_ranges(&self) -> [std::ops::RangeInclusive<u16>; 2] {
        let gpe = self.base.saturating_add(GPE0_OFFSET);
        [
            self.base..=self.base.saturating_add(PM1_LEN - 1),
            gpe..=gpe.saturating_add(GPE0_LEN - 1),
        ]
    }

    /// Platform reset.
    pub fn reset(&mut self) {
        self.pm1_sts = 0;
        self.pm1_en = 0;
        self.pm1_cnt = CNT_SCI_EN;
        self.gpe_sts = 0;
        self.gpe_en = 0;
        self.update_sci();
    }

    /// Presses the power button (the guest sees PWRBTN_STS and, if enabled, an SCI).
    pub fn press_power_button(&mut self) {
        self.pm1_sts |= pm1::PWRBTN;
        self.update_sci();
    }

    /// Sets GPE0 status bit `bit` (0-15), e.g. for a hotplug notification.
    pub fn set_gpe(&mut self, bit: u8) {
        if let Some(mask) = 1u16.checked_shl(u32::from(bit)) {
            self.gpe_sts |= mask;
            self.update_sci();
        }
    }

    fn sync_timer(&mut self, now_ns: u64) {
        let toggles = pm_timer_ticks(now_ns) >> TIMER_MSB_SHIFT;
        if toggles > self.timer_toggles {
            self.timer_toggles = toggles;
            self.pm1_sts |= pm1::TMR;
        }
    }

    fn update_sci(&mut self) {
        let level =
            self.pm1_sts & self.pm1_en & PM1_EN_MASK != 0 || self.gpe_sts & self.gpe_en != 0;
        if level != self.sci_level {
            self.sci_level = level;
            self.sci.set_level(level);
        }
    }

    fn read_byte(&mut self, offset: u16) -> u8 {
        let byte = |v: u16, hi: bool| if hi { (v >> 8) as u8 } else { v as u8 };
        let hi = offset & 1 != 0;
        match offset & !1 {
            PM1_STS => {
                self.sync_timer(self.clock.now_ns());
                byte(self.pm1_sts, hi)
            }
            PM1_EN => byte(self.pm1_en, hi),
            PM1_CNT => byte(self.pm1_cnt, hi),
            PM_TMR | PM_TMR_HI => {
                let t = (pm_timer_ticks(self.clock.now_ns()) & 0xff_ffff) as u32;
                t.to_le_bytes()[usize::from(offset - PM_TMR)]
            }
            GPE0_STS => byte(self.gpe_sts, hi),
            GPE0_EN => byte(self.gpe_en, hi),
            _ => 0,
        }
    }

    fn write_byte(&mut self, offset: u16, value: u8) {
        let shift = if offset & 1 != 0 { 8 } else { 0 };
        let bits = u16::from(value) << shift;
        let lane = 0xffu16 << shift;
        let merge = |reg: u16, mask: u16| (reg & !lane) | (bits & mask);
        match offset & !1 {
            PM1_STS => {
                self.sync_timer(self.clock.now_ns());
                self.pm1_sts &= !(bits & PM1_STS_MASK);
            }
            PM1_EN => {
                let old = self.pm1_en;
                self.pm1_en = merge(self.pm1_en, PM1_EN_MASK);
                if (old ^ self.pm1_en) & pm1::TMR != 0 {
                    self.waker.wake();
                }
            }
            PM1_CNT => {
                self.pm1_cnt = merge(self.pm1_cnt, CNT_STORED) | CNT_SCI_EN;
                if bits & CNT_GBL_RLS != 0 {
                    self.pm1_sts |= pm1::GBL;
                }
                if bits & CNT_SLP_EN != 0 {
                    let typ = ((self.pm1_cnt & CNT_SLP_TYP_MASK) >> CNT_SLP_TYP_SHIFT) as u8;
                    if typ == S5_SLP_TYP {
                        tracing::info!("acpi: S5 requested, powering off");
                        self.halt.request_halt(HaltRequest::PowerOff);
                    } else {
                        tracing::debug!(typ, "acpi: unsupported sleep type ignored");
                    }
                }
            }
            GPE0_STS => self.gpe_sts &= !bits,
            GPE0_EN => self.gpe_en = merge(self.gpe_en, 0xffff),
            // PM_TMR is read-only; 0x06-0x07 are reserved.
            _ => {}
        }
    }

    fn offset(&self, port: u16, len: usize) -> Result<u16, IoError> {
        if !matches!(len, 1 | 2 | 4) {
            return Err(IoError::InvalidAccessSize);
        }
        let offset = port
            .checked_sub(self.base)
            .ok_or(IoError::InvalidRegister)?;
        let last = offset
            .checked_add(len as u16 - 1)
            .ok_or(IoError::InvalidRegister)?;
        let in_pm1 = last < PM1_LEN;
        let in_gpe = offset >= GPE0_OFFSET && last < GPE0_OFFSET + GPE0_LEN;
        if in_pm1 || in_gpe {
            Ok(offset)
        } else {
            Err(IoError::InvalidRegister)
        }
    }
}

impl PortIo for AcpiPm {
    fn io_read(&mut self, port: u16, data: &mut [u8]) -> IoResult {
        let offset = self.offset(port, data.len())?;
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.read_byte(offset + i as u16);
        }
        self.update_sci();
        Ok(())
    }

    fn io_write(&mut self, port: u16, data: &[u8]) -> IoResult {
        let offset = self.offset(port, data.len())?;
        for (i, &b) in data.iter().enumerate() {
            self.write_byte(offset + i as u16, b);
        }
        self.update_sci();
        Ok(())
    }
}

impl Poll for AcpiPm {
    fn poll(&mut self, now_ns: u64) -> Option<u64> {
        self.sync_timer(now_ns);
        self.update_sci();
        (self.pm1_en & pm1::TMR != 0)
            .then(|| ticks_to_ns((self.timer_toggles + 1) << TIMER_MSB_SHIFT))
    }
}

#[cfg(test)]
mod tests {
    use device_api::TestIrqTarget;
    use parking_lot::Mutex;

    use super::*;

    #[derive(Default)]
    struct Halts(Mutex<Vec<HaltRequest>>);

    impl HaltSink for Halts {
        fn request_halt(&self, request: HaltRequest) {
            self.0.lock().push(request);
        }
    }

    struct Rig {
        pm: AcpiPm,
        irq: Arc<TestIrqTarget>,
        clock: VmClock,
        halts: Arc<Halts>,
    }

    fn rig() -> Rig {
        let irq = TestIrqTarget::new();
        let clock = VmClock::manual();
        let halts = Arc::new(Halts::default());
        let pm = AcpiPm::new(
            PM_BASE,
            irq.line(9),
            clock.clone(),
            halts.clone(),
            PollWaker::detached(),
        );
        Rig {
            pm,
            irq,
            clock,
            halts,
        }
    }

    impl Rig {
        fn r16(&mut self, off: u16) -> u16 {
            let mut b = [0u8; 2];
            self.pm.io_read(PM_BASE + off, &mut b).unwrap();
            u16::from_le_bytes(b)
        }
        fn w16(&mut self, off: u16, v: u16) {
            self.pm.io_write(PM_BASE + off, &v.to_le_bytes()).unwrap();
        }
        fn timer(&mut self) -> u32 {
            let mut b = [0u8; 4];
            self.pm.io_read(PM_BASE + PM_TMR, &mut b).unwrap();
            u32::from_le_bytes(b)
        }
    }

    #[test]
    fn pm_timer_counts_at_3_579545_mhz_and_wraps_at_24_bits() {
        let mut r = rig();
        assert_eq!(r.timer(), 0);
        r.clock.advance(1_000_000_000);
        assert_eq!(r.timer(), 3_579_545);
        r.clock.advance(4_000_000_000);
        assert_eq!(r.timer(), (5 * 3_579_545) & 0xff_ffff);
        let mut b = [0u8];
        r.pm.io_read(PM_BASE + PM_TMR + 3, &mut b).unwrap();
        assert_eq!(b[0], 0, "24-bit timer: top byte reads zero");
    }

    #[test]
    fn timer_overflow_sets_tmr_sts_and_raises_sci_when_enabled() {
        let mut r = rig();
        r.w16(PM1_EN, pm1::TMR);
        let deadline = r.pm.poll(0).unwrap();
        assert_eq!(pm_timer_ticks(deadline), 1 << 23);
        r.clock.advance(deadline);
        r.pm.poll(deadline);
        assert!(r.irq.level(9));
        assert_eq!(r.r16(PM1_STS) & pm1::TMR, pm1::TMR);
        r.w16(PM1_STS, pm1::TMR);
        assert!(!r.irq.level(9));
        assert_eq!(r.r16(PM1_STS), 0);
    }

    #[test]
    fn status_bits_are_write_one_to_clear_and_gate_the_sci() {
        let mut r = rig();
        r.pm.press_power_button();
        assert!(!r.irq.level(9), "not enabled");
        assert_eq!(r.r16(PM1_STS), pm1::PWRBTN);
        r.w16(PM1_EN, pm1::PWRBTN);
        assert!(r.irq.level(9));
        r.w16(PM1_STS, 0);
        assert!(r.irq.level(9), "writing zero clears nothing");
        r.w16(PM1_STS, 0xffff);
        assert!(!r.irq.level(9));
        assert_eq!(r.r16(PM1_EN), pm1::PWRBTN);
        r.w16(PM1_EN, 0xffff);
        assert_eq!(r.r16(PM1_EN), PM1_EN_MASK, "only defined enables stick");
    }

    #[test]
    fn gpe0_block() {
        let mut r = rig();
        r.pm.set_gpe(3);
        r.pm.set_gpe(200);
        assert!(!r.irq.level(9));
        let mut en = [0x08u8, 0];
        r.pm.io_write(PM_BASE + GPE0_OFFSET + 2, &en).unwrap();
        assert!(r.irq.level(9));
        r.pm.io_read(PM_BASE + GPE0_OFFSET, &mut en).unwrap();
        assert_eq!(en, [0x08, 0]);
        r.pm.io_write(PM_BASE + GPE0_OFFSET, &[0x08]).unwrap();
        assert!(!r.irq.level(9));
    }

    #[test]
    fn sci_en_is_always_set_and_s5_powers_off() {
        let mut r = rig();
        assert_eq!(r.r16(PM1_CNT) & CNT_SCI_EN, CNT_SCI_EN);
        r.w16(PM1_CNT, 0);
        assert_eq!(r.r16(PM1_CNT), CNT_SCI_EN);
        // S3-ish request: ignored.
        r.w16(PM1_CNT, (1 << CNT_SLP_TYP_SHIFT) | CNT_SLP_EN);
        assert!(r.halts.0.lock().is_empty());
        assert_eq!(r.r16(PM1_CNT) & CNT_SLP_EN, 0, "SLP_EN reads zero");
        // What Linux's acpi_hw_legacy_sleep does: SLP_TYP first, then SLP_EN.
        r.w16(PM1_CNT, u16::from(S5_SLP_TYP) << CNT_SLP_TYP_SHIFT);
        assert!(r.halts.0.lock().is_empty());
        r.w16(
            PM1_CNT,
            (u16::from(S5_SLP_TYP) << CNT_SLP_TYP_SHIFT) | CNT_SLP_EN,
        );
        assert_eq!(*r.halts.0.lock(), [HaltRequest::PowerOff]);
    }

    #[test]
    fn s5_by_a_single_byte_write_to_the_high_half() {
        let mut r = rig();
        let hi = ((u16::from(S5_SLP_TYP) << CNT_SLP_TYP_SHIFT) | CNT_SLP_EN) >> 8;
        r.pm.io_write(PM_BASE + PM1_CNT + 1, &[hi as u8]).unwrap();
        assert_eq!(*r.halts.0.lock(), [HaltRequest::PowerOff]);
    }

    #[test]
    fn access_checks() {
        let mut r = rig();
        let mut b = [0u8; 4];
        assert_eq!(
            r.pm.io_read(PM_BASE + 0x0a, &mut b),
            Err(IoError::InvalidRegister),
            "runs past the PM1 block"
        );
        assert_eq!(
            r.pm.io_read(PM_BASE + 0x10, &mut b[..1]),
            Err(IoError::InvalidRegister)
        );
        let mut b3 = [0u8; 3];
        assert_eq!(
            r.pm.io_read(PM_BASE, &mut b3),
            Err(IoError::InvalidAccessSize)
        );
        assert_eq!(r.pm.port_ranges(), [0x600..=0x60b, 0x620..=0x623]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut r = rig();
        let mut x: u64 = 0x1357_9bdf_2468_ace0;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let port = PM_BASE + (x % 0x30) as u16;
            let len = [1usize, 2, 4][((x >> 8) % 3) as usize];
            let bytes = (x >> 16).to_le_bytes();
            // Avoid powering off so the sequence keeps exercising registers.
            let write = &bytes[..len];
            match (x >> 6) % 4 {
                0 => {
                    let _ = r.pm.io_write(port, write);
                }
                1 => {
                    let mut b = [0u8; 4];
                    let _ = r.pm.io_read(port, &mut b[..len]);
                }
                2 => r.clock.advance(x >> 40),
                _ => {
                    let now = r.clock.now_ns();
                    if let Some(d) = r.pm.poll(now) {
                        assert!(d > now);
                    }
                }
            }
        }
    }
}
