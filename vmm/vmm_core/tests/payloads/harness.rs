//! Running small 64-bit test programs on the real machine: the payload is assembled with
//! iced-x86, loaded like a kernel (flat GDT, identity page tables, 64-bit entry), and talks to
//! a test device on ports 0xe0-0xe5.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

use device_api::HaltRequest;
use device_api::HaltSink;
use device_api::IoResult;
use device_api::LineInterrupt;
use device_api::Mmio;
use device_api::PortIo;
use device_api::shared;
use iced_x86::BlockEncoderOptions;
use iced_x86::code_asm::*;
use loaders::Chunk;
use loaders::LoadPlan;
use parking_lot::Mutex;
use virt::Hypervisor;
use vm_config::SerialConfig;
use vmm_core::HaltReason;
use vmm_core::Machine;
use vmm_core::MachineConfig;

/// Test port: OUT logs the value, IN returns the next queued value.
pub const LOG: u16 = 0xe0;
/// OUT logs the value as an application processor's report.
pub const AP_LOG: u16 = 0xe1;
/// OUT pulses the edge line.
pub const PULSE: u16 = 0xe2;
/// OUT sets the level line to (value != 0).
pub const LEVEL: u16 = 0xe3;
/// OUT powers the machine off.
pub const POWER_OFF: u16 = 0xe4;
/// OUT reports an unexpected interrupt vector (and crashes the machine).
pub const UNEXPECTED: u16 = 0xe5;

/// Where the test MMIO device lives (inside the PCI hole).
pub const MMIO_BASE: u64 = 0xd000_0000;
/// The local APIC.
pub const LAPIC: u64 = 0xfee0_0000;
/// The I/O APIC.
pub const IOAPIC: u64 = 0xfec0_0000;

const GDT: u64 = 0x500;
const IDT: u64 = 0x2000;
const STACK_TOP: u64 = 0x8000;
const PAGE_TABLES: u64 = 0x9000;
const STUBS: u64 = 0x2_0000;
/// Where the payload's code starts.
pub const CODE: u64 = 0x10_0000;
/// Guest RAM of payload machines.
pub const MEMORY: u64 = 32 << 20;
/// Code selector of the flat GDT (for IDT gates).
const CS: u16 = loaders::x86::CODE64_SELECTOR;

/// What the test device saw.
#[derive(Debug, Default)]
pub struct Log {
    /// (port, value) in order.
    pub entries: Vec<(u16, u32)>,
}

impl Log {
    /// Values written to `port`.
    pub fn values(&self, port: u16) -> Vec<u32> {
        self.entries
            .iter()
            .filter(|(p, _)| *p == port)
            .map(|(_, v)| *v)
            .collect()
    }
}

struct TestDevice {
    log: Arc<Mutex<Log>>,
    reads: VecDeque<u32>,
    halt: Arc<dyn HaltSink>,
    edge: LineInterrupt,
    level: LineInterrupt,
}

fn value(data: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    let n = data.len().min(4);
    b[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(b)
}

impl PortIo for TestDevice {
    fn io_read(&mut self, port: u16, data: &mut [u8]) -> IoResult {
        let v = if port == LOG {
            self.reads.pop_front().unwrap_or(u32::MAX)
        } else {
            u32::MAX
        };
        let n = data.len().min(4);
        data[..n].copy_from_slice(&v.to_le_bytes()[..n]);
        Ok(())
    }

    fn io_write(&mut self, port: u16, data: &[u8]) -> IoResult {
        let v = value(data);
        match port {
            LOG | AP_LOG => self.log.lock().entries.push((port, v)),
            PULSE => self.edge.pulse(),
            LEVEL => self.level.set_level(v != 0),
            POWER_OFF => self.halt.request_halt(HaltRequest::PowerOff),
            UNEXPECTED => self
                .halt
                .request_halt(HaltRequest::GuestCrash(format!("unexpected vector {v:#x}"))),
            _ => {}
        }
        Ok(())
    }
}

/// A memory-like MMIO device that records every access as (offset, length, write).
#[derive(Default)]
pub struct MmioRecorder {
    bytes: Vec<u8>,
    /// Accesses in order.
    pub accesses: Vec<(u64, usize, bool)>,
}

impl Mmio for MmioRecorder {
    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> IoResult {
        let off = (addr - MMIO_BASE) as usize;
        self.accesses.push((off as u64, data.len(), false));
        self.bytes.resize(self.bytes.len().max(off + data.len()), 0);
        data.copy_from_slice(&self.bytes[off..off + data.len()]);
        Ok(())
    }

    fn mmio_write(&mut self, addr: u64, data: &[u8]) -> IoResult {
        let off = (addr - MMIO_BASE) as usize;
        self.accesses.push((off as u64, data.len(), true));
        self.bytes.resize(self.bytes.len().max(off + data.len()), 0);
        self.bytes[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// A payload under construction: the assembler plus interrupt handlers to install.
pub struct Payload {
    /// The program, assembled at [`CODE`] in 64-bit mode; entry is its first instruction.
    pub asm: CodeAssembler,
    handlers: Vec<(u8, CodeLabel)>,
    extra: Vec<Chunk>,
    /// Values the test device returns for IN from [`LOG`], in order.
    pub reads: Vec<u32>,
    /// GSI of the edge line ([`PULSE`]).
    pub edge_gsi: u32,
    /// GSI of the level line ([`LEVEL`]).
    pub level_gsi: u32,
}

impl Payload {
    /// An empty 64-bit program.
    pub fn new() -> Self {
        Self {
            asm: CodeAssembler::new(64).unwrap(),
            handlers: Vec::new(),
            extra: Vec::new(),
            reads: Vec::new(),
            edge_gsi: 10,
            level_gsi: 11,
        }
    }

    /// Starts an interrupt handler for `vector` at the current position.
    pub fn handler(&mut self, vector: u8) {
        let mut l = self.asm.create_label();
        self.asm.set_label(&mut l).unwrap();
        self.handlers.push((vector, l));
    }

    /// Places extra bytes in guest memory (e.g. real-mode code for an AP).
    pub fn place(&mut self, gpa: u64, bytes: Vec<u8>) {
        self.extra.push(Chunk::new(gpa, bytes, "extra"));
    }

    /// Emits `out LOG, imm`.
    pub fn log(&mut self, v: u32) {
        self.asm.mov(eax, v).unwrap();
        self.asm.out(LOG as i32, eax).unwrap();
    }

    /// Emits the power-off write and a halt loop.
    pub fn power_off(&mut self) {
        self.asm.out(POWER_OFF as i32, al).unwrap();
        let mut l = self.asm.create_label();
        self.asm.set_label(&mut l).unwrap();
        self.asm.cli().unwrap();
        self.asm.hlt().unwrap();
        self.asm.jmp(l).unwrap();
    }

    /// Emits a 32-bit write of `v` to local APIC register `reg` (RBX holds nothing assumed).
    pub fn lapic_write(&mut self, reg: u32, v: u32) {
        self.asm.mov(rdi, LAPIC + u64::from(reg)).unwrap();
        self.asm.mov(dword_ptr(rdi), v).unwrap();
    }

    /// Emits an I/O APIC redirection entry write: `low` for pin `pin`, destination APIC 0.
    pub fn ioapic_route(&mut self, pin: u32, low: u32) {
        self.asm.mov(rdi, IOAPIC).unwrap();
        self.asm.mov(dword_ptr(rdi), 0x10 + 2 * pin).unwrap();
        self.asm.mov(dword_ptr(rdi + 0x10), low).unwrap();
        self.asm.mov(dword_ptr(rdi), 0x11 + 2 * pin).unwrap();
        self.asm.mov(dword_ptr(rdi + 0x10), 0u32).unwrap();
    }

    /// Assembles the program, the default vector stubs and the IDT into a load plan.
    pub fn plan(mut self) -> (LoadPlan, Vec<u32>, u32, u32, CodeAssemblerResult) {
        let result = self
            .asm
            .assemble_options(CODE, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
            .unwrap();
        let code = result.inner.code_buffer.clone();

        // Default handlers: report the vector and crash the machine.
        let mut stubs = CodeAssembler::new(64).unwrap();
        let mut labels = Vec::new();
        for v in 0..=255u32 {
            let mut l = stubs.create_label();
            stubs.set_label(&mut l).unwrap();
            stubs.mov(eax, v).unwrap();
            stubs.out(UNEXPECTED as i32, eax).unwrap();
            let mut spin = stubs.create_label();
            stubs.set_label(&mut spin).unwrap();
            stubs.hlt().unwrap();
            stubs.jmp(spin).unwrap();
            labels.push(l);
        }
        let stubs_result = stubs
            .assemble_options(STUBS, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
            .unwrap();
        let mut idt = vec![0u8; 256 * 16];
        for (v, l) in labels.iter().enumerate() {
            gate(&mut idt, v as u8, stubs_result.label_ip(l).unwrap());
        }
        for (v, l) in &self.handlers {
            gate(&mut idt, *v, result.label_ip(l).unwrap());
        }

        let mut chunks = vec![
            loaders::x86::flat_gdt(GDT),
            loaders::x86::identity_page_tables(PAGE_TABLES),
            Chunk::new(IDT, idt, "idt"),
            Chunk::new(STUBS, stubs_result.inner.code_buffer, "stubs"),
            Chunk::new(CODE, code, "payload"),
        ];
        chunks.append(&mut self.extra);
        let (mut registers, mut special_registers) =
            loaders::x86::long_mode_state(CODE, GDT, PAGE_TABLES);
        registers.gpr[virt::gpr::RSP] = STACK_TOP;
        special_registers.idtr = virt::TableRegister {
            base: IDT,
            limit: 256 * 16 - 1,
        };
        (
            LoadPlan {
                chunks,
                registers,
                special_registers,
                e820: Vec::new(),
                summary: "test payload".into(),
            },
            self.reads,
            self.edge_gsi,
            self.level_gsi,
            result,
        )
    }
}

fn gate(idt: &mut [u8], vector: u8, handler: u64) {
    let g = &mut idt[usize::from(vector) * 16..][..16];
    g[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
    g[2..4].copy_from_slice(&CS.to_le_bytes());
    g[5] = 0x8e; // present, DPL 0, interrupt gate
    g[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    g[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
}

/// What a payload run produced.
pub struct Outcome {
    /// Why the machine stopped.
    pub reason: HaltReason,
    /// What the test device logged.
    pub log: Log,
    /// Wall time of `Machine::run`.
    pub elapsed: Duration,
    /// MMIO accesses the recorder saw.
    pub mmio: Vec<(u64, usize, bool)>,
    /// The assembled program (for label addresses).
    pub assembled: CodeAssemblerResult,
    /// The clocks the partition reported (what the machine's CPUID states).
    pub clocks: Option<vmm_core::cpuid::Clocks>,
}

/// How long a payload may run before the test gives up on it.
pub const WATCHDOG: Duration = Duration::from_secs(30);

/// Builds a machine with `processors` VPs on `hv`, lets `build` write the payload (it can
/// look at the machine, e.g. for timer frequencies), runs it, and reports.
pub fn run(
    hv: &dyn Hypervisor,
    processors: u32,
    build: impl FnOnce(&Machine, &mut Payload),
) -> Outcome {
    run_with_watchdog(hv, processors, WATCHDOG, build)
}

/// [`run`] with a chosen watchdog: when it fires the machine halts as a guest crash whose
/// text starts with "watchdog".
pub fn run_with_watchdog(
    hv: &dyn Hypervisor,
    processors: u32,
    watchdog: Duration,
    build: impl FnOnce(&Machine, &mut Payload),
) -> Outcome {
    run_configured(hv, processors, watchdog, |_| {}, build)
}

/// [`run_with_watchdog`] with a chance to change the machine's configuration first.
pub fn run_configured(
    hv: &dyn Hypervisor,
    processors: u32,
    watchdog: Duration,
    configure: impl FnOnce(&mut MachineConfig),
    build: impl FnOnce(&Machine, &mut Payload),
) -> Outcome {
    let mut config = MachineConfig::new(processors, MEMORY);
    config.serial = Default::default();
    config.serial[0] = SerialConfig::None;
    configure(&mut config);
    let mut machine = Machine::new(&config, hv).expect("machine");
    let mut payload = Payload::new();
    build(&machine, &mut payload);
    let (plan, reads, edge_gsi, level_gsi, assembled) = payload.plan();
    let log = Arc::new(Mutex::new(Log::default()));
    let dev = TestDevice {
        log: log.clone(),
        reads: reads.into(),
        halt: machine.halt_sink(),
        edge: machine.irq_line(edge_gsi),
        level: machine.irq_line(level_gsi),
    };
    machine
        .add_port_device("test", LOG..=UNEXPECTED, shared(dev))
        .unwrap();
    let recorder = shared(MmioRecorder::default());
    machine
        .add_mmio_device("recorder", MMIO_BASE..=MMIO_BASE + 0xfff, recorder.clone())
        .unwrap();
    machine.load(&plan).expect("load");
    let clocks = vmm_core::cpuid::Clocks {
        tsc_hz: machine.partition().tsc_frequency(),
        apic_hz: machine.partition().apic_timer_frequency(),
    };
    let clocks = (clocks.tsc_hz > 0 && clocks.apic_hz > 0).then_some(clocks);

    let halt = machine.halt_sink();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let dog = std::thread::spawn(move || {
        if done_rx.recv_timeout(watchdog).is_err() {
            halt.request_halt(HaltRequest::GuestCrash(
                "watchdog: payload did not finish".into(),
            ));
        }
    });
    let start = Instant::now();
    let reason = machine.run().expect("run");
    let elapsed = start.elapsed();
    let _ = done_tx.send(());
    dog.join().unwrap();
    let log = std::mem::take(&mut *log.lock());
    let mmio = std::mem::take(&mut recorder.lock().accesses);
    Outcome {
        reason,
        log,
        elapsed,
        mmio,
        assembled,
        clocks,
    }
}
