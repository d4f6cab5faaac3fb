//! Hyper-V enlightenments, VMBus and the VMBus SCSI controller (storvsp) with a Linux guest
//! booted directly: the guest must detect Hyper-V, load hv_vmbus and hv_storvsc, see each
//! disk with its size, read what the host put there, and write data that reads back (and,
//! for a plain file, lands in the host file), while memdiff bases stay untouched.
//!
//! Disks are found by SCSI address (LUN n is the n-th `--disk`), not by `sdX` name: the
//! kernel probes LUNs asynchronously, and 6.12 names them in whatever order probing ends.
//! Each disk carries its own host pattern, so a LUN mapped to the wrong file fails.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

use agar::HaltReason;
use agar::VmBuilder;
use agar::vm_config::DiskBus;
use agar::vm_config::DiskConfig;
use agar::vm_config::DiskSpec;
use agar::vm_test;
use anyhow::Context;
use anyhow::ensure;

const DISK_BYTES: u64 = 64 << 20;
/// The pattern the host writes at the start of each image.
const HEAD_BYTES: usize = 64 << 10;
/// Where (and how much) the guest writes.
const WRITE_OFFSET: u64 = 1 << 20;
const WRITE_BYTES: usize = 256 << 10;

fn host_pattern(disk: usize) -> Vec<u8> {
    (0..HEAD_BYTES as u32)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8 ^ (disk as u8 * 0x5a))
        .collect()
}

/// The first number of the guest's pattern for `disk`.
fn guest_pattern_start(disk: usize) -> u32 {
    100_000 + 50_000 * disk as u32
}

/// What the guest writes to `disk`: `seq -w START ... | head -c WRITE_BYTES`, made in the guest
/// so no bulk data crosses the (slow, serial) agent link. Every 512-byte sector differs.
fn guest_pattern(disk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(WRITE_BYTES + 8);
    let mut n = guest_pattern_start(disk);
    while out.len() < WRITE_BYTES {
        out.extend_from_slice(format!("{n}\n").as_bytes());
        n += 1;
    }
    out.truncate(WRITE_BYTES);
    out
}

fn sha256(bytes: &[u8]) -> String {
    artifacts::hash::Sha256::of(bytes).to_string()
}

/// A raw image of `DISK_BYTES` with [`host_pattern`] of `disk` at offset 0.
fn make_raw(path: &Path, disk: usize) -> anyhow::Result<()> {
    let mut data = host_pattern(disk);
    data.resize(DISK_BYTES as usize, 0);
    std::fs::write(path, data).with_context(|| path.display().to_string())
}

fn qemu_img_convert(raw: &Path, vhdx: &Path) -> anyhow::Result<()> {
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "vhdx"])
        .arg(raw)
        .arg(vhdx)
        .status()
        .context("qemu-img")?;
    ensure!(st.success(), "qemu-img convert failed: {st}");
    Ok(())
}

fn file(path: &Path) -> DiskSpec {
    DiskSpec::File {
        path: path.to_path_buf(),
        read_only: false,
        create: None,
        direct: false,
    }
}

fn vmbus_disk(spec: DiskSpec) -> DiskConfig {
    DiskConfig {
        bus: DiskBus::VmbusScsi,
        spec,
        dvd: false,
    }
}

#[vm_test(
    agarvmm_linux_direct(debian12_k61),
    agarvmm_linux_direct(debian12_k612),
    timeout = 1200
)]
async fn vmbus_storvsp_disks(vm: VmBuilder) -> anyhow::Result<()> {
    let dir: PathBuf = vm.output_dir().to_path_buf();
    // LUN 0: a plain raw file (guest writes reach it); LUNs 1, 2: raw and VHDX bases under
    // a RAM layer (guest writes must not).
    let plain = dir.join("plain.raw");
    let base_raw = dir.join("base.raw");
    let vhdx_src = dir.join("vhdx-source.raw");
    let base_vhdx = dir.join("base.vhdx");
    make_raw(&plain, 0)?;
    make_raw(&base_raw, 1)?;
    make_raw(&vhdx_src, 2)?;
    qemu_img_convert(&vhdx_src, &base_vhdx)?;
    std::fs::remove_file(&vhdx_src)?;
    let before_raw = std::fs::read(&base_raw)?;
    let before_vhdx = std::fs::read(&base_vhdx)?;

    let vm = vm
        .modify_config(|c| {
            c.hv = true;
            c.disks.push(vmbus_disk(file(&plain)));
            c.disks
                .push(vmbus_disk(DiskSpec::MemDiff(Box::new(file(&base_raw)))));
            c.disks
                .push(vmbus_disk(DiskSpec::MemDiff(Box::new(file(&base_vhdx)))));
        })
        .with_kernel_cmdline("agar.modules=hv_vmbus,hv_storvsc,sd_mod");
    let mut vm = vm.run().await?;
    let agent = vm.agent().await?;

    let dmesg = agent.run("dmesg").await?;
    for line in [
        "Hypervisor detected: Microsoft Hyper-V",
        "hv_vmbus: Vmbus version:5.",
        "scsi host0: storvsc_host_t",
        "Direct-Access     Msft     Virtual Disk",
    ] {
        ensure!(dmesg.contains(line), "dmesg lacks {line:?}");
    }
    for i in 0..3 {
        let name = agent
            .run(&format!("ls /sys/bus/scsi/devices/*:0:0:{i}/block"))
            .await?
            .trim()
            .to_string();
        ensure!(
            name.starts_with("sd") && !name.contains(char::is_whitespace),
            "LUN {i}: block device {name:?}"
        );
        let sectors: u64 = agent
            .run(&format!("cat /sys/block/{name}/size"))
            .await?
            .trim()
            .parse()?;
        ensure!(sectors * 512 == DISK_BYTES, "{name}: {sectors} sectors");
        let dev = format!("/dev/{name}");
        // Data is compared by digest in the guest: the agent's serial link moves about
        // 14 KB/s on emu, which made this test take two minutes.
        let head = agent
            .run(&format!(
                "dd if={dev} bs=64k count=1 iflag=direct 2>/dev/null | sha256sum"
            ))
            .await?;
        ensure!(
            head.split_whitespace().next() == Some(sha256(&host_pattern(i)).as_str()),
            "{name}: the guest does not read the host's data ({head:?})"
        );
        let seek = WRITE_OFFSET / WRITE_BYTES as u64;
        let start = guest_pattern_start(i);
        let sums = agent
            .run(&format!(
                "seq -w {start} {} | head -c {WRITE_BYTES} > /tmp/pattern && sha256sum < /tmp/pattern && \
                 dd if=/tmp/pattern of={dev} bs=256k seek={seek} oflag=direct 2>/dev/null && sync && \
                 echo 3 > /proc/sys/vm/drop_caches && \
                 dd if={dev} bs=256k skip={seek} count=1 iflag=direct 2>/dev/null | sha256sum",
                start + 50_000
            ))
            .await?;
        let expect = sha256(&guest_pattern(i));
        let sums: Vec<&str> = sums
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        ensure!(
            sums.first() == Some(&expect.as_str()),
            "{name}: the guest made a different pattern ({sums:?}, expected {expect})"
        );
        ensure!(
            sums.get(1) == Some(&expect.as_str()),
            "{name}: written data does not read back ({sums:?}, expected {expect})"
        );
    }
    assert_eq!(vm.power_off().await?, HaltReason::PowerOff);

    let plain_bytes = std::fs::read(&plain)?;
    let at = WRITE_OFFSET as usize;
    ensure!(
        plain_bytes[at..at + WRITE_BYTES] == guest_pattern(0)[..],
        "the guest's write did not reach the raw file"
    );
    ensure!(plain_bytes[..HEAD_BYTES] == host_pattern(0)[..]);
    ensure!(
        std::fs::read(&base_raw)? == before_raw,
        "memdiff changed the raw base"
    );
    ensure!(
        std::fs::read(&base_vhdx)? == before_vhdx,
        "memdiff changed the VHDX base"
    );
    Ok(())
}
