//! The stack: PUSH/POP, near CALL/RET, ENTER/LEAVE, PUSHF/POPF, PUSHA/POPA.

use virt::ExitHandler;

use super::Rm;
use super::get_rm;
use crate::cpu::Cpu;
use crate::cpu::Ex;
use crate::cpu::Mode;
use crate::cpu::RIP;
use crate::cpu::Res;
use crate::cpu::SS;
use crate::flags;
use crate::op::Op;
use crate::size::Sz;

impl Cpu {
    /// Pushes `S` bytes.
    #[inline(always)]
    pub(crate) fn push<S: Sz>(&mut self, v: u64, io: &dyn ExitHandler) -> Res {
        let sp = self.regs[4];
        let m = self.sp_mask;
        let nsp = sp.wrapping_sub(S::BYTES) & m;
        let lin = self.lin_off_w(SS as u8, nsp, S::BYTES)?;
        self.write::<S>(lin, v, io)?;
        self.regs[4] = (sp & !m) | nsp;
        Ok(())
    }

    /// Reads `S` bytes at stack offset `off` from the stack pointer (no pointer update).
    #[inline(always)]
    pub(crate) fn stack_peek<S: Sz>(&mut self, off: u64, io: &dyn ExitHandler) -> Result<u64, Ex> {
        let a = self.regs[4].wrapping_add(off) & self.sp_mask;
        let lin = self.lin_off_r(SS as u8, a, S::BYTES)?;
        self.read::<S>(lin, io)
    }

    /// Adds `n` to the stack pointer within its width.
    #[inline(always)]
    pub(crate) fn sp_add(&mut self, n: u64) {
        let sp = self.regs[4];
        let m = self.sp_mask;
        self.regs[4] = (sp & !m) | (sp.wrapping_add(n) & m);
    }

    /// Pops `S` bytes.
    #[inline(always)]
    pub(crate) fn pop<S: Sz>(&mut self, io: &dyn ExitHandler) -> Result<u64, Ex> {
        let v = self.stack_peek::<S>(0, io)?;
        self.sp_add(S::BYTES);
        Ok(v)
    }

    /// Checks a near branch target: canonical in 64-bit mode, within CS limit otherwise.
    #[inline(always)]
    pub(crate) fn check_target(&self, t: u64) -> Res {
        if self.mode == Mode::Long {
            if ((t << 16) as i64 >> 16) as u64 != t {
                return crate::cpu::gp0();
            }
        } else if t > self.cs_limit {
            return crate::cpu::gp0();
        }
        Ok(())
    }
}

pub(crate) fn push_r<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let v = S::get(c, op.r);
    c.push::<S>(v, io)
}

pub(crate) fn push_i<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    c.push::<S>(op.imm & S::MASK, io)
}

pub(crate) fn push_m<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let v = c.read_op::<S>(op, io)?;
    c.push::<S>(v, io)
}

pub(crate) fn pop_r<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let v = c.pop::<S>(io)?;
    S::set(c, op.r, v);
    Ok(())
}

/// POP mem: the address is computed with the incremented stack pointer.
pub(crate) fn pop_m<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let v = c.stack_peek::<S>(0, io)?;
    let old = c.regs[4];
    c.sp_add(S::BYTES);
    let r = c.write_op::<S>(op, v, io);
    if r.is_err() {
        c.regs[4] = old;
    }
    r
}

pub(crate) fn call_rel<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let next = c.regs[RIP];
    let t = next.wrapping_add(op.imm) & S::MASK;
    c.check_target(t)?;
    c.push::<S>(next, io)?;
    c.regs[RIP] = t;
    Ok(())
}

pub(crate) fn call_rm<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let t = get_rm::<S, X>(c, op, io)?;
    c.check_target(t)?;
    let next = c.regs[RIP];
    c.push::<S>(next, io)?;
    c.regs[RIP] = t;
    Ok(())
}

/// RET / RET imm16.
pub(crate) fn ret<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let t = c.stack_peek::<S>(0, io)?;
    c.check_target(t)?;
    c.sp_add(S::BYTES + op.imm);
    c.regs[RIP] = t;
    Ok(())
}

pub(crate) fn jmp_rel<S: Sz>(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    let t = c.regs[RIP].wrapping_add(op.imm) & S::MASK;
    c.check_target(t)?;
    c.regs[RIP] = t;
    Ok(())
}

pub(crate) fn jmp_rm<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let t = get_rm::<S, X>(c, op, io)?;
    c.check_target(t)?;
    c.regs[RIP] = t;
    Ok(())
}

/// LEAVE: stack pointer = frame pointer, then pop the frame pointer.
pub(crate) fn leave<S: Sz>(c: &mut Cpu, _: &Op, io: &dyn ExitHandler) -> Res {
    let old = c.regs[4];
    let m = c.sp_mask;
    c.regs[4] = (old & !m) | (c.regs[5] & m);
    match c.pop::<S>(io) {
        Ok(v) => {
            S::set(c, 5, v);
            Ok(())
        }
        Err(e) => {
            c.regs[4] = old;
            Err(e)
        }
    }
}

/// ENTER imm16 (`imm`), imm8 (`x`).
pub(crate) fn enter<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let size = op.imm & 0xffff;
    let level = u64::from(op.x & 31);
    let m = c.sp_mask;
    let old_sp = c.regs[4];
    let old_bp = c.regs[5];
    let r = (|| {
        c.push::<S>(S::get(c, 5), io)?;
        let frame = c.regs[4] & m;
        if level > 0 {
            let mut bp = old_bp;
            for _ in 1..level {
                bp = (bp & !m) | (bp.wrapping_sub(S::BYTES) & m);
                let lin = c.lin_off_r(SS as u8, bp & m, S::BYTES)?;
                let v = c.read::<S>(lin, io)?;
                c.push::<S>(v, io)?;
            }
            c.push::<S>(frame, io)?;
        }
        let nsp = c.regs[4].wrapping_sub(size) & m;
        // The new stack top must be writable.
        if size > 0 {
            c.lin_off_w(SS as u8, nsp, 1)?;
        }
        S::set(c, 5, frame);
        c.regs[4] = (c.regs[4] & !m) | nsp;
        Ok(())
    })();
    if r.is_err() {
        c.regs[4] = old_sp;
        c.regs[5] = old_bp;
    }
    r
}

/// PUSHF/PUSHFD/PUSHFQ (VM and RF read as 0).
pub(crate) fn pushf<S: Sz>(c: &mut Cpu, _: &Op, io: &dyn ExitHandler) -> Res {
    if c.flags & flags::VM != 0 && c.iopl() < 3 {
        return crate::cpu::gp0();
    }
    let f = c.rflags() & !(flags::VM | flags::RF);
    c.push::<S>(f & S::MASK, io)
}

/// POPF/POPFD/POPFQ with the privilege rules for IOPL and IF.
pub(crate) fn popf<S: Sz>(c: &mut Cpu, _: &Op, io: &dyn ExitHandler) -> Res {
    if c.flags & flags::VM != 0 && c.iopl() < 3 {
        return crate::cpu::gp0();
    }
    let v = c.stack_peek::<S>(0, io)?;
    c.sp_add(S::BYTES);
    let mut changeable = flags::STATUS | flags::TF | flags::DF | flags::NT | flags::AC | flags::ID;
    if c.mode == Mode::Real || c.cpl == 0 {
        changeable |= flags::IOPL | flags::IF;
    } else if u64::from(c.cpl) <= c.iopl() {
        changeable |= flags::IF;
    }
    changeable &= S::MASK;
    let old = c.rflags();
    let new = (old & !changeable) | (v & changeable);
    c.set_rflags_raw(new & !flags::RF);
    if (new ^ old) & (flags::IF | flags::TF) != 0 {
        c.events_changed();
    }
    Ok(())
}

/// PUSHA/PUSHAD.
pub(crate) fn pusha<S: Sz>(c: &mut Cpu, _: &Op, io: &dyn ExitHandler) -> Res {
    let old = c.regs[4];
    let sp = S::get(c, 4);
    for r in 0..8u8 {
        let v = if r == 4 { sp } else { S::get(c, r) };
        if let Err(e) = c.push::<S>(v, io) {
            c.regs[4] = old;
            return Err(e);
        }
    }
    Ok(())
}

/// POPA/POPAD (the saved stack pointer is skipped).
pub(crate) fn popa<S: Sz>(c: &mut Cpu, _: &Op, io: &dyn ExitHandler) -> Res {
    let mut vals = [0u64; 8];
    for (i, v) in vals.iter_mut().enumerate() {
        *v = c.stack_peek::<S>(i as u64 * S::BYTES, io)?;
    }
    for (i, &v) in vals.iter().enumerate() {
        let r = 7 - i as u8;
        if r != 4 {
            S::set(c, r, v);
        }
    }
    c.sp_add(8 * S::BYTES);
    Ok(())
}
