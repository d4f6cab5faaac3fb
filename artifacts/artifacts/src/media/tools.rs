//! The host programs and boot-loader files the BIOS media recipes run, found once, with the
//! identity (content digest, Debian package version) that goes into a medium's cache key and
//! into `artifacts.lock`.
//!
//! | what | Debian package | used for |
//! |---|---|---|
//! | `mkfs.fat` | `dosfstools` | the FAT16 partition (disk) |
//! | `mcopy` | `mtools` | copying files into it, no mount (disk; `syslinux` runs `mattrib`/`mcopy` too) |
//! | `syslinux` | `syslinux` | the mtools-based installer: boot sector + `ldlinux.sys` (disk) |
//! | `sfdisk` | `fdisk` | the MBR partition table, written into a plain file (disk) |
//! | `mbr.bin` | `syslinux-common` | the MBR boot code (disk) |
//! | `xorriso` | `xorriso` | the ISO 9660 image with El Torito boot record (ISO) |
//! | `isolinux.bin` | `isolinux` | the El Torito boot image (ISO) |
//! | `ldlinux.c32` | `syslinux-common` | isolinux's second stage (ISO) |

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::MediaError;
use crate::hash::Sha256;
use crate::manifest::LockedTool;

/// A program or boot-loader file that is missing or unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// A program is not installed.
    #[error(
        "`{tool}` is not installed; install the Debian package `{package}` (`sudo apt-get install {package}`)"
    )]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// A boot-loader file is not installed.
    #[error(
        "the boot-loader file {file} is not installed (looked under {searched}); install the Debian package `{package}` (`sudo apt-get install {package}`)"
    )]
    MissingFile {
        /// The file.
        file: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
        /// The directories searched.
        searched: String,
    },
    /// A program or file exists but cannot be read.
    #[error("cannot read {}: {message}", path.display())]
    Unreadable {
        /// Which.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
}

/// Which medium a set of tools is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediumKind {
    /// An MBR hard disk (raw, VHD, VHDX).
    Disk,
    /// An El Torito CD/DVD image.
    Iso,
}

impl MediumKind {
    /// `disk` or `iso`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disk => "disk",
            Self::Iso => "iso",
        }
    }
}

/// A program the recipes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Program {
    MkfsFat,
    Mcopy,
    Syslinux,
    Sfdisk,
    Xorriso,
}

impl Program {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::MkfsFat => "mkfs.fat",
            Self::Mcopy => "mcopy",
            Self::Syslinux => "syslinux",
            Self::Sfdisk => "sfdisk",
            Self::Xorriso => "xorriso",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Self::MkfsFat => "dosfstools",
            Self::Mcopy => "mtools",
            Self::Syslinux => "syslinux",
            Self::Sfdisk => "fdisk",
            Self::Xorriso => "xorriso",
        }
    }
}

/// A data file the recipes copy onto a medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataFile {
    MbrBin,
    IsolinuxBin,
    LdlinuxC32,
}

impl DataFile {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::MbrBin => "mbr.bin",
            Self::IsolinuxBin => "isolinux.bin",
            Self::LdlinuxC32 => "ldlinux.c32",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Self::MbrBin | Self::LdlinuxC32 => "syslinux-common",
            Self::IsolinuxBin => "isolinux",
        }
    }

    /// Where distributions put it, relative to a data root (`/usr/lib`, `/usr/share`):
    /// Debian's layout first, then the flat one of Fedora and Arch.
    fn candidates(self) -> &'static [&'static str] {
        match self {
            Self::MbrBin => &[
                "syslinux/mbr/mbr.bin",
                "syslinux/mbr.bin",
                "syslinux/bios/mbr.bin",
            ],
            Self::IsolinuxBin => &[
                "ISOLINUX/isolinux.bin",
                "syslinux/isolinux.bin",
                "syslinux/bios/isolinux.bin",
            ],
            Self::LdlinuxC32 => &[
                "syslinux/modules/bios/ldlinux.c32",
                "syslinux/ldlinux.c32",
                "syslinux/bios/ldlinux.c32",
            ],
        }
    }
}

const DISK_PROGRAMS: &[Program] = &[
    Program::MkfsFat,
    Program::Mcopy,
    Program::Syslinux,
    Program::Sfdisk,
];
const DISK_FILES: &[DataFile] = &[DataFile::MbrBin];
const ISO_PROGRAMS: &[Program] = &[Program::Xorriso];
const ISO_FILES: &[DataFile] = &[DataFile::IsolinuxBin, DataFile::LdlinuxC32];

/// Debian packages whose versions decide a medium's bytes (the programs' packages, their
/// boot-loader data, and the libraries xorriso delegates to).
fn packages(kind: MediumKind) -> &'static [&'static str] {
    match kind {
        MediumKind::Disk => &[
            "dosfstools",
            "fdisk",
            "mtools",
            "syslinux",
            "syslinux-common",
        ],
        MediumKind::Iso => &[
            "isolinux",
            "libburn4",
            "libisoburn1",
            "libisofs6",
            "syslinux-common",
            "xorriso",
        ],
    }
}

/// One program or file, found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) path: PathBuf,
    pub(crate) sha256: Sha256,
}

/// Everything one kind of medium needs, found.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) programs: BTreeMap<&'static str, Found>,
    pub(crate) files: BTreeMap<&'static str, Found>,
    /// Debian package versions (`unknown` where dpkg does not know the package).
    pub(crate) versions: Vec<LockedTool>,
    /// `xorriso -version` (it names the libisofs/libburn in use), for ISO media.
    pub(crate) version_text: String,
    /// The `PATH` the programs run with (their directories first).
    pub(crate) path_env: std::ffi::OsString,
}

impl Resolved {
    pub(crate) fn program(&self, p: Program) -> Result<&Path, MediaError> {
        self.programs
            .get(p.name())
            .map(|f| f.path.as_path())
            .ok_or_else(|| MediaError::Internal(format!("{} was not resolved", p.name())))
    }

    pub(crate) fn file(&self, f: DataFile) -> Result<&Path, MediaError> {
        self.files
            .get(f.name())
            .map(|f| f.path.as_path())
            .ok_or_else(|| MediaError::Internal(format!("{} was not resolved", f.name())))
    }

    /// The text that identifies these tools in a cache key.
    pub(crate) fn fingerprint(&self) -> String {
        let mut s = String::new();
        for (name, f) in self.programs.iter().chain(&self.files) {
            s.push_str(&format!("tool {name} {}\n", f.sha256));
        }
        for v in &self.versions {
            s.push_str(&format!("package {} {}\n", v.package, v.version));
        }
        s.push_str(&self.version_text);
        s
    }
}

/// Where to look for the programs and the boot-loader files.
///
/// [`Toolchain::system`] is the host's (`$PATH`, plus `/usr/sbin` and `/sbin`, where Debian
/// keeps `mkfs.fat` and `sfdisk` out of a normal user's `PATH`). What it finds is remembered
/// for the life of the process.
#[derive(Debug)]
pub struct Toolchain {
    bin_dirs: Vec<PathBuf>,
    data_roots: Vec<PathBuf>,
    dpkg_query: Option<PathBuf>,
    disk: OnceLock<Result<Resolved, ToolError>>,
    iso: OnceLock<Result<Resolved, ToolError>>,
}

impl Toolchain {
    /// The host's tools (found on first use, then remembered).
    pub fn system() -> &'static Toolchain {
        static SYSTEM: OnceLock<Toolchain> = OnceLock::new();
        SYSTEM.get_or_init(|| {
            let mut bin_dirs: Vec<PathBuf> = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default();
            for extra in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
                let extra = PathBuf::from(extra);
                if !bin_dirs.contains(&extra) {
                    bin_dirs.push(extra);
                }
            }
            Toolchain::new(
                bin_dirs,
                vec![PathBuf::from("/usr/lib"), PathBuf::from("/usr/share")],
            )
        })
    }

    /// Tools searched in `bin_dirs`, boot-loader files under `data_roots` (in the layouts of
    /// the table above); Debian package versions from `dpkg-query` if it is in `bin_dirs`.
    pub fn new(bin_dirs: Vec<PathBuf>, data_roots: Vec<PathBuf>) -> Self {
        let dpkg_query = find_in(&bin_dirs, "dpkg-query");
        Self {
            bin_dirs,
            data_roots,
            dpkg_query,
            disk: OnceLock::new(),
            iso: OnceLock::new(),
        }
    }

    /// The Debian package versions a medium of `kind` made now would record in
    /// `artifacts.lock` (fails like a build would when something is missing).
    pub fn versions(&self, kind: MediumKind) -> Result<Vec<LockedTool>, MediaError> {
        Ok(self.resolve(kind)?.versions.clone())
    }

    /// Finds what `kind` needs, or says which package to install. A failure is remembered
    /// like a success (tools do not appear while a test binary runs).
    pub(crate) fn resolve(&self, kind: MediumKind) -> Result<&Resolved, MediaError> {
        let cell = match kind {
            MediumKind::Disk => &self.disk,
            MediumKind::Iso => &self.iso,
        };
        cell.get_or_init(|| self.find(kind))
            .as_ref()
            .map_err(|e| MediaError::Tools(e.clone()))
    }

    fn find(&self, kind: MediumKind) -> Result<Resolved, ToolError> {
        let (programs, files) = match kind {
            MediumKind::Disk => (DISK_PROGRAMS, DISK_FILES),
            MediumKind::Iso => (ISO_PROGRAMS, ISO_FILES),
        };
        let mut found_programs = BTreeMap::new();
        for &p in programs {
            let path = find_in(&self.bin_dirs, p.name()).ok_or(ToolError::MissingTool {
                tool: p.name(),
                package: p.package(),
            })?;
            found_programs.insert(p.name(), identify(&path)?);
        }
        let mut found_files = BTreeMap::new();
        for &f in files {
            let path = self
                .data_roots
                .iter()
                .flat_map(|root| f.candidates().iter().map(move |c| root.join(c)))
                .find(|p| p.is_file())
                .ok_or_else(|| ToolError::MissingFile {
                    file: f.name(),
                    package: f.package(),
                    searched: self
                        .data_roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            found_files.insert(f.name(), identify(&path)?);
        }
        // Children find `mattrib` and `mcopy` (run by `syslinux`) on this PATH.
        let mut dirs: Vec<PathBuf> = found_programs
            .values()
            .filter_map(|f: &Found| f.path.parent().map(Path::to_path_buf))
            .collect();
        dirs.extend(self.bin_dirs.iter().cloned());
        dirs.dedup();
        let path_env = std::env::join_paths(&dirs).unwrap_or_default();
        let version_text = match kind {
            MediumKind::Iso => found_programs
                .get(Program::Xorriso.name())
                .map(|f| command_output(&f.path, &["-version"]))
                .unwrap_or_default(),
            MediumKind::Disk => String::new(),
        };
        Ok(Resolved {
            programs: found_programs,
            files: found_files,
            versions: self.package_versions(packages(kind)),
            version_text,
            path_env,
        })
    }

    fn package_versions(&self, packages: &[&str]) -> Vec<LockedTool> {
        let mut known = BTreeMap::new();
        if let Some(dpkg) = &self.dpkg_query {
            let out = Command::new(dpkg)
                .args(["-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\\n"])
                .args(packages)
                .env("LC_ALL", "C")
                .output();
            if let Ok(out) = out {
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    let mut words = line.split_whitespace();
                    if let (Some(p), Some(v), Some(status)) =
                        (words.next(), words.next(), words.next())
                        && status.starts_with("ii")
                    {
                        known.insert(p.to_owned(), v.to_owned());
                    }
                }
            }
        }
        packages
            .iter()
            .map(|p| LockedTool {
                package: (*p).to_owned(),
                version: known
                    .get(*p)
                    .cloned()
                    .unwrap_or_else(|| "unknown".to_owned()),
            })
            .collect()
    }
}

fn find_in(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn identify(path: &Path) -> Result<Found, ToolError> {
    let (sha256, _) = Sha256::of_file(path).map_err(|e| ToolError::Unreadable {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(Found {
        path: path.to_owned(),
        sha256,
    })
}

fn command_output(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            // Drop lines that change from run to run.
            s.lines()
                .filter(|l| !l.contains("Build timestamp"))
                .map(|l| format!("{l}\n"))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_its_debian_package() {
        let empty = tempfile::tempdir().unwrap();
        let t = Toolchain::new(vec![empty.path().to_owned()], vec![]);
        let e = t.resolve(MediumKind::Disk).unwrap_err().to_string();
        assert!(
            e.contains("`mkfs.fat`") && e.contains("apt-get install dosfstools"),
            "{e}"
        );
        let e = t.resolve(MediumKind::Iso).unwrap_err().to_string();
        assert!(
            e.contains("`xorriso`") && e.contains("apt-get install xorriso"),
            "{e}"
        );
        // Remembered, and still the same message.
        let again = t.resolve(MediumKind::Iso).unwrap_err().to_string();
        assert_eq!(again, e);
    }

    #[test]
    fn a_missing_boot_loader_file_names_its_debian_package() {
        let empty = tempfile::tempdir().unwrap();
        // The host's programs, but no syslinux data files.
        let t = Toolchain::new(
            vec!["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()],
            vec![empty.path().to_owned()],
        );
        let e = t.resolve(MediumKind::Disk).unwrap_err().to_string();
        assert!(
            e.contains("mbr.bin") && e.contains("syslinux-common"),
            "{e}"
        );
        let e = t.resolve(MediumKind::Iso).unwrap_err().to_string();
        assert!(
            e.contains("isolinux.bin") && e.contains("apt-get install isolinux"),
            "{e}"
        );
    }

    #[test]
    fn the_host_toolchain_is_found_with_debian_versions() {
        // Debian 12 host with the packages the guest contract names.
        let t = Toolchain::system();
        for kind in [MediumKind::Disk, MediumKind::Iso] {
            let r = t.resolve(kind).unwrap();
            assert!(
                r.versions.iter().all(|v| v.version != "unknown"),
                "{:?}",
                r.versions
            );
            assert!(!r.fingerprint().is_empty());
        }
        let iso = t.resolve(MediumKind::Iso).unwrap();
        assert!(
            iso.version_text.contains("libisofs"),
            "{}",
            iso.version_text
        );
    }
}
