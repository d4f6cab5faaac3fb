//! The checked-in manifest (where each artifact comes from) and lock (what it hashed to).
//!
//! `manifest.toml` is written by people: one `[artifacts.<name>]` table per artifact with its
//! `format` and `source`:
//!
//! - `source = "url"`: `url`, `sha256` and `size` pin a file on an HTTP(S) server.
//! - `source = "deb"`: one `file` (a path inside the package; one `*` allowed) from a Debian
//!   package, named directly (`package`) or through a metapackage whose dependency is the real
//!   package (`metapackage`, resolved with `apt-cache depends`).
//! - `source = "build"`: a project recipe with its parameters: `recipe = "initramfs"`
//!   (`kernel`, `busybox`, `modules`), or `recipe = "bios-disk"` / `"bios-iso"` (`kernel`,
//!   `initrd`, `cmdline`; the disk's image format is the entry's `format`).
//!
//! `artifacts.lock` is written by `agar artifacts restore --update-lock`: per artifact the
//! sha256 and size of the file, the Debian packages (name, version, sha256, size) it came
//! from, and a `spec` fingerprint of the manifest entry and recipe code it was made with. The
//! same record, for what is actually in a machine's cache, is the cache's ref file.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

use crate::hash::Sha256;
use crate::recipes;

/// The manifest compiled into this crate.
pub const BUILTIN_MANIFEST: &str = include_str!("../manifest.toml");
/// The lock compiled into this crate.
pub const BUILTIN_LOCK: &str = include_str!("../artifacts.lock");

/// Where the checked-in lock lives in the source tree (for `--update-lock`).
pub fn source_tree_lock_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts.lock")
}

/// A manifest or lock that does not parse or does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid TOML, or wrong types.
    #[error("{origin}: invalid TOML")]
    Toml {
        /// Which file.
        origin: String,
        /// The parser's complaint.
        #[source]
        source: toml::de::Error,
    },
    /// An entry is missing a field its source needs, or has one it must not.
    #[error("{origin}: artifact `{name}`: {reason}")]
    Entry {
        /// Which file.
        origin: String,
        /// Which artifact.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A lock file with a version this code does not read.
    #[error("{origin}: lock version {found} is not supported (expected {LOCK_VERSION})")]
    LockVersion {
        /// Which file.
        origin: String,
        /// The version found.
        found: u32,
    },
}

/// The file format of an artifact (what a consumer must be able to read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// A Linux bzImage.
    Bzimage,
    /// An uncompressed cpio archive, newc format.
    CpioNewc,
    /// A BIOS ROM image.
    BiosRom,
    /// A UEFI firmware volume (`.fd`).
    UefiFd,
    /// A raw disk image.
    Raw,
    /// A VHD (version 1) disk image.
    Vhd,
    /// A VHDX disk image.
    Vhdx,
    /// An IGVM file.
    Igvm,
    /// An ISO 9660 image (CD/DVD).
    Iso,
    /// Anything else (test fixtures).
    Blob,
}

impl Format {
    /// The kebab-case name used in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bzimage => "bzimage",
            Self::CpioNewc => "cpio-newc",
            Self::BiosRom => "bios-rom",
            Self::UefiFd => "uefi-fd",
            Self::Raw => "raw",
            Self::Vhd => "vhd",
            Self::Vhdx => "vhdx",
            Self::Igvm => "igvm",
            Self::Iso => "iso",
            Self::Blob => "blob",
        }
    }
}

/// Which Debian package a `deb` source names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum DebPackage {
    /// The package itself.
    Package(String),
    /// A metapackage; the package is its (first) dependency.
    Meta(String),
}

impl DebPackage {
    /// The name as written in the manifest.
    pub fn name(&self) -> &str {
        match self {
            Self::Package(p) | Self::Meta(p) => p,
        }
    }
}

/// A project recipe that builds an artifact from other inputs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Recipe {
    /// The agar initramfs (see `docs/src/guest-contract.md`).
    Initramfs {
        /// The `deb`-sourced kernel artifact whose package provides the modules.
        kernel: String,
        /// The Debian package that provides `/bin/busybox` (statically linked).
        busybox: String,
        /// Modules to include, with their dependencies.
        modules: Vec<String>,
    },
    /// A BIOS-bootable MBR disk (syslinux) holding a kernel and initramfs; the image format
    /// (`vhd`, `vhdx`, `raw`) is the entry's.
    BiosDisk {
        /// The kernel artifact.
        kernel: String,
        /// The initramfs artifact.
        initrd: String,
        /// The kernel command line.
        cmdline: String,
    },
    /// A BIOS-bootable El Torito ISO (isolinux) holding a kernel and initramfs.
    BiosIso {
        /// The kernel artifact.
        kernel: String,
        /// The initramfs artifact.
        initrd: String,
        /// The kernel command line.
        cmdline: String,
    },
}

impl Recipe {
    /// The recipe's name in the manifest.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Initramfs { .. } => "initramfs",
            Self::BiosDisk { .. } => "bios-disk",
            Self::BiosIso { .. } => "bios-iso",
        }
    }

    /// The artifacts it is made from.
    pub fn inputs(&self) -> Vec<&str> {
        match self {
            Self::Initramfs { kernel, .. } => vec![kernel],
            Self::BiosDisk { kernel, initrd, .. } | Self::BiosIso { kernel, initrd, .. } => {
                vec![kernel, initrd]
            }
        }
    }
}

/// Where an artifact comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Source {
    /// Downloaded over HTTP(S), pinned by hash and size.
    Url {
        /// Where.
        url: String,
        /// Expected digest.
        sha256: Sha256,
        /// Expected size in bytes.
        size: u64,
    },
    /// One file out of a Debian package.
    Deb {
        /// The package (or metapackage).
        package: DebPackage,
        /// The path inside the package, without the leading `./`; one `*` allowed.
        file: String,
    },
    /// Built by a project recipe.
    Build(Recipe),
}

/// One manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    name: String,
    format: Format,
    source: Source,
    /// [`Entry::spec`], computed once when the entry is made.
    #[serde(skip)]
    spec: Sha256,
}

impl Entry {
    /// An entry; computes its spec.
    pub fn new(name: String, format: Format, source: Source) -> Self {
        let mut entry = Self {
            name,
            format,
            source,
            spec: Sha256([0; 32]),
        };
        let mut text = serde_json::to_string(&entry).unwrap_or_default();
        if let Source::Build(recipe) = entry.source() {
            text.push_str(&recipes::fingerprint_input(recipe));
        }
        entry.spec = Sha256::of(text.as_bytes());
        entry
    }

    /// The artifact name (the table key).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Where it comes from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// A fingerprint of everything that decides this artifact's bytes besides its Debian
    /// inputs: the entry and, for recipes, the recipe's code and scripts. A cached copy made
    /// with a different fingerprint is stale.
    pub fn spec(&self) -> Sha256 {
        self.spec
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    artifacts: BTreeMap<String, RawEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawSourceKind {
    Url,
    Deb,
    Build,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    format: Format,
    source: RawSourceKind,
    url: Option<String>,
    sha256: Option<Sha256>,
    size: Option<u64>,
    package: Option<String>,
    metapackage: Option<String>,
    file: Option<String>,
    recipe: Option<String>,
    kernel: Option<String>,
    busybox: Option<String>,
    modules: Option<Vec<String>>,
    initrd: Option<String>,
    cmdline: Option<String>,
}

/// The parsed manifest: entries by name.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    entries: BTreeMap<String, Entry>,
}

impl Manifest {
    /// Parses manifest text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|source| ManifestError::Toml {
            origin: origin.to_owned(),
            source,
        })?;
        let mut entries = BTreeMap::new();
        for (name, raw) in raw.artifacts {
            let entry = convert_entry(&name, raw).map_err(|reason| ManifestError::Entry {
                origin: origin.to_owned(),
                name: name.clone(),
                reason,
            })?;
            entries.insert(name, entry);
        }
        let manifest = Self { entries };
        manifest.check_references(origin)?;
        Ok(manifest)
    }

    fn check_references(&self, origin: &str) -> Result<(), ManifestError> {
        let fail = |entry: &Entry, reason: String| ManifestError::Entry {
            origin: origin.to_owned(),
            name: entry.name().to_owned(),
            reason,
        };
        for entry in self.entries.values() {
            match entry.source() {
                Source::Build(Recipe::Initramfs { kernel, .. }) => {
                    let ok = matches!(
                        self.entries.get(kernel).map(|k| k.source()),
                        Some(Source::Deb { .. })
                    );
                    if !ok {
                        return Err(fail(
                            entry,
                            format!("kernel `{kernel}` must be a deb-sourced artifact"),
                        ));
                    }
                }
                Source::Build(Recipe::BiosDisk { kernel, initrd, .. })
                | Source::Build(Recipe::BiosIso { kernel, initrd, .. }) => {
                    for (input, format) in [(kernel, Format::Bzimage), (initrd, Format::CpioNewc)] {
                        if self.entries.get(input).map(|e| e.format()) != Some(format) {
                            return Err(fail(
                                entry,
                                format!(
                                    "`{input}` must be an artifact with format = \"{}\"",
                                    format.as_str()
                                ),
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// All entries, sorted by name.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn convert_entry(name: &str, raw: RawEntry) -> Result<Entry, String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err("names are snake_case: lowercase letters, digits and `_`".into());
    }
    let RawEntry {
        format,
        source,
        url,
        sha256,
        size,
        package,
        metapackage,
        file,
        recipe,
        kernel,
        busybox,
        modules,
        initrd,
        cmdline,
    } = raw;
    let forbid = |present: bool, field: &str, kind: &str| {
        if present {
            Err(format!("`{field}` does not apply to source = \"{kind}\""))
        } else {
            Ok(())
        }
    };
    let need = |v: Option<String>, field: &str, kind: &str| {
        v.filter(|s| !s.is_empty())
            .ok_or_else(|| format!("source = \"{kind}\" needs `{field}`"))
    };
    let source = match source {
        RawSourceKind::Url => {
            for (present, field) in [
                (package.is_some(), "package"),
                (metapackage.is_some(), "metapackage"),
                (file.is_some(), "file"),
                (recipe.is_some(), "recipe"),
                (kernel.is_some(), "kernel"),
                (busybox.is_some(), "busybox"),
                (modules.is_some(), "modules"),
                (initrd.is_some(), "initrd"),
                (cmdline.is_some(), "cmdline"),
            ] {
                forbid(present, field, "url")?;
            }
            let url = need(url, "url", "url")?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("url `{url}` must be http:// or https://"));
            }
            Source::Url {
                url,
                sha256: sha256.ok_or("source = \"url\" needs `sha256`")?,
                size: size.ok_or("source = \"url\" needs `size`")?,
            }
        }
        RawSourceKind::Deb => {
            for (present, field) in [
                (url.is_some(), "url"),
                (
                    sha256.is_some(),
                    "sha256 (deb hashes live in artifacts.lock)",
                ),
                (size.is_some(), "size (deb sizes live in artifacts.lock)"),
                (recipe.is_some(), "recipe"),
                (kernel.is_some(), "kernel"),
                (busybox.is_some(), "busybox"),
                (modules.is_some(), "modules"),
                (initrd.is_some(), "initrd"),
                (cmdline.is_some(), "cmdline"),
            ] {
                forbid(present, field, "deb")?;
            }
            let package = match (package, metapackage) {
                (Some(p), None) if !p.is_empty() => DebPackage::Package(p),
                (None, Some(m)) if !m.is_empty() => DebPackage::Meta(m),
                _ => return Err("source = \"deb\" needs one of `package` or `metapackage`".into()),
            };
            let file = need(file, "file", "deb")?;
            let file = file
                .trim_start_matches("./")
                .trim_start_matches('/')
                .to_owned();
            if file.matches('*').count() > 1 {
                return Err("`file` may contain at most one `*`".into());
            }
            Source::Deb { package, file }
        }
        RawSourceKind::Build => {
            for (present, field) in [
                (url.is_some(), "url"),
                (
                    sha256.is_some(),
                    "sha256 (built hashes live in artifacts.lock)",
                ),
                (size.is_some(), "size"),
                (package.is_some(), "package"),
                (metapackage.is_some(), "metapackage"),
                (file.is_some(), "file"),
            ] {
                forbid(present, field, "build")?;
            }
            match need(recipe, "recipe", "build")?.as_str() {
                "initramfs" => {
                    for (present, field) in
                        [(initrd.is_some(), "initrd"), (cmdline.is_some(), "cmdline")]
                    {
                        forbid(present, field, "build\" with recipe = \"initramfs")?;
                    }
                    let modules = modules.unwrap_or_default();
                    if let Some(bad) = modules.iter().find(|m| !valid_module_name(m)) {
                        return Err(format!("module name `{bad}` is not valid"));
                    }
                    Source::Build(Recipe::Initramfs {
                        kernel: need(kernel, "kernel", "build")?,
                        busybox: need(busybox, "busybox", "build")?,
                        modules,
                    })
                }
                r @ ("bios-disk" | "bios-iso") => {
                    for (present, field) in [
                        (busybox.is_some(), "busybox"),
                        (modules.is_some(), "modules"),
                    ] {
                        forbid(present, field, &format!("build\" with recipe = \"{r}"))?;
                    }
                    let formats: &[Format] = if r == "bios-disk" {
                        &[Format::Vhd, Format::Vhdx, Format::Raw]
                    } else {
                        &[Format::Iso]
                    };
                    if !formats.contains(&format) {
                        return Err(format!(
                            "recipe `{r}` makes format {}, not `{}`",
                            formats
                                .iter()
                                .map(|f| format!("`{}`", f.as_str()))
                                .collect::<Vec<_>>()
                                .join(" or "),
                            format.as_str()
                        ));
                    }
                    let cmdline = cmdline.unwrap_or_else(|| crate::media::DEFAULT_CMDLINE.into());
                    crate::media::check_cmdline(&cmdline).map_err(|e| e.to_string())?;
                    let kernel = need(kernel, "kernel", "build")?;
                    let initrd = need(initrd, "initrd", "build")?;
                    Source::Build(if r == "bios-disk" {
                        Recipe::BiosDisk {
                            kernel,
                            initrd,
                            cmdline,
                        }
                    } else {
                        Recipe::BiosIso {
                            kernel,
                            initrd,
                            cmdline,
                        }
                    })
                }
                other => {
                    return Err(format!(
                        "unknown recipe `{other}` (known: initramfs, bios-disk, bios-iso)"
                    ));
                }
            }
        }
    };
    Ok(Entry::new(name.to_owned(), format, source))
}

/// Module names as `modprobe` takes them (letters, digits, `_` and `-`).
pub(crate) fn valid_module_name(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 64
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The lock format version this code writes and reads.
pub const LOCK_VERSION: u32 = 1;

/// One Debian package an artifact was made from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedDeb {
    /// Package name (the real package, not the metapackage).
    pub package: String,
    /// Debian version.
    pub version: String,
    /// Digest of the `.deb`.
    pub sha256: Sha256,
    /// Size of the `.deb`.
    pub size: u64,
}

/// A host tool package a recipe ran (the BIOS media recipes), by Debian version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedTool {
    /// Debian package name.
    pub package: String,
    /// Its installed version (`unknown` on hosts without dpkg).
    pub version: String,
}

/// What an artifact hashed to and what it was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedArtifact {
    /// Digest of the artifact file.
    pub sha256: Sha256,
    /// Size of the artifact file.
    pub size: u64,
    /// [`Entry::spec`] of the manifest entry it was made with.
    pub spec: Sha256,
    /// Debian packages it came from, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub debs: Vec<LockedDeb>,
    /// Host tools that made it (recipes that run them), if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<LockedTool>,
}

/// The lock: artifacts by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lock {
    /// Entries by artifact name.
    pub artifacts: BTreeMap<String, LockedArtifact>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    version: u32,
    #[serde(default)]
    artifacts: BTreeMap<String, LockedArtifact>,
}

const LOCK_HEADER: &str = "\
# agar artifact lock: the sha256 and size of every deb- and build-sourced artifact and the
# Debian packages it was made from. Written by `agar artifacts restore --update-lock`;
# do not edit by hand. A cache built from newer Debian packages is accepted with a warning.
";

impl Lock {
    /// Parses lock text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ManifestError> {
        let raw: RawLock = toml::from_str(text).map_err(|source| ManifestError::Toml {
            origin: origin.to_owned(),
            source,
        })?;
        if raw.version != LOCK_VERSION {
            return Err(ManifestError::LockVersion {
                origin: origin.to_owned(),
                found: raw.version,
            });
        }
        Ok(Self {
            artifacts: raw.artifacts,
        })
    }

    /// The lock as TOML text (stable order, with a header comment).
    pub fn to_toml(&self) -> String {
        let raw = RawLock {
            version: LOCK_VERSION,
            artifacts: self.artifacts.clone(),
        };
        let body = toml::to_string(&raw).unwrap_or_default();
        format!("{LOCK_HEADER}\n{body}")
    }

    /// The entry for `name`.
    pub fn get(&self, name: &str) -> Option<&LockedArtifact> {
        self.artifacts.get(name)
    }
}

/// A manifest and its lock, as one thing to resolve and restore against.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Where entries come from.
    pub manifest: Manifest,
    /// What they hashed to.
    pub lock: Lock,
}

impl Catalog {
    /// The manifest and lock compiled into this crate.
    pub fn builtin() -> Result<Self, ManifestError> {
        Ok(Self {
            manifest: Manifest::parse(BUILTIN_MANIFEST, "built-in manifest.toml")?,
            lock: Lock::parse(BUILTIN_LOCK, "built-in artifacts.lock")?,
        })
    }

    /// A catalog from text (tests, `--manifest`).
    pub fn parse(
        manifest: &str,
        manifest_origin: &str,
        lock: Option<(&str, &str)>,
    ) -> Result<Self, ManifestError> {
        Ok(Self {
            manifest: Manifest::parse(manifest, manifest_origin)?,
            lock: match lock {
                Some((text, origin)) => Lock::parse(text, origin)?,
                None => Lock::default(),
            },
        })
    }

    /// The digest and size an artifact is expected to have, when that is known in advance:
    /// from the manifest for `url` sources, from the lock (if its spec is current) otherwise.
    pub fn pinned(&self, entry: &Entry) -> Option<(Sha256, u64)> {
        match entry.source() {
            Source::Url { sha256, size, .. } => Some((*sha256, *size)),
            _ => self
                .lock
                .get(entry.name())
                .filter(|l| l.spec == entry.spec())
                .map(|l| (l.sha256, l.size)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids;

    #[test]
    fn builtin_manifest_and_lock_parse() {
        let catalog = Catalog::builtin().unwrap();
        assert!(!catalog.manifest.is_empty());
    }

    #[test]
    fn every_declared_id_has_a_manifest_entry_and_no_entry_lacks_an_id() {
        let catalog = Catalog::builtin().unwrap();
        for id in ids::ALL {
            assert!(
                catalog.manifest.get(id.name()).is_some(),
                "{} has no manifest entry",
                id.name()
            );
        }
        for entry in catalog.manifest.entries() {
            assert!(
                ids::ArtifactId::by_name(entry.name()).is_some(),
                "manifest entry {} has no id in ids.rs",
                entry.name()
            );
        }
    }

    #[test]
    fn lock_entries_match_the_current_manifest_and_recipes() {
        // Changing /init, a recipe or a manifest entry changes its spec: the lock must be
        // refreshed (`agar artifacts restore --update-lock`) in the same change.
        let catalog = Catalog::builtin().unwrap();
        for entry in catalog.manifest.entries() {
            if matches!(entry.source(), Source::Url { .. }) {
                continue;
            }
            let locked = catalog
                .lock
                .get(entry.name())
                .unwrap_or_else(|| panic!("{} is not in artifacts.lock", entry.name()));
            assert_eq!(
                locked.spec,
                entry.spec(),
                "{}: artifacts.lock is stale; run `cargo run -p agar_cli -- artifacts restore --update-lock`",
                entry.name()
            );
        }
    }

    #[test]
    fn deb_entry_needs_exactly_one_package_field() {
        let text = r#"
            [artifacts.k]
            format = "bzimage"
            source = "deb"
            package = "a"
            metapackage = "b"
            file = "boot/vmlinuz-*"
        "#;
        let err = Manifest::parse(text, "t").unwrap_err().to_string();
        assert!(err.contains("one of `package` or `metapackage`"), "{err}");
    }

    #[test]
    fn url_entry_without_hash_is_rejected() {
        let text = r#"
            [artifacts.x]
            format = "blob"
            source = "url"
            url = "http://127.0.0.1/x"
            size = 3
        "#;
        let err = Manifest::parse(text, "t").unwrap_err().to_string();
        assert!(err.contains("needs `sha256`"), "{err}");
    }

    #[test]
    fn unknown_fields_and_bad_names_are_rejected() {
        let typo = "[artifacts.x]\nformat = \"blob\"\nsource = \"url\"\nurll = \"x\"\n";
        assert!(Manifest::parse(typo, "t").is_err());
        let bad_name = "[artifacts.X-Y]\nformat = \"blob\"\nsource = \"url\"\nurl = \"http://a\"\nsha256 = \"00\"\nsize = 1\n";
        assert!(Manifest::parse(bad_name, "t").is_err());
    }

    #[test]
    fn initramfs_must_name_a_deb_kernel() {
        let text = r#"
            [artifacts.i]
            format = "cpio-newc"
            source = "build"
            recipe = "initramfs"
            kernel = "missing"
            busybox = "busybox-static"
            modules = ["sd_mod"]
        "#;
        let err = Manifest::parse(text, "t").unwrap_err().to_string();
        assert!(err.contains("must be a deb-sourced artifact"), "{err}");
    }

    #[test]
    fn lock_round_trips_through_toml() {
        let mut lock = Lock::default();
        lock.artifacts.insert(
            "a".into(),
            LockedArtifact {
                sha256: Sha256::of(b"a"),
                size: 1,
                spec: Sha256::of(b"spec"),
                debs: vec![LockedDeb {
                    package: "p".into(),
                    version: "1:2.3-4~deb12u1".into(),
                    sha256: Sha256::of(b"deb"),
                    size: 9,
                }],
                tools: Vec::new(),
            },
        );
        let text = lock.to_toml();
        assert_eq!(Lock::parse(&text, "t").unwrap(), lock);
        assert!(Lock::parse("version = 7\n", "t").is_err());
    }
}
