//! A legacy PC for firmware tests: PIC, PIT, RTC/CMOS, i8042, port 0x92, COM1, the 0x402
//! debug console and an i440FX/PIIX3 PCI bus from the device crates, around one `emu`
//! processor. Used by the SeaBIOS test and example until agar-vmm's PC/AT platform can run on
//! `emu`.

#![allow(
    dead_code,
    reason = "shared by a test and an example that use different parts"
)]

use std::io::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chipset_legacy::pic::DualPic;
use device_api::HaltRequest;
use device_api::HaltSink;
use device_api::IrqTarget;
use device_api::LineInterrupt;
use device_api::Poll;
use device_api::PortIo;
use device_api::VmClock;
use guest_mem::GuestMemory;
use guest_mem::RegionKind;
use virt::ExitHandler;
use virt::Partition;

struct Console {
    line: Vec<u8>,
    start: Instant,
    done: Arc<AtomicBool>,
    prefix: &'static str,
    /// Every line printed, for assertions.
    log: Arc<Mutex<Vec<String>>>,
    echo: bool,
}

impl Console {
    fn put(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let s = String::from_utf8_lossy(&self.line).trim_end().to_string();
                if self.echo {
                    println!(
                        "[{:7.3}] {}{}",
                        self.start.elapsed().as_secs_f64(),
                        self.prefix,
                        s
                    );
                }
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("{}{}", self.prefix, s));
                if s.contains("Booting from") || s.contains("No bootable device") {
                    self.done.store(true, Ordering::Release);
                }
                self.line.clear();
            } else {
                self.line.push(b);
            }
        }
        let _ = std::io::stdout().flush();
    }
}

struct DebugOut(Console);
impl chipset_legacy::misc::ByteOutput for DebugOut {
    fn write(&mut self, bytes: &[u8]) {
        self.0.put(bytes);
    }
}

struct SerialOut(Console);
impl serial_16550::SerialOutput for SerialOut {
    fn write(&mut self, bytes: &[u8]) {
        self.0.put(bytes);
    }
}

struct Halt(Arc<AtomicBool>);
impl HaltSink for Halt {
    fn request_halt(&self, request: HaltRequest) {
        eprintln!("halt requested: {request:?}");
        self.0.store(true, Ordering::Release);
    }
}

#[derive(Default)]
struct Devices {
    pic: Option<DualPic>,
    pit: Option<chipset_legacy::pit::Pit>,
    rtc: Option<chipset_legacy::rtc::Rtc>,
    kbd: Option<chipset_legacy::i8042::I8042>,
    sysa: Option<chipset_legacy::misc::SystemControlA>,
    debug: Option<chipset_legacy::misc::DebugConsole>,
    serial: Option<serial_16550::Serial16550>,
    pci: Option<pci_core::bus::PciBus>,
}

struct Machine {
    dev: Mutex<Devices>,
    partition: OnceLock<Arc<dyn Partition>>,
}

struct Intr(Arc<Machine>);
impl IrqTarget for Intr {
    fn set_irq(&self, _line: u32, high: bool) {
        if let Some(p) = self.0.partition.get() {
            p.set_extint(high);
        }
    }
}

/// ISA IRQ lines into the PIC. Devices call this with the device lock held, so the PIC is
/// reached through `try_lock`-free access: the machine lock is the same `Devices` lock.
struct Isa(Arc<Mutex<Vec<(u8, bool)>>>);
impl IrqTarget for Isa {
    fn set_irq(&self, line: u32, high: bool) {
        // Queued and applied by whoever holds the device lock (see `Io::flush_irqs`).
        self.0.lock().unwrap().push((line as u8, high));
    }
}

pub struct Io {
    m: Arc<Machine>,
    irqs: Arc<Mutex<Vec<(u8, bool)>>>,
}

impl Io {
    fn with<R>(&self, f: impl FnOnce(&mut Devices) -> R) -> R {
        let mut d = self.m.dev.lock().unwrap();
        let r = f(&mut d);
        let pending: Vec<_> = std::mem::take(&mut *self.irqs.lock().unwrap());
        if let Some(pic) = d.pic.as_mut() {
            for (line, high) in pending {
                pic.set_irq(line, high);
            }
        }
        r
    }
}

fn dev_for(d: &mut Devices, port: u16) -> Option<&mut dyn PortIo> {
    Some(match port {
        0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1 => d.pic.as_mut()? as &mut dyn PortIo,
        0x40..=0x43 | 0x61 => d.pit.as_mut()?,
        0x70 | 0x71 => d.rtc.as_mut()?,
        0x60 | 0x64 => d.kbd.as_mut()?,
        0x92 => d.sysa.as_mut()?,
        0x402 => d.debug.as_mut()?,
        0x3f8..=0x3ff => d.serial.as_mut()?,
        0xcf8..=0xcff => d.pci.as_mut()?,
        _ => return None,
    })
}

impl ExitHandler for Io {
    fn pio_read(&self, _vp: u32, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        self.with(|d| {
            if let Some(dev) = dev_for(d, port) {
                let _ = dev.io_read(port, data);
            }
        });
    }
    fn pio_write(&self, _vp: u32, port: u16, data: &[u8]) {
        self.with(|d| {
            if let Some(dev) = dev_for(d, port) {
                let _ = dev.io_write(port, data);
            }
        });
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
        self.with(|d| d.pic.as_mut()?.acknowledge())
    }
    fn eoi(&self, _vector: u8) {}
}

/// A legacy PC with `bios` mapped at the top of 4 GiB and its last 128 KiB at 0xe0000.
pub struct LegacyPc {
    pub partition: Arc<cpu_emu::EmuPartition>,
    pub vp: Box<dyn virt::Processor>,
    pub io: Arc<Io>,
    /// Set when the firmware printed "Booting from"/"No bootable device" or asked to halt.
    pub done: Arc<AtomicBool>,
    /// Lines printed on the debug console and COM1.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl LegacyPc {
    pub fn new(bios: &[u8], ram: u64, echo: bool) -> anyhow::Result<LegacyPc> {
        let size = bios.len() as u64;
        let memory = GuestMemory::new(&[
            (0, 0xa_0000, RegionKind::Ram),
            (0xc_0000, ram - 0xc_0000, RegionKind::Ram),
            ((1u64 << 32) - size, size, RegionKind::Rom),
        ])?;
        memory.load_image((1u64 << 32) - size, bios)?;
        let tail = bios.len().saturating_sub(128 << 10);
        memory.write_at(0xe_0000, &bios[tail..])?;
        let start = Instant::now();
        let done = Arc::new(AtomicBool::new(false));
        let clock = VmClock::new();
        let machine = Arc::new(Machine {
            dev: Mutex::new(Devices::default()),
            partition: OnceLock::new(),
        });
        let irqs = Arc::new(Mutex::new(Vec::new()));
        let isa = |line| LineInterrupt::new(Arc::new(Isa(irqs.clone())), line);
        let halt: Arc<dyn HaltSink> = Arc::new(Halt(done.clone()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let console = |prefix| Console {
            line: Vec::new(),
            start,
            done: done.clone(),
            prefix,
            log: log.clone(),
            echo,
        };
        {
            let mut d = machine.dev.lock().unwrap();
            d.pic = Some(DualPic::new(LineInterrupt::new(
                Arc::new(Intr(machine.clone())),
                0,
            )));
            d.pit = Some(chipset_legacy::pit::Pit::new(
                isa(0),
                clock.clone(),
                device_api::PollWaker::new(|| {}),
            ));
            d.rtc = Some(chipset_legacy::rtc::Rtc::new(
                &chipset_legacy::rtc::CmosConfig {
                    initial_time: 1_700_000_000,
                    ram_below_4g: ram,
                    ram_above_4g: 0,
                    processors: 1,
                },
                isa(8),
                clock.clone(),
                device_api::PollWaker::new(|| {}),
            ));
            d.kbd = Some(chipset_legacy::i8042::I8042::new(
                isa(1),
                isa(12),
                halt.clone(),
            ));
            d.sysa = Some(chipset_legacy::misc::SystemControlA::new(halt.clone()));
            d.debug = Some(chipset_legacy::misc::DebugConsole::new(Box::new(DebugOut(
                console(""),
            ))));
            d.serial = Some(serial_16550::Serial16550::new(
                0x3f8,
                isa(4),
                Box::new(SerialOut(console("COM1: "))),
                Default::default(),
                clock.clone(),
            ));
            let mut pci = pci_core::bus::PciBus::new();
            let host: Arc<parking_lot::Mutex<dyn pci_core::PciFunction>> =
                Arc::new(parking_lot::Mutex::new(pci_core::chipset::I440fxHost::new()));
            let isa_bridge: Arc<parking_lot::Mutex<dyn pci_core::PciFunction>> =
                Arc::new(parking_lot::Mutex::new(pci_core::chipset::Piix3Isa::new()));
            let bdf = |device, function| pci_core::Bdf {
                bus: 0,
                device,
                function,
            };
            pci.add(bdf(0, 0), "i440fx", host, None, None)?;
            pci.add(bdf(1, 0), "piix3", isa_bridge, None, None)?;
            d.pci = Some(pci);
        }
        let io = Arc::new(Io {
            m: machine.clone(),
            irqs,
        });
        {
            let io = io.clone();
            let c = clock.clone();
            std::thread::spawn(move || {
                loop {
                    let now = c.now_ns();
                    io.with(|d| {
                        if let Some(p) = d.pit.as_mut() {
                            p.poll(now);
                        }
                        if let Some(r) = d.rtc.as_mut() {
                            r.poll(now);
                        }
                        if let Some(s) = d.serial.as_mut() {
                            s.poll(now);
                        }
                    });
                    std::thread::sleep(std::time::Duration::from_micros(500));
                }
            });
        }
        let emu = cpu_emu::EmuPartition::new(virt::PartitionConfig {
            processor_count: 1,
            memory,
            clock,
            tsc_frequency: 1_000_000_000,
            user_msrs: Vec::new(),
        })?;
        let partition: Arc<dyn Partition> = emu.clone();
        let _ = machine.partition.set(partition.clone());
        let vp = partition.create_processor(0, &cpu_emu::supported_cpuid(1))?;
        Ok(LegacyPc {
            partition: emu,
            vp,
            io,
            done,
            log,
        })
    }

    /// Runs until the firmware is done or `secs` pass.
    pub fn run(&mut self, secs: u64) -> anyhow::Result<virt::VpExit> {
        let start = Instant::now();
        let p = self.partition.clone();
        let done = self.done.clone();
        let watchdog = std::thread::spawn(move || {
            while start.elapsed().as_secs() < secs && !done.load(Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            virt::Partition::stop(&*p);
        });
        let exit = self.vp.run(&*self.io)?;
        self.done.store(true, Ordering::Release);
        let _ = watchdog.join();
        Ok(exit)
    }
}
