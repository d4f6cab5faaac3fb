//! System instructions: control/debug registers, MSRs, CPUID, TSC, port I/O, HLT, CLI/STI,
//! descriptor-table registers, segment register moves, far transfers, SYSCALL/SYSRET,
//! SYSENTER/SYSEXIT, SWAPGS, INVLPG, hypercalls.

use std::sync::atomic::Ordering;

use virt::ExitHandler;
use virt::HypercallInput;
use virt::SegmentRegister;

use super::Rm;
use super::get_rm;
use super::set_rm;
use crate::cpu::*;
use crate::flags;
use crate::op::Op;
use crate::size::B;
use crate::size::D;
use crate::size::Q;
use crate::size::Sz;
use crate::size::W;

/// The MSRs this CPU implements itself.
pub(crate) mod msr {
    pub const TSC: u32 = 0x10;
    pub const TSC_ADJUST: u32 = 0x3b;
    pub const PLATFORM_ID: u32 = 0x17;
    pub const APIC_BASE: u32 = 0x1b;
    pub const UCODE_REV: u32 = 0x8b;
    pub const ARCH_CAPABILITIES: u32 = 0x10a;
    pub const MTRRCAP: u32 = 0xfe;
    pub const SYSENTER_CS: u32 = 0x174;
    pub const SYSENTER_ESP: u32 = 0x175;
    pub const SYSENTER_EIP: u32 = 0x176;
    pub const MISC_ENABLE: u32 = 0x1a0;
    pub const PAT: u32 = 0x277;
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
    pub const TSC_DEADLINE: u32 = 0x6e0;
    pub const EFER: u32 = 0xc000_0080;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const CSTAR: u32 = 0xc000_0083;
    pub const SFMASK: u32 = 0xc000_0084;
    pub const FS_BASE: u32 = 0xc000_0100;
    pub const GS_BASE: u32 = 0xc000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    pub const TSC_AUX: u32 = 0xc000_0103;
}

/// IA32_ARCH_CAPABILITIES: this CPU has none of the speculative-execution flaws those bits
/// describe (RDCL_NO, SKIP_L1DFL_VMENTRY, SSB_NO, MDS_NO, PSCHANGE_MC_NO, TAA_NO,
/// SBDR_SSDP_NO, FBSDP_NO, PSDP_NO, BHI_NO, PBRSB_NO, GDS_NO, RFDS_NO, ITS_NO): it does not
/// speculate. Without ITS_NO a guest that sees the hypervisor bit assumes it may run on
/// affected hardware and sends every return through one shared thunk.
const ARCH_CAP: u64 = 1
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 8)
    | (1 << 13)
    | (1 << 14)
    | (1 << 15)
    | (1 << 20)
    | (1 << 24)
    | (1 << 26)
    | (1 << 27)
    | (1 << 62);

impl Cpu {
    /// The guest's TSC at VM time `ns`.
    #[inline]
    pub(crate) fn tsc_at(&self, ns: u64) -> u64 {
        let t =
            ((u128::from(ns) * u128::from(self.shared.tsc_mult)) >> 32) as i128 + self.tsc_offset;
        t as u64
    }

    /// The guest's TSC now (reads the clock).
    pub(crate) fn tsc(&self) -> u64 {
        self.tsc_at(self.shared.clock.now_ns())
    }

    /// RDTSC's value: the TSC at the last event check (a few microseconds ago at most), and
    /// strictly increasing between checks, without reading the host clock per instruction.
    #[inline]
    pub(crate) fn tsc_fast(&mut self) -> u64 {
        let mut t = self.tsc_at(self.now_ns).max(self.tsc_last.wrapping_add(1));
        // Never behind what another processor already read (Linux checks for TSC warps).
        let high = self.shared.tsc_high.fetch_max(t, Ordering::AcqRel);
        if high > t {
            t = high;
        }
        self.tsc_last = t;
        t
    }

    /// VM time (ns) at which the TSC reaches `tsc`.
    pub(crate) fn tsc_to_ns(&self, tsc: u64) -> u64 {
        let raw = i128::from(tsc) - self.tsc_offset;
        if raw <= 0 {
            return 0;
        }
        let ns = raw as u128 * 1_000_000_000 / u128::from(self.shared.tsc_freq.max(1));
        ns.min(u128::from(u64::MAX)) as u64
    }

    fn is_user_msr(&self, m: u32) -> bool {
        self.shared.user_msrs.iter().any(|r| r.contains(&m))
    }

    fn mtrr_msr(m: u32) -> bool {
        matches!(m, 0x200..=0x20f | 0x250 | 0x258 | 0x259 | 0x268..=0x26f)
    }

    /// RDMSR; `None` raises #GP.
    pub(crate) fn rdmsr(&mut self, m: u32, io: &dyn ExitHandler) -> Option<u64> {
        if self.is_user_msr(m) {
            return io.msr_read(self.index, m);
        }
        Some(match m {
            msr::TSC => {
                self.now_ns = self.shared.clock.now_ns();
                self.tsc_fast()
            }
            msr::PLATFORM_ID => 0,
            msr::TSC_ADJUST => self.msr.tsc_adjust,
            msr::APIC_BASE => self.apic.base_msr,
            msr::UCODE_REV => 0x1_0000_0000,
            msr::ARCH_CAPABILITIES => ARCH_CAP,
            msr::MTRRCAP => 0x508,
            msr::SYSENTER_CS => self.msr.sysenter_cs,
            msr::SYSENTER_ESP => self.msr.sysenter_esp,
            msr::SYSENTER_EIP => self.msr.sysenter_eip,
            msr::MISC_ENABLE => self.msr.misc_enable,
            msr::PAT => self.msr.pat,
            msr::MTRR_DEF_TYPE => self.msr.mtrr_def_type,
            msr::TSC_DEADLINE => self.apic.tsc_deadline,
            msr::EFER => self.efer,
            msr::STAR => self.msr.star,
            msr::LSTAR => self.msr.lstar,
            msr::CSTAR => self.msr.cstar,
            msr::SFMASK => self.msr.sfmask,
            msr::FS_BASE => self.seg[FS].base,
            msr::GS_BASE => self.seg[GS].base,
            msr::KERNEL_GS_BASE => self.msr.kernel_gs_base,
            msr::TSC_AUX => self.msr.tsc_aux,
            0x800..=0x8ff => return self.x2apic_read(m),
            _ if Self::mtrr_msr(m) => self.msr.mtrr.iter().find(|e| e.0 == m).map_or(0, |e| e.1),
            _ => return io.msr_read(self.index, m),
        })
    }

    /// WRMSR; `false` raises #GP.
    pub(crate) fn wrmsr(&mut self, m: u32, v: u64, io: &dyn ExitHandler) -> bool {
        if self.is_user_msr(m) {
            return io.msr_write(self.index, m, v);
        }
        let canonical = ((v << 16) as i64 >> 16) as u64 == v;
        match m {
            msr::TSC => {
                // Writing the TSC moves TSC_ADJUST by the same amount (SDM 17.17.3).
                let now = self.tsc() as i128;
                let delta = i128::from(v) - now;
                self.tsc_offset += delta;
                self.msr.tsc_adjust = self.msr.tsc_adjust.wrapping_add(delta as u64);
                self.tsc_last = 0;
            }
            msr::TSC_ADJUST => {
                let delta = i128::from(v as i64) - i128::from(self.msr.tsc_adjust as i64);
                self.tsc_offset += delta;
                self.msr.tsc_adjust = v;
                self.tsc_last = 0;
            }
            msr::PLATFORM_ID | msr::UCODE_REV => {}
            msr::APIC_BASE => return self.apic_base_write(v),
            msr::SYSENTER_CS => self.msr.sysenter_cs = v & 0xffff,
            msr::SYSENTER_ESP => {
                if !canonical {
                    return false;
                }
                self.msr.sysenter_esp = v;
            }
            msr::SYSENTER_EIP => {
                if !canonical {
                    return false;
                }
                self.msr.sysenter_eip = v;
            }
            msr::MISC_ENABLE => self.msr.misc_enable = v,
            msr::PAT => {
                // Each byte must be a valid memory type (0, 1, 4, 5, 6, 7).
                if (0..8).any(|i| matches!((v >> (8 * i)) & 0xff, 2 | 3 | 8..)) {
                    return false;
                }
                self.msr.pat = v;
            }
            msr::MTRR_DEF_TYPE => self.msr.mtrr_def_type = v,
            msr::TSC_DEADLINE => {
                tracing::trace!(v, "tsc deadline");
                self.apic_tsc_deadline_write(v)
            }
            msr::EFER => return self.write_efer(v),
            msr::STAR => self.msr.star = v,
            msr::LSTAR => {
                if !canonical {
                    return false;
                }
                self.msr.lstar = v;
            }
            msr::CSTAR => {
                if !canonical {
                    return false;
                }
                self.msr.cstar = v;
            }
            msr::SFMASK => self.msr.sfmask = v & 0xffff_ffff,
            msr::FS_BASE | msr::GS_BASE => {
                if !canonical {
                    return false;
                }
                let i = if m == msr::FS_BASE { FS } else { GS };
                self.seg[i].base = v;
                self.update_seg_cache(i);
            }
            msr::KERNEL_GS_BASE => {
                if !canonical {
                    return false;
                }
                self.msr.kernel_gs_base = v;
            }
            msr::TSC_AUX => self.msr.tsc_aux = v & 0xffff_ffff,
            0x800..=0x8ff => return self.x2apic_write(m, v, io),
            _ if Self::mtrr_msr(m) => {
                if let Some(e) = self.msr.mtrr.iter_mut().find(|e| e.0 == m) {
                    e.1 = v;
                } else {
                    self.msr.mtrr.push((m, v));
                }
            }
            _ => return io.msr_write(self.index, m, v),
        }
        true
    }

    fn write_efer(&mut self, v: u64) -> bool {
        let nx = self.cpuid.lookup(0x8000_0001, 0)[3] & (1 << 20) != 0;
        let lm = self.cpuid.lookup(0x8000_0001, 0)[3] & (1 << 29) != 0;
        let mut allowed = EFER_SCE;
        if nx {
            allowed |= EFER_NXE;
        }
        if lm {
            allowed |= EFER_LME | EFER_LMA;
        }
        if v & !allowed != 0 {
            return false;
        }
        // LME cannot change while paging is on.
        if self.cr0 & CR0_PG != 0 && (v ^ self.efer) & EFER_LME != 0 {
            return false;
        }
        let lma = self.efer & EFER_LMA;
        self.efer = (v & !EFER_LMA) | lma;
        self.tlb.flush_all();
        self.exit_req = true;
        true
    }

    /// Checks I/O permission for `len` bytes at `port` (IOPL, then the TSS bitmap).
    pub(crate) fn io_check(&mut self, port: u16, len: u16, io: &dyn ExitHandler) -> Result<(), Ex> {
        if self.mode == Mode::Real
            || (u64::from(self.cpl) <= self.iopl() && self.flags & flags::VM == 0)
        {
            return Ok(());
        }
        let tr = self.seg[TR];
        let ty = tr.attributes & 0xf;
        if tr.attributes & 0x80 == 0 || ty & 8 == 0 || tr.limit < 0x67 {
            return gp0();
        }
        let base = self.read_sys::<W>(tr.base.wrapping_add(0x66) & self.lin_mask, io)?;
        let off = base + u64::from(port / 8);
        if off + 1 > u64::from(tr.limit) {
            return gp0();
        }
        let bits = self.read_sys::<W>(tr.base.wrapping_add(off) & self.lin_mask, io)?;
        let mask = ((1u64 << len) - 1) << (port % 8);
        if bits & mask != 0 {
            return gp0();
        }
        Ok(())
    }

    /// IN: `size` bytes from `port`.
    pub(crate) fn port_in(&mut self, port: u16, size: usize, io: &dyn ExitHandler) -> u64 {
        let mut buf = [0u8; 4];
        io.pio_read(self.index, port, &mut buf[..size]);
        u64::from(u32::from_le_bytes(buf))
    }

    /// OUT: `size` bytes to `port`.
    pub(crate) fn port_out(&mut self, port: u16, size: usize, v: u64, io: &dyn ExitHandler) {
        let b = (v as u32).to_le_bytes();
        io.pio_write(self.index, port, &b[..size]);
    }

    /// Requires CPL 0.
    #[inline]
    pub(crate) fn require_cpl0(&self) -> Result<(), Ex> {
        if self.cpl != 0 {
            return gp0();
        }
        Ok(())
    }

    /// MOV to CR0 (also LMSW and CLTS through it).
    pub(crate) fn write_cr0(&mut self, v: u64) -> Result<(), Ex> {
        if v >> 32 != 0 {
            return gp0();
        }
        let v = v | CR0_ET;
        if v & CR0_PG != 0 && v & CR0_PE == 0 {
            return gp0();
        }
        if v & CR0_NW != 0 && v & CR0_CD == 0 {
            return gp0();
        }
        let old = self.cr0;
        let pg_on = v & CR0_PG != 0 && old & CR0_PG == 0;
        let pg_off = v & CR0_PG == 0 && old & CR0_PG != 0;
        if pg_on && self.efer & EFER_LME != 0 {
            if self.cr4 & CR4_PAE == 0 {
                return gp0();
            }
            if self.seg[CS].long() {
                return gp0();
            }
            self.efer |= EFER_LMA;
        }
        if pg_off && self.efer & EFER_LMA != 0 {
            if self.mode == Mode::Long {
                return gp0();
            }
            self.efer &= !EFER_LMA;
        }
        self.cr0 = v;
        if (old ^ v) & (CR0_PG | CR0_WP | CR0_PE) != 0 {
            self.tlb.flush_all();
        }
        self.update_mode();
        self.exit_req = true;
        Ok(())
    }

    pub(crate) fn write_cr3(&mut self, v: u64) -> Result<(), Ex> {
        let v = if self.efer & EFER_LMA != 0 {
            if v >> 52 != 0 {
                return gp0();
            }
            v
        } else {
            v & 0xffff_ffff
        };
        self.cr3 = v;
        self.tlb.flush_nonglobal();
        self.exit_req = true;
        Ok(())
    }

    pub(crate) fn write_cr4(&mut self, v: u64) -> Result<(), Ex> {
        if v & !CR4_SUPPORTED != 0 {
            return gp0();
        }
        if self.efer & EFER_LMA != 0 && v & CR4_PAE == 0 {
            return gp0();
        }
        // Only features CPUID advertises may be enabled.
        let l1 = self.cpuid.lookup(1, 0);
        let l7 = self.cpuid.lookup(7, 0);
        let need = [
            (CR4_PGE, l1[3] & (1 << 13) != 0),
            (CR4_PSE, l1[3] & (1 << 3) != 0),
            (CR4_PAE, l1[3] & (1 << 6) != 0),
            (CR4_OSFXSR, l1[3] & (1 << 24) != 0),
            (CR4_FSGSBASE, l7[1] & 1 != 0),
            (CR4_VME, l1[3] & (1 << 1) != 0),
            (CR4_PVI, l1[3] & (1 << 1) != 0),
            (CR4_DE, l1[3] & (1 << 2) != 0),
            (CR4_MCE, l1[3] & (1 << 7) != 0),
            (CR4_UMIP, l7[2] & (1 << 2) != 0),
        ];
        for (bit, ok) in need {
            if v & bit != 0 && !ok {
                return gp0();
            }
        }
        let old = self.cr4;
        self.cr4 = v;
        if (old ^ v) & (CR4_PGE | CR4_PAE | CR4_PSE) != 0 {
            self.tlb.flush_all();
        }
        self.exit_req = true;
        Ok(())
    }
}

/// MOV CRn, reg (`x` = n).
pub(crate) fn mov_to_cr(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    c.require_cpl0()?;
    let v = if c.mode == Mode::Long {
        c.regs[op.rm as usize & 15]
    } else {
        c.regs[op.rm as usize & 15] & 0xffff_ffff
    };
    match op.x {
        0 => c.write_cr0(v),
        2 => {
            c.cr2 = v;
            Ok(())
        }
        3 => c.write_cr3(v),
        4 => c.write_cr4(v),
        8 => {
            if v >> 4 != 0 {
                return gp0();
            }
            c.apic.set_tpr_from_cr8(v);
            c.events_changed();
            Ok(())
        }
        _ => ud(),
    }
}

/// MOV reg, CRn.
pub(crate) fn mov_from_cr(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    c.require_cpl0()?;
    let v = match op.x {
        0 => c.cr0,
        2 => c.cr2,
        3 => c.cr3,
        4 => c.cr4,
        8 => c.apic.cr8(),
        _ => return ud(),
    };
    if c.mode == Mode::Long {
        c.regs[op.rm as usize & 15] = v;
    } else {
        c.regs[op.rm as usize & 15] = v & 0xffff_ffff;
    }
    Ok(())
}

/// MOV DRn, reg.
pub(crate) fn mov_to_dr(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    c.require_cpl0()?;
    let mut n = op.x as usize & 7;
    if n == 4 || n == 5 {
        if c.cr4 & CR4_DE != 0 {
            return ud();
        }
        n += 2;
    }
    let v = c.regs[op.rm as usize & 15];
    let v = if c.mode == Mode::Long {
        v
    } else {
        v & 0xffff_ffff
    };
    match n {
        6 => c.dr[6] = (v & 0xe00f) | 0xffff_0ff0,
        7 => {
            if v & 0xff != 0 {
                tracing::debug!(
                    dr7 = v,
                    "hardware breakpoints are not implemented; DR7 stored only"
                );
            }
            c.dr[7] = (v & 0xffff_2bff) | 0x400;
        }
        _ => c.dr[n] = v,
    }
    Ok(())
}

/// MOV reg, DRn.
pub(crate) fn mov_from_dr(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    c.require_cpl0()?;
    let mut n = op.x as usize & 7;
    if n == 4 || n == 5 {
        if c.cr4 & CR4_DE != 0 {
            return ud();
        }
        n += 2;
    }
    let v = c.dr[n];
    c.regs[op.rm as usize & 15] = if c.mode == Mode::Long {
        v
    } else {
        v & 0xffff_ffff
    };
    Ok(())
}

pub(crate) fn rdmsr_op(c: &mut Cpu, _: &Op, io: &dyn ExitHandler) -> Res {
    c.require_cpl0()?;
    let m = c.regs[1] as u32;
    let Some(v) = c.rdmsr(m, io) else {
        tracing::debug!(msr = format_args!("{m:#x}"), "rdmsr: #GP");
        return gp0();
    };
    c.regs[0] = v & 0xffff_ffff;
    c.regs[2] = v >> 32;
    Ok(())
}

pub(crate) fn wrmsr_op(c: &mut Cpu, _: &Op, io: &dyn ExitHandler) -> Res {
    c.require_cpl0()?;
    let m = c.regs[1] as u32;
    let v = (c.regs[0] & 0xffff_ffff) | (c.regs[2] << 32);
    if !c.wrmsr(m, v, io) {
        tracing::debug!(msr = format_args!("{m:#x}"), value = v, "wrmsr: #GP");
        return gp0();
    }
    c.exit_req = true;
    Ok(())
}

pub(crate) fn cpuid_op(c: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    let leaf = c.regs[0] as u32;
    let sub = c.regs[1] as u32;
    let mut r = c.cpuid.lookup(leaf, sub);
    if leaf == 1 {
        // Dynamic bits: APIC present only while the APIC is globally enabled.
        if !c.apic.hw_enabled() {
            r[3] &= !(1 << 9);
        }
    }
    for (i, v) in r.iter().enumerate() {
        c.regs[[0, 3, 1, 2][i]] = u64::from(*v);
    }
    // CPUID serializes: a cheap moment to notice cross-modifying code.
    c.exit_req = true;
    Ok(())
}

pub(crate) fn rdtsc(c: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    if c.cr4 & CR4_TSD != 0 && c.cpl != 0 {
        return gp0();
    }
    let t = c.tsc_fast();
    c.regs[0] = t & 0xffff_ffff;
    c.regs[2] = t >> 32;
    Ok(())
}

pub(crate) fn rdtscp(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    rdtsc(c, op, io)?;
    c.regs[1] = c.msr.tsc_aux & 0xffff_ffff;
    Ok(())
}

pub(crate) fn hlt(c: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    c.require_cpl0()?;
    Err(Ex::Halt)
}

/// CLI (x=0) / STI (x=1).
pub(crate) fn cli_sti(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    if c.mode != Mode::Real && u64::from(c.cpl) > c.iopl() {
        return gp0();
    }
    if op.x == 0 {
        c.flags &= !flags::IF;
    } else if c.flags & flags::IF == 0 {
        c.flags |= flags::IF;
        c.shadow = true;
        c.events_changed();
    }
    Ok(())
}

/// IN AL/AX/EAX, imm8 (x2=1) or DX.
pub(crate) fn in_op<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let port = if op.x2 != 0 {
        op.imm as u16
    } else {
        c.regs[2] as u16
    };
    c.io_check(port, S::BYTES as u16, io)?;
    let v = c.port_in(port, S::BYTES as usize, io);
    S::set(c, 0, v);
    Ok(())
}

/// OUT imm8 (x2=1) or DX, AL/AX/EAX.
pub(crate) fn out_op<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let port = if op.x2 != 0 {
        op.imm as u16
    } else {
        c.regs[2] as u16
    };
    c.io_check(port, S::BYTES as u16, io)?;
    let v = S::get(c, 0);
    c.port_out(port, S::BYTES as usize, v, io);
    // A port write can raise an interrupt or stop the VM: look at events soon.
    c.countdown = c.countdown.min(1);
    Ok(())
}

/// LGDT (x=0) / LIDT (x=1); operand size in `x2` (2, 4, 8).
pub(crate) fn lgdt_lidt(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    c.require_cpl0()?;
    let lin = c.lin_r::<W>(op)?;
    let limit = c.read::<W>(lin, io)? as u16;
    let lin2 = c.lin_off_r(
        op.seg,
        c.ea(op).wrapping_add(2) & crate::mmu::AMASK[op.asz as usize & 3],
        4,
    )?;
    let base = if c.mode == Mode::Long {
        let l8 = c.lin_off_r(op.seg, c.ea(op).wrapping_add(2), 8)?;
        let b = c.read::<Q>(l8, io)?;
        if ((b << 16) as i64 >> 16) as u64 != b {
            return gp0();
        }
        b
    } else {
        let b = c.read::<D>(lin2, io)?;
        if op.x2 == 2 { b & 0xff_ffff } else { b }
    };
    let t = virt::TableRegister { base, limit };
    if op.x == 0 {
        c.gdtr = t;
    } else {
        c.idtr = t;
    }
    Ok(())
}

/// SGDT (x=0) / SIDT (x=1).
pub(crate) fn sgdt_sidt(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let t = if op.x == 0 { c.gdtr } else { c.idtr };
    let ea = c.ea(op);
    let am = crate::mmu::AMASK[op.asz as usize & 3];
    let blen = if c.mode == Mode::Long { 8 } else { 4 };
    let l1 = c.lin_off_w(op.seg, ea, 2)?;
    let l2 = c.lin_off_w(op.seg, ea.wrapping_add(2) & am, blen)?;
    // Check both parts before writing.
    c.translate(l2, crate::mmu::Access::Write, c.tlb_sel != 0, io)?;
    c.write::<W>(l1, u64::from(t.limit), io)?;
    if blen == 8 {
        c.write::<Q>(l2, t.base, io)
    } else {
        c.write::<D>(l2, t.base & 0xffff_ffff, io)
    }
}

/// SLDT (x=0) / STR (x=1) r/m.
pub(crate) fn sldt_str<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    if c.mode == Mode::Real {
        return ud();
    }
    let v = u64::from(c.seg[if op.x == 0 { LDTR } else { TR }].selector);
    set_rm::<S, X>(c, op, v, io)
}

/// LLDT (x=0) / LTR (x=1) r/m16.
pub(crate) fn lldt_ltr<X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    if c.mode == Mode::Real {
        return ud();
    }
    c.require_cpl0()?;
    let sel = get_rm::<W, X>(c, op, io)? as u16;
    if op.x == 0 {
        c.lldt(sel, io)
    } else {
        c.ltr(sel, io)
    }
}

/// SMSW r/m.
pub(crate) fn smsw<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let v = c.cr0 & S::MASK;
    set_rm::<S, X>(c, op, v, io)
}

/// LMSW r/m16: loads PE, MP, EM, TS; cannot clear PE.
pub(crate) fn lmsw<X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    c.require_cpl0()?;
    let v = get_rm::<W, X>(c, op, io)?;
    let new = (c.cr0 & !0xe) | (v & 0xf) | (c.cr0 & CR0_PE);
    c.write_cr0(new)
}

pub(crate) fn clts(c: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    c.require_cpl0()?;
    c.cr0 &= !CR0_TS;
    Ok(())
}

pub(crate) fn invlpg(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    c.require_cpl0()?;
    let ea = c.ea(op);
    let lin = ea.wrapping_add(c.seg_base[op.seg as usize & 7]) & c.lin_mask;
    c.tlb.flush_page(lin);
    c.exit_req = true;
    Ok(())
}

/// WBINVD / INVD: caches are coherent here; privilege check only.
pub(crate) fn wbinvd(c: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    c.require_cpl0()
}

/// CLFLUSH / CLFLUSHOPT / CLWB: checks the address is accessible, nothing else.
pub(crate) fn clflush(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let lin = c.lin_r::<B>(op)?;
    c.read::<B>(lin, io)?;
    Ok(())
}

/// MFENCE: orders this processor's earlier stores before its later loads.
pub(crate) fn mfence(_: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    std::sync::atomic::fence(Ordering::SeqCst);
    Ok(())
}

pub(crate) fn swapgs(c: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    if c.mode != Mode::Long {
        return ud();
    }
    c.require_cpl0()?;
    std::mem::swap(&mut c.seg[GS].base, &mut c.msr.kernel_gs_base);
    c.update_seg_cache(GS);
    Ok(())
}

pub(crate) fn syscall(c: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    if c.efer & EFER_SCE == 0 || c.mode != Mode::Long {
        return ud();
    }
    let next = c.regs[RIP];
    let f = c.rflags();
    c.regs[1] = next;
    c.regs[11] = f & !flags::RF;
    let sel = ((c.msr.star >> 32) & 0xfffc) as u16;
    c.seg[CS] = SegmentRegister::flat(sel, 0xa09b);
    c.seg[SS] = SegmentRegister::flat(sel.wrapping_add(8), 0xc093);
    c.set_rflags_raw(f & !c.msr.sfmask & !flags::RF);
    c.regs[RIP] = c.msr.lstar;
    c.update_mode();
    c.exit_req = true;
    Ok(())
}

/// SYSRET; `x` = 1 with REX.W (return to 64-bit mode).
pub(crate) fn sysret(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    if c.efer & EFER_SCE == 0 || c.mode != Mode::Long {
        return ud();
    }
    c.require_cpl0()?;
    let base = ((c.msr.star >> 48) & 0xffff) as u16;
    let rip = c.regs[1];
    if op.x == 1 {
        if ((rip << 16) as i64 >> 16) as u64 != rip {
            return gp0();
        }
        c.seg[CS] = SegmentRegister::flat(base.wrapping_add(16) | 3, 0xa0fb);
        c.regs[RIP] = rip;
    } else {
        c.seg[CS] = SegmentRegister::flat(base | 3, 0xc0fb);
        c.regs[RIP] = rip & 0xffff_ffff;
    }
    c.seg[SS] = SegmentRegister::flat(base.wrapping_add(8) | 3, 0xc0f3);
    let f = (c.regs[11] & 0x3c_7fd7) | 2;
    c.set_rflags_raw(f);
    c.update_mode();
    c.events_changed();
    Ok(())
}

pub(crate) fn sysenter(c: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    if c.mode == Mode::Real || c.msr.sysenter_cs & 0xfffc == 0 {
        return gp0();
    }
    let sel = (c.msr.sysenter_cs & 0xfffc) as u16;
    let lma = c.efer & EFER_LMA != 0;
    c.flags &= !(flags::VM | flags::IF | flags::RF);
    c.seg[CS] = SegmentRegister::flat(sel, if lma { 0xa09b } else { 0xc09b });
    c.seg[SS] = SegmentRegister::flat(sel.wrapping_add(8), 0xc093);
    c.regs[4] = if lma {
        c.msr.sysenter_esp
    } else {
        c.msr.sysenter_esp & 0xffff_ffff
    };
    c.regs[RIP] = if lma {
        c.msr.sysenter_eip
    } else {
        c.msr.sysenter_eip & 0xffff_ffff
    };
    c.update_mode();
    c.exit_req = true;
    Ok(())
}

/// SYSEXIT; `x` = 1 with REX.W.
pub(crate) fn sysexit(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    if c.mode == Mode::Real || c.msr.sysenter_cs & 0xfffc == 0 {
        return gp0();
    }
    c.require_cpl0()?;
    let base = (c.msr.sysenter_cs & 0xfffc) as u16;
    if op.x == 1 {
        let (rip, rsp) = (c.regs[2], c.regs[1]);
        if ((rip << 16) as i64 >> 16) as u64 != rip || ((rsp << 16) as i64 >> 16) as u64 != rsp {
            return gp0();
        }
        c.seg[CS] = SegmentRegister::flat(base.wrapping_add(32) | 3, 0xa0fb);
        c.seg[SS] = SegmentRegister::flat(base.wrapping_add(40) | 3, 0xc0f3);
        c.regs[4] = rsp;
        c.regs[RIP] = rip;
    } else {
        c.seg[CS] = SegmentRegister::flat(base.wrapping_add(16) | 3, 0xc0fb);
        c.seg[SS] = SegmentRegister::flat(base.wrapping_add(24) | 3, 0xc0f3);
        c.regs[4] = c.regs[1] & 0xffff_ffff;
        c.regs[RIP] = c.regs[2] & 0xffff_ffff;
    }
    c.update_mode();
    c.exit_req = true;
    Ok(())
}

/// MOV Sreg, r/m16 (`x` = segment index).
pub(crate) fn mov_sreg<X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let sel = get_rm::<W, X>(c, op, io)? as u16;
    let i = op.x as usize;
    c.load_seg(i, sel, io)?;
    if i == SS {
        c.shadow = true;
        c.events_changed();
    }
    Ok(())
}

/// MOV r/m, Sreg (register destinations are zero-extended to the operand size).
pub(crate) fn mov_from_sreg<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let v = u64::from(c.seg[op.x as usize & 7].selector);
    if X::MEM {
        set_rm::<W, X>(c, op, v, io)
    } else {
        S::set(c, op.rm, v);
        Ok(())
    }
}

/// PUSH Sreg.
pub(crate) fn push_sreg<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let v = u64::from(c.seg[op.x as usize & 7].selector);
    c.push::<S>(v, io)
}

/// POP Sreg.
pub(crate) fn pop_sreg<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let v = c.stack_peek::<S>(0, io)?;
    let i = op.x as usize;
    c.load_seg(i, v as u16, io)?;
    c.sp_add(S::BYTES);
    if i == SS {
        c.shadow = true;
        c.events_changed();
    }
    Ok(())
}

/// LDS/LES/LFS/LGS/LSS reg, m16:S (`x` = segment index).
pub(crate) fn load_far_ptr<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let off = c.read_op::<S>(op, io)?;
    let ea = c.ea(op).wrapping_add(S::BYTES) & crate::mmu::AMASK[op.asz as usize & 3];
    let lin = c.lin_off_r(op.seg, ea, 2)?;
    let sel = c.read::<W>(lin, io)? as u16;
    let i = op.x as usize;
    c.load_seg(i, sel, io)?;
    S::set(c, op.r, off);
    if i == SS {
        c.shadow = true;
        c.events_changed();
    }
    Ok(())
}

/// JMP ptr16:16/32 (selector in `disp`, offset in `imm`).
pub(crate) fn jmp_far_direct(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    c.far_jmp(op.disp as u16, op.imm, io)
}

/// CALL ptr16:16/32; operand size in `x`.
pub(crate) fn call_far_direct(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    c.far_call(op.disp as u16, op.imm, op.x, io)
}

fn read_far_ptr<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Result<(u16, u64), Ex> {
    let off = c.read_op::<S>(op, io)?;
    let ea = c.ea(op).wrapping_add(S::BYTES) & crate::mmu::AMASK[op.asz as usize & 3];
    let lin = c.lin_off_r(op.seg, ea, 2)?;
    let sel = c.read::<W>(lin, io)? as u16;
    Ok((sel, off))
}

/// JMP m16:S.
pub(crate) fn jmp_far_mem<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let (sel, off) = read_far_ptr::<S>(c, op, io)?;
    c.far_jmp(sel, off, io)
}

/// CALL m16:S.
pub(crate) fn call_far_mem<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let (sel, off) = read_far_ptr::<S>(c, op, io)?;
    c.far_call(sel, off, S::BYTES as u8, io)
}

/// RETF [imm16].
pub(crate) fn retf<S: Sz>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    c.far_ret(S::BYTES as u8, op.imm & 0xffff, io)
}

/// LAR (x=0) / LSL (x=1) reg, r/m16.
pub(crate) fn lar_lsl<S: Sz, X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    if c.mode == Mode::Real {
        return ud();
    }
    let sel = get_rm::<W, X>(c, op, io)? as u16;
    let d = c.desc_query(sel, op.x, io)?;
    let mut f = c.status_flags() & !flags::ZF;
    if let Some(d) = d {
        let v = if op.x == 0 {
            (d.0 >> 32) & 0x00f0_ff00
        } else {
            u64::from(d.limit())
        };
        S::set(c, op.r, v & S::MASK);
        f |= flags::ZF;
    }
    c.set_status_flags(f);
    Ok(())
}

/// VERR (x=2) / VERW (x=3) r/m16.
pub(crate) fn verr_verw<X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    if c.mode == Mode::Real {
        return ud();
    }
    let sel = get_rm::<W, X>(c, op, io)? as u16;
    let ok = c.desc_query(sel, op.x, io)?.is_some();
    let f = (c.status_flags() & !flags::ZF) | if ok { flags::ZF } else { 0 };
    c.set_status_flags(f);
    Ok(())
}

/// ARPL r/m16, r16.
pub(crate) fn arpl<X: Rm>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    if c.mode == Mode::Real {
        return ud();
    }
    let src = W::get(c, op.r);
    let mut zf = false;
    super::rmw::<W, X>(c, op, io, |_, d| {
        if d & 3 < src & 3 {
            zf = true;
            (d & !3) | (src & 3)
        } else {
            d
        }
    })?;
    let f = (c.status_flags() & !flags::ZF) | if zf { flags::ZF } else { 0 };
    c.set_status_flags(f);
    Ok(())
}

/// VMCALL / VMMCALL: a hypercall to the machine (CPL 0 only, else #UD as KVM does).
pub(crate) fn vmcall(c: &mut Cpu, _: &Op, io: &dyn ExitHandler) -> Res {
    if c.cpl != 0 || c.mode == Mode::Real {
        return ud();
    }
    let input = HypercallInput {
        control: c.regs[1],
        input: c.regs[2],
        output: c.regs[8],
    };
    c.regs[0] = io.hypercall(c.index, input);
    c.exit_req = true;
    Ok(())
}

/// RDPMC: no performance counters are implemented; #GP as a CPU without them.
pub(crate) fn rdpmc(_: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    gp0()
}

/// UD2 and friends.
pub(crate) fn ud2(_: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    ud()
}
