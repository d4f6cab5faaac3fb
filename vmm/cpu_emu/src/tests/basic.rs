//! Integer instructions in 64-bit mode.

use iced_x86::code_asm::*;

use super::harness::*;
use crate::vp::Stop;

#[test]
fn sum_loop_computes_in_registers() {
    let code = asm(64, CODE, |a| {
        let mut l = a.create_label();
        a.mov(ecx, 100u32)?;
        a.xor(eax, eax)?;
        a.set_label(&mut l)?;
        a.add(rax, rcx)?;
        a.dec(rcx)?;
        a.jnz(l)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    assert_eq!(m.run(), Stop::Halted);
    let r = m.regs();
    assert_eq!(r.gpr[0], 5050);
    assert_eq!(r.gpr[1], 0);
    assert_eq!(r.rip, CODE + code.len() as u64);
    assert!(m.vp.instructions() > 300);
}

#[test]
fn call_ret_push_pop_and_stack_pointer() {
    let code = asm(64, CODE, |a| {
        let mut f = a.create_label();
        a.mov(rax, 0x1122_3344_5566_7788u64)?;
        a.push(rax)?;
        a.call(f)?;
        a.pop(rdx)?;
        a.hlt()?;
        a.set_label(&mut f)?;
        a.mov(rbx, qword_ptr(rsp + 8))?;
        a.ret()
    });
    let mut m = Machine::long_mode(&code);
    assert_eq!(m.run(), Stop::Halted);
    let r = m.regs();
    assert_eq!(r.gpr[3], 0x1122_3344_5566_7788);
    assert_eq!(r.gpr[2], 0x1122_3344_5566_7788);
    assert_eq!(r.gpr[4], STACK);
}

#[test]
fn memory_operands_rip_relative_and_byte_registers() {
    let data = CODE + 0x800;
    let code = asm(64, CODE, |a| {
        let mut d = a.create_label();
        a.mov(rax, qword_ptr(d))?;
        a.mov(ebx, 0x2000u32)?;
        a.mov(ecx, 3u32)?;
        a.mov(qword_ptr(rbx + rcx * 8 + 16), rax)?;
        a.add(qword_ptr(rbx + rcx * 8 + 16), 5)?;
        a.mov(rdx, qword_ptr(rbx + 40))?;
        a.mov(ah, 0x12)?;
        a.mov(al, 0x34)?;
        a.movzx(esi, ah)?;
        a.movsx(rdi, byte_ptr(d))?;
        a.hlt()?;
        a.zero_bytes()?;
        a.set_label(&mut d)?;
        a.dq(&[0xffff_ffff_ffff_fff0])
    });
    let _ = data;
    let mut m = Machine::long_mode(&code);
    assert_eq!(m.run(), Stop::Halted);
    let r = m.regs();
    assert_eq!(m.r64(0x2000 + 40), 0xffff_ffff_ffff_fff5);
    assert_eq!(r.gpr[2], 0xffff_ffff_ffff_fff5);
    assert_eq!(r.gpr[0] & 0xffff, 0x1234);
    assert_eq!(r.gpr[6], 0x12);
    assert_eq!(r.gpr[7], 0xffff_ffff_ffff_fff0);
}

#[test]
fn thirty_two_bit_writes_zero_extend_and_sixteen_bit_merge() {
    let code = asm(64, CODE, |a| {
        a.mov(rax, -1i64)?;
        a.mov(rbx, -1i64)?;
        a.mov(eax, 5u32)?;
        a.mov(bx, 7u32)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.run();
    let r = m.regs();
    assert_eq!(r.gpr[0], 5);
    assert_eq!(r.gpr[3], 0xffff_ffff_ffff_0007);
}

#[test]
fn flags_drive_conditional_moves_and_sets() {
    let code = asm(64, CODE, |a| {
        a.mov(eax, 5u32)?;
        a.cmp(eax, 7)?;
        a.setb(bl)?;
        a.setl(cl)?;
        a.seta(dl)?;
        a.mov(esi, 11u32)?;
        a.mov(edi, 22u32)?;
        a.cmovb(esi, edi)?;
        a.mov(r8d, 0x7fff_ffffu32)?;
        a.add(r8d, 1)?;
        a.seto(r9b)?;
        a.sets(r10b)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.run();
    let r = m.regs();
    assert_eq!(r.gpr[3] & 0xff, 1);
    assert_eq!(r.gpr[1] & 0xff, 1);
    assert_eq!(r.gpr[2] & 0xff, 0);
    assert_eq!(r.gpr[6], 22);
    assert_eq!(r.gpr[9] & 0xff, 1);
    assert_eq!(r.gpr[10] & 0xff, 1);
}

#[test]
fn multiply_divide_and_divide_error() {
    // #DE handler at CODE+0x800 records the faulting RIP from the frame.
    let handler = CODE + 0x800;
    let code = asm(64, CODE, |a| {
        a.mov(rax, 0x1_0000_0000u64)?;
        a.mov(rcx, 0x1_0000_0001u64)?;
        a.mul(rcx)?; // rdx:rax = 2^64 + 2^32
        a.mov(r8, rdx)?;
        a.mov(r9, rax)?;
        a.mov(eax, 100u32)?;
        a.xor(edx, edx)?;
        a.mov(ecx, 7u32)?;
        a.div(ecx)?;
        a.mov(r10, rax)?;
        a.mov(r11, rdx)?;
        a.xor(ecx, ecx)?;
        a.div(ecx)?;
        a.hlt()
    });
    let h = asm(64, handler, |a| {
        a.mov(rax, qword_ptr(rsp))?;
        a.mov(dx, 0xe9u32)?;
        a.out(dx, eax)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.write(handler, &h);
    m.set_gate64(0, handler, 0, 0);
    m.run();
    let r = m.regs();
    assert_eq!(r.gpr[8], 1);
    assert_eq!(r.gpr[9], 0x1_0000_0000);
    assert_eq!(r.gpr[10], 14);
    assert_eq!(r.gpr[11], 2);
    // The pushed RIP is the DIV itself (a fault).
    let div_at = code.len() as u64 - 3;
    assert_eq!(m.io.port(0xe9), vec![(CODE + div_at - 0) & 0xffff_ffff]);
}

#[test]
fn rep_string_moves_fills_and_scans() {
    let code = asm(64, CODE, |a| {
        a.mov(edi, 0x20000u32)?;
        a.mov(eax, 0x5au32)?;
        a.mov(ecx, 10000u32)?;
        a.rep().stosb()?;
        a.mov(esi, 0x20000u32)?;
        a.mov(edi, 0x30000u32)?;
        a.mov(ecx, 1250u32)?;
        a.rep().movsq()?;
        // Overlapping forward copy replicates a pattern.
        a.mov(dword_ptr(0x40000), 0x0403_0201)?;
        a.mov(esi, 0x40000u32)?;
        a.mov(edi, 0x40001u32)?;
        a.mov(ecx, 15u32)?;
        a.rep().movsb()?;
        // Scan for a byte that is not 0x5a.
        a.mov(byte_ptr(0x20000 + 777), 0)?;
        a.mov(edi, 0x20000u32)?;
        a.mov(ecx, 10000u32)?;
        a.mov(eax, 0x5au32)?;
        a.repe().scasb()?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.run();
    let mut buf = vec![0u8; 10000];
    m.mem.read_at(0x30000, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0x5a));
    let mut p = [0u8; 16];
    m.mem.read_at(0x40000, &mut p).unwrap();
    assert_eq!(p, [1; 16]);
    let r = m.regs();
    assert_eq!(r.gpr[7], 0x20000 + 778);
    assert_eq!(r.gpr[1], 10000 - 778);
}

#[test]
fn atomics_cmpxchg_xadd_xchg() {
    let code = asm(64, CODE, |a| {
        a.mov(qword_ptr(0x5000), 10)?;
        a.mov(eax, 10u32)?;
        a.mov(ecx, 20u32)?;
        a.lock().cmpxchg(qword_ptr(0x5000), rcx)?;
        a.setz(r8b)?;
        a.mov(eax, 99u32)?;
        a.lock().cmpxchg(qword_ptr(0x5000), rcx)?; // fails: rax <- 20
        a.setz(r9b)?;
        a.mov(edx, 5u32)?;
        a.lock().xadd(qword_ptr(0x5000), rdx)?; // rdx <- 20, mem 25
        a.mov(ebx, 1u32)?;
        a.xchg(qword_ptr(0x5000), rbx)?; // rbx <- 25, mem 1
        a.lock().inc(qword_ptr(0x5000))?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.run();
    let r = m.regs();
    assert_eq!(r.gpr[8] & 0xff, 1);
    assert_eq!(r.gpr[9] & 0xff, 0);
    assert_eq!(r.gpr[0], 20);
    assert_eq!(r.gpr[2], 20);
    assert_eq!(r.gpr[3], 25);
    assert_eq!(m.r64(0x5000), 2);
}

#[test]
fn shifts_rotates_and_bit_scans() {
    let code = asm(64, CODE, |a| {
        a.mov(eax, 0x8000_0001u32)?;
        a.rol(eax, 1)?; // 3, CF=1
        a.setc(r8b)?;
        a.mov(ebx, 0x10u32)?;
        a.mov(cl, 3)?;
        a.shl(rbx, cl)?; // 0x80
        a.mov(rdx, -16i64)?;
        a.sar(rdx, 2)?; // -4
        a.mov(esi, 0x0100_0000u32)?;
        a.bsr(edi, esi)?; // 24
        a.bsf(r9d, esi)?; // 24
        a.mov(r10, -1i64)?;
        a.xor(r11d, r11d)?;
        a.bsf(r10, r11)?; // zero source: r10 unchanged, ZF=1
        a.setz(r12b)?;
        a.mov(r13d, 0b1011u32)?;
        a.bt(r13d, 1)?;
        a.setc(r14b)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.run();
    let r = m.regs();
    assert_eq!(r.gpr[0], 3);
    assert_eq!(r.gpr[8] & 0xff, 1);
    assert_eq!(r.gpr[3], 0x80);
    assert_eq!(r.gpr[2], (-4i64) as u64);
    assert_eq!(r.gpr[7], 24);
    assert_eq!(r.gpr[9], 24);
    assert_eq!(r.gpr[10], u64::MAX);
    assert_eq!(r.gpr[12] & 0xff, 1);
    assert_eq!(r.gpr[14] & 0xff, 1);
}

#[test]
fn unimplemented_instruction_raises_ud_and_is_counted() {
    let handler = CODE + 0x800;
    let code = asm(64, CODE, |a| {
        a.nop()?;
        a.db(&[0xc5, 0xf1, 0xef, 0xc0])?; // vpxor xmm0, xmm1, xmm0 (no AVX here)
        a.hlt()
    });
    let h = asm(64, handler, |a| {
        a.mov(rax, qword_ptr(rsp))?;
        a.mov(dx, 0xe9u32)?;
        a.out(dx, eax)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.write(handler, &h);
    m.set_gate64(6, handler, 0, 0);
    m.run();
    assert_eq!(m.io.port(0xe9), vec![CODE + 1]);
    assert_eq!(m.vp.unimplemented_instructions(), 1);
}

#[test]
fn stores_into_code_invalidate_decoded_blocks() {
    // The first pass runs `mov eax, 1`; the code then patches that immediate to 2 and loops.
    let code = asm(64, CODE, |a| {
        let mut top = a.create_label();
        let mut done = a.create_label();
        a.xor(ebx, ebx)?;
        a.set_label(&mut top)?;
        a.mov(eax, 1u32)?; // b8 01 00 00 00 at CODE+2
        a.add(ebx, eax)?;
        a.cmp(ebx, 3)?;
        a.jae(done)?;
        a.mov(byte_ptr(CODE + 3), 2)?;
        a.jmp(top)?;
        a.set_label(&mut done)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.run();
    assert_eq!(m.regs().gpr[3], 3);
}

#[test]
fn self_modifying_store_within_the_same_block() {
    // The patched instruction follows the store in the same straight-line block.
    let build = |patch: u64| {
        asm(64, CODE, |a| {
            a.mov(byte_ptr(patch), 7)?;
            a.nop()?;
            a.mov(eax, 1u32)?;
            a.hlt()
        })
    };
    let probe = build(CODE);
    let at = probe.iter().position(|&b| b == 0xb8).unwrap() as u64;
    let code = build(CODE + at + 1);
    let mut m = Machine::long_mode(&code);
    m.run();
    assert_eq!(m.regs().gpr[0], 7);
}

#[test]
fn block_cache_hits_through_links_and_the_jump_cache() {
    let code = asm(64, CODE, |a| {
        let mut l = a.create_label();
        a.mov(ecx, 100000u32)?;
        a.set_label(&mut l)?;
        a.dec(rcx)?;
        a.jnz(l)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.run();
    let [chained, jc, slow] = m.vp.cache_stats();
    assert!(chained > 90_000, "chained {chained}");
    assert!(slow < 10, "slow {slow}");
    assert!(jc > 100, "jump cache {jc}");
}

#[test]
fn chain_links_into_patched_code_are_dropped() {
    // `f` lives on another page and is reached through a chain link from the loop; the loop
    // patches f's immediate to the loop counter after each call, so every call must see
    // the previous iteration's patch: 1 + 3 + 2.
    let f_at = CODE + 0x1000;
    let code = asm(64, CODE, |a| {
        let mut top = a.create_label();
        a.xor(ebx, ebx)?;
        a.mov(ecx, 3u32)?;
        a.mov(edi, f_at as u32)?;
        a.set_label(&mut top)?;
        a.call(rdi)?;
        a.add(ebx, eax)?;
        a.mov(byte_ptr(f_at + 1), cl)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()
    });
    let f = asm(64, f_at, |a| {
        a.mov(eax, 1u32)?;
        a.ret()
    });
    let mut m = Machine::long_mode(&code);
    m.write(f_at, &f);
    m.run();
    assert_eq!(m.regs().gpr[3], 6);
}
