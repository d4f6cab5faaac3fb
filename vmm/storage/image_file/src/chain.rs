//! Opening a differencing image by path: the walk up its parent chain that every format
//! with parents shares (loop and depth limits, read-only parents, trying each candidate
//! location, reporting what was tried).

use std::fs::File;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use crate::Error;
use crate::ErrorKind;
use crate::ImageFile;
use crate::ImageFormat;

/// An image format whose images may name a parent image.
pub trait ChainedImage: Sized {
    /// The format, for errors.
    type Format: ImageFormat;

    /// Opens (and validates) one image file.
    fn open_file(file: Arc<dyn ImageFile>, read_only: bool) -> Result<Self, Error<Self::Format>>;

    /// Where this image's parent may be, most likely first, for an image in `dir`; `None`
    /// when the image has no parent.
    fn parent_locations(&self, dir: &Path) -> Result<Option<Vec<PathBuf>>, Error<Self::Format>>;

    /// Attaches `parent`, checking that it is the one this image was made from.
    fn set_parent(&mut self, parent: Arc<Self>) -> Result<(), Error<Self::Format>>;

    /// The virtual disk size in bytes.
    fn disk_size(&self) -> u64;

    /// Reads virtual-disk bytes at `offset` (sector-aligned, inside the disk).
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error<Self::Format>>;
}

/// Reads what a differencing image does not hold from its `parent`. A child may be larger
/// than its parent: the part past the parent's end reads as zeros.
pub fn read_from_parent<T: ChainedImage>(
    parent: Option<&T>,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), Error<T::Format>> {
    let parent = parent.ok_or_else(|| {
        Error::new(
            ErrorKind::Parent,
            "differencing image has no parent attached",
        )
    })?;
    let in_parent = parent
        .disk_size()
        .saturating_sub(offset)
        .min(buf.len() as u64);
    let (head, tail) = buf.split_at_mut(in_parent as usize);
    if !head.is_empty() {
        parent.read(offset, head)?;
    }
    tail.fill(0);
    Ok(())
}

/// Opens the image at `path`; for a differencing image, finds, opens (read-only) and
/// attaches its parents, up to `max_depth` images deep. A chain that comes back to an image
/// it already holds is an error, as is a parent that no candidate location holds (the
/// message lists the places tried).
pub fn open_chain<T: ChainedImage>(
    path: &Path,
    read_only: bool,
    max_depth: usize,
) -> Result<T, Error<T::Format>> {
    open_below(path, read_only, max_depth, &mut Vec::new())
}

fn open_below<T: ChainedImage>(
    path: &Path,
    read_only: bool,
    max_depth: usize,
    seen: &mut Vec<PathBuf>,
) -> Result<T, Error<T::Format>> {
    let open_err = |e| Error::with_source(ErrorKind::Io, format!("opening {}", path.display()), e);
    let canonical = path.canonicalize().map_err(open_err)?;
    if seen.contains(&canonical) {
        return Err(Error::new(
            ErrorKind::Parent,
            format!("parent chain loops back to {}", path.display()),
        ));
    }
    if seen.len() >= max_depth {
        return Err(Error::new(
            ErrorKind::Parent,
            format!("parent chain is deeper than {max_depth}"),
        ));
    }
    seen.push(canonical);
    let file = File::options()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(open_err)?;
    let mut image = T::open_file(Arc::new(file), read_only)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let Some(candidates) = image.parent_locations(dir)? else {
        return Ok(image);
    };
    let mut first_error = None;
    for candidate in candidates.iter().filter(|c| c.is_file()) {
        let attempt = open_below::<T>(candidate, true, max_depth, seen)
            .and_then(|parent| image.set_parent(Arc::new(parent)));
        match attempt {
            Ok(()) => return Ok(image),
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

#[cfg(test)]
mod tests {
    use super::*;

    enum Toy {}
    impl ImageFormat for Toy {
        const NAME: &'static str = "toy";
    }

    /// A toy format: the file holds either `base` or `child-of <name>...` (one or more
    /// candidate names, space separated, relative to the image's folder).
    struct ToyImage {
        parents: Option<Vec<String>>,
        parent: Option<Arc<ToyImage>>,
        depth: usize,
    }

    impl ChainedImage for ToyImage {
        type Format = Toy;

        fn open_file(file: Arc<dyn ImageFile>, _read_only: bool) -> Result<Self, Error<Toy>> {
            let mut text = vec![0; file.size().map_err(|e| Error::io("size", e))? as usize];
            file.read_at(0, &mut text)
                .map_err(|e| Error::io("read", e))?;
            let text = String::from_utf8_lossy(&text).trim().to_string();
            let parents = match text.strip_prefix("child-of ") {
                Some(names) => Some(names.split(' ').map(String::from).collect()),
                None if text == "base" => None,
                None => return Err(Error::corrupt(format!("bad toy image {text:?}"))),
            };
            Ok(Self {
                parents,
                parent: None,
                depth: 1,
            })
        }

        fn parent_locations(&self, dir: &Path) -> Result<Option<Vec<PathBuf>>, Error<Toy>> {
            Ok(self
                .parents
                .as_ref()
                .map(|p| p.iter().map(|n| dir.join(n)).collect()))
        }

        fn set_parent(&mut self, parent: Arc<Self>) -> Result<(), Error<Toy>> {
            self.depth = parent.depth + 1;
            self.parent = Some(parent);
            Ok(())
        }

        fn disk_size(&self) -> u64 {
            8
        }

        fn read(&self, _offset: u64, buf: &mut [u8]) -> Result<(), Error<Toy>> {
            buf.fill(self.depth as u8);
            Ok(())
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_chain_opens_through_the_first_candidate_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base", "base");
        write(dir.path(), "mid", "child-of missing base");
        let top = write(dir.path(), "top", "child-of mid");
        let image: ToyImage = open_chain(&top, true, 16).unwrap();
        assert_eq!(image.depth, 3);
        assert!(image.parent.as_ref().unwrap().parent.is_some());
    }

    #[test]
    fn loops_depth_and_missing_parents_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a", "child-of b");
        write(dir.path(), "b", "child-of a");
        let e = open_chain::<ToyImage>(&a, true, 16).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Parent);
        assert!(e.context().contains("loops back"), "{}", e.context());

        for i in 0..5 {
            write(
                dir.path(),
                &format!("c{i}"),
                &format!("child-of c{}", i + 1),
            );
        }
        write(dir.path(), "c5", "base");
        let c0 = dir.path().join("c0");
        assert_eq!(open_chain::<ToyImage>(&c0, true, 6).unwrap().depth, 6);
        let e = open_chain::<ToyImage>(&c0, true, 5).err().unwrap();
        assert!(e.context().contains("deeper than 5"), "{}", e.context());

        let orphan = write(dir.path(), "orphan", "child-of gone also-gone");
        let e = open_chain::<ToyImage>(&orphan, true, 16).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Parent);
        assert!(e.context().contains("gone, "), "{}", e.context());
        assert!(e.context().contains("also-gone)"), "{}", e.context());

        // A candidate that exists but fails to open is the error reported.
        write(dir.path(), "junk", "junk");
        let bad = write(dir.path(), "bad", "child-of junk");
        let e = open_chain::<ToyImage>(&bad, true, 16).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn reads_past_the_parents_end_are_zeros() {
        let parent = ToyImage {
            parents: None,
            parent: None,
            depth: 7,
        };
        let mut buf = [0xffu8; 12];
        read_from_parent(Some(&parent), 4, &mut buf).unwrap();
        assert_eq!(buf, [7, 7, 7, 7, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut buf = [0xffu8; 4];
        read_from_parent(Some(&parent), 100, &mut buf).unwrap();
        assert_eq!(buf, [0; 4]);
        let e = read_from_parent::<ToyImage>(None, 0, &mut buf)
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Parent);
    }
}
