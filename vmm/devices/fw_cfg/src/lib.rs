//! QEMU-compatible firmware configuration device (fw_cfg), the channel SeaBIOS and OVMF read
//! the machine's description from.
//!
//! # Architecture
//! [`FwCfg`] holds a table of items (selector key -> bytes) and a file directory. The machine
//! fills it before the guest starts: [`FwCfg::new`] sets the standard items (signature, ID,
//! CPU counts, RAM size, UUID), then [`FwCfg::add_file`] adds named files such as `etc/e820`
//! ([`FwCfg::set_e820`]), `bootorder` ([`FwCfg::set_boot_order`]) and the ACPI tables
//! (`etc/acpi/tables`, `etc/acpi/rsdp`, `etc/table-loader`, from `acpi::LoaderTables`). The
//! guest then reads items through the legacy data port or the DMA interface, which copies
//! into guest memory through [`guest_mem::GuestMemory`].
//!
//! # Spec
//! QEMU's `docs/specs/fw_cfg.rst` (x86 I/O ports):
//!
//! | port | access | what |
//! |---|---|---|
//! | 0x510 | write 16 | selector (resets the item offset) |
//! | 0x511 | read 8 | data, one byte at a time from the selected item |
//! | 0x514 | write 32 (big-endian) | DMA address, high half |
//! | 0x518 | write 32 (big-endian) | DMA address, low half: starts the transfer |
//!
//! A DMA descriptor is `{ be32 control, be32 length, be64 address }`; control bits: error
//! (0x01), read (0x02), skip (0x04), select (0x08, key in bits 31:16), write (0x10). The device
//! writes the control word back as 0 on success or 0x01 on error. Reads past an item's end
//! return zeros. Everything the guest supplies (addresses, lengths, selectors) is checked.

use std::collections::BTreeMap;

use device_api::IoError;
use device_api::IoResult;
use device_api::PortIo;
use guest_mem::GuestMemory;

/// Selector port.
pub const PORT_SELECTOR: u16 = 0x510;
/// Data port.
pub const PORT_DATA: u16 = 0x511;
/// DMA address, high 32 bits (big-endian).
pub const PORT_DMA_HIGH: u16 = 0x514;
/// DMA address, low 32 bits (big-endian); writing it runs the transfer.
pub const PORT_DMA_LOW: u16 = 0x518;

/// Well-known selector keys.
pub mod key {
    /// "QEMU".
    pub const SIGNATURE: u16 = 0x00;
    /// Feature bits: 1 = traditional interface, 2 = DMA.
    pub const ID: u16 = 0x01;
    /// VM UUID (16 bytes).
    pub const UUID: u16 = 0x02;
    /// RAM size in bytes (u64 LE).
    pub const RAM_SIZE: u16 = 0x03;
    /// No graphics (u16 LE).
    pub const NOGRAPHIC: u16 = 0x04;
    /// Number of boot CPUs (u16 LE).
    pub const NB_CPUS: u16 = 0x05;
    /// Boot menu enabled (u16 LE).
    pub const BOOT_MENU: u16 = 0x0e;
    /// Maximum CPUs (u16 LE).
    pub const MAX_CPUS: u16 = 0x0f;
    /// The file directory.
    pub const FILE_DIR: u16 = 0x19;
    /// First key assigned to files.
    pub const FILE_FIRST: u16 = 0x20;
    /// One past the last file key.
    pub const FILE_LAST: u16 = 0x4000;
}

/// Value of the signature item.
pub const SIGNATURE: &[u8; 4] = b"QEMU";
/// What reads of the DMA address register return (the DMA interface signature).
pub const DMA_SIGNATURE: &[u8; 8] = b"QEMU CFG";
/// Longest file name, including its terminating NUL.
pub const FILE_NAME_LEN: usize = 56;

const FEATURE_TRADITIONAL: u32 = 1 << 0;
const FEATURE_DMA: u32 = 1 << 1;

const DMA_ERROR: u32 = 1 << 0;
const DMA_READ: u32 = 1 << 1;
const DMA_SKIP: u32 = 1 << 2;
const DMA_SELECT: u32 = 1 << 3;
const DMA_WRITE: u32 = 1 << 4;

/// Configuration errors (from the machine, not the guest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FwCfgError {
    /// A file with this name exists.
    #[error("fw_cfg file {0:?} already exists")]
    DuplicateFile(String),
    /// The name does not fit the directory entry (55 bytes) or is empty.
    #[error("fw_cfg file name {0:?} is empty or too long")]
    BadName(String),
    /// No more file keys.
    #[error("too many fw_cfg files")]
    TooManyFiles,
    /// The file is larger than the directory can describe.
    #[error("fw_cfg file {0:?} is larger than 4 GiB")]
    TooLarge(String),
}

/// What the standard items say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwCfgConfig {
    /// Processors present at boot.
    pub processors: u16,
    /// Maximum processors (for hotplug; normally the same).
    pub max_processors: u16,
    /// Total RAM in bytes.
    pub ram_size: u64,
    /// VM UUID.
    pub uuid: [u8; 16],
    /// No graphical console.
    pub nographic: bool,
    /// Show the firmware boot menu.
    pub boot_menu: bool,
}

/// An e820 memory map entry (`etc/e820`: packed `{u64 address, u64 length, u32 type}` LE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub address: u64,
    /// Length in bytes.
    pub length: u64,
    /// 1 RAM, 2 reserved, 3 ACPI reclaimable, 4 ACPI NVS.
    pub kind: u32,
}

impl E820Entry {
    /// Usable RAM.
    pub const RAM: u32 = 1;
    /// Reserved.
    pub const RESERVED: u32 = 2;
}

/// The OpenFirmware device path SeaBIOS matches for an IDE device on the PIIX3 IDE function
/// (00:01.1): `channel` 0/1, `unit` 0 (master) / 1 (slave).
pub fn ide_boot_path(channel: u8, unit: u8) -> String {
    format!("/pci@i0cf8/ide@1,1/drive@{channel}/disk@{unit}")
}

#[derive(Debug, Clone)]
struct Item {
    data: Vec<u8>,
    writable: bool,
}

/// The fw_cfg device.
pub struct FwCfg {
    // Runtime glue.
    memory: GuestMemory,
    // Fixed configuration (set up before the guest runs).
    items: BTreeMap<u16, Item>,
    files: BTreeMap<String, u16>,
    next_file_key: u16,
    // Volatile state.
    selector: u16,
    offset: u64,
    dma_high: u32,
}

impl std::fmt::Debug for FwCfg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FwCfg")
            .field("files", &self.files)
            .field("selector", &self.selector)
            .finish()
    }
}

impl FwCfg {
    /// A device with the standard items; DMA goes to `memory`.
    pub fn new(memory: GuestMemory, config: &FwCfgConfig) -> Self {
        let mut d = Self {
            memory,
            items: BTreeMap::new(),
            files: BTreeMap::new(),
            next_file_key: key::FILE_FIRST,
            selector: 0,
            offset: 0,
            dma_high: 0,
        };
        d.set_item(key::SIGNATURE, SIGNATURE.to_vec());
        d.set_item(
            key::ID,
            (FEATURE_TRADITIONAL | FEATURE_DMA).to_le_bytes().to_vec(),
        );
        d.set_item(key::UUID, config.uuid.to_vec());
        d.set_item(key::RAM_SIZE, config.ram_size.to_le_bytes().to_vec());
        d.set_item(
            key::NOGRAPHIC,
            u16::from(config.nographic).to_le_bytes().to_vec(),
        );
        d.set_item(key::NB_CPUS, config.processors.to_le_bytes().to_vec());
        d.set_item(key::MAX_CPUS, config.max_processors.to_le_bytes().to_vec());
        d.set_item(
            key::BOOT_MENU,
            u16::from(config.boot_menu).to_le_bytes().to_vec(),
        );
        d.rebuild_directory();
        d
    }

    /// The port ranges to register.
    pub fn port_ranges() -> [std::ops::RangeInclusive<u16>; 2] {
        [PORT_SELECTOR..=PORT_DATA, PORT_DMA_HIGH..=PORT_DMA_LOW + 3]
    }

    /// Sets a numbered item (keys below 0x20, or architecture keys 0x8000+).
    pub fn set_item(&mut self, key: u16, data: Vec<u8>) {
        self.items.insert(
            key,
            Item {
                data,
                writable: false,
            },
        );
    }

    /// Adds a read-only file; returns its selector key.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<u16, FwCfgError> {
        self.insert_file(name, data, false)
    }

    /// Adds a file the guest may write through DMA (within its current size).
    pub fn add_writable_file(&mut self, name: &str, data: Vec<u8>) -> Result<u16, FwCfgError> {
        self.insert_file(name, data, true)
    }

    /// A file's current contents (e.g. what the guest wrote).
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        let key = self.files.get(name)?;
        self.items.get(key).map(|i| i.data.as_slice())
    }

    /// Adds `etc/e820`.
    pub fn set_e820(&mut self, entries: &[E820Entry]) -> Result<u16, FwCfgError> {
        let mut data = Vec::with_capacity(entries.len() * 20);
        for e in entries {
            data.extend_from_slice(&e.address.to_le_bytes());
            data.extend_from_slice(&e.length.to_le_bytes());
            data.extend_from_slice(&e.kind.to_le_bytes());
        }
        self.add_file("etc/e820", data)
    }

    /// Adds `bootorder`: one device path per line, in priority order.
    pub fn set_boot_order(&mut self, paths: &[String]) -> Result<u16, FwCfgError> {
        let mut data = String::new();
        for p in paths {
            data.push_str(p);
            data.push('\n');
        }
        let mut bytes = data.into_bytes();
        bytes.push(0);
        self.add_file("bootorder", bytes)
    }

    fn insert_file(
        &mut self,
        name: &str,
        data: Vec<u8>,
        writable: bool,
    ) -> Result<u16, FwCfgError> {
        if name.is_empty() || name.len() >= FILE_NAME_LEN || name.contains('\0') {
            return Err(FwCfgError::BadName(name.to_string()));
        }
        if self.files.contains_key(name) {
            return Err(FwCfgError::DuplicateFile(name.to_string()));
        }
        if u32::try_from(data.len()).is_err() {
            return Err(FwCfgError::TooLarge(name.to_string()));
        }
        if self.next_file_key >= key::FILE_LAST {
            return Err(FwCfgError::TooManyFiles);
        }
        let k = self.next_file_key;
        self.next_file_key += 1;
        self.items.insert(k, Item { data, writable });
        self.files.insert(name.to_string(), k);
        self.rebuild_directory();
        Ok(k)
    }

    /// The directory: be32 count, then per file be32 size, be16 key, be16 0, name[56]; sorted
    /// by name as QEMU does.
    fn rebuild_directory(&mut self) {
        let mut dir = Vec::with_capacity(4 + 64 * self.files.len());
        dir.extend_from_slice(&(self.files.len() as u32).to_be_bytes());
        for (name, &k) in &self.files {
            let size = self.items.get(&k).map_or(0, |i| i.data.len());
            dir.extend_from_slice(&(size as u32).to_be_bytes());
            dir.extend_from_slice(&k.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut n = [0u8; FILE_NAME_LEN];
            n[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&n);
        }
        self.set_item(key::FILE_DIR, dir);
    }

    fn select(&mut self, selector: u16) {
        self.selector = selector;
        self.offset = 0;
    }

    fn read_data_byte(&mut self) -> u8 {
        let byte = self
            .items
            .get(&self.selector)
            .and_then(|i| {
                usize::try_from(self.offset)
                    .ok()
                    .and_then(|o| i.data.get(o))
            })
            .copied()
            .unwrap_or(0);
        self.offset = self.offset.saturating_add(1);
        byte
    }

    /// Runs the DMA descriptor at `desc`.
    fn dma(&mut self, desc: u64) {
        let mut raw = [0u8; 16];
        if self.memory.read_at(desc, &mut raw).is_err() {
            tracing::debug!(desc, "fw_cfg: DMA descriptor not in guest memory");
            return;
        }
        let control = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let length = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
        let address = u64::from_be_bytes([
            raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15],
        ]);
        let ok = self.dma_transfer(control, length, address);
        let result: u32 = if ok { 0 } else { DMA_ERROR };
        if self.memory.write_at(desc, &result.to_be_bytes()).is_err() {
            tracing::debug!(desc, "fw_cfg: cannot write DMA status");
        }
    }

    fn dma_transfer(&mut self, control: u32, length: u32, address: u64) -> bool {
        if control & DMA_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let len = u64::from(length);
        let item = self.items.get_mut(&self.selector);
        let ok = if control & DMA_READ != 0 {
            let data: &[u8] = item.map_or(&[], |i| i.data.as_slice());
            let start = usize::try_from(self.offset)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let avail = (data.len() - start).min(usize::try_from(len).unwrap_or(usize::MAX));
            let copied = self
                .memory
                .write_at(address, &data[start..start + avail])
                .is_ok();
            let rest = len - avail as u64;
            copied
                && (rest == 0
                    || address
                        .checked_add(avail as u64)
                        .is_some_and(|a| self.memory.fill_at(a, 0, rest).is_ok()))
        } else if control & DMA_WRITE != 0 {
            match item {
                Some(i) if i.writable => {
                    let start = usize::try_from(self.offset).unwrap_or(usize::MAX);
                    let end =
                        usize::try_from(self.offset.saturating_add(len)).unwrap_or(usize::MAX);
                    if end > i.data.len() || start > end {
                        false
                    } else {
                        self.memory
                            .read_at(address, &mut i.data[start..end])
                            .is_ok()
                    }
                }
                _ => false,
            }
        } else {
            // Skip, select only, or nothing to do.
            true
        };
        if control & (DMA_READ | DMA_WRITE | DMA_SKIP) != 0 {
            self.offset = self.offset.saturating_add(len);
        }
        ok
    }
}

impl PortIo for FwCfg {
    fn io_read(&mut self, port: u16, data: &mut [u8]) -> IoResult {
        match port {
            PORT_DATA => {
                for b in data.iter_mut() {
                    *b = self.read_data_byte();
                }
            }
            PORT_DMA_HIGH..=0x51b => {
                let start = usize::from(port - PORT_DMA_HIGH);
                for (i, b) in data.iter_mut().enumerate() {
                    *b = DMA_SIGNATURE.get(start + i).copied().unwrap_or(0);
                }
            }
            _ => return Err(IoError::InvalidRegister),
        }
        Ok(())
    }

    fn io_write(&mut self, port: u16, data: &[u8]) -> IoResult {
        match (port, data) {
            (PORT_SELECTOR, &[lo]) => self.select(u16::from(lo)),
            (PORT_SELECTOR, &[lo, hi]) => self.select(u16::from_le_bytes([lo, hi])),
            (PORT_DATA, _) => {
                tracing::trace!("fw_cfg: legacy data write ignored");
            }
            (PORT_DMA_HIGH, &[a, b, c, d]) => self.dma_high = u32::from_be_bytes([a, b, c, d]),
            (PORT_DMA_LOW, &[a, b, c, d]) => {
                let low = u32::from_be_bytes([a, b, c, d]);
                let desc = (u64::from(self.dma_high) << 32) | u64::from(low);
                self.dma_high = 0;
                self.dma(desc);
            }
            (PORT_SELECTOR | PORT_DMA_HIGH | PORT_DMA_LOW, _) => {
                return Err(IoError::InvalidAccessSize);
            }
            _ => return Err(IoError::InvalidRegister),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
