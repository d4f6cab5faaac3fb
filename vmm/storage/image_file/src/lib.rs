//! Positioned I/O on disk-image files: the one trait the format crates (`vhd`, `vhdx`) read
//! and write through, with a host-file and an in-memory implementation.
//!
//! # Architecture
//!
//! Image formats never seek: every access names its byte offset (`pread`/`pwrite` style), so
//! one file handle serves many threads at once and no lock is needed around the file itself.
//! [`ImageFile`] is that contract. [`std::fs::File`] implements it through
//! `std::os::unix::fs::FileExt`; [`MemFile`] keeps the bytes in a vector, which is what unit
//! tests and fuzz targets use (no temporary files, and a size cap so a hostile image cannot
//! make a writer grow the vector without bound).
//!
//! Short reads are errors (`UnexpectedEof`): a format that needs to read past the end of its
//! file is looking at a truncated or corrupt image, and the caller reports it as such.

mod chain;
mod error;

pub use chain::ChainedImage;
pub use chain::open_chain;
pub use chain::read_from_parent;
pub use error::Error;
pub use error::ErrorKind;
pub use error::ImageFormat;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use parking_lot::RwLock;

/// Positioned, thread-safe I/O on an image file.
pub trait ImageFile: Send + Sync {
    /// Fills `buf` from `offset`; reading past the end is an `UnexpectedEof` error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, growing the file if needed.
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_size(&self, len: u64) -> io::Result<()>;
    /// Makes every completed write durable.
    fn sync(&self) -> io::Result<()>;
}

impl ImageFile for File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.write_all_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_size(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
}

impl<T: ImageFile + ?Sized> ImageFile for Arc<T> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, buf)
    }

    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }

    fn set_size(&self, len: u64) -> io::Result<()> {
        (**self).set_size(len)
    }

    fn sync(&self) -> io::Result<()> {
        (**self).sync()
    }
}

impl<T: ImageFile + ?Sized> ImageFile for &T {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, buf)
    }

    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }

    fn set_size(&self, len: u64) -> io::Result<()> {
        (**self).set_size(len)
    }

    fn sync(&self) -> io::Result<()> {
        (**self).sync()
    }
}

/// An image file held in memory, for tests and fuzzing.
///
/// Growth past `max_len` fails with `io::ErrorKind::FileTooLarge`, so a writer driven by a
/// hostile image cannot allocate without bound.
#[derive(Debug)]
pub struct MemFile {
    data: RwLock<Vec<u8>>,
    max_len: u64,
}

impl MemFile {
    /// The default growth cap: 1 GiB.
    pub const DEFAULT_MAX_LEN: u64 = 1 << 30;

    /// An empty file with the default growth cap.
    pub fn new() -> Self {
        Self::from_vec(Vec::new())
    }

    /// A file holding `data`, with the default growth cap.
    pub fn from_vec(data: Vec<u8>) -> Self {
        Self::with_max_len(data, Self::DEFAULT_MAX_LEN)
    }

    /// A file holding `data` that may grow to at most `max_len` bytes.
    pub fn with_max_len(data: Vec<u8>, max_len: u64) -> Self {
        Self {
            data: RwLock::new(data),
            max_len,
        }
    }

    /// A copy of the current contents.
    pub fn to_vec(&self) -> Vec<u8> {
        self.data.read().clone()
    }

    /// The contents, consuming the file.
    pub fn into_vec(self) -> Vec<u8> {
        self.data.into_inner()
    }

    fn checked_end(&self, offset: u64, len: usize) -> io::Result<usize> {
        let end = u64::try_from(len)
            .ok()
            .and_then(|len| offset.checked_add(len))
            .filter(|&end| end <= self.max_len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::FileTooLarge))?;
        usize::try_from(end).map_err(|_| io::Error::from(io::ErrorKind::FileTooLarge))
    }
}

impl Default for MemFile {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageFile for MemFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let data = self.data.read();
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| data.get(start..end))
            .ok_or_else(eof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let end = self.checked_end(offset, buf.len())?;
        let mut data = self.data.write();
        if data.len() < end {
            data.resize(end, 0);
        }
        // `end` fits and `offset <= end`, so this range is in bounds.
        let start = end - buf.len();
        data[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.data.read().len() as u64)
    }

    fn set_size(&self, len: u64) -> io::Result<()> {
        let len = self.checked_end(len, 0)?;
        self.data.write().resize(len, 0);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

fn eof() -> io::Error {
    io::Error::from(io::ErrorKind::UnexpectedEof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_file_reads_back_writes_and_zero_fills_gaps() {
        let f = MemFile::new();
        f.write_at(10, b"abc").unwrap();
        assert_eq!(f.size().unwrap(), 13);
        let mut buf = [0xffu8; 13];
        f.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf[..10], &[0; 10]);
        assert_eq!(&buf[10..], b"abc");
    }

    #[test]
    fn mem_file_read_past_end_is_eof() {
        let f = MemFile::from_vec(vec![1, 2, 3]);
        let mut buf = [0u8; 2];
        let err = f.read_at(2, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = f.read_at(u64::MAX, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn mem_file_refuses_growth_past_cap() {
        let f = MemFile::with_max_len(Vec::new(), 100);
        assert_eq!(
            f.write_at(99, b"ab").unwrap_err().kind(),
            io::ErrorKind::FileTooLarge
        );
        assert_eq!(
            f.write_at(u64::MAX, b"a").unwrap_err().kind(),
            io::ErrorKind::FileTooLarge
        );
        assert!(f.set_size(101).is_err());
        f.set_size(100).unwrap();
        assert_eq!(f.size().unwrap(), 100);
    }

    #[test]
    fn host_file_is_an_image_file() {
        let f = tempfile::tempfile().unwrap();
        ImageFile::write_at(&f, 4096, b"xyz").unwrap();
        assert_eq!(ImageFile::size(&f).unwrap(), 4099);
        let mut buf = [0u8; 3];
        ImageFile::read_at(&f, 4096, &mut buf).unwrap();
        assert_eq!(&buf, b"xyz");
        assert!(ImageFile::read_at(&f, 4097, &mut buf).is_err());
    }
}
