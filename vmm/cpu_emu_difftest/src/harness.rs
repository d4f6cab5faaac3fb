//! Running one instruction form natively and on the `emu` CPU, and comparing the results.

use cpu_emu::RunOptions;
use cpu_emu::Stop;
use cpu_emu::Vp;
use guest_mem::GuestMemory;
use iced_x86::code_asm::*;
use virt::Processor;

use crate::rng::Rng;

/// The base register memory operands use; it points into [`State::buf`].
pub const BASE: usize = 15;
/// Where the base register points, from the start of `buf`.
pub const BUF_MID: u64 = 256;

const OFF_FLAGS: i32 = 128;
const OFF_FX: i32 = 192;

/// Everything an instruction under test reads and writes.
#[repr(C, align(64))]
#[derive(Clone, PartialEq, Eq)]
pub struct State {
    /// RAX..R15 (RSP is not loaded: the stub keeps its own stack).
    pub gpr: [u64; 16],
    pub flags: u64,
    pad: [u64; 7],
    /// FXSAVE image (x87, MXCSR, XMM0-15).
    pub fx: [u8; 512],
    /// Memory operands point into this.
    pub buf: [u8; 512],
}

impl State {
    pub fn random(rng: &mut Rng) -> Box<State> {
        let mut s = Box::new(State {
            gpr: [0; 16],
            flags: 0,
            pad: [0; 7],
            fx: [0; 512],
            buf: [0; 512],
        });
        for g in &mut s.gpr {
            *g = rng.interesting();
        }
        s.flags = (rng.next() & 0x8d5) | 0x202;
        // FCW 0x37f, FTW all empty (abridged 0), MXCSR default.
        s.fx[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        s.fx[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        for i in 0..16 {
            let lo = rng.interesting();
            let hi = rng.interesting();
            s.set_xmm(i, u128::from(lo) | (u128::from(hi) << 64));
        }
        for b in s.buf.chunks_mut(8) {
            let v = rng.interesting().to_le_bytes();
            b.copy_from_slice(&v[..b.len()]);
        }
        s
    }

    pub fn xmm(&self, i: usize) -> u128 {
        let o = 160 + 16 * i;
        u128::from_le_bytes(self.fx[o..o + 16].try_into().unwrap())
    }

    pub fn set_xmm(&mut self, i: usize, v: u128) {
        let o = 160 + 16 * i;
        self.fx[o..o + 16].copy_from_slice(&v.to_le_bytes());
    }

    pub fn mxcsr(&self) -> u32 {
        u32::from_le_bytes(self.fx[24..28].try_into().unwrap())
    }

    pub fn set_mxcsr(&mut self, v: u32) {
        self.fx[24..28].copy_from_slice(&v.to_le_bytes());
    }

    /// Puts `vals` on the x87 stack (ST0 = vals[0]) as 80-bit values with valid tags.
    pub fn set_x87(&mut self, vals: &[(u64, u16)]) {
        let n = vals.len();
        let top = (8 - n) % 8;
        let fsw = (top as u16) << 11;
        self.fx[2..4].copy_from_slice(&fsw.to_le_bytes());
        let mut tags = 0u8;
        for (i, &(mant, se)) in vals.iter().enumerate() {
            let o = 32 + 16 * i;
            self.fx[o..o + 8].copy_from_slice(&mant.to_le_bytes());
            self.fx[o + 8..o + 10].copy_from_slice(&se.to_le_bytes());
            tags |= 1 << ((top + i) % 8);
        }
        self.fx[4] = tags;
    }
}

/// Builds the stub around `body` (position independent; RDI = &State).
pub fn stub(body: &dyn Fn(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    let regs = [
        rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
    ];
    (|| -> Result<(), IcedError> {
        for r in [rbx, rbp, r12, r13, r14, r15] {
            a.push(r)?;
        }
        a.fxrstor64(ptr(rdi + OFF_FX))?;
        a.push(qword_ptr(rdi + OFF_FLAGS))?;
        a.popfq()?;
        a.push(rdi)?;
        for (i, &r) in regs.iter().enumerate() {
            if i != 4 && i != 7 {
                a.mov(r, qword_ptr(rdi + 8 * i as i32))?;
            }
        }
        a.mov(rdi, qword_ptr(rdi + 56))?;
        body(&mut a)?;
        a.xchg(qword_ptr(rsp), rdi)?;
        for (i, &r) in regs.iter().enumerate() {
            if i != 4 && i != 7 {
                a.mov(qword_ptr(rdi + 8 * i as i32), r)?;
            }
        }
        a.pushfq()?;
        a.pop(qword_ptr(rdi + OFF_FLAGS))?;
        a.pop(rax)?;
        a.mov(qword_ptr(rdi + 56), rax)?;
        a.fxsave64(ptr(rdi + OFF_FX))?;
        for r in [r15, r14, r13, r12, rbp, rbx] {
            a.pop(r)?;
        }
        a.ret()
    })()
    .unwrap();
    a.assemble(0).unwrap()
}

/// Runs `code` on the host.
mod native {
    use super::State;

    pub struct NativeStub {
        map: memmap2::Mmap,
    }

    impl NativeStub {
        pub fn new(code: &[u8]) -> NativeStub {
            let mut m = memmap2::MmapMut::map_anon(4096).unwrap();
            m[..code.len()].copy_from_slice(code);
            NativeStub {
                map: m.make_exec().unwrap(),
            }
        }

        pub fn run(&self, s: &mut State) {
            let p = self.map.as_ptr();
            // SAFETY: the mapping holds a complete stub built by `super::stub`: it saves the
            // callee-saved registers, runs one instruction form chosen by the tests (no stack,
            // control-flow or privileged instructions; memory operands only through R15 into
            // `s.buf`, whose bounds the forms respect), stores the registers into `*s` and
            // returns. `s` is valid for reads and writes and 64-byte aligned for FXSAVE.
            unsafe {
                let f: extern "sysv64" fn(*mut State) = std::mem::transmute(p);
                f(s);
            }
        }
    }
}

pub use native::NativeStub;

const CODE: u64 = 0x10_0000;
const WRAPPER: u64 = 0x0f_f000;
const STATE: u64 = 0x20_0000;
const STACK: u64 = 0x8_0000;
const BUF_OFF: u64 = std::mem::offset_of!(State, buf) as u64;

/// A standalone `emu` processor in 64-bit mode running the stub.
pub struct Emu {
    mem: GuestMemory,
    vp: Vp,
}

impl Emu {
    pub fn new() -> Emu {
        let mem = GuestMemory::allocate(8 << 20);
        let w = |a: u64, v: u64| mem.write_plain(a, &v).unwrap();
        w(0x10000, 0x11000 | 3);
        w(0x11000, 0x12000 | 3);
        for i in 0..512u64 {
            w(0x12000 + 8 * i, (i << 21) | 0x83);
        }
        w(0x1008, 0x00af_9b00_0000_ffff);
        w(0x1010, 0x00cf_9300_0000_ffff);
        // wrapper: mov rdi, STATE; call CODE; hlt
        let mut a = CodeAssembler::new(64).unwrap();
        a.mov(rdi, STATE).unwrap();
        a.call(CODE).unwrap();
        a.hlt().unwrap();
        mem.write_at(WRAPPER, &a.assemble(WRAPPER).unwrap())
            .unwrap();
        let mut vp = Vp::standalone(mem.clone());
        let flat = virt::SegmentRegister::flat;
        let mut s = vp.special_registers().unwrap();
        s.cs = flat(8, 0xa09b);
        s.ds = flat(0x10, 0xc093);
        s.es = s.ds;
        s.ss = s.ds;
        s.fs = s.ds;
        s.gs = s.ds;
        s.gdtr = virt::TableRegister {
            base: 0x1000,
            limit: 0x17,
        };
        s.cr0 = 0x8000_0033;
        s.cr3 = 0x10000;
        s.cr4 = 0x620;
        s.efer = 0x500;
        vp.set_special_registers(&s).unwrap();
        Emu { mem, vp }
    }

    pub fn load(&mut self, code: &[u8]) {
        self.mem.write_at(CODE, code).unwrap();
    }

    /// Runs the loaded stub on `s` (whose base register must hold `gpa_base()`).
    pub fn run(&mut self, s: &mut State) -> Result<(), String> {
        let bytes = state_bytes(s);
        self.mem.write_at(STATE, bytes).unwrap();
        let mut r = self.vp.registers().unwrap();
        r.rip = WRAPPER;
        r.gpr[4] = STACK;
        r.rflags = 2;
        self.vp.set_registers(&r).unwrap();
        let limit = self.vp.instructions() + 100_000;
        let stop = self
            .vp
            .run_with(
                &virt::NoDevices,
                RunOptions {
                    stop_on_halt: true,
                    max_instructions: Some(limit),
                },
            )
            .map_err(|e| e.to_string())?;
        if stop != Stop::Halted {
            let r = self.vp.registers().unwrap();
            return Err(format!("emu stopped with {stop:?} at rip {:#x}", r.rip));
        }
        let r = self.vp.registers().unwrap();
        if r.rip != WRAPPER + 16 {
            return Err(format!("emu halted at {:#x}", r.rip));
        }
        let mut out = vec![0u8; std::mem::size_of::<State>()];
        self.mem.read_at(STATE, &mut out).unwrap();
        state_from_bytes(s, &out);
        Ok(())
    }

    pub fn gpa_base() -> u64 {
        STATE + BUF_OFF + BUF_MID
    }
}

fn state_bytes(s: &State) -> &[u8] {
    let p = (s as *const State).cast::<u8>();
    // SAFETY: `State` is `repr(C)` plain data (integers and byte arrays) without padding
    // invariants; viewing it as bytes is always valid.
    unsafe { std::slice::from_raw_parts(p, std::mem::size_of::<State>()) }
}

fn state_from_bytes(s: &mut State, b: &[u8]) {
    let p = (s as *mut State).cast::<u8>();
    // SAFETY: as above; every byte pattern is a valid `State`, and `b` has its size.
    let dst = unsafe { std::slice::from_raw_parts_mut(p, std::mem::size_of::<State>()) };
    dst.copy_from_slice(b);
}

pub fn host_base(s: &State) -> u64 {
    s.buf.as_ptr() as u64 + BUF_MID
}
