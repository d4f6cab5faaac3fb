//! A generic KVM self-check: can this host run an operating system's user space?
//!
//! A tiny guest starts in 64-bit mode at CPL0, enables `syscall` (EFER.SCE, STAR, LSTAR), drops
//! to CPL3 with `iretq`, and executes `syscall` there. Its handler lives on a supervisor-only
//! page and reports its CS with an `out` to port [`PORT_OK`]. Every exception handler reports
//! its vector to [`PORT_FAULT`]. The check passes when the handler reports a CPL0 code
//! selector before the timeout. This is the first thing any OS's user space does; a host whose
//! KVM cannot complete it can still run kernel-mode code, but not a Linux guest.
//!
//! The program is hand-assembled below (a few dozen bytes); a unit test disassembles it and
//! compares the listing, so the bytes and the comments cannot drift apart.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use guest_mem::GuestMemory;
use parking_lot::Mutex;
use virt::ExitHandler;
use virt::HypercallInput;
use virt::Hypervisor;
use virt::Partition;
use virt::PartitionConfig;
use virt::Registers;
use virt::SegmentRegister;
use virt::TableRegister;
use virt::VirtError;
use virt::VpExit;

use crate::KvmHypervisor;

/// How long the self-check guest may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The syscall handler writes its CS here.
pub const PORT_OK: u16 = 0xf0;
/// Exception handlers write their vector here.
pub const PORT_FAULT: u16 = 0xf1;

const MEMORY_SIZE: u64 = 0x20_0000;
const PML4: u64 = 0x1000;
const PAGE_TABLE: u64 = 0x4000;
const GDT: u64 = 0x5000;
const TSS: u64 = 0x5100;
const IDT: u64 = 0x6000;
const STUBS: u64 = 0x7000;
const KERNEL_CODE: u64 = 0x8000;
const SYSCALL_HANDLER: u64 = 0x9000;
const USER_CODE: u64 = 0xa000;
const USER_STACK_TOP: u64 = 0xc000;
const KERNEL_STACK_TOP: u64 = 0xd000;
const VECTORS: u64 = 32;

/// CPL0 setup: enable SYSCALL, point LSTAR at the handler, `iretq` to CPL3.
pub(crate) const KERNEL_ENTRY: &[u8] = &[
    0xb9, 0x80, 0x00, 0x00, 0xc0, // mov ecx, 0xc0000080 (EFER)
    0x0f, 0x32, // rdmsr
    0x83, 0xc8, 0x01, // or eax, 1 (SCE)
    0x0f, 0x30, // wrmsr
    0xb9, 0x81, 0x00, 0x00, 0xc0, // mov ecx, 0xc0000081 (STAR)
    0x31, 0xc0, // xor eax, eax
    0xba, 0x08, 0x00, 0x13, 0x00, // mov edx, 0x130008 (SYSCALL CS 0x08, SYSRET base 0x13)
    0x0f, 0x30, // wrmsr
    0xb9, 0x82, 0x00, 0x00, 0xc0, // mov ecx, 0xc0000082 (LSTAR)
    0xb8, 0x00, 0x90, 0x00, 0x00, // mov eax, 0x9000
    0x31, 0xd2, // xor edx, edx
    0x0f, 0x30, // wrmsr
    0xb9, 0x84, 0x00, 0x00, 0xc0, // mov ecx, 0xc0000084 (SFMASK)
    0xb8, 0x00, 0x02, 0x00, 0x00, // mov eax, 0x200 (clear IF)
    0x0f, 0x30, // wrmsr
    0x6a, 0x1b, // push 0x1b (SS: user data, RPL 3)
    0x68, 0x00, 0xc0, 0x00, 0x00, // push 0xc000 (RSP)
    0x6a, 0x02, // push 2 (RFLAGS)
    0x6a, 0x23, // push 0x23 (CS: user code, RPL 3)
    0x68, 0x00, 0xa0, 0x00, 0x00, // push 0xa000 (RIP)
    0x48, 0xcf, // iretq
];

/// The SYSCALL target: report CS.
pub(crate) const HANDLER: &[u8] = &[
    0x8c, 0xc8, // mov eax, cs
    0xe6, 0xf0, // out 0xf0, al
    0xeb, 0xfe, // jmp $
];

/// CPL3: make the system call.
pub(crate) const USER: &[u8] = &[
    0x0f, 0x05, // syscall
    0xeb, 0xfe, // jmp $
];

/// Exception stub `vector`: report the vector (8 bytes each).
pub(crate) fn stub(vector: u8) -> [u8; 8] {
    [
        0xb0, vector, // mov al, vector
        0xe6, 0xf1, // out 0xf1, al
        0xeb, 0xfe, // jmp $
        0x90, 0x90, // nop; nop
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Cs(u8),
    Exception(u8),
    Unexpected(String),
}

struct CheckExits {
    outcome: Mutex<Option<Outcome>>,
    partition: Arc<dyn Partition>,
}

impl CheckExits {
    fn finish(&self, o: Outcome) {
        self.outcome.lock().get_or_insert(o);
        self.partition.stop();
    }
}

impl ExitHandler for CheckExits {
    fn pio_read(&self, _vp: u32, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        self.finish(Outcome::Unexpected(format!("read from port {port:#x}")));
    }
    fn pio_write(&self, _vp: u32, port: u16, data: &[u8]) {
        let v = data.first().copied().unwrap_or(0);
        self.finish(match port {
            PORT_OK => Outcome::Cs(v),
            PORT_FAULT => Outcome::Exception(v),
            _ => Outcome::Unexpected(format!("write to port {port:#x}")),
        });
    }
    fn mmio_read(&self, _vp: u32, gpa: u64, data: &mut [u8]) {
        data.fill(0xff);
        self.finish(Outcome::Unexpected(format!("MMIO read at {gpa:#x}")));
    }
    fn mmio_write(&self, _vp: u32, gpa: u64, _data: &[u8]) {
        self.finish(Outcome::Unexpected(format!("MMIO write at {gpa:#x}")));
    }
    fn msr_read(&self, _vp: u32, msr: u32) -> Option<u64> {
        self.finish(Outcome::Unexpected(format!(
            "rdmsr {msr:#x} reached the VMM"
        )));
        None
    }
    fn msr_write(&self, _vp: u32, msr: u32, _value: u64) -> bool {
        self.finish(Outcome::Unexpected(format!(
            "wrmsr {msr:#x} reached the VMM"
        )));
        false
    }
    fn hypercall(&self, _vp: u32, _input: HypercallInput) -> u64 {
        self.finish(Outcome::Unexpected("hypercall".into()));
        0
    }
    fn pic_acknowledge(&self) -> Option<u8> {
        None
    }
    fn eoi(&self, _vector: u8) {}
}

fn exception_name(v: u8) -> &'static str {
    match v {
        0 => "#DE",
        6 => "#UD",
        8 => "#DF",
        13 => "#GP",
        14 => "#PF",
        _ => "exception",
    }
}

/// Builds the self-check guest's memory.
fn build_memory() -> Result<GuestMemory, VirtError> {
    let mem = GuestMemory::allocate(MEMORY_SIZE);
    let w = |gpa: u64, bytes: &[u8]| {
        mem.write_at(gpa, bytes)
            .map_err(|e| VirtError::Internal(format!("self-check setup: {e}")))
    };
    const P: u64 = 1;
    const RW: u64 = 2;
    const US: u64 = 4;
    // PML4 -> PDPT -> PD -> one page table for the first 2 MiB, user bit on the upper levels
    // so the page table entry decides.
    w(PML4, &(0x2000 | P | RW | US).to_le_bytes())?;
    w(0x2000, &(0x3000 | P | RW | US).to_le_bytes())?;
    w(0x3000, &(PAGE_TABLE | P | RW | US).to_le_bytes())?;
    for page in 0..(KERNEL_STACK_TOP / 0x1000) {
        let addr = page * 0x1000;
        let user = addr == USER_CODE || addr == USER_STACK_TOP - 0x1000;
        let pte = addr | P | RW | if user { US } else { 0 };
        w(PAGE_TABLE + page * 8, &pte.to_le_bytes())?;
    }
    let gdt: [u64; 7] = [
        0,
        0x00af_9b00_0000_ffff, // 0x08 kernel code, 64-bit
        0x00cf_9300_0000_ffff, // 0x10 kernel data
        0x00cf_f300_0000_ffff, // 0x18 user data (DPL 3)
        0x00af_fb00_0000_ffff, // 0x20 user code, 64-bit (DPL 3)
        0x0000_8b00_0000_0067 | ((TSS & 0xff_ffff) << 16), // 0x28 TSS (busy), low half
        0,                     // TSS high half
    ];
    for (i, d) in gdt.iter().enumerate() {
        w(GDT + i as u64 * 8, &d.to_le_bytes())?;
    }
    // TSS: RSP0 at offset 4.
    w(TSS + 4, &KERNEL_STACK_TOP.to_le_bytes())?;
    for v in 0..VECTORS {
        let handler = STUBS + v * 8;
        w(handler, &stub(v as u8))?;
        let mut gate = [0u8; 16];
        gate[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
        gate[2..4].copy_from_slice(&0x08u16.to_le_bytes());
        gate[5] = 0x8e; // present, DPL 0, 64-bit interrupt gate
        gate[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
        w(IDT + v * 16, &gate)?;
    }
    w(KERNEL_CODE, KERNEL_ENTRY)?;
    w(SYSCALL_HANDLER, HANDLER)?;
    w(USER_CODE, USER)?;
    Ok(mem)
}

/// Runs the self-check on `hv`, giving up after `timeout`.
pub fn run(hv: &KvmHypervisor, timeout: Duration) -> Result<(), VirtError> {
    let memory = build_memory()?;
    let partition = hv.new_partition(PartitionConfig {
        processor_count: 1,
        memory,
        clock: virt::VmClock::new(),
        tsc_frequency: 0,
        user_msrs: Vec::new(),
    })?;
    let cpuid = hv.supported_cpuid()?;
    let mut vp = partition.create_processor(0, &cpuid)?;
    let mut s = vp.special_registers()?;
    let code = SegmentRegister::flat(0x08, 0xa09b);
    let data = SegmentRegister::flat(0x10, 0xc093);
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = SegmentRegister {
        base: TSS,
        limit: 0x67,
        selector: 0x28,
        attributes: 0x8b,
    };
    s.gdtr = TableRegister {
        base: GDT,
        limit: 7 * 8 - 1,
    };
    s.idtr = TableRegister {
        base: IDT,
        limit: (VECTORS * 16 - 1) as u16,
    };
    s.cr0 = 0x8000_0033;
    s.cr3 = PML4;
    s.cr4 = 0x20;
    s.efer = 0x500;
    vp.set_special_registers(&s)?;
    let mut regs = Registers {
        rip: KERNEL_CODE,
        rflags: 2,
        ..Registers::default()
    };
    regs.gpr[virt::gpr::RSP] = KERNEL_STACK_TOP;
    vp.set_registers(&regs)?;

    let exits = Arc::new(CheckExits {
        outcome: Mutex::new(None),
        partition: partition.clone(),
    });
    let (tx, rx) = mpsc::channel();
    let thread_exits = exits.clone();
    let thread = std::thread::Builder::new()
        .name("kvm-selfcheck".into())
        .spawn(move || {
            let r = vp.run(&*thread_exits);
            let _ = tx.send(());
            r
        })
        .map_err(|source| VirtError::Host {
            operation: "spawning the self-check vCPU thread",
            source,
        })?;
    let timed_out = rx.recv_timeout(timeout).is_err();
    if timed_out {
        partition.stop();
    }
    let result = thread
        .join()
        .map_err(|_| VirtError::Internal("self-check vCPU thread panicked".into()))?;
    let outcome = exits.outcome.lock().clone();
    let fail = |reason: String| {
        Err(VirtError::Unavailable {
            backend: "kvm",
            reason: format!("self-check failed: {reason}"),
        })
    };
    match (outcome, result) {
        (Some(Outcome::Cs(cs)), _) if cs & 3 == 0 => Ok(()),
        (Some(Outcome::Cs(cs)), _) => fail(format!(
            "the syscall handler ran with CS={cs:#x} (CPL {}), not at CPL0",
            cs & 3
        )),
        (Some(Outcome::Exception(v)), _) => fail(format!(
            "a CPL3 -> CPL0 syscall took exception {v} ({}) instead of reaching its handler",
            exception_name(v)
        )),
        (Some(Outcome::Unexpected(what)), _) => fail(format!("unexpected {what}")),
        (None, Ok(VpExit::TripleFault)) => fail("the guest triple-faulted".into()),
        (None, Err(e)) => fail(e.to_string()),
        (None, Ok(VpExit::Stopped)) => fail(format!(
            "no answer within {} s (the syscall round trip did not complete)",
            timeout.as_secs_f32()
        )),
    }
}

#[cfg(test)]
mod tests {
    use iced_x86::Decoder;
    use iced_x86::DecoderOptions;
    use iced_x86::Formatter;
    use iced_x86::IntelFormatter;

    use super::*;

    fn listing(bytes: &[u8], ip: u64) -> Vec<String> {
        let mut d = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE);
        let mut f = IntelFormatter::new();
        f.options_mut().set_hex_prefix("0x");
        f.options_mut().set_hex_suffix("");
        f.options_mut().set_uppercase_hex(false);
        f.options_mut().set_show_branch_size(false);
        f.options_mut().set_branch_leading_zeros(false);
        let mut out = Vec::new();
        while d.can_decode() {
            let i = d.decode();
            assert!(!i.is_invalid(), "invalid instruction at {:#x}", i.ip());
            let mut s = String::new();
            f.format(&i, &mut s);
            out.push(s);
        }
        out
    }

    #[test]
    fn hand_assembled_code_matches_its_comments() {
        assert_eq!(
            listing(KERNEL_ENTRY, KERNEL_CODE),
            [
                "mov ecx,0xc0000080",
                "rdmsr",
                "or eax,1",
                "wrmsr",
                "mov ecx,0xc0000081",
                "xor eax,eax",
                "mov edx,0x130008",
                "wrmsr",
                "mov ecx,0xc0000082",
                "mov eax,0x9000",
                "xor edx,edx",
                "wrmsr",
                "mov ecx,0xc0000084",
                "mov eax,0x200",
                "wrmsr",
                "push 0x1b",
                "push 0xc000",
                "push 2",
                "push 0x23",
                "push 0xa000",
                "iretq",
            ]
        );
        assert_eq!(
            listing(HANDLER, SYSCALL_HANDLER),
            ["mov eax,cs", "out 0xf0,al", "jmp 0x9004"]
        );
        assert_eq!(listing(USER, USER_CODE), ["syscall", "jmp 0xa002"]);
        assert_eq!(
            listing(&stub(14), STUBS),
            ["mov al,0xe", "out 0xf1,al", "jmp 0x7004", "nop", "nop"]
        );
    }

    #[test]
    fn page_table_marks_only_user_pages_user() {
        let mem = build_memory().unwrap();
        let pte = |addr: u64| {
            mem.read_plain::<u64>(PAGE_TABLE + addr / 0x1000 * 8)
                .unwrap()
        };
        assert_eq!(pte(USER_CODE) & 4, 4);
        assert_eq!(pte(SYSCALL_HANDLER) & 4, 0);
        assert_eq!(pte(KERNEL_CODE) & 7, 3);
    }
}
#[cfg(test)]
mod host_tests {
    use super::*;

    /// Runs the real self-check on this host's KVM: it must reach a verdict (pass, or fail
    /// naming what went wrong) well before its timeout, which shows the whole path (memory
    /// slots, registers, MSRs, a privilege change, a port exit, stop) works.
    #[test]
    fn self_check_reaches_a_verdict() {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("skipped: no /dev/kvm");
            return;
        }
        let hv = KvmHypervisor::new().unwrap();
        let t = std::time::Instant::now();
        let r = run(&hv, DEFAULT_TIMEOUT);
        eprintln!("kvm self-check: {r:?} after {:?}", t.elapsed());
        assert!(
            t.elapsed() < DEFAULT_TIMEOUT / 2,
            "the check should not need its timeout"
        );
        if let Err(e) = r {
            let msg = e.to_string();
            assert!(msg.contains("self-check failed"), "{msg}");
            assert!(!msg.contains("no answer"), "{msg}");
        }
    }

    #[test]
    fn a_guest_that_never_answers_times_out() {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("skipped: no /dev/kvm");
            return;
        }
        let hv = KvmHypervisor::new().unwrap();
        // A zero timeout stops the guest before it can answer (or right after): either way
        // the partition must stop and the thread come back.
        let t = std::time::Instant::now();
        let _ = run(&hv, Duration::ZERO);
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
