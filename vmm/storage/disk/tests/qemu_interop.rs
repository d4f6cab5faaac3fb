//! Interop with qemu-img, the reference implementation: images qemu-img makes read back
//! byte-identical to their raw source, and images agar makes or writes pass `qemu-img check`
//! and `qemu-img compare` against the data agar was given.
//!
//! Without qemu-img these tests print a loud SKIPPED banner and pass, unless
//! `AGAR_REQUIRE_QEMU_IMG=1` (set in CI), which makes a missing qemu-img a failure.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use disk::Disk;
use disk::DiskSpec;
use disk::image;
use disk::image::CreateOptions;
use disk::image::ImageFormat;

const MIB: u64 = 1 << 20;

fn have_qemu_img() -> bool {
    let found = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("AGAR_REQUIRE_QEMU_IMG").is_none(),
            "qemu-img is required (AGAR_REQUIRE_QEMU_IMG is set) but was not found"
        );
        eprintln!();
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        eprintln!("!!! SKIPPED: qemu-img not found; the VHD/VHDX interop tests did not run. !!!");
        eprintln!("!!! Install qemu-utils (CI sets AGAR_REQUIRE_QEMU_IMG=1).                !!!");
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        eprintln!();
    }
    found
}

/// Runs qemu-img; returns (exit code, stdout + stderr).
fn qemu_img(args: &[&str]) -> (i32, String) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn qemu_img_ok(args: &[&str]) -> String {
    let (code, text) = qemu_img(args);
    assert_eq!(code, 0, "qemu-img {args:?} failed: {text}");
    text
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A deterministic byte stream (xorshift).
struct Noise(u64);

impl Noise {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A 40 MiB raw disk: data at the start, scattered 4 KiB and 512-byte pieces, zeros between,
/// and a non-zero last sector.
fn raw_source(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut data = vec![0u8; 40 * MIB as usize];
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    noise.fill(&mut data[..MIB as usize + 4096]);
    for _ in 0..40 {
        let at = noise.below(40 * MIB / 512 - 8) as usize * 512;
        let len = if noise.below(2) == 0 { 512 } else { 4096 };
        noise.fill(&mut data[at..at + len]);
    }
    let end = data.len();
    noise.fill(&mut data[end - 512..]);
    let path = dir.join("source.raw");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

fn read_all(disk: &dyn Disk) -> Vec<u8> {
    let mut out = vec![0u8; (disk.sector_count() * u64::from(disk.sector_size())) as usize];
    for (i, chunk) in out.chunks_mut(MIB as usize).enumerate() {
        disk.read(i as u64 * MIB / u64::from(disk.sector_size()), chunk)
            .unwrap();
    }
    out
}

/// `got` is `expect` followed only by zeros (qemu rounds VHD sizes up to a CHS geometry).
fn assert_same_data(got: &[u8], expect: &[u8], what: &str) {
    assert!(
        got.len() >= expect.len(),
        "{what}: {} < {} bytes",
        got.len(),
        expect.len()
    );
    if got[..expect.len()] != *expect {
        let first = got.iter().zip(expect).position(|(a, b)| a != b).unwrap();
        panic!("{what}: first difference at byte {first}");
    }
    assert!(
        got[expect.len()..].iter().all(|&b| b == 0),
        "{what}: non-zero tail"
    );
}

/// qemu-img's idea of the virtual size (`-f` is needed: qemu probes fixed VHDs as raw).
fn virtual_size(path: &Path, format: &str) -> u64 {
    let text = qemu_img_ok(&["info", "-f", format, "--output=json", s(path)]);
    let at = text.find("\"virtual-size\":").unwrap() + "\"virtual-size\":".len();
    text[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn qemu_made_images_read_back_identical_to_their_raw_source() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (raw, data) = raw_source(dir.path());
    let cases: &[(&str, &str, &str)] = &[
        ("vpc-dynamic.vhd", "vpc", "subformat=dynamic"),
        ("vpc-fixed.vhd", "vpc", "subformat=fixed"),
        (
            "vpc-force-size.vhd",
            "vpc",
            "subformat=dynamic,force_size=on",
        ),
        ("vhdx-dynamic.vhdx", "vhdx", "subformat=dynamic"),
        ("vhdx-1m.vhdx", "vhdx", "subformat=dynamic,block_size=1M"),
        ("vhdx-8m.vhdx", "vhdx", "subformat=dynamic,block_size=8M"),
        (
            "vhdx-256m.vhdx",
            "vhdx",
            "subformat=dynamic,block_size=256M",
        ),
        ("vhdx-fixed.vhdx", "vhdx", "subformat=fixed"),
        (
            "vhdx-nozero.vhdx",
            "vhdx",
            "subformat=dynamic,block_state_zero=off",
        ),
        ("vhdx-biglog.vhdx", "vhdx", "subformat=dynamic,log_size=4M"),
    ];
    for (name, format, options) in cases {
        let path = dir.path().join(name);
        qemu_img_ok(&[
            "convert",
            "-f",
            "raw",
            "-O",
            format,
            "-o",
            options,
            s(&raw),
            s(&path),
        ]);
        let disk = disk::open_file(&path, true).unwrap();
        assert_eq!(
            disk.sector_count() * 512,
            virtual_size(&path, format),
            "{name}: agar and qemu-img disagree on the size"
        );
        assert_same_data(&read_all(&*disk), &data, name);
        // The same through the memdiff layer the seed uses.
        let spec = DiskSpec::parse(&format!("memdiff:file:{}", path.display())).unwrap();
        let layered = disk::open(&spec).unwrap();
        assert_same_data(&read_all(&*layered), &data, name);
    }
}

/// Writes `data` into `disk` at scattered places (mirrored into `expect`), then flushes.
fn scatter_writes(disk: &dyn Disk, expect: &mut [u8], seed: u64) {
    let mut noise = Noise(seed);
    let sectors = expect.len() as u64 / 512;
    for i in 0..300 {
        let len = [512u64, 4096, 65536, 3 * 512][i % 4];
        let sector = noise.below(sectors - len / 512) & !7;
        let mut buf = vec![0u8; len as usize];
        noise.fill(&mut buf);
        disk.write(sector, &buf).unwrap();
        let at = (sector * 512) as usize;
        expect[at..at + len as usize].copy_from_slice(&buf);
    }
    disk.flush().unwrap();
}

fn qemu_check(path: &Path, format: &str) {
    let (code, text) = qemu_img(&["check", "-f", format, s(path)]);
    // vpc has no consistency checker in qemu-img (exit 63: "not supported").
    assert!(
        code == 0 || (format == "vpc" && code == 63),
        "qemu-img check {}: exit {code}: {text}",
        path.display()
    );
}

fn qemu_compare(raw: &Path, path: &Path, format: &str) {
    qemu_img_ok(&["compare", "-f", "raw", "-F", format, s(raw), s(path)]);
}

#[test]
fn agar_made_images_pass_qemu_check_and_compare() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (raw, data) = raw_source(dir.path());
    let cases: &[(&str, &str, CreateOptions)] = &[
        ("dyn.vhd", "vpc", CreateOptions::default()),
        (
            "dyn-512k.vhd",
            "vpc",
            CreateOptions {
                block_size: Some(512 * 1024),
                ..Default::default()
            },
        ),
        (
            "fixed.vhd",
            "vpc",
            CreateOptions {
                fixed: true,
                ..Default::default()
            },
        ),
        ("dyn.vhdx", "vhdx", CreateOptions::default()),
        (
            "dyn-1m.vhdx",
            "vhdx",
            CreateOptions {
                block_size: Some(MIB as u32),
                ..Default::default()
            },
        ),
        (
            "fixed.vhdx",
            "vhdx",
            CreateOptions {
                fixed: true,
                block_size: Some(8 * MIB as u32),
                ..Default::default()
            },
        ),
    ];
    for (name, format, options) in cases {
        // Converted by agar.
        let path = dir.path().join(name);
        image::convert(&raw, &path, options).unwrap();
        assert_eq!(virtual_size(&path, format), data.len() as u64, "{name}");
        qemu_check(&path, format);
        qemu_compare(&raw, &path, format);

        // Then written at random by agar, and compared with the same writes to a raw copy.
        let mut expect = data.clone();
        {
            let disk = disk::open_file(&path, false).unwrap();
            scatter_writes(&*disk, &mut expect, 7);
        }
        let expected_raw = dir.path().join(format!("{name}.expected.raw"));
        std::fs::write(&expected_raw, &expect).unwrap();
        qemu_check(&path, format);
        qemu_compare(&expected_raw, &path, format);

        // Created empty by agar and written from scratch.
        let fresh = dir.path().join(format!("fresh-{name}"));
        image::create(
            &fresh,
            ImageFormat::from_path(&fresh).unwrap(),
            data.len() as u64,
            options,
        )
        .unwrap();
        let mut expect = vec![0u8; data.len()];
        {
            let disk = disk::open_file(&fresh, false).unwrap();
            scatter_writes(&*disk, &mut expect, 11);
        }
        std::fs::write(&expected_raw, &expect).unwrap();
        qemu_check(&fresh, format);
        qemu_compare(&expected_raw, &fresh, format);
    }
}

#[test]
fn agar_writes_into_qemu_made_images() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (raw, data) = raw_source(dir.path());
    for (name, format, options) in [
        ("q.vhd", "vpc", "subformat=dynamic,force_size=on"),
        ("qf.vhd", "vpc", "subformat=fixed,force_size=on"),
        ("q.vhdx", "vhdx", "subformat=dynamic,block_size=2M"),
        ("qf.vhdx", "vhdx", "subformat=fixed"),
    ] {
        let path = dir.path().join(name);
        qemu_img_ok(&[
            "convert",
            "-f",
            "raw",
            "-O",
            format,
            "-o",
            options,
            s(&raw),
            s(&path),
        ]);
        let mut expect = data.clone();
        {
            let disk = disk::open_file(&path, false).unwrap();
            scatter_writes(&*disk, &mut expect, 3);
        }
        let expected_raw = dir.path().join("expected.raw");
        std::fs::write(&expected_raw, &expect).unwrap();
        qemu_check(&path, format);
        qemu_compare(&expected_raw, &path, format);
    }
}

#[test]
fn four_k_sector_vhdx_round_trips() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (raw, data) = raw_source(dir.path());
    let path = dir.path().join("4k.vhdx");
    let options = CreateOptions {
        sector_size: Some(4096),
        block_size: Some(2 * MIB as u32),
        ..Default::default()
    };
    image::convert(&raw, &path, &options).unwrap();
    // qemu-img 7.2 refuses 4096-byte logical sectors ("Operation not supported"); where it
    // opens them, it checks them too. Either way agar checks itself: the image reads back as
    // the source, and converts back to an identical raw file.
    let (code, text) = qemu_img(&["info", "-f", "vhdx", s(&path)]);
    if code == 0 {
        qemu_check(&path, "vhdx");
        qemu_compare(&raw, &path, "vhdx");
    } else {
        eprintln!(
            "note: this qemu-img cannot open 4K-sector VHDX: {}",
            text.trim()
        );
    }
    let disk = disk::open_file(&path, true).unwrap();
    assert_eq!(disk.sector_size(), 4096);
    assert_same_data(&read_all(&*disk), &data, "4k.vhdx");
    let back = dir.path().join("back.raw");
    image::convert(&path, &back, &CreateOptions::default()).unwrap();
    qemu_img_ok(&["compare", "-f", "raw", "-F", "raw", s(&raw), s(&back)]);
}

/// A VHDX left with an active log (as a crash would leave it), whose in-place BAT update was
/// lost: only replaying agar's log entry brings the data back.
fn crashed_vhdx(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("crashed.vhdx");
    image::create(
        &path,
        ImageFormat::Vhdx,
        16 * MIB,
        &CreateOptions {
            block_size: Some(MIB as u32),
            ..Default::default()
        },
    )
    .unwrap();
    let mut expect = vec![0u8; 16 * MIB as usize];
    let mut noise = Noise(5);
    noise.fill(&mut expect[5 * MIB as usize..5 * MIB as usize + 8192]);
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let vhdx = vhdx::Vhdx::open(Arc::new(file), false).unwrap();
    vhdx.write(5 * MIB, &expect[5 * MIB as usize..5 * MIB as usize + 8192])
        .unwrap();
    // No flush: the header keeps naming the log.
    std::mem::forget(vhdx);
    // Lose the in-place BAT page (the BAT is at 3 MiB).
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0u8; 4096], 3 * MIB).unwrap();
    (path, expect)
}

#[test]
fn qemu_replays_the_log_agar_writes() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, expect) = crashed_vhdx(dir.path());
    // qemu refuses a dirty image read-only, which shows the log is there.
    let (code, text) = qemu_img(&["info", s(&path)]);
    assert_ne!(code, 0, "qemu-img opened a dirty VHDX read-only: {text}");
    assert!(text.contains("log"), "{text}");
    // agar's own read-only open replays in memory and leaves the file alone.
    let before = std::fs::read(&path).unwrap();
    let disk = disk::open_file(&path, true).unwrap();
    assert_same_data(&read_all(&*disk), &expect, "agar in-memory replay");
    drop(disk);
    assert!(
        std::fs::read(&path).unwrap() == before,
        "read-only open wrote the file"
    );
    // qemu replays agar's log entry and finds the data.
    qemu_img_ok(&["check", "-r", "all", s(&path)]);
    let expected_raw = dir.path().join("expected.raw");
    std::fs::write(&expected_raw, &expect).unwrap();
    qemu_compare(&expected_raw, &path, "vhdx");
}

#[test]
fn agar_replay_into_the_file_matches_qemu() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, expect) = crashed_vhdx(dir.path());
    let disk = disk::open_file(&path, false).unwrap();
    assert_same_data(&read_all(&*disk), &expect, "agar replay");
    drop(disk);
    qemu_check(&path, "vhdx");
    let expected_raw = dir.path().join("expected.raw");
    std::fs::write(&expected_raw, &expect).unwrap();
    qemu_compare(&expected_raw, &path, "vhdx");
}
