//! Opening an image by path, following a differencing image's parent locators.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use image_file::ChainedImage;
use image_file::ImageFile;

use crate::DiskType;
use crate::Error;
use crate::MAX_CHAIN_DEPTH;
use crate::Result;
use crate::Vhd;
use crate::spec;

/// Locator data longer than this is not a path.
const MAX_LOCATOR_BYTES: u32 = 64 * 1024;

/// Opens the image at `path`; for a differencing image, finds, opens (read-only) and attaches
/// its parents, up to [`MAX_CHAIN_DEPTH`] deep.
pub fn open_path(path: &Path, read_only: bool) -> Result<Vhd> {
    image_file::open_chain(path, read_only, MAX_CHAIN_DEPTH)
}

impl ChainedImage for Vhd {
    type Format = crate::error::VhdFormat;

    fn open_file(file: Arc<dyn ImageFile>, read_only: bool) -> Result<Self> {
        Self::open(file, read_only)
    }

    fn parent_locations(&self, dir: &Path) -> Result<Option<Vec<PathBuf>>> {
        if self.disk_type() != DiskType::Differencing {
            return Ok(None);
        }
        Ok(Some(self.parent_candidates(dir)?))
    }

    fn set_parent(&mut self, parent: Arc<Self>) -> Result<()> {
        Vhd::set_parent(self, parent)
    }

    fn disk_size(&self) -> u64 {
        Vhd::disk_size(self)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        Vhd::read(self, offset, buf)
    }
}

impl Vhd {
    /// Where a differencing image's parent may be, most specific first: the relative and
    /// absolute locators, then the recorded parent file name, next to `dir` (the child's
    /// directory).
    pub fn parent_candidates(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let Some(header) = self.dynamic_header() else {
            return Ok(Vec::new());
        };
        let file_len = self
            .file
            .size()
            .map_err(|e| Error::io("reading the file size", e))?;
        let mut relative = Vec::new();
        let mut absolute = Vec::new();
        for locator in &header.parent_locators {
            let code = locator.platform_code;
            if code == spec::platform::NONE {
                continue;
            }
            let len = locator.platform_data_length.get();
            let offset = locator.platform_data_offset.get();
            if len == 0
                || len > MAX_LOCATOR_BYTES
                || offset
                    .checked_add(u64::from(len))
                    .is_none_or(|end| end > file_len)
            {
                return Err(Error::corrupt(format!(
                    "parent locator of {len} bytes at {offset} is outside the file"
                )));
            }
            let mut raw = vec![0u8; len as usize];
            self.file
                .read_at(offset, &mut raw)
                .map_err(|e| Error::io("reading a parent locator", e))?;
            match code {
                spec::platform::W2RU => relative.push(utf16le(&raw)),
                spec::platform::WI2R => relative.push(ansi(&raw)),
                spec::platform::W2KU => absolute.push(utf16le(&raw)),
                spec::platform::WI2K => absolute.push(ansi(&raw)),
                spec::platform::MACX => {
                    let url = String::from_utf8_lossy(&raw)
                        .trim_end_matches('\0')
                        .to_string();
                    absolute.push(url.strip_prefix("file://").unwrap_or(&url).to_string());
                }
                _ => {}
            }
        }
        let name = utf16be(&header.parent_unicode_name);
        let mut out = Vec::new();
        for r in &relative {
            push_unique(&mut out, dir.join(windows_to_unix(r)));
        }
        for a in &absolute {
            let unix = windows_to_unix(a);
            if unix.starts_with('/') {
                push_unique(&mut out, PathBuf::from(unix));
            }
        }
        for n in absolute.iter().chain(std::iter::once(&name)) {
            if let Some(file_name) = Path::new(&windows_to_unix(n)).file_name() {
                push_unique(&mut out, dir.join(file_name));
            }
        }
        Ok(out)
    }
}

fn push_unique(out: &mut Vec<PathBuf>, p: PathBuf) {
    if !out.contains(&p) {
        out.push(p);
    }
}

/// `.\a\b.vhd` → `a/b.vhd`; `C:\x\y.vhd` keeps its drive (it will not exist on this host).
fn windows_to_unix(p: &str) -> String {
    let p = p.replace('\\', "/");
    p.strip_prefix("./").map(str::to_string).unwrap_or(p)
}

fn utf16le(raw: &[u8]) -> String {
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

fn utf16be(raw: &[u8]) -> String {
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

fn ansi(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}
