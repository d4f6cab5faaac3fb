//! The [`Disk`] abstraction the storage device models (IDE, VMBus SCSI) call, its backends,
//! and [`open`], which turns a [`DiskSpec`] (`memdiff:file:disk.vhdx`) into a disk.
//!
//! # Architecture
//!
//! ```text
//!   IDE / storvsp worker threads
//!        │  Arc<dyn Disk>: read / write / flush / unmap, by sector
//!        ▼
//!   RamLayer (mem:, memdiff:)  ──lower──▶  any Disk (opened read-only)
//!   RawDisk (file: raw)
//!   VhdDisk ─▶ vhd::Vhd    VhdxDisk ─▶ vhdx::Vhdx     (file: sniffed VHD / VHDX)
//!                 └──────────┬──────────┘
//!                     image_file::ImageFile (positioned host-file I/O)
//! ```
//!
//! # Concurrency model
//!
//! Every [`Disk`] method takes `&self` and the trait requires `Send + Sync`: a device model
//! shares one `Arc<dyn Disk>` between its worker threads and issues several requests at once.
//! Requests are synchronous (the calling thread does the host I/O; run them off the vCPU
//! thread). Backends never hold a lock across host I/O except where the format needs it:
//! block allocation in VHD/VHDX and sector-bitmap updates are serialized, lookups take short
//! read locks, and the RAM layer locks one of 16 shards per 64 KiB chunk. Overlapping
//! requests in flight at the same time complete in an unspecified order (as on real disks);
//! a [`Disk::flush`] makes every request that completed before it durable.
//!
//! # Errors
//!
//! [`DiskError`] carries a [`DiskErrorKind`] a device maps to guest status (out of range,
//! read-only, medium error), a context and the source. Malformed images fail at [`open`],
//! never with a panic.
//!
//! # Identity
//!
//! [`Disk::disk_id`] is stable across runs for the same image: the VHD footer's unique id, the
//! VHDX page 0x83 GUID, a hash of a raw file's canonical path, or of a RAM disk's size and
//! creation order. A `memdiff:` layer reports its base's id. Devices derive ATA serial numbers
//! and SCSI VPD page 0x80/0x83 identifiers from it ([`DiskId::serial`]).

mod error;
mod formats;
pub mod image;
mod ram;
mod raw;

#[cfg(feature = "cli")]
pub mod cli;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

pub use disk_spec::ByteSize;
pub use disk_spec::DiskSpec;
pub use error::DiskError;
pub use error::DiskErrorKind;
pub use formats::VhdDisk;
pub use formats::VhdxDisk;
pub use ram::RamLayer;
pub use raw::RawDisk;

/// A block device: fixed-size sectors, positioned thread-safe I/O.
pub trait Disk: Send + Sync + fmt::Debug {
    /// Logical sector size in bytes (512 or 4096); every request is a whole number of them.
    fn sector_size(&self) -> u32;

    /// Physical sector size in bytes (a multiple of the logical size).
    fn physical_sector_size(&self) -> u32 {
        self.sector_size()
    }

    /// Number of logical sectors.
    fn sector_count(&self) -> u64;

    /// Whether writes fail with [`DiskErrorKind::ReadOnly`].
    fn is_read_only(&self) -> bool;

    /// A stable identity for serial numbers and SCSI identifiers.
    fn disk_id(&self) -> DiskId;

    /// Reads `buf.len() / sector_size()` sectors starting at `sector`.
    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError>;

    /// Writes `buf.len() / sector_size()` sectors starting at `sector`.
    fn write(&self, sector: u64, buf: &[u8]) -> Result<(), DiskError>;

    /// Makes every write that completed before this call durable.
    fn flush(&self) -> Result<(), DiskError>;

    /// Tells the disk `count` sectors from `sector` are unused. Advisory: afterwards those
    /// sectors read as their old contents, zeros, or (in a `memdiff:` layer) the base's data,
    /// so devices must not promise zeros after unmap.
    fn unmap(&self, sector: u64, count: u64) -> Result<(), DiskError>;

    /// A short description for logs and `agar disk info` (`vhdx dynamic`, `memdiff over raw`).
    fn describe(&self) -> String;
}

/// A stable 16-byte disk identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DiskId(pub [u8; 16]);

impl DiskId {
    /// An identity derived from arbitrary bytes (FNV-1a, two 64-bit lanes; stable forever).
    pub fn from_hash(data: &[u8]) -> Self {
        let lane = |basis: u64| {
            data.iter().fold(basis, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
        };
        let a = lane(0xcbf2_9ce4_8422_2325);
        let b = lane(0x6c62_272e_07bb_0142);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&a.to_be_bytes());
        id[8..].copy_from_slice(&b.to_be_bytes());
        Self(id)
    }

    /// A 20-character serial number (ATA IDENTIFY words 10-19, SCSI VPD page 0x80): the
    /// first 10 bytes in upper-case hex.
    pub fn serial(&self) -> String {
        self.0[..10].iter().map(|b| format!("{b:02X}")).collect()
    }
}

impl fmt::Debug for DiskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for DiskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Validates a request against a disk's geometry; returns its byte offset.
pub fn check_request(disk: &dyn Disk, sector: u64, len: usize) -> Result<u64, DiskError> {
    let sector_size = u64::from(disk.sector_size());
    let len = len as u64;
    if !len.is_multiple_of(sector_size) {
        return Err(DiskError::new(
            DiskErrorKind::InvalidArgument,
            format!("buffer of {len} bytes is not a whole number of {sector_size}-byte sectors"),
        ));
    }
    check_sectors(disk, sector, len / sector_size)?;
    // `sector + count <= sector_count`, and `sector_count * sector_size` is the disk's byte
    // size, which fits in a u64.
    Ok(sector * sector_size)
}

/// Validates that sectors `sector..sector + count` exist.
pub fn check_sectors(disk: &dyn Disk, sector: u64, count: u64) -> Result<(), DiskError> {
    if sector
        .checked_add(count)
        .is_none_or(|end| end > disk.sector_count())
    {
        return Err(DiskError::new(
            DiskErrorKind::OutOfRange,
            format!(
                "sectors {sector}+{count} are past the end of a {}-sector disk",
                disk.sector_count()
            ),
        ));
    }
    Ok(())
}

/// Opens the disk a spec describes.
///
/// `file:` sniffs the format (VHDX by its signature, VHD by its footer, raw otherwise) and
/// follows differencing parents; `;ro` opens it read-only; `;create=SIZE` first creates a
/// missing file, in the format its extension names (`.vhd`, `.vhdx`, else raw; dynamic).
/// `mem:` is a zero-filled RAM disk. `memdiff:` opens the inner disk read-only and puts a RAM
/// layer over it: the guest sees a writable disk, the image never changes.
pub fn open(spec: &DiskSpec) -> Result<Arc<dyn Disk>, DiskError> {
    open_inner(spec, false)
}

fn open_inner(spec: &DiskSpec, force_read_only: bool) -> Result<Arc<dyn Disk>, DiskError> {
    match spec {
        DiskSpec::File {
            path,
            read_only,
            create,
            direct,
        } => {
            if *direct {
                return Err(DiskError::new(
                    DiskErrorKind::Unsupported,
                    format!("{}: `direct` (O_DIRECT) is not implemented", path.display()),
                ));
            }
            if let Some(size) = create
                && !path.exists()
            {
                let format = image::ImageFormat::from_path(path).unwrap_or(image::ImageFormat::Raw);
                image::create(path, format, size.0, &image::CreateOptions::default())?;
            }
            open_file(path, *read_only || force_read_only)
        }
        DiskSpec::Mem(size) => Ok(Arc::new(RamLayer::new_zeroed(size.0, 512)?)),
        DiskSpec::MemDiff(inner) => {
            let lower = open_inner(inner, true)?;
            Ok(Arc::new(RamLayer::over(lower)))
        }
    }
}

/// Opens an image file, sniffing its format.
pub fn open_file(path: &Path, read_only: bool) -> Result<Arc<dyn Disk>, DiskError> {
    let context = || format!("opening {}", path.display());
    match image::sniff(path).map_err(|e| e.in_context(context()))? {
        image::ImageFormat::Vhdx => {
            let vhdx = vhdx::open_path(path, read_only)
                .map_err(|e| DiskError::from(e).in_context(context()))?;
            Ok(Arc::new(VhdxDisk::new(vhdx)))
        }
        image::ImageFormat::Vhd => {
            let vhd = vhd::open_path(path, read_only)
                .map_err(|e| DiskError::from(e).in_context(context()))?;
            Ok(Arc::new(VhdDisk::new(vhd)))
        }
        image::ImageFormat::Raw => Ok(Arc::new(RawDisk::open(path, read_only)?)),
    }
}

#[cfg(test)]
mod tests;
