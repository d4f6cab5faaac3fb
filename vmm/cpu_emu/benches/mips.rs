//! MIPS of the `emu` CPU on small loops (a bench runner, not a test).
//!
//! `cargo bench -p cpu_emu --bench mips`
//!
//! Each program runs in 64-bit mode on a standalone processor; the figure is guest
//! instructions retired per second of wall time.

use std::time::Instant;

use cpu_emu::RunOptions;
use cpu_emu::Vp;
use guest_mem::GuestMemory;
use iced_x86::code_asm::*;
use virt::Processor;

const CODE: u64 = 0x10_0000;

fn long_mode_vp(code: &[u8]) -> Vp {
    let mem = GuestMemory::allocate(16 << 20);
    // Identity map 1 GiB with 2 MiB pages at 0x10000; GDT at 0x1000.
    mem.write_plain(0x10000u64, &(0x11000u64 | 3)).unwrap();
    mem.write_plain(0x11000u64, &(0x12000u64 | 3)).unwrap();
    for i in 0..512u64 {
        mem.write_plain(0x12000 + 8 * i, &((i << 21) | 0x83))
            .unwrap();
    }
    mem.write_plain(0x1008u64, &0x00af_9b00_0000_ffffu64)
        .unwrap();
    mem.write_plain(0x1010u64, &0x00cf_9300_0000_ffffu64)
        .unwrap();
    mem.write_at(CODE, code).unwrap();
    let mut vp = Vp::standalone(mem);
    let flat = virt::SegmentRegister::flat;
    let mut s = vp.special_registers().unwrap();
    s.cs = flat(8, 0xa09b);
    s.ds = flat(0x10, 0xc093);
    s.es = s.ds;
    s.ss = s.ds;
    s.fs = s.ds;
    s.gs = s.ds;
    s.gdtr = virt::TableRegister {
        base: 0x1000,
        limit: 0x17,
    };
    s.cr0 = 0x8000_0033;
    s.cr3 = 0x10000;
    s.cr4 = 0x620;
    s.efer = 0x500;
    vp.set_special_registers(&s).unwrap();
    let mut r = vp.registers().unwrap();
    r.rip = CODE;
    r.gpr[4] = 0x8_0000;
    vp.set_registers(&r).unwrap();
    vp
}

/// CPU time of the calling thread (the machine running this is shared; wall time is not).
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn run(name: &str, code: Vec<u8>) {
    if let Ok(only) = std::env::var("EMU_BENCH_ONLY")
        && !name.contains(&only)
    {
        return;
    }
    let mut vp = long_mode_vp(&code);
    let t = Instant::now();
    let c0 = thread_cpu_seconds();
    vp.run_with(
        &virt::NoDevices,
        RunOptions {
            stop_on_halt: true,
            max_instructions: None,
        },
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let cpu = (thread_cpu_seconds() - c0).max(0.01);
    let n = vp.instructions();
    println!(
        "{name:<28} {n:>12} instructions {secs:>7.3} s wall {cpu:>7.2} s CPU {:>8.1} M instr/s wall {:>8.1} M instr/s CPU",
        n as f64 / secs / 1e6,
        n as f64 / cpu / 1e6
    );
}

fn main() {
    let iters = std::env::var("EMU_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000_000u32);
    let tight = {
        let mut a = CodeAssembler::new(64).unwrap();
        let mut l = a.create_label();
        a.mov(ecx, iters).unwrap();
        a.set_label(&mut l).unwrap();
        a.dec(rcx).unwrap();
        a.jnz(l).unwrap();
        a.hlt().unwrap();
        a.assemble(CODE).unwrap()
    };
    run("tight loop (dec/jnz)", tight);
    // A kernel-like mix: loads, stores, ALU, a compare and two branches per iteration.
    let mix = {
        let mut a = CodeAssembler::new(64).unwrap();
        let mut l = a.create_label();
        let mut skip = a.create_label();
        a.mov(ecx, iters / 8).unwrap();
        a.mov(esi, 0x20_0000u32).unwrap();
        a.xor(eax, eax).unwrap();
        a.set_label(&mut l).unwrap();
        a.mov(rdx, qword_ptr(rsi + 8)).unwrap();
        a.add(rax, rdx).unwrap();
        a.mov(rbx, rax).unwrap();
        a.shr(rbx, 3).unwrap();
        a.xor(rbx, rcx).unwrap();
        a.mov(qword_ptr(rsi + 16), rbx).unwrap();
        a.movzx(edi, byte_ptr(rsi + 1)).unwrap();
        a.lea(rdi, qword_ptr(rdi + rbx * 2 + 7)).unwrap();
        a.cmp(rdi, rdx).unwrap();
        a.jb(skip).unwrap();
        a.inc(rax).unwrap();
        a.set_label(&mut skip).unwrap();
        a.push(rax).unwrap();
        a.pop(rdx).unwrap();
        a.dec(rcx).unwrap();
        a.jnz(l).unwrap();
        a.hlt().unwrap();
        a.assemble(CODE).unwrap()
    };
    run("mixed loop (ALU/mem/stack)", mix);
    // Calls and returns.
    let calls = {
        let mut a = CodeAssembler::new(64).unwrap();
        let mut l = a.create_label();
        let mut f = a.create_label();
        let mut done = a.create_label();
        a.mov(ecx, iters / 4).unwrap();
        a.set_label(&mut l).unwrap();
        a.call(f).unwrap();
        a.dec(rcx).unwrap();
        a.jnz(l).unwrap();
        a.jmp(done).unwrap();
        a.set_label(&mut f).unwrap();
        a.ret().unwrap();
        a.set_label(&mut done).unwrap();
        a.hlt().unwrap();
        a.assemble(CODE).unwrap()
    };
    run("call/ret loop", calls);
    // The shape of Linux's generic `mpihelp_addmul_1` (32-bit half products, carries through
    // cmp/cmov/setb): a third of a Debian 6.1 boot verifies X.509 signatures with it.
    let bignum = {
        let mut a = CodeAssembler::new(64).unwrap();
        let mut l = a.create_label();
        a.mov(r10d, iters / 24).unwrap();
        a.mov(r8, 0x1234_5678u64).unwrap();
        a.mov(r9, 0x9abc_def0u64).unwrap();
        a.mov(r11d, 0x20_0000u32).unwrap();
        a.xor(esi, esi).unwrap();
        a.set_label(&mut l).unwrap();
        a.mov(rcx, qword_ptr(r11 + 8)).unwrap();
        a.mov(rdx, rcx).unwrap();
        a.mov(ecx, ecx).unwrap();
        a.shr(rdx, 32).unwrap();
        a.mov(rax, rcx).unwrap();
        a.imul_2(rax, r8).unwrap();
        a.mov(r13, rdx).unwrap();
        a.imul_2(r13, r8).unwrap();
        a.imul_2(rcx, r9).unwrap();
        a.imul_2(rdx, r9).unwrap();
        a.mov(r14, rax).unwrap();
        a.mov(eax, eax).unwrap();
        a.shr(r14, 32).unwrap();
        a.add(rcx, r13).unwrap();
        a.add(rcx, r14).unwrap();
        a.cmp(rcx, r13).unwrap();
        a.cmovae(rdx, r14).unwrap();
        a.add(rax, rsi).unwrap();
        a.cmp(rax, rsi).unwrap();
        a.setb(sil).unwrap();
        a.movzx(esi, sil).unwrap();
        a.add(qword_ptr(r11 + 16), rax).unwrap();
        a.dec(r10d).unwrap();
        a.jnz(l).unwrap();
        a.hlt().unwrap();
        a.assemble(CODE).unwrap()
    };
    run("bignum loop (mpihelp-like)", bignum);
}
