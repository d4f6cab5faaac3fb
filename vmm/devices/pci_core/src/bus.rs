//! Configuration mechanism #1 and BAR mapping updates.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use device_api::IoError;
use device_api::IoResult;
use device_api::Mmio;
use device_api::PortIo;
use parking_lot::Mutex;

use crate::Bdf;
use crate::PciError;
use crate::PciFunction;
use crate::config::BarKind;
use crate::config::BarMapping;

/// Configuration address port.
pub const PORT_ADDRESS: u16 = 0xcf8;
/// First configuration data port.
pub const PORT_DATA: u16 = 0xcfc;

const ADDRESS_ENABLE: u32 = 1 << 31;

/// A change in what a function decodes, for the machine to apply to its buses.
pub enum BarUpdate {
    /// Register `device` for `ports`.
    MapIo {
        /// Name for the bus (function address and BAR).
        name: String,
        /// The BAR's ports.
        ports: RangeInclusive<u16>,
        /// The function's port handler.
        device: Arc<Mutex<dyn PortIo>>,
    },
    /// Release the I/O range starting at `first`.
    UnmapIo {
        /// First port of the range.
        first: u16,
    },
    /// Register `device` for `range`.
    MapMmio {
        /// Name for the bus.
        name: String,
        /// The BAR's addresses.
        range: RangeInclusive<u64>,
        /// The function's MMIO handler.
        device: Arc<Mutex<dyn Mmio>>,
    },
    /// Release the MMIO range starting at `start`.
    UnmapMmio {
        /// First address of the range.
        start: u64,
    },
}

impl std::fmt::Debug for BarUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BarUpdate::MapIo { name, ports, .. } => write!(f, "MapIo({name}, {ports:#x?})"),
            BarUpdate::UnmapIo { first } => write!(f, "UnmapIo({first:#x})"),
            BarUpdate::MapMmio { name, range, .. } => write!(f, "MapMmio({name}, {range:#x?})"),
            BarUpdate::UnmapMmio { start } => write!(f, "UnmapMmio({start:#x})"),
        }
    }
}

/// The queue of [`BarUpdate`]s, shared by the bus and the machine.
#[derive(Clone, Default)]
pub struct BarUpdates {
    queue: Arc<Mutex<Vec<BarUpdate>>>,
    pending: Arc<AtomicBool>,
}

impl BarUpdates {
    /// Whether updates wait (one atomic load: cheap enough to check after every port write).
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Takes the queued updates, oldest first. Apply them in order.
    pub fn take(&self) -> Vec<BarUpdate> {
        let mut q = self.queue.lock();
        self.pending.store(false, Ordering::Release);
        std::mem::take(&mut *q)
    }

    fn push(&self, update: BarUpdate) {
        self.queue.lock().push(update);
        self.pending.store(true, Ordering::Release);
    }
}

struct Function {
    name: String,
    config: Arc<Mutex<dyn PciFunction>>,
    io: Option<Arc<Mutex<dyn PortIo>>>,
    mmio: Option<Arc<Mutex<dyn Mmio>>>,
    mapped: Vec<BarMapping>,
}

/// PCI bus 0 behind configuration mechanism #1.
pub struct PciBus {
    functions: BTreeMap<Bdf, Function>,
    address: u32,
    updates: BarUpdates,
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}

impl PciBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self {
            functions: BTreeMap::new(),
            address: 0,
            updates: BarUpdates::default(),
        }
    }

    /// The port ranges to register: the address register and the data window. (0xcf9 is the
    /// reset control register, a separate device.)
    pub fn port_ranges() -> [RangeInclusive<u16>; 2] {
        [PORT_ADDRESS..=PORT_ADDRESS, PORT_DATA..=PORT_DATA + 3]
    }

    /// The update queue the machine drains.
    pub fn bar_updates(&self) -> BarUpdates {
        self.updates.clone()
    }

    /// Adds a function. `io`/`mmio` are the handlers to map at its I/O/memory BARs (normally
    /// the same object as `config`).
    pub fn add(
        &mut self,
        bdf: Bdf,
        name: &str,
        config: Arc<Mutex<dyn PciFunction>>,
        io: Option<Arc<Mutex<dyn PortIo>>>,
        mmio: Option<Arc<Mutex<dyn Mmio>>>,
    ) -> Result<(), PciError> {
        if bdf.bus != 0 || bdf.device > 31 || bdf.function > 7 {
            return Err(PciError::InvalidAddress(bdf));
        }
        if self.functions.contains_key(&bdf) {
            return Err(PciError::AddressInUse(bdf));
        }
        self.functions.insert(
            bdf,
            Function {
                name: name.to_string(),
                config,
                io,
                mmio,
                mapped: Vec::new(),
            },
        );
        Ok(())
    }

    fn target(&self) -> Option<(Bdf, u16)> {
        if self.address & ADDRESS_ENABLE == 0 {
            return None;
        }
        let bdf = Bdf {
            bus: (self.address >> 16) as u8,
            device: ((self.address >> 11) & 0x1f) as u8,
            function: ((self.address >> 8) & 0x7) as u8,
        };
        Some((bdf, (self.address & 0xfc) as u16))
    }

    /// Reads `len` bytes at byte `offset` of the addressed dword.
    fn data_read(&mut self, byte: u16, data: &mut [u8]) {
        let value = match self.target() {
            Some((bdf, reg)) => match self.functions.get(&bdf) {
                Some(f) => f.config.lock().config_read(reg),
                None => u32::MAX,
            },
            None => u32::MAX,
        };
        let bytes = value.to_le_bytes();
        let start = usize::from(byte);
        data.copy_from_slice(&bytes[start..start + data.len()]);
    }

    fn data_write(&mut self, byte: u16, data: &[u8]) {
        let Some((bdf, reg)) = self.target() else {
            return;
        };
        let Some(f) = self.functions.get_mut(&bdf) else {
            return;
        };
        let mut value = [0u8; 4];
        let mut mask = [0u8; 4];
        let start = usize::from(byte);
        value[start..start + data.len()].copy_from_slice(data);
        mask[start..start + data.len()].fill(0xff);
        let now = {
            let mut cfg = f.config.lock();
            cfg.config_write(reg, u32::from_le_bytes(value), u32::from_le_bytes(mask));
            cfg.bar_mappings()
        };
        if now != f.mapped {
            Self::remap(&self.updates, bdf, f, now);
        }
    }

    /// Queues unmaps for what changed and maps for the new ranges.
    fn remap(updates: &BarUpdates, bdf: Bdf, f: &mut Function, now: Vec<BarMapping>) {
        for old in f.mapped.iter().filter(|m| !now.contains(m)) {
            match old.kind {
                BarKind::Io if f.io.is_some() => updates.push(BarUpdate::UnmapIo {
                    first: old.base as u16,
                }),
                BarKind::Memory if f.mmio.is_some() => {
                    updates.push(BarUpdate::UnmapMmio { start: old.base })
                }
                _ => {}
            }
        }
        let mut mapped = Vec::new();
        for new in now {
            let name = format!("{} {bdf} BAR{}", f.name, new.index);
            let last = new.base.checked_add(new.size - 1);
            let already = f.mapped.contains(&new);
            match (new.kind, last) {
                (BarKind::Io, Some(last)) if last <= 0xffff => {
                    if let Some(io) = &f.io
                        && !already
                    {
                        updates.push(BarUpdate::MapIo {
                            name,
                            ports: new.base as u16..=last as u16,
                            device: io.clone(),
                        });
                    }
                    mapped.push(new);
                }
                (BarKind::Memory, Some(last)) => {
                    if let Some(mmio) = &f.mmio
                        && !already
                    {
                        updates.push(BarUpdate::MapMmio {
                            name,
                            range: new.base..=last,
                            device: mmio.clone(),
                        });
                    }
                    mapped.push(new);
                }
                _ => {
                    tracing::debug!(%bdf, index = new.index, base = new.base, "pci: BAR outside its space, not mapped");
                }
            }
        }
        f.mapped = mapped;
    }
}

impl PortIo for PciBus {
    fn io_read(&mut self, port: u16, data: &mut [u8]) -> IoResult {
        match (port, data.len()) {
            (PORT_ADDRESS, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
            (PORT_ADDRESS, _) => return Err(IoError::InvalidAccessSize),
            (PORT_DATA..=0xcff, len) => {
                let byte = port - PORT_DATA;
                if !matches!(len, 1 | 2 | 4) || usize::from(byte) + len > 4 {
                    return Err(IoError::UnalignedAccess);
                }
                self.data_read(byte, data);
            }
            _ => return Err(IoError::InvalidRegister),
        }
        Ok(())
    }

    fn io_write(&mut self, port: u16, data: &[u8]) -> IoResult {
        match (port, data) {
            (PORT_ADDRESS, &[a, b, c, d]) => {
                self.address = u32::from_le_bytes([a, b, c, d]) & 0x80ff_fffc;
            }
            (PORT_ADDRESS, _) => return Err(IoError::InvalidAccessSize),
            (PORT_DATA..=0xcff, _) => {
                let byte = port - PORT_DATA;
                if !matches!(data.len(), 1 | 2 | 4) || usize::from(byte) + data.len() > 4 {
                    return Err(IoError::UnalignedAccess);
                }
                self.data_write(byte, data);
            }
            _ => return Err(IoError::InvalidRegister),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BarType;
    use crate::config::ConfigHeader;

    struct TestFunction {
        header: ConfigHeader,
        hits: u32,
    }

    impl PciFunction for TestFunction {
        fn config_read(&mut self, offset: u16) -> u32 {
            if offset < 0x40 {
                self.header.read(offset)
            } else {
                0x1234_5678
            }
        }
        fn config_write(&mut self, offset: u16, value: u32, mask: u32) {
            if offset < 0x40 {
                self.header.write(offset, value, mask);
            }
        }
        fn bar_mappings(&self) -> Vec<BarMapping> {
            self.header.bar_mappings()
        }
    }

    impl PortIo for TestFunction {
        fn io_read(&mut self, _port: u16, data: &mut [u8]) -> IoResult {
            self.hits += 1;
            data.fill(0);
            Ok(())
        }
        fn io_write(&mut self, _port: u16, _data: &[u8]) -> IoResult {
            Ok(())
        }
    }

    fn cfg_addr(dev: u8, func: u8, reg: u8) -> [u8; 4] {
        (0x8000_0000u32 | (u32::from(dev) << 11) | (u32::from(func) << 8) | u32::from(reg))
            .to_le_bytes()
    }

    fn rig() -> (PciBus, Arc<Mutex<TestFunction>>) {
        let f = Arc::new(Mutex::new(TestFunction {
            header: ConfigHeader::new(0x8086, 0x7010, 0x010180, 0).bar(4, BarType::Io(16)),
            hits: 0,
        }));
        let mut bus = PciBus::new();
        bus.add(Bdf::new(1, 1), "ide", f.clone(), Some(f.clone()), None)
            .unwrap();
        (bus, f)
    }

    fn read32(bus: &mut PciBus, dev: u8, func: u8, reg: u8) -> u32 {
        bus.io_write(PORT_ADDRESS, &cfg_addr(dev, func, reg))
            .unwrap();
        let mut b = [0u8; 4];
        bus.io_read(PORT_DATA, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    fn write32(bus: &mut PciBus, dev: u8, func: u8, reg: u8, v: u32) {
        bus.io_write(PORT_ADDRESS, &cfg_addr(dev, func, reg))
            .unwrap();
        bus.io_write(PORT_DATA, &v.to_le_bytes()).unwrap();
    }

    #[test]
    fn config_reads_route_by_address_and_absent_functions_float() {
        let (mut bus, _) = rig();
        assert_eq!(read32(&mut bus, 1, 1, 0), 0x7010_8086);
        assert_eq!(read32(&mut bus, 1, 1, 0x40), 0x1234_5678);
        assert_eq!(read32(&mut bus, 1, 0, 0), u32::MAX);
        assert_eq!(read32(&mut bus, 31, 7, 0), u32::MAX);
        // Sub-dword reads pick the right bytes.
        bus.io_write(PORT_ADDRESS, &cfg_addr(1, 1, 0)).unwrap();
        let mut two = [0u8; 2];
        bus.io_read(PORT_DATA + 2, &mut two).unwrap();
        assert_eq!(u16::from_le_bytes(two), 0x7010);
        let mut one = [0u8];
        bus.io_read(PORT_DATA + 1, &mut one).unwrap();
        assert_eq!(one[0], 0x80);
        // Address register reads back, enable bit included.
        let mut a = [0u8; 4];
        bus.io_read(PORT_ADDRESS, &mut a).unwrap();
        assert_eq!(a, cfg_addr(1, 1, 0));
        // Disabled address: data floats.
        bus.io_write(PORT_ADDRESS, &[0, 0, 0, 0]).unwrap();
        let mut b = [0u8; 4];
        bus.io_read(PORT_DATA, &mut b).unwrap();
        assert_eq!(b, [0xff; 4]);
    }

    #[test]
    fn bar_programming_queues_map_and_unmap() {
        let (mut bus, f) = rig();
        let updates = bus.bar_updates();
        write32(&mut bus, 1, 1, 0x20, 0xffff_ffff);
        assert_eq!(read32(&mut bus, 1, 1, 0x20), 0xffff_fff1);
        write32(&mut bus, 1, 1, 0x20, 0xc000);
        assert!(!updates.pending(), "decode still off");
        write32(&mut bus, 1, 1, 0x04, 0x5);
        assert!(updates.pending());
        let got = updates.take();
        assert!(!updates.pending());
        match &got[..] {
            [BarUpdate::MapIo { ports, device, .. }] => {
                assert_eq!(*ports, 0xc000..=0xc00f);
                device.lock().io_read(0xc000, &mut [0]).unwrap();
                assert_eq!(f.lock().hits, 1, "the handler is the function itself");
            }
            other => panic!("{other:?}"),
        }
        // Moving the BAR: unmap then map.
        write32(&mut bus, 1, 1, 0x20, 0xd000);
        let got = updates.take();
        assert!(matches!(got[0], BarUpdate::UnmapIo { first: 0xc000 }));
        assert!(matches!(&got[1], BarUpdate::MapIo { ports, .. } if *ports == (0xd000..=0xd00f)));
        // Sizing with decode on moves it out of I/O space: unmapped, not mapped.
        write32(&mut bus, 1, 1, 0x20, 0xffff_ffff);
        let got = updates.take();
        assert_eq!(got.len(), 1);
        assert!(matches!(got[0], BarUpdate::UnmapIo { first: 0xd000 }));
        // A byte write to the command register turns decode off.
        write32(&mut bus, 1, 1, 0x20, 0xd000);
        updates.take();
        bus.io_write(PORT_ADDRESS, &cfg_addr(1, 1, 4)).unwrap();
        bus.io_write(PORT_DATA, &[0]).unwrap();
        assert!(matches!(
            updates.take()[..],
            [BarUpdate::UnmapIo { first: 0xd000 }]
        ));
    }

    #[test]
    fn registration_and_access_errors() {
        let (mut bus, f) = rig();
        assert_eq!(
            bus.add(Bdf::new(1, 1), "dup", f.clone(), None, None),
            Err(PciError::AddressInUse(Bdf::new(1, 1)))
        );
        assert!(bus.add(Bdf::new(32, 0), "bad", f, None, None).is_err());
        assert_eq!(
            bus.io_write(PORT_ADDRESS, &[0]),
            Err(IoError::InvalidAccessSize)
        );
        let mut two = [0u8; 2];
        assert_eq!(bus.io_read(0xcff, &mut two), Err(IoError::UnalignedAccess));
        assert_eq!(PciBus::port_ranges(), [0xcf8..=0xcf8, 0xcfc..=0xcff]);
    }

    #[test]
    fn garbage_never_panics() {
        let (mut bus, _) = rig();
        let mut x: u64 = 0x7777_1234_5678_9abc;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let port = [0xcf8u16, 0xcfc, 0xcfd, 0xcfe, 0xcff][(x % 5) as usize];
            let len = [1usize, 2, 4][((x >> 3) % 3) as usize];
            let bytes = (x >> 8).to_le_bytes();
            if x & (1 << 60) != 0 {
                let _ = bus.io_write(port, &bytes[..len]);
            } else {
                let mut b = [0u8; 4];
                let _ = bus.io_read(port, &mut b[..len]);
            }
            if x & 0x100 == 0 {
                // Aim at the function now and then.
                bus.io_write(PORT_ADDRESS, &cfg_addr(1, 1, (x >> 16) as u8))
                    .unwrap();
            }
        }
        bus.bar_updates().take();
    }
}
