//! The Debian 12 kernels and agar initramfs images boot under QEMU (TCG) and follow the
//! guest contract (docs/src/guest-contract.md).
//!
//! Needs `qemu-system-x86_64` and a restored cache: run `cargo run -p agar_cli -- artifacts
//! restore` first. Like every test, these never download or build artifacts themselves.

use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

use artifacts::Artifact;
use artifacts::Resolver;
use artifacts::hash::Sha256;
use artifacts::ids;
use artifacts::ids::Initrd;
use artifacts::ids::Kernel;
use artifacts::recipes::cpio;

/// Generous: TCG on a shared 2-core machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

struct Boot {
    console: String,
    exit_code: Option<i32>,
}

fn paths(kernel: Artifact<Kernel>, initrd: Artifact<Initrd>) -> (PathBuf, PathBuf) {
    let resolver = Resolver::from_env().unwrap();
    match resolver.resolve_all([kernel.id(), initrd.id()]) {
        Ok(p) => (p[0].clone(), p[1].clone()),
        Err(e) => panic!("{e}"),
    }
}

/// Boots under QEMU TCG; after `agar-init: ready`, types `input` on the console.
fn boot(kernel: &Path, initrd: &Path, cmdline: &str, input: Option<&str>) -> Boot {
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "pc",
            "-accel",
            "tcg",
            "-m",
            "256",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(cmdline)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 is installed (apt-get install qemu-system-x86)");
    let stdout = child.stdout.take().unwrap();
    // Held open until QEMU exits: EOF on its stdin would end the console input.
    let mut stdin = child.stdin.take();
    let mut pending_input = input;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut console = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let line = line.trim_end_matches('\r');
                if line == "agar-init: ready"
                    && let (Some(text), Some(pipe)) = (pending_input.take(), stdin.as_mut())
                {
                    // Give the shell a moment to start reading the console.
                    std::thread::sleep(Duration::from_secs(2));
                    pipe.write_all(text.as_bytes()).unwrap();
                    pipe.flush().unwrap();
                }
                console.push_str(line);
                console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no power-off within {BOOT_TIMEOUT:?}; console:\n{console}");
            }
        }
    }
    let status = child.wait().unwrap();
    Boot {
        console,
        exit_code: status.code(),
    }
}

fn lines(console: &str) -> Vec<&str> {
    console.lines().collect()
}

fn assert_smoke(kernel: Artifact<Kernel>, initrd: Artifact<Initrd>, release_prefix: &str) {
    let (k, i) = paths(kernel, initrd);
    let b = boot(
        &k,
        &i,
        "console=ttyS0 agar.poweroff agar.modules=ata_piix,sd_mod,scsi_transport_fc,ata_generic,amd-uncore,no_such_module",
        None,
    );
    let l = lines(&b.console);
    let ready = l.iter().position(|x| *x == "agar-init: ready");
    assert!(ready.is_some(), "no readiness marker:\n{}", b.console);
    let ready = ready.unwrap_or_default();
    // amd-uncore is built into both kernels (modules.builtin): it counts as loaded.
    for loaded in [
        "pvpanic-mmio",
        "ata_piix",
        "sd_mod",
        "scsi_transport_fc",
        "ata_generic",
        "amd-uncore",
    ] {
        let want = format!("agar-init: loaded {loaded}");
        let at = l.iter().position(|x| *x == want);
        assert!(
            at.is_some_and(|a| a < ready),
            "{want} before ready:\n{}",
            b.console
        );
    }
    assert!(
        l.contains(&"agar-init: failed no_such_module"),
        "{}",
        b.console
    );
    // `uname -r` follows the marker.
    assert!(
        l.get(ready + 1)
            .is_some_and(|x| x.starts_with(release_prefix)),
        "{}",
        b.console
    );
    assert!(b.console.contains("reboot: Power down"), "{}", b.console);
    assert_eq!(b.exit_code, Some(0));
}

#[test]
fn debian12_k61_boots_to_ready_loads_modules_and_powers_off() {
    assert_smoke(ids::DEBIAN12_K61_KERNEL, ids::DEBIAN12_K61_INITRD, "6.1.0-");
}

#[test]
fn debian12_k612_boots_to_ready_loads_modules_and_powers_off() {
    assert_smoke(
        ids::DEBIAN12_K612_KERNEL,
        ids::DEBIAN12_K612_INITRD,
        "6.12.",
    );
}

#[test]
fn appended_agent_archive_is_started_on_the_agent_device_and_restarted() {
    let (k, i) = paths(ids::DEBIAN12_K61_KERNEL, ids::DEBIAN12_K61_INITRD);
    // The framework appends a second newc archive with /sbin/agar-agent; this one is a
    // script that exits once (to be restarted) and powers the VM off the second time.
    let agent = "#!/bin/sh\n\
        if [ -e /tmp/agent-ran ]; then echo \"agent restarted on $1\"; poweroff -f; fi\n\
        touch /tmp/agent-ran\n\
        echo \"agent first run on $1\"\n\
        exit 3\n";
    let mut extra = cpio::Archive::new();
    extra.add(
        "sbin/agar-agent",
        0o755,
        cpio::Node::File(agent.as_bytes().to_vec()),
    );
    let mut initrd = std::fs::read(&i).unwrap();
    initrd.extend_from_slice(&extra.to_bytes());
    let dir = tempfile::tempdir().unwrap();
    let combined = dir.path().join("initrd-with-agent");
    std::fs::write(&combined, initrd).unwrap();

    let b = boot(&k, &combined, "console=ttyS0 agar.agent=/dev/ttyS1", None);

    let l = lines(&b.console);
    assert!(l.contains(&"agar-init: ready"), "{}", b.console);
    assert!(
        l.contains(&"agent first run on /dev/ttyS1"),
        "{}",
        b.console
    );
    assert!(
        l.contains(&"agar-init: agent exited with status 3; restarting"),
        "{}",
        b.console
    );
    assert!(
        l.contains(&"agent restarted on /dev/ttyS1"),
        "{}",
        b.console
    );
    assert_eq!(b.exit_code, Some(0));
}

#[test]
fn without_agent_or_poweroff_a_console_shell_runs_and_exit_powers_off() {
    let (k, i) = paths(ids::DEBIAN12_K61_KERNEL, ids::DEBIAN12_K61_INITRD);

    let b = boot(
        &k,
        &i,
        "console=ttyS0",
        Some("echo shell-says-$((6*7))\nexit\n"),
    );

    assert!(b.console.contains("shell-says-42"), "{}", b.console);
    assert!(b.console.contains("reboot: Power down"), "{}", b.console);
    assert_eq!(b.exit_code, Some(0));
}

#[test]
fn initramfs_rebuilt_from_the_cached_packages_is_byte_identical() {
    // Determinism: the recipe run again on the same packages gives the bytes in the cache.
    let resolver = Resolver::from_env().unwrap();
    let cache = resolver.cache();
    let name = ids::DEBIAN12_K61_INITRD.name();
    let record = cache.artifact_ref(name).unwrap().unwrap_or_else(|| {
        panic!("{name} is not restored; run `cargo run -p agar_cli -- artifacts restore`")
    });
    let deb = |i: usize| {
        let d = &record.debs[i];
        cache
            .blob_if_present(&d.sha256, d.size)
            .unwrap_or_else(|| panic!("{} {} is not in the cache", d.package, d.version))
    };
    let artifacts::manifest::Source::Build(artifacts::manifest::Recipe::Initramfs {
        modules, ..
    }) = resolver.catalog().manifest.get(name).unwrap().source()
    else {
        panic!("{name} is not an initramfs recipe")
    };

    let built = artifacts::recipes::initramfs::build(&deb(0), &deb(1), modules).unwrap();

    assert_eq!(Sha256::of(&built.bytes), record.sha256);
    assert!(built.modules.iter().any(|m| m == "hv_storvsc"));
    assert!(
        built.modules.iter().any(|m| m == "scsi_common"),
        "dependencies are included"
    );
}
