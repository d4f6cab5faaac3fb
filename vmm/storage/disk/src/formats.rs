//! [`Disk`] over the VHD and VHDX format crates.

use crate::Disk;
use crate::DiskError;
use crate::DiskId;
use crate::check_request;
use crate::check_sectors;

/// A VHD image as a disk (512-byte sectors).
#[derive(Debug)]
pub struct VhdDisk {
    vhd: vhd::Vhd,
}

impl VhdDisk {
    /// Wraps an opened image.
    pub fn new(vhd: vhd::Vhd) -> Self {
        Self { vhd }
    }

    /// The image.
    pub fn vhd(&self) -> &vhd::Vhd {
        &self.vhd
    }
}

impl Disk for VhdDisk {
    fn sector_size(&self) -> u32 {
        512
    }

    fn sector_count(&self) -> u64 {
        self.vhd.disk_size() / 512
    }

    fn is_read_only(&self) -> bool {
        self.vhd.is_read_only()
    }

    fn disk_id(&self) -> DiskId {
        DiskId(self.vhd.unique_id())
    }

    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let offset = check_request(self, sector, buf.len())?;
        self.vhd
            .read(offset, buf)
            .map_err(|e| DiskError::from(e).in_context(format!("reading sector {sector}")))
    }

    fn write(&self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
        let offset = check_request(self, sector, buf.len())?;
        self.vhd
            .write(offset, buf)
            .map_err(|e| DiskError::from(e).in_context(format!("writing sector {sector}")))
    }

    fn flush(&self) -> Result<(), DiskError> {
        self.vhd
            .flush()
            .map_err(|e| DiskError::from(e).in_context("flushing"))
    }

    fn unmap(&self, sector: u64, count: u64) -> Result<(), DiskError> {
        check_sectors(self, sector, count)
    }

    fn describe(&self) -> String {
        let kind = match self.vhd.disk_type() {
            vhd::DiskType::Fixed => "fixed",
            vhd::DiskType::Dynamic => "dynamic",
            vhd::DiskType::Differencing => "differencing",
        };
        format!("vhd {kind}")
    }
}

/// A VHDX image as a disk.
#[derive(Debug)]
pub struct VhdxDisk {
    vhdx: vhdx::Vhdx,
}

impl VhdxDisk {
    /// Wraps an opened image.
    pub fn new(vhdx: vhdx::Vhdx) -> Self {
        Self { vhdx }
    }

    /// The image.
    pub fn vhdx(&self) -> &vhdx::Vhdx {
        &self.vhdx
    }
}

impl Disk for VhdxDisk {
    fn sector_size(&self) -> u32 {
        self.vhdx.logical_sector_size()
    }

    fn physical_sector_size(&self) -> u32 {
        self.vhdx.physical_sector_size()
    }

    fn sector_count(&self) -> u64 {
        self.vhdx.disk_size() / u64::from(self.vhdx.logical_sector_size())
    }

    fn is_read_only(&self) -> bool {
        self.vhdx.is_read_only()
    }

    fn disk_id(&self) -> DiskId {
        DiskId(self.vhdx.page83_id().bytes())
    }

    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let offset = check_request(self, sector, buf.len())?;
        self.vhdx
            .read(offset, buf)
            .map_err(|e| DiskError::from(e).in_context(format!("reading sector {sector}")))
    }

    fn write(&self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
        let offset = check_request(self, sector, buf.len())?;
        self.vhdx
            .write(offset, buf)
            .map_err(|e| DiskError::from(e).in_context(format!("writing sector {sector}")))
    }

    fn flush(&self) -> Result<(), DiskError> {
        self.vhdx
            .flush()
            .map_err(|e| DiskError::from(e).in_context("flushing"))
    }

    fn unmap(&self, sector: u64, count: u64) -> Result<(), DiskError> {
        check_sectors(self, sector, count)
    }

    fn describe(&self) -> String {
        let kind = if self.vhdx.has_parent() {
            "differencing"
        } else if self.vhdx.is_fixed() {
            "fixed"
        } else {
            "dynamic"
        };
        format!("vhdx {kind}")
    }
}
