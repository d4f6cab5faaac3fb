//! Arbitrary kernel images through the Linux loader: header parsing, payload decompression,
//! ELF parsing and placement. Nothing may panic; a plan that comes back must lie in RAM.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loaders::E820Entry;
use loaders::E820Type;
use loaders::linux;

const RAM: u64 = 64 << 20;

fn guest() -> linux::GuestInfo {
    linux::GuestInfo {
        e820: vec![
            E820Entry {
                addr: 0,
                size: 0x9_fc00,
                kind: E820Type::Ram,
            },
            E820Entry {
                addr: 0x10_0000,
                size: RAM - 0x10_0000,
                kind: E820Type::Ram,
            },
        ],
        acpi_rsdp: Some(0xe_0000),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Mode 1 forces the bzImage magic so the fuzzer spends its time past the first check.
    let mut image = rest.to_vec();
    if mode & 1 == 1 && image.len() >= 0x206 {
        image[0x202..0x206].copy_from_slice(b"HdrS");
    }
    let Ok(kernel) = linux::Kernel::parse(&image) else {
        return;
    };
    let initrd = (mode & 2 == 2).then(|| vec![0u8; usize::from(mode) * 4096]);
    if let Ok(plan) = linux::load(&kernel, initrd, "console=ttyS0", &guest()) {
        for c in &plan.chunks {
            let r = c.gpa_range();
            assert!(r.end <= RAM, "{} at {r:?} outside RAM", c.what);
            assert_eq!(c.bytes().len() as u64 + c.zero_tail, c.len());
        }
    }
});
