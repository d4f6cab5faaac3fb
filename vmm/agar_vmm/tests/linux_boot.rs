//! The Debian 6.1 and 6.12 cloud kernels with the busybox initramfs boot to user space under
//! `agar-vmm -p 2 -m 300MB` with the default `--hypervisor auto` (on hosts whose KVM cannot run
//! Linux user space, that is agar's own CPU), answer on the console shell, and end with the
//! documented exit status and last line: `poweroff -f` exits 0, a kernel panic exits 5 naming
//! the guest crash.
//!
//! Needs the artifacts in the cache (`agar artifacts restore`); a missing artifact fails the
//! test with the resolver's message.

use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::process::Command;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

const READY: &str = "agar-init: ready";
/// A boot that does not reach user space by then is a failure (the slowest seen on a loaded
/// 2-core host is about 40 s).
const BOOT_LIMIT: Duration = Duration::from_secs(240);

fn artifact(name: &str) -> std::path::PathBuf {
    let r = artifacts::Resolver::from_env().expect("artifact resolver");
    r.resolve_name(name)
        .unwrap_or_else(|e| panic!("artifact {name}: {e}"))
}

struct Run {
    status: i32,
    console: Vec<String>,
    stderr: String,
}

impl Run {
    /// Exit status, stderr and the console's last 30 lines, for assertion messages.
    fn context(&self) -> String {
        format!(
            "status {}; stderr:\n{}\nconsole tail:\n{}",
            self.status,
            self.stderr,
            self.console[self.console.len().saturating_sub(30)..].join("\n")
        )
    }
}

/// Boots `kernel` (`debian12_k61` or `debian12_k612`) with the shell on the console; once the
/// readiness marker is out, types `commands` into the shell. Returns when agar-vmm exits.
fn boot(kernel: &str, commands: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agar-vmm"))
        .args(["-p", "2", "-m", "300MB", "--kernel"])
        .arg(artifact(&format!("{kernel}_kernel")))
        .arg("--initrd")
        .arg(artifact(&format!("{kernel}_initrd")))
        .args(["-c", "console=ttyS0", "--log", "info"])
        .env_remove("AGAR_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agar-vmm starts");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut console = Vec::new();
    let mut typed = false;
    loop {
        let left = BOOT_LIMIT.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_string();
                if !typed && line.contains(READY) {
                    typed = true;
                    // The shell starts right after the marker; the tty keeps what arrives
                    // before it reads.
                    stdin.write_all(commands.as_bytes()).expect("console input");
                    stdin.flush().unwrap();
                }
                console.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{kernel}: no exit within {BOOT_LIMIT:?}; console tail:\n{}",
                    console[console.len().saturating_sub(20)..].join("\n")
                );
            }
        }
    }
    drop(stdin);
    let status = child.wait().unwrap().code().expect("exited normally");
    Run {
        status,
        console,
        stderr: err_thread.join().unwrap(),
    }
}

/// Readiness, 2 CPUs, MemTotal for 300 MB of RAM, `poweroff -f` -> exit 0.
fn boots_and_powers_off(kernel: &str) {
    let run = boot(
        kernel,
        "echo cpus=$(grep -c ^processor /proc/cpuinfo); grep MemTotal /proc/meminfo; poweroff -f\n",
    );
    let ctx = || run.context();
    assert!(run.console.iter().any(|l| l == READY), "{}", ctx());
    assert!(
        run.stderr.contains("hypervisor: "),
        "agar-vmm names the backend it picked: {}",
        ctx()
    );
    assert!(
        run.console.iter().any(|l| l.ends_with("cpus=2")),
        "2 CPUs in /proc/cpuinfo: {}",
        ctx()
    );
    let mem_kib: u64 = run
        .console
        .iter()
        .find_map(|l| {
            let rest = &l[l.find("MemTotal:")? + "MemTotal:".len()..];
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("MemTotal line: {}", ctx()));
    // 300 MB of RAM (286 MiB) less what the kernel keeps for itself (its image, the memmap,
    // reserved ranges): between 200 and 300 MiB.
    assert!(
        (200 * 1024..300 * 1024).contains(&mem_kib),
        "MemTotal {mem_kib} kB: {}",
        ctx()
    );
    assert_eq!(run.status, 0, "{}", ctx());
    assert_eq!(
        run.stderr.lines().last(),
        Some("agar-vmm: halt: power off"),
        "{}",
        ctx()
    );
}

/// A kernel panic (sysrq crash) reaches agar-vmm through pvpanic: exit 5, last line naming it.
fn panic_exits_5(kernel: &str) {
    let run = boot(kernel, "echo c > /proc/sysrq-trigger\n");
    let ctx = || run.context();
    assert!(
        run.console
            .iter()
            .any(|l| l.contains("Kernel panic - not syncing")),
        "{}",
        ctx()
    );
    assert_eq!(run.status, 5, "{}", ctx());
    assert_eq!(
        run.stderr.lines().last(),
        Some("agar-vmm: halt: guest crash pvpanic: guest panicked"),
        "{}",
        ctx()
    );
}

#[test]
fn linux_6_1_boots_with_2_cpus_and_powers_off() {
    boots_and_powers_off("debian12_k61");
}

#[test]
fn linux_6_12_boots_with_2_cpus_and_powers_off() {
    boots_and_powers_off("debian12_k612");
}

#[test]
fn linux_6_1_panic_exits_5() {
    panic_exits_5("debian12_k61");
}

#[test]
fn linux_6_12_panic_exits_5() {
    panic_exits_5("debian12_k612");
}
