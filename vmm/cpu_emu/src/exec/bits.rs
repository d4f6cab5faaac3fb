//! Shifts, rotates, double shifts, bit tests and bit scans.

use virt::ExitHandler;

use super::Rm;
use super::get_rm;
use super::rmw;
use super::rmw_locked;
use crate::cpu::Cpu;
use crate::cpu::Res;
use crate::op::Op;
use crate::size::Sz;

/// Which shift or rotate (the ModRM.reg field of the C0/C1/D0-D3 group).
pub(crate) const ROL: u8 = 0;
pub(crate) const ROR: u8 = 1;
pub(crate) const RCL: u8 = 2;
pub(crate) const RCR: u8 = 3;
pub(crate) const SHL: u8 = 4;
pub(crate) const SHR: u8 = 5;
pub(crate) const SAR: u8 = 7;

/// Shift/rotate `a` by `count` (already masked to 5 or 6 bits); updates flags as x86 does.
#[inline(always)]
fn shift<S: Sz, const K: u8>(c: &mut Cpu, a: u64, count: u32) -> u64 {
    if count == 0 {
        return a;
    }
    let bits = S::BITS;
    match K {
        SHL => {
            let r = if count < 64 {
                (a << count) & S::MASK
            } else {
                0
            };
            let cf = if count <= bits {
                (a >> (bits - count)) & 1 != 0
            } else {
                false
            };
            let of = (r & S::SIGN != 0) != cf;
            c.flags_res_cf_of::<S>(r, cf, of, false);
            r
        }
        SHR => {
            let r = if count < 64 { a >> count } else { 0 };
            let cf = (a.checked_shr(count - 1).unwrap_or(0)) & 1 != 0;
            let of = a & S::SIGN != 0;
            c.flags_res_cf_of::<S>(r, cf, of, false);
            r
        }
        SAR => {
            let sa = S::sx(a) as i64;
            let r = (sa >> count.min(63)) as u64 & S::MASK;
            let cf = (sa >> (count - 1).min(63)) & 1 != 0;
            c.flags_res_cf_of::<S>(r, cf, false, false);
            r
        }
        ROL => {
            let n = count % bits;
            let r = if n == 0 {
                a
            } else {
                ((a << n) | (a >> (bits - n))) & S::MASK
            };
            let cf = r & 1 != 0;
            let of = (r & S::SIGN != 0) != cf;
            let af = c.af();
            c.set_cf_of_af(cf, of, af);
            r
        }
        ROR => {
            let n = count % bits;
            let r = if n == 0 {
                a
            } else {
                ((a >> n) | (a << (bits - n))) & S::MASK
            };
            let cf = r & S::SIGN != 0;
            let of = cf != (r & (S::SIGN >> 1) != 0);
            let af = c.af();
            c.set_cf_of_af(cf, of, af);
            r
        }
        RCL => {
            let n = match bits {
                8 => count % 9,
                16 => count % 17,
                _ => count,
            };
            if n == 0 {
                return a;
            }
            let cf_in = c.cf() as u128;
            // Rotate the (bits+1)-bit value CF:a left by n.
            let wide = (cf_in << bits) | u128::from(a);
            let w = bits + 1;
            let m = (1u128 << w) - 1;
            let rot = ((wide << n) | (wide >> (w - n))) & m;
            let r = (rot as u64) & S::MASK;
            let cf = (rot >> bits) & 1 != 0;
            let of = (r & S::SIGN != 0) != cf;
            let af = c.af();
            c.set_cf_of_af(cf, of, af);
            r
        }
        RCR => {
            let n = match bits {
                8 => count % 9,
                16 => count % 17,
                _ => count,
            };
            if n == 0 {
                return a;
            }
            let cf_old = c.cf();
            let wide = ((cf_old as u128) << bits) | u128::from(a);
            let w = bits + 1;
            let m = (1u128 << w) - 1;
            let rot = ((wide >> n) | (wide << (w - n))) & m;
            let r = (rot as u64) & S::MASK;
            let cf = (rot >> bits) & 1 != 0;
            let of = (a & S::SIGN != 0) != cf_old;
            let af = c.af();
            c.set_cf_of_af(cf, of, af);
            r
        }
        _ => a,
    }
}

#[inline(always)]
fn count_mask<S: Sz>() -> u64 {
    if S::BITS == 64 { 63 } else { 31 }
}

/// Shift/rotate r/m by an immediate (or 1).
pub(crate) fn shift_i<const K: u8, S: Sz, X: Rm>(
    c: &mut Cpu,
    op: &Op,
    io: &dyn ExitHandler,
) -> Res {
    let n = (op.imm & count_mask::<S>()) as u32;
    if n == 0 {
        // Still faults like a read-modify-write of the operand, changes nothing.
        return rmw::<S, X>(c, op, io, |_, a| a);
    }
    rmw::<S, X>(c, op, io, |c, a| shift::<S, K>(c, a, n))
}

/// Shift/rotate r/m by CL.
pub(crate) fn shift_cl<const K: u8, S: Sz, X: Rm>(
    c: &mut Cpu,
    op: &Op,
    io: &dyn ExitHandler,
) -> Res {
    let n = (c.regs[1] & count_mask::<S>()) as u32;
    rmw::<S, X>(c, op, io, |c, a| shift::<S, K>(c, a, n))
}

/// SHLD (x=0) / SHRD (x=1) r/m, reg, imm8 (x2=0) or CL (x2=1).
pub(crate) fn shxd<const RIGHT: bool, const CL: bool, S: Sz, X: Rm>(
    c: &mut Cpu,
    op: &Op,
    io: &dyn ExitHandler,
) -> Res {
    let raw = if CL { c.regs[1] } else { op.imm };
    let n = (raw & count_mask::<S>()) as u32;
    let src = S::get(c, op.r);
    rmw::<S, X>(c, op, io, |c, a| {
        if n == 0 {
            return a;
        }
        let bits = S::BITS;
        // Concatenate into 128 bits so counts above the operand size (undefined for 16-bit
        // operands) still give a deterministic answer.
        let (r, cf) = if !RIGHT {
            let wide = (u128::from(a) << 64) | (u128::from(src) << (64 - bits));
            let sh = wide << n;
            let r = ((sh >> 64) as u64) & S::MASK;
            let cf = (wide >> (128 - n)) & 1 != 0;
            let cf = if n <= bits {
                (a >> (bits - n)) & 1 != 0
            } else {
                cf
            };
            (r, cf)
        } else {
            let wide = (u128::from(src) << bits) | u128::from(a);
            let r = ((wide >> n) as u64) & S::MASK;
            let cf = (wide >> (n - 1)) & 1 != 0;
            (r, cf)
        };
        let of = (r & S::SIGN) != (a & S::SIGN);
        c.flags_res_cf_of::<S>(r, cf, of, false);
        r
    })
}

/// BT/BTS/BTR/BTC operation selector.
pub(crate) const BT: u8 = 0;
pub(crate) const BTS: u8 = 1;
pub(crate) const BTR: u8 = 2;
pub(crate) const BTC: u8 = 3;

#[inline(always)]
fn bit_apply<const K: u8>(a: u64, bit: u64) -> u64 {
    match K {
        BTS => a | (1 << bit),
        BTR => a & !(1 << bit),
        BTC => a ^ (1 << bit),
        _ => a,
    }
}

/// BTx r/m, imm8 (the offset is taken modulo the operand size) or reg, register destination.
pub(crate) fn bt_i<const K: u8, S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let bit = op.imm & u64::from(S::BITS - 1);
    bt_common::<K, S, X>(c, op, io, bit)
}

/// BTx reg, reg.
pub(crate) fn bt_rr<const K: u8, S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let bit = S::get(c, op.r) & u64::from(S::BITS - 1);
    bt_common::<K, S, X>(c, op, io, bit)
}

#[inline(always)]
fn bt_common<const K: u8, S: Sz, X: Rm>(
    c: &mut Cpu,
    op: &Op,
    io: &dyn ExitHandler,
    bit: u64,
) -> Res {
    if K == BT {
        let a = get_rm::<S, X>(c, op, io)?;
        c.set_cf((a >> bit) & 1 != 0);
        return Ok(());
    }
    let mut cf = false;
    rmw::<S, X>(c, op, io, |_, a| {
        cf = (a >> bit) & 1 != 0;
        bit_apply::<K>(a, bit)
    })?;
    c.set_cf(cf);
    Ok(())
}

/// BTx mem, reg: the register is a signed bit offset that may address outside the operand.
pub(crate) fn bt_mr<const K: u8, const LOCK: bool, S: Sz>(
    c: &mut Cpu,
    op: &Op,
    io: &dyn ExitHandler,
) -> Res {
    let off = S::sx(S::get(c, op.r)) as i64;
    let unit = i64::from(S::BITS);
    let delta = off.div_euclid(unit) * S::BYTES as i64;
    let bit = off.rem_euclid(unit) as u64;
    let mut o = *op;
    o.disp = op.disp.wrapping_add(delta as u64);
    if K == BT {
        let a = c.read_op::<S>(&o, io)?;
        c.set_cf((a >> bit) & 1 != 0);
        return Ok(());
    }
    let mut cf = false;
    if LOCK {
        rmw_locked::<S>(c, &o, io, |_, a| {
            cf = (a >> bit) & 1 != 0;
            bit_apply::<K>(a, bit)
        })?;
    } else {
        rmw::<S, super::M>(c, &o, io, |_, a| {
            cf = (a >> bit) & 1 != 0;
            bit_apply::<K>(a, bit)
        })?;
    }
    c.set_cf(cf);
    Ok(())
}

/// LOCK BTS/BTR/BTC mem, imm8.
pub(crate) fn bt_lock_i<const K: u8, S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let bit = op.imm & u64::from(S::BITS - 1);
    let mut cf = false;
    rmw_locked::<S>(c, op, io, |_, a| {
        cf = (a >> bit) & 1 != 0;
        bit_apply::<K>(a, bit)
    })?;
    c.set_cf(cf);
    Ok(())
}

/// BSF (x=0) / BSR (x=1): a zero source sets ZF and leaves the destination unchanged.
pub(crate) fn bsf_bsr<const REV: bool, S: Sz, X: Rm>(
    c: &mut Cpu,
    op: &Op,
    io: &dyn ExitHandler,
) -> Res {
    let v = get_rm::<S, X>(c, op, io)?;
    if v == 0 {
        c.lf_res = 0;
        return Ok(());
    }
    let idx = if REV {
        63 - v.leading_zeros()
    } else {
        v.trailing_zeros()
    };
    S::set(c, op.r, u64::from(idx));
    c.lf_res = 1;
    Ok(())
}

/// TZCNT (x=0) / LZCNT (x=1), when advertised (BMI1 / ABM).
pub(crate) fn tzcnt_lzcnt<const LZ: bool, S: Sz, X: Rm>(
    c: &mut Cpu,
    op: &Op,
    io: &dyn ExitHandler,
) -> Res {
    let v = get_rm::<S, X>(c, op, io)?;
    let n = if LZ {
        v.leading_zeros() - (64 - S::BITS)
    } else if v == 0 {
        S::BITS
    } else {
        v.trailing_zeros()
    };
    S::set(c, op.r, u64::from(n));
    c.flags_res_cf_of::<S>(u64::from(n), v == 0, false, false);
    // ZF reflects the result being zero.
    c.lf_res = u64::from(n);
    Ok(())
}

/// POPCNT.
pub(crate) fn popcnt<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let v = get_rm::<S, X>(c, op, io)?;
    S::set(c, op.r, u64::from(v.count_ones()));
    // CF=OF=SF=AF=PF=0, ZF = source is zero.
    c.set_status_flags(if v == 0 { crate::flags::ZF } else { 0 });
    Ok(())
}
