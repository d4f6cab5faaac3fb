//! IDE sequential read benchmark (not a test): a guest booted by SeaBIOS from an IDE disk
//! reads a second IDE disk with `dd if=/dev/sdX of=/dev/null bs=1M iflag=direct` (bus-master
//! DMA through ata_piix), on agar-vmm (`--pcat --hypervisor emu`) and on QEMU `-M pc` (TCG,
//! PIIX3 IDE) in the same run, with the same boot disk and the same data file. Prints MB/s
//! per VMM (guest-timed with /proc/uptime, median of the runs) and agar-vmm's ratio to QEMU.
//!
//! `cargo bench -p agar_vmm --bench pcat_ide` (`-- mib=N runs=N` to change the 512 MiB read
//! and 3 runs per VMM). Needs the guest artifacts (`agar artifacts restore`), the media tools,
//! Debian's `seabios` and `qemu-system-x86_64`.

#[path = "../tests/common/guest.rs"]
mod guest;

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use artifacts::ids;
use artifacts::media::BiosDisk;
use artifacts::media::BootFiles;
use guest::Guest;

fn arg(name: &str, default: u64) -> u64 {
    std::env::args()
        .filter_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_string))
        .next_back()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A raw data disk of `mib` MiB of non-zero bytes (a fixed pattern: built once, reused).
fn data_disk(mib: u64) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/agar-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("ide-data-{mib}m.raw"));
    if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(mib << 20) {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = vec![0u8; 1 << 20];
        let mut out = Vec::with_capacity((mib << 20) as usize);
        for _ in 0..mib {
            for chunk in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            out.extend_from_slice(&buf);
        }
        std::fs::write(&path, out).unwrap();
    }
    path
}

/// Boots `cmd`, reads the data disk `runs` times; MB/s per run (guest clock).
fn measure(name: &str, cmd: Command, mib: u64, runs: u64) -> Vec<f64> {
    let start = Instant::now();
    let mut g = Guest::spawn(cmd);
    g.wait_for(600, |l| l.contains("agar-init: ready").then_some(()));
    eprintln!("{name}: ready after {:.1} s", start.elapsed().as_secs_f64());
    // Disks are probed in parallel: find the data disk by its size.
    let dev = g.run(
        "dev",
        &format!(
            "for d in sda sdb; do [ \"$(cat /sys/block/$d/size)\" = {} ] && echo $d; done",
            mib << 11
        ),
    );
    assert!(
        dev == "sda" || dev == "sdb",
        "{name}: no {mib} MiB disk: {dev:?}"
    );
    let mut rates = Vec::new();
    for i in 0..runs {
        let out = g.run(
            &format!("dd{i}"),
            &format!(
                "a=$(cut -d' ' -f1 /proc/uptime); \
             dd if=/dev/{dev} of=/dev/null bs=1M iflag=direct 2>/dev/null || echo FAILED; \
             b=$(cut -d' ' -f1 /proc/uptime); echo $a $b"
            ),
        );
        assert!(!out.contains("FAILED"), "{name}: dd failed");
        let t: Vec<f64> = out
            .split_whitespace()
            .map(|v| v.parse().expect("uptime"))
            .collect();
        let secs = (t[1] - t[0]).max(0.01);
        let rate = mib as f64 * 1.048_576 / secs;
        eprintln!("{name}: run {i}: {mib} MiB in {secs:.2} s guest time = {rate:.1} MB/s");
        rates.push(rate);
    }
    let code = g.power_off();
    assert_eq!(code, 0, "{name}: power off");
    rates
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mib = arg("mib", 512);
    let runs = arg("runs", 3).max(1);
    let resolver = artifacts::Resolver::from_env().expect("artifact resolver");
    let files = BootFiles::from_artifacts(
        &resolver,
        ids::DEBIAN12_K61_KERNEL,
        ids::DEBIAN12_K61_INITRD,
    )
    .expect("guest artifacts (run `agar artifacts restore`)")
    .cmdline_args("agar.modules=ata_piix,sd_mod")
    .unwrap();
    let boot = BiosDisk::new(files).build(resolver.cache()).unwrap().path;
    let data = data_disk(mib);
    let p = |p: &Path| p.display().to_string();

    let agar = guest::pcat_emu_command(&[
        &format!("memdiff:file:{}", p(&boot)),
        &format!("memdiff:file:{}", p(&data)),
    ]);
    let agar_rates = measure("agar-vmm (emu)", agar, mib, runs);

    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-M", "pc", "-accel", "tcg", "-m", "256", "-display", "none"])
        .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
        .args([
            "-drive",
            &format!("file={},format=vpc,if=ide,index=0,snapshot=on", p(&boot)),
        ])
        .args([
            "-drive",
            &format!("file={},format=raw,if=ide,index=1,snapshot=on", p(&data)),
        ]);
    let qemu_rates = measure("qemu -M pc (tcg)", qemu, mib, runs);

    let a = median(agar_rates);
    let q = median(qemu_rates);
    println!("IDE sequential read, {mib} MiB, dd bs=1M iflag=direct, median of {runs}:");
    println!("  agar-vmm --pcat (emu): {a:8.1} MB/s");
    println!("  qemu -M pc (tcg):      {q:8.1} MB/s");
    println!("  ratio agar-vmm/qemu:   {:8.2}", a / q);
}
