//! 16550A register layout (National Semiconductor PC16550D datasheet, "Register Summary").
//!
//! Offsets are relative to the port base. With LCR.DLAB set, offsets 0 and 1 address the divisor
//! latch instead of RBR/THR and IER.

/// RBR (read) / THR (write); DLL when DLAB = 1.
pub const DATA: u16 = 0;
/// IER; DLM when DLAB = 1.
pub const IER: u16 = 1;
/// IIR (read) / FCR (write).
pub const IIR_FCR: u16 = 2;
/// Line control.
pub const LCR: u16 = 3;
/// Modem control.
pub const MCR: u16 = 4;
/// Line status.
pub const LSR: u16 = 5;
/// Modem status.
pub const MSR: u16 = 6;
/// Scratch.
pub const SCR: u16 = 7;

/// IER: received data available.
pub const IER_RDA: u8 = 0x01;
/// IER: transmitter holding register empty.
pub const IER_THRE: u8 = 0x02;
/// IER: receiver line status.
pub const IER_RLS: u8 = 0x04;
/// IER: modem status.
pub const IER_MSI: u8 = 0x08;
/// The bits a 16550A implements (the upper four read as zero; Linux relies on it).
pub const IER_MASK: u8 = 0x0f;

/// IIR: no interrupt pending.
pub const IIR_NONE: u8 = 0x01;
/// IIR: receiver line status (highest priority).
pub const IIR_RLS: u8 = 0x06;
/// IIR: received data available.
pub const IIR_RDA: u8 = 0x04;
/// IIR: character timeout (FIFO mode).
pub const IIR_TIMEOUT: u8 = 0x0c;
/// IIR: transmitter holding register empty.
pub const IIR_THRE: u8 = 0x02;
/// IIR: modem status (lowest priority).
pub const IIR_MSI: u8 = 0x00;
/// IIR bits 7:6 when the FIFOs are enabled.
pub const IIR_FIFO_ENABLED: u8 = 0xc0;

/// FCR: enable FIFOs.
pub const FCR_ENABLE: u8 = 0x01;
/// FCR: clear the receive FIFO.
pub const FCR_CLEAR_RX: u8 = 0x02;
/// FCR: clear the transmit FIFO.
pub const FCR_CLEAR_TX: u8 = 0x04;
/// FCR: receive trigger level field (bits 7:6).
pub const FCR_TRIGGER_SHIFT: u8 = 6;

/// LCR: divisor latch access.
pub const LCR_DLAB: u8 = 0x80;
/// LCR: set break.
pub const LCR_BREAK: u8 = 0x40;

/// MCR: data terminal ready.
pub const MCR_DTR: u8 = 0x01;
/// MCR: request to send.
pub const MCR_RTS: u8 = 0x02;
/// MCR: OUT1.
pub const MCR_OUT1: u8 = 0x04;
/// MCR: OUT2 (on PCs, the interrupt buffer enable).
pub const MCR_OUT2: u8 = 0x08;
/// MCR: local loopback.
pub const MCR_LOOP: u8 = 0x10;
/// The bits a 16550A implements.
pub const MCR_MASK: u8 = 0x1f;

/// LSR: data ready.
pub const LSR_DR: u8 = 0x01;
/// LSR: overrun error.
pub const LSR_OE: u8 = 0x02;
/// LSR: parity error.
pub const LSR_PE: u8 = 0x04;
/// LSR: framing error.
pub const LSR_FE: u8 = 0x08;
/// LSR: break interrupt.
pub const LSR_BI: u8 = 0x10;
/// LSR: transmitter holding register (or FIFO) empty.
pub const LSR_THRE: u8 = 0x20;
/// LSR: transmitter empty (holding register and shift register).
pub const LSR_TEMT: u8 = 0x40;
/// LSR: at least one error in the receive FIFO.
pub const LSR_FIFO_ERROR: u8 = 0x80;
/// The error bits that raise the receiver-line-status interrupt and clear on an LSR read.
pub const LSR_ERRORS: u8 = LSR_OE | LSR_PE | LSR_FE | LSR_BI;

/// MSR: delta clear to send.
pub const MSR_DCTS: u8 = 0x01;
/// MSR: delta data set ready.
pub const MSR_DDSR: u8 = 0x02;
/// MSR: trailing edge ring indicator.
pub const MSR_TERI: u8 = 0x04;
/// MSR: delta data carrier detect.
pub const MSR_DDCD: u8 = 0x08;
/// MSR: the four delta bits.
pub const MSR_DELTAS: u8 = 0x0f;
/// MSR: clear to send.
pub const MSR_CTS: u8 = 0x10;
/// MSR: data set ready.
pub const MSR_DSR: u8 = 0x20;
/// MSR: ring indicator.
pub const MSR_RI: u8 = 0x40;
/// MSR: data carrier detect.
pub const MSR_DCD: u8 = 0x80;

/// Depth of each FIFO.
pub const FIFO_SIZE: usize = 16;
/// The UART's input clock divided by 16: baud = 115200 / divisor.
pub const BASE_BAUD: u64 = 115_200;

/// Receive FIFO trigger levels selected by FCR bits 7:6.
pub fn trigger_level(fcr: u8) -> usize {
    match fcr >> FCR_TRIGGER_SHIFT {
        0 => 1,
        1 => 4,
        2 => 8,
        _ => 14,
    }
}
