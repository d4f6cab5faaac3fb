//! Integer arithmetic and logic, moves, and flag instructions.

use virt::ExitHandler;

use super::Rm;
use super::get_rm;
use super::rmw;
use super::rmw_locked;
use super::set_rm;
use crate::cpu::Cpu;
use crate::cpu::Res;
use crate::flags;
use crate::op::Op;
use crate::size::B;
use crate::size::D;

use crate::size::Sz;
use crate::size::W;

/// A two-operand ALU operation.
pub(crate) trait AluOp {
    /// Whether the result is written back (false for CMP and TEST).
    const STORE: bool = true;
    fn calc<S: Sz>(c: &mut Cpu, a: u64, b: u64) -> u64;
}

pub(crate) struct Add;
pub(crate) struct Or;
pub(crate) struct Adc;
pub(crate) struct Sbb;
pub(crate) struct And;
pub(crate) struct Sub;
pub(crate) struct Xor;
pub(crate) struct Cmp;
pub(crate) struct Test;

impl AluOp for Add {
    #[inline(always)]
    fn calc<S: Sz>(c: &mut Cpu, a: u64, b: u64) -> u64 {
        let r = a.wrapping_add(b) & S::MASK;
        c.flags_add::<S>(a, b, r);
        r
    }
}
impl AluOp for Adc {
    #[inline(always)]
    fn calc<S: Sz>(c: &mut Cpu, a: u64, b: u64) -> u64 {
        let r = a.wrapping_add(b).wrapping_add(c.cf() as u64) & S::MASK;
        c.flags_add::<S>(a, b, r);
        r
    }
}
impl AluOp for Sub {
    #[inline(always)]
    fn calc<S: Sz>(c: &mut Cpu, a: u64, b: u64) -> u64 {
        let r = a.wrapping_sub(b) & S::MASK;
        c.flags_sub::<S>(a, b, r);
        r
    }
}
impl AluOp for Sbb {
    #[inline(always)]
    fn calc<S: Sz>(c: &mut Cpu, a: u64, b: u64) -> u64 {
        let r = a.wrapping_sub(b).wrapping_sub(c.cf() as u64) & S::MASK;
        c.flags_sub::<S>(a, b, r);
        r
    }
}
impl AluOp for Cmp {
    const STORE: bool = false;
    #[inline(always)]
    fn calc<S: Sz>(c: &mut Cpu, a: u64, b: u64) -> u64 {
        let r = a.wrapping_sub(b) & S::MASK;
        c.flags_sub::<S>(a, b, r);
        r
    }
}
impl AluOp for And {
    #[inline(always)]
    fn calc<S: Sz>(c: &mut Cpu, a: u64, b: u64) -> u64 {
        let r = a & b;
        c.flags_logic::<S>(r);
        r
    }
}
impl AluOp for Test {
    const STORE: bool = false;
    #[inline(always)]
    fn calc<S: Sz>(c: &mut Cpu, a: u64, b: u64) -> u64 {
        let r = a & b;
        c.flags_logic::<S>(r);
        r
    }
}
impl AluOp for Or {
    #[inline(always)]
    fn calc<S: Sz>(c: &mut Cpu, a: u64, b: u64) -> u64 {
        let r = a | b;
        c.flags_logic::<S>(r);
        r
    }
}
impl AluOp for Xor {
    #[inline(always)]
    fn calc<S: Sz>(c: &mut Cpu, a: u64, b: u64) -> u64 {
        let r = a ^ b;
        c.flags_logic::<S>(r);
        r
    }
}

/// `op r/m, reg` (also reg, reg with the destination in `rm`).
pub(crate) fn alu_rm_r<O: AluOp, S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let b = S::get(c, op.r);
    if !O::STORE {
        let a = get_rm::<S, X>(c, op, io)?;
        O::calc::<S>(c, a, b);
        return Ok(());
    }
    rmw::<S, X>(c, op, io, |c, a| O::calc::<S>(c, a, b))
}

/// `op r/m, imm`.
pub(crate) fn alu_rm_i<O: AluOp, S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let b = op.imm & S::MASK;
    if !O::STORE {
        let a = get_rm::<S, X>(c, op, io)?;
        O::calc::<S>(c, a, b);
        return Ok(());
    }
    rmw::<S, X>(c, op, io, |c, a| O::calc::<S>(c, a, b))
}

/// `op reg, mem`.
pub(crate) fn alu_r_m<O: AluOp, S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let b = c.read_op::<S>(op, io)?;
    let a = S::get(c, op.r);
    let r = O::calc::<S>(c, a, b);
    if O::STORE {
        S::set(c, op.r, r);
    }
    Ok(())
}

/// `lock op mem, reg`.
pub(crate) fn alu_lock_r<O: AluOp, S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let b = S::get(c, op.r);
    rmw_locked::<S>(c, op, io, |c, a| O::calc::<S>(c, a, b))
}

/// `lock op mem, imm`.
pub(crate) fn alu_lock_i<O: AluOp, S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let b = op.imm & S::MASK;
    rmw_locked::<S>(c, op, io, |c, a| O::calc::<S>(c, a, b))
}

/// A one-operand read-modify-write operation.
pub(crate) trait UnOp {
    fn calc<S: Sz>(c: &mut Cpu, a: u64) -> u64;
}
pub(crate) struct Inc;
pub(crate) struct Dec;
pub(crate) struct Not;
pub(crate) struct Neg;

/// Aux word for INC/DEC: the old CF kept, OF and AF from the operation.
#[inline(always)]
fn incdec_aux(old_aux: u64, of: bool, af: bool) -> u64 {
    let cf = old_aux & (1 << 63);
    cf | ((cf >> 1) ^ ((of as u64) << 62)) | ((af as u64) << 3)
}

impl UnOp for Inc {
    #[inline(always)]
    fn calc<S: Sz>(c: &mut Cpu, a: u64) -> u64 {
        let r = a.wrapping_add(1) & S::MASK;
        c.lf_aux = incdec_aux(c.lf_aux, r == S::SIGN, r & 0xf == 0);
        c.lf_res = S::sx(r);
        r
    }
}
impl UnOp for Dec {
    #[inline(always)]
    fn calc<S: Sz>(c: &mut Cpu, a: u64) -> u64 {
        let r = a.wrapping_sub(1) & S::MASK;
        c.lf_aux = incdec_aux(c.lf_aux, a == S::SIGN, a & 0xf == 0);
        c.lf_res = S::sx(r);
        r
    }
}
impl UnOp for Not {
    #[inline(always)]
    fn calc<S: Sz>(_: &mut Cpu, a: u64) -> u64 {
        !a & S::MASK
    }
}
impl UnOp for Neg {
    #[inline(always)]
    fn calc<S: Sz>(c: &mut Cpu, a: u64) -> u64 {
        let r = 0u64.wrapping_sub(a) & S::MASK;
        c.flags_sub::<S>(0, a, r);
        r
    }
}

/// INC/DEC/NOT/NEG r/m.
pub(crate) fn unary<O: UnOp, S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    rmw::<S, X>(c, op, io, |c, a| O::calc::<S>(c, a))
}

/// LOCK INC/DEC/NOT/NEG mem.
pub(crate) fn unary_lock<O: UnOp, S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    rmw_locked::<S>(c, op, io, |c, a| O::calc::<S>(c, a))
}

// ---- moves ----

/// `mov r/m, reg` (reg-reg: destination in `rm`).
pub(crate) fn mov_rm_r<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let v = S::get(c, op.r);
    set_rm::<S, X>(c, op, v, io)
}

/// `mov reg, mem`.
pub(crate) fn mov_r_m<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let v = c.read_op::<S>(op, io)?;
    S::set(c, op.r, v);
    Ok(())
}

/// `mov r/m, imm`.
pub(crate) fn mov_rm_i<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    set_rm::<S, X>(c, op, op.imm & S::MASK, io)
}

/// MOVZX reg, r/m (also MOVSXD r32, r/m32 and other same-width moves).
pub(crate) fn movzx<SD: Sz, SS: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let v = get_rm::<SS, X>(c, op, io)?;
    SD::set(c, op.r, v);
    Ok(())
}

/// MOVSX/MOVSXD reg, r/m.
pub(crate) fn movsx<SD: Sz, SS: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let v = get_rm::<SS, X>(c, op, io)?;
    SD::set(c, op.r, SS::sx(v) & SD::MASK);
    Ok(())
}

/// LEA reg, mem.
pub(crate) fn lea<S: Sz>(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    let v = c.ea(op);
    S::set(c, op.r, v & S::MASK);
    Ok(())
}

/// XCHG reg, r/m (memory operands are always locked).
pub(crate) fn xchg<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let b = S::get(c, op.r);
    if !X::MEM {
        let a = S::get(c, op.rm);
        S::set(c, op.rm, b);
        S::set(c, op.r, a);
        return Ok(());
    }
    let loc = c.rmw_op::<S>(op, io)?;
    let a = match loc {
        crate::mmu::Loc::Host(off) => c.mem.swap(off, S::W, b),
        crate::mmu::Loc::Lin(_) => {
            let a = c.load_loc::<S>(loc, io)?;
            c.store_loc::<S>(loc, b, io)?;
            a
        }
    };
    S::set(c, op.r, a);
    Ok(())
}

/// CMOVcc reg, r/m (the source is always read; a 32-bit destination is always written).
pub(crate) fn cmov<const CC: u8, S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let v = get_rm::<S, X>(c, op, io)?;
    let v = if c.cond(CC) { v } else { S::get(c, op.r) };
    S::set(c, op.r, v);
    Ok(())
}

/// SETcc r/m8.
pub(crate) fn setcc<const CC: u8, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let v = c.cond(CC) as u64;
    set_rm::<B, X>(c, op, v, io)
}

/// BSWAP reg (16-bit operand size: the low word becomes zero, as Intel CPUs do).
pub(crate) fn bswap<S: Sz>(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    let v = S::get(c, op.r);
    let r = match S::BITS {
        64 => v.swap_bytes(),
        32 => u64::from((v as u32).swap_bytes()),
        _ => 0,
    };
    S::set(c, op.r, r);
    Ok(())
}

/// CBW/CWDE/CDQE: sign-extend the low half of rAX into rAX.
pub(crate) fn cbw<S: Sz>(c: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    let v = c.regs[0];
    let r = match S::BITS {
        16 => B::sx(v) & 0xffff,
        32 => W::sx(v) & 0xffff_ffff,
        _ => D::sx(v),
    };
    S::set(c, 0, r);
    Ok(())
}

/// CWD/CDQ/CQO: sign of rAX into rDX.
pub(crate) fn cwd<S: Sz>(c: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    let neg = S::get(c, 0) & S::SIGN != 0;
    S::set(c, 2, if neg { S::MASK } else { 0 });
    Ok(())
}

/// CLC (x=0), STC (x=1), CMC (x=2).
pub(crate) fn carry_op(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    let cf = match op.x {
        0 => false,
        1 => true,
        _ => !c.cf(),
    };
    c.set_cf(cf);
    Ok(())
}

/// CLD (x=0) / STD (x=1).
pub(crate) fn dir_op(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    if op.x == 0 {
        c.flags &= !flags::DF;
    } else {
        c.flags |= flags::DF;
    }
    Ok(())
}

/// LAHF.
pub(crate) fn lahf(c: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    let f = c.status_flags() & 0xd5 | 2;
    B::set(c, 16, f);
    Ok(())
}

/// SAHF.
pub(crate) fn sahf(c: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    let ah = B::get(c, 16);
    let f = (ah & 0xd5) | (c.status_flags() & flags::OF);
    c.set_status_flags(f);
    Ok(())
}

/// XLAT: AL = [seg:rBX + AL].
pub(crate) fn xlat(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let off = c.regs[3].wrapping_add(c.regs[0] & 0xff) & crate::mmu::AMASK[op.asz as usize & 3];
    let lin = c.lin_off_r(op.seg, off, 1)?;
    let v = c.read::<B>(lin, io)?;
    B::set(c, 0, v);
    Ok(())
}

/// SALC (undocumented, legacy modes): AL = CF ? 0xff : 0.
pub(crate) fn salc(c: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    let v = if c.cf() { 0xff } else { 0 };
    B::set(c, 0, v);
    Ok(())
}

/// DAA (x=0), DAS (1), AAA (2), AAS (3), AAM imm8 (4), AAD imm8 (5).
pub(crate) fn bcd(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    let al = c.regs[0] & 0xff;
    let (cf, af) = (c.cf(), c.af());
    match op.x {
        0 | 1 => {
            let sub = op.x == 1;
            let mut a = al;
            let mut ncf = false;
            let naf = (al & 0xf) > 9 || af;
            if naf {
                if sub {
                    ncf = cf || al < 6;
                    a = a.wrapping_sub(6) & 0xff;
                } else {
                    ncf = cf || al + 6 > 0xff;
                    a = (a + 6) & 0xff;
                }
            }
            if al > 0x99 || cf {
                a = if sub {
                    a.wrapping_sub(0x60) & 0xff
                } else {
                    (a + 0x60) & 0xff
                };
                ncf = true;
            } else if !sub {
                ncf = false;
            }
            B::set(c, 0, a);
            c.flags_res_cf_of::<B>(a, ncf, false, naf);
        }
        2 | 3 => {
            let adj = (al & 0xf) > 9 || af;
            let mut ax = c.regs[0] & 0xffff;
            if adj {
                ax = if op.x == 2 {
                    ax.wrapping_add(0x106)
                } else {
                    let lo = (ax & 0xff).wrapping_sub(6) & 0xff;
                    let hi = ((ax >> 8).wrapping_sub(1)) & 0xff;
                    (hi << 8) | lo
                };
            }
            ax = (ax & 0xff0f) & 0xffff;
            W::set(c, 0, ax);
            c.flags_res_cf_of::<B>(ax & 0xff, adj, false, adj);
        }
        4 => {
            let d = op.imm & 0xff;
            if d == 0 {
                return Err(crate::cpu::Ex::Fault(crate::cpu::DE, 0));
            }
            let (q, r) = (al / d, al % d);
            W::set(c, 0, (q << 8) | r);
            c.flags_logic::<B>(r);
        }
        _ => {
            let ah = (c.regs[0] >> 8) & 0xff;
            let r = (al + ah * (op.imm & 0xff)) & 0xff;
            W::set(c, 0, r);
            c.flags_logic::<B>(r);
        }
    }
    Ok(())
}
