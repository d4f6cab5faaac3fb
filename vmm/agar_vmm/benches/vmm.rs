//! agar-vmm benchmarks (not tests): prints numbers, fails only if something does not run.
//!
//! `cargo bench -p agar_vmm [-- kernel=PATH initrd=PATH]`, per CPU backend available here,
//! medians of `AGAR_BENCH_RUNS` runs (default 5):
//! - exec to first guest instruction: spawn agar-vmm on a tiny ELF kernel whose first
//!   instruction writes a byte to COM1, time until the byte arrives;
//! - VMM RSS beyond guest RAM: the process's resident memory minus the resident part of the
//!   guest-RAM mapping, sampled while that kernel halts;
//! - payload run times: a CPL0 compute loop (also as MIPS), port I/O exits, LAPIC timer
//!   interrupts, each from exec to power off, minus the idle payload's time;
//! - Linux: exec to the first vCPU entry for a real bzImage (decompression and loading), from
//!   agar-vmm's own log line (with `kernel=`);
//! - Linux boots on `emu`: the Debian 6.1 and 6.12 guests from the artifact cache (or the
//!   given kernel and initrd), `-p 2 -m 300MB`, exec to `agar-init: ready` and to power off,
//!   against QEMU TCG (`-M pc -accel tcg -smp 2 -m 300`) booting the same kernel, initrd and
//!   command line in the same run (the peer), printed as ratios; and the boot's MIPS (guest
//!   instructions retired by both vCPUs over the exec-to-power-off time).
//!
//! Every microbenchmark row is also given as a ratio to the KVM row measured in the same run.

use std::io::BufRead;
use std::io::BufReader;
use std::io::Read;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use iced_x86::code_asm::*;

const ENTRY: u64 = 0x100_0000;
const RUNS: usize = 5;

/// An ELF64 executable with `code` at physical `ENTRY`, entered there.
fn elf(code: &[u8]) -> Vec<u8> {
    let mut e = vec![0u8; 0x40 + 56];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2;
    e[5] = 1;
    e[6] = 1;
    e[0x10] = 2;
    e[0x12] = 62;
    e[0x18..0x20].copy_from_slice(&ENTRY.to_le_bytes());
    e[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
    e[0x36] = 56;
    e[0x38] = 1;
    let ph = 0x40;
    e[ph] = 1;
    e[ph + 4] = 5; // R+X
    e[ph + 8..ph + 16].copy_from_slice(&0x78u64.to_le_bytes());
    e[ph + 16..ph + 24].copy_from_slice(&ENTRY.to_le_bytes());
    e[ph + 24..ph + 32].copy_from_slice(&ENTRY.to_le_bytes());
    e[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    e[ph + 40..ph + 48].copy_from_slice(&(code.len() as u64).to_le_bytes());
    e.extend_from_slice(code);
    e
}

/// `out 0x3f8, 'A'`, then `body`, then `out 'Z'` and ACPI S5 (or halt forever if `halt`).
fn program(body: impl FnOnce(&mut CodeAssembler), halt: bool) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    a.mov(dx, 0x3f8u32).unwrap();
    a.mov(al, u32::from(b'A')).unwrap();
    a.out(dx, al).unwrap();
    body(&mut a);
    a.mov(dx, 0x3f8u32).unwrap();
    a.mov(al, u32::from(b'Z')).unwrap();
    a.out(dx, al).unwrap();
    let mut spin = a.create_label();
    if halt {
        a.set_label(&mut spin).unwrap();
        a.cli().unwrap();
        a.hlt().unwrap();
        a.jmp(spin).unwrap();
    } else {
        a.mov(dx, 0x604u32).unwrap();
        a.mov(ax, (5u32 << 10) | (1 << 13)).unwrap();
        a.out(dx, ax).unwrap();
        a.set_label(&mut spin).unwrap();
        a.jmp(spin).unwrap();
    }
    a.assemble(ENTRY).unwrap()
}

fn compute_loop(a: &mut CodeAssembler, iterations: u32) {
    a.mov(ecx, iterations).unwrap();
    let mut l = a.create_label();
    a.set_label(&mut l).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(l).unwrap();
}

fn pio_loop(a: &mut CodeAssembler, exits: u32) {
    a.mov(ecx, exits).unwrap();
    let mut l = a.create_label();
    a.set_label(&mut l).unwrap();
    a.out(0x80, al).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(l).unwrap();
}

/// `ticks` LAPIC timer interrupts of 100 us each, counted in the handler (IDT built here).
fn timer_loop(a: &mut CodeAssembler, ticks: u32) {
    // IDT with vector 0x40 at 0x3000 (the loader's low memory is free below 0x7000).
    let mut handler = a.create_label();
    let mut after = a.create_label();
    a.jmp(after).unwrap();
    a.set_label(&mut handler).unwrap();
    a.inc(r15d).unwrap();
    a.mov(rdi, 0xfee0_00b0u64).unwrap();
    a.mov(dword_ptr(rdi), 0).unwrap();
    a.iretq().unwrap();
    a.set_label(&mut after).unwrap();
    a.lea(rax, ptr(handler)).unwrap();
    a.mov(rdi, 0x3000u64 + 0x40 * 16).unwrap();
    a.mov(word_ptr(rdi), ax).unwrap();
    a.mov(word_ptr(rdi + 2), 0x10).unwrap();
    a.mov(byte_ptr(rdi + 4), 0).unwrap();
    a.mov(byte_ptr(rdi + 5), 0x8e).unwrap();
    a.shr(rax, 16).unwrap();
    a.mov(word_ptr(rdi + 6), ax).unwrap();
    a.mov(dword_ptr(rdi + 8), 0).unwrap();
    a.mov(dword_ptr(rdi + 12), 0).unwrap();
    // lidt [idtr] with the descriptor on the stack.
    a.sub(rsp, 16).unwrap();
    a.mov(word_ptr(rsp), 256 * 16 - 1).unwrap();
    a.mov(qword_ptr(rsp + 2), 0x3000).unwrap();
    a.lidt(ptr(rsp)).unwrap();
    a.add(rsp, 16).unwrap();
    let lapic = |a: &mut CodeAssembler, reg: u64, v: u32| {
        a.mov(rdi, 0xfee0_0000 + reg).unwrap();
        a.mov(dword_ptr(rdi), v).unwrap();
    };
    lapic(a, 0xf0, 0x1ff);
    lapic(a, 0x3e0, 0xb);
    // Periodic, vector 0x40, 100 us: the APIC timer clock is CPUID 0x15 ECX (the machine states
    // it there), so the count is ECX / 10_000.
    lapic(a, 0x320, 0x2_0040);
    a.mov(eax, 0x15).unwrap();
    a.xor(ecx, ecx).unwrap();
    a.cpuid().unwrap();
    a.mov(eax, ecx).unwrap();
    a.xor(edx, edx).unwrap();
    a.mov(ecx, 10_000).unwrap();
    a.div(ecx).unwrap();
    a.mov(rdi, 0xfee0_0380u64).unwrap();
    a.mov(dword_ptr(rdi), eax).unwrap();
    a.xor(r15d, r15d).unwrap();
    let mut wait = a.create_label();
    a.set_label(&mut wait).unwrap();
    a.sti().unwrap();
    a.hlt().unwrap();
    a.cli().unwrap();
    a.cmp(r15d, ticks).unwrap();
    a.jb(wait).unwrap();
    lapic(a, 0x320, 0x1_0040);
}

struct Vmm {
    child: Child,
    started: Instant,
}

fn spawn(kernel: &Path, backend: &[&str], ram_mib: u64) -> Vmm {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_agar-vmm"))
        .args(backend)
        .arg("--kernel")
        .arg(kernel)
        .args(["-m", &format!("{ram_mib}MB"), "--log", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agar-vmm starts");
    Vmm { child, started }
}

/// Runs `kernel` to completion: (time to the first COM1 byte, time to exit).
fn run_to_exit(kernel: &Path, backend: &[&str]) -> (Duration, Duration) {
    let mut vmm = spawn(kernel, backend, 64);
    let mut out = vmm.child.stdout.take().unwrap();
    let mut b = [0u8; 1];
    out.read_exact(&mut b).expect("first byte");
    let first = vmm.started.elapsed();
    let mut rest = Vec::new();
    let _ = out.read_to_end(&mut rest);
    let status = vmm.child.wait().unwrap();
    let total = vmm.started.elapsed();
    assert!(status.success(), "agar-vmm {backend:?} failed: {status}");
    assert_eq!(rest, b"Z");
    (first, total)
}

/// KiB of (process RSS, resident guest RAM) for a halted guest of `ram_mib`.
fn rss(kernel: &Path, backend: &[&str], ram_mib: u64) -> (u64, u64) {
    let mut vmm = spawn(kernel, backend, ram_mib);
    let mut out = vmm.child.stdout.take().unwrap();
    let mut b = [0u8; 2];
    out.read_exact(&mut b).expect("guest output");
    std::thread::sleep(Duration::from_millis(300));
    let pid = vmm.child.id();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let _ = vmm.child.kill();
    let _ = vmm.child.wait();
    let total = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    // The guest-RAM mapping is the anonymous mapping at least as large as the RAM.
    let mut guest = 0;
    let mut size = 0u64;
    for l in smaps.lines() {
        if let Some(v) = l.strip_prefix("Size:") {
            size = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("Rss:")
            && size >= ram_mib * 1024 - 256
            && size <= ram_mib * 1024 + 4096
        {
            guest = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        }
    }
    (total, guest)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:9.2} ms", d.as_secs_f64() * 1e3)
}

/// Exec to agar-vmm's "starting N vCPU(s)" line for a real kernel.
fn linux_ready(kernel: &Path, initrd: Option<&Path>, backend: &[&str]) -> Option<Duration> {
    let started = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agar-vmm"));
    cmd.args(backend)
        .arg("--kernel")
        .arg(kernel)
        .args(["-m", "300MB", "--com1", "none", "--log", "info"]);
    if let Some(i) = initrd {
        cmd.arg("--initrd").arg(i);
    }
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let err = BufReader::new(child.stderr.take()?);
    let mut at = None;
    for line in err.lines().map_while(Result::ok) {
        if line.contains("starting") && line.contains("vCPU") {
            at = Some(started.elapsed());
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    at
}

/// One boot of a VMM with the guest's console on stdout: times from spawn to `agar-init:
/// ready` and to exit, and (agar-vmm only, from its `cpu_emu=debug` stop lines) the guest
/// instructions retired by all processors.
struct Boot {
    ready: Duration,
    exit: Duration,
    instructions: u64,
}

/// Longest a bench boot may take (both VMMs boot these kernels in seconds).
const BOOT_LIMIT: Duration = Duration::from_secs(120);

/// Boots `cmd` to `agar-init: ready` and to its exit, or says why not: it printed nothing
/// for [`BOOT_LIMIT`] (then it is killed), or it did not exit successfully. The error names
/// the last console line.
fn boot_to_ready(mut cmd: Command) -> Result<Boot, String> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let err = BufReader::new(child.stderr.take().ok_or("no stderr")?);
    let err_thread = std::thread::spawn(move || {
        let mut n = 0u64;
        for line in err.lines().map_while(Result::ok) {
            if line.contains("block lookups")
                && let Some(v) = line.split_whitespace().find_map(|w| {
                    strip_ansi(w)
                        .strip_prefix("instructions=")
                        .map(String::from)
                })
            {
                n += v.parse::<u64>().unwrap_or(0);
            }
        }
        n
    });
    // The console is read on its own thread so a guest that hangs silently still meets
    // the deadline.
    let out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut ready = None;
    let mut last = String::new();
    let mut timed_out = false;
    loop {
        let left = BOOT_LIMIT.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if ready.is_none() && line.contains("agar-init: ready") {
                    ready = Some(started.elapsed());
                }
                if !line.trim().is_empty() {
                    last = line;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                timed_out = true;
                break;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    let exit = started.elapsed();
    let instructions = err_thread.join().unwrap_or(0);
    let last = last.trim();
    if timed_out {
        return Err(format!(
            "no power off within {} s (last console line: {last:?})",
            BOOT_LIMIT.as_secs()
        ));
    }
    if !status.success() {
        return Err(format!("{status} (last console line: {last:?})"));
    }
    Ok(Boot {
        ready: ready
            .ok_or_else(|| format!("no `agar-init: ready` (last console line: {last:?})"))?,
        exit,
        instructions,
    })
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        match (esc, c) {
            (false, '\x1b') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

/// Boot-to-power-off of `kernel` + `initrd` on `emu` (`-p 2 -m 300MB`) against QEMU TCG
/// (`-M pc -smp 2 -m 300`, same kernel, initrd and command line), alternating, `runs` each.
fn linux_boot_rows(label: &str, kernel: &Path, initrd: &Path, runs: usize) {
    let append = "console=ttyS0 agar.poweroff";
    let agar = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_agar-vmm"));
        c.args([
            "--hypervisor",
            "emu",
            "-p",
            "2",
            "-m",
            "300MB",
            "--log",
            "warn,cpu_emu=debug",
            "--kernel",
        ])
        .arg(kernel)
        .arg("--initrd")
        .arg(initrd)
        .args(["-c", append]);
        c
    };
    let qemu = || {
        let mut c = Command::new("qemu-system-x86_64");
        c.args([
            "-M",
            "pc",
            "-accel",
            "tcg",
            "-smp",
            "2",
            "-m",
            "300",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", append]);
        c
    };
    let mut peer = Vec::new();
    let mut emu = Vec::new();
    // The peer's failed boots are retried (QEMU TCG occasionally hangs a boot; counted and
    // reported), agar-vmm's are a finding and end the row.
    let mut peer_failures = Vec::new();
    while emu.len() < runs {
        match boot_to_ready(qemu()) {
            Ok(q) => peer.push(q),
            Err(e) => {
                peer_failures.push(e);
                if peer_failures.len() > runs {
                    println!(
                        "[emu] {label}: QEMU did not boot the kernel ({}): no peer for the Linux rows",
                        peer_failures.join("; ")
                    );
                    return;
                }
                continue;
            }
        }
        match boot_to_ready(agar()) {
            Ok(e) => emu.push(e),
            Err(e) => {
                println!("[emu] {label}: agar-vmm's boot failed: {e}");
                return;
            }
        }
    }
    if !peer_failures.is_empty() {
        println!(
            "[emu] {label}: QEMU TCG failed {} of {} boots, retried: {}",
            peer_failures.len(),
            peer_failures.len() + peer.len(),
            peer_failures.join("; ")
        );
    }
    let med = |v: &[Boot], f: fn(&Boot) -> Duration| median(v.iter().map(f).collect());
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let (er, pr) = (med(&emu, |b| b.ready), med(&peer, |b| b.ready));
    let (ee, pe) = (med(&emu, |b| b.exit), med(&peer, |b| b.exit));
    println!(
        "[emu] {label} -p 2: exec to agar-init: ready  {}  ({:.2}x QEMU TCG: {})",
        ms(er),
        ratio(er, pr),
        ms(pr).trim()
    );
    println!(
        "[emu] {label} -p 2: exec to power off         {}  ({:.2}x QEMU TCG: {})",
        ms(ee),
        ratio(ee, pe),
        ms(pe).trim()
    );
    let mut mips: Vec<f64> = emu
        .iter()
        .map(|b| b.instructions as f64 / b.exit.as_secs_f64() / 1e6)
        .collect();
    mips.sort_by(f64::total_cmp);
    let insns = {
        let mut v: Vec<u64> = emu.iter().map(|b| b.instructions).collect();
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "[emu] {label} -p 2: boot MIPS (both vCPUs)    {:9.1}     ({:.0} M guest instructions)",
        mips[mips.len() / 2],
        insns as f64 / 1e6
    );
}

/// Runs per row: `AGAR_BENCH_RUNS` (default 5; fewer for quick runs).
fn bench_runs() -> usize {
    std::env::var("AGAR_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(RUNS)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |k: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("{k}=")))
            .map(PathBuf::from)
    };
    let dir = std::env::temp_dir().join(format!("agar-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, code: Vec<u8>| {
        let p = dir.join(name);
        std::fs::write(&p, elf(&code)).unwrap();
        p
    };
    let idle = write("idle.elf", program(|_| {}, false));
    let halt = write("halt.elf", program(|_| {}, true));
    let compute = write(
        "compute.elf",
        program(|a| compute_loop(a, 1_000_000), false),
    );
    let pio = write("pio.elf", program(|a| pio_loop(a, 20_000), false));
    let timer = write("timer.elf", program(|a| timer_loop(a, 1_000), false));

    let mut backends: Vec<(&str, Vec<&str>)> = Vec::new();
    if Path::new("/dev/kvm").exists() {
        backends.push(("kvm", vec!["--hypervisor", "kvm", "--no-kvm-check"]));
    }
    let emu_ok = Command::new(env!("CARGO_BIN_EXE_agar-vmm"))
        .args(["--hypervisor", "emu", "--kernel"])
        .arg(&idle)
        .args(["--com1", "none", "--log", "off"])
        .status()
        .is_ok_and(|s| s.success());
    if emu_ok {
        backends.push(("emu", vec!["--hypervisor", "emu"]));
    } else {
        println!("(emu backend not available in this build: kvm rows only)");
    }

    let runs = bench_runs();
    println!("agar-vmm benchmarks, median of {runs} runs");
    let mut base: Option<[Duration; 4]> = None;
    for (name, flags) in &backends {
        let firsts: Vec<Duration> = (0..runs).map(|_| run_to_exit(&idle, flags).0).collect();
        let idle_total = median((0..runs).map(|_| run_to_exit(&idle, flags).1).collect());
        let first = median(firsts);
        let payload = |k: &Path| {
            median((0..runs).map(|_| run_to_exit(k, flags).1).collect()).saturating_sub(idle_total)
        };
        let rows = [first, payload(&compute), payload(&pio), payload(&timer)];
        let ratio = |i: usize| match &base {
            Some(b) if b[i] > Duration::ZERO => {
                format!("  ({:.2}x kvm)", rows[i].as_secs_f64() / b[i].as_secs_f64())
            }
            _ => String::new(),
        };
        println!(
            "[{name}] exec to first guest instruction   {}{}",
            ms(rows[0]),
            ratio(0)
        );
        // 2 instructions per iteration (`dec ecx; jnz`).
        let mips = 2e6 / rows[1].as_secs_f64().max(1e-6) / 1e6;
        println!(
            "[{name}] 1M-iteration CPL0 loop            {}{}  ({mips:.1} MIPS)",
            ms(rows[1]),
            ratio(1)
        );
        println!(
            "[{name}] 20k port I/O exits                {}{}",
            ms(rows[2]),
            ratio(2)
        );
        println!(
            "[{name}] 1000 LAPIC timer interrupts       {}{}",
            ms(rows[3]),
            ratio(3)
        );
        for ram in [64, 1024] {
            let (total, guest) = rss(&halt, flags, ram);
            println!(
                "[{name}] RSS beyond guest RAM ({ram:4} MiB)   {:6} KiB  (process {total} KiB, guest-resident {guest} KiB)",
                total.saturating_sub(guest)
            );
        }
        if base.is_none() {
            base = Some(rows);
        }
        if let Some(k) = arg("kernel") {
            let initrd = arg("initrd");
            let t: Vec<Duration> = (0..3)
                .filter_map(|_| linux_ready(&k, initrd.as_deref(), flags))
                .collect();
            if !t.is_empty() {
                println!(
                    "[{name}] Linux {}: exec to first vCPU entry {}",
                    k.file_name().unwrap_or_default().to_string_lossy(),
                    ms(median(t))
                );
            }
        }
    }
    if emu_ok {
        if let (Some(k), Some(i)) = (arg("kernel"), arg("initrd")) {
            linux_boot_rows("Linux", &k, &i, runs);
        } else {
            // The pinned Debian guests from the artifact cache.
            match artifacts::Resolver::from_env() {
                Ok(r) => {
                    for (label, id) in [
                        ("Linux 6.1", "debian12_k61"),
                        ("Linux 6.12", "debian12_k612"),
                    ] {
                        match (
                            r.resolve_name(&format!("{id}_kernel")),
                            r.resolve_name(&format!("{id}_initrd")),
                        ) {
                            (Ok(k), Ok(i)) => linux_boot_rows(label, &k, &i, runs),
                            (Err(e), _) | (_, Err(e)) => println!("[emu] {label}: {e}"),
                        }
                    }
                }
                Err(e) => println!("[emu] no Linux rows: {e}"),
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
