//! VHDX images: fixed, dynamic and differencing, read and write, with log replay.
//!
//! # Architecture
//!
//! [`Vhdx::open`] validates the whole image before serving a sector: the file identifier, both
//! headers (CRC-32C; the valid one with the larger sequence number is current), the region
//! tables, the metadata items (block size, virtual size, sector sizes, parent locator) and
//! every BAT entry (a known state, and for allocated blocks a place inside the file that
//! overlaps no metadata). Malformed images are [`ErrorKind::Corrupt`] errors; every allocation
//! is bounded by the file's size or a format limit.
//!
//! **Log replay.** When the current header names a log, the active sequence is found (see
//! `log.rs`) and replayed: into the file when the image is writable, or into an in-memory
//! overlay when it is read-only, so a read-only open never changes the file (the base of a
//! `memdiff:` disk stays byte-identical).
//!
//! **I/O** is positioned and `&self`. Reads look up the BAT under a read lock, then read the
//! file without locks. Writes into allocated blocks are plain positioned writes; the first
//! write of a session updates the header's write GUIDs; allocating a block appends it at the
//! end of the file, writes and syncs the data, then changes the BAT through a log entry (see
//! `write.rs`). [`Vhdx::flush`] syncs and marks the log empty again, so a cleanly flushed file
//! never needs replay.
//!
//! **Differencing** images read what their BAT and sector bitmaps do not hold from a parent
//! [`Vhdx`], attached with [`Vhdx::set_parent`] (checked against the `parent_linkage` data-write
//! GUID) or found by [`open_path`] through the parent locator.
//!
//! # Spec
//!
//! [MS-VHDX] "VHDX Format Specification" v1.0: header section (§2.2), log (§2.3), BAT (§2.4:
//! chunk ratio, payload and sector-bitmap states), metadata (§2.6), parent locator (§2.6.2.6).

mod create;
mod error;
mod guid;
mod log;
mod meta;
mod parent;
pub mod spec;
mod write;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use image_file::ImageFile;
use parking_lot::Mutex;
use parking_lot::RwLock;

pub use create::CreateParams;
pub use create::create;
pub use create::create_differencing;
pub use error::Error;
pub use error::ErrorKind;
pub use error::Result;
pub use guid::Guid;
pub use parent::open_path;

use meta::Region;
use spec::MIB;

/// Longest parent chain [`open_path`] follows.
pub const MAX_CHAIN_DEPTH: usize = 16;

/// An opened VHDX image.
pub struct Vhdx {
    file: Arc<dyn ImageFile>,
    read_only: bool,
    meta: meta::Metadata,
    bat_region: Region,
    metadata_region: Region,
    log_region: log::LogRegion,
    /// Payload blocks per sector-bitmap block.
    chunk_ratio: u64,
    data_blocks: u64,
    bat: RwLock<Vec<u64>>,
    /// Whether the log was replayed at open.
    replayed: bool,
    writer: Mutex<write::WriterState>,
    session_started: AtomicBool,
    /// Serializes read-modify-write of sector bitmaps.
    bitmap_lock: Mutex<()>,
    parent: Option<Arc<Vhdx>>,
}

impl std::fmt::Debug for Vhdx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vhdx")
            .field("disk_size", &self.meta.disk_size)
            .field("block_size", &self.meta.block_size)
            .field("read_only", &self.read_only)
            .field("parent", &self.parent)
            .finish_non_exhaustive()
    }
}

/// Where a range of guest sectors comes from.
enum Source {
    Zero,
    Parent,
    File(u64),
}

impl Vhdx {
    /// Opens and validates an image, replaying its log if needed (in memory when
    /// `read_only`). A differencing image also needs [`Vhdx::set_parent`].
    pub fn open(file: Arc<dyn ImageFile>, read_only: bool) -> Result<Self> {
        let (mut header, mut slot) = meta::read_headers(&*file)?;
        let file_len = file
            .size()
            .map_err(|e| Error::io("reading the file size", e))?;
        let log_region = log_region(&header, file_len)?;
        let mut file = file;
        let mut replayed = false;
        if !header.log_guid.is_zero() {
            if let Some(replay) = log::find_active(&*file, log_region, header.log_guid, file_len)? {
                tracing::info!(
                    sequence = replay.head_sequence,
                    writes = replay.writes.len(),
                    read_only,
                    "replaying the VHDX log"
                );
                if read_only {
                    file = Arc::new(log::ReplayedFile::new(file, replay)?);
                } else {
                    log::apply(&*file, &replay)?;
                }
                replayed = true;
            }
            if !read_only {
                (header, slot) = write::update_header(&*file, &header, slot, |h| {
                    h.log_guid = Guid::ZERO;
                })?;
            }
        }
        let file_len = file
            .size()
            .map_err(|e| Error::io("reading the file size", e))?;
        let (bat_region, metadata_region) = meta::read_regions(&*file, file_len)?;
        if log_region.length > 0
            && (bat_region.overlaps(log_region.offset, log_region.length)
                || metadata_region.overlaps(log_region.offset, log_region.length))
        {
            return Err(Error::corrupt("the log overlaps a region"));
        }
        let meta = meta::read_metadata(&*file, metadata_region)?;
        let block_size = u64::from(meta.block_size);
        let chunk_ratio = ((1u64 << 23) * u64::from(meta.logical_sector_size)) / block_size;
        let data_blocks = meta.disk_size.div_ceil(block_size);
        let entries = if meta.has_parent {
            data_blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
        } else {
            data_blocks + (data_blocks - 1) / chunk_ratio
        };
        let bat_bytes = entries * 8;
        if bat_bytes > bat_region.length || bat_bytes > spec::MAX_BAT_BYTES {
            return Err(Error::corrupt(format!(
                "BAT of {entries} entries does not fit its {}-byte region",
                bat_region.length
            )));
        }
        // Bounded by the region, which lies inside the file.
        let mut raw = vec![0u8; bat_bytes as usize];
        file.read_at(bat_region.offset, &mut raw)
            .map_err(|e| Error::io("reading the BAT", e))?;
        let bat: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let mut file_end = file_len
            .max(bat_region.end())
            .max(metadata_region.end())
            .max(log_region.offset + log_region.length)
            .next_multiple_of(MIB);
        let vhdx = Self {
            file,
            read_only,
            bat_region,
            metadata_region,
            log_region,
            chunk_ratio,
            data_blocks,
            bat: RwLock::new(bat),
            replayed,
            writer: Mutex::new(write::WriterState::new(header, slot, 0)),
            session_started: AtomicBool::new(false),
            bitmap_lock: Mutex::new(()),
            parent: None,
            meta,
        };
        vhdx.validate_bat(file_len)?;
        file_end = file_end.max(file_len.next_multiple_of(MIB));
        vhdx.writer.lock().file_end = file_end;
        Ok(vhdx)
    }

    fn validate_bat(&self, file_len: u64) -> Result<()> {
        let bat = self.bat.read();
        let block_size = u64::from(self.meta.block_size);
        let reserved = [
            Region {
                offset: 0,
                length: spec::HEADER_SECTION_SIZE,
            },
            Region {
                offset: self.log_region.offset,
                length: self.log_region.length,
            },
            self.bat_region,
            self.metadata_region,
        ];
        for (index, &entry) in bat.iter().enumerate() {
            let index = index as u64;
            let is_bitmap = index % (self.chunk_ratio + 1) == self.chunk_ratio;
            let state = spec::bat_state(entry);
            let offset = spec::bat_offset(entry);
            let length = if is_bitmap {
                if !self.meta.has_parent {
                    continue;
                }
                match state {
                    spec::bitmap::NOT_PRESENT => continue,
                    spec::bitmap::PRESENT => spec::SECTOR_BITMAP_BLOCK_SIZE,
                    _ => {
                        return Err(Error::corrupt(format!(
                            "BAT entry {index}: sector bitmap state {state}"
                        )));
                    }
                }
            } else {
                let block = index - index / (self.chunk_ratio + 1);
                if block >= self.data_blocks {
                    continue;
                }
                match state {
                    spec::payload::NOT_PRESENT
                    | spec::payload::UNDEFINED
                    | spec::payload::ZERO
                    | spec::payload::UNMAPPED
                    | spec::payload::UNMAPPED_QEMU => continue,
                    // Old QEMU versions wrote a partial last block: only the part inside the
                    // virtual disk must be in the file.
                    spec::payload::FULLY_PRESENT => {
                        block_size.min(self.meta.disk_size - block * block_size)
                    }
                    spec::payload::PARTIALLY_PRESENT if self.meta.has_parent => {
                        let chunk = block / self.chunk_ratio;
                        let sb = bat.get(self.bitmap_index(chunk) as usize).copied();
                        if sb.map(spec::bat_state) != Some(spec::bitmap::PRESENT) {
                            return Err(Error::corrupt(format!(
                                "BAT entry {index} is partially present without a sector bitmap"
                            )));
                        }
                        block_size
                    }
                    _ => {
                        return Err(Error::corrupt(format!(
                            "BAT entry {index}: payload state {state}"
                        )));
                    }
                }
            };
            if offset.checked_add(length).is_none_or(|end| end > file_len) {
                return Err(Error::corrupt(format!(
                    "BAT entry {index} points past the end of the file ({offset} + {length} > \
                     {file_len})"
                )));
            }
            if reserved.iter().any(|r| r.overlaps(offset, length)) {
                return Err(Error::corrupt(format!(
                    "BAT entry {index} overlaps the image metadata"
                )));
            }
        }
        Ok(())
    }

    /// Virtual size in bytes.
    pub fn disk_size(&self) -> u64 {
        self.meta.disk_size
    }

    /// Logical sector size (512 or 4096): requests are multiples of it.
    pub fn logical_sector_size(&self) -> u32 {
        self.meta.logical_sector_size
    }

    /// Physical sector size (512 or 4096).
    pub fn physical_sector_size(&self) -> u32 {
        self.meta.physical_sector_size
    }

    /// Payload block size.
    pub fn block_size(&self) -> u32 {
        self.meta.block_size
    }

    /// Whether this is a fixed image (blocks stay allocated).
    pub fn is_fixed(&self) -> bool {
        self.meta.leave_blocks_allocated
    }

    /// Whether this is a differencing image.
    pub fn has_parent(&self) -> bool {
        self.meta.has_parent
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The SCSI page 0x83 identifier from the metadata.
    pub fn page83_id(&self) -> Guid {
        self.meta.page83
    }

    /// The current header's data-write GUID (what a child's `parent_linkage` names).
    pub fn data_write_guid(&self) -> Guid {
        self.writer.lock().header.data_write_guid
    }

    /// Whether a log was replayed when the image was opened.
    pub fn log_was_replayed(&self) -> bool {
        self.replayed
    }

    /// The parent locator's key/value pairs (differencing images).
    pub fn parent_locator(&self) -> &BTreeMap<String, String> {
        &self.meta.parent_locator
    }

    /// Number of payload blocks with data in the file.
    pub fn allocated_blocks(&self) -> u64 {
        let bat = self.bat.read();
        (0..self.data_blocks)
            .filter(|&b| {
                bat.get(self.payload_index(b) as usize)
                    .map(|&e| spec::bat_state(e))
                    .is_some_and(|s| {
                        s == spec::payload::FULLY_PRESENT || s == spec::payload::PARTIALLY_PRESENT
                    })
            })
            .count() as u64
    }

    /// The attached parent.
    pub fn parent(&self) -> Option<&Arc<Vhdx>> {
        self.parent.as_ref()
    }

    /// Attaches the parent of a differencing image, checking the locator's linkage GUID and
    /// the sector size.
    pub fn set_parent(&mut self, parent: Arc<Vhdx>) -> Result<()> {
        if !self.meta.has_parent {
            return Err(Error::new(
                ErrorKind::Parent,
                "only differencing images have a parent",
            ));
        }
        let expected: Vec<Guid> = ["parent_linkage", "parent_linkage2"]
            .iter()
            .filter_map(|k| self.meta.parent_locator.get(*k))
            .filter_map(|v| Guid::parse(v))
            .collect();
        let actual = parent.data_write_guid();
        if !expected.contains(&actual) {
            return Err(Error::new(
                ErrorKind::Parent,
                format!(
                    "parent data-write GUID {actual} does not match the locator's {:?}",
                    self.meta.parent_locator.get("parent_linkage")
                ),
            ));
        }
        if parent.logical_sector_size() != self.logical_sector_size() {
            return Err(Error::new(
                ErrorKind::Parent,
                "parent and child logical sector sizes differ",
            ));
        }
        self.parent = Some(parent);
        Ok(())
    }

    fn payload_index(&self, block: u64) -> u64 {
        block + block / self.chunk_ratio
    }

    fn bitmap_index(&self, chunk: u64) -> u64 {
        chunk * (self.chunk_ratio + 1) + self.chunk_ratio
    }

    fn bat_entry(&self, index: u64) -> u64 {
        self.bat.read().get(index as usize).copied().unwrap_or(0)
    }

    /// Reads `buf.len()` bytes at `offset`; both must be multiples of the logical sector size.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_request(offset, buf.len())?;
        let block_size = u64::from(self.meta.block_size);
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / block_size;
            let in_block = pos % block_size;
            let n = (block_size - in_block).min((buf.len() - done) as u64) as usize;
            self.read_in_block(block, in_block, pos, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn read_in_block(&self, block: u64, in_block: u64, pos: u64, buf: &mut [u8]) -> Result<()> {
        let entry = self.bat_entry(self.payload_index(block));
        let unallocated = if self.meta.has_parent {
            Source::Parent
        } else {
            Source::Zero
        };
        match spec::bat_state(entry) {
            spec::payload::FULLY_PRESENT => {
                self.fill(Source::File(spec::bat_offset(entry) + in_block), pos, buf)
            }
            spec::payload::PARTIALLY_PRESENT => {
                let lss = u64::from(self.meta.logical_sector_size);
                let first = self.chunk_sector(block, in_block);
                let count = buf.len() as u64 / lss;
                let bits = self.read_bitmap(block, first, count)?;
                let mut run = 0u64;
                while run < count {
                    let present = bitmap_bit(&bits, first % 8 + run);
                    let mut end = run + 1;
                    while end < count && bitmap_bit(&bits, first % 8 + end) == present {
                        end += 1;
                    }
                    let source = if present {
                        Source::File(spec::bat_offset(entry) + in_block + run * lss)
                    } else {
                        Source::Parent
                    };
                    let (a, b) = ((run * lss) as usize, (end * lss) as usize);
                    self.fill(source, pos + run * lss, &mut buf[a..b])?;
                    run = end;
                }
                Ok(())
            }
            spec::payload::NOT_PRESENT | spec::payload::UNDEFINED => {
                self.fill(unallocated, pos, buf)
            }
            // Zero and unmapped blocks read as zeros (unmapped contents are unspecified).
            _ => self.fill(Source::Zero, pos, buf),
        }
    }

    /// The sector number within its chunk (the bit index in the sector bitmap block).
    fn chunk_sector(&self, block: u64, in_block: u64) -> u64 {
        let lss = u64::from(self.meta.logical_sector_size);
        let sectors_per_block = u64::from(self.meta.block_size) / lss;
        (block % self.chunk_ratio) * sectors_per_block + in_block / lss
    }

    /// The bitmap bytes holding bits `first..first + count` of `block`'s chunk; bit
    /// `first % 8` of the result is `first`.
    fn read_bitmap(&self, block: u64, first: u64, count: u64) -> Result<Vec<u8>> {
        let sb = self.bat_entry(self.bitmap_index(block / self.chunk_ratio));
        if spec::bat_state(sb) != spec::bitmap::PRESENT {
            return Err(Error::corrupt(
                "partially present block without a sector bitmap",
            ));
        }
        let from = first / 8;
        let to = (first + count).div_ceil(8);
        // At most one block's worth of bits (64 KiB for 256 MiB blocks of 512-byte sectors).
        let mut bits = vec![0u8; (to - from) as usize];
        self.file
            .read_at(spec::bat_offset(sb) + from, &mut bits)
            .map_err(|e| Error::io("reading a sector bitmap", e))?;
        Ok(bits)
    }

    fn fill(&self, source: Source, pos: u64, buf: &mut [u8]) -> Result<()> {
        match source {
            Source::Zero => {
                buf.fill(0);
                Ok(())
            }
            Source::File(at) => self
                .file
                .read_at(at, buf)
                .map_err(|e| Error::io(format!("reading {} bytes at {at}", buf.len()), e)),
            Source::Parent => image_file::read_from_parent(self.parent.as_deref(), pos, buf),
        }
    }

    fn check_request(&self, offset: u64, len: usize) -> Result<()> {
        let lss = u64::from(self.meta.logical_sector_size);
        let len = len as u64;
        if !offset.is_multiple_of(lss) || !len.is_multiple_of(lss) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("request of {len} bytes at {offset} is not aligned to {lss}-byte sectors"),
            ));
        }
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.meta.disk_size)
        {
            return Err(Error::new(
                ErrorKind::OutOfRange,
                format!(
                    "request of {len} bytes at {offset} is past the end of a {}-byte disk",
                    self.meta.disk_size
                ),
            ));
        }
        Ok(())
    }
}

fn log_region(header: &spec::Header, file_len: u64) -> Result<log::LogRegion> {
    if header.log_version.get() != 0 {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("log version {}", header.log_version.get()),
        ));
    }
    let region = log::LogRegion {
        offset: header.log_offset.get(),
        length: u64::from(header.log_length.get()),
    };
    if region.length == 0 {
        return Ok(region);
    }
    if !region.offset.is_multiple_of(MIB)
        || !region.length.is_multiple_of(MIB)
        || region.offset < spec::HEADER_SECTION_SIZE
        || region.length > log::MAX_LOG_LENGTH
        || region.offset + region.length > file_len
    {
        return Err(Error::corrupt(format!(
            "log of {} bytes at {} is misplaced (file is {file_len} bytes)",
            region.length, region.offset
        )));
    }
    Ok(region)
}

/// Bit `i` of a VHDX sector bitmap (least significant bit first).
fn bitmap_bit(bits: &[u8], i: u64) -> bool {
    bits.get((i / 8) as usize)
        .is_some_and(|b| b & (1 << (i % 8)) != 0)
}

#[cfg(test)]
mod tests;
