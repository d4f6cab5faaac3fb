//! Instruction handlers, grouped by family. Each handler is generic over the operand size
//! (`size::Sz`) and, where it matters, whether its r/m operand is a register or memory, so the
//! decoder picks a fully specialized function and nothing is re-dispatched at run time.

pub(crate) mod alu;
pub(crate) mod atomic;
pub(crate) mod bits;
pub(crate) mod branch;
pub(crate) mod fused;
pub(crate) mod muldiv;
pub(crate) mod stack;
pub(crate) mod string;
pub(crate) mod system;

use virt::ExitHandler;

use crate::cpu::Cpu;
use crate::cpu::Ex;
use crate::op::Op;
use crate::size::Sz;

/// Whether an r/m operand is a register (`R`) or memory (`M`).
pub(crate) trait Rm {
    const MEM: bool;
}
/// Register form of r/m (`Op::rm`).
pub(crate) struct R;
/// Memory form of r/m.
pub(crate) struct M;
impl Rm for R {
    const MEM: bool = false;
}
impl Rm for M {
    const MEM: bool = true;
}

/// Reads the r/m operand.
#[inline(always)]
pub(crate) fn get_rm<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Result<u64, Ex> {
    if X::MEM {
        c.read_op::<S>(op, io)
    } else {
        Ok(S::get(c, op.rm))
    }
}

/// Writes the r/m operand.
#[inline(always)]
pub(crate) fn set_rm<S: Sz, X: Rm>(
    c: &mut Cpu,
    op: &Op,
    v: u64,
    io: &dyn ExitHandler,
) -> Result<(), Ex> {
    if X::MEM {
        c.write_op::<S>(op, v, io)
    } else {
        S::set(c, op.rm, v);
        Ok(())
    }
}

/// Read-modify-write of the r/m operand (write permission checked before the read).
#[inline(always)]
pub(crate) fn rmw<S: Sz, X: Rm>(
    c: &mut Cpu,
    op: &Op,
    io: &dyn ExitHandler,
    f: impl FnOnce(&mut Cpu, u64) -> u64,
) -> Result<(), Ex> {
    if X::MEM {
        let loc = c.rmw_op::<S>(op, io)?;
        let a = c.load_loc::<S>(loc, io)?;
        let r = f(c, a);
        c.store_loc::<S>(loc, r, io)
    } else {
        let a = S::get(c, op.rm);
        let r = f(c, a);
        S::set(c, op.rm, r);
        Ok(())
    }
}

/// Atomic read-modify-write of a memory operand (LOCK prefix): retried with compare-exchange
/// until no other processor interfered. `f` may run several times.
#[inline(always)]
pub(crate) fn rmw_locked<S: Sz>(
    c: &mut Cpu,
    op: &Op,
    io: &dyn ExitHandler,
    mut f: impl FnMut(&mut Cpu, u64) -> u64,
) -> Result<(), Ex> {
    let loc = c.rmw_op::<S>(op, io)?;
    match loc {
        crate::mmu::Loc::Host(off) => {
            let mut a = c.mem.load(off, S::W);
            loop {
                let r = f(c, a);
                match c.mem.cmpxchg(off, S::W, a, r) {
                    Ok(_) => return Ok(()),
                    Err(now) => {
                        if now == a {
                            // Dropped store (ROM): nothing more to do.
                            return Ok(());
                        }
                        a = now;
                    }
                }
            }
        }
        crate::mmu::Loc::Lin(_) => {
            // Split or MMIO: no host atomic covers it; do it as a plain read-modify-write.
            let a = c.load_loc::<S>(loc, io)?;
            let r = f(c, a);
            c.store_loc::<S>(loc, r, io)
        }
    }
}

/// `NOP` and every instruction that architecturally does nothing here (hints, fences,
/// ENDBR64, PAUSE, prefetches, cache flushes of coherent memory).
pub(crate) fn nop(_: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> crate::cpu::Res {
    Ok(())
}

/// Raises #UD (UD0/UD1/UD2 and encodings that are invalid in the current mode).
pub(crate) fn ud(_: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> crate::cpu::Res {
    crate::cpu::ud()
}
