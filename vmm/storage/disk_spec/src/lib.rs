//! The disk-spec grammar shared by `agar-vmm --disk/--ide` and the framework's `VmConfig`,
//! plus the byte-size syntax used by `-m` and `mem:`.
//!
//! ```text
//! spec    := "file:" PATH { ";" option }      raw, VHD or VHDX, format sniffed from content
//!          | "mem:" SIZE                       zero-filled RAM disk
//!          | "memdiff:" spec                   RAM overlay; the lower disk is opened read-only
//! option  := "ro" | "create=" SIZE | "direct"
//! SIZE    := digits [ "K" | "KB" | "KiB" | "M" | "MB" | "MiB" | "G" | "GB" | "GiB" | "T" | "TB" | "TiB" ]
//! ```
//!
//! Units are binary (`1MB` = 1 MiB), as in OpenVMM's CLI. Disk sizes (`mem:`, `create=`) are
//! non-zero multiples of 512. Each option may appear once. A path runs to the first `;`, so
//! paths containing `;` are not expressible. Every parsed spec prints back (through `Display`)
//! to a string that parses to the same value.
//!
//! What the options do is `disk::open`'s business: `ro` opens read-only, `create=SIZE` creates
//! a missing file (format from its extension), `memdiff:` opens its inner disk read-only under
//! a RAM layer. `direct` parses but `disk::open` refuses it as not implemented.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A parse error that names the offending token and its byte offset in the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at `{token}` (offset {offset})")]
pub struct SpecError {
    /// What is wrong.
    pub message: String,
    /// The bad token.
    pub token: String,
    /// Byte offset of `token` in the input.
    pub offset: usize,
}

impl SpecError {
    fn new(message: impl Into<String>, token: &str, offset: usize) -> Self {
        Self {
            message: message.into(),
            token: token.to_string(),
            offset,
        }
    }
}

/// A size in bytes with the CLI's syntax (`4GB`, `256M`, `1048576`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses a size; see the crate docs for the syntax.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        parse_size_at(s, 0).map(ByteSize)
    }
}

impl FromStr for ByteSize {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        Self::parse(s)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TB"),
            (1 << 30, "GB"),
            (1 << 20, "MB"),
            (1 << 10, "KB"),
        ];
        for (mult, unit) in UNITS {
            if self.0 != 0 && self.0.is_multiple_of(mult) {
                return write!(f, "{}{unit}", self.0 / mult);
            }
        }
        write!(f, "{}", self.0)
    }
}

fn parse_size_at(s: &str, offset: usize) -> Result<u64, SpecError> {
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits_end == 0 {
        return Err(SpecError::new("expected a size such as 256MB", s, offset));
    }
    let n: u64 = s[..digits_end]
        .parse()
        .map_err(|_| SpecError::new("size is too large", s, offset))?;
    let unit = &s[digits_end..];
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => {
            return Err(SpecError::new(
                "unknown size unit (use K, M, G or T)",
                unit,
                offset + digits_end,
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| SpecError::new("size is too large", s, offset))
}

/// A parsed disk spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DiskSpec {
    /// A file: raw, VHD or VHDX (sniffed from the content).
    File {
        /// Path of the image.
        path: PathBuf,
        /// Open read-only.
        read_only: bool,
        /// Create the file with this size if it does not exist.
        create: Option<ByteSize>,
        /// Bypass the host page cache (O_DIRECT) where supported.
        direct: bool,
    },
    /// A zero-filled RAM disk of the given size.
    Mem(ByteSize),
    /// A RAM differencing layer over a lower disk, which is opened read-only.
    MemDiff(Box<DiskSpec>),
}

impl DiskSpec {
    /// Parses a spec string.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        Self::parse_at(s, 0)
    }

    fn parse_at(s: &str, offset: usize) -> Result<Self, SpecError> {
        let Some((kind, rest)) = s.split_once(':') else {
            return Err(SpecError::new(
                "expected `file:`, `mem:` or `memdiff:`",
                s,
                offset,
            ));
        };
        let rest_offset = offset + kind.len() + 1;
        match kind {
            "file" => Self::parse_file(rest, rest_offset),
            "mem" => Ok(DiskSpec::Mem(ByteSize(parse_disk_size_at(
                rest,
                rest_offset,
            )?))),
            "memdiff" => Ok(DiskSpec::MemDiff(Box::new(Self::parse_at(
                rest,
                rest_offset,
            )?))),
            _ => Err(SpecError::new(
                "unknown disk kind (use file:, mem: or memdiff:)",
                kind,
                offset,
            )),
        }
    }

    /// `PATH { ";" option }`, starting at `offset`.
    fn parse_file(rest: &str, offset: usize) -> Result<Self, SpecError> {
        let mut parts = rest.split(';');
        let path = parts.next().unwrap_or_default();
        if path.is_empty() {
            return Err(SpecError::new("missing file path", path, offset));
        }
        let mut read_only = false;
        let mut create = None;
        let mut direct = false;
        let mut opt_offset = offset + path.len() + 1;
        for opt in parts {
            let (name, value) = match opt.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (opt, None),
            };
            let repeated = match (name, value) {
                ("ro", None) => std::mem::replace(&mut read_only, true),
                ("direct", None) => std::mem::replace(&mut direct, true),
                ("create", Some(value)) => {
                    let size = parse_disk_size_at(value, opt_offset + name.len() + 1)?;
                    create.replace(ByteSize(size)).is_some()
                }
                ("", None) => {
                    return Err(SpecError::new("empty file option", opt, opt_offset));
                }
                _ => {
                    return Err(SpecError::new(
                        "unknown file option (use ro, direct or create=SIZE)",
                        opt,
                        opt_offset,
                    ));
                }
            };
            if repeated {
                return Err(SpecError::new("option given twice", opt, opt_offset));
            }
            opt_offset += opt.len() + 1;
        }
        if read_only && create.is_some() {
            return Err(SpecError::new(
                "`ro` and `create=` cannot be combined",
                rest,
                offset,
            ));
        }
        Ok(DiskSpec::File {
            path: PathBuf::from(path),
            read_only,
            create,
            direct,
        })
    }
}

/// A disk size: non-zero and a whole number of 512-byte sectors.
fn parse_disk_size_at(s: &str, offset: usize) -> Result<u64, SpecError> {
    let size = parse_size_at(s, offset)?;
    if size == 0 {
        return Err(SpecError::new("a disk cannot be empty", s, offset));
    }
    if size % 512 != 0 {
        return Err(SpecError::new(
            "a disk size must be a multiple of 512 bytes",
            s,
            offset,
        ));
    }
    Ok(size)
}

impl FromStr for DiskSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        Self::parse(s)
    }
}

impl fmt::Display for DiskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskSpec::File {
                path,
                read_only,
                create,
                direct,
            } => {
                write!(f, "file:{}", path.display())?;
                if *read_only {
                    f.write_str(";ro")?;
                }
                if *direct {
                    f.write_str(";direct")?;
                }
                if let Some(size) = create {
                    write!(f, ";create={size}")?;
                }
                Ok(())
            }
            DiskSpec::Mem(size) => write!(f, "mem:{size}"),
            DiskSpec::MemDiff(inner) => write!(f, "memdiff:{inner}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("256MB").unwrap().0, 256 << 20);
        assert_eq!(ByteSize::parse("4GB").unwrap().0, 4 << 30);
        assert_eq!(ByteSize::parse("1G").unwrap().0, 1 << 30);
        assert_eq!(ByteSize::parse("1234").unwrap().0, 1234);
        assert_eq!(ByteSize::parse("2gib").unwrap().0, 2 << 30);
        assert!(ByteSize::parse("").is_err());
        assert!(ByteSize::parse("MB").is_err());
        assert_eq!(ByteSize::parse("12XB").unwrap_err().token, "XB");
        assert!(ByteSize::parse("99999999999999999999").is_err());
        assert!(ByteSize::parse("99999999999T").is_err());
        assert_eq!(ByteSize(300 << 20).to_string(), "300MB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }

    #[test]
    fn specs_parse_and_round_trip() {
        for s in [
            "file:disk.vhdx",
            "file:/a/b c/d.vhd;ro",
            "file:x.raw;create=1GB",
            "file:x.raw;direct",
            "mem:64MB",
            "memdiff:file:path/to/disk.vhdx",
            "memdiff:memdiff:mem:1MB",
            "file:C:\\images\\x.vhdx",
        ] {
            let spec = DiskSpec::parse(s).unwrap();
            assert_eq!(DiskSpec::parse(&spec.to_string()).unwrap(), spec, "{s}");
        }
        assert_eq!(
            DiskSpec::parse("memdiff:file:disk.vhd").unwrap(),
            DiskSpec::MemDiff(Box::new(DiskSpec::File {
                path: "disk.vhd".into(),
                read_only: false,
                create: None,
                direct: false
            }))
        );
    }

    #[test]
    fn errors_point_at_the_bad_token() {
        let e = DiskSpec::parse("memdiff:file:x.vhd;bogus").unwrap_err();
        assert_eq!((e.token.as_str(), e.offset), ("bogus", 19));
        let e = DiskSpec::parse("memdiff:disk:x").unwrap_err();
        assert_eq!((e.token.as_str(), e.offset), ("disk", 8));
        let e = DiskSpec::parse("mem:12Q").unwrap_err();
        assert_eq!((e.token.as_str(), e.offset), ("Q", 6));
        assert!(DiskSpec::parse("file:").is_err());
        assert!(DiskSpec::parse("mem:0").is_err());
        assert!(DiskSpec::parse("nocolon").is_err());
        assert!(DiskSpec::parse("file:x;ro;create=1G").is_err());
    }

    fn err(s: &str) -> (String, String, usize) {
        let e = DiskSpec::parse(s).unwrap_err();
        (e.message, e.token, e.offset)
    }

    #[test]
    fn options_are_checked_one_by_one() {
        let (msg, token, offset) = err("file:x.vhd;ro;ro");
        assert_eq!(
            (msg.as_str(), token.as_str(), offset),
            ("option given twice", "ro", 14)
        );
        let (msg, token, offset) = err("file:x.vhd;create=1MB;create=2MB");
        assert_eq!(msg, "option given twice");
        assert_eq!((token.as_str(), offset), ("create=2MB", 22));
        let (msg, _, offset) = err("file:x.vhd;;ro");
        assert_eq!((msg.as_str(), offset), ("empty file option", 11));
        let (_, token, _) = err("file:x.vhd;ro=1");
        assert_eq!(token, "ro=1");
        let (_, token, _) = err("file:x.vhd;create");
        assert_eq!(token, "create");
        let (_, token, offset) = err("memdiff:file:x.vhd;create=1000");
        assert_eq!((token.as_str(), offset), ("1000", 26));
        let (msg, token, offset) = err("memdiff:file:");
        assert_eq!(
            (msg.as_str(), token.as_str(), offset),
            ("missing file path", "", 13)
        );
        let (_, token, offset) = err("memdiff:");
        assert_eq!((token.as_str(), offset), ("", 8));
        assert!(DiskSpec::parse("file:x;create=0").is_err());
        assert!(DiskSpec::parse("mem:513").is_err());
        assert_eq!(
            DiskSpec::parse("mem:1536").unwrap(),
            DiskSpec::Mem(ByteSize(1536))
        );
    }

    #[test]
    fn every_combination_round_trips() {
        let paths = ["d.vhdx", "/abs/x y.vhd", "C:\\w\\z.img", "a:b", "x=y"];
        let options = [
            "",
            ";ro",
            ";direct",
            ";create=4GB",
            ";ro;direct",
            ";direct;create=1536",
        ];
        for path in paths {
            for opt in options {
                for prefix in ["", "memdiff:", "memdiff:memdiff:"] {
                    let text = format!("{prefix}file:{path}{opt}");
                    let spec = DiskSpec::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
                    let printed = spec.to_string();
                    assert_eq!(
                        DiskSpec::parse(&printed).unwrap(),
                        spec,
                        "{text} -> {printed}"
                    );
                }
            }
        }
        for size in ["512", "1K", "3MB", "2GiB", "1T", "1536"] {
            let spec = DiskSpec::parse(&format!("mem:{size}")).unwrap();
            assert_eq!(DiskSpec::parse(&spec.to_string()).unwrap(), spec);
        }
    }
}
