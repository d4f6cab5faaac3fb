use std::sync::Arc;

use disk::Disk;
use disk::DiskError;
use disk::DiskErrorKind;
use disk::DiskId;
use disk::RamLayer;

use crate::spec::op;
use crate::*;

fn ram(sectors: u64) -> Arc<dyn Disk> {
    Arc::new(RamLayer::new_zeroed(sectors * 512, 512).unwrap())
}

fn scsi(sectors: u64) -> ScsiDisk {
    ScsiDisk::new(ram(sectors), ScsiDiskConfig::default())
}

fn run(d: &ScsiDisk, cdb: &[u8], len: usize) -> (ScsiResult, Vec<u8>) {
    let mut buf = vec![0u8; len];
    let r = d.execute(cdb, &mut buf);
    buf.truncate(r.transferred);
    (r, buf)
}

fn sense(r: &ScsiResult) -> (u8, u8) {
    assert_eq!(r.status, ScsiStatus::CheckCondition, "{r:?}");
    let s = r.sense.unwrap();
    (s.key, s.asc)
}

fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = op::READ_10;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn write16(lba: u64, blocks: u32, fua: bool) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op::WRITE_16;
    c[1] = if fua { 0x08 } else { 0 };
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

#[test]
fn standard_inquiry_identifies_a_msft_virtual_disk_and_honours_allocation_length() {
    let d = scsi(2048);
    let (r, data) = run(&d, &[op::INQUIRY, 0, 0, 0, 36, 0], 255);
    assert_eq!(r, ScsiResult::good(36));
    assert_eq!(data[0], 0, "direct access");
    assert_eq!(data[2], 5, "ANSI: 5");
    assert_eq!(&data[8..16], b"Msft    ");
    assert_eq!(&data[16..32], b"Virtual Disk    ");
    assert_eq!(&data[32..36], b"1.0 ");
    assert_eq!(usize::from(data[4]) + 5, 96);
    let (r, _) = run(&d, &[op::INQUIRY, 0, 0, 0, 255, 0], 255);
    assert_eq!(r.transferred, 96);
    let (r, _) = run(&d, &[op::INQUIRY, 0, 0, 0, 255, 0], 10);
    assert_eq!(
        r.transferred, 10,
        "buffer shorter than the allocation length"
    );
    assert_eq!(
        sense(&d.execute(&[op::INQUIRY, 0, 0x80, 0, 255, 0], &mut vec![0; 255])).1,
        0x24
    );
}

#[test]
fn vpd_pages_list_serial_identifiers_and_limits() {
    let d = scsi(2048);
    let vpd = |page: u8| run(&d, &[op::INQUIRY, 1, page, 1, 0, 0], 256).1;
    assert_eq!(
        vpd(0x00),
        vec![0, 0, 0, 6, 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]
    );
    let serial = vpd(0x80);
    assert_eq!(&serial[4..], d.disk().disk_id().serial().as_bytes());
    let id = vpd(0x83);
    assert_eq!(&id[4..8], &[1, 3, 0, 16]);
    assert_eq!(id[8] >> 4, 6, "NAA 6");
    assert_eq!(&id[24..28], &[2, 1, 0, 28]);
    assert_eq!(&id[28..36], b"Msft    ");
    let limits = vpd(0xb0);
    assert_eq!(u16::from_be_bytes([limits[2], limits[3]]), 0x3c);
    assert_eq!(
        u32::from_be_bytes(limits[8..12].try_into().unwrap()),
        2048,
        "1 MiB in blocks"
    );
    assert_eq!(
        u32::from_be_bytes(limits[24..28].try_into().unwrap()),
        MAX_UNMAP_DESCRIPTORS
    );
    let chars = vpd(0xb1);
    assert_eq!(&chars[4..6], &[0, 1], "non-rotational");
    assert_eq!(vpd(0xb2), vec![0, 0xb2, 0, 4, 0, 0x80, 2, 0]);
    let r = d.execute(&[op::INQUIRY, 1, 0x89, 1, 0, 0], &mut vec![0; 256]);
    assert_eq!(sense(&r), (5, 0x24));
}

#[test]
fn read_capacity_reports_size_and_caps_the_10_byte_form() {
    let d = scsi(2048);
    let (_, data) = run(&d, &[op::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    assert_eq!(data, vec![0, 0, 0x07, 0xff, 0, 0, 2, 0]);
    let mut c16 = [0u8; 16];
    c16[0] = op::SERVICE_ACTION_IN_16;
    c16[1] = 0x10;
    c16[13] = 32;
    let (r, data) = run(&d, &c16, 32);
    assert_eq!(r.transferred, 32);
    assert_eq!(u64::from_be_bytes(data[..8].try_into().unwrap()), 2047);
    assert_eq!(u32::from_be_bytes(data[8..12].try_into().unwrap()), 512);
    assert_eq!(data[14] & 0x80, 0x80, "LBPME");
    // A disk bigger than 2^32 blocks: READ CAPACITY(10) says 0xffffffff.
    let big = ScsiDisk::new(
        Arc::new(RamLayer::new_zeroed((1u64 << 32) * 512 + 4096, 512).unwrap()),
        ScsiDiskConfig::default(),
    );
    let (_, data) = run(&big, &[op::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    assert_eq!(&data[..4], &[0xff; 4]);
}

#[test]
fn writes_read_back_across_chunk_boundaries_with_every_cdb_size() {
    let d = scsi(4096);
    let len = 600 * 512; // more than one 256 KiB bounce chunk
    let pattern: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let mut buf = pattern.clone();
    assert_eq!(
        d.execute(&write16(100, 600, true), &mut buf),
        ScsiResult::good(len)
    );
    let (r, data) = run(&d, &read10(100, 600), len);
    assert_eq!(r, ScsiResult::good(len));
    assert!(data == pattern);
    let (_, data) = run(&d, &[op::READ_6, 0, 0, 101, 1, 0], 512);
    assert_eq!(data, pattern[512..1024]);
    let mut c12 = [0u8; 12];
    c12[0] = op::READ_12;
    c12[5] = 102;
    c12[9] = 1;
    assert_eq!(run(&d, &c12, 512).1, pattern[1024..1536]);
    // READ(6) with length 0 means 256 blocks.
    assert_eq!(
        run(&d, &[op::READ_6, 0, 0, 0, 0, 0], 256 * 512)
            .0
            .transferred,
        256 * 512
    );
}

#[test]
fn out_of_range_and_oversized_transfers_are_illegal_requests() {
    let d = scsi(100);
    assert_eq!(sense(&run(&d, &read10(99, 2), 1024).0), (5, 0x21));
    assert_eq!(
        sense(&run(&d, &write16(u64::MAX, 1, false), 512).0),
        (5, 0x21)
    );
    assert_eq!(
        sense(&run(&d, &read10(0, 4), 1024).0),
        (5, 0x24),
        "buffer too small"
    );
    // Zero blocks is a no-op.
    assert_eq!(run(&d, &read10(0, 0), 0).0, ScsiResult::good(0));
}

#[test]
fn mode_sense_reports_write_cache_and_fua_and_rejects_unknown_pages() {
    let d = scsi(2048);
    let (r, data) = run(&d, &[op::MODE_SENSE_6, 0, 0x08, 0, 255, 0], 255);
    assert_eq!(r.transferred, 4 + 8 + 20);
    assert_eq!(data[0] as usize, r.transferred - 1);
    assert_eq!(data[2], 0x10, "DPOFUA, not write protected");
    assert_eq!(data[3], 8, "block descriptor");
    assert_eq!(&data[9..12], &[0, 2, 0]);
    assert_eq!(data[12], 0x08);
    assert_eq!(data[14] & 0x04, 0x04, "WCE");
    // First probe for write protect: 4 bytes of header only.
    let (r, data) = run(&d, &[op::MODE_SENSE_6, 0x08, 0x3f, 0, 4, 0], 255);
    assert_eq!(r.transferred, 4);
    assert_eq!(data[0] as usize, 3 + 20 + 12);
    let (r, data) = run(
        &d,
        &[op::MODE_SENSE_10, 0x08, 0x0a, 0, 0, 0, 0, 0, 255, 0],
        255,
    );
    assert_eq!(r.transferred, 8 + 12);
    assert_eq!(data[8], 0x0a);
    // 6.12 asks for the IO advice hints subpage: not supported.
    let r = run(
        &d,
        &[op::MODE_SENSE_10, 0, 0x0a, 0x05, 0, 0, 0, 0, 255, 0],
        255,
    )
    .0;
    assert_eq!(sense(&r), (5, 0x24));
    assert_eq!(
        sense(&run(&d, &[op::MODE_SENSE_6, 0, 0xc8, 0, 255, 0], 255).0),
        (5, 0x39)
    );
    // Changeable values: nothing is changeable.
    let (_, data) = run(&d, &[op::MODE_SENSE_6, 0x08, 0x48, 0, 255, 0], 255);
    assert_eq!(data[4 + 2], 0);
}

#[test]
fn unmap_checks_every_descriptor_before_acting() {
    let d = scsi(1000);
    let mut buf = vec![0xabu8; 512];
    d.execute(&write16(10, 1, false), &mut buf);
    let params = |descs: &[(u64, u32)]| {
        let mut p = vec![0u8; 8];
        p[0..2].copy_from_slice(&((6 + 16 * descs.len()) as u16).to_be_bytes());
        p[2..4].copy_from_slice(&((16 * descs.len()) as u16).to_be_bytes());
        for &(lba, n) in descs {
            p.extend_from_slice(&lba.to_be_bytes());
            p.extend_from_slice(&n.to_be_bytes());
            p.extend_from_slice(&[0; 4]);
        }
        p
    };
    let unmap = |p: &mut Vec<u8>| {
        let mut c = [0u8; 10];
        c[0] = op::UNMAP;
        c[7..9].copy_from_slice(&(p.len() as u16).to_be_bytes());
        d.execute(&c, p)
    };
    let mut bad = params(&[(10, 1), (999, 2)]);
    assert_eq!(sense(&unmap(&mut bad)), (5, 0x21));
    assert_eq!(
        run(&d, &read10(10, 1), 512).1,
        vec![0xab; 512],
        "nothing unmapped"
    );
    let mut good = params(&[(10, 1), (500, 0)]);
    assert_eq!(unmap(&mut good), ScsiResult::good(0));
    let mut garbled = params(&[(10, 1)]);
    garbled[3] = 7;
    assert_eq!(sense(&unmap(&mut garbled)), (5, 0x26));
}

#[test]
fn report_luns_lists_each_lun_and_checks_the_allocation_length() {
    let mut c = [0u8; 12];
    c[0] = op::REPORT_LUNS;
    c[9] = 64;
    let mut buf = vec![0u8; 64];
    let r = report_luns(&c, &mut buf, &[0, 3, 300]);
    assert_eq!(r.transferred, 32);
    assert_eq!(&buf[..4], &[0, 0, 0, 24]);
    assert_eq!(&buf[8..10], &[0, 0]);
    assert_eq!(&buf[16..18], &[0, 3]);
    assert_eq!(&buf[24..26], &[0x41, 0x2c]);
    c[9] = 8;
    assert_eq!(sense(&report_luns(&c, &mut buf, &[0])), (5, 0x24));
}

#[test]
fn absent_luns_answer_inquiry_with_qualifier_3() {
    let mut buf = vec![0u8; 36];
    let r = inquiry_no_lun(&[op::INQUIRY, 0, 0, 0, 36, 0], &mut buf);
    assert_eq!(r.transferred, 36);
    assert_eq!(buf[0], 0x7f);
}

#[test]
fn unknown_and_short_cdbs_are_invalid_opcodes() {
    let d = scsi(10);
    for cdb in [
        &[0x85u8; 16][..],
        &[op::WRITE_SAME_16; 16],
        &[],
        &[op::READ_10, 0, 0],
        &[0xc0; 16],
    ] {
        assert_eq!(sense(&run(&d, cdb, 512).0), (5, 0x20), "{cdb:x?}");
    }
    let (r, data) = run(&d, &[op::REQUEST_SENSE, 0, 0, 0, 18, 0], 18);
    assert_eq!(r.transferred, 18);
    assert_eq!(data[0], 0x70);
    assert_eq!(data[2], 0);
    assert_eq!(
        run(&d, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0], 0).0,
        ScsiResult::good(0)
    );
}

#[derive(Debug)]
struct FailingDisk {
    read_only: bool,
}

impl Disk for FailingDisk {
    fn sector_size(&self) -> u32 {
        4096
    }
    fn physical_sector_size(&self) -> u32 {
        4096
    }
    fn sector_count(&self) -> u64 {
        16
    }
    fn is_read_only(&self) -> bool {
        self.read_only
    }
    fn disk_id(&self) -> DiskId {
        DiskId::from_hash(b"failing")
    }
    fn read(&self, _: u64, _: &mut [u8]) -> Result<(), DiskError> {
        Err(DiskError::new(DiskErrorKind::Io, "test"))
    }
    fn write(&self, _: u64, _: &[u8]) -> Result<(), DiskError> {
        Err(DiskError::new(DiskErrorKind::Io, "test"))
    }
    fn flush(&self) -> Result<(), DiskError> {
        Err(DiskError::new(DiskErrorKind::Io, "test"))
    }
    fn unmap(&self, _: u64, _: u64) -> Result<(), DiskError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "failing".into()
    }
}

#[test]
fn host_errors_become_medium_errors_and_read_only_disks_data_protect() {
    let d = ScsiDisk::new(
        Arc::new(FailingDisk { read_only: false }),
        ScsiDiskConfig::default(),
    );
    assert_eq!(sense(&run(&d, &read10(0, 1), 4096).0), (3, 0x11));
    assert_eq!(sense(&run(&d, &write16(0, 1, false), 4096).0), (3, 0x0c));
    assert_eq!(
        sense(
            &run(
                &d,
                &[op::SYNCHRONIZE_CACHE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                0
            )
            .0
        )
        .0,
        3
    );
    let ro = ScsiDisk::new(
        Arc::new(FailingDisk { read_only: true }),
        ScsiDiskConfig::default(),
    );
    assert_eq!(sense(&run(&ro, &write16(0, 1, false), 4096).0), (7, 0x27));
    let (_, data) = run(&ro, &[op::MODE_SENSE_6, 0x08, 0x3f, 0, 4, 0], 4);
    assert_eq!(data[2] & 0x80, 0x80, "WP");
    // 4 KiB logical sectors are reported as such.
    let (_, data) = run(&ro, &[op::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    assert_eq!(&data[4..], &[0, 0, 0x10, 0]);
    let vpd = run(&ro, &[op::INQUIRY, 1, 0, 1, 0, 0], 64).1;
    assert!(
        !vpd.contains(&0xb2),
        "no provisioning page on a read-only disk"
    );
}
