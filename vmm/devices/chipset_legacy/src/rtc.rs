//! MC146818 real-time clock and the 128 bytes of CMOS behind ports 0x70/0x71.
//!
//! Port 0x70 selects the register (bits 6:0) and masks NMIs (bit 7); port 0x71 reads and writes
//! it. Registers 0x00-0x09 are the time, date and alarm, 0x0a-0x0d status registers A-D, 0x32
//! the century; the rest is battery-backed RAM, pre-filled with the fields firmware reads
//! (memory sizes, CPU count).
//!
//! The clock is not stored as ticking registers: the device keeps the RTC time (seconds since
//! 1970, in the zone the guest assumes, normally UTC) at a VM-clock instant and computes the
//! registers on every read in the format register B selects (BCD or binary, 12 or 24 hours).
//! Guest writes to time registers edit that time. Register B's SET bit and a divider reset in
//! register A freeze it. Interrupts (IRQ 8): periodic (register A's rate), alarm and
//! update-ended, each flagged in register C, which clears on read; the line is high while
//! register C's IRQF is set. [`Poll`] raises them on time.
//!
//! Spec: Motorola MC146818A datasheet; CMOS layout per the IBM PC/AT and what SeaBIOS reads
//! (0x15-0x18, 0x30-0x31, 0x34-0x35, 0x5b-0x5d, 0x5f).

use device_api::IoError;
use device_api::IoResult;
use device_api::LineInterrupt;
use device_api::Poll;
use device_api::PollWaker;
use device_api::PortIo;
use device_api::VmClock;

/// Index port.
pub const PORT_INDEX: u16 = 0x70;
/// Data port.
pub const PORT_DATA: u16 = 0x71;

const SECONDS: u8 = 0x00;
const SECONDS_ALARM: u8 = 0x01;
const MINUTES: u8 = 0x02;
const MINUTES_ALARM: u8 = 0x03;
const HOURS: u8 = 0x04;
const HOURS_ALARM: u8 = 0x05;
const DAY_OF_WEEK: u8 = 0x06;
const DAY_OF_MONTH: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
/// Century (IBM PS/2 and ACPI FADT.CENTURY convention).
pub const CENTURY: u8 = 0x32;

const A_UIP: u8 = 0x80;
const A_DIVIDER_MASK: u8 = 0x70;
const A_DIVIDER_NORMAL: u8 = 0x20;
const A_RATE_MASK: u8 = 0x0f;

const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;

const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;

const D_VRT: u8 = 0x80;

/// UIP is set this long before each update.
const UIP_NS: u64 = 244_000;
const NS_PER_SEC: u64 = 1_000_000_000;

/// What the CMOS holds at power-on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmosConfig {
    /// The RTC's time at VM creation, in seconds since 1970-01-01 00:00:00 (normally the host's
    /// UTC time).
    pub initial_time: i64,
    /// RAM below 4 GiB in bytes (everything from address 0).
    pub ram_below_4g: u64,
    /// RAM above 4 GiB in bytes.
    pub ram_above_4g: u64,
    /// Number of processors.
    pub processors: u32,
}

/// A calendar date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date. Out-of-range months and days are
/// clamped to 1-12 and 1-31 (a day past the month's end rolls into the next month).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let month = i64::from(month.clamp(1, 12));
    let day = i64::from(day.clamp(1, 31));
    // Count years from March so the leap day is the last day of the counting year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl DateTime {
    fn from_secs(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
        }
    }

    fn to_secs(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour.min(23)) * 3600
            + i64::from(self.minute.min(59)) * 60
            + i64::from(self.second.min(59))
    }

    /// 1 = Sunday .. 7 = Saturday.
    fn day_of_week(self) -> u32 {
        (days_from_civil(self.year, self.month, self.day) + 4).rem_euclid(7) as u32 + 1
    }
}

fn to_bcd(v: u32) -> u8 {
    let v = v % 100;
    (((v / 10) << 4) | (v % 10)) as u8
}

fn from_bcd(v: u8) -> u32 {
    u32::from((v >> 4).min(9)) * 10 + u32::from((v & 0xf).min(9))
}

/// The MC146818 RTC with its CMOS RAM.
pub struct Rtc {
    // Runtime glue.
    irq: LineInterrupt,
    clock: VmClock,
    waker: PollWaker,
    // Volatile state.
    index: u8,
    nmi_masked: bool,
    ram: [u8; 128],
    /// RTC time (seconds) at VM time `base_ns`, while running.
    base_secs: i64,
    base_ns: u64,
    /// The time held while SET is set or the divider is in reset.
    frozen: Option<i64>,
    /// Seconds up to which update-ended/alarm have been evaluated.
    last_update: i64,
    /// Periodic ticks up to which PF has been evaluated.
    last_periodic: u64,
    irq_level: bool,
}

impl std::fmt::Debug for Rtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtc")
            .field("index", &self.index)
            .field("base_secs", &self.base_secs)
            .field("frozen", &self.frozen)
            .finish()
    }
}

impl Rtc {
    /// An RTC on IRQ line `irq`, counting on `clock`; `waker` asks the machine for a poll when
    /// the guest enables or reprograms an interrupt.
    pub fn new(config: &CmosConfig, irq: LineInterrupt, clock: VmClock, waker: PollWaker) -> Self {
        let now = clock.now_ns();
        let mut rtc = Self {
            irq,
            clock,
            waker,
            index: 0,
            nmi_masked: false,
            ram: [0; 128],
            base_secs: config.initial_time,
            base_ns: now,
            frozen: None,
            last_update: config.initial_time,
            last_periodic: 0,
            irq_level: false,
        };
        rtc.ram[usize::from(REG_A)] = A_DIVIDER_NORMAL | 0x06;
        rtc.ram[usize::from(REG_B)] = B_24H;
        rtc.ram[usize::from(REG_D)] = D_VRT;
        rtc.fill_config(config);
        rtc
    }

    fn fill_config(&mut self, config: &CmosConfig) {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        let set16 = |ram: &mut [u8; 128], at: usize, v: u64| {
            let v = v.min(0xffff) as u16;
            ram[at..at + 2].copy_from_slice(&v.to_le_bytes());
        };
        // Equipment: math coprocessor and PS/2 mouse present, VGA.
        self.ram[0x14] = 0x06;
        // Base memory: 640 KiB.
        set16(&mut self.ram, 0x15, 640);
        let extended_kib = (config.ram_below_4g / KIB).saturating_sub(1024);
        set16(&mut self.ram, 0x17, extended_kib);
        set16(&mut self.ram, 0x30, extended_kib);
        let above_16m = config.ram_below_4g.saturating_sub(16 * MIB) / (64 * KIB);
        set16(&mut self.ram, 0x34, above_16m);
        let high = (config.ram_above_4g / (64 * KIB)).min(0xff_ffff);
        self.ram[0x5b..0x5e].copy_from_slice(&high.to_le_bytes()[..3]);
        self.ram[0x5f] = config.processors.saturating_sub(1).min(0xff) as u8;
        let sum: u16 = self.ram[0x10..=0x2d].iter().map(|&b| u16::from(b)).sum();
        self.ram[0x2e..0x30].copy_from_slice(&sum.to_be_bytes());
    }

    /// The ports to register.
    pub fn port_range() -> std::ops::RangeInclusive<u16> {
        PORT_INDEX..=PORT_DATA
    }

    /// Whether the guest masked NMIs through port 0x70 bit 7.
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    /// Sets a CMOS RAM byte (machine configuration beyond [`CmosConfig`], e.g. boot flags).
    /// Clock registers (0x00-0x0d, 0x32) are not affected.
    pub fn set_cmos_byte(&mut self, index: u8, value: u8) {
        if index > REG_D && index != CENTURY && index < 128 {
            self.ram[usize::from(index)] = value;
        }
    }

    fn reg_a(&self) -> u8 {
        self.ram[usize::from(REG_A)]
    }

    fn reg_b(&self) -> u8 {
        self.ram[usize::from(REG_B)]
    }

    fn divider_running(&self) -> bool {
        self.reg_a() & A_DIVIDER_MASK == A_DIVIDER_NORMAL
    }

    /// The RTC time at `now` and nanoseconds into that second.
    fn time_at(&self, now: u64) -> (i64, u64) {
        match self.frozen {
            Some(secs) => (secs, 0),
            None => {
                let elapsed = now.saturating_sub(self.base_ns);
                let whole = i64::try_from(elapsed / NS_PER_SEC).unwrap_or(i64::MAX);
                (self.base_secs.saturating_add(whole), elapsed % NS_PER_SEC)
            }
        }
    }

    /// Replaces the RTC time with `secs` as of `now`.
    fn set_time(&mut self, secs: i64, now: u64) {
        match &mut self.frozen {
            Some(f) => *f = secs,
            None => {
                self.base_secs = secs;
                self.base_ns = now;
            }
        }
        self.last_update = secs;
    }

    /// Freezes or resumes the clock after SET or the divider changed.
    fn update_running(&mut self, now: u64) {
        let should_run = self.divider_running() && self.reg_b() & B_SET == 0;
        match (self.frozen, should_run) {
            (None, false) => self.frozen = Some(self.time_at(now).0),
            (Some(secs), true) => {
                self.frozen = None;
                self.base_secs = secs;
                self.base_ns = now;
                self.last_update = secs;
            }
            _ => {}
        }
    }

    fn encode(&self, v: u32) -> u8 {
        if self.reg_b() & B_BINARY != 0 {
            v.min(255) as u8
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> u32 {
        if self.reg_b() & B_BINARY != 0 {
            u32::from(v)
        } else {
            from_bcd(v)
        }
    }

    fn encode_hour(&self, hour: u32) -> u8 {
        if self.reg_b() & B_24H != 0 {
            self.encode(hour)
        } else {
            let h12 = match hour % 12 {
                0 => 12,
                h => h,
            };
            self.encode(h12) | if hour >= 12 { 0x80 } else { 0 }
        }
    }

    fn decode_hour(&self, v: u8) -> u32 {
        if self.reg_b() & B_24H != 0 {
            self.decode(v)
        } else {
            let h = self.decode(v & 0x7f) % 12;
            if v & 0x80 != 0 { h + 12 } else { h }
        }
    }

    /// Periodic interrupt period as (numerator ns, per 32768): ticks = ns * 32768 / (1e9 << k).
    fn periodic_shift(&self) -> Option<u32> {
        match self.reg_a() & A_RATE_MASK {
            0 => None,
            1 => Some(7),
            2 => Some(8),
            rate => Some(u32::from(rate) - 1),
        }
    }

    fn periodic_index(now: u64, shift: u32) -> u64 {
        (u128::from(now) * 32_768 / (u128::from(NS_PER_SEC) << shift)) as u64
    }

    fn periodic_deadline(index: u64, shift: u32) -> u64 {
        let ns = (u128::from(index) * (u128::from(NS_PER_SEC) << shift)).div_ceil(32_768);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// Sets register C flags for whatever happened up to `now`.
    fn update_flags(&mut self, now: u64) {
        let mut flags = 0;
        if let Some(shift) = self.periodic_shift()
            && self.divider_running()
        {
            let idx = Self::periodic_index(now, shift);
            if idx > self.last_periodic {
                flags |= C_PF;
                self.last_periodic = idx;
            }
        }
        if self.frozen.is_none() {
            let (secs, _) = self.time_at(now);
            if secs > self.last_update {
                flags |= C_UF;
                if self.alarm_matches(secs) {
                    flags |= C_AF;
                }
            }
            self.last_update = secs;
        }
        self.ram[usize::from(REG_C)] |= flags;
        self.update_irq();
    }

    fn alarm_matches(&self, secs: i64) -> bool {
        let t = DateTime::from_secs(secs);
        let field = |alarm: u8, current: u8| alarm >= 0xc0 || alarm == current;
        field(self.ram[usize::from(SECONDS_ALARM)], self.encode(t.second))
            && field(self.ram[usize::from(MINUTES_ALARM)], self.encode(t.minute))
            && field(self.ram[usize::from(HOURS_ALARM)], self.encode_hour(t.hour))
    }

    fn update_irq(&mut self) {
        let c = self.ram[usize::from(REG_C)];
        let enabled = self.reg_b() & (B_PIE | B_AIE | B_UIE);
        // Flag bits 6:4 line up with the enable bits 6:4.
        let irqf = c & enabled & (C_PF | C_AF | C_UF) != 0;
        if irqf {
            self.ram[usize::from(REG_C)] |= C_IRQF;
        } else {
            self.ram[usize::from(REG_C)] &= !C_IRQF;
        }
        if irqf != self.irq_level {
            self.irq_level = irqf;
            self.irq.set_level(irqf);
        }
    }

    fn read_register(&mut self, index: u8) -> u8 {
        let now = self.clock.now_ns();
        let (secs, subsec) = self.time_at(now);
        let t = DateTime::from_secs(secs);
        match index {
            SECONDS => self.encode(t.second),
            MINUTES => self.encode(t.minute),
            HOURS => self.encode_hour(t.hour),
            DAY_OF_WEEK => self.encode(t.day_of_week()),
            DAY_OF_MONTH => self.encode(t.day),
            MONTH => self.encode(t.month),
            YEAR => self.encode(t.year.rem_euclid(100) as u32),
            CENTURY => self.encode(t.year.div_euclid(100).clamp(0, 99) as u32),
            REG_A => {
                let uip = self.frozen.is_none() && subsec >= NS_PER_SEC - UIP_NS;
                self.reg_a() | if uip { A_UIP } else { 0 }
            }
            REG_C => {
                self.update_flags(now);
                let c = self.ram[usize::from(REG_C)];
                self.ram[usize::from(REG_C)] = 0;
                self.update_irq();
                c
            }
            _ => self.ram[usize::from(index & 0x7f)],
        }
    }

    fn write_register(&mut self, index: u8, value: u8) {
        let now = self.clock.now_ns();
        let time_field = matches!(
            index,
            SECONDS | MINUTES | HOURS | DAY_OF_MONTH | MONTH | YEAR | CENTURY
        );
        if time_field {
            let (secs, _) = self.time_at(now);
            let mut t = DateTime::from_secs(secs);
            match index {
                SECONDS => t.second = self.decode(value),
                MINUTES => t.minute = self.decode(value),
                HOURS => t.hour = self.decode_hour(value),
                DAY_OF_MONTH => t.day = self.decode(value),
                MONTH => t.month = self.decode(value),
                YEAR => t.year = t.year.div_euclid(100) * 100 + i64::from(self.decode(value) % 100),
                _ => t.year = i64::from(self.decode(value) % 100) * 100 + t.year.rem_euclid(100),
            }
            self.set_time(t.to_secs(), now);
            return;
        }
        match index {
            // The day of week follows the date.
            DAY_OF_WEEK => {}
            REG_A => {
                let old = self.reg_a();
                self.ram[usize::from(REG_A)] = value & !A_UIP;
                if (old ^ value) & A_RATE_MASK != 0 {
                    self.last_periodic = self
                        .periodic_shift()
                        .map_or(0, |s| Self::periodic_index(now, s));
                }
                self.update_running(now);
                self.waker.wake();
            }
            REG_B => {
                let mut value = value;
                if value & B_SET != 0 {
                    // Setting SET clears UIE.
                    value &= !B_UIE;
                }
                self.update_flags(now);
                self.ram[usize::from(REG_B)] = value;
                self.update_running(now);
                self.update_irq();
                self.waker.wake();
            }
            REG_C | REG_D => {}
            _ => self.ram[usize::from(index & 0x7f)] = value,
        }
    }
}

impl PortIo for Rtc {
    fn io_read(&mut self, port: u16, data: &mut [u8]) -> IoResult {
        if data.len() != 1 {
            return Err(IoError::InvalidAccessSize);
        }
        data[0] = match port {
            // The index register is write-only; reads float.
            PORT_INDEX => 0xff,
            PORT_DATA => self.read_register(self.index),
            _ => return Err(IoError::InvalidRegister),
        };
        Ok(())
    }

    fn io_write(&mut self, port: u16, data: &[u8]) -> IoResult {
        let &[value] = data else {
            return Err(IoError::InvalidAccessSize);
        };
        match port {
            PORT_INDEX => {
                self.index = value & 0x7f;
                self.nmi_masked = value & 0x80 != 0;
            }
            PORT_DATA => self.write_register(self.index, value),
            _ => return Err(IoError::InvalidRegister),
        }
        Ok(())
    }
}

impl Poll for Rtc {
    fn poll(&mut self, now_ns: u64) -> Option<u64> {
        self.update_flags(now_ns);
        let b = self.reg_b();
        let periodic = if b & B_PIE != 0 && self.divider_running() {
            self.periodic_shift()
                .map(|s| Self::periodic_deadline(self.last_periodic + 1, s))
        } else {
            None
        };
        let second = if b & (B_UIE | B_AIE) != 0 && self.frozen.is_none() {
            let (_, subsec) = self.time_at(now_ns);
            Some(now_ns.saturating_add(NS_PER_SEC - subsec))
        } else {
            None
        };
        match (periodic, second) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use device_api::TestIrqTarget;

    use super::*;

    /// 2024-02-29 23:59:58 UTC, a Thursday.
    const LEAP_EVE: i64 = 1_709_251_198;

    struct Rig {
        rtc: Rtc,
        irq: Arc<TestIrqTarget>,
        clock: VmClock,
    }

    fn rig_at(time: i64) -> Rig {
        let irq = TestIrqTarget::new();
        let clock = VmClock::manual();
        let config = CmosConfig {
            initial_time: time,
            ram_below_4g: 3 << 30,
            ram_above_4g: 1 << 30,
            processors: 4,
        };
        let rtc = Rtc::new(&config, irq.line(8), clock.clone(), PollWaker::detached());
        Rig { rtc, irq, clock }
    }

    impl Rig {
        fn read(&mut self, index: u8) -> u8 {
            self.rtc.io_write(PORT_INDEX, &[index]).unwrap();
            let mut b = [0];
            self.rtc.io_read(PORT_DATA, &mut b).unwrap();
            b[0]
        }
        fn write(&mut self, index: u8, v: u8) {
            self.rtc.io_write(PORT_INDEX, &[index]).unwrap();
            self.rtc.io_write(PORT_DATA, &[v]).unwrap();
        }
        fn poll(&mut self) -> Option<u64> {
            let now = self.clock.now_ns();
            self.rtc.poll(now)
        }
        fn time(&mut self) -> [u8; 8] {
            [
                SECONDS,
                MINUTES,
                HOURS,
                DAY_OF_WEEK,
                DAY_OF_MONTH,
                MONTH,
                YEAR,
                CENTURY,
            ]
            .map(|i| self.read(i))
        }
    }

    #[test]
    fn calendar_round_trips() {
        for secs in [
            0i64,
            LEAP_EVE,
            951_782_400,   // 2000-02-29
            4_107_456_000, // 2100-02-28
            -86_400,
            253_402_300_799, // 9999-12-31 23:59:59
        ] {
            assert_eq!(DateTime::from_secs(secs).to_secs(), secs);
        }
        let t = DateTime::from_secs(LEAP_EVE);
        assert_eq!((t.year, t.month, t.day, t.hour), (2024, 2, 29, 23));
        assert_eq!(t.day_of_week(), 5, "Thursday");
        assert_eq!(
            DateTime::from_secs(0).day_of_week(),
            5,
            "1970-01-01 was a Thursday"
        );
    }

    #[test]
    fn reads_host_time_in_bcd_and_ticks_over_midnight() {
        let mut r = rig_at(LEAP_EVE);
        assert_eq!(r.time(), [0x58, 0x59, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20]);
        r.clock.advance(2 * NS_PER_SEC);
        assert_eq!(r.time(), [0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24, 0x20]);
    }

    #[test]
    fn binary_and_12_hour_formats() {
        let mut r = rig_at(LEAP_EVE);
        r.write(REG_B, B_BINARY);
        assert_eq!(r.read(HOURS), 0x80 | 11, "11 PM, binary");
        assert_eq!(r.read(SECONDS), 58);
        r.write(REG_B, 0);
        assert_eq!(r.read(HOURS), 0x80 | 0x11, "11 PM, BCD");
        r.clock.advance(2 * NS_PER_SEC);
        assert_eq!(r.read(HOURS), 0x12, "midnight is 12 AM");
    }

    #[test]
    fn guest_sets_the_time_under_set_bit() {
        let mut r = rig_at(LEAP_EVE);
        r.write(REG_B, B_SET | B_24H);
        r.write(YEAR, 0x99);
        r.write(CENTURY, 0x19);
        r.write(MONTH, 0x12);
        r.write(DAY_OF_MONTH, 0x31);
        r.write(HOURS, 0x23);
        r.write(MINUTES, 0x59);
        r.write(SECONDS, 0x59);
        r.clock.advance(5 * NS_PER_SEC);
        assert_eq!(r.read(SECONDS), 0x59, "frozen while SET");
        r.write(REG_B, B_24H);
        r.clock.advance(NS_PER_SEC);
        assert_eq!(r.time(), [0x00, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]);
    }

    #[test]
    fn uip_is_set_just_before_each_update() {
        let mut r = rig_at(LEAP_EVE);
        assert_eq!(r.read(REG_A), 0x26);
        r.clock.advance(NS_PER_SEC - UIP_NS);
        assert_eq!(r.read(REG_A), 0x26 | A_UIP);
        assert_eq!(r.read(SECONDS), 0x58);
        r.clock.advance(UIP_NS);
        assert_eq!(r.read(REG_A), 0x26);
        assert_eq!(r.read(SECONDS), 0x59);
        r.write(REG_A, 0x76); // divider reset: stops the clock
        r.clock.advance(10 * NS_PER_SEC);
        assert_eq!(r.read(SECONDS), 0x59);
        r.write(REG_A, 0x26);
        r.clock.advance(NS_PER_SEC);
        assert_eq!(r.read(SECONDS), 0x00);
    }

    #[test]
    fn update_ended_interrupt_each_second() {
        let mut r = rig_at(LEAP_EVE);
        r.write(REG_B, B_24H | B_UIE);
        let next = r.poll().unwrap();
        assert_eq!(next, NS_PER_SEC);
        assert!(!r.irq.level(8));
        r.clock.advance(next);
        r.poll();
        assert!(r.irq.level(8));
        assert_eq!(
            r.read(REG_C),
            C_IRQF | C_UF | C_PF,
            "PF flags whatever PIE says"
        );
        assert!(!r.irq.level(8), "reading C clears");
        assert_eq!(r.read(REG_C), 0);
    }

    #[test]
    fn periodic_interrupt_at_1024_hz() {
        let mut r = rig_at(LEAP_EVE);
        r.write(REG_B, B_24H | B_PIE); // rate 6 = 1024 Hz
        let d = r.poll().unwrap();
        assert_eq!(d, 976_563, "1/1024 s rounded up");
        r.clock.advance(d);
        r.poll();
        assert!(r.irq.level(8));
        assert_eq!(r.read(REG_C) & (C_IRQF | C_PF), C_IRQF | C_PF);
        let mut count = 0;
        for _ in 0..1024 {
            let d = r.poll().unwrap();
            r.clock.advance(d - r.clock.now_ns());
            r.poll();
            if r.read(REG_C) & C_PF != 0 {
                count += 1;
            }
        }
        assert_eq!(count, 1024);
        assert_eq!(r.clock.now_ns(), 1_025 * NS_PER_SEC / 1024 + 1);
    }

    #[test]
    fn pf_is_flagged_without_pie_but_does_not_interrupt() {
        let mut r = rig_at(LEAP_EVE);
        r.write(REG_A, 0x2f); // 2 Hz
        r.clock.advance(NS_PER_SEC);
        assert_eq!(r.poll(), None);
        assert!(!r.irq.level(8));
        assert_eq!(r.read(REG_C), C_PF | C_UF);
    }

    #[test]
    fn alarm_interrupt_with_dont_care_fields() {
        let mut r = rig_at(LEAP_EVE);
        r.write(SECONDS_ALARM, 0x00);
        r.write(MINUTES_ALARM, 0xc0);
        r.write(HOURS_ALARM, 0xff);
        r.write(REG_B, B_24H | B_AIE);
        r.clock.advance(NS_PER_SEC);
        r.poll();
        assert!(!r.irq.level(8), "second 59 does not match");
        r.clock.advance(NS_PER_SEC);
        r.poll();
        assert!(r.irq.level(8));
        assert_eq!(r.read(REG_C) & !C_PF, C_IRQF | C_AF | C_UF);
    }

    #[test]
    fn cmos_memory_fields_for_firmware() {
        let mut r = rig_at(0);
        let w = |r: &mut Rig, i: u8| u16::from_le_bytes([r.read(i), r.read(i + 1)]);
        assert_eq!(w(&mut r, 0x15), 640);
        assert_eq!(w(&mut r, 0x17), 0xffff, "capped");
        assert_eq!(w(&mut r, 0x30), 0xffff);
        assert_eq!(w(&mut r, 0x34), ((3u32 << 30) / 65536 - 256) as u16);
        assert_eq!([r.read(0x5b), r.read(0x5c), r.read(0x5d)], [0, 0x40, 0]);
        assert_eq!(r.read(0x5f), 3);
        assert_eq!(r.read(REG_D), D_VRT);
        let sum: u16 = (0x10..=0x2d).map(|i| u16::from(r.read(i))).sum();
        assert_eq!(u16::from_be_bytes([r.read(0x2e), r.read(0x2f)]), sum);
        r.write(0x40, 0x5a);
        assert_eq!(r.read(0x40), 0x5a);
        r.rtc.set_cmos_byte(0x3d, 0x21);
        assert_eq!(r.read(0x3d), 0x21);
        r.write(REG_D, 0);
        assert_eq!(r.read(REG_D), D_VRT, "read-only");
    }

    #[test]
    fn nmi_mask_bit_and_index_masking() {
        let mut r = rig_at(0);
        r.rtc.io_write(PORT_INDEX, &[0x80 | 0x0d]).unwrap();
        assert!(r.rtc.nmi_masked());
        let mut b = [0];
        r.rtc.io_read(PORT_DATA, &mut b).unwrap();
        assert_eq!(b[0], D_VRT);
        r.rtc.io_write(PORT_INDEX, &[0x0d]).unwrap();
        assert!(!r.rtc.nmi_masked());
    }

    #[test]
    fn garbage_never_panics() {
        let mut r = rig_at(LEAP_EVE);
        let mut x: u64 = 0x5555_aaaa_1234_9876;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 4 {
                0 => r.write((x >> 8) as u8, (x >> 16) as u8),
                1 => {
                    r.read((x >> 8) as u8);
                }
                2 => r.clock.advance((x >> 16) % (3 * NS_PER_SEC)),
                _ => {
                    if let Some(d) = r.poll() {
                        assert!(d > r.clock.now_ns());
                    }
                }
            }
            assert_eq!(r.irq.level(8), r.rtc.ram[usize::from(REG_C)] & C_IRQF != 0);
        }
    }
}
