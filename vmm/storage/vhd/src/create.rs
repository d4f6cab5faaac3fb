//! Creating fixed, dynamic and differencing images.

use std::time::SystemTime;

use image_file::ImageFile;
use zerocopy::FromZeros;
use zerocopy::IntoBytes;
use zerocopy::byteorder::big_endian::U16;
use zerocopy::byteorder::big_endian::U32;
use zerocopy::byteorder::big_endian::U64;

use crate::Error;
use crate::ErrorKind;
use crate::Result;
use crate::Vhd;
use crate::spec;
use crate::spec::SECTOR_SIZE;

/// What [`create`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateParams {
    /// Virtual size in bytes: a non-zero multiple of 512, at most 2040 GiB.
    pub size: u64,
    /// A fixed image (all data present) instead of a dynamic one.
    pub fixed: bool,
    /// Block size of a dynamic image: a power of two from 4 KiB to 256 MiB.
    pub block_size: u32,
}

impl CreateParams {
    /// A dynamic image with the default 2 MiB blocks.
    pub fn dynamic(size: u64) -> Self {
        Self {
            size,
            fixed: false,
            block_size: spec::DEFAULT_BLOCK_SIZE,
        }
    }

    /// A fixed image.
    pub fn fixed(size: u64) -> Self {
        Self {
            size,
            fixed: true,
            block_size: spec::DEFAULT_BLOCK_SIZE,
        }
    }
}

/// Writes a new, empty (all-zero) image into `file`, which should be empty.
pub fn create(file: &dyn ImageFile, params: &CreateParams) -> Result<()> {
    check_size(params.size)?;
    if params.fixed {
        let footer = footer(params.size, spec::disk_type::FIXED)?;
        file.set_size(params.size + SECTOR_SIZE)
            .map_err(|e| Error::io("sizing the image", e))?;
        return file
            .write_at(params.size, footer.as_bytes())
            .map_err(|e| Error::io("writing the footer", e));
    }
    let footer = footer(params.size, spec::disk_type::DYNAMIC)?;
    write_sparse(file, &footer, params.block_size, None)
}

/// Writes a new differencing image over `parent` into `file`, which should be empty.
/// `relative_path` (from the child's directory) and `absolute_path` become the parent locators,
/// in Windows form (`\` separators), as Hyper-V writes them.
pub fn create_differencing(
    file: &dyn ImageFile,
    parent: &Vhd,
    relative_path: &str,
    absolute_path: &str,
    block_size: u32,
) -> Result<()> {
    let footer = footer(parent.disk_size(), spec::disk_type::DIFFERENCING)?;
    let link = ParentLink {
        unique_id: parent.unique_id(),
        timestamp: parent.footer().timestamp.get(),
        relative: relative_path.replace('/', "\\"),
        absolute: absolute_path.replace('/', "\\"),
    };
    write_sparse(file, &footer, block_size, Some(&link))
}

struct ParentLink {
    unique_id: [u8; 16],
    timestamp: u32,
    relative: String,
    absolute: String,
}

fn check_size(size: u64) -> Result<()> {
    if size == 0 || !size.is_multiple_of(SECTOR_SIZE) || size > spec::MAX_DISK_SIZE {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("VHD size {size} must be a non-zero multiple of 512 up to 2040 GiB"),
        ));
    }
    Ok(())
}

fn footer(size: u64, disk_type: u32) -> Result<spec::Footer> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (cylinders, heads, sectors_per_track) = spec::geometry_for(size / SECTOR_SIZE);
    let mut footer = spec::Footer::new_zeroed();
    footer.cookie = spec::FOOTER_COOKIE;
    footer.features = U32::new(spec::FEATURES_RESERVED);
    footer.format_version = U32::new(spec::VERSION_1_0);
    footer.data_offset = U64::new(if disk_type == spec::disk_type::FIXED {
        spec::NO_DATA_OFFSET
    } else {
        SECTOR_SIZE
    });
    footer.timestamp = U32::new(spec::timestamp_from_unix(now));
    footer.creator_app = *b"win ";
    footer.creator_version = U32::new(0x0001_0000);
    footer.creator_os = *b"Wi2k";
    footer.original_size = U64::new(size);
    footer.current_size = U64::new(size);
    footer.cylinders = U16::new(cylinders);
    footer.heads = heads;
    footer.sectors_per_track = sectors_per_track;
    footer.disk_type = U32::new(disk_type);
    footer.unique_id = random_id()?;
    footer.seal();
    Ok(footer)
}

/// Layout: footer copy, dynamic header, parent locators (differencing only), BAT, footer.
fn write_sparse(
    file: &dyn ImageFile,
    footer: &spec::Footer,
    block_size: u32,
    parent: Option<&ParentLink>,
) -> Result<()> {
    if !block_size.is_power_of_two()
        || !(spec::MIN_BLOCK_SIZE..=spec::MAX_BLOCK_SIZE).contains(&block_size)
    {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("VHD block size {block_size} must be a power of two from 4 KiB to 256 MiB"),
        ));
    }
    let size = footer.current_size.get();
    let entries = size.div_ceil(u64::from(block_size));
    let entries32 = u32::try_from(entries)
        .map_err(|_| Error::new(ErrorKind::InvalidArgument, "too many blocks"))?;
    let mut header = spec::DynamicHeader::new_zeroed();
    header.cookie = spec::DYNAMIC_COOKIE;
    header.data_offset = U64::new(spec::NO_DATA_OFFSET);
    header.header_version = U32::new(spec::VERSION_1_0);
    header.max_table_entries = U32::new(entries32);
    header.block_size = U32::new(block_size);

    let io = |what: &str, e| Error::io(format!("creating the image: {what}"), e);
    let mut next = 3 * SECTOR_SIZE;
    if let Some(link) = parent {
        header.parent_unique_id = link.unique_id;
        header.parent_timestamp = U32::new(link.timestamp);
        let name = link.absolute.rsplit('\\').next().unwrap_or(&link.absolute);
        let name_be: Vec<u8> = name.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let n = name_be.len().min(header.parent_unicode_name.len() - 2);
        header.parent_unicode_name[..n].copy_from_slice(&name_be[..n]);
        for (slot, (code, path)) in [
            (spec::platform::W2RU, &link.relative),
            (spec::platform::W2KU, &link.absolute),
        ]
        .into_iter()
        .enumerate()
        {
            let data: Vec<u8> = path.encode_utf16().flat_map(u16::to_le_bytes).collect();
            let space = (data.len() as u64)
                .next_multiple_of(SECTOR_SIZE)
                .max(SECTOR_SIZE);
            let locator = &mut header.parent_locators[slot];
            locator.platform_code = code;
            locator.platform_data_space = U32::new(space as u32);
            locator.platform_data_length = U32::new(data.len() as u32);
            locator.platform_data_offset = U64::new(next);
            file.write_at(next, &data)
                .map_err(|e| io("writing a parent locator", e))?;
            next += space;
        }
    }
    let table_offset = next;
    let table_bytes = (entries * 4).next_multiple_of(SECTOR_SIZE);
    header.table_offset = U64::new(table_offset);
    header.seal();

    file.write_at(0, footer.as_bytes())
        .map_err(|e| io("writing the footer copy", e))?;
    file.write_at(SECTOR_SIZE, header.as_bytes())
        .map_err(|e| io("writing the dynamic header", e))?;
    // Bounded: one 4-byte entry per block of a disk of at most 2040 GiB.
    file.write_at(table_offset, &vec![0xff; table_bytes as usize])
        .map_err(|e| io("writing the BAT", e))?;
    file.write_at(table_offset + table_bytes, footer.as_bytes())
        .map_err(|e| io("writing the footer", e))
}

fn random_id() -> Result<[u8; 16]> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id)
        .map_err(|e| Error::new(ErrorKind::Io, format!("no randomness for a unique id: {e}")))?;
    // An RFC 4122 version 4 UUID.
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    Ok(id)
}
