//! The harness's command line, end to end: this binary registers a small matrix and, as a
//! test, runs *itself* as the harness under test (`AGAR_HARNESS_UNDER_TEST=1`) with the
//! flags cargo, nextest and the artifact tooling use, checking what it prints.
//!
//! Nothing here boots a VM: the registered tests are only listed.

use std::io::Write;
use std::process::Command;
use std::process::Stdio;

use agar::VmBuilder;
use agar::vm_test;
use libtest_mimic::Arguments;
use libtest_mimic::Failed;
use libtest_mimic::Trial;
use serde_json::Value;

#[vm_test(linux_direct(debian12_k61), qemu_linux_direct(debian12_k612))]
async fn boots(_vm: VmBuilder) -> anyhow::Result<()> {
    Ok(())
}

#[vm_test(
    qemu_linux_direct(debian12_k61),
    artifacts(SEABIOS_BIOS),
    ignore(reason = "kept for the listing test", qemu_linux_direct(debian12_k612))
)]
async fn needs_firmware(_vm: VmBuilder) -> anyhow::Result<()> {
    Ok(())
}

#[vm_test(qemu_pcat(ide(debian12)))]
async fn disk_guest(_vm: VmBuilder) -> anyhow::Result<()> {
    Ok(())
}

#[vm_test(qemu_uefi(ide(debian12)))]
async fn uefi_guest(_vm: VmBuilder) -> anyhow::Result<()> {
    Ok(())
}

#[vm_test(agarvmm_openhcl(uefi(vmbus(debian12))))]
async fn openhcl_guest(_vm: VmBuilder) -> anyhow::Result<()> {
    Ok(())
}

const UNDER_TEST: &str = "AGAR_HARNESS_UNDER_TEST";

fn harness(args: &[&str], stdin: Option<&str>) -> Result<String, Failed> {
    harness_env(args, stdin, &[])
}

fn harness_env(
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &std::path::Path)],
) -> Result<String, Failed> {
    let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(args)
        .env(UNDER_TEST, "1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut input = child.stdin.take().ok_or("no stdin")?;
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .map_err(|e| e.to_string())?;
    drop(input);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn artifacts(args: &[&str], stdin: Option<&str>) -> Result<(Vec<String>, Vec<String>), Failed> {
    let json: Value = serde_json::from_str(&harness(args, stdin)?).map_err(|e| e.to_string())?;
    let list = |k: &str| -> Vec<String> {
        json[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok((list("required"), list("optional")))
}

fn check(cond: bool, msg: impl Into<String>) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(msg.into().into()) }
}

fn lists_every_cell_in_libtest_format() -> Result<(), Failed> {
    let all = harness(&["--list", "--format", "terse"], None)?;
    let expected = [
        "agarvmm_linux_direct_debian12_k61::boots: test",
        "agarvmm_openhcl_uefi_vmbus_debian12::openhcl_guest: test",
        "qemu_linux_direct_debian12_k612::boots: test",
        "qemu_linux_direct_debian12_k612::needs_firmware: test",
        "qemu_linux_direct_debian12_k61::boots: test",
        "qemu_linux_direct_debian12_k61::needs_firmware: test",
        "qemu_pcat_ide_debian12::disk_guest: test",
        "qemu_uefi_ide_debian12::uefi_guest: test",
    ];
    check(
        all.lines().collect::<Vec<_>>() == expected,
        format!("--list printed:\n{all}"),
    )?;
    // Ignored: OpenHCL on agar-vmm (not yet, and no IGVM artifact), the explicit ignore, and
    // UEFI (no UEFI boot medium yet). Never dropped, listed with --ignored.
    let ignored = harness(&["--list", "--format", "terse", "--ignored"], None)?;
    check(
        ignored.lines().collect::<Vec<_>>()
            == [
                "agarvmm_openhcl_uefi_vmbus_debian12::openhcl_guest: test",
                "qemu_linux_direct_debian12_k612::needs_firmware: test",
                "qemu_uefi_ide_debian12::uefi_guest: test",
            ],
        format!("--list --ignored printed:\n{ignored}"),
    )
}

fn terse(args: &[&str]) -> Result<Vec<String>, Failed> {
    let mut a = vec!["--list", "--format", "terse"];
    a.extend_from_slice(args);
    Ok(harness(&a, None)?
        .lines()
        .map(|l| l.trim_end_matches(": test").to_string())
        .collect())
}

/// The selection flags nextest and cargo pass, as libtest applies them.
fn selection_flags_select_like_libtest() -> Result<(), Failed> {
    let all = terse(&[])?;
    check(
        terse(&["--include-ignored"])? == all,
        "--include-ignored lists everything",
    )?;
    check(
        terse(&["k612"])?
            == [
                "qemu_linux_direct_debian12_k612::boots",
                "qemu_linux_direct_debian12_k612::needs_firmware",
            ],
        "a substring filter",
    )?;
    check(
        terse(&["k612", "--ignored"])? == ["qemu_linux_direct_debian12_k612::needs_firmware"],
        "a filter and --ignored",
    )?;
    check(
        terse(&["--exact", "qemu_linux_direct_debian12_k61::boots"])?
            == ["qemu_linux_direct_debian12_k61::boots"],
        "--exact",
    )?;
    check(
        terse(&["--exact", "boots"])?.is_empty(),
        "--exact does not match a part of a name",
    )?;
    let skipped = terse(&["--skip", "qemu_", "--skip", "openhcl"])?;
    check(
        skipped == ["agarvmm_linux_direct_debian12_k61::boots"],
        format!("--skip: {skipped:?}"),
    )
}

/// Runs tests the way nextest does (`--exact <name> --nocapture`, plus `--ignored` for
/// `--run-ignored`), with stand-in artifact files: the bodies only return `Ok`.
fn runs_one_test_by_exact_name() -> Result<(), Failed> {
    let base = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("harness-cli-run");
    let _ = std::fs::remove_dir_all(&base);
    let arts = base.join("artifacts");
    let out = base.join("out");
    std::fs::create_dir_all(&arts).map_err(|e| e.to_string())?;
    for a in ["debian12_k61_kernel", "debian12_k61_initrd", "ovmf_fd"] {
        std::fs::write(arts.join(a), a).map_err(|e| e.to_string())?;
    }
    let env = [
        ("AGAR_ARTIFACTS_DIR", arts.as_path()),
        ("AGAR_TEST_OUTPUT", out.as_path()),
    ];
    let name = "qemu_linux_direct_debian12_k61::boots";
    let stdout = harness_env(&["--exact", name, "--nocapture"], None, &env)?;
    check(
        stdout.contains(&format!("test {name} ... "))
            && stdout.contains("1 passed; 0 failed; 0 ignored; 0 measured; 7 filtered out"),
        format!("--exact run printed:\n{stdout}"),
    )?;
    let dir = out.join(agar::output::test_dir_name(name));
    check(dir.join("agar.passed").is_file(), "agar.passed written")?;
    let attached: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("[[ATTACHMENT|")?.strip_suffix("]]"))
        .collect();
    check(
        attached.contains(&dir.join("agar.jsonl").to_str().unwrap_or_default())
            && attached.contains(&dir.join("agar.passed").to_str().unwrap_or_default()),
        format!("attachment lines: {attached:?}"),
    )?;

    // An ignored cell is reported ignored, and runs with --ignored (nextest
    // --run-ignored only) or --include-ignored.
    let uefi = "qemu_uefi_ide_debian12::uefi_guest";
    let stdout = harness_env(&["--exact", uefi], None, &env)?;
    check(
        stdout.contains(&format!("test {uefi} ... ignored"))
            && stdout.contains("0 passed; 0 failed; 1 ignored"),
        format!("ignored cell printed:\n{stdout}"),
    )?;
    check(
        !out.join(agar::output::test_dir_name(uefi)).exists(),
        "an ignored test leaves no output folder",
    )?;
    for flag in ["--ignored", "--include-ignored"] {
        let stdout = harness_env(&["--exact", uefi, flag], None, &env)?;
        check(
            stdout.contains("1 passed; 0 failed; 0 ignored"),
            format!("{flag} run printed:\n{stdout}"),
        )?;
    }
    Ok(())
}

fn matrix_json_gives_the_reasons() -> Result<(), Failed> {
    let m: Value =
        serde_json::from_str(&harness(&["--list-matrix"], None)?).map_err(|e| e.to_string())?;
    let tests = m["tests"].as_array().ok_or("no tests")?;
    let reason = |name: &str| -> Option<String> {
        tests
            .iter()
            .find(|t| t["name"] == name)
            .and_then(|t| t["ignored"].as_str().map(String::from))
    };
    let openhcl = reason("agarvmm_openhcl_uefi_vmbus_debian12::openhcl_guest").unwrap_or_default();
    check(
        openhcl.contains("needs artifact `openhcl_x64_igvm`")
            && openhcl.contains("agar-vmm cannot load IGVM files"),
        format!("every reason, joined: {openhcl}"),
    )?;
    check(
        reason("qemu_linux_direct_debian12_k612::needs_firmware").as_deref()
            == Some("kept for the listing test"),
        "explicit ignore reason",
    )?;
    check(
        reason("qemu_uefi_ide_debian12::uefi_guest")
            .is_some_and(|r| r.contains("no UEFI-bootable disk yet")),
        "capability reason",
    )?;
    check(
        reason("qemu_linux_direct_debian12_k61::boots").is_none(),
        "runnable cell",
    )?;
    check(
        reason("qemu_pcat_ide_debian12::disk_guest").is_none(),
        "runnable disk cell",
    )
}

fn required_artifacts_follow_the_selection() -> Result<(), Failed> {
    let k61 = ["debian12_k61_initrd", "debian12_k61_kernel"]
        .map(String::from)
        .to_vec();
    let k612 = ["debian12_k612_initrd", "debian12_k612_kernel"]
        .map(String::from)
        .to_vec();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    // Everything: what runs is required; what only ignored cells need is optional.
    let (req, opt) = artifacts(&["--list-required-artifacts"], None)?;
    check(
        req == sorted([k612.clone(), k61.clone(), vec!["seabios_bios".into()]].concat()),
        format!("all: required {req:?}"),
    )?;
    check(
        opt == ["openhcl_x64_igvm", "ovmf_fd"],
        format!("all: optional {opt:?}"),
    )?;

    // A filter, as libtest applies it; the ignored k612 test's extra artifact is optional.
    let (req, opt) = artifacts(&["--list-required-artifacts", "k612"], None)?;
    check(
        req == k612 && opt == ["seabios_bios"],
        format!("k612: {req:?} {opt:?}"),
    )?;

    // --exact: one test, with its extra artifact.
    let (req, _) = artifacts(
        &[
            "--list-required-artifacts",
            "--exact",
            "qemu_linux_direct_debian12_k61::needs_firmware",
        ],
        None,
    )?;
    check(
        req == sorted([k61.clone(), vec!["seabios_bios".into()]].concat()),
        format!("exact: {req:?}"),
    )?;

    // A disk guest needs what its boot disk is assembled from, and its firmware.
    let (req, _) = artifacts(&["--list-required-artifacts", "disk_guest"], None)?;
    check(
        req == sorted([k61.clone(), vec!["seabios_bios".into()]].concat()),
        format!("disk guest: {req:?}"),
    )?;

    // An ignored test's artifacts become required once ignored tests are run.
    let (req, opt) = artifacts(
        &["--list-required-artifacts", "--ignored", "uefi_guest"],
        None,
    )?;
    check(
        req == sorted([k61.clone(), vec!["ovmf_fd".into()]].concat()) && opt.is_empty(),
        format!("ignored: {req:?} {opt:?}"),
    )?;

    // The tooling path: names from `cargo nextest list`, one per line.
    let (req, opt) = artifacts(
        &["--list-required-artifacts", "--tests-from-stdin"],
        Some(
            "qemu_linux_direct_debian12_k612::boots\n\nqemu_linux_direct_debian12_k612::needs_firmware\n",
        ),
    )?;
    check(req == k612, format!("stdin required {req:?}"))?;
    check(
        opt == ["seabios_bios"],
        format!("stdin: the ignored test's extra artifact is optional: {opt:?}"),
    )?;
    let (req, opt) = artifacts(
        &["--list-required-artifacts", "--tests-from-stdin"],
        Some(""),
    )?;
    check(
        req.is_empty() && opt.is_empty(),
        "empty stdin selects nothing",
    )
}

fn main() {
    if std::env::var_os(UNDER_TEST).is_some() {
        agar::test_main();
    }
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test(
            "lists_every_cell_in_libtest_format",
            lists_every_cell_in_libtest_format,
        ),
        Trial::test(
            "selection_flags_select_like_libtest",
            selection_flags_select_like_libtest,
        ),
        Trial::test("runs_one_test_by_exact_name", runs_one_test_by_exact_name),
        Trial::test(
            "matrix_json_gives_the_reasons",
            matrix_json_gives_the_reasons,
        ),
        Trial::test(
            "required_artifacts_follow_the_selection",
            required_artifacts_follow_the_selection,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
