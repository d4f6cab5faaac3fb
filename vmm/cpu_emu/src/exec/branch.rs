//! Conditional branches and loops.

use virt::ExitHandler;

use crate::cpu::Cpu;
use crate::cpu::RIP;
use crate::cpu::Res;
use crate::mmu::AMASK;
use crate::op::Op;
use crate::size::Sz;

/// Jcc rel: `S` is the operand size (the width of the instruction pointer).
pub(crate) fn jcc<const CC: u8, S: Sz>(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    if c.cond(CC) {
        let t = c.regs[RIP].wrapping_add(op.imm) & S::MASK;
        c.check_target(t)?;
        c.regs[RIP] = t;
        // Conditional branches may sit inside a block: a taken one ends it.
        c.exit_req = true;
    }
    Ok(())
}

/// LOOP (x=0), LOOPE (x=1), LOOPNE (x=2): the counter width is the address size.
pub(crate) fn loop_<S: Sz>(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    let m = AMASK[op.asz as usize & 3];
    let n = c.regs[1].wrapping_sub(1) & m;
    let take = n != 0
        && match op.x {
            1 => c.zf(),
            2 => !c.zf(),
            _ => true,
        };
    let t = c.regs[RIP].wrapping_add(op.imm) & S::MASK;
    if take {
        c.check_target(t)?;
    }
    c.regs[1] = (c.regs[1] & !m) | n;
    if take {
        c.regs[RIP] = t;
    }
    Ok(())
}

/// JCXZ/JECXZ/JRCXZ.
pub(crate) fn jcxz<S: Sz>(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    let m = AMASK[op.asz as usize & 3];
    if c.regs[1] & m == 0 {
        let t = c.regs[RIP].wrapping_add(op.imm) & S::MASK;
        c.check_target(t)?;
        c.regs[RIP] = t;
    }
    Ok(())
}
