use guest_mem::GuestMemory;

use super::*;
use crate::Gpadl;
use crate::gpadl::GpaRange;
use crate::packet;

/// A ring of `pages` pages starting at PFN 1 in fresh guest memory, plus a second view of the
/// same pages for the other side.
fn ring(pages: u64) -> (GuestMemory, OutgoingRing, IncomingRing) {
    let m = GuestMemory::allocate((pages + 2) * PAGE_SIZE);
    let pfns: Vec<u64> = (1..=pages).collect();
    let p = RingPages::new(&m, &pfns).unwrap();
    p.reset_control(FEATURE_PENDING_SEND_SIZE);
    let out = OutgoingRing::new(p.clone()).unwrap();
    let inc = IncomingRing::new(p).unwrap();
    (m, out, inc)
}

/// A valid in-band packet of exactly `len` bytes.
fn sized(len: usize) -> Vec<u8> {
    packet::inband(0, false, &vec![0u8; len - 16])
}

fn control(m: &GuestMemory, field: u64) -> u32 {
    m.read_plain(PAGE_SIZE + field).unwrap()
}

#[test]
fn packets_round_trip_with_trailer_and_indices() {
    let (m, mut out, mut inc) = ring(2);
    assert!(inc.is_empty().unwrap());
    let p = packet::inband(42, true, &[9; 20]);
    assert_eq!(
        out.write(&[&p]).unwrap(),
        Ok(true),
        "empty ring, unmasked: signal"
    );
    assert_eq!(control(&m, WRITE_INDEX), p.len() as u32 + 8);
    // Trailer: previous write index (0) in the high half.
    let trailer: u64 = m.read_plain(2 * PAGE_SIZE + p.len() as u64).unwrap();
    assert_eq!(trailer, 0);
    let (desc, bytes) = inc.peek().unwrap().unwrap();
    assert_eq!(desc.transaction_id, 42);
    assert_eq!(bytes, p);
    // Peek does not consume.
    assert!(inc.peek().unwrap().is_some());
    assert_eq!(inc.consume(&desc), Ok(false));
    assert_eq!(control(&m, READ_INDEX), p.len() as u32 + 8);
    assert!(inc.peek().unwrap().is_none());
}

#[test]
fn packets_wrap_around_the_end_of_the_data_area() {
    let (_m, mut out, mut inc) = ring(2);
    // 4096-byte data area; 56-byte packets + 8 trailer = 64: after many rounds the packets
    // straddle the end at different offsets.
    for i in 0..500u64 {
        let payload: Vec<u8> = (0..40).map(|b| (b as u64 + i) as u8).collect();
        let p = packet::inband(i, false, &payload);
        let p2 = packet::inband(i + 1000, false, &payload[..24]);
        out.write(&[&p]).unwrap().unwrap();
        out.write(&[&p2]).unwrap().unwrap();
        for expect in [p, p2] {
            let (desc, bytes) = inc.peek().unwrap().unwrap();
            assert_eq!(bytes, expect);
            inc.consume(&desc).unwrap();
        }
    }
}

#[test]
fn a_full_ring_refuses_writes_and_keeps_one_byte_free() {
    let (_m, mut out, mut inc) = ring(2);
    let p = sized(1016); // + 8 trailer = 1024
    for _ in 0..3 {
        assert!(out.write(&[&p]).unwrap().is_ok());
    }
    // 1024 bytes free, 1024 needed: refused (free must exceed the need).
    assert_eq!(out.write(&[&p]).unwrap(), Err(RingFull { needed: 1024 }));
    assert!(out.write(&[&sized(1008)]).unwrap().is_ok());
    assert_eq!(out.free().unwrap(), 8);
    let (desc, _) = inc.peek().unwrap().unwrap();
    inc.consume(&desc).unwrap();
    assert!(out.fits(1016 - 16).unwrap());
}

#[test]
fn producer_signals_only_on_empty_to_non_empty_and_unmasked() {
    let (_m, mut out, mut inc) = ring(2);
    let p = packet::inband(1, false, &[]);
    assert_eq!(out.write(&[&p]).unwrap(), Ok(true));
    assert_eq!(out.write(&[&p]).unwrap(), Ok(false), "not empty before");
    while let Some((d, _)) = inc.peek().unwrap() {
        inc.consume(&d).unwrap();
    }
    inc.set_interrupt_mask(true);
    assert!(out.peer_interrupt_mask());
    assert_eq!(out.write(&[&p]).unwrap(), Ok(false), "consumer is polling");
    inc.set_interrupt_mask(false);
    assert!(
        !inc.is_empty().unwrap(),
        "re-check after unmasking finds the packet"
    );
}

#[test]
fn consumer_signals_a_blocked_producer_once_space_crosses_its_request() {
    let (_m, mut out, mut inc) = ring(2);
    let p = sized(1016);
    for _ in 0..3 {
        out.write(&[&p]).unwrap().unwrap();
    }
    assert_eq!(out.write(&[&p]).unwrap(), Err(RingFull { needed: 1024 }));
    assert!(!out.request_space(1016).unwrap());
    let (d, _) = inc.peek().unwrap().unwrap();
    assert_eq!(inc.consume(&d), Ok(true), "1024 -> 2048 free crosses 1024");
    let (d, _) = inc.peek().unwrap().unwrap();
    assert_eq!(inc.consume(&d), Ok(false), "already above the threshold");
    assert!(
        out.request_space(1016).unwrap(),
        "fits now, request withdrawn"
    );
}

#[test]
fn consumer_without_the_feature_never_signals_for_space() {
    let (m, mut out, mut inc) = ring(2);
    m.write_plain(PAGE_SIZE + FEATURE_BITS, &0u32).unwrap();
    let p = sized(2040);
    out.write(&[&p]).unwrap().unwrap();
    assert!(!out.request_space(2040).unwrap());
    let (d, _) = inc.peek().unwrap().unwrap();
    assert_eq!(inc.consume(&d), Ok(false));
}

#[test]
fn corrupt_indices_from_the_peer_are_errors() {
    let (m, mut out, mut inc) = ring(2);
    m.write_plain(PAGE_SIZE + WRITE_INDEX, &4u32).unwrap();
    assert!(matches!(
        inc.peek(),
        Err(RingError::CorruptIndex { which: "write", .. })
    ));
    m.write_plain(PAGE_SIZE + WRITE_INDEX, &4096u32).unwrap();
    assert!(matches!(inc.peek(), Err(RingError::CorruptIndex { .. })));
    m.write_plain(PAGE_SIZE + READ_INDEX, &0xffff_fff8u32)
        .unwrap();
    assert!(matches!(
        out.write(&[&[0u8; 16]]),
        Err(RingError::CorruptIndex { which: "read", .. })
    ));
}

#[test]
fn malformed_descriptors_are_errors() {
    let (m, _out, mut inc) = ring(2);
    let data = 2 * PAGE_SIZE;
    let publish = |desc: Descriptor, write: u32| {
        m.write_at(data, &desc.to_bytes()).unwrap();
        m.write_plain(PAGE_SIZE + WRITE_INDEX, &write).unwrap();
    };
    let d = Descriptor {
        packet_type: 6,
        offset8: 2,
        len8: 100,
        flags: 0,
        transaction_id: 0,
    };
    publish(d, 24);
    assert_eq!(
        inc.peek(),
        Err(RingError::BadPacket("packet longer than the data written"))
    );
    publish(Descriptor { len8: 1, ..d }, 24);
    assert!(inc.peek().is_err());
    publish(
        Descriptor {
            offset8: 3,
            len8: 2,
            ..d
        },
        24,
    );
    assert!(inc.peek().is_err());
    publish(d, 8);
    assert!(inc.peek().is_err(), "fragment");
    // A consume larger than what was written is refused.
    publish(Descriptor { len8: 2, ..d }, 24);
    assert!(inc.consume(&Descriptor { len8: 400, ..d }).is_err());
}

#[test]
fn ring_pages_must_be_ram_and_sized() {
    let m = GuestMemory::allocate(4 * PAGE_SIZE);
    assert!(matches!(
        RingPages::new(&m, &[1]),
        Err(RingError::BadSize(1))
    ));
    assert!(matches!(
        RingPages::new(&m, &[1, 9]),
        Err(RingError::Pages(_))
    ));
    assert!(matches!(
        RingPages::new(&m, &[1, u64::MAX]),
        Err(RingError::Pages(_))
    ));
    // Initial indices are validated too.
    m.write_plain(PAGE_SIZE, &3u32).unwrap();
    let p = RingPages::new(&m, &[1, 2]).unwrap();
    assert!(OutgoingRing::new(p).is_err());
}

#[test]
fn channel_rings_split_a_gpadl_at_the_downstream_offset() {
    let m = GuestMemory::allocate(16 * PAGE_SIZE);
    let g = |n: u64| Gpadl {
        ranges: vec![GpaRange {
            byte_count: (n * PAGE_SIZE) as u32,
            byte_offset: 0,
            pfns: (1..=n).collect(),
        }],
    };
    let rings = crate::ChannelRings::new(&m, &g(8), 4).unwrap();
    assert_eq!(rings.incoming.pages().data_size(), 3 * 4096);
    assert_eq!(rings.outgoing.pages().data_size(), 3 * 4096);
    assert!(crate::ChannelRings::new(&m, &g(8), 1).is_err());
    assert!(crate::ChannelRings::new(&m, &g(8), 7).is_err());
    assert!(crate::ChannelRings::new(&m, &g(8), u32::MAX).is_err());
    assert!(crate::ChannelRings::new(&m, &g(3), 2).is_err());
}
