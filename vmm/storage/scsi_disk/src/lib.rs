//! SCSI direct-access block device emulation (a "disk" logical unit) over the [`disk::Disk`]
//! trait. Shared by the VMBus SCSI controller (storvsp) and, later, ATAPI.
//!
//! # Architecture
//! [`ScsiDisk::execute`] takes a CDB and a [`DataBuffer`] (the initiator's data buffer, e.g.
//! guest pages behind an SRB) and returns a [`ScsiResult`]: SAM status, sense data on CHECK
//! CONDITION, and the number of bytes transferred. It is synchronous and takes `&self`, so a
//! controller may run requests for one disk on several threads. Every CDB field is checked
//! (lengths, LBA ranges against the capacity, allocation lengths against the buffer); a bad
//! request becomes ILLEGAL REQUEST sense, a failed host I/O MEDIUM ERROR, a write to a
//! read-only disk DATA PROTECT.
//!
//! LUN addressing is the controller's job; it answers REPORT LUNS with [`report_luns`] and
//! probes of absent LUNs with [`inquiry_no_lun`].
//!
//! # Commands
//! TEST UNIT READY, REQUEST SENSE, INQUIRY (standard; VPD 0x00, 0x80, 0x83, 0xB0, 0xB1,
//! 0xB2), READ CAPACITY(10/16), MODE SENSE(6/10) (caching, control, all pages), MODE
//! SELECT(6/10) (accepted, ignored), READ/WRITE(6/10/12/16) with FUA, VERIFY(10/12/16),
//! SYNCHRONIZE CACHE(10/16), UNMAP, START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL. Anything
//! else (WRITE SAME, ATA PASS-THROUGH, ...) is ILLEGAL REQUEST / INVALID COMMAND OPERATION
//! CODE.
//!
//! # Spec
//! T10 SPC-4 (INQUIRY, VPD pages, MODE SENSE, REPORT LUNS, sense data), SBC-3 (READ/WRITE,
//! READ CAPACITY, UNMAP, block limits and provisioning VPD pages).

use std::sync::Arc;

use disk::Disk;
use disk::DiskErrorKind;

mod inquiry;
mod mode;
pub mod spec;

pub use spec::ScsiStatus;
pub use spec::Sense;

use spec::asc;
use spec::op;
use spec::sense_key;

/// Bytes moved through the bounce buffer per disk call.
const CHUNK: usize = 256 * 1024;
/// Most UNMAP descriptors per command (VPD 0xB0).
pub const MAX_UNMAP_DESCRIPTORS: u32 = 256;

/// The initiator's data buffer could not be accessed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("data buffer inaccessible at offset {offset:#x}")]
pub struct BufferError {
    /// Offset of the failed access.
    pub offset: usize,
}

/// The initiator's data buffer (for storvsp: the guest pages of a GPA-direct packet).
pub trait DataBuffer {
    /// Size of the buffer in bytes.
    fn len(&self) -> usize;
    /// Whether the buffer is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Device-to-initiator: stores `data` at `offset`.
    fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<(), BufferError>;
    /// Initiator-to-device: fills `data` from `offset`.
    fn read_at(&mut self, offset: usize, data: &mut [u8]) -> Result<(), BufferError>;
}

/// A buffer in host memory (tests, fuzzing, bounce buffers).
impl DataBuffer for Vec<u8> {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<(), BufferError> {
        let end = offset
            .checked_add(data.len())
            .ok_or(BufferError { offset })?;
        self.get_mut(offset..end)
            .ok_or(BufferError { offset })?
            .copy_from_slice(data);
        Ok(())
    }
    fn read_at(&mut self, offset: usize, data: &mut [u8]) -> Result<(), BufferError> {
        let end = offset
            .checked_add(data.len())
            .ok_or(BufferError { offset })?;
        data.copy_from_slice(self.get(offset..end).ok_or(BufferError { offset })?);
        Ok(())
    }
}

/// Outcome of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiResult {
    /// SAM status.
    pub status: ScsiStatus,
    /// Sense data when `status` is CHECK CONDITION.
    pub sense: Option<Sense>,
    /// Bytes actually moved to or from the buffer.
    pub transferred: usize,
}

impl ScsiResult {
    /// GOOD with `transferred` bytes.
    pub fn good(transferred: usize) -> Self {
        Self {
            status: ScsiStatus::Good,
            sense: None,
            transferred,
        }
    }

    /// CHECK CONDITION with `sense`.
    pub fn check(sense: Sense) -> Self {
        Self {
            status: ScsiStatus::CheckCondition,
            sense: Some(sense),
            transferred: 0,
        }
    }
}

/// Identity and limits of an emulated disk.
#[derive(Debug, Clone)]
pub struct ScsiDiskConfig {
    /// T10 vendor identification (8 ASCII bytes, space padded).
    pub vendor: [u8; 8],
    /// Product identification (16 bytes).
    pub product: [u8; 16],
    /// Product revision (4 bytes).
    pub revision: [u8; 4],
    /// Largest transfer the controller accepts (VPD 0xB0 maximum transfer length).
    pub max_transfer_bytes: u32,
    /// Report a volatile write cache (WCE=1): the guest then sends SYNCHRONIZE CACHE and FUA.
    pub write_cache: bool,
}

impl Default for ScsiDiskConfig {
    fn default() -> Self {
        Self {
            vendor: *b"Msft    ",
            product: *b"Virtual Disk    ",
            revision: *b"1.0 ",
            max_transfer_bytes: 1 << 20,
            write_cache: true,
        }
    }
}

/// A SCSI disk logical unit.
#[derive(Debug)]
pub struct ScsiDisk {
    disk: Arc<dyn Disk>,
    config: ScsiDiskConfig,
    sector_size: u32,
    sector_count: u64,
    read_only: bool,
    serial: String,
    id: [u8; 16],
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes([
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
        b[at + 7],
    ])
}

/// CDB length implied by the operation code's group (SPC-4 4.2.5.1); `None` for groups
/// without a fixed length.
pub fn cdb_length(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

/// Copies `data` (truncated to `alloc_len` and the buffer) to the initiator.
pub fn data_in(buffer: &mut dyn DataBuffer, data: &[u8], alloc_len: usize) -> ScsiResult {
    let n = data.len().min(alloc_len).min(buffer.len());
    match buffer.write_at(0, &data[..n]) {
        Ok(()) => ScsiResult::good(n),
        Err(_) => ScsiResult::check(Sense::new(
            sense_key::HARDWARE_ERROR,
            asc::INTERNAL_TARGET_FAILURE,
        )),
    }
}

/// Answers REPORT LUNS with `luns` (single-level LUNs, peripheral addressing below 256,
/// flat addressing above).
pub fn report_luns(cdb: &[u8], buffer: &mut dyn DataBuffer, luns: &[u16]) -> ScsiResult {
    if cdb.len() < 12 {
        return ScsiResult::check(Sense::illegal(asc::INVALID_FIELD_IN_CDB));
    }
    let alloc = be32(cdb, 6) as usize;
    if cdb[2] > 2 || alloc < 16 {
        return ScsiResult::check(Sense::illegal(asc::INVALID_FIELD_IN_CDB));
    }
    let mut data = Vec::with_capacity(8 + 8 * luns.len());
    data.extend_from_slice(&((8 * luns.len()) as u32).to_be_bytes());
    data.extend_from_slice(&[0; 4]);
    for &lun in luns {
        let mut entry = [0u8; 8];
        if lun < 256 {
            entry[1] = lun as u8;
        } else {
            entry[0] = 0x40 | ((lun >> 8) as u8 & 0x3f);
            entry[1] = lun as u8;
        }
        data.extend_from_slice(&entry);
    }
    data_in(buffer, &data, alloc)
}

/// Answers a standard INQUIRY to a LUN that does not exist (peripheral qualifier 3,
/// device type 0x1F), as Linux expects for sparse LUNs; other commands to it should fail
/// with the controller's "invalid LUN" status.
pub fn inquiry_no_lun(cdb: &[u8], buffer: &mut dyn DataBuffer) -> ScsiResult {
    if cdb.len() < 6 || cdb[1] & 1 != 0 {
        return ScsiResult::check(Sense::illegal(asc::LOGICAL_UNIT_NOT_SUPPORTED));
    }
    let mut data = [0u8; 36];
    data[0] = 0x7f;
    data[2] = 0x05;
    data[3] = 0x02;
    data[4] = 31;
    data_in(buffer, &data, usize::from(be16(cdb, 3)))
}

impl ScsiDisk {
    /// A disk logical unit over `disk`.
    pub fn new(disk: Arc<dyn Disk>, config: ScsiDiskConfig) -> Self {
        let id = disk.disk_id();
        Self {
            sector_size: disk.sector_size(),
            sector_count: disk.sector_count(),
            read_only: disk.is_read_only(),
            serial: id.serial(),
            id: id.0,
            disk,
            config,
        }
    }

    /// The backing disk.
    pub fn disk(&self) -> &Arc<dyn Disk> {
        &self.disk
    }

    /// Logical block size.
    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    /// Number of logical blocks.
    pub fn sector_count(&self) -> u64 {
        self.sector_count
    }

    fn unmap_supported(&self) -> bool {
        !self.read_only
    }

    /// Executes one command. `cdb` is the CDB as long as the initiator sent it.
    pub fn execute(&self, cdb: &[u8], buffer: &mut dyn DataBuffer) -> ScsiResult {
        let Some(&opcode) = cdb.first() else {
            return ScsiResult::check(Sense::illegal(asc::INVALID_COMMAND_OPERATION_CODE));
        };
        match cdb_length(opcode) {
            Some(n) if cdb.len() >= n => {}
            _ => return ScsiResult::check(Sense::illegal(asc::INVALID_COMMAND_OPERATION_CODE)),
        }
        let result = match opcode {
            op::TEST_UNIT_READY | op::START_STOP_UNIT | op::PREVENT_ALLOW_MEDIUM_REMOVAL => {
                ScsiResult::good(0)
            }
            op::REQUEST_SENSE => {
                let sense = Sense::new(sense_key::NO_SENSE, (0, 0)).to_fixed();
                data_in(buffer, &sense, usize::from(cdb[4]))
            }
            op::INQUIRY => self.inquiry(cdb, buffer),
            op::READ_CAPACITY_10 => self.read_capacity_10(buffer),
            op::SERVICE_ACTION_IN_16 if cdb[1] & 0x1f == spec::SA_READ_CAPACITY_16 => {
                self.read_capacity_16(cdb, buffer)
            }
            op::MODE_SENSE_6 | op::MODE_SENSE_10 => self.mode_sense(cdb, buffer),
            op::MODE_SELECT_6 | op::MODE_SELECT_10 => ScsiResult::good(0),
            op::READ_6 | op::READ_10 | op::READ_12 | op::READ_16 => {
                let (lba, blocks, _) = rw_fields(cdb);
                self.read(lba, blocks, buffer)
            }
            op::WRITE_6 | op::WRITE_10 | op::WRITE_12 | op::WRITE_16 => {
                let (lba, blocks, fua) = rw_fields(cdb);
                self.write(lba, blocks, fua, buffer)
            }
            op::VERIFY_10 | op::VERIFY_12 | op::VERIFY_16 => {
                let (lba, blocks, _) = rw_fields(cdb);
                match self.check_range(lba, blocks) {
                    Ok(()) => ScsiResult::good(0),
                    Err(r) => r,
                }
            }
            op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16 => match self.disk.flush() {
                Ok(()) => ScsiResult::good(0),
                Err(e) => self.disk_error(&e, false),
            },
            op::UNMAP => self.unmap(cdb, buffer),
            _ => ScsiResult::check(Sense::illegal(asc::INVALID_COMMAND_OPERATION_CODE)),
        };
        if result.status != ScsiStatus::Good {
            tracing::trace!(opcode = format_args!("{opcode:#04x}"), ?result.sense, "SCSI command failed");
        }
        result
    }

    fn check_range(&self, lba: u64, blocks: u64) -> Result<(), ScsiResult> {
        if lba
            .checked_add(blocks)
            .is_none_or(|end| end > self.sector_count)
        {
            return Err(ScsiResult::check(Sense::illegal(asc::LBA_OUT_OF_RANGE)));
        }
        Ok(())
    }

    fn disk_error(&self, e: &disk::DiskError, write: bool) -> ScsiResult {
        let sense = match e.kind() {
            DiskErrorKind::ReadOnly => Sense::new(sense_key::DATA_PROTECT, asc::WRITE_PROTECTED),
            DiskErrorKind::OutOfRange => Sense::illegal(asc::LBA_OUT_OF_RANGE),
            DiskErrorKind::InvalidArgument => Sense::illegal(asc::INVALID_FIELD_IN_CDB),
            _ if write => Sense::new(sense_key::MEDIUM_ERROR, asc::WRITE_ERROR),
            _ => Sense::new(sense_key::MEDIUM_ERROR, asc::UNRECOVERED_READ_ERROR),
        };
        tracing::warn!(error = %e, "disk I/O failed");
        ScsiResult::check(sense)
    }

    /// Byte length of `blocks` blocks, if the buffer holds them.
    fn transfer_len(&self, blocks: u64, buffer: &dyn DataBuffer) -> Result<usize, ScsiResult> {
        blocks
            .checked_mul(u64::from(self.sector_size))
            .and_then(|b| usize::try_from(b).ok())
            .filter(|&b| b <= buffer.len())
            .ok_or_else(|| ScsiResult::check(Sense::illegal(asc::INVALID_FIELD_IN_CDB)))
    }

    fn chunk_len(&self) -> usize {
        (CHUNK / self.sector_size as usize).max(1) * self.sector_size as usize
    }

    fn read(&self, lba: u64, blocks: u64, buffer: &mut dyn DataBuffer) -> ScsiResult {
        if let Err(r) = self.check_range(lba, blocks) {
            return r;
        }
        let len = match self.transfer_len(blocks, buffer) {
            Ok(l) => l,
            Err(r) => return r,
        };
        let mut bounce = vec![0u8; len.min(self.chunk_len())];
        let mut done = 0usize;
        while done < len {
            let n = (len - done).min(bounce.len());
            let sector = lba + (done / self.sector_size as usize) as u64;
            if let Err(e) = self.disk.read(sector, &mut bounce[..n]) {
                return self.disk_error(&e, false);
            }
            if buffer.write_at(done, &bounce[..n]).is_err() {
                return ScsiResult::check(Sense::new(
                    sense_key::HARDWARE_ERROR,
                    asc::INTERNAL_TARGET_FAILURE,
                ));
            }
            done += n;
        }
        ScsiResult::good(len)
    }

    fn write(&self, lba: u64, blocks: u64, fua: bool, buffer: &mut dyn DataBuffer) -> ScsiResult {
        if self.read_only {
            return ScsiResult::check(Sense::new(sense_key::DATA_PROTECT, asc::WRITE_PROTECTED));
        }
        if let Err(r) = self.check_range(lba, blocks) {
            return r;
        }
        let len = match self.transfer_len(blocks, buffer) {
            Ok(l) => l,
            Err(r) => return r,
        };
        let mut bounce = vec![0u8; len.min(self.chunk_len())];
        let mut done = 0usize;
        while done < len {
            let n = (len - done).min(bounce.len());
            if buffer.read_at(done, &mut bounce[..n]).is_err() {
                return ScsiResult::check(Sense::new(
                    sense_key::HARDWARE_ERROR,
                    asc::INTERNAL_TARGET_FAILURE,
                ));
            }
            let sector = lba + (done / self.sector_size as usize) as u64;
            if let Err(e) = self.disk.write(sector, &bounce[..n]) {
                return self.disk_error(&e, true);
            }
            done += n;
        }
        if fua && let Err(e) = self.disk.flush() {
            return self.disk_error(&e, true);
        }
        ScsiResult::good(len)
    }

    fn unmap(&self, cdb: &[u8], buffer: &mut dyn DataBuffer) -> ScsiResult {
        if self.read_only {
            return ScsiResult::check(Sense::new(sense_key::DATA_PROTECT, asc::WRITE_PROTECTED));
        }
        let param_len = usize::from(be16(cdb, 7));
        if param_len == 0 {
            return ScsiResult::good(0);
        }
        if param_len < 8 || param_len > buffer.len() {
            return ScsiResult::check(Sense::illegal(asc::PARAMETER_LIST_LENGTH_ERROR));
        }
        let mut params = vec![0u8; param_len.min(8 + 16 * MAX_UNMAP_DESCRIPTORS as usize)];
        if buffer.read_at(0, &mut params).is_err() {
            return ScsiResult::check(Sense::new(
                sense_key::HARDWARE_ERROR,
                asc::INTERNAL_TARGET_FAILURE,
            ));
        }
        let desc_len = usize::from(be16(&params, 2));
        if desc_len % 16 != 0 || 8 + desc_len > params.len() {
            return ScsiResult::check(Sense::illegal(asc::INVALID_FIELD_IN_PARAMETER_LIST));
        }
        let descriptors: Vec<(u64, u64)> = params[8..8 + desc_len]
            .chunks_exact(16)
            .map(|d| (be64(d, 0), u64::from(be32(d, 8))))
            .collect();
        // Check every descriptor before unmapping anything.
        for &(lba, count) in &descriptors {
            if let Err(r) = self.check_range(lba, count) {
                return r;
            }
        }
        for (lba, count) in descriptors {
            if count == 0 {
                continue;
            }
            if let Err(e) = self.disk.unmap(lba, count) {
                return self.disk_error(&e, true);
            }
        }
        ScsiResult::good(0)
    }

    fn read_capacity_10(&self, buffer: &mut dyn DataBuffer) -> ScsiResult {
        let last = self.sector_count.saturating_sub(1).min(0xffff_ffff) as u32;
        let mut data = [0u8; 8];
        data[..4].copy_from_slice(&last.to_be_bytes());
        data[4..].copy_from_slice(&self.sector_size.to_be_bytes());
        data_in(buffer, &data, 8)
    }

    fn read_capacity_16(&self, cdb: &[u8], buffer: &mut dyn DataBuffer) -> ScsiResult {
        let alloc = be32(cdb, 10) as usize;
        let mut data = [0u8; 32];
        data[..8].copy_from_slice(&self.sector_count.saturating_sub(1).to_be_bytes());
        data[8..12].copy_from_slice(&self.sector_size.to_be_bytes());
        let ratio = (self.disk.physical_sector_size() / self.sector_size.max(1)).max(1);
        data[13] = (ratio.trailing_zeros() as u8) & 0x0f;
        if self.unmap_supported() {
            data[14] = 0x80; // LBPME
        }
        data_in(buffer, &data, alloc)
    }
}

/// LBA, block count and FUA of a READ/WRITE/VERIFY CDB (length already checked).
fn rw_fields(cdb: &[u8]) -> (u64, u64, bool) {
    match cdb[0] >> 5 {
        0 => {
            let lba = u64::from(u32::from_be_bytes([0, cdb[1] & 0x1f, cdb[2], cdb[3]]));
            // A 6-byte transfer length of 0 means 256 blocks.
            let blocks = if cdb[4] == 0 { 256 } else { u64::from(cdb[4]) };
            (lba, blocks, false)
        }
        1 | 2 => (
            u64::from(be32(cdb, 2)),
            u64::from(be16(cdb, 7)),
            cdb[1] & 0x08 != 0,
        ),
        5 => (
            u64::from(be32(cdb, 2)),
            u64::from(be32(cdb, 6)),
            cdb[1] & 0x08 != 0,
        ),
        _ => (be64(cdb, 2), u64::from(be32(cdb, 10)), cdb[1] & 0x08 != 0),
    }
}

#[cfg(test)]
mod tests;
