//! The media recipes on small stand-in inputs, read back with independent tools (mtools,
//! xorriso, qemu-img) and agar's disk crate. Booting real media is `tests/media_qemu.rs`.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::*;

/// A file the checks take for a bzImage: `HdrS` at 0x202, otherwise filler.
fn fake_kernel(dir: &Path) -> PathBuf {
    let mut k: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    k[0x202..0x206].copy_from_slice(b"HdrS");
    let p = dir.join("vmlinuz");
    std::fs::write(&p, k).unwrap();
    p
}

fn archive(path: &str, content: &[u8]) -> Vec<u8> {
    let mut a = cpio::Archive::new();
    a.add(path, 0o644, cpio::Node::File(content.to_vec()));
    a.to_bytes()
}

fn fake_initrd(dir: &Path) -> PathBuf {
    let p = dir.join("initrd");
    // An odd length, so appending needs padding.
    let mut bytes = archive("init", b"#!/bin/sh\necho fake\n");
    bytes.extend_from_slice(b"\0\0\0");
    std::fs::write(&p, bytes).unwrap();
    p
}

struct Inputs {
    dir: tempfile::TempDir,
    kernel: PathBuf,
    initrd: PathBuf,
}

fn inputs() -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let kernel = fake_kernel(dir.path());
    let initrd = fake_initrd(dir.path());
    Inputs {
        dir,
        kernel,
        initrd,
    }
}

fn tools() -> &'static Toolchain {
    Toolchain::system()
}

fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[test]
fn command_lines_a_medium_cannot_carry_are_refused() {
    let i = inputs();
    let files = BootFiles::new(&i.kernel, &i.initrd);
    assert_eq!(files.cmdline(), "console=ttyS0");
    for (bad, why) in [
        ("quiet\nDEFAULT evil", "contains '\\n'"),
        ("initrd=/other.img", "sets initrd="),
        ("lang=fr_FR.UTF-8 é", "contains 'é'"),
    ] {
        let e = files.clone().cmdline_args(bad).unwrap_err().to_string();
        assert!(e.contains(why), "{bad:?}: {e}");
    }
    let long = "x".repeat(MAX_CMDLINE + 1);
    let e = files
        .clone()
        .replace_cmdline(&long)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at most 1024"), "{e}");
    let ok = files
        .cmdline_args("agar.modules=ata_piix,sd_mod")
        .unwrap()
        .cmdline_args(" agar.poweroff ")
        .unwrap();
    assert_eq!(
        ok.cmdline(),
        "console=ttyS0 agar.modules=ata_piix,sd_mod agar.poweroff"
    );
}

#[test]
fn inputs_that_are_not_a_kernel_or_an_initramfs_are_named() {
    let i = inputs();
    let build = |files: BootFiles| {
        BiosDisk::new(files)
            .key(tools())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let missing = i.dir.path().join("nope");
    let e = build(BootFiles::new(&missing, &i.initrd));
    assert!(e.contains("nope: does not exist"), "{e}");
    // The initramfs is not a kernel.
    let e = build(BootFiles::new(&i.initrd, &i.initrd));
    assert!(e.contains("is not a Linux bzImage"), "{e}");
    let e = build(BootFiles::new(&i.kernel, &i.kernel));
    assert!(e.contains("is not an initramfs archive"), "{e}");
    let e = build(BootFiles::new(&i.kernel, &i.initrd).append_initrd_bytes(Vec::new()));
    assert!(e.contains("is empty"), "{e}");
    let e = build(BootFiles::new(&i.kernel, i.dir.path()));
    assert!(e.contains("is not a regular file"), "{e}");
    let e = BootFiles::new(&i.kernel, &i.initrd)
        .append_agent(&i.initrd)
        .unwrap_err()
        .to_string();
    assert!(e.contains("neither an ELF executable nor a script"), "{e}");
}

#[test]
fn a_payload_too_large_for_fat16_is_refused_before_it_is_read() {
    let i = inputs();
    // Sparse: 1.5 GiB that costs nothing to make (and would take seconds to hash).
    let big = i.dir.path().join("big.cpio");
    std::fs::write(&big, b"070701").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(3 << 29)
        .unwrap();
    let e = BiosIso::new(BootFiles::new(&i.kernel, &i.initrd).append_initrd(&big))
        .key(tools())
        .unwrap_err();
    assert!(matches!(e, MediaError::TooLarge { .. }), "{e}");
}

#[test]
fn the_key_covers_every_input_but_not_where_the_files_are() {
    let i = inputs();
    let base = BootFiles::new(&i.kernel, &i.initrd);
    let key = |d: BiosDisk| d.key(tools()).unwrap();
    let k0 = key(BiosDisk::new(base.clone()));
    // Same contents elsewhere: same key.
    let moved = i.dir.path().join("moved");
    std::fs::create_dir(&moved).unwrap();
    std::fs::copy(&i.kernel, moved.join("k")).unwrap();
    std::fs::copy(&i.initrd, moved.join("i")).unwrap();
    assert_eq!(
        key(BiosDisk::new(BootFiles::new(
            moved.join("k"),
            moved.join("i")
        ))),
        k0
    );
    let others = [
        key(BiosDisk::new(base.clone()).format(DiskFormat::Raw)),
        key(BiosDisk::new(base.clone()).format(DiskFormat::Vhdx)),
        key(BiosDisk::new(
            base.clone().cmdline_args("agar.poweroff").unwrap(),
        )),
        key(BiosDisk::new(
            base.clone().append_initrd_bytes(archive("a", b"1")),
        )),
        key(BiosDisk::new(
            base.clone().append_initrd_bytes(archive("a", b"2")),
        )),
        BiosIso::new(base.clone()).key(tools()).unwrap(),
    ];
    for (n, k) in others.iter().enumerate() {
        assert_ne!(*k, k0, "variant {n}");
    }
    let mut all = others.to_vec();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), others.len());
}

#[test]
fn raw_disk_has_a_bootable_mbr_partition_holding_the_files() {
    let i = inputs();
    let extra = archive("sbin/agar-agent", b"#!/bin/sh\n");
    let files = BootFiles::new(&i.kernel, &i.initrd)
        .append_initrd_bytes(extra.clone())
        .cmdline_args("agar.poweroff")
        .unwrap();
    let disk = BiosDisk::new(files).format(DiskFormat::Raw);
    let out = i.dir.path().join("disk.img");

    disk.write_to(&out, tools()).unwrap();

    let img = std::fs::read(&out).unwrap();
    assert_eq!(img.len() as u64, (2048 + 32 * 2048) * 512);
    // MBR: syslinux's boot code, signature, one bootable FAT16 partition at 2048.
    let mbr_bin = std::fs::read(
        tools()
            .resolve(MediumKind::Disk)
            .unwrap()
            .file(tools::DataFile::MbrBin)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(&img[..mbr_bin.len()], &mbr_bin[..]);
    assert_eq!(&img[510..512], &[0x55, 0xaa]);
    let entry = &img[446..462];
    assert_eq!(entry[0], 0x80, "bootable");
    assert_eq!(entry[4], 6, "FAT16");
    assert_eq!(le32(entry, 8), 2048);
    assert_eq!(le32(entry, 12), 32 * 2048);
    assert_ne!(le32(&img, 440), 0, "disk signature");
    // The partition's boot sector: syslinux's, with hidden sectors = its start.
    let vbr = &img[1 << 20..(1 << 20) + 512];
    assert_eq!(&vbr[3..11], b"SYSLINUX");
    assert_eq!(le32(vbr, 28), 2048);
    assert_eq!(&vbr[54..62], b"FAT16   ");
    // mtools reads the files back: the initramfs is the base + padding + the extra archive.
    let at = format!("{}@@1M", out.display());
    let listing = String::from_utf8(run_ok(
        Command::new("mdir").args(["-i", &at, "-a", "-b", "::/"]),
    ))
    .unwrap();
    for f in [
        "vmlinuz",
        "initrd.img",
        "syslinux.cfg",
        "ldlinux.sys",
        "ldlinux.c32",
    ] {
        assert!(listing.contains(&format!("::/{f}")), "{f}: {listing}");
    }
    let cfg = run_ok(Command::new("mtype").args(["-i", &at, "::/syslinux.cfg"]));
    assert_eq!(
        String::from_utf8(cfg).unwrap(),
        assemble::loader_config("console=ttyS0 agar.poweroff")
    );
    let initrd = run_ok(Command::new("mtype").args(["-i", &at, "::/initrd.img"]));
    let mut expected = std::fs::read(&i.initrd).unwrap();
    expected.push(0); // padded to 4
    expected.extend_from_slice(&extra);
    assert_eq!(initrd, expected);
    let kernel = run_ok(Command::new("mtype").args(["-i", &at, "::/vmlinuz"]));
    assert_eq!(kernel, std::fs::read(&i.kernel).unwrap());
}

#[test]
fn vhd_and_vhdx_hold_the_raw_disk_and_pass_qemu_img() {
    let i = inputs();
    let files = BootFiles::new(&i.kernel, &i.initrd);
    let raw = i.dir.path().join("d.img");
    let vhd = i.dir.path().join("d.vhd");
    BiosDisk::new(files.clone())
        .format(DiskFormat::Raw)
        .write_to(&raw, tools())
        .unwrap();
    BiosDisk::new(files).write_to(&vhd, tools()).unwrap();

    let info = disk::image::info(&vhd).unwrap();
    assert_eq!(info.format, disk::image::ImageFormat::Vhd);
    assert_eq!(info.subformat, "dynamic");
    assert_eq!(info.virtual_size, std::fs::metadata(&raw).unwrap().len());
    // qemu-img, the interop reference: the same sectors as the raw disk. (QEMU 7.2's
    // `qemu-img check` has no checker for VHD ("vpc"); it has one for VHDX, below.)
    let qemu_info = String::from_utf8(run_ok(
        Command::new("qemu-img")
            .args(["info", "-f", "vpc", "--output", "json"])
            .arg(&vhd),
    ))
    .unwrap();
    assert!(
        qemu_info.contains(&format!("\"virtual-size\": {}", info.virtual_size)),
        "{qemu_info}"
    );
    run_ok(
        Command::new("qemu-img")
            .args(["compare", "-f", "vpc", "-F", "raw"])
            .arg(&vhd)
            .arg(&raw),
    );
    // Dynamic: the 33 MiB disk takes a fraction of that.
    assert!(std::fs::metadata(&vhd).unwrap().len() < 8 << 20);

    let vhdx = i.dir.path().join("d.vhdx");
    BiosDisk::new(BootFiles::new(&i.kernel, &i.initrd))
        .format(DiskFormat::Vhdx)
        .write_to(&vhdx, tools())
        .unwrap();
    run_ok(
        Command::new("qemu-img")
            .args(["check", "-f", "vhdx"])
            .arg(&vhdx),
    );
    run_ok(
        Command::new("qemu-img")
            .args(["compare", "-f", "vhdx", "-F", "raw"])
            .arg(&vhdx)
            .arg(&raw),
    );
}

#[test]
fn iso_has_an_el_torito_record_and_the_files() {
    let i = inputs();
    let files = BootFiles::new(&i.kernel, &i.initrd)
        .append_initrd_bytes(archive("x", b"extra"))
        .cmdline_args("agar.poweroff")
        .unwrap();
    let out = i.dir.path().join("boot.iso");

    BiosIso::new(files).write_to(&out, tools()).unwrap();

    let iso = std::fs::read(&out).unwrap();
    // Sector 17: the El Torito boot record volume descriptor.
    let brvd = &iso[17 * 2048..18 * 2048];
    assert_eq!(&brvd[1..6], b"CD001");
    assert!(brvd[7..].starts_with(b"EL TORITO SPECIFICATION"));
    let listing = String::from_utf8(run_ok(
        Command::new("xorriso")
            .args(["-no_rc", "-indev"])
            .arg(&out)
            .args(["-find", "/"]),
    ))
    .unwrap();
    for f in [
        "'/vmlinuz'",
        "'/initrd.img'",
        "'/isolinux/isolinux.bin'",
        "'/isolinux/ldlinux.c32'",
        "'/isolinux/isolinux.cfg'",
        "'/isolinux/boot.cat'",
    ] {
        assert!(listing.contains(f), "{f}: {listing}");
    }
    let cfg = i.dir.path().join("isolinux.cfg");
    run_ok(
        Command::new("xorriso")
            .args(["-no_rc", "-osirrox", "on", "-indev"])
            .arg(&out)
            .args(["-extract", "/isolinux/isolinux.cfg"])
            .arg(&cfg),
    );
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        assemble::loader_config("console=ttyS0 agar.poweroff")
    );
}

#[test]
fn same_inputs_give_the_same_bytes_at_another_time_from_other_files() {
    let i = inputs();
    let extra = i.dir.path().join("extra.cpio");
    std::fs::write(&extra, archive("etc/marker", b"hello")).unwrap();
    // The second build reads read-only copies with other timestamps and modes.
    let copies = i.dir.path().join("copies");
    std::fs::create_dir(&copies).unwrap();
    for (src, name) in [(&i.kernel, "k"), (&i.initrd, "i"), (&extra, "e")] {
        let dst = copies.join(name);
        std::fs::copy(src, &dst).unwrap();
        let mut p = std::fs::metadata(&dst).unwrap().permissions();
        p.set_readonly(true);
        std::fs::set_permissions(&dst, p).unwrap();
    }
    let first = BootFiles::new(&i.kernel, &i.initrd).append_initrd(&extra);
    let second = BootFiles::new(copies.join("k"), copies.join("i")).append_initrd(copies.join("e"));
    let build = |files: &BootFiles, n: u32| {
        let vhd = i.dir.path().join(format!("{n}.vhd"));
        let raw = i.dir.path().join(format!("{n}.img"));
        let iso = i.dir.path().join(format!("{n}.iso"));
        BiosDisk::new(files.clone())
            .write_to(&vhd, tools())
            .unwrap();
        BiosDisk::new(files.clone())
            .format(DiskFormat::Raw)
            .write_to(&raw, tools())
            .unwrap();
        BiosIso::new(files.clone()).write_to(&iso, tools()).unwrap();
        [vhd, raw, iso].map(|p| std::fs::read(p).unwrap())
    };

    let a = build(&first, 1);
    // FAT timestamps have 2-second steps.
    std::thread::sleep(Duration::from_millis(2100));
    let b = build(&second, 2);

    for (n, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(x == y, "medium {n} differs between builds");
    }
}

#[test]
fn a_second_build_is_a_cache_lookup_and_concurrent_builds_build_once() {
    let i = inputs();
    let cache = Cache::new(i.dir.path().join("cache"));
    let disk = BiosDisk::new(BootFiles::new(&i.kernel, &i.initrd));

    let results: Vec<Medium> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| disk.build(&cache).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    assert_eq!(results.iter().filter(|m| !m.cached).count(), 1);
    assert!(results.iter().all(|m| m.path == results[0].path));
    let again = disk.build(&cache).unwrap();
    assert!(again.cached);
    assert_eq!(again.path, results[0].path);
    assert_eq!(again.sha256, Sha256::of_file(&again.path).unwrap().0);
    assert!(
        std::fs::metadata(&again.path)
            .unwrap()
            .permissions()
            .readonly()
    );
    let r = cache.media_ref(&again.key).unwrap().unwrap();
    assert_eq!((r.medium.as_str(), r.format.as_str()), ("disk", "vhd"));
    // Nothing left behind in tmp/.
    assert!(cache.tmp_files().unwrap().is_empty());
    // A medium whose blob was removed (gc, verify) is built again.
    std::fs::remove_file(&again.path).unwrap();
    let rebuilt = disk.build(&cache).unwrap();
    assert!(!rebuilt.cached);
    assert_eq!(rebuilt.sha256, again.sha256);
}

#[test]
fn missing_tools_are_named_with_their_package_when_building() {
    let i = inputs();
    let empty = tempfile::tempdir().unwrap();
    let none = Toolchain::new(vec![empty.path().to_owned()], vec![]);
    let cache = Cache::new(i.dir.path().join("cache"));
    let files = BootFiles::new(&i.kernel, &i.initrd);
    let e = BiosDisk::new(files.clone())
        .build_with(&cache, &none)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sudo apt-get install dosfstools"), "{e}");
    let e = BiosIso::new(files)
        .build_with(&cache, &none)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sudo apt-get install xorriso"), "{e}");
}

#[test]
fn a_failing_tool_reports_its_command_and_output() {
    let i = inputs();
    // The host's tools, except a mkfs.fat that fails.
    let bin = i.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for t in ["mcopy", "syslinux", "sfdisk", "mattrib"] {
        let real = ["/usr/bin", "/usr/sbin", "/sbin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(t))
            .find(|p| p.exists())
            .unwrap();
        std::os::unix::fs::symlink(real, bin.join(t)).unwrap();
    }
    let fake = bin.join("mkfs.fat");
    std::fs::write(&fake, "#!/bin/sh\necho 'mkfs.fat: disk full' >&2\nexit 3\n").unwrap();
    let mut p = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
    std::fs::set_permissions(&fake, p).unwrap();
    let t = Toolchain::new(
        vec![bin, PathBuf::from("/usr/bin"), PathBuf::from("/bin")],
        vec![PathBuf::from("/usr/lib"), PathBuf::from("/usr/share")],
    );
    let cache = Cache::new(i.dir.path().join("cache"));

    let e = BiosDisk::new(BootFiles::new(&i.kernel, &i.initrd))
        .build_with(&cache, &t)
        .unwrap_err()
        .to_string();

    assert!(e.contains("mkfs.fat -C -F 16"), "{e}");
    assert!(
        e.contains("exit status: 3") && e.contains("disk full"),
        "{e}"
    );
    // The failed build left nothing behind.
    assert!(cache.tmp_files().unwrap().is_empty());
}
