//! Linear memory: segment checks, the software TLB, MMIO routing, and the accessors handlers
//! use (`read`, `write`, read-modify-write locations).
//!
//! # TLB
//! Direct-mapped, keyed by virtual page number, two halves: one for accesses made with user
//! privilege (CPL 3) and one for supervisor accesses (CPL 0-2 and the implicit supervisor
//! accesses to descriptor tables and the TSS). Each entry has three tags (read, write,
//! execute) holding the virtual page number when that kind of access is allowed without a page
//! walk, and the host offset of the page in guest memory. A write tag is only filled when the
//! PTE is already dirty, so the first write always walks and sets D. MMIO and the local APIC
//! are never cached: every such access takes the slow path.

use virt::ExitHandler;

use crate::cpu::CR0_PG;
use crate::cpu::CR0_WP;
use crate::cpu::CR4_PAE;
use crate::cpu::CR4_PGE;
use crate::cpu::CR4_PSE;
use crate::cpu::Cpu;
use crate::cpu::EFER_LMA;
use crate::cpu::EFER_NXE;
use crate::cpu::Ex;
use crate::cpu::GP;
use crate::cpu::Mode;
use crate::cpu::PF;
use crate::cpu::SS;
use crate::cpu::SSF;
use crate::op::Op;
use crate::size::Sz;

const TLB_BITS: u32 = 10;
const TLB_N: usize = 1 << TLB_BITS;
/// Offset of the user half of the TLB.
pub(crate) const TLB_USER: usize = TLB_N;
const INVALID: u64 = u64::MAX;

/// Address-size masks indexed by `Op::asz`.
pub(crate) const AMASK: [u64; 4] = [0xffff, 0xffff_ffff, u64::MAX, u64::MAX];

#[derive(Clone, Copy)]
pub(crate) struct TlbEntry {
    pub r: u64,
    pub w: u64,
    pub x: u64,
    pub host: u64,
}

const EMPTY: TlbEntry = TlbEntry {
    r: INVALID,
    w: INVALID,
    x: INVALID,
    host: 0,
};

const META_GLOBAL: u8 = 1;
const META_LARGE: u8 = 2;

/// The software TLB (both privilege halves).
pub(crate) struct Tlb {
    pub e: Box<[TlbEntry; 2 * TLB_N]>,
    meta: Box<[u8; 2 * TLB_N]>,
    any_large: bool,
    /// Bumped on every invalidation and mode change: cached facts derived from translations
    /// (block chain links) are valid only while it is unchanged.
    pub epoch: u32,
}

impl Tlb {
    pub(crate) fn new() -> Tlb {
        Tlb {
            e: Box::new([EMPTY; 2 * TLB_N]),
            meta: Box::new([0; 2 * TLB_N]),
            any_large: false,
            epoch: 0,
        }
    }

    #[inline(always)]
    pub(crate) fn slot(sel: usize, lin: u64) -> usize {
        (sel | ((lin >> 12) as usize & (TLB_N - 1))) & (2 * TLB_N - 1)
    }

    /// Drops every entry.
    pub(crate) fn flush_all(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        self.e.fill(EMPTY);
        self.meta.fill(0);
        self.any_large = false;
    }

    /// Drops every non-global entry.
    pub(crate) fn flush_nonglobal(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        for (e, m) in self.e.iter_mut().zip(self.meta.iter_mut()) {
            if *m & META_GLOBAL == 0 {
                *e = EMPTY;
                *m = 0;
            }
        }
    }

    /// INVLPG: drops the translation of `lin`, and every piece of a large page that covered it.
    pub(crate) fn flush_page(&mut self, lin: u64) {
        self.epoch = self.epoch.wrapping_add(1);
        let vpn = lin >> 12;
        for sel in [0, TLB_USER] {
            let i = Tlb::slot(sel, lin);
            let e = &mut self.e[i];
            if e.r == vpn || e.w == vpn || e.x == vpn {
                *e = EMPTY;
                self.meta[i] = 0;
            }
        }
        if self.any_large {
            // A large page is cached as 4 KiB pieces: drop every large piece in the same
            // 1 GiB region (a superset of any large page holding `lin`).
            let region = lin >> 30;
            for (e, m) in self.e.iter_mut().zip(self.meta.iter_mut()) {
                if *m & META_LARGE != 0 {
                    let v = [e.r, e.w, e.x].into_iter().find(|&t| t != INVALID);
                    if v.is_none_or(|v| v >> 18 == region) {
                        *e = EMPTY;
                        *m = 0;
                    }
                }
            }
        }
    }
}

/// Kind of a memory access, for permission checks and page-fault error codes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Access {
    Read,
    Write,
    Exec,
}

/// Where a translated access goes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    /// Guest RAM/ROM at this host offset.
    Ram(u64),
    /// The local APIC page, at this offset within it.
    Apic(u32),
    /// Anything else: an MMIO exit at this guest-physical address.
    Mmio(u64),
}

/// A read-modify-write location prepared with write permission checked.
#[derive(Clone, Copy)]
pub(crate) enum Loc {
    Host(u64),
    Lin(u64),
}

/// Result of a page walk.
struct Walk {
    gpa: u64,
    user: bool,
    write: bool,
    nx: bool,
    global: bool,
    dirty: bool,
    large: bool,
}

impl Cpu {
    /// Effective address of the memory operand of `op` (before segmentation).
    #[inline(always)]
    pub(crate) fn ea(&self, op: &Op) -> u64 {
        let r = &self.regs;
        r[op.base as usize & 31]
            .wrapping_add(r[op.index as usize & 31] << (op.scale & 3))
            .wrapping_add(op.disp)
            & AMASK[op.asz as usize & 3]
    }

    /// Linear address for reading `S` bytes at `op`'s memory operand.
    #[inline(always)]
    pub(crate) fn lin_r<S: Sz>(&self, op: &Op) -> Result<u64, Ex> {
        self.lin_off_r(op.seg, self.ea(op), S::BYTES)
    }

    /// Linear address for writing `S` bytes at `op`'s memory operand.
    #[inline(always)]
    pub(crate) fn lin_w<S: Sz>(&self, op: &Op) -> Result<u64, Ex> {
        self.lin_off_w(op.seg, self.ea(op), S::BYTES)
    }

    /// Linear address of `len` bytes at offset `off` of segment `seg` (read access).
    #[inline(always)]
    pub(crate) fn lin_off_r(&self, seg: u8, off: u64, len: u64) -> Result<u64, Ex> {
        let s = seg as usize & 7;
        if off.wrapping_add(len) > self.seg_rlim[s] {
            return self.seg_check_slow(s, off, len, false);
        }
        Ok(off.wrapping_add(self.seg_base[s]) & self.lin_mask)
    }

    /// Linear address of `len` bytes at offset `off` of segment `seg` (write access).
    #[inline(always)]
    pub(crate) fn lin_off_w(&self, seg: u8, off: u64, len: u64) -> Result<u64, Ex> {
        let s = seg as usize & 7;
        if off.wrapping_add(len) > self.seg_wlim[s] {
            return self.seg_check_slow(s, off, len, true);
        }
        Ok(off.wrapping_add(self.seg_base[s]) & self.lin_mask)
    }

    /// The full segment check (null selectors, types, expand-down, limits).
    #[cold]
    #[inline(never)]
    fn seg_check_slow(&self, s: usize, off: u64, len: u64, write: bool) -> Result<u64, Ex> {
        let vec = if s == SS { SSF } else { GP };
        if self.mode == Mode::Long {
            return Ok(off.wrapping_add(self.seg_base[s]));
        }
        let seg = &self.seg[s];
        let last = off.wrapping_add(len - 1);
        if self.mode != Mode::Real {
            let ty = seg.attributes & 0xf;
            if seg.attributes & 0x80 == 0 {
                return Err(Ex::Fault(vec, 0));
            }
            if ty & 8 != 0 {
                if write || ty & 2 == 0 {
                    return Err(Ex::Fault(vec, 0));
                }
            } else if write && ty & 2 == 0 {
                return Err(Ex::Fault(vec, 0));
            }
            if ty & 0xc == 4 {
                // Expand-down data segment: valid offsets are limit+1 ..= 0xffff/0xffffffff.
                let upper = if seg.default_big() {
                    0xffff_ffff
                } else {
                    0xffff
                };
                if off <= u64::from(seg.limit) || last > upper || last < off {
                    return Err(Ex::Fault(vec, 0));
                }
                return Ok(off.wrapping_add(self.seg_base[s]) & 0xffff_ffff);
            }
        }
        if last > u64::from(seg.limit) || last < off {
            return Err(Ex::Fault(vec, 0));
        }
        Ok(off.wrapping_add(self.seg_base[s]) & 0xffff_ffff)
    }

    // ---- reads ----

    #[inline(always)]
    fn read_sel<S: Sz>(&mut self, lin: u64, sel: usize, io: &dyn ExitHandler) -> Result<u64, Ex> {
        let e = &self.tlb.e[Tlb::slot(sel, lin)];
        let off = lin & 0xfff;
        if e.r == lin >> 12 && off <= 4096 - S::BYTES {
            return Ok(self.mem.load(e.host + off, S::W));
        }
        self.read_slow(lin, S::BYTES as usize, sel != 0, io)
    }

    /// Reads `S` bytes at a linear address with the current privilege.
    #[inline(always)]
    pub(crate) fn read<S: Sz>(&mut self, lin: u64, io: &dyn ExitHandler) -> Result<u64, Ex> {
        self.read_sel::<S>(lin, self.tlb_sel, io)
    }

    /// Reads with supervisor privilege (descriptor tables, TSS, IDT).
    #[inline(always)]
    pub(crate) fn read_sys<S: Sz>(&mut self, lin: u64, io: &dyn ExitHandler) -> Result<u64, Ex> {
        self.read_sel::<S>(lin, 0, io)
    }

    /// Reads the memory operand of `op`.
    #[inline(always)]
    pub(crate) fn read_op<S: Sz>(&mut self, op: &Op, io: &dyn ExitHandler) -> Result<u64, Ex> {
        let lin = self.lin_r::<S>(op)?;
        self.read::<S>(lin, io)
    }

    #[cold]
    #[inline(never)]
    fn read_slow(
        &mut self,
        lin: u64,
        len: usize,
        user: bool,
        io: &dyn ExitHandler,
    ) -> Result<u64, Ex> {
        let mut buf = [0u8; 8];
        self.read_bytes(lin, &mut buf[..len], user, io)?;
        Ok(u64::from_le_bytes(buf))
    }

    /// Reads any number of bytes (up to two pages' worth per call is typical) at `lin`.
    pub(crate) fn read_bytes(
        &mut self,
        lin: u64,
        buf: &mut [u8],
        user: bool,
        io: &dyn ExitHandler,
    ) -> Result<(), Ex> {
        // Translate every page first so a fault leaves no side effect (MMIO reads have some).
        let mut targets = [(Target::Mmio(0), 0usize); 3];
        let mut n = 0;
        let mut done = 0usize;
        while done < buf.len() {
            let a = lin.wrapping_add(done as u64) & self.lin_mask;
            let chunk = (4096 - (a & 0xfff) as usize).min(buf.len() - done);
            let t = self.translate(a, Access::Read, user, io)?;
            if n < targets.len() {
                targets[n] = (t, chunk);
                n += 1;
            } else {
                // Long buffers: access as we go.
                self.access_target(t, &mut buf[done..done + chunk], io);
                done += chunk;
                continue;
            }
            done += chunk;
        }
        let mut pos = 0;
        for &(t, chunk) in &targets[..n] {
            self.access_target(t, &mut buf[pos..pos + chunk], io);
            pos += chunk;
        }
        Ok(())
    }

    fn access_target(&mut self, t: Target, buf: &mut [u8], io: &dyn ExitHandler) {
        match t {
            Target::Ram(off) => self.mem.copy_out(off, buf),
            Target::Apic(off) => self.apic_mmio_read(off, buf),
            Target::Mmio(gpa) => io.mmio_read(self.index, gpa, buf),
        }
    }

    // ---- writes ----

    #[inline(always)]
    fn write_sel<S: Sz>(
        &mut self,
        lin: u64,
        v: u64,
        sel: usize,
        io: &dyn ExitHandler,
    ) -> Result<(), Ex> {
        let e = &self.tlb.e[Tlb::slot(sel, lin)];
        let off = lin & 0xfff;
        if e.w == lin >> 12 && off <= 4096 - S::BYTES {
            let host = e.host + off;
            if self.mem.store_in_page(host, S::W, v) == guest_mem::StoreResult::CodeInvalidated {
                self.code_written();
            }
            return Ok(());
        }
        self.write_slow(lin, &v.to_le_bytes()[..S::BYTES as usize], sel != 0, io)
    }

    /// Writes `S` bytes at a linear address with the current privilege.
    #[inline(always)]
    pub(crate) fn write<S: Sz>(
        &mut self,
        lin: u64,
        v: u64,
        io: &dyn ExitHandler,
    ) -> Result<(), Ex> {
        self.write_sel::<S>(lin, v, self.tlb_sel, io)
    }

    /// Writes with supervisor privilege.
    #[inline(always)]
    pub(crate) fn write_sys<S: Sz>(
        &mut self,
        lin: u64,
        v: u64,
        io: &dyn ExitHandler,
    ) -> Result<(), Ex> {
        self.write_sel::<S>(lin, v, 0, io)
    }

    /// Writes the memory operand of `op`.
    #[inline(always)]
    pub(crate) fn write_op<S: Sz>(
        &mut self,
        op: &Op,
        v: u64,
        io: &dyn ExitHandler,
    ) -> Result<(), Ex> {
        let lin = self.lin_w::<S>(op)?;
        self.write::<S>(lin, v, io)
    }

    #[cold]
    #[inline(never)]
    fn write_slow(
        &mut self,
        lin: u64,
        data: &[u8],
        user: bool,
        io: &dyn ExitHandler,
    ) -> Result<(), Ex> {
        self.write_bytes(lin, data, user, io)
    }

    /// Writes bytes at `lin`; every page is translated (and checked) before anything is written.
    pub(crate) fn write_bytes(
        &mut self,
        lin: u64,
        data: &[u8],
        user: bool,
        io: &dyn ExitHandler,
    ) -> Result<(), Ex> {
        let mut targets = [(Target::Mmio(0), 0usize); 3];
        let mut n = 0;
        let mut done = 0usize;
        while done < data.len() {
            let a = lin.wrapping_add(done as u64) & self.lin_mask;
            let chunk = (4096 - (a & 0xfff) as usize).min(data.len() - done);
            let t = self.translate(a, Access::Write, user, io)?;
            if n < targets.len() {
                targets[n] = (t, chunk);
                n += 1;
            } else {
                self.store_target(t, &data[done..done + chunk], io);
            }
            done += chunk;
        }
        let mut pos = 0;
        for &(t, chunk) in &targets[..n] {
            self.store_target(t, &data[pos..pos + chunk], io);
            pos += chunk;
        }
        Ok(())
    }

    fn store_target(&mut self, t: Target, data: &[u8], io: &dyn ExitHandler) {
        match t {
            Target::Ram(off) => {
                for (i, &b) in data.iter().enumerate() {
                    if self
                        .mem
                        .store(off + i as u64, guest_mem::Width::U8, u64::from(b))
                        == guest_mem::StoreResult::CodeInvalidated
                    {
                        self.code_written();
                    }
                }
            }
            Target::Apic(off) => self.apic_mmio_write(off, data, io),
            Target::Mmio(gpa) => io.mmio_write(self.index, gpa, data),
        }
    }

    // ---- read-modify-write ----

    /// Prepares a read-modify-write of `S` bytes at `lin`: write permission is checked (and a
    /// page fault reports a write) before anything is read.
    #[inline(always)]
    pub(crate) fn rmw_loc<S: Sz>(&mut self, lin: u64, io: &dyn ExitHandler) -> Result<Loc, Ex> {
        let e = &self.tlb.e[Tlb::slot(self.tlb_sel, lin)];
        let off = lin & 0xfff;
        if e.w == lin >> 12 && off <= 4096 - S::BYTES {
            return Ok(Loc::Host(e.host + off));
        }
        self.rmw_loc_slow(lin, S::BYTES, io)
    }

    #[cold]
    #[inline(never)]
    fn rmw_loc_slow(&mut self, lin: u64, len: u64, io: &dyn ExitHandler) -> Result<Loc, Ex> {
        let user = self.tlb_sel != 0;
        let t = self.translate(lin, Access::Write, user, io)?;
        if (lin & 0xfff) + len > 4096 {
            let next = lin.wrapping_add(len - 1) & self.lin_mask;
            self.translate(next, Access::Write, user, io)?;
            return Ok(Loc::Lin(lin));
        }
        Ok(match t {
            Target::Ram(off) => Loc::Host(off),
            _ => Loc::Lin(lin),
        })
    }

    /// Prepared location of `op`'s memory operand for read-modify-write.
    #[inline(always)]
    pub(crate) fn rmw_op<S: Sz>(&mut self, op: &Op, io: &dyn ExitHandler) -> Result<Loc, Ex> {
        let lin = self.lin_w::<S>(op)?;
        self.rmw_loc::<S>(lin, io)
    }

    /// Loads from a prepared location.
    #[inline(always)]
    pub(crate) fn load_loc<S: Sz>(&mut self, loc: Loc, io: &dyn ExitHandler) -> Result<u64, Ex> {
        match loc {
            Loc::Host(off) => Ok(self.mem.load(off, S::W)),
            Loc::Lin(lin) => self.read_slow(lin, S::BYTES as usize, self.tlb_sel != 0, io),
        }
    }

    /// Stores to a prepared location.
    #[inline(always)]
    pub(crate) fn store_loc<S: Sz>(
        &mut self,
        loc: Loc,
        v: u64,
        io: &dyn ExitHandler,
    ) -> Result<(), Ex> {
        match loc {
            Loc::Host(off) => {
                if self.mem.store_in_page(off, S::W, v) == guest_mem::StoreResult::CodeInvalidated {
                    self.code_written();
                }
                Ok(())
            }
            Loc::Lin(lin) => self.write_slow(
                lin,
                &v.to_le_bytes()[..S::BYTES as usize],
                self.tlb_sel != 0,
                io,
            ),
        }
    }

    // ---- translation ----

    /// Translates `lin` for an access of `kind` made with user (`user`) or supervisor
    /// privilege, filling the TLB for RAM.
    pub(crate) fn translate(
        &mut self,
        lin: u64,
        kind: Access,
        user: bool,
        io: &dyn ExitHandler,
    ) -> Result<Target, Ex> {
        let _ = io;
        if self.mode == Mode::Long {
            let canon = ((lin << 16) as i64 >> 16) as u64;
            if canon != lin {
                return Err(Ex::Fault(GP, 0));
            }
        }
        let w = self.walk(lin, kind, user)?;
        let page = w.gpa & !0xfff;
        if let Some(off) = self.apic_page_offset(page) {
            return Ok(Target::Apic(off + (w.gpa & 0xfff) as u32));
        }
        let Some(loc) = self.mem.translate(page) else {
            return Ok(Target::Mmio(w.gpa));
        };
        if loc.available < 4096 {
            return Ok(Target::Mmio(w.gpa));
        }
        // Fill the TLB with every permission this translation grants at this privilege.
        let vpn = lin >> 12;
        let wp = self.cr0 & CR0_WP != 0;
        let (r_ok, w_ok, x_ok) = if user {
            (w.user, w.user && w.write, w.user && !w.nx)
        } else {
            (true, w.write || !wp, !w.nx)
        };
        let sel = if user { TLB_USER } else { 0 };
        let i = Tlb::slot(sel, lin);
        self.tlb.e[i] = TlbEntry {
            r: if r_ok { vpn } else { INVALID },
            w: if w_ok && w.dirty && loc.writable {
                vpn
            } else {
                INVALID
            },
            x: if x_ok { vpn } else { INVALID },
            host: loc.offset,
        };
        self.tlb.meta[i] =
            if w.global { META_GLOBAL } else { 0 } | if w.large { META_LARGE } else { 0 };
        if w.large {
            self.tlb.any_large = true;
        }
        if kind == Access::Write && !loc.writable {
            return Ok(Target::Mmio(w.gpa));
        }
        Ok(Target::Ram(loc.offset + (w.gpa & 0xfff)))
    }

    /// Translates an instruction fetch: host offset of the page and its guest-physical address.
    #[inline]
    pub(crate) fn fetch_page(&mut self, lin: u64, io: &dyn ExitHandler) -> Result<(u64, u64), Ex> {
        let e = &self.tlb.e[Tlb::slot(self.tlb_sel, lin)];
        if e.x == lin >> 12 {
            return Ok((e.host, 0));
        }
        let user = self.tlb_sel != 0;
        match self.translate(lin & !0xfff, Access::Exec, user, io)? {
            Target::Ram(off) => Ok((off, 0)),
            Target::Apic(_) | Target::Mmio(_) => {
                self.internal_error(format!("instruction fetch from MMIO at linear {lin:#x}"))
            }
        }
    }

    fn page_fault(&mut self, lin: u64, code: u32) -> Ex {
        self.cr2 = lin;
        Ex::Fault(PF, code)
    }

    fn pte_load(&self, gpa: u64, size: u64) -> Option<(u64, u64)> {
        let loc = self.mem.translate(gpa)?;
        if loc.available < size {
            return None;
        }
        let w = if size == 8 {
            guest_mem::Width::U64
        } else {
            guest_mem::Width::U32
        };
        Some((loc.offset, self.mem.load(loc.offset, w)))
    }

    /// Walks the page tables for `lin`. Sets accessed/dirty bits when the access is allowed.
    fn walk(&mut self, lin: u64, kind: Access, user: bool) -> Result<Walk, Ex> {
        if self.cr0 & CR0_PG == 0 {
            return Ok(Walk {
                gpa: lin & 0xffff_ffff,
                user: true,
                write: true,
                nx: false,
                global: false,
                dirty: true,
                large: false,
            });
        }
        for _ in 0..8 {
            if let Some(w) = self.walk_once(lin, kind, user)? {
                return Ok(w);
            }
        }
        self.internal_error(format!("page walk for {lin:#x} kept racing"))
    }

    /// One walk attempt; `Ok(None)` when an A/D update raced with another writer.
    fn walk_once(&mut self, lin: u64, kind: Access, user: bool) -> Result<Option<Walk>, Ex> {
        let pae = self.cr4 & CR4_PAE != 0;
        let lma = self.efer & EFER_LMA != 0;
        let nxe = self.efer & EFER_NXE != 0 && pae;
        let write = kind == Access::Write;
        let fetch = kind == Access::Exec;
        let mut code = (write as u32) << 1 | (user as u32) << 2 | ((fetch && nxe) as u32) << 4;
        let not_present = |cpu: &mut Cpu, code: u32| Err(cpu.page_fault(lin, code));
        // (host offset, old value, size) of each entry, to set A/D bits after the checks.
        let mut entries = [(0u64, 0u64, 0u64); 4];
        let mut n = 0;
        let (mut table, mut level, esize) = if !pae {
            (self.cr3 & 0xffff_f000, 2u32, 4u64)
        } else if lma {
            (self.cr3 & 0x000f_ffff_ffff_f000, 4, 8)
        } else {
            let a = (self.cr3 & 0xffff_ffe0) + ((lin >> 30) & 3) * 8;
            let Some((_, pdpte)) = self.pte_load(a, 8) else {
                return not_present(self, code);
            };
            if pdpte & 1 == 0 {
                return not_present(self, code);
            }
            (pdpte & 0x000f_ffff_ffff_f000, 2, 8)
        };
        let (mut u_ok, mut w_ok, mut nx) = (true, true, false);
        let (gpa, large, leaf) = loop {
            let (shift, idx_mask) = if esize == 8 {
                (12 + 9 * (level - 1), 0x1ff)
            } else {
                (12 + 10 * (level - 1), 0x3ff)
            };
            let a = table + ((lin >> shift) & idx_mask) * esize;
            let Some((host, e)) = self.pte_load(a, esize) else {
                return not_present(self, code);
            };
            if e & 1 == 0 {
                return not_present(self, code);
            }
            if esize == 8 && e >> 63 != 0 && !nxe {
                code |= 1 | 8;
                return Err(self.page_fault(lin, code));
            }
            entries[n] = (host, e, esize);
            n += 1;
            u_ok &= e & 4 != 0;
            w_ok &= e & 2 != 0;
            nx |= nxe && e >> 63 != 0;
            let ps = e & 0x80 != 0;
            if level == 1 {
                break (e & 0x000f_ffff_ffff_f000 | (lin & 0xfff), false, e);
            }
            if ps && level == 2 {
                if esize == 8 {
                    break (e & 0x000f_ffff_ffe0_0000 | (lin & 0x1f_ffff), true, e);
                }
                if self.cr4 & CR4_PSE != 0 {
                    let hi = (e >> 13) & 0xff;
                    break (
                        ((e & 0xffc0_0000) | (hi << 32)) | (lin & 0x3f_ffff),
                        true,
                        e,
                    );
                }
            }
            if ps && level == 3 && esize == 8 && lma {
                break (e & 0x000f_ffff_c000_0000 | (lin & 0x3fff_ffff), true, e);
            }
            if ps && level >= 3 {
                code |= 1 | 8;
                return Err(self.page_fault(lin, code));
            }
            table = e & if esize == 8 {
                0x000f_ffff_ffff_f000
            } else {
                0xffff_f000
            };
            level -= 1;
        };
        // Permission checks.
        let denied = if user {
            !u_ok || (write && !w_ok) || (fetch && nx)
        } else {
            (write && !w_ok && self.cr0 & CR0_WP != 0) || (fetch && nx)
        };
        if denied {
            return Err(self.page_fault(lin, code | 1));
        }
        // Accessed bits on every level, dirty on the leaf for writes.
        let mut dirty = leaf & 0x40 != 0;
        for (i, &(host, old, size)) in entries[..n].iter().enumerate() {
            let mut want = old | 0x20;
            if i == n - 1 && write {
                want |= 0x40;
                dirty = true;
            }
            if want != old {
                let w = if size == 8 {
                    guest_mem::Width::U64
                } else {
                    guest_mem::Width::U32
                };
                if self.mem.cmpxchg(host, w, old, want).is_err() {
                    return Ok(None);
                }
            }
        }
        let global = leaf & 0x100 != 0 && self.cr4 & CR4_PGE != 0;
        Ok(Some(Walk {
            gpa,
            user: u_ok,
            write: w_ok,
            nx,
            global,
            dirty,
            large,
        }))
    }
}
