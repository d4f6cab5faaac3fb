//! Exception and interrupt delivery (IVT, 32-bit IDT, 64-bit IDT with IST), #DF and triple
//! fault escalation, IRET, and the INT n / INT3 / INTO / INT1 instructions.
//!
//! Per the Intel SDM vol. 3, chapter 6 ("Interrupt and Exception Handling"): table 6-5 for the
//! double-fault conditions, sections 6.12 and 6.14 for the stack frames.

use virt::ExitHandler;
use virt::SegmentRegister;

use crate::cpu::CS;
use crate::cpu::Cpu;
use crate::cpu::DF;
use crate::cpu::Ex;
use crate::cpu::GP;
use crate::cpu::Mode;
use crate::cpu::NP;
use crate::cpu::RIP;
use crate::cpu::Res;
use crate::cpu::SS;
use crate::cpu::TR;
use crate::cpu::TS;
use crate::flags;
use crate::op::Op;
use crate::seg::Desc;
use crate::seg::sel_err;
use crate::size::D;
use crate::size::Q;
use crate::size::Sz;
use crate::size::W;

/// What kind of event is being delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A processor exception (fault or trap).
    Exception,
    /// An external (maskable) interrupt.
    External,
    /// NMI.
    Nmi,
    /// INT n.
    Software,
    /// INT3 / INTO (software exceptions: the gate DPL is checked).
    SoftException,
    /// INT1 / ICEBP (no gate DPL check).
    Icebp,
}

fn has_error_code(v: u8) -> bool {
    matches!(v, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21)
}

#[derive(PartialEq, Eq)]
enum Class {
    Benign,
    Contributory,
    PageFault,
}

fn class(v: u8) -> Class {
    match v {
        0 | 10 | 11 | 12 | 13 => Class::Contributory,
        14 => Class::PageFault,
        _ => Class::Benign,
    }
}

/// Writes a stack frame somewhere other than the current stack (a privilege change).
struct Frame {
    base: u64,
    sp: u64,
    mask: u64,
    user: bool,
}

impl Cpu {
    fn frame_push<S: Sz>(&mut self, f: &mut Frame, v: u64, io: &dyn ExitHandler) -> Result<(), Ex> {
        f.sp = f.sp.wrapping_sub(S::BYTES) & f.mask;
        let lin = f.base.wrapping_add(f.sp) & self.lin_mask;
        if f.user {
            self.write::<S>(lin, v, io)
        } else {
            self.write_sys::<S>(lin, v, io)
        }
    }

    /// Delivers an event with #DF and triple-fault escalation. `Err(Ex::Shutdown)` on a
    /// triple fault; any other error is a backend error.
    pub(crate) fn raise(
        &mut self,
        vector: u8,
        kind: Event,
        code: u32,
        io: &dyn ExitHandler,
    ) -> Result<(), Ex> {
        let (mut v, mut kind, mut code) = (vector, kind, code);
        for _ in 0..4 {
            match self.deliver(v, kind, code, io) {
                Ok(()) => return Ok(()),
                Err(Ex::Fault(v2, c2)) => {
                    if kind == Event::Exception && v == DF {
                        return Err(Ex::Shutdown);
                    }
                    let c1 = if kind == Event::Exception {
                        class(v)
                    } else {
                        Class::Benign
                    };
                    let c2c = class(v2);
                    let double = (c1 == Class::Contributory && c2c == Class::Contributory)
                        || (c1 == Class::PageFault && c2c != Class::Benign);
                    if double {
                        (v, code) = (DF, 0);
                    } else {
                        (v, code) = (v2, c2);
                    }
                    kind = Event::Exception;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Ex::Shutdown)
    }

    /// Delivers one event through the IVT/IDT of the current mode; a fault during delivery is
    /// returned (with nothing committed).
    pub(crate) fn deliver(
        &mut self,
        v: u8,
        kind: Event,
        code: u32,
        io: &dyn ExitHandler,
    ) -> Result<(), Ex> {
        let r = match self.mode {
            Mode::Real => self.deliver_real(v, io),
            Mode::Protected => {
                if self.flags & flags::VM != 0 {
                    return self.internal_error(
                        "interrupt in virtual-8086 mode is not implemented".into(),
                    );
                }
                self.deliver_protected(v, kind, code, io)
            }
            Mode::Long | Mode::Compat => self.deliver_long(v, kind, code, io),
        };
        if r.is_ok() {
            self.shared.vps[self.index as usize].delivered[v as usize]
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.halted = false;
            self.exit_req = true;
            if kind == Event::Nmi {
                self.nmi_blocked = true;
            }
        }
        r
    }

    fn deliver_real(&mut self, v: u8, io: &dyn ExitHandler) -> Result<(), Ex> {
        let off = u64::from(v) * 4;
        if off + 3 > u64::from(self.idtr.limit) {
            return Err(Ex::Fault(GP, 0));
        }
        let a = self.idtr.base.wrapping_add(off) & 0xffff_ffff;
        let ip = self.read_sys::<W>(a, io)?;
        let cs = self.read_sys::<W>(a + 2, io)?;
        let old_sp = self.regs[4];
        let f = self.rflags();
        let ret_cs = u64::from(self.seg[CS].selector);
        let ret_ip = self.regs[RIP] & 0xffff;
        let r = (|| {
            self.push::<W>(f, io)?;
            self.push::<W>(ret_cs, io)?;
            self.push::<W>(ret_ip, io)
        })();
        if let Err(e) = r {
            self.regs[4] = old_sp;
            return Err(e);
        }
        self.flags &= !(flags::IF | flags::TF | flags::AC | flags::RF);
        self.load_seg_real(CS, cs as u16);
        self.regs[RIP] = ip;
        Ok(())
    }

    /// Stack pointer for privilege level `cpl` (or IST slot `ist`) from the current TSS.
    fn tss_stack(&mut self, cpl: u8, ist: u8, io: &dyn ExitHandler) -> Result<(u64, u16), Ex> {
        let tr = self.seg[TR];
        let ty = tr.attributes & 0xf;
        let terr = Ex::Fault(TS, sel_err(tr.selector));
        if tr.attributes & 0x80 == 0 {
            return Err(terr);
        }
        let long = matches!(self.mode, Mode::Long | Mode::Compat);
        if long {
            let off = if ist != 0 {
                36 + 8 * (u64::from(ist) - 1)
            } else {
                4 + 8 * u64::from(cpl)
            };
            if off + 7 > u64::from(tr.limit) {
                return Err(terr);
            }
            let sp = self.read_sys::<Q>(tr.base.wrapping_add(off), io)?;
            return Ok((sp, 0));
        }
        if ty & 8 != 0 {
            let off = 4 + 8 * u64::from(cpl);
            if off + 5 > u64::from(tr.limit) {
                return Err(terr);
            }
            let a = tr.base.wrapping_add(off) & 0xffff_ffff;
            let sp = self.read_sys::<D>(a, io)?;
            let ss = self.read_sys::<W>(a + 4, io)?;
            Ok((sp, ss as u16))
        } else {
            let off = 2 + 4 * u64::from(cpl);
            if off + 3 > u64::from(tr.limit) {
                return Err(terr);
            }
            let a = tr.base.wrapping_add(off) & 0xffff_ffff;
            let sp = self.read_sys::<W>(a, io)?;
            let ss = self.read_sys::<W>(a + 2, io)?;
            Ok((sp, ss as u16))
        }
    }

    /// Reads and checks the gate's target code segment. Returns the descriptor and new CPL.
    fn gate_target(&mut self, sel: u16, ext: u32, io: &dyn ExitHandler) -> Result<(Desc, u8), Ex> {
        if sel & !3 == 0 {
            return Err(Ex::Fault(GP, ext));
        }
        let d = self.read_desc(sel, io).map_err(|e| match e {
            Ex::Fault(GP, c) => Ex::Fault(GP, c | ext),
            e => e,
        })?;
        if !d.is_code() || d.dpl() > self.cpl {
            return Err(Ex::Fault(GP, sel_err(sel) | ext));
        }
        if !d.present() {
            return Err(Ex::Fault(NP, sel_err(sel) | ext));
        }
        let new_cpl = if d.conforming() { self.cpl } else { d.dpl() };
        Ok((d, new_cpl))
    }

    fn deliver_protected(
        &mut self,
        v: u8,
        kind: Event,
        code: u32,
        io: &dyn ExitHandler,
    ) -> Result<(), Ex> {
        let ext = u32::from(!matches!(kind, Event::Software | Event::SoftException));
        let idt_err = (u32::from(v) << 3) | 2 | ext;
        let off = u64::from(v) * 8;
        if off + 7 > u64::from(self.idtr.limit) {
            return Err(Ex::Fault(GP, idt_err));
        }
        let gate = Desc(self.read_sys::<Q>(self.idtr.base.wrapping_add(off) & 0xffff_ffff, io)?);
        let ty = gate.ty();
        if gate.s() || !matches!(ty, 5 | 6 | 7 | 0xe | 0xf) {
            return Err(Ex::Fault(GP, idt_err));
        }
        if matches!(kind, Event::Software | Event::SoftException) && gate.dpl() < self.cpl {
            return Err(Ex::Fault(GP, idt_err));
        }
        if !gate.present() {
            return Err(Ex::Fault(NP, idt_err));
        }
        if ty == 5 {
            return self.internal_error(format!("task gate for vector {v} is not implemented"));
        }
        let sel = (gate.0 >> 16) as u16;
        let mut target = (gate.0 & 0xffff) | ((gate.0 >> 32) & 0xffff_0000);
        let gate32 = ty & 8 != 0;
        if !gate32 {
            target &= 0xffff;
        }
        let (d, new_cpl) = self.gate_target(sel, ext, io)?;
        if target > u64::from(d.limit()) {
            return Err(Ex::Fault(GP, ext));
        }
        let push_code = kind == Event::Exception && has_error_code(v);
        let old_flags = self.rflags();
        let old_cs = u64::from(self.seg[CS].selector);
        let old_ip = self.regs[RIP];
        let old_ss = self.seg[SS];
        let old_sp = self.regs[4];
        let (mut frame, new_ss) = if new_cpl < self.cpl {
            let (sp, ss_sel) = self.tss_stack(new_cpl, 0, io)?;
            let ss = self
                .check_new_ss(ss_sel, new_cpl, false, io)
                .map_err(|e| match e {
                    Ex::Fault(_, c) => Ex::Fault(TS, c | ext),
                    e => e,
                })?;
            let mask = if ss.default_big() {
                0xffff_ffff
            } else {
                0xffff
            };
            (
                Frame {
                    base: ss.base,
                    sp: sp & mask,
                    mask,
                    user: new_cpl == 3,
                },
                Some(ss),
            )
        } else {
            (
                Frame {
                    base: self.seg_base[SS],
                    sp: old_sp & self.sp_mask,
                    mask: self.sp_mask,
                    user: self.cpl == 3,
                },
                None,
            )
        };
        if gate32 {
            if new_ss.is_some() {
                self.frame_push::<D>(&mut frame, u64::from(old_ss.selector), io)?;
                self.frame_push::<D>(&mut frame, old_sp & 0xffff_ffff, io)?;
            }
            self.frame_push::<D>(&mut frame, old_flags & 0xffff_ffff, io)?;
            self.frame_push::<D>(&mut frame, old_cs, io)?;
            self.frame_push::<D>(&mut frame, old_ip & 0xffff_ffff, io)?;
            if push_code {
                self.frame_push::<D>(&mut frame, u64::from(code), io)?;
            }
        } else {
            if new_ss.is_some() {
                self.frame_push::<W>(&mut frame, u64::from(old_ss.selector), io)?;
                self.frame_push::<W>(&mut frame, old_sp, io)?;
            }
            self.frame_push::<W>(&mut frame, old_flags, io)?;
            self.frame_push::<W>(&mut frame, old_cs, io)?;
            self.frame_push::<W>(&mut frame, old_ip, io)?;
            if push_code {
                self.frame_push::<W>(&mut frame, u64::from(code), io)?;
            }
        }
        // Commit.
        if let Some(ss) = new_ss {
            self.set_seg(SS, ss);
        }
        self.regs[4] = if new_ss.is_some() {
            frame.sp
        } else {
            (old_sp & !frame.mask) | frame.sp
        };
        let cs = Desc(d.0 | (1 << 40)).to_seg((sel & !3) | u16::from(new_cpl));
        self.set_seg(CS, cs);
        self.regs[RIP] = target;
        let mut f = self.flags & !(flags::TF | flags::NT | flags::RF | flags::VM);
        if ty & 1 == 0 {
            f &= !flags::IF;
        }
        self.flags = f;
        Ok(())
    }

    fn deliver_long(
        &mut self,
        v: u8,
        kind: Event,
        code: u32,
        io: &dyn ExitHandler,
    ) -> Result<(), Ex> {
        let ext = u32::from(!matches!(kind, Event::Software | Event::SoftException));
        let idt_err = (u32::from(v) << 3) | 2 | ext;
        let off = u64::from(v) * 16;
        if off + 15 > u64::from(self.idtr.limit) {
            return Err(Ex::Fault(GP, idt_err));
        }
        let a = self.idtr.base.wrapping_add(off);
        let lo = self.read_sys::<Q>(a, io)?;
        let hi = self.read_sys::<Q>(a.wrapping_add(8), io)?;
        let gate = Desc(lo);
        if gate.s() || !matches!(gate.ty(), 0xe | 0xf) {
            return Err(Ex::Fault(GP, idt_err));
        }
        if matches!(kind, Event::Software | Event::SoftException) && gate.dpl() < self.cpl {
            return Err(Ex::Fault(GP, idt_err));
        }
        if !gate.present() {
            return Err(Ex::Fault(NP, idt_err));
        }
        let sel = (lo >> 16) as u16;
        let target = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000) | (hi << 32);
        let ist = ((lo >> 32) & 7) as u8;
        let (d, new_cpl) = self.gate_target(sel, ext, io)?;
        if !d.long() || d.big() {
            return Err(Ex::Fault(GP, sel_err(sel) | ext));
        }
        if ((target << 16) as i64 >> 16) as u64 != target {
            return Err(Ex::Fault(GP, ext));
        }
        let old_flags = self.rflags();
        let old_cs = u64::from(self.seg[CS].selector);
        let old_ip = self.regs[RIP];
        let old_ss = u64::from(self.seg[SS].selector);
        let old_sp = self.regs[4];
        let sp = if ist != 0 || new_cpl < self.cpl {
            self.tss_stack(new_cpl, ist, io)?.0
        } else {
            old_sp
        };
        let mut frame = Frame {
            base: 0,
            sp: sp & !0xf,
            mask: u64::MAX,
            user: new_cpl == 3,
        };
        self.frame_push::<Q>(&mut frame, old_ss, io)?;
        self.frame_push::<Q>(&mut frame, old_sp, io)?;
        self.frame_push::<Q>(&mut frame, old_flags, io)?;
        self.frame_push::<Q>(&mut frame, old_cs, io)?;
        self.frame_push::<Q>(&mut frame, old_ip, io)?;
        if kind == Event::Exception && has_error_code(v) {
            self.frame_push::<Q>(&mut frame, u64::from(code), io)?;
        }
        // Commit.
        if new_cpl != self.cpl {
            let ss = SegmentRegister {
                base: 0,
                limit: 0,
                selector: u16::from(new_cpl),
                attributes: u16::from(new_cpl) << 5,
            };
            self.seg[SS] = ss;
        }
        let mut cs = Desc(d.0 | (1 << 40)).to_seg((sel & !3) | u16::from(new_cpl));
        cs.base = 0;
        self.set_seg(CS, cs);
        self.regs[4] = frame.sp;
        self.regs[RIP] = target;
        let mut f = self.flags & !(flags::TF | flags::NT | flags::RF | flags::VM);
        if gate.ty() & 1 == 0 {
            f &= !flags::IF;
        }
        self.flags = f;
        Ok(())
    }

    /// Applies the flags an IRET pops, with the rules for the (old) CPL.
    fn iret_flags(&mut self, v: u64, osz: u32) {
        let mut changeable =
            flags::STATUS | flags::TF | flags::DF | flags::NT | flags::RF | flags::AC | flags::ID;
        if self.mode == Mode::Real || self.cpl == 0 {
            changeable |= flags::IOPL | flags::IF | flags::VIF | flags::VIP;
        } else if u64::from(self.cpl) <= self.iopl() {
            changeable |= flags::IF;
        }
        if osz == 16 {
            changeable &= 0xffff;
        }
        let old = self.rflags();
        self.set_rflags_raw((old & !changeable) | (v & changeable));
    }
}

/// IRET/IRETD/IRETQ.
pub(crate) fn iret<S: Sz>(c: &mut Cpu, _: &Op, io: &dyn ExitHandler) -> Res {
    let sz = S::BYTES;
    let ip = c.stack_peek::<S>(0, io)?;
    let cs = c.stack_peek::<S>(sz, io)? as u16;
    let fl = c.stack_peek::<S>(2 * sz, io)?;
    if c.mode == Mode::Real {
        if ip > u64::from(c.seg[CS].limit) && S::BITS == 32 {
            return crate::cpu::gp0();
        }
        c.sp_add(3 * sz);
        c.load_seg_real(CS, cs);
        c.regs[RIP] = ip;
        c.iret_flags(fl, S::BITS);
        c.nmi_blocked = false;
        c.events_changed();
        return Ok(());
    }
    if c.flags & flags::VM != 0 {
        return c.internal_error("IRET in virtual-8086 mode is not implemented".into());
    }
    if c.flags & flags::NT != 0 {
        if c.mode == Mode::Long {
            return crate::cpu::gp0();
        }
        return c.internal_error("IRET with NT set (task return) is not implemented".into());
    }
    if c.mode == Mode::Protected && fl & flags::VM != 0 && c.cpl == 0 && S::BITS == 32 {
        return c.internal_error("IRET to virtual-8086 mode is not implemented".into());
    }
    if cs & !3 == 0 {
        return crate::cpu::gp0();
    }
    let rpl = (cs & 3) as u8;
    if rpl < c.cpl {
        return Err(Ex::Fault(GP, sel_err(cs)));
    }
    let d = c.read_desc(cs, io)?;
    if !d.is_code() || (d.conforming() && d.dpl() > rpl) || (!d.conforming() && d.dpl() != rpl) {
        return Err(Ex::Fault(GP, sel_err(cs)));
    }
    if !d.present() {
        return Err(Ex::Fault(NP, sel_err(cs)));
    }
    let long = c.mode == Mode::Long;
    let to64 = matches!(c.mode, Mode::Long | Mode::Compat) && d.long();
    let pop_ss = long || rpl > c.cpl;
    let mut new_ss = None;
    if pop_ss {
        let sp = c.stack_peek::<S>(3 * sz, io)?;
        let ss_sel = c.stack_peek::<S>(4 * sz, io)? as u16;
        let ss = c.check_new_ss(ss_sel, rpl, to64, io)?;
        new_ss = Some((ss, sp));
    }
    let old_cpl = c.cpl;
    // Validate the target offset before committing anything.
    let ip = if to64 { ip } else { ip & S::MASK };
    if to64 {
        if ((ip << 16) as i64 >> 16) as u64 != ip {
            return crate::cpu::gp0();
        }
    } else if ip > u64::from(d.limit()) {
        return crate::cpu::gp0();
    }
    c.iret_flags(fl, S::BITS);
    let mut cseg = Desc(d.0 | (1 << 40)).to_seg(cs);
    if to64 {
        cseg.base = 0;
    }
    c.set_seg(CS, cseg);
    c.regs[RIP] = ip;
    match new_ss {
        Some((ss, sp)) => {
            c.set_seg(SS, ss);
            c.regs[4] = if to64 { sp } else { sp & S::MASK };
        }
        None => c.sp_add(3 * sz),
    }
    if rpl > old_cpl {
        c.null_inaccessible_segments();
    }
    c.nmi_blocked = false;
    c.events_changed();
    Ok(())
}

/// INT imm8.
pub(crate) fn int_n(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    if c.flags & flags::VM != 0 {
        return c.internal_error("INT n in virtual-8086 mode is not implemented".into());
    }
    c.deliver(op.imm as u8, Event::Software, 0, io)
}

/// INT3.
pub(crate) fn int3(c: &mut Cpu, _: &Op, io: &dyn ExitHandler) -> Res {
    c.deliver(crate::cpu::BP, Event::SoftException, 0, io)
}

/// INTO.
pub(crate) fn into(c: &mut Cpu, _: &Op, io: &dyn ExitHandler) -> Res {
    if c.of() {
        return c.deliver(crate::cpu::OFV, Event::SoftException, 0, io);
    }
    Ok(())
}

/// INT1 / ICEBP.
pub(crate) fn int1(c: &mut Cpu, _: &Op, io: &dyn ExitHandler) -> Res {
    c.deliver(crate::cpu::DB, Event::Icebp, 0, io)
}
