//! 8254 programmable interval timer and port 0x61 (system control port B).
//!
//! Ports 0x40-0x42 are the three counters, 0x43 the control word (including the counter latch
//! and read-back commands), 0x61 carries channel 2's gate (bit 0), the speaker enable (bit 1),
//! the refresh toggle (bit 4) and channel 2's output (bit 5).
//!
//! Time comes from the [`VmClock`]: the input clock is 3.579545 MHz / 3 (1.193182 MHz), and a
//! channel's count and output are computed from the clock tick at which it started counting,
//! so readings are exact at any instant without periodic work. Channel 0's output drives ISA
//! IRQ 0; [`Poll`] delivers its rising edges at their deadlines (missed periods are coalesced
//! into one edge, as an edge-triggered input would see them). Guest writes that change the
//! schedule wake the machine through a [`PollWaker`].
//!
//! Spec: Intel 82C54 datasheet (modes 0-5, read-back, latch), IBM PC/AT port 0x61.

use device_api::IoError;
use device_api::IoResult;
use device_api::LineInterrupt;
use device_api::Poll;
use device_api::PollWaker;
use device_api::PortIo;
use device_api::VmClock;

/// First counter port.
pub const PORT_COUNTER0: u16 = 0x40;
/// Control word port.
pub const PORT_CONTROL: u16 = 0x43;
/// System control port B.
pub const PORT_61: u16 = 0x61;

/// The PIT's input clock numerator: ticks = ns * NUM / DEN (1.193181666 MHz).
const TICK_NUM: u128 = 3_579_545;
const TICK_DEN: u128 = 3_000_000_000;
/// DRAM refresh request period behind port 0x61 bit 4.
const REFRESH_NS: u64 = 15_085;

/// Input clock ticks at `ns`.
pub fn ns_to_ticks(ns: u64) -> u64 {
    (u128::from(ns) * TICK_NUM / TICK_DEN) as u64
}

/// The first instant (ns) at which `ticks` have elapsed.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    let ns = (u128::from(ticks) * TICK_DEN).div_ceil(TICK_NUM);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Low,
    High,
    Word,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// No count loaded, or waiting for a gate trigger (modes 1/5) or gate high (modes 2/3).
    Idle,
    /// Counting since tick `start` (adjusted for pauses).
    Running { start: u64 },
    /// Gate low in modes 0/4: counting suspended after `elapsed` ticks.
    Paused { elapsed: u64 },
}

#[derive(Debug, Clone)]
struct Channel {
    mode: u8,
    access: Access,
    bcd: bool,
    /// Initial count, 1..=65536 (binary) or 1..=10000 (BCD).
    reload: u64,
    loaded: bool,
    gate: bool,
    run: Run,
    null_count: bool,
    /// LSB written in word access mode, waiting for the MSB.
    pending_lsb: Option<u8>,
    /// Word access reads: the MSB comes next.
    read_msb_next: bool,
    /// Latched count and whether its MSB comes next (word access).
    latched_count: Option<(u16, bool)>,
    latched_status: Option<u8>,
}

impl Channel {
    fn new(gate: bool) -> Self {
        Self {
            mode: 0,
            access: Access::Word,
            bcd: false,
            reload: 0x10000,
            loaded: false,
            gate,
            run: Run::Idle,
            null_count: true,
            pending_lsb: None,
            read_msb_next: false,
            latched_count: None,
            latched_status: None,
        }
    }

    fn elapsed(&self, now: u64) -> Option<u64> {
        match self.run {
            Run::Idle => None,
            Run::Running { start } => Some(now.saturating_sub(start)),
            Run::Paused { elapsed } => Some(elapsed),
        }
    }

    fn output(&self, now: u64) -> bool {
        let n = self.reload;
        match self.elapsed(now) {
            None => self.mode != 0,
            Some(e) => match self.mode {
                0 | 1 => e >= n,
                2 => n < 2 || e % n != n - 1,
                3 => e % n < n.div_ceil(2),
                _ => e != n,
            },
        }
    }

    /// The tick of the first rising edge of the output strictly after `after` (None if none
    /// comes without guest action).
    fn next_rising_edge(&self, after: u64) -> Option<u64> {
        let Run::Running { start } = self.run else {
            return None;
        };
        let n = self.reload;
        let e = after.saturating_sub(start);
        let rel = match self.mode {
            0 | 1 => (e < n).then_some(n)?,
            2 | 3 => (e / n + 1) * n,
            _ => (e < n + 1).then_some(n + 1)?,
        };
        start.checked_add(rel)
    }

    fn count(&self, now: u64) -> u16 {
        let modulus: i128 = if self.bcd { 10_000 } else { 0x10000 };
        let n = i128::from(self.reload);
        let value = match self.elapsed(now) {
            None => n,
            Some(e) => {
                let e = i128::from(e);
                match self.mode {
                    2 => n - e % n,
                    3 => n - (2 * e) % n,
                    _ => n - e,
                }
            }
        }
        .rem_euclid(modulus) as u16;
        if self.bcd { to_bcd(value) } else { value }
    }

    fn status(&self, now: u64) -> u8 {
        let rw = match self.access {
            Access::Low => 1,
            Access::High => 2,
            Access::Word => 3,
        };
        u8::from(self.output(now)) << 7
            | u8::from(self.null_count) << 6
            | rw << 4
            | self.mode << 1
            | u8::from(self.bcd)
    }

    fn latch_count(&mut self, now: u64) {
        if self.latched_count.is_none() {
            self.latched_count = Some((self.count(now), false));
        }
    }

    fn set_control(&mut self, access: Access, mode: u8, bcd: bool) {
        self.access = access;
        self.mode = if mode >= 6 { mode - 4 } else { mode };
        self.bcd = bcd;
        self.loaded = false;
        self.run = Run::Idle;
        self.null_count = true;
        self.pending_lsb = None;
        self.read_msb_next = false;
        self.latched_count = None;
        self.latched_status = None;
    }

    fn load(&mut self, raw: u16, now: u64) {
        let value = if self.bcd { from_bcd(raw) } else { raw };
        self.reload = match (value, self.bcd) {
            (0, false) => 0x10000,
            (0, true) => 10_000,
            (v, _) => u64::from(v),
        };
        self.loaded = true;
        self.null_count = false;
        self.run = match self.mode {
            1 | 5 => Run::Idle,
            0 | 4 if !self.gate => Run::Paused { elapsed: 0 },
            _ if !self.gate => Run::Idle,
            _ => Run::Running { start: now },
        };
    }

    fn set_gate(&mut self, gate: bool, now: u64) {
        if gate == self.gate {
            return;
        }
        self.gate = gate;
        if !self.loaded {
            return;
        }
        match (self.mode, gate) {
            (0 | 4, false) => {
                if let Run::Running { start } = self.run {
                    self.run = Run::Paused {
                        elapsed: now.saturating_sub(start),
                    };
                }
            }
            (0 | 4, true) => {
                if let Run::Paused { elapsed } = self.run {
                    self.run = Run::Running {
                        start: now.saturating_sub(elapsed),
                    };
                }
            }
            (2 | 3, false) => self.run = Run::Idle,
            (_, true) => self.run = Run::Running { start: now },
            (_, false) => {}
        }
    }

    fn write(&mut self, value: u8, now: u64) {
        match self.access {
            Access::Low => self.load(u16::from(value), now),
            Access::High => self.load(u16::from(value) << 8, now),
            Access::Word => match self.pending_lsb.take() {
                None => self.pending_lsb = Some(value),
                Some(lsb) => self.load(u16::from(value) << 8 | u16::from(lsb), now),
            },
        }
    }

    fn read(&mut self, now: u64) -> u8 {
        if let Some(status) = self.latched_status.take() {
            return status;
        }
        if let Some((count, msb_next)) = self.latched_count {
            let [lo, hi] = count.to_le_bytes();
            return match self.access {
                Access::Low => {
                    self.latched_count = None;
                    lo
                }
                Access::High => {
                    self.latched_count = None;
                    hi
                }
                Access::Word if !msb_next => {
                    self.latched_count = Some((count, true));
                    lo
                }
                Access::Word => {
                    self.latched_count = None;
                    hi
                }
            };
        }
        let [lo, hi] = self.count(now).to_le_bytes();
        match self.access {
            Access::Low => lo,
            Access::High => hi,
            Access::Word => {
                self.read_msb_next = !self.read_msb_next;
                if self.read_msb_next { lo } else { hi }
            }
        }
    }
}

fn to_bcd(v: u16) -> u16 {
    let v = v % 10_000;
    ((v / 1000) << 12) | ((v / 100 % 10) << 8) | ((v / 10 % 10) << 4) | (v % 10)
}

fn from_bcd(v: u16) -> u16 {
    let digit = |shift: u16| ((v >> shift) & 0xf).min(9);
    digit(12) * 1000 + digit(8) * 100 + digit(4) * 10 + digit(0)
}

/// The 8254 PIT with port 0x61.
pub struct Pit {
    // Runtime glue.
    irq: LineInterrupt,
    clock: VmClock,
    waker: PollWaker,
    // Volatile state.
    channels: [Channel; 3],
    speaker_data: bool,
    /// Port 0x61 bits 2-3 (parity/channel check enables), kept for reads.
    port61_misc: u8,
    irq_level: bool,
    /// Channel 0 output rising edges up to this tick have been delivered.
    irq_delivered_until: u64,
}

impl std::fmt::Debug for Pit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pit")
            .field("channels", &self.channels)
            .finish()
    }
}

impl Pit {
    /// A PIT whose channel 0 drives `irq0`, counting on `clock`; `waker` asks the machine for
    /// a poll when the guest reprograms channel 0.
    pub fn new(irq0: LineInterrupt, clock: VmClock, waker: PollWaker) -> Self {
        Self {
            irq: irq0,
            clock,
            waker,
            // Channels 0 and 1 have their gates tied high; channel 2's is port 0x61 bit 0.
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            speaker_data: false,
            port61_misc: 0,
            irq_level: false,
            irq_delivered_until: 0,
        }
    }

    /// The port ranges to register: the counters and control word, and port 0x61.
    pub fn port_ranges() -> [std::ops::RangeInclusive<u16>; 2] {
        [PORT_COUNTER0..=PORT_CONTROL, PORT_61..=PORT_61]
    }

    /// Platform reset.
    pub fn reset(&mut self) {
        self.channels = [Channel::new(true), Channel::new(true), Channel::new(false)];
        self.speaker_data = false;
        self.port61_misc = 0;
        if self.irq_level {
            self.irq_level = false;
            self.irq.set_level(false);
        }
        self.waker.wake();
    }

    fn now_ticks(&self) -> u64 {
        ns_to_ticks(self.clock.now_ns())
    }

    fn write_control(&mut self, value: u8, now: u64) {
        let select = value >> 6;
        if select == 3 {
            // Read-back: bit 5 clear latches counts, bit 4 clear latches status.
            for (i, ch) in self.channels.iter_mut().enumerate() {
                if value & (2 << i) == 0 {
                    continue;
                }
                if value & 0x10 == 0 && ch.latched_status.is_none() {
                    ch.latched_status = Some(ch.status(now));
                }
                if value & 0x20 == 0 {
                    ch.latch_count(now);
                }
            }
            return;
        }
        let ch = &mut self.channels[usize::from(select)];
        let access = match (value >> 4) & 3 {
            0 => {
                ch.latch_count(now);
                return;
            }
            1 => Access::Low,
            2 => Access::High,
            _ => Access::Word,
        };
        ch.set_control(access, (value >> 1) & 7, value & 1 != 0);
        if select == 0 {
            self.channel0_changed(now);
        }
    }

    /// Channel 0 was reprogrammed: its output level may have changed and the edge schedule
    /// restarts from now.
    fn channel0_changed(&mut self, now: u64) {
        self.irq_delivered_until = now;
        let out = self.channels[0].output(now);
        if out != self.irq_level {
            self.irq_level = out;
            self.irq.set_level(out);
        }
        self.waker.wake();
    }

    fn read_port61(&self, now: u64) -> u8 {
        let refresh = (self.clock.now_ns() / REFRESH_NS) & 1 == 1;
        u8::from(self.channels[2].gate)
            | u8::from(self.speaker_data) << 1
            | self.port61_misc
            | u8::from(refresh) << 4
            | u8::from(self.channels[2].output(now)) << 5
    }

    fn write_port61(&mut self, value: u8, now: u64) {
        self.channels[2].set_gate(value & 1 != 0, now);
        self.speaker_data = value & 2 != 0;
        self.port61_misc = value & 0x0c;
    }
}

impl PortIo for Pit {
    fn io_read(&mut self, port: u16, data: &mut [u8]) -> IoResult {
        if data.len() != 1 {
            return Err(IoError::InvalidAccessSize);
        }
        let now = self.now_ticks();
        data[0] = match port {
            0x40..=0x42 => self.channels[usize::from(port - PORT_COUNTER0)].read(now),
            // The control word register is write-only.
            PORT_CONTROL => 0xff,
            PORT_61 => self.read_port61(now),
            _ => return Err(IoError::InvalidRegister),
        };
        Ok(())
    }

    fn io_write(&mut self, port: u16, data: &[u8]) -> IoResult {
        let &[value] = data else {
            return Err(IoError::InvalidAccessSize);
        };
        let now = self.now_ticks();
        match port {
            0x40..=0x42 => {
                let idx = usize::from(port - PORT_COUNTER0);
                self.channels[idx].write(value, now);
                if idx == 0 {
                    self.channel0_changed(now);
                }
            }
            PORT_CONTROL => self.write_control(value, now),
            PORT_61 => self.write_port61(value, now),
            _ => return Err(IoError::InvalidRegister),
        }
        Ok(())
    }
}

impl Poll for Pit {
    fn poll(&mut self, now_ns: u64) -> Option<u64> {
        let now = ns_to_ticks(now_ns);
        let ch = &self.channels[0];
        if let Some(edge) = ch.next_rising_edge(self.irq_delivered_until)
            && edge <= now
        {
            // One edge for however many periods passed.
            if self.irq_level {
                self.irq.set_level(false);
            }
            self.irq.set_level(true);
            self.irq_level = true;
        }
        self.irq_delivered_until = self.irq_delivered_until.max(now);
        let out = self.channels[0].output(now);
        if out != self.irq_level {
            self.irq_level = out;
            self.irq.set_level(out);
        }
        self.channels[0]
            .next_rising_edge(self.irq_delivered_until)
            .map(ticks_to_ns)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;
    use std::sync::atomic::Ordering;

    use device_api::TestIrqTarget;

    use super::*;

    struct Rig {
        pit: Pit,
        irq: Arc<TestIrqTarget>,
        clock: VmClock,
        wakes: Arc<AtomicU32>,
    }

    fn rig() -> Rig {
        let irq = TestIrqTarget::new();
        let clock = VmClock::manual();
        let wakes = Arc::new(AtomicU32::new(0));
        let w = wakes.clone();
        let pit = Pit::new(
            irq.line(0),
            clock.clone(),
            PollWaker::new(move || {
                w.fetch_add(1, Ordering::Relaxed);
            }),
        );
        Rig {
            pit,
            irq,
            clock,
            wakes,
        }
    }

    impl Rig {
        fn w(&mut self, port: u16, v: u8) {
            self.pit.io_write(port, &[v]).unwrap();
        }
        fn r(&mut self, port: u16) -> u8 {
            let mut b = [0];
            self.pit.io_read(port, &mut b).unwrap();
            b[0]
        }
        fn advance_ticks(&mut self, ticks: u64) {
            let target = ticks_to_ns(ns_to_ticks(self.clock.now_ns()) + ticks);
            self.clock.advance(target - self.clock.now_ns());
        }
        fn poll(&mut self) -> Option<u64> {
            let now = self.clock.now_ns();
            self.pit.poll(now)
        }
    }

    #[test]
    fn tick_conversion_is_exact_and_monotonic() {
        assert_eq!(ns_to_ticks(1_000_000_000), 1_193_181);
        assert_eq!(ns_to_ticks(3_000_000_000), 3_579_545);
        for t in [0u64, 1, 2, 1000, 65536, 1 << 40] {
            assert_eq!(ns_to_ticks(ticks_to_ns(t)), t);
            assert_eq!(
                ns_to_ticks(ticks_to_ns(t).saturating_sub(1)),
                t.saturating_sub(1)
            );
        }
    }

    /// Linux's `pit_calibrate_tsc`: channel 2, mode 0, gate via port 0x61, wait for OUT2.
    #[test]
    fn channel2_mode0_calibration_loop() {
        let mut p = rig();
        let v = p.r(PORT_61);
        p.w(PORT_61, (v & !0x02) | 0x01);
        p.w(PORT_CONTROL, 0xb0); // ch2, lo/hi, mode 0, binary
        let latch: u16 = 11932; // 10 ms
        p.w(0x42, latch as u8);
        p.w(0x42, (latch >> 8) as u8);
        assert_eq!(p.r(PORT_61) & 0x20, 0, "OUT2 low while counting");
        p.advance_ticks(u64::from(latch) - 1);
        assert_eq!(p.r(PORT_61) & 0x20, 0);
        p.advance_ticks(1);
        assert_eq!(p.r(PORT_61) & 0x20, 0x20, "OUT2 high at terminal count");
        // The count keeps wrapping below zero.
        p.advance_ticks(5);
        let lo = p.r(0x42);
        let hi = p.r(0x42);
        assert_eq!(u16::from_le_bytes([lo, hi]), 0u16.wrapping_sub(5));
        assert!(p.irq.rising_edges(0) == 0, "channel 2 has no IRQ");
    }

    /// Linux's `quick_pit_calibrate`: the MSB read repeatedly decrements once per 256 ticks.
    #[test]
    fn channel2_msb_decrements_every_256_ticks() {
        let mut p = rig();
        p.w(PORT_61, 0x01);
        p.w(PORT_CONTROL, 0xb0);
        p.w(0x42, 0xff);
        p.w(0x42, 0xff);
        for expect in (0xf0..=0xffu8).rev() {
            let _lsb = p.r(0x42);
            assert_eq!(p.r(0x42), expect);
            p.advance_ticks(256);
        }
    }

    #[test]
    fn gate_low_pauses_mode0() {
        let mut p = rig();
        p.w(PORT_CONTROL, 0xb0);
        p.w(0x42, 100);
        p.w(0x42, 0);
        p.advance_ticks(1000);
        assert_eq!(p.r(PORT_61) & 0x20, 0, "gate low: not counting");
        p.w(PORT_61, 0x01);
        p.advance_ticks(60);
        p.w(PORT_61, 0x00);
        p.advance_ticks(1000);
        p.w(PORT_CONTROL, 0x80); // latch ch2
        assert_eq!(p.r(0x42), 40);
        assert_eq!(p.r(0x42), 0);
        p.w(PORT_61, 0x01);
        p.advance_ticks(40);
        assert_eq!(p.r(PORT_61) & 0x20, 0x20);
    }

    #[test]
    fn channel0_periodic_mode2_raises_irq0_each_period() {
        let mut p = rig();
        let latch: u16 = 1193; // ~1 kHz
        p.w(PORT_CONTROL, 0x34);
        p.w(0x40, latch as u8);
        p.w(0x40, (latch >> 8) as u8);
        assert!(p.wakes.load(Ordering::Relaxed) >= 2);
        let first = p.poll().expect("deadline");
        assert_eq!(
            ns_to_ticks(first),
            u64::from(latch),
            "first edge one period after load"
        );
        assert_eq!(p.irq.rising_edges(0), 1, "mode 2 output starts high");
        for k in 1..=5u32 {
            let next = p.poll().unwrap();
            p.clock.advance(next - p.clock.now_ns());
            p.poll();
            assert_eq!(p.irq.rising_edges(0), 1 + k);
        }
        // Ten periods late: one edge, then back on the period grid.
        p.advance_ticks(10 * u64::from(latch));
        let next = p.poll().unwrap();
        assert_eq!(p.irq.rising_edges(0), 7);
        assert_eq!(ns_to_ticks(next) % u64::from(latch), 0);
    }

    #[test]
    fn channel0_oneshot_mode4_fires_once() {
        let mut p = rig();
        p.w(PORT_CONTROL, 0x38);
        p.w(0x40, 100);
        p.w(0x40, 0);
        let base = p.irq.rising_edges(0);
        let d = p.poll().unwrap();
        assert_eq!(ns_to_ticks(d) - ns_to_ticks(p.clock.now_ns()), 101);
        p.clock.advance(d - p.clock.now_ns());
        assert_eq!(p.poll(), None);
        assert_eq!(p.irq.rising_edges(0), base + 1);
        p.advance_ticks(1 << 17);
        assert_eq!(p.poll(), None);
        assert_eq!(p.irq.rising_edges(0), base + 1);
    }

    #[test]
    fn channel0_mode0_interrupt_on_terminal_count() {
        let mut p = rig();
        p.w(PORT_CONTROL, 0x30);
        p.w(0x40, 0x10);
        p.w(0x40, 0);
        assert!(!p.irq.level(0), "mode 0 output low after loading");
        p.advance_ticks(0x10);
        assert_eq!(p.poll(), None);
        assert!(p.irq.level(0));
        assert_eq!(p.irq.rising_edges(0), 1);
    }

    #[test]
    fn mode3_square_wave_output_and_count() {
        let mut p = rig();
        p.w(PORT_61, 0x01);
        p.w(PORT_CONTROL, 0xb6); // ch2, lo/hi, mode 3
        p.w(0x42, 10);
        p.w(0x42, 0);
        let mut outs = Vec::new();
        for _ in 0..10 {
            outs.push(p.r(PORT_61) & 0x20 != 0);
            p.advance_ticks(1);
        }
        assert_eq!(
            outs,
            [
                true, true, true, true, true, false, false, false, false, false
            ]
        );
        p.w(PORT_CONTROL, 0x80);
        let lo = p.r(0x42);
        assert_eq!(lo, 10, "the count runs down by two per tick");
    }

    #[test]
    fn mode1_waits_for_a_gate_trigger() {
        let mut p = rig();
        p.w(PORT_CONTROL, 0xb2);
        p.w(0x42, 50);
        p.w(0x42, 0);
        p.advance_ticks(100);
        assert_eq!(p.r(PORT_61) & 0x20, 0x20, "high until triggered");
        p.w(PORT_61, 0x01);
        assert_eq!(p.r(PORT_61) & 0x20, 0);
        p.advance_ticks(50);
        assert_eq!(p.r(PORT_61) & 0x20, 0x20);
    }

    #[test]
    fn latch_and_readback_commands() {
        let mut p = rig();
        p.w(PORT_CONTROL, 0x34);
        p.w(0x40, 0x00);
        p.w(0x40, 0x10); // 0x1000
        p.advance_ticks(0x10);
        p.w(PORT_CONTROL, 0x00); // latch ch0
        p.advance_ticks(0x100);
        p.w(PORT_CONTROL, 0x00); // a second latch does not overwrite
        assert_eq!(p.r(0x40), 0xf0);
        assert_eq!(p.r(0x40), 0x0f);
        // Read-back: status and count of channel 0.
        p.w(PORT_CONTROL, 0xc2);
        let status = p.r(0x40);
        assert_eq!(status, 0x80 | 0x30 | (2 << 1), "out high, lo/hi, mode 2");
        let lo = p.r(0x40);
        let hi = p.r(0x40);
        assert_eq!(u16::from_le_bytes([lo, hi]), 0x1000 - 0x110);
        // Status only.
        p.w(PORT_CONTROL, 0xe2);
        assert_eq!(p.r(0x40), status);
        // Null count right after a control word.
        p.w(PORT_CONTROL, 0x34);
        p.w(PORT_CONTROL, 0xe2);
        assert_eq!(p.r(0x40) & 0x40, 0x40);
    }

    #[test]
    fn byte_access_modes_and_bcd() {
        let mut p = rig();
        p.w(PORT_61, 0x01);
        p.w(PORT_CONTROL, 0x90); // ch2 LSB only, mode 0
        p.w(0x42, 0x80);
        p.advance_ticks(0x10);
        assert_eq!(p.r(0x42), 0x70);
        p.w(PORT_CONTROL, 0xa0); // ch2 MSB only
        p.w(0x42, 0x01);
        p.advance_ticks(1);
        assert_eq!(p.r(0x42), 0x00, "0x100 - 1 = 0x0ff");
        p.w(PORT_CONTROL, 0xb1); // ch2 lo/hi BCD mode 0
        p.w(0x42, 0x00);
        p.w(0x42, 0x10); // 1000
        p.advance_ticks(1);
        p.w(PORT_CONTROL, 0x80);
        assert_eq!(p.r(0x42), 0x99);
        assert_eq!(p.r(0x42), 0x09, "999 in BCD");
    }

    #[test]
    fn port61_bits() {
        let mut p = rig();
        p.w(PORT_61, 0xff);
        let v = p.r(PORT_61);
        assert_eq!(v & 0x0f, 0x0f);
        assert_eq!(v & 0xc0, 0);
        let t0 = v & 0x10;
        p.clock.advance(REFRESH_NS);
        assert_ne!(p.r(PORT_61) & 0x10, t0, "refresh toggles");
    }

    #[test]
    fn bad_accesses_and_garbage() {
        let mut p = rig();
        let mut two = [0u8; 2];
        assert_eq!(
            p.pit.io_read(0x40, &mut two),
            Err(IoError::InvalidAccessSize)
        );
        assert_eq!(p.pit.io_write(0x44, &[0]), Err(IoError::InvalidRegister));
        let mut x: u64 = 0x0123_4567_89ab_cdef;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let port = [0x40u16, 0x41, 0x42, 0x43, 0x61][(x % 5) as usize];
            match (x >> 8) % 4 {
                0 => p.w(port, (x >> 16) as u8),
                1 => {
                    p.r(port);
                }
                2 => p.clock.advance((x >> 24) % 10_000_000),
                _ => {
                    if let Some(d) = p.poll() {
                        assert!(d > p.clock.now_ns(), "deadlines are in the future");
                    }
                }
            }
        }
    }
}
