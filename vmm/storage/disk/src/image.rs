//! Image files as files: sniffing the format, creating, converting, describing. This is what
//! `agar disk info|create|convert` runs.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::Disk;
use crate::DiskError;
use crate::DiskErrorKind;
use crate::open_file;

/// An image file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Raw sectors.
    Raw,
    /// VHD (vhd1).
    Vhd,
    /// VHDX.
    Vhdx,
}

impl ImageFormat {
    /// The format an extension names: `.raw`/`.img`, `.vhd`, `.vhdx` (case-insensitive).
    pub fn from_path(path: &Path) -> Result<Self, DiskError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("raw" | "img") => Ok(Self::Raw),
            Some("vhd") => Ok(Self::Vhd),
            Some("vhdx") => Ok(Self::Vhdx),
            _ => Err(DiskError::new(
                DiskErrorKind::InvalidArgument,
                format!(
                    "{}: unknown image extension (use .raw, .img, .vhd or .vhdx)",
                    path.display()
                ),
            )),
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Raw => "raw",
            Self::Vhd => "vhd",
            Self::Vhdx => "vhdx",
        })
    }
}

/// Identifies an image by its content: the VHDX file signature, a VHD footer (at the end, or
/// its copy at the start), else raw.
///
/// Sniffing trusts the content: a raw disk whose guest wrote a VHD footer into its last sector
/// would open as a VHD next time. agar's test images are created by recipes, not guests, and
/// `memdiff:` keeps guests from writing them.
pub fn sniff(path: &Path) -> Result<ImageFormat, DiskError> {
    let context = || format!("reading {}", path.display());
    let file = File::open(path).map_err(|e| DiskError::io(context(), e))?;
    let len = file
        .metadata()
        .map_err(|e| DiskError::io(context(), e))?
        .len();
    let mut head = [0u8; 8];
    if len >= 8 {
        file.read_exact_at(&mut head, 0)
            .map_err(|e| DiskError::io(context(), e))?;
    }
    if &head == b"vhdxfile" {
        return Ok(ImageFormat::Vhdx);
    }
    if len >= 512 {
        let mut tail = [0u8; 8];
        file.read_exact_at(&mut tail, len - 512)
            .map_err(|e| DiskError::io(context(), e))?;
        if &tail == b"conectix" || &head == b"conectix" {
            return Ok(ImageFormat::Vhd);
        }
    }
    Ok(ImageFormat::Raw)
}

/// How [`create`] lays out an image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Fixed (all blocks allocated) rather than dynamic; ignored for raw.
    pub fixed: bool,
    /// Block size for VHD/VHDX (default: 2 MiB for VHD, 32 MiB for VHDX).
    pub block_size: Option<u32>,
    /// VHDX logical sector size, 512 (default) or 4096.
    pub sector_size: Option<u32>,
}

/// Creates a new, zero-filled image of `size` bytes at `path`; fails if the file exists.
pub fn create(
    path: &Path,
    format: ImageFormat,
    size: u64,
    options: &CreateOptions,
) -> Result<(), DiskError> {
    let context = || format!("creating {}", path.display());
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| DiskError::io(context(), e))?;
    let result = match format {
        ImageFormat::Raw => {
            if size == 0 || !size.is_multiple_of(512) {
                Err(DiskError::new(
                    DiskErrorKind::InvalidArgument,
                    format!("raw size {size} must be a non-zero multiple of 512"),
                ))
            } else {
                file.set_len(size).map_err(|e| DiskError::io(context(), e))
            }
        }
        ImageFormat::Vhd => {
            let mut params = if options.fixed {
                vhd::CreateParams::fixed(size)
            } else {
                vhd::CreateParams::dynamic(size)
            };
            if let Some(b) = options.block_size {
                params.block_size = b;
            }
            vhd::create(&file, &params).map_err(DiskError::from)
        }
        ImageFormat::Vhdx => {
            let mut params = if options.fixed {
                vhdx::CreateParams::fixed(size)
            } else {
                vhdx::CreateParams::dynamic(size)
            };
            if let Some(b) = options.block_size {
                params.block_size = b;
            }
            if let Some(s) = options.sector_size {
                params.logical_sector_size = s;
                params.physical_sector_size = s;
            }
            vhdx::create(&file, &params).map_err(DiskError::from)
        }
    };
    if let Err(e) = result {
        // Leave nothing half-made behind.
        let _ = std::fs::remove_file(path);
        return Err(e.in_context(context()));
    }
    file.sync_all().map_err(|e| DiskError::io(context(), e))
}

/// What [`convert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvertStats {
    /// The virtual size copied.
    pub size: u64,
    /// Bytes actually written (all-zero ranges are skipped).
    pub written: u64,
}

/// Copies the disk in `src` (any format, opened read-only) into a new image `dst` (format from
/// its extension). All-zero 64 KiB ranges are not written, so dynamic images stay sparse.
pub fn convert(src: &Path, dst: &Path, options: &CreateOptions) -> Result<ConvertStats, DiskError> {
    let format = ImageFormat::from_path(dst)?;
    let source = open_file(src, true)?;
    let size = source.sector_count() * u64::from(source.sector_size());
    create(dst, format, size, options)?;
    let result = open_file(dst, false).and_then(|target| copy(&*source, &*target, size));
    match result {
        Ok(written) => Ok(ConvertStats { size, written }),
        Err(e) => {
            let _ = std::fs::remove_file(dst);
            Err(e)
        }
    }
}

fn copy(source: &dyn Disk, target: &dyn Disk, size: u64) -> Result<u64, DiskError> {
    const STEP: u64 = 1 << 20;
    const GRAIN: usize = 64 * 1024;
    let (src_ss, dst_ss) = (
        u64::from(source.sector_size()),
        u64::from(target.sector_size()),
    );
    if !size.is_multiple_of(dst_ss) {
        return Err(DiskError::new(
            DiskErrorKind::InvalidArgument,
            format!("a {size}-byte disk is not a whole number of {dst_ss}-byte sectors"),
        ));
    }
    let mut buf = vec![0u8; STEP as usize];
    let mut written = 0;
    let mut at = 0u64;
    while at < size {
        let n = (size - at).min(STEP);
        let piece = &mut buf[..n as usize];
        source.read(at / src_ss, piece)?;
        // Write runs of non-zero grains (grains are whole sectors of either size).
        let mut g = 0usize;
        while g < piece.len() {
            let end = (g + GRAIN).min(piece.len());
            if piece[g..end].iter().any(|&b| b != 0) {
                target.write((at + g as u64) / dst_ss, &piece[g..end])?;
                written += (end - g) as u64;
            }
            g = end;
        }
        at += n;
    }
    target.flush()?;
    Ok(written)
}

/// A description of an image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The format.
    pub format: ImageFormat,
    /// `fixed`, `dynamic` or `differencing` (empty for raw).
    pub subformat: &'static str,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// Logical sector size.
    pub sector_size: u32,
    /// Physical sector size.
    pub physical_sector_size: u32,
    /// Block size of VHD/VHDX images.
    pub block_size: Option<u64>,
    /// Blocks holding data (dynamic and differencing images).
    pub allocated_blocks: Option<u64>,
    /// The file's length.
    pub file_size: u64,
    /// The disk's identity.
    pub disk_id: String,
    /// Where a differencing image expects its parent.
    pub parent: Option<String>,
}

impl fmt::Display for ImageInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "format:          {} {}", self.format, self.subformat)?;
        writeln!(f, "virtual size:    {} bytes", self.virtual_size)?;
        writeln!(
            f,
            "sector size:     {} logical, {} physical",
            self.sector_size, self.physical_sector_size
        )?;
        if let Some(b) = self.block_size {
            writeln!(f, "block size:      {b} bytes")?;
        }
        if let Some(a) = self.allocated_blocks {
            writeln!(f, "allocated:       {a} blocks")?;
        }
        writeln!(f, "file size:       {} bytes", self.file_size)?;
        writeln!(f, "disk id:         {}", self.disk_id)?;
        if let Some(p) = &self.parent {
            writeln!(f, "parent:          {p}")?;
        }
        Ok(())
    }
}

/// Describes the image at `path` without following differencing parents.
pub fn info(path: &Path) -> Result<ImageInfo, DiskError> {
    let context = || format!("opening {}", path.display());
    let format = sniff(path)?;
    let file = File::open(path).map_err(|e| DiskError::io(context(), e))?;
    let file_size = file
        .metadata()
        .map_err(|e| DiskError::io(context(), e))?
        .len();
    let file = Arc::new(file);
    Ok(match format {
        ImageFormat::Raw => {
            let disk = crate::RawDisk::open(path, true)?;
            ImageInfo {
                format,
                subformat: "",
                virtual_size: disk.sector_count() * 512,
                sector_size: 512,
                physical_sector_size: 512,
                block_size: None,
                allocated_blocks: None,
                file_size,
                disk_id: disk.disk_id().to_string(),
                parent: None,
            }
        }
        ImageFormat::Vhd => {
            let vhd =
                vhd::Vhd::open(file, true).map_err(|e| DiskError::from(e).in_context(context()))?;
            let dir = path.parent().unwrap_or(Path::new("."));
            let parent = match vhd.disk_type() {
                vhd::DiskType::Differencing => vhd
                    .parent_candidates(dir)
                    .map_err(|e| DiskError::from(e).in_context(context()))?
                    .first()
                    .map(|p| p.display().to_string()),
                _ => None,
            };
            ImageInfo {
                format,
                subformat: match vhd.disk_type() {
                    vhd::DiskType::Fixed => "fixed",
                    vhd::DiskType::Dynamic => "dynamic",
                    vhd::DiskType::Differencing => "differencing",
                },
                virtual_size: vhd.disk_size(),
                sector_size: 512,
                physical_sector_size: 512,
                block_size: vhd.block_size(),
                allocated_blocks: vhd.allocated_blocks(),
                file_size,
                disk_id: crate::DiskId(vhd.unique_id()).to_string(),
                parent,
            }
        }
        ImageFormat::Vhdx => {
            let vhdx = vhdx::Vhdx::open(file, true)
                .map_err(|e| DiskError::from(e).in_context(context()))?;
            let dir = path.parent().unwrap_or(Path::new("."));
            ImageInfo {
                format,
                subformat: if vhdx.has_parent() {
                    "differencing"
                } else if vhdx.is_fixed() {
                    "fixed"
                } else {
                    "dynamic"
                },
                virtual_size: vhdx.disk_size(),
                sector_size: vhdx.logical_sector_size(),
                physical_sector_size: vhdx.physical_sector_size(),
                block_size: Some(u64::from(vhdx.block_size())),
                allocated_blocks: Some(vhdx.allocated_blocks()),
                file_size,
                disk_id: vhdx.page83_id().to_string(),
                parent: vhdx
                    .parent_candidates(dir)
                    .first()
                    .map(|p| p.display().to_string()),
            }
        }
    })
}
