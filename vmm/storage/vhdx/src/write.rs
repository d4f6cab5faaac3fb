//! Writing: header updates, block allocation through the log, sector bitmaps, flush.
//!
//! Ordering, so that a crash at any point leaves a file that opens to either the old or the
//! new contents of the BAT:
//! 1. The first write of a session writes the non-current header slot with a larger sequence
//!    number and new file/data write GUIDs, then syncs.
//! 2. Allocating a block extends the file (zeros), writes the guest data (and, for a
//!    differencing image, the sector-bitmap bits), and syncs: nothing points at the block yet.
//! 3. If the log is not active, a header with a fresh log GUID is written and synced.
//! 4. A log entry holding the new BAT page(s) is written and synced; then the pages are written
//!    in place (no sync: the entry replays them if they are lost, and the next allocation's
//!    step 2 sync makes them durable before the next entry).
//! 5. `flush` syncs, then writes a header with a zero log GUID: the log is empty again.

use std::sync::atomic::Ordering;

use image_file::ImageFile;
use zerocopy::IntoBytes;
use zerocopy::byteorder::little_endian::U64;

use crate::Error;
use crate::ErrorKind;
use crate::Guid;
use crate::Result;
use crate::Vhdx;
use crate::bitmap_bit;
use crate::log::LogWriter;
use crate::spec;

/// Mutable state of a writable image, behind one mutex.
#[derive(Debug)]
pub(crate) struct WriterState {
    /// The current header and its slot.
    pub header: spec::Header,
    pub slot: usize,
    /// Where the next block goes (a multiple of 1 MiB).
    pub file_end: u64,
    /// The active log, if any.
    log: Option<(Guid, LogWriter)>,
}

impl WriterState {
    pub fn new(header: spec::Header, slot: usize, file_end: u64) -> Self {
        Self {
            header,
            slot,
            file_end,
            log: None,
        }
    }
}

/// Writes `edit(header)` with the next sequence number into the other header slot and syncs.
/// Returns the new current header and slot.
pub(crate) fn update_header(
    file: &dyn ImageFile,
    current: &spec::Header,
    slot: usize,
    edit: impl FnOnce(&mut spec::Header),
) -> Result<(spec::Header, usize)> {
    let mut header = *current;
    edit(&mut header);
    header.sequence_number = U64::new(current.sequence_number.get().wrapping_add(1));
    header.checksum = 0.into();
    let mut raw = vec![0u8; spec::HEADER_SIZE];
    raw[..size_of::<spec::Header>()].copy_from_slice(header.as_bytes());
    let crc = spec::crc32c_with_hole(&raw, spec::HEADER_CHECKSUM_OFFSET);
    raw[4..8].copy_from_slice(&crc.to_le_bytes());
    header.checksum = crc.into();
    let other = 1 - slot;
    let io = |e| Error::io("writing a header", e);
    file.write_at(spec::HEADER_OFFSETS[other], &raw)
        .map_err(io)?;
    file.sync().map_err(io)?;
    Ok((header, other))
}

fn random_guid() -> Result<Guid> {
    Guid::new_random()
        .map_err(|e| Error::new(ErrorKind::Io, format!("no randomness for a GUID: {e}")))
}

impl Vhdx {
    /// Writes `buf` at `offset`; both must be multiples of the logical sector size.
    pub fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                "write to a read-only image",
            ));
        }
        self.check_request(offset, buf.len())?;
        self.start_session()?;
        let block_size = u64::from(self.meta.block_size);
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / block_size;
            let in_block = pos % block_size;
            let n = (block_size - in_block).min((buf.len() - done) as u64) as usize;
            self.write_in_block(block, in_block, &buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// Makes completed writes durable and empties the log.
    pub fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync().map_err(|e| Error::io("flushing", e))?;
        let mut w = self.writer.lock();
        if w.log.is_some() {
            (w.header, w.slot) = update_header(&*self.file, &w.header, w.slot, |h| {
                h.log_guid = Guid::ZERO;
            })?;
            w.log = None;
        }
        Ok(())
    }

    fn start_session(&self) -> Result<()> {
        if self.session_started.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut w = self.writer.lock();
        if self.session_started.load(Ordering::Acquire) {
            return Ok(());
        }
        let file_write = random_guid()?;
        let data_write = random_guid()?;
        (w.header, w.slot) = update_header(&*self.file, &w.header, w.slot, |h| {
            h.file_write_guid = file_write;
            h.data_write_guid = data_write;
        })?;
        self.session_started.store(true, Ordering::Release);
        Ok(())
    }

    fn write_in_block(&self, block: u64, in_block: u64, buf: &[u8]) -> Result<()> {
        let entry = self.bat_entry(self.payload_index(block));
        match spec::bat_state(entry) {
            spec::payload::FULLY_PRESENT => {
                self.write_data(spec::bat_offset(entry) + in_block, buf)
            }
            spec::payload::PARTIALLY_PRESENT => {
                self.write_data(spec::bat_offset(entry) + in_block, buf)?;
                self.mark_present(block, in_block, buf.len() as u64)
            }
            _ => self.allocate(block, in_block, buf),
        }
    }

    fn write_data(&self, at: u64, buf: &[u8]) -> Result<()> {
        self.file
            .write_at(at, buf)
            .map_err(|e| Error::io(format!("writing {} bytes at {at}", buf.len()), e))
    }

    /// Sets the sector-bitmap bits of `len` bytes at `in_block` of `block`.
    fn mark_present(&self, block: u64, in_block: u64, len: u64) -> Result<()> {
        let lss = u64::from(self.meta.logical_sector_size);
        let first = self.chunk_sector(block, in_block);
        let count = len / lss;
        let sb = self.bat_entry(self.bitmap_index(block / self.chunk_ratio));
        let _guard = self.bitmap_lock.lock();
        let mut bits = self.read_bitmap(block, first, count)?;
        for i in 0..count {
            let bit = first % 8 + i;
            if let Some(b) = bits.get_mut((bit / 8) as usize) {
                *b |= 1 << (bit % 8);
            }
        }
        debug_assert!((0..count).all(|i| bitmap_bit(&bits, first % 8 + i)));
        self.file
            .write_at(spec::bat_offset(sb) + first / 8, &bits)
            .map_err(|e| Error::io("writing a sector bitmap", e))
    }

    /// Allocates `block`, writes `buf` at `in_block` into it and publishes it in the BAT.
    fn allocate(&self, block: u64, in_block: u64, buf: &[u8]) -> Result<()> {
        let mut w = self.writer.lock();
        let payload_index = self.payload_index(block);
        let entry = self.bat_entry(payload_index);
        if matches!(
            spec::bat_state(entry),
            spec::payload::FULLY_PRESENT | spec::payload::PARTIALLY_PRESENT
        ) {
            // Another writer allocated it while we waited.
            drop(w);
            return self.write_in_block(block, in_block, buf);
        }
        let io = |what: &str, e| Error::io(format!("allocating block {block}: {what}"), e);
        let block_size = u64::from(self.meta.block_size);
        // In a differencing image an absent block's other sectors belong to the parent, so the
        // new block is only partially present; elsewhere it is all data (zeros until written).
        let partial = self.meta.has_parent
            && matches!(
                spec::bat_state(entry),
                spec::payload::NOT_PRESENT | spec::payload::UNDEFINED
            );
        let block_offset = w.file_end;
        let mut new_end = block_offset + block_size;
        let mut changes = Vec::new();
        if partial {
            let sb_index = self.bitmap_index(block / self.chunk_ratio);
            let sb = self.bat_entry(sb_index);
            if spec::bat_state(sb) != spec::bitmap::PRESENT {
                let sb_offset = new_end;
                new_end += spec::SECTOR_BITMAP_BLOCK_SIZE;
                changes.push((sb_index, spec::bat_entry(spec::bitmap::PRESENT, sb_offset)));
            }
        }
        self.file
            .set_size(new_end)
            .map_err(|e| io("extending the file", e))?;
        self.write_data(block_offset + in_block, buf)?;
        let state = if partial {
            spec::payload::PARTIALLY_PRESENT
        } else {
            spec::payload::FULLY_PRESENT
        };
        changes.push((payload_index, spec::bat_entry(state, block_offset)));
        if partial {
            // The bitmap block is reachable only through the BAT change below; publish the
            // sector-bitmap entry early in memory so `mark_present` can find it.
            if let Some(&(sb_index, sb_entry)) = changes.first().filter(|_| changes.len() == 2) {
                self.set_bat(sb_index, sb_entry);
            }
            self.mark_present(block, in_block, buf.len() as u64)?;
        }
        self.file.sync().map_err(|e| io("syncing data", e))?;
        w.file_end = new_end;
        self.log_bat_changes(&mut w, &changes)?;
        for &(index, entry) in &changes {
            self.set_bat(index, entry);
        }
        Ok(())
    }

    fn set_bat(&self, index: u64, entry: u64) {
        if let Some(slot) = self.bat.write().get_mut(index as usize) {
            *slot = entry;
        }
    }

    /// Writes the BAT pages holding `changes` through the log, then in place.
    fn log_bat_changes(&self, w: &mut WriterState, changes: &[(u64, u64)]) -> Result<()> {
        let mut pages: Vec<(u64, [u8; 4096])> = Vec::new();
        {
            let bat = self.bat.read();
            for &(index, entry) in changes {
                let page_offset = index * 8 / 4096 * 4096;
                let file_offset = self.bat_region.offset + page_offset;
                let pos = match pages.iter().position(|(o, _)| *o == file_offset) {
                    Some(pos) => pos,
                    None => {
                        let mut page = [0u8; 4096];
                        let first = page_offset / 8;
                        for (i, chunk) in page.chunks_exact_mut(8).enumerate() {
                            let e = bat.get((first + i as u64) as usize).copied().unwrap_or(0);
                            chunk.copy_from_slice(&e.to_le_bytes());
                        }
                        pages.push((file_offset, page));
                        pages.len() - 1
                    }
                };
                let at = (index * 8 % 4096) as usize;
                pages[pos].1[at..at + 8].copy_from_slice(&entry.to_le_bytes());
            }
        }
        if w.log.is_none() {
            let guid = random_guid()?;
            (w.header, w.slot) = update_header(&*self.file, &w.header, w.slot, |h| {
                h.log_guid = guid;
            })?;
            w.log = Some((guid, LogWriter::new(self.log_region)));
        }
        let file_end = w.file_end;
        if let Some((guid, writer)) = w.log.as_mut() {
            writer.write_entry(&*self.file, *guid, &pages, file_end)?;
        }
        for (offset, page) in &pages {
            self.write_data(*offset, page)?;
        }
        Ok(())
    }
}

impl Drop for Vhdx {
    fn drop(&mut self) {
        if !self.read_only
            && let Err(e) = self.flush()
        {
            tracing::warn!(error = %e, "flushing a VHDX image on close failed");
        }
    }
}
