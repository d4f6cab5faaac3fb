//! Random CDBs with random buffers against SCSI disks of both sector sizes. Nothing may
//! panic; the transfer never exceeds the buffer; sense comes exactly with CHECK CONDITION.

#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use disk::RamLayer;
use libfuzzer_sys::fuzz_target;
use scsi_disk::ScsiDisk;
use scsi_disk::ScsiDiskConfig;
use scsi_disk::ScsiStatus;

#[derive(Arbitrary, Debug)]
struct Command {
    cdb: Vec<u8>,
    buffer_len: u16,
    fill: u8,
}

#[derive(Arbitrary, Debug)]
struct Input {
    big_sectors: bool,
    commands: Vec<Command>,
}

fuzz_target!(|input: Input| {
    let sector = if input.big_sectors { 4096 } else { 512 };
    let disk = Arc::new(RamLayer::new_zeroed(1 << 20, sector).unwrap());
    let scsi = ScsiDisk::new(
        disk,
        ScsiDiskConfig {
            max_transfer_bytes: 1 << 16,
            ..Default::default()
        },
    );
    for c in input.commands.iter().take(64) {
        let cdb = &c.cdb[..c.cdb.len().min(16)];
        let mut buf = vec![c.fill; usize::from(c.buffer_len)];
        let r = scsi.execute(cdb, &mut buf);
        assert!(r.transferred <= buf.len());
        assert_eq!(r.sense.is_some(), r.status == ScsiStatus::CheckCondition);
        let _ = scsi_disk::report_luns(cdb, &mut buf, &[0, 1, 300]);
        let _ = scsi_disk::inquiry_no_lun(cdb, &mut buf);
    }
});
