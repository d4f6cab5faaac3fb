//! One IDE channel: the task file, two drive positions, the data transfer state machine and
//! the channel's bus-master registers.

use std::sync::Arc;

use device_api::LineInterrupt;
use disk::Disk;
use disk::DiskErrorKind;
use guest_mem::GuestMemory;

use crate::ata;
use crate::ata::HardDisk;
use crate::ata::SECTOR;
use crate::ata::XferModes;
use crate::atapi::DataSource;
use crate::atapi::Optical;
use crate::atapi::Outcome;
use crate::dma::BusMaster;
use crate::dma::DmaError;
use crate::dma::PrdWalker;
use crate::protocol::Sense;
use crate::protocol::bm;
use crate::protocol::cmd;
use crate::protocol::control;
use crate::protocol::device;
use crate::protocol::error;
use crate::protocol::reason;
use crate::protocol::reg;
use crate::protocol::status;

/// Sectors moved per disk request during DMA.
const DMA_CHUNK_SECTORS: u64 = 128;
/// ATAPI data moved per step during DMA.
const ATAPI_DMA_CHUNK: usize = 64 * 1024;

/// What the host has access to during a DMA command.
pub(crate) struct DmaContext<'a> {
    pub memory: &'a GuestMemory,
    /// PCI command register bus-master enable.
    pub bus_master: bool,
}

/// The per-device copy of the command block registers (writes go to both copies).
#[derive(Debug, Clone, Copy, Default)]
struct TaskFile {
    features: u8,
    count: u8,
    lba_low: u8,
    lba_mid: u8,
    lba_high: u8,
    device: u8,
    /// Previous contents of features, count, LBA low/mid/high (48-bit commands).
    hob: [u8; 5],
}

impl TaskFile {
    fn current_mut(&mut self, offset: u16) -> Option<&mut u8> {
        match offset {
            reg::ERROR_FEATURES => Some(&mut self.features),
            reg::COUNT => Some(&mut self.count),
            reg::LBA_LOW => Some(&mut self.lba_low),
            reg::LBA_MID => Some(&mut self.lba_mid),
            reg::LBA_HIGH => Some(&mut self.lba_high),
            _ => None,
        }
    }

    fn signature(&mut self, atapi: bool) {
        self.count = 1;
        self.lba_low = 1;
        (self.lba_mid, self.lba_high) = if atapi { (0x14, 0xeb) } else { (0, 0) };
    }
}

#[derive(Debug)]
pub(crate) enum DriveKind {
    Disk(HardDisk),
    Optical(Optical, XferModes),
}

#[derive(Debug)]
enum AfterIn {
    Done,
    AtaRead { lba: u64, left: u64, block: u64 },
    Atapi { source: DataSource, limit: usize },
}

#[derive(Debug)]
enum AfterOut {
    AtaWrite { lba: u64, left: u64, block: u64 },
    AtapiPacket { dma: bool, limit: usize },
}

#[derive(Debug)]
enum DmaJob {
    AtaRead { lba: u64, count: u64 },
    AtaWrite { lba: u64, count: u64 },
    Atapi(DataSource),
}

#[derive(Debug)]
enum Transfer {
    Idle,
    PioIn {
        buf: Vec<u8>,
        pos: usize,
        next: AfterIn,
    },
    PioOut {
        buf: Vec<u8>,
        pos: usize,
        next: AfterOut,
    },
    Dma(DmaJob),
}

#[derive(Debug)]
pub(crate) struct Drive {
    pub kind: DriveKind,
    status: u8,
    error: u8,
    intrq: bool,
    transfer: Transfer,
}

impl Drive {
    pub fn new(kind: DriveKind) -> Self {
        let atapi = matches!(kind, DriveKind::Optical(..));
        Self {
            kind,
            status: if atapi { 0 } else { status::DRDY | status::DSC },
            error: 1,
            intrq: false,
            transfer: Transfer::Idle,
        }
    }

    fn is_atapi(&self) -> bool {
        matches!(self.kind, DriveKind::Optical(..))
    }
}

enum DmaFailure {
    Prd(DmaError),
    Disk(Option<Sense>),
}

/// An IDE channel.
#[derive(Debug)]
pub(crate) struct Channel {
    irq: LineInterrupt,
    regs: [TaskFile; 2],
    pub drives: [Option<Drive>; 2],
    selected: usize,
    control: u8,
    pub bm: BusMaster,
    irq_level: bool,
}

impl Channel {
    pub fn new(irq: LineInterrupt, drives: [Option<Drive>; 2]) -> Self {
        let mut c = Self {
            irq,
            regs: [TaskFile::default(); 2],
            drives,
            selected: 0,
            control: 0,
            bm: BusMaster::default(),
            irq_level: false,
        };
        for d in 0..2 {
            c.reset_drive(d);
        }
        c
    }

    fn reset_drive(&mut self, d: usize) {
        let atapi = self.drives[d].as_ref().is_some_and(Drive::is_atapi);
        self.regs[d].signature(atapi);
        self.regs[d].device = 0;
        if self.drives[d].is_none() {
            // Nothing answers: the cylinder registers float high.
            self.regs[d].lba_mid = 0xff;
            self.regs[d].lba_high = 0xff;
        }
        if let Some(drive) = self.drives[d].as_mut() {
            drive.error = 1;
            drive.status = if atapi { 0 } else { status::DRDY | status::DSC };
            drive.intrq = false;
            drive.transfer = Transfer::Idle;
        }
    }

    /// Platform reset.
    pub fn reset(&mut self) {
        self.control = 0;
        self.selected = 0;
        self.bm = BusMaster::default();
        for d in 0..2 {
            self.reset_drive(d);
        }
        self.update_irq();
    }

    fn update_irq(&mut self) {
        let pending = self.drives[self.selected].as_ref().is_some_and(|d| d.intrq);
        let level = pending && self.control & control::NIEN == 0;
        if level != self.irq_level {
            self.irq_level = level;
            self.irq.set_level(level);
        }
    }

    fn raise(&mut self, d: usize) {
        if let Some(drive) = self.drives[d].as_mut() {
            drive.intrq = true;
            self.bm.status |= bm::STATUS_INTERRUPT;
        }
        self.update_irq();
    }

    fn set_status(&mut self, d: usize, status: u8, error: u8) {
        if let Some(drive) = self.drives[d].as_mut() {
            drive.status = status;
            drive.error = error;
        }
    }

    fn set_transfer(&mut self, d: usize, transfer: Transfer) {
        if let Some(drive) = self.drives[d].as_mut() {
            drive.transfer = transfer;
        }
    }

    fn take_transfer(&mut self, d: usize) -> Transfer {
        self.drives[d].as_mut().map_or(Transfer::Idle, |drive| {
            std::mem::replace(&mut drive.transfer, Transfer::Idle)
        })
    }

    /// Successful completion with an interrupt.
    fn complete(&mut self, d: usize) {
        self.set_transfer(d, Transfer::Idle);
        let error = self.drives[d].as_ref().map_or(0, |x| x.error);
        self.set_status(d, status::DRDY | status::DSC, error);
        self.raise(d);
    }

    fn fail(&mut self, d: usize, err: u8) {
        self.set_transfer(d, Transfer::Idle);
        self.set_status(d, status::DRDY | status::DSC | status::ERR, err);
        self.raise(d);
    }

    fn abort(&mut self, d: usize) {
        self.fail(d, error::ABRT);
    }

    fn atapi_done(&mut self, d: usize) {
        self.regs[d].count = reason::IO | reason::COD;
        self.set_transfer(d, Transfer::Idle);
        self.set_status(d, status::DRDY | status::DSC, 0);
        self.raise(d);
    }

    fn atapi_fail(&mut self, d: usize, sense: Sense) {
        if let Some(Drive {
            kind: DriveKind::Optical(o, _),
            ..
        }) = self.drives[d].as_mut()
        {
            o.sense = sense;
        }
        self.regs[d].count = reason::IO | reason::COD;
        self.set_transfer(d, Transfer::Idle);
        self.set_status(
            d,
            status::DRDY | status::ERR,
            (sense.key << 4) | error::ABRT,
        );
        self.raise(d);
    }

    fn start_pio_in(&mut self, d: usize, buf: Vec<u8>, next: AfterIn) {
        self.set_transfer(d, Transfer::PioIn { buf, pos: 0, next });
        self.set_status(d, status::DRDY | status::DSC | status::DRQ, 0);
        self.raise(d);
    }

    fn start_pio_out(&mut self, d: usize, len: usize, next: AfterOut, interrupt: bool) {
        self.set_transfer(
            d,
            Transfer::PioOut {
                buf: vec![0; len],
                pos: 0,
                next,
            },
        );
        self.set_status(d, status::DRDY | status::DSC | status::DRQ, 0);
        if interrupt {
            self.raise(d);
        }
    }

    fn hard_disk(&self, d: usize) -> Option<&HardDisk> {
        match self.drives[d].as_ref().map(|x| &x.kind) {
            Some(DriveKind::Disk(hd)) => Some(hd),
            _ => None,
        }
    }

    fn hard_disk_mut(&mut self, d: usize) -> Option<&mut HardDisk> {
        match self.drives[d].as_mut().map(|x| &mut x.kind) {
            Some(DriveKind::Disk(hd)) => Some(hd),
            _ => None,
        }
    }

    fn optical(&self, d: usize) -> Option<&Optical> {
        match self.drives[d].as_ref().map(|x| &x.kind) {
            Some(DriveKind::Optical(o, _)) => Some(o),
            _ => None,
        }
    }

    // ---- Register interface ----

    /// Reads a command block register (offset 0-7) with an access of `len` bytes.
    pub fn read_register(&mut self, offset: u16, data: &mut [u8]) {
        if offset == reg::DATA {
            self.read_data(data);
            return;
        }
        let d = self.selected;
        let value = if self.drives.iter().all(Option::is_none) {
            0
        } else {
            let tf = &self.regs[d];
            let hob = self.control & control::HOB != 0;
            match offset {
                reg::ERROR_FEATURES => self.drives[d].as_ref().map_or(0, |x| x.error),
                reg::DEVICE => tf.device,
                reg::STATUS_COMMAND => match self.drives[d].as_mut() {
                    Some(drive) => {
                        drive.intrq = false;
                        let s = drive.status;
                        self.update_irq();
                        s
                    }
                    None => 0,
                },
                o if hob => tf.hob[usize::from(o - 1)],
                reg::COUNT => tf.count,
                reg::LBA_LOW => tf.lba_low,
                reg::LBA_MID => tf.lba_mid,
                _ => tf.lba_high,
            }
        };
        data.fill(value);
    }

    /// Alternate status (does not acknowledge the interrupt).
    pub fn alt_status(&self) -> u8 {
        self.drives[self.selected].as_ref().map_or(0, |d| d.status)
    }

    /// Writes a command block register.
    pub fn write_register(&mut self, offset: u16, data: &[u8], ctx: &DmaContext<'_>) {
        if offset == reg::DATA {
            self.write_data(data, ctx);
            return;
        }
        let Some(&value) = data.first() else {
            return;
        };
        match offset {
            reg::DEVICE => {
                for tf in &mut self.regs {
                    tf.device = value;
                }
                self.selected = usize::from(value & device::DEV != 0);
                self.update_irq();
            }
            reg::STATUS_COMMAND => self.command(value, ctx),
            _ => {
                for tf in &mut self.regs {
                    if let Some(r) = tf.current_mut(offset) {
                        let old = std::mem::replace(r, value);
                        tf.hob[usize::from(offset - 1)] = old;
                    }
                }
                self.control &= !control::HOB;
            }
        }
    }

    /// Writes the device control register.
    pub fn write_control(&mut self, value: u8) {
        let old = self.control;
        self.control = value;
        if value & control::SRST != 0 && old & control::SRST == 0 {
            for drive in self.drives.iter_mut().flatten() {
                drive.transfer = Transfer::Idle;
                drive.status = status::BSY;
                drive.intrq = false;
            }
        } else if value & control::SRST == 0 && old & control::SRST != 0 {
            for d in 0..2 {
                self.reset_drive(d);
            }
            self.selected = 0;
        }
        self.update_irq();
    }

    // ---- PIO data ----

    fn read_data(&mut self, data: &mut [u8]) {
        let d = self.selected;
        let Some(drive) = self.drives[d].as_mut() else {
            data.fill(0xff);
            return;
        };
        let Transfer::PioIn { buf, pos, .. } = &mut drive.transfer else {
            data.fill(0xff);
            return;
        };
        let n = data.len().min(buf.len() - *pos);
        data[..n].copy_from_slice(&buf[*pos..*pos + n]);
        data[n..].fill(0);
        *pos += n;
        if *pos == buf.len() {
            self.pio_in_done(d);
        }
    }

    fn write_data(&mut self, data: &[u8], ctx: &DmaContext<'_>) {
        let d = self.selected;
        let Some(drive) = self.drives[d].as_mut() else {
            return;
        };
        let Transfer::PioOut { buf, pos, .. } = &mut drive.transfer else {
            return;
        };
        let n = data.len().min(buf.len() - *pos);
        buf[*pos..*pos + n].copy_from_slice(&data[..n]);
        *pos += n;
        if *pos == buf.len() {
            self.pio_out_done(d, ctx);
        }
    }

    fn pio_in_done(&mut self, d: usize) {
        let Transfer::PioIn { next, .. } = self.take_transfer(d) else {
            return;
        };
        match next {
            AfterIn::Done => self.set_status(d, status::DRDY | status::DSC, 0),
            AfterIn::AtaRead { lba, left, block } => self.ata_read_block(d, lba, left, block),
            AfterIn::Atapi { source, limit } => {
                if source.remaining() > 0 {
                    self.atapi_chunk(d, source, limit);
                } else {
                    self.atapi_done(d);
                }
            }
        }
    }

    fn pio_out_done(&mut self, d: usize, ctx: &DmaContext<'_>) {
        let Transfer::PioOut { buf, next, .. } = self.take_transfer(d) else {
            return;
        };
        match next {
            AfterOut::AtaWrite { lba, left, block } => {
                let Some(hd) = self.hard_disk(d) else {
                    return;
                };
                if let Err(e) = hd.disk.write(lba, &buf) {
                    tracing::debug!(error = %e, lba, "ide: write failed");
                    self.fail(d, error::UNC);
                    return;
                }
                let written = buf.len() as u64 / SECTOR;
                let left = left - written;
                if left == 0 {
                    self.complete(d);
                } else {
                    let n = left.min(block);
                    let next = AfterOut::AtaWrite {
                        lba: lba + written,
                        left,
                        block,
                    };
                    self.start_pio_out(d, (n * SECTOR) as usize, next, true);
                }
            }
            AfterOut::AtapiPacket { dma, limit } => {
                let mut cdb = [0u8; 12];
                cdb.copy_from_slice(&buf[..12]);
                self.atapi_execute(d, &cdb, dma, limit, ctx);
            }
        }
    }

    // ---- ATA commands ----

    /// LBA and sector count of the command in the task file, checked against the disk.
    fn address(&self, d: usize, ext: bool) -> Result<(u64, u64), u8> {
        let tf = &self.regs[d];
        let hd = self.hard_disk(d).ok_or(error::ABRT)?;
        let (lba, count) = if ext {
            let lba = u64::from_le_bytes([
                tf.lba_low,
                tf.lba_mid,
                tf.lba_high,
                tf.hob[2],
                tf.hob[3],
                tf.hob[4],
                0,
                0,
            ]);
            let count = u64::from(u16::from_le_bytes([tf.count, tf.hob[1]]));
            (lba, if count == 0 { 0x1_0000 } else { count })
        } else {
            let count = if tf.count == 0 {
                256
            } else {
                u64::from(tf.count)
            };
            let lba = if tf.device & device::LBA != 0 {
                u64::from(tf.device & 0x0f) << 24
                    | u64::from(tf.lba_high) << 16
                    | u64::from(tf.lba_mid) << 8
                    | u64::from(tf.lba_low)
            } else {
                let (_, heads, spt) = hd.current_chs();
                let cyl = u64::from(u16::from_le_bytes([tf.lba_mid, tf.lba_high]));
                let head = u64::from(tf.device & 0x0f);
                let sector = u64::from(tf.lba_low);
                if sector == 0 || sector > spt || head >= heads {
                    return Err(error::IDNF | error::ABRT);
                }
                (cyl * heads + head) * spt + sector - 1
            };
            (lba, count)
        };
        if lba.checked_add(count).is_none_or(|end| end > hd.sectors) {
            return Err(error::IDNF | error::ABRT);
        }
        Ok((lba, count))
    }

    fn ata_read_block(&mut self, d: usize, lba: u64, left: u64, block: u64) {
        let n = left.min(block);
        let Some(hd) = self.hard_disk(d) else {
            return;
        };
        let mut buf = vec![0u8; (n * SECTOR) as usize];
        if let Err(e) = hd.disk.read(lba, &mut buf) {
            tracing::debug!(error = %e, lba, "ide: read failed");
            self.fail(d, error::UNC);
            return;
        }
        let next = if left > n {
            AfterIn::AtaRead {
                lba: lba + n,
                left: left - n,
                block,
            }
        } else {
            AfterIn::Done
        };
        self.start_pio_in(d, buf, next);
    }

    fn command(&mut self, command: u8, ctx: &DmaContext<'_>) {
        let d = self.selected;
        let Some(drive) = self.drives[d].as_mut() else {
            return;
        };
        if drive.status & status::BSY != 0 {
            return;
        }
        drive.transfer = Transfer::Idle;
        drive.intrq = false;
        let atapi = drive.is_atapi();
        self.update_irq();
        if atapi {
            self.optical_command(d, command);
        } else {
            self.disk_command(d, command, ctx);
        }
    }

    fn disk_command(&mut self, d: usize, command: u8, ctx: &DmaContext<'_>) {
        let tf = self.regs[d];
        match command {
            cmd::IDENTIFY => {
                let Some(hd) = self.hard_disk(d) else { return };
                let data = ata::identify_bytes(&hd.identify());
                self.start_pio_in(d, data, AfterIn::Done);
            }
            cmd::READ_SECTORS
            | cmd::READ_SECTORS_NORETRY
            | cmd::READ_SECTORS_EXT
            | cmd::READ_MULTIPLE
            | cmd::READ_MULTIPLE_EXT => {
                let ext = matches!(command, cmd::READ_SECTORS_EXT | cmd::READ_MULTIPLE_EXT);
                let multiple = matches!(command, cmd::READ_MULTIPLE | cmd::READ_MULTIPLE_EXT);
                let Some(block) = self.block_size(d, multiple) else {
                    return self.abort(d);
                };
                match self.address(d, ext) {
                    Ok((lba, count)) => self.ata_read_block(d, lba, count, block),
                    Err(e) => self.fail(d, e),
                }
            }
            cmd::WRITE_SECTORS
            | cmd::WRITE_SECTORS_NORETRY
            | cmd::WRITE_SECTORS_EXT
            | cmd::WRITE_MULTIPLE
            | cmd::WRITE_MULTIPLE_EXT
            | cmd::WRITE_MULTIPLE_FUA_EXT => {
                let ext = matches!(
                    command,
                    cmd::WRITE_SECTORS_EXT | cmd::WRITE_MULTIPLE_EXT | cmd::WRITE_MULTIPLE_FUA_EXT
                );
                let multiple = matches!(
                    command,
                    cmd::WRITE_MULTIPLE | cmd::WRITE_MULTIPLE_EXT | cmd::WRITE_MULTIPLE_FUA_EXT
                );
                let Some(block) = self.block_size(d, multiple) else {
                    return self.abort(d);
                };
                match self.address(d, ext) {
                    Ok((lba, count)) => {
                        let n = count.min(block);
                        let next = AfterOut::AtaWrite {
                            lba,
                            left: count,
                            block,
                        };
                        self.start_pio_out(d, (n * SECTOR) as usize, next, false);
                    }
                    Err(e) => self.fail(d, e),
                }
            }
            cmd::READ_DMA
            | cmd::READ_DMA_NORETRY
            | cmd::READ_DMA_EXT
            | cmd::WRITE_DMA
            | cmd::WRITE_DMA_NORETRY
            | cmd::WRITE_DMA_EXT
            | cmd::WRITE_DMA_FUA_EXT => {
                let ext = matches!(
                    command,
                    cmd::READ_DMA_EXT | cmd::WRITE_DMA_EXT | cmd::WRITE_DMA_FUA_EXT
                );
                let read = matches!(
                    command,
                    cmd::READ_DMA | cmd::READ_DMA_NORETRY | cmd::READ_DMA_EXT
                );
                match self.address(d, ext) {
                    Ok((lba, count)) => {
                        let job = if read {
                            DmaJob::AtaRead { lba, count }
                        } else {
                            DmaJob::AtaWrite { lba, count }
                        };
                        self.set_transfer(d, Transfer::Dma(job));
                        self.set_status(d, status::DRDY | status::DSC | status::DRQ, 0);
                        self.try_dma(ctx);
                    }
                    Err(e) => self.fail(d, e),
                }
            }
            cmd::READ_VERIFY | cmd::READ_VERIFY_NORETRY | cmd::READ_VERIFY_EXT => {
                match self.address(d, command == cmd::READ_VERIFY_EXT) {
                    Ok(_) => self.complete(d),
                    Err(e) => self.fail(d, e),
                }
            }
            cmd::FLUSH_CACHE | cmd::FLUSH_CACHE_EXT => {
                let Some(hd) = self.hard_disk(d) else { return };
                match hd.disk.flush() {
                    Ok(()) => self.complete(d),
                    Err(e) => {
                        tracing::warn!(error = %e, "ide: flush failed");
                        self.abort(d);
                    }
                }
            }
            cmd::SET_FEATURES => {
                let Some(hd) = self.hard_disk_mut(d) else {
                    return;
                };
                let ok = match tf.features {
                    0x03 => hd.modes.set(tf.count),
                    0x02 => {
                        hd.write_cache = true;
                        true
                    }
                    0x82 => {
                        hd.write_cache = false;
                        true
                    }
                    // Read look-ahead, reverting to defaults, and their opposites.
                    0x55 | 0xaa | 0x66 | 0xcc => true,
                    _ => false,
                };
                if ok { self.complete(d) } else { self.abort(d) }
            }
            cmd::SET_MULTIPLE => {
                let Some(hd) = self.hard_disk_mut(d) else {
                    return;
                };
                let n = u16::from(tf.count);
                if n == 0 || (n.is_power_of_two() && n <= ata::MAX_MULTIPLE) {
                    hd.multiple = n;
                    self.complete(d);
                } else {
                    self.abort(d);
                }
            }
            cmd::INITIALIZE_PARAMETERS => {
                let Some(hd) = self.hard_disk_mut(d) else {
                    return;
                };
                if tf.count == 0 {
                    return self.abort(d);
                }
                hd.heads = (tf.device & 0x0f) + 1;
                hd.sectors_per_track = tf.count;
                self.complete(d);
            }
            cmd::RECALIBRATE..=0x1f
            | cmd::SEEK
            | cmd::STANDBY_IMMEDIATE
            | cmd::IDLE_IMMEDIATE
            | cmd::STANDBY
            | cmd::IDLE
            | cmd::SLEEP => self.complete(d),
            cmd::CHECK_POWER_MODE => {
                self.regs[d].count = 0xff;
                self.complete(d);
            }
            cmd::EXECUTE_DIAGNOSTIC => self.diagnostic(),
            cmd::READ_NATIVE_MAX | cmd::READ_NATIVE_MAX_EXT => {
                let Some(hd) = self.hard_disk(d) else { return };
                let max = hd.sectors.saturating_sub(1);
                let tf = &mut self.regs[d];
                tf.lba_low = max as u8;
                tf.lba_mid = (max >> 8) as u8;
                tf.lba_high = (max >> 16) as u8;
                if command == cmd::READ_NATIVE_MAX_EXT {
                    tf.hob[2] = (max >> 24) as u8;
                    tf.hob[3] = (max >> 32) as u8;
                    tf.hob[4] = (max >> 40) as u8;
                } else {
                    tf.device = (tf.device & 0xf0) | ((max.min(0x0fff_ffff) >> 24) as u8 & 0x0f);
                }
                self.complete(d);
            }
            _ => {
                tracing::debug!(command, "ide: unsupported ATA command");
                self.abort(d);
            }
        }
    }

    fn block_size(&self, d: usize, multiple: bool) -> Option<u64> {
        let hd = self.hard_disk(d)?;
        match (multiple, hd.multiple) {
            (false, _) => Some(1),
            (true, 0) => None,
            (true, n) => Some(u64::from(n)),
        }
    }

    fn diagnostic(&mut self) {
        for i in 0..2 {
            self.reset_drive(i);
        }
        self.selected = 0;
        if self.drives[0].is_some() {
            self.raise(0);
        } else {
            self.update_irq();
        }
    }

    // ---- ATAPI ----

    fn optical_command(&mut self, d: usize, command: u8) {
        let tf = self.regs[d];
        match command {
            cmd::PACKET => {
                let dma = tf.features & 0x01 != 0;
                let mut limit = usize::from(u16::from_le_bytes([tf.lba_mid, tf.lba_high]));
                if limit == 0 || limit == 0xffff {
                    limit = 0xfffe;
                }
                limit = (limit & !1).max(2);
                self.regs[d].count = reason::COD;
                self.set_transfer(
                    d,
                    Transfer::PioOut {
                        buf: vec![0; 12],
                        pos: 0,
                        next: AfterOut::AtapiPacket { dma, limit },
                    },
                );
                self.set_status(d, status::DRDY | status::DRQ, 0);
            }
            cmd::IDENTIFY_PACKET => {
                let Some(Drive {
                    kind: DriveKind::Optical(o, modes),
                    ..
                }) = self.drives[d].as_ref()
                else {
                    return;
                };
                let data = ata::identify_bytes(&ata::identify_packet(o.serial(), modes));
                self.start_pio_in(d, data, AfterIn::Done);
            }
            cmd::DEVICE_RESET => {
                self.reset_drive(d);
                self.update_irq();
            }
            cmd::SET_FEATURES => {
                let ok = match self.drives[d].as_mut().map(|x| &mut x.kind) {
                    Some(DriveKind::Optical(_, modes)) if tf.features == 0x03 => {
                        modes.set(tf.count)
                    }
                    _ => true,
                };
                if ok { self.complete(d) } else { self.abort(d) }
            }
            cmd::EXECUTE_DIAGNOSTIC => self.diagnostic(),
            cmd::CHECK_POWER_MODE => {
                self.regs[d].count = 0xff;
                self.complete(d);
            }
            cmd::STANDBY_IMMEDIATE
            | cmd::IDLE_IMMEDIATE
            | cmd::STANDBY
            | cmd::IDLE
            | cmd::SLEEP => self.complete(d),
            _ => {
                // ATA commands on an ATAPI device abort and leave the packet signature, which
                // is how hosts tell the device type after IDENTIFY DEVICE.
                self.regs[d].signature(true);
                self.abort(d);
            }
        }
    }

    fn atapi_execute(
        &mut self,
        d: usize,
        cdb: &[u8; 12],
        dma: bool,
        limit: usize,
        ctx: &DmaContext<'_>,
    ) {
        let Some(Drive {
            kind: DriveKind::Optical(o, _),
            ..
        }) = self.drives[d].as_mut()
        else {
            return;
        };
        match o.execute(cdb) {
            Outcome::Done => self.atapi_done(d),
            Outcome::Error(sense) => self.atapi_fail(d, sense),
            Outcome::DataIn(source) if dma => {
                self.regs[d].count = reason::IO;
                self.set_transfer(d, Transfer::Dma(DmaJob::Atapi(source)));
                self.set_status(d, status::DRDY | status::DRQ, 0);
                // DMA runs now if the bus master is started, else when it is.
                self.try_dma(ctx);
            }
            Outcome::DataIn(source) => self.atapi_chunk(d, source, limit),
        }
    }

    fn atapi_chunk(&mut self, d: usize, mut source: DataSource, limit: usize) {
        let Some(o) = self.optical(d) else { return };
        let n = (source.remaining().min(limit as u64)) as usize;
        match source.take(o, n) {
            Ok(chunk) => {
                let [lo, hi] = (chunk.len() as u16).to_le_bytes();
                let tf = &mut self.regs[d];
                tf.lba_mid = lo;
                tf.lba_high = hi;
                tf.count = reason::IO;
                self.set_transfer(
                    d,
                    Transfer::PioIn {
                        buf: chunk,
                        pos: 0,
                        next: AfterIn::Atapi { source, limit },
                    },
                );
                self.set_status(d, status::DRDY | status::DSC | status::DRQ, 0);
                self.raise(d);
            }
            Err(sense) => self.atapi_fail(d, sense),
        }
    }

    // ---- Bus master ----

    /// Reads bus-master register byte `offset` (0-7).
    pub fn bm_read(&self, offset: u16) -> u8 {
        match offset {
            bm::COMMAND => self.bm.command,
            bm::STATUS => self.bm.status,
            4..=7 => self.bm.prd_table.to_le_bytes()[usize::from(offset - 4)],
            _ => 0,
        }
    }

    /// Writes bus-master register byte `offset` (0-7).
    pub fn bm_write(&mut self, offset: u16, value: u8, ctx: &DmaContext<'_>) {
        match offset {
            bm::COMMAND => {
                let was = self.bm.started();
                self.bm.command = value & (bm::CMD_START | bm::CMD_TO_MEMORY);
                if self.bm.started() && !was {
                    self.bm.status |= bm::STATUS_ACTIVE;
                    self.try_dma(ctx);
                } else if !self.bm.started() {
                    self.bm.status &= !bm::STATUS_ACTIVE;
                }
            }
            bm::STATUS => {
                let clear = value & (bm::STATUS_ERROR | bm::STATUS_INTERRUPT);
                self.bm.status =
                    (self.bm.status & !clear & !bm::STATUS_CAPABLE) | (value & bm::STATUS_CAPABLE);
            }
            4..=7 => {
                let mut b = self.bm.prd_table.to_le_bytes();
                b[usize::from(offset - 4)] = value;
                self.bm.prd_table = u32::from_le_bytes(b) & !3;
            }
            _ => {}
        }
    }

    /// Runs a pending DMA command if the bus master is started and allowed to.
    pub fn try_dma(&mut self, ctx: &DmaContext<'_>) {
        let d = self.selected;
        let pending = self.drives[d]
            .as_ref()
            .is_some_and(|x| matches!(x.transfer, Transfer::Dma(_)));
        if !pending || !self.bm.started() || !ctx.bus_master {
            return;
        }
        let Transfer::Dma(job) = self.take_transfer(d) else {
            return;
        };
        let atapi = matches!(job, DmaJob::Atapi(_));
        let result = self.run_dma(d, job, ctx.memory);
        self.bm.status &= !bm::STATUS_ACTIVE;
        match result {
            Ok(()) if atapi => self.atapi_done(d),
            Ok(()) => self.complete(d),
            Err(DmaFailure::Prd(e)) => {
                tracing::debug!(?e, "ide: DMA stopped");
                self.bm.status |= bm::STATUS_ERROR;
                if atapi {
                    self.atapi_fail(d, Sense::new(0x0b, 0x00, 0x00));
                } else {
                    self.abort(d);
                }
            }
            Err(DmaFailure::Disk(sense)) => match sense {
                Some(s) => self.atapi_fail(d, s),
                None => self.fail(d, error::UNC),
            },
        }
    }

    fn run_dma(&self, d: usize, job: DmaJob, memory: &GuestMemory) -> Result<(), DmaFailure> {
        let mut walker = PrdWalker::new(memory, self.bm.prd_table);
        let kind = &self.drives[d].as_ref().ok_or(DmaFailure::Disk(None))?.kind;
        match (job, kind) {
            (DmaJob::AtaRead { lba, count }, DriveKind::Disk(hd)) => {
                chunked(lba, count, |at, n| {
                    let mut buf = vec![0u8; (n * SECTOR) as usize];
                    read_disk(&hd.disk, at, &mut buf)?;
                    walker.scatter(&buf).map_err(DmaFailure::Prd)
                })
            }
            (DmaJob::AtaWrite { lba, count }, DriveKind::Disk(hd)) => {
                chunked(lba, count, |at, n| {
                    let mut buf = vec![0u8; (n * SECTOR) as usize];
                    walker.gather(&mut buf).map_err(DmaFailure::Prd)?;
                    hd.disk.write(at, &buf).map_err(|e| {
                        tracing::debug!(error = %e, "ide: DMA write failed");
                        DmaFailure::Disk(None)
                    })
                })
            }
            (DmaJob::Atapi(mut source), DriveKind::Optical(o, _)) => {
                while source.remaining() > 0 {
                    let chunk = source
                        .take(o, ATAPI_DMA_CHUNK)
                        .map_err(|s| DmaFailure::Disk(Some(s)))?;
                    walker.scatter(&chunk).map_err(DmaFailure::Prd)?;
                }
                Ok(())
            }
            _ => Err(DmaFailure::Disk(None)),
        }
    }
}

fn read_disk(disk: &Arc<dyn Disk>, lba: u64, buf: &mut [u8]) -> Result<(), DmaFailure> {
    disk.read(lba, buf).map_err(|e| {
        if e.kind() != DiskErrorKind::OutOfRange {
            tracing::debug!(error = %e, lba, "ide: DMA read failed");
        }
        DmaFailure::Disk(None)
    })
}

/// Calls `f(lba, sectors)` for consecutive chunks of at most [`DMA_CHUNK_SECTORS`].
fn chunked(
    mut lba: u64,
    mut count: u64,
    mut f: impl FnMut(u64, u64) -> Result<(), DmaFailure>,
) -> Result<(), DmaFailure> {
    while count > 0 {
        let n = count.min(DMA_CHUNK_SECTORS);
        f(lba, n)?;
        lba += n;
        count -= n;
    }
    Ok(())
}
