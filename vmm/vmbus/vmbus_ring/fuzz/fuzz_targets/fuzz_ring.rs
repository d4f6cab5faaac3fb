//! A hostile peer owns the ring's memory: the fuzzer sets the control page and data area and
//! rewrites indices between operations while the host consumes and produces. Nothing may
//! panic; packets read are never longer than the data area; parsing never fails loudly.

#![no_main]

use arbitrary::Arbitrary;
use guest_mem::GuestMemory;
use libfuzzer_sys::fuzz_target;
use vmbus_ring::IncomingRing;
use vmbus_ring::OutgoingRing;
use vmbus_ring::RingPages;
use vmbus_ring::packet;

#[derive(Arbitrary, Debug)]
enum Op {
    Drain,
    Write { len: u16, tid: u64 },
    RequestSpace(u16),
    Mask(bool),
    Poke { which: u8, offset: u16, value: u32 },
    Fill { offset: u16, bytes: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
struct Input {
    pages: u8,
    init: Vec<u8>,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let pages = 2 + u64::from(input.pages % 3);
    // Ring A (host consumes) at PFN 1.., ring B (host produces) right after.
    let memory = GuestMemory::allocate((2 * pages + 1) * 4096);
    let n = input.init.len().min((2 * pages as usize) * 4096);
    memory.write_at(4096, &input.init[..n]).unwrap();
    let a: Vec<u64> = (1..=pages).collect();
    let b: Vec<u64> = (pages + 1..=2 * pages).collect();
    let Ok(pa) = RingPages::new(&memory, &a) else {
        return;
    };
    let Ok(pb) = RingPages::new(&memory, &b) else {
        return;
    };
    let size = pa.data_size() as usize;
    let (Ok(mut inc), Ok(mut out)) = (IncomingRing::new(pa), OutgoingRing::new(pb)) else {
        return;
    };
    for op in input.ops.iter().take(128) {
        match op {
            Op::Drain => {
                for _ in 0..64 {
                    match inc.peek() {
                        Ok(Some((desc, bytes))) => {
                            assert!(bytes.len() <= size);
                            let _ = packet::parse_packet(&desc, &bytes);
                            if inc.consume(&desc).is_err() {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
            }
            Op::Write { len, tid } => {
                let payload = vec![0x5a; usize::from(*len) % 4096];
                let p = packet::completion(*tid, &payload);
                let _ = out.write(&[&p]);
            }
            Op::RequestSpace(len) => {
                let _ = out.request_space(u32::from(*len));
            }
            Op::Mask(m) => inc.set_interrupt_mask(*m),
            Op::Poke {
                which,
                offset,
                value,
            } => {
                let base = if which % 2 == 0 {
                    4096
                } else {
                    (pages + 1) * 4096
                };
                let at = base + u64::from(*offset % 128) / 4 * 4;
                let _ = memory.write_plain(at, value);
            }
            Op::Fill { offset, bytes } => {
                let at = 2 * 4096 + u64::from(*offset);
                let n = bytes.len().min(4096);
                let _ = memory.write_at(at, &bytes[..n]);
            }
        }
    }
});
