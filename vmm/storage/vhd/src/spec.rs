//! On-disk layout of VHD (Virtual Hard Disk Image Format Specification, version 1.0).
//!
//! Every multi-byte field is big-endian. The structures are `zerocopy` views, so parsing is a
//! bounds-checked copy out of a buffer, never a pointer cast.

use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;
use zerocopy::byteorder::big_endian::U16;
use zerocopy::byteorder::big_endian::U32;
use zerocopy::byteorder::big_endian::U64;

/// Bytes in a VHD sector (the format knows no other sector size).
pub const SECTOR_SIZE: u64 = 512;
/// The footer's cookie.
pub const FOOTER_COOKIE: [u8; 8] = *b"conectix";
/// The dynamic header's cookie.
pub const DYNAMIC_COOKIE: [u8; 8] = *b"cxsparse";
/// `features`: the reserved bit that must always be set.
pub const FEATURES_RESERVED: u32 = 0x0000_0002;
/// `format_version` and `header_version`: 1.0.
pub const VERSION_1_0: u32 = 0x0001_0000;
/// `data_offset` of a fixed disk (no dynamic header).
pub const NO_DATA_OFFSET: u64 = u64::MAX;
/// A BAT entry for a block that is not allocated.
pub const BAT_UNUSED: u32 = u32::MAX;
/// Unix time of the VHD epoch, 2000-01-01T00:00:00Z.
pub const EPOCH_UNIX_SECONDS: u64 = 946_684_800;
/// The largest geometry the footer can express; sizes beyond it use `current_size` verbatim.
pub const MAX_CHS: (u16, u8, u8) = (65535, 16, 255);
/// The largest virtual size VHD tools accept (2040 GiB).
pub const MAX_DISK_SIZE: u64 = 0xff00_0000 * SECTOR_SIZE;
/// The default (and Hyper-V's) dynamic block size.
pub const DEFAULT_BLOCK_SIZE: u32 = 2 << 20;
/// The smallest block size agar accepts (one sector bitmap byte's worth of sectors).
pub const MIN_BLOCK_SIZE: u32 = 4096;
/// The largest block size agar accepts.
pub const MAX_BLOCK_SIZE: u32 = 256 << 20;

/// `disk_type` values.
pub mod disk_type {
    /// Fixed hard disk: raw data followed by the footer.
    pub const FIXED: u32 = 2;
    /// Dynamic hard disk: sparse blocks located by a BAT.
    pub const DYNAMIC: u32 = 3;
    /// Differencing hard disk: a dynamic disk whose absent sectors come from a parent.
    pub const DIFFERENCING: u32 = 4;
}

/// Parent-locator platform codes (differencing disks).
pub mod platform {
    /// No locator in this slot.
    pub const NONE: [u8; 4] = [0; 4];
    /// Absolute Windows path, UTF-16LE.
    pub const W2KU: [u8; 4] = *b"W2ku";
    /// Relative Windows path, UTF-16LE.
    pub const W2RU: [u8; 4] = *b"W2ru";
    /// Deprecated absolute Windows path (ANSI).
    pub const WI2K: [u8; 4] = *b"Wi2k";
    /// Deprecated relative Windows path (ANSI).
    pub const WI2R: [u8; 4] = *b"Wi2r";
    /// macOS file URL, UTF-8.
    pub const MACX: [u8; 4] = *b"MacX";
}

/// The 512-byte footer at the end of every VHD (and copied at offset 0 of dynamic ones).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Footer {
    /// [`FOOTER_COOKIE`].
    pub cookie: [u8; 8],
    /// Feature bits; [`FEATURES_RESERVED`] is always set.
    pub features: U32,
    /// [`VERSION_1_0`].
    pub format_version: U32,
    /// Offset of the dynamic header, or [`NO_DATA_OFFSET`] for fixed disks.
    pub data_offset: U64,
    /// Creation time, seconds since [`EPOCH_UNIX_SECONDS`].
    pub timestamp: U32,
    /// Creating application (`win `, `qemu`, `vpc `, ...).
    pub creator_app: [u8; 4],
    /// Creating application's version.
    pub creator_version: U32,
    /// Creating host OS (`Wi2k`, `Mac `).
    pub creator_os: [u8; 4],
    /// Size at creation.
    pub original_size: U64,
    /// Current virtual size in bytes.
    pub current_size: U64,
    /// CHS geometry: cylinders.
    pub cylinders: U16,
    /// CHS geometry: heads.
    pub heads: u8,
    /// CHS geometry: sectors per track.
    pub sectors_per_track: u8,
    /// One of [`disk_type`].
    pub disk_type: U32,
    /// One's complement of the byte sum of the footer without this field.
    pub checksum: U32,
    /// Identifies the disk; differencing children record their parent's.
    pub unique_id: [u8; 16],
    /// Non-zero when the disk holds a saved VM state.
    pub saved_state: u8,
    /// Zero.
    pub reserved: [u8; 427],
}

/// One parent-locator slot of the dynamic header.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ParentLocator {
    /// One of [`platform`].
    pub platform_code: [u8; 4],
    /// Space reserved for the locator (in sectors per the spec; some writers use bytes).
    pub platform_data_space: U32,
    /// Bytes of locator data.
    pub platform_data_length: U32,
    /// Zero.
    pub reserved: U32,
    /// File offset of the locator data.
    pub platform_data_offset: U64,
}

/// The 1024-byte dynamic-disk header.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DynamicHeader {
    /// [`DYNAMIC_COOKIE`].
    pub cookie: [u8; 8],
    /// Unused: [`NO_DATA_OFFSET`].
    pub data_offset: U64,
    /// File offset of the BAT.
    pub table_offset: U64,
    /// [`VERSION_1_0`].
    pub header_version: U32,
    /// Number of BAT entries.
    pub max_table_entries: U32,
    /// Bytes of data per block (power of two; 2 MiB by default).
    pub block_size: U32,
    /// One's complement of the byte sum of the header without this field.
    pub checksum: U32,
    /// Differencing disks: the parent's footer `unique_id`.
    pub parent_unique_id: [u8; 16],
    /// Differencing disks: the parent's modification time.
    pub parent_timestamp: U32,
    /// Zero.
    pub reserved1: U32,
    /// Differencing disks: the parent's file name, UTF-16BE, NUL-padded.
    pub parent_unicode_name: [u8; 512],
    /// Differencing disks: where to find the parent.
    pub parent_locators: [ParentLocator; 8],
    /// Zero.
    pub reserved2: [u8; 256],
}

const _: () = assert!(size_of::<Footer>() == 512);
const _: () = assert!(size_of::<ParentLocator>() == 24);
const _: () = assert!(size_of::<DynamicHeader>() == 1024);

/// Byte offset of `Footer::checksum`.
pub const FOOTER_CHECKSUM_OFFSET: usize = 64;
/// Byte offset of `DynamicHeader::checksum`.
pub const DYNAMIC_CHECKSUM_OFFSET: usize = 36;

/// The VHD checksum: the one's complement of the sum of all bytes, skipping the four bytes of
/// the checksum field at `checksum_offset`.
pub fn checksum(bytes: &[u8], checksum_offset: usize) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(checksum_offset..checksum_offset + 4).contains(i))
        .fold(0u32, |sum, (_, &b)| sum.wrapping_add(u32::from(b)));
    !sum
}

impl Footer {
    /// Computes and stores the checksum.
    pub fn seal(&mut self) {
        self.checksum = U32::new(0);
        self.checksum = U32::new(checksum(self.as_bytes(), FOOTER_CHECKSUM_OFFSET));
    }

    /// Whether the stored checksum matches the contents.
    pub fn checksum_ok(&self) -> bool {
        self.checksum.get() == checksum(self.as_bytes(), FOOTER_CHECKSUM_OFFSET)
    }

    /// The CHS geometry as sectors.
    pub fn chs_sectors(&self) -> u64 {
        u64::from(self.cylinders.get()) * u64::from(self.heads) * u64::from(self.sectors_per_track)
    }
}

impl DynamicHeader {
    /// Computes and stores the checksum.
    pub fn seal(&mut self) {
        self.checksum = U32::new(0);
        self.checksum = U32::new(checksum(self.as_bytes(), DYNAMIC_CHECKSUM_OFFSET));
    }

    /// Whether the stored checksum matches the contents.
    pub fn checksum_ok(&self) -> bool {
        self.checksum.get() == checksum(self.as_bytes(), DYNAMIC_CHECKSUM_OFFSET)
    }
}

/// The CHS geometry the VHD specification (appendix "CHS Calculation") assigns to a disk of
/// `total_sectors` sectors: `(cylinders, heads, sectors per track)`.
pub fn geometry_for(total_sectors: u64) -> (u16, u8, u8) {
    let max = u64::from(MAX_CHS.0) * u64::from(MAX_CHS.1) * u64::from(MAX_CHS.2);
    let total = total_sectors.min(max);
    let (spt, heads, cyl_times_heads) = if total >= 65535 * 16 * 63 {
        (255u64, 16u64, total / 255)
    } else {
        let mut spt = 17u64;
        let mut cth = total / spt;
        let mut heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cth = total / spt;
        }
        if cth >= heads * 1024 {
            spt = 63;
            heads = 16;
            cth = total / spt;
        }
        (spt, heads, cth)
    };
    let cylinders = (cyl_times_heads / heads).min(u64::from(u16::MAX));
    // Each value is bounded above: cylinders by the `min`, heads by 16, spt by 255.
    (cylinders as u16, heads as u8, spt as u8)
}

/// Seconds since the VHD epoch for a Unix time, saturating at the format's limits.
pub fn timestamp_from_unix(unix_seconds: u64) -> u32 {
    u32::try_from(unix_seconds.saturating_sub(EPOCH_UNIX_SECONDS)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn geometry_matches_the_specification_table() {
        // 100 MiB: 12 heads, 17 sectors per track, 12047 / 12 cylinders. (qemu-img rounds
        // its sizes up to a whole geometry and writes 1004 cylinders for the same request.)
        assert_eq!(geometry_for(100 << 11), (1003, 12, 17));
        // 4 GiB needs 63 sectors per track.
        assert_eq!(geometry_for(4 << 21), (8322, 16, 63));
        // 127 GiB and beyond saturate at the maximum geometry.
        assert_eq!(geometry_for(u64::MAX), MAX_CHS);
        assert_eq!(geometry_for(0), (0, 4, 17));
    }

    #[test]
    fn checksum_skips_its_own_field() {
        let mut f = Footer::new_zeroed();
        f.cookie = FOOTER_COOKIE;
        f.seal();
        assert!(f.checksum_ok());
        let sum: u32 = FOOTER_COOKIE.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(f.checksum.get(), !sum);
        f.heads = 1;
        assert!(!f.checksum_ok());
    }
}
