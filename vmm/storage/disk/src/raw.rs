//! Raw image files: sector N is at byte N × 512.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::Disk;
use crate::DiskError;
use crate::DiskErrorKind;
use crate::DiskId;
use crate::check_request;
use crate::check_sectors;

const SECTOR_SIZE: u32 = 512;

/// A raw image file with 512-byte sectors.
#[derive(Debug)]
pub struct RawDisk {
    file: File,
    sectors: u64,
    read_only: bool,
    id: DiskId,
}

impl RawDisk {
    /// Opens `path`. A trailing partial sector is ignored (and logged).
    pub fn open(path: &Path, read_only: bool) -> Result<Self, DiskError> {
        let context = || format!("opening {}", path.display());
        let file = File::options()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| DiskError::io(context(), e))?;
        let len = file
            .metadata()
            .map_err(|e| DiskError::io(context(), e))?
            .len();
        if len < u64::from(SECTOR_SIZE) {
            return Err(DiskError::new(
                DiskErrorKind::InvalidArgument,
                format!("{}: a raw image needs at least one sector", path.display()),
            ));
        }
        if !len.is_multiple_of(u64::from(SECTOR_SIZE)) {
            tracing::warn!(
                path = %path.display(),
                len,
                "raw image is not a whole number of sectors; ignoring the tail"
            );
        }
        let canonical = path
            .canonicalize()
            .map_err(|e| DiskError::io(context(), e))?;
        let id = DiskId::from_hash(canonical.as_os_str().as_encoded_bytes());
        Ok(Self {
            file,
            sectors: len / u64::from(SECTOR_SIZE),
            read_only,
            id,
        })
    }
}

impl Disk for RawDisk {
    fn sector_size(&self) -> u32 {
        SECTOR_SIZE
    }

    fn sector_count(&self) -> u64 {
        self.sectors
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn disk_id(&self) -> DiskId {
        self.id
    }

    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let offset = check_request(self, sector, buf.len())?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| DiskError::io(format!("reading sector {sector}"), e))
    }

    fn write(&self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
        if self.read_only {
            return Err(DiskError::new(
                DiskErrorKind::ReadOnly,
                "write to a read-only raw image",
            ));
        }
        let offset = check_request(self, sector, buf.len())?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| DiskError::io(format!("writing sector {sector}"), e))
    }

    fn flush(&self) -> Result<(), DiskError> {
        if self.read_only {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|e| DiskError::io("flushing a raw image", e))
    }

    fn unmap(&self, sector: u64, count: u64) -> Result<(), DiskError> {
        check_sectors(self, sector, count)?;
        if self.read_only {
            return Err(DiskError::new(
                DiskErrorKind::ReadOnly,
                "unmap on a read-only raw image",
            ));
        }
        if count == 0 {
            return Ok(());
        }
        // The range reads as zeros afterwards and its blocks go back to the host file
        // system. Unmap is advisory, so a file system without hole punching (EOPNOTSUPP)
        // just keeps the data.
        let offset = sector * u64::from(SECTOR_SIZE);
        let flags = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(&self.file, flags, offset, count * u64::from(SECTOR_SIZE)) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::OPNOTSUPP) => Ok(()),
            Err(e) => Err(DiskError::io(
                format!("unmapping {count} sectors at {sector}"),
                e.into(),
            )),
        }
    }

    fn describe(&self) -> String {
        "raw".to_string()
    }
}
