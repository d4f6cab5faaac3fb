//! 16550A UART (the PC's COM ports).
//!
//! # Architecture
//! [`Serial16550`] is a sans-IO state machine: the machine registers it on the port bus at its
//! base (8 ports), gives it an interrupt line, a [`SerialOutput`] for transmitted bytes, a
//! [`SerialInput`] queue that a host thread fills, and the VM clock. It implements
//! [`PortIo`] for the registers and [`Poll`] for time: moving queued input into the receive
//! FIFO at the programmed baud rate and raising the FIFO character-timeout interrupt.
//!
//! Transmission is immediate: a byte written to THR goes straight to the output and the
//! transmitter reads empty again (LSR.THRE/TEMT stay set). Reception is paced: one character
//! time per byte at the divisor the guest programmed, and only into free FIFO space, so host
//! input is never dropped and the guest's interrupt handler is never flooded.
//!
//! # Spec
//! National Semiconductor PC16550D. Registers (offset from base; DLAB = LCR bit 7):
//!
//! | offset | read | write |
//! |---|---|---|
//! | 0 | RBR (DLAB: DLL) | THR (DLAB: DLL) |
//! | 1 | IER (DLAB: DLM) | IER (DLAB: DLM) |
//! | 2 | IIR | FCR |
//! | 3 | LCR | LCR |
//! | 4 | MCR | MCR |
//! | 5 | LSR | (ignored) |
//! | 6 | MSR | (ignored) |
//! | 7 | SCR | SCR |
//!
//! Interrupt priorities (IIR): receiver line status (0x6) > received data available (0x4) and
//! character timeout (0xc) > THR empty (0x2) > modem status (0x0). The THRE interrupt is cleared
//! by reading IIR while it is the reported source or by writing THR, and it is re-armed when
//! IER.THRI goes from 0 to 1 with the holding register empty (Linux's THRE and TXEN probes rely
//! on that). The interrupt output is not gated by MCR.OUT2, like QEMU's model.
//!
//! Linux's 8250 autoconfig finds a 16550A: IER keeps only bits 3:0, loopback maps
//! RTS/DTR/OUT1/OUT2 to CTS/DSR/RI/DCD, IIR reads 0xc1 with FIFOs on whatever the LCR (so no
//! EFR, no 64-byte FIFO), and the loopback FIFO holds exactly 16 bytes.

mod input;
pub mod spec;

use std::collections::VecDeque;

use device_api::IoError;
use device_api::IoResult;
use device_api::LineInterrupt;
use device_api::Poll;
use device_api::PortIo;
use device_api::VmClock;

pub use input::SerialInput;
use spec::*;

/// Where transmitted bytes go (a console, a log file, a socket). Called with the device
/// locked, once per byte the guest writes: buffer, do not block.
pub trait SerialOutput: Send {
    /// Bytes the guest transmitted.
    fn write(&mut self, bytes: &[u8]);
}

/// Discards output.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullOutput;

impl SerialOutput for NullOutput {
    fn write(&mut self, _bytes: &[u8]) {}
}

/// Keeps output in a shared buffer (tests, and anything that inspects output in memory).
#[derive(Debug, Default, Clone)]
pub struct CaptureOutput {
    bytes: std::sync::Arc<parking_lot::Mutex<Vec<u8>>>,
}

impl CaptureOutput {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.bytes.lock().clone()
    }

    /// Takes everything written so far.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.bytes.lock())
    }
}

impl SerialOutput for CaptureOutput {
    fn write(&mut self, bytes: &[u8]) {
        self.bytes.lock().extend_from_slice(bytes);
    }
}

/// Standard PC COM port base addresses and ISA IRQs.
pub mod com {
    /// COM1: 0x3f8, IRQ 4.
    pub const COM1: (u16, u32) = (0x3f8, 4);
    /// COM2: 0x2f8, IRQ 3.
    pub const COM2: (u16, u32) = (0x2f8, 3);
    /// COM3: 0x3e8, IRQ 4.
    pub const COM3: (u16, u32) = (0x3e8, 4);
    /// COM4: 0x2e8, IRQ 3.
    pub const COM4: (u16, u32) = (0x2e8, 3);
}

/// Number of ports a UART decodes.
pub const PORT_COUNT: u16 = 8;

/// A 16550A UART.
pub struct Serial16550 {
    // Fixed configuration.
    base: u16,

    // Runtime glue.
    irq: LineInterrupt,
    output: Box<dyn SerialOutput>,
    input: SerialInput,
    clock: VmClock,

    // Volatile state.
    state: State,
}

#[derive(Debug)]
struct State {
    ier: u8,
    /// FCR bits kept: enable and trigger level.
    fcr: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    /// Pending OE/PE/FE/BI, cleared by reading LSR.
    lsr_errors: u8,
    /// MSR bits 3:0.
    msr_deltas: u8,
    /// Modem inputs (CTS/DSR/RI/DCD in MSR positions) when not in loopback.
    modem_inputs: u8,
    rx: VecDeque<u8>,
    /// The THRE interrupt condition.
    thr_pending: bool,
    /// The character-timeout interrupt condition.
    timeout_pending: bool,
    /// When the character timeout fires if nothing happens on the receive FIFO.
    timeout_deadline: Option<u64>,
    /// Earliest VM time the next host byte may enter the receive FIFO.
    next_rx_ns: u64,
    /// Input waits but the FIFO was full at the last poll.
    rx_blocked: bool,
    /// Level currently driven on the interrupt line.
    irq_level: bool,
}

impl State {
    fn new() -> Self {
        Self {
            ier: 0,
            fcr: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            // 9600 baud, the usual power-on divisor.
            dll: 12,
            dlm: 0,
            lsr_errors: 0,
            msr_deltas: 0,
            modem_inputs: MSR_CTS | MSR_DSR | MSR_DCD,
            rx: VecDeque::with_capacity(FIFO_SIZE),
            thr_pending: false,
            timeout_pending: false,
            timeout_deadline: None,
            next_rx_ns: 0,
            rx_blocked: false,
            irq_level: false,
        }
    }
}

impl Serial16550 {
    /// A UART decoding ports `base..base + 8`, interrupting on `irq`.
    pub fn new(
        base: u16,
        irq: LineInterrupt,
        output: Box<dyn SerialOutput>,
        input: SerialInput,
        clock: VmClock,
    ) -> Self {
        Self {
            base,
            irq,
            output,
            input,
            clock,
            state: State::new(),
        }
    }

    /// The ports this UART decodes, for bus registration.
    pub fn ports(&self) -> std::ops::RangeInclusive<u16> {
        self.base..=self.base.saturating_add(PORT_COUNT - 1)
    }

    /// The receive queue this UART takes input from.
    pub fn input(&self) -> &SerialInput {
        &self.input
    }

    /// Returns to the power-on state (platform reset). Queued host input is kept.
    pub fn reset(&mut self) {
        let modem_inputs = self.state.modem_inputs;
        let irq_level = self.state.irq_level;
        self.state = State::new();
        self.state.modem_inputs = modem_inputs;
        self.state.irq_level = irq_level;
        self.update_irq();
    }

    /// Sets the modem status inputs the far end presents (outside loopback). A connected
    /// console presents CTS, DSR and DCD, which is the default.
    pub fn set_modem_inputs(&mut self, cts: bool, dsr: bool, ri: bool, dcd: bool) {
        let old = self.msr_lines();
        let bit = |on: bool, b: u8| if on { b } else { 0 };
        self.state.modem_inputs =
            bit(cts, MSR_CTS) | bit(dsr, MSR_DSR) | bit(ri, MSR_RI) | bit(dcd, MSR_DCD);
        self.note_msr_change(old);
        self.update_irq();
    }

    fn fifo_enabled(&self) -> bool {
        self.state.fcr & FCR_ENABLE != 0
    }

    fn loopback(&self) -> bool {
        self.state.mcr & MCR_LOOP != 0
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled() { FIFO_SIZE } else { 1 }
    }

    /// Nanoseconds one character takes on the wire at the programmed divisor (10 bits).
    fn char_ns(&self) -> u64 {
        let divisor = (u64::from(self.state.dlm) << 8 | u64::from(self.state.dll)).max(1);
        10 * 1_000_000_000 * divisor / BASE_BAUD
    }

    /// CTS/DSR/RI/DCD as MSR bits 7:4.
    fn msr_lines(&self) -> u8 {
        if self.loopback() {
            let m = self.state.mcr;
            let bit = |mcr_bit: u8, msr_bit: u8| if m & mcr_bit != 0 { msr_bit } else { 0 };
            bit(MCR_RTS, MSR_CTS)
                | bit(MCR_DTR, MSR_DSR)
                | bit(MCR_OUT1, MSR_RI)
                | bit(MCR_OUT2, MSR_DCD)
        } else {
            self.state.modem_inputs
        }
    }

    fn note_msr_change(&mut self, old: u8) {
        let new = self.msr_lines();
        let changed = old ^ new;
        let mut d = 0;
        if changed & MSR_CTS != 0 {
            d |= MSR_DCTS;
        }
        if changed & MSR_DSR != 0 {
            d |= MSR_DDSR;
        }
        if changed & MSR_DCD != 0 {
            d |= MSR_DDCD;
        }
        if old & MSR_RI != 0 && new & MSR_RI == 0 {
            d |= MSR_TERI;
        }
        self.state.msr_deltas |= d;
    }

    /// The highest-priority pending interrupt, as the IIR identification bits.
    fn pending_interrupt(&self) -> Option<u8> {
        let s = &self.state;
        if s.ier & IER_RLS != 0 && s.lsr_errors != 0 {
            return Some(IIR_RLS);
        }
        if s.ier & IER_RDA != 0 {
            let level = if self.fifo_enabled() {
                trigger_level(s.fcr)
            } else {
                1
            };
            if s.rx.len() >= level {
                return Some(IIR_RDA);
            }
            if s.timeout_pending {
                return Some(IIR_TIMEOUT);
            }
        }
        if s.ier & IER_THRE != 0 && s.thr_pending {
            return Some(IIR_THRE);
        }
        if s.ier & IER_MSI != 0 && s.msr_deltas != 0 {
            return Some(IIR_MSI);
        }
        None
    }

    fn update_irq(&mut self) {
        let level = self.pending_interrupt().is_some();
        if level != self.state.irq_level {
            self.state.irq_level = level;
            self.irq.set_level(level);
        }
    }

    /// Re-arms the character timeout after receive FIFO activity.
    fn rearm_timeout(&mut self) {
        self.state.timeout_pending = false;
        let was_armed = self.state.timeout_deadline.is_some();
        self.state.timeout_deadline = if self.fifo_enabled() && !self.state.rx.is_empty() {
            Some(self.clock.now_ns().saturating_add(4 * self.char_ns()))
        } else {
            None
        };
        if !was_armed && self.state.timeout_deadline.is_some() {
            // A guest access (loopback) armed a deadline the machine does not know about.
            self.input.notify();
        }
    }

    /// A byte arriving from the loopback transmitter.
    fn receive_loopback(&mut self, byte: u8) {
        if self.state.rx.len() >= self.rx_capacity() {
            self.state.lsr_errors |= LSR_OE;
        } else {
            self.state.rx.push_back(byte);
        }
        self.rearm_timeout();
    }

    fn read_register(&mut self, offset: u16) -> u8 {
        let dlab = self.state.lcr & LCR_DLAB != 0;
        match offset {
            DATA if dlab => self.state.dll,
            DATA => {
                let byte = self.state.rx.pop_front().unwrap_or(0);
                self.rearm_timeout();
                if self.state.rx_blocked && self.state.rx.len() < self.rx_capacity() {
                    // Host input waits for this space: ask the machine to poll soon.
                    self.state.rx_blocked = false;
                    self.input.notify();
                }
                self.update_irq();
                byte
            }
            IER if dlab => self.state.dlm,
            IER => self.state.ier,
            IIR_FCR => {
                let id = self.pending_interrupt();
                if id == Some(IIR_THRE) {
                    self.state.thr_pending = false;
                    self.update_irq();
                }
                let fifo = if self.fifo_enabled() {
                    IIR_FIFO_ENABLED
                } else {
                    0
                };
                id.unwrap_or(IIR_NONE) | fifo
            }
            LCR => self.state.lcr,
            MCR => self.state.mcr,
            LSR => {
                let mut v = LSR_THRE | LSR_TEMT | self.state.lsr_errors;
                if !self.state.rx.is_empty() {
                    v |= LSR_DR;
                }
                if self.fifo_enabled() && self.state.lsr_errors & (LSR_PE | LSR_FE | LSR_BI) != 0 {
                    v |= LSR_FIFO_ERROR;
                }
                self.state.lsr_errors = 0;
                self.update_irq();
                v
            }
            MSR => {
                let v = self.msr_lines() | self.state.msr_deltas;
                self.state.msr_deltas = 0;
                self.update_irq();
                v
            }
            _ => self.state.scr,
        }
    }

    fn write_register(&mut self, offset: u16, value: u8) {
        let dlab = self.state.lcr & LCR_DLAB != 0;
        match offset {
            DATA if dlab => self.state.dll = value,
            DATA => {
                if self.loopback() {
                    self.receive_loopback(value);
                } else {
                    self.output.write(&[value]);
                }
                // The byte left at once: the holding register is empty again. Writing THR
                // clears THRE and emptying sets it, so the net condition is "pending"; the
                // line does not toggle for back-to-back writes.
                self.state.thr_pending = true;
            }
            IER if dlab => self.state.dlm = value,
            IER => {
                let new = value & IER_MASK;
                let rising_thri = new & IER_THRE != 0 && self.state.ier & IER_THRE == 0;
                if rising_thri {
                    self.state.thr_pending = true;
                } else if new & IER_THRE == 0 {
                    self.state.thr_pending = false;
                }
                self.state.ier = new;
            }
            IIR_FCR => {
                let was_enabled = self.fifo_enabled();
                let enable = value & FCR_ENABLE != 0;
                if enable != was_enabled || value & FCR_CLEAR_RX != 0 {
                    self.state.rx.clear();
                    self.state.timeout_pending = false;
                    self.state.timeout_deadline = None;
                }
                // FCR_CLEAR_TX: the transmit FIFO is always empty here.
                self.state.fcr = value & (FCR_ENABLE | 0xc0);
            }
            LCR => {
                let starts_break =
                    value & LCR_BREAK != 0 && self.state.lcr & LCR_BREAK == 0 && self.loopback();
                self.state.lcr = value;
                if starts_break {
                    // In loopback the receiver sees the break: a zero character with BI.
                    self.state.lsr_errors |= LSR_BI;
                    self.receive_loopback(0);
                }
            }
            MCR => {
                let old = self.msr_lines();
                self.state.mcr = value & MCR_MASK;
                self.note_msr_change(old);
            }
            LSR | MSR => {
                tracing::trace!(offset, value, "uart: write to read-only status register");
            }
            _ => self.state.scr = value,
        }
        self.update_irq();
    }

    fn offset(&self, port: u16, len: usize) -> Result<u16, IoError> {
        if len != 1 {
            return Err(IoError::InvalidAccessSize);
        }
        match port.checked_sub(self.base) {
            Some(off) if off < PORT_COUNT => Ok(off),
            _ => Err(IoError::InvalidRegister),
        }
    }
}

impl PortIo for Serial16550 {
    fn io_read(&mut self, port: u16, data: &mut [u8]) -> IoResult {
        let offset = self.offset(port, data.len())?;
        data[0] = self.read_register(offset);
        Ok(())
    }

    fn io_write(&mut self, port: u16, data: &[u8]) -> IoResult {
        let offset = self.offset(port, data.len())?;
        self.write_register(offset, data[0]);
        Ok(())
    }
}

impl Poll for Serial16550 {
    fn poll(&mut self, now_ns: u64) -> Option<u64> {
        if let Some(deadline) = self.state.timeout_deadline
            && now_ns >= deadline
        {
            self.state.timeout_deadline = None;
            self.state.timeout_pending = !self.state.rx.is_empty();
        }

        // Host input into free FIFO space, one character time per byte.
        let char_ns = self.char_ns();
        let mut moved = false;
        let pending = self.input.pending();
        if pending > 0 && now_ns >= self.state.next_rx_ns {
            let room = self.rx_capacity().saturating_sub(self.state.rx.len());
            let earned = (now_ns - self.state.next_rx_ns) / char_ns + 1;
            let n = room.min(usize::try_from(earned).unwrap_or(usize::MAX));
            if n > 0 {
                let bytes = self.input.take(n);
                moved = !bytes.is_empty();
                self.state.rx.extend(bytes);
                self.state.next_rx_ns = now_ns.saturating_add(char_ns);
                self.rearm_timeout();
            }
            self.state.rx_blocked =
                self.input.pending() > 0 && self.state.rx.len() >= self.rx_capacity();
        }

        if moved && self.state.irq_level && self.pending_interrupt().is_some() {
            // New data while the line is already high: give edge-triggered controllers a
            // fresh edge so a handler that has just finished its pass comes back.
            self.irq.set_level(false);
            self.irq.set_level(true);
        }
        self.update_irq();

        let rx_next = (self.input.pending() > 0 && !self.state.rx_blocked)
            .then_some(self.state.next_rx_ns.max(now_ns.saturating_add(1)));
        match (rx_next, self.state.timeout_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests;
