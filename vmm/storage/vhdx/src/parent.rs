//! Opening an image by path, following a differencing image's parent locator.

use std::fs::File;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use crate::Error;
use crate::ErrorKind;
use crate::MAX_CHAIN_DEPTH;
use crate::Result;
use crate::Vhdx;

/// Opens the image at `path`; for a differencing image, finds, opens (read-only) and attaches
/// its parents, up to [`MAX_CHAIN_DEPTH`] deep.
pub fn open_path(path: &Path, read_only: bool) -> Result<Vhdx> {
    open_chain(path, read_only, &mut Vec::new())
}

fn open_chain(path: &Path, read_only: bool, seen: &mut Vec<PathBuf>) -> Result<Vhdx> {
    let open_err = |e| Error::with_source(ErrorKind::Io, format!("opening {}", path.display()), e);
    let canonical = path.canonicalize().map_err(open_err)?;
    if seen.contains(&canonical) {
        return Err(Error::new(
            ErrorKind::Parent,
            format!("parent chain loops back to {}", path.display()),
        ));
    }
    if seen.len() >= MAX_CHAIN_DEPTH {
        return Err(Error::new(
            ErrorKind::Parent,
            format!("parent chain is deeper than {MAX_CHAIN_DEPTH}"),
        ));
    }
    seen.push(canonical);
    let file = File::options()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(open_err)?;
    let mut vhdx = Vhdx::open(Arc::new(file), read_only)?;
    if !vhdx.has_parent() {
        return Ok(vhdx);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let candidates = vhdx.parent_candidates(dir);
    let mut first_error = None;
    for candidate in &candidates {
        if !candidate.is_file() {
            continue;
        }
        match open_chain(candidate, true, seen).and_then(|p| vhdx.set_parent(Arc::new(p))) {
            Ok(()) => return Ok(vhdx),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        Error::new(
            ErrorKind::Parent,
            format!(
                "parent of {} not found (tried: {})",
                path.display(),
                tried.join(", ")
            ),
        )
    }))
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
