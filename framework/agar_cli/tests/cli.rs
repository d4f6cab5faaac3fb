//! The `agar` binary, run as real processes against a real HTTP server on 127.0.0.1.

#[path = "../../../artifacts/artifacts/tests/support/http_server.rs"]
mod http_server;

use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Output;
use std::process::Stdio;
use std::time::Duration;

use artifacts::hash::Sha256;
use http_server::Server;

const AGAR: &str = env!("CARGO_BIN_EXE_agar");

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32) as u8 ^ seed)
        .collect()
}

/// A manifest of `url` artifacts in `dir`; returns its path.
fn manifest(dir: &Path, entries: &[(&str, String, &[u8])]) -> PathBuf {
    let mut text = String::new();
    for (name, url, content) in entries {
        text.push_str(&format!(
            "[artifacts.{name}]\nformat = \"blob\"\nsource = \"url\"\nurl = \"{url}\"\nsha256 = \"{}\"\nsize = {}\n\n",
            Sha256::of(content),
            content.len()
        ));
    }
    let path = dir.join("manifest.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn agar(manifest: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(AGAR);
    cmd.arg("artifacts")
        .arg("--manifest")
        .arg(manifest)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env_remove("AGAR_ARTIFACTS_DIR")
        .env_remove("AGAR_CACHE_DIR");
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn eight_concurrent_restores_download_once_and_all_succeed() {
    let server = Server::start();
    let content = data(2_000_000, 1);
    server.put("big", content.clone());
    // ~31 chunks of 64 KiB, 20 ms apart: the transfer lasts long enough for all to overlap.
    server.set_chunk_delay(Duration::from_millis(20));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let m = manifest(dir.path(), &[("big", server.url("big"), &content)]);

    let children: Vec<_> = (0..8)
        .map(|_| {
            agar(&m, &cache, &["restore", "-v"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();

    for out in &outputs {
        assert!(out.status.success(), "{}", text(out));
    }
    let gets: Vec<_> = server.requests();
    assert_eq!(gets.len(), 1, "one transfer for eight processes: {gets:?}");
    let blob = cache
        .join("blobs/sha256")
        .join(Sha256::of(&content).to_string());
    assert_eq!(std::fs::read(&blob).unwrap(), content);
    let downloaded = outputs
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stdout).contains("downloaded"))
        .count();
    assert_eq!(downloaded, 1);
    // The processes really overlapped: some waited on the lock instead of downloading.
    let waited = outputs
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stderr).contains("waiting for another agar process"))
        .count();
    assert!(waited >= 1, "no process waited: {}", text(&outputs[0]));
}

#[test]
fn verify_exits_nonzero_on_corruption_and_restore_fetches_again() {
    let server = Server::start();
    let content = data(100_000, 2);
    server.put("f", content.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let m = manifest(dir.path(), &[("thing", server.url("f"), &content)]);
    assert!(agar(&m, &cache, &["restore"]).status().unwrap().success());
    let clean = agar(&m, &cache, &["verify"]).output().unwrap();
    assert!(clean.status.success(), "{}", text(&clean));

    let blob = cache
        .join("blobs/sha256")
        .join(Sha256::of(&content).to_string());
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[expect(
        clippy::permissions_set_readonly_false,
        reason = "the test corrupts a blob"
    )]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&blob, bytes).unwrap();

    let dirty = agar(&m, &cache, &["verify"]).output().unwrap();
    let fixed = agar(&m, &cache, &["restore"]).output().unwrap();
    let after = agar(&m, &cache, &["verify"]).output().unwrap();

    assert_eq!(dirty.status.code(), Some(1), "{}", text(&dirty));
    assert!(
        String::from_utf8_lossy(&dirty.stdout).contains("1 corrupt"),
        "{}",
        text(&dirty)
    );
    assert!(fixed.status.success(), "{}", text(&fixed));
    assert!(String::from_utf8_lossy(&fixed.stdout).contains("downloaded"));
    assert!(after.status.success(), "{}", text(&after));
    assert_eq!(std::fs::read(&blob).unwrap(), content);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn tests_from_stdin_restores_only_what_the_tests_need() {
    let server = Server::start();
    let (a, b, c) = (data(1000, 3), data(2000, 4), data(3000, 5));
    server.put("a", a.clone());
    server.put("b", b.clone());
    server.put("c", c.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let m = manifest(
        dir.path(),
        &[
            ("need", server.url("a"), &a),
            ("maybe", server.url("b"), &b),
            ("unused", server.url("c"), &c),
            ("broken", server.url("missing"), &c),
        ],
    );
    let run = |json: &str| {
        let mut child = agar(
            &m,
            &cache,
            &["restore", "--tests-from-stdin", "--retries", "0"],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(json.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };

    let ok = run(r#"{"required": ["need"], "optional": ["maybe", "broken"]}"#);
    let bad = run(r#"{"required": ["broken"], "optional": []}"#);
    let garbage = run("not json");

    assert!(ok.status.success(), "{}", text(&ok));
    assert!(String::from_utf8_lossy(&ok.stderr).contains("optional artifact not restored"));
    let requests = server.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert!(paths.contains(&"/a") && paths.contains(&"/b"), "{paths:?}");
    assert!(!paths.contains(&"/c"), "{paths:?}");
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("HTTP 404"),
        "{}",
        text(&bad)
    );
    assert_eq!(garbage.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&garbage.stderr).contains("--list-required-artifacts"));
}

#[test]
fn list_path_and_the_missing_artifact_message() {
    let server = Server::start();
    let content = data(5000, 6);
    server.put("f", content.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let m = manifest(dir.path(), &[("thing", server.url("f"), &content)]);

    let before = agar(&m, &cache, &["list"]).output().unwrap();
    let missing = agar(&m, &cache, &["path", "thing"]).output().unwrap();
    assert!(
        agar(&m, &cache, &["restore", "thing"])
            .status()
            .unwrap()
            .success()
    );
    let after = agar(&m, &cache, &["list", "--json"]).output().unwrap();
    let path = agar(&m, &cache, &["path", "thing"]).output().unwrap();

    assert!(
        String::from_utf8_lossy(&before.stdout).contains("missing"),
        "{}",
        text(&before)
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains(
            "run `cargo run -p agar_cli -- artifacts restore` (or `agar artifacts restore`)"
        ),
        "{}",
        text(&missing)
    );
    let rows: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(rows[0]["name"], "thing");
    assert_eq!(rows[0]["status"], "cached");
    assert_eq!(rows[0]["sha256"], Sha256::of(&content).to_string());
    let printed = PathBuf::from(String::from_utf8_lossy(&path.stdout).trim());
    assert_eq!(std::fs::read(printed).unwrap(), content);
}

#[test]
fn gc_removes_what_the_manifest_no_longer_uses() {
    let server = Server::start();
    let (old, new) = (data(4000, 7), data(4000, 8));
    server.put("old", old.clone());
    server.put("new", new.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let m = manifest(dir.path(), &[("thing", server.url("old"), &old)]);
    assert!(agar(&m, &cache, &["restore"]).status().unwrap().success());
    // The manifest moves on to a new version of the artifact.
    let m = manifest(dir.path(), &[("thing", server.url("new"), &new)]);
    assert!(agar(&m, &cache, &["restore"]).status().unwrap().success());

    let gc = agar(&m, &cache, &["gc"]).output().unwrap();

    assert!(gc.status.success(), "{}", text(&gc));
    assert!(
        String::from_utf8_lossy(&gc.stdout).contains("removed 1 file(s)"),
        "{}",
        text(&gc)
    );
    let blobs = cache.join("blobs/sha256");
    assert!(!blobs.join(Sha256::of(&old).to_string()).exists());
    assert!(blobs.join(Sha256::of(&new).to_string()).exists());
}

#[test]
fn run_starts_agar_vmm_with_the_default_guest_and_returns_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let over = dir.path().join("artifacts");
    std::fs::create_dir(&over).unwrap();
    std::fs::write(over.join("debian12_k61_kernel"), b"kernel").unwrap();
    std::fs::write(over.join("debian12_k61_initrd"), b"initrd").unwrap();
    // A stand-in for agar-vmm that records its arguments and exits like a guest crash (5).
    let vmm = dir.path().join("fake-agar-vmm");
    let args_file = dir.path().join("args");
    std::fs::write(
        &vmm,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > {}\nexit 5\n",
            args_file.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&vmm).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&vmm, perms).unwrap();

    let out = Command::new(AGAR)
        .args(["run", "-p", "2", "-m", "512MB", "--hypervisor", "emu"])
        .env("AGAR_VMM", &vmm)
        .env("AGAR_ARTIFACTS_DIR", &over)
        .env("AGAR_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let args = std::fs::read_to_string(&args_file).unwrap();
    let args: Vec<&str> = args.lines().collect();
    let kernel = over.join("debian12_k61_kernel").display().to_string();
    let initrd = over.join("debian12_k61_initrd").display().to_string();
    let expect = [
        "--kernel",
        kernel.as_str(),
        "--initrd",
        initrd.as_str(),
        "-c",
        "console=ttyS0 agar.poweroff",
        "-p",
        "2",
        "-m",
        "512MB",
        "--hypervisor",
        "emu",
    ];
    assert_eq!(args, expect);
}

#[test]
fn run_without_agar_vmm_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(AGAR)
        .args(["run"])
        .env("AGAR_VMM", dir.path().join("nope"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AGAR_VMM"),
        "{}",
        text(&out)
    );
}

/// A stand-in for agar-vmm that writes its arguments, one per line, to `args` and exits 2
/// (what the real one does for a flag that has not landed).
fn fake_vmm(dir: &Path) -> (PathBuf, PathBuf) {
    let vmm = dir.join("fake-agar-vmm");
    let args_file = dir.join("args");
    std::fs::write(
        &vmm,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > {}\necho 'agar-vmm: --pcat is not supported yet' >&2\nexit 2\n",
            args_file.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&vmm).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&vmm, perms).unwrap();
    (vmm, args_file)
}

#[test]
fn run_pcat_boots_the_pinned_bios_disk_or_iso_from_ide() {
    let dir = tempfile::tempdir().unwrap();
    let over = dir.path().join("artifacts");
    std::fs::create_dir(&over).unwrap();
    std::fs::write(over.join("debian12_k61_bios_vhd"), b"disk").unwrap();
    std::fs::write(over.join("debian12_k61_bios_iso"), b"iso").unwrap();
    std::fs::write(over.join("seabios_bios"), b"bios").unwrap();
    let (vmm, args_file) = fake_vmm(dir.path());
    let run = |args: &[&str]| {
        let out = Command::new(AGAR)
            .arg("run")
            .args(args)
            .env("AGAR_VMM", &vmm)
            .env("AGAR_ARTIFACTS_DIR", &over)
            .env("AGAR_CACHE_DIR", dir.path().join("cache"))
            .output()
            .unwrap();
        // agar-vmm's exit code and message come through.
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--pcat is not supported yet"),
            "{}",
            text(&out)
        );
        std::fs::read_to_string(&args_file).unwrap()
    };
    let disk = format!(
        "memdiff:file:{}",
        over.join("debian12_k61_bios_vhd").display()
    );
    let iso = format!(
        "file:{};ro,dvd",
        over.join("debian12_k61_bios_iso").display()
    );

    // The pinned SeaBIOS, not whatever the host's seabios package holds.
    let bios = format!("--pcat-firmware\n{}", over.join("seabios_bios").display());
    assert_eq!(run(&["--pcat"]), format!("--pcat\n{bios}\n--ide\n{disk}\n"));
    assert_eq!(
        run(&["--firmware", "pcat", "-p", "2"]),
        format!("--pcat\n{bios}\n-p\n2\n--ide\n{disk}\n")
    );
    assert_eq!(
        run(&["--pcat", "--iso"]),
        format!("--pcat\n{bios}\n--ide\n{iso}\n")
    );

    let out = Command::new(AGAR)
        .args(["run", "--iso"])
        .env("AGAR_VMM", &vmm)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("add --pcat"),
        "{}",
        text(&out)
    );
}

#[test]
fn run_pcat_with_a_command_line_builds_and_caches_a_disk_carrying_it() {
    let dir = tempfile::tempdir().unwrap();
    let over = dir.path().join("artifacts");
    std::fs::create_dir(&over).unwrap();
    let mut kernel = vec![0u8; 8192];
    kernel[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(over.join("debian12_k61_kernel"), kernel).unwrap();
    let mut initrd = artifacts::recipes::cpio::Archive::new();
    initrd.add(
        "init",
        0o755,
        artifacts::recipes::cpio::Node::File(b"#!/bin/sh\n".to_vec()),
    );
    std::fs::write(over.join("debian12_k61_initrd"), initrd.to_bytes()).unwrap();
    std::fs::write(over.join("seabios_bios"), b"bios").unwrap();
    let (vmm, args_file) = fake_vmm(dir.path());
    let cache = dir.path().join("cache");
    let run = || {
        let out = Command::new(AGAR)
            .args(["run", "--pcat", "-c", "console=ttyS0 agar.modules=ata_piix"])
            .env("AGAR_VMM", &vmm)
            .env("AGAR_ARTIFACTS_DIR", &over)
            .env("AGAR_CACHE_DIR", &cache)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let args = std::fs::read_to_string(&args_file).unwrap();
        let lines: Vec<String> = args.lines().map(str::to_owned).collect();
        let bios = over.join("seabios_bios").display().to_string();
        assert_eq!(
            lines[..4],
            ["--pcat", "--pcat-firmware", bios.as_str(), "--ide"],
            "{args}"
        );
        PathBuf::from(lines[4].strip_prefix("memdiff:file:").unwrap())
    };

    let first = run();
    let second = run();

    assert_eq!(first, second, "the second run reuses the cached disk");
    assert!(first.starts_with(cache.join("blobs/sha256")), "{first:?}");
    // The disk's syslinux.cfg carries the command line (read back through qemu-img + mtools).
    let raw = dir.path().join("disk.img");
    let convert = Command::new("qemu-img")
        .args(["convert", "-f", "vpc", "-O", "raw"])
        .arg(&first)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(convert.status.success(), "{convert:?}");
    let cfg = Command::new("mtype")
        .arg("-i")
        .arg(format!("{}@@1M", raw.display()))
        .arg("::/syslinux.cfg")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&cfg.stdout)
            .contains("APPEND initrd=/initrd.img console=ttyS0 agar.modules=ata_piix\n"),
        "{cfg:?}"
    );
}

#[test]
fn concurrent_runs_needing_the_same_bios_disk_build_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let over = dir.path().join("artifacts");
    std::fs::create_dir(&over).unwrap();
    let mut kernel = vec![0u8; 1 << 20];
    kernel[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(over.join("debian12_k61_kernel"), kernel).unwrap();
    let mut initrd = artifacts::recipes::cpio::Archive::new();
    initrd.add(
        "init",
        0o755,
        artifacts::recipes::cpio::Node::File(vec![b'#'; 1 << 20]),
    );
    std::fs::write(over.join("debian12_k61_initrd"), initrd.to_bytes()).unwrap();
    std::fs::write(over.join("seabios_bios"), b"bios").unwrap();
    let (vmm, _) = fake_vmm(dir.path());
    let cache = dir.path().join("cache");

    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(AGAR)
                .args(["-v", "run", "--pcat", "-c", "console=ttyS0 agar.poweroff"])
                .env("AGAR_VMM", &vmm)
                .env("AGAR_ARTIFACTS_DIR", &over)
                .env("AGAR_CACHE_DIR", &cache)
                .env_remove("RUST_LOG")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();

    let mut builds = 0;
    for out in &outs {
        assert_eq!(out.status.code(), Some(2), "{}", text(out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        builds += stderr.matches("built a BIOS boot medium").count();
    }
    assert_eq!(builds, 1, "{}", outs.iter().map(text).collect::<String>());
    let blobs = std::fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 1);
    assert_eq!(std::fs::read_dir(cache.join("tmp")).unwrap().count(), 0);
}
