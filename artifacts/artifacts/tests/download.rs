//! Verified downloads against a real HTTP server on 127.0.0.1.

mod support;

use std::path::Path;
use std::time::Duration;

use artifacts::ResolveError;
use artifacts::Resolver;
use artifacts::cache::Cache;
use artifacts::download::DownloadOptions;
use artifacts::hash::Sha256;
use artifacts::maintenance;
use artifacts::manifest::Catalog;
use artifacts::progress::Progress;
use artifacts::restore::Outcome;
use artifacts::restore::RestoreError;
use artifacts::restore::RestoreOptions;
use artifacts::restore::Restorer;
use support::http_server::Fault;
use support::http_server::Server;

/// Deterministic, incompressible-looking test data.
fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn catalog(entries: &[(&str, &str, &[u8])]) -> Catalog {
    let mut text = String::new();
    for (name, url, content) in entries {
        text.push_str(&format!(
            "[artifacts.{name}]\nformat = \"blob\"\nsource = \"url\"\nurl = \"{url}\"\nsha256 = \"{}\"\nsize = {}\n\n",
            Sha256::of(content),
            content.len()
        ));
    }
    Catalog::parse(&text, "test manifest", None).unwrap()
}

fn restorer(cache: &Path, catalog: Catalog, offline: bool) -> Restorer {
    Restorer::new(
        Cache::new(cache),
        catalog,
        RestoreOptions {
            offline,
            update_lock: false,
            jobs: 4,
            download: DownloadOptions {
                retries: 3,
                backoff: Duration::from_millis(20),
                ..DownloadOptions::default()
            },
            ..RestoreOptions::default()
        },
        Progress::Silent,
    )
}

fn resolver(cache: &Path, catalog: Catalog) -> Resolver {
    Resolver::new(Cache::new(cache), None, catalog)
}

#[test]
fn download_is_verified_cached_and_resolvable() {
    let server = Server::start();
    let content = data(300_000, 1);
    server.put("blob", content.clone());
    let cache = tempfile::tempdir().unwrap();
    let cat = catalog(&[("thing", &server.url("blob"), &content)]);

    let restored = restorer(cache.path(), cat.clone(), false)
        .restore(&[])
        .unwrap();

    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0].outcome, Outcome::Downloaded);
    assert_eq!(std::fs::read(&restored[0].path).unwrap(), content);
    assert_eq!(
        resolver(cache.path(), cat).resolve_name("thing").unwrap(),
        restored[0].path
    );
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn wrong_hash_is_rejected_and_nothing_is_cached() {
    let server = Server::start();
    let served = data(100_000, 2);
    let pinned = data(100_000, 3);
    server.put("blob", served);
    let cache = tempfile::tempdir().unwrap();
    let cat = catalog(&[("thing", &server.url("blob"), &pinned)]);

    let err = restorer(cache.path(), cat.clone(), false)
        .restore(&[])
        .unwrap_err();

    let chain = format!("{err} {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("does not match the manifest"), "{chain}");
    let c = Cache::new(cache.path());
    assert!(c.blobs().unwrap().is_empty());
    assert!(c.tmp_files().unwrap().is_empty(), "{:?}", c.tmp_files());
    assert!(c.artifact_ref("thing").unwrap().is_none());
    assert!(matches!(
        resolver(cache.path(), cat).resolve_name("thing"),
        Err(ResolveError::Missing { .. })
    ));
}

#[test]
fn too_many_bytes_are_rejected_without_reading_the_rest() {
    let server = Server::start();
    let pinned = data(50_000, 4);
    let mut served = pinned.clone();
    served.extend_from_slice(&data(10_000_000, 5));
    server.put("blob", served);
    let cache = tempfile::tempdir().unwrap();
    let cat = catalog(&[("thing", &server.url("blob"), &pinned)]);

    assert!(restorer(cache.path(), cat, false).restore(&[]).is_err());

    assert!(Cache::new(cache.path()).blobs().unwrap().is_empty());
    assert_eq!(server.requests().len(), 1, "a mismatch is not retried");
}

#[test]
fn truncated_transfer_is_resumed_with_a_range_request() {
    let server = Server::start();
    let content = data(1_000_000, 6);
    server.put("blob", content.clone());
    server.fail_next([Fault::Truncate(400_000)]);
    let cache = tempfile::tempdir().unwrap();
    let cat = catalog(&[("thing", &server.url("blob"), &content)]);

    let restored = restorer(cache.path(), cat, false).restore(&[]).unwrap();

    assert_eq!(std::fs::read(&restored[0].path).unwrap(), content);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].range_start, None);
    assert_eq!(requests[1].range_start, Some(400_000));
    // Only the missing part was sent again.
    assert_eq!(server.body_bytes_sent(), content.len() as u64);
}

#[test]
fn server_ignoring_the_range_restarts_cleanly() {
    let server = Server::start();
    let content = data(500_000, 7);
    server.put("blob", content.clone());
    server.fail_next([Fault::Truncate(100_000), Fault::IgnoreRange]);
    let cache = tempfile::tempdir().unwrap();
    let cat = catalog(&[("thing", &server.url("blob"), &content)]);

    let restored = restorer(cache.path(), cat, false).restore(&[]).unwrap();

    assert_eq!(std::fs::read(&restored[0].path).unwrap(), content);
    assert_eq!(server.requests()[1].range_start, Some(100_000));
}

#[test]
fn server_error_is_retried_then_succeeds() {
    let server = Server::start();
    let content = data(10_000, 8);
    server.put("blob", content.clone());
    server.fail_next([Fault::Status(500)]);
    let cache = tempfile::tempdir().unwrap();
    let cat = catalog(&[("thing", &server.url("blob"), &content)]);

    let restored = restorer(cache.path(), cat, false).restore(&[]).unwrap();

    assert_eq!(std::fs::read(&restored[0].path).unwrap(), content);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn persistent_server_errors_give_up_after_the_retries() {
    let server = Server::start();
    let content = data(10_000, 9);
    server.put("blob", content.clone());
    server.fail_next([Fault::Status(503); 10]);
    let cache = tempfile::tempdir().unwrap();
    let cat = catalog(&[("thing", &server.url("blob"), &content)]);

    let err = restorer(cache.path(), cat, false).restore(&[]).unwrap_err();

    let RestoreError::Artifact { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(source.to_string().contains("after 4 attempts"), "{source}");
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn not_found_is_not_retried() {
    let server = Server::start();
    let content = data(10, 10);
    let cache = tempfile::tempdir().unwrap();
    let cat = catalog(&[("thing", &server.url("nowhere"), &content)]);

    let err = restorer(cache.path(), cat, false).restore(&[]).unwrap_err();

    let RestoreError::Artifact { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(source.to_string().contains("HTTP 404"), "{source}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn offline_with_a_warm_cache_uses_no_network() {
    let server = Server::start();
    let content = data(20_000, 11);
    server.put("blob", content.clone());
    let cache = tempfile::tempdir().unwrap();
    let cat = catalog(&[("thing", &server.url("blob"), &content)]);
    restorer(cache.path(), cat.clone(), false)
        .restore(&[])
        .unwrap();
    assert_eq!(server.requests().len(), 1);

    let offline = restorer(cache.path(), cat.clone(), true)
        .restore(&[])
        .unwrap();
    let online_again = restorer(cache.path(), cat, false).restore(&[]).unwrap();

    assert_eq!(offline[0].outcome, Outcome::Cached);
    assert_eq!(online_again[0].outcome, Outcome::Cached);
    assert_eq!(server.requests().len(), 1, "a warm cache needs no request");
}

#[test]
fn offline_with_a_cold_cache_fails_without_network() {
    let server = Server::start();
    let content = data(20_000, 12);
    server.put("blob", content.clone());
    let cache = tempfile::tempdir().unwrap();
    let cat = catalog(&[("thing", &server.url("blob"), &content)]);

    let err = restorer(cache.path(), cat, true).restore(&[]).unwrap_err();

    let RestoreError::Artifact { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(matches!(**source, RestoreError::Offline { .. }), "{source}");
    assert!(server.requests().is_empty());
}

#[test]
fn corrupted_cache_entry_is_found_by_verify_and_fetched_again() {
    let server = Server::start();
    let content = data(200_000, 13);
    server.put("blob", content.clone());
    let cache_dir = tempfile::tempdir().unwrap();
    let cat = catalog(&[("thing", &server.url("blob"), &content)]);
    let first = restorer(cache_dir.path(), cat.clone(), false)
        .restore(&[])
        .unwrap();
    // Flip one byte in place, keeping the size (what a bad disk or a stray write does).
    let path = &first[0].path;
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    #[expect(
        clippy::permissions_set_readonly_false,
        reason = "the test corrupts a blob"
    )]
    perms.set_readonly(false);
    std::fs::set_permissions(path, perms).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    bytes[1234] ^= 0xff;
    std::fs::write(path, bytes).unwrap();

    let report = maintenance::verify(&Cache::new(cache_dir.path()), &Progress::Silent).unwrap();
    let again = restorer(cache_dir.path(), cat, false).restore(&[]).unwrap();

    assert_eq!(report.corrupt, vec![Sha256::of(&content)]);
    assert_eq!(again[0].outcome, Outcome::Downloaded);
    assert_eq!(std::fs::read(&again[0].path).unwrap(), content);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn restore_alone_also_heals_a_corrupt_entry() {
    let server = Server::start();
    let content = data(50_000, 14);
    server.put("blob", content.clone());
    let cache_dir = tempfile::tempdir().unwrap();
    let cat = catalog(&[("thing", &server.url("blob"), &content)]);
    let first = restorer(cache_dir.path(), cat.clone(), false)
        .restore(&[])
        .unwrap();
    let path = &first[0].path;
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    #[expect(
        clippy::permissions_set_readonly_false,
        reason = "the test corrupts a blob"
    )]
    perms.set_readonly(false);
    std::fs::set_permissions(path, perms).unwrap();
    std::fs::write(path, data(50_000, 15)).unwrap();

    let again = restorer(cache_dir.path(), cat, false).restore(&[]).unwrap();

    assert_eq!(again[0].outcome, Outcome::Downloaded);
    assert_eq!(std::fs::read(&again[0].path).unwrap(), content);
}

#[test]
fn parallel_restore_of_many_artifacts_fetches_each_once() {
    let server = Server::start();
    let contents: Vec<Vec<u8>> = (0..6)
        .map(|i| data(100_000 + i * 1000, 20 + i as u32))
        .collect();
    let names: Vec<String> = (0..6).map(|i| format!("a{i}")).collect();
    let urls: Vec<String> = (0..6)
        .map(|i| {
            server.put(&format!("f{i}"), contents[i].clone());
            server.url(&format!("f{i}"))
        })
        .collect();
    let entries: Vec<(&str, &str, &[u8])> = (0..6)
        .map(|i| (names[i].as_str(), urls[i].as_str(), contents[i].as_slice()))
        .collect();
    let cache = tempfile::tempdir().unwrap();

    let restored = restorer(cache.path(), catalog(&entries), false)
        .restore(&[])
        .unwrap();

    assert_eq!(restored.len(), 6);
    for (r, c) in restored.iter().zip(&contents) {
        assert_eq!(&std::fs::read(&r.path).unwrap(), c);
    }
    assert_eq!(server.requests().len(), 6);
}
