//! A deterministic writer for cpio "newc" archives, the format Linux unpacks as initramfs.
//!
//! Each entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex fields: inode,
//! mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize,
//! check), the NUL-terminated name padded to a multiple of 4, then the data padded likewise;
//! the archive ends with an entry named `TRAILER!!!`. Determinism: entries are sorted by path
//! (parents sort before children), inodes count up from 1 in that order, owners are root and
//! every mtime is 0.

use std::collections::BTreeMap;

/// What an archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file with its contents.
    File(Vec<u8>),
    /// A symbolic link to the target.
    Symlink(String),
    /// A character device (major, minor).
    CharDev(u32, u32),
}

/// An archive being assembled: path (no leading `/`) -> (permission bits, node).
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, (u32, Node)>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an entry and creates its missing parent directories (mode 0755).
    pub fn add(&mut self, path: &str, perm: u32, node: Node) {
        let path = path.trim_matches('/');
        for (slash, _) in path.match_indices('/') {
            self.entries
                .entry(path[..slash].to_owned())
                .or_insert((0o755, Node::Dir));
        }
        self.entries.insert(path.to_owned(), (perm & 0o7777, node));
    }

    /// Number of entries (without the trailer).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the archive is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The archive bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut ino: u32 = 1;
        for (path, (perm, node)) in &self.entries {
            let (kind, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match node {
                Node::Dir => (S_IFDIR, 2, &[], (0, 0)),
                Node::File(d) => (S_IFREG, 1, d, (0, 0)),
                Node::Symlink(t) => (S_IFLNK, 1, t.as_bytes(), (0, 0)),
                Node::CharDev(maj, min) => (S_IFCHR, 1, &[], (*maj, *min)),
            };
            write_entry(&mut out, ino, kind | perm, nlink, path, data, rdev);
            ino = ino.saturating_add(1);
        }
        write_entry(&mut out, 0, 0, 1, "TRAILER!!!", &[], (0, 0));
        out
    }
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn write_entry(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
    rdev: (u32, u32),
) {
    let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
    let fields = [
        ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_newc_and_is_stable() {
        let mut a = Archive::new();
        a.add("init", 0o755, Node::File(b"#!/bin/sh\n".to_vec()));
        a.add("bin/sh", 0o777, Node::Symlink("busybox".into()));
        a.add("dev/console", 0o600, Node::CharDev(5, 1));
        let bytes = a.to_bytes();
        // Parent directories were added: bin, dev.
        assert_eq!(a.len(), 5);
        // First entry is "bin" (sorted), inode 1, a directory.
        assert_eq!(&bytes[0..6], b"070701");
        assert_eq!(&bytes[6..14], b"00000001");
        assert_eq!(&bytes[14..22], b"000041ed");
        assert_eq!(&bytes[110..114], b"bin\0");
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.windows(11).any(|w| w == b"TRAILER!!!\0"));
        // Same input, same bytes, regardless of insertion order.
        let mut b = Archive::new();
        b.add("dev/console", 0o600, Node::CharDev(5, 1));
        b.add("bin/sh", 0o777, Node::Symlink("busybox".into()));
        b.add("init", 0o755, Node::File(b"#!/bin/sh\n".to_vec()));
        assert_eq!(b.to_bytes(), bytes);
    }

    #[test]
    fn gnu_cpio_reads_it_back() {
        // The host's cpio (GNU; `apt-get install cpio`) is an independent reader of the format.
        let mut a = Archive::new();
        a.add("init", 0o755, Node::File(b"#!/bin/sh\necho hi\n".to_vec()));
        a.add(
            "lib/modules/x/kernel/a.ko",
            0o644,
            Node::File(vec![7u8; 1001]),
        );
        a.add("bin/sh", 0o777, Node::Symlink("busybox".into()));
        let out = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(&a.to_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success());
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("bin/sh -> busybox"), "{listing}");
        assert!(listing.contains("1001"), "{listing}");
        assert!(listing.contains("lib/modules/x/kernel/a.ko"), "{listing}");
    }
}
