//! Arbitrary instruction bytes executed by the `emu` CPU in real mode, 32-bit protected mode,
//! and 64-bit mode at CPL 0 and CPL 3, with page tables that include not-present, read-only,
//! user, NX and MMIO-backed pages and an IDT whose handlers step past the faulting byte.
//!
//! Properties: nothing panics; every MMIO exit is for an address that is not guest RAM; the
//! ROM region keeps its contents.

#![no_main]

use cpu_emu::RunOptions;
use cpu_emu::Vp;
use guest_mem::GuestMemory;
use guest_mem::RegionKind;
use libfuzzer_sys::fuzz_target;
use virt::ExitHandler;
use virt::Processor;
use virt::SegmentRegister;
use virt::TableRegister;

const RAM: u64 = 2 << 20;
const ROM: u64 = 0xffff_0000;
const GDT: u64 = 0x1000;
const IDT: u64 = 0x2000;
const TSS: u64 = 0x3000;
const HANDLERS: u64 = 0x4000;
const PML4: u64 = 0x10000;
const CODE: u64 = 0x2_0000;
const STACK: u64 = 0x8_0000;

/// Every MMIO exit must be for an address that is not guest RAM (checked as it happens: an
/// exception loop with the stack in MMIO makes unboundedly many).
fn check_mmio(gpa: u64) {
    assert!(gpa >= RAM, "MMIO exit for RAM address {gpa:#x}");
}

struct Io {
    seed: u64,
}

impl ExitHandler for Io {
    fn pio_read(&self, _: u32, port: u16, d: &mut [u8]) {
        for (i, b) in d.iter_mut().enumerate() {
            *b = (self.seed >> ((usize::from(port) + i) % 8 * 8)) as u8;
        }
    }
    fn pio_write(&self, _: u32, _: u16, _: &[u8]) {}
    fn mmio_read(&self, _: u32, gpa: u64, d: &mut [u8]) {
        check_mmio(gpa);
        d.fill(self.seed as u8);
    }
    fn mmio_write(&self, _: u32, gpa: u64, _: &[u8]) {
        check_mmio(gpa);
    }
    fn msr_read(&self, _: u32, msr: u32) -> Option<u64> {
        (msr & 1 == 0).then_some(self.seed)
    }
    fn msr_write(&self, _: u32, msr: u32, _: u64) -> bool {
        msr & 1 == 0
    }
    fn hypercall(&self, _: u32, _: virt::HypercallInput) -> u64 {
        self.seed
    }
    fn pic_acknowledge(&self) -> Option<u8> {
        Some(self.seed as u8)
    }
    fn eoi(&self, _: u8) {}
}

fn w64(m: &GuestMemory, a: u64, v: u64) {
    m.write_plain(a, &v).unwrap();
}

fn setup_tables(m: &GuestMemory, rom: &[u8]) {
    let tss_lo = 0x0000_8900_0000_0067u64 | ((TSS & 0xff_ffff) << 16);
    let gdt: [u64; 10] = [
        0,
        0x00af_9b00_0000_ffff,
        0x00cf_9300_0000_ffff,
        0x00cf_fb00_0000_ffff,
        0x00cf_f300_0000_ffff,
        0x00af_fb00_0000_ffff,
        tss_lo,
        0,
        0x00cf_9b00_0000_ffff,
        0x0000_9b00_0000_ffff,
    ];
    for (i, e) in gdt.iter().enumerate() {
        w64(m, GDT + 8 * i as u64, *e);
    }
    w64(m, TSS + 4, STACK);
    w64(m, TSS + 36, STACK - 0x8000);
    // Handlers: without an error code `inc qword [rsp]; iretq`, with one
    // `add rsp, 8; inc qword [rsp]; iretq` (step one byte past the faulting RIP).
    let plain: &[u8] = &[0x48, 0xff, 0x04, 0x24, 0x48, 0xcf];
    let with_code: &[u8] = &[0x48, 0x83, 0xc4, 0x08, 0x48, 0xff, 0x04, 0x24, 0x48, 0xcf];
    m.write_at(HANDLERS, plain).unwrap();
    m.write_at(HANDLERS + 0x10, with_code).unwrap();
    for v in 0..256u64 {
        let h = if matches!(v, 8 | 10..=14 | 17) {
            HANDLERS + 0x10
        } else {
            HANDLERS
        };
        let ist = u64::from(v == 8);
        let lo =
            (h & 0xffff) | (0x08 << 16) | (ist << 32) | (0xee00 << 32) | ((h >> 16) & 0xffff) << 48;
        w64(m, IDT + 16 * v, lo);
        w64(m, IDT + 16 * v + 8, 0);
    }
    // Real-mode IVT at 0: every vector to 0000:4040 (`iret`); 32-bit IDT lives at IDT too
    // only for the protected-mode run, written there instead.
    m.write_at(HANDLERS + 0x40, &[0xcf]).unwrap();
    // Page tables: 1 GiB identity with variety in the first 4 MiB.
    w64(m, PML4, (PML4 + 0x1000) | 7);
    w64(m, PML4 + 8, 0);
    w64(m, PML4 + 0x1000, (PML4 + 0x2000) | 7);
    w64(m, PML4 + 0x2000, (PML4 + 0x3000) | 7);
    w64(m, PML4 + 0x2000 + 8, (3 << 30) | 0x87); // 2..4 MiB: GPA 3 GiB, MMIO
    for i in 0..512u64 {
        let pa = i << 12;
        let flags = match i % 16 {
            13 => 0,             // not present
            14 => 5,             // user read-only
            15 => 3 | (1 << 63), // supervisor NX
            _ => 7,
        };
        let flags = if (0x1..0x20).contains(&i) || (0x20..0x80).contains(&i) {
            7
        } else {
            flags
        };
        w64(m, PML4 + 0x3000 + 8 * i, pa | flags);
    }
    m.load_image(ROM, rom).unwrap();
}


fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let mode = data[0] % 4;
    let seed = u64::from_le_bytes(data[1..9].try_into().unwrap());
    let code = &data[9..data.len().min(9 + 0x4000)];
    let mem =
        GuestMemory::new(&[(0, RAM, RegionKind::Ram), (ROM, 0x1_0000, RegionKind::Rom)]).unwrap();
    let rom: Vec<u8> = (0..0x1_0000u32).map(|i| (i as u8) ^ (seed as u8)).collect();
    setup_tables(&mem, &rom);
    mem.write_at(CODE, code).unwrap();
    let mut vp = Vp::standalone(mem.clone());
    let mut s = vp.special_registers().unwrap();
    let mut r = vp.registers().unwrap();
    let mut x = seed | 1;
    for g in r.gpr.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *g = if x % 3 == 0 { x % 0x40_0000 } else { x };
    }
    r.gpr[4] = STACK - 0x100;
    r.rflags = 0x2 | (seed & 0x8d5);
    match mode {
        0 => {
            // Real mode at 0000:CODE (CS base 0x20000).
            s.cs = SegmentRegister {
                base: CODE,
                limit: 0xffff,
                selector: (CODE >> 4) as u16,
                attributes: 0x9b,
            };
            for v in 0..256u64 {
                mem.write_plain(v * 4, &((HANDLERS as u32 + 0x40) & 0xffff))
                    .unwrap();
            }
            r.rip = 0;
            r.gpr[4] = 0x7000;
        }
        1 => {
            // 32-bit protected mode, no paging, 32-bit IDT at IDT.
            for v in 0..256u64 {
                let h = HANDLERS + 0x40;
                let g = (h & 0xffff) | (0x40 << 16) | (0xee00u64 << 32) | ((h >> 16) << 48);
                mem.write_plain(IDT + 8 * v, &g).unwrap();
            }
            s.cs = SegmentRegister::flat(0x40, 0xc09b);
            s.ds = SegmentRegister::flat(0x10, 0xc093);
            s.es = s.ds;
            s.ss = s.ds;
            s.fs = s.ds;
            s.gs = s.ds;
            s.gdtr = TableRegister {
                base: GDT,
                limit: 0x7f,
            };
            s.idtr = TableRegister {
                base: IDT,
                limit: 0x7ff,
            };
            s.cr0 = 0x11;
            r.rip = CODE;
        }
        _ => {
            // 64-bit mode, CPL 0 (mode 2) or CPL 3 (mode 3).
            let user = mode == 3;
            s.cs = if user {
                SegmentRegister::flat(0x2b, 0xa0fb)
            } else {
                SegmentRegister::flat(0x08, 0xa09b)
            };
            s.ss = if user {
                SegmentRegister::flat(0x23, 0xc0f3)
            } else {
                SegmentRegister::flat(0x10, 0xc093)
            };
            s.ds = s.ss;
            s.es = s.ss;
            s.fs = s.ss;
            s.gs = s.ss;
            s.tr = SegmentRegister {
                base: TSS,
                limit: 0x67,
                selector: 0x30,
                attributes: 0x8b,
            };
            s.gdtr = TableRegister {
                base: GDT,
                limit: 0x7f,
            };
            s.idtr = TableRegister {
                base: IDT,
                limit: 0xfff,
            };
            s.cr0 = 0x8005_0033;
            s.cr3 = PML4;
            s.cr4 = 0x6a0;
            s.efer = 0xd01;
            r.rip = CODE;
        }
    }
    vp.set_special_registers(&s).unwrap();
    vp.set_registers(&r).unwrap();
    let io = Io { seed };
    // Internal errors (e.g. an instruction fetch from MMIO) are backend errors, not crashes.
    let _ = vp.run_with(
        &io,
        RunOptions {
            stop_on_halt: true,
            max_instructions: Some(4_000),
        },
    );
    let mut now = vec![0u8; rom.len()];
    mem.read_at(ROM, &mut now).unwrap();
    assert!(now == rom, "ROM changed");
});
