//! The device model contract.
//!
//! # Architecture
//! A device is a plain state machine (no threads, no files, no KVM). It implements the small
//! traits for what it does: [`PortIo`], [`Mmio`], [`Poll`]. It is given:
//! - interrupt lines ([`LineInterrupt`]), wired by the machine to the PIC/IOAPIC;
//! - a clock ([`VmClock`]), the machine's single time base;
//! - guest memory (`guest_mem::GuestMemory`) when it does DMA.
//!
//! The machine registers devices on a [`PioBus`] and an [`MmioBus`]. A bus owns the error policy:
//! devices return [`IoResult`]; on an error or an unclaimed address the bus fills reads with
//! all-ones, drops writes and logs (rate limited, since the guest controls how often).
//!
//! Devices live behind `Arc<Mutex<_>>` because vCPU threads and the machine's timer thread call
//! them concurrently. A device never calls back into the bus.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Instant;

use parking_lot::Mutex;

mod bus;
mod irq;
pub mod ratelimit;

pub use bus::MmioBus;
pub use bus::PioBus;
pub use bus::RegisterError;
pub use irq::IrqTarget;
pub use irq::LineInterrupt;
pub use irq::TestIrqTarget;

/// A bus-level access failure. Device-specific problems are handled inside the device (status
/// registers, error codes) and return `Ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// No register at this offset.
    #[error("no register at this address")]
    InvalidRegister,
    /// The register does not support this access width.
    #[error("access width not supported")]
    InvalidAccessSize,
    /// The access is not aligned as the register requires.
    #[error("unaligned access")]
    UnalignedAccess,
}

/// Result of a device access.
pub type IoResult = Result<(), IoError>;

/// Port I/O. `port` is the absolute port number; `data.len()` is 1, 2 or 4.
pub trait PortIo: Send {
    /// Guest `IN`.
    fn io_read(&mut self, port: u16, data: &mut [u8]) -> IoResult;
    /// Guest `OUT`.
    fn io_write(&mut self, port: u16, data: &[u8]) -> IoResult;
}

/// Memory-mapped I/O. `addr` is the absolute guest-physical address; `data.len()` is 1..=8
/// (or larger for string operations, which a device may reject with `InvalidAccessSize`).
pub trait Mmio: Send {
    /// Guest load.
    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> IoResult;
    /// Guest store.
    fn mmio_write(&mut self, addr: u64, data: &[u8]) -> IoResult;
}

/// Time-driven work (timers, FIFO drains, backend input).
pub trait Poll: Send {
    /// Does whatever is due at `now_ns` (see [`VmClock::now_ns`]) and returns when it next needs
    /// to run, or `None` if it has nothing scheduled. Called by the machine's timer thread at
    /// (or after) the returned deadline and whenever [`Poll::wake`]-style input arrives.
    fn poll(&mut self, now_ns: u64) -> Option<u64>;
}

/// Lets a device ask the machine to call its [`Poll::poll`] soon: the guest reprogrammed a timer
/// (so the deadline returned last time is stale) or input arrived from another thread. The
/// machine supplies the hook; it must not block and must not call into the device, which may be
/// locked when it wakes. Waking more often than needed is harmless: `poll` re-checks.
#[derive(Clone, Default)]
pub struct PollWaker {
    wake: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for PollWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollWaker")
            .field("connected", &self.wake.is_some())
            .finish()
    }
}

impl PollWaker {
    /// A waker calling `wake`.
    pub fn new(wake: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            wake: Some(Arc::new(wake)),
        }
    }

    /// A waker connected to nothing (tests that poll by hand).
    pub fn detached() -> Self {
        Self { wake: None }
    }

    /// Asks for a poll.
    pub fn wake(&self) {
        if let Some(w) = &self.wake {
            w();
        }
    }
}

/// The machine's time base: nanoseconds since the VM was created. Either real (monotonic host
/// time) or manual (tests advance it explicitly). Clones share the same time.
#[derive(Clone, Debug)]
pub struct VmClock {
    start: Instant,
    manual: Option<Arc<AtomicU64>>,
}

impl Default for VmClock {
    fn default() -> Self {
        Self::new()
    }
}

impl VmClock {
    /// Real time, starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            manual: None,
        }
    }

    /// A clock that only moves when [`VmClock::advance`] is called (for tests).
    pub fn manual() -> Self {
        Self {
            start: Instant::now(),
            manual: Some(Arc::new(AtomicU64::new(0))),
        }
    }

    /// Nanoseconds since the VM was created.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        match &self.manual {
            Some(t) => t.load(Ordering::Acquire),
            None => self.start.elapsed().as_nanos() as u64,
        }
    }

    /// The host instant at VM time 0 (real clocks only; manual clocks report their creation).
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Advances a manual clock by `ns`. No effect on a real clock.
    pub fn advance(&self, ns: u64) {
        if let Some(t) = &self.manual {
            t.fetch_add(ns, Ordering::AcqRel);
        }
    }
}

/// A machine-level request a device makes on behalf of the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaltRequest {
    /// ACPI S5 or an equivalent power-off path.
    PowerOff,
    /// A platform reset (i8042 pulse, port 0xcf9, ACPI reset register).
    Reset,
    /// The guest reported a crash (pvpanic, Hyper-V crash MSRs); the string says what it reported.
    GuestCrash(String),
}

/// Where devices send [`HaltRequest`]s: the machine, which stops the processors and records the
/// first request as the halt reason.
pub trait HaltSink: Send + Sync {
    /// Requests a halt. Must not block; may be called from any thread, repeatedly.
    fn request_halt(&self, request: HaltRequest);
}

/// Shared handle to a device, as buses hold it.
pub type Shared<T> = Arc<Mutex<T>>;

/// Wraps a device for registration on buses.
pub fn shared<T>(device: T) -> Shared<T> {
    Arc::new(Mutex::new(device))
}

/// A range of ports or addresses with the name of the device that claims it.
#[derive(Debug, Clone)]
pub struct Claim<A> {
    /// Device name, for logs and conflict errors.
    pub name: String,
    /// First and last address (inclusive).
    pub range: RangeInclusive<A>,
}
