use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

use disk::RamLayer;
use guest_mem::GuestMemory;
use scsi_disk::ScsiDisk;
use scsi_disk::ScsiDiskConfig;
use scsi_disk::spec::op;
use vmbus_ring::GpaRange;
use vmbus_ring::Gpadl;
use vmbus_ring::packet::IncomingPacket;
use vmbus_ring::packet::PacketKind;
use vmbus_server::Guid;
use vmbus_server::OpenRequest;

use crate::client::GuestChannel;
use crate::client::INIT_TRANSACTION_ID;
use crate::client::SrbRequest;
use crate::client::init_sequence;
use crate::client::parse_completion;
use crate::client::vstor;
use crate::protocol::data_in;
use crate::protocol::operation;
use crate::protocol::srb_status;
use crate::protocol::status;
use crate::*;

#[derive(Default)]
struct CountingSignal(AtomicUsize);

impl GuestSignal for CountingSignal {
    fn signal(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

const MIB: u64 = 1 << 20;
const DATA: u64 = 2 * MIB;
const SECTORS: u64 = 32768; // 16 MiB

struct Harness {
    memory: GuestMemory,
    storvsp: Storvsp,
    channel: StorvspChannel,
    guest: GuestChannel,
    signals: Arc<CountingSignal>,
    next_tid: u64,
}

fn ring_gpadl(first: u64, pages: u64) -> Gpadl {
    Gpadl {
        ranges: vec![GpaRange {
            byte_count: (pages * 4096) as u32,
            byte_offset: 0,
            pfns: (first..first + pages).collect(),
        }],
    }
}

fn harness_with(up_pages: u32, down_pages: u32) -> Harness {
    let memory = GuestMemory::allocate(8 * MIB);
    let storvsp = Storvsp::new(Guid::new(1, 2, 3, [4; 8]), StorvspConfig::default());
    let disk = Arc::new(RamLayer::new_zeroed(SECTORS * 512, 512).unwrap());
    storvsp
        .add_disk(0, Arc::new(ScsiDisk::new(disk, ScsiDiskConfig::default())))
        .unwrap();
    let small = Arc::new(RamLayer::new_zeroed(MIB, 512).unwrap());
    storvsp
        .add_disk(3, Arc::new(ScsiDisk::new(small, ScsiDiskConfig::default())))
        .unwrap();
    let gpadl = ring_gpadl(16, u64::from(up_pages + down_pages));
    let guest = GuestChannel::new(&memory, &gpadl, up_pages).unwrap();
    let signals = Arc::new(CountingSignal::default());
    let request = OpenRequest {
        relid: 1,
        connection_id: 0x2001,
        target_vp: 0,
        ring_gpadl: gpadl,
        downstream_page: up_pages,
        user_data: [0; 120],
    };
    let channel = storvsp
        .open_channel(&memory, &request, signals.clone())
        .unwrap();
    Harness {
        memory,
        storvsp,
        channel,
        guest,
        signals,
        next_tid: 1,
    }
}

fn harness() -> Harness {
    harness_with(32, 32)
}

impl Harness {
    fn recv_all(&mut self) -> Vec<IncomingPacket> {
        let mut v = Vec::new();
        while let Some((p, _)) = self.guest.recv().unwrap() {
            v.push(p);
        }
        v
    }

    /// Sends one packet, lets the host process, returns the host's packets.
    fn round_trip(&mut self, packet: &[u8]) -> Vec<IncomingPacket> {
        self.guest.send(packet).unwrap().expect("ring full");
        assert_eq!(self.channel.process().unwrap(), Progress::Idle);
        self.recv_all()
    }

    fn init(&mut self) {
        for p in init_sequence(0x0602) {
            let r = self.round_trip(&vmbus_ring::packet::inband(INIT_TRANSACTION_ID, true, &p));
            assert_eq!(r.len(), 1);
            let (v, _) = parse_completion(&r[0]).unwrap();
            assert_eq!(v.operation.get(), operation::COMPLETE_IO);
            assert_eq!(v.status.get(), 0);
        }
    }

    /// Runs an SRB with an optional data buffer at `DATA` + `offset` spread over pages in
    /// reverse order (so the buffer is not physically contiguous).
    fn srb(
        &mut self,
        req: &SrbRequest,
        offset: u32,
    ) -> (crate::protocol::VstorPacket, crate::protocol::ScsiRequest) {
        let range = (req.transfer > 0).then(|| buffer_range(offset, req.transfer));
        let tid = self.next_tid;
        self.next_tid += 1;
        let r = self.round_trip(&req.vmbus_packet(tid, range.as_ref()));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].transaction_id, tid);
        assert_eq!(r[0].kind, PacketKind::Completion);
        parse_completion(&r[0]).unwrap()
    }

    fn read_buffer(&self, offset: u32, len: u32) -> Vec<u8> {
        let mut v = vec![0u8; len as usize];
        buffer_range(offset, len)
            .read(&self.memory, 0, &mut v)
            .unwrap();
        v
    }

    fn write_buffer(&self, offset: u32, data: &[u8]) {
        buffer_range(offset, data.len() as u32)
            .write(&self.memory, 0, data)
            .unwrap();
    }
}

/// A data buffer of `len` bytes starting `offset` bytes into its first page, on pages taken
/// from the top of the data area downwards.
fn buffer_range(offset: u32, len: u32) -> GpaRange {
    let (skip, within) = (u64::from(offset / 4096), offset % 4096);
    let pages = GpaRange::page_count(within, len);
    let top = (DATA + 4 * MIB) / 4096 - skip;
    GpaRange {
        byte_count: len,
        byte_offset: within,
        pfns: (0..pages).map(|i| top - i).collect(),
    }
}

fn cdb10(opcode: u8, lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![0u8; 10];
    c[0] = opcode;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

#[test]
fn init_sequence_completes_with_linux_sized_replies() {
    let mut h = harness();
    let begin = vmbus_ring::packet::inband(
        INIT_TRANSACTION_ID,
        true,
        &vstor(operation::BEGIN_INITIALIZATION, &[]),
    );
    let r = h.round_trip(&begin);
    assert_eq!(r[0].transaction_id, INIT_TRANSACTION_ID);
    assert_eq!(
        r[0].payload.len(),
        64,
        "80-byte packet: storvsc's max_pkt_size"
    );
    // Versions Linux tries: 6.2 first.
    let q = |v: u16| {
        vmbus_ring::packet::inband(
            INIT_TRANSACTION_ID,
            true,
            &vstor(operation::QUERY_PROTOCOL_VERSION, &v.to_le_bytes()),
        )
    };
    let (v, _) = parse_completion(&h.round_trip(&q(0x0700))[0]).unwrap();
    assert_eq!(v.status.get(), status::REVISION_MISMATCH);
    let (v, _) = parse_completion(&h.round_trip(&q(0x0602))[0]).unwrap();
    assert_eq!(v.status.get(), 0);
    assert_eq!(h.channel.version(), Some(0x0602));
    let props = vmbus_ring::packet::inband(
        INIT_TRANSACTION_ID,
        true,
        &vstor(operation::QUERY_PROPERTIES, &[]),
    );
    let (v, _) = parse_completion(&h.round_trip(&props)[0]).unwrap();
    assert_eq!(
        u32::from_le_bytes(v.data[12..16].try_into().unwrap()),
        1 << 20
    );
    assert_eq!(
        u16::from_le_bytes(v.data[4..6].try_into().unwrap()),
        0,
        "no sub-channels"
    );
    let end = vmbus_ring::packet::inband(
        INIT_TRANSACTION_ID,
        true,
        &vstor(operation::END_INITIALIZATION, &[]),
    );
    assert_eq!(
        parse_completion(&h.round_trip(&end)[0])
            .unwrap()
            .0
            .status
            .get(),
        0
    );
}

#[test]
fn srbs_before_version_negotiation_are_refused() {
    let mut h = harness();
    let (v, _) = h.srb(
        &SrbRequest::new(
            0,
            &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0],
            data_in::UNKNOWN,
            0,
        ),
        0,
    );
    assert_eq!(v.status.get(), status::INVALID_DEVICE_STATE);
}

#[test]
fn inquiry_data_lands_in_the_guest_buffer() {
    let mut h = harness();
    h.init();
    let (v, srb) = h.srb(
        &SrbRequest::new(0, &[op::INQUIRY, 0, 0, 0, 36, 0], data_in::READ, 36),
        100,
    );
    assert_eq!(v.status.get(), 0);
    assert_eq!(srb.srb_status, srb_status::SUCCESS);
    assert_eq!(srb.scsi_status, 0);
    assert_eq!(srb.data_transfer_length.get(), 36);
    let data = h.read_buffer(100, 36);
    assert_eq!(&data[8..16], b"Msft    ");
    assert_eq!(&data[16..32], b"Virtual Disk    ");
}

#[test]
fn a_megabyte_write_reads_back_through_scattered_pages() {
    let mut h = harness();
    h.init();
    let len = 1u32 << 20;
    let pattern: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    h.write_buffer(512, &pattern);
    let (_, srb) = h.srb(
        &SrbRequest::new(0, &cdb10(op::WRITE_10, 1000, 2048), data_in::WRITE, len),
        512,
    );
    assert_eq!(srb.srb_status, srb_status::SUCCESS);
    assert_eq!(srb.data_transfer_length.get(), len);
    h.write_buffer(512, &vec![0u8; len as usize]);
    let (_, srb) = h.srb(
        &SrbRequest::new(0, &cdb10(op::READ_10, 1000, 2048), data_in::READ, len),
        512,
    );
    assert_eq!(srb.srb_status, srb_status::SUCCESS);
    assert!(h.read_buffer(512, len) == pattern);
    // And the disk really holds it (read through the other LUN path: the disk object).
    let disk = h.storvsp.luns.disks.read()[&0].clone();
    let mut sector = vec![0u8; 512];
    disk.disk().read(1000, &mut sector).unwrap();
    assert_eq!(sector, pattern[..512]);
}

#[test]
fn many_outstanding_requests_complete_with_their_own_transaction_ids() {
    let mut h = harness();
    h.init();
    // 24 writes of distinct blocks, each with its own buffer, queued before the host runs.
    for i in 0..24u32 {
        let offset = i * 8192;
        let data = vec![i as u8 + 1; 4096];
        buffer_range(offset, 4096)
            .write(&h.memory, 0, &data)
            .unwrap();
        let req = SrbRequest::new(0, &cdb10(op::WRITE_10, 8 * i, 8), data_in::WRITE, 4096);
        h.guest
            .send(&req.vmbus_packet(1000 + u64::from(i), Some(&buffer_range(offset, 4096))))
            .unwrap()
            .unwrap();
    }
    assert_eq!(h.channel.process().unwrap(), Progress::Idle);
    let done = h.recv_all();
    let ids: Vec<u64> = done.iter().map(|p| p.transaction_id).collect();
    assert_eq!(ids, (1000..1024).collect::<Vec<u64>>());
    assert!(
        done.iter()
            .all(|p| parse_completion(p).unwrap().1.srb_status == srb_status::SUCCESS)
    );
    for i in 0..24u32 {
        let (_, srb) = h.srb(
            &SrbRequest::new(0, &cdb10(op::READ_10, 8 * i, 8), data_in::READ, 4096),
            0,
        );
        assert_eq!(srb.srb_status, srb_status::SUCCESS);
        assert_eq!(h.read_buffer(0, 4096), vec![i as u8 + 1; 4096]);
    }
}

#[test]
fn luns_are_addressed_and_absent_ones_reported_as_such() {
    let mut h = harness();
    h.init();
    let mut rl = vec![0u8; 12];
    rl[0] = op::REPORT_LUNS;
    rl[9] = 255;
    let (_, srb) = h.srb(&SrbRequest::new(0, &rl, data_in::READ, 255), 0);
    assert_eq!(srb.data_transfer_length.get(), 24);
    let data = h.read_buffer(0, 24);
    assert_eq!(&data[..4], &[0, 0, 0, 16]);
    assert_eq!(data[9], 0);
    assert_eq!(data[17], 3);
    // LUN 3 answers READ CAPACITY with its own size (1 MiB = 2048 blocks).
    let (_, srb) = h.srb(
        &SrbRequest::new(
            3,
            &[op::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            data_in::READ,
            8,
        ),
        0,
    );
    assert_eq!(srb.srb_status, srb_status::SUCCESS);
    assert_eq!(&h.read_buffer(0, 4), &[0, 0, 0x07, 0xff]);
    // Absent LUN: INQUIRY says "no LUN here", anything else INVALID_LUN.
    let (_, srb) = h.srb(
        &SrbRequest::new(5, &[op::INQUIRY, 0, 0, 0, 36, 0], data_in::READ, 36),
        0,
    );
    assert_eq!(srb.srb_status, srb_status::SUCCESS);
    assert_eq!(h.read_buffer(0, 1), vec![0x7f]);
    let (_, srb) = h.srb(
        &SrbRequest::new(
            5,
            &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0],
            data_in::UNKNOWN,
            0,
        ),
        0,
    );
    assert_eq!(srb.srb_status, srb_status::INVALID_LUN);
    // Other targets have no LUNs at all.
    let mut other = SrbRequest::new(0, &rl, data_in::READ, 255);
    other.target = 1;
    let (_, srb) = h.srb(&other, 0);
    assert_eq!(srb.data_transfer_length.get(), 8);
    assert_eq!(&h.read_buffer(0, 4), &[0, 0, 0, 0]);
}

#[test]
fn scsi_errors_come_back_as_autosense() {
    let mut h = harness();
    h.init();
    let (v, srb) = h.srb(
        &SrbRequest::new(
            0,
            &cdb10(op::READ_10, SECTORS as u32, 1),
            data_in::READ,
            512,
        ),
        0,
    );
    assert_eq!(v.status.get(), status::IO_DEVICE_ERROR);
    assert_eq!(
        srb.srb_status,
        srb_status::ERROR | srb_status::AUTOSENSE_VALID
    );
    assert_eq!(srb.scsi_status, 2);
    assert_eq!(srb.data_transfer_length.get(), 0);
    assert_eq!(srb.sense_info_length, 18);
    assert_eq!(srb.payload[0], 0x70);
    assert_eq!(srb.payload[2], 5);
    assert_eq!(srb.payload[12], 0x21);
}

#[test]
fn malformed_requests_get_failure_replies() {
    let mut h = harness();
    h.init();
    let tid = 77;
    let reply = |h: &mut Harness, p: &[u8]| {
        let r = h.round_trip(p);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].transaction_id, tid);
        parse_completion(&r[0]).unwrap()
    };
    // Too short to be a vstor packet.
    let (v, _) = reply(&mut h, &vmbus_ring::packet::inband(tid, true, &[3; 40]));
    assert_eq!(v.status.get(), status::INVALID_PARAMETER);
    // Unknown operation.
    let (v, _) = reply(
        &mut h,
        &vmbus_ring::packet::inband(tid, true, &vstor(99, &[])),
    );
    assert_eq!(v.status.get(), status::INVALID_DEVICE_REQUEST);
    // Data buffer outside guest RAM.
    let req = SrbRequest::new(0, &cdb10(op::READ_10, 0, 1), data_in::READ, 512);
    let outside = GpaRange {
        byte_count: 512,
        byte_offset: 0,
        pfns: vec![1 << 40],
    };
    let (_, srb) = reply(&mut h, &req.vmbus_packet(tid, Some(&outside)));
    assert_eq!(srb.srb_status, srb_status::INVALID_REQUEST);
    // Two ranges.
    let r = buffer_range(0, 512);
    let p = vmbus_ring::packet::gpa_direct(tid, &[r.clone(), r], &req.packet());
    assert_eq!(reply(&mut h, &p).1.srb_status, srb_status::INVALID_REQUEST);
    // Bad CDB lengths, oversized transfer.
    for cdb_len in [0usize, 17] {
        let mut bad = SrbRequest::new(0, &[0; 16], data_in::UNKNOWN, 0).packet();
        bad[12 + 8] = cdb_len as u8;
        let (_, srb) = reply(&mut h, &vmbus_ring::packet::inband(tid, true, &bad));
        assert_eq!(srb.srb_status, srb_status::INVALID_REQUEST);
    }
    let big = SrbRequest::new(0, &cdb10(op::READ_10, 0, 4096), data_in::READ, 2 << 20);
    assert_eq!(
        reply(&mut h, &big.vmbus_packet(tid, Some(&buffer_range(0, 4096))))
            .1
            .srb_status,
        srb_status::INVALID_REQUEST
    );
    // A transfer length larger than the buffer: the SCSI layer refuses it.
    let short = SrbRequest::new(0, &cdb10(op::READ_10, 0, 8), data_in::READ, 4096);
    let (_, srb) = reply(
        &mut h,
        &short.vmbus_packet(tid, Some(&buffer_range(0, 512))),
    );
    assert_eq!(
        srb.srb_status,
        srb_status::ERROR | srb_status::AUTOSENSE_VALID
    );
    // A packet type storvsp does not handle.
    let mut xfer = vmbus_ring::packet::inband(tid, true, &vstor(operation::EXECUTE_SRB, &[]));
    xfer[0] = 7;
    assert_eq!(
        reply(&mut h, &xfer).0.status.get(),
        status::INVALID_PARAMETER
    );
    // No completion requested: no reply.
    let quiet = vmbus_ring::packet::inband(tid, false, &vstor(operation::RESET_BUS, &[]));
    assert!(h.round_trip(&quiet).is_empty());
}

#[test]
fn a_corrupt_ring_stops_the_channel_without_touching_other_memory() {
    let mut h = harness();
    h.init();
    // The guest scribbles an unaligned write index on its ring.
    h.memory.write_plain(16 * 4096, &0x1234_5677u32).unwrap();
    assert!(matches!(h.channel.process(), Err(ChannelError::Ring(_))));
    assert!(matches!(h.channel.process(), Err(ChannelError::Stopped)));
}

#[test]
fn a_full_reply_ring_pauses_requests_until_the_guest_reads() {
    // 12 KiB of request ring, 4 KiB of reply ring: replies (88 bytes each) run out first.
    let mut h = harness_with(4, 2);
    h.init();
    let tur = SrbRequest::new(
        0,
        &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0],
        data_in::UNKNOWN,
        0,
    );
    for tid in 0..100 {
        h.guest.send(&tur.vmbus_packet(tid, None)).unwrap().unwrap();
    }
    let mut seen = Vec::new();
    let mut rounds = 0;
    loop {
        let progress = h.channel.process().unwrap();
        let mut host_asked = false;
        while let Some((p, signal)) = h.guest.recv().unwrap() {
            host_asked |= signal;
            seen.push(p.transaction_id);
        }
        rounds += 1;
        match progress {
            Progress::Idle => break,
            Progress::WaitingForSpace => assert!(host_asked, "guest must signal the blocked host"),
            Progress::More => {}
        }
        assert!(rounds < 10);
    }
    assert!(rounds >= 3, "the reply ring filled up at least twice");
    assert_eq!(seen, (0..100).collect::<Vec<u64>>());
}

#[test]
fn the_guest_is_signalled_only_when_its_ring_goes_non_empty_and_unmasked() {
    let mut h = harness();
    h.init();
    let before = h.signals.0.load(Ordering::SeqCst);
    let tur = SrbRequest::new(
        0,
        &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0],
        data_in::UNKNOWN,
        0,
    );
    for tid in 0..5 {
        h.guest.send(&tur.vmbus_packet(tid, None)).unwrap();
    }
    h.channel.process().unwrap();
    assert_eq!(
        h.signals.0.load(Ordering::SeqCst),
        before + 1,
        "one signal for 5 replies"
    );
    h.recv_all();
    h.guest.set_interrupt_mask(true);
    h.guest.send(&tur.vmbus_packet(9, None)).unwrap();
    h.channel.process().unwrap();
    assert_eq!(
        h.signals.0.load(Ordering::SeqCst),
        before + 1,
        "guest is polling"
    );
    assert_eq!(h.recv_all().len(), 1);
}

#[test]
fn a_guest_blocked_on_a_full_request_ring_is_signalled_once_room_is_made() {
    // One page of request ring, plenty of reply ring.
    let mut h = harness_with(2, 32);
    h.init();
    // Replies arrive while the guest polls, so every signal counted below is about space.
    h.guest.set_interrupt_mask(true);
    let tur = SrbRequest::new(
        0,
        &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0],
        data_in::UNKNOWN,
        0,
    );
    let fill = |h: &mut Harness, first: u64| {
        let mut tid = first;
        while h
            .guest
            .send(&tur.vmbus_packet(tid, None))
            .unwrap()
            .is_some()
        {
            tid += 1;
        }
        tid - first
    };

    // Full ring, no request for space: draining it does not signal.
    let before = h.signals.0.load(Ordering::SeqCst);
    let sent = fill(&mut h, 0);
    assert!(sent > 10, "{sent} packets fit in a page");
    assert_eq!(h.channel.process().unwrap(), Progress::Idle);
    assert_eq!(h.signals.0.load(Ordering::SeqCst), before);
    assert_eq!(h.recv_all().len() as u64, sent);

    // Full again; the guest asks for room for one more packet: one signal when it drains.
    let sent = fill(&mut h, 1000);
    let len = tur.vmbus_packet(0, None).len();
    assert!(
        !h.guest.request_space(len).unwrap(),
        "the ring is still full"
    );
    assert_eq!(h.channel.process().unwrap(), Progress::Idle);
    assert_eq!(h.signals.0.load(Ordering::SeqCst), before + 1);
    assert_eq!(h.recv_all().len() as u64, sent);
    assert!(
        h.guest
            .send(&tur.vmbus_packet(5000, None))
            .unwrap()
            .is_some()
    );
}

#[test]
fn hot_added_luns_trigger_an_enumerate_bus_packet() {
    let mut h = harness();
    h.init();
    let disk = Arc::new(RamLayer::new_zeroed(MIB, 512).unwrap());
    h.storvsp
        .add_disk(7, Arc::new(ScsiDisk::new(disk, ScsiDiskConfig::default())))
        .unwrap();
    let lun0 = h.storvsp.luns.disks.read()[&0].clone();
    assert!(h.storvsp.add_disk(7, lun0).is_err());
    assert_eq!(h.channel.process().unwrap(), Progress::Idle);
    let r = h.recv_all();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].transaction_id, 0);
    assert!(!r[0].completion_requested);
    assert_eq!(
        parse_completion(&r[0]).unwrap().0.operation.get(),
        operation::ENUMERATE_BUS
    );
    assert_eq!(h.storvsp.luns(), vec![0, 3, 7]);
    assert!(h.storvsp.remove_disk(7).is_some());
    h.channel.process().unwrap();
    assert_eq!(h.recv_all().len(), 1);
}
