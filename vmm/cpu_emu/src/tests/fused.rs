//! Fused compare-and-branch ops (`exec::fused`): same results, counts and fault addresses as
//! the two instructions run one by one.

use iced_x86::code_asm::*;

use super::harness::*;
use crate::vp::Stop;

#[test]
fn every_fused_form_branches_like_the_pair_and_counts_both_instructions() {
    let data = 0x2000u32;
    let code = asm(64, CODE, |a| {
        let mut top = a.create_label();
        let mut skip1 = a.create_label();
        let mut skip2 = a.create_label();
        let mut skip3 = a.create_label();
        let mut skip4 = a.create_label();
        let mut skip5 = a.create_label();
        let mut d = a.create_label();
        a.mov(ecx, 10u32)?; // loop counter
        a.xor(esi, esi)?; // bit 0..5 counters in esi, edi, r8..r11
        a.xor(edi, edi)?;
        a.xor(r8d, r8d)?;
        a.xor(r9d, r9d)?;
        a.xor(r10d, r10d)?;
        a.xor(r11d, r11d)?;
        a.mov(ebx, data)?;
        a.set_label(&mut top)?;
        // reg, imm (64-bit, signed condition)
        a.cmp(rcx, 5)?;
        a.jle(skip1)?;
        a.inc(esi)?;
        a.set_label(&mut skip1)?;
        // reg, reg (32-bit, unsigned)
        a.mov(eax, 7u32)?;
        a.cmp(ecx, eax)?;
        a.jae(skip2)?;
        a.inc(edi)?;
        a.set_label(&mut skip2)?;
        // test reg, imm (8-bit)
        a.test(cl, 1)?;
        a.jz(skip3)?;
        a.inc(r8d)?;
        a.set_label(&mut skip3)?;
        // mem, reg (64-bit) and reg, mem: [rbx] holds 4
        a.mov(qword_ptr(rbx), 4)?;
        a.cmp(qword_ptr(rbx), rcx)?;
        a.jb(skip4)?;
        a.inc(r9d)?;
        a.set_label(&mut skip4)?;
        // reg, mem RIP-relative (the operand is relative to the end of the cmp alone)
        a.cmp(rcx, qword_ptr(d))?;
        a.jne(skip5)?;
        a.inc(r10d)?;
        a.set_label(&mut skip5)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()?;
        a.zero_bytes()?;
        a.set_label(&mut d)?;
        a.dq(&[3])
    });
    let mut m = Machine::long_mode(&code);
    assert_eq!(m.run(), Stop::Halted);
    let r = m.regs();
    assert_eq!(r.gpr[6], 5, "rcx in 6..=10 is > 5");
    assert_eq!(r.gpr[7], 6, "ecx in 1..=6 is below 7");
    assert_eq!(r.gpr[8], 5, "odd ecx");
    assert_eq!(r.gpr[9], 4, "4 >= ecx for ecx in 1..=4");
    assert_eq!(r.gpr[10], 1, "ecx == 3 once");
    // 8 setup + 10 iterations x (14 + one inc per taken counter) + hlt.
    let incs = 5 + 6 + 5 + 4 + 1;
    assert_eq!(m.vp.instructions(), 8 + 10 * 14 + incs + 1);
}

#[test]
fn a_faulting_fused_compare_reports_the_compare() {
    let handler = CODE + 0x800;
    let code = asm(64, CODE, |a| {
        let mut l = a.create_label();
        a.mov(rbx, 0x8000_0000_0000_0000u64)?;
        a.cmp(qword_ptr(rbx), rax)?; // non-canonical: #GP at the cmp
        a.je(l)?;
        a.set_label(&mut l)?;
        a.hlt()
    });
    let h = asm(64, handler, |a| {
        a.pop(rax)?; // error code
        a.out(0xe9, eax)?;
        a.pop(rax)?; // RIP
        a.out(0xe9, eax)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.write(handler, &h);
    m.set_gate64(13, handler, 0, 0);
    assert_eq!(m.run(), Stop::Halted);
    assert_eq!(m.io.port(0xe9), vec![0, CODE + 10]);
}

#[test]
fn a_fused_branch_past_the_code_segment_limit_faults_at_the_branch_after_the_compare() {
    let mut m = Machine::protected_mode32(0x8fff, 0x409b);
    m.set_gate32(13, 0x9000); // #GP, through the flat 32-bit code descriptor
    let main = asm(32, 0x8000, |a| {
        a.mov(eax, 1u32)?;
        a.cmp(eax, 2)?; // ZF = 0, CF = 1
        a.db(&[0x0f, 0x85, 0x00, 0x10, 0x00, 0x00])?; // jne +0x1000: past the 0x8fff limit
        a.hlt()
    });
    let handler = asm(32, 0x9000, |a| {
        a.pop(eax)?; // error code
        a.out(0xe9, eax)?;
        a.pop(eax)?; // EIP
        a.out(0xe9, eax)?;
        a.pop(eax)?; // CS
        a.pop(eax)?; // EFLAGS: the compare retired
        a.and(eax, 0x41)?;
        a.out(0xe9, eax)?;
        a.hlt()
    });
    m.write(0x8000, &main);
    m.write(0x9000, &handler);
    m.set_rip(0x8000);
    m.set_gpr(4, 0x7000);
    assert_eq!(m.run(), Stop::Halted);
    // The branch is the 6 bytes before the final HLT.
    let jne = 0x8000 + main.len() as u64 - 7;
    assert_eq!(m.io.port(0xe9), vec![0, jne, 0x01]);
}

#[test]
fn fused_arithmetic_stores_its_result_and_keeps_its_flags() {
    let code = asm(64, CODE, |a| {
        let mut l1 = a.create_label();
        let mut l2 = a.create_label();
        let mut l3 = a.create_label();
        a.mov(ecx, 5u32)?;
        a.xor(eax, eax)?;
        a.set_label(&mut l1)?;
        a.add(eax, 3)?;
        a.sub(ecx, 1)?; // sub reg, imm + jnz
        a.jnz(l1)?;
        a.sete(r10b)?; // the flags of the last sub are still there
        a.mov(rbx, -3i64)?;
        a.xor(esi, esi)?;
        a.set_label(&mut l2)?;
        a.inc(esi)?;
        a.add(rbx, 1)?; // 64-bit add + js
        a.js(l2)?;
        a.mov(edx, 1u32)?;
        a.xor(edi, edi)?;
        a.set_label(&mut l3)?;
        a.inc(edi)?;
        a.add(dl, dl)?; // 8-bit reg, reg + jns
        a.jns(l3)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    assert_eq!(m.run(), Stop::Halted);
    let r = m.regs();
    assert_eq!(r.gpr[0], 15);
    assert_eq!(r.gpr[1], 0);
    assert_eq!(r.gpr[10] & 0xff, 1, "ZF of the fused sub");
    assert_eq!(r.gpr[3], 0);
    assert_eq!(r.gpr[6], 3);
    assert_eq!(r.gpr[2] & 0xff, 0x80);
    assert_eq!(r.gpr[7], 7);
    assert_eq!(m.vp.instructions(), 53);
}
