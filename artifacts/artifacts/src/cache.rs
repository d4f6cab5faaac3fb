//! The content-addressed cache shared by every agar process on a machine.
//!
//! ```text
//! $AGAR_CACHE_DIR (default ~/.cache/agar)
//!   CACHEDIR.TAG
//!   blobs/sha256/<hex>               file contents, read-only, named by their digest
//!   refs/artifacts/<name>.toml       which blob an artifact is, and what it was made from
//!   refs/debs/<package>_<version>.toml   which blob a downloaded .deb is
//!   refs/media/<key>.toml            which blob a BIOS boot medium built from inputs hashing
//!                                    to <key> is (see `media`); its mtime is its last use
//!   tmp/                             partial downloads and builds (same filesystem: atomic rename)
//!   locks/                           advisory locks, one per artifact/package being restored
//! ```
//!
//! Blobs appear only by atomic rename after their digest was checked, so a reader never sees
//! half a file. Refs are written the same way. Concurrent restores serialize per artifact on
//! an advisory file lock (released by the kernel if a process dies).

use std::fs;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use crate::hash::Sha256;
use crate::manifest::LockedArtifact;
use crate::manifest::LockedDeb;
use crate::media::MediaRef;

/// The environment variable that moves the cache.
pub const CACHE_DIR_ENV: &str = "AGAR_CACHE_DIR";

const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This directory is agar's artifact cache (see `agar artifacts --help`).\n";

/// A cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// An I/O failure on a path in the cache.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}", path.display())]
pub struct CacheIoError {
    /// What was being done ("cannot read", ...).
    pub action: &'static str,
    /// On which path.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl CacheIoError {
    fn new(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_owned();
        move |source| Self {
            action,
            path,
            source,
        }
    }
}

/// The cache directory from the environment: `$AGAR_CACHE_DIR`, else `$XDG_CACHE_HOME/agar`,
/// else `$HOME/.cache/agar`. `None` when none of them is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty(CACHE_DIR_ENV) {
        return Some(dir.into());
    }
    if let Some(xdg) = non_empty("XDG_CACHE_HOME") {
        return Some(PathBuf::from(xdg).join("agar"));
    }
    non_empty("HOME").map(|home| PathBuf::from(home).join(".cache").join("agar"))
}

/// Holds an exclusive advisory lock until dropped.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

impl Cache {
    /// A cache rooted at `root` (created lazily by writers).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn blob_path(&self, sha: &Sha256) -> PathBuf {
        self.root.join("blobs").join("sha256").join(sha.to_string())
    }

    /// The blob's path if it exists with the expected size (a cheap check; `verify` re-hashes).
    pub fn blob_if_present(&self, sha: &Sha256, size: u64) -> Option<PathBuf> {
        let path = self.blob_path(sha);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() == size => Some(path),
            _ => None,
        }
    }

    /// The directory for partial files.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn artifact_ref_path(&self, name: &str) -> PathBuf {
        self.root
            .join("refs")
            .join("artifacts")
            .join(format!("{name}.toml"))
    }

    fn deb_ref_path(&self, package: &str, version: &str) -> PathBuf {
        // Versions may hold `:` (epochs); keep file names portable the way apt does.
        let version = version.replace(':', "%3a");
        self.root
            .join("refs")
            .join("debs")
            .join(format!("{package}_{version}.toml"))
    }

    fn media_ref_path(&self, key: &Sha256) -> PathBuf {
        self.root
            .join("refs")
            .join("media")
            .join(format!("{key}.toml"))
    }

    /// Creates the directory layout and the CACHEDIR.TAG.
    pub fn ensure_layout(&self) -> Result<(), CacheIoError> {
        for dir in [
            self.root.join("blobs").join("sha256"),
            self.root.join("refs").join("artifacts"),
            self.root.join("refs").join("debs"),
            self.root.join("refs").join("media"),
            self.tmp_dir(),
            self.root.join("locks"),
        ] {
            fs::create_dir_all(&dir).map_err(CacheIoError::new("cannot create", &dir))?;
        }
        let tag = self.root.join("CACHEDIR.TAG");
        if !tag.exists() {
            write_atomic(&self.tmp_dir(), &tag, CACHEDIR_TAG.as_bytes())?;
        }
        Ok(())
    }

    /// Takes the exclusive lock `key`, waiting for whoever holds it.
    pub fn lock(&self, key: &str) -> Result<CacheLock, CacheIoError> {
        self.take_lock(key, false)
    }

    /// Takes the lock `key` shared (many holders, but no exclusive one).
    pub fn lock_shared(&self, key: &str) -> Result<CacheLock, CacheIoError> {
        self.take_lock(key, true)
    }

    fn take_lock(&self, key: &str, shared: bool) -> Result<CacheLock, CacheIoError> {
        let dir = self.root.join("locks");
        fs::create_dir_all(&dir).map_err(CacheIoError::new("cannot create", &dir))?;
        let path = dir.join(format!("{key}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(CacheIoError::new("cannot open lock", &path))?;
        let attempt = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match attempt {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                tracing::info!(lock = key, "waiting for another agar process");
                let res = if shared {
                    file.lock_shared()
                } else {
                    file.lock()
                };
                res.map_err(CacheIoError::new("cannot lock", &path))?;
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(CacheIoError::new("cannot lock", &path)(e));
            }
        }
        Ok(CacheLock { _file: file })
    }

    /// Moves a verified file into the blob store under its digest and makes it read-only.
    pub fn insert_blob(&self, tmp: &Path, sha: &Sha256) -> Result<PathBuf, CacheIoError> {
        let dest = self.blob_path(sha);
        let mut perms = fs::metadata(tmp)
            .map_err(CacheIoError::new("cannot stat", tmp))?
            .permissions();
        perms.set_readonly(true);
        fs::set_permissions(tmp, perms).map_err(CacheIoError::new("cannot chmod", tmp))?;
        File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(CacheIoError::new("cannot sync", tmp))?;
        fs::rename(tmp, &dest).map_err(CacheIoError::new("cannot move into the cache", &dest))?;
        Ok(dest)
    }

    /// Stores bytes as a blob (used for small built files).
    pub fn insert_bytes(&self, bytes: &[u8]) -> Result<(Sha256, PathBuf), CacheIoError> {
        let sha = Sha256::of(bytes);
        let tmp = self.tmp_path(&format!("{sha}.new"));
        fs::write(&tmp, bytes).map_err(CacheIoError::new("cannot write", &tmp))?;
        let path = self.insert_blob(&tmp, &sha)?;
        Ok((sha, path))
    }

    /// A fresh path in `tmp/` that no other process uses.
    pub fn tmp_path(&self, stem: &str) -> PathBuf {
        self.tmp_dir()
            .join(format!("{stem}.{}", std::process::id()))
    }

    /// The ref of artifact `name`, if any.
    pub fn artifact_ref(&self, name: &str) -> Result<Option<LockedArtifact>, CacheIoError> {
        read_toml(&self.artifact_ref_path(name))
    }

    /// Records which blob artifact `name` is.
    pub fn set_artifact_ref(&self, name: &str, r: &LockedArtifact) -> Result<(), CacheIoError> {
        let text = toml::to_string(r).unwrap_or_default();
        write_atomic(
            &self.tmp_dir(),
            &self.artifact_ref_path(name),
            text.as_bytes(),
        )
    }

    /// Forgets artifact `name` (its blob stays until `gc`).
    pub fn remove_artifact_ref(&self, name: &str) -> Result<(), CacheIoError> {
        let path = self.artifact_ref_path(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(CacheIoError::new("cannot remove", &path)(e))
            }
            _ => Ok(()),
        }
    }

    /// Names of all artifacts with a ref.
    pub fn artifact_ref_names(&self) -> Result<Vec<String>, CacheIoError> {
        let dir = self.root.join("refs").join("artifacts");
        let mut names: Vec<String> = list_dir(&dir)?
            .into_iter()
            .filter_map(|n| n.strip_suffix(".toml").map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The cached `.deb` for `package`=`version`, if any.
    pub fn deb_ref(&self, package: &str, version: &str) -> Result<Option<LockedDeb>, CacheIoError> {
        read_toml(&self.deb_ref_path(package, version))
    }

    /// Records a downloaded `.deb`.
    pub fn set_deb_ref(&self, deb: &LockedDeb) -> Result<(), CacheIoError> {
        let text = toml::to_string(deb).unwrap_or_default();
        write_atomic(
            &self.tmp_dir(),
            &self.deb_ref_path(&deb.package, &deb.version),
            text.as_bytes(),
        )
    }

    /// Forgets a `.deb` (its blob stays until `gc`).
    pub fn remove_deb_ref(&self, package: &str, version: &str) -> Result<(), CacheIoError> {
        let path = self.deb_ref_path(package, version);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(CacheIoError::new("cannot remove", &path)(e))
            }
            _ => Ok(()),
        }
    }

    /// All deb refs.
    pub fn deb_refs(&self) -> Result<Vec<LockedDeb>, CacheIoError> {
        let dir = self.root.join("refs").join("debs");
        let mut out = Vec::new();
        for name in list_dir(&dir)? {
            if let Some(deb) = read_toml::<LockedDeb>(&dir.join(&name))? {
                out.push(deb);
            }
        }
        Ok(out)
    }

    /// The built medium whose inputs hash to `key`, if any.
    pub fn media_ref(&self, key: &Sha256) -> Result<Option<MediaRef>, CacheIoError> {
        read_toml(&self.media_ref_path(key))
    }

    /// Records a built medium.
    pub fn set_media_ref(&self, key: &Sha256, r: &MediaRef) -> Result<(), CacheIoError> {
        let text = toml::to_string(r).unwrap_or_default();
        write_atomic(&self.tmp_dir(), &self.media_ref_path(key), text.as_bytes())
    }

    /// Marks a medium as used now (`gc` keeps recently used media). Best effort.
    pub fn touch_media_ref(&self, key: &Sha256) {
        let path = self.media_ref_path(key);
        if let Ok(f) = OpenOptions::new().write(true).open(&path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    /// Keys of all built media, with the time each was last used.
    pub fn media_refs(&self) -> Result<Vec<(Sha256, std::time::SystemTime)>, CacheIoError> {
        let dir = self.root.join("refs").join("media");
        let mut out = Vec::new();
        for name in list_dir(&dir)? {
            let Some(key) = name.strip_suffix(".toml").and_then(|k| k.parse().ok()) else {
                continue;
            };
            let used = fs::metadata(dir.join(&name))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            out.push((key, used));
        }
        out.sort();
        Ok(out)
    }

    /// Forgets a built medium (its blob stays until `gc`).
    pub fn remove_media_ref(&self, key: &Sha256) -> Result<(), CacheIoError> {
        let path = self.media_ref_path(key);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(CacheIoError::new("cannot remove", &path)(e))
            }
            _ => Ok(()),
        }
    }

    /// Digests of all blobs present.
    pub fn blobs(&self) -> Result<Vec<Sha256>, CacheIoError> {
        let dir = self.root.join("blobs").join("sha256");
        Ok(list_dir(&dir)?
            .into_iter()
            .filter_map(|n| n.parse().ok())
            .collect())
    }

    /// Files in `tmp/` (partial downloads and builds).
    pub fn tmp_files(&self) -> Result<Vec<PathBuf>, CacheIoError> {
        let dir = self.tmp_dir();
        Ok(list_dir(&dir)?.into_iter().map(|n| dir.join(n)).collect())
    }
}

fn list_dir(dir: &Path) -> Result<Vec<String>, CacheIoError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CacheIoError::new("cannot list", dir)(e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(CacheIoError::new("cannot list", dir))?;
        if let Ok(name) = ent.file_name().into_string() {
            out.push(name);
        }
    }
    Ok(out)
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, CacheIoError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CacheIoError::new("cannot read", path)(e)),
    };
    match toml::from_str(&text) {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            // A damaged ref is the same as no ref: restore writes it again.
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable cache ref");
            Ok(None)
        }
    }
}

/// Writes `dest` through a temporary file in `tmp_dir` and a rename.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<(), CacheIoError> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(CacheIoError::new("cannot create", parent))?;
    }
    fs::create_dir_all(tmp_dir).map_err(CacheIoError::new("cannot create", tmp_dir))?;
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per process and call: threads of one process may write the same file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = tmp_dir.join(format!("{file_name}.{}.{n}.new", std::process::id()));
    let mut f = File::create(&tmp).map_err(CacheIoError::new("cannot write", &tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(CacheIoError::new("cannot write", &tmp))?;
    fs::rename(&tmp, dest).map_err(CacheIoError::new("cannot write", dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserted_blob_is_found_by_digest_and_size_and_is_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.ensure_layout().unwrap();
        let (sha, path) = cache.insert_bytes(b"hello").unwrap();
        assert_eq!(sha, Sha256::of(b"hello"));
        assert_eq!(cache.blob_if_present(&sha, 5), Some(path.clone()));
        assert_eq!(cache.blob_if_present(&sha, 6), None);
        assert!(fs::metadata(&path).unwrap().permissions().readonly());
        assert_eq!(cache.blobs().unwrap(), vec![sha]);
        assert!(dir.path().join("CACHEDIR.TAG").exists());
    }

    #[test]
    fn refs_round_trip_and_damaged_refs_read_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.ensure_layout().unwrap();
        let r = LockedArtifact {
            sha256: Sha256::of(b"a"),
            size: 1,
            spec: Sha256::of(b"s"),
            debs: vec![],
            tools: Vec::new(),
        };
        cache.set_artifact_ref("a", &r).unwrap();
        assert_eq!(cache.artifact_ref("a").unwrap(), Some(r));
        assert_eq!(cache.artifact_ref_names().unwrap(), vec!["a".to_owned()]);
        fs::write(dir.path().join("refs/artifacts/a.toml"), "garbage = [").unwrap();
        assert_eq!(cache.artifact_ref("a").unwrap(), None);
        cache.remove_artifact_ref("a").unwrap();
        cache.remove_artifact_ref("a").unwrap();
    }

    #[test]
    fn deb_ref_names_survive_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.ensure_layout().unwrap();
        let deb = LockedDeb {
            package: "busybox-static".into(),
            version: "1:1.35.0-4+deb12u1+b1".into(),
            sha256: Sha256::of(b"d"),
            size: 1,
        };
        cache.set_deb_ref(&deb).unwrap();
        assert_eq!(
            cache
                .deb_ref("busybox-static", "1:1.35.0-4+deb12u1+b1")
                .unwrap(),
            Some(deb.clone())
        );
        assert_eq!(cache.deb_refs().unwrap(), vec![deb]);
    }
}
