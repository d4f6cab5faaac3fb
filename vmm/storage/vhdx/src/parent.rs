//! Opening an image by path, following a differencing image's parent locator.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use image_file::ChainedImage;
use image_file::ImageFile;

use crate::MAX_CHAIN_DEPTH;
use crate::Result;
use crate::Vhdx;

/// Opens the image at `path`; for a differencing image, finds, opens (read-only) and attaches
/// its parents, up to [`MAX_CHAIN_DEPTH`] deep.
pub fn open_path(path: &Path, read_only: bool) -> Result<Vhdx> {
    image_file::open_chain(path, read_only, MAX_CHAIN_DEPTH)
}

impl ChainedImage for Vhdx {
    type Format = crate::error::VhdxFormat;

    fn open_file(file: Arc<dyn ImageFile>, read_only: bool) -> Result<Self> {
        Self::open(file, read_only)
    }

    fn parent_locations(&self, dir: &Path) -> Result<Option<Vec<PathBuf>>> {
        if !self.has_parent() {
            return Ok(None);
        }
        Ok(Some(self.parent_candidates(dir)))
    }

    fn set_parent(&mut self, parent: Arc<Self>) -> Result<()> {
        Vhdx::set_parent(self, parent)
    }

    fn disk_size(&self) -> u64 {
        Vhdx::disk_size(self)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        Vhdx::read(self, offset, buf)
    }
}

impl Vhdx {
    /// Where a differencing image's parent may be: the locator's `relative_path` (from `dir`,
    /// the child's directory), then its absolute paths when they are host paths, then their
    /// file names next to the child.
    pub fn parent_candidates(&self, dir: &Path) -> Vec<PathBuf> {
        let loc = self.parent_locator();
        let mut out: Vec<PathBuf> = Vec::new();
        let mut push = |p: PathBuf| {
            if !out.contains(&p) {
                out.push(p);
            }
        };
        if let Some(r) = loc.get("relative_path") {
            push(dir.join(windows_to_unix(r)));
        }
        let absolute: Vec<String> = ["absolute_win32_path", "volume_path"]
            .iter()
            .filter_map(|k| loc.get(*k))
            .map(|p| windows_to_unix(p))
            .collect();
        for a in &absolute {
            if a.starts_with('/') {
                push(PathBuf::from(a));
            }
        }
        for a in absolute.iter().chain(loc.get("relative_path")) {
            if let Some(name) = Path::new(&windows_to_unix(a)).file_name() {
                push(dir.join(name));
            }
        }
        out
    }
}

/// `.\a\b.vhdx` → `a/b.vhdx`.
fn windows_to_unix(p: &str) -> String {
    let p = p.replace('\\', "/");
    p.strip_prefix("./").map(str::to_string).unwrap_or(p)
}
