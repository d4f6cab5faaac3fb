//! Creating fixed, dynamic and differencing images.
//!
//! Layout (every region 1 MiB-aligned): header section (file identifier, two headers, two
//! region tables) in the first MiB; the log (1 MiB) at 1 MiB; metadata (1 MiB) at 2 MiB; the
//! BAT at 3 MiB; then payload blocks.

use image_file::ImageFile;
use zerocopy::FromZeros;
use zerocopy::IntoBytes;
use zerocopy::byteorder::little_endian::U16;
use zerocopy::byteorder::little_endian::U32;
use zerocopy::byteorder::little_endian::U64;

use crate::Error;
use crate::ErrorKind;
use crate::Guid;
use crate::Result;
use crate::Vhdx;
use crate::spec;
use crate::spec::MIB;

const LOG_OFFSET: u64 = MIB;
const LOG_LENGTH: u64 = MIB;
const METADATA_OFFSET: u64 = 2 * MIB;
const METADATA_LENGTH: u64 = MIB;
const BAT_OFFSET: u64 = 3 * MIB;

/// What [`create`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateParams {
    /// Virtual size: a non-zero multiple of the logical sector size, at most 64 TiB.
    pub size: u64,
    /// A fixed image (every block allocated up front) instead of a dynamic one.
    pub fixed: bool,
    /// Payload block size: a power of two from 1 MiB to 256 MiB.
    pub block_size: u32,
    /// 512 or 4096.
    pub logical_sector_size: u32,
    /// 512 or 4096.
    pub physical_sector_size: u32,
}

impl CreateParams {
    /// A dynamic image with 32 MiB blocks and 512-byte sectors.
    pub fn dynamic(size: u64) -> Self {
        Self {
            size,
            fixed: false,
            block_size: spec::DEFAULT_BLOCK_SIZE,
            logical_sector_size: 512,
            physical_sector_size: 512,
        }
    }

    /// A fixed image with 32 MiB blocks and 512-byte sectors.
    pub fn fixed(size: u64) -> Self {
        Self {
            fixed: true,
            ..Self::dynamic(size)
        }
    }
}

/// Writes a new, empty (all-zero) image into `file`, which should be empty.
pub fn create(file: &dyn ImageFile, params: &CreateParams) -> Result<()> {
    write_image(file, params, None)
}

/// Writes a new differencing image over `parent` into `file`, which should be empty. The
/// paths become the locator's `relative_path` and `absolute_win32_path` (with `\` separators).
pub fn create_differencing(
    file: &dyn ImageFile,
    parent: &Vhdx,
    relative_path: &str,
    absolute_path: &str,
) -> Result<()> {
    let params = CreateParams {
        size: parent.disk_size(),
        fixed: false,
        block_size: parent.block_size(),
        logical_sector_size: parent.logical_sector_size(),
        physical_sector_size: parent.physical_sector_size(),
    };
    let locator = [
        (
            "parent_linkage".to_string(),
            format!("{{{}}}", parent.data_write_guid()),
        ),
        (
            "relative_path".to_string(),
            relative_path.replace('/', "\\"),
        ),
        (
            "absolute_win32_path".to_string(),
            absolute_path.replace('/', "\\"),
        ),
    ];
    write_image(file, &params, Some(&locator))
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, msg)
}

fn write_image(
    file: &dyn ImageFile,
    p: &CreateParams,
    locator: Option<&[(String, String)]>,
) -> Result<()> {
    for s in [p.logical_sector_size, p.physical_sector_size] {
        if s != 512 && s != 4096 {
            return Err(invalid(format!("sector size {s} (use 512 or 4096)")));
        }
    }
    let lss = u64::from(p.logical_sector_size);
    if p.size == 0 || !p.size.is_multiple_of(lss) || p.size > spec::MAX_DISK_SIZE {
        return Err(invalid(format!(
            "VHDX size {} must be a non-zero multiple of {lss} up to 64 TiB",
            p.size
        )));
    }
    if !p.block_size.is_power_of_two()
        || !(spec::MIN_BLOCK_SIZE..=spec::MAX_BLOCK_SIZE).contains(&p.block_size)
    {
        return Err(invalid(format!(
            "block size {} must be a power of two from 1 MiB to 256 MiB",
            p.block_size
        )));
    }
    let has_parent = locator.is_some();
    let block_size = u64::from(p.block_size);
    let chunk_ratio = ((1u64 << 23) * lss) / block_size;
    let data_blocks = p.size.div_ceil(block_size);
    let entries = if has_parent {
        data_blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
    } else {
        data_blocks + (data_blocks - 1) / chunk_ratio
    };
    let bat_length = (entries * 8).next_multiple_of(MIB);
    let data_start = BAT_OFFSET + bat_length;
    let io = |what: &str, e| Error::io(format!("creating the image: {what}"), e);

    // File identifier.
    let mut ident = Vec::with_capacity(64);
    ident.extend_from_slice(&spec::FILE_SIGNATURE);
    ident.extend("agar".encode_utf16().flat_map(u16::to_le_bytes));
    file.write_at(0, &ident)
        .map_err(|e| io("writing the file identifier", e))?;

    // Headers.
    let guid = || {
        Guid::new_random()
            .map_err(|e| Error::new(ErrorKind::Io, format!("no randomness for a GUID: {e}")))
    };
    let mut header = spec::Header::new_zeroed();
    header.signature = *b"head";
    header.file_write_guid = guid()?;
    header.data_write_guid = guid()?;
    header.version = U16::new(1);
    header.log_length = U32::new(LOG_LENGTH as u32);
    header.log_offset = U64::new(LOG_OFFSET);
    for (sequence, &offset) in spec::HEADER_OFFSETS.iter().enumerate() {
        header.sequence_number = U64::new(sequence as u64);
        let raw = sealed(header.as_bytes(), spec::HEADER_SIZE);
        file.write_at(offset, &raw)
            .map_err(|e| io("writing a header", e))?;
    }

    // Region tables.
    let mut table = Vec::new();
    let mut rt = spec::RegionTableHeader::new_zeroed();
    rt.signature = *b"regi";
    rt.entry_count = U32::new(2);
    table.extend_from_slice(rt.as_bytes());
    for (guid, offset, length) in [
        (spec::BAT_REGION, BAT_OFFSET, bat_length),
        (spec::METADATA_REGION, METADATA_OFFSET, METADATA_LENGTH),
    ] {
        let mut e = spec::RegionTableEntry::new_zeroed();
        e.guid = guid;
        e.file_offset = U64::new(offset);
        e.length =
            U32::new(u32::try_from(length).map_err(|_| invalid("BAT too large".to_string()))?);
        e.required = U32::new(1);
        table.extend_from_slice(e.as_bytes());
    }
    let table = sealed(&table, spec::REGION_TABLE_SIZE);
    for &offset in &spec::REGION_TABLE_OFFSETS {
        file.write_at(offset, &table)
            .map_err(|e| io("writing a region table", e))?;
    }

    // Metadata.
    let mut flags = 0;
    if p.fixed {
        flags |= spec::LEAVE_BLOCKS_ALLOCATED;
    }
    if has_parent {
        flags |= spec::HAS_PARENT;
    }
    let mut params_item = Vec::new();
    params_item.extend_from_slice(&p.block_size.to_le_bytes());
    params_item.extend_from_slice(&flags.to_le_bytes());
    let vd = spec::META_IS_VIRTUAL_DISK | spec::META_IS_REQUIRED;
    let mut items: Vec<(Guid, u32, Vec<u8>)> = vec![
        (
            spec::item::FILE_PARAMETERS,
            spec::META_IS_REQUIRED,
            params_item,
        ),
        (
            spec::item::VIRTUAL_DISK_SIZE,
            vd,
            p.size.to_le_bytes().to_vec(),
        ),
        (spec::item::PAGE_83_DATA, vd, guid()?.as_bytes().to_vec()),
        (
            spec::item::LOGICAL_SECTOR_SIZE,
            vd,
            p.logical_sector_size.to_le_bytes().to_vec(),
        ),
        (
            spec::item::PHYSICAL_SECTOR_SIZE,
            vd,
            p.physical_sector_size.to_le_bytes().to_vec(),
        ),
    ];
    if let Some(pairs) = locator {
        items.push((
            spec::item::PARENT_LOCATOR,
            spec::META_IS_REQUIRED,
            locator_item(pairs)?,
        ));
    }
    let mut mt = spec::MetadataTableHeader::new_zeroed();
    mt.signature = *b"metadata";
    mt.entry_count = U16::new(items.len() as u16);
    let mut table = mt.as_bytes().to_vec();
    let mut values = Vec::new();
    let values_start = spec::METADATA_TABLE_SIZE as u32;
    for (id, flags, value) in &items {
        let mut e = spec::MetadataTableEntry::new_zeroed();
        e.item_id = *id;
        e.offset = U32::new(values_start + values.len() as u32);
        e.length = U32::new(value.len() as u32);
        e.flags = U32::new(*flags);
        table.extend_from_slice(e.as_bytes());
        values.extend_from_slice(value);
    }
    file.write_at(METADATA_OFFSET, &table)
        .map_err(|e| io("writing the metadata table", e))?;
    file.write_at(METADATA_OFFSET + u64::from(values_start), &values)
        .map_err(|e| io("writing metadata items", e))?;

    // BAT and payload.
    let mut bat = vec![0u8; (entries * 8) as usize];
    let mut file_len = data_start;
    if p.fixed {
        for block in 0..data_blocks {
            let index = block + block / chunk_ratio;
            let entry = spec::bat_entry(
                spec::payload::FULLY_PRESENT,
                data_start + block * block_size,
            );
            let at = (index * 8) as usize;
            bat[at..at + 8].copy_from_slice(&entry.to_le_bytes());
        }
        file_len += data_blocks * block_size;
    }
    file.write_at(BAT_OFFSET, &bat)
        .map_err(|e| io("writing the BAT", e))?;
    file.set_size(file_len)
        .map_err(|e| io("sizing the file", e))?;
    file.sync().map_err(|e| io("syncing", e))
}

/// `bytes` padded to `size` with its CRC-32C stored at offset 4.
fn sealed(bytes: &[u8], size: usize) -> Vec<u8> {
    let mut raw = vec![0u8; size];
    raw[..bytes.len()].copy_from_slice(bytes);
    let crc = spec::crc32c_with_hole(&raw, 4);
    raw[4..8].copy_from_slice(&crc.to_le_bytes());
    raw
}

fn locator_item(pairs: &[(String, String)]) -> Result<Vec<u8>> {
    let mut header = spec::ParentLocatorHeader::new_zeroed();
    header.locator_type = spec::PARENT_LOCATOR_VHDX;
    header.key_value_count = U16::new(pairs.len() as u16);
    let mut out = header.as_bytes().to_vec();
    let mut strings = Vec::new();
    let strings_start = (out.len() + pairs.len() * 12) as u32;
    let mut entries = Vec::new();
    for (k, v) in pairs {
        let k: Vec<u8> = k.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let v: Vec<u8> = v.encode_utf16().flat_map(u16::to_le_bytes).collect();
        if k.len() > 4096 || v.len() > 4096 {
            return Err(invalid("parent path is too long".to_string()));
        }
        let mut e = spec::ParentLocatorEntry::new_zeroed();
        e.key_offset = U32::new(strings_start + strings.len() as u32);
        e.key_length = U16::new(k.len() as u16);
        strings.extend_from_slice(&k);
        e.value_offset = U32::new(strings_start + strings.len() as u32);
        e.value_length = U16::new(v.len() as u16);
        strings.extend_from_slice(&v);
        entries.extend_from_slice(e.as_bytes());
    }
    out.extend_from_slice(&entries);
    out.extend_from_slice(&strings);
    Ok(out)
}
