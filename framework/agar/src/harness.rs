//! The test harness: turns the registry into libtest-mimic trials, so the test binary
//! behaves like libtest for cargo and nextest (`--list`, `--format terse`, `--exact`,
//! `--ignored`, `--include-ignored`, filters, `--skip`), plus:
//!
//! - `--list-required-artifacts [--tests-from-stdin]`: JSON
//!   `{"required": [...], "optional": [...]}` of the artifact ids the selected tests need
//!   (required: tests that would run; optional: selected tests that are ignored).
//! - `--list-matrix`: JSON of every cell, with the reason it is ignored, if it is.
//! - `--agar-fixture <name>`: run one fixture (a test the framework's own tests run in a
//!   child process); fixtures are never listed.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io::BufRead;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;

use libtest_mimic::Arguments;
use libtest_mimic::Failed;
use libtest_mimic::Trial;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

use crate::capability;
use crate::context::DEFAULT_TIMEOUT;
use crate::context::TestContext;
use crate::output;
use crate::output::MatrixEntry;
use crate::output::MatrixRecord;
use crate::output::ResultRecord;
use crate::output::Timings;
use crate::process;
use crate::registry::CellDef;
use crate::registry::TESTS;
use crate::registry::TestDef;
use crate::vm::VmBuilder;

/// One runnable test: a function in one cell.
#[derive(Clone)]
pub struct Case {
    /// `{cell}::{fn}`.
    pub name: String,
    /// The function.
    pub def: &'static TestDef,
    /// The cell.
    pub cell: CellDef,
    /// Why it is ignored by default, if it is.
    pub ignored: Option<String>,
    /// Why failures are tolerated (with `AGAR_IGNORE_UNSTABLE_FAILURES=1`), if they are.
    pub unstable: Option<&'static str>,
    /// Every artifact id it needs.
    pub artifacts: Vec<&'static str>,
}

fn ignore_reason(def: &TestDef, cell: &CellDef, artifacts: &[&str]) -> Option<String> {
    let mut reasons: Vec<String> = Vec::new();
    for a in artifacts {
        if !crate::artifacts::is_declared(a) {
            reasons.push(format!(
                "needs artifact `{a}`, which artifacts::ids does not declare yet"
            ));
        }
    }
    reasons.extend(def.ignore.map(str::to_string));
    reasons.extend(cell.ignore.map(str::to_string));
    reasons.extend(
        capability::backend_support(&cell.cell)
            .reason()
            .map(str::to_string),
    );
    for &cap in def.requires {
        reasons.extend(
            capability::backend_has(cell.cell.backend, cap)
                .reason()
                .map(str::to_string),
        );
        reasons.extend(capability::host_has(cap).err());
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// Every case of every registered test (`fixtures`: the fixtures instead), sorted by
/// name. Panics on duplicate names, naming both definitions.
pub fn cases(fixtures: bool) -> Vec<Case> {
    let mut out: BTreeMap<String, Case> = BTreeMap::new();
    for def in TESTS.iter().filter(|d| d.fixture == fixtures) {
        for cell in def.cells {
            let name = format!("{}::{}", cell.cell.name(), def.name);
            let mut artifacts = cell.cell.artifacts();
            for a in def.artifacts {
                if !artifacts.contains(a) {
                    artifacts.push(a);
                }
            }
            let case = Case {
                name: name.clone(),
                def,
                cell: *cell,
                ignored: ignore_reason(def, cell, &artifacts),
                unstable: cell.unstable.or(def.unstable),
                artifacts,
            };
            if let Some(prev) = out.insert(name.clone(), case) {
                panic!(
                    "duplicate VM test name `{name}`: `{}` ({}:{}) and `{}` ({}:{}) have the same \
                     function name and cell; rename one",
                    prev.def.module, prev.def.file, prev.def.line, def.module, def.file, def.line
                );
            }
        }
    }
    out.into_values().collect()
}

fn remove_flag(args: &mut Vec<String>, flag: &str) -> bool {
    let before = args.len();
    args.retain(|a| a != flag);
    args.len() != before
}

fn trial(case: &Case, run: bool) -> Trial {
    let c = case.clone();
    let t = if run {
        Trial::test(case.name.clone(), move || run_case(&c))
    } else {
        Trial::test(case.name.clone(), || Ok(()))
    };
    t.with_ignored_flag(case.ignored.is_some())
}

/// The entry point of a `harness = false` VM test binary.
pub fn test_main() -> ! {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--agar-fixture") {
        let Some(name) = args.get(pos + 1).cloned() else {
            eprintln!("--agar-fixture needs a fixture name");
            std::process::exit(2);
        };
        std::process::exit(run_fixture(&name));
    }
    let list_artifacts = remove_flag(&mut args, "--list-required-artifacts");
    let from_stdin = remove_flag(&mut args, "--tests-from-stdin");
    let list_matrix = remove_flag(&mut args, "--list-matrix");
    let mut parsed = Arguments::from_iter(args);
    let cases = cases(false);

    if list_matrix {
        println!("{}", matrix_json(&cases));
        std::process::exit(0);
    }
    if list_artifacts {
        let names = from_stdin.then(|| {
            std::io::stdin()
                .lock()
                .lines()
                .map_while(Result::ok)
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect::<BTreeSet<_>>()
        });
        println!("{}", required_artifacts(&cases, &parsed, names.as_ref()));
        std::process::exit(0);
    }

    // VM tests are heavy: one at a time per process unless asked (nextest runs one
    // process per test anyway).
    if parsed.test_threads.is_none() {
        parsed.test_threads = Some(1);
    }
    if !parsed.list {
        write_matrix(&cases);
    }
    let trials = cases.iter().map(|c| trial(c, true)).collect();
    libtest_mimic::run(&parsed, trials).exit()
}

fn matrix_json(cases: &[Case]) -> String {
    let record = MatrixRecord {
        binary: binary_name(),
        tests: cases
            .iter()
            .map(|c| MatrixEntry {
                name: c.name.clone(),
                function: c.def.name.into(),
                module: c.def.module.into(),
                cell: c.cell.cell.name(),
                config: c.cell.cell.config_name(),
                backend: c.cell.cell.backend.name().into(),
                ignored: c.ignored.clone(),
                artifacts: c.artifacts.iter().map(|a| a.to_string()).collect(),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&record).unwrap_or_default()
}

fn binary_name() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(Path::file_stem)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tests".into());
    // Strip cargo's `-<16 hex digits>` suffix.
    match stem.rsplit_once('-') {
        Some((base, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            base.to_string()
        }
        _ => stem,
    }
}

fn write_matrix(cases: &[Case]) {
    let root = output::output_root();
    if std::fs::create_dir_all(&root).is_ok() {
        let path = root.join(format!("agar-matrix-{}.json", binary_name()));
        let _ = output::write_atomic(&path, matrix_json(cases).as_bytes());
    }
}

/// The `--list-required-artifacts` JSON for the tests `args` (or `names`) select.
pub fn required_artifacts(
    cases: &[Case],
    args: &Arguments,
    names: Option<&BTreeSet<String>>,
) -> String {
    let mut required = BTreeSet::new();
    let mut optional = BTreeSet::new();
    let runs_ignored = args.ignored || args.include_ignored;
    for c in cases {
        let selected = match names {
            Some(n) => n.contains(&c.name),
            None => !args.is_filtered_out(&trial(c, false)),
        };
        if !selected {
            continue;
        }
        let set = if c.ignored.is_none() || runs_ignored {
            &mut required
        } else {
            &mut optional
        };
        set.extend(c.artifacts.iter().map(|a| a.to_string()));
    }
    let optional: Vec<_> = optional.difference(&required).cloned().collect();
    serde_json::json!({ "required": required, "optional": optional }).to_string()
}

fn run_fixture(name: &str) -> i32 {
    let Some(case) = cases(true).into_iter().find(|c| c.name == name) else {
        eprintln!("no fixture named `{name}`");
        return 2;
    };
    match run_case(&case) {
        Ok(()) => {
            println!("fixture {name} ... ok");
            0
        }
        Err(f) => {
            println!("fixture {name} ... FAILED\n{}", f.message().unwrap_or(""));
            1
        }
    }
}

fn watchdog_timeout(def: &TestDef) -> Duration {
    def.timeout_secs
        .map(Duration::from_secs)
        .or_else(|| {
            std::env::var("AGAR_WATCHDOG_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Duration::from_secs)
        })
        .unwrap_or(DEFAULT_TIMEOUT)
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

/// Runs one case end to end: output folder, logging, artifacts, the body under the
/// watchdog, teardown, leftover check, result records.
pub fn run_case(case: &Case) -> Result<(), Failed> {
    let start = Instant::now();
    let started_unix_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let dir = output::output_root().join(output::test_dir_name(&case.name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failed::from(format!("cannot create {}: {e}", dir.display())))?;
    let _ = std::fs::write(dir.join("agar.test"), format!("{}\n", case.name));

    let jsonl = std::fs::File::create(dir.join("agar.jsonl"))
        .map_err(|e| Failed::from(format!("cannot create agar.jsonl: {e}")))?;
    // nextest captures each test's output and shows it on failure: log progress there.
    // Under plain `cargo test` the output is not captured; keep the terminal to warnings.
    let stderr_level = if std::env::var_os("NEXTEST").is_some() {
        tracing_subscriber::filter::LevelFilter::INFO
    } else {
        tracing_subscriber::filter::LevelFilter::WARN
    };
    let file_filter = tracing_subscriber::EnvFilter::try_from_env("AGAR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug"));
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::sync::Mutex::new(jsonl))
                .with_filter(file_filter),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .compact()
                .with_ansi(false)
                .with_writer(std::io::stderr)
                .with_filter(stderr_level),
        );
    let _log = tracing::subscriber::set_default(subscriber);
    tracing::info!(test = %case.name, output = %dir.display(), "test started");
    if let Some(r) = &case.ignored {
        tracing::warn!(reason = %r, "running a cell that is ignored by default");
    }

    let (result, timings) = run_body(case, &dir, start);
    let duration_ms = start.elapsed().as_millis() as u64;
    let (status, error, outcome) = match result {
        Ok(()) => ("passed", None, Ok(())),
        Err(e) => match case.unstable {
            Some(reason)
                if std::env::var_os("AGAR_IGNORE_UNSTABLE_FAILURES")
                    .is_some_and(|v| !v.is_empty() && v != "0") =>
            {
                tracing::warn!(%reason, error = %e, "unstable test failed; tolerated");
                ("failed_unstable", Some(e), Ok(()))
            }
            Some(reason) => {
                let msg = format!("unstable test failed (reason: {reason}): {e}");
                ("failed", Some(msg.clone()), Err(msg))
            }
            None => ("failed", Some(e.clone()), Err(e)),
        },
    };
    tracing::info!(status, duration_ms, "test finished");
    let record = ResultRecord {
        name: case.name.clone(),
        function: case.def.name.into(),
        module: case.def.module.into(),
        cell: case.cell.cell.name(),
        config: case.cell.cell.config_name(),
        backend: case.cell.cell.backend.name().into(),
        status: status.into(),
        error,
        duration_ms,
        started_unix_ms,
        ignored_reason: case.ignored.clone(),
        timings,
    };
    if let Err(e) = output::write_result(&dir, &record) {
        eprintln!("agar: cannot write the result record: {e}");
    }
    output::print_attachments(&dir);
    outcome.map_err(Failed::from)
}

fn run_body(case: &Case, dir: &Path, start: Instant) -> (Result<(), String>, Timings) {
    let mut timings = Timings::default();
    // Artifacts first: every missing one in one message.
    let mut artifacts = BTreeMap::new();
    let mut missing = Vec::new();
    for id in &case.artifacts {
        match crate::artifacts::resolve(id) {
            Ok(p) => {
                tracing::info!(artifact = id, path = %p.display(), "artifact resolved");
                artifacts.insert(id.to_string(), p);
            }
            Err(e) => missing.push(e.to_string()),
        }
    }
    if !missing.is_empty() {
        return (
            Err(format!(
                "artifact resolution failed:\n  {}",
                missing.join("\n  ")
            )),
            timings,
        );
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return (Err(format!("cannot start the async runtime: {e}")), timings),
    };
    let ctx = TestContext::new(
        case.name.clone(),
        dir.to_path_buf(),
        case.cell.cell,
        artifacts,
        watchdog_timeout(case.def),
    );
    let body_ctx = ctx.clone();
    let run = case.def.run;
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(async move {
            let builder = VmBuilder::new(body_ctx.clone()).map_err(anyhow::Error::new)?;
            tokio::select! {
                r = run(builder) => r,
                e = body_ctx.watchdog() => Err(anyhow::Error::new(e)),
            }
        })
    }));
    let body_end = Instant::now();
    let mut result = match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(p) => Err(format!("test panicked: {}", panic_message(&*p))),
    };
    // Teardown: every VM handle is gone now, so every VMM was killed or had halted. Let
    // the monitors observe the exits (and drain the logs), bounded.
    let vms = ctx.vms();
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(async {
            let all = async {
                for vm in &vms {
                    while vm.halt().is_none() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(10), all).await;
        })
    }));
    drop(rt);
    let mut leftovers = Vec::new();
    for vm in &vms {
        let live = process::wait_group_gone(vm.pid(), Duration::from_secs(5));
        if !live.is_empty() {
            let survivors = process::kill_group_and_wait(vm.pid(), Duration::from_secs(5));
            let mut entry = format!("{}: pids {live:?}", vm.vmm_name());
            if !survivors.is_empty() {
                entry.push_str(&format!(" (still alive after SIGKILL: {survivors:?})"));
            }
            leftovers.push(entry);
        }
    }
    timings.teardown_ms = Some(body_end.elapsed().as_millis() as u64);
    if let Some(vm) = vms.first() {
        timings.setup_ms = Some(vm.spawned_at().duration_since(start).as_millis() as u64);
        let since =
            |t: Option<Instant>| t.map(|t| t.duration_since(vm.spawned_at()).as_millis() as u64);
        timings.spawn_to_first_output_ms = since(vm.console().and_then(|c| c.first_output()));
        timings.spawn_to_ready_ms = since(vm.console().and_then(|c| c.ready_at()));
    }
    tracing::info!(?timings, "teardown done");
    if !leftovers.is_empty() {
        let msg = format!("left VMM processes behind: {}", leftovers.join(", "));
        result = match result {
            Ok(()) => Err(msg),
            Err(e) => Err(format!("{e}\n{msg}")),
        };
    }
    (result, timings)
}
