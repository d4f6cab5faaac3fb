//! A tiny machine for tests: guest memory, one processor, a recording exit handler, and
//! helpers to assemble code and set up long mode.

use std::sync::Mutex;

use guest_mem::GuestMemory;
use iced_x86::code_asm::CodeAssembler;
use virt::ExitHandler;
use virt::HypercallInput;
use virt::Processor;
use virt::SegmentRegister;
use virt::SpecialRegisters;
use virt::TableRegister;

use crate::vp::RunOptions;
use crate::vp::Stop;
use crate::vp::Vp;

/// Records everything the processor asks of the machine.
#[derive(Default)]
pub(crate) struct TestIo {
    pub writes: Mutex<Vec<(u16, u64)>>,
    pub mmio_writes: Mutex<Vec<(u64, u64)>>,
    pub mmio_reads: Mutex<Vec<u64>>,
    /// Vectors `pic_acknowledge` hands out, in order.
    pub pic: Mutex<Vec<u8>>,
    pub eois: Mutex<Vec<u8>>,
    pub hypercalls: Mutex<Vec<HypercallInput>>,
    /// Value IN returns.
    pub port_value: u32,
}

impl TestIo {
    pub fn port(&self, port: u16) -> Vec<u64> {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|w| w.0 == port)
            .map(|w| w.1)
            .collect()
    }
}

impl ExitHandler for TestIo {
    fn pio_read(&self, _vp: u32, _port: u16, data: &mut [u8]) {
        let b = self.port_value.to_le_bytes();
        data.copy_from_slice(&b[..data.len()]);
    }
    fn pio_write(&self, _vp: u32, port: u16, data: &[u8]) {
        let mut b = [0u8; 8];
        b[..data.len()].copy_from_slice(data);
        self.writes
            .lock()
            .unwrap()
            .push((port, u64::from_le_bytes(b)));
    }
    fn mmio_read(&self, _vp: u32, gpa: u64, data: &mut [u8]) {
        self.mmio_reads.lock().unwrap().push(gpa);
        data.fill(0xee);
    }
    fn mmio_write(&self, _vp: u32, gpa: u64, data: &[u8]) {
        let mut b = [0u8; 8];
        b[..data.len()].copy_from_slice(data);
        self.mmio_writes
            .lock()
            .unwrap()
            .push((gpa, u64::from_le_bytes(b)));
    }
    fn msr_read(&self, _vp: u32, _msr: u32) -> Option<u64> {
        None
    }
    fn msr_write(&self, _vp: u32, _msr: u32, _value: u64) -> bool {
        false
    }
    fn hypercall(&self, _vp: u32, input: HypercallInput) -> u64 {
        self.hypercalls.lock().unwrap().push(input);
        0x1234
    }
    fn pic_acknowledge(&self) -> Option<u8> {
        let mut p = self.pic.lock().unwrap();
        if p.is_empty() {
            None
        } else {
            Some(p.remove(0))
        }
    }
    fn eoi(&self, vector: u8) {
        self.eois.lock().unwrap().push(vector);
    }
}

/// Assembles `f` for `bits` at `base`.
pub(crate) fn asm(
    bits: u32,
    base: u64,
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
) -> Vec<u8> {
    let mut a = CodeAssembler::new(bits).unwrap();
    f(&mut a).unwrap();
    a.assemble(base).unwrap()
}

pub(crate) const GDT: u64 = 0x1000;
pub(crate) const IDT: u64 = 0x2000;
pub(crate) const TSS: u64 = 0x3000;
pub(crate) const PML4: u64 = 0x10000;
pub(crate) const CODE: u64 = 0x10_0000;
pub(crate) const STACK: u64 = 0x8_0000;
pub(crate) const MEM: u64 = 16 << 20;

pub(crate) const KCODE: u16 = 0x08;
pub(crate) const KDATA: u16 = 0x10;
#[allow(dead_code, reason = "documents the GDT layout")]
pub(crate) const UCODE32: u16 = 0x18;
pub(crate) const UDATA: u16 = 0x20;
pub(crate) const UCODE64: u16 = 0x28;
pub(crate) const TSS_SEL: u16 = 0x30;
pub(crate) const KCODE32: u16 = 0x40;
#[allow(dead_code, reason = "documents the GDT layout")]
pub(crate) const KCODE16: u16 = 0x48;

/// A processor on its own memory with a recording exit handler.
pub(crate) struct Machine {
    pub mem: GuestMemory,
    pub vp: Vp,
    pub io: TestIo,
}

impl Machine {
    pub fn new() -> Machine {
        let mem = GuestMemory::allocate(MEM);
        let vp = Vp::standalone(mem.clone());
        Machine {
            mem,
            vp,
            io: TestIo::default(),
        }
    }

    pub fn write(&self, gpa: u64, data: &[u8]) {
        self.mem.write_at(gpa, data).unwrap();
    }

    pub fn w64(&self, gpa: u64, v: u64) {
        self.mem.write_plain(gpa, &v).unwrap();
    }

    pub fn r64(&self, gpa: u64) -> u64 {
        self.mem.read_plain::<u64>(gpa).unwrap()
    }

    pub fn run(&mut self) -> Stop {
        self.vp
            .run_with(
                &self.io,
                RunOptions {
                    stop_on_halt: true,
                    max_instructions: Some(50_000_000),
                },
            )
            .unwrap()
    }

    pub fn regs(&mut self) -> virt::Registers {
        self.vp.registers().unwrap()
    }

    pub fn sregs(&mut self) -> SpecialRegisters {
        self.vp.special_registers().unwrap()
    }

    pub fn set_rip(&mut self, rip: u64) {
        let mut r = self.regs();
        r.rip = rip;
        self.vp.set_registers(&r).unwrap();
    }

    pub fn set_gpr(&mut self, i: usize, v: u64) {
        let mut r = self.regs();
        r.gpr[i] = v;
        self.vp.set_registers(&r).unwrap();
    }

    /// Writes the standard GDT.
    pub fn write_gdt(&self) {
        write_gdt(&self.mem);
    }

    /// A 64-bit interrupt gate for `vector` to `handler`.
    pub fn set_gate64(&self, vector: u8, handler: u64, ist: u8, dpl: u8) {
        let lo = (handler & 0xffff)
            | (u64::from(KCODE) << 16)
            | (u64::from(ist) << 32)
            | ((0x8e | (u64::from(dpl) << 5)) << 40)
            | ((handler >> 16) & 0xffff) << 48;
        let a = IDT + 16 * u64::from(vector);
        self.w64(a, lo);
        self.w64(a + 8, handler >> 32);
    }

    /// Puts the processor in 64-bit mode at CPL 0 with identity paging, running `code` at
    /// `CODE` with RSP = `STACK`.
    pub fn long_mode(code: &[u8]) -> Machine {
        let mut m = Machine::new();
        prepare_long_mode_memory(&m.mem);
        m.write(CODE, code);
        m.vp.set_special_registers(&long_mode_sregs()).unwrap();
        let mut r = m.regs();
        r.rip = CODE;
        r.gpr[4] = STACK;
        r.rflags = 2;
        m.vp.set_registers(&r).unwrap();
        m
    }

    /// A 32-bit interrupt gate for `vector` to `handler` in `KCODE32`.
    pub fn set_gate32(&self, vector: u8, handler: u32) {
        let gate = u64::from(handler & 0xffff)
            | (u64::from(KCODE32) << 16)
            | (0x8e00u64 << 32)
            | (u64::from(handler >> 16) << 48);
        self.w64(IDT + 8 * u64::from(vector), gate);
    }

    /// Puts the processor in 32-bit protected mode at CPL 0 (no paging) with the standard
    /// GDT and IDT, flat data segments and CS = `KCODE32` with the given limit and attributes.
    pub fn protected_mode32(cs_limit: u32, cs_attributes: u16) -> Machine {
        let mut m = Machine::new();
        m.write_gdt();
        let mut s = SpecialRegisters::reset();
        s.cs = SegmentRegister {
            limit: cs_limit,
            ..SegmentRegister::flat(KCODE32, cs_attributes)
        };
        s.ds = SegmentRegister::flat(KDATA, 0xc093);
        s.es = s.ds;
        s.ss = s.ds;
        s.fs = s.ds;
        s.gs = s.ds;
        s.gdtr = virt::TableRegister {
            base: GDT,
            limit: 0x7f,
        };
        s.idtr = virt::TableRegister {
            base: IDT,
            limit: 0x7ff,
        };
        s.cr0 = 0x11;
        m.vp.set_special_registers(&s).unwrap();
        m
    }

    /// Advances the partition's (manual) clock.
    pub fn advance_clock(&self, ns: u64) {
        self.vp.cpu.shared.clock.advance(ns);
    }
}

fn w64(mem: &GuestMemory, gpa: u64, v: u64) {
    mem.write_plain(gpa, &v).unwrap();
}

/// Writes the standard GDT (see the selector constants) with a 64-bit TSS at `TSS`.
pub(crate) fn write_gdt(mem: &GuestMemory) {
    let tss_lo = 0x0000_8900_0000_0067u64 | ((TSS & 0xff_ffff) << 16) | ((TSS >> 24) << 56);
    let entries: [u64; 10] = [
        0,
        0x00af_9b00_0000_ffff, // 0x08 kernel code 64
        0x00cf_9300_0000_ffff, // 0x10 kernel data
        0x00cf_fb00_0000_ffff, // 0x18 user code 32
        0x00cf_f300_0000_ffff, // 0x20 user data
        0x00af_fb00_0000_ffff, // 0x28 user code 64
        tss_lo,                // 0x30 TSS (16 bytes)
        0,
        0x00cf_9b00_0000_ffff, // 0x40 kernel code 32
        0x0000_9b00_0000_ffff, // 0x48 kernel code 16
    ];
    for (i, e) in entries.iter().enumerate() {
        w64(mem, GDT + 8 * i as u64, *e);
    }
}

/// GDT, identity paging of the low 4 GiB (2 MiB pages below 1 GiB, 1 GiB pages above), and
/// RSP0 in the TSS.
pub(crate) fn prepare_long_mode_memory(mem: &GuestMemory) {
    write_gdt(mem);
    w64(mem, PML4, (PML4 + 0x1000) | 7);
    w64(mem, PML4 + 0x1000, (PML4 + 0x2000) | 7);
    for i in 1..4u64 {
        w64(mem, PML4 + 0x1000 + 8 * i, (i << 30) | 0x87);
    }
    for i in 0..512u64 {
        w64(mem, PML4 + 0x2000 + 8 * i, (i << 21) | 0x87);
    }
    w64(mem, TSS + 4, STACK + 0x10000);
}

/// Segment and control registers of 64-bit mode at CPL 0 (see `prepare_long_mode_memory`).
pub(crate) fn long_mode_sregs() -> SpecialRegisters {
    let flat = virt::SegmentRegister::flat;
    SpecialRegisters {
        cs: flat(KCODE, 0xa09b),
        ds: flat(KDATA, 0xc093),
        es: flat(KDATA, 0xc093),
        fs: flat(KDATA, 0xc093),
        gs: flat(KDATA, 0xc093),
        ss: flat(KDATA, 0xc093),
        tr: SegmentRegister {
            base: TSS,
            limit: 0x67,
            selector: TSS_SEL,
            attributes: 0x8b,
        },
        ldtr: SegmentRegister {
            base: 0,
            limit: 0,
            selector: 0,
            attributes: 0x82,
        },
        gdtr: TableRegister {
            base: GDT,
            limit: 0x7f,
        },
        idtr: TableRegister {
            base: IDT,
            limit: 0xfff,
        },
        cr0: 0x8005_0033,
        cr2: 0,
        cr3: PML4,
        cr4: 0x6a0,
        cr8: 0,
        efer: 0xd01,
        apic_base: 0xfee0_0900,
    }
}
