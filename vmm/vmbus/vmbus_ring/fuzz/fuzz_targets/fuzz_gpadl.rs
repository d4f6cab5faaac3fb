//! GPADL and GPA-direct range bytes from the guest: parse, validate against guest RAM, and
//! copy through whatever validates. Nothing may panic or touch memory outside the ranges.

#![no_main]

use arbitrary::Arbitrary;
use guest_mem::GuestMemory;
use libfuzzer_sys::fuzz_target;
use vmbus_ring::Gpadl;
use vmbus_ring::gpadl::parse_ranges;

#[derive(Arbitrary, Debug)]
struct Input {
    range_count: u16,
    bytes: Vec<u8>,
    downstream: u32,
    offset: u32,
    len: u16,
}

fuzz_target!(|input: Input| {
    let memory = GuestMemory::allocate(64 * 4096);
    if let Ok((ranges, used)) = parse_ranges(&input.bytes, u32::from(input.range_count % 8)) {
        assert!(used <= input.bytes.len());
        for r in &ranges {
            if r.validate(&memory).is_ok() {
                let mut buf = vec![0u8; usize::from(input.len)];
                let _ = r.read(&memory, u64::from(input.offset), &mut buf);
                let _ = r.write(&memory, u64::from(input.offset), &buf);
            }
        }
    }
    if let Ok(g) = Gpadl::parse(&input.bytes, input.range_count) {
        if g.validate(&memory).is_ok() {
            let _ = vmbus_ring::ChannelRings::new(&memory, &g, input.downstream);
        }
    }
});
