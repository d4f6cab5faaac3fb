//! Operand sizes as types, so handlers are monomorphized per size.

use guest_mem::Width;

use crate::cpu::Cpu;

/// An operand size (8, 16, 32 or 64 bits). Values travel as `u64`, masked to the size.
pub(crate) trait Sz: Copy + 'static {
    /// Width in bits.
    const BITS: u32;
    /// Width in bytes.
    const BYTES: u64 = (Self::BITS / 8) as u64;
    /// All ones in the operand's bits.
    const MASK: u64 = u64::MAX >> (64 - Self::BITS);
    /// The sign bit.
    const SIGN: u64 = 1 << (Self::BITS - 1);
    /// Guest-memory access width.
    const W: Width;

    /// Sign-extends the low `BITS` bits of `v` to 64 bits.
    #[inline(always)]
    fn sx(v: u64) -> u64 {
        (((v << (64 - Self::BITS)) as i64) >> (64 - Self::BITS)) as u64
    }

    /// Reads register `r` (for 8-bit operands 16..19 are AH, CH, DH, BH).
    fn get(cpu: &Cpu, r: u8) -> u64;
    /// Writes register `r` with x86 merge rules (8/16-bit merge, 32-bit zero-extends).
    fn set(cpu: &mut Cpu, r: u8, v: u64);
}

#[derive(Clone, Copy)]
pub(crate) struct B;
#[derive(Clone, Copy)]
pub(crate) struct W;
#[derive(Clone, Copy)]
pub(crate) struct D;
#[derive(Clone, Copy)]
pub(crate) struct Q;

impl Sz for B {
    const BITS: u32 = 8;
    const W: Width = Width::U8;
    #[inline(always)]
    fn get(cpu: &Cpu, r: u8) -> u64 {
        if r < 16 {
            cpu.regs[r as usize & 31] & 0xff
        } else {
            (cpu.regs[(r as usize - 16) & 3] >> 8) & 0xff
        }
    }
    #[inline(always)]
    fn set(cpu: &mut Cpu, r: u8, v: u64) {
        if r < 16 {
            let g = &mut cpu.regs[r as usize & 31];
            *g = (*g & !0xff) | (v & 0xff);
        } else {
            let g = &mut cpu.regs[(r as usize - 16) & 3];
            *g = (*g & !0xff00) | ((v & 0xff) << 8);
        }
    }
}

impl Sz for W {
    const BITS: u32 = 16;
    const W: Width = Width::U16;
    #[inline(always)]
    fn get(cpu: &Cpu, r: u8) -> u64 {
        cpu.regs[r as usize & 31] & 0xffff
    }
    #[inline(always)]
    fn set(cpu: &mut Cpu, r: u8, v: u64) {
        let g = &mut cpu.regs[r as usize & 31];
        *g = (*g & !0xffff) | (v & 0xffff);
    }
}

impl Sz for D {
    const BITS: u32 = 32;
    const W: Width = Width::U32;
    #[inline(always)]
    fn get(cpu: &Cpu, r: u8) -> u64 {
        cpu.regs[r as usize & 31] & 0xffff_ffff
    }
    #[inline(always)]
    fn set(cpu: &mut Cpu, r: u8, v: u64) {
        cpu.regs[r as usize & 31] = v & 0xffff_ffff;
    }
}

impl Sz for Q {
    const BITS: u32 = 64;
    const W: Width = Width::U64;
    #[inline(always)]
    fn get(cpu: &Cpu, r: u8) -> u64 {
        cpu.regs[r as usize & 31]
    }
    #[inline(always)]
    fn set(cpu: &mut Cpu, r: u8, v: u64) {
        cpu.regs[r as usize & 31] = v;
    }
}
