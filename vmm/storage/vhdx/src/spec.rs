//! On-disk layout of VHDX ([MS-VHDX] "VHDX Format Specification" v1.0).
//!
//! Every multi-byte field is little-endian; GUIDs are stored in the Windows layout (first three
//! fields little-endian). The structures are `zerocopy` views, parsed by bounds-checked copies.

use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;
use zerocopy::byteorder::little_endian::U16;
use zerocopy::byteorder::little_endian::U32;
use zerocopy::byteorder::little_endian::U64;

use crate::Guid;

/// 1 MiB: the alignment of regions, the log and payload blocks.
pub const MIB: u64 = 1 << 20;
/// 64 KiB: the header section's structures are this far apart.
pub const KIB64: u64 = 64 * 1024;
/// The file identifier's signature, at offset 0.
pub const FILE_SIGNATURE: [u8; 8] = *b"vhdxfile";
/// Offsets of the two headers.
pub const HEADER_OFFSETS: [u64; 2] = [KIB64, 2 * KIB64];
/// The header's checksummed size.
pub const HEADER_SIZE: usize = 4096;
/// Offsets of the two region tables.
pub const REGION_TABLE_OFFSETS: [u64; 2] = [3 * KIB64, 4 * KIB64];
/// The region table's checksummed size.
pub const REGION_TABLE_SIZE: usize = 64 * 1024;
/// The most entries a region table holds.
pub const REGION_TABLE_MAX_ENTRIES: u32 = 2047;
/// The header section (file identifier, headers, region tables) is the first 1 MiB.
pub const HEADER_SECTION_SIZE: u64 = MIB;
/// The log may not write below this offset (the headers are never logged).
pub const LOGGABLE_OFFSET: u64 = 3 * KIB64;
/// Log sectors are 4 KiB.
pub const LOG_SECTOR_SIZE: u64 = 4096;
/// The metadata table's size, at the start of the metadata region.
pub const METADATA_TABLE_SIZE: usize = 64 * 1024;
/// The most entries a metadata table holds.
pub const METADATA_MAX_ENTRIES: u16 = 2047;
/// The largest metadata item.
pub const METADATA_MAX_ITEM_SIZE: u32 = MIB as u32;
/// Sector bitmap blocks are 1 MiB.
pub const SECTOR_BITMAP_BLOCK_SIZE: u64 = MIB;
/// Smallest and largest payload block sizes.
pub const MIN_BLOCK_SIZE: u32 = MIB as u32;
/// See [`MIN_BLOCK_SIZE`].
pub const MAX_BLOCK_SIZE: u32 = 256 * MIB as u32;
/// The largest virtual disk.
pub const MAX_DISK_SIZE: u64 = 64 << 40;
/// Largest BAT agar will hold in memory (enough for 64 TiB in 1 MiB blocks).
pub const MAX_BAT_BYTES: u64 = 513 * MIB;
/// Hyper-V's default block size for dynamic disks.
pub const DEFAULT_BLOCK_SIZE: u32 = 32 * MIB as u32;

/// Region GUID of the BAT.
pub const BAT_REGION: Guid = Guid::from_fields(
    0x2dc27766,
    0xf623,
    0x4200,
    [0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08],
);
/// Region GUID of the metadata region.
pub const METADATA_REGION: Guid = Guid::from_fields(
    0x8b7ca206,
    0x4790,
    0x4b9a,
    [0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e],
);

/// Metadata item GUIDs.
pub mod item {
    use crate::Guid;

    /// Block size and flags.
    pub const FILE_PARAMETERS: Guid = Guid::from_fields(
        0xcaa16737,
        0xfa36,
        0x4d43,
        [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
    );
    /// Virtual disk size.
    pub const VIRTUAL_DISK_SIZE: Guid = Guid::from_fields(
        0x2fa54224,
        0xcd1b,
        0x4876,
        [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
    );
    /// SCSI page 0x83 identifier.
    pub const PAGE_83_DATA: Guid = Guid::from_fields(
        0xbeca12ab,
        0xb2e6,
        0x4523,
        [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46],
    );
    /// Logical sector size.
    pub const LOGICAL_SECTOR_SIZE: Guid = Guid::from_fields(
        0x8141bf1d,
        0xa96f,
        0x4709,
        [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
    );
    /// Physical sector size.
    pub const PHYSICAL_SECTOR_SIZE: Guid = Guid::from_fields(
        0xcda348c7,
        0x445d,
        0x4471,
        [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
    );
    /// Parent locator of a differencing disk.
    pub const PARENT_LOCATOR: Guid = Guid::from_fields(
        0xa8d35f2d,
        0xb30b,
        0x454d,
        [0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c],
    );
}

/// Locator type of a VHDX parent.
pub const PARENT_LOCATOR_VHDX: Guid = Guid::from_fields(
    0xb04aefb7,
    0xd19e,
    0x4a81,
    [0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13],
);

/// Payload-block states (low three bits of a BAT entry).
pub mod payload {
    /// Not allocated: zeros, or the parent's data in a differencing disk.
    pub const NOT_PRESENT: u64 = 0;
    /// Contents undefined (treated as not present).
    pub const UNDEFINED: u64 = 1;
    /// Reads as zeros.
    pub const ZERO: u64 = 2;
    /// Unmapped (trimmed): reads as zeros here.
    pub const UNMAPPED: u64 = 3;
    /// The value QEMU uses for "unmapped"; read the same way.
    pub const UNMAPPED_QEMU: u64 = 5;
    /// All of the block is in the file.
    pub const FULLY_PRESENT: u64 = 6;
    /// Differencing disks: the sector bitmap says which sectors are in the file.
    pub const PARTIALLY_PRESENT: u64 = 7;
}

/// Sector-bitmap-block states.
pub mod bitmap {
    /// No bitmap: no sector of the chunk is present.
    pub const NOT_PRESENT: u64 = 0;
    /// The bitmap block is in the file.
    pub const PRESENT: u64 = 6;
}

/// Builds a BAT entry.
pub fn bat_entry(state: u64, file_offset: u64) -> u64 {
    (file_offset & !(MIB - 1)) | (state & 7)
}

/// A BAT entry's state.
pub fn bat_state(entry: u64) -> u64 {
    entry & 7
}

/// A BAT entry's file offset (bits 20..64, in bytes).
pub fn bat_offset(entry: u64) -> u64 {
    entry & !(MIB - 1)
}

/// The CRC-32C the format uses, over `bytes` with the 4-byte checksum at `checksum_offset`
/// counted as zero.
pub fn crc32c_with_hole(bytes: &[u8], checksum_offset: usize) -> u32 {
    let (head, rest) = bytes.split_at(checksum_offset.min(bytes.len()));
    let tail = rest.get(4..).unwrap_or_default();
    let crc = crc32c::crc32c(head);
    let crc = crc32c::crc32c_append(crc, &[0; 4][..rest.len().min(4)]);
    crc32c::crc32c_append(crc, tail)
}

/// One of the two headers (first 80 bytes of the 4 KiB checksummed area).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Header {
    /// `head`.
    pub signature: [u8; 4],
    /// CRC-32C of the 4 KiB header with this field zero.
    pub checksum: U32,
    /// The valid header with the larger sequence number is current.
    pub sequence_number: U64,
    /// Changed before the first write to the file in a session.
    pub file_write_guid: Guid,
    /// Changed before the first change to the virtual disk's contents in a session.
    pub data_write_guid: Guid,
    /// Non-zero while the log may hold entries to replay.
    pub log_guid: Guid,
    /// Zero.
    pub log_version: U16,
    /// One.
    pub version: U16,
    /// Bytes of log (a multiple of 1 MiB).
    pub log_length: U32,
    /// File offset of the log (a multiple of 1 MiB).
    pub log_offset: U64,
}

/// `Header::checksum`'s offset.
pub const HEADER_CHECKSUM_OFFSET: usize = 4;

/// The region table header.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RegionTableHeader {
    /// `regi`.
    pub signature: [u8; 4],
    /// CRC-32C of the 64 KiB table with this field zero.
    pub checksum: U32,
    /// Entries that follow.
    pub entry_count: U32,
    /// Zero.
    pub reserved: U32,
}

/// A region table entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RegionTableEntry {
    /// Which region.
    pub guid: Guid,
    /// File offset (a multiple of 1 MiB).
    pub file_offset: U64,
    /// Length (a multiple of 1 MiB).
    pub length: U32,
    /// Bit 0: a reader must understand this region.
    pub required: U32,
}

/// A log entry's header, at the start of its first 4 KiB sector.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct LogEntryHeader {
    /// `loge`.
    pub signature: [u8; 4],
    /// CRC-32C of the whole entry with this field zero.
    pub checksum: U32,
    /// Bytes in the entry (a multiple of 4 KiB).
    pub entry_length: U32,
    /// Log offset of the first entry of the sequence this entry ends.
    pub tail: U32,
    /// Entries of one sequence count up by one.
    pub sequence_number: U64,
    /// Descriptors that follow the header.
    pub descriptor_count: U32,
    /// Zero.
    pub reserved: U32,
    /// Must equal the header's `log_guid`.
    pub log_guid: Guid,
    /// The file size when the entry was written.
    pub flushed_file_offset: U64,
    /// The file size every structure fits in.
    pub last_file_offset: U64,
}

/// `LogEntryHeader::checksum`'s offset.
pub const LOG_CHECKSUM_OFFSET: usize = 4;

/// A log descriptor (`desc` for a 4 KiB data sector, `zero` for a zeroed range).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct LogDescriptor {
    /// `desc` or `zero`.
    pub signature: [u8; 4],
    /// `desc`: the last 4 bytes of the 4 KiB sector. `zero`: zero.
    pub trailing_bytes: [u8; 4],
    /// `desc`: the first 8 bytes of the sector. `zero`: the length to zero.
    pub leading_bytes: [u8; 8],
    /// Where the sector (or zeroed range) goes (a multiple of 4 KiB).
    pub file_offset: U64,
    /// The entry's sequence number.
    pub sequence_number: U64,
}

/// A log data sector: bytes 8..4092 of the logged sector between a signature and the split
/// sequence number.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct LogDataSector {
    /// `data`.
    pub signature: [u8; 4],
    /// High half of the sequence number.
    pub sequence_high: U32,
    /// The sector's bytes 8..4092.
    pub data: [u8; 4084],
    /// Low half of the sequence number.
    pub sequence_low: U32,
}

/// The metadata table header.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct MetadataTableHeader {
    /// `metadata`.
    pub signature: [u8; 8],
    /// Zero.
    pub reserved: U16,
    /// Entries that follow.
    pub entry_count: U16,
    /// Zero.
    pub reserved2: [U32; 5],
}

/// A metadata table entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct MetadataTableEntry {
    /// Which item.
    pub item_id: Guid,
    /// Offset from the start of the metadata region (at least 64 KiB when `length` > 0).
    pub offset: U32,
    /// Item length (at most 1 MiB).
    pub length: U32,
    /// [`META_IS_USER`], [`META_IS_VIRTUAL_DISK`], [`META_IS_REQUIRED`].
    pub flags: U32,
    /// Zero.
    pub reserved: U32,
}

/// Metadata flag: user metadata.
pub const META_IS_USER: u32 = 1;
/// Metadata flag: describes the virtual disk (as opposed to the file).
pub const META_IS_VIRTUAL_DISK: u32 = 2;
/// Metadata flag: a reader must understand the item.
pub const META_IS_REQUIRED: u32 = 4;

/// The file parameters item.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct FileParameters {
    /// Payload block size.
    pub block_size: U32,
    /// [`LEAVE_BLOCKS_ALLOCATED`], [`HAS_PARENT`].
    pub flags: U32,
}

/// File parameter flag: a fixed disk (blocks never become unallocated).
pub const LEAVE_BLOCKS_ALLOCATED: u32 = 1;
/// File parameter flag: a differencing disk.
pub const HAS_PARENT: u32 = 2;

/// The parent locator item's header; key/value entries follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ParentLocatorHeader {
    /// [`PARENT_LOCATOR_VHDX`].
    pub locator_type: Guid,
    /// Zero.
    pub reserved: U16,
    /// Entries that follow.
    pub key_value_count: U16,
}

/// One key/value pair of a parent locator; offsets are from the start of the item, strings
/// are UTF-16LE.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ParentLocatorEntry {
    /// Key offset.
    pub key_offset: U32,
    /// Value offset.
    pub value_offset: U32,
    /// Key length in bytes.
    pub key_length: U16,
    /// Value length in bytes.
    pub value_length: U16,
}

const _: () = assert!(size_of::<Header>() == 80);
const _: () = assert!(size_of::<RegionTableHeader>() == 16);
const _: () = assert!(size_of::<RegionTableEntry>() == 32);
const _: () = assert!(size_of::<LogEntryHeader>() == 64);
const _: () = assert!(size_of::<LogDescriptor>() == 32);
const _: () = assert!(size_of::<LogDataSector>() == 4096);
const _: () = assert!(size_of::<MetadataTableHeader>() == 32);
const _: () = assert!(size_of::<MetadataTableEntry>() == 32);
const _: () = assert!(size_of::<ParentLocatorHeader>() == 20);
const _: () = assert!(size_of::<ParentLocatorEntry>() == 12);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_with_hole_equals_crc_of_zeroed_field() {
        let mut bytes: Vec<u8> = (0..100u8).collect();
        let expect = {
            let mut z = bytes.clone();
            z[4..8].fill(0);
            crc32c::crc32c(&z)
        };
        assert_eq!(crc32c_with_hole(&bytes, 4), expect);
        bytes[5] = 0xee;
        assert_eq!(crc32c_with_hole(&bytes, 4), expect);
    }

    #[test]
    fn bat_entries_pack_state_and_megabyte_offset() {
        let e = bat_entry(payload::FULLY_PRESENT, 5 * MIB);
        assert_eq!(bat_state(e), 6);
        assert_eq!(bat_offset(e), 5 * MIB);
        assert_eq!(e, (5 << 20) | 6);
    }

    #[test]
    fn region_guids_have_the_documented_byte_order() {
        // 2DC27766-F623-4200-9D64-115E9BFD4A08 on disk, as in every VHDX file.
        assert_eq!(
            BAT_REGION.as_bytes(),
            &[
                0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd,
                0x4a, 0x08
            ]
        );
    }
}
