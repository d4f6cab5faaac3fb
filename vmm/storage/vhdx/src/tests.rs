use std::sync::Arc;

use image_file::ImageFile;
use image_file::MemFile;
use zerocopy::FromBytes;

use super::*;

fn new_image(params: CreateParams) -> Arc<MemFile> {
    let file = Arc::new(MemFile::new());
    create(&*file, &params).unwrap();
    file
}

fn open(file: &Arc<MemFile>, read_only: bool) -> Result<Vhdx> {
    Vhdx::open(file.clone(), read_only)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

fn read_vec(vhdx: &Vhdx, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xaa; len];
    vhdx.read(offset, &mut buf).unwrap();
    buf
}

fn current_header(file: &MemFile) -> spec::Header {
    meta::read_headers(file).unwrap().0
}

fn small(size: u64) -> CreateParams {
    CreateParams {
        block_size: MIB as u32,
        ..CreateParams::dynamic(size)
    }
}

#[test]
fn new_dynamic_image_reads_zero() {
    let file = new_image(CreateParams::dynamic(100 * MIB));
    let vhdx = open(&file, true).unwrap();
    assert_eq!(vhdx.disk_size(), 100 * MIB);
    assert_eq!(vhdx.block_size(), 32 * MIB as u32);
    assert!(!vhdx.is_fixed());
    assert_eq!(vhdx.allocated_blocks(), 0);
    assert_eq!(read_vec(&vhdx, 0, 65536), vec![0; 65536]);
    assert_eq!(file.size().unwrap(), 4 * MIB);
}

#[test]
fn writes_survive_reopen_and_leave_an_empty_log() {
    let file = new_image(small(16 * MIB));
    let data = pattern(3 * 4096, 5);
    {
        let vhdx = open(&file, false).unwrap();
        vhdx.write(MIB - 4096, &data).unwrap();
        vhdx.write(10 * MIB, &data[..512]).unwrap();
        // While allocations are unflushed the header names a log.
        assert!(!current_header(&file).log_guid.is_zero());
        vhdx.flush().unwrap();
        assert!(current_header(&file).log_guid.is_zero());
    }
    let vhdx = open(&file, true).unwrap();
    assert!(!vhdx.log_was_replayed());
    assert_eq!(vhdx.allocated_blocks(), 3);
    assert_eq!(read_vec(&vhdx, MIB - 4096, data.len()), data);
    assert_eq!(read_vec(&vhdx, 10 * MIB, 512), &data[..512]);
    assert_eq!(read_vec(&vhdx, 10 * MIB + 512, 512), vec![0; 512]);
}

#[test]
fn first_write_changes_the_data_write_guid() {
    let file = new_image(small(4 * MIB));
    let before = current_header(&file);
    let vhdx = open(&file, false).unwrap();
    assert_eq!(vhdx.data_write_guid(), before.data_write_guid);
    vhdx.write(0, &[1; 512]).unwrap();
    let after = current_header(&file);
    assert_ne!(after.data_write_guid, before.data_write_guid);
    assert_ne!(after.file_write_guid, before.file_write_guid);
    assert!(after.sequence_number.get() > before.sequence_number.get());
}

#[test]
fn fixed_image_allocates_every_block() {
    let file = new_image(CreateParams {
        block_size: MIB as u32,
        ..CreateParams::fixed(8 * MIB)
    });
    assert_eq!(file.size().unwrap(), 4 * MIB + 8 * MIB);
    let vhdx = open(&file, false).unwrap();
    assert!(vhdx.is_fixed());
    assert_eq!(vhdx.allocated_blocks(), 8);
    let data = pattern(8192, 1);
    vhdx.write(3 * MIB + 512, &data).unwrap();
    drop(vhdx);
    // Block 3 sits at data start + 3 MiB: the write went straight there.
    let mut raw = vec![0; 8192];
    file.read_at(4 * MIB + 3 * MIB + 512, &mut raw).unwrap();
    assert_eq!(raw, data);
    assert_eq!(file.size().unwrap(), 12 * MIB);
}

#[test]
fn four_k_sector_images_take_only_aligned_requests() {
    let file = new_image(CreateParams {
        logical_sector_size: 4096,
        physical_sector_size: 4096,
        ..small(8 * MIB)
    });
    let vhdx = open(&file, false).unwrap();
    assert_eq!(vhdx.logical_sector_size(), 4096);
    let mut buf = vec![0; 512];
    assert_eq!(
        vhdx.read(0, &mut buf).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let data = pattern(8192, 2);
    vhdx.write(4096, &data).unwrap();
    assert_eq!(read_vec(&vhdx, 0, 12288)[4096..], data[..]);
}

#[test]
fn requests_are_checked() {
    let file = new_image(small(MIB));
    let vhdx = open(&file, false).unwrap();
    let mut buf = vec![0; 512];
    assert_eq!(
        vhdx.read(100, &mut buf).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        vhdx.read(MIB, &mut buf).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    assert_eq!(
        vhdx.read(u64::MAX - 511, &mut buf).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    let ro = open(&file, true).unwrap();
    assert_eq!(ro.write(0, &buf).unwrap_err().kind(), ErrorKind::ReadOnly);
}

#[test]
fn creation_parameters_are_checked() {
    for params in [
        CreateParams::dynamic(0),
        CreateParams::dynamic(100),
        CreateParams::dynamic((64 << 40) + 512),
        CreateParams {
            block_size: 3 * MIB as u32,
            ..small(MIB)
        },
        CreateParams {
            block_size: 512 * 1024,
            ..small(MIB)
        },
        CreateParams {
            logical_sector_size: 1024,
            ..small(MIB)
        },
        CreateParams {
            logical_sector_size: 4096,
            ..small(MIB + 512)
        },
    ] {
        assert_eq!(
            create(&MemFile::new(), &params).unwrap_err().kind(),
            ErrorKind::InvalidArgument,
            "{params:?}"
        );
    }
}

#[test]
fn concurrent_writers_allocating_blocks_do_not_lose_data() {
    let file = new_image(small(32 * MIB));
    let vhdx = Arc::new(open(&file, false).unwrap());
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let vhdx = vhdx.clone();
            std::thread::spawn(move || {
                for i in 0..32u64 {
                    let offset = (i * 4 + u64::from(t)) * 256 * 1024;
                    vhdx.write(offset, &pattern(4096, t ^ i as u8)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(vhdx);
    let vhdx = open(&file, true).unwrap();
    for t in 0..4u8 {
        for i in 0..32u64 {
            let offset = (i * 4 + u64::from(t)) * 256 * 1024;
            assert_eq!(read_vec(&vhdx, offset, 4096), pattern(4096, t ^ i as u8));
        }
    }
    assert_eq!(vhdx.allocated_blocks(), 32);
}

// ---- log replay ----

/// An image as a crash would leave it: allocations logged, never flushed.
fn crashed_image() -> (Vec<u8>, Vec<u8>) {
    let file = new_image(small(8 * MIB));
    let data = pattern(4096, 77);
    let vhdx = open(&file, false).unwrap();
    vhdx.write(5 * MIB, &data).unwrap();
    let snapshot = file.to_vec();
    std::mem::forget(vhdx); // no flush on drop: the log stays active
    (snapshot, data)
}

#[test]
fn dirty_log_is_replayed_in_memory_when_read_only() {
    let (mut bytes, data) = crashed_image();
    // Lose the in-place BAT write: only the log knows about block 5.
    let bat_at = 3 * MIB as usize;
    bytes[bat_at..bat_at + 4096].fill(0);
    let file = Arc::new(MemFile::from_vec(bytes.clone()));
    let vhdx = open(&file, true).unwrap();
    assert!(vhdx.log_was_replayed());
    assert_eq!(read_vec(&vhdx, 5 * MIB, 4096), data);
    drop(vhdx);
    assert!(file.to_vec() == bytes, "a read-only open wrote the file");
}

#[test]
fn dirty_log_is_replayed_into_the_file_when_writable() {
    let (mut bytes, data) = crashed_image();
    let bat_at = 3 * MIB as usize;
    bytes[bat_at..bat_at + 4096].fill(0);
    let file = Arc::new(MemFile::from_vec(bytes));
    {
        let vhdx = open(&file, false).unwrap();
        assert!(vhdx.log_was_replayed());
        assert_eq!(read_vec(&vhdx, 5 * MIB, 4096), data);
    }
    assert!(current_header(&file).log_guid.is_zero());
    let vhdx = open(&file, true).unwrap();
    assert!(!vhdx.log_was_replayed());
    assert_eq!(read_vec(&vhdx, 5 * MIB, 4096), data);
}

// ---- differencing ----

fn parent_with_data() -> (Arc<MemFile>, Vec<u8>) {
    let file = new_image(small(4 * MIB));
    let base = pattern(4 * MIB as usize, 3);
    let vhdx = open(&file, false).unwrap();
    vhdx.write(0, &base).unwrap();
    drop(vhdx);
    (file, base)
}

#[test]
fn differencing_image_reads_through_to_its_parent() {
    let (parent_file, base) = parent_with_data();
    let parent = Arc::new(open(&parent_file, true).unwrap());
    let child_file = Arc::new(MemFile::new());
    create_differencing(&*child_file, &parent, "base.vhdx", "/img/base.vhdx").unwrap();
    let mut child = open(&child_file, false).unwrap();
    assert!(child.has_parent());
    let mut buf = vec![0; 512];
    assert_eq!(
        child.read(0, &mut buf).unwrap_err().kind(),
        ErrorKind::Parent
    );
    child.set_parent(parent.clone()).unwrap();
    let new = pattern(1536, 99);
    child.write(MIB + 1024, &new).unwrap();
    child.write(MIB + 8192, &new[..512]).unwrap();
    let mut expect = base.clone();
    expect[(MIB + 1024) as usize..(MIB + 2560) as usize].copy_from_slice(&new);
    expect[(MIB + 8192) as usize..(MIB + 8704) as usize].copy_from_slice(&new[..512]);
    assert_eq!(read_vec(&child, 0, 4 * MIB as usize), expect);
    assert_eq!(child.allocated_blocks(), 1);
    drop(child);
    // Reopened, the partially present block still merges with the parent.
    let mut child = open(&child_file, true).unwrap();
    child.set_parent(parent.clone()).unwrap();
    assert_eq!(read_vec(&child, 0, 4 * MIB as usize), expect);
    assert_eq!(read_vec(&parent, 0, 4 * MIB as usize), base);
    assert_eq!(
        child.parent_candidates(std::path::Path::new("/d")),
        vec![
            std::path::PathBuf::from("/d/base.vhdx"),
            std::path::PathBuf::from("/img/base.vhdx"),
        ]
    );
}

#[test]
fn differencing_parent_must_match_the_linkage() {
    let (parent_file, _) = parent_with_data();
    let parent = Arc::new(open(&parent_file, true).unwrap());
    let child_file = Arc::new(MemFile::new());
    create_differencing(&*child_file, &parent, "p.vhdx", "/p.vhdx").unwrap();
    drop(parent);
    // Writing to the parent changes its data-write GUID: the child no longer matches.
    open(&parent_file, false)
        .unwrap()
        .write(0, &[9; 512])
        .unwrap();
    let parent = Arc::new(open(&parent_file, true).unwrap());
    let mut child = open(&child_file, true).unwrap();
    assert_eq!(
        child.set_parent(parent).unwrap_err().kind(),
        ErrorKind::Parent
    );
}

// ---- malformed images: errors, never panics ----

fn image_bytes() -> Vec<u8> {
    let file = new_image(small(8 * MIB));
    open(&file, false)
        .unwrap()
        .write(2 * MIB, &pattern(4096, 1))
        .unwrap();
    Arc::try_unwrap(file).unwrap().into_vec()
}

fn open_kind(bytes: Vec<u8>) -> ErrorKind {
    Vhdx::open(Arc::new(MemFile::from_vec(bytes)), true)
        .unwrap_err()
        .kind()
}

/// Rewrites the 4 KiB structure at `offset` (header) or 64 KiB (region table) with a valid
/// checksum after `edit`.
fn reseal(bytes: &mut [u8], offset: usize, size: usize, edit: impl FnOnce(&mut [u8])) {
    let area = &mut bytes[offset..offset + size];
    edit(area);
    let crc = spec::crc32c_with_hole(area, 4);
    area[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn truncated_files_are_corrupt() {
    assert_eq!(open_kind(Vec::new()), ErrorKind::Corrupt);
    assert_eq!(open_kind(b"vhdxfile".to_vec()), ErrorKind::Corrupt);
    let bytes = image_bytes();
    for len in [MIB as usize, 3 * MIB as usize, bytes.len() - 4096] {
        assert_eq!(
            open_kind(bytes[..len].to_vec()),
            ErrorKind::Corrupt,
            "{len}"
        );
    }
}

#[test]
fn bad_checksums_fall_back_then_fail() {
    let mut bytes = image_bytes();
    // One broken header: the other one is used.
    let current = meta::read_headers(&MemFile::from_vec(bytes.clone()))
        .unwrap()
        .1;
    bytes[spec::HEADER_OFFSETS[current] as usize + 100] ^= 1;
    Vhdx::open(Arc::new(MemFile::from_vec(bytes.clone())), true).unwrap();
    bytes[spec::HEADER_OFFSETS[1 - current] as usize + 100] ^= 1;
    assert_eq!(open_kind(bytes), ErrorKind::Corrupt);
    // Region tables likewise.
    let mut bytes = image_bytes();
    bytes[3 * 65536 + 40] ^= 1;
    Vhdx::open(Arc::new(MemFile::from_vec(bytes.clone())), true).unwrap();
    bytes[4 * 65536 + 40] ^= 1;
    assert_eq!(open_kind(bytes), ErrorKind::Corrupt);
}

#[test]
fn bat_entries_past_the_end_or_over_metadata_are_corrupt() {
    let bat = 3 * MIB as usize;
    for entry in [
        spec::bat_entry(spec::payload::FULLY_PRESENT, 1 << 40),
        spec::bat_entry(spec::payload::FULLY_PRESENT, 0),
        spec::bat_entry(spec::payload::FULLY_PRESENT, 2 * MIB), // the metadata region
        spec::bat_entry(spec::payload::PARTIALLY_PRESENT, 4 * MIB), // not differencing
        spec::bat_entry(4, 4 * MIB),                            // no such state
        u64::MAX,
    ] {
        let mut bytes = image_bytes();
        put_u64(&mut bytes, bat, entry);
        assert_eq!(open_kind(bytes), ErrorKind::Corrupt, "{entry:#x}");
    }
}

/// Offset of the metadata item values written by `create` (table at 2 MiB, values at +64 KiB):
/// file parameters, size, page 83, logical and physical sector size.
const META_VALUES: usize = 2 * MIB as usize + 65536;

#[test]
fn huge_or_odd_metadata_is_refused_without_allocating() {
    // 64 TiB with 1 MiB blocks needs a 512 MiB BAT: it must fit its 1 MiB region first.
    let mut bytes = image_bytes();
    put_u64(&mut bytes, META_VALUES + 8, 64 << 40);
    assert_eq!(open_kind(bytes), ErrorKind::Corrupt);
    for size in [0, u64::MAX, 1 << 63, 513] {
        let mut bytes = image_bytes();
        put_u64(&mut bytes, META_VALUES + 8, size);
        assert_eq!(open_kind(bytes), ErrorKind::Corrupt, "{size}");
    }
    for block_size in [0, 1, 3 << 20, 1 << 31, 512 << 20] {
        let mut bytes = image_bytes();
        put_u32(&mut bytes, META_VALUES, block_size);
        assert_eq!(open_kind(bytes), ErrorKind::Corrupt, "{block_size}");
    }
    let mut bytes = image_bytes();
    put_u32(&mut bytes, META_VALUES + 32, 1024);
    assert_eq!(open_kind(bytes), ErrorKind::Corrupt);
    // A metadata entry pointing far outside its region.
    let mut bytes = image_bytes();
    put_u32(&mut bytes, 2 * MIB as usize + 32 + 16, u32::MAX - 4);
    assert_eq!(open_kind(bytes), ErrorKind::Corrupt);
    // An unknown required item.
    let mut bytes = image_bytes();
    bytes[2 * MIB as usize + 32] ^= 0xff;
    assert_eq!(open_kind(bytes), ErrorKind::Unsupported);
}

#[test]
fn misplaced_regions_and_logs_are_corrupt() {
    for (at, value) in [(16 + 16, 1u64 << 50), (16 + 16, 12345), (16 + 16 + 32, 0)] {
        let mut bytes = image_bytes();
        for table in spec::REGION_TABLE_OFFSETS {
            reseal(&mut bytes, table as usize, 65536, |t| put_u64(t, at, value));
        }
        assert_eq!(open_kind(bytes), ErrorKind::Corrupt, "{at} {value}");
    }
    let mut bytes = image_bytes();
    for table in spec::REGION_TABLE_OFFSETS {
        reseal(&mut bytes, table as usize, 65536, |t| put_u32(t, 8, 5000));
    }
    assert_eq!(open_kind(bytes), ErrorKind::Corrupt);
    for (log_offset, log_length) in [(1u64 << 50, MIB as u32), (MIB + 1, MIB as u32), (0, 4096)] {
        let mut bytes = image_bytes();
        for h in spec::HEADER_OFFSETS {
            reseal(&mut bytes, h as usize, 4096, |h| {
                put_u32(h, 68, log_length);
                put_u64(h, 72, log_offset);
            });
        }
        assert_eq!(open_kind(bytes), ErrorKind::Corrupt, "{log_offset}");
    }
}

#[test]
fn qemu_style_unmapped_state_reads_zero() {
    let mut bytes = image_bytes();
    let bat = 3 * MIB as usize;
    let entry = u64::from_le_bytes(bytes[bat + 16..bat + 24].try_into().unwrap());
    assert_eq!(spec::bat_state(entry), spec::payload::FULLY_PRESENT);
    put_u64(&mut bytes, bat + 16, spec::payload::UNMAPPED_QEMU);
    let vhdx = Vhdx::open(Arc::new(MemFile::from_vec(bytes)), true).unwrap();
    assert_eq!(read_vec(&vhdx, 2 * MIB, 4096), vec![0; 4096]);
    let _ = spec::Header::read_from_bytes(&[0u8; 80]).unwrap();
}
