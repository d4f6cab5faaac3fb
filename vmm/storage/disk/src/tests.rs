use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::Digest;

use super::*;
use crate::image::CreateOptions;
use crate::image::ImageFormat;

const MIB: u64 = 1 << 20;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) | 1)
        .collect()
}

fn read_vec(disk: &dyn Disk, sector: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xaa; len];
    disk.read(sector, &mut buf).unwrap();
    buf
}

fn sha256(path: &Path) -> Vec<u8> {
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

fn spec(s: &str) -> DiskSpec {
    DiskSpec::parse(s).unwrap()
}

fn file_spec(path: &Path, options: &str) -> DiskSpec {
    spec(&format!("file:{}{options}", path.display()))
}

fn memdiff_spec(path: &Path) -> DiskSpec {
    spec(&format!("memdiff:file:{}", path.display()))
}

#[test]
fn mem_disk_reads_zero_and_keeps_writes() {
    let disk = open(&spec("mem:1MB")).unwrap();
    assert_eq!(disk.sector_count(), 2048);
    assert_eq!(disk.sector_size(), 512);
    assert!(!disk.is_read_only());
    assert_eq!(read_vec(&*disk, 0, 4096), vec![0; 4096]);
    let data = pattern(3 * 512, 1);
    disk.write(126, &data).unwrap(); // straddles the first two chunks
    assert_eq!(read_vec(&*disk, 125, 5 * 512)[512..4 * 512], data[..]);
    assert_eq!(read_vec(&*disk, 125, 512), vec![0; 512]);
    disk.unmap(126, 2).unwrap();
    assert_eq!(read_vec(&*disk, 126, 3 * 512)[..1024], [0; 1024]);
    assert_eq!(read_vec(&*disk, 128, 512), data[1024..]);
}

#[test]
fn requests_are_checked_against_the_geometry() {
    let disk = open(&spec("mem:64KB")).unwrap();
    let mut buf = vec![0; 512];
    assert_eq!(
        disk.read(128, &mut buf).unwrap_err().kind(),
        DiskErrorKind::OutOfRange
    );
    assert_eq!(
        disk.read(u64::MAX, &mut buf).unwrap_err().kind(),
        DiskErrorKind::OutOfRange
    );
    assert_eq!(
        disk.read(0, &mut buf[..100]).unwrap_err().kind(),
        DiskErrorKind::InvalidArgument
    );
    assert_eq!(
        disk.unmap(100, u64::MAX).unwrap_err().kind(),
        DiskErrorKind::OutOfRange
    );
    disk.read(127, &mut buf).unwrap();
}

#[test]
fn memdiff_never_writes_the_base_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["base.raw", "base.vhd", "base.vhdx"] {
        let path = dir.path().join(name);
        image::create(
            &path,
            ImageFormat::from_path(&path).unwrap(),
            4 * MIB,
            &CreateOptions {
                block_size: name.ends_with(".vhdx").then_some(MIB as u32),
                ..Default::default()
            },
        )
        .unwrap();
        let base_data = pattern(MIB as usize, 7);
        {
            let disk = open(&file_spec(&path, "")).unwrap();
            disk.write(2048, &base_data).unwrap();
            disk.flush().unwrap();
        }
        let before = sha256(&path);
        let disk = open(&memdiff_spec(&path)).unwrap();
        assert!(disk.describe().starts_with("memdiff over"), "{name}");
        let new = pattern(8192, 99);
        disk.write(2048 + 4, &new).unwrap();
        disk.write(0, &new).unwrap();
        disk.flush().unwrap();
        let mut expect = base_data.clone();
        expect[2048..2048 + 8192].copy_from_slice(&new);
        assert_eq!(read_vec(&*disk, 2048, MIB as usize), expect, "{name}");
        assert_eq!(read_vec(&*disk, 0, 8192), new, "{name}");
        drop(disk);
        assert_eq!(sha256(&path), before, "{name} changed under memdiff");
        // And the base still holds only its own data.
        let base = open(&file_spec(&path, ";ro")).unwrap();
        assert_eq!(read_vec(&*base, 2048, MIB as usize), base_data, "{name}");
    }
}

#[test]
fn memdiff_reports_the_base_identity_and_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.vhdx");
    image::create(
        &path,
        ImageFormat::Vhdx,
        8 * MIB,
        &CreateOptions {
            sector_size: Some(4096),
            block_size: Some(MIB as u32),
            ..Default::default()
        },
    )
    .unwrap();
    let base = open(&file_spec(&path, ";ro")).unwrap();
    let diff = open(&memdiff_spec(&path)).unwrap();
    assert_eq!(diff.disk_id(), base.disk_id());
    assert_eq!(diff.sector_size(), 4096);
    assert_eq!(diff.sector_count(), 2048);
    assert!(base.is_read_only());
    assert!(!diff.is_read_only());
    // The id survives reopening: it comes from the file.
    assert_eq!(
        open(&file_spec(&path, ";ro")).unwrap().disk_id(),
        base.disk_id()
    );
    assert_eq!(base.disk_id().serial().len(), 20);
}

#[test]
fn read_only_files_refuse_writes() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["r.img", "r.vhd", "r.vhdx"] {
        let path = dir.path().join(name);
        image::create(
            &path,
            ImageFormat::from_path(&path).unwrap(),
            MIB,
            &CreateOptions::default(),
        )
        .unwrap();
        let disk = open(&file_spec(&path, ";ro")).unwrap();
        assert_eq!(
            disk.write(0, &[1; 512]).unwrap_err().kind(),
            DiskErrorKind::ReadOnly,
            "{name}"
        );
    }
}

#[test]
fn create_option_makes_missing_files_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    for (name, describe) in [
        ("new.raw", "raw"),
        ("new.vhd", "vhd dynamic"),
        ("new.vhdx", "vhdx dynamic"),
        ("new.bin", "raw"),
    ] {
        let path = dir.path().join(name);
        let disk = open(&file_spec(&path, ";create=2MB")).unwrap();
        assert_eq!(disk.describe(), describe);
        assert_eq!(disk.sector_count(), 4096);
        disk.write(7, &pattern(512, 1)).unwrap();
        drop(disk);
        // An existing file is used as it is.
        let disk = open(&file_spec(&path, ";create=8MB")).unwrap();
        assert_eq!(disk.sector_count(), 4096, "{name}");
        assert_eq!(read_vec(&*disk, 7, 512), pattern(512, 1), "{name}");
    }
}

#[test]
fn unimplemented_and_missing_things_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.raw");
    image::create(&path, ImageFormat::Raw, MIB, &CreateOptions::default()).unwrap();
    let err = open(&file_spec(&path, ";direct")).unwrap_err();
    assert_eq!(err.kind(), DiskErrorKind::Unsupported);
    assert!(err.to_string().contains("direct"), "{err}");
    let err = open(&file_spec(&dir.path().join("missing.vhdx"), "")).unwrap_err();
    assert_eq!(err.kind(), DiskErrorKind::NotFound);
    assert!(err.to_string().contains("missing.vhdx"), "{err}");
}

#[test]
fn garbage_with_a_vhd_cookie_is_a_corrupt_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.vhd");
    let mut bytes = vec![0u8; 4096];
    bytes[4096 - 512..4096 - 504].copy_from_slice(b"conectix");
    std::fs::write(&path, &bytes).unwrap();
    let err = open(&file_spec(&path, "")).unwrap_err();
    assert_eq!(err.kind(), DiskErrorKind::Corrupt);
    let path = dir.path().join("bad.vhdx");
    std::fs::write(&path, b"vhdxfile and nothing else").unwrap();
    assert_eq!(
        open(&file_spec(&path, "")).unwrap_err().kind(),
        DiskErrorKind::Corrupt
    );
}

fn convert_chain(dir: &Path, data: &[u8]) -> Vec<PathBuf> {
    let raw = dir.join("src.raw");
    std::fs::write(&raw, data).unwrap();
    let mut paths = vec![raw];
    for (name, fixed) in [
        ("a.vhd", false),
        ("b.vhdx", false),
        ("c.vhd", true),
        ("d.vhdx", true),
        ("e.img", false),
    ] {
        let dst = dir.join(name);
        let src = paths.last().unwrap().clone();
        image::convert(
            &src,
            &dst,
            &CreateOptions {
                fixed,
                ..Default::default()
            },
        )
        .unwrap();
        paths.push(dst);
    }
    paths
}

#[test]
fn convert_round_trips_through_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = vec![0u8; 6 * MIB as usize];
    data[..MIB as usize].copy_from_slice(&pattern(MIB as usize, 3));
    data[5 * MIB as usize + 512..5 * MIB as usize + 1024].copy_from_slice(&pattern(512, 9));
    let paths = convert_chain(dir.path(), &data);
    for path in &paths {
        let disk = open_file(path, true).unwrap();
        assert_eq!(read_vec(&*disk, 0, data.len()), data, "{}", path.display());
    }
    assert_eq!(std::fs::read(paths.last().unwrap()).unwrap(), data);
    let info = image::info(&dir.path().join("b.vhdx")).unwrap();
    assert_eq!(info.virtual_size, 6 * MIB);
    assert_eq!(info.allocated_blocks, Some(1));
    assert_eq!(info.subformat, "dynamic");
    assert_eq!(
        image::ImageFormat::from_path(Path::new("x.qcow2"))
            .unwrap_err()
            .kind(),
        DiskErrorKind::InvalidArgument
    );
}

#[test]
fn differencing_chains_open_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let base_path = dir.path().join("base.vhdx");
    image::create(
        &base_path,
        ImageFormat::Vhdx,
        4 * MIB,
        &CreateOptions {
            block_size: Some(MIB as u32),
            ..Default::default()
        },
    )
    .unwrap();
    let base_data = pattern(4 * MIB as usize, 1);
    open(&file_spec(&base_path, ""))
        .unwrap()
        .write(0, &base_data)
        .unwrap();
    let child_path = dir.path().join("child.vhdx");
    {
        let base = vhdx::open_path(&base_path, true).unwrap();
        let file = std::fs::File::create_new(&child_path).unwrap();
        vhdx::create_differencing(&file, &base, "base.vhdx", base_path.to_str().unwrap()).unwrap();
    }
    let child = open(&file_spec(&child_path, "")).unwrap();
    assert_eq!(child.describe(), "vhdx differencing");
    child.write(4, &pattern(512, 50)).unwrap();
    let mut expect = base_data.clone();
    expect[2048..2560].copy_from_slice(&pattern(512, 50));
    assert_eq!(read_vec(&*child, 0, 4 * MIB as usize), expect);
    let info = image::info(&child_path).unwrap();
    assert_eq!(info.subformat, "differencing");
    assert_eq!(info.parent.as_deref(), base_path.to_str());

    // The same for VHD, with the parent found through the relative locator.
    let vbase = dir.path().join("base.vhd");
    image::convert(&base_path, &vbase, &CreateOptions::default()).unwrap();
    let vchild = dir.path().join("child.vhd");
    {
        let parent = vhd::open_path(&vbase, true).unwrap();
        let file = std::fs::File::create_new(&vchild).unwrap();
        vhd::create_differencing(
            &file,
            &parent,
            ".\\base.vhd",
            "C:\\nowhere\\base.vhd",
            1 << 20,
        )
        .unwrap();
    }
    let child = open(&memdiff_spec(&vchild)).unwrap();
    assert_eq!(child.describe(), "memdiff over vhd differencing");
    assert_eq!(read_vec(&*child, 0, 4 * MIB as usize), base_data);
}

#[test]
fn concurrent_requests_from_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.vhdx");
    image::create(
        &path,
        ImageFormat::Vhdx,
        64 * MIB,
        &CreateOptions::default(),
    )
    .unwrap();
    for s in [file_spec(&path, ""), memdiff_spec(&path), spec("mem:64MB")] {
        let disk = open(&s).unwrap();
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let disk = Arc::clone(&disk);
                std::thread::spawn(move || {
                    for i in 0..200u64 {
                        let sector = (i * 4 + t) * 97 % (64 * 2048 - 8);
                        let data = pattern(4096, (t * 31 + i) as u8);
                        disk.write(sector - sector % 8, &data).unwrap();
                        let mut back = vec![0; 4096];
                        disk.read(sector - sector % 8, &mut back).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        disk.flush().unwrap();
    }
}

#[test]
fn disk_ids_are_stable_hashes() {
    let a = DiskId::from_hash(b"/images/a.raw");
    assert_eq!(a, DiskId::from_hash(b"/images/a.raw"));
    assert_ne!(a, DiskId::from_hash(b"/images/b.raw"));
    // Pinned: the serial a guest sees must not change between agar versions.
    assert_eq!(DiskId::from_hash(b"").serial(), "CBF29CE4842223256C62");
}

#[test]
fn unmap_on_a_raw_file_punches_a_hole_that_reads_zeros() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.raw");
    std::fs::write(&path, pattern(4 * MIB as usize, 3)).unwrap();
    let blocks = || std::fs::metadata(&path).unwrap().blocks();
    let before = blocks();
    let disk = RawDisk::open(&path, false).unwrap();
    // 1 MiB from 1 MiB, and a range that ends mid-block (zeroed, not deallocated).
    disk.unmap(2048, 2048).unwrap();
    disk.unmap(8191, 1).unwrap();
    disk.unmap(0, 0).unwrap();
    let data = read_vec(&disk, 0, 4 * MIB as usize);
    let expect = pattern(4 * MIB as usize, 3);
    assert_eq!(data[..MIB as usize], expect[..MIB as usize]);
    assert!(data[MIB as usize..2 * MIB as usize].iter().all(|&b| b == 0));
    assert_eq!(
        data[2 * MIB as usize..4 * MIB as usize - 512],
        expect[2 * MIB as usize..4 * MIB as usize - 512]
    );
    assert!(data[4 * MIB as usize - 512..].iter().all(|&b| b == 0));
    // The host file system got the megabyte back (st_blocks counts 512-byte units).
    assert!(before - blocks() >= 2048, "{before} -> {}", blocks());
    assert_eq!(disk.sector_count(), 8192);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * MIB);
    // Out of range and read-only are errors that change nothing.
    assert_eq!(
        disk.unmap(8191, 2).unwrap_err().kind(),
        DiskErrorKind::OutOfRange
    );
    let ro = RawDisk::open(&path, true).unwrap();
    assert_eq!(ro.unmap(0, 8).unwrap_err().kind(), DiskErrorKind::ReadOnly);
    assert_eq!(read_vec(&ro, 0, 4096), expect[..4096]);
}
