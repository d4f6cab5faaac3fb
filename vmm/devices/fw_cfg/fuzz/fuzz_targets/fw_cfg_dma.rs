//! Random selector, data, DMA-address and guest-memory sequences against fw_cfg: descriptors
//! and their addresses and lengths come from the fuzzer. Nothing may panic, and the
//! read-only files must keep their contents.

#![no_main]

use arbitrary::Arbitrary;
use device_api::PortIo;
use fw_cfg::FwCfg;
use fw_cfg::FwCfgConfig;
use guest_mem::GuestMemory;
use libfuzzer_sys::fuzz_target;

const MEM: u64 = 0x20000;

#[derive(Arbitrary, Debug)]
enum Op {
    Select(u16),
    Read { count: u8 },
    /// A descriptor written to guest memory at `at`, then kicked.
    Dma { at: u32, control: u32, length: u32, address: u64, high: u32 },
    /// Kick whatever is at `at`.
    Kick { high: u32, low: u32 },
    Memory { at: u16, bytes: Vec<u8> },
    RawWrite { port: u8, bytes: Vec<u8> },
}

fuzz_target!(|ops: Vec<Op>| {
    let mem = GuestMemory::allocate(MEM);
    let mut dev = FwCfg::new(
        mem.clone(),
        &FwCfgConfig {
            processors: 2,
            max_processors: 2,
            ram_size: MEM,
            uuid: [0; 16],
            nographic: true,
            boot_menu: false,
        },
    );
    dev.add_file("ro", vec![0x5a; 300]).unwrap();
    dev.add_writable_file("rw", vec![0; 40]).unwrap();
    for op in ops.into_iter().take(1024) {
        match op {
            Op::Select(k) => {
                let _ = dev.io_write(0x510, &k.to_le_bytes());
            }
            Op::Read { count } => {
                for _ in 0..count {
                    let mut b = [0u8];
                    let _ = dev.io_read(0x511, &mut b);
                }
            }
            Op::Dma { at, control, length, address, high } => {
                let at = u64::from(at) % MEM;
                let mut d = Vec::new();
                d.extend_from_slice(&control.to_be_bytes());
                d.extend_from_slice(&(length % 0x30000).to_be_bytes());
                d.extend_from_slice(&address.to_be_bytes());
                let _ = mem.write_at(at, &d);
                let _ = dev.io_write(0x514, &(high & 1).to_be_bytes());
                let _ = dev.io_write(0x518, &(at as u32).to_be_bytes());
            }
            Op::Kick { high, low } => {
                let _ = dev.io_write(0x514, &high.to_be_bytes());
                let _ = dev.io_write(0x518, &low.to_be_bytes());
            }
            Op::Memory { at, bytes } => {
                let n = bytes.len().min(64);
                let _ = mem.write_at(u64::from(at), &bytes[..n]);
            }
            Op::RawWrite { port, bytes } => {
                let n = bytes.len().min(8);
                let _ = dev.io_write(0x510 + u16::from(port % 12), &bytes[..n]);
            }
        }
    }
    assert_eq!(dev.file("ro"), Some(&[0x5a; 300][..]));
    assert_eq!(dev.file("rw").map(<[u8]>::len), Some(40));
});
