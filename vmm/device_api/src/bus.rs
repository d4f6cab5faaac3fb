//! Address-range dispatch to devices, with one error policy for all of them.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use crate::IoError;
use crate::Mmio;
use crate::PortIo;

/// Registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The range overlaps one already claimed.
    #[error("{name} range {start:#x}..={end:#x} overlaps {other}")]
    Conflict {
        /// The device being registered.
        name: String,
        /// First address.
        start: u64,
        /// Last address.
        end: u64,
        /// The device that already claims part of the range.
        other: String,
    },
    /// Empty or inverted range.
    #[error("{name}: invalid range {start:#x}..={end:#x}")]
    Invalid {
        /// The device being registered.
        name: String,
        /// First address.
        start: u64,
        /// Last address.
        end: u64,
    },
}

struct Entry<D: ?Sized> {
    start: u64,
    end: u64,
    name: Arc<str>,
    device: Arc<Mutex<D>>,
}

/// Sorted, non-overlapping ranges. Lookups are a binary search; the list is small and built
/// once at machine start (and rarely changed, e.g. when a PCI BAR moves).
struct RangeMap<D: ?Sized> {
    entries: Vec<Entry<D>>,
}

impl<D: ?Sized> RangeMap<D> {
    fn insert(
        &mut self,
        name: &str,
        start: u64,
        end: u64,
        device: Arc<Mutex<D>>,
    ) -> Result<(), RegisterError> {
        if end < start {
            return Err(RegisterError::Invalid {
                name: name.into(),
                start,
                end,
            });
        }
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| start <= e.end && e.start <= end)
        {
            return Err(RegisterError::Conflict {
                name: name.into(),
                start,
                end,
                other: e.name.to_string(),
            });
        }
        let pos = self.entries.partition_point(|e| e.start < start);
        self.entries.insert(
            pos,
            Entry {
                start,
                end,
                name: name.into(),
                device,
            },
        );
        Ok(())
    }

    fn remove(&mut self, start: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start != start);
        before != self.entries.len()
    }

    #[inline]
    fn find(&self, addr: u64) -> Option<&Entry<D>> {
        let i = self.entries.partition_point(|e| e.start <= addr);
        let e = self.entries.get(i.checked_sub(1)?)?;
        (addr <= e.end).then_some(e)
    }

    /// Runs `access` on the device claiming `addr`; an error names the device (or
    /// "unclaimed").
    #[inline]
    fn access(
        &self,
        addr: u64,
        access: impl FnOnce(&mut D) -> Result<(), IoError>,
    ) -> Result<(), (IoError, &str)> {
        match self.find(addr) {
            Some(e) => access(&mut *e.device.lock()).map_err(|err| (err, &*e.name)),
            None => Err((IoError::InvalidRegister, "unclaimed")),
        }
    }
}

/// Logs guest-triggered bus events at most a few times per second per bus.
struct RateLimit {
    last_second: AtomicU64,
    count: AtomicU64,
}

impl RateLimit {
    const PER_SECOND: u64 = 10;

    fn new() -> Self {
        Self {
            last_second: AtomicU64::new(u64::MAX),
            count: AtomicU64::new(0),
        }
    }

    fn allow(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last_second.swap(now, Ordering::Relaxed) != now {
            self.count.store(0, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed) < Self::PER_SECOND
    }
}

/// The port I/O bus (64 KiB of ports).
pub struct PioBus {
    map: RangeMap<dyn PortIo>,
    limit: RateLimit,
}

impl Default for PioBus {
    fn default() -> Self {
        Self::new()
    }
}

impl PioBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self {
            map: RangeMap {
                entries: Vec::new(),
            },
            limit: RateLimit::new(),
        }
    }

    /// Claims `ports` for `device`.
    pub fn register(
        &mut self,
        name: &str,
        ports: std::ops::RangeInclusive<u16>,
        device: Arc<Mutex<dyn PortIo>>,
    ) -> Result<(), RegisterError> {
        self.map.insert(
            name,
            u64::from(*ports.start()),
            u64::from(*ports.end()),
            device,
        )
    }

    /// Releases the range starting at `first`. Returns whether one was registered.
    pub fn unregister(&mut self, first: u16) -> bool {
        self.map.remove(u64::from(first))
    }

    /// Name of the device claiming `port`, if any.
    pub fn owner(&self, port: u16) -> Option<&str> {
        self.map.find(u64::from(port)).map(|e| &*e.name)
    }

    /// Guest `IN`: fills `data`; all-ones when unclaimed or on error.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        let r = self.map.access(u64::from(port), |d| d.io_read(port, data));
        if let Err((err, name)) = r {
            data.fill(0xff);
            if self.limit.allow() {
                tracing::debug!(port, len = data.len(), device = name, %err, "port read failed");
            }
        }
    }

    /// Guest `OUT`: dropped when unclaimed or on error.
    pub fn write(&self, port: u16, data: &[u8]) {
        let r = self.map.access(u64::from(port), |d| d.io_write(port, data));
        if let Err((err, name)) = r
            && self.limit.allow()
        {
            tracing::debug!(port, ?data, device = name, %err, "port write failed");
        }
    }
}

/// The MMIO bus.
pub struct MmioBus {
    map: RangeMap<dyn Mmio>,
    limit: RateLimit,
}

impl Default for MmioBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MmioBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self {
            map: RangeMap {
                entries: Vec::new(),
            },
            limit: RateLimit::new(),
        }
    }

    /// Claims `range` (inclusive) for `device`.
    pub fn register(
        &mut self,
        name: &str,
        range: std::ops::RangeInclusive<u64>,
        device: Arc<Mutex<dyn Mmio>>,
    ) -> Result<(), RegisterError> {
        self.map.insert(name, *range.start(), *range.end(), device)
    }

    /// Releases the range starting at `start`.
    pub fn unregister(&mut self, start: u64) -> bool {
        self.map.remove(start)
    }

    /// Name of the device claiming `addr`, if any.
    pub fn owner(&self, addr: u64) -> Option<&str> {
        self.map.find(addr).map(|e| &*e.name)
    }

    /// Guest load: fills `data`; all-ones when unclaimed or on error.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        let r = self.map.access(addr, |d| d.mmio_read(addr, data));
        if let Err((err, name)) = r {
            data.fill(0xff);
            if self.limit.allow() {
                tracing::debug!(addr, len = data.len(), device = name, %err, "mmio read failed");
            }
        }
    }

    /// Guest store: dropped when unclaimed or on error.
    pub fn write(&self, addr: u64, data: &[u8]) {
        let r = self.map.access(addr, |d| d.mmio_write(addr, data));
        if let Err((err, name)) = r
            && self.limit.allow()
        {
            tracing::debug!(addr, ?data, device = name, %err, "mmio write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IoResult;
    use crate::shared;

    struct Scratch {
        base: u16,
        regs: [u8; 4],
    }

    impl PortIo for Scratch {
        fn io_read(&mut self, port: u16, data: &mut [u8]) -> IoResult {
            let off = usize::from(port - self.base);
            if data.len() != 1 {
                return Err(IoError::InvalidAccessSize);
            }
            data[0] = self.regs[off];
            Ok(())
        }
        fn io_write(&mut self, port: u16, data: &[u8]) -> IoResult {
            let off = usize::from(port - self.base);
            self.regs[off] = data[0];
            Ok(())
        }
    }

    #[test]
    fn dispatch_errors_and_conflicts() {
        let mut bus = PioBus::new();
        let dev = shared(Scratch {
            base: 0x70,
            regs: [0; 4],
        });
        bus.register("scratch", 0x70..=0x73, dev.clone()).unwrap();
        assert!(bus.register("other", 0x73..=0x80, dev).is_err());
        bus.write(0x71, &[0x5a]);
        let mut b = [0u8; 1];
        bus.read(0x71, &mut b);
        assert_eq!(b, [0x5a]);
        let mut w = [0u8; 2];
        bus.read(0x71, &mut w);
        assert_eq!(w, [0xff, 0xff], "bad width reads all-ones");
        bus.read(0x60, &mut b);
        assert_eq!(b, [0xff], "unclaimed reads all-ones");
        assert_eq!(bus.owner(0x73), Some("scratch"));
        assert!(bus.unregister(0x70));
        assert_eq!(bus.owner(0x73), None);
    }
}
