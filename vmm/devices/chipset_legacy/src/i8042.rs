//! i8042 keyboard controller with a minimal PS/2 keyboard and mouse.
//!
//! Port 0x60 is the data port, port 0x64 status (read) and command (write). The controller
//! answers the commands firmware and Linux's i8042 driver use: read/write the command byte and
//! internal RAM (0x20-0x3f, 0x60-0x7f), self-test 0xaa -> 0x55, interface tests 0xa9/0xab ->
//! 0x00, enable/disable of both ports, the output port (0xd0/0xd1, A20 and the reset line),
//! output-buffer loopback (0xd2/0xd3), writes to the auxiliary device (0xd4), and output
//! pulses (0xf0-0xff; pulsing bit 0, e.g. 0xfe, resets the machine through the
//! [`HaltSink`]).
//!
//! The keyboard answers reset (0xfa 0xaa), identify (0xfa 0xab 0x83, or 0x41 when the
//! controller translates), LEDs, typematic, scan-code set, echo, enable/disable; the mouse
//! answers reset (0xfa 0xaa 0x00), identify (0xfa 0x00), status request and the settings
//! commands. Neither ever produces input on its own; [`I8042::keyboard_input`] can inject
//! bytes. The output buffer raises IRQ 1 (keyboard/controller data) or IRQ 12 (mouse data)
//! while full and enabled in the command byte, so every byte is a new edge.
//!
//! Spec: IBM PS/2 keyboard controller reference; behaviour checked against what Linux's
//! `drivers/input/serio/i8042.c` (self test, AUX loop/IRQ test, CTR bit checks) and
//! `atkbd.c` (GETID, SETLEDS) expect.

use std::collections::VecDeque;
use std::sync::Arc;

use device_api::HaltRequest;
use device_api::HaltSink;
use device_api::IoError;
use device_api::IoResult;
use device_api::LineInterrupt;
use device_api::PortIo;

/// Data port.
pub const PORT_DATA: u16 = 0x60;
/// Status/command port.
pub const PORT_COMMAND: u16 = 0x64;

const STATUS_OBF: u8 = 0x01;
const STATUS_SYS: u8 = 0x04;
const STATUS_CMD: u8 = 0x08;
const STATUS_UNLOCKED: u8 = 0x10;
const STATUS_AUX: u8 = 0x20;

const CTR_KBD_INT: u8 = 0x01;
const CTR_AUX_INT: u8 = 0x02;
const CTR_SYS: u8 = 0x04;
const CTR_KBD_DISABLE: u8 = 0x10;
const CTR_AUX_DISABLE: u8 = 0x20;
const CTR_TRANSLATE: u8 = 0x40;

const OUT_RESET: u8 = 0x01;
const OUT_A20: u8 = 0x02;
const OUT_KBD_FULL: u8 = 0x10;
const OUT_AUX_FULL: u8 = 0x20;

const ACK: u8 = 0xfa;
const RESEND: u8 = 0xfe;
const BAT_OK: u8 = 0xaa;

/// Bytes a device may have queued; the guest can make them queue responses without reading.
const QUEUE_LIMIT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Keyboard,
    Aux,
}

#[derive(Debug, Default)]
struct Queue(VecDeque<u8>);

impl Queue {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.0.len() < QUEUE_LIMIT {
                self.0.push_back(b);
            }
        }
    }
}

/// The i8042 and its two PS/2 devices.
pub struct I8042 {
    // Runtime glue.
    kbd_irq: LineInterrupt,
    aux_irq: LineInterrupt,
    halt: Arc<dyn HaltSink>,

    // Volatile state.
    /// Internal RAM; byte 0 is the command byte.
    ram: [u8; 32],
    output_port: u8,
    /// A controller command waiting for its data byte.
    pending_command: Option<u8>,
    /// Status bit 3: the last write went to the command port.
    last_was_command: bool,
    /// The output buffer.
    output: Option<(u8, Source)>,
    last_output: u8,
    /// Bytes the controller itself places in the output buffer (command responses and the
    /// 0xd2/0xd3 loopbacks, tagged with the port they pose as): delivered before device data
    /// and whatever the port-disable bits say.
    controller_queue: VecDeque<(u8, Source)>,
    kbd_queue: Queue,
    aux_queue: Queue,
    /// Keyboard command waiting for its parameter.
    kbd_pending: Option<u8>,
    /// Mouse command waiting for its parameter.
    aux_pending: Option<u8>,
    kbd_irq_level: bool,
    aux_irq_level: bool,
}

impl std::fmt::Debug for I8042 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8042")
            .field("ctr", &self.ram[0])
            .field("output_port", &self.output_port)
            .field("output", &self.output)
            .finish()
    }
}

impl I8042 {
    /// A controller raising `kbd_irq` (ISA IRQ 1) and `aux_irq` (ISA IRQ 12), requesting resets
    /// from `halt`.
    pub fn new(kbd_irq: LineInterrupt, aux_irq: LineInterrupt, halt: Arc<dyn HaltSink>) -> Self {
        let mut ram = [0; 32];
        ram[0] = CTR_KBD_INT | CTR_AUX_INT;
        Self {
            kbd_irq,
            aux_irq,
            halt,
            ram,
            output_port: OUT_RESET | OUT_A20,
            pending_command: None,
            last_was_command: false,
            output: None,
            last_output: 0,
            controller_queue: VecDeque::new(),
            kbd_queue: Queue::default(),
            aux_queue: Queue::default(),
            kbd_pending: None,
            aux_pending: None,
            kbd_irq_level: false,
            aux_irq_level: false,
        }
    }

    /// The ports to register (0x60 and 0x64 are not contiguous).
    pub fn ports() -> [std::ops::RangeInclusive<u16>; 2] {
        [PORT_DATA..=PORT_DATA, PORT_COMMAND..=PORT_COMMAND]
    }

    /// Whether the output port enables the A20 gate.
    pub fn a20_enabled(&self) -> bool {
        self.output_port & OUT_A20 != 0
    }

    /// Bytes from the keyboard (scan codes), for a future input backend.
    pub fn keyboard_input(&mut self, bytes: &[u8]) {
        self.kbd_queue.push(bytes);
        self.pump();
    }

    fn ctr(&self) -> u8 {
        self.ram[0]
    }

    fn translating(&self) -> bool {
        self.ctr() & CTR_TRANSLATE != 0
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_UNLOCKED;
        if let Some((_, source)) = self.output {
            s |= STATUS_OBF;
            if source == Source::Aux {
                s |= STATUS_AUX;
            }
        }
        if self.ctr() & CTR_SYS != 0 {
            s |= STATUS_SYS;
        }
        if self.last_was_command {
            s |= STATUS_CMD;
        }
        s
    }

    /// Fills an empty output buffer from the queues and updates both IRQ lines.
    fn pump(&mut self) {
        if self.output.is_none() {
            let ctr = self.ctr();
            self.output = if let Some(b) = self.controller_queue.pop_front() {
                Some(b)
            } else if ctr & CTR_KBD_DISABLE == 0
                && let Some(b) = self.kbd_queue.0.pop_front()
            {
                Some((b, Source::Keyboard))
            } else if ctr & CTR_AUX_DISABLE == 0
                && let Some(b) = self.aux_queue.0.pop_front()
            {
                Some((b, Source::Aux))
            } else {
                None
            };
        }
        self.update_irqs();
    }

    fn update_irqs(&mut self) {
        let ctr = self.ctr();
        let kbd = matches!(self.output, Some((_, Source::Keyboard))) && ctr & CTR_KBD_INT != 0;
        let aux = matches!(self.output, Some((_, Source::Aux))) && ctr & CTR_AUX_INT != 0;
        if kbd != self.kbd_irq_level {
            self.kbd_irq_level = kbd;
            self.kbd_irq.set_level(kbd);
        }
        if aux != self.aux_irq_level {
            self.aux_irq_level = aux;
            self.aux_irq.set_level(aux);
        }
    }

    fn respond(&mut self, byte: u8) {
        self.controller_output(byte, Source::Keyboard);
    }

    fn controller_output(&mut self, byte: u8, source: Source) {
        if self.controller_queue.len() < QUEUE_LIMIT {
            self.controller_queue.push_back((byte, source));
        }
    }

    fn read_data(&mut self) -> u8 {
        if let Some((b, _)) = self.output.take() {
            self.last_output = b;
            // The line drops with the buffer, so the next byte is a fresh edge.
            self.update_irqs();
        }
        self.pump();
        self.last_output
    }

    fn write_output_port(&mut self, value: u8) {
        self.output_port = value;
        if value & OUT_RESET == 0 {
            tracing::info!("i8042: reset through the output port");
            self.halt.request_halt(HaltRequest::Reset);
        }
    }

    fn write_command(&mut self, cmd: u8) {
        self.pending_command = None;
        match cmd {
            0x20..=0x3f => {
                let v = self.ram[usize::from(cmd & 0x1f)];
                self.respond(v);
            }
            0x60..=0x7f | 0xd1..=0xd4 => self.pending_command = Some(cmd),
            0xa4 => self.respond(0xf1), // no password installed
            0xa7 => self.ram[0] |= CTR_AUX_DISABLE,
            0xa8 => self.ram[0] &= !CTR_AUX_DISABLE,
            0xa9 | 0xab => self.respond(0x00),
            0xaa => {
                self.respond(0x55);
                self.ram[0] |= CTR_SYS;
            }
            0xad => self.ram[0] |= CTR_KBD_DISABLE,
            0xae => self.ram[0] &= !CTR_KBD_DISABLE,
            0xc0 => self.respond(0x80),
            0xd0 => {
                let mut v = self.output_port & !(OUT_KBD_FULL | OUT_AUX_FULL);
                match self.output {
                    Some((_, Source::Keyboard)) => v |= OUT_KBD_FULL,
                    Some((_, Source::Aux)) => v |= OUT_AUX_FULL,
                    None => {}
                }
                self.respond(v);
            }
            0xdd => self.output_port &= !OUT_A20,
            0xdf => self.output_port |= OUT_A20,
            0xe0 => self.respond(0x00),
            0xf0..=0xff => {
                if cmd & 0x01 == 0 {
                    tracing::info!(cmd, "i8042: reset pulse");
                    self.halt.request_halt(HaltRequest::Reset);
                }
            }
            _ => tracing::debug!(cmd, "i8042: unsupported controller command"),
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.pending_command.take() {
            Some(cmd @ 0x60..=0x7f) => self.ram[usize::from(cmd & 0x1f)] = value,
            Some(0xd1) => self.write_output_port(value),
            // Loopbacks come from the controller, so a disabled port does not hold them back
            // (Linux probes for an active multiplexer with the AUX port disabled).
            Some(0xd2) => self.controller_output(value, Source::Keyboard),
            Some(0xd3) => self.controller_output(value, Source::Aux),
            Some(0xd4) => {
                self.ram[0] &= !CTR_AUX_DISABLE;
                self.mouse_command(value);
            }
            _ => {
                // Writing to the keyboard re-enables its interface.
                self.ram[0] &= !CTR_KBD_DISABLE;
                self.keyboard_command(value);
            }
        }
    }

    fn keyboard_command(&mut self, value: u8) {
        if let Some(cmd) = self.kbd_pending.take() {
            if cmd == 0xf0 && value == 0 {
                let set = if self.translating() { 0x41 } else { 0x02 };
                self.kbd_queue.push(&[ACK, set]);
            } else {
                self.kbd_queue.push(&[ACK]);
            }
            return;
        }
        match value {
            0xed | 0xf0 | 0xf3 => {
                self.kbd_pending = Some(value);
                self.kbd_queue.push(&[ACK]);
            }
            0xee => self.kbd_queue.push(&[0xee]),
            0xf2 => {
                let id2 = if self.translating() { 0x41 } else { 0x83 };
                self.kbd_queue.push(&[ACK, 0xab, id2]);
            }
            0xf4..=0xfd => self.kbd_queue.push(&[ACK]),
            0xff => {
                self.kbd_queue.0.clear();
                self.kbd_queue.push(&[ACK, BAT_OK]);
            }
            _ => self.kbd_queue.push(&[RESEND]),
        }
    }

    fn mouse_command(&mut self, value: u8) {
        if self.aux_pending.take().is_some() {
            self.aux_queue.push(&[ACK]);
            return;
        }
        match value {
            0xe8 | 0xf3 => {
                self.aux_pending = Some(value);
                self.aux_queue.push(&[ACK]);
            }
            0xe6 | 0xe7 | 0xea | 0xec | 0xee | 0xf0 | 0xf4..=0xf6 => self.aux_queue.push(&[ACK]),
            0xe9 => self.aux_queue.push(&[ACK, 0x00, 0x02, 0x64]),
            0xeb => self.aux_queue.push(&[ACK, 0x08, 0x00, 0x00]),
            0xf2 => self.aux_queue.push(&[ACK, 0x00]),
            0xff => {
                self.aux_queue.0.clear();
                self.aux_queue.push(&[ACK, BAT_OK, 0x00]);
            }
            _ => self.aux_queue.push(&[RESEND]),
        }
    }
}

impl PortIo for I8042 {
    fn io_read(&mut self, port: u16, data: &mut [u8]) -> IoResult {
        if data.len() != 1 {
            return Err(IoError::InvalidAccessSize);
        }
        data[0] = match port {
            PORT_DATA => self.read_data(),
            PORT_COMMAND => self.status(),
            _ => return Err(IoError::InvalidRegister),
        };
        Ok(())
    }

    fn io_write(&mut self, port: u16, data: &[u8]) -> IoResult {
        let &[value] = data else {
            return Err(IoError::InvalidAccessSize);
        };
        match port {
            PORT_DATA => {
                self.last_was_command = false;
                self.write_data(value);
            }
            PORT_COMMAND => {
                self.last_was_command = true;
                self.write_command(value);
            }
            _ => return Err(IoError::InvalidRegister),
        }
        self.pump();
        Ok(())
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
        dev: I8042,
        irq: Arc<TestIrqTarget>,
        halts: Arc<Halts>,
    }

    fn rig() -> Rig {
        let irq = TestIrqTarget::new();
        let halts = Arc::new(Halts::default());
        let dev = I8042::new(irq.line(1), irq.line(12), halts.clone());
        Rig { dev, irq, halts }
    }

    impl Rig {
        fn cmd(&mut self, v: u8) {
            self.dev.io_write(PORT_COMMAND, &[v]).unwrap();
        }
        fn data(&mut self, v: u8) {
            self.dev.io_write(PORT_DATA, &[v]).unwrap();
        }
        fn status(&mut self) -> u8 {
            let mut b = [0];
            self.dev.io_read(PORT_COMMAND, &mut b).unwrap();
            b[0]
        }
        /// Reads every pending byte, like `i8042_flush` / `i8042_wait_read`.
        fn drain(&mut self) -> Vec<u8> {
            let mut out = Vec::new();
            while self.status() & STATUS_OBF != 0 {
                let mut b = [0];
                self.dev.io_read(PORT_DATA, &mut b).unwrap();
                out.push(b[0]);
            }
            out
        }
    }

    #[test]
    fn controller_self_test_and_interface_tests() {
        let mut r = rig();
        r.cmd(0xaa);
        assert_eq!(r.drain(), [0x55]);
        assert_ne!(r.status() & STATUS_SYS, 0);
        r.cmd(0xab);
        assert_eq!(r.drain(), [0x00]);
        r.cmd(0xa9);
        assert_eq!(r.drain(), [0x00]);
        assert_ne!(r.status() & STATUS_CMD, 0);
    }

    #[test]
    fn command_byte_read_write() {
        let mut r = rig();
        r.cmd(0x20);
        assert_eq!(r.drain(), [0x03]);
        r.cmd(0x60);
        r.data(0x65);
        r.cmd(0x20);
        assert_eq!(r.drain(), [0x65]);
        r.cmd(0x7f);
        r.data(0x12);
        r.cmd(0x3f);
        assert_eq!(r.drain(), [0x12]);
    }

    /// `i8042_check_aux`: AUX loop with IRQ 12, disable/enable bits in the CTR.
    #[test]
    fn linux_aux_checks_pass() {
        let mut r = rig();
        r.cmd(0xd3);
        r.data(0x5a);
        assert_eq!(
            r.status() & (STATUS_OBF | STATUS_AUX),
            STATUS_OBF | STATUS_AUX
        );
        assert!(r.irq.level(12));
        assert!(!r.irq.level(1));
        assert_eq!(r.drain(), [0x5a]);
        assert!(!r.irq.level(12));
        r.cmd(0xa7);
        r.cmd(0x20);
        assert_ne!(r.drain()[0] & CTR_AUX_DISABLE, 0);
        r.cmd(0xa8);
        r.cmd(0x20);
        assert_eq!(r.drain()[0] & CTR_AUX_DISABLE, 0);
    }

    /// `i8042_set_mux_mode`: AUX loopbacks with both ports disabled and interrupts off
    /// (CTR 0x30) are answered at once; a controller that held them back cost Linux a 500 ms
    /// read timeout at every boot.
    #[test]
    fn aux_loopback_is_answered_with_the_ports_disabled() {
        let mut r = rig();
        r.cmd(0x60);
        r.data(CTR_KBD_DISABLE | CTR_AUX_DISABLE);
        for b in [0xf0, 0x56, 0xa4] {
            r.cmd(0xd3);
            r.data(b);
            assert_eq!(
                r.status() & (STATUS_OBF | STATUS_AUX),
                STATUS_OBF | STATUS_AUX
            );
            assert!(!r.irq.level(12), "AUX interrupts are off in the CTR");
            assert_eq!(r.drain(), [b]);
        }
    }

    /// `atkbd_probe`: GETID through IRQ 1, then SETLEDS and enable.
    #[test]
    fn keyboard_identifies_itself() {
        let mut r = rig();
        r.data(0xf2);
        assert!(r.irq.level(1));
        assert_eq!(r.drain(), [ACK, 0xab, 0x83]);
        assert_eq!(r.irq.rising_edges(1), 3, "one edge per byte");
        r.cmd(0x60);
        r.data(0x47); // translate
        r.data(0xf2);
        assert_eq!(r.drain(), [ACK, 0xab, 0x41]);
        r.data(0xed);
        r.data(0x00);
        r.data(0xf4);
        r.data(0xf0);
        r.data(0x00);
        r.data(0xee);
        r.data(0x99);
        assert_eq!(r.drain(), [ACK, ACK, ACK, ACK, ACK, 0x41, 0xee, RESEND]);
        r.data(0xff);
        assert_eq!(r.drain(), [ACK, BAT_OK]);
    }

    #[test]
    fn mouse_answers_through_d4() {
        let mut r = rig();
        r.cmd(0xd4);
        r.data(0xff);
        assert!(r.irq.level(12));
        assert_eq!(r.drain(), [ACK, BAT_OK, 0x00]);
        r.cmd(0xd4);
        r.data(0xf2);
        assert_eq!(r.drain(), [ACK, 0x00]);
        r.cmd(0xd4);
        r.data(0xf3);
        r.cmd(0xd4);
        r.data(200);
        r.cmd(0xd4);
        r.data(0xe9);
        assert_eq!(r.drain(), [ACK, ACK, ACK, 0x00, 0x02, 0x64]);
    }

    #[test]
    fn disabled_ports_hold_their_data_and_interrupt_enables_gate_irqs() {
        let mut r = rig();
        r.cmd(0xad);
        r.dev.keyboard_input(&[0x1c]);
        assert_eq!(r.status() & STATUS_OBF, 0, "keyboard disabled");
        r.cmd(0xae);
        assert_eq!(r.drain(), [0x1c]);
        r.cmd(0x60);
        r.data(0x00); // no interrupts
        r.dev.keyboard_input(&[0x9c]);
        assert!(!r.irq.level(1));
        assert_eq!(r.drain(), [0x9c]);
    }

    #[test]
    fn reset_pulse_and_output_port() {
        let mut r = rig();
        r.cmd(0xd0);
        assert_eq!(r.drain(), [OUT_RESET | OUT_A20]);
        r.cmd(0xd1);
        r.data(OUT_RESET);
        assert!(!r.dev.a20_enabled());
        r.cmd(0xdf);
        assert!(r.dev.a20_enabled());
        assert!(r.halts.0.lock().is_empty());
        r.cmd(0xff);
        assert!(r.halts.0.lock().is_empty(), "0xff pulses nothing");
        r.cmd(0xfe);
        assert_eq!(*r.halts.0.lock(), [HaltRequest::Reset]);
        r.cmd(0xd1);
        r.data(0x00);
        assert_eq!(r.halts.0.lock().len(), 2);
    }

    #[test]
    fn reading_an_empty_buffer_repeats_the_last_byte() {
        let mut r = rig();
        r.cmd(0xaa);
        r.drain();
        let mut b = [0];
        r.dev.io_read(PORT_DATA, &mut b).unwrap();
        assert_eq!(b[0], 0x55);
    }

    #[test]
    fn garbage_never_panics_and_queues_stay_bounded() {
        let mut r = rig();
        let mut x: u32 = 0xfeed_beef;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let v = (x >> 8) as u8;
            match x % 4 {
                0 => r.data(v),
                1 if v & 0xf0 != 0xf0 => r.cmd(v),
                2 => {
                    let mut b = [0];
                    r.dev.io_read(PORT_DATA, &mut b).unwrap();
                }
                _ => {
                    r.status();
                }
            }
            assert!(r.dev.kbd_queue.0.len() <= QUEUE_LIMIT);
            assert!(r.dev.aux_queue.0.len() <= QUEUE_LIMIT);
            assert!(r.dev.controller_queue.len() <= QUEUE_LIMIT);
        }
    }
}
