//! Single-port devices: reset control (0xcf9), debug console (0x402), pvpanic (0x505), the
//! POST code port (0x80) and system control port A (0x92).

use std::sync::Arc;

use device_api::HaltRequest;
use device_api::HaltSink;
use device_api::IoError;
use device_api::IoResult;
use device_api::PortIo;

/// Reset control register port (PIIX/ICH; also the FADT reset register).
pub const PORT_RESET_CONTROL: u16 = 0xcf9;
/// QEMU-style debug console port.
pub const PORT_DEBUG_CONSOLE: u16 = 0x402;
/// pvpanic port.
pub const PORT_PVPANIC: u16 = 0x505;
/// POST code port.
pub const PORT_POST: u16 = 0x80;
/// System control port A (fast A20 and fast reset).
pub const PORT_SYSTEM_CONTROL_A: u16 = 0x92;

/// What a read of the debug console returns, so firmware can detect it (QEMU's value).
pub const DEBUG_CONSOLE_READBACK: u8 = 0xe9;

/// pvpanic event: the guest panicked.
pub const PVPANIC_PANICKED: u8 = 1 << 0;
/// pvpanic event: a crash kernel is loaded and will take over.
pub const PVPANIC_CRASH_LOADED: u8 = 1 << 1;

/// The reason string of a pvpanic halt.
pub const PVPANIC_REASON: &str = "pvpanic: guest panicked";

/// Where debug console bytes go (the `--firmware-log` destination). Called with the device
/// locked: buffer, do not block.
pub trait ByteOutput: Send {
    /// Bytes the guest wrote.
    fn write(&mut self, bytes: &[u8]);
}

fn one_byte(data: &[u8]) -> Result<u8, IoError> {
    match data {
        &[v] => Ok(v),
        _ => Err(IoError::InvalidAccessSize),
    }
}

/// Reset control register at 0xcf9: setting bit 2 (RST_CPU) resets the machine; bits 1
/// (SYS_RST) and 3 (FULL_RST) only select the kind of reset, which is the same here.
pub struct ResetControl {
    halt: Arc<dyn HaltSink>,
    value: u8,
}

impl ResetControl {
    /// A reset control register requesting resets from `halt`.
    pub fn new(halt: Arc<dyn HaltSink>) -> Self {
        Self { halt, value: 0 }
    }
}

impl PortIo for ResetControl {
    fn io_read(&mut self, port: u16, data: &mut [u8]) -> IoResult {
        if port != PORT_RESET_CONTROL || data.len() != 1 {
            return Err(IoError::InvalidAccessSize);
        }
        data[0] = self.value;
        Ok(())
    }

    fn io_write(&mut self, port: u16, data: &[u8]) -> IoResult {
        if port != PORT_RESET_CONTROL {
            return Err(IoError::InvalidRegister);
        }
        let v = one_byte(data)?;
        self.value = v & 0x0a;
        if v & 0x04 != 0 {
            tracing::info!(value = v, "reset control: reset requested");
            self.halt.request_halt(HaltRequest::Reset);
        }
        Ok(())
    }
}

/// Debug console: bytes written to port 0x402 go to a [`ByteOutput`]; reads return 0xe9.
pub struct DebugConsole {
    output: Box<dyn ByteOutput>,
}

impl DebugConsole {
    /// A debug console writing to `output`.
    pub fn new(output: Box<dyn ByteOutput>) -> Self {
        Self { output }
    }
}

impl PortIo for DebugConsole {
    fn io_read(&mut self, _port: u16, data: &mut [u8]) -> IoResult {
        data.fill(DEBUG_CONSOLE_READBACK);
        Ok(())
    }

    fn io_write(&mut self, _port: u16, data: &[u8]) -> IoResult {
        // Byte writes are the protocol; wider writes carry their bytes in order.
        self.output.write(data);
        Ok(())
    }
}

/// pvpanic (QEMU's ISA pvpanic, ACPI `QEMU0001`): a read returns the supported events, a write
/// of [`PVPANIC_PANICKED`] halts the machine as a guest crash. [`PVPANIC_CRASH_LOADED`] is
/// logged only: the guest's crash kernel carries on.
pub struct PvPanic {
    halt: Arc<dyn HaltSink>,
}

impl PvPanic {
    /// The events this device reports as supported.
    pub const SUPPORTED: u8 = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;

    /// A pvpanic device reporting crashes to `halt`.
    pub fn new(halt: Arc<dyn HaltSink>) -> Self {
        Self { halt }
    }
}

impl PortIo for PvPanic {
    fn io_read(&mut self, _port: u16, data: &mut [u8]) -> IoResult {
        let v = one_byte(data).map(|_| Self::SUPPORTED)?;
        data[0] = v;
        Ok(())
    }

    fn io_write(&mut self, _port: u16, data: &[u8]) -> IoResult {
        let v = one_byte(data)?;
        if v & PVPANIC_PANICKED != 0 {
            tracing::info!("pvpanic: guest panicked");
            self.halt
                .request_halt(HaltRequest::GuestCrash(PVPANIC_REASON.to_string()));
        } else if v & PVPANIC_CRASH_LOADED != 0 {
            tracing::info!("pvpanic: guest crashed into its crash kernel");
        }
        Ok(())
    }
}

/// POST code port: writes are kept (and traced), reads return the last code.
#[derive(Debug, Default)]
pub struct PostCode {
    last: u8,
}

impl PostCode {
    /// A POST port that has seen no code.
    pub fn new() -> Self {
        Self::default()
    }
}

impl PortIo for PostCode {
    fn io_read(&mut self, _port: u16, data: &mut [u8]) -> IoResult {
        data.fill(self.last);
        Ok(())
    }

    fn io_write(&mut self, _port: u16, data: &[u8]) -> IoResult {
        if let Some(&v) = data.first() {
            self.last = v;
            tracing::trace!(code = v, "post code");
        }
        Ok(())
    }
}

/// System control port A at 0x92: bit 1 gates A20 (recorded only: the machine never wraps
/// addresses), a rising edge of bit 0 resets the machine.
pub struct SystemControlA {
    halt: Arc<dyn HaltSink>,
    value: u8,
}

impl SystemControlA {
    /// The port with A20 enabled, requesting resets from `halt`.
    pub fn new(halt: Arc<dyn HaltSink>) -> Self {
        Self { halt, value: 0x02 }
    }

    /// Whether the guest asked for A20 enabled.
    pub fn a20_enabled(&self) -> bool {
        self.value & 0x02 != 0
    }
}

impl PortIo for SystemControlA {
    fn io_read(&mut self, _port: u16, data: &mut [u8]) -> IoResult {
        let v = one_byte(data).map(|_| self.value)?;
        data[0] = v;
        Ok(())
    }

    fn io_write(&mut self, _port: u16, data: &[u8]) -> IoResult {
        let v = one_byte(data)?;
        let reset = v & 0x01 != 0 && self.value & 0x01 == 0;
        self.value = v & 0x03;
        if reset {
            tracing::info!("port 0x92: fast reset");
            self.halt.request_halt(HaltRequest::Reset);
            // The reset bit reads back clear once the machine resets.
            self.value &= !0x01;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use super::*;

    #[derive(Default)]
    struct Halts(Mutex<Vec<HaltRequest>>);

    impl HaltSink for Halts {
        fn request_halt(&self, request: HaltRequest) {
            self.0.lock().push(request);
        }
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl ByteOutput for Capture {
        fn write(&mut self, bytes: &[u8]) {
            self.0.lock().extend_from_slice(bytes);
        }
    }

    #[test]
    fn reset_control_resets_on_rst_cpu() {
        let halts = Arc::new(Halts::default());
        let mut d = ResetControl::new(halts.clone());
        d.io_write(PORT_RESET_CONTROL, &[0x02]).unwrap();
        assert!(halts.0.lock().is_empty());
        let mut b = [0];
        d.io_read(PORT_RESET_CONTROL, &mut b).unwrap();
        assert_eq!(b, [0x02]);
        d.io_write(PORT_RESET_CONTROL, &[0x06]).unwrap();
        d.io_write(PORT_RESET_CONTROL, &[0x0e]).unwrap();
        assert_eq!(*halts.0.lock(), [HaltRequest::Reset, HaltRequest::Reset]);
        assert!(d.io_write(PORT_RESET_CONTROL, &[0x06, 0]).is_err());
        assert_eq!(halts.0.lock().len(), 2);
    }

    #[test]
    fn debug_console_forwards_bytes_and_reads_e9() {
        let cap = Capture::default();
        let mut d = DebugConsole::new(Box::new(cap.clone()));
        for &b in b"SeaBIOS\n" {
            d.io_write(PORT_DEBUG_CONSOLE, &[b]).unwrap();
        }
        let mut b = [0];
        d.io_read(PORT_DEBUG_CONSOLE, &mut b).unwrap();
        assert_eq!(b, [0xe9]);
        assert_eq!(*cap.0.lock(), b"SeaBIOS\n");
    }

    #[test]
    fn pvpanic_reports_a_crash() {
        let halts = Arc::new(Halts::default());
        let mut d = PvPanic::new(halts.clone());
        let mut b = [0];
        d.io_read(PORT_PVPANIC, &mut b).unwrap();
        assert_eq!(b, [0x03]);
        d.io_write(PORT_PVPANIC, &[PVPANIC_CRASH_LOADED]).unwrap();
        d.io_write(PORT_PVPANIC, &[0]).unwrap();
        assert!(halts.0.lock().is_empty());
        d.io_write(PORT_PVPANIC, &[PVPANIC_PANICKED]).unwrap();
        assert_eq!(
            *halts.0.lock(),
            [HaltRequest::GuestCrash("pvpanic: guest panicked".into())]
        );
    }

    #[test]
    fn port_92_fast_reset_and_a20() {
        let halts = Arc::new(Halts::default());
        let mut d = SystemControlA::new(halts.clone());
        let mut b = [0];
        d.io_read(PORT_SYSTEM_CONTROL_A, &mut b).unwrap();
        assert_eq!(b, [0x02]);
        assert!(d.a20_enabled());
        // Linux's enable_a20_fast: set A20, keep bit 0 clear.
        d.io_write(PORT_SYSTEM_CONTROL_A, &[0xfe]).unwrap();
        assert!(halts.0.lock().is_empty());
        d.io_write(PORT_SYSTEM_CONTROL_A, &[0x00]).unwrap();
        assert!(!d.a20_enabled());
        d.io_write(PORT_SYSTEM_CONTROL_A, &[0x03]).unwrap();
        assert_eq!(*halts.0.lock(), [HaltRequest::Reset]);
        d.io_read(PORT_SYSTEM_CONTROL_A, &mut b).unwrap();
        assert_eq!(b, [0x02]);
    }

    #[test]
    fn post_code_is_kept() {
        let mut d = PostCode::new();
        d.io_write(PORT_POST, &[0x55]).unwrap();
        let mut b = [0; 2];
        d.io_read(PORT_POST, &mut b).unwrap();
        assert_eq!(b, [0x55, 0x55]);
        d.io_write(PORT_POST, &[]).unwrap();
    }
}
