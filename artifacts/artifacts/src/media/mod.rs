//! BIOS (PCAT) boot media: an MBR hard disk (VHD, VHDX or raw) and an El Torito ISO, each
//! holding a kernel, an initramfs (with optional extra cpio archives appended, e.g. the guest
//! agent) and a kernel command line, booted by syslinux/isolinux on the serial console.
//!
//! Built without root or loop devices from Debian's `dosfstools`, `mtools`, `syslinux`,
//! `syslinux-common`, `fdisk`, `isolinux` and `xorriso` (see [`tools`] and the guest contract,
//! `docs/src/guest-contract.md`), then kept in the agar cache under the hash of every input
//! (file contents, command line, format, and the tools' digests and Debian versions), so the
//! second request for the same medium is a lookup:
//!
//! ```no_run
//! use artifacts::ids;
//! use artifacts::media::{BiosDisk, BootFiles};
//! let resolver = artifacts::Resolver::from_env()?;
//! let files = BootFiles::from_artifacts(&resolver, ids::DEBIAN12_K61_KERNEL, ids::DEBIAN12_K61_INITRD)?
//!     .append_agent("target/x86_64-unknown-linux-gnu/debug/agar-agent".as_ref())?
//!     .cmdline_args("agar.modules=ata_piix,sd_mod")?;
//! let disk = BiosDisk::new(files).build(resolver.cache())?;
//! println!("agar-vmm --pcat --ide memdiff:file:{}", disk.path.display());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Architecture
//!
//! - [`BootFiles`] validates and identifies the inputs (a bzImage, initramfs archives, a
//!   command line syslinux can carry).
//! - [`BiosDisk`] / [`BiosIso`] compute the medium's key, look it up in `refs/media/<key>.toml`
//!   of the cache, and otherwise build it under the cache lock `media-<key>` in `tmp/` and move
//!   the result into `blobs/` (read-only, by digest) before writing the ref: concurrent
//!   processes asking for the same medium build it once and never see half a file.
//! - `assemble` runs the tools; [`tools::Toolchain`] finds them and says which Debian package
//!   to install when one is missing.
//!
//! The same inputs give the same bytes (checked by the tests), so `agar artifacts restore`
//! can pin the prebuilt media (`debian12_k61_bios_vhd`, `debian12_k61_bios_iso`) in
//! `artifacts.lock` — except VHDX, whose GUIDs the `vhdx` crate draws at random.

mod assemble;
pub mod tools;

use std::io;
use std::io::Read;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use serde::Deserialize;
use serde::Serialize;

use crate::Resolver;
use crate::cache::Cache;
use crate::cache::CacheIoError;
use crate::hash::Hasher;
use crate::hash::Sha256;
use crate::ids::Artifact;
use crate::ids::Initrd;
use crate::ids::Kernel;
use crate::recipes::cpio;
use crate::resolve::ResolveError;
pub use tools::MediumKind;
pub use tools::ToolError;
pub use tools::Toolchain;

/// The command line a medium boots with unless told otherwise: the console on COM1.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";

/// Bump when the media layout changes in a way the loader configuration does not show; it
/// is part of every medium's key and of the pinned media's lock fingerprint.
pub(crate) const MEDIA_VERSION: u32 = 1;

/// Every timestamp on a medium: 2000-01-01T00:00:00Z (also the VHD epoch).
pub(crate) const SOURCE_DATE_EPOCH: u64 = 946_684_800;

/// Longest command line accepted (the kernel's limit is 2047 bytes, with syslinux's
/// `BOOT_IMAGE=` and `initrd=` added).
pub const MAX_CMDLINE: usize = 1024;

/// Largest kernel + initramfs a medium carries (FAT16 tops out at 2 GiB).
pub const MAX_PAYLOAD: u64 = 1 << 30;

/// Why a medium could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A program or boot-loader file is missing (the message names the Debian package).
    #[error(transparent)]
    Tools(#[from] ToolError),
    /// A tool ran and failed.
    #[error("`{command}` failed ({status}): {detail}")]
    ToolFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The first lines of its output.
        detail: String,
    },
    /// An input file is missing or is not what it should be.
    #[error("{}: {reason}", path.display())]
    BadInput {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The kernel command line cannot go on a medium.
    #[error("kernel command line {cmdline:?}: {reason}")]
    BadCmdline {
        /// The command line.
        cmdline: String,
        /// What is wrong.
        reason: String,
    },
    /// Kernel and initramfs are too large for a FAT16 partition.
    #[error("the kernel and initramfs take {size} bytes; a BIOS medium holds at most {max}")]
    TooLarge {
        /// Their size.
        size: u64,
        /// [`MAX_PAYLOAD`].
        max: u64,
    },
    /// A file could not be read or written.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The cache could not be used.
    #[error(transparent)]
    Cache(#[from] CacheIoError),
    /// The raw disk could not be converted (agar's `disk` crate).
    #[error("cannot make the disk image")]
    Disk(#[source] disk::DiskError),
    /// A bug in agar.
    #[error("internal error: {0}")]
    Internal(String),
}

/// One part of the initramfs: the base archive or one appended after it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// What a medium boots: a kernel, an initramfs (plus archives appended to it, in order) and
/// the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    kernel: PathBuf,
    initrd: Vec<Part>,
    cmdline: String,
}

impl BootFiles {
    /// A kernel (bzImage) and initramfs (cpio, optionally compressed), booted with
    /// [`DEFAULT_CMDLINE`]. The files are checked when a medium is built.
    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: vec![Part::File(initrd.into())],
            cmdline: DEFAULT_CMDLINE.to_owned(),
        }
    }

    /// The kernel and initramfs artifacts, resolved the way tests resolve them.
    pub fn from_artifacts(
        resolver: &Resolver,
        kernel: Artifact<Kernel>,
        initrd: Artifact<Initrd>,
    ) -> Result<Self, ResolveError> {
        let paths = resolver.resolve_all([kernel.id(), initrd.id()])?;
        match <[PathBuf; 2]>::try_from(paths) {
            Ok([k, i]) => Ok(Self::new(k, i)),
            Err(_) => Err(ResolveError::Unknown(format!("{kernel}+{initrd}"))),
        }
    }

    /// Appends a cpio archive (newc, or compressed) from a file to the initramfs; Linux
    /// unpacks the archives in order, later files replacing earlier ones.
    pub fn append_initrd(mut self, archive: impl Into<PathBuf>) -> Self {
        self.initrd.push(Part::File(archive.into()));
        self
    }

    /// Appends a cpio archive held in memory (e.g. [`cpio::Archive::to_bytes`]).
    pub fn append_initrd_bytes(mut self, archive: Vec<u8>) -> Self {
        self.initrd.push(Part::Bytes(archive));
        self
    }

    /// Appends an archive holding the guest agent at `/sbin/agar-agent` (mode 0755), where
    /// the initramfs's `/init` looks for it (docs/src/guest-contract.md).
    pub fn append_agent(self, agent: &Path) -> Result<Self, MediaError> {
        let bytes = std::fs::read(agent).map_err(|source| MediaError::Io {
            action: "cannot read the guest agent",
            path: agent.to_owned(),
            source,
        })?;
        if bytes.get(..4) != Some(b"\x7fELF") && bytes.get(..2) != Some(b"#!") {
            return Err(MediaError::BadInput {
                path: agent.to_owned(),
                reason: "the guest agent is neither an ELF executable nor a script".into(),
            });
        }
        let mut a = cpio::Archive::new();
        a.add("sbin/agar-agent", 0o755, cpio::Node::File(bytes));
        Ok(self.append_initrd_bytes(a.to_bytes()))
    }

    /// Adds words to the command line (after what is there, separated by a space).
    pub fn cmdline_args(mut self, args: &str) -> Result<Self, MediaError> {
        let args = args.trim();
        if !args.is_empty() {
            let joined = if self.cmdline.is_empty() {
                args.to_owned()
            } else {
                format!("{} {args}", self.cmdline)
            };
            check_cmdline(&joined)?;
            self.cmdline = joined;
        }
        Ok(self)
    }

    /// Replaces the whole command line (including the default `console=ttyS0`).
    pub fn replace_cmdline(mut self, cmdline: &str) -> Result<Self, MediaError> {
        let cmdline = cmdline.trim();
        check_cmdline(cmdline)?;
        self.cmdline = cmdline.to_owned();
        Ok(self)
    }

    /// The kernel command line the medium will boot with.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// The kernel path.
    pub fn kernel(&self) -> &Path {
        &self.kernel
    }

    /// Checks the inputs and identifies them (digests, sizes); paths become absolute.
    fn inspect(&self) -> Result<Inspected, MediaError> {
        check_cmdline(&self.cmdline)?;
        let kernel = absolute(&self.kernel)?;
        check_kernel(&kernel)?;
        let mut files = Vec::new();
        let mut size = file_len(&kernel)?;
        for part in &self.initrd {
            let (part, len) = match part {
                Part::File(p) => {
                    let p = absolute(p)?;
                    let mut head = [0u8; 6];
                    let n = read_head(&p, &mut head)?;
                    check_initrd_magic(&head[..n]).map_err(|reason| MediaError::BadInput {
                        path: p.clone(),
                        reason,
                    })?;
                    let len = file_len(&p)?;
                    (Part::File(p), len)
                }
                Part::Bytes(b) => {
                    check_initrd_magic(b).map_err(|reason| MediaError::BadInput {
                        path: PathBuf::from("(appended archive in memory)"),
                        reason,
                    })?;
                    (part.clone(), b.len() as u64)
                }
            };
            size = size.saturating_add(len.next_multiple_of(4));
            files.push(part);
        }
        // Before hashing gigabytes.
        if size > MAX_PAYLOAD {
            return Err(MediaError::TooLarge {
                size,
                max: MAX_PAYLOAD,
            });
        }
        let kernel_id = identify(&kernel)?;
        let mut parts = Vec::new();
        for part in files {
            let id = match &part {
                Part::File(p) => identify(p)?,
                Part::Bytes(b) => (Sha256::of(b), b.len() as u64),
            };
            parts.push((part, id));
        }
        Ok(Inspected {
            kernel,
            kernel_id,
            parts,
            size,
        })
    }
}

/// The checked inputs.
struct Inspected {
    kernel: PathBuf,
    kernel_id: (Sha256, u64),
    parts: Vec<(Part, (Sha256, u64))>,
    size: u64,
}

impl Inspected {
    /// Writes the initramfs parts one after the other, each padded to 4 bytes (where the
    /// kernel looks for the next archive's header).
    fn write_initrd(&self, dest: &Path) -> Result<(), MediaError> {
        let mut out =
            std::fs::File::create(dest).map_err(assemble::io_err("cannot create", dest))?;
        let mut written: u64 = 0;
        for (part, _) in &self.parts {
            let n = match part {
                Part::File(p) => {
                    let mut f =
                        std::fs::File::open(p).map_err(assemble::io_err("cannot read", p))?;
                    io::copy(&mut f, &mut out).map_err(assemble::io_err("cannot write", dest))?
                }
                Part::Bytes(b) => {
                    io::Write::write_all(&mut out, b)
                        .map_err(assemble::io_err("cannot write", dest))?;
                    b.len() as u64
                }
            };
            written += n;
            let pad = written.next_multiple_of(4) - written;
            io::Write::write_all(&mut out, &[0u8; 4][..pad as usize])
                .map_err(assemble::io_err("cannot write", dest))?;
            written += pad;
        }
        out.sync_all()
            .map_err(assemble::io_err("cannot write", dest))
    }
}

/// The disk image format of a [`BiosDisk`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DiskFormat {
    /// VHD (dynamic): what `agar-vmm --ide memdiff:file:` and Hyper-V Gen1 take.
    #[default]
    Vhd,
    /// VHDX (dynamic). Not byte-reproducible: the `vhdx` crate draws its GUIDs at random.
    Vhdx,
    /// Raw sectors.
    Raw,
}

impl DiskFormat {
    /// `vhd`, `vhdx` or `raw`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vhd => "vhd",
            Self::Vhdx => "vhdx",
            Self::Raw => "raw",
        }
    }

    /// The file extension: `vhd`, `vhdx` or `img`.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Vhd => "vhd",
            Self::Vhdx => "vhdx",
            Self::Raw => "img",
        }
    }
}

/// A built medium in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Medium {
    /// The file (a read-only cache blob; open it with `memdiff:` or a snapshot).
    pub path: PathBuf,
    /// Its digest.
    pub sha256: Sha256,
    /// Its size in bytes.
    pub size: u64,
    /// The hash of every input: the cache key.
    pub key: Sha256,
    /// Whether the cache already had it.
    pub cached: bool,
}

/// The cache's record of a built medium (`refs/media/<key>.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaRef {
    /// The blob.
    pub sha256: Sha256,
    /// Its size.
    pub size: u64,
    /// `disk` or `iso`.
    pub medium: String,
    /// `vhd`, `vhdx`, `raw` or `iso`.
    pub format: String,
    /// Digest of the kernel it holds.
    pub kernel: Sha256,
    /// Digest of the first initramfs archive it holds.
    pub initrd: Sha256,
}

/// What every BIOS medium offers (building, the cache key); [`BiosDisk`] and [`BiosIso`]
/// dereference to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BiosMedium {
    files: BootFiles,
    kind: MediumKind,
    disk_format: DiskFormat,
}

impl BiosMedium {
    /// What it boots.
    pub fn files(&self) -> &BootFiles {
        &self.files
    }

    /// The medium from the cache, built there first if needed, with the host's tools.
    pub fn build(&self, cache: &Cache) -> Result<Medium, MediaError> {
        self.build_with(cache, Toolchain::system())
    }

    /// Like [`Self::build`], with the given tools.
    pub fn build_with(&self, cache: &Cache, tools: &Toolchain) -> Result<Medium, MediaError> {
        build_cached(&self.spec(), cache, tools)
    }

    /// Builds the medium at `out` (replacing it), without the cache.
    pub fn write_to(&self, out: &Path, tools: &Toolchain) -> Result<(), MediaError> {
        write_uncached(&self.spec(), out, tools)
    }

    /// The cache key (the hash of every input), without building anything.
    pub fn key(&self, tools: &Toolchain) -> Result<Sha256, MediaError> {
        let spec = self.spec();
        let inspected = spec.files.inspect()?;
        spec.key(&inspected, tools)
    }

    fn spec(&self) -> Spec<'_> {
        Spec {
            files: &self.files,
            kind: self.kind,
            format: match self.kind {
                MediumKind::Iso => "iso",
                MediumKind::Disk => self.disk_format.as_str(),
            },
            disk_format: self.disk_format,
        }
    }
}

/// An MBR hard disk that boots [`BootFiles`] with syslinux.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BiosDisk(BiosMedium);

impl BiosDisk {
    /// A VHD (dynamic) booting `files`.
    pub fn new(files: BootFiles) -> Self {
        Self(BiosMedium {
            files,
            kind: MediumKind::Disk,
            disk_format: DiskFormat::Vhd,
        })
    }

    /// Another image format.
    pub fn format(mut self, format: DiskFormat) -> Self {
        self.0.disk_format = format;
        self
    }
}

impl std::ops::Deref for BiosDisk {
    type Target = BiosMedium;
    fn deref(&self) -> &BiosMedium {
        &self.0
    }
}

/// An El Torito CD/DVD image that boots [`BootFiles`] with isolinux.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BiosIso(BiosMedium);

impl BiosIso {
    /// An ISO booting `files`.
    pub fn new(files: BootFiles) -> Self {
        Self(BiosMedium {
            files,
            kind: MediumKind::Iso,
            disk_format: DiskFormat::Raw,
        })
    }
}

impl std::ops::Deref for BiosIso {
    type Target = BiosMedium;
    fn deref(&self) -> &BiosMedium {
        &self.0
    }
}

/// What [`crate::manifest`] fingerprints for the pinned media: the layout version and the
/// loader configuration template.
pub(crate) fn fingerprint_input() -> String {
    format!(
        "bios media v{MEDIA_VERSION}\n{}",
        assemble::loader_config("{cmdline}")
    )
}

/// A medium to make, whichever kind.
struct Spec<'a> {
    files: &'a BootFiles,
    kind: MediumKind,
    format: &'static str,
    disk_format: DiskFormat,
}

impl Spec<'_> {
    fn key(&self, inspected: &Inspected, tools: &Toolchain) -> Result<Sha256, MediaError> {
        let resolved = tools.resolve(self.kind)?;
        let mut h = Hasher::new();
        let mut line = |s: String| h.update(s.as_bytes());
        line(format!(
            "agar bios media v{MEDIA_VERSION}\n{} {}\n",
            self.kind.as_str(),
            self.format
        ));
        line(format!(
            "kernel {} {}\n",
            inspected.kernel_id.0, inspected.kernel_id.1
        ));
        for (_, (sha, len)) in &inspected.parts {
            line(format!("initrd {sha} {len}\n"));
        }
        line(assemble::loader_config(&self.files.cmdline));
        line(resolved.fingerprint());
        Ok(h.finish().0)
    }

    /// What seeds the ids written on the medium (volume id, disk signature, VHD unique id):
    /// the contents and command line, not the image format, so a raw, VHD and VHDX disk
    /// made from the same files hold the same sectors.
    fn seed(&self, inspected: &Inspected) -> Sha256 {
        let mut text = format!("agar bios media ids\nkernel {}\n", inspected.kernel_id.0);
        for (_, (sha, _)) in &inspected.parts {
            text.push_str(&format!("initrd {sha}\n"));
        }
        text.push_str(&self.files.cmdline);
        Sha256::of(text.as_bytes())
    }

    /// Builds into `out` using `work` (an empty directory).
    fn assemble(
        &self,
        inspected: &Inspected,
        tools: &Toolchain,
        work: &Path,
        out: &Path,
    ) -> Result<(), MediaError> {
        let resolved = tools.resolve(self.kind)?;
        let initrd = work.join("initrd.img");
        inspected.write_initrd(&initrd)?;
        let config = assemble::loader_config(&self.files.cmdline);
        let payload = assemble::Payload {
            kernel: &inspected.kernel,
            initrd: &initrd,
            bytes: inspected.size,
            config: &config,
            seed: self.seed(inspected),
        };
        match self.kind {
            MediumKind::Disk => assemble::disk(resolved, work, &payload, self.disk_format, out),
            MediumKind::Iso => assemble::iso(resolved, work, &payload, out),
        }
    }
}

fn build_cached(spec: &Spec<'_>, cache: &Cache, tools: &Toolchain) -> Result<Medium, MediaError> {
    let started = std::time::Instant::now();
    let inspected = spec.files.inspect()?;
    let key = spec.key(&inspected, tools)?;
    let lookup = || -> Result<Option<Medium>, MediaError> {
        let Some(r) = cache.media_ref(&key)? else {
            return Ok(None);
        };
        Ok(cache.blob_if_present(&r.sha256, r.size).map(|path| {
            cache.touch_media_ref(&key);
            Medium {
                path,
                sha256: r.sha256,
                size: r.size,
                key,
                cached: true,
            }
        }))
    };
    if let Some(hit) = lookup()? {
        tracing::debug!(%key, elapsed = ?started.elapsed(), "medium from the cache");
        return Ok(hit);
    }
    cache.ensure_layout()?;
    let _gc = cache.lock_shared("gc")?;
    let _lock = cache.lock(&format!("media-{key}"))?;
    // Another process may have built it while this one waited.
    if let Some(hit) = lookup()? {
        return Ok(hit);
    }
    let work = cache.tmp_path(&format!("media-{key}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(assemble::io_err("cannot create", &work))?;
    let out = work.join(format!("medium.{}", spec.format));
    let result = (|| {
        spec.assemble(&inspected, tools, &work, &out)?;
        let (sha256, size) =
            Sha256::of_file(&out).map_err(assemble::io_err("cannot read", &out))?;
        let path = cache.insert_blob(&out, &sha256)?;
        cache.set_media_ref(
            &key,
            &MediaRef {
                sha256,
                size,
                medium: spec.kind.as_str().to_owned(),
                format: spec.format.to_owned(),
                kernel: inspected.kernel_id.0,
                initrd: inspected
                    .parts
                    .first()
                    .map(|(_, (s, _))| *s)
                    .unwrap_or(inspected.kernel_id.0),
            },
        )?;
        Ok::<_, MediaError>(Medium {
            path,
            sha256,
            size,
            key,
            cached: false,
        })
    })();
    let _ = std::fs::remove_dir_all(&work);
    if let Ok(m) = &result {
        tracing::info!(
            medium = spec.kind.as_str(),
            format = spec.format,
            %key,
            size = m.size,
            elapsed = ?started.elapsed(),
            "built a BIOS boot medium"
        );
    }
    result
}

fn write_uncached(spec: &Spec<'_>, out: &Path, tools: &Toolchain) -> Result<(), MediaError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let inspected = spec.files.inspect()?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "medium".into());
    let work = out.with_file_name(format!(
        ".{name}.agar-work.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(assemble::io_err("cannot create", &work))?;
    let built = work.join(format!("medium.{}", spec.format));
    let result = spec
        .assemble(&inspected, tools, &work, &built)
        .and_then(|()| {
            std::fs::rename(&built, out).map_err(assemble::io_err("cannot move into place", out))
        });
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Checks a kernel command line for what a syslinux `APPEND` line can carry.
pub fn check_cmdline(cmdline: &str) -> Result<(), MediaError> {
    let bad = |reason: &str| MediaError::BadCmdline {
        cmdline: cmdline.to_owned(),
        reason: reason.to_owned(),
    };
    if cmdline.len() > MAX_CMDLINE {
        return Err(bad(&format!(
            "is {} bytes; at most {MAX_CMDLINE} fit on a medium",
            cmdline.len()
        )));
    }
    if let Some(c) = cmdline.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(bad(&format!(
            "contains {c:?}; only printable ASCII fits on a syslinux APPEND line"
        )));
    }
    if cmdline
        .split(' ')
        .any(|w| w.starts_with("initrd=") || w.starts_with("BOOT_IMAGE="))
    {
        return Err(bad(
            "sets initrd= or BOOT_IMAGE=, which the medium sets itself; append archives with BootFiles::append_initrd",
        ));
    }
    Ok(())
}

fn absolute(p: &Path) -> Result<PathBuf, MediaError> {
    let abs = std::fs::canonicalize(p).map_err(|e| MediaError::BadInput {
        path: p.to_owned(),
        reason: if e.kind() == io::ErrorKind::NotFound {
            "does not exist".into()
        } else {
            e.to_string()
        },
    })?;
    if !abs.is_file() {
        return Err(MediaError::BadInput {
            path: p.to_owned(),
            reason: "is not a regular file".into(),
        });
    }
    Ok(abs)
}

fn file_len(p: &Path) -> Result<u64, MediaError> {
    std::fs::metadata(p)
        .map(|m| m.len())
        .map_err(assemble::io_err("cannot stat", p))
}

fn read_head(p: &Path, buf: &mut [u8]) -> Result<usize, MediaError> {
    let mut f = std::fs::File::open(p).map_err(assemble::io_err("cannot read", p))?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(assemble::io_err("cannot read", p)(e)),
        }
    }
    Ok(n)
}

/// A bzImage carries the boot protocol's `HdrS` signature at 0x202.
fn check_kernel(p: &Path) -> Result<(), MediaError> {
    use std::io::Seek;
    let mut f = std::fs::File::open(p).map_err(assemble::io_err("cannot read", p))?;
    let mut magic = [0u8; 4];
    let ok = f
        .seek(io::SeekFrom::Start(0x202))
        .and_then(|_| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"HdrS";
    if ok {
        Ok(())
    } else {
        Err(MediaError::BadInput {
            path: p.to_owned(),
            reason: "is not a Linux bzImage (no `HdrS` boot header at 0x202)".into(),
        })
    }
}

/// The formats Linux unpacks as initramfs: newc cpio, or one compressed with what the
/// kernel may decompress.
fn check_initrd_magic(head: &[u8]) -> Result<(), String> {
    const MAGICS: &[(&[u8], &str)] = &[
        (b"070701", "cpio newc"),
        (b"070702", "cpio crc"),
        (&[0x1f, 0x8b], "gzip"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (b"BZh", "bzip2"),
        (&[0x5d, 0, 0], "lzma"),
        (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
        (&[0x89, b'L', b'Z', b'O'], "lzo"),
    ];
    if head.is_empty() {
        return Err("is empty, not an initramfs archive".into());
    }
    if MAGICS.iter().any(|(m, _)| head.starts_with(m)) {
        Ok(())
    } else {
        Err("is not an initramfs archive (neither newc cpio nor a compressed one)".into())
    }
}

/// Digest and size of a file; a cache blob is known by its name (`verify` re-hashes those).
fn identify(p: &Path) -> Result<(Sha256, u64), MediaError> {
    let meta = std::fs::metadata(p).map_err(assemble::io_err("cannot stat", p))?;
    let in_blob_store = p
        .parent()
        .filter(|d| d.ends_with("blobs/sha256"))
        .and(p.file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<Sha256>().ok());
    if let Some(sha) = in_blob_store
        && meta.permissions().readonly()
    {
        return Ok((sha, meta.len()));
    }
    Sha256::of_file(p).map_err(assemble::io_err("cannot read", p))
}

#[cfg(test)]
mod tests;
