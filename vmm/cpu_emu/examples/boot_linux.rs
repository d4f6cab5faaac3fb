//! Throwaway Linux boot harness for developing the `emu` CPU until agar-vmm can select it.
//!
//! Loads a kernel (bzImage or vmlinux) and an initrd with the `loaders` crate, wires a PIC and
//! COM1 from the team's device crates, and runs the boot processor on `cpu_emu`. COM1 goes to
//! stdout. Stops on "reboot: Power down", a triple fault, or `--secs`.
//!
//! `cargo run --release -p cpu_emu --example boot_linux -- KERNEL INITRD [--mem MB] [--secs N]
//! [--append "..."]`

use std::io::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::Context;
use chipset_legacy::pic::DualPic;
use device_api::IrqTarget;
use device_api::LineInterrupt;
use device_api::PortIo;
use device_api::VmClock;
use guest_mem::GuestMemory;
use serial_16550::Serial16550;
use serial_16550::SerialOutput;
use virt::ExitHandler;
use virt::Partition;

struct Stdout {
    line: Vec<u8>,
    seen_power_down: Arc<std::sync::atomic::AtomicBool>,
    start: Instant,
}

impl SerialOutput for Stdout {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let s = String::from_utf8_lossy(&self.line);
                println!(
                    "[{:8.3}] {}",
                    self.start.elapsed().as_secs_f64(),
                    s.trim_end()
                );
                if s.contains("reboot: Power down") || s.contains("System halted") {
                    self.seen_power_down
                        .store(true, std::sync::atomic::Ordering::Release);
                }
                self.line.clear();
            } else {
                self.line.push(b);
            }
        }
        let _ = std::io::stdout().flush();
    }
}

struct Machine {
    pic: Mutex<DualPic>,
    pit: Mutex<Option<chipset_legacy::pit::Pit>>,
    serial: Mutex<Option<Serial16550>>,
    partition: OnceLock<Arc<dyn Partition>>,
}

struct PicIntr(Arc<Machine>);
impl IrqTarget for PicIntr {
    fn set_irq(&self, _line: u32, high: bool) {
        if let Some(p) = self.0.partition.get() {
            p.set_extint(high);
        }
    }
}

struct Isa(Arc<Machine>);
impl IrqTarget for Isa {
    fn set_irq(&self, line: u32, high: bool) {
        self.0.pic.lock().unwrap().set_irq(line as u8, high);
    }
}

struct Io(Arc<Machine>);
impl ExitHandler for Io {
    fn pio_read(&self, _vp: u32, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        match port {
            0x3f8..=0x3ff => {
                if let Some(s) = self.0.serial.lock().unwrap().as_mut() {
                    let _ = s.io_read(port, data);
                }
            }
            0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1 => {
                let _ = self.0.pic.lock().unwrap().io_read(port, data);
            }
            0x40..=0x43 | 0x61 => {
                if let Some(p) = self.0.pit.lock().unwrap().as_mut() {
                    let _ = p.io_read(port, data);
                }
            }
            _ => {}
        }
    }
    fn pio_write(&self, _vp: u32, port: u16, data: &[u8]) {
        match port {
            0x3f8..=0x3ff => {
                if let Some(s) = self.0.serial.lock().unwrap().as_mut() {
                    let _ = s.io_write(port, data);
                }
            }
            0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1 => {
                let _ = self.0.pic.lock().unwrap().io_write(port, data);
            }
            0x40..=0x43 | 0x61 => {
                if let Some(p) = self.0.pit.lock().unwrap().as_mut() {
                    let _ = p.io_write(port, data);
                }
            }
            0x505 => eprintln!("pvpanic: guest crash ({:#x})", data[0]),
            _ => {}
        }
    }
    fn mmio_read(&self, _vp: u32, _gpa: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&self, _vp: u32, _gpa: u64, _data: &[u8]) {}
    fn msr_read(&self, _vp: u32, _msr: u32) -> Option<u64> {
        None
    }
    fn msr_write(&self, _vp: u32, _msr: u32, _value: u64) -> bool {
        false
    }
    fn hypercall(&self, _vp: u32, _input: virt::HypercallInput) -> u64 {
        2
    }
    fn pic_acknowledge(&self) -> Option<u8> {
        self.0.pic.lock().unwrap().acknowledge()
    }
    fn eoi(&self, _vector: u8) {}
}

fn main() -> anyhow::Result<()> {
    tracing_init();
    let args: Vec<String> = std::env::args().collect();
    let mut pos = Vec::new();
    let mut mem_mb = 256u64;
    let mut secs = 120u64;
    let mut append = String::from("console=ttyS0 earlyprintk=serial,ttyS0 noapic nokaslr");
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--mem" => {
                mem_mb = args[i + 1].parse()?;
                i += 1;
            }
            "--secs" => {
                secs = args[i + 1].parse()?;
                i += 1;
            }
            "--append" => {
                append = args[i + 1].clone();
                i += 1;
            }
            a => pos.push(a.to_string()),
        }
        i += 1;
    }
    let kernel = std::fs::read(pos.first().context("kernel path")?)?;
    let initrd = pos.get(1).map(std::fs::read).transpose()?;
    let mem_size = mem_mb << 20;
    let memory = GuestMemory::new(&[(0, mem_size, guest_mem::RegionKind::Ram)])?;
    let e820 = vec![
        loaders::E820Entry {
            addr: 0,
            size: 0x9fc00,
            kind: loaders::E820Type::Ram,
        },
        loaders::E820Entry {
            addr: 0x9fc00,
            size: 0x60400,
            kind: loaders::E820Type::Reserved,
        },
        loaders::E820Entry {
            addr: 0x10_0000,
            size: mem_size - 0x10_0000,
            kind: loaders::E820Type::Ram,
        },
    ];
    let k = loaders::linux::Kernel::parse(&kernel)?;
    let plan = loaders::linux::load(
        &k,
        initrd,
        &append,
        &loaders::linux::GuestInfo {
            e820,
            acpi_rsdp: None,
        },
    )?;
    eprintln!("{}", plan.summary);
    for c in &plan.chunks {
        memory.write_at(c.gpa, c.bytes())?;
        if c.zero_tail > 0 {
            memory.fill_at(c.gpa + c.range.len() as u64, 0, c.zero_tail)?;
        }
    }
    let start = Instant::now();
    let power_down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let machine = Arc::new(Machine {
        pic: Mutex::new(DualPic::new(LineInterrupt::detached())),
        pit: Mutex::new(None),
        serial: Mutex::new(None),
        partition: OnceLock::new(),
    });
    *machine.pic.lock().unwrap() =
        DualPic::new(LineInterrupt::new(Arc::new(PicIntr(machine.clone())), 0));
    let clock = VmClock::new();
    *machine.pit.lock().unwrap() = Some(chipset_legacy::pit::Pit::new(
        LineInterrupt::new(Arc::new(Isa(machine.clone())), 0),
        clock.clone(),
        device_api::PollWaker::new(|| {}),
    ));
    {
        let m = machine.clone();
        let c = clock.clone();
        std::thread::spawn(move || {
            loop {
                if let Some(p) = m.pit.lock().unwrap().as_mut() {
                    device_api::Poll::poll(p, c.now_ns());
                }
                std::thread::sleep(std::time::Duration::from_micros(500));
            }
        });
    }
    *machine.serial.lock().unwrap() = Some(Serial16550::new(
        0x3f8,
        LineInterrupt::new(Arc::new(Isa(machine.clone())), 4),
        Box::new(Stdout {
            line: Vec::new(),
            seen_power_down: power_down.clone(),
            start,
        }),
        Default::default(),
        clock.clone(),
    ));
    let emu = cpu_emu::EmuPartition::new(virt::PartitionConfig {
        processor_count: 1,
        memory: memory.clone(),
        clock,
        tsc_frequency: 2_000_000_000,
        user_msrs: Vec::new(),
    })?;
    let partition: Arc<dyn Partition> = emu.clone();
    let _ = machine.partition.set(partition.clone());
    let mut vp = partition.create_processor(0, &cpu_emu::supported_cpuid(1))?;
    let mut sregs = plan.special_registers;
    sregs.apic_base = vp.special_registers()?.apic_base;
    vp.set_special_registers(&sregs)?;
    vp.set_registers(&plan.registers)?;
    let p2 = partition.clone();
    let pd = power_down.clone();
    std::thread::spawn(move || {
        while start.elapsed().as_secs() < secs && !pd.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        p2.stop();
    });
    let io = Io(machine.clone());
    let exit = vp.run(&io);
    let secs_run = start.elapsed().as_secs_f64();
    let cpu_secs = process_cpu_seconds();
    eprintln!(
        "{} instructions in {:.3}s ({:.3}s CPU): {:.1} M/s wall, {:.1} M/s CPU; delivered {:?}",
        emu.instructions(),
        secs_run,
        cpu_secs,
        emu.instructions() as f64 / secs_run / 1e6,
        emu.instructions() as f64 / cpu_secs / 1e6,
        emu.delivered()
    );
    let r = vp.registers()?;
    let s = vp.special_registers()?;
    eprintln!(
        "exit {:?} after {:.3}s: rip={:#x} cs={:#x} cr0={:#x} cr3={:#x} rsp={:#x}",
        exit,
        start.elapsed().as_secs_f64(),
        r.rip,
        s.cs.selector,
        s.cr0,
        s.cr3,
        r.gpr[4]
    );
    Ok(())
}

/// User + system CPU time of this process, from /proc.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn tracing_init() {
    // Minimal: warnings from the CPU (unimplemented instructions) to stderr.
    struct Sub;
    impl tracing::Subscriber for Sub {
        fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
            *m.level()
                <= if std::env::var_os("EMU_DEBUG").is_some() {
                    tracing::Level::DEBUG
                } else {
                    tracing::Level::INFO
                }
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, e: &tracing::Event<'_>) {
            struct V(String);
            impl tracing::field::Visit for V {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push_str(&format!(" {}={:?}", f.name(), v));
                }
            }
            let mut v = V(String::new());
            e.record(&mut v);
            eprintln!("[{}]{}", e.metadata().level(), v.0);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }
    let _ = tracing::subscriber::set_global_default(Sub);
}
