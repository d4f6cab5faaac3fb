//! The agar-vmm binary's exit statuses and one-line errors, run as a process.

use std::process::Command;
use std::time::Duration;
use std::time::Instant;

fn agar_vmm(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agar-vmm"))
        .args(args)
        .env_remove("AGAR_LOG")
        .output()
        .expect("agar-vmm runs");
    (
        out.status.code().expect("exited normally"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A 64-bit ELF "kernel" whose entry is `ud2` (a triple fault with no IDT).
fn tiny_elf(tag: &str) -> std::path::PathBuf {
    let code = [0x0f, 0x0b];
    let mut e = vec![0u8; 0x40 + 56];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2;
    e[5] = 1;
    e[6] = 1;
    e[0x10] = 2; // ET_EXEC
    e[0x12] = 62; // x86-64
    e[0x18..0x20].copy_from_slice(&0x100_0000u64.to_le_bytes());
    e[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
    e[0x36] = 56;
    e[0x38] = 1;
    let ph = 0x40;
    e[ph] = 1; // PT_LOAD
    e[ph + 8..ph + 16].copy_from_slice(&(0x78u64).to_le_bytes());
    e[ph + 16..ph + 24].copy_from_slice(&0x100_0000u64.to_le_bytes());
    e[ph + 24..ph + 32].copy_from_slice(&0x100_0000u64.to_le_bytes());
    e[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    e[ph + 40..ph + 48].copy_from_slice(&(code.len() as u64).to_le_bytes());
    e.extend_from_slice(&code);
    let p = std::env::temp_dir().join(format!("agar-exit-codes-{}-{tag}.elf", std::process::id()));
    std::fs::write(&p, e).unwrap();
    p
}

fn assert_one_line_error(code: i32, stderr: &str, want_code: i32, needle: &str) {
    assert_eq!(code, want_code, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("agar-vmm: "), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} in {stderr:?}");
}

#[test]
fn bad_command_lines_exit_2_with_one_line() {
    let elf = tiny_elf("bad");
    let k = elf.to_str().unwrap();
    for (args, needle) in [
        (vec!["-p", "0", "--kernel", k], "--processors"),
        (vec!["-m", "0", "--kernel", k], "memory size 0"),
        (vec!["-m", "lots", "--kernel", k], "--memory"),
        (
            vec!["--kernel", "/nonexistent/vmlinuz"],
            "cannot read kernel",
        ),
        (
            vec!["--kernel", "/etc/hostname"],
            "not a bzImage or an ELF vmlinux",
        ),
        (
            vec!["--kernel", k, "--initrd", "/nonexistent/initrd"],
            "cannot read initrd",
        ),
        (vec![], "nothing to boot"),
        (vec!["--kernel", k, "--frobnicate"], "--frobnicate"),
        (vec!["--uefi"], "--uefi is not supported yet"),
        (
            vec!["--pcat", "--pcat-firmware", "/nonexistent/bios.bin"],
            "cannot read --pcat-firmware",
        ),
        (
            vec!["--pcat", "--pcat-firmware", "/etc/hostname"],
            "firmware image is",
        ),
        (
            vec!["--kernel", k, "--ide", "file:x.vhd"],
            "--ide requires --pcat",
        ),
        (vec!["--kernel", k, "--disk", "mem:1G"], "--disk needs --hv"),
        (vec!["--kernel", k, "--gfx"], "--gfx is not supported yet"),
        (vec!["--kernel", k, "--nic"], "--nic is not supported yet"),
        (vec!["--kernel", k, "--vtl2"], "--vtl2 is not supported yet"),
        (vec!["--igvm", "x.bin"], "--igvm is not supported yet"),
        (vec!["--kernel", k, "-c", &"x".repeat(4096)], "command line"),
    ] {
        let (code, err) = agar_vmm(&args);
        assert_one_line_error(code, &err, 2, needle);
    }
    let _ = std::fs::remove_file(elf);
}

#[test]
fn help_and_version_exit_0() {
    let out = Command::new(env!("CARGO_BIN_EXE_agar-vmm"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--kernel",
        "--initrd",
        "--cmdline",
        "--processors",
        "--memory",
        "--hypervisor",
        "--com1",
        "--firmware-log",
    ] {
        assert!(help.contains(flag), "{flag} in --help");
    }
    assert!(!help.contains("--no-kvm-check"), "hidden flag stays hidden");
}

/// `--hypervisor kvm` with a kernel either runs it (a host whose KVM passes the self-check;
/// this kernel triple-faults at once: exit 4) or refuses within 60 s naming the reason.
#[test]
fn kvm_runs_or_refuses_a_kernel_quickly() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("skipped: no /dev/kvm");
        return;
    }
    let elf = tiny_elf("kvm");
    let start = Instant::now();
    let (code, err) = agar_vmm(&[
        "--hypervisor",
        "kvm",
        "--kernel",
        elf.to_str().unwrap(),
        "--com1",
        "none",
    ]);
    assert!(start.elapsed() < Duration::from_secs(60));
    match code {
        1 => assert!(
            err.contains("kvm cannot run this guest: ") && err.contains("self-check"),
            "{err}"
        ),
        4 => assert!(
            err.trim_end()
                .ends_with("agar-vmm: halt: triple fault at rip=0x1000000 (vp 0)"),
            "{err}"
        ),
        other => panic!("exit {other}: {err}"),
    }
    let _ = std::fs::remove_file(elf);
}

/// With the self-check skipped, a kernel-mode program runs on KVM everywhere: the tiny kernel
/// triple-faults, agar-vmm exits 4 and its last line names the fault.
#[test]
fn triple_fault_exits_4_with_its_last_line() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("skipped: no /dev/kvm");
        return;
    }
    let elf = tiny_elf("triple");
    let (code, err) = agar_vmm(&[
        "--hypervisor",
        "kvm",
        "--no-kvm-check",
        "--kernel",
        elf.to_str().unwrap(),
        "--com1",
        "none",
        "-m",
        "64MB",
    ]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(
        err.lines().last(),
        Some("agar-vmm: halt: triple fault at rip=0x1000000 (vp 0)")
    );
    let _ = std::fs::remove_file(elf);
}
