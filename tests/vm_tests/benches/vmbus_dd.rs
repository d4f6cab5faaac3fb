//! Sequential disk throughput seen by a Linux guest: agar-vmm's VMBus SCSI controller
//! (storvsp) against QEMU's virtio-blk, same kernel, same initramfs, same backing file, same
//! run. Not a test: it prints MB/s and the agar/QEMU ratio.
//!
//! `cargo bench -p vm_tests --bench vmbus_dd [-- MIB]` (default 1 GiB per direction).
//! agar-vmm is `$AGAR_VMM` or `target/release/agar-vmm`; QEMU is `qemu-system-x86_64`
//! (TCG). The guest runs `dd bs=1M` with O_DIRECT, write then read, on the raw disk. Each dd
//! is timed on the host clock, from a line the guest prints just before it to one just after
//! (the guest's own clock is printed next to it); the ratio uses the host clock. The guests' consoles are
//! kept in `target/vmbus_dd/`.
//!
//! The Debian initramfs carries no virtio modules, so the QEMU guest gets a second cpio
//! archive with them, taken from the same kernel package.

use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

use agar::linux::CpioFile;
use agar::linux::newc_archive;
use anyhow::Context;
use anyhow::bail;
use anyhow::ensure;

/// virtio modules in load order (`virtio` needs `virtio_ring`).
const VIRTIO_MODULES: [&str; 6] = [
    "virtio_ring.ko",
    "virtio.ko",
    "virtio_pci_legacy_dev.ko",
    "virtio_pci_modern_dev.ko",
    "virtio_pci.ko",
    "virtio_blk.ko",
];

struct Throughput {
    write_mbs: f64,
    read_mbs: f64,
}

/// One dd run as the host timed it, with the guest's own clock for comparison.
struct DdRun {
    host_secs: f64,
    guest_secs: f64,
}

/// The guest's dd commands. Debian's busybox dd prints no byte/time summary, so each command
/// prints `DDG0O` when it starts and reports `/proc/uptime` before and after and dd's status as `DDRE0S <start> <end> <status>`
/// (the shell's echo of the typed line shows `DDRE$((0))S` and `DDG$((0))O`, so it never
/// matches). A missing
/// block device is a failure, not a file written into /dev.
fn dd_commands(dev: &str, mib: u64) -> [String; 2] {
    let wrap = |dd: String| {
        format!(
            "echo DDG$((0))O; s=$(cat /proc/uptime); {dd} 2>/dev/null; r=$?; e=$(cat /proc/uptime); \
             echo \"DDRE$((0))S ${{s%% *}} ${{e%% *}} $r\""
        )
    };
    [
        wrap(format!(
            "[ -b {dev} ] && dd if=/dev/zero of={dev} bs=1M count={mib} oflag=direct"
        )),
        wrap(format!(
            "[ -b {dev} ] && dd if={dev} of=/dev/null bs=1M count={mib} iflag=direct"
        )),
    ]
}

/// The guest's start and end uptime from a `DDRE0S` line.
fn parse_ddres(line: &str) -> Option<(f64, f64)> {
    let rest = line.trim().strip_prefix("DDRE0S ")?;
    let mut it = rest.split_whitespace();
    let start: f64 = it.next()?.parse().ok()?;
    let end: f64 = it.next()?.parse().ok()?;
    Some((start, end))
}

/// Runs `child` (serial console on stdin/stdout) until the guest is ready, types `setup`,
/// then times each of `dd` from the host: from its `DDG0O` line to its `DDRE0S` line. The
/// console goes to `log` as well.
fn drive(
    mut child: Child,
    setup: &[String],
    dd: &[String; 2],
    timeout: Duration,
    log: &Path,
) -> anyhow::Result<[DdRun; 2]> {
    let mut log = std::fs::File::create(log).with_context(|| log.display().to_string())?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut next_line = |child: &mut Child| -> anyhow::Result<(Instant, String)> {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((t, l)) => {
                writeln!(log, "{l}")?;
                Ok((t, l))
            }
            Err(_) => {
                let _ = child.kill();
                bail!("the VM exited or timed out before the dd runs finished");
            }
        }
    };
    while !next_line(&mut child)?.1.contains("agar-init: ready") {}
    // Give /init a moment to start the shell.
    std::thread::sleep(Duration::from_secs(2));
    for c in setup {
        writeln!(stdin, "{c}")?;
        stdin.flush()?;
        std::thread::sleep(Duration::from_millis(300));
    }
    // Wait until the shell has run the setup, so the clock starts with an idle shell.
    writeln!(stdin, "echo SETUP$((0))DONE")?;
    stdin.flush()?;
    while next_line(&mut child)?.1.trim() != "SETUP0DONE" {}
    let mut runs = Vec::new();
    for c in dd {
        writeln!(stdin, "{c}")?;
        stdin.flush()?;
        let mut started = None;
        loop {
            let (at, line) = next_line(&mut child)?;
            if line.trim() == "DDG0O" {
                started = Some(at);
                continue;
            }
            if let Some((start, end)) = parse_ddres(&line) {
                ensure!(
                    line.trim().ends_with(" 0"),
                    "dd failed in the guest: {line}"
                );
                let dd = c.split("; ").find(|p| p.contains("dd if=")).unwrap_or(c);
                eprintln!("    {dd}");
                runs.push(DdRun {
                    host_secs: at
                        .duration_since(started.context("no DDG0O line before the result")?)
                        .as_secs_f64(),
                    guest_secs: end - start,
                });
                break;
            }
        }
    }
    writeln!(stdin, "poweroff -f")?;
    let _ = stdin.flush();
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let [w, r]: [DdRun; 2] = runs.try_into().ok().context("two dd runs")?;
    Ok([w, r])
}

fn throughput(name: &str, runs: &[DdRun; 2], mib: u64) -> Throughput {
    let mb = (mib << 20) as f64 / 1e6;
    for (what, r) in ["write", "read"].iter().zip(runs) {
        eprintln!(
            "    {name} {what}: {:.2} s on the host clock ({:.1} MB/s), {:.2} s on the guest's",
            r.host_secs,
            mb / r.host_secs,
            r.guest_secs
        );
    }
    Throughput {
        write_mbs: mb / runs[0].host_secs,
        read_mbs: mb / runs[1].host_secs,
    }
}

/// The kernel package's virtio modules as a cpio archive (under `/bench`).
fn virtio_archive(resolver: &artifacts::Resolver) -> anyhow::Result<Vec<u8>> {
    let cache = resolver.cache();
    let deb = cache
        .deb_refs()?
        .into_iter()
        .find(|d| d.package.starts_with("linux-image-6.1.") && d.package.ends_with("-cloud-amd64"))
        .context("the 6.1 kernel package is not in the artifact cache")?;
    let path = cache
        .blob_if_present(&deb.sha256, deb.size)
        .context("kernel package blob missing")?;
    let (files, _) = artifacts::deb::extract(&path, |p| {
        VIRTIO_MODULES
            .iter()
            .any(|m| p.ends_with(&format!("/{m}")) && p.contains("/kernel/drivers/"))
    })?;
    let named: Vec<(String, Vec<u8>)> = VIRTIO_MODULES
        .iter()
        .map(|m| {
            files
                .iter()
                .find(|f| f.path.ends_with(&format!("/{m}")))
                .map(|f| (format!("bench/{m}"), f.data.clone()))
                .with_context(|| format!("{m} not in the kernel package"))
        })
        .collect::<anyhow::Result<_>>()?;
    let cpio: Vec<CpioFile<'_>> = named
        .iter()
        .map(|(p, d)| CpioFile {
            path: p,
            mode: 0o644,
            data: d,
        })
        .collect();
    Ok(newc_archive(&cpio))
}

fn agar_vmm() -> PathBuf {
    std::env::var_os("AGAR_VMM")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/agar-vmm")
        })
}

/// Where the consoles of the benchmark's guests are kept.
fn log_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/vmbus_dd")
}

fn run_agar(kernel: &Path, initrd: &Path, disk: &Path, mib: u64) -> anyhow::Result<Throughput> {
    let child = Command::new(agar_vmm())
        .arg("--kernel")
        .arg(kernel)
        .arg("--initrd")
        .arg(initrd)
        .args([
            "-c",
            "console=ttyS0 agar.modules=hv_vmbus,hv_storvsc,sd_mod",
        ])
        .args(["-m", "512MB", "--hv", "--com1", "console"])
        .arg("--disk")
        .arg(format!("file:{}", disk.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", agar_vmm().display()))?;
    let runs = drive(
        child,
        &[],
        &dd_commands("/dev/sda", mib),
        Duration::from_secs(1800),
        &log_dir().join("agar-vmm-console.log"),
    )?;
    Ok(throughput("agar-vmm", &runs, mib))
}

fn run_qemu(kernel: &Path, initrd: &Path, disk: &Path, mib: u64) -> anyhow::Result<Throughput> {
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-smp", "1"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .args([
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let mut commands: Vec<String> = VIRTIO_MODULES
        .iter()
        .map(|m| format!("insmod /bench/{m}"))
        .collect();
    commands.push("sleep 1".into());
    let runs = drive(
        child,
        &commands,
        &dd_commands("/dev/vda", mib),
        Duration::from_secs(1800),
        &log_dir().join("qemu-console.log"),
    )?;
    Ok(throughput("QEMU", &runs, mib))
}

fn main() -> anyhow::Result<()> {
    // `cargo test --benches` runs this without `--bench`: boot nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "vmbus_dd is a benchmark: run it with `cargo bench -p vm_tests --bench vmbus_dd`"
        );
        return Ok(());
    }
    let mib: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1024);
    std::fs::create_dir_all(log_dir())?;
    let resolver = artifacts::Resolver::from_env()?;
    let kernel = resolver.resolve_name("debian12_k61_kernel")?;
    let initrd = resolver.resolve_name("debian12_k61_initrd")?;
    let dir = tempfile::tempdir()?;
    let qemu_initrd = dir.path().join("initrd-virtio.img");
    let mut bytes = std::fs::read(&initrd)?;
    bytes.extend_from_slice(&virtio_archive(&resolver)?);
    std::fs::write(&qemu_initrd, bytes)?;
    let disk = dir.path().join("disk.raw");
    std::fs::File::create(&disk)?.set_len((mib + 16) << 20)?;

    eprintln!("agar-vmm (emu), VMBus SCSI, {mib} MiB each way:");
    let agar = run_agar(&kernel, &initrd, &disk, mib)?;
    eprintln!("QEMU (TCG), virtio-blk, {mib} MiB each way:");
    let qemu = run_qemu(&kernel, &qemu_initrd, &disk, mib)?;
    println!("| | agar-vmm storvsp | QEMU virtio-blk | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| sequential write, 1 MiB O_DIRECT | {:.1} MB/s | {:.1} MB/s | {:.2} |",
        agar.write_mbs,
        qemu.write_mbs,
        agar.write_mbs / qemu.write_mbs
    );
    println!(
        "| sequential read, 1 MiB O_DIRECT | {:.1} MB/s | {:.1} MB/s | {:.2} |",
        agar.read_mbs,
        qemu.read_mbs,
        agar.read_mbs / qemu.read_mbs
    );
    Ok(())
}
