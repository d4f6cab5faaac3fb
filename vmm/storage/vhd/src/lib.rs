//! VHD ("vhd1", Virtual PC / Hyper-V Gen1) images: fixed, dynamic and differencing, read and
//! write.
//!
//! # Architecture
//!
//! [`Vhd`] is an opened image over any [`ImageFile`]. Opening validates everything the image
//! claims before a single guest sector is served: the footer (cookie, checksum, version, type,
//! size), the dynamic header (cookie, checksum, block size, BAT placement) and every BAT entry
//! (each allocated block lies inside the file, after the metadata and before the footer). A
//! malformed file is an [`ErrorKind::Corrupt`] error; allocations are bounded by the file's
//! own size (the BAT must fit in it).
//!
//! I/O is positioned and `&self`: reads take the BAT's read lock only to look up an entry, then
//! read the file without locks. Writes into allocated blocks are plain positioned writes;
//! allocating a block (appending it where the footer was, then moving the footer to the new
//! end) and updating a sector bitmap are serialized by one mutex each. See the
//! `docs/src/disks.md` book page for the crash-ordering argument.
//!
//! Differencing images read the sectors their bitmaps do not mark from the parent, a [`Vhd`]
//! attached with [`Vhd::set_parent`] (checked against the parent's unique id), or resolved from
//! the parent locators by [`open_path`].
//!
//! # Spec
//!
//! Microsoft "Virtual Hard Disk Image Format Specification" 1.0 (footer, dynamic header, BAT,
//! sector bitmaps, parent locators, CHS appendix). Compatibility facts not in that document:
//! readers such as QEMU take the virtual size from the CHS geometry when the creator
//! application is `vpc ` or `qemu`, and from `current_size` otherwise; agar does the same, and
//! writes `win ` (Hyper-V's marker for "size is `current_size`") in the images it creates.

mod create;
mod error;
mod parent;
pub mod spec;

use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering;

use image_file::ImageFile;
use parking_lot::Mutex;
use parking_lot::RwLock;
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

pub use create::CreateParams;
pub use create::create;
pub use create::create_differencing;
pub use error::Error;
pub use error::ErrorKind;
pub use error::Result;
pub use parent::open_path;

use spec::SECTOR_SIZE;

/// The VHD disk type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// Raw data followed by a footer.
    Fixed,
    /// Sparse blocks located by a BAT.
    Dynamic,
    /// Sparse blocks over a parent image.
    Differencing,
}

/// Longest parent chain [`open_path`] follows.
pub const MAX_CHAIN_DEPTH: usize = 16;

/// Sector-bitmap states cached per block.
const BITMAP_UNKNOWN: u8 = 0;
const BITMAP_FULL: u8 = 1;
const BITMAP_PARTIAL: u8 = 2;

/// An opened VHD image.
pub struct Vhd {
    file: Arc<dyn ImageFile>,
    read_only: bool,
    footer: spec::Footer,
    disk_type: DiskType,
    size: u64,
    sparse: Option<Sparse>,
    parent: Option<Arc<Vhd>>,
}

impl std::fmt::Debug for Vhd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vhd")
            .field("disk_type", &self.disk_type)
            .field("size", &self.size)
            .field("read_only", &self.read_only)
            .field("parent", &self.parent)
            .finish_non_exhaustive()
    }
}

/// The dynamic/differencing part of an image.
struct Sparse {
    header: spec::DynamicHeader,
    /// The validated footer, rewritten at the new end of the file on every allocation.
    footer: [u8; 512],
    block_size: u64,
    /// Bytes of sector bitmap in front of each block (a whole number of sectors).
    bitmap_size: u64,
    table_offset: u64,
    bat: RwLock<Vec<u32>>,
    /// One of `BITMAP_*` per BAT entry.
    bitmap_state: Vec<AtomicU8>,
    /// Where the footer lives; the next block is allocated there.
    footer_offset: Mutex<u64>,
    /// Serializes read-modify-write of sector bitmaps.
    bitmap_lock: Mutex<()>,
}

/// Where a range of guest sectors comes from.
enum Source {
    /// Zeros (a dynamic disk's unallocated sectors).
    Zero,
    /// The parent image.
    Parent,
    /// This file, at a byte offset.
    File(u64),
}

impl Vhd {
    /// Opens and validates an image. A differencing image also needs [`Vhd::set_parent`]
    /// before it can serve sectors it does not hold.
    pub fn open(file: Arc<dyn ImageFile>, read_only: bool) -> Result<Self> {
        let file_len = file
            .size()
            .map_err(|e| Error::io("reading the file size", e))?;
        if file_len < SECTOR_SIZE {
            return Err(Error::corrupt(format!(
                "file is {file_len} bytes, too small for a footer"
            )));
        }
        let (footer, footer_offset) = read_footer(&*file, file_len)?;
        let disk_type = match footer.disk_type.get() {
            spec::disk_type::FIXED => DiskType::Fixed,
            spec::disk_type::DYNAMIC => DiskType::Dynamic,
            spec::disk_type::DIFFERENCING => DiskType::Differencing,
            other => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("disk type {other}"),
                ));
            }
        };
        let size = virtual_size(&footer)?;
        let sparse = match disk_type {
            DiskType::Fixed => {
                if size > footer_offset {
                    return Err(Error::corrupt(format!(
                        "fixed disk of {size} bytes in a file of {file_len} bytes"
                    )));
                }
                None
            }
            DiskType::Dynamic | DiskType::Differencing => Some(Sparse::open(
                &*file,
                &footer,
                size,
                file_len,
                footer_offset,
            )?),
        };
        Ok(Self {
            file,
            read_only,
            footer,
            disk_type,
            size,
            sparse,
            parent: None,
        })
    }

    /// Virtual size in bytes.
    pub fn disk_size(&self) -> u64 {
        self.size
    }

    /// The disk type.
    pub fn disk_type(&self) -> DiskType {
        self.disk_type
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The footer's unique id.
    pub fn unique_id(&self) -> [u8; 16] {
        self.footer.unique_id
    }

    /// The footer (as read at open).
    pub fn footer(&self) -> &spec::Footer {
        &self.footer
    }

    /// Block size of dynamic and differencing images.
    pub fn block_size(&self) -> Option<u64> {
        self.sparse.as_ref().map(|s| s.block_size)
    }

    /// Number of allocated blocks (dynamic and differencing images).
    pub fn allocated_blocks(&self) -> Option<u64> {
        self.sparse.as_ref().map(|s| {
            s.bat
                .read()
                .iter()
                .filter(|&&e| e != spec::BAT_UNUSED)
                .count() as u64
        })
    }

    /// The dynamic header of dynamic and differencing images.
    pub fn dynamic_header(&self) -> Option<&spec::DynamicHeader> {
        self.sparse.as_ref().map(|s| &s.header)
    }

    /// The attached parent.
    pub fn parent(&self) -> Option<&Arc<Vhd>> {
        self.parent.as_ref()
    }

    /// Attaches the parent of a differencing image, checking its unique id.
    pub fn set_parent(&mut self, parent: Arc<Vhd>) -> Result<()> {
        let Some(sparse) = self
            .sparse
            .as_ref()
            .filter(|_| self.disk_type == DiskType::Differencing)
        else {
            return Err(Error::new(
                ErrorKind::Parent,
                "only differencing images have a parent",
            ));
        };
        if parent.unique_id() != sparse.header.parent_unique_id {
            return Err(Error::new(
                ErrorKind::Parent,
                format!(
                    "parent unique id {} does not match the expected {}",
                    hex(&parent.unique_id()),
                    hex(&sparse.header.parent_unique_id)
                ),
            ));
        }
        self.parent = Some(parent);
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset`; both must be multiples of 512.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_request(offset, buf.len())?;
        let Some(sparse) = &self.sparse else {
            return self
                .file
                .read_at(offset, buf)
                .map_err(|e| Error::io(format!("reading {} bytes at {offset}", buf.len()), e));
        };
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / sparse.block_size;
            let in_block = pos % sparse.block_size;
            let n = (sparse.block_size - in_block).min((buf.len() - done) as u64) as usize;
            let chunk = &mut buf[done..done + n];
            self.read_in_block(sparse, block, in_block, pos, chunk)?;
            done += n;
        }
        Ok(())
    }

    fn read_in_block(
        &self,
        sparse: &Sparse,
        block: u64,
        in_block: u64,
        pos: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let Some(block_start) = sparse.block_start(block) else {
            return self.fill(Source::unallocated(self.disk_type), pos, buf);
        };
        let data = block_start + sparse.bitmap_size + in_block;
        if sparse.bitmap_full(&*self.file, block, block_start)? {
            return self.fill(Source::File(data), pos, buf);
        }
        // A partially-present block: split the request into runs of sectors that are (or are
        // not) marked in the bitmap.
        let first = in_block / SECTOR_SIZE;
        let count = buf.len() as u64 / SECTOR_SIZE;
        let bits = sparse.read_bitmap_range(&*self.file, block_start, first, count)?;
        let mut run_start = 0u64;
        while run_start < count {
            let present = bit(&bits, first % 8 + run_start);
            let mut run_end = run_start + 1;
            while run_end < count && bit(&bits, first % 8 + run_end) == present {
                run_end += 1;
            }
            let (a, b) = (
                (run_start * SECTOR_SIZE) as usize,
                (run_end * SECTOR_SIZE) as usize,
            );
            let source = if present {
                Source::File(data + run_start * SECTOR_SIZE)
            } else {
                Source::unallocated(self.disk_type)
            };
            self.fill(source, pos + run_start * SECTOR_SIZE, &mut buf[a..b])?;
            run_start = run_end;
        }
        Ok(())
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

    /// Writes `buf` at `offset`; both must be multiples of 512.
    pub fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                "write to a read-only image",
            ));
        }
        self.check_request(offset, buf.len())?;
        let Some(sparse) = &self.sparse else {
            return self
                .file
                .write_at(offset, buf)
                .map_err(|e| Error::io(format!("writing {} bytes at {offset}", buf.len()), e));
        };
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / sparse.block_size;
            let in_block = pos % sparse.block_size;
            let n = (sparse.block_size - in_block).min((buf.len() - done) as u64) as usize;
            self.write_in_block(sparse, block, in_block, &buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn write_in_block(&self, sparse: &Sparse, block: u64, in_block: u64, buf: &[u8]) -> Result<()> {
        let block_start = match sparse.block_start(block) {
            Some(start) => start,
            None => match sparse.allocate(&*self.file, self.disk_type, block, in_block, buf)? {
                // This call allocated the block and wrote the data into it.
                None => return Ok(()),
                // Another writer allocated it first.
                Some(start) => start,
            },
        };
        let data = block_start + sparse.bitmap_size + in_block;
        self.file
            .write_at(data, buf)
            .map_err(|e| Error::io(format!("writing {} bytes at {data}", buf.len()), e))?;
        if !sparse.bitmap_full(&*self.file, block, block_start)? {
            sparse.mark_present(
                &*self.file,
                block,
                block_start,
                in_block / SECTOR_SIZE,
                buf.len() as u64 / SECTOR_SIZE,
            )?;
        }
        Ok(())
    }

    /// Makes completed writes durable.
    pub fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync().map_err(|e| Error::io("flushing", e))
    }

    fn check_request(&self, offset: u64, len: usize) -> Result<()> {
        let len = len as u64;
        if !offset.is_multiple_of(SECTOR_SIZE) || !len.is_multiple_of(SECTOR_SIZE) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("request of {len} bytes at {offset} is not sector-aligned"),
            ));
        }
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(Error::new(
                ErrorKind::OutOfRange,
                format!(
                    "request of {len} bytes at {offset} is past the end of a {}-byte disk",
                    self.size
                ),
            ));
        }
        Ok(())
    }
}

impl Source {
    fn unallocated(disk_type: DiskType) -> Self {
        if disk_type == DiskType::Differencing {
            Source::Parent
        } else {
            Source::Zero
        }
    }
}

impl Sparse {
    fn open(
        file: &dyn ImageFile,
        footer: &spec::Footer,
        size: u64,
        file_len: u64,
        footer_offset: u64,
    ) -> Result<Self> {
        let header_offset = footer.data_offset.get();
        if header_offset
            .checked_add(1024)
            .is_none_or(|end| end > file_len)
        {
            return Err(Error::corrupt(format!(
                "dynamic header offset {header_offset} is outside the file"
            )));
        }
        let mut raw = [0u8; 1024];
        file.read_at(header_offset, &mut raw)
            .map_err(|e| Error::io("reading the dynamic header", e))?;
        let header = spec::DynamicHeader::read_from_bytes(&raw)
            .map_err(|_| Error::corrupt("dynamic header"))?;
        if header.cookie != spec::DYNAMIC_COOKIE {
            return Err(Error::corrupt("dynamic header cookie is not `cxsparse`"));
        }
        if !header.checksum_ok() {
            return Err(Error::corrupt("dynamic header checksum mismatch"));
        }
        if header.header_version.get() >> 16 != 1 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("dynamic header version {:#x}", header.header_version.get()),
            ));
        }
        let block_size = header.block_size.get();
        if !block_size.is_power_of_two()
            || !(spec::MIN_BLOCK_SIZE..=spec::MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("block size {block_size}"),
            ));
        }
        let block_size = u64::from(block_size);
        let entries = u64::from(header.max_table_entries.get());
        if entries.saturating_mul(block_size) < size {
            return Err(Error::corrupt(format!(
                "{entries} BAT entries of {block_size} bytes cannot hold {size} bytes"
            )));
        }
        let table_offset = header.table_offset.get();
        let table_bytes = entries * 4;
        let table_end = table_offset
            .checked_add(table_bytes.next_multiple_of(SECTOR_SIZE))
            .filter(|&end| end <= file_len)
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "BAT of {entries} entries at {table_offset} is outside the file"
                ))
            })?;
        // Bounded by the file length checked just above.
        let mut raw = vec![0u8; table_bytes as usize];
        file.read_at(table_offset, &mut raw)
            .map_err(|e| Error::io("reading the BAT", e))?;
        let bat: Vec<u32> = raw
            .chunks_exact(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let bitmap_size = (block_size / SECTOR_SIZE)
            .div_ceil(8)
            .next_multiple_of(SECTOR_SIZE);
        // Metadata that no block may overlap: the footer copy, the header and the BAT.
        let metadata = [
            (0, SECTOR_SIZE),
            (header_offset, header_offset + 1024),
            (table_offset, table_end),
        ];
        for (index, &entry) in bat.iter().enumerate() {
            if entry == spec::BAT_UNUSED {
                continue;
            }
            let start = u64::from(entry) * SECTOR_SIZE;
            let end = start + bitmap_size + block_size;
            if end > footer_offset {
                return Err(Error::corrupt(format!(
                    "BAT entry {index} points past the end of the data (block ends at {end}, \
                     footer at {footer_offset})"
                )));
            }
            if metadata.iter().any(|&(a, b)| start < b && a < end) {
                return Err(Error::corrupt(format!(
                    "BAT entry {index} overlaps the image metadata"
                )));
            }
        }
        let bitmap_state = (0..bat.len())
            .map(|_| AtomicU8::new(BITMAP_UNKNOWN))
            .collect();
        let mut footer_raw = [0u8; 512];
        footer_raw.copy_from_slice(footer.as_bytes());
        Ok(Self {
            header,
            footer: footer_raw,
            block_size,
            bitmap_size,
            table_offset,
            bat: RwLock::new(bat),
            bitmap_state,
            footer_offset: Mutex::new(footer_offset),
            bitmap_lock: Mutex::new(()),
        })
    }

    /// File offset of block `block`'s bitmap, if allocated.
    fn block_start(&self, block: u64) -> Option<u64> {
        let entry = *self.bat.read().get(usize::try_from(block).ok()?)?;
        (entry != spec::BAT_UNUSED).then(|| u64::from(entry) * SECTOR_SIZE)
    }

    fn sectors_per_block(&self) -> u64 {
        self.block_size / SECTOR_SIZE
    }

    /// Whether every sector of an allocated block is marked present (cached after the first
    /// look).
    fn bitmap_full(&self, file: &dyn ImageFile, block: u64, block_start: u64) -> Result<bool> {
        let Some(state) = self.bitmap_state.get(block as usize) else {
            return Ok(true);
        };
        match state.load(Ordering::Acquire) {
            BITMAP_FULL => return Ok(true),
            BITMAP_PARTIAL => return Ok(false),
            _ => {}
        }
        let bits = self.read_bitmap_range(file, block_start, 0, self.sectors_per_block())?;
        let full = all_set(&bits, 0, self.sectors_per_block());
        // Only ever upgrade: a concurrent `mark_present` may have just completed the bitmap.
        let _ = state.compare_exchange(
            BITMAP_UNKNOWN,
            if full { BITMAP_FULL } else { BITMAP_PARTIAL },
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        Ok(full)
    }

    /// Reads the bitmap bytes that hold the bits of sectors `first..first + count` of a block;
    /// bit `first % 8` of the result is sector `first`.
    fn read_bitmap_range(
        &self,
        file: &dyn ImageFile,
        block_start: u64,
        first: u64,
        count: u64,
    ) -> Result<Vec<u8>> {
        let from = first / 8;
        let to = (first + count).div_ceil(8);
        // At most `bitmap_size` bytes (64 KiB for the largest block size).
        let mut bits = vec![0u8; (to - from) as usize];
        file.read_at(block_start + from, &mut bits)
            .map_err(|e| Error::io("reading a sector bitmap", e))?;
        Ok(bits)
    }

    /// Sets the bitmap bits of sectors `first..first + count` of an allocated block.
    fn mark_present(
        &self,
        file: &dyn ImageFile,
        block: u64,
        block_start: u64,
        first: u64,
        count: u64,
    ) -> Result<()> {
        let _guard = self.bitmap_lock.lock();
        let from = first / 8;
        let mut bits = self.read_bitmap_range(file, block_start, first, count)?;
        for i in 0..count {
            set_bit(&mut bits, first % 8 + i);
        }
        file.write_at(block_start + from, &bits)
            .map_err(|e| Error::io("writing a sector bitmap", e))?;
        let all = self.read_bitmap_range(file, block_start, 0, self.sectors_per_block())?;
        if all_set(&all, 0, self.sectors_per_block())
            && let Some(state) = self.bitmap_state.get(block as usize)
        {
            state.store(BITMAP_FULL, Ordering::Release);
        }
        Ok(())
    }

    /// Allocates block `block` at the footer's place and writes `buf` (at `in_block`) into it.
    /// Returns `Some(start)` without writing if another writer allocated it first.
    fn allocate(
        &self,
        file: &dyn ImageFile,
        disk_type: DiskType,
        block: u64,
        in_block: u64,
        buf: &[u8],
    ) -> Result<Option<u64>> {
        let mut footer_offset = self.footer_offset.lock();
        if let Some(start) = self.block_start(block) {
            return Ok(Some(start));
        }
        let start = footer_offset.next_multiple_of(SECTOR_SIZE);
        let new_footer = start + self.bitmap_size + self.block_size;
        let entry = u32::try_from(start / SECTOR_SIZE)
            .ok()
            .filter(|&e| e != spec::BAT_UNUSED)
            .ok_or_else(|| Error::new(ErrorKind::Unsupported, "image file is full"))?;
        // A dynamic disk's new block is all data (zeros until written); a differencing disk's
        // is all parent until written, so only the written sectors are marked.
        let full = disk_type != DiskType::Differencing;
        let mut bitmap = vec![if full { 0xff } else { 0 }; self.bitmap_size as usize];
        let first = in_block / SECTOR_SIZE;
        let count = buf.len() as u64 / SECTOR_SIZE;
        if !full {
            for i in first..first + count {
                set_bit(&mut bitmap, i);
            }
        }
        let io = |what: &str, e| Error::io(format!("allocating block {block}: {what}"), e);
        // Footer first: the file always ends in a valid footer, so a crash at any point below
        // leaves at worst an unreferenced block.
        file.write_at(new_footer, &self.footer)
            .map_err(|e| io("moving the footer", e))?;
        file.write_at(start + self.bitmap_size + in_block, buf)
            .map_err(|e| io("writing data", e))?;
        file.write_at(start, &bitmap)
            .map_err(|e| io("writing the bitmap", e))?;
        file.write_at(self.table_offset + block * 4, &entry.to_be_bytes())
            .map_err(|e| io("writing the BAT", e))?;
        if let Some(state) = self.bitmap_state.get(block as usize) {
            let complete = full || count == self.sectors_per_block();
            state.store(
                if complete {
                    BITMAP_FULL
                } else {
                    BITMAP_PARTIAL
                },
                Ordering::Release,
            );
        }
        // `block` indexes the BAT: `block_start` returned `None`, so it is in range or
        // `check_request` would have refused the request.
        if let Some(slot) = self.bat.write().get_mut(block as usize) {
            *slot = entry;
        }
        *footer_offset = new_footer;
        Ok(None)
    }
}

/// Finds and validates the footer: at the end of the file, or (for a dynamic image whose end
/// was damaged) the copy at offset 0. Returns the footer and where the data ends.
fn read_footer(file: &dyn ImageFile, file_len: u64) -> Result<(spec::Footer, u64)> {
    let at_end = file_len - SECTOR_SIZE;
    let mut raw = [0u8; 512];
    file.read_at(at_end, &mut raw)
        .map_err(|e| Error::io("reading the footer", e))?;
    let mut footer = spec::Footer::read_from_bytes(&raw).map_err(|_| Error::corrupt("footer"))?;
    let mut footer_offset = at_end;
    if footer.cookie != spec::FOOTER_COOKIE {
        file.read_at(0, &mut raw)
            .map_err(|e| Error::io("reading the footer copy", e))?;
        footer = spec::Footer::read_from_bytes(&raw).map_err(|_| Error::corrupt("footer"))?;
        if footer.cookie != spec::FOOTER_COOKIE || footer.disk_type.get() == spec::disk_type::FIXED
        {
            return Err(Error::corrupt(
                "no `conectix` footer at the end of the file",
            ));
        }
        tracing::warn!("VHD footer missing at the end of the file; using the copy at offset 0");
        footer_offset = file_len.next_multiple_of(SECTOR_SIZE);
    }
    if !footer.checksum_ok() {
        return Err(Error::corrupt("footer checksum mismatch"));
    }
    if footer.format_version.get() >> 16 != 1 {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("format version {:#x}", footer.format_version.get()),
        ));
    }
    Ok((footer, footer_offset))
}

/// The virtual size, by the creator-dependent rule described in the crate docs.
fn virtual_size(footer: &spec::Footer) -> Result<u64> {
    let chs = footer.chs_sectors() * SECTOR_SIZE;
    let chs_is_max = (
        footer.cylinders.get(),
        footer.heads,
        footer.sectors_per_track,
    ) == spec::MAX_CHS;
    let current = footer.current_size.get();
    let size = if matches!(&footer.creator_app, b"vpc " | b"qemu") && !chs_is_max {
        chs.min(current)
    } else {
        current
    };
    if size % SECTOR_SIZE != 0 {
        return Err(Error::corrupt(format!(
            "virtual size {size} is not a multiple of 512"
        )));
    }
    if size > spec::MAX_DISK_SIZE {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("virtual size {size} exceeds the VHD limit of 2040 GiB"),
        ));
    }
    Ok(size)
}

/// Bit `i` of a VHD bitmap (most significant bit first).
fn bit(bits: &[u8], i: u64) -> bool {
    bits.get((i / 8) as usize)
        .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
}

fn set_bit(bits: &mut [u8], i: u64) {
    if let Some(b) = bits.get_mut((i / 8) as usize) {
        *b |= 0x80 >> (i % 8);
    }
}

fn all_set(bits: &[u8], first: u64, count: u64) -> bool {
    (first..first + count).all(|i| bit(bits, i))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
