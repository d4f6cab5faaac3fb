//! Reading Debian packages without dpkg: the `ar` container, `control`, and `data.tar.*`.
//!
//! A `.deb` is an `ar` archive (`!<arch>\n`, then 60-byte member headers, each member padded
//! to an even offset) holding `debian-binary`, `control.tar.*` and `data.tar.*`; the tarballs
//! are xz-, gzip- or un-compressed (zstd is refused with a clear error; Debian does not use it
//! for bookworm). Everything here treats the file as untrusted input: sizes are checked
//! against the file, never used to index blindly.

use std::fs::File;
use std::io;
use std::io::BufReader;
use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::path::Path;
use std::path::PathBuf;

/// A malformed or unsupported package.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct DebError {
    /// The package file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
const AR_HEADER_LEN: usize = 60;

/// One regular file taken out of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebFile {
    /// Its path in the package, without the leading `./`.
    pub path: String,
    /// Its contents.
    pub data: Vec<u8>,
}

/// Symbolic links of a package as (path, target).
pub type Links = Vec<(String, String)>;

/// The `control` fields agar needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// `Package:`.
    pub package: String,
    /// `Version:`.
    pub version: String,
    /// `Architecture:`.
    pub architecture: String,
}

fn err(path: &Path, reason: impl Into<String>) -> DebError {
    DebError {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> DebError + '_ {
    move |e| err(path, e.to_string())
}

/// Finds the member whose name starts with `prefix`; returns (name, offset, size).
fn find_member(path: &Path, file: &mut File, prefix: &str) -> Result<(String, u64, u64), DebError> {
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut magic = [0u8; 8];
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    file.read_exact(&mut magic)
        .map_err(|_| err(path, "not a Debian package (too short)"))?;
    if &magic != AR_MAGIC {
        return Err(err(path, "not a Debian package (no ar signature)"));
    }
    let mut offset: u64 = 8;
    // Bounded: every step moves past at least one header.
    while offset.saturating_add(AR_HEADER_LEN as u64) <= file_len {
        let mut header = [0u8; AR_HEADER_LEN];
        file.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
        file.read_exact(&mut header).map_err(io_err(path))?;
        if &header[58..60] != b"`\n" {
            return Err(err(
                path,
                format!("bad ar member header at offset {offset}"),
            ));
        }
        let name = String::from_utf8_lossy(&header[0..16])
            .trim_end()
            .trim_end_matches('/')
            .to_owned();
        let size: u64 = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| err(path, format!("bad ar member size at offset {offset}")))?;
        let data_start = offset + AR_HEADER_LEN as u64;
        let data_end = data_start
            .checked_add(size)
            .filter(|&end| end <= file_len)
            .ok_or_else(|| {
                err(
                    path,
                    format!("ar member `{name}` runs past the end of the file"),
                )
            })?;
        if name.starts_with(prefix) {
            return Ok((name, data_start, size));
        }
        offset = data_end + (data_end & 1);
    }
    Err(err(path, format!("no `{prefix}*` member")))
}

/// A reader over a decompressed `control.tar.*` or `data.tar.*` member.
fn open_tar(path: &Path, prefix: &str) -> Result<Box<dyn Read>, DebError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let (name, offset, size) = find_member(path, &mut file, prefix)?;
    file.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
    let raw = BufReader::with_capacity(1 << 16, file.take(size));
    let reader: Box<dyn Read> = match name.strip_prefix(prefix) {
        Some(".tar.xz") => Box::new(xz2::read::XzDecoder::new(raw)),
        Some(".tar.gz") => Box::new(flate2::read::GzDecoder::new(raw)),
        Some(".tar") => Box::new(raw),
        _ => {
            return Err(err(
                path,
                format!("member `{name}` uses a compression agar does not read (xz, gzip or none)"),
            ));
        }
    };
    Ok(reader)
}

fn normalize(p: &Path) -> String {
    let s = p.to_string_lossy();
    s.trim_start_matches("./")
        .trim_start_matches('/')
        .to_owned()
}

/// Reads the `Package`, `Version` and `Architecture` fields of a package.
pub fn control(path: &Path) -> Result<Control, DebError> {
    let mut archive = tar::Archive::new(open_tar(path, "control")?);
    let entries = archive.entries().map_err(io_err(path))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err(path))?;
        let name = normalize(&entry.path().map_err(io_err(path))?);
        if name != "control" {
            continue;
        }
        let mut text = String::new();
        entry
            .by_ref()
            .take(1 << 20)
            .read_to_string(&mut text)
            .map_err(io_err(path))?;
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
                .ok_or_else(|| err(path, format!("control has no `{key}` field")))
        };
        return Ok(Control {
            package: field("Package")?,
            version: field("Version")?,
            architecture: field("Architecture")?,
        });
    }
    Err(err(path, "control.tar has no `control` file"))
}

/// Calls `visit` with the path and a reader of every regular file in `data.tar`, in archive
/// order; returns the symlinks as (path, target).
pub fn for_each_file(
    path: &Path,
    mut visit: impl FnMut(&str, &mut dyn Read) -> Result<(), DebError>,
) -> Result<Links, DebError> {
    let mut archive = tar::Archive::new(open_tar(path, "data")?);
    let mut links = Vec::new();
    for entry in archive.entries().map_err(io_err(path))? {
        let mut entry = entry.map_err(io_err(path))?;
        let name = normalize(&entry.path().map_err(io_err(path))?);
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => visit(&name, &mut entry)?,
            tar::EntryType::Symlink => {
                if let Ok(Some(target)) = entry.link_name() {
                    links.push((name, target.to_string_lossy().into_owned()));
                }
            }
            _ => {}
        }
    }
    Ok(links)
}

/// The regular files of `data.tar` for which `want` returns true, with their contents, and
/// the package's symlinks as (path, target).
pub fn extract(
    path: &Path,
    mut want: impl FnMut(&str) -> bool,
) -> Result<(Vec<DebFile>, Links), DebError> {
    let mut files = Vec::new();
    let links = for_each_file(path, |name, reader| {
        if want(name) {
            let mut data = Vec::new();
            reader.read_to_end(&mut data).map_err(io_err(path))?;
            files.push(DebFile {
                path: name.to_owned(),
                data,
            });
        }
        Ok(())
    })?;
    Ok((files, links))
}

/// Whether `path` matches `pattern`, where one `*` matches any run of characters but `/`.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == path,
        Some((prefix, suffix)) => {
            path.len() >= prefix.len() + suffix.len()
                && path.starts_with(prefix)
                && path.ends_with(suffix)
                && !path[prefix.len()..path.len() - suffix.len()].contains('/')
        }
    }
}

/// Takes exactly one regular file matching `pattern` out of a package.
pub fn extract_one(path: &Path, pattern: &str) -> Result<DebFile, DebError> {
    let (mut files, links) = extract(path, |p| glob_match(pattern, p))?;
    match files.len() {
        1 => Ok(files.remove(0)),
        0 => {
            if let Some((link, target)) = links.iter().find(|(l, _)| glob_match(pattern, l)) {
                return Err(err(
                    path,
                    format!("`{link}` is a symlink to `{target}`; name the target in the manifest"),
                ));
            }
            Err(err(path, format!("no file matches `{pattern}`")))
        }
        n => Err(err(
            path,
            format!(
                "{n} files match `{pattern}` ({}); the manifest must name one",
                files
                    .iter()
                    .map(|f| f.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an `ar` archive (as `dpkg-deb` lays it out) from members.
    pub(crate) fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = AR_MAGIC.to_vec();
        for (name, data) in members {
            let header = format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                name,
                0,
                0,
                0,
                "100644",
                data.len()
            );
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    /// A tar (uncompressed) of regular files and symlinks.
    pub(crate) fn tarball(files: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append_data(&mut h, format!("./{path}"), *data).unwrap();
        }
        for (path, target) in links {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut h, format!("./{path}"), target).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        xz2::read::XzEncoder::new(data, 6)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// A small but well-formed `.deb`.
    pub(crate) fn fake_deb(package: &str, version: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
        let control = format!(
            "Package: {package}\nVersion: {version}\nArchitecture: amd64\nDescription: test\n"
        );
        let control_tar = tarball(&[("control", control.as_bytes())], &[]);
        let data_tar = tarball(files, &[("usr/share/link.bin", "real.bin")]);
        ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", &xz(&control_tar)),
            ("data.tar.xz", &xz(&data_tar)),
        ])
    }

    #[test]
    fn reads_control_and_extracts_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.deb");
        std::fs::write(
            &path,
            fake_deb(
                "linux-image-9.9.9-cloud-amd64",
                "9.9.9-1",
                &[
                    ("boot/vmlinuz-9.9.9-cloud-amd64", b"KERNEL"),
                    ("boot/config-9.9.9", b"x"),
                ],
            ),
        )
        .unwrap();
        let c = control(&path).unwrap();
        assert_eq!(c.package, "linux-image-9.9.9-cloud-amd64");
        assert_eq!(c.version, "9.9.9-1");
        assert_eq!(c.architecture, "amd64");
        let f = extract_one(&path, "boot/vmlinuz-*").unwrap();
        assert_eq!(f.path, "boot/vmlinuz-9.9.9-cloud-amd64");
        assert_eq!(f.data, b"KERNEL");
    }

    #[test]
    fn symlink_and_ambiguous_patterns_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.deb");
        std::fs::write(
            &path,
            fake_deb(
                "p",
                "1",
                &[("usr/share/real.bin", b"r"), ("usr/share/a.bin", b"a")],
            ),
        )
        .unwrap();
        let e = extract_one(&path, "usr/share/link.bin")
            .unwrap_err()
            .to_string();
        assert!(e.contains("symlink to `real.bin`"), "{e}");
        let e = extract_one(&path, "usr/share/*.bin")
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 files match"), "{e}");
        let e = extract_one(&path, "nope").unwrap_err().to_string();
        assert!(e.contains("no file matches"), "{e}");
    }

    #[test]
    fn garbage_and_truncated_packages_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.deb");
        let good = fake_deb("p", "1", &[("a", b"abc")]);
        for cut in [0, 5, 8, 30, 68, 100, good.len() / 2, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(
                control(&path).is_err() || extract_one(&path, "a").is_err(),
                "cut {cut}"
            );
        }
        let mut lying = good.clone();
        // Member size field of debian-binary claims far more than the file holds.
        lying[8 + 48..8 + 58].copy_from_slice(b"9999999999");
        std::fs::write(&path, &lying).unwrap();
        assert!(
            control(&path)
                .unwrap_err()
                .to_string()
                .contains("past the end")
        );
    }

    #[test]
    fn glob_star_does_not_cross_directories() {
        assert!(glob_match(
            "boot/vmlinuz-*",
            "boot/vmlinuz-6.1.0-56-cloud-amd64"
        ));
        assert!(!glob_match("boot/vmlinuz-*", "boot/vmlinuz-x/y"));
        assert!(!glob_match("boot/vmlinuz-*", "boot/config-6.1"));
        assert!(glob_match("a/b", "a/b"));
        assert!(!glob_match("a*a", "a"));
    }
}
