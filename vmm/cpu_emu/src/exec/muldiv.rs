//! MUL, IMUL (one, two and three operands), DIV and IDIV.

use virt::ExitHandler;

use super::Rm;
use super::get_rm;
use crate::cpu::Cpu;
use crate::cpu::DE;
use crate::cpu::Ex;
use crate::cpu::Res;
use crate::op::Op;
use crate::size::Sz;

/// Writes a double-width result: AX for 8-bit operands, rDX:rAX otherwise.
#[inline(always)]
fn set_pair<S: Sz>(c: &mut Cpu, lo: u64, hi: u64) {
    if S::BITS == 8 {
        crate::size::W::set(c, 0, (lo & 0xff) | ((hi & 0xff) << 8));
    } else {
        S::set(c, 0, lo);
        S::set(c, 2, hi);
    }
}

/// MUL r/m: unsigned rAX * src.
pub(crate) fn mul<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let b = get_rm::<S, X>(c, op, io)?;
    let a = S::get(c, 0);
    let p = u128::from(a) * u128::from(b);
    let lo = (p as u64) & S::MASK;
    let hi = ((p >> S::BITS) as u64) & S::MASK;
    set_pair::<S>(c, lo, hi);
    let of = hi != 0;
    c.flags_res_cf_of::<S>(lo, of, of, false);
    Ok(())
}

/// IMUL r/m: signed rAX * src.
pub(crate) fn imul1<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let b = S::sx(get_rm::<S, X>(c, op, io)?) as i64;
    let a = S::sx(S::get(c, 0)) as i64;
    let p = i128::from(a) * i128::from(b);
    let lo = (p as u64) & S::MASK;
    let hi = ((p >> S::BITS) as u64) & S::MASK;
    set_pair::<S>(c, lo, hi);
    let of = i128::from(S::sx(lo) as i64) != p;
    c.flags_res_cf_of::<S>(lo, of, of, false);
    Ok(())
}

#[inline(always)]
fn imul_trunc<S: Sz>(c: &mut Cpu, a: u64, b: u64) -> u64 {
    let p = i128::from(S::sx(a) as i64) * i128::from(S::sx(b) as i64);
    let r = (p as u64) & S::MASK;
    let of = i128::from(S::sx(r) as i64) != p;
    c.flags_res_cf_of::<S>(r, of, of, false);
    r
}

/// IMUL reg, r/m.
pub(crate) fn imul2<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let b = get_rm::<S, X>(c, op, io)?;
    let a = S::get(c, op.r);
    let r = imul_trunc::<S>(c, a, b);
    S::set(c, op.r, r);
    Ok(())
}

/// IMUL reg, r/m, imm.
pub(crate) fn imul3<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let a = get_rm::<S, X>(c, op, io)?;
    let r = imul_trunc::<S>(c, a, op.imm & S::MASK);
    S::set(c, op.r, r);
    Ok(())
}

#[inline(always)]
fn get_pair<S: Sz>(c: &Cpu) -> u128 {
    if S::BITS == 8 {
        u128::from(c.regs[0] & 0xffff)
    } else {
        (u128::from(S::get(c, 2)) << S::BITS) | u128::from(S::get(c, 0))
    }
}

/// DIV r/m: unsigned; #DE on a zero divisor or a quotient that does not fit.
pub(crate) fn div<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let d = u128::from(get_rm::<S, X>(c, op, io)?);
    if d == 0 {
        return Err(Ex::Fault(DE, 0));
    }
    let n = get_pair::<S>(c);
    let q = n / d;
    if q > u128::from(S::MASK) {
        return Err(Ex::Fault(DE, 0));
    }
    let r = n % d;
    set_pair::<S>(c, q as u64, r as u64);
    Ok(())
}

/// IDIV r/m: signed; #DE on a zero divisor or a quotient out of range.
pub(crate) fn idiv<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let d = i128::from(S::sx(get_rm::<S, X>(c, op, io)?) as i64);
    if d == 0 {
        return Err(Ex::Fault(DE, 0));
    }
    let raw = get_pair::<S>(c);
    // Sign-extend the 2*BITS-bit dividend.
    let sh = 128 - 2 * S::BITS;
    let n = ((raw << sh) as i128) >> sh;
    let Some(q) = n.checked_div(d) else {
        return Err(Ex::Fault(DE, 0));
    };
    let r = n - q * d;
    let min = -(1i128 << (S::BITS - 1));
    let max = (1i128 << (S::BITS - 1)) - 1;
    if q < min || q > max {
        return Err(Ex::Fault(DE, 0));
    }
    set_pair::<S>(c, (q as u64) & S::MASK, (r as u64) & S::MASK);
    Ok(())
}
