//! CMPXCHG, CMPXCHG8B/16B and XADD. Memory forms are atomic with respect to other processors
//! when LOCKed (CMPXCHG is implemented with a host compare-exchange in every memory form: an
//! unlocked CMPXCHG may be atomic too).

use guest_mem::Width;
use virt::ExitHandler;

use super::Rm;
use super::rmw;
use super::rmw_locked;
use crate::cpu::Cpu;
use crate::cpu::Res;
use crate::mmu::Loc;
use crate::op::Op;
use crate::size::D;
use crate::size::Q;
use crate::size::Sz;

/// CMPXCHG reg, reg.
pub(crate) fn cmpxchg_r<S: Sz>(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    let acc = S::get(c, 0);
    let dst = S::get(c, op.rm);
    let r = acc.wrapping_sub(dst) & S::MASK;
    c.flags_sub::<S>(acc, dst, r);
    if acc == dst {
        let v = S::get(c, op.r);
        S::set(c, op.rm, v);
    } else {
        S::set(c, 0, dst);
    }
    Ok(())
}

/// CMPXCHG mem, reg (atomic).
pub(crate) fn cmpxchg_m<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let acc = S::get(c, 0);
    let new = S::get(c, op.r);
    let loc = c.rmw_op::<S>(op, io)?;
    let old = match loc {
        Loc::Host(off) => match c.mem.cmpxchg(off, S::W, acc, new) {
            Ok(old) => old,
            Err(cur) => cur,
        },
        Loc::Lin(_) => {
            let cur = c.load_loc::<S>(loc, io)?;
            // The destination is always written (with its old value on mismatch).
            let v = if cur == acc { new } else { cur };
            c.store_loc::<S>(loc, v, io)?;
            cur
        }
    };
    let r = acc.wrapping_sub(old) & S::MASK;
    c.flags_sub::<S>(acc, old, r);
    if old != acc {
        S::set(c, 0, old);
    }
    Ok(())
}

/// XADD r/m, reg.
pub(crate) fn xadd<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let b = S::get(c, op.r);
    let mut old = 0;
    rmw::<S, X>(c, op, io, |c, a| {
        old = a;
        let r = a.wrapping_add(b) & S::MASK;
        c.flags_add::<S>(a, b, r);
        r
    })?;
    S::set(c, op.r, old);
    Ok(())
}

/// LOCK XADD mem, reg.
pub(crate) fn xadd_lock<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let b = S::get(c, op.r);
    let mut old = 0;
    rmw_locked::<S>(c, op, io, |c, a| {
        old = a;
        let r = a.wrapping_add(b) & S::MASK;
        c.flags_add::<S>(a, b, r);
        r
    })?;
    S::set(c, op.r, old);
    Ok(())
}

/// CMPXCHG8B m64: EDX:EAX against memory, ECX:EBX stored on match; ZF reports the match.
pub(crate) fn cmpxchg8b(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let expected = (c.regs[0] & 0xffff_ffff) | (c.regs[2] << 32);
    let new = (c.regs[3] & 0xffff_ffff) | (c.regs[1] << 32);
    let loc = c.rmw_op::<Q>(op, io)?;
    let old = match loc {
        Loc::Host(off) => match c.mem.cmpxchg(off, Width::U64, expected, new) {
            Ok(v) | Err(v) => v,
        },
        Loc::Lin(_) => {
            let cur = c.load_loc::<Q>(loc, io)?;
            c.store_loc::<Q>(loc, if cur == expected { new } else { cur }, io)?;
            cur
        }
    };
    set_zf(c, old == expected);
    if old != expected {
        D::set(c, 0, old);
        D::set(c, 2, old >> 32);
    }
    Ok(())
}

/// CMPXCHG16B m128 (16-byte aligned, else #GP). Atomicity across processors comes from a
/// process-wide lock around the two 8-byte halves plus compare-exchange of the low half.
pub(crate) fn cmpxchg16b(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    static LOCK16: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let lin = c.lin_w::<Q>(op)?;
    if lin & 15 != 0 {
        return crate::cpu::gp0();
    }
    let lo_loc = c.rmw_loc::<Q>(lin, io)?;
    let hi_loc = c.rmw_loc::<Q>(lin + 8, io)?;
    let (exp_lo, exp_hi) = (c.regs[0], c.regs[2]);
    let (new_lo, new_hi) = (c.regs[3], c.regs[1]);
    let _g = LOCK16.lock();
    let lo = c.load_loc::<Q>(lo_loc, io)?;
    let hi = c.load_loc::<Q>(hi_loc, io)?;
    let ok = lo == exp_lo && hi == exp_hi;
    if ok {
        c.store_loc::<Q>(lo_loc, new_lo, io)?;
        c.store_loc::<Q>(hi_loc, new_hi, io)?;
    } else {
        c.store_loc::<Q>(lo_loc, lo, io)?;
        c.store_loc::<Q>(hi_loc, hi, io)?;
        c.regs[0] = lo;
        c.regs[2] = hi;
    }
    set_zf(c, ok);
    Ok(())
}

fn set_zf(c: &mut Cpu, zf: bool) {
    let f = (c.status_flags() & !crate::flags::ZF) | if zf { crate::flags::ZF } else { 0 };
    c.set_status_flags(f);
}
