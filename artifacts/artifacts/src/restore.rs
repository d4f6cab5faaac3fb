//! `agar artifacts restore`: make the cache hold every requested artifact.
//!
//! Per artifact, under its cache lock (so concurrent processes do the work once):
//!
//! 1. If the cache's ref was made from the current manifest entry and the pinned inputs, and
//!    its blob re-hashes correctly, there is nothing to do (no network, no apt).
//! 2. `--offline`: accept what the cache has (with a warning if it differs from the lock),
//!    otherwise fail naming the artifact.
//! 3. Otherwise fetch the inputs: the URL (verified download), or the Debian packages (the
//!    locked versions from the cache or apt; if apt no longer has them, the current ones,
//!    with a warning), then extract or build, check the result against the lock when the
//!    inputs are the locked ones, and store it.
//!
//! Artifacts are restored in parallel (bounded by `jobs`); a recipe restores its inputs first.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::OnceLock;

use crate::apt::Apt;
use crate::apt::AptError;
use crate::cache::Cache;
use crate::cache::CacheIoError;
use crate::deb;
use crate::deb::DebError;
use crate::download::DownloadError;
use crate::download::DownloadOptions;
use crate::download::Downloader;
use crate::hash::Sha256;
use crate::manifest::Catalog;
use crate::manifest::DebPackage;
use crate::manifest::Lock;
use crate::manifest::LockedArtifact;
use crate::manifest::LockedDeb;
use crate::manifest::LockedTool;
use crate::manifest::ManifestError;
use crate::manifest::Recipe;
use crate::manifest::Source;
use crate::media;
use crate::media::MediaError;
use crate::progress::Progress;
use crate::recipes::initramfs;
use crate::recipes::initramfs::InitramfsError;

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The manifest has no such artifact.
    #[error("artifact `{0}` is not in the manifest (see `agar artifacts list`)")]
    Unknown(String),
    /// `--offline` and the cache cannot provide it.
    #[error(
        "{what} is not in the cache and --offline forbids fetching it; run `agar artifacts restore` once with network access"
    )]
    Offline {
        /// The artifact or package.
        what: String,
    },
    /// apt delivered a package whose bytes differ from the lock for the same version.
    #[error(
        "{package} {version}: apt delivered sha256 {actual}, artifacts.lock pins {expected} for this version"
    )]
    DebMismatch {
        /// Package.
        package: String,
        /// Version.
        version: String,
        /// Locked digest.
        expected: Sha256,
        /// Delivered digest.
        actual: Sha256,
    },
    /// Built from the locked inputs, the artifact hashed to something else.
    #[error(
        "`{name}` made from the locked packages hashed to {actual}, but artifacts.lock says {expected}: the recipe is not deterministic, or the lock is stale (`agar artifacts restore --update-lock`)"
    )]
    NotReproducible {
        /// Artifact.
        name: String,
        /// Locked digest.
        expected: Sha256,
        /// Produced digest.
        actual: Sha256,
    },
    /// A bug in agar.
    #[error("internal error: {0}")]
    Internal(String),
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(String),
    /// Downloading failed.
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// apt failed.
    #[error(transparent)]
    Apt(#[from] AptError),
    /// A package could not be read.
    #[error(transparent)]
    Deb(#[from] DebError),
    /// The initramfs recipe failed.
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    /// A BIOS boot medium recipe failed.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The cache could not be written.
    #[error(transparent)]
    Cache(#[from] CacheIoError),
    /// The manifest or lock is broken.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// One artifact failed.
    #[error("cannot restore `{name}`")]
    Artifact {
        /// Which.
        name: String,
        /// Why.
        #[source]
        source: Box<RestoreError>,
    },
    /// Several artifacts failed.
    #[error("{} artifacts could not be restored:\n{}", .0.len(), chains(.0))]
    Several(Vec<RestoreError>),
}

fn chains(errors: &[RestoreError]) -> String {
    errors
        .iter()
        .map(|e| {
            let mut s = format!("  - {e}");
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                source = inner.source();
            }
            s
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Never touch the network or apt.
    pub offline: bool,
    /// Ignore the lock's pins: take the current Debian packages (then write a new lock).
    pub update_lock: bool,
    /// Artifacts restored at the same time.
    pub jobs: usize,
    /// Download retry policy.
    pub download: DownloadOptions,
    /// The apt programs.
    pub apt: Apt,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            offline: false,
            update_lock: false,
            jobs: 4,
            download: DownloadOptions::default(),
            apt: Apt::default(),
        }
    }
}

/// What happened to one artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Already in the cache.
    Cached,
    /// Downloaded.
    Downloaded,
    /// Extracted from a Debian package.
    Extracted,
    /// Built by a recipe.
    Built,
}

impl Outcome {
    /// A short word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cached => "cached",
            Self::Downloaded => "downloaded",
            Self::Extracted => "extracted",
            Self::Built => "built",
        }
    }
}

/// One restored artifact.
#[derive(Debug, Clone)]
pub struct Restored {
    /// Its name.
    pub name: String,
    /// Its path in the cache.
    pub path: PathBuf,
    /// What was done.
    pub outcome: Outcome,
    /// The ref now in the cache (what a lock entry would say).
    pub record: LockedArtifact,
    /// Things the user should know (e.g. Debian moved past the lock).
    pub warnings: Vec<String>,
}

/// Restores artifacts into a cache.
pub struct Restorer {
    cache: Cache,
    catalog: Catalog,
    options: RestoreOptions,
    progress: Progress,
    downloader: OnceLock<Result<Downloader, String>>,
    /// What this restorer fetched or built, so an artifact that was made as another one's
    /// input is reported as made, not as cached.
    made: Mutex<BTreeMap<String, Outcome>>,
}

impl Restorer {
    /// A restorer for `catalog` into `cache`.
    pub fn new(
        cache: Cache,
        catalog: Catalog,
        options: RestoreOptions,
        progress: Progress,
    ) -> Self {
        Self {
            cache,
            catalog,
            options,
            progress,
            downloader: OnceLock::new(),
            made: Mutex::new(BTreeMap::new()),
        }
    }

    /// The catalog it restores from.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Restores `names` (all manifest entries when empty), up to `jobs` at a time.
    pub fn restore(&self, names: &[String]) -> Result<Vec<Restored>, RestoreError> {
        let names: Vec<String> = if names.is_empty() {
            self.catalog
                .manifest
                .entries()
                .map(|e| e.name().to_owned())
                .collect()
        } else {
            names.to_vec()
        };
        for n in &names {
            if self.catalog.manifest.get(n).is_none() {
                return Err(RestoreError::Unknown(n.clone()));
            }
        }
        self.cache.ensure_layout()?;
        let _gc = self.cache.lock_shared("gc")?;
        let queue = Mutex::new(names.iter().cloned().collect::<VecDeque<_>>());
        let results = Mutex::new(Vec::new());
        let workers = self.options.jobs.clamp(1, names.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    while let Some(name) = queue.lock().ok().and_then(|mut q| q.pop_front()) {
                        let r = self.restore_one(&name);
                        if let Ok(mut results) = results.lock() {
                            results.push((name, r));
                        }
                    }
                });
            }
        });
        let mut results = results.into_inner().unwrap_or_default();
        results.sort_by(|a, b| a.0.cmp(&b.0));
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        for (name, r) in results {
            match r {
                Ok(mut r) => {
                    if let Some(outcome) = self.made.lock().ok().and_then(|m| m.get(&name).copied())
                    {
                        r.outcome = outcome;
                    }
                    ok.push(r)
                }
                Err(e) => errors.push(RestoreError::Artifact {
                    name,
                    source: Box::new(e),
                }),
            }
        }
        match errors.len() {
            0 => Ok(ok),
            1 => Err(errors.remove(0)),
            _ => Err(RestoreError::Several(errors)),
        }
    }

    /// The lock describing `restored` on top of the current one (for `--update-lock`).
    pub fn updated_lock(&self, restored: &[Restored]) -> Lock {
        let mut lock = self.catalog.lock.clone();
        for r in restored {
            if matches!(
                self.catalog.manifest.get(&r.name).map(|e| e.source()),
                Some(Source::Url { .. }) | None
            ) {
                continue;
            }
            lock.artifacts.insert(r.name.clone(), r.record.clone());
        }
        let names: Vec<String> = lock.artifacts.keys().cloned().collect();
        for n in names {
            if self.catalog.manifest.get(&n).is_none() {
                lock.artifacts.remove(&n);
            }
        }
        lock
    }

    fn warn(&self, warnings: &mut Vec<String>, msg: String) {
        tracing::warn!("{msg}");
        self.progress.println(&format!("agar: warning: {msg}"));
        warnings.push(msg);
    }

    /// The blob, if present and its contents hash correctly; a corrupt blob is removed.
    fn verified_blob(&self, sha: &Sha256, size: u64) -> Result<Option<PathBuf>, RestoreError> {
        let Some(path) = self.cache.blob_if_present(sha, size) else {
            return Ok(None);
        };
        let (actual, _) = Sha256::of_file(&path).map_err(|source| CacheIoError {
            action: "cannot read",
            path: path.clone(),
            source,
        })?;
        if actual == *sha {
            return Ok(Some(path));
        }
        tracing::warn!(blob = %sha, "corrupt cache entry; removing it");
        let _ = std::fs::remove_file(&path);
        Ok(None)
    }

    /// Restores one artifact (and, first, the artifacts its recipe uses).
    pub fn restore_one(&self, name: &str) -> Result<Restored, RestoreError> {
        let r = self.restore_one_inner(name)?;
        if r.outcome != Outcome::Cached
            && let Ok(mut made) = self.made.lock()
        {
            made.insert(name.to_owned(), r.outcome);
        }
        Ok(r)
    }

    fn restore_one_inner(&self, name: &str) -> Result<Restored, RestoreError> {
        let entry = self
            .catalog
            .manifest
            .get(name)
            .ok_or_else(|| RestoreError::Unknown(name.to_owned()))?;
        let kernel = match entry.source() {
            Source::Build(Recipe::Initramfs { kernel, .. }) => Some(self.restore_one(kernel)?),
            Source::Build(recipe @ (Recipe::BiosDisk { .. } | Recipe::BiosIso { .. })) => {
                return self.restore_media(name, entry.spec(), entry.format(), recipe);
            }
            _ => None,
        };
        let _lock = self.cache.lock(&format!("artifact-{name}"))?;
        let mut warnings = Vec::new();
        let spec = entry.spec();
        let pinned = if self.options.update_lock {
            None
        } else {
            self.catalog
                .lock
                .get(name)
                .filter(|l| l.spec == spec)
                .cloned()
        };
        let current = self.cache.artifact_ref(name)?.filter(|r| r.spec == spec);
        let kernel_deb = kernel.as_ref().and_then(|k| k.record.debs.first().cloned());
        let consistent = |r: &LockedArtifact| match &kernel_deb {
            Some(kd) => r.debs.first() == Some(kd),
            None => true,
        };
        let cached =
            |r: &LockedArtifact, warnings: Vec<String>| -> Result<Option<Restored>, RestoreError> {
                Ok(self.verified_blob(&r.sha256, r.size)?.map(|path| Restored {
                    name: name.to_owned(),
                    path,
                    outcome: Outcome::Cached,
                    record: r.clone(),
                    warnings,
                }))
            };

        // 1. Up to date: the ref matches the pins.
        if let Source::Url { url, sha256, size } = entry.source() {
            let record = LockedArtifact {
                sha256: *sha256,
                size: *size,
                spec,
                debs: Vec::new(),
                tools: Vec::new(),
            };
            return self.restore_url(name, url, record, current.as_ref());
        }
        if let Some(r) = &current
            && consistent(r)
            && pinned.as_ref().is_none_or(|p| p.debs == r.debs)
            && !self.options.update_lock
            && let Some(done) = cached(r, Vec::new())?
        {
            return Ok(done);
        }
        if let Some(p) = &pinned
            && consistent(p)
            && let Some(done) = cached(p, Vec::new())?
        {
            self.cache.set_artifact_ref(name, p)?;
            return Ok(done);
        }

        // 2. Offline: whatever consistent copy the cache has.
        if self.options.offline {
            if let Some(r) = &current
                && consistent(r)
                && let Some(done) = cached(r, Vec::new())?
            {
                let mut done = done;
                self.warn(
                    &mut done.warnings,
                    format!("`{name}` in the cache was made from other packages than artifacts.lock pins (offline: keeping it)"),
                );
                return Ok(done);
            }
            return Err(RestoreError::Offline {
                what: format!("`{name}`"),
            });
        }

        // 3. Fetch the inputs, then extract or build.
        let (record, bytes, outcome) = match entry.source() {
            Source::Deb { package, file } => {
                let locked = pinned.as_ref().and_then(|p| p.debs.first());
                let (deb, deb_path) = self.get_deb(package, locked, name, &mut warnings)?;
                if let Some(r) = &current
                    && r.debs == [deb.clone()]
                    && let Some(done) = cached(r, warnings.clone())?
                {
                    return Ok(done);
                }
                let f = deb::extract_one(&deb_path, file)?;
                let record = LockedArtifact {
                    sha256: Sha256::of(&f.data),
                    size: f.data.len() as u64,
                    spec,
                    debs: vec![deb],
                    tools: Vec::new(),
                };
                (record, f.data, Outcome::Extracted)
            }
            Source::Build(Recipe::Initramfs {
                busybox, modules, ..
            }) => {
                let Some(kd) = kernel_deb else {
                    return internal_error("the kernel artifact has no package");
                };
                let (kd, kernel_path) = self.get_deb(
                    &DebPackage::Package(kd.package.clone()),
                    Some(&kd),
                    name,
                    &mut Vec::new(),
                )?;
                let locked_bb = pinned.as_ref().and_then(|p| p.debs.get(1));
                let (bb, bb_path) = self.get_deb(
                    &DebPackage::Package(busybox.clone()),
                    locked_bb,
                    name,
                    &mut warnings,
                )?;
                let debs = vec![kd, bb];
                if let Some(r) = &current
                    && r.debs == debs
                    && let Some(done) = cached(r, warnings.clone())?
                {
                    return Ok(done);
                }
                let task = self.progress.task(&format!("build {name}"), None);
                let built = initramfs::build(&kernel_path, &bb_path, modules);
                task.finish(if built.is_ok() { "done" } else { "failed" });
                let built = built?;
                tracing::info!(
                    artifact = name,
                    release = %built.kernel_release,
                    modules = built.modules.len(),
                    "built initramfs"
                );
                let record = LockedArtifact {
                    sha256: Sha256::of(&built.bytes),
                    size: built.bytes.len() as u64,
                    spec,
                    debs,
                    tools: Vec::new(),
                };
                (record, built.bytes, Outcome::Built)
            }
            Source::Url { .. } => return internal_error("url sources are restored above"),
            Source::Build(Recipe::BiosDisk { .. } | Recipe::BiosIso { .. }) => {
                return internal_error("media are restored above");
            }
        };
        if let Some(p) = &pinned
            && p.debs == record.debs
            && p.sha256 != record.sha256
        {
            return Err(RestoreError::NotReproducible {
                name: name.to_owned(),
                expected: p.sha256,
                actual: record.sha256,
            });
        }
        let (_, path) = self.cache.insert_bytes(&bytes)?;
        self.cache.set_artifact_ref(name, &record)?;
        Ok(Restored {
            name: name.to_owned(),
            path,
            outcome,
            record,
            warnings,
        })
    }

    /// A BIOS boot medium: its kernel and initramfs artifacts first, then the medium, built
    /// with the host's tools (through the media cache, so a medium built before is reused).
    /// The lock pins its bytes for the packages *and* tool versions it records; a host with
    /// other tool versions builds a different file, which is used with a warning.
    fn restore_media(
        &self,
        name: &str,
        spec: Sha256,
        format: crate::manifest::Format,
        recipe: &Recipe,
    ) -> Result<Restored, RestoreError> {
        let (kernel, initrd, cmdline, kind) = match recipe {
            Recipe::BiosDisk {
                kernel,
                initrd,
                cmdline,
            } => (kernel, initrd, cmdline, media::MediumKind::Disk),
            Recipe::BiosIso {
                kernel,
                initrd,
                cmdline,
            } => (kernel, initrd, cmdline, media::MediumKind::Iso),
            Recipe::Initramfs { .. } => return internal_error("not a media recipe"),
        };
        let k = self.restore_one(kernel)?;
        let i = self.restore_one(initrd)?;
        let _lock = self.cache.lock(&format!("artifact-{name}"))?;
        let mut debs = k.record.debs.clone();
        for d in &i.record.debs {
            if !debs.contains(d) {
                debs.push(d.clone());
            }
        }
        let pinned = if self.options.update_lock {
            None
        } else {
            self.catalog
                .lock
                .get(name)
                .filter(|l| l.spec == spec && l.debs == debs)
                .cloned()
        };
        let cached = |r: &LockedArtifact| -> Result<Option<Restored>, RestoreError> {
            Ok(self.verified_blob(&r.sha256, r.size)?.map(|path| Restored {
                name: name.to_owned(),
                path,
                outcome: Outcome::Cached,
                record: r.clone(),
                warnings: Vec::new(),
            }))
        };
        // 1. The pinned file (however it got into this cache).
        if let Some(p) = &pinned
            && let Some(done) = cached(p)?
        {
            if self.cache.artifact_ref(name)?.as_ref() != Some(p) {
                self.cache.set_artifact_ref(name, p)?;
            }
            return Ok(done);
        }
        let tools = media::Toolchain::system();
        let host_tools = tools.versions(kind);
        // 2. What an earlier restore built from these inputs with these tools.
        if let Some(r) = self.cache.artifact_ref(name)?
            && r.spec == spec
            && r.debs == debs
            && host_tools.as_ref().is_ok_and(|t| *t == r.tools)
            && let Some(done) = cached(&r)?
        {
            return Ok(done);
        }
        // 3. Build (a lookup if the media cache has it).
        let host_tools = host_tools?;
        let files = media::BootFiles::new(&k.path, &i.path).replace_cmdline(cmdline)?;
        let task = self.progress.task(&format!("build {name}"), None);
        let built = match kind {
            media::MediumKind::Disk => {
                let disk_format = match format {
                    crate::manifest::Format::Vhdx => media::DiskFormat::Vhdx,
                    crate::manifest::Format::Raw => media::DiskFormat::Raw,
                    _ => media::DiskFormat::Vhd,
                };
                media::BiosDisk::new(files)
                    .format(disk_format)
                    .build_with(&self.cache, tools)
            }
            media::MediumKind::Iso => media::BiosIso::new(files).build_with(&self.cache, tools),
        };
        task.finish(match &built {
            Ok(m) if m.cached => "cached",
            Ok(_) => "done",
            Err(_) => "failed",
        });
        let built = built?;
        let record = LockedArtifact {
            sha256: built.sha256,
            size: built.size,
            spec,
            debs,
            tools: host_tools,
        };
        let mut warnings = Vec::new();
        if let Some(p) = self
            .catalog
            .lock
            .get(name)
            .filter(|l| !self.options.update_lock && l.spec == spec && l.debs == record.debs)
            && p.sha256 != record.sha256
        {
            if p.tools == record.tools {
                return Err(RestoreError::NotReproducible {
                    name: name.to_owned(),
                    expected: p.sha256,
                    actual: record.sha256,
                });
            }
            self.warn(
                &mut warnings,
                format!(
                    "`{name}`: built with other tools than artifacts.lock records ({}), so it differs from the pinned file. Run `agar artifacts restore --update-lock` and commit artifacts.lock if this host is the reference",
                    tool_differences(&p.tools, &record.tools)
                ),
            );
        }
        self.cache.set_artifact_ref(name, &record)?;
        Ok(Restored {
            name: name.to_owned(),
            path: built.path,
            outcome: if built.cached {
                Outcome::Cached
            } else {
                Outcome::Built
            },
            record,
            warnings,
        })
    }

    fn restore_url(
        &self,
        name: &str,
        url: &str,
        record: LockedArtifact,
        current: Option<&LockedArtifact>,
    ) -> Result<Restored, RestoreError> {
        let done = |path, outcome| Restored {
            name: name.to_owned(),
            path,
            outcome,
            record: record.clone(),
            warnings: Vec::new(),
        };
        let cached = |r: &Self| -> Result<Option<Restored>, RestoreError> {
            let path = r.verified_blob(&record.sha256, record.size)?;
            if path.is_some() && current != Some(&record) {
                r.cache.set_artifact_ref(name, &record)?;
            }
            Ok(path.map(|p| done(p, Outcome::Cached)))
        };
        if let Some(hit) = cached(self)? {
            return Ok(hit);
        }
        if self.options.offline {
            return Err(RestoreError::Offline {
                what: format!("`{name}`"),
            });
        }
        // Another artifact with the same digest may be downloading it right now.
        let _blob = self.cache.lock(&format!("blob-{}", record.sha256))?;
        if let Some(hit) = cached(self)? {
            return Ok(hit);
        }
        let task = self
            .progress
            .task(&format!("download {name}"), Some(record.size));
        let fetched =
            self.downloader()?
                .fetch(&self.cache, url, &record.sha256, record.size, &task);
        task.finish(if fetched.is_ok() { "done" } else { "failed" });
        let path = fetched?;
        self.cache.set_artifact_ref(name, &record)?;
        Ok(done(path, Outcome::Downloaded))
    }

    fn downloader(&self) -> Result<&Downloader, RestoreError> {
        self.downloader
            .get_or_init(|| {
                Downloader::new(self.options.download.clone()).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| RestoreError::HttpClient(e.clone()))
    }

    /// A Debian package in the cache: the locked version if possible, else the current one.
    fn get_deb(
        &self,
        package: &DebPackage,
        locked: Option<&LockedDeb>,
        for_artifact: &str,
        warnings: &mut Vec<String>,
    ) -> Result<(LockedDeb, PathBuf), RestoreError> {
        if let Some(l) = locked
            && let Some(path) = self.cached_deb(l)?
        {
            return Ok((l.clone(), path));
        }
        if self.options.offline {
            return Err(RestoreError::Offline {
                what: match locked {
                    Some(l) => format!("package {} {}", l.package, l.version),
                    None => format!("package {}", package.name()),
                },
            });
        }
        if let Some(l) = locked {
            let _lock = self.cache.lock(&format!("deb-{}", l.package))?;
            if let Some(path) = self.cached_deb(l)? {
                return Ok((l.clone(), path));
            }
            match self.apt_download(&l.package, &l.version, Some(l)) {
                Ok(found) => return Ok(found),
                Err(RestoreError::Apt(e @ AptError::Failed { .. })) => {
                    tracing::debug!(error = %e, "the locked package is not available");
                }
                Err(e) => return Err(e),
            }
        }
        let real = match package {
            DebPackage::Package(p) => p.clone(),
            DebPackage::Meta(m) => self.options.apt.resolve_metapackage(m)?,
        };
        let version = self.options.apt.candidate_version(&real)?;
        if let Some(l) = locked {
            self.warn(
                warnings,
                format!(
                    "`{for_artifact}`: artifacts.lock pins {} {}, which apt cannot fetch any more; using {real} {version}. Run `agar artifacts restore --update-lock` and commit artifacts.lock",
                    l.package, l.version
                ),
            );
        }
        let _lock = self.cache.lock(&format!("deb-{real}"))?;
        if let Some(known) = self.cache.deb_ref(&real, &version)?
            && let Some(path) = self.cached_deb(&known)?
        {
            return Ok((known, path));
        }
        self.apt_download(&real, &version, None)
    }

    fn cached_deb(&self, deb: &LockedDeb) -> Result<Option<PathBuf>, RestoreError> {
        let Some(path) = self.verified_blob(&deb.sha256, deb.size)? else {
            return Ok(None);
        };
        if self.cache.deb_ref(&deb.package, &deb.version)?.as_ref() != Some(deb) {
            self.cache.set_deb_ref(deb)?;
        }
        Ok(Some(path))
    }

    /// `apt-get download package=version` into the cache; with `expected`, the package must
    /// have the locked digest (checked before anything is cached).
    fn apt_download(
        &self,
        package: &str,
        version: &str,
        expected: Option<&LockedDeb>,
    ) -> Result<(LockedDeb, PathBuf), RestoreError> {
        let dir = self.cache.tmp_path(&format!("apt-{package}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| CacheIoError {
            action: "cannot create",
            path: dir.clone(),
            source,
        })?;
        let task = self
            .progress
            .task(&format!("apt-get download {package}={version}"), None);
        let result = (|| {
            let downloaded = self.options.apt.download(package, Some(version), &dir)?;
            let control = deb::control(&downloaded)?;
            let (sha256, size) = Sha256::of_file(&downloaded).map_err(|source| CacheIoError {
                action: "cannot read",
                path: downloaded.clone(),
                source,
            })?;
            if control.package != package || control.version != version {
                return Err(DebError {
                    path: downloaded.clone(),
                    reason: format!(
                        "apt delivered {} {} when asked for {package} {version}",
                        control.package, control.version
                    ),
                }
                .into());
            }
            if let Some(l) = expected
                && l.sha256 != sha256
            {
                return Err(RestoreError::DebMismatch {
                    package: l.package.clone(),
                    version: l.version.clone(),
                    expected: l.sha256,
                    actual: sha256,
                });
            }
            let deb = LockedDeb {
                package: control.package,
                version: control.version,
                sha256,
                size,
            };
            let path = self.cache.insert_blob(&downloaded, &sha256)?;
            self.cache.set_deb_ref(&deb)?;
            Ok::<_, RestoreError>((deb, path))
        })();
        let _ = std::fs::remove_dir_all(&dir);
        match &result {
            Ok((deb, _)) => task.finish(&crate::progress::human_bytes(deb.size)),
            Err(_) => task.finish("failed"),
        }
        result
    }
}

/// `pkg locked -> host` for every tool version that differs.
fn tool_differences(locked: &[LockedTool], host: &[LockedTool]) -> String {
    let mut out = Vec::new();
    for h in host {
        let l = locked
            .iter()
            .find(|l| l.package == h.package)
            .map_or("(none)", |l| l.version.as_str());
        if l != h.version {
            out.push(format!("{} {l} -> {}", h.package, h.version));
        }
    }
    if out.is_empty() {
        "a different set of tools".to_owned()
    } else {
        out.join(", ")
    }
}

fn internal_error<T>(what: &str) -> Result<T, RestoreError> {
    Err(RestoreError::Internal(what.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_artifact_is_refused_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let r = Restorer::new(
            Cache::new(dir.path()),
            Catalog::builtin().unwrap(),
            RestoreOptions::default(),
            Progress::Silent,
        );
        let e = r.restore(&["nope".into()]).unwrap_err();
        assert!(matches!(e, RestoreError::Unknown(_)));
        assert!(!dir.path().join("blobs").exists());
    }

    #[test]
    fn offline_restore_of_an_empty_cache_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let r = Restorer::new(
            Cache::new(dir.path()),
            Catalog::builtin().unwrap(),
            RestoreOptions {
                offline: true,
                ..Default::default()
            },
            Progress::Silent,
        );
        let e = r.restore(&["seabios_bios".into()]).unwrap_err();
        let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
        assert!(chain.contains("--offline forbids"), "{chain}");
        assert!(chain.contains("seabios"), "{chain}");
    }
}
