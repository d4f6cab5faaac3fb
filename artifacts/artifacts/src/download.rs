//! Verified HTTP(S) downloads into the cache.
//!
//! A download streams into `tmp/<sha256>.part`, hashing and counting as it goes. A broken
//! transfer keeps the partial file and the next attempt asks for the rest (`Range:
//! bytes=N-`); a server that ignores the range gets a fresh start. Server errors (5xx, 429)
//! and transport failures are retried with exponential backoff. The file enters the cache
//! (atomic rename) only when size and sha256 both match; on a mismatch the partial file is
//! deleted and nothing is cached. Callers hold the cache lock for the digest, so concurrent
//! processes download a blob once.

use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::Read;
use std::io::Seek;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header;

use crate::cache::Cache;
use crate::cache::CacheIoError;
use crate::hash::Hasher;
use crate::hash::Sha256;
use crate::progress::Task;

/// Why a download failed (after retries, where retrying made sense).
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server kept failing or the connection kept breaking.
    #[error("download of {url} failed after {attempts} attempts: {last}")]
    GaveUp {
        /// The URL.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The server answered with a status that retrying will not fix.
    #[error("download of {url} failed: HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: StatusCode,
    },
    /// The bytes did not match the manifest.
    #[error(
        "download of {url} does not match the manifest: expected {expected_size} bytes with sha256 {expected}, got {actual_size} bytes with sha256 {actual}; nothing was cached"
    )]
    Mismatch {
        /// The URL.
        url: String,
        /// Pinned digest.
        expected: Sha256,
        /// Received digest.
        actual: Sha256,
        /// Pinned size.
        expected_size: u64,
        /// Received size (so far, if the server sent too much).
        actual_size: u64,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    /// Local file trouble.
    #[error(transparent)]
    Cache(#[from] CacheIoError),
}

/// Retry and timeout policy.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Attempts after the first.
    pub retries: u32,
    /// Delay before the first retry; doubles each time (capped at 30 s).
    pub backoff: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for the response head, and for each read of the body.
    pub read_timeout: Duration,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            retries: 5,
            backoff: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// An HTTP client that downloads pinned files into a cache.
#[derive(Debug, Clone)]
pub struct Downloader {
    client: reqwest::blocking::Client,
    options: DownloadOptions,
}

/// What went wrong in one attempt.
enum Attempt {
    /// Worth another try (keeping the partial file for a resume).
    Retry(String),
    /// Not worth another try.
    Fatal(DownloadError),
}

impl From<CacheIoError> for Attempt {
    fn from(e: CacheIoError) -> Self {
        Self::Fatal(e.into())
    }
}

impl Downloader {
    /// A downloader with the given policy (rustls, no proxy magic beyond the environment's).
    pub fn new(options: DownloadOptions) -> Result<Self, DownloadError> {
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(options.connect_timeout)
            // The blocking client applies this to the response head and to each body read.
            .timeout(options.read_timeout)
            .user_agent(concat!("agar-artifacts/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(DownloadError::Client)?;
        Ok(Self { client, options })
    }

    /// Downloads `url` into the cache as the blob `sha256` (`size` bytes); returns its path.
    /// The caller holds the cache lock for this blob.
    pub fn fetch(
        &self,
        cache: &Cache,
        url: &str,
        sha256: &Sha256,
        size: u64,
        task: &Task,
    ) -> Result<PathBuf, DownloadError> {
        if let Some(path) = cache.blob_if_present(sha256, size) {
            return Ok(path);
        }
        let part = cache.tmp_dir().join(format!("{sha256}.part"));
        let mut last = String::new();
        let mut attempts = 0;
        for attempt in 0..=self.options.retries {
            if attempt > 0 {
                let delay = self
                    .options
                    .backoff
                    .saturating_mul(1 << (attempt - 1).min(16))
                    .min(Duration::from_secs(30));
                tracing::info!(%url, attempt, ?delay, reason = %last, "retrying download");
                std::thread::sleep(delay);
            }
            attempts += 1;
            match self.attempt(url, sha256, size, &part, task) {
                Ok(()) => return Ok(cache.insert_blob(&part, sha256)?),
                Err(Attempt::Retry(why)) => last = why,
                Err(Attempt::Fatal(e)) => return Err(e),
            }
        }
        Err(DownloadError::GaveUp {
            url: url.to_owned(),
            attempts,
            last,
        })
    }

    /// One request: resume or start, stream, verify. `Ok` leaves a verified `part`.
    fn attempt(
        &self,
        url: &str,
        sha256: &Sha256,
        size: u64,
        part: &Path,
        task: &Task,
    ) -> Result<(), Attempt> {
        let io = |action: &'static str| {
            let part = part.to_owned();
            move |source: io::Error| {
                Attempt::Fatal(DownloadError::Cache(CacheIoError {
                    action,
                    path: part,
                    source,
                }))
            }
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(part)
            .map_err(io("cannot open"))?;
        let mut have = file.metadata().map_err(io("cannot stat"))?.len();
        if have > size {
            file.set_len(0).map_err(io("cannot truncate"))?;
            have = 0;
        }
        // Re-hash what an earlier attempt left, so the final digest covers the whole file.
        let mut hasher = Hasher::new();
        if have > 0 {
            hash_prefix(&mut file, have, &mut hasher).map_err(io("cannot read"))?;
        }

        let mut request = self.client.get(url);
        if have > 0 {
            request = request.header(header::RANGE, format!("bytes={have}-"));
        }
        let mut response = request.send().map_err(|e| Attempt::Retry(describe(&e)))?;
        let status = response.status();
        match status {
            StatusCode::PARTIAL_CONTENT if have > 0 && range_start(&response) == Some(have) => {
                tracing::debug!(%url, from = have, "resuming");
            }
            StatusCode::PARTIAL_CONTENT => {
                // Not the range we asked for: start over without one.
                file.set_len(0).map_err(io("cannot truncate"))?;
                return Err(Attempt::Retry(
                    "the server answered a different range".into(),
                ));
            }
            StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => {
                // Our partial file is as long as or longer than the server's: start over.
                file.set_len(0).map_err(io("cannot truncate"))?;
                return Err(Attempt::Retry(format!("HTTP {status} on resume")));
            }
            s if s.is_success() => {
                // A full body (the server ignored or could not honour the range).
                file.set_len(0).map_err(io("cannot truncate"))?;
                hasher = Hasher::new();
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                return Err(Attempt::Retry(format!("HTTP {s}")));
            }
            s => {
                return Err(Attempt::Fatal(DownloadError::Status {
                    url: url.to_owned(),
                    status: s,
                }));
            }
        }
        file.seek(io::SeekFrom::End(0)).map_err(io("cannot seek"))?;
        task.set_position(hasher.len());

        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match response.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    file.sync_data().map_err(io("cannot write"))?;
                    return Err(Attempt::Retry(format!("connection broke: {e}")));
                }
            };
            let chunk = buf.get(..n).unwrap_or_default();
            if hasher.len().saturating_add(n as u64) > size {
                drop(file);
                let _ = std::fs::remove_file(part);
                hasher.update(chunk);
                let (actual, actual_size) = hasher.finish();
                return Err(Attempt::Fatal(DownloadError::Mismatch {
                    url: url.to_owned(),
                    expected: *sha256,
                    actual,
                    expected_size: size,
                    actual_size,
                }));
            }
            file.write_all(chunk).map_err(io("cannot write"))?;
            hasher.update(chunk);
            task.advance(n as u64);
        }
        file.sync_all().map_err(io("cannot write"))?;
        if hasher.len() < size {
            return Err(Attempt::Retry(format!(
                "connection closed after {} of {size} bytes",
                hasher.len()
            )));
        }
        let (actual, actual_size) = hasher.finish();
        if actual != *sha256 {
            drop(file);
            let _ = std::fs::remove_file(part);
            if have > 0 {
                // The earlier partial file may have been the bad part: one clean retry.
                return Err(Attempt::Retry("sha256 mismatch after a resume".into()));
            }
            return Err(Attempt::Fatal(DownloadError::Mismatch {
                url: url.to_owned(),
                expected: *sha256,
                actual,
                expected_size: size,
                actual_size,
            }));
        }
        Ok(())
    }
}

fn hash_prefix(file: &mut File, len: u64, hasher: &mut Hasher) -> io::Result<()> {
    file.seek(io::SeekFrom::Start(0))?;
    let mut reader = file.take(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(())
}

/// The first byte of a `Content-Range: bytes A-B/N` answer.
fn range_start(response: &reqwest::blocking::Response) -> Option<u64> {
    let v = response
        .headers()
        .get(header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let range = v.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
