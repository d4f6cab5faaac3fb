//! String instructions (MOVS, STOS, LODS, CMPS, SCAS, INS, OUTS) with REP prefixes.
//!
//! REP forms run in chunks: within one page of source and destination, RAM-to-RAM moves and
//! fills go straight to guest memory by host offset; anything else (MMIO, page crossings, port
//! I/O) goes one element at a time through the normal accessors. The count and index registers
//! are updated after every chunk, so a fault mid-way leaves the architectural state of a
//! partially executed REP instruction and restarts it. Long operations yield (`Ex::Restart`)
//! so interrupts and stop requests are not delayed.

use guest_mem::StoreResult;
use guest_mem::Width;
use virt::ExitHandler;

use crate::cpu::Cpu;
use crate::cpu::ES;
use crate::cpu::Ex;
use crate::cpu::Res;
use crate::flags;
use crate::mmu::AMASK;
use crate::mmu::Access;
use crate::mmu::Target;
use crate::mmu::Tlb;
use crate::op::Op;
use crate::size::Sz;

/// `Op::x` values.
pub(crate) const REP_NONE: u8 = 0;
/// REP / REPE / REPZ.
pub(crate) const REP_E: u8 = 1;
/// REPNE / REPNZ.
pub(crate) const REP_NE: u8 = 2;

/// Bytes moved per invocation before yielding.
const CHUNK_BUDGET: u64 = 256 * 1024;
/// Elements handled one by one per invocation before yielding.
const ELEM_BUDGET: u32 = 1024;

#[inline(always)]
fn set_areg(c: &mut Cpu, r: usize, v: u64, asz: u8) {
    c.regs[r] = match asz {
        0 => (c.regs[r] & !0xffff) | (v & 0xffff),
        1 => v & 0xffff_ffff,
        _ => v,
    };
}

#[inline(always)]
fn delta<S: Sz>(c: &Cpu) -> u64 {
    if c.flags & flags::DF != 0 {
        S::BYTES.wrapping_neg()
    } else {
        S::BYTES
    }
}

/// Advances index register `r` by `n` elements.
#[inline(always)]
fn advance<S: Sz>(c: &mut Cpu, r: usize, n: u64, asz: u8) {
    let d = delta::<S>(c).wrapping_mul(n);
    let v = c.regs[r].wrapping_add(d);
    set_areg(c, r, v, asz);
}

#[inline(always)]
fn dec_count(c: &mut Cpu, n: u64, asz: u8) {
    let v = c.regs[1].wrapping_sub(n);
    set_areg(c, 1, v, asz);
}

impl Cpu {
    /// Host offset of `lin` for a RAM access of `kind` that stays in its page, or `None`.
    fn host_of(&mut self, lin: u64, kind: Access, io: &dyn ExitHandler) -> Result<Option<u64>, Ex> {
        let e = &self.tlb.e[Tlb::slot(self.tlb_sel, lin)];
        let vpn = lin >> 12;
        let hit = match kind {
            Access::Read => e.r == vpn,
            Access::Write => e.w == vpn,
            Access::Exec => e.x == vpn,
        };
        if hit {
            return Ok(Some(e.host + (lin & 0xfff)));
        }
        let user = self.tlb_sel != 0;
        match self.translate(lin, kind, user, io)? {
            Target::Ram(off) => Ok(Some(off)),
            _ => Ok(None),
        }
    }

    fn store_bytes_host(&mut self, dst: u64, data: &[u8]) {
        let mut code = false;
        let mut i = 0;
        while i + 8 <= data.len() {
            let mut q = [0u8; 8];
            q.copy_from_slice(&data[i..i + 8]);
            code |= self
                .mem
                .store(dst + i as u64, Width::U64, u64::from_le_bytes(q))
                == StoreResult::CodeInvalidated;
            i += 8;
        }
        while i < data.len() {
            code |= self
                .mem
                .store(dst + i as u64, Width::U8, u64::from(data[i]))
                == StoreResult::CodeInvalidated;
            i += 1;
        }
        if code {
            self.code_written();
        }
    }

    fn fill_host(&mut self, dst: u64, len: u64, pattern: u64) {
        let mut code = false;
        let mut i = 0;
        while i + 8 <= len {
            code |= self.mem.store(dst + i, Width::U64, pattern) == StoreResult::CodeInvalidated;
            i += 8;
        }
        while i < len {
            code |= self.mem.store(dst + i, Width::U8, pattern >> (8 * (i & 7)))
                == StoreResult::CodeInvalidated;
            i += 1;
        }
        if code {
            self.code_written();
        }
    }
}

/// How many whole elements fit from `off` to the end of its page in the direction of travel.
#[inline(always)]
fn room<S: Sz>(lin: u64, backward: bool) -> u64 {
    let o = lin & 0xfff;
    if backward {
        (o + 1) / S::BYTES
    } else {
        (4096 - o) / S::BYTES
    }
}

/// MOVS.
pub(crate) fn movs<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let am = AMASK[op.asz as usize & 3];
    if op.x == REP_NONE {
        return movs_one::<S>(c, op, io);
    }
    let mut budget = CHUNK_BUDGET;
    let mut elems = ELEM_BUDGET;
    loop {
        let cnt = c.regs[1] & am;
        if cnt == 0 {
            return Ok(());
        }
        if budget == 0 || elems == 0 {
            return Err(Ex::Restart);
        }
        let backward = c.flags & flags::DF != 0;
        let si = c.regs[6] & am;
        let di = c.regs[7] & am;
        // A chunk: both ends in one page, inside the address-size range.
        let src_lin = c.lin_off_r(op.seg, si, S::BYTES)?;
        let dst_lin = c.lin_off_w(ES as u8, di, S::BYTES)?;
        let n = cnt
            .min(room::<S>(src_lin, backward))
            .min(room::<S>(dst_lin, backward))
            .min(budget / S::BYTES + 1);
        let mut done = 0;
        if n > 1
            && !backward
            && si.checked_add(n * S::BYTES).is_some_and(|e| e - 1 <= am)
            && di.checked_add(n * S::BYTES).is_some_and(|e| e - 1 <= am)
            && c.lin_off_r(op.seg, si, n * S::BYTES).is_ok()
            && c.lin_off_w(ES as u8, di, n * S::BYTES).is_ok()
        {
            let src = c.host_of(src_lin, Access::Read, io)?;
            let dst = c.host_of(dst_lin, Access::Write, io)?;
            if let (Some(src), Some(dst)) = (src, dst) {
                let len = n * S::BYTES;
                if dst <= src || dst - src >= 8 {
                    let mut buf = [0u8; 4096];
                    let b = &mut buf[..len as usize];
                    if dst >= src + len || dst + len <= src {
                        c.mem.copy_out(src, b);
                        c.store_bytes_host(dst, b);
                    } else {
                        // Overlapping forward copy: 8-byte steps read what earlier steps wrote,
                        // exactly like the element-by-element copy.
                        let mut i = 0;
                        while i + 8 <= len {
                            let v = c.mem.load(src + i, Width::U64);
                            if c.mem.store(dst + i, Width::U64, v) == StoreResult::CodeInvalidated {
                                c.code_written();
                            }
                            i += 8;
                        }
                        while i < len {
                            let v = c.mem.load(src + i, Width::U8);
                            if c.mem.store(dst + i, Width::U8, v) == StoreResult::CodeInvalidated {
                                c.code_written();
                            }
                            i += 1;
                        }
                    }
                    done = n;
                    budget = budget.saturating_sub(len);
                }
            }
        }
        if done == 0 {
            movs_one_nocount::<S>(c, op, io)?;
            dec_count(c, 1, op.asz);
            elems -= 1;
            continue;
        }
        advance::<S>(c, 6, done, op.asz);
        advance::<S>(c, 7, done, op.asz);
        dec_count(c, done, op.asz);
    }
}

fn movs_one<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    movs_one_nocount::<S>(c, op, io)
}

#[inline(always)]
fn movs_one_nocount<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let am = AMASK[op.asz as usize & 3];
    let sl = c.lin_off_r(op.seg, c.regs[6] & am, S::BYTES)?;
    let v = c.read::<S>(sl, io)?;
    let dl = c.lin_off_w(ES as u8, c.regs[7] & am, S::BYTES)?;
    c.write::<S>(dl, v, io)?;
    advance::<S>(c, 6, 1, op.asz);
    advance::<S>(c, 7, 1, op.asz);
    Ok(())
}

/// STOS.
pub(crate) fn stos<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let am = AMASK[op.asz as usize & 3];
    let v = S::get(c, 0);
    if op.x == REP_NONE {
        let dl = c.lin_off_w(ES as u8, c.regs[7] & am, S::BYTES)?;
        c.write::<S>(dl, v, io)?;
        advance::<S>(c, 7, 1, op.asz);
        return Ok(());
    }
    let pattern = match S::BITS {
        8 => v * 0x0101_0101_0101_0101,
        16 => v * 0x0001_0001_0001_0001,
        32 => v | (v << 32),
        _ => v,
    };
    let mut budget = CHUNK_BUDGET;
    let mut elems = ELEM_BUDGET;
    loop {
        let cnt = c.regs[1] & am;
        if cnt == 0 {
            return Ok(());
        }
        if budget == 0 || elems == 0 {
            return Err(Ex::Restart);
        }
        let backward = c.flags & flags::DF != 0;
        let di = c.regs[7] & am;
        let dst_lin = c.lin_off_w(ES as u8, di, S::BYTES)?;
        let n = cnt
            .min(room::<S>(dst_lin, backward))
            .min(budget / S::BYTES + 1);
        let mut done = 0;
        if n > 1
            && !backward
            && di.checked_add(n * S::BYTES).is_some_and(|e| e - 1 <= am)
            && c.lin_off_w(ES as u8, di, n * S::BYTES).is_ok()
            && let Some(dst) = c.host_of(dst_lin, Access::Write, io)?
        {
            c.fill_host(dst, n * S::BYTES, pattern);
            done = n;
            budget = budget.saturating_sub(n * S::BYTES);
        }
        if done == 0 {
            c.write::<S>(dst_lin, v, io)?;
            done = 1;
            elems -= 1;
        }
        advance::<S>(c, 7, done, op.asz);
        dec_count(c, done, op.asz);
    }
}

/// LODS.
pub(crate) fn lods<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let am = AMASK[op.asz as usize & 3];
    let mut elems = ELEM_BUDGET;
    loop {
        if op.x != REP_NONE {
            if c.regs[1] & am == 0 {
                return Ok(());
            }
            if elems == 0 {
                return Err(Ex::Restart);
            }
        }
        let sl = c.lin_off_r(op.seg, c.regs[6] & am, S::BYTES)?;
        let v = c.read::<S>(sl, io)?;
        S::set(c, 0, v);
        advance::<S>(c, 6, 1, op.asz);
        if op.x == REP_NONE {
            return Ok(());
        }
        dec_count(c, 1, op.asz);
        elems -= 1;
    }
}

/// CMPS (compares [rSI] with [rDI]).
pub(crate) fn cmps<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let am = AMASK[op.asz as usize & 3];
    rep_compare::<S>(c, op, |c| {
        let sl = c.lin_off_r(op.seg, c.regs[6] & am, S::BYTES)?;
        let a = c.read::<S>(sl, io)?;
        let dl = c.lin_off_r(ES as u8, c.regs[7] & am, S::BYTES)?;
        let b = c.read::<S>(dl, io)?;
        advance::<S>(c, 6, 1, op.asz);
        advance::<S>(c, 7, 1, op.asz);
        Ok((a, b))
    })
}

/// SCAS (compares rAX with [rDI]).
pub(crate) fn scas<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let am = AMASK[op.asz as usize & 3];
    let a = S::get(c, 0);
    rep_compare::<S>(c, op, |c| {
        let dl = c.lin_off_r(ES as u8, c.regs[7] & am, S::BYTES)?;
        let b = c.read::<S>(dl, io)?;
        advance::<S>(c, 7, 1, op.asz);
        Ok((a, b))
    })
}

/// The REP/REPE/REPNE loop of CMPS and SCAS: `element` loads the two operands of one
/// comparison and advances the pointers; the flags are those of `a - b`. A fault in
/// `element` leaves the registers as they were before that element.
#[inline(always)]
fn rep_compare<S: Sz>(
    c: &mut Cpu,
    op: &Op,
    mut element: impl FnMut(&mut Cpu) -> Result<(u64, u64), Ex>,
) -> Res {
    let am = AMASK[op.asz as usize & 3];
    let mut elems = ELEM_BUDGET * 4;
    loop {
        if op.x != REP_NONE {
            if c.regs[1] & am == 0 {
                return Ok(());
            }
            if elems == 0 {
                return Err(Ex::Restart);
            }
        }
        let (a, b) = element(c)?;
        let r = a.wrapping_sub(b) & S::MASK;
        c.flags_sub::<S>(a, b, r);
        if op.x == REP_NONE {
            return Ok(());
        }
        dec_count(c, 1, op.asz);
        elems -= 1;
        if (op.x == REP_E && !c.zf()) || (op.x == REP_NE && c.zf()) {
            return Ok(());
        }
    }
}

/// INS: port DX to [ES:rDI].
pub(crate) fn ins_op<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let am = AMASK[op.asz as usize & 3];
    let port = c.regs[2] as u16;
    c.io_check(port, S::BYTES as u16, io)?;
    let mut elems = ELEM_BUDGET;
    loop {
        if op.x != REP_NONE {
            if c.regs[1] & am == 0 {
                return Ok(());
            }
            if elems == 0 {
                return Err(Ex::Restart);
            }
        }
        let dl = c.lin_off_w(ES as u8, c.regs[7] & am, S::BYTES)?;
        // Check the destination before the (side-effecting) port read.
        c.translate(dl, Access::Write, c.tlb_sel != 0, io)?;
        let v = c.port_in(port, S::BYTES as usize, io);
        c.write::<S>(dl, v, io)?;
        advance::<S>(c, 7, 1, op.asz);
        if op.x == REP_NONE {
            return Ok(());
        }
        dec_count(c, 1, op.asz);
        elems -= 1;
    }
}

/// OUTS: [seg:rSI] to port DX.
pub(crate) fn outs_op<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let am = AMASK[op.asz as usize & 3];
    let port = c.regs[2] as u16;
    c.io_check(port, S::BYTES as u16, io)?;
    let mut elems = ELEM_BUDGET;
    loop {
        if op.x != REP_NONE {
            if c.regs[1] & am == 0 {
                return Ok(());
            }
            if elems == 0 {
                return Err(Ex::Restart);
            }
        }
        let sl = c.lin_off_r(op.seg, c.regs[6] & am, S::BYTES)?;
        let v = c.read::<S>(sl, io)?;
        c.port_out(port, S::BYTES as usize, v, io);
        advance::<S>(c, 6, 1, op.asz);
        if op.x == REP_NONE {
            return Ok(());
        }
        dec_count(c, 1, op.asz);
        elems -= 1;
    }
}
