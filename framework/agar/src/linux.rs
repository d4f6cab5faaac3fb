//! Linux boot media helpers: the kernel release inside a bzImage, and appending the guest
//! agent to an initramfs as a second `newc` cpio archive (docs/src/guest-contract.md).

use std::io::Write;
use std::path::Path;

use crate::error::Error;
use crate::error::Result;

/// The kernel release (`uname -r`) recorded in a bzImage's setup header.
///
/// The boot protocol header (at 0x1f1) has `HdrS` at 0x202 and, at 0x20e, a pointer to a
/// NUL-terminated version string located at that value + 0x200; its first word is the
/// release.
pub fn bzimage_release(path: &Path) -> Result<String> {
    let data = std::fs::read(path).map_err(Error::io(path))?;
    release_from_bzimage(&data).ok_or_else(|| {
        Error::Other(format!(
            "{}: not a bzImage with a version string",
            path.display()
        ))
    })
}

fn release_from_bzimage(data: &[u8]) -> Option<String> {
    if data.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*data.get(0x20e)?, *data.get(0x20f)?]) as usize;
    let start = ptr.checked_add(0x200)?;
    let tail = data.get(start..)?;
    let end = tail.iter().take(512).position(|&b| b == 0)?;
    let s = std::str::from_utf8(&tail[..end]).ok()?;
    s.split_ascii_whitespace().next().map(str::to_string)
}

/// One file for [`newc_archive`].
pub struct CpioFile<'a> {
    /// Path inside the archive, without a leading `/`.
    pub path: &'a str,
    /// Permission bits.
    pub mode: u32,
    /// Contents.
    pub data: &'a [u8],
}

/// A `newc` cpio archive holding `files` and the directories leading to them, with fixed
/// owners and times so the same inputs give the same bytes.
pub fn newc_archive(files: &[CpioFile<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ino = 1u32;
    let mut dirs: Vec<&str> = Vec::new();
    for f in files {
        let mut p = f.path;
        let mut parents = Vec::new();
        while let Some((d, _)) = p.rsplit_once('/') {
            parents.push(d);
            p = d;
        }
        for d in parents.into_iter().rev() {
            if !dirs.contains(&d) {
                dirs.push(d);
                newc_entry(&mut out, ino, 0o040_755, d, &[]);
                ino += 1;
            }
        }
        newc_entry(&mut out, ino, 0o100_000 | (f.mode & 0o7777), f.path, f.data);
        ino += 1;
    }
    newc_entry(&mut out, 0, 0, "TRAILER!!!", &[]);
    out
}

fn newc_entry(out: &mut Vec<u8>, ino: u32, mode: u32, name: &str, data: &[u8]) {
    let nlink = if mode & 0o040_000 != 0 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        u32::try_from(data.len()).unwrap_or(u32::MAX),
        0, // dev major
        0, // dev minor
        0, // rdev major
        0, // rdev minor
        u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The initramfs `base` with the agent appended, from a cache keyed by both inputs (path,
/// size, modification time): assembling it costs a 10 MB write per test otherwise. Entries
/// are written to a temporary name and renamed, so concurrent test processes share them.
pub fn cached_initrd_with_agent(
    base: &Path,
    agent: &Path,
    cache_dir: &Path,
) -> Result<std::path::PathBuf> {
    use std::hash::Hash;
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in [base, agent] {
        let m = std::fs::metadata(p).map_err(Error::io(p))?;
        p.hash(&mut h);
        m.len().hash(&mut h);
        m.modified().ok().hash(&mut h);
    }
    let out = cache_dir.join(format!("initrd-with-agent-{:016x}.img", h.finish()));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(cache_dir).map_err(Error::io(cache_dir))?;
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    initrd_with_agent(base, agent, &tmp)?;
    std::fs::rename(&tmp, &out).map_err(Error::io(&out))?;
    Ok(out)
}

/// Writes `base` followed by a cpio archive holding `/sbin/agar-agent` to `out`. The kernel
/// unpacks concatenated archives in order (compressed or not); the base is padded to a
/// multiple of 4 bytes, which the unpacker skips as zeros.
pub fn initrd_with_agent(base: &Path, agent: &Path, out: &Path) -> Result<()> {
    let agent_bin = std::fs::read(agent).map_err(Error::io(agent))?;
    let mut data = std::fs::read(base).map_err(Error::io(base))?;
    pad4(&mut data);
    data.extend(newc_archive(&[CpioFile {
        path: "sbin/agar-agent",
        mode: 0o755,
        data: &agent_bin,
    }]));
    let mut f = std::fs::File::create(out).map_err(Error::io(out))?;
    f.write_all(&data).map_err(Error::io(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_release_from_a_setup_header() {
        let mut img = vec![0u8; 0x1000];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20e..0x210].copy_from_slice(&0x0300u16.to_le_bytes());
        let v = b"6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP\0";
        img[0x500..0x500 + v.len()].copy_from_slice(v);
        assert_eq!(
            release_from_bzimage(&img).as_deref(),
            Some("6.1.0-56-cloud-amd64")
        );
        img[0x202] = b'X';
        assert_eq!(release_from_bzimage(&img), None);
        assert_eq!(release_from_bzimage(&img[..0x100]), None);
    }

    #[test]
    fn the_initrd_cache_is_keyed_by_both_inputs() {
        let dir = std::env::temp_dir().join(format!("agar-initrd-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (base, agent) = (dir.join("base"), dir.join("agent"));
        std::fs::write(&base, b"base!").unwrap();
        std::fs::write(&agent, b"agent v1").unwrap();
        let a = cached_initrd_with_agent(&base, &agent, &dir.join("cache")).unwrap();
        assert_eq!(
            a,
            cached_initrd_with_agent(&base, &agent, &dir.join("cache")).unwrap()
        );
        let data = std::fs::read(&a).unwrap();
        assert!(data.starts_with(b"base!\x00\x00\x00070701"));
        std::fs::write(&agent, b"agent v2, longer").unwrap();
        let b = cached_initrd_with_agent(&base, &agent, &dir.join("cache")).unwrap();
        assert_ne!(a, b);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cpio_tool_lists_and_extracts_the_archive() {
        let dir = std::env::temp_dir().join(format!("agar-cpio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let archive = newc_archive(&[CpioFile {
            path: "sbin/agar-agent",
            mode: 0o755,
            data: b"#!/bin/sh\necho hi\n",
        }]);
        std::fs::write(dir.join("a.cpio"), &archive).unwrap();
        let out = std::process::Command::new("cpio")
            .args(["-i", "-d", "--quiet", "-F", "a.cpio"])
            .current_dir(&dir)
            .output()
            .expect("cpio is installed (Debian package cpio)");
        assert!(out.status.success(), "{out:?}");
        let f = dir.join("sbin/agar-agent");
        assert_eq!(std::fs::read(&f).unwrap(), b"#!/bin/sh\necho hi\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o755
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
