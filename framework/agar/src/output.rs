//! The per-test output folder and the records the report reads.
//!
//! ```text
//! <root>/                              $AGAR_TEST_OUTPUT, else <cargo target dir>/agar-tests
//!   agar-matrix-<binary>.json          every registered cell of a test binary (MatrixRecord)
//!   <cell>__<fn>/                      one folder per test ("::" becomes "__")
//!     agar.test                        the test name, written before anything runs
//!     agar.jsonl                       framework log, JSON lines (tracing)
//!     vmm.cmdline                      the VMM command line, reproducible by hand
//!     vmm.stdout.log, vmm.stderr.log   the VMM's own output
//!     com1.log .. com4.log             serial ports (com2.log: the agent transcript)
//!     firmware.log                     firmware debug port (0x402), PCAT/UEFI
//!     agar.result.json                 ResultRecord
//!     agar.passed | agar.failed | agar.failed_unstable   marker; .failed holds the error
//! ```

use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

/// The folder that holds every test's output folder.
pub fn output_root() -> PathBuf {
    if let Some(d) = std::env::var_os("AGAR_TEST_OUTPUT").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    target_dir()
        .map(|t| t.join("agar-tests"))
        .unwrap_or_else(|| std::env::temp_dir().join("agar-tests"))
}

/// The cargo target directory the running test binary was built into: the nearest
/// ancestor of the executable that holds cargo's `CACHEDIR.TAG`.
pub fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
}

/// The folder name for a test.
pub fn test_dir_name(test_name: &str) -> String {
    test_name.replace("::", "__")
}

/// Timings of one test, in milliseconds, measured by the framework.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Timings {
    /// Test start to VMM spawn: artifact resolution, the agent build check, initrd assembly,
    /// rendering the command line.
    #[serde(default)]
    pub setup_ms: Option<u64>,
    /// VMM spawn to the first byte on COM1 (framework + VMM start-up + firmware/kernel
    /// entry).
    pub spawn_to_first_output_ms: Option<u64>,
    /// VMM spawn to the guest's readiness marker.
    pub spawn_to_ready_ms: Option<u64>,
    /// Start of teardown (kill or halt observed) until the VMM process was gone.
    pub teardown_ms: Option<u64>,
}

/// The outcome of one test, as `agar.result.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResultRecord {
    /// Full test name (`{cell}::{fn}`).
    pub name: String,
    /// The test function.
    pub function: String,
    /// Its module path.
    pub module: String,
    /// The cell name.
    pub cell: String,
    /// The cell without the backend (the report's column).
    pub config: String,
    /// `agarvmm` or `qemu`.
    pub backend: String,
    /// `passed`, `failed` or `failed_unstable`.
    pub status: String,
    /// The failure, with its chain.
    pub error: Option<String>,
    /// Wall time of the whole test.
    pub duration_ms: u64,
    /// Unix time the test started, in milliseconds.
    pub started_unix_ms: u64,
    /// The reason the cell is ignored by default, when it was run anyway.
    pub ignored_reason: Option<String>,
    /// Framework timings.
    pub timings: Timings,
}

/// One cell of one test in a test binary, for the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MatrixEntry {
    /// Full test name.
    pub name: String,
    /// The test function.
    pub function: String,
    /// Its module path.
    pub module: String,
    /// The cell name.
    pub cell: String,
    /// The cell without the backend.
    pub config: String,
    /// `agarvmm` or `qemu`.
    pub backend: String,
    /// Why it is ignored by default, if it is.
    pub ignored: Option<String>,
    /// Artifacts it needs.
    pub artifacts: Vec<String>,
}

/// Every cell of a test binary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MatrixRecord {
    /// The test binary (without cargo's hash).
    pub binary: String,
    /// Its cells.
    pub tests: Vec<MatrixEntry>,
}

/// Writes `contents` to `path` through a temporary file and a rename, so concurrent
/// readers never see half a file.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Writes the result record and the marker file.
pub fn write_result(dir: &Path, record: &ResultRecord) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    write_atomic(&dir.join("agar.result.json"), &json)?;
    let (marker, body) = match record.status.as_str() {
        "passed" => ("agar.passed", String::new()),
        "failed_unstable" => (
            "agar.failed_unstable",
            record.error.clone().unwrap_or_default(),
        ),
        _ => ("agar.failed", record.error.clone().unwrap_or_default()),
    };
    std::fs::write(dir.join(marker), body)
}

/// Prints a `[[ATTACHMENT|path]]` line for every file in `dir` (recursively), the syntax
/// JUnit consumers (Azure DevOps, GitLab) use to attach files to a test case.
pub fn print_attachments(dir: &Path) {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files.sort();
    // libtest prints `test <name> ... ` before running the test: start on a line of our
    // own, so every attachment line begins with `[[ATTACHMENT|`.
    println!("\nagar: output folder {}", dir.display());
    for f in files {
        println!("[[ATTACHMENT|{}]]", f.display());
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => collect_files(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}
