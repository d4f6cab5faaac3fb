//! Segmentation: descriptor tables, segment register loads with their protection checks, and
//! far control transfers (JMP/CALL/RET far) in every mode.
//!
//! Rules per the Intel SDM vol. 3, chapter 5 ("Protection") and the instruction pages of
//! vol. 2 (MOV, POP, LDS, JMP, CALL, RET).

use virt::ExitHandler;
use virt::SegmentRegister;

use crate::cpu::CS;
use crate::cpu::Cpu;
use crate::cpu::Ex;
use crate::cpu::GP;
use crate::cpu::LDTR;
use crate::cpu::Mode;
use crate::cpu::NP;
use crate::cpu::RIP;
use crate::cpu::SS;
use crate::cpu::SSF;
use crate::cpu::TR;
use crate::size::D;
use crate::size::Q;
use crate::size::W;

/// A raw 8-byte segment descriptor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Desc(pub u64);

impl Desc {
    pub(crate) fn base(self) -> u64 {
        ((self.0 >> 16) & 0xff_ffff) | ((self.0 >> 32) & 0xff00_0000)
    }
    pub(crate) fn limit(self) -> u32 {
        let l = ((self.0 & 0xffff) | ((self.0 >> 32) & 0xf_0000)) as u32;
        if self.0 & (1 << 55) != 0 {
            (l << 12) | 0xfff
        } else {
            l
        }
    }
    /// Attributes in the VMX layout `SegmentRegister` uses.
    pub(crate) fn attr(self) -> u16 {
        ((self.0 >> 40) & 0xf0ff) as u16
    }
    pub(crate) fn dpl(self) -> u8 {
        ((self.0 >> 45) & 3) as u8
    }
    pub(crate) fn present(self) -> bool {
        self.0 & (1 << 47) != 0
    }
    /// S bit: code/data (true) or system (false).
    pub(crate) fn s(self) -> bool {
        self.0 & (1 << 44) != 0
    }
    pub(crate) fn ty(self) -> u8 {
        ((self.0 >> 40) & 0xf) as u8
    }
    pub(crate) fn is_code(self) -> bool {
        self.s() && self.ty() & 8 != 0
    }
    pub(crate) fn is_data(self) -> bool {
        self.s() && self.ty() & 8 == 0
    }
    pub(crate) fn conforming(self) -> bool {
        self.is_code() && self.ty() & 4 != 0
    }
    pub(crate) fn readable(self) -> bool {
        self.is_data() || self.ty() & 2 != 0
    }
    pub(crate) fn writable_data(self) -> bool {
        self.is_data() && self.ty() & 2 != 0
    }
    pub(crate) fn long(self) -> bool {
        self.0 & (1 << 53) != 0
    }
    pub(crate) fn big(self) -> bool {
        self.0 & (1 << 54) != 0
    }
    /// The segment register this descriptor loads with selector `sel`.
    pub(crate) fn to_seg(self, sel: u16) -> SegmentRegister {
        SegmentRegister {
            base: self.base(),
            limit: self.limit(),
            selector: sel,
            attributes: self.attr(),
        }
    }
}

/// Error code for a selector fault.
#[inline]
pub(crate) fn sel_err(sel: u16) -> u32 {
    u32::from(sel & 0xfffc)
}

/// A segment register that is loaded but unusable (null selector in protected mode).
pub(crate) fn null_seg(sel: u16) -> SegmentRegister {
    SegmentRegister {
        base: 0,
        limit: 0,
        selector: sel,
        attributes: 0,
    }
}

impl Cpu {
    /// Linear address of descriptor `sel` in the GDT or LDT; #GP(sel) past the table limit.
    fn desc_addr(&self, sel: u16, size: u64) -> Result<u64, Ex> {
        let idx = u64::from(sel & !7);
        let (base, limit) = if sel & 4 != 0 {
            let l = &self.seg[LDTR];
            if l.attributes & 0x80 == 0 || l.selector & !3 == 0 {
                return Err(Ex::Fault(GP, sel_err(sel)));
            }
            (l.base, u64::from(l.limit))
        } else {
            (self.gdtr.base, u64::from(self.gdtr.limit))
        };
        if idx + size - 1 > limit {
            return Err(Ex::Fault(GP, sel_err(sel)));
        }
        Ok(base.wrapping_add(idx) & self.lin_mask)
    }

    /// Reads the 8-byte descriptor for `sel`.
    pub(crate) fn read_desc(&mut self, sel: u16, io: &dyn ExitHandler) -> Result<Desc, Ex> {
        let a = self.desc_addr(sel, 8)?;
        Ok(Desc(self.read_sys::<Q>(a, io)?))
    }

    /// Reads a 16-byte system descriptor (long mode LDT/TSS/gates): low and high quadwords.
    pub(crate) fn read_desc16(
        &mut self,
        sel: u16,
        io: &dyn ExitHandler,
    ) -> Result<(Desc, u64), Ex> {
        let a = self.desc_addr(sel, 16)?;
        let lo = self.read_sys::<Q>(a, io)?;
        let hi = self.read_sys::<Q>(a.wrapping_add(8) & self.lin_mask, io)?;
        Ok((Desc(lo), hi))
    }

    /// Sets the accessed bit of a code/data descriptor in memory.
    fn set_accessed(&mut self, sel: u16, d: Desc, io: &dyn ExitHandler) -> Result<(), Ex> {
        if d.s() && d.0 & (1 << 40) == 0 {
            let a = self.desc_addr(sel, 8)?;
            let b = self.read_sys::<crate::size::B>(a + 5, io)?;
            self.write_sys::<crate::size::B>(a + 5, b | 1, io)?;
        }
        Ok(())
    }

    /// Installs a segment register and refreshes derived state.
    pub(crate) fn set_seg(&mut self, i: usize, s: SegmentRegister) {
        self.seg[i] = s;
        if i == CS || i == SS {
            self.update_mode();
            self.exit_req = true;
        } else if i < 6 {
            self.update_seg_cache(i);
        }
    }

    /// A real-mode (or VM86) segment load: base = selector * 16, limit and attributes kept.
    pub(crate) fn load_seg_real(&mut self, i: usize, sel: u16) {
        let mut s = self.seg[i];
        s.selector = sel;
        s.base = u64::from(sel) << 4;
        if s.attributes & 0x80 == 0 {
            // Unusable from protected mode: make it a usable data/code segment again.
            s.attributes = if i == CS { 0x9b } else { 0x93 };
            s.limit = 0xffff;
        }
        self.set_seg(i, s);
    }

    /// MOV/POP Sreg, LDS and friends: loads data segment register `i` (not CS).
    pub(crate) fn load_seg(&mut self, i: usize, sel: u16, io: &dyn ExitHandler) -> Result<(), Ex> {
        if self.mode == Mode::Real {
            self.load_seg_real(i, sel);
            return Ok(());
        }
        let rpl = (sel & 3) as u8;
        if sel & !3 == 0 {
            if i == SS && (self.mode != Mode::Long || self.cpl == 3 || rpl != self.cpl) {
                return Err(Ex::Fault(GP, 0));
            }
            let mut s = null_seg(sel);
            if i == SS {
                // 64-bit mode null SS: keep DPL = CPL so CPL stays consistent.
                s.attributes = u16::from(self.cpl) << 5;
            }
            self.set_seg(i, s);
            return Ok(());
        }
        let d = self.read_desc(sel, io)?;
        if i == SS {
            if rpl != self.cpl || d.dpl() != self.cpl || !d.writable_data() {
                return Err(Ex::Fault(GP, sel_err(sel)));
            }
            if !d.present() {
                return Err(Ex::Fault(SSF, sel_err(sel)));
            }
        } else {
            if !d.readable() || !d.s() {
                return Err(Ex::Fault(GP, sel_err(sel)));
            }
            if (d.is_data() || !d.conforming()) && (rpl > d.dpl() || self.cpl > d.dpl()) {
                return Err(Ex::Fault(GP, sel_err(sel)));
            }
            if !d.present() {
                return Err(Ex::Fault(NP, sel_err(sel)));
            }
        }
        self.set_accessed(sel, d, io)?;
        self.set_seg(i, Desc(d.0 | (1 << 40)).to_seg(sel));
        Ok(())
    }

    /// Loads CS for a far transfer to `sel:off` at privilege `cpl` (already checked), after
    /// checking the offset against the new segment.
    fn commit_cs(&mut self, sel: u16, d: Desc, off: u64, cpl: u8) -> Result<(), Ex> {
        let lma = self.mode == Mode::Long || self.mode == Mode::Compat;
        let to64 = lma && d.long();
        if to64 {
            if ((off << 16) as i64 >> 16) as u64 != off {
                return Err(Ex::Fault(GP, 0));
            }
        } else if off > u64::from(d.limit()) {
            return Err(Ex::Fault(GP, 0));
        }
        let mut s = Desc(d.0 | (1 << 40)).to_seg((sel & !3) | u16::from(cpl));
        if to64 {
            s.base = 0;
        }
        self.set_seg(CS, s);
        self.regs[RIP] = off;
        Ok(())
    }

    /// Checks a code-segment descriptor as the target of a direct far JMP/CALL.
    fn check_far_code(&self, sel: u16, d: Desc) -> Result<(), Ex> {
        let rpl = (sel & 3) as u8;
        if !d.is_code() {
            return Err(Ex::Fault(GP, sel_err(sel)));
        }
        if d.conforming() {
            if d.dpl() > self.cpl {
                return Err(Ex::Fault(GP, sel_err(sel)));
            }
        } else if rpl > self.cpl || d.dpl() != self.cpl {
            return Err(Ex::Fault(GP, sel_err(sel)));
        }
        if (self.mode == Mode::Long || self.mode == Mode::Compat) && d.long() && d.big() {
            return Err(Ex::Fault(GP, sel_err(sel)));
        }
        if !d.present() {
            return Err(Ex::Fault(NP, sel_err(sel)));
        }
        Ok(())
    }

    /// Far JMP to `sel:off`.
    pub(crate) fn far_jmp(&mut self, sel: u16, off: u64, io: &dyn ExitHandler) -> Result<(), Ex> {
        if self.mode == Mode::Real {
            self.load_seg_real(CS, sel);
            self.regs[RIP] = off;
            return Ok(());
        }
        if sel & !3 == 0 {
            return Err(Ex::Fault(GP, 0));
        }
        let d = self.read_desc(sel, io)?;
        if d.s() {
            self.check_far_code(sel, d)?;
            let cpl = self.cpl;
            return self.commit_cs(sel, d, off, cpl);
        }
        match d.ty() {
            0x4 | 0xc => {
                let (gsel, goff) = self.read_call_gate(sel, d, io)?;
                let gd = self.read_desc(gsel, io)?;
                self.check_gate_target(gsel, gd)?;
                if !gd.conforming() && gd.dpl() != self.cpl {
                    return Err(Ex::Fault(GP, sel_err(gsel)));
                }
                let cpl = self.cpl;
                self.commit_cs(gsel, gd, goff, cpl)
            }
            _ => self.internal_error(format!(
                "far JMP through system descriptor type {:#x} (task switch) is not implemented",
                d.ty()
            )),
        }
    }

    /// Reads a call gate's target (`sel`:`d` is the gate), checking its DPL and presence.
    fn read_call_gate(
        &mut self,
        sel: u16,
        d: Desc,
        io: &dyn ExitHandler,
    ) -> Result<(u16, u64), Ex> {
        let rpl = (sel & 3) as u8;
        if d.dpl() < self.cpl || d.dpl() < rpl {
            return Err(Ex::Fault(GP, sel_err(sel)));
        }
        if !d.present() {
            return Err(Ex::Fault(NP, sel_err(sel)));
        }
        let tsel = (d.0 >> 16) as u16;
        let mut off = (d.0 & 0xffff) | ((d.0 >> 32) & 0xffff_0000);
        if d.ty() == 0x4 {
            off &= 0xffff;
        }
        if self.mode == Mode::Long || self.mode == Mode::Compat {
            let (_, hi) = self.read_desc16(sel, io)?;
            off |= (hi & 0xffff_ffff) << 32;
        }
        if tsel & !3 == 0 {
            return Err(Ex::Fault(GP, 0));
        }
        Ok((tsel, off))
    }

    fn check_gate_target(&self, sel: u16, d: Desc) -> Result<(), Ex> {
        if !d.is_code() || d.dpl() > self.cpl {
            return Err(Ex::Fault(GP, sel_err(sel)));
        }
        if !d.present() {
            return Err(Ex::Fault(NP, sel_err(sel)));
        }
        Ok(())
    }

    /// Far CALL to `sel:off` with operand size `osz` bytes (2, 4, 8).
    pub(crate) fn far_call(
        &mut self,
        sel: u16,
        off: u64,
        osz: u8,
        io: &dyn ExitHandler,
    ) -> Result<(), Ex> {
        let ret_cs = u64::from(self.seg[CS].selector);
        let ret_ip = self.regs[RIP];
        let old_sp = self.regs[4];
        let push_both = |c: &mut Cpu| -> Result<(), Ex> {
            match osz {
                2 => {
                    c.push::<W>(ret_cs, io)?;
                    c.push::<W>(ret_ip, io)
                }
                4 => {
                    c.push::<D>(ret_cs, io)?;
                    c.push::<D>(ret_ip, io)
                }
                _ => {
                    c.push::<Q>(ret_cs, io)?;
                    c.push::<Q>(ret_ip, io)
                }
            }
        };
        if self.mode == Mode::Real {
            push_both(self)?;
            self.load_seg_real(CS, sel);
            self.regs[RIP] = off & if osz == 2 { 0xffff } else { 0xffff_ffff };
            return Ok(());
        }
        if sel & !3 == 0 {
            return Err(Ex::Fault(GP, 0));
        }
        let d = self.read_desc(sel, io)?;
        let (tsel, td, toff) = if d.s() {
            self.check_far_code(sel, d)?;
            (sel, d, off)
        } else if d.ty() == 0x4 || d.ty() == 0xc {
            let (gsel, goff) = self.read_call_gate(sel, d, io)?;
            let gd = self.read_desc(gsel, io)?;
            self.check_gate_target(gsel, gd)?;
            if !gd.conforming() && gd.dpl() < self.cpl {
                return self.internal_error(
                    "far CALL through a call gate to a more privileged level is not implemented"
                        .into(),
                );
            }
            (gsel, gd, goff)
        } else {
            return self.internal_error(format!(
                "far CALL through system descriptor type {:#x} (task switch) is not implemented",
                d.ty()
            ));
        };
        // Check the target before pushing, push, then commit.
        let lma = self.mode == Mode::Long || self.mode == Mode::Compat;
        let toff = if lma && td.long() {
            toff
        } else {
            toff & if osz == 2 { 0xffff } else { 0xffff_ffff }
        };
        push_both(self)?;
        let cpl = self.cpl;
        if let Err(e) = self.commit_cs(tsel, td, toff, cpl) {
            self.regs[4] = old_sp;
            return Err(e);
        }
        Ok(())
    }

    /// Far RET (`imm` bytes released after the return address) with operand size `osz`.
    pub(crate) fn far_ret(&mut self, osz: u8, imm: u64, io: &dyn ExitHandler) -> Result<(), Ex> {
        let sz = u64::from(osz);
        let rd = |c: &mut Cpu, off: u64| -> Result<u64, Ex> {
            match osz {
                2 => c.stack_peek::<W>(off, io),
                4 => c.stack_peek::<D>(off, io),
                _ => c.stack_peek::<Q>(off, io),
            }
        };
        let ip = rd(self, 0)?;
        let sel = rd(self, sz)? as u16;
        if self.mode == Mode::Real {
            self.sp_add(2 * sz + imm);
            self.load_seg_real(CS, sel);
            self.regs[RIP] = ip;
            return Ok(());
        }
        if sel & !3 == 0 {
            return Err(Ex::Fault(GP, 0));
        }
        let rpl = (sel & 3) as u8;
        if rpl < self.cpl {
            return Err(Ex::Fault(GP, sel_err(sel)));
        }
        let d = self.read_desc(sel, io)?;
        if !d.is_code() || (d.conforming() && d.dpl() > rpl) || (!d.conforming() && d.dpl() != rpl)
        {
            return Err(Ex::Fault(GP, sel_err(sel)));
        }
        if !d.present() {
            return Err(Ex::Fault(NP, sel_err(sel)));
        }
        if rpl == self.cpl {
            self.commit_cs(sel, d, ip, rpl)?;
            self.sp_add(2 * sz + imm);
            return Ok(());
        }
        // Return to an outer privilege level: SS:rSP follow the return address.
        let sp = rd(self, 2 * sz + imm)?;
        let ss_sel = rd(self, 3 * sz + imm)? as u16;
        let new_ss = self.check_new_ss(ss_sel, rpl, d.long(), io)?;
        self.commit_cs(sel, d, ip, rpl)?;
        self.set_seg(SS, new_ss);
        let m = self.sp_mask;
        self.regs[4] = (self.regs[4] & !m) | (sp.wrapping_add(imm) & m);
        self.null_inaccessible_segments();
        Ok(())
    }

    /// Validates the stack segment a privilege change loads at privilege `cpl`.
    pub(crate) fn check_new_ss(
        &mut self,
        sel: u16,
        cpl: u8,
        to64: bool,
        io: &dyn ExitHandler,
    ) -> Result<SegmentRegister, Ex> {
        if sel & !3 == 0 {
            if to64 && cpl != 3 {
                let mut s = null_seg(sel);
                s.attributes = u16::from(cpl) << 5;
                return Ok(s);
            }
            return Err(Ex::Fault(GP, 0));
        }
        let d = self.read_desc(sel, io)?;
        if (sel & 3) as u8 != cpl || d.dpl() != cpl || !d.writable_data() {
            return Err(Ex::Fault(GP, sel_err(sel)));
        }
        if !d.present() {
            return Err(Ex::Fault(SSF, sel_err(sel)));
        }
        self.set_accessed(sel, d, io)?;
        Ok(Desc(d.0 | (1 << 40)).to_seg(sel))
    }

    /// After a return to an outer level: data segments more privileged than the new CPL
    /// become null.
    pub(crate) fn null_inaccessible_segments(&mut self) {
        for i in [
            crate::cpu::ES,
            crate::cpu::DS,
            crate::cpu::FS,
            crate::cpu::GS,
        ] {
            let s = self.seg[i];
            let dpl = ((s.attributes >> 5) & 3) as u8;
            let ty = s.attributes & 0xf;
            let code_conforming = ty & 0xc == 0xc;
            if s.attributes & 0x80 != 0 && dpl < self.cpl && !code_conforming {
                let mut n = null_seg(s.selector);
                n.base = s.base;
                self.set_seg(i, n);
            }
        }
    }

    /// LLDT.
    pub(crate) fn lldt(&mut self, sel: u16, io: &dyn ExitHandler) -> Result<(), Ex> {
        if sel & !3 == 0 {
            self.seg[LDTR] = null_seg(sel);
            return Ok(());
        }
        if sel & 4 != 0 {
            return Err(Ex::Fault(GP, sel_err(sel)));
        }
        let long = self.mode == Mode::Long || self.mode == Mode::Compat;
        let (d, hi) = if long {
            self.read_desc16(sel, io)?
        } else {
            (self.read_desc(sel, io)?, 0)
        };
        if d.s() || d.ty() != 2 {
            return Err(Ex::Fault(GP, sel_err(sel)));
        }
        if !d.present() {
            return Err(Ex::Fault(NP, sel_err(sel)));
        }
        let mut s = d.to_seg(sel);
        if long {
            s.base |= (hi & 0xffff_ffff) << 32;
        }
        self.seg[LDTR] = s;
        Ok(())
    }

    /// LTR: loads TR and marks the TSS busy.
    pub(crate) fn ltr(&mut self, sel: u16, io: &dyn ExitHandler) -> Result<(), Ex> {
        if sel & !3 == 0 {
            return Err(Ex::Fault(GP, 0));
        }
        if sel & 4 != 0 {
            return Err(Ex::Fault(GP, sel_err(sel)));
        }
        let long = self.mode == Mode::Long || self.mode == Mode::Compat;
        let (d, hi) = if long {
            self.read_desc16(sel, io)?
        } else {
            (self.read_desc(sel, io)?, 0)
        };
        let ok = !d.s() && (d.ty() == 9 || (!long && d.ty() == 1));
        if !ok {
            return Err(Ex::Fault(GP, sel_err(sel)));
        }
        if !d.present() {
            return Err(Ex::Fault(NP, sel_err(sel)));
        }
        let a = self.desc_addr(sel, 8)?;
        let b = self.read_sys::<crate::size::B>(a + 5, io)?;
        self.write_sys::<crate::size::B>(a + 5, b | 2, io)?;
        let mut s = Desc(d.0 | (2 << 40)).to_seg(sel);
        if long {
            s.base |= (hi & 0xffff_ffff) << 32;
        }
        self.seg[TR] = s;
        Ok(())
    }

    /// LAR/LSL/VERR/VERW descriptor lookup: `None` when the selector is not valid for the
    /// query (ZF=0). `kind`: 0 LAR, 1 LSL, 2 VERR, 3 VERW.
    pub(crate) fn desc_query(
        &mut self,
        sel: u16,
        kind: u8,
        io: &dyn ExitHandler,
    ) -> Result<Option<Desc>, Ex> {
        if self.mode == Mode::Real || sel & !3 == 0 {
            return Ok(None);
        }
        let Ok(d) = self.read_desc(sel, io) else {
            return Ok(None);
        };
        let rpl = (sel & 3) as u8;
        let long = self.mode == Mode::Long || self.mode == Mode::Compat;
        if !d.s() {
            let ok = match kind {
                0 => {
                    matches!(d.ty(), 2 | 9 | 0xb | 0xc)
                        || (!long && matches!(d.ty(), 1 | 3 | 4 | 5))
                }
                1 => matches!(d.ty(), 2 | 9 | 0xb) || (!long && matches!(d.ty(), 1 | 3)),
                _ => false,
            };
            if !ok || d.dpl() < self.cpl || d.dpl() < rpl {
                return Ok(None);
            }
            return Ok(Some(d));
        }
        if !d.conforming() && (d.dpl() < self.cpl || d.dpl() < rpl) {
            return Ok(None);
        }
        let ok = match kind {
            2 => d.readable(),
            3 => d.writable_data(),
            _ => true,
        };
        Ok(ok.then_some(d))
    }
}
