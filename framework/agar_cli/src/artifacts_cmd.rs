//! `agar artifacts`: list, restore, verify, gc, path.

use std::io::Read;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use anyhow::bail;
use artifacts::ArtifactId;
use artifacts::Resolver;
use artifacts::cache::Cache;
use artifacts::download::DownloadOptions;
use artifacts::maintenance;
use artifacts::manifest::Catalog;
use artifacts::manifest::Source;
use artifacts::progress::Progress;
use artifacts::progress::human_bytes;
use artifacts::resolve::ARTIFACTS_DIR_ENV;
use artifacts::resolve::Origin;
use artifacts::resolve::ResolveError;
use artifacts::restore::RestoreOptions;
use artifacts::restore::Restorer;

/// List, restore, verify and clean the test artifacts (kernels, initrds, firmware).
#[derive(clap::Args)]
pub struct Args {
    /// Use this manifest instead of the built-in one.
    #[arg(long, global = true, value_name = "PATH")]
    manifest: Option<PathBuf>,
    /// Use this lock file (default: the built-in lock, or `artifacts.lock` beside --manifest).
    #[arg(long, global = true, value_name = "PATH")]
    lock: Option<PathBuf>,
    /// The cache directory (default: $AGAR_CACHE_DIR, else ~/.cache/agar).
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Show every artifact: name, kind, format, size, sha256, and whether it is available.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put artifacts in the cache (all of them unless names or --tests-from-stdin are given).
    Restore(RestoreArgs),
    /// Re-hash every file in the cache; corrupt files are removed and the exit code is 1.
    Verify,
    /// Delete cache files that no current artifact uses, and partial downloads.
    Gc {
        /// Only print what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the local path of an artifact, the way tests resolve it.
    Path {
        /// The artifact name (see `agar artifacts list`).
        name: String,
    },
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// Never use the network or apt: succeed only if the cache already has everything.
    #[arg(long)]
    offline: bool,
    /// Restore what a test run needs: read the framework's `--list-required-artifacts` JSON,
    /// `{"required": [names], "optional": [names]}`, from stdin.
    #[arg(long, conflicts_with = "names")]
    tests_from_stdin: bool,
    /// Ignore the lock's pins, take the current Debian packages, and rewrite the lock
    /// (--lock, default: the source tree's artifacts/artifacts/artifacts.lock).
    #[arg(long, conflicts_with = "offline")]
    update_lock: bool,
    /// How many artifacts to restore at once.
    #[arg(short, long, default_value_t = 4)]
    jobs: usize,
    /// Download attempts after the first.
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// Delay before the first download retry, in milliseconds (doubles each time).
    #[arg(long, default_value_t = 500, hide = true)]
    retry_delay_ms: u64,
    /// Only these artifacts (and the ones they are built from).
    names: Vec<String>,
}

/// The JSON a test binary prints for `--list-required-artifacts`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RequiredArtifacts {
    #[serde(default)]
    required: Vec<String>,
    #[serde(default)]
    optional: Vec<String>,
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let catalog = self.catalog()?;
        let cache = Cache::new(self.cache_dir()?);
        match self.command {
            Command::List { json } => list(cache, catalog, json),
            Command::Restore(ref args) => self.restore(args, cache, catalog),
            Command::Verify => verify(&cache),
            Command::Gc { dry_run } => gc(&cache, &catalog, dry_run),
            Command::Path { ref name } => {
                let path = resolver(cache, catalog).resolve_name(name)?;
                println!("{}", path.display());
                Ok(ExitCode::SUCCESS)
            }
        }
    }

    fn cache_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.cache_dir {
            Some(d) => Ok(d.clone()),
            None => artifacts::cache::default_cache_dir()
                .context("no cache directory: set AGAR_CACHE_DIR or HOME, or pass --cache-dir"),
        }
    }

    fn catalog(&self) -> anyhow::Result<Catalog> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
        };
        let lock_path = self.lock.clone().or_else(|| {
            let sibling = self.manifest.as_ref()?.with_file_name("artifacts.lock");
            sibling.exists().then_some(sibling)
        });
        let lock_text = lock_path.as_deref().map(read).transpose()?;
        let lock_origin = lock_path.as_ref().map(|p| p.display().to_string());
        let lock = lock_text.as_deref().zip(lock_origin.as_deref());
        Ok(match &self.manifest {
            Some(m) => Catalog::parse(&read(m)?, &m.display().to_string(), lock)?,
            None => {
                let mut c = Catalog::builtin()?;
                if let Some((text, origin)) = lock {
                    c.lock = artifacts::manifest::Lock::parse(text, origin)?;
                }
                c
            }
        })
    }

    fn lock_out(&self) -> anyhow::Result<PathBuf> {
        if let Some(l) = &self.lock {
            return Ok(l.clone());
        }
        if let Some(m) = &self.manifest {
            return Ok(m.with_file_name("artifacts.lock"));
        }
        let p = artifacts::manifest::source_tree_lock_path();
        if p.exists() {
            Ok(p)
        } else {
            bail!("cannot find artifacts.lock in the source tree; pass --lock PATH")
        }
    }

    fn restore(&self, args: &RestoreArgs, cache: Cache, catalog: Catalog) -> anyhow::Result<ExitCode> {
        let (required, optional) = if args.tests_from_stdin {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read stdin")?;
            let list: RequiredArtifacts = serde_json::from_str(&text).context(
                "stdin is not the `--list-required-artifacts` JSON ({\"required\": [...], \"optional\": [...]})",
            )?;
            let mut optional = list.optional;
            optional.retain(|n| !list.required.contains(n));
            (list.required, optional)
        } else {
            (args.names.clone(), Vec::new())
        };
        let everything = required.is_empty() && !args.tests_from_stdin;
        if args.tests_from_stdin && required.is_empty() && optional.is_empty() {
            eprintln!("agar: the test list needs no artifacts");
            return Ok(ExitCode::SUCCESS);
        }
        let restorer = Restorer::new(
            cache,
            catalog,
            RestoreOptions {
                offline: args.offline,
                update_lock: args.update_lock,
                jobs: args.jobs,
                download: DownloadOptions {
                    retries: args.retries,
                    backoff: Duration::from_millis(args.retry_delay_ms),
                    ..DownloadOptions::default()
                },
                ..RestoreOptions::default()
            },
            Progress::for_stderr(),
        );
        let mut restored = if everything || !required.is_empty() {
            restorer.restore(&required)?
        } else {
            Vec::new()
        };
        for name in &optional {
            match restorer.restore(std::slice::from_ref(name)) {
                Ok(mut r) => restored.append(&mut r),
                Err(e) => eprintln!("agar: warning: optional artifact not restored: {e:#}"),
            }
        }
        for r in &restored {
            println!("{:<24} {:<10} {}", r.name, r.outcome.as_str(), r.path.display());
        }
        let warnings: Vec<&String> = restored.iter().flat_map(|r| &r.warnings).collect();
        if !warnings.is_empty() {
            eprintln!("agar: {} warning(s):", warnings.len());
            for w in warnings {
                eprintln!("  - {w}");
            }
        }
        if args.update_lock {
            let path = self.lock_out()?;
            let lock = restorer.updated_lock(&restored);
            std::fs::write(&path, lock.to_toml())
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("agar: wrote {}", path.display());
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn resolver(cache: Cache, catalog: Catalog) -> Resolver {
    let override_dir = std::env::var_os(ARTIFACTS_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    Resolver::new(cache, override_dir, catalog)
}

#[derive(serde::Serialize)]
struct ListRow {
    name: String,
    kind: Option<&'static str>,
    os: Option<&'static str>,
    format: &'static str,
    source: String,
    sha256: Option<String>,
    size: Option<u64>,
    status: &'static str,
    path: Option<PathBuf>,
}

fn list(cache: Cache, catalog: Catalog, json: bool) -> anyhow::Result<ExitCode> {
    let resolver = resolver(cache.clone(), catalog.clone());
    let mut rows = Vec::new();
    for entry in catalog.manifest.entries() {
        let id = ArtifactId::by_name(entry.name());
        let (status, path) = match resolver.resolve_with_origin(entry.name()) {
            Ok((p, Origin::OverrideDir)) => ("override", Some(p)),
            Ok((p, Origin::Cache)) => ("cached", Some(p)),
            Err(ResolveError::Stale { .. }) => ("stale", None),
            Err(ResolveError::Missing { .. }) => ("missing", None),
            Err(e) => return Err(e.into()),
        };
        // The digest of what is in the cache if it is there, else what the pins say.
        let in_cache = cache
            .artifact_ref(entry.name())?
            .filter(|r| r.spec == entry.spec() && status == "cached");
        let (sha256, size) = match in_cache {
            Some(r) => (Some(r.sha256), Some(r.size)),
            None => catalog
                .pinned(entry)
                .map_or((None, None), |(s, n)| (Some(s), Some(n))),
        };
        rows.push(ListRow {
            name: entry.name().to_owned(),
            kind: id.map(|i| i.kind().as_str()),
            os: id.map(|i| i.os().as_str()),
            format: entry.format().as_str(),
            source: match entry.source() {
                Source::Url { url, .. } => url.clone(),
                Source::Deb { package, file } => format!("deb:{}:{file}", package.name()),
                Source::Build(r) => format!("build:{}({})", r.name(), r.inputs().join("+")),
            },
            sha256: sha256.map(|s| s.to_string()),
            size,
            status,
            path,
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<22} {:<7} {:<10} {:>10}  {:<16} {:<8} SOURCE",
        "NAME", "KIND", "FORMAT", "SIZE", "SHA256", "STATUS"
    );
    for r in rows {
        println!(
            "{:<22} {:<7} {:<10} {:>10}  {:<16} {:<8} {}",
            r.name,
            r.kind.unwrap_or("-"),
            r.format,
            r.size.map(human_bytes).unwrap_or_else(|| "?".into()),
            r.sha256.as_deref().and_then(|s| s.get(..16)).unwrap_or("(unlocked)"),
            r.status,
            r.source
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(cache: &Cache) -> anyhow::Result<ExitCode> {
    let report = maintenance::verify(cache, &Progress::Lines)?;
    println!(
        "checked {} files ({}) in {}",
        report.checked,
        human_bytes(report.bytes),
        cache.root().display()
    );
    for name in &report.missing {
        println!("not in the cache: {name} (run `agar artifacts restore`)");
    }
    if report.corrupt.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{} corrupt file(s) removed; run `agar artifacts restore` to fetch them again",
            report.corrupt.len()
        );
        Ok(ExitCode::FAILURE)
    }
}

fn gc(cache: &Cache, catalog: &Catalog, dry_run: bool) -> anyhow::Result<ExitCode> {
    let report = maintenance::gc(cache, catalog, dry_run)?;
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} file(s) ({}), {} stale ref(s), {} boot medium/media unused for {} days, {} partial file(s)",
        report.blobs.len(),
        human_bytes(report.bytes),
        report.refs.len(),
        report.media.len(),
        maintenance::MEDIA_KEEP.as_secs() / 86400,
        report.tmp.len()
    );
    Ok(ExitCode::SUCCESS)
}
