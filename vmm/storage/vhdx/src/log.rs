//! The metadata log: finding and replaying the active sequence, and writing entries.
//!
//! The log is a circular buffer of 4 KiB sectors. An entry is a header sector (with the first
//! descriptors), more descriptor sectors, then one data sector per `desc` descriptor; its
//! CRC-32C covers the whole entry. Entries of a sequence follow each other with sequence
//! numbers counting up by one; the last one (the head) names the first (its tail). The active
//! sequence is the valid one whose head has the largest sequence number. Replaying it writes
//! each logged sector (and zeroes each zeroed range) at its file offset, in order.
//!
//! Validation cost is bounded: one pass reads every sector's header, then at most
//! [`MAX_HEAD_ATTEMPTS`] candidate heads are checked, each by one walk that reads at most the
//! whole log.

use std::collections::BTreeMap;
use std::sync::Arc;

use image_file::ImageFile;
use zerocopy::FromBytes;
use zerocopy::FromZeros;
use zerocopy::IntoBytes;
use zerocopy::byteorder::little_endian::U32;
use zerocopy::byteorder::little_endian::U64;

use crate::Error;
use crate::ErrorKind;
use crate::Guid;
use crate::Result;
use crate::spec;
use crate::spec::LOG_SECTOR_SIZE;

/// Candidate heads tried before giving up on finding an active sequence.
const MAX_HEAD_ATTEMPTS: usize = 64;
/// Most 4 KiB pages a read-only replay keeps in memory (4 GiB of zeroed ranges).
const MAX_OVERLAY_PAGES: u64 = 1 << 20;
/// Largest log agar accepts.
pub const MAX_LOG_LENGTH: u64 = 256 * spec::MIB;
/// The largest file a log may describe: the largest disk, fully allocated, plus the largest
/// BAT and generous room for the other structures.
const MAX_FILE_LENGTH: u64 = spec::MAX_DISK_SIZE + spec::MAX_BAT_BYTES + (1 << 30);
/// Descriptors that fit in one sector, and in the first (after the 64-byte header).
const DESCRIPTORS_PER_SECTOR: u64 = LOG_SECTOR_SIZE / 32;

/// Where the log lives.
#[derive(Debug, Clone, Copy)]
pub struct LogRegion {
    /// File offset.
    pub offset: u64,
    /// Length in bytes (a multiple of 1 MiB).
    pub length: u64,
}

/// Descriptor sectors an entry with `count` descriptors needs (the header takes two slots).
fn descriptor_sectors(count: u64) -> u64 {
    (count + 2).div_ceil(DESCRIPTORS_PER_SECTOR)
}

/// One write the log asks for.
#[derive(Debug, Clone)]
pub enum LoggedWrite {
    /// A 4 KiB sector.
    Data {
        /// File offset.
        offset: u64,
        /// The sector.
        page: Box<[u8; 4096]>,
    },
    /// A zeroed range.
    Zero {
        /// File offset.
        offset: u64,
        /// Length (a multiple of 4 KiB).
        length: u64,
    },
}

/// The active sequence, ready to apply.
#[derive(Debug)]
pub struct Replay {
    /// The writes, in order.
    pub writes: Vec<LoggedWrite>,
    /// The file must be at least this long.
    pub last_file_offset: u64,
    /// The head's sequence number.
    pub head_sequence: u64,
}

/// What the first pass learns from a sector that starts with a plausible entry header.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    pos: u64,
    length: u64,
    tail: u64,
    sequence: u64,
}

/// Finds the active sequence of a log whose header `log_guid` is `guid`.
pub fn find_active(
    file: &dyn ImageFile,
    region: LogRegion,
    guid: Guid,
    file_len: u64,
) -> Result<Option<Replay>> {
    let mut candidates = Vec::new();
    let mut pos = 0;
    let mut sector = [0u8; 4096];
    while pos < region.length {
        read_log(file, region, pos, &mut sector)?;
        if let Some(c) = plausible_header(&sector, pos, region, guid) {
            candidates.push(c);
        }
        pos += LOG_SECTOR_SIZE;
    }
    let by_pos: BTreeMap<u64, Candidate> = candidates.iter().map(|c| (c.pos, *c)).collect();
    candidates.sort_by_key(|c| std::cmp::Reverse(c.sequence));
    for head in candidates.iter().take(MAX_HEAD_ATTEMPTS) {
        if let Some(entries) = walk_sequence(file, region, &by_pos, head)? {
            let head_header = entries
                .last()
                .map(|(h, _)| *h)
                .ok_or_else(|| Error::corrupt("empty log sequence"))?;
            if head_header.flushed_file_offset.get() > file_len {
                return Err(Error::corrupt(format!(
                    "log expects a file of at least {} bytes, file has {file_len}: truncated",
                    head_header.flushed_file_offset.get()
                )));
            }
            // The file may have lost its last extensions in the crash, but a log cannot ask
            // for a file larger than any VHDX can be.
            let last_file_offset = head_header.last_file_offset.get();
            if last_file_offset > MAX_FILE_LENGTH {
                return Err(Error::corrupt(format!(
                    "log expects a file of {last_file_offset} bytes"
                )));
            }
            let limit = file_len.max(last_file_offset).next_multiple_of(spec::MIB);
            let mut writes = Vec::new();
            for (_, entry_writes) in entries {
                for w in entry_writes {
                    let (offset, length) = match &w {
                        LoggedWrite::Data { offset, .. } => (*offset, LOG_SECTOR_SIZE),
                        LoggedWrite::Zero { offset, length } => (*offset, *length),
                    };
                    if offset < spec::LOGGABLE_OFFSET
                        || offset.checked_add(length).is_none_or(|end| end > limit)
                    {
                        return Err(Error::corrupt(format!(
                            "log writes {length} bytes at {offset}, outside the loggable file"
                        )));
                    }
                    writes.push(w);
                }
            }
            return Ok(Some(Replay {
                writes,
                last_file_offset,
                head_sequence: head_header.sequence_number.get(),
            }));
        }
    }
    Ok(None)
}

fn plausible_header(
    sector: &[u8; 4096],
    pos: u64,
    region: LogRegion,
    guid: Guid,
) -> Option<Candidate> {
    let (h, _) = spec::LogEntryHeader::read_from_prefix(sector).ok()?;
    let length = u64::from(h.entry_length.get());
    let tail = u64::from(h.tail.get());
    let sequence = h.sequence_number.get();
    let count = u64::from(h.descriptor_count.get());
    let plausible = &h.signature == b"loge"
        && h.log_guid == guid
        && sequence != 0
        && length != 0
        && length % LOG_SECTOR_SIZE == 0
        && length <= region.length
        && tail % LOG_SECTOR_SIZE == 0
        && tail < region.length
        && descriptor_sectors(count) * LOG_SECTOR_SIZE <= length;
    plausible.then_some(Candidate {
        pos,
        length,
        tail,
        sequence,
    })
}

type Entry = (spec::LogEntryHeader, Vec<LoggedWrite>);

/// Walks from `head.tail` to `head`, validating every entry; `None` if the chain is broken.
fn walk_sequence(
    file: &dyn ImageFile,
    region: LogRegion,
    by_pos: &BTreeMap<u64, Candidate>,
    head: &Candidate,
) -> Result<Option<Vec<Entry>>> {
    let mut entries = Vec::new();
    let mut pos = head.tail;
    let mut walked = 0u64;
    let mut expected_sequence: Option<u64> = None;
    loop {
        let Some(c) = by_pos.get(&pos) else {
            return Ok(None);
        };
        if expected_sequence.is_some_and(|s| s != c.sequence) {
            return Ok(None);
        }
        let Some(entry) = read_entry(file, region, c)? else {
            return Ok(None);
        };
        entries.push(entry);
        if c.pos == head.pos {
            return Ok((c.sequence == head.sequence).then_some(entries));
        }
        walked += c.length;
        if walked >= region.length {
            return Ok(None);
        }
        expected_sequence = Some(c.sequence.wrapping_add(1));
        pos = (c.pos + c.length) % region.length;
    }
}

/// Reads and fully validates one entry (checksum, descriptors, data sectors).
fn read_entry(file: &dyn ImageFile, region: LogRegion, c: &Candidate) -> Result<Option<Entry>> {
    // Bounded by `MAX_LOG_LENGTH` (the entry fits in the log).
    let mut raw = vec![0u8; c.length as usize];
    for (i, sector) in raw.chunks_exact_mut(LOG_SECTOR_SIZE as usize).enumerate() {
        let pos = (c.pos + i as u64 * LOG_SECTOR_SIZE) % region.length;
        read_log(file, region, pos, sector)?;
    }
    let Ok((header, _)) = spec::LogEntryHeader::read_from_prefix(&raw) else {
        return Ok(None);
    };
    if header.checksum.get() != spec::crc32c_with_hole(&raw, spec::LOG_CHECKSUM_OFFSET) {
        return Ok(None);
    }
    let count = u64::from(header.descriptor_count.get());
    let data_start = descriptor_sectors(count) * LOG_SECTOR_SIZE;
    let mut next_data = data_start;
    let mut writes = Vec::new();
    for i in 0..count {
        let at = (64 + 32 * i) as usize;
        let Some(Ok(d)) = raw
            .get(at..at + 32)
            .map(spec::LogDescriptor::read_from_bytes)
        else {
            return Ok(None);
        };
        let offset = d.file_offset.get();
        if d.sequence_number.get() != c.sequence || offset % LOG_SECTOR_SIZE != 0 {
            return Ok(None);
        }
        match &d.signature {
            b"zero" => {
                let length = u64::from_le_bytes(d.leading_bytes);
                if length % LOG_SECTOR_SIZE != 0 {
                    return Ok(None);
                }
                writes.push(LoggedWrite::Zero { offset, length });
            }
            b"desc" => {
                let at = next_data as usize;
                let Some(Ok(data)) = raw
                    .get(at..at + 4096)
                    .map(spec::LogDataSector::read_from_bytes)
                else {
                    return Ok(None);
                };
                let sequence = (u64::from(data.sequence_high.get()) << 32)
                    | u64::from(data.sequence_low.get());
                if &data.signature != b"data" || sequence != c.sequence {
                    return Ok(None);
                }
                let mut page = Box::new([0u8; 4096]);
                page[..8].copy_from_slice(&d.leading_bytes);
                page[8..4092].copy_from_slice(&data.data);
                page[4092..].copy_from_slice(&d.trailing_bytes);
                writes.push(LoggedWrite::Data { offset, page });
                next_data += LOG_SECTOR_SIZE;
            }
            _ => return Ok(None),
        }
    }
    Ok(Some((header, writes)))
}

fn read_log(file: &dyn ImageFile, region: LogRegion, pos: u64, buf: &mut [u8]) -> Result<()> {
    file.read_at(region.offset + pos, buf)
        .map_err(|e| Error::io("reading the log", e))
}

/// Applies a replay to a writable file and makes it durable.
pub fn apply(file: &dyn ImageFile, replay: &Replay) -> Result<()> {
    let io = |e| Error::io("replaying the log", e);
    for w in &replay.writes {
        match w {
            LoggedWrite::Data { offset, page } => file.write_at(*offset, &page[..]).map_err(io)?,
            LoggedWrite::Zero { offset, length } => {
                let file_len = file.size().map_err(io)?;
                let end = offset + length;
                // Zeros past the end of the file come from extending it.
                let explicit_end = end.min(file_len);
                let zeros = vec![0u8; spec::MIB as usize];
                let mut at = *offset;
                while at < explicit_end {
                    let n = (explicit_end - at).min(spec::MIB);
                    file.write_at(at, &zeros[..n as usize]).map_err(io)?;
                    at += n;
                }
                if end > file_len {
                    file.set_size(end).map_err(io)?;
                }
            }
        }
    }
    let file_len = file.size().map_err(io)?;
    if file_len < replay.last_file_offset {
        file.set_size(replay.last_file_offset.next_multiple_of(spec::MIB))
            .map_err(io)?;
    }
    file.sync().map_err(io)
}

/// A read-only view of a file with a log replayed in memory, so that opening a dirty image
/// read-only (the base of a `memdiff:` disk) never writes it.
pub struct ReplayedFile {
    base: Arc<dyn ImageFile>,
    /// 4 KiB pages by page number; `None` is a zeroed page.
    pages: BTreeMap<u64, Option<Box<[u8; 4096]>>>,
    len: u64,
}

impl ReplayedFile {
    /// Replays `replay` over `base` in memory.
    pub fn new(base: Arc<dyn ImageFile>, replay: Replay) -> Result<Self> {
        let mut len = base
            .size()
            .map_err(|e| Error::io("reading the file size", e))?;
        let mut pages = BTreeMap::new();
        let mut zero_pages = 0u64;
        for w in replay.writes {
            match w {
                LoggedWrite::Data { offset, page } => {
                    len = len.max(offset + LOG_SECTOR_SIZE);
                    pages.insert(offset / LOG_SECTOR_SIZE, Some(page));
                }
                LoggedWrite::Zero { offset, length } => {
                    zero_pages += length / LOG_SECTOR_SIZE;
                    if zero_pages > MAX_OVERLAY_PAGES {
                        return Err(Error::new(
                            ErrorKind::Unsupported,
                            "log zeroes more than 4 GiB; open the image writable to replay it",
                        ));
                    }
                    len = len.max(offset + length);
                    for p in offset / LOG_SECTOR_SIZE..(offset + length) / LOG_SECTOR_SIZE {
                        pages.insert(p, None);
                    }
                }
            }
        }
        len = len.max(replay.last_file_offset.next_multiple_of(spec::MIB));
        Ok(Self { base, pages, len })
    }
}

impl ImageFile for ReplayedFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.len)
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        let base_len = self.base.size()?;
        let from_base = base_len.saturating_sub(offset).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(from_base);
        if !head.is_empty() {
            self.base.read_at(offset, head)?;
        }
        tail.fill(0);
        let first = offset / LOG_SECTOR_SIZE;
        let last = (end - 1) / LOG_SECTOR_SIZE;
        for (&p, page) in self.pages.range(first..=last) {
            let page_start = p * LOG_SECTOR_SIZE;
            let a = page_start.max(offset);
            let b = (page_start + LOG_SECTOR_SIZE).min(end);
            let dst = &mut buf[(a - offset) as usize..(b - offset) as usize];
            match page {
                Some(data) => {
                    dst.copy_from_slice(&data[(a - page_start) as usize..(b - page_start) as usize])
                }
                None => dst.fill(0),
            }
        }
        Ok(())
    }

    fn write_at(&self, _offset: u64, _buf: &[u8]) -> std::io::Result<()> {
        Err(std::io::ErrorKind::PermissionDenied.into())
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len)
    }

    fn set_size(&self, _len: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::PermissionDenied.into())
    }

    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Appends entries to the log of a writable image.
#[derive(Debug)]
pub struct LogWriter {
    region: LogRegion,
    /// Log offset of the next entry.
    pos: u64,
    sequence: u64,
}

impl LogWriter {
    /// A writer starting at the beginning of an empty log.
    pub fn new(region: LogRegion) -> Self {
        Self {
            region,
            pos: 0,
            sequence: 1,
        }
    }

    /// Writes one entry logging `pages` (file offset, 4 KiB contents) and makes it durable.
    /// Each entry is its own sequence (its tail is itself): the writer applies it right after,
    /// and syncs before the next entry, so replay never needs more than the last one.
    pub fn write_entry(
        &mut self,
        file: &dyn ImageFile,
        guid: Guid,
        pages: &[(u64, [u8; 4096])],
        file_len: u64,
    ) -> Result<()> {
        let count = pages.len() as u64;
        let desc_sectors = descriptor_sectors(count);
        let length = (desc_sectors + count) * LOG_SECTOR_SIZE;
        if length > self.region.length {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "log entry larger than the log",
            ));
        }
        if self.pos + length > self.region.length {
            self.pos = 0;
        }
        let mut raw = vec![0u8; length as usize];
        let mut header = spec::LogEntryHeader::new_zeroed();
        header.signature = *b"loge";
        header.entry_length = U32::new(length as u32);
        header.tail = U32::new(self.pos as u32);
        header.sequence_number = U64::new(self.sequence);
        header.descriptor_count = U32::new(count as u32);
        header.log_guid = guid;
        header.flushed_file_offset = U64::new(file_len);
        header.last_file_offset = U64::new(file_len);
        raw[..64].copy_from_slice(header.as_bytes());
        for (i, (offset, page)) in pages.iter().enumerate() {
            let mut d = spec::LogDescriptor::new_zeroed();
            d.signature = *b"desc";
            d.trailing_bytes.copy_from_slice(&page[4092..]);
            d.leading_bytes.copy_from_slice(&page[..8]);
            d.file_offset = U64::new(*offset);
            d.sequence_number = U64::new(self.sequence);
            let at = 64 + 32 * i;
            raw[at..at + 32].copy_from_slice(d.as_bytes());
            let mut s = spec::LogDataSector::new_zeroed();
            s.signature = *b"data";
            s.sequence_high = U32::new((self.sequence >> 32) as u32);
            s.sequence_low = U32::new(self.sequence as u32);
            s.data.copy_from_slice(&page[8..4092]);
            let at = ((desc_sectors + i as u64) * LOG_SECTOR_SIZE) as usize;
            raw[at..at + 4096].copy_from_slice(s.as_bytes());
        }
        let crc = spec::crc32c_with_hole(&raw, spec::LOG_CHECKSUM_OFFSET);
        raw[4..8].copy_from_slice(&crc.to_le_bytes());
        let io = |e| Error::io("writing the log", e);
        file.write_at(self.region.offset + self.pos, &raw)
            .map_err(io)?;
        file.sync().map_err(io)?;
        self.pos = (self.pos + length) % self.region.length;
        self.sequence += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use image_file::MemFile;

    use super::*;

    const REGION: LogRegion = LogRegion {
        offset: spec::MIB,
        length: spec::MIB,
    };

    fn page(b: u8) -> [u8; 4096] {
        let mut p = [b; 4096];
        p[0] = 0xa0;
        p[4095] = 0x0f;
        p
    }

    #[test]
    fn written_entries_replay_in_order() {
        let file = MemFile::new();
        file.set_size(4 * spec::MIB).unwrap();
        let guid = Guid::new_random().unwrap();
        let mut w = LogWriter::new(REGION);
        w.write_entry(&file, guid, &[(3 * spec::MIB, page(1))], 4 * spec::MIB)
            .unwrap();
        w.write_entry(
            &file,
            guid,
            &[(3 * spec::MIB, page(2)), (3 * spec::MIB + 4096, page(3))],
            4 * spec::MIB,
        )
        .unwrap();
        let replay = find_active(&file, REGION, guid, 4 * spec::MIB)
            .unwrap()
            .unwrap();
        // The head is its own tail: only the last entry is replayed.
        assert_eq!(replay.head_sequence, 2);
        assert_eq!(replay.writes.len(), 2);
        apply(&file, &replay).unwrap();
        let mut buf = [0u8; 4096];
        file.read_at(3 * spec::MIB + 4096, &mut buf).unwrap();
        assert_eq!(buf, page(3));
        // A different log GUID sees no entries.
        assert!(
            find_active(&file, REGION, Guid::new_random().unwrap(), 4 * spec::MIB)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn torn_entry_is_ignored_and_the_previous_one_wins() {
        let file = MemFile::new();
        file.set_size(4 * spec::MIB).unwrap();
        let guid = Guid::new_random().unwrap();
        let mut w = LogWriter::new(REGION);
        w.write_entry(&file, guid, &[(3 * spec::MIB, page(1))], 4 * spec::MIB)
            .unwrap();
        w.write_entry(&file, guid, &[(3 * spec::MIB, page(2))], 4 * spec::MIB)
            .unwrap();
        // Tear the second entry's data sector (entry 2 starts at log offset 8 KiB).
        file.write_at(REGION.offset + 8192 + 4096 + 100, &[0x55])
            .unwrap();
        let replay = find_active(&file, REGION, guid, 4 * spec::MIB)
            .unwrap()
            .unwrap();
        assert_eq!(replay.head_sequence, 1);
        let LoggedWrite::Data { page: p, .. } = &replay.writes[0] else {
            panic!("expected a data write");
        };
        assert_eq!(**p, page(1));
    }

    #[test]
    fn replay_refuses_truncated_files_and_writes_into_the_headers() {
        let file = MemFile::new();
        file.set_size(4 * spec::MIB).unwrap();
        let guid = Guid::new_random().unwrap();
        let mut w = LogWriter::new(REGION);
        w.write_entry(&file, guid, &[(3 * spec::MIB, page(1))], 4 * spec::MIB)
            .unwrap();
        let err = find_active(&file, REGION, guid, 2 * spec::MIB).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        let mut w = LogWriter::new(REGION);
        w.write_entry(&file, guid, &[(4096, page(1))], 4 * spec::MIB)
            .unwrap();
        let err = find_active(&file, REGION, guid, 4 * spec::MIB).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn absurd_last_file_offset_is_corrupt_not_an_overflow() {
        let file = MemFile::new();
        file.set_size(4 * spec::MIB).unwrap();
        let guid = Guid::new_random().unwrap();
        LogWriter::new(REGION)
            .write_entry(&file, guid, &[(3 * spec::MIB, page(1))], 4 * spec::MIB)
            .unwrap();
        // Rewrite the entry's last_file_offset (byte 56 of its header) and its checksum.
        let mut entry = vec![0u8; 8192];
        file.read_at(REGION.offset, &mut entry).unwrap();
        entry[56..64].copy_from_slice(&(u64::MAX - 5).to_le_bytes());
        let crc = spec::crc32c_with_hole(&entry, spec::LOG_CHECKSUM_OFFSET);
        entry[4..8].copy_from_slice(&crc.to_le_bytes());
        file.write_at(REGION.offset, &entry).unwrap();
        let err = find_active(&file, REGION, guid, 4 * spec::MIB).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn replayed_file_overlays_pages_without_writing_the_base() {
        let base = Arc::new(MemFile::from_vec(vec![7u8; 3 * 4096]));
        let replay = Replay {
            writes: vec![
                LoggedWrite::Data {
                    offset: 4096,
                    page: Box::new(page(9)),
                },
                LoggedWrite::Zero {
                    offset: 8192,
                    length: 8192,
                },
            ],
            last_file_offset: 0,
            head_sequence: 1,
        };
        let f = ReplayedFile::new(base.clone(), replay).unwrap();
        assert_eq!(f.size().unwrap(), 4 * 4096);
        let mut buf = vec![0u8; 4 * 4096];
        f.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf[..4096], &[7; 4096]);
        assert_eq!(&buf[4096..8192], &page(9));
        assert_eq!(&buf[8192..], &[0; 8192]);
        let mut small = [0u8; 10];
        f.read_at(4096 + 4090, &mut small).unwrap();
        assert_eq!(&small[..6], &page(9)[4090..]);
        assert_eq!(&small[6..], &[0; 4]);
        assert!(f.write_at(0, b"x").is_err());
        f.read_at(0, &mut []).unwrap();
        assert_eq!(base.to_vec(), vec![7u8; 3 * 4096]);
    }
}
