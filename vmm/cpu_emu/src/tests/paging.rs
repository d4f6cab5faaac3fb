//! Page walks, TLB behavior and page faults.

use iced_x86::code_asm::*;

use super::harness::*;

/// Maps the 4 KiB page at `va` through a dedicated page table covering 2..4 MiB (replacing
/// the 2 MiB identity entry for that range) with `pte`.
fn map_4k(m: &Machine, va: u64, pte: u64) {
    let pt = 0x18000u64;
    if m.r64(PML4 + 0x2000 + 8) & 0x80 != 0 {
        // Split the 2..4 MiB large page into 4 KiB identity pages first.
        for i in 0..512u64 {
            m.w64(pt + 8 * i, (0x20_0000 + (i << 12)) | 7);
        }
        m.w64(PML4 + 0x2000 + 8, pt | 7);
    }
    m.w64(pt + 8 * ((va >> 12) & 0x1ff), pte);
}

/// A #PF handler that reports CR2 and the error code on ports 0xe0/0xe1, then maps the page
/// present+writable and returns to retry.
fn pf_handler(base: u64) -> Vec<u8> {
    asm(64, base, |a| {
        a.push(rax)?;
        a.push(rdx)?;
        a.push(rbx)?;
        a.mov(rax, cr2)?;
        a.mov(dx, 0xe0u32)?;
        a.out(dx, eax)?;
        a.mov(rax, qword_ptr(rsp + 24))?;
        a.mov(dx, 0xe1u32)?;
        a.out(dx, eax)?;
        // pte address = 0x18000 + ((cr2 >> 12) & 0x1ff) * 8
        a.mov(rbx, cr2)?;
        a.shr(rbx, 12)?;
        a.and(ebx, 0x1ff)?;
        a.mov(rax, cr2)?;
        a.and(rax, -4096i32)?;
        a.or(rax, 7)?;
        a.mov(qword_ptr(rbx * 8 + 0x18000), rax)?;
        a.mov(rax, cr2)?;
        a.invlpg(byte_ptr(rax))?;
        a.pop(rbx)?;
        a.pop(rdx)?;
        a.pop(rax)?;
        a.add(rsp, 8)?;
        a.iretq()
    })
}

#[test]
fn page_fault_reports_cr2_and_error_code_and_retries() {
    let handler = CODE + 0x800;
    let code = asm(64, CODE, |a| {
        a.mov(rax, qword_ptr(0x20_5008))?; // not present: read fault
        a.mov(dword_ptr(0x20_6010), 0x77)?; // not present: write fault
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.write(handler, &pf_handler(handler));
    m.set_gate64(14, handler, 0, 0);
    map_4k(&m, 0x20_5000, 0);
    map_4k(&m, 0x20_6000, 0);
    m.w64(0x20_5008, 0xabcd);
    m.run();
    assert_eq!(m.io.port(0xe0), vec![0x20_5008, 0x20_6010]);
    assert_eq!(m.io.port(0xe1), vec![0, 2]);
    assert_eq!(m.regs().gpr[0], 0xabcd);
    assert_eq!(m.mem.read_plain::<u32>(0x20_6010).unwrap(), 0x77);
}

#[test]
fn supervisor_write_to_read_only_page_faults_with_wp() {
    let handler = CODE + 0x800;
    let code = asm(64, CODE, |a| {
        a.mov(byte_ptr(0x20_7000), 1)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.write(handler, &pf_handler(handler));
    m.set_gate64(14, handler, 0, 0);
    map_4k(&m, 0x20_7000, 0x20_7000 | 5); // present, user, read-only
    m.run();
    assert_eq!(m.io.port(0xe1), vec![3]);
    assert_eq!(m.mem.read_plain::<u8>(0x20_7000).unwrap(), 1);
}

#[test]
fn fetch_from_nx_page_faults_with_instruction_bit() {
    let handler = CODE + 0x800;
    let code = asm(64, CODE, |a| {
        a.mov(eax, 0x20_8000u32)?;
        a.call(rax)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.write(handler, &pf_handler(handler));
    m.set_gate64(14, handler, 0, 0);
    m.write(0x20_8000, &[0xc3]); // ret
    map_4k(&m, 0x20_8000, 0x20_8000 | 7 | (1 << 63));
    m.run();
    assert_eq!(m.io.port(0xe0), vec![0x20_8000]);
    assert_eq!(m.io.port(0xe1), vec![0x11]);
}

#[test]
fn walks_set_accessed_and_dirty_bits() {
    let code = asm(64, CODE, |a| {
        a.mov(rax, qword_ptr(0x20_9000))?;
        a.mov(qword_ptr(0x20_a000), rax)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    map_4k(&m, 0x20_9000, 0x20_9000 | 7);
    map_4k(&m, 0x20_a000, 0x20_a000 | 7);
    m.run();
    let pte = |va: u64| m.r64(0x18000 + 8 * ((va >> 12) & 0x1ff));
    assert_eq!(pte(0x20_9000) & 0x60, 0x20, "read: accessed, not dirty");
    assert_eq!(pte(0x20_a000) & 0x60, 0x60, "write: accessed and dirty");
}

#[test]
fn invlpg_and_cr3_reload_drop_translations_but_global_pages_survive_cr3() {
    let code = asm(64, CODE, |a| {
        a.mov(rax, qword_ptr(0x20_b000))?; // caches -> frame 0x20b000 (value 1)
        a.mov(rbx, qword_ptr(0x20_c000))?; // global page -> frame 0x20c000 (value 3)
        // Remap both pages to frame 0x20d000 (value 2).
        a.mov(qword_ptr(0x18000 + 8 * 0xb), 0x20_d007)?;
        a.mov(qword_ptr(0x18000 + 8 * 0xc), 0x20_d107)?;
        a.mov(rcx, cr3)?;
        a.mov(cr3, rcx)?;
        a.mov(rsi, qword_ptr(0x20_b000))?; // new: 2
        a.mov(rdi, qword_ptr(0x20_c000))?; // global, still cached: 3
        a.invlpg(byte_ptr(0x20_c000))?;
        a.mov(r8, qword_ptr(0x20_c000))?; // now 2
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    map_4k(&m, 0x20_b000, 0x20_b000 | 7);
    map_4k(&m, 0x20_c000, 0x20_c000 | 7 | 0x100);
    m.w64(0x20_b000, 1);
    m.w64(0x20_c000, 3);
    m.w64(0x20_d000, 2);
    m.run();
    let r = m.regs();
    assert_eq!((r.gpr[0], r.gpr[3]), (1, 3));
    assert_eq!(r.gpr[6], 2);
    assert_eq!(r.gpr[7], 3);
    assert_eq!(r.gpr[8], 2);
}

#[test]
fn user_access_to_supervisor_page_faults() {
    // Run at CPL 3 through IRETQ, touch a supervisor-only page.
    let handler = CODE + 0x800;
    let user = CODE + 0x400;
    let code = asm(64, CODE, |a| {
        a.push(i32::from(UDATA | 3))?;
        a.push(0x7_0000)?;
        a.push(0x202)?;
        a.push(i32::from(UCODE64 | 3))?;
        a.push(user as i32)?;
        a.iretq()
    });
    let u = asm(64, user, |a| {
        a.mov(rax, qword_ptr(0x20_e000))?;
        a.hlt()
    });
    let h = asm(64, handler, |a| {
        a.mov(rax, qword_ptr(rsp))?;
        a.mov(dx, 0xe1u32)?;
        a.out(dx, eax)?;
        a.mov(rax, qword_ptr(rsp + 16))?; // CS of the interrupted code
        a.mov(dx, 0xe2u32)?;
        a.out(dx, eax)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.write(user, &u);
    m.write(handler, &h);
    m.set_gate64(14, handler, 0, 0);
    map_4k(&m, 0x20_e000, 0x20_e000 | 3); // supervisor
    m.run();
    assert_eq!(m.io.port(0xe1), vec![5]);
    assert_eq!(m.io.port(0xe2), vec![u64::from(UCODE64 | 3)]);
}
