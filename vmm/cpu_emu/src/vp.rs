//! The processor: the run loop, event delivery at block boundaries, and the cache of decoded
//! blocks.
//!
//! # Blocks
//! A block is a run of pre-decoded ops starting at some instruction and ending at the first
//! control transfer, at the end of its 4 KiB page, or after `MAX_BLOCK` instructions. Blocks
//! are keyed by the host offset of their first byte (a physical address) and the decode
//! bitness, and remember the code generation of their page ([`guest_mem::GuestMemory::
//! mark_code`]); any write to the page (a guest store on any processor, device DMA, the loader)
//! changes the generation and the block is decoded again when next entered.
//!
//! A small direct-mapped "jump cache" maps the linear RIP to a block; a hit is confirmed
//! against the TLB's execute tag (same linear page still maps the block's physical page at
//! this privilege) and the page generation, so no flush is ever needed for correctness.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use iced_x86::Decoder;
use iced_x86::DecoderError;
use iced_x86::DecoderOptions;
use iced_x86::Instruction;
use virt::CpuidTable;
use virt::ExitHandler;
use virt::VirtError;
use virt::VpExit;

use crate::cpu::CS;
use crate::cpu::Cpu;
use crate::cpu::Ex;
use crate::cpu::RIP;
use crate::cpu::Res;
use crate::decode::Features;
use crate::flags;
use crate::interrupt::Event;
use crate::mmu::Tlb;
use crate::op::Op;
use crate::partition::Shared;

/// Most instructions in one block.
const MAX_BLOCK: usize = 64;
/// Bytes fetched to build one block: room for `MAX_BLOCK` instructions of the longest kind.
const BUILD_BYTES: usize = MAX_BLOCK * 15;
/// Total cached ops before the cache is dropped and rebuilt.
const MAX_OPS: usize = 4 << 20;
const JC_BITS: u32 = 12;
const JC_N: usize = 1 << JC_BITS;
/// Blocks between event checks.
const EVENT_INTERVAL: i32 = 128;

struct Block {
    ops: Vec<Op>,
    host_page: u64,
    generation: u32,
    /// Code epoch at which this block was last known current.
    epoch: u64,
    /// The last successors seen, tried before any lookup.
    links: [Link; 2],
}

/// A cached successor: valid while the TLB epoch it was recorded under is current.
#[derive(Clone, Copy)]
struct Link {
    rip: u64,
    idx: u32,
    tlb_epoch: u32,
}

const NO_LINK: Link = Link {
    rip: u64::MAX,
    idx: 0,
    tlb_epoch: 0,
};

/// "No previous block" for chaining.
const NONE: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct JcEntry {
    rip: u64,
    mode: u32,
    idx: u32,
}

const JC_EMPTY: JcEntry = JcEntry {
    rip: u64::MAX,
    mode: 0,
    idx: 0,
};

/// Decoded blocks of one processor.
pub(crate) struct CodeCache {
    blocks: Vec<Block>,
    map: HashMap<u64, u32>,
    jc: Box<[JcEntry; JC_N]>,
    total_ops: usize,
    /// Bumped when the cache is dropped (block indices become meaningless).
    flushes: u64,
    /// Block entries through a chain link, the jump cache, and the slow path.
    pub(crate) stats: [u64; 3],
    feat: Features,
    dec_options: u32,
}

impl CodeCache {
    fn new(cpuid: &CpuidTable) -> CodeCache {
        let bmi1 = cpuid.lookup(7, 0)[1] & (1 << 3) != 0;
        let lzcnt = cpuid.lookup(0x8000_0001, 0)[2] & (1 << 5) != 0;
        let mut dec_options = DecoderOptions::NONE;
        if !bmi1 {
            dec_options |= DecoderOptions::NO_MPFX_0FBC;
        }
        if !lzcnt {
            dec_options |= DecoderOptions::NO_MPFX_0FBD;
        }
        CodeCache {
            blocks: Vec::new(),
            map: HashMap::new(),
            jc: Box::new([JC_EMPTY; JC_N]),
            total_ops: 0,
            flushes: 0,
            stats: [0; 3],
            feat: Features { bmi1, lzcnt },
            dec_options,
        }
    }

    fn clear(&mut self) {
        self.blocks.clear();
        self.map.clear();
        self.jc.fill(JC_EMPTY);
        self.total_ops = 0;
        self.flushes += 1;
    }

    /// Whether block `idx` still holds current code (one load while no code page changed).
    #[inline(always)]
    fn current(&mut self, cpu: &Cpu, idx: u32) -> bool {
        let epoch = cpu.mem.code_epoch();
        let b = &mut self.blocks[idx as usize];
        if b.epoch == epoch {
            return true;
        }
        if cpu.mem.page_generation(b.host_page) == b.generation {
            b.epoch = epoch;
            return true;
        }
        false
    }

    /// The successor of block `prev` at linear `rip`, if a link for it is still valid.
    #[inline(always)]
    fn chained(&mut self, cpu: &Cpu, prev: u32, rip: u64) -> Option<u32> {
        let b = self.blocks.get(prev as usize)?;
        let l = if b.links[0].rip == rip {
            b.links[0]
        } else if b.links[1].rip == rip {
            b.links[1]
        } else {
            return None;
        };
        // A link's target is current while the TLB epoch is unchanged: it is bumped by this
        // processor's stores into code (`Cpu::code_written`) and, at every event check, when
        // anyone else changed code (as with real cross-modifying code, the executing
        // processor notices within a short, bounded time).
        if l.tlb_epoch != cpu.tlb.epoch {
            return None;
        }
        Some(l.idx)
    }

    /// Records `idx` at `rip` as a successor of `prev`.
    fn link(&mut self, cpu: &Cpu, prev: u32, rip: u64, idx: u32) {
        if let Some(b) = self.blocks.get_mut(prev as usize) {
            b.links[1] = b.links[0];
            b.links[0] = Link {
                rip,
                idx,
                tlb_epoch: cpu.tlb.epoch,
            };
        }
    }

    #[inline(always)]
    fn jc_slot(rip: u64) -> usize {
        ((rip ^ (rip >> JC_BITS)) as usize) & (JC_N - 1)
    }

    /// Finds (or builds) the block at `rip`; a fetch fault is returned as `Err`.
    #[inline(always)]
    fn lookup(
        &mut self,
        cpu: &mut Cpu,
        ip: u64,
        rip: u64,
        io: &dyn ExitHandler,
    ) -> Result<u32, Ex> {
        let e = self.jc[Self::jc_slot(rip)];
        if e.rip == rip && e.mode == cpu.bitness {
            let b = &self.blocks[e.idx as usize];
            let te = &cpu.tlb.e[Tlb::slot(cpu.tlb_sel, rip)];
            if te.x == rip >> 12 && te.host == b.host_page && self.current(cpu, e.idx) {
                self.stats[1] += 1;
                return Ok(e.idx);
            }
        }
        self.lookup_slow(cpu, ip, rip, io)
    }

    /// `ip` is the offset in CS, `rip` the linear address of the block.
    #[cold]
    #[inline(never)]
    fn lookup_slow(
        &mut self,
        cpu: &mut Cpu,
        ip: u64,
        rip: u64,
        io: &dyn ExitHandler,
    ) -> Result<u32, Ex> {
        self.stats[2] += 1;
        if ip > cpu.cs_limit {
            return Err(Ex::Fault(crate::cpu::GP, 0));
        }
        let (host_page, _) = cpu.fetch_page(rip, io)?;
        let mode = cpu.bitness;
        let key = ((host_page + (rip & 0xfff)) << 2) | u64::from(mode >> 5);
        let idx = match self.map.get(&key) {
            Some(&idx) => {
                let b = &self.blocks[idx as usize];
                if cpu.mem.page_generation(b.host_page) != b.generation || b.host_page != host_page
                {
                    let nb = self.build(cpu, ip, rip, host_page);
                    self.total_ops += nb.ops.len();
                    self.blocks[idx as usize] = nb;
                }
                idx
            }
            None => {
                if self.total_ops > MAX_OPS {
                    self.clear();
                }
                let nb = self.build(cpu, ip, rip, host_page);
                self.total_ops += nb.ops.len();
                let idx = self.blocks.len() as u32;
                self.blocks.push(nb);
                self.map.insert(key, idx);
                idx
            }
        };
        self.jc[Self::jc_slot(rip)] = JcEntry { rip, mode, idx };
        Ok(idx)
    }

    /// Decodes a block starting at linear `rip`, offset `ip` in CS (page at host offset
    /// `host_page`).
    fn build(&self, cpu: &mut Cpu, ip: u64, rip: u64, host_page: u64) -> Block {
        let epoch = cpu.mem.code_epoch();
        let generation = cpu.mem.mark_code(host_page);
        let off = (rip & 0xfff) as usize;
        // Never more bytes than `MAX_BLOCK` longest instructions (copying and clearing a whole
        // page per block is measurable when code pages are rewritten often).
        let mut avail = (4096 - off).min(BUILD_BYTES);
        let bitness = cpu.bitness;
        if bitness == 16 {
            // The instruction pointer wraps at 64 KiB.
            avail = avail.min(0x1_0000 - (ip & 0xffff) as usize);
        }
        let mut buf = [0u8; BUILD_BYTES];
        cpu.mem.copy_out(host_page + off as u64, &mut buf[..avail]);
        let mut dec = Decoder::with_ip(bitness, &buf[..avail], rip, self.dec_options);
        let mut ins = Instruction::default();
        let mut ops = Vec::with_capacity(16);
        let mut prev = Instruction::default();
        let mut prev_fusable = false;
        loop {
            let pos = dec.position();
            if pos >= avail {
                break;
            }
            dec.decode_out(&mut ins);
            if ins.is_invalid() {
                if dec.last_error() == DecoderError::NoMoreBytes {
                    if ops.is_empty() {
                        ops.push(Op::new(cross_page, 0));
                    }
                } else {
                    ops.push(Op::new(crate::exec::ud, ins.len().max(1) as u8));
                }
                break;
            }
            let ilen = ins.len();
            if bitness != 64 && ip.wrapping_add((pos + ilen - 1) as u64) > cpu.cs_limit {
                ops.push(Op::new(gp_op, ilen as u8));
                break;
            }
            let (op, end) =
                crate::decode::translate(&ins, bitness, &buf[pos..pos + ilen], &self.feat);
            // A compare or test followed by a conditional branch runs as one op.
            match ops.last_mut() {
                Some(last) if prev_fusable => match crate::decode::fuse(&prev, last, &ins) {
                    Some(f) => *last = f,
                    None => ops.push(op),
                },
                _ => ops.push(op),
            }
            prev_fusable = crate::decode::fusable(&ins, bitness);
            prev = ins;
            if end || ops.len() >= MAX_BLOCK {
                break;
            }
        }
        Block {
            ops,
            host_page,
            generation,
            epoch,
            links: [NO_LINK; 2],
        }
    }
}

fn gp_op(_: &mut Cpu, _: &Op, _: &dyn ExitHandler) -> Res {
    crate::cpu::gp0()
}

/// An instruction that straddles a page boundary: fetched through the MMU and decoded each
/// time it runs (rare).
fn cross_page(c: &mut Cpu, _: &Op, io: &dyn ExitHandler) -> Res {
    let rip = c.regs[RIP];
    let mut buf = [0u8; 15];
    let user = c.tlb_sel != 0;
    let lin = rip.wrapping_add(c.seg_base[CS]) & c.lin_mask;
    let first = ((4096 - (lin & 0xfff)) as usize).min(15);
    let t = c.translate(lin, crate::mmu::Access::Exec, user, io)?;
    let crate::mmu::Target::Ram(off) = t else {
        return c.internal_error(format!("instruction fetch from MMIO at {lin:#x}"));
    };
    c.mem.copy_out(off, &mut buf[..first]);
    let mut dec = Decoder::with_ip(c.bitness, &buf[..first], rip, 0);
    let mut ins = Instruction::default();
    dec.decode_out(&mut ins);
    let mut total = first;
    if ins.is_invalid() && dec.last_error() == DecoderError::NoMoreBytes {
        let lin2 = lin.wrapping_add(first as u64) & c.lin_mask;
        let t2 = c.translate(lin2, crate::mmu::Access::Exec, user, io)?;
        let crate::mmu::Target::Ram(off2) = t2 else {
            return c.internal_error(format!("instruction fetch from MMIO at {lin2:#x}"));
        };
        c.mem.copy_out(off2, &mut buf[first..]);
        total = 15;
        let mut dec = Decoder::with_ip(c.bitness, &buf[..total], rip, 0);
        dec.decode_out(&mut ins);
    }
    if ins.is_invalid() {
        return crate::cpu::ud();
    }
    let feat = Features::default();
    let (op, _) = crate::decode::translate(&ins, c.bitness, &buf[..ins.len().min(total)], &feat);
    c.regs[RIP] = rip.wrapping_add(ins.len() as u64);
    let r = (op.f)(c, &op, io);
    if r.is_err() {
        c.regs[RIP] = rip;
    }
    c.exit_req = true;
    r
}

/// Why the run loop stopped (internal: `Halted` and `Limit` exist for tests and tools).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The partition was stopped.
    Stopped,
    /// Triple fault.
    TripleFault,
    /// HLT with nothing to wake it (only when asked to stop on halt).
    Halted,
    /// The instruction limit was reached.
    Limit,
}

/// Options for [`Vp::run_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Return [`Stop::Halted`] when the processor halts with no event pending, instead of
    /// sleeping until one arrives.
    pub stop_on_halt: bool,
    /// Return [`Stop::Limit`] after about this many instructions retired plus exceptions
    /// delivered (checked at event checks). Exceptions count so that a guest caught in an
    /// exception loop that retires nothing (a handler whose fetch faults again) still stops.
    pub max_instructions: Option<u64>,
}

/// One `emu` virtual processor.
pub struct Vp {
    pub(crate) cpu: Cpu,
    cache: CodeCache,
    /// Execute only one instruction in the next block (interrupt shadow).
    one_insn: bool,
    /// VM time of the next trace-level RIP sample.
    next_sample_ns: u64,
    /// Exceptions delivered (they count towards `RunOptions::max_instructions`).
    exceptions: u64,
}

impl Vp {
    pub(crate) fn new(shared: Arc<Shared>, index: u32, cpuid: CpuidTable) -> Vp {
        let cache = CodeCache::new(&cpuid);
        Vp {
            cpu: Cpu::new(shared, index, cpuid),
            cache,
            one_insn: false,
            next_sample_ns: 0,
            exceptions: 0,
        }
    }

    /// A standalone processor (VP 0 of a one-processor partition with a manual clock) on
    /// `memory`, with the supported CPUID: for tests, fuzzing and benchmarks.
    pub fn standalone(memory: guest_mem::GuestMemory) -> Vp {
        let shared = Shared::new(
            memory,
            1,
            virt::VmClock::manual(),
            crate::cpuid::DEFAULT_TSC_HZ,
        );
        let cpuid = crate::cpuid::per_vp(&crate::cpuid::supported_cpuid(1), 0);
        Vp::new(shared, 0, cpuid)
    }

    /// Guest instructions retired so far.
    pub fn instructions(&self) -> u64 {
        self.cpu.icount
    }

    /// Block entries through chain links, the jump cache, and the slow path.
    pub fn cache_stats(&self) -> [u64; 3] {
        self.cache.stats
    }

    /// Unimplemented instructions encountered (each raised #UD).
    pub fn unimplemented_instructions(&self) -> u64 {
        self.cpu.unimplemented
    }

    /// Runs until stopped, a triple fault, or what `opts` asks for.
    pub fn run_with(&mut self, io: &dyn ExitHandler, opts: RunOptions) -> Result<Stop, VirtError> {
        self.cpu.countdown = 0;
        let mut prev = NONE;
        loop {
            if self.cpu.countdown <= 0 {
                prev = NONE;
                if let Some(s) = self.events(io, &opts)? {
                    tracing::debug!(
                        vp = self.cpu.index,
                        instructions = self.cpu.icount,
                        chained = self.cache.stats[0],
                        jump_cache = self.cache.stats[1],
                        slow = self.cache.stats[2],
                        blocks = self.cache.blocks.len(),
                        tlb_epoch = self.cpu.tlb.epoch,
                        "block lookups"
                    );
                    return Ok(s);
                }
                continue;
            }
            self.cpu.countdown -= 1;
            let rip = self.cpu.regs[RIP] & self.cpu.ip_mask;
            self.cpu.regs[RIP] = rip;
            let lin = rip.wrapping_add(self.cpu.seg_base[CS]) & self.cpu.lin_mask;
            let idx = match self.cache.chained(&self.cpu, prev, lin) {
                Some(idx) => {
                    self.cache.stats[0] += 1;
                    idx
                }
                None => {
                    let flushes = self.cache.flushes;
                    match self.cache.lookup(&mut self.cpu, rip, lin, io) {
                        Ok(idx) => {
                            if flushes == self.cache.flushes {
                                self.cache.link(&self.cpu, prev, lin, idx);
                            }
                            idx
                        }
                        Err(e) => {
                            prev = NONE;
                            if let Some(s) = self.handle(e, io)? {
                                return Ok(s);
                            }
                            continue;
                        }
                    }
                }
            };
            match self.exec_block(idx, io) {
                Ok(()) => {
                    prev = idx;
                    if self.cpu.smc {
                        self.cpu.smc = false;
                        prev = NONE;
                    }
                }
                Err(e) => {
                    prev = NONE;
                    if let Some(s) = self.handle(e, io)? {
                        return Ok(s);
                    }
                }
            }
        }
    }

    /// Executes block `idx`; RIP is rolled back to the faulting instruction on a fault.
    #[inline(always)]
    fn exec_block(&mut self, idx: u32, io: &dyn ExitHandler) -> Result<(), Ex> {
        let cpu = &mut self.cpu;
        let ops = &self.cache.blocks[idx as usize].ops;
        let ops = if self.one_insn {
            self.one_insn = false;
            cpu.countdown = 0;
            &ops[..1]
        } else {
            &ops[..]
        };
        let mut n = 0u64;
        // Only the last op of a block changes RIP, so the next instruction's address is
        // tracked in a register rather than reloaded from memory after every handler.
        let mut next = cpu.regs[RIP];
        // One op: returns from `exec_block` on a fault, breaks out on an exit request.
        macro_rules! step {
            ($op:expr) => {{
                let op = $op;
                let start = next;
                next = start.wrapping_add(u64::from(op.len));
                cpu.regs[RIP] = next;
                if let Err(e) = (op.f)(cpu, op, io) {
                    if !matches!(e, Ex::Halt) {
                        let skip = std::mem::take(&mut cpu.fault_skip);
                        cpu.regs[RIP] = start.wrapping_add(u64::from(skip));
                    } else {
                        n += 1;
                    }
                    cpu.icount += n;
                    cpu.exit_req = false;
                    return Err(e);
                }
                n += 1;
                cpu.exit_req
            }};
        }
        // Unrolled by eight: in a long block each position of a group has its own indirect
        // call, so the host's branch predictor sees which handler follows which instead of
        // one call site that jumps everywhere. Measured: Linux boots 4-5% faster. (Sending
        // every op through the unrolled sites, short blocks included, was slower.)
        let mut groups = ops.chunks_exact(8);
        'ops: {
            for g in groups.by_ref() {
                if step!(&g[0])
                    || step!(&g[1])
                    || step!(&g[2])
                    || step!(&g[3])
                    || step!(&g[4])
                    || step!(&g[5])
                    || step!(&g[6])
                    || step!(&g[7])
                {
                    break 'ops;
                }
            }
            for op in groups.remainder() {
                if step!(op) {
                    break 'ops;
                }
            }
        }
        cpu.exit_req = false;
        cpu.icount += n;
        Ok(())
    }

    /// Handles a non-local exit of a block.
    fn handle(&mut self, e: Ex, io: &dyn ExitHandler) -> Result<Option<Stop>, VirtError> {
        match e {
            Ex::Fault(v, code) => {
                self.exceptions += 1;
                let r = self.cpu.raise(v, Event::Exception, code, io);
                match r {
                    Ok(()) => Ok(None),
                    Err(Ex::Shutdown) => Ok(Some(self.triple_fault())),
                    Err(Ex::Internal) => {
                        Err(VirtError::Internal(std::mem::take(&mut self.cpu.internal)))
                    }
                    Err(other) => Err(VirtError::Internal(format!(
                        "unexpected {other:?} during delivery"
                    ))),
                }
            }
            Ex::Halt => {
                self.cpu.halted = true;
                self.cpu.countdown = 0;
                Ok(None)
            }
            Ex::Restart => Ok(None),
            Ex::Shutdown => Ok(Some(self.triple_fault())),
            Ex::Internal => Err(VirtError::Internal(std::mem::take(&mut self.cpu.internal))),
        }
    }

    fn triple_fault(&mut self) -> Stop {
        tracing::info!(
            vp = self.cpu.index,
            rip = format_args!("{:#x}", self.cpu.regs[RIP]),
            "triple fault"
        );
        Stop::TripleFault
    }

    /// Event check at a block boundary: stop requests, INIT/SIPI, the APIC timer, NMI and
    /// interrupts, halt. Returns a stop reason, or `None` to continue.
    fn events(
        &mut self,
        io: &dyn ExitHandler,
        opts: &RunOptions,
    ) -> Result<Option<Stop>, VirtError> {
        let cpu = &mut self.cpu;
        cpu.countdown = EVENT_INTERVAL;
        let shared = cpu.shared.clone();
        let vs = &shared.vps[cpu.index as usize];
        vs.attention.store(false, Ordering::Release);
        vs.icount.store(cpu.icount, Ordering::Relaxed);
        cpu.now_ns = shared.clock.now_ns();
        if cpu.now_ns >= self.next_sample_ns {
            // A cheap where-is-the-guest sampler for diagnosing slow boots.
            self.next_sample_ns = cpu.now_ns + 100_000_000;
            tracing::trace!(
                vp = cpu.index,
                rip = format_args!("{:#x}", cpu.regs[RIP]),
                cpl = cpu.cpl,
                halted = cpu.halted,
                instructions = cpu.icount,
                "sample"
            );
        }
        let code_epoch = cpu.mem.code_epoch();
        if code_epoch != cpu.seen_code_epoch {
            cpu.seen_code_epoch = code_epoch;
            cpu.tlb.epoch = cpu.tlb.epoch.wrapping_add(1);
        }
        if shared.stop.load(Ordering::Acquire) {
            return Ok(Some(Stop::Stopped));
        }
        if let Some(max) = opts.max_instructions
            && cpu.icount.saturating_add(self.exceptions) >= max
        {
            return Ok(Some(Stop::Limit));
        }
        if vs.init.swap(false, Ordering::AcqRel) {
            cpu.init();
        }
        if cpu.wait_for_sipi {
            let sipi = vs.sipi.swap(0, Ordering::AcqRel);
            if sipi != 0 {
                cpu.start_at_sipi(sipi as u8);
            } else {
                if opts.stop_on_halt {
                    return Ok(Some(Stop::Halted));
                }
                vs.sleep(None);
                cpu.countdown = 0;
                return Ok(None);
            }
        } else {
            vs.sipi.store(0, Ordering::Relaxed);
        }
        let mut next_deadline = None;
        if cpu.apic.timer_deadline_ns.is_some() {
            let now = cpu.now_ns;
            next_deadline = cpu.apic_timer_poll(now);
        }
        if cpu.shadow {
            // One more instruction runs before anything is delivered.
            cpu.shadow = false;
            if !cpu.halted {
                self.one_insn = true;
                return Ok(None);
            }
        }
        let r = cpu.deliver_pending(io);
        match r {
            Ok(true) => {
                cpu.countdown = 0;
                return Ok(None);
            }
            Ok(false) => {}
            Err(Ex::Shutdown) => return Ok(Some(self.triple_fault())),
            Err(Ex::Internal) => {
                return Err(VirtError::Internal(std::mem::take(&mut cpu.internal)));
            }
            Err(e) => {
                return Err(VirtError::Internal(format!(
                    "unexpected {e:?} delivering an event"
                )));
            }
        }
        if cpu.halted {
            if opts.stop_on_halt {
                return Ok(Some(Stop::Halted));
            }
            let timeout = next_deadline
                .map(|d| std::time::Duration::from_nanos(d.saturating_sub(shared.clock.now_ns())));
            vs.sleep(timeout);
            cpu.countdown = 0;
        }
        Ok(None)
    }
}

impl Cpu {
    /// INIT: back to the RESET state; application processors then wait for SIPI.
    pub(crate) fn init(&mut self) {
        let apic_id = self.apic.id;
        let base = self.apic.base_msr;
        self.reset();
        self.apic.id = apic_id;
        self.apic_base_write_internal(base);
        self.wait_for_sipi = self.index != 0;
        self.halted = false;
    }

    /// SIPI: start in real mode at `vector * 4096`.
    pub(crate) fn start_at_sipi(&mut self, vector: u8) {
        let mut cs = self.seg[CS];
        cs.selector = u16::from(vector) << 8;
        cs.base = u64::from(vector) << 12;
        self.seg[CS] = cs;
        self.regs[RIP] = 0;
        self.wait_for_sipi = false;
        self.halted = false;
        self.update_mode();
    }

    /// Delivers the highest-priority pending NMI or interrupt, if one can be taken now.
    fn deliver_pending(&mut self, io: &dyn ExitHandler) -> Result<bool, Ex> {
        let shared = self.shared.clone();
        let vs = &shared.vps[self.index as usize];
        if !self.nmi_blocked && vs.nmi.swap(false, Ordering::AcqRel) {
            self.raise(crate::cpu::NMI, Event::Nmi, 0, io)?;
            return Ok(true);
        }
        if self.flags & flags::IF == 0 {
            return Ok(false);
        }
        if let Some(v) = self.apic_pending_vector() {
            self.apic_accept(v);
            self.raise(v, Event::External, 0, io)?;
            return Ok(true);
        }
        let extint = (shared.extint.load(Ordering::Acquire) && self.accepts_pic())
            || vs.extint_msg.swap(false, Ordering::AcqRel);
        if extint && let Some(v) = io.pic_acknowledge() {
            self.raise(v, Event::External, 0, io)?;
            return Ok(true);
        }
        Ok(false)
    }
}

impl virt::Processor for Vp {
    fn index(&self) -> u32 {
        self.cpu.index
    }

    fn registers(&mut self) -> Result<virt::Registers, VirtError> {
        Ok(self.cpu.gregs())
    }

    fn set_registers(&mut self, regs: &virt::Registers) -> Result<(), VirtError> {
        self.cpu.set_gregs(regs);
        Ok(())
    }

    fn special_registers(&mut self) -> Result<virt::SpecialRegisters, VirtError> {
        Ok(self.cpu.sregs())
    }

    fn set_special_registers(&mut self, sregs: &virt::SpecialRegisters) -> Result<(), VirtError> {
        self.cpu.apply_sregs(sregs);
        // A processor whose state was set explicitly is runnable.
        if sregs.cr0 & crate::cpu::CR0_PE != 0 {
            self.cpu.wait_for_sipi = false;
        }
        Ok(())
    }

    fn run(&mut self, exits: &dyn ExitHandler) -> Result<VpExit, VirtError> {
        match self.run_with(exits, RunOptions::default())? {
            Stop::TripleFault => Ok(VpExit::TripleFault),
            _ => Ok(VpExit::Stopped),
        }
    }
}
