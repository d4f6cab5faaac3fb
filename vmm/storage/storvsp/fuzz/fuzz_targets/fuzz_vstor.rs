//! A hostile storvsc: vstor packets (well-formed with random SRBs and CDBs, or raw), random
//! GPA-direct ranges, and scribbles on the ring control pages, against a storvsp channel
//! with two LUNs. Nothing may panic; every reply must fit Linux's 80-byte packet limit.

#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use disk::RamLayer;
use guest_mem::GuestMemory;
use libfuzzer_sys::fuzz_target;
use scsi_disk::ScsiDisk;
use scsi_disk::ScsiDiskConfig;
use storvsp::GuestSignal;
use storvsp::Storvsp;
use storvsp::StorvspConfig;
use storvsp::client::GuestChannel;
use storvsp::client::SrbRequest;
use storvsp::client::init_sequence;
use storvsp::client::vstor;
use vmbus_ring::GpaRange;
use vmbus_ring::Gpadl;
use vmbus_ring::packet;
use vmbus_server::Guid;
use vmbus_server::OpenRequest;

const PAGES: u64 = 512;
const RING: u64 = 16;

struct NoSignal;

impl GuestSignal for NoSignal {
    fn signal(&self) {}
}

#[derive(Arbitrary, Debug)]
enum Op {
    Init {
        version: u16,
    },
    Srb {
        tid: u64,
        lun: u8,
        target: u8,
        cdb: Vec<u8>,
        data_in: u8,
        transfer: u32,
        buffer: Option<(u16, u16, u8)>,
    },
    Vstor {
        tid: u64,
        operation: u8,
        data: Vec<u8>,
        gpa_direct: bool,
    },
    Raw {
        packet_type: u16,
        flags: u16,
        tid: u64,
        payload: Vec<u8>,
    },
    Process,
    Receive,
    Poke {
        offset: u16,
        value: u32,
    },
    HotPlug(u8),
}

fuzz_target!(|ops: Vec<Op>| {
    let memory = GuestMemory::allocate(PAGES * 4096);
    let storvsp = Storvsp::new(
        Guid::new(1, 2, 3, [0; 8]),
        StorvspConfig {
            max_transfer_bytes: 64 * 1024,
        },
    );
    for (lun, sector) in [(0u8, 512u32), (2, 4096)] {
        let disk = Arc::new(RamLayer::new_zeroed(256 * 1024, sector).unwrap());
        storvsp
            .add_disk(
                lun,
                Arc::new(ScsiDisk::new(disk, ScsiDiskConfig::default())),
            )
            .unwrap();
    }
    let gpadl = Gpadl {
        ranges: vec![GpaRange {
            byte_count: 8 * 4096,
            byte_offset: 0,
            pfns: (RING..RING + 8).collect(),
        }],
    };
    let mut guest = GuestChannel::new(&memory, &gpadl, 4).unwrap();
    let request = OpenRequest {
        relid: 1,
        connection_id: 0x2001,
        target_vp: 0,
        ring_gpadl: gpadl,
        downstream_page: 4,
        user_data: [0; 120],
    };
    let mut channel = storvsp
        .open_channel(&memory, &request, Arc::new(NoSignal))
        .unwrap();
    for op in ops.iter().take(128) {
        match op {
            Op::Init { version } => {
                for p in init_sequence(if version % 2 == 0 { 0x0602 } else { *version }) {
                    let _ = guest.send(&packet::inband(1, true, &p));
                }
            }
            Op::Srb {
                tid,
                lun,
                target,
                cdb,
                data_in,
                transfer,
                buffer,
            } => {
                let mut req = SrbRequest::new(
                    lun % 4,
                    &cdb[..cdb.len().min(17)],
                    data_in % 3,
                    *transfer % (128 * 1024),
                );
                req.target = target % 2;
                let range = buffer.map(|(offset, pages, first)| {
                    let offset = u32::from(offset % 4096);
                    let n = u64::from(pages % 20) + 1;
                    GpaRange {
                        byte_count: (n * 4096) as u32 - offset,
                        byte_offset: offset,
                        pfns: (0..n).map(|i| 64 + u64::from(first) * 2 + i).collect(),
                    }
                });
                let _ = guest.send(&req.vmbus_packet(*tid, range.as_ref()));
            }
            Op::Vstor {
                tid,
                operation,
                data,
                gpa_direct,
            } => {
                let payload = vstor(u32::from(operation % 16), data);
                let p = if *gpa_direct {
                    let r = GpaRange {
                        byte_count: 4096,
                        byte_offset: 0,
                        pfns: vec![PAGES - 1],
                    };
                    packet::gpa_direct(*tid, &[r], &payload)
                } else {
                    packet::inband(*tid, true, &payload)
                };
                let _ = guest.send(&p);
            }
            Op::Raw {
                packet_type,
                flags,
                tid,
                payload,
            } => {
                let mut p = packet::inband(*tid, true, &payload[..payload.len().min(512)]);
                p[0..2].copy_from_slice(&packet_type.to_le_bytes());
                p[6..8].copy_from_slice(&flags.to_le_bytes());
                let _ = guest.send(&p);
            }
            Op::Process => {
                let _ = channel.process();
            }
            Op::Receive => {
                while let Ok(Some((p, _))) = guest.recv() {
                    assert_eq!(p.payload.len(), 64, "storvsc accepts 80-byte packets only");
                }
            }
            Op::Poke { offset, value } => {
                let at = RING * 4096 + u64::from(offset % 8) * 4096 + u64::from(*value % 16) * 4;
                let _ = memory.write_plain(at, value);
            }
            Op::HotPlug(lun) => {
                if storvsp.remove_disk(*lun % 4).is_none() {
                    let disk = Arc::new(RamLayer::new_zeroed(4096, 512).unwrap());
                    let _ = storvsp.add_disk(
                        *lun % 4,
                        Arc::new(ScsiDisk::new(disk, ScsiDiskConfig::default())),
                    );
                }
            }
        }
    }
    let _ = channel.process();
});
