//! Test-time resolution: artifact id -> local path, never building or downloading.
//!
//! Order: `$AGAR_ARTIFACTS_DIR/<name>` if that file exists; then the blob the manifest or lock
//! pins, if the cache has it; then the cache's ref for the artifact (what the last restore
//! made, e.g. from newer Debian packages than the lock pins), if it was made from the current
//! manifest entry and recipe and its blob is present; else [`ResolveError::Missing`] (or
//! [`ResolveError::Stale`]) naming the command that provides it.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cache::Cache;
use crate::cache::CacheIoError;
use crate::ids::ArtifactId;
use crate::manifest::Catalog;
use crate::manifest::ManifestError;

/// The environment variable naming a directory of artifact files that override the cache.
pub const ARTIFACTS_DIR_ENV: &str = "AGAR_ARTIFACTS_DIR";

/// The command that fills the cache, as resolver errors print it.
pub const RESTORE_COMMAND: &str =
    "run `cargo run -p agar_cli -- artifacts restore` (or `agar artifacts restore`)";

/// Why an artifact could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Not in the override directory nor in the cache.
    #[error(
        "artifact `{name}` is not in the cache at {}; {RESTORE_COMMAND}, or put the file at ${ARTIFACTS_DIR_ENV}/{name}",
        cache.display()
    )]
    Missing {
        /// The artifact.
        name: String,
        /// The cache that was searched.
        cache: PathBuf,
    },
    /// In the cache, but made from an older manifest entry or recipe.
    #[error(
        "artifact `{name}` in the cache at {} was made by an older recipe or manifest entry; {RESTORE_COMMAND}",
        cache.display()
    )]
    Stale {
        /// The artifact.
        name: String,
        /// The cache that was searched.
        cache: PathBuf,
    },
    /// The manifest has no such artifact.
    #[error("artifact `{0}` is not in the manifest")]
    Unknown(String),
    /// No cache directory could be chosen.
    #[error("no artifact cache directory: set AGAR_CACHE_DIR (or HOME)")]
    NoCacheDir,
    /// The manifest or lock is broken.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The cache could not be read.
    #[error(transparent)]
    Io(#[from] CacheIoError),
    /// Several artifacts failed (from [`Resolver::resolve_all`]).
    #[error("{} artifacts could not be resolved:\n{}", .0.len(), list(.0))]
    Several(Vec<ResolveError>),
}

fn list(errors: &[ResolveError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where a resolved artifact came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `$AGAR_ARTIFACTS_DIR`.
    OverrideDir,
    /// The cache.
    Cache,
}

/// Maps artifact ids to files. Cheap to clone; safe to share between threads.
#[derive(Debug, Clone)]
pub struct Resolver {
    cache: Cache,
    override_dir: Option<PathBuf>,
    catalog: Arc<Catalog>,
}

impl Resolver {
    /// The resolver tests use: built-in manifest and lock, `$AGAR_ARTIFACTS_DIR`, and the cache
    /// at `$AGAR_CACHE_DIR` (default `~/.cache/agar`).
    pub fn from_env() -> Result<Self, ResolveError> {
        let cache = crate::cache::default_cache_dir().ok_or(ResolveError::NoCacheDir)?;
        let override_dir = std::env::var_os(ARTIFACTS_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Ok(Self::new(
            Cache::new(cache),
            override_dir,
            Catalog::builtin()?,
        ))
    }

    /// A resolver over an explicit cache, override directory and catalog.
    pub fn new(cache: Cache, override_dir: Option<PathBuf>, catalog: Catalog) -> Self {
        Self {
            cache,
            override_dir,
            catalog: Arc::new(catalog),
        }
    }

    /// The cache it reads.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The override directory, if set.
    pub fn override_dir(&self) -> Option<&Path> {
        self.override_dir.as_deref()
    }

    /// The manifest and lock it resolves against.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The local path of an artifact.
    pub fn resolve(&self, id: &ArtifactId) -> Result<PathBuf, ResolveError> {
        self.resolve_name(id.name())
    }

    /// The local paths of several artifacts, or one error listing every failure.
    pub fn resolve_all<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a ArtifactId>,
    ) -> Result<Vec<PathBuf>, ResolveError> {
        let mut paths = Vec::new();
        let mut errors = Vec::new();
        for id in ids {
            match self.resolve(id) {
                Ok(p) => paths.push(p),
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            0 => Ok(paths),
            1 => Err(errors.remove(0)),
            _ => Err(ResolveError::Several(errors)),
        }
    }

    /// The local path of the artifact named `name` (manifest key).
    pub fn resolve_name(&self, name: &str) -> Result<PathBuf, ResolveError> {
        self.resolve_with_origin(name).map(|(p, _)| p)
    }

    /// Like [`Self::resolve_name`], also saying where the file came from.
    pub fn resolve_with_origin(&self, name: &str) -> Result<(PathBuf, Origin), ResolveError> {
        if let Some(dir) = &self.override_dir {
            let candidate = dir.join(name);
            if candidate.is_file() {
                tracing::debug!(artifact = name, path = %candidate.display(), "from the override directory");
                return Ok((candidate, Origin::OverrideDir));
            }
        }
        let entry = self
            .catalog
            .manifest
            .get(name)
            .ok_or_else(|| ResolveError::Unknown(name.to_owned()))?;
        // The pinned file first: after a lock change it wins over an older restore.
        let pinned = self.catalog.pinned(entry);
        if let Some((sha, size)) = pinned
            && let Some(path) = self.cache.blob_if_present(&sha, size)
        {
            return Ok((path, Origin::Cache));
        }
        let mut stale = false;
        if let Some(r) = self.cache.artifact_ref(name)? {
            if r.spec != entry.spec() {
                stale = true;
            } else if let Some(path) = self.cache.blob_if_present(&r.sha256, r.size) {
                if pinned.is_some() {
                    tracing::warn!(
                        artifact = name,
                        "the cache holds a version made from other packages than artifacts.lock pins; {RESTORE_COMMAND} to get the pinned one"
                    );
                }
                return Ok((path, Origin::Cache));
            }
        }
        let cache = self.cache.root().to_owned();
        let name = name.to_owned();
        Err(if stale {
            ResolveError::Stale { name, cache }
        } else {
            ResolveError::Missing { name, cache }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Sha256;
    use crate::ids;
    use crate::manifest::LockedArtifact;

    fn url_catalog(data: &[u8]) -> Catalog {
        let text = format!(
            "[artifacts.thing]\nformat = \"blob\"\nsource = \"url\"\nurl = \"http://127.0.0.1:1/thing\"\nsha256 = \"{}\"\nsize = {}\n",
            Sha256::of(data),
            data.len()
        );
        Catalog::parse(&text, "test", None).unwrap()
    }

    #[test]
    fn missing_artifact_names_the_restore_command() {
        let dir = tempfile::tempdir().unwrap();
        let resolver = Resolver::new(Cache::new(dir.path()), None, Catalog::builtin().unwrap());
        let err = resolver.resolve(&ids::DEBIAN12_K61_KERNEL).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ResolveError::Missing { .. }));
        assert!(
            msg.contains(
                "run `cargo run -p agar_cli -- artifacts restore` (or `agar artifacts restore`)"
            ),
            "{msg}"
        );
        assert!(msg.contains("debian12_k61_kernel"), "{msg}");
    }

    #[test]
    fn override_directory_wins_over_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let over = tempfile::tempdir().unwrap();
        std::fs::write(over.path().join("seabios_bios"), b"rom").unwrap();
        let resolver = Resolver::new(
            Cache::new(dir.path()),
            Some(over.path().to_owned()),
            Catalog::builtin().unwrap(),
        );
        let (path, origin) = resolver.resolve_with_origin("seabios_bios").unwrap();
        assert_eq!(path, over.path().join("seabios_bios"));
        assert_eq!(origin, Origin::OverrideDir);
    }

    #[test]
    fn pinned_blob_resolves_without_a_ref() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.ensure_layout().unwrap();
        let (_, blob) = cache.insert_bytes(b"payload").unwrap();
        let resolver = Resolver::new(cache, None, url_catalog(b"payload"));
        assert_eq!(resolver.resolve_name("thing").unwrap(), blob);
    }

    #[test]
    fn truncated_blob_is_not_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.ensure_layout().unwrap();
        cache.insert_bytes(b"payloa").unwrap();
        // A blob named for "payload" but holding fewer bytes.
        std::fs::rename(
            cache.blob_path(&Sha256::of(b"payloa")),
            cache.blob_path(&Sha256::of(b"payload")),
        )
        .unwrap();
        let resolver = Resolver::new(cache, None, url_catalog(b"payload"));
        assert!(matches!(
            resolver.resolve_name("thing"),
            Err(ResolveError::Missing { .. })
        ));
    }

    #[test]
    fn ref_from_an_older_spec_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.ensure_layout().unwrap();
        let (sha, _) = cache.insert_bytes(b"old").unwrap();
        cache
            .set_artifact_ref(
                "thing",
                &LockedArtifact {
                    sha256: sha,
                    size: 3,
                    spec: Sha256::of(b"an older entry"),
                    debs: vec![],
                    tools: Vec::new(),
                },
            )
            .unwrap();
        let resolver = Resolver::new(cache, None, url_catalog(b"new"));
        let err = resolver.resolve_name("thing").unwrap_err();
        assert!(matches!(err, ResolveError::Stale { .. }), "{err}");
    }

    #[test]
    fn pinned_blob_wins_over_an_older_restore() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.ensure_layout().unwrap();
        let catalog = url_catalog(b"new");
        let spec = catalog.manifest.get("thing").unwrap().spec();
        let (old, old_path) = cache.insert_bytes(b"old").unwrap();
        let ref_to_old = LockedArtifact {
            sha256: old,
            size: 3,
            spec,
            debs: vec![],
            tools: Vec::new(),
        };
        cache.set_artifact_ref("thing", &ref_to_old).unwrap();
        let resolver = Resolver::new(cache.clone(), None, catalog);
        // Only the older file: it is used (with a warning).
        assert_eq!(resolver.resolve_name("thing").unwrap(), old_path);

        let (_, new_path) = cache.insert_bytes(b"new").unwrap();

        assert_eq!(resolver.resolve_name("thing").unwrap(), new_path);
    }

    #[test]
    fn resolve_all_reports_every_failure() {
        let dir = tempfile::tempdir().unwrap();
        let resolver = Resolver::new(Cache::new(dir.path()), None, Catalog::builtin().unwrap());
        let err = resolver
            .resolve_all([ids::DEBIAN12_K61_KERNEL.id(), ids::DEBIAN12_K61_INITRD.id()])
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("debian12_k61_kernel") && msg.contains("debian12_k61_initrd"),
            "{msg}"
        );
    }
}
