//! Parsing the header section (file identifier, headers, region tables) and the metadata
//! region (known items and the parent locator).

use std::collections::BTreeMap;

use image_file::ImageFile;
use zerocopy::FromBytes;

use crate::Error;
use crate::ErrorKind;
use crate::Guid;
use crate::Result;
use crate::spec;
use crate::spec::MIB;

/// The current header and its slot (0 or 1).
pub(crate) fn read_headers(file: &dyn ImageFile) -> Result<(spec::Header, usize)> {
    let mut id = [0u8; 8];
    file.read_at(0, &mut id)
        .map_err(|e| Error::io("reading the file identifier", e))?;
    if id != spec::FILE_SIGNATURE {
        return Err(Error::corrupt("no `vhdxfile` signature"));
    }
    let mut best: Option<(spec::Header, usize)> = None;
    for (slot, &offset) in spec::HEADER_OFFSETS.iter().enumerate() {
        let mut raw = vec![0u8; spec::HEADER_SIZE];
        file.read_at(offset, &mut raw)
            .map_err(|e| Error::io("reading a header", e))?;
        let Ok((h, _)) = spec::Header::read_from_prefix(&raw) else {
            continue;
        };
        let valid = &h.signature == b"head"
            && h.checksum.get() == spec::crc32c_with_hole(&raw, spec::HEADER_CHECKSUM_OFFSET);
        if !valid {
            tracing::debug!(slot, "VHDX header is not valid");
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|(b, _)| h.sequence_number.get() > b.sequence_number.get())
        {
            best = Some((h, slot));
        }
    }
    let (header, slot) = best.ok_or_else(|| Error::corrupt("neither header is valid"))?;
    if header.version.get() != 1 {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("format version {}", header.version.get()),
        ));
    }
    Ok((header, slot))
}

/// A region: file offset and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub offset: u64,
    pub length: u64,
}

impl Region {
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }

    pub fn overlaps(&self, offset: u64, length: u64) -> bool {
        offset < self.end() && self.offset < offset + length
    }
}

/// The BAT and metadata regions from the first valid region table.
pub(crate) fn read_regions(file: &dyn ImageFile, file_len: u64) -> Result<(Region, Region)> {
    let mut last_error = None;
    for &offset in &spec::REGION_TABLE_OFFSETS {
        match read_region_table(file, offset, file_len) {
            Ok(r) => return Ok(r),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| Error::corrupt("no region table")))
}

fn read_region_table(file: &dyn ImageFile, offset: u64, file_len: u64) -> Result<(Region, Region)> {
    let mut raw = vec![0u8; spec::REGION_TABLE_SIZE];
    file.read_at(offset, &mut raw)
        .map_err(|e| Error::io("reading a region table", e))?;
    let (h, _) = spec::RegionTableHeader::read_from_prefix(&raw)
        .map_err(|_| Error::corrupt("region table"))?;
    if &h.signature != b"regi" {
        return Err(Error::corrupt("region table signature is not `regi`"));
    }
    if h.checksum.get() != spec::crc32c_with_hole(&raw, 4) {
        return Err(Error::corrupt("region table checksum mismatch"));
    }
    let count = h.entry_count.get();
    if count > spec::REGION_TABLE_MAX_ENTRIES {
        return Err(Error::corrupt(format!("{count} region table entries")));
    }
    let mut bat = None;
    let mut metadata = None;
    let mut seen: Vec<Region> = Vec::new();
    for i in 0..count as usize {
        let at = 16 + 32 * i;
        let e = spec::RegionTableEntry::read_from_bytes(&raw[at..at + 32])
            .map_err(|_| Error::corrupt("region table entry"))?;
        let region = Region {
            offset: e.file_offset.get(),
            length: u64::from(e.length.get()),
        };
        if !region.offset.is_multiple_of(MIB)
            || !region.length.is_multiple_of(MIB)
            || region.length == 0
            || region.offset < spec::HEADER_SECTION_SIZE
            || region
                .offset
                .checked_add(region.length)
                .is_none_or(|end| end > file_len)
        {
            return Err(Error::corrupt(format!(
                "region {} at {} of {} bytes is misplaced (file is {file_len} bytes)",
                e.guid, region.offset, region.length
            )));
        }
        if seen
            .iter()
            .any(|r| r.overlaps(region.offset, region.length))
        {
            return Err(Error::corrupt("regions overlap"));
        }
        seen.push(region);
        let slot = if e.guid == spec::BAT_REGION {
            &mut bat
        } else if e.guid == spec::METADATA_REGION {
            &mut metadata
        } else if e.required.get() & 1 != 0 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("required region {}", e.guid),
            ));
        } else {
            continue;
        };
        if slot.replace(region).is_some() {
            return Err(Error::corrupt(format!("region {} appears twice", e.guid)));
        }
    }
    match (bat, metadata) {
        (Some(b), Some(m)) => Ok((b, m)),
        _ => Err(Error::corrupt("region table lacks the BAT or the metadata")),
    }
}

/// What the metadata region says about the virtual disk.
#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    pub block_size: u32,
    pub leave_blocks_allocated: bool,
    pub has_parent: bool,
    pub disk_size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub page83: Guid,
    /// Parent locator key/value pairs (differencing disks).
    pub parent_locator: BTreeMap<String, String>,
}

pub(crate) fn read_metadata(file: &dyn ImageFile, region: Region) -> Result<Metadata> {
    if region.length < spec::METADATA_TABLE_SIZE as u64 {
        return Err(Error::corrupt("metadata region smaller than its table"));
    }
    let mut raw = vec![0u8; spec::METADATA_TABLE_SIZE];
    file.read_at(region.offset, &mut raw)
        .map_err(|e| Error::io("reading the metadata table", e))?;
    let (h, _) = spec::MetadataTableHeader::read_from_prefix(&raw)
        .map_err(|_| Error::corrupt("metadata table"))?;
    if &h.signature != b"metadata" {
        return Err(Error::corrupt("metadata table signature is not `metadata`"));
    }
    let count = h.entry_count.get();
    if count > spec::METADATA_MAX_ENTRIES {
        return Err(Error::corrupt(format!("{count} metadata entries")));
    }
    let mut items: BTreeMap<[u8; 16], Vec<u8>> = BTreeMap::new();
    for i in 0..usize::from(count) {
        let at = 32 + 32 * i;
        let e = spec::MetadataTableEntry::read_from_bytes(&raw[at..at + 32])
            .map_err(|_| Error::corrupt("metadata entry"))?;
        let known = [
            spec::item::FILE_PARAMETERS,
            spec::item::VIRTUAL_DISK_SIZE,
            spec::item::PAGE_83_DATA,
            spec::item::LOGICAL_SECTOR_SIZE,
            spec::item::PHYSICAL_SECTOR_SIZE,
            spec::item::PARENT_LOCATOR,
        ]
        .contains(&e.item_id);
        if !known {
            if e.flags.get() & spec::META_IS_REQUIRED != 0 {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("required metadata item {}", e.item_id),
                ));
            }
            continue;
        }
        let (offset, length) = (u64::from(e.offset.get()), e.length.get());
        if length == 0 {
            continue;
        }
        if length > spec::METADATA_MAX_ITEM_SIZE
            || offset < spec::METADATA_TABLE_SIZE as u64
            || offset + u64::from(length) > region.length
        {
            return Err(Error::corrupt(format!(
                "metadata item {} of {length} bytes at {offset} is misplaced",
                e.item_id
            )));
        }
        // At most 1 MiB, checked above.
        let mut value = vec![0u8; length as usize];
        file.read_at(region.offset + offset, &mut value)
            .map_err(|e| Error::io("reading a metadata item", e))?;
        if items.insert(e.item_id.bytes(), value).is_some() {
            return Err(Error::corrupt(format!(
                "metadata item {} appears twice",
                e.item_id
            )));
        }
    }
    let item = |id: Guid, min_len: usize| -> Result<Option<&[u8]>> {
        match items.get(&id.bytes()) {
            None => Ok(None),
            Some(v) if v.len() >= min_len => Ok(Some(v.as_slice())),
            Some(_) => Err(Error::corrupt(format!("metadata item {id} is too short"))),
        }
    };
    let required = |id: Guid, min_len: usize, what: &str| -> Result<&[u8]> {
        item(id, min_len)?.ok_or_else(|| Error::corrupt(format!("metadata lacks the {what}")))
    };
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);

    let params = required(spec::item::FILE_PARAMETERS, 8, "file parameters")?;
    let block_size = u32_at(params, 0);
    let flags = u32_at(params, 4);
    if !block_size.is_power_of_two()
        || !(spec::MIN_BLOCK_SIZE..=spec::MAX_BLOCK_SIZE).contains(&block_size)
    {
        return Err(Error::corrupt(format!("block size {block_size}")));
    }
    let size_bytes = required(spec::item::VIRTUAL_DISK_SIZE, 8, "virtual disk size")?;
    let mut size = [0u8; 8];
    size.copy_from_slice(&size_bytes[..8]);
    let disk_size = u64::from_le_bytes(size);
    let lss = u32_at(
        required(spec::item::LOGICAL_SECTOR_SIZE, 4, "logical sector size")?,
        0,
    );
    let pss = match item(spec::item::PHYSICAL_SECTOR_SIZE, 4)? {
        Some(b) => u32_at(b, 0),
        None => lss,
    };
    for (what, s) in [("logical", lss), ("physical", pss)] {
        if s != 512 && s != 4096 {
            return Err(Error::corrupt(format!("{what} sector size {s}")));
        }
    }
    if disk_size == 0 || disk_size % u64::from(lss) != 0 || disk_size > spec::MAX_DISK_SIZE {
        return Err(Error::corrupt(format!(
            "virtual disk size {disk_size} (logical sector size {lss})"
        )));
    }
    let page83 = match item(spec::item::PAGE_83_DATA, 16)? {
        Some(b) => Guid::read_from_bytes(&b[..16]).map_err(|_| Error::corrupt("page 83"))?,
        None => Guid::ZERO,
    };
    let has_parent = flags & spec::HAS_PARENT != 0;
    let parent_locator = if has_parent {
        let raw = required(spec::item::PARENT_LOCATOR, 20, "parent locator")?;
        parse_locator(raw)?
    } else {
        BTreeMap::new()
    };
    Ok(Metadata {
        block_size,
        leave_blocks_allocated: flags & spec::LEAVE_BLOCKS_ALLOCATED != 0,
        has_parent,
        disk_size,
        logical_sector_size: lss,
        physical_sector_size: pss,
        page83,
        parent_locator,
    })
}

fn parse_locator(raw: &[u8]) -> Result<BTreeMap<String, String>> {
    let (h, _) = spec::ParentLocatorHeader::read_from_prefix(raw)
        .map_err(|_| Error::corrupt("parent locator"))?;
    if h.locator_type != spec::PARENT_LOCATOR_VHDX {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("parent locator type {}", h.locator_type),
        ));
    }
    let mut out = BTreeMap::new();
    for i in 0..usize::from(h.key_value_count.get()) {
        let at = 20 + 12 * i;
        let e = raw
            .get(at..at + 12)
            .and_then(|b| spec::ParentLocatorEntry::read_from_bytes(b).ok())
            .ok_or_else(|| Error::corrupt("parent locator entries overrun the item"))?;
        let string = |offset: u32, len: u16| -> Result<String> {
            let (offset, len) = (offset as usize, usize::from(len));
            let bytes = raw
                .get(offset..offset.saturating_add(len))
                .filter(|b| len > 0 && len % 2 == 0 && b.len() == len)
                .ok_or_else(|| Error::corrupt("parent locator string is misplaced"))?;
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            Ok(String::from_utf16_lossy(&units))
        };
        let key = string(e.key_offset.get(), e.key_length.get())?;
        let value = string(e.value_offset.get(), e.value_length.get())?;
        out.insert(key, value);
    }
    Ok(out)
}
