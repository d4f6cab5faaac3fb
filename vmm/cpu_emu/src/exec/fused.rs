//! Fused ops: a flag-setting instruction and the conditional branch after it, run by one
//! handler (as x86 cores macro-fuse them).
//!
//! Kernel code branches on a fresh `cmp`/`test` about every eighth instruction, and loops
//! count down with `dec`/`sub` + `jnz`; fusing the pair halves the dispatch cost of those two
//! instructions. The first instruction still records its flags (later code may read them),
//! and both count as retired.

use virt::ExitHandler;

use super::alu::AluOp;
use super::alu::UnOp;
use crate::cpu::Cpu;
use crate::cpu::RIP;
use crate::cpu::Res;
use crate::op::Op;
use crate::size::Sz;

/// Operand forms of the fused compare (`FORM`).
/// `cmp/test r/m(reg), reg`; the branch displacement is in `imm`.
pub(crate) const RM_R_REG: u8 = 0;
/// `cmp/test r/m(mem), reg`; displacement in `imm`.
pub(crate) const RM_R_MEM: u8 = 1;
/// `cmp/test reg, imm`; displacement in `disp` (the immediate is in `imm`).
pub(crate) const RM_I_REG: u8 = 2;
/// `cmp reg, mem`; displacement in `imm`.
pub(crate) const R_M: u8 = 3;

/// Masks for the branch target's width, indexed by `Op::x2` (0 = 16, 1 = 32, 2 = 64 bits).
const TARGET_MASK: [u64; 4] = [0xffff, 0xffff_ffff, u64::MAX, u64::MAX];

/// An ALU operation + `jcc`: `Op::len` covers both instructions, `Op::x` is the length of
/// the first (a branch-target fault is reported at the branch), `Op::x2` the target width.
/// Operations that store (`add`, `sub`, ...) come only in the register forms.
pub(crate) fn alu_jcc<O: AluOp, S: Sz, const FORM: u8, const CC: u8>(
    c: &mut Cpu,
    op: &Op,
    io: &dyn ExitHandler,
) -> Res {
    let (a, b, disp) = match FORM {
        RM_R_REG => (S::get(c, op.rm), S::get(c, op.r), op.imm),
        RM_R_MEM => {
            let b = S::get(c, op.r);
            (c.read_op::<S>(op, io)?, b, op.imm)
        }
        RM_I_REG => (S::get(c, op.rm), op.imm & S::MASK, op.disp),
        _ => {
            let b = c.read_op::<S>(op, io)?;
            (S::get(c, op.r), b, op.imm)
        }
    };
    let r = O::calc::<S>(c, a, b);
    if O::STORE {
        if FORM == R_M {
            S::set(c, op.r, r);
        } else {
            S::set(c, op.rm, r);
        }
    }
    branch::<CC>(c, op, disp)
}

/// `inc`/`dec reg` + `jcc` (displacement in `imm`).
pub(crate) fn unary_jcc<U: UnOp, S: Sz, const CC: u8>(
    c: &mut Cpu,
    op: &Op,
    _: &dyn ExitHandler,
) -> Res {
    let a = S::get(c, op.rm);
    let r = U::calc::<S>(c, a);
    S::set(c, op.rm, r);
    branch::<CC>(c, op, op.imm)
}

/// The branch half of a fused op, after the first instruction retired.
#[inline(always)]
fn branch<const CC: u8>(c: &mut Cpu, op: &Op, disp: u64) -> Res {
    // The first instruction has retired; the branch retires below (or faults, and the first
    // alone counts: the block loop does not count an op that returns an error).
    c.icount += 1;
    if c.cond(CC) {
        let t = c.regs[RIP].wrapping_add(disp) & TARGET_MASK[op.x2 as usize & 3];
        if let Err(e) = c.check_target(t) {
            c.fault_skip = op.x;
            return Err(e);
        }
        c.regs[RIP] = t;
        // A taken branch ends the block, as a plain Jcc does.
        c.exit_req = true;
    }
    Ok(())
}
