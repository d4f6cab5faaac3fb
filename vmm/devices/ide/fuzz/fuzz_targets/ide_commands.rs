//! Random register, command, packet, bus-master and PCI config sequences against the IDE
//! controller, with fuzzer-controlled guest memory (PRD tables, data) and a hard disk and a
//! CD-ROM on RAM disks. Nothing may panic or touch memory outside the guest.

#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use device_api::LineInterrupt;
use device_api::PortIo;
use disk::Disk;
use disk::RamLayer;
use guest_mem::GuestMemory;
use ide::IdeController;
use ide::IdeDrive;
use libfuzzer_sys::fuzz_target;
use pci_core::PciFunction;

const BM: u16 = 0xc000;
const MEM: u64 = 0x40000;

/// Commands worth hitting often.
const COMMANDS: &[u8] = &[
    0x00, 0x08, 0x10, 0x20, 0x24, 0x25, 0x27, 0x29, 0x30, 0x34, 0x35, 0x39, 0x3d, 0x40, 0x42,
    0x70, 0x90, 0x91, 0xa0, 0xa1, 0xc4, 0xc5, 0xc6, 0xc8, 0xca, 0xce, 0xe0, 0xe5, 0xe7, 0xea,
    0xec, 0xef, 0xf8,
];

#[derive(Arbitrary, Debug)]
enum Op {
    /// Task file register write (offset 1-6) on a channel.
    Reg { secondary: bool, offset: u8, value: u8 },
    /// A command from the list.
    Command { secondary: bool, index: u8 },
    /// A raw command byte.
    RawCommand { secondary: bool, value: u8 },
    Control { secondary: bool, value: u8 },
    /// Data port traffic: `count` accesses of `width` bytes.
    DataRead { secondary: bool, count: u16, wide: bool },
    DataWrite { secondary: bool, count: u16, value: u16 },
    /// A 12-byte packet written to the data port.
    Packet { secondary: bool, cdb: [u8; 12] },
    Read { secondary: bool, offset: u8 },
    BusMaster { offset: u8, value: u8 },
    Config { offset: u8, value: u32, mask: u32 },
    /// Guest memory contents (PRD entries, buffers).
    Memory { at: u16, bytes: Vec<u8> },
    Eject,
}

fuzz_target!(|ops: Vec<Op>| {
    let mem = GuestMemory::allocate(MEM);
    let hd: Arc<dyn Disk> = Arc::new(RamLayer::new_zeroed(64 * 1024, 512).unwrap());
    let cd: Arc<dyn Disk> = Arc::new(RamLayer::new_zeroed(64 * 2048, 512).unwrap());
    let mut ide = IdeController::new(
        mem.clone(),
        [LineInterrupt::detached(), LineInterrupt::detached()],
        [
            [Some(IdeDrive::HardDisk(hd)), Some(IdeDrive::Cdrom(Some(cd)))],
            [Some(IdeDrive::Cdrom(None)), None],
        ],
    )
    .unwrap();
    ide.config_write(0x20, u32::from(BM), u32::MAX);
    ide.config_write(0x04, 5, 0xffff);
    let base = |secondary: bool| if secondary { 0x170u16 } else { 0x1f0 };
    for op in ops.into_iter().take(2048) {
        match op {
            Op::Reg { secondary, offset, value } => {
                let _ = ide.io_write(base(secondary) + 1 + u16::from(offset % 6), &[value]);
            }
            Op::Command { secondary, index } => {
                let c = COMMANDS[usize::from(index) % COMMANDS.len()];
                let _ = ide.io_write(base(secondary) + 7, &[c]);
            }
            Op::RawCommand { secondary, value } => {
                let _ = ide.io_write(base(secondary) + 7, &[value]);
            }
            Op::Control { secondary, value } => {
                let port = if secondary { 0x376 } else { 0x3f6 };
                let _ = ide.io_write(port, &[value]);
            }
            Op::DataRead { secondary, count, wide } => {
                for _ in 0..count.min(4096) {
                    let mut b = [0u8; 4];
                    let n = if wide { 4 } else { 2 };
                    let _ = ide.io_read(base(secondary), &mut b[..n]);
                }
            }
            Op::DataWrite { secondary, count, value } => {
                for _ in 0..count.min(4096) {
                    let _ = ide.io_write(base(secondary), &value.to_le_bytes());
                }
            }
            Op::Packet { secondary, cdb } => {
                for w in cdb.chunks(2) {
                    let _ = ide.io_write(base(secondary), w);
                }
            }
            Op::Read { secondary, offset } => {
                let port = match offset % 9 {
                    8 => if secondary { 0x376 } else { 0x3f6 },
                    o => base(secondary) + u16::from(o),
                };
                let mut b = [0u8];
                let _ = ide.io_read(port, &mut b);
            }
            Op::BusMaster { offset, value } => {
                let _ = ide.io_write(BM + u16::from(offset % 16), &[value]);
            }
            Op::Config { offset, value, mask } => {
                ide.config_write(u16::from(offset) & 0xfc, value, mask);
                let _ = ide.config_read(u16::from(offset) & 0xfc);
            }
            Op::Memory { at, bytes } => {
                let at = u64::from(at) * 4;
                let n = bytes.len().min(256);
                let _ = mem.write_at(at, &bytes[..n]);
            }
            Op::Eject => {
                let _ = ide.set_cdrom_medium(0, 1, None);
            }
        }
    }
});
