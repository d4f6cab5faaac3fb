//! BIOS boot media boot under QEMU TCG (`-M pc`: SeaBIOS, PIIX IDE) and follow the guest
//! contract (docs/src/guest-contract.md, "BIOS (PCAT) boot media"): the pinned disk from the
//! IDE disk, the pinned ISO from the CD drive, and media built by the library with extra
//! archives appended to the initramfs.
//!
//! Needs `qemu-system-x86_64`, `qemu-img`, the media tools (syslinux, mtools, dosfstools,
//! fdisk, isolinux, xorriso) and a restored cache: run `cargo run -p agar_cli -- artifacts
//! restore` first.

#[path = "support/qemu.rs"]
mod qemu;

use std::ffi::OsString;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use artifacts::ArtifactId;
use artifacts::Resolver;
use artifacts::cache::Cache;
use artifacts::hash::Sha256;
use artifacts::ids;
use artifacts::manifest::Recipe;
use artifacts::manifest::Source;
use artifacts::media::BiosDisk;
use artifacts::media::BiosIso;
use artifacts::media::BootFiles;
use artifacts::media::DiskFormat;
use artifacts::media::MediumKind;
use artifacts::media::Toolchain;
use artifacts::recipes::cpio;

fn resolve(id: &ArtifactId) -> PathBuf {
    Resolver::from_env()
        .unwrap()
        .resolve(id)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `-drive file=<path>,format=<fmt>,if=ide,snapshot=on`: the cache's blob is read-only.
fn ide_disk(path: &Path, format: &str) -> Vec<OsString> {
    let mut drive = OsString::from("file=");
    drive.push(path);
    drive.push(format!(",format={format},if=ide,snapshot=on"));
    vec!["-drive".into(), drive]
}

fn cdrom(path: &Path) -> Vec<OsString> {
    let mut v = vec![OsString::from("-cdrom"), path.as_os_str().to_owned()];
    v.extend(["-boot", "d"].map(OsString::from));
    v
}

/// The contract's boot smoke: loader banner, the command line the medium carries, the
/// marker, `uname -r`, power-off.
fn assert_pinned_boot(b: &qemu::Boot, loader: &str) {
    let l = b.lines();
    assert!(
        l.iter().any(|x| x.contains(&format!("{loader} 6."))),
        "no {loader} banner:\n{}",
        b.console
    );
    assert!(
        l.iter().any(|x| x.contains(
            "Command line: BOOT_IMAGE=/vmlinuz initrd=/initrd.img console=ttyS0 agar.poweroff"
        )),
        "kernel command line:\n{}",
        b.console
    );
    let ready = b
        .position("agar-init: ready")
        .unwrap_or_else(|| panic!("no readiness marker:\n{}", b.console));
    assert!(
        l.get(ready + 1).is_some_and(|x| x.starts_with("6.1.0-")),
        "{}",
        b.console
    );
    assert!(b.console.contains("reboot: Power down"), "{}", b.console);
    assert_eq!(b.exit_code, Some(0), "{}", b.console);
}

#[test]
fn pinned_bios_vhd_boots_from_the_ide_disk_to_ready_and_powers_off() {
    let vhd = resolve(&ids::DEBIAN12_K61_BIOS_VHD);

    let b = qemu::boot(&ide_disk(&vhd, "vpc"));

    assert_pinned_boot(&b, "SYSLINUX");
    eprintln!("BIOS VHD boot to power-off: {:?}", b.elapsed);
}

#[test]
fn pinned_bios_iso_boots_from_the_cd_drive_to_ready_and_powers_off() {
    let iso = resolve(&ids::DEBIAN12_K61_BIOS_ISO);

    let b = qemu::boot(&cdrom(&iso));

    assert!(
        b.console.contains("Booting from DVD/CD"),
        "SeaBIOS booted something else:\n{}",
        b.console
    );
    assert_pinned_boot(&b, "ISOLINUX");
    eprintln!("BIOS ISO boot to power-off: {:?}", b.elapsed);
}

#[test]
fn pinned_media_rebuilt_from_the_cached_inputs_match_the_lock() {
    // What makes the lock's pin meaningful: the recipe, run again on the same inputs with the
    // same tools, gives the same bytes; and QEMU reads the VHD as the same sectors as raw.
    let resolver = Resolver::from_env().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tools = Toolchain::system();
    for id in [
        ids::DEBIAN12_K61_BIOS_VHD.id(),
        ids::DEBIAN12_K61_BIOS_ISO.id(),
    ] {
        let entry = resolver.catalog().manifest.get(id.name()).unwrap();
        let locked = resolver.catalog().lock.get(id.name()).unwrap();
        let (Source::Build(Recipe::BiosDisk {
            kernel,
            initrd,
            cmdline,
        })
        | Source::Build(Recipe::BiosIso {
            kernel,
            initrd,
            cmdline,
        })) = entry.source()
        else {
            panic!("{id} is not a media recipe");
        };
        let kind = match entry.source() {
            Source::Build(Recipe::BiosDisk { .. }) => MediumKind::Disk,
            _ => MediumKind::Iso,
        };
        assert_eq!(
            tools.versions(kind).unwrap(),
            locked.tools,
            "this host's tools differ from the ones artifacts.lock records for {id}"
        );
        let files = BootFiles::new(
            resolver.resolve_name(kernel).unwrap(),
            resolver.resolve_name(initrd).unwrap(),
        )
        .replace_cmdline(cmdline)
        .unwrap();
        let out = dir.path().join(id.name());
        let started = Instant::now();
        match kind {
            MediumKind::Disk => BiosDisk::new(files.clone()).write_to(&out, tools),
            MediumKind::Iso => BiosIso::new(files.clone()).write_to(&out, tools),
        }
        .unwrap();
        eprintln!("{id}: built in {:?}", started.elapsed());
        assert_eq!(Sha256::of_file(&out).unwrap(), (locked.sha256, locked.size));

        if kind == MediumKind::Disk {
            let raw = dir.path().join("disk.img");
            BiosDisk::new(files)
                .format(DiskFormat::Raw)
                .write_to(&raw, tools)
                .unwrap();
            let pinned = resolver.resolve(id).unwrap();
            let out = Command::new("qemu-img")
                .args(["compare", "-f", "vpc", "-F", "raw"])
                .arg(&pinned)
                .arg(&raw)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
    }
}

/// An archive holding a stand-in agent (a script `/init` runs on COM2 when there is no
/// `agar.poweroff`) and a data file: the guest prints both, proving the archive was unpacked.
fn test_archives(dir: &Path) -> (PathBuf, PathBuf) {
    let agent = dir.join("agent.sh");
    std::fs::write(
        &agent,
        "#!/bin/sh\n\
         echo \"media-test: agent on $1 says $(cat /etc/agar-media-test)\"\n\
         grep -E ' (sd|hd)[a-z][0-9]*$' /proc/partitions | sed 's/^/media-test: partition /'\n\
         poweroff -f\n",
    )
    .unwrap();
    let data = dir.join("extra.cpio");
    let mut a = cpio::Archive::new();
    a.add(
        "etc/agar-media-test",
        0o644,
        cpio::Node::File(b"hello-from-the-appended-archive\n".to_vec()),
    );
    std::fs::write(&data, a.to_bytes()).unwrap();
    (agent, data)
}

fn assert_extra_archives_seen(b: &qemu::Boot) {
    assert!(b.position("agar-init: ready").is_some(), "{}", b.console);
    assert!(
        b.lines()
            .contains(&"media-test: agent on /dev/ttyS1 says hello-from-the-appended-archive"),
        "{}",
        b.console
    );
    assert!(b.console.contains("reboot: Power down"), "{}", b.console);
    assert_eq!(b.exit_code, Some(0), "{}", b.console);
}

#[test]
fn vhdx_disk_with_an_appended_agent_archive_runs_it_and_sees_its_own_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, data) = test_archives(dir.path());
    let cache = Cache::new(dir.path().join("cache"));
    let files = BootFiles::new(
        resolve(&ids::DEBIAN12_K61_KERNEL),
        resolve(&ids::DEBIAN12_K61_INITRD),
    )
    .append_initrd(&data)
    .append_agent(&agent)
    .unwrap()
    .cmdline_args("agar.modules=ata_piix,sd_mod")
    .unwrap();
    let disk = BiosDisk::new(files).format(DiskFormat::Vhdx);

    let started = Instant::now();
    let first = disk.build(&cache).unwrap();
    let first_time = started.elapsed();
    let started = Instant::now();
    let again = disk.build(&cache).unwrap();
    let cached_time = started.elapsed();
    eprintln!("VHDX with agent: first build {first_time:?}, cached {cached_time:?}");
    assert!(!first.cached && again.cached && again.path == first.path);
    let check = Command::new("qemu-img")
        .args(["check", "-f", "vhdx"])
        .arg(&first.path)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");

    let b = qemu::boot(&ide_disk(&first.path, "vhdx"));

    assert_extra_archives_seen(&b);
    assert!(
        b.lines().contains(&"agar-init: loaded ata_piix"),
        "{}",
        b.console
    );
    // The guest found the disk it booted from, with its one partition.
    assert!(
        b.lines()
            .iter()
            .any(|l| l.starts_with("media-test: partition") && l.ends_with("sda1")),
        "{}",
        b.console
    );
}

#[test]
fn iso_with_an_appended_agent_archive_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, data) = test_archives(dir.path());
    let cache = Cache::new(dir.path().join("cache"));
    let files = BootFiles::new(
        resolve(&ids::DEBIAN12_K61_KERNEL),
        resolve(&ids::DEBIAN12_K61_INITRD),
    )
    .append_initrd(&data)
    .append_agent(&agent)
    .unwrap();

    let started = Instant::now();
    let iso = BiosIso::new(files).build(&cache).unwrap();
    eprintln!("ISO with agent: first build {:?}", started.elapsed());

    let b = qemu::boot(&cdrom(&iso.path));

    assert_extra_archives_seen(&b);
}
