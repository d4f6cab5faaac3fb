use std::sync::Arc;

use image_file::ImageFile;
use image_file::MemFile;
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

use super::*;

const MIB: u64 = 1 << 20;

fn new_image(params: CreateParams) -> Arc<MemFile> {
    let file = Arc::new(MemFile::new());
    create(&*file, &params).unwrap();
    file
}

fn open(file: &Arc<MemFile>, read_only: bool) -> Result<Vhd> {
    Vhd::open(file.clone(), read_only)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn read_vec(vhd: &Vhd, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xaa; len];
    vhd.read(offset, &mut buf).unwrap();
    buf
}

#[test]
fn new_dynamic_image_reads_zero_and_is_tiny() {
    let file = new_image(CreateParams::dynamic(64 * MIB));
    let vhd = open(&file, true).unwrap();
    assert_eq!(vhd.disk_size(), 64 * MIB);
    assert_eq!(vhd.disk_type(), DiskType::Dynamic);
    assert_eq!(vhd.allocated_blocks(), Some(0));
    assert_eq!(read_vec(&vhd, 0, 8192), vec![0; 8192]);
    // Footer copy, header, a 512-byte BAT (32 entries), footer.
    assert_eq!(file.size().unwrap(), 512 + 1024 + 512 + 512);
}

#[test]
fn dynamic_writes_survive_reopen_and_allocate_only_touched_blocks() {
    let file = new_image(CreateParams::dynamic(64 * MIB));
    let data = pattern(3 * 4096, 7);
    {
        let vhd = open(&file, false).unwrap();
        vhd.write(4 * MIB - 4096, &data).unwrap(); // straddles blocks 1 and 2
        vhd.write(0, &data[..512]).unwrap();
        vhd.flush().unwrap();
    }
    let vhd = open(&file, true).unwrap();
    assert_eq!(vhd.allocated_blocks(), Some(3));
    assert_eq!(read_vec(&vhd, 4 * MIB - 4096, data.len()), data);
    assert_eq!(read_vec(&vhd, 0, 512), &data[..512]);
    assert_eq!(read_vec(&vhd, 512, 512), vec![0; 512]);
    assert_eq!(read_vec(&vhd, 8 * MIB, 4096), vec![0; 4096]);
}

#[test]
fn fixed_image_is_data_then_footer() {
    let file = new_image(CreateParams::fixed(MIB));
    assert_eq!(file.size().unwrap(), MIB + 512);
    let vhd = open(&file, false).unwrap();
    let data = pattern(1024, 3);
    vhd.write(4096, &data).unwrap();
    let mut raw = vec![0; 1024];
    file.read_at(4096, &mut raw).unwrap();
    assert_eq!(raw, data);
    assert_eq!(read_vec(&vhd, 4096, 1024), data);
}

#[test]
fn requests_are_checked() {
    let file = new_image(CreateParams::dynamic(MIB));
    let vhd = open(&file, false).unwrap();
    let mut buf = vec![0; 512];
    assert_eq!(
        vhd.read(1, &mut buf).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        vhd.read(0, &mut buf[..100]).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        vhd.read(MIB, &mut buf).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    assert_eq!(
        vhd.read(u64::MAX - 511, &mut buf).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    let ro = open(&file, true).unwrap();
    assert_eq!(ro.write(0, &buf).unwrap_err().kind(), ErrorKind::ReadOnly);
}

#[test]
fn creation_parameters_are_checked() {
    let file = MemFile::new();
    for params in [
        CreateParams::dynamic(0),
        CreateParams::dynamic(1000),
        CreateParams::dynamic(spec::MAX_DISK_SIZE + 512),
        CreateParams {
            block_size: 3 << 20,
            ..CreateParams::dynamic(MIB)
        },
        CreateParams {
            block_size: 512,
            ..CreateParams::dynamic(MIB)
        },
    ] {
        assert_eq!(
            create(&file, &params).unwrap_err().kind(),
            ErrorKind::InvalidArgument,
            "{params:?}"
        );
    }
}

#[test]
fn partially_marked_dynamic_block_reads_unmarked_sectors_as_zero() {
    let file = new_image(CreateParams::dynamic(4 * MIB));
    let data = pattern(4096, 9);
    let vhd = open(&file, false).unwrap();
    vhd.write(0, &data).unwrap();
    let block_start = u64::from(vhd.sparse.as_ref().unwrap().bat.read()[0]) * 512;
    drop(vhd);
    // Unmark sectors 1 and 2 (bits 6 and 5 of the first bitmap byte).
    file.write_at(block_start, &[0b1001_1111]).unwrap();
    let vhd = open(&file, false).unwrap();
    let got = read_vec(&vhd, 0, 4096);
    assert_eq!(&got[..512], &data[..512]);
    assert_eq!(&got[512..1536], &[0; 1024]);
    assert_eq!(&got[1536..], &data[1536..]);
    // Writing sector 2 marks it again.
    vhd.write(1024, &data[1024..1536]).unwrap();
    let got = read_vec(&vhd, 0, 4096);
    assert_eq!(&got[512..1024], &[0; 512]);
    assert_eq!(&got[1024..], &data[1024..]);
}

#[test]
fn differencing_image_reads_through_to_its_parent() {
    let parent_file = new_image(CreateParams::dynamic(8 * MIB));
    let base = pattern(8 * MIB as usize, 1);
    {
        let parent = open(&parent_file, false).unwrap();
        parent.write(0, &base).unwrap();
    }
    let parent = Arc::new(open(&parent_file, true).unwrap());
    let child_file = Arc::new(MemFile::new());
    create_differencing(&*child_file, &parent, "base.vhd", "/img/base.vhd", 1 << 20).unwrap();
    let mut child = open(&child_file, false).unwrap();
    assert_eq!(child.disk_type(), DiskType::Differencing);
    let mut buf = vec![0; 512];
    assert_eq!(
        child.read(0, &mut buf).unwrap_err().kind(),
        ErrorKind::Parent
    );
    child.set_parent(parent.clone()).unwrap();
    let new = pattern(1536, 200);
    child.write(MIB + 512, &new).unwrap();
    let mut expect = base.clone();
    expect[(MIB + 512) as usize..(MIB + 2048) as usize].copy_from_slice(&new);
    assert_eq!(read_vec(&child, 0, 8 * MIB as usize), expect);
    // The parent is untouched.
    assert_eq!(read_vec(&parent, 0, 8 * MIB as usize), base);
    // Only one block was allocated in the child.
    assert_eq!(child.allocated_blocks(), Some(1));
    assert_eq!(
        child.parent_candidates(std::path::Path::new("/d")).unwrap(),
        vec![
            std::path::PathBuf::from("/d/base.vhd"),
            std::path::PathBuf::from("/img/base.vhd")
        ]
    );
}

#[test]
fn differencing_parent_must_match_unique_id() {
    let parent_file = new_image(CreateParams::dynamic(MIB));
    let parent = Arc::new(open(&parent_file, true).unwrap());
    let other = Arc::new(open(&new_image(CreateParams::dynamic(MIB)), true).unwrap());
    let child_file = Arc::new(MemFile::new());
    create_differencing(&*child_file, &parent, "p.vhd", "/p.vhd", 1 << 20).unwrap();
    let mut child = open(&child_file, true).unwrap();
    assert_eq!(
        child.set_parent(other).unwrap_err().kind(),
        ErrorKind::Parent
    );
    child.set_parent(parent).unwrap();
}

#[test]
fn concurrent_writers_allocating_blocks_do_not_lose_data() {
    let file = new_image(CreateParams::dynamic(32 * MIB));
    let vhd = Arc::new(open(&file, false).unwrap());
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let vhd = vhd.clone();
            std::thread::spawn(move || {
                for i in 0..64u64 {
                    // Threads interleave over the same blocks.
                    let offset = (i * 4 + u64::from(t)) * 128 * 1024;
                    vhd.write(offset, &pattern(4096, t.wrapping_add(i as u8)))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(vhd);
    let vhd = open(&file, true).unwrap();
    for t in 0..4u8 {
        for i in 0..64u64 {
            let offset = (i * 4 + u64::from(t)) * 128 * 1024;
            assert_eq!(
                read_vec(&vhd, offset, 4096),
                pattern(4096, t.wrapping_add(i as u8))
            );
        }
    }
    assert_eq!(vhd.allocated_blocks(), Some(16));
}

// ---- malformed images: errors, never panics ----

fn corrupt_kind(bytes: Vec<u8>) -> ErrorKind {
    Vhd::open(Arc::new(MemFile::from_vec(bytes)), true)
        .unwrap_err()
        .kind()
}

fn dynamic_bytes() -> Vec<u8> {
    let file = new_image(CreateParams::dynamic(16 * MIB));
    {
        let vhd = open(&file, false).unwrap();
        vhd.write(0, &pattern(4096, 1)).unwrap();
    }
    Arc::try_unwrap(file).unwrap().into_vec()
}

fn footer_at(bytes: &[u8], offset: usize) -> spec::Footer {
    spec::Footer::read_from_bytes(&bytes[offset..offset + 512]).unwrap()
}

#[test]
fn empty_and_truncated_files_are_corrupt() {
    assert_eq!(corrupt_kind(Vec::new()), ErrorKind::Corrupt);
    assert_eq!(corrupt_kind(vec![0; 511]), ErrorKind::Corrupt);
    assert_eq!(corrupt_kind(vec![0; 4096]), ErrorKind::Corrupt);
    let mut bytes = dynamic_bytes();
    // Cut the allocated block and the footer: the footer copy at 0 is found, and the block
    // now reaches past the end of the data.
    bytes.truncate(bytes.len() - 1024 * 1024);
    assert_eq!(corrupt_kind(bytes), ErrorKind::Corrupt);
}

#[test]
fn checksum_mismatches_are_corrupt() {
    let mut bytes = dynamic_bytes();
    let end = bytes.len() - 512;
    bytes[end + 40] ^= 1; // original size
    assert_eq!(corrupt_kind(bytes.clone()), ErrorKind::Corrupt);
    let mut bytes = dynamic_bytes();
    bytes[512 + 28] ^= 1; // max table entries
    assert_eq!(corrupt_kind(bytes), ErrorKind::Corrupt);
}

fn reseal_header(bytes: &mut [u8], edit: impl FnOnce(&mut spec::DynamicHeader)) {
    let mut header = spec::DynamicHeader::read_from_bytes(&bytes[512..1536]).unwrap();
    edit(&mut header);
    header.seal();
    bytes[512..1536].copy_from_slice(header.as_bytes());
}

fn reseal_footer(bytes: &mut [u8], edit: impl Fn(&mut spec::Footer)) {
    for offset in [0, bytes.len() - 512] {
        let mut footer = footer_at(bytes, offset);
        edit(&mut footer);
        footer.seal();
        bytes[offset..offset + 512].copy_from_slice(footer.as_bytes());
    }
}

#[test]
fn bat_entries_past_the_end_or_over_metadata_are_corrupt() {
    let mut bytes = dynamic_bytes();
    bytes[1536..1540].copy_from_slice(&0x00ff_ffffu32.to_be_bytes());
    assert_eq!(corrupt_kind(bytes), ErrorKind::Corrupt);
    let mut bytes = dynamic_bytes();
    bytes[1536..1540].copy_from_slice(&1u32.to_be_bytes()); // sector 1: the header
    assert_eq!(corrupt_kind(bytes), ErrorKind::Corrupt);
}

#[test]
fn huge_claims_are_refused_without_allocating() {
    // A BAT of 2^32 - 1 entries would be 16 GiB: it must fit in the file first.
    let mut bytes = dynamic_bytes();
    reseal_header(&mut bytes, |h| h.max_table_entries = u32::MAX.into());
    assert_eq!(corrupt_kind(bytes), ErrorKind::Corrupt);
    // A BAT offset near u64::MAX must not overflow.
    let mut bytes = dynamic_bytes();
    reseal_header(&mut bytes, |h| h.table_offset = (u64::MAX - 3).into());
    assert_eq!(corrupt_kind(bytes), ErrorKind::Corrupt);
    // Too few BAT entries for the size.
    let mut bytes = dynamic_bytes();
    reseal_header(&mut bytes, |h| h.max_table_entries = 1.into());
    assert_eq!(corrupt_kind(bytes), ErrorKind::Corrupt);
    // A disk size beyond the format's limit.
    let mut bytes = dynamic_bytes();
    reseal_footer(&mut bytes, |f| f.current_size = (!511u64).into());
    assert_eq!(corrupt_kind(bytes), ErrorKind::Unsupported);
    // Odd block sizes.
    for block_size in [0u32, 1 << 31, 3 << 20, 512] {
        let mut bytes = dynamic_bytes();
        reseal_header(&mut bytes, |h| h.block_size = block_size.into());
        assert_eq!(corrupt_kind(bytes), ErrorKind::Unsupported, "{block_size}");
    }
    // A header offset past the end.
    let mut bytes = dynamic_bytes();
    reseal_footer(&mut bytes, |f| f.data_offset = (u64::MAX - 10).into());
    assert_eq!(corrupt_kind(bytes), ErrorKind::Corrupt);
}

#[test]
fn unknown_disk_types_are_unsupported() {
    let mut bytes = dynamic_bytes();
    reseal_footer(&mut bytes, |f| f.disk_type = 5.into());
    assert_eq!(corrupt_kind(bytes), ErrorKind::Unsupported);
}

#[test]
fn size_follows_chs_for_qemu_and_current_size_otherwise() {
    let mut bytes = dynamic_bytes();
    reseal_footer(&mut bytes, |f| {
        f.creator_app = *b"qemu";
        f.cylinders = 100.into();
        f.heads = 4;
        f.sectors_per_track = 17;
    });
    let vhd = Vhd::open(Arc::new(MemFile::from_vec(bytes.clone())), true).unwrap();
    assert_eq!(vhd.disk_size(), 100 * 4 * 17 * 512);
    reseal_footer(&mut bytes, |f| f.creator_app = *b"win ");
    let vhd = Vhd::open(Arc::new(MemFile::from_vec(bytes)), true).unwrap();
    assert_eq!(vhd.disk_size(), 16 * MIB);
}
