//! PIIX3-compatible IDE controller (PCI 00:01.1): two channels with two devices each, ATA hard
//! disks and ATAPI CD/DVD-ROMs, PIO and bus-master DMA.
//!
//! # Architecture
//! [`IdeController`] is one PCI function ([`pci_core::PciFunction`]) and one port device
//! ([`device_api::PortIo`]) that answers the legacy ports and, once the guest programs BAR4,
//! the bus-master registers (the machine maps them from [`pci_core::bus::BarUpdate`]s). Each
//! channel (`channel.rs`) keeps a per-device copy of the task file (writes go to both, as on
//! the cable), the selected device, device control (nIEN, SRST, HOB) and the transfer state:
//! PIO data in or out a block at a time, or a DMA job waiting for the bus master to start.
//! Disk I/O goes through [`disk::Disk`] synchronously, on the thread that made the port access
//! (a vCPU), so a command completes within the access that starts it; DMA copies through
//! [`guest_mem::GuestMemory`] along the PRD table.
//!
//! ATA (`ata.rs`): IDENTIFY, READ/WRITE SECTORS and MULTIPLE (28- and 48-bit, CHS or LBA),
//! READ/WRITE DMA (28/48), READ VERIFY, FLUSH CACHE (EXT), SET FEATURES (transfer mode, write
//! cache), SET MULTIPLE, INITIALIZE DEVICE PARAMETERS, power commands, EXECUTE DIAGNOSTIC,
//! READ NATIVE MAX; everything else aborts. ATAPI (`atapi.rs`): PACKET with PIO (byte-count
//! limited chunks) or DMA, IDENTIFY PACKET DEVICE, DEVICE RESET, and the MMC commands a guest
//! boots from and mounts with (TEST UNIT READY, REQUEST SENSE, INQUIRY, READ CAPACITY,
//! READ(10/12), READ CD, READ TOC formats 0-2, GET CONFIGURATION, GET EVENT STATUS
//! NOTIFICATION, MODE SENSE(6/10), READ DISC INFORMATION, ...).
//!
//! # Ports and interrupts
//! | channel | command block | control | IRQ |
//! |---|---|---|---|
//! | primary | 0x1f0-0x1f7 | 0x3f6 | ISA 14 |
//! | secondary | 0x170-0x177 | 0x376 | ISA 15 |
//!
//! BAR4: 16 bytes of bus-master registers (8 per channel: command, status, PRD table).
//! Interrupts are levels: a device's INTRQ is set when it completes a command or a PIO block,
//! cleared by reading its status register or writing a command, and masked by nIEN; each
//! assertion also sets the channel's bus-master interrupt bit.
//!
//! # Spec
//! ATA/ATAPI-6, SFF-8038i (bus-master IDE), Intel 82371SB (PIIX3) datasheet, MMC-3 and SPC-3.

mod ata;
mod atapi;
mod channel;
mod dma;
pub mod protocol;

use std::sync::Arc;

use channel::Channel;
use channel::DmaContext;
use channel::Drive;
use channel::DriveKind;
use device_api::IoError;
use device_api::IoResult;
use device_api::LineInterrupt;
use device_api::PortIo;
use disk::Disk;
use guest_mem::GuestMemory;
use pci_core::PciFunction;
use pci_core::config::BarMapping;
use pci_core::config::BarType;
use pci_core::config::ConfigHeader;

/// Where the IDE function sits.
pub const IDE_BDF: pci_core::Bdf = pci_core::Bdf::new(1, 1);
/// Primary channel command block.
pub const PRIMARY_BASE: u16 = 0x1f0;
/// Primary channel device control / alternate status.
pub const PRIMARY_CONTROL: u16 = 0x3f6;
/// Secondary channel command block.
pub const SECONDARY_BASE: u16 = 0x170;
/// Secondary channel device control / alternate status.
pub const SECONDARY_CONTROL: u16 = 0x376;
/// ISA IRQs of the primary and secondary channels.
pub const IRQS: [u32; 2] = [14, 15];

const BM_BAR: usize = 4;
const BM_SIZE: u16 = 16;

/// What sits at a drive position.
#[derive(Debug, Clone)]
pub enum IdeDrive {
    /// An ATA hard disk (512-byte logical sectors).
    HardDisk(Arc<dyn Disk>),
    /// An ATAPI CD/DVD-ROM with an optional medium (an ISO image: any sector size).
    Cdrom(Option<Arc<dyn Disk>>),
}

/// Configuration errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdeError {
    /// ATA hard disks here have 512-byte logical sectors.
    #[error("IDE hard disks need 512-byte sectors, this disk has {0}")]
    UnsupportedSectorSize(u32),
    /// Channel or unit out of range.
    #[error("no IDE position {channel}:{unit}")]
    NoSuchPosition {
        /// Channel (0 or 1).
        channel: usize,
        /// Unit (0 master, 1 slave).
        unit: usize,
    },
    /// The position has no CD-ROM.
    #[error("IDE {channel}:{unit} is not a CD-ROM")]
    NotCdrom {
        /// Channel.
        channel: usize,
        /// Unit.
        unit: usize,
    },
}

/// The PIIX3 IDE function with its two channels.
pub struct IdeController {
    // Runtime glue.
    memory: GuestMemory,
    // Configuration space.
    header: ConfigHeader,
    /// Device-specific config bytes 0x40-0xff (timing registers, all plain read-write).
    extended: [u8; 0xc0],
    // Volatile state.
    channels: [Channel; 2],
}

impl std::fmt::Debug for IdeController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdeController")
            .field("channels", &self.channels)
            .finish()
    }
}

fn make_drive(drive: Option<IdeDrive>, position: usize) -> Result<Option<Drive>, IdeError> {
    Ok(match drive {
        None => None,
        Some(IdeDrive::HardDisk(disk)) => {
            if disk.sector_size() != 512 {
                return Err(IdeError::UnsupportedSectorSize(disk.sector_size()));
            }
            Some(Drive::new(DriveKind::Disk(ata::HardDisk::new(disk))))
        }
        Some(IdeDrive::Cdrom(medium)) => {
            let serial = medium
                .as_ref()
                .map_or_else(|| format!("AGARCD{position}"), |m| m.disk_id().serial());
            Some(Drive::new(DriveKind::Optical(
                atapi::Optical::new(medium, serial),
                ata::XferModes::default(),
            )))
        }
    })
}

impl IdeController {
    /// A controller with `drives[channel][unit]`, DMA into `memory`, interrupting on
    /// `irqs[channel]` (ISA IRQ 14 and 15).
    pub fn new(
        memory: GuestMemory,
        irqs: [LineInterrupt; 2],
        drives: [[Option<IdeDrive>; 2]; 2],
    ) -> Result<Self, IdeError> {
        let [[d00, d01], [d10, d11]] = drives;
        let [irq0, irq1] = irqs;
        let channels = [
            Channel::new(irq0, [make_drive(d00, 0)?, make_drive(d01, 1)?]),
            Channel::new(irq1, [make_drive(d10, 2)?, make_drive(d11, 3)?]),
        ];
        let mut extended = [0u8; 0xc0];
        // IDETIM for both channels: IDE decode enabled (Linux's ata_piix checks the bit).
        extended[0x01] = 0x80;
        extended[0x03] = 0x80;
        Ok(Self {
            memory,
            // Mass storage, IDE, prog-if 0x80: bus-master capable, both channels in
            // compatibility mode.
            header: ConfigHeader::new(0x8086, 0x7010, 0x01_01_80, 0x00)
                .bar(BM_BAR, BarType::Io(u32::from(BM_SIZE))),
            extended,
            channels,
        })
    }

    /// The legacy ports to register (the bus-master BAR comes through PCI BAR updates).
    pub fn legacy_port_ranges() -> [std::ops::RangeInclusive<u16>; 4] {
        [
            PRIMARY_BASE..=PRIMARY_BASE + 7,
            PRIMARY_CONTROL..=PRIMARY_CONTROL,
            SECONDARY_BASE..=SECONDARY_BASE + 7,
            SECONDARY_CONTROL..=SECONDARY_CONTROL,
        ]
    }

    /// Platform reset: drives reset, bus masters stopped; configuration space kept as the
    /// machine rebuilds PCI separately.
    pub fn reset(&mut self) {
        for c in &mut self.channels {
            c.reset();
        }
    }

    /// Inserts (`Some`) or ejects (`None`) the medium of the CD-ROM at `channel`:`unit`.
    pub fn set_cdrom_medium(
        &mut self,
        channel: usize,
        unit: usize,
        medium: Option<Arc<dyn Disk>>,
    ) -> Result<(), IdeError> {
        let drive = self
            .channels
            .get_mut(channel)
            .and_then(|c| c.drives.get_mut(unit))
            .ok_or(IdeError::NoSuchPosition { channel, unit })?;
        match drive {
            Some(Drive {
                kind: DriveKind::Optical(o, _),
                ..
            }) => {
                o.set_medium(medium);
                Ok(())
            }
            _ => Err(IdeError::NotCdrom { channel, unit }),
        }
    }

    fn bm_base(&self) -> Option<u16> {
        let base = self.header.bar_base(BM_BAR)?;
        (base != 0 && base <= u64::from(u16::MAX - BM_SIZE + 1)).then_some(base as u16)
    }

    /// Resolves a port to (channel, what).
    fn decode(&self, port: u16) -> Option<(usize, Target)> {
        match port {
            PRIMARY_BASE..=0x1f7 => Some((0, Target::Command(port - PRIMARY_BASE))),
            PRIMARY_CONTROL => Some((0, Target::Control)),
            SECONDARY_BASE..=0x177 => Some((1, Target::Command(port - SECONDARY_BASE))),
            SECONDARY_CONTROL => Some((1, Target::Control)),
            _ => {
                let off = port.checked_sub(self.bm_base()?)?;
                (off < BM_SIZE).then_some((usize::from(off / 8), Target::BusMaster(off % 8)))
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Command(u16),
    Control,
    BusMaster(u16),
}

impl PortIo for IdeController {
    fn io_read(&mut self, port: u16, data: &mut [u8]) -> IoResult {
        let (ch, target) = self.decode(port).ok_or(IoError::InvalidRegister)?;
        match target {
            Target::Command(protocol::reg::DATA) if matches!(data.len(), 1 | 2 | 4) => {
                self.channels[ch].read_register(protocol::reg::DATA, data);
            }
            Target::Command(off) if data.len() == 1 => self.channels[ch].read_register(off, data),
            Target::Control if data.len() == 1 => data[0] = self.channels[ch].alt_status(),
            Target::BusMaster(off) if usize::from(off) + data.len() <= 8 => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = self.channels[ch].bm_read(off + i as u16);
                }
            }
            _ => return Err(IoError::InvalidAccessSize),
        }
        Ok(())
    }

    fn io_write(&mut self, port: u16, data: &[u8]) -> IoResult {
        let (ch, target) = self.decode(port).ok_or(IoError::InvalidRegister)?;
        let memory = self.memory.clone();
        let ctx = DmaContext {
            memory: &memory,
            bus_master: self.header.bus_master(),
        };
        match target {
            Target::Command(protocol::reg::DATA) if matches!(data.len(), 1 | 2 | 4) => {
                self.channels[ch].write_register(protocol::reg::DATA, data, &ctx);
            }
            Target::Command(off) if data.len() == 1 => {
                self.channels[ch].write_register(off, data, &ctx)
            }
            Target::Control if data.len() == 1 => self.channels[ch].write_control(data[0]),
            Target::BusMaster(off) if usize::from(off) + data.len() <= 8 => {
                for (i, &b) in data.iter().enumerate() {
                    self.channels[ch].bm_write(off + i as u16, b, &ctx);
                }
            }
            _ => return Err(IoError::InvalidAccessSize),
        }
        Ok(())
    }
}

impl PciFunction for IdeController {
    fn config_read(&mut self, offset: u16) -> u32 {
        if offset < 0x40 {
            return self.header.read(offset);
        }
        let i = usize::from(offset - 0x40);
        match self.extended.get(i..i + 4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => 0,
        }
    }

    fn config_write(&mut self, offset: u16, value: u32, mask: u32) {
        if offset < 0x40 {
            let was = self.header.bus_master();
            self.header.write(offset, value, mask);
            if self.header.bus_master() && !was {
                // Bus mastering just got enabled: start DMA that was waiting for it.
                let memory = self.memory.clone();
                let ctx = DmaContext {
                    memory: &memory,
                    bus_master: true,
                };
                for c in &mut self.channels {
                    c.try_dma(&ctx);
                }
            }
            return;
        }
        let i = usize::from(offset - 0x40);
        let v = value.to_le_bytes();
        let m = mask.to_le_bytes();
        for k in 0..4 {
            if let Some(b) = self.extended.get_mut(i + k) {
                *b = (*b & !m[k]) | (v[k] & m[k]);
            }
        }
    }

    fn bar_mappings(&self) -> Vec<BarMapping> {
        self.header.bar_mappings()
    }
}

#[cfg(test)]
mod tests;
