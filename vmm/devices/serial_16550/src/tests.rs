use std::sync::Arc;

use device_api::TestIrqTarget;

use super::*;

const BASE: u16 = 0x3f8;
const IRQ: u32 = 4;

struct Rig {
    uart: Serial16550,
    irq: Arc<TestIrqTarget>,
    out: CaptureOutput,
    input: SerialInput,
    clock: VmClock,
}

fn rig() -> Rig {
    let irq = TestIrqTarget::new();
    let out = CaptureOutput::new();
    let input = SerialInput::new();
    let clock = VmClock::manual();
    let uart = Serial16550::new(
        BASE,
        irq.line(IRQ),
        Box::new(out.clone()),
        input.clone(),
        clock.clone(),
    );
    Rig {
        uart,
        irq,
        out,
        input,
        clock,
    }
}

impl Rig {
    fn r(&mut self, off: u16) -> u8 {
        let mut b = [0u8];
        self.uart.io_read(BASE + off, &mut b).unwrap();
        b[0]
    }
    fn w(&mut self, off: u16, v: u8) {
        self.uart.io_write(BASE + off, &[v]).unwrap();
    }
    fn level(&self) -> bool {
        self.irq.level(IRQ)
    }
    fn poll(&mut self) -> Option<u64> {
        let now = self.clock.now_ns();
        self.uart.poll(now)
    }
}

/// Linux 8250 `autoconfig()` and `autoconfig_16550a()`, step by step, must classify the port as
/// a plain 16550A with a 16-byte FIFO.
#[test]
fn linux_autoconfig_finds_a_16550a() {
    let mut u = rig();
    // IER existence test.
    let saved = u.r(IER);
    u.w(IER, 0);
    assert_eq!(u.r(IER) & 0x0f, 0);
    u.w(IER, 0x0f);
    assert_eq!(u.r(IER) & 0x0f, 0x0f);
    u.w(IER, saved);
    // Loopback test.
    let save_mcr = u.r(MCR);
    let save_lcr = u.r(LCR);
    u.w(MCR, MCR_LOOP | 0x0a);
    assert_eq!(
        u.r(MSR) & 0xf0,
        0x90,
        "loopback maps RTS->CTS and OUT2->DCD"
    );
    u.w(MCR, save_mcr);
    // EFR probe at LCR=0xbf, then IIR's FIFO bits.
    u.w(LCR, 0xbf);
    u.w(IIR_FCR, 0);
    u.w(LCR, 0);
    u.w(IIR_FCR, FCR_ENABLE);
    assert_eq!(u.r(IIR_FCR) >> 6, 3, "FIFO-enabled IIR bits");
    // No EFR with DLAB set, nor at 0xbf.
    u.w(LCR, 0x80);
    assert_ne!(u.r(IIR_FCR), 0);
    u.w(LCR, 0xbf);
    assert_ne!(u.r(IIR_FCR), 0);
    // Not a National Semiconductor SuperIO: bank 2 reads do not mirror MCR.LOOP.
    u.w(LCR, 0);
    let status1 = u.r(MCR);
    u.w(LCR, 0xe0);
    let status2 = u.r(2);
    assert_eq!((status1 ^ status2) & MCR_LOOP, 0);
    u.w(LCR, 0);
    u.w(MCR, status1 ^ MCR_LOOP);
    u.w(LCR, 0xe0);
    let status2 = u.r(2);
    u.w(LCR, 0);
    u.w(MCR, status1);
    assert_eq!((status2 ^ status1) & MCR_LOOP, 0, "not an NS16550A");
    // Not a 16750.
    u.w(IIR_FCR, FCR_ENABLE | 0x20);
    let s1 = u.r(IIR_FCR) >> 5;
    u.w(IIR_FCR, FCR_ENABLE);
    u.w(LCR, 0x80);
    u.w(IIR_FCR, FCR_ENABLE | 0x20);
    let s2 = u.r(IIR_FCR) >> 5;
    u.w(IIR_FCR, FCR_ENABLE);
    u.w(LCR, 0);
    assert!(!(s1 == 6 && s2 == 7));
    // IER bit 6 (XScale UUE) does not stick.
    u.w(IER, 0x40);
    assert_eq!(u.r(IER) & 0x40, 0);
    u.w(IER, 0);
    // size_fifo(): loopback at divisor 1, 256 bytes out, count what comes back.
    u.w(LCR, 0);
    u.w(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX | FCR_CLEAR_TX);
    u.w(MCR, MCR_LOOP);
    u.w(LCR, 0x80);
    u.w(DATA, 1);
    u.w(IER, 0);
    u.w(LCR, 0x03);
    for b in 0..=255u8 {
        u.w(DATA, b);
    }
    u.clock.advance(20_000_000);
    u.poll();
    let mut count = 0;
    while u.r(LSR) & LSR_DR != 0 && count < 256 {
        u.r(DATA);
        count += 1;
    }
    assert_eq!(count, 16);
    u.w(LCR, save_lcr);
    assert!(
        u.out.contents().is_empty(),
        "loopback bytes never reach the host"
    );
}

/// Linux's UART_BUG_THRE and UART_BUG_TXEN probes in `serial8250_do_startup`.
#[test]
fn thre_interrupt_rearms_when_ier_thri_toggles() {
    let mut u = rig();
    u.w(IER, IER_THRE);
    let iir1 = u.r(IIR_FCR);
    assert_eq!(
        iir1 & 0x0f,
        IIR_THRE,
        "THRE raised when THRI is enabled with THR empty"
    );
    assert_eq!(u.r(IIR_FCR) & 0x0f, IIR_NONE, "reading IIR cleared it");
    u.w(IER, 0);
    u.w(IER, IER_THRE);
    let lsr = u.r(LSR);
    let iir = u.r(IIR_FCR);
    assert!(lsr & LSR_TEMT != 0);
    assert_eq!(iir & IIR_NONE, 0, "toggling THRI re-asserts THRE");
    u.w(IER, 0);
    assert!(!u.level());
}

#[test]
fn transmitted_bytes_reach_the_output_and_thre_follows() {
    let mut u = rig();
    u.w(IER, IER_THRE);
    assert!(u.level());
    u.r(IIR_FCR);
    assert!(!u.level());
    for &b in b"hello" {
        assert!(u.r(LSR) & LSR_THRE != 0);
        u.w(DATA, b);
    }
    assert_eq!(u.out.contents(), b"hello");
    assert!(u.level(), "transmitter empty again");
    assert_eq!(u.irq.rising_edges(IRQ), 2, "a burst of writes is one edge");
    u.w(IER, 0);
    assert!(!u.level());
}

#[test]
fn interrupt_priorities_follow_the_datasheet() {
    let mut u = rig();
    u.w(IIR_FCR, FCR_ENABLE); // trigger level 1
    u.w(MCR, MCR_LOOP);
    u.w(IER, IER_RDA | IER_THRE | IER_RLS | IER_MSI);
    // MSI: change a loopback modem line.
    u.w(MCR, MCR_LOOP | MCR_RTS);
    // Fill the FIFO and overrun it: RLS + RDA + THRE + MSI pending.
    for b in 0..17u8 {
        u.w(DATA, b);
    }
    assert_eq!(u.r(IIR_FCR), 0xc0 | IIR_RLS);
    assert_eq!(u.r(LSR) & (LSR_OE | LSR_DR), LSR_OE | LSR_DR);
    assert_eq!(u.r(IIR_FCR), 0xc0 | IIR_RDA);
    for _ in 0..16 {
        u.r(DATA);
    }
    assert_eq!(u.r(IIR_FCR), 0xc0 | IIR_THRE);
    assert_eq!(u.r(IIR_FCR), 0xc0 | IIR_MSI);
    assert_eq!(u.r(MSR) & MSR_DELTAS, MSR_DCTS | MSR_DDSR | MSR_DDCD);
    assert_eq!(u.r(IIR_FCR), 0xc0 | IIR_NONE);
    assert!(!u.level());
}

#[test]
fn rx_trigger_level_and_character_timeout() {
    let mut u = rig();
    u.w(IIR_FCR, FCR_ENABLE | (2 << FCR_TRIGGER_SHIFT)); // trigger at 8
    u.w(LCR, LCR_DLAB);
    u.w(DATA, 1); // 115200 baud
    u.w(LCR, 0x03);
    u.w(IER, IER_RDA);
    u.input.push(b"abcde");
    // Paced: the first poll delivers one character time's worth.
    u.poll();
    assert_eq!(u.r(LSR) & LSR_DR, LSR_DR);
    u.clock.advance(10 * u.uart.char_ns());
    let next = u.poll();
    assert_eq!(u.uart.state.rx.len(), 5);
    assert!(!u.level(), "5 bytes are below the trigger level of 8");
    let deadline = next.expect("timeout deadline armed");
    u.clock.advance(deadline - u.clock.now_ns());
    assert_eq!(u.poll(), None);
    assert!(u.level());
    assert_eq!(u.r(IIR_FCR), 0xc0 | IIR_TIMEOUT);
    assert_eq!(u.r(DATA), b'a');
    assert!(!u.level(), "reading RBR clears the timeout");
    // Reaching the trigger level raises RDA at once.
    u.input.push(b"0123456789");
    u.clock.advance(20 * u.uart.char_ns());
    u.poll();
    assert_eq!(u.r(IIR_FCR), 0xc0 | IIR_RDA);
    let mut got = Vec::new();
    while u.r(LSR) & LSR_DR != 0 {
        got.push(u.r(DATA));
    }
    assert_eq!(got, b"bcde0123456789");
    assert!(!u.level());
}

#[test]
fn host_input_is_never_dropped_when_the_fifo_is_full() {
    let mut u = rig();
    u.w(IIR_FCR, FCR_ENABLE);
    let notified = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let n = notified.clone();
    u.input.set_notify(move || {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let data: Vec<u8> = (0..100).collect();
    u.input.push(&data);
    let mut got = Vec::new();
    for _ in 0..50 {
        u.clock.advance(1_000_000_000);
        u.poll();
        while u.r(LSR) & LSR_DR != 0 {
            got.push(u.r(DATA));
        }
    }
    assert_eq!(got, data);
    assert_eq!(u.r(LSR) & LSR_OE, 0);
    assert!(notified.load(std::sync::atomic::Ordering::Relaxed) >= 2);
}

#[test]
fn full_fifo_blocks_polling_until_the_guest_reads() {
    let mut u = rig();
    u.w(IIR_FCR, FCR_ENABLE);
    let notified = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let n = notified.clone();
    u.input.set_notify(move || {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    u.input.push(&[7; 40]);
    u.clock.advance(1_000_000_000);
    let next = u.poll();
    assert_eq!(u.uart.state.rx.len(), 16);
    // Only the character timeout remains scheduled; no busy polling for input.
    assert_eq!(next, u.uart.state.timeout_deadline);
    let before = notified.load(std::sync::atomic::Ordering::Relaxed);
    u.r(DATA);
    assert_eq!(
        notified.load(std::sync::atomic::Ordering::Relaxed),
        before + 1,
        "freeing space asks for a poll"
    );
}

#[test]
fn non_fifo_mode_holds_one_byte() {
    let mut u = rig();
    u.w(IER, IER_RDA);
    u.input.push(b"xy");
    u.clock.advance(1_000_000_000);
    u.poll();
    assert!(u.level());
    assert_eq!(u.r(IIR_FCR), IIR_RDA, "no FIFO bits");
    assert_eq!(u.r(DATA), b'x');
    assert!(!u.level());
    u.clock.advance(1_000_000_000);
    u.poll();
    assert_eq!(u.r(DATA), b'y');
}

#[test]
fn new_input_while_pending_gives_a_fresh_edge() {
    let mut u = rig();
    u.w(IIR_FCR, FCR_ENABLE);
    u.w(IER, IER_RDA);
    u.input.push(b"a");
    u.poll();
    assert_eq!(u.irq.rising_edges(IRQ), 1);
    u.input.push(b"b");
    u.clock.advance(1_000_000_000);
    u.poll();
    assert!(u.level());
    assert_eq!(u.irq.rising_edges(IRQ), 2);
}

#[test]
fn divisor_latch_and_scratch() {
    let mut u = rig();
    u.w(LCR, LCR_DLAB | 0x03);
    u.w(DATA, 0x34);
    u.w(IER, 0x12);
    assert_eq!(u.r(DATA), 0x34);
    assert_eq!(u.r(IER), 0x12);
    u.w(LCR, 0x03);
    assert_eq!(u.r(IER), 0, "IER untouched by divisor writes");
    assert_eq!(u.r(LCR), 0x03);
    u.w(SCR, 0xa5);
    assert_eq!(u.r(SCR), 0xa5);
    assert_eq!(u.uart.char_ns(), 10 * 1_000_000_000 * 0x1234 / BASE_BAUD);
    assert!(u.out.contents().is_empty());
}

#[test]
fn loopback_modem_lines_and_deltas() {
    let mut u = rig();
    u.w(MCR, MCR_LOOP);
    assert_eq!(
        u.r(MSR),
        MSR_DCTS | MSR_DDSR | MSR_DDCD,
        "lines dropped on entering loopback"
    );
    u.w(MCR, MCR_LOOP | MCR_DTR | MCR_RTS | MCR_OUT1 | MCR_OUT2);
    assert_eq!(u.r(MSR), 0xf0 | MSR_DCTS | MSR_DDSR | MSR_DDCD);
    u.w(MCR, MCR_LOOP | MCR_DTR | MCR_RTS | MCR_OUT2);
    assert_eq!(u.r(MSR), 0xb0 | MSR_TERI, "trailing edge of RI");
    assert_eq!(u.r(MSR), 0xb0);
}

#[test]
fn modem_inputs_raise_msi() {
    let mut u = rig();
    u.w(IER, IER_MSI);
    assert!(!u.level());
    u.uart.set_modem_inputs(true, true, false, false);
    assert!(u.level());
    assert_eq!(u.r(MSR), MSR_CTS | MSR_DSR | MSR_DDCD);
    assert!(!u.level());
}

#[test]
fn loopback_break_sets_bi_and_rls() {
    let mut u = rig();
    u.w(IIR_FCR, FCR_ENABLE);
    u.w(MCR, MCR_LOOP);
    u.w(IER, IER_RLS);
    u.w(LCR, LCR_BREAK);
    assert!(u.level());
    let lsr = u.r(LSR);
    assert_eq!(
        lsr & (LSR_BI | LSR_DR | LSR_FIFO_ERROR),
        LSR_BI | LSR_DR | LSR_FIFO_ERROR
    );
    assert!(!u.level());
    assert_eq!(u.r(DATA), 0);
}

#[test]
fn fifo_clear_and_disable_empty_the_receiver() {
    let mut u = rig();
    u.w(IIR_FCR, FCR_ENABLE);
    u.w(MCR, MCR_LOOP);
    u.w(DATA, 1);
    u.w(DATA, 2);
    u.w(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
    assert_eq!(u.r(LSR) & LSR_DR, 0);
    u.w(DATA, 3);
    u.w(IIR_FCR, 0);
    assert_eq!(u.r(LSR) & LSR_DR, 0, "disabling the FIFO clears it");
    assert_eq!(u.r(IIR_FCR) & 0xc0, 0);
}

#[test]
fn reset_returns_to_power_on_state() {
    let mut u = rig();
    u.w(IER, IER_THRE);
    assert!(u.level());
    u.w(SCR, 9);
    u.uart.reset();
    assert!(!u.level());
    assert_eq!(u.r(IER), 0);
    assert_eq!(u.r(SCR), 0);
    assert_eq!(u.r(IIR_FCR), IIR_NONE);
}

#[test]
fn bad_widths_and_ports_are_bus_errors() {
    let mut u = rig();
    let mut w = [0u8; 2];
    assert_eq!(
        u.uart.io_read(BASE, &mut w),
        Err(IoError::InvalidAccessSize)
    );
    assert_eq!(
        u.uart.io_write(BASE + 8, &[0]),
        Err(IoError::InvalidRegister)
    );
    assert_eq!(
        u.uart.io_write(BASE - 1, &[0]),
        Err(IoError::InvalidRegister)
    );
    assert_eq!(u.uart.ports(), BASE..=BASE + 7);
}

#[test]
fn garbage_register_traffic_never_panics() {
    let mut u = rig();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x & 7) as u16;
        let v = (x >> 8) as u8;
        match (x >> 16) & 7 {
            0..=2 => {
                u.r(off);
            }
            3..=5 => u.w(off, v),
            6 => {
                u.input.push(&[v, v ^ 0x55]);
                u.clock.advance((x >> 24) & 0xfffff);
                u.poll();
            }
            _ => {
                u.clock.advance((x >> 24) & 0xffff_ffff);
                u.poll();
            }
        }
        assert!(u.uart.state.rx.len() <= FIFO_SIZE);
        assert_eq!(u.level(), u.uart.pending_interrupt().is_some());
    }
}

#[test]
fn loopback_data_arms_the_timeout_and_asks_for_a_poll() {
    let mut u = rig();
    let notified = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let n = notified.clone();
    u.input.set_notify(move || {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    u.w(IIR_FCR, FCR_ENABLE | (3 << FCR_TRIGGER_SHIFT));
    u.w(MCR, MCR_LOOP);
    u.w(IER, IER_RDA);
    u.w(DATA, 1);
    assert_eq!(notified.load(std::sync::atomic::Ordering::Relaxed), 1);
    u.w(DATA, 2);
    assert_eq!(
        notified.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "already armed"
    );
    let deadline = u.uart.state.timeout_deadline.unwrap();
    u.clock.advance(deadline);
    u.poll();
    assert_eq!(u.r(IIR_FCR), 0xc0 | IIR_TIMEOUT);
}
