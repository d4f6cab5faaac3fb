//! `--pcat` end to end on the software CPU: SeaBIOS boots syslinux from an IDE hard disk (a
//! VHD) and isolinux from an ATAPI CD-ROM (an ISO), each loading Debian's 6.1 cloud kernel and
//! the agent-less initramfs, whose console shell the test drives through agar-vmm's stdin.
//!
//! Needs the guest artifacts (`target/release/agar artifacts restore`, or any framework run)
//! and the media tools (`mtools`, `syslinux`, `xorriso`, ...; see docs/src/guest-contract.md),
//! and Debian's `seabios` package for the default firmware.

mod common;

use std::path::Path;
use std::path::PathBuf;

use common::guest::Guest;

use artifacts::ids;
use artifacts::media::BiosDisk;
use artifacts::media::BiosIso;
use artifacts::media::BootFiles;
use sha2::Digest;

/// Boot media whose kernel loads the IDE driver and then leaves a shell on the console.
fn boot_files() -> (artifacts::Resolver, BootFiles) {
    let resolver = artifacts::Resolver::from_env().expect("artifact resolver");
    let files = BootFiles::from_artifacts(
        &resolver,
        ids::DEBIAN12_K61_KERNEL,
        ids::DEBIAN12_K61_INITRD,
    )
    .unwrap_or_else(|e| {
        panic!("guest artifacts missing ({e}); run `target/release/agar artifacts restore`")
    })
    .cmdline_args("agar.modules=ata_piix,sd_mod")
    .unwrap();
    (resolver, files)
}

/// The disk as the guest should see it: its size in 512-byte sectors and the SHA-256 of
/// every byte (read through agar's own VHD reader).
fn expected(path: &Path) -> (u64, String) {
    let spec = disk::DiskSpec::parse(&format!("file:{};ro", path.display())).unwrap();
    let d = disk::open(&spec).unwrap();
    assert_eq!(d.sector_size(), 512);
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut sector = 0;
    while sector < d.sector_count() {
        let n = (d.sector_count() - sector).min(2048);
        let b = &mut buf[..n as usize * 512];
        d.read(sector, b).unwrap();
        h.update(&*b);
        sector += n;
    }
    (d.sector_count(), format!("{:x}", h.finalize()))
}

/// agar-vmm on `emu` booting SeaBIOS from `ide`.
fn start(ide: &str) -> Guest {
    Guest::spawn(common::guest::pcat_emu_command(&[ide]))
}

fn ready(l: &str) -> Option<()> {
    l.contains("agar-init: ready").then_some(())
}

#[test]
fn bios_boots_from_the_ide_disk_and_linux_reads_it_back() {
    let (resolver, files) = boot_files();
    let medium = BiosDisk::new(files).build(resolver.cache()).unwrap();
    let (sectors, sha) = expected(&medium.path);
    let mut g = start(&format!("memdiff:file:{}", medium.path.display()));
    g.wait_for(60, |l| l.contains("SYSLINUX").then_some(()));
    g.wait_for(300, ready);
    assert!(
        g.seen
            .iter()
            .any(|l| l.contains("agar-init: loaded ata_piix")),
        "{}",
        g.tail()
    );
    assert_eq!(
        g.run(
            "driver",
            "ls /sys/bus/pci/drivers/ata_piix | grep -c 0000:00:01.1"
        ),
        "1"
    );
    assert_eq!(
        g.run("size", "cat /sys/block/sda/size"),
        sectors.to_string()
    );
    assert_eq!(
        g.run("sha", "busybox sha256sum < /dev/sda | cut -d' ' -f1"),
        sha
    );
    // A write lands in the RAM layer and reads back (the image itself never changes).
    assert_eq!(
        g.run(
            "write",
            "echo agar-ide-write | dd of=/dev/sda bs=512 seek=100 conv=fsync 2>/dev/null; \
             echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/sda bs=512 skip=100 count=1 \
             2>/dev/null | head -c 14"
        ),
        "agar-ide-write"
    );
    assert_eq!(g.power_off(), 0);
    assert_eq!(expected(&medium.path).1, sha, "the image is unchanged");
}

#[test]
fn bios_boots_from_the_ide_cdrom() {
    let (resolver, files) = boot_files();
    let medium = BiosIso::new(files).build(resolver.cache()).unwrap();
    let iso: PathBuf = medium.path;
    let mut g = start(&format!("file:{};ro,dvd", iso.display()));
    g.wait_for(60, |l| l.contains("ISOLINUX").then_some(()));
    g.wait_for(300, ready);
    assert_eq!(
        g.run("atapi", "dmesg | grep -c 'ATAPI: AGAR DVD-ROM'"),
        "1",
        "{}",
        g.tail()
    );
    assert_eq!(g.power_off(), 0);
}
