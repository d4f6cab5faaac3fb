//! Architectural state of one virtual processor and the helpers every handler uses.

use std::sync::Arc;

use guest_mem::GuestMemory;
use virt::CpuidTable;
use virt::SegmentRegister;
use virt::TableRegister;

use crate::apic::LocalApic;
use crate::fpu::Fpu;
use crate::mmu::Tlb;
use crate::partition::Shared;

/// Index of the next-instruction pointer in [`Cpu::regs`] (RIP-relative addressing reads it).
pub(crate) const RIP: usize = 16;
/// A register that always reads zero (absent base/index in an effective address).
pub(crate) const ZERO: u8 = 17;

/// Segment register indices (x86 encoding order), then LDTR and TR.
pub(crate) const ES: usize = 0;
pub(crate) const CS: usize = 1;
pub(crate) const SS: usize = 2;
pub(crate) const DS: usize = 3;
pub(crate) const FS: usize = 4;
pub(crate) const GS: usize = 5;
pub(crate) const LDTR: usize = 6;
pub(crate) const TR: usize = 7;
/// "No segment": base 0, no limit (used for addresses that are already linear).
pub(crate) const SEG_NONE: u8 = 6;

pub(crate) const CR0_PE: u64 = 1 << 0;
pub(crate) const CR0_MP: u64 = 1 << 1;
pub(crate) const CR0_EM: u64 = 1 << 2;
pub(crate) const CR0_TS: u64 = 1 << 3;
pub(crate) const CR0_ET: u64 = 1 << 4;
pub(crate) const CR0_WP: u64 = 1 << 16;
pub(crate) const CR0_NW: u64 = 1 << 29;
pub(crate) const CR0_CD: u64 = 1 << 30;
pub(crate) const CR0_PG: u64 = 1 << 31;

pub(crate) const CR4_VME: u64 = 1 << 0;
pub(crate) const CR4_PVI: u64 = 1 << 1;
pub(crate) const CR4_TSD: u64 = 1 << 2;
pub(crate) const CR4_DE: u64 = 1 << 3;
pub(crate) const CR4_PSE: u64 = 1 << 4;
pub(crate) const CR4_PAE: u64 = 1 << 5;
pub(crate) const CR4_MCE: u64 = 1 << 6;
pub(crate) const CR4_PGE: u64 = 1 << 7;
pub(crate) const CR4_PCE: u64 = 1 << 8;
pub(crate) const CR4_OSFXSR: u64 = 1 << 9;
pub(crate) const CR4_OSXMMEXCPT: u64 = 1 << 10;
pub(crate) const CR4_UMIP: u64 = 1 << 11;
pub(crate) const CR4_FSGSBASE: u64 = 1 << 16;
/// CR4 bits this CPU accepts.
pub(crate) const CR4_SUPPORTED: u64 = CR4_VME
    | CR4_PVI
    | CR4_TSD
    | CR4_DE
    | CR4_PSE
    | CR4_PAE
    | CR4_MCE
    | CR4_PGE
    | CR4_PCE
    | CR4_OSFXSR
    | CR4_OSXMMEXCPT
    | CR4_UMIP
    | CR4_FSGSBASE;

pub(crate) const EFER_SCE: u64 = 1 << 0;
pub(crate) const EFER_LME: u64 = 1 << 8;
pub(crate) const EFER_LMA: u64 = 1 << 10;
pub(crate) const EFER_NXE: u64 = 1 << 11;

/// Exception vectors.
pub(crate) const DE: u8 = 0;
pub(crate) const DB: u8 = 1;
pub(crate) const NMI: u8 = 2;
pub(crate) const BP: u8 = 3;
pub(crate) const OFV: u8 = 4;
pub(crate) const UD: u8 = 6;
pub(crate) const NM: u8 = 7;
pub(crate) const DF: u8 = 8;
pub(crate) const TS: u8 = 10;
pub(crate) const NP: u8 = 11;
pub(crate) const SSF: u8 = 12;
pub(crate) const GP: u8 = 13;
pub(crate) const PF: u8 = 14;

/// How a handler leaves the normal flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ex {
    /// An exception: vector and error code (ignored for vectors without one). RIP is rolled
    /// back to the faulting instruction.
    Fault(u8, u32),
    /// HLT retired (RIP is past it).
    Halt,
    /// Run this instruction again later (RIP rolled back, nothing delivered): REP yields.
    Restart,
    /// Shutdown (triple fault).
    Shutdown,
    /// A state the backend cannot continue from; the message is in `Cpu::internal`.
    Internal,
}

/// Handler result.
pub(crate) type Res = Result<(), Ex>;

#[inline(always)]
pub(crate) fn gp0<T>() -> Result<T, Ex> {
    Err(Ex::Fault(GP, 0))
}
#[inline(always)]
pub(crate) fn ud<T>() -> Result<T, Ex> {
    Err(Ex::Fault(UD, 0))
}

/// Processor operating mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Real,
    Protected,
    /// IA-32e compatibility mode (LMA=1, CS.L=0).
    Compat,
    /// 64-bit mode.
    Long,
}

/// Architectural MSRs the CPU owns.
#[derive(Debug, Clone, Default)]
pub(crate) struct Msrs {
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub pat: u64,
    pub tsc_aux: u64,
    pub misc_enable: u64,
    pub mtrr_def_type: u64,
    pub mtrr: Vec<(u32, u64)>,
    pub tsc_adjust: u64,
}

/// One virtual processor's complete state.
pub struct Cpu {
    // Hot state first: registers, lazy flags, segment fast-path caches, the TLB selector.
    /// GPRs 0..16, then `RIP` (next instruction while executing), `ZERO`, and padding so any
    /// `u8 & 31` index is in bounds.
    pub(crate) regs: [u64; 32],
    pub(crate) lf_res: u64,
    pub(crate) lf_aux: u64,
    /// RFLAGS except the six status flags.
    pub(crate) flags: u64,
    /// Effective segment bases (0 for ES/CS/SS/DS in 64-bit mode), then 0 for `SEG_NONE`.
    pub(crate) seg_base: [u64; 8],
    /// Exclusive end of the offsets a read may touch without a full segment check.
    pub(crate) seg_rlim: [u64; 8],
    /// Same for writes.
    pub(crate) seg_wlim: [u64; 8],
    /// Linear addresses wrap at 4 GiB outside 64-bit mode.
    pub(crate) lin_mask: u64,
    /// The instruction pointer's width (IP, EIP or RIP).
    pub(crate) ip_mask: u64,
    /// Stack pointer width mask (SS.B, or 64-bit mode).
    pub(crate) sp_mask: u64,
    /// Offset of the current privilege level's half of the TLB.
    pub(crate) tlb_sel: usize,
    /// End the current block after this instruction.
    pub(crate) exit_req: bool,
    /// Bytes of a fused op that retired before it faulted (see `exec::fused`): the fault is
    /// reported at `start + fault_skip`. Zero except on that error path.
    pub(crate) fault_skip: u8,
    /// This processor stored into a page holding decoded code: look blocks up afresh.
    pub(crate) smc: bool,
    /// The code epoch of guest memory when last checked (see `Vp::events`).
    pub(crate) seen_code_epoch: u64,
    /// Blocks left before the next event check (interrupts, timers, stop requests).
    pub(crate) countdown: i32,
    pub(crate) tlb: Tlb,
    pub(crate) mem: GuestMemory,

    // Architectural state.
    pub(crate) seg: [SegmentRegister; 8],
    pub(crate) gdtr: TableRegister,
    pub(crate) idtr: TableRegister,
    pub(crate) cr0: u64,
    pub(crate) cr2: u64,
    pub(crate) cr3: u64,
    pub(crate) cr4: u64,
    pub(crate) efer: u64,
    pub(crate) dr: [u64; 8],
    pub(crate) xcr0: u64,
    pub(crate) cpl: u8,
    pub(crate) mode: Mode,
    /// Decode bitness of the current code segment (16, 32, 64).
    pub(crate) bitness: u32,
    /// CS limit for instruction fetch (inclusive), `u64::MAX` in 64-bit mode.
    pub(crate) cs_limit: u64,
    pub(crate) msr: Msrs,
    pub(crate) tsc_offset: i128,
    /// VM time (ns) as of the last event check: RDTSC's time base.
    pub(crate) now_ns: u64,
    /// Last value RDTSC returned (it never goes backward or repeats).
    pub(crate) tsc_last: u64,
    pub(crate) fpu: Box<Fpu>,
    pub(crate) cpuid: CpuidTable,

    // Event state.
    /// Interrupts are inhibited for one instruction (after STI, MOV SS, POP SS).
    pub(crate) shadow: bool,
    /// NMIs are blocked until the next IRET.
    pub(crate) nmi_blocked: bool,
    pub(crate) halted: bool,
    pub(crate) wait_for_sipi: bool,
    pub(crate) apic: LocalApic,

    // Bookkeeping.
    pub(crate) index: u32,
    pub(crate) shared: Arc<Shared>,
    /// Guest instructions retired.
    pub(crate) icount: u64,
    /// Message for `Ex::Internal`.
    pub(crate) internal: String,
    /// Unimplemented instructions seen (#UD raised for them).
    pub(crate) unimplemented: u64,
}

impl Cpu {
    /// A processor in the RESET state.
    pub(crate) fn new(shared: Arc<Shared>, index: u32, cpuid: CpuidTable) -> Cpu {
        let mem = shared.mem.clone();
        let apic = LocalApic::new(index);
        let mut cpu = Cpu {
            regs: [0; 32],
            lf_res: 1,
            lf_aux: 0,
            flags: 2,
            seg_base: [0; 8],
            seg_rlim: [0; 8],
            seg_wlim: [0; 8],
            lin_mask: 0xffff_ffff,
            ip_mask: 0xffff,
            sp_mask: 0xffff,
            tlb_sel: 0,
            exit_req: false,
            fault_skip: 0,
            smc: false,
            seen_code_epoch: 0,
            countdown: 0,
            tlb: Tlb::new(),
            mem,
            seg: [SegmentRegister::default(); 8],
            gdtr: TableRegister::default(),
            idtr: TableRegister::default(),
            cr0: 0,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            dr: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400],
            xcr0: 1,
            cpl: 0,
            mode: Mode::Real,
            bitness: 16,
            cs_limit: 0xffff,
            msr: Msrs {
                pat: 0x0007_0406_0007_0406,
                misc_enable: 1,
                ..Msrs::default()
            },
            tsc_offset: 0,
            now_ns: 0,
            tsc_last: 0,
            fpu: Box::default(),
            cpuid,
            shadow: false,
            nmi_blocked: false,
            halted: false,
            wait_for_sipi: index != 0,
            apic,
            index,
            shared,
            icount: 0,
            internal: String::new(),
            unimplemented: 0,
        };
        cpu.reset();
        cpu
    }

    /// RESET/INIT architectural state (keeps the APIC's identity and the TSC).
    pub(crate) fn reset(&mut self) {
        let s = virt::SpecialRegisters::reset();
        self.regs = [0; 32];
        self.regs[RIP] = 0xfff0;
        // EDX after reset holds the processor signature.
        self.regs[2] = u64::from(self.cpuid.lookup(1, 0)[0]);
        self.set_rflags_raw(2);
        self.dr = [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400];
        self.xcr0 = 1;
        *self.fpu = Fpu::default();
        self.efer = 0;
        self.apply_sregs(&s);
        self.shadow = false;
        self.nmi_blocked = false;
        self.halted = false;
        self.apic.reset();
    }

    /// Builds a standalone single-processor CPU on `mem` (unit tests).
    #[cfg(test)]
    pub(crate) fn new_for_test(mem: GuestMemory) -> Cpu {
        let shared = Shared::new(mem, 1, virt::VmClock::manual(), 1_000_000_000);
        Cpu::new(shared, 0, crate::cpuid::supported_cpuid(1))
    }

    /// Recomputes mode, CPL-derived caches, decode bitness and all segment fast paths.
    pub(crate) fn update_mode(&mut self) {
        let lma = self.efer & EFER_LMA != 0;
        let cs = self.seg[CS];
        self.mode = if self.cr0 & CR0_PE == 0 {
            Mode::Real
        } else if lma {
            if cs.long() { Mode::Long } else { Mode::Compat }
        } else {
            Mode::Protected
        };
        // CPL is SS.DPL (as VMX defines it): it survives the switch from real to protected
        // mode before CS is reloaded, and every privilege change loads SS.
        self.cpl = match self.mode {
            Mode::Real => 0,
            _ => (self.seg[SS].attributes >> 5) as u8 & 3,
        };
        self.bitness = match self.mode {
            Mode::Long => 64,
            _ if cs.default_big() => 32,
            _ => 16,
        };
        self.lin_mask = if self.mode == Mode::Long {
            u64::MAX
        } else {
            0xffff_ffff
        };
        self.ip_mask = match self.bitness {
            64 => u64::MAX,
            32 => 0xffff_ffff,
            _ => 0xffff,
        };
        self.sp_mask = if self.mode == Mode::Long {
            u64::MAX
        } else if self.seg[SS].default_big() {
            0xffff_ffff
        } else {
            0xffff
        };
        self.cs_limit = if self.mode == Mode::Long {
            u64::MAX
        } else {
            u64::from(cs.limit)
        };
        self.tlb_sel = if self.cpl == 3 {
            crate::mmu::TLB_USER
        } else {
            0
        };
        for i in 0..6 {
            self.update_seg_cache(i);
        }
        self.seg_base[SEG_NONE as usize] = 0;
        self.seg_rlim[SEG_NONE as usize] = u64::MAX;
        self.seg_wlim[SEG_NONE as usize] = u64::MAX;
        self.seg_base[7] = 0;
        self.seg_rlim[7] = u64::MAX;
        self.seg_wlim[7] = u64::MAX;
    }

    /// Recomputes the fast-path base and limits of segment register `i` (ES..GS).
    pub(crate) fn update_seg_cache(&mut self, i: usize) {
        let s = self.seg[i];
        if self.mode == Mode::Long {
            self.seg_base[i] = if i == FS || i == GS { s.base } else { 0 };
            self.seg_rlim[i] = u64::MAX;
            self.seg_wlim[i] = u64::MAX;
            return;
        }
        self.seg_base[i] = s.base & 0xffff_ffff;
        let end = u64::from(s.limit) + 1;
        if self.mode == Mode::Real {
            self.seg_rlim[i] = end;
            self.seg_wlim[i] = end;
            return;
        }
        let ty = s.attributes & 0xf;
        let present = s.attributes & 0x80 != 0;
        let (r, w) = if !present {
            (0, 0)
        } else if ty & 8 != 0 {
            // Code: readable if bit 1, never writable.
            (if ty & 2 != 0 { end } else { 0 }, 0)
        } else if ty & 4 != 0 {
            // Expand-down data: always the slow path.
            (0, 0)
        } else {
            (end, if ty & 2 != 0 { end } else { 0 })
        };
        self.seg_rlim[i] = r;
        self.seg_wlim[i] = w;
    }

    /// Applies segment/control registers from the `virt` representation.
    pub(crate) fn apply_sregs(&mut self, s: &virt::SpecialRegisters) {
        self.seg = [s.es, s.cs, s.ss, s.ds, s.fs, s.gs, s.ldtr, s.tr];
        self.gdtr = s.gdtr;
        self.idtr = s.idtr;
        self.cr0 = s.cr0 | CR0_ET;
        self.cr2 = s.cr2;
        self.cr3 = s.cr3;
        self.cr4 = s.cr4;
        self.efer = s.efer;
        if self.efer & EFER_LME != 0 && self.cr0 & CR0_PG != 0 {
            self.efer |= EFER_LMA;
        }
        self.apic.set_tpr_from_cr8(s.cr8);
        self.apic_base_write_internal(s.apic_base);
        self.update_mode();
        self.tlb.flush_all();
        self.exit_req = true;
    }

    /// Snapshot of segment/control registers.
    pub(crate) fn sregs(&self) -> virt::SpecialRegisters {
        virt::SpecialRegisters {
            es: self.seg[ES],
            cs: self.seg[CS],
            ss: self.seg[SS],
            ds: self.seg[DS],
            fs: self.seg[FS],
            gs: self.seg[GS],
            tr: self.seg[TR],
            ldtr: self.seg[LDTR],
            gdtr: self.gdtr,
            idtr: self.idtr,
            cr0: self.cr0,
            cr2: self.cr2,
            cr3: self.cr3,
            cr4: self.cr4,
            cr8: self.apic.cr8(),
            efer: self.efer,
            apic_base: self.apic.base_msr,
        }
    }

    /// General registers in the `virt` representation.
    pub(crate) fn gregs(&self) -> virt::Registers {
        let mut gpr = [0; 16];
        gpr.copy_from_slice(&self.regs[..16]);
        virt::Registers {
            gpr,
            rip: self.regs[RIP],
            rflags: self.rflags(),
        }
    }

    /// Sets general registers.
    /// Sets general registers. A processor whose registers are set explicitly is no longer
    /// halted: it resumes at the new RIP.
    pub(crate) fn set_gregs(&mut self, r: &virt::Registers) {
        self.regs[..16].copy_from_slice(&r.gpr);
        self.regs[RIP] = r.rip;
        self.set_rflags_raw(r.rflags);
        self.halted = false;
        self.exit_req = true;
    }

    /// A store hit a page holding decoded code: end the block, and validate the next block
    /// against the code generations instead of following a chain link.
    #[cold]
    #[inline(never)]
    pub(crate) fn code_written(&mut self) {
        self.exit_req = true;
        self.smc = true;
        // Every chain link may lead into the changed code.
        self.tlb.epoch = self.tlb.epoch.wrapping_add(1);
    }

    /// IOPL from RFLAGS.
    #[inline(always)]
    pub(crate) fn iopl(&self) -> u64 {
        (self.flags >> 12) & 3
    }

    /// Something that can make an interrupt deliverable changed (IF, TPR, EOI, ...): end the
    /// block and check events at the next boundary.
    #[inline]
    pub(crate) fn events_changed(&mut self) {
        self.countdown = 0;
        self.exit_req = true;
    }

    /// Records an internal error and returns `Ex::Internal`.
    pub(crate) fn internal_error<T>(&mut self, msg: String) -> Result<T, Ex> {
        self.internal = msg;
        Err(Ex::Internal)
    }
}
