//! Mode switches, exceptions in each mode, system calls, interrupts and the local APIC.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use iced_x86::code_asm::*;
use virt::Processor;
use virt::SegmentRegister;

use super::harness::*;
use crate::vp::RunOptions;
use crate::vp::Stop;

/// A processor in real mode at 0000:`ip` (RESET state otherwise).
fn real_mode(ip: u64) -> Machine {
    let mut m = Machine::new();
    let mut s = virt::SpecialRegisters::reset();
    s.cs = SegmentRegister {
        base: 0,
        limit: 0xffff,
        selector: 0,
        attributes: 0x9b,
    };
    m.vp.set_special_registers(&s).unwrap();
    let mut r = m.regs();
    r.rip = ip;
    r.gpr[4] = 0x7000;
    m.vp.set_registers(&r).unwrap();
    m
}

#[test]
fn real_mode_to_protected_mode_to_long_mode() {
    let mut m = real_mode(0x7c00);
    m.write_gdt();
    // GDT pointer for LGDT at 0x7e00.
    m.write(0x7e00, &[0x7f, 0, 0x00, 0x10, 0, 0]);
    let rm = asm(16, 0x7c00, |a| {
        a.cli()?;
        a.db(&[0x0f, 0x01, 0x16, 0x00, 0x7e])?; // lgdt [0x7e00]
        a.mov(eax, cr0)?;
        a.or(al, 1)?;
        a.mov(cr0, eax)?;
        a.db(&[0x66, 0xea, 0x00, 0x80, 0x00, 0x00, 0x40, 0x00]) // jmp dword 0x40:0x8000
    });
    let pm = asm(32, 0x8000, |a| {
        a.mov(ax, 0x10u32)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.mov(esp, 0x7000u32)?;
        a.mov(eax, cr4)?;
        a.or(eax, 0x20)?;
        a.mov(cr4, eax)?;
        a.mov(eax, PML4 as u32)?;
        a.mov(cr3, eax)?;
        a.mov(ecx, 0xc000_0080u32)?;
        a.rdmsr()?;
        a.or(eax, 0x100)?;
        a.wrmsr()?;
        a.mov(eax, cr0)?;
        a.or(eax, 0x8000_0000u32 as i32)?;
        a.mov(cr0, eax)?;
        a.db(&[0xea, 0x00, 0x90, 0x00, 0x00, 0x08, 0x00]) // jmp 0x08:0x9000
    });
    let lm = asm(64, 0x9000, |a| {
        a.mov(rax, 0x1122_3344_5566_7788u64)?;
        a.mov(edx, 0xe9u32)?;
        a.out(dx, eax)?;
        a.shr(rax, 32)?;
        a.out(dx, eax)?;
        a.hlt()
    });
    m.write(0x7c00, &rm);
    m.write(0x8000, &pm);
    m.write(0x9000, &lm);
    prepare_long_mode_memory(&m.mem);
    assert_eq!(m.run(), Stop::Halted);
    assert_eq!(m.io.port(0xe9), vec![0x5566_7788, 0x1122_3344]);
    let s = m.sregs();
    assert_eq!(s.cs.selector, KCODE);
    assert_ne!(s.efer & 0x400, 0, "long mode active");
    assert_eq!(s.ss.selector, KDATA);
}

#[test]
fn real_mode_software_interrupt_goes_through_the_ivt() {
    let mut m = real_mode(0x7c00);
    // IVT entry 0x21 -> 0000:8000.
    m.write(0x21 * 4, &[0x00, 0x80, 0x00, 0x00]);
    let main = asm(16, 0x7c00, |a| {
        a.mov(al, 0x21)?;
        a.int(0x21)?;
        a.mov(al, 0x99)?;
        a.out(0xe9, al)?;
        a.hlt()
    });
    let handler = asm(16, 0x8000, |a| {
        a.out(0xe9, al)?;
        a.pushf()?;
        a.pop(bx)?;
        a.iret()
    });
    m.write(0x7c00, &main);
    m.write(0x8000, &handler);
    // IF set before the INT: the handler sees it cleared, IRET restores it.
    let mut r = m.regs();
    r.rflags = 0x202;
    m.vp.set_registers(&r).unwrap();
    assert_eq!(m.run(), Stop::Halted);
    assert_eq!(m.io.port(0xe9), vec![0x21, 0x99]);
    let r = m.regs();
    assert_eq!(r.gpr[3] & 0x200, 0, "IF clear in the handler");
    assert_ne!(r.rflags & 0x200, 0, "IF restored by IRET");
    assert_eq!(r.gpr[4] & 0xffff, 0x7000);
}

#[test]
fn protected_mode_general_protection_fault_pushes_the_selector() {
    let mut m = Machine::protected_mode32(0xffff_ffff, 0xc09b);
    m.set_gate32(13, 0x9000); // #GP, through the flat 32-bit code descriptor
    let main = asm(32, 0x8000, |a| {
        a.mov(eax, 0x1233u32)?;
        a.mov(ds, ax)?; // GDT index 0x246 is past the limit: #GP(0x1230), RPL dropped
        a.hlt()
    });
    let handler = asm(32, 0x9000, |a| {
        a.pop(eax)?; // error code
        a.out(0xe9, eax)?;
        a.pop(eax)?; // EIP of the faulting instruction
        a.out(0xe9, eax)?;
        a.hlt()
    });
    m.write(0x8000, &main);
    m.write(0x9000, &handler);
    m.set_rip(0x8000);
    m.set_gpr(4, 0x7000);
    assert_eq!(m.run(), Stop::Halted);
    assert_eq!(m.io.port(0xe9), vec![0x1230, 0x8005]);
}

#[test]
fn syscall_and_sysret_round_trip_through_user_mode() {
    let user = CODE + 0x400;
    let entry = CODE + 0x800;
    let code = asm(64, CODE, |a| {
        // STAR: kernel CS 0x08 (SS 0x10); user base 0x18 (CS 0x2b, SS 0x23).
        a.mov(ecx, 0xc000_0081u32)?;
        a.xor(eax, eax)?;
        a.mov(edx, 0x0018_0008u32)?;
        a.wrmsr()?;
        a.mov(ecx, 0xc000_0082u32)?;
        a.mov(eax, entry as u32)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.mov(ecx, 0xc000_0084u32)?;
        a.mov(eax, 0x200u32)?; // SFMASK: clear IF on entry
        a.wrmsr()?;
        a.push(i32::from(UDATA | 3))?;
        a.push(0x7_0000)?;
        a.push(0x202)?;
        a.push(i32::from(UCODE64 | 3))?;
        a.push(user as i32)?;
        a.iretq()
    });
    let u = asm(64, user, |a| {
        a.mov(eax, 7u32)?;
        a.syscall()?;
        a.mov(r12, rcx)?;
        a.mov(eax, 9u32)?;
        a.syscall()?;
        a.hlt()
    });
    let k = asm(64, entry, |a| {
        let mut last = a.create_label();
        a.mov(edx, 0xe9u32)?;
        a.out(dx, eax)?;
        a.pushfq()?;
        a.pop(rbx)?;
        a.mov(eax, ebx)?;
        a.out(dx, eax)?; // RFLAGS in the kernel (IF masked)
        a.mov(eax, r11d)?;
        a.out(dx, eax)?; // user RFLAGS saved in R11
        a.mov(ax, cs)?;
        a.out(dx, eax)?;
        a.cmp(dword_ptr(rsp), 0)?; // still on the user stack: readable
        a.test(r12, r12)?;
        a.jnz(last)?;
        a.sysretq()?;
        a.set_label(&mut last)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.write(user, &u);
    m.write(entry, &k);
    assert_eq!(m.run(), Stop::Halted);
    let w = m.io.port(0xe9);
    assert_eq!(w.len(), 8, "{w:x?}");
    assert_eq!(w[0], 7);
    assert_eq!(w[1] & 0x200, 0, "IF masked by SFMASK");
    assert_eq!(w[2] & 0x200, 0x200, "R11 holds the user RFLAGS");
    assert_eq!(w[3], u64::from(KCODE));
    assert_eq!(w[4], 9);
    let r = m.regs();
    // RCX after the first SYSCALL pointed after it.
    assert_eq!(r.gpr[12], user + 7);
    assert_eq!(m.sregs().cs.selector, KCODE);
}

/// A 64-bit handler at `at` that writes `tag` and a register to port 0xe9, then returns
/// (interrupts, no error code).
fn report_handler(at: u64, tag: u32, reg: AsmRegister64) -> Vec<u8> {
    asm(64, at, |a| {
        a.push(rax)?;
        a.push(rdx)?;
        a.mov(edx, 0xe9u32)?;
        a.mov(eax, tag)?;
        a.out(dx, eax)?;
        a.mov(rax, reg)?;
        a.out(dx, eax)?;
        // EOI to the local APIC (harmless for PIC interrupts in this machine).
        a.mov(eax, 0xfee0_00b0u32)?;
        a.mov(dword_ptr(rax), 0)?;
        a.pop(rdx)?;
        a.pop(rax)?;
        a.iretq()
    })
}

#[test]
fn interrupt_shadow_after_sti_delays_delivery_by_one_instruction() {
    let handler = CODE + 0x800;
    let code = asm(64, CODE, |a| {
        a.xor(ebx, ebx)?;
        a.sti()?;
        a.mov(ebx, 1u32)?; // runs in the STI shadow
        a.mov(ebx, 2u32)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.write(handler, &report_handler(handler, 0x30, rbx));
    m.set_gate64(0x30, handler, 0, 0);
    m.io.pic.lock().unwrap().push(0x30);
    m.vp.cpu
        .shared
        .extint
        .store(true, std::sync::atomic::Ordering::Release);
    m.run();
    assert_eq!(m.io.port(0xe9)[..2], [0x30, 1]);
}

#[test]
fn pending_interrupt_is_taken_as_soon_as_the_sti_shadow_ends() {
    let handler = CODE + 0x800;
    let code = asm(64, CODE, |a| {
        a.xor(ebx, ebx)?;
        a.mov(ax, ss)?;
        a.sti()?;
        a.nop()?;
        a.mov(ss, ax)?;
        a.mov(ebx, 1u32)?; // runs in the MOV SS shadow
        a.mov(ebx, 2u32)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.write(handler, &report_handler(handler, 0x31, rbx));
    m.set_gate64(0x31, handler, 0, 0);
    // Pending from the start: taken after STI's one-instruction shadow (the NOP).
    m.io.pic.lock().unwrap().push(0x31);
    m.vp.cpu
        .shared
        .extint
        .store(true, std::sync::atomic::Ordering::Release);
    m.run();
    let w = m.io.port(0xe9);
    assert_eq!(w[0], 0x31);
    assert_eq!(
        w[1], 0,
        "taken right after the STI shadow (the NOP), before MOV SS"
    );
}

fn apic_write(a: &mut CodeAssembler, off: u32, v: u32) -> Result<(), iced_x86::IcedError> {
    a.mov(eax, 0xfee0_0000u32 + off)?;
    a.mov(dword_ptr(rax), v)
}

#[test]
fn apic_timer_one_shot_fires_and_eoi_clears_in_service() {
    let handler = CODE + 0x800;
    let code = asm(64, CODE, |a| {
        apic_write(a, 0xf0, 0x1ff)?; // software enable, spurious 0xff
        apic_write(a, 0x3e0, 0xb)?; // divide by 1
        apic_write(a, 0x320, 0x40)?; // one-shot, vector 0x40
        apic_write(a, 0x380, 25_000)?; // 1 ms at 25 MHz
        a.mov(ebx, 0x77u32)?;
        a.sti()?;
        a.hlt()?;
        a.mov(edx, 0xe9u32)?;
        a.mov(eax, 0x99u32)?;
        a.out(dx, eax)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.write(handler, &report_handler(handler, 0x40, rbx));
    m.set_gate64(0x40, handler, 0, 0);
    assert_eq!(m.run(), Stop::Halted);
    assert!(m.io.port(0xe9).is_empty(), "not before its time");
    m.advance_clock(2_000_000);
    assert_eq!(m.run(), Stop::Halted);
    assert_eq!(m.io.port(0xe9), vec![0x40, 0x77, 0x99]);
    assert_eq!(m.vp.cpu.apic.isr, [0; 8]);
    // One-shot: nothing more.
    m.advance_clock(10_000_000);
    m.run();
    assert_eq!(m.io.port(0xe9).len(), 3);
}

#[test]
fn apic_timer_periodic_keeps_firing() {
    let handler = CODE + 0x800;
    let code = asm(64, CODE, |a| {
        let mut l = a.create_label();
        apic_write(a, 0xf0, 0x1ff)?;
        apic_write(a, 0x3e0, 0xb)?;
        apic_write(a, 0x320, 0x2_0041)?; // periodic, vector 0x41
        apic_write(a, 0x380, 25_000)?;
        a.sti()?;
        a.set_label(&mut l)?;
        a.hlt()?;
        a.jmp(l)
    });
    let mut m = Machine::long_mode(&code);
    m.write(handler, &report_handler(handler, 0x41, rbx));
    m.set_gate64(0x41, handler, 0, 0);
    m.run();
    for _ in 0..3 {
        m.advance_clock(1_000_001);
        m.run();
    }
    assert_eq!(m.io.port(0xe9).iter().filter(|&&v| v == 0x41).count(), 3);
}

#[test]
fn self_ipi_through_the_icr_is_delivered() {
    let handler = CODE + 0x800;
    let code = asm(64, CODE, |a| {
        apic_write(a, 0xf0, 0x1ff)?;
        a.mov(ebx, 5u32)?;
        a.sti()?;
        apic_write(a, 0x300, 0x4_4050)?; // shorthand self, fixed, vector 0x50
        a.nop()?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.write(handler, &report_handler(handler, 0x50, rbx));
    m.set_gate64(0x50, handler, 0, 0);
    m.run();
    assert_eq!(m.io.port(0xe9), vec![0x50, 5]);
}

#[test]
fn exception_during_exception_delivery_is_a_triple_fault() {
    let code = asm(64, CODE, |a| {
        a.ud2()?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    // An empty IDT: #UD -> #GP (no gate) -> #DF (no gate) -> shutdown.
    let mut s = m.sregs();
    s.idtr.limit = 0;
    m.vp.set_special_registers(&s).unwrap();
    assert_eq!(m.run(), Stop::TripleFault);
}

#[test]
fn double_fault_handler_runs_on_its_ist_stack() {
    let df = CODE + 0x800;
    let code = asm(64, CODE, |a| {
        a.mov(rsp, 0x1234_0000_0000_0000u64 as i64)?; // non-canonical stack
        a.push(rax)?; // #SS/#GP... delivering it on the same bad stack faults again -> #DF
        a.hlt()
    });
    let h = asm(64, df, |a| {
        a.mov(rax, rsp)?;
        a.out(0xe9, eax)?;
        a.hlt()
    });
    let mut m = Machine::long_mode(&code);
    m.write(df, &h);
    // #GP handler without IST (its push faults), #DF with IST1.
    m.set_gate64(13, df, 0, 0);
    m.set_gate64(8, df, 1, 0);
    m.w64(TSS + 36, 0x6_0000);
    assert_eq!(m.run(), Stop::Halted);
    // IST1 top, minus the 6-qword frame (with error code).
    assert_eq!(m.io.port(0xe9), vec![0x6_0000 - 48]);
}

#[test]
fn init_and_startup_ipis_start_an_application_processor() {
    let mem = guest_mem::GuestMemory::allocate(MEM);
    prepare_long_mode_memory(&mem);
    let part = crate::partition::EmuPartition::new(virt::PartitionConfig {
        processor_count: 2,
        memory: mem.clone(),
        clock: virt::VmClock::new(),
        tsc_frequency: 1_000_000_000,
        user_msrs: Vec::new(),
    })
    .unwrap();
    let cpuid = crate::supported_cpuid(2);
    let mut bsp = virt::Partition::create_processor(&*part, 0, &cpuid).unwrap();
    let mut ap = virt::Partition::create_processor(&*part, 1, &cpuid).unwrap();
    // BSP: INIT, then SIPI vector 8 (start at 0x8000), to APIC ID 1.
    let code = asm(64, CODE, |a| {
        apic_write(a, 0xf0, 0x1ff)?;
        apic_write(a, 0x310, 1 << 24)?;
        apic_write(a, 0x300, 0x4500)?;
        apic_write(a, 0x300, 0x4608)?;
        a.cli()?;
        a.hlt()
    });
    mem.write_at(CODE, &code).unwrap();
    // AP: real mode at 0800:0000.
    let ap_code = asm(16, 0, |a| {
        a.mov(ax, cs)?;
        a.out(0xe9, ax)?;
        a.cli()?;
        a.hlt()
    });
    mem.write_at(0x8000, &ap_code).unwrap();
    bsp.set_special_registers(&long_mode_sregs()).unwrap();
    let mut r = bsp.registers().unwrap();
    r.rip = CODE;
    r.gpr[4] = STACK;
    bsp.set_registers(&r).unwrap();
    let io = Arc::new(TestIo::default());
    let (io0, io1) = (io.clone(), io.clone());
    let t0 = std::thread::spawn(move || bsp.run(&*io0).unwrap());
    let t1 = std::thread::spawn(move || ap.run(&*io1).unwrap());
    let start = Instant::now();
    while io.port(0xe9).is_empty() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    virt::Partition::stop(&*part);
    assert_eq!(t0.join().unwrap(), virt::VpExit::Stopped);
    assert_eq!(t1.join().unwrap(), virt::VpExit::Stopped);
    assert_eq!(io.port(0xe9), vec![0x0800]);
}

/// Fuzzer regression (`execute`, an exception loop with the stack in MMIO): a guest whose
/// page-fault handler is itself on an unmapped page takes #PF after #PF without retiring an
/// instruction, forever, as real hardware would. The run still stops at its limit, because
/// delivered exceptions count towards it.
#[test]
fn an_exception_loop_that_retires_nothing_stops_at_the_limit() {
    let unmapped = 0x10_0000_0000u64; // 64 GiB: outside the identity-mapped 4 GiB
    let code = asm(64, CODE, |a| {
        a.mov(rax, unmapped as i64)?;
        a.jmp(rax)
    });
    let mut m = Machine::long_mode(&code);
    // #PF on IST1, so the stack never runs out and no #DF ends the loop.
    m.set_gate64(14, unmapped, 1, 0);
    m.w64(TSS + 36, 0x6_0000);
    let stop =
        m.vp.run_with(
            &m.io,
            RunOptions {
                stop_on_halt: true,
                max_instructions: Some(10_000),
            },
        )
        .unwrap();
    assert_eq!(stop, Stop::Limit);
    assert_eq!(m.sregs().cr2, unmapped);
    assert!(m.vp.instructions() <= 2, "{}", m.vp.instructions());
}
