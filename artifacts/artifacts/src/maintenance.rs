//! `agar artifacts verify` and `agar artifacts gc`: keeping the cache honest and small.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::cache::Cache;
use crate::cache::CacheIoError;
use crate::hash::Sha256;
use crate::manifest::Catalog;
use crate::progress::Progress;

/// What `verify` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub checked: usize,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Blobs whose contents did not match their name; they were removed.
    pub corrupt: Vec<Sha256>,
    /// Artifact refs whose blob is missing (restore fetches them again).
    pub missing: Vec<String>,
}

/// Re-hashes every blob in the cache. Corrupt blobs are removed so that `restore` fetches
/// them again.
pub fn verify(cache: &Cache, progress: &Progress) -> Result<VerifyReport, CacheIoError> {
    let _gc = cache.lock_shared("gc")?;
    let mut report = VerifyReport::default();
    for sha in cache.blobs()? {
        let path = cache.blob_path(&sha);
        let (actual, len) = Sha256::of_file(&path).map_err(|source| CacheIoError {
            action: "cannot read",
            path: path.clone(),
            source,
        })?;
        report.checked += 1;
        report.bytes += len;
        if actual != sha {
            progress.println(&format!(
                "agar: corrupt cache file {} (contents hash to {actual}); removed",
                path.display()
            ));
            std::fs::remove_file(&path).map_err(|source| CacheIoError {
                action: "cannot remove",
                path: path.clone(),
                source,
            })?;
            report.corrupt.push(sha);
        }
    }
    for name in cache.artifact_ref_names()? {
        if let Some(r) = cache.artifact_ref(&name)?
            && cache.blob_if_present(&r.sha256, r.size).is_none()
        {
            report.missing.push(name);
        }
    }
    Ok(report)
}

/// What `gc` removed (or would remove, with `dry_run`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs no current artifact uses.
    pub blobs: Vec<Sha256>,
    /// Bytes those blobs held.
    pub bytes: u64,
    /// Refs of artifacts that are no longer in the manifest or are stale.
    pub refs: Vec<String>,
    /// Built BIOS media (keys of `refs/media/`) not used for [`MEDIA_KEEP`].
    pub media: Vec<Sha256>,
    /// Partial downloads and builds.
    pub tmp: Vec<PathBuf>,
}

/// How long `gc` keeps a built medium after its last use (each cache hit counts as a use):
/// the framework builds one per agent build, so old ones pile up; any is rebuilt on demand
/// in about a second.
pub const MEDIA_KEEP: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Removes everything the catalog's artifacts do not use: blobs, stale refs, partial files,
/// and built media unused for [`MEDIA_KEEP`]. Kept: the blob of every current artifact ref and
/// the packages it was made from, whatever the lock pins, and recently used media.
pub fn gc(cache: &Cache, catalog: &Catalog, dry_run: bool) -> Result<GcReport, CacheIoError> {
    gc_media_older_than(cache, catalog, dry_run, MEDIA_KEEP)
}

/// [`gc`] with another age limit for built media.
pub fn gc_media_older_than(
    cache: &Cache,
    catalog: &Catalog,
    dry_run: bool,
    keep: std::time::Duration,
) -> Result<GcReport, CacheIoError> {
    let _gc = cache.lock("gc")?;
    let mut live = BTreeSet::new();
    let mut report = GcReport::default();
    for name in cache.artifact_ref_names()? {
        let current = catalog.manifest.get(&name).map(|e| e.spec());
        match cache.artifact_ref(&name)? {
            Some(r) if Some(r.spec) == current => {
                live.insert(r.sha256);
                live.extend(r.debs.iter().map(|d| d.sha256));
            }
            _ => report.refs.push(name),
        }
    }
    for entry in catalog.manifest.entries() {
        if let Some((sha, _)) = catalog.pinned(entry) {
            live.insert(sha);
        }
        if let Some(l) = catalog.lock.get(entry.name()) {
            live.extend(l.debs.iter().map(|d| d.sha256));
        }
    }
    let now = std::time::SystemTime::now();
    for (key, used) in cache.media_refs()? {
        let fresh = !matches!(now.duration_since(used), Ok(age) if age >= keep);
        match cache.media_ref(&key)? {
            Some(r) if fresh => {
                live.insert(r.sha256);
            }
            _ => report.media.push(key),
        }
    }
    for sha in cache.blobs()? {
        if !live.contains(&sha) {
            let path = cache.blob_path(&sha);
            report.bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            report.blobs.push(sha);
        }
    }
    report.tmp = cache.tmp_files()?;
    if dry_run {
        return Ok(report);
    }
    let remove = |path: PathBuf| -> Result<(), CacheIoError> {
        let res = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match res {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CacheIoError {
                action: "cannot remove",
                path,
                source: e,
            }),
            _ => Ok(()),
        }
    };
    for name in &report.refs {
        cache.remove_artifact_ref(name)?;
    }
    for key in &report.media {
        cache.remove_media_ref(key)?;
    }
    for sha in &report.blobs {
        remove(cache.blob_path(sha))?;
    }
    for deb in cache.deb_refs()? {
        if report.blobs.contains(&deb.sha256) {
            cache.remove_deb_ref(&deb.package, &deb.version)?;
        }
    }
    for path in &report.tmp {
        remove(path.clone())?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::LockedArtifact;

    fn catalog_for(data: &[u8]) -> Catalog {
        let text = format!(
            "[artifacts.thing]\nformat = \"blob\"\nsource = \"url\"\nurl = \"http://127.0.0.1:1/t\"\nsha256 = \"{}\"\nsize = {}\n",
            Sha256::of(data),
            data.len()
        );
        Catalog::parse(&text, "test", None).unwrap()
    }

    #[test]
    fn verify_finds_and_removes_a_corrupt_blob() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.ensure_layout().unwrap();
        let (good, _) = cache.insert_bytes(b"good").unwrap();
        let (bad, bad_path) = cache.insert_bytes(b"bad!").unwrap();
        let mut perms = std::fs::metadata(&bad_path).unwrap().permissions();
        #[expect(
            clippy::permissions_set_readonly_false,
            reason = "test corrupts a blob"
        )]
        perms.set_readonly(false);
        std::fs::set_permissions(&bad_path, perms).unwrap();
        std::fs::write(&bad_path, b"BAD!").unwrap();
        let report = verify(&cache, &Progress::Silent).unwrap();
        assert_eq!(report.checked, 2);
        assert_eq!(report.corrupt, vec![bad]);
        assert!(!bad_path.exists());
        assert!(cache.blob_path(&good).exists());
    }

    #[test]
    fn gc_keeps_current_artifacts_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.ensure_layout().unwrap();
        let catalog = catalog_for(b"keep");
        let (keep, _) = cache.insert_bytes(b"keep").unwrap();
        let (old, _) = cache.insert_bytes(b"old").unwrap();
        let entry = catalog.manifest.get("thing").unwrap();
        cache
            .set_artifact_ref(
                "thing",
                &LockedArtifact {
                    sha256: keep,
                    size: 4,
                    spec: entry.spec(),
                    debs: vec![],
                    tools: Vec::new(),
                },
            )
            .unwrap();
        cache
            .set_artifact_ref(
                "gone",
                &LockedArtifact {
                    sha256: old,
                    size: 3,
                    spec: Sha256::of(b"x"),
                    debs: vec![],
                    tools: Vec::new(),
                },
            )
            .unwrap();
        std::fs::write(cache.tmp_dir().join("x.part"), b"partial").unwrap();

        let dry = gc(&cache, &catalog, true).unwrap();
        assert_eq!(dry.blobs, vec![old]);
        assert!(cache.blob_path(&old).exists());

        let report = gc(&cache, &catalog, false).unwrap();
        assert_eq!(report.blobs, vec![old]);
        assert_eq!(report.bytes, 3);
        assert_eq!(report.refs, vec!["gone".to_owned()]);
        assert_eq!(report.tmp.len(), 1);
        assert!(!cache.blob_path(&old).exists());
        assert!(cache.blob_path(&keep).exists());
        assert_eq!(
            cache.artifact_ref_names().unwrap(),
            vec!["thing".to_owned()]
        );
        assert!(cache.tmp_files().unwrap().is_empty());
    }

    #[test]
    fn gc_keeps_recently_used_media_and_drops_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.ensure_layout().unwrap();
        let catalog = catalog_for(b"nothing");
        let record = |sha| crate::media::MediaRef {
            sha256: sha,
            size: 5,
            medium: "disk".into(),
            format: "vhd".into(),
            kernel: Sha256::of(b"k"),
            initrd: Sha256::of(b"i"),
        };
        let (a, _) = cache.insert_bytes(b"disk1").unwrap();
        let (b, _) = cache.insert_bytes(b"disk2").unwrap();
        let (ka, kb) = (Sha256::of(b"key a"), Sha256::of(b"key b"));
        cache.set_media_ref(&ka, &record(a)).unwrap();
        cache.set_media_ref(&kb, &record(b)).unwrap();
        // `b` was last used two days ago.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 24 * 3600);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join(format!("refs/media/{kb}.toml")))
            .unwrap()
            .set_modified(old)
            .unwrap();

        let week = gc(&cache, &catalog, false).unwrap();
        assert!(week.media.is_empty() && week.blobs.is_empty(), "{week:?}");

        let day = std::time::Duration::from_secs(24 * 3600);
        let report = gc_media_older_than(&cache, &catalog, false, day).unwrap();

        assert_eq!(report.media, vec![kb]);
        assert_eq!(report.blobs, vec![b]);
        assert!(cache.media_ref(&kb).unwrap().is_none());
        assert_eq!(cache.media_ref(&ka).unwrap(), Some(record(a)));
        assert!(cache.blob_path(&a).exists());
    }
}
