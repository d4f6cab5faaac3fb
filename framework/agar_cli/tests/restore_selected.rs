//! The artifact pipeline CI runs, end to end with real processes: a VM test binary's
//! `--list-required-artifacts` JSON for a selection of tests, piped into
//! `agar artifacts restore --tests-from-stdin`, downloads exactly what those tests need
//! from a real HTTP server on 127.0.0.1.
//!
//! This binary is its own VM test harness (`AGAR_HARNESS_UNDER_TEST=1`): it registers a
//! small matrix that is only listed, never booted.

#[path = "../../../artifacts/artifacts/tests/support/http_server.rs"]
mod http_server;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::process::Stdio;

use agar::VmBuilder;
use agar::vm_test;
use artifacts::hash::Sha256;
use http_server::Server;
use libtest_mimic::Arguments;
use libtest_mimic::Failed;
use libtest_mimic::Trial;

#[vm_test(linux_direct(debian12_k61), qemu_linux_direct(debian12_k612))]
async fn boots(_vm: VmBuilder) -> anyhow::Result<()> {
    Ok(())
}

#[vm_test(qemu_pcat(ide(debian12)))]
async fn disk_guest(_vm: VmBuilder) -> anyhow::Result<()> {
    Ok(())
}

const UNDER_TEST: &str = "AGAR_HARNESS_UNDER_TEST";
const AGAR: &str = env!("CARGO_BIN_EXE_agar");
const IDS: [&str; 5] = [
    "debian12_k61_kernel",
    "debian12_k61_initrd",
    "debian12_k612_kernel",
    "debian12_k612_initrd",
    "seabios_bios",
];

fn run(mut cmd: Command, stdin: &str) -> Result<String, Failed> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut input = child.stdin.take().ok_or("no stdin")?;
    input
        .write_all(stdin.as_bytes())
        .map_err(|e| e.to_string())?;
    drop(input);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `harness_args` select tests (stdin feeds `--tests-from-stdin`); returns the artifact
/// names the server was asked for by the restore that consumed the harness's JSON.
fn restore_for(dir: &Path, harness_args: &[&str], stdin: &str) -> Result<BTreeSet<String>, Failed> {
    let server = Server::start();
    let mut manifest = String::new();
    for id in IDS {
        let content = format!("stand-in for {id}").into_bytes();
        manifest.push_str(&format!(
            "[artifacts.{id}]\nformat = \"blob\"\nsource = \"url\"\nurl = \"{}\"\nsha256 = \"{}\"\nsize = {}\n\n",
            server.url(id),
            Sha256::of(&content),
            content.len()
        ));
        server.put(id, content);
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let manifest_path = dir.join("manifest.toml");
    std::fs::write(&manifest_path, manifest).map_err(|e| e.to_string())?;

    let mut harness = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    harness
        .arg("--list-required-artifacts")
        .args(harness_args)
        .env(UNDER_TEST, "1");
    let json = run(harness, stdin)?;
    println!("{harness_args:?}: {json}");

    let mut restore = Command::new(AGAR);
    restore
        .arg("artifacts")
        .arg("--manifest")
        .arg(&manifest_path)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(["restore", "--tests-from-stdin", "--retries", "0"])
        .env_remove("AGAR_ARTIFACTS_DIR")
        .env_remove("AGAR_CACHE_DIR");
    run(restore, &json)?;
    Ok(server
        .requests()
        .iter()
        .map(|r| r.path.trim_start_matches('/').to_string())
        .collect())
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn restores_exactly_what_the_selection_needs() -> Result<(), Failed> {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("restore-selected");
    let cases: [(&str, &[&str], &str, &[&str]); 4] = [
        // Names from `cargo nextest list`, one per line.
        (
            "stdin",
            &["--tests-from-stdin"],
            "qemu_linux_direct_debian12_k612::boots\n",
            &["debian12_k612_kernel", "debian12_k612_initrd"],
        ),
        // A libtest filter: the BIOS guest needs its disk's kernel and initramfs and SeaBIOS.
        (
            "filter",
            &["disk_guest"],
            "",
            &["debian12_k61_kernel", "debian12_k61_initrd", "seabios_bios"],
        ),
        (
            "exact",
            &["--exact", "agarvmm_linux_direct_debian12_k61::boots"],
            "",
            &["debian12_k61_kernel", "debian12_k61_initrd"],
        ),
        ("all", &[], "", &IDS),
    ];
    for (what, args, stdin, expected) in cases {
        let fetched = restore_for(&base.join(what), args, stdin)?;
        if fetched != set(expected) {
            return Err(format!("{what}: fetched {fetched:?}, expected {expected:?}").into());
        }
    }
    Ok(())
}

fn main() {
    if std::env::var_os(UNDER_TEST).is_some() {
        agar::test_main();
    }
    let args = Arguments::from_args();
    let trials = vec![Trial::test(
        "restores_exactly_what_the_selection_needs",
        restores_exactly_what_the_selection_needs,
    )];
    libtest_mimic::run(&args, trials).exit();
}
