//! The machine: memory, devices, interrupt wiring and processors, built once and run on a
//! CPU backend.

use std::sync::Arc;

use chipset_legacy::i8042::I8042;
use chipset_legacy::ioapic::InterruptSink;
use chipset_legacy::ioapic::IoApic;
use chipset_legacy::misc;
use chipset_legacy::pic::DualPic;
use chipset_legacy::pit::Pit;
use chipset_legacy::pm::AcpiPm;
use chipset_legacy::router::IrqRouter;
use chipset_legacy::router::SharedLine;
use chipset_legacy::rtc::CmosConfig;
use chipset_legacy::rtc::Rtc;
use device_api::HaltSink;
use device_api::IrqTarget;
use device_api::LineInterrupt;
use device_api::Mmio;
use device_api::MmioBus;
use device_api::PioBus;
use device_api::Poll;
use device_api::PortIo;
use device_api::RegisterError;
use device_api::Shared;
use device_api::VmClock;
use device_api::shared;
use guest_mem::GuestMemory;
use guest_mem::GuestMemoryError;
use loaders::LoadPlan;
use serial_16550::Serial16550;
use virt::Hypervisor;
use virt::InterruptRequest;
use virt::Partition;
use virt::PartitionConfig;
use virt::Processor;
use virt::VirtError;
use virt::VpExit;
use vm_config::SerialConfig;

use crate::cpuid;
use crate::exits::MachineExits;
use crate::halt::Halt;
use crate::halt::HaltReason;
use crate::layout;
use crate::layout::LayoutError;
use crate::layout::MemoryLayout;
use crate::msr::MsrPolicy;
use crate::pcat;
use crate::pcat::FirmwareImage;
use crate::pcat::PcatError;
use crate::serial::SerialBackend;
use crate::serial::SerialError;
use crate::timer::Poller;
use crate::vmbus::HyperV;
use crate::vmbus::VmbusError;

/// TSC frequency requested from backends that can choose (1 GHz: one tick per nanosecond of
/// the machine clock).
pub const TSC_FREQUENCY: u64 = 1_000_000_000;

/// COM1..COM4: base port and ISA IRQ.
pub const COM_PORTS: [(u16, u32); 4] = [
    serial_16550::com::COM1,
    serial_16550::com::COM2,
    serial_16550::com::COM3,
    serial_16550::com::COM4,
];

/// ISA IRQ of the ACPI SCI.
pub const ACPI_SCI_IRQ: u8 = 9;

/// Building or running the machine failed (not a guest failure: those are [`HaltReason`]s).
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The memory size does not work.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Processor count out of range.
    #[error("{0} processors is outside 1..={max}", max = layout::MAX_PROCESSORS)]
    Processors(u32),
    /// Guest memory could not be set up or written.
    #[error(transparent)]
    Memory(#[from] GuestMemoryError),
    /// The CPU backend failed.
    #[error(transparent)]
    Backend(#[from] VirtError),
    /// Two devices claim the same range.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// A serial backend could not start.
    #[error(transparent)]
    Serial(#[from] SerialError),
    /// The ACPI tables could not be built.
    #[error("cannot build the ACPI tables")]
    Acpi(#[from] acpi::AcpiError),
    /// A machine thread could not start.
    #[error("cannot start the {0} thread")]
    Thread(&'static str, #[source] std::io::Error),
    /// A disk could not be opened.
    #[error("cannot open disk {0}")]
    Disk(String, #[source] disk::DiskError),
    /// The VMBus devices could not be set up.
    #[error(transparent)]
    Vmbus(#[from] VmbusError),
    /// The PC/AT platform could not be set up.
    #[error(transparent)]
    Pcat(#[from] PcatError),
    /// IDE disks need the PC/AT platform.
    #[error("IDE disks need the PC/AT platform (--pcat)")]
    IdeWithoutPcat,
}

/// What the machine is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    /// Virtual processors.
    pub processors: u32,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// COM1..COM4.
    pub serial: [SerialConfig; 4],
    /// The firmware debug port (0x402).
    pub firmware_log: SerialConfig,
    /// Hyper-V enlightenments, VMBus and its SCSI controller (`--hv`).
    pub hv: bool,
    /// Disks; those on [`vm_config::DiskBus::VmbusScsi`] go to the VMBus SCSI controller,
    /// those on [`vm_config::DiskBus::Ide`] to the PC/AT IDE controller.
    pub disks: Vec<vm_config::DiskConfig>,
    /// Boot this BIOS image on the PC/AT platform ([`pcat`]) instead of a loaded kernel.
    pub pcat: Option<FirmwareImage>,
}

impl MachineConfig {
    /// `processors` VPs and `memory` bytes, COM1 on the console, everything else off.
    pub fn new(processors: u32, memory: u64) -> Self {
        Self {
            processors,
            memory,
            serial: [
                SerialConfig::Console,
                SerialConfig::None,
                SerialConfig::None,
                SerialConfig::None,
            ],
            firmware_log: SerialConfig::None,
            hv: false,
            disks: Vec::new(),
            pcat: None,
        }
    }
}

/// Opens an IDE disk; a CD-ROM's image is opened read-only.
fn open_ide(d: &vm_config::DiskConfig) -> Result<pcat::IdeAttachment, MachineError> {
    let mut spec = d.spec.clone();
    if d.dvd
        && let disk::DiskSpec::File { read_only, .. } = &mut spec
    {
        *read_only = true;
    }
    let disk = disk::open(&spec).map_err(|e| MachineError::Disk(d.spec.to_string(), e))?;
    Ok(pcat::IdeAttachment {
        disk,
        optical: d.dvd,
    })
}

/// The text of a panic payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The PIC's INTR output, wired to the bootstrap processor's LINT0.
struct ExtIntLine(Arc<dyn Partition>);

impl IrqTarget for ExtIntLine {
    fn set_irq(&self, _line: u32, high: bool) {
        self.0.set_extint(high);
    }
}

/// The I/O APIC's messages, delivered to the local APICs.
struct PartitionSink(Arc<dyn Partition>);

impl InterruptSink for PartitionSink {
    fn request_interrupt(&self, request: InterruptRequest) {
        self.0.request_interrupt(request);
    }
}

/// A machine ready to run.
pub struct Machine {
    layout: MemoryLayout,
    memory: GuestMemory,
    clock: VmClock,
    backend: &'static str,
    partition: Arc<dyn Partition>,
    processors: Vec<Box<dyn Processor>>,
    pio: PioBus,
    mmio: MmioBus,
    poller: Poller,
    halt: Arc<Halt>,
    pic: Shared<DualPic>,
    ioapic: Shared<IoApic>,
    router: Arc<IrqRouter>,
    serial: Vec<SerialBackend>,
    msrs: MsrPolicy,
    acpi_rsdp: u64,
    hyperv: Option<Arc<HyperV>>,
    bar_updates: Option<pci_core::bus::BarUpdates>,
}

impl Machine {
    /// Builds the machine for `config` on `hv`: memory, chipset, serial ports, processors.
    pub fn new(config: &MachineConfig, hv: &dyn Hypervisor) -> Result<Self, MachineError> {
        if config.processors == 0 || config.processors > layout::MAX_PROCESSORS {
            return Err(MachineError::Processors(config.processors));
        }
        let layout = MemoryLayout::new(config.memory)?;
        let ide_disks: Vec<&vm_config::DiskConfig> = config
            .disks
            .iter()
            .filter(|d| d.bus == vm_config::DiskBus::Ide)
            .collect();
        if !ide_disks.is_empty() && config.pcat.is_none() {
            return Err(MachineError::IdeWithoutPcat);
        }
        let memory = match &config.pcat {
            Some(fw) => {
                pcat::check_firmware(&fw.0)?;
                let memory = GuestMemory::new(&pcat::memory_regions(&layout, fw.0.len()))?;
                pcat::load_firmware(&memory, &fw.0)?;
                memory
            }
            None => GuestMemory::new(&layout.regions())?,
        };
        let clock = VmClock::new();
        let msrs = MsrPolicy::new(config.hv);
        let partition = hv.new_partition(PartitionConfig {
            processor_count: config.processors,
            memory: memory.clone(),
            clock: clock.clone(),
            tsc_frequency: TSC_FREQUENCY,
            user_msrs: msrs.user_msrs(),
        })?;
        let halt = Halt::new(partition.clone());

        let mut pio = PioBus::new();
        let mut mmio = MmioBus::new();
        let mut poller = Poller::new();

        // Interrupt controllers and routing.
        let pic = shared(DualPic::new(LineInterrupt::new(
            Arc::new(ExtIntLine(partition.clone())),
            0,
        )));
        for (i, range) in DualPic::port_ranges().into_iter().enumerate() {
            let name = ["pic-master", "pic-slave", "elcr"][i];
            pio.register(name, range, pic.clone())?;
        }
        let ioapic = shared(IoApic::new(
            config.processors as u8,
            layout::IOAPIC_BASE,
            Arc::new(PartitionSink(partition.clone())),
        ));
        let range = ioapic.lock().mmio_range();
        mmio.register("ioapic", range, ioapic.clone())?;
        let router = IrqRouter::new(pic.clone(), ioapic.clone());

        // Serial ports. COM1/COM3 share IRQ 4 and COM2/COM4 IRQ 3, wired-OR.
        let irq4 = SharedLine::new(router.clone(), 4);
        let irq3 = SharedLine::new(router.clone(), 3);
        let mut serial = Vec::new();
        let mut console_input_taken = false;
        for (i, (base, irq)) in COM_PORTS.into_iter().enumerate() {
            let cfg = &config.serial[i];
            let console_input = *cfg == SerialConfig::Console && !console_input_taken;
            console_input_taken |= console_input;
            let backend = SerialBackend::new(&format!("com{}", i + 1), cfg, console_input)?;
            let line = if irq == 4 { &irq4 } else { &irq3 };
            let input = backend.input();
            let dev = shared(Serial16550::new(
                base,
                line.source(i as u32),
                backend.output(),
                input.clone(),
                clock.clone(),
            ));
            let waker = poller.waker();
            input.set_notify(move || waker.wake());
            let ports = dev.lock().ports();
            pio.register(&format!("com{}", i + 1), ports, dev.clone())?;
            poller.add(dev);
            serial.push(backend);
        }

        // The rest of the chipset (docs/src/machine.md, "Ports").
        let waker = poller.waker();
        let pit = shared(Pit::new(
            LineInterrupt::new(router.clone(), 0),
            clock.clone(),
            waker.clone(),
        ));
        for (i, range) in Pit::port_ranges().into_iter().enumerate() {
            pio.register(["pit", "port61"][i], range, pit.clone())?;
        }
        poller.add(pit);
        let initial_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let rtc = shared(Rtc::new(
            &CmosConfig {
                initial_time,
                ram_below_4g: layout.low_ram_end(),
                ram_above_4g: layout.high_ram_len(),
                processors: config.processors,
            },
            LineInterrupt::new(router.clone(), 8),
            clock.clone(),
            waker.clone(),
        ));
        pio.register("rtc", Rtc::port_range(), rtc.clone())?;
        poller.add(rtc);
        let i8042 = shared(I8042::new(
            LineInterrupt::new(router.clone(), 1),
            LineInterrupt::new(router.clone(), 12),
            halt.clone(),
        ));
        for (i, range) in I8042::ports().into_iter().enumerate() {
            pio.register(["i8042-data", "i8042-command"][i], range, i8042.clone())?;
        }
        let pm = shared(AcpiPm::new(
            chipset_legacy::pm::PM_BASE,
            LineInterrupt::new(router.clone(), u32::from(ACPI_SCI_IRQ)),
            clock.clone(),
            halt.clone(),
            waker,
        ));
        let ranges = pm.lock().port_ranges();
        for (i, range) in ranges.into_iter().enumerate() {
            pio.register(["acpi-pm1", "acpi-gpe0"][i], range, pm.clone())?;
        }
        poller.add(pm);
        let reset = misc::PORT_RESET_CONTROL;
        pio.register(
            "reset-control",
            reset..=reset,
            shared(misc::ResetControl::new(halt.clone())),
        )?;
        let pvpanic = misc::PORT_PVPANIC;
        pio.register(
            "pvpanic",
            pvpanic..=pvpanic,
            shared(misc::PvPanic::new(halt.clone())),
        )?;
        let post = misc::PORT_POST;
        pio.register("post", post..=post, shared(misc::PostCode::new()))?;
        let firmware_log = SerialBackend::new("firmware-log", &config.firmware_log, false)?;
        let debugcon = misc::PORT_DEBUG_CONSOLE;
        pio.register(
            "debug-console",
            debugcon..=debugcon,
            shared(misc::DebugConsole::new(Box::new(
                firmware_log.byte_output(),
            ))),
        )?;
        serial.push(firmware_log);

        // Hyper-V enlightenments and VMBus (`--hv`), with the VMBus SCSI disks.
        let hyperv = if config.hv {
            let disks = config
                .disks
                .iter()
                .filter(|d| d.bus == vm_config::DiskBus::VmbusScsi)
                .map(|d| disk::open(&d.spec).map_err(|e| MachineError::Disk(d.spec.to_string(), e)))
                .collect::<Result<Vec<_>, _>>()?;
            Some(Arc::new(HyperV::new(
                &memory,
                &clock,
                partition.clone(),
                halt.clone(),
                config.processors,
                disks,
            )?))
        } else {
            None
        };

        let mut acpi_config = acpi::AcpiConfig::pc(config.processors);
        if hyperv.is_some() {
            acpi_config.extra_devices.push(acpi::devices::vmbus(None));
        }
        let (acpi_rsdp, bar_updates) = if config.pcat.is_some() {
            // Linux only scans PCI below a PNP0A03 root bridge it finds in the DSDT.
            acpi_config
                .extra_devices
                .push(acpi::devices::pci_root_bridge(&pcat::pci_root(&layout)));
            // The firmware installs the ACPI tables (fw_cfg's table loader) and owns the BIOS
            // window they would take.
            let ide = ide_disks
                .iter()
                .map(|d| open_ide(d))
                .collect::<Result<Vec<_>, _>>()?;
            let platform = pcat::build(
                pcat::PcatParts {
                    memory: &memory,
                    layout: &layout,
                    processors: config.processors,
                    ide: &ide,
                    ide_irqs: ide::IRQS.map(|irq| LineInterrupt::new(router.clone(), irq)),
                    acpi: &acpi_config,
                    halt: halt.clone(),
                },
                &mut pio,
            )?;
            (0, Some(platform.bar_updates))
        } else {
            // ACPI tables for a directly booted OS: RSDP at the start of the BIOS-area window
            // Linux scans, the tables right after it.
            let acpi = acpi::AcpiTables::build(
                &acpi_config,
                layout::ACPI_TABLES_START,
                layout::ACPI_RSDP,
            )?;
            for (gpa, bytes) in &acpi.regions {
                let end = gpa + bytes.len() as u64;
                if end > layout::ACPI_TABLES.end {
                    return Err(MachineError::Acpi(acpi::AcpiError::TooLarge("ACPI tables")));
                }
                memory.write_at(*gpa, bytes)?;
            }
            (acpi.rsdp_address, None)
        };

        let supported = match hv.supported_cpuid() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "using the baseline CPUID");
                cpuid::baseline()
            }
        };
        let clocks = cpuid::Clocks {
            tsc_hz: partition.tsc_frequency(),
            apic_hz: partition.apic_timer_frequency(),
        };
        let clocks = (clocks.tsc_hz > 0 && clocks.apic_hz > 0).then_some(clocks);
        let mut table = cpuid::machine_cpuid(&supported, config.processors, clocks);
        if let Some(h) = &hyperv {
            h.apply_cpuid(&mut table);
        }
        let processors = (0..config.processors)
            .map(|i| partition.create_processor(i, &table))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Self {
            layout,
            memory,
            clock,
            backend: hv.name(),
            partition,
            processors,
            pio,
            mmio,
            poller,
            halt,
            pic,
            ioapic,
            router,
            serial,
            msrs,
            acpi_rsdp,
            hyperv,
            bar_updates,
        })
    }

    /// Where the machine put the ACPI RSDP (for the Linux zero page).
    pub fn acpi_rsdp(&self) -> u64 {
        self.acpi_rsdp
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemory {
        &self.memory
    }

    /// The memory layout.
    pub fn layout(&self) -> &MemoryLayout {
        &self.layout
    }

    /// The machine clock.
    pub fn clock(&self) -> &VmClock {
        &self.clock
    }

    /// The CPU backend's name.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The partition (interrupt delivery, TSC and APIC timer frequencies).
    pub fn partition(&self) -> &Arc<dyn Partition> {
        &self.partition
    }

    /// Where devices send halt requests.
    pub fn halt_sink(&self) -> Arc<dyn HaltSink> {
        self.halt.clone()
    }

    /// An interrupt line into the machine's router: ISA IRQ / GSI `gsi`.
    pub fn irq_line(&self, gsi: u32) -> LineInterrupt {
        LineInterrupt::new(self.router.clone(), gsi)
    }

    /// A waker for the timer thread (for devices added with [`Self::add_poll_device`]).
    pub fn poll_waker(&self) -> device_api::PollWaker {
        self.poller.waker()
    }

    /// Adds a port I/O device.
    pub fn add_port_device(
        &mut self,
        name: &str,
        ports: std::ops::RangeInclusive<u16>,
        device: Shared<dyn PortIo>,
    ) -> Result<(), MachineError> {
        Ok(self.pio.register(name, ports, device)?)
    }

    /// Adds an MMIO device.
    pub fn add_mmio_device(
        &mut self,
        name: &str,
        range: std::ops::RangeInclusive<u64>,
        device: Shared<dyn Mmio>,
    ) -> Result<(), MachineError> {
        Ok(self.mmio.register(name, range, device)?)
    }

    /// Adds a device the timer thread polls.
    pub fn add_poll_device(&mut self, device: Shared<dyn Poll>) {
        self.poller.add(device);
    }

    /// Applies a loader's plan: memory contents, then the boot processor's registers.
    pub fn load(&mut self, plan: &LoadPlan) -> Result<(), MachineError> {
        for c in &plan.chunks {
            self.memory.write_at(c.gpa, c.bytes())?;
            if c.zero_tail > 0 {
                self.memory
                    .fill_at(c.gpa + c.bytes().len() as u64, 0, c.zero_tail)?;
            }
        }
        let bsp = self
            .processors
            .first_mut()
            .ok_or(MachineError::Processors(0))?;
        let mut sregs = plan.special_registers;
        sregs.apic_base = bsp.special_registers()?.apic_base;
        bsp.set_special_registers(&sregs)?;
        bsp.set_registers(&plan.registers)?;
        Ok(())
    }

    /// Runs until the guest halts; returns why. Serial output is flushed before this returns.
    pub fn run(self) -> Result<HaltReason, MachineError> {
        let Self {
            clock,
            processors,
            pio,
            mmio,
            poller,
            halt,
            pic,
            ioapic,
            mut serial,
            msrs,
            hyperv,
            bar_updates,
            ..
        } = self;
        let exits = Arc::new(
            MachineExits::new(pio, mmio, Some(pic), Some(ioapic), msrs)
                .with_hyperv(hyperv.clone())
                .with_bar_updates(bar_updates),
        );
        let timer_halt = halt.clone();
        let mut timer = poller
            .start(clock, move |msg| {
                timer_halt.halt(HaltReason::BackendError(msg));
            })
            .map_err(|e| MachineError::Thread("timer", e))?;
        let mut threads = Vec::new();
        for mut p in processors {
            let exits = exits.clone();
            let vp_halt = halt.clone();
            let vp = p.index();
            let t = std::thread::Builder::new()
                .name(format!("vp{vp}"))
                .spawn(move || {
                    // A panic in the backend or a device must end the run, not leave the
                    // machine waiting for a halt that never comes.
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        match p.run(&*exits) {
                            Ok(VpExit::Stopped) => None,
                            Ok(VpExit::TripleFault) => Some(HaltReason::TripleFault {
                                vp,
                                rip: p.registers().ok().map(|r| r.rip),
                            }),
                            Err(VirtError::Internal(detail)) => {
                                Some(HaltReason::BackendError(detail))
                            }
                            Err(e) => Some(HaltReason::BackendError(e.to_string())),
                        }
                    }));
                    let reason = match run {
                        Ok(None) => return,
                        Ok(Some(reason)) => reason,
                        Err(panic) => HaltReason::BackendError(format!(
                            "vp{vp} panicked: {}",
                            panic_message(&*panic)
                        )),
                    };
                    vp_halt.halt(reason);
                });
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    halt.halt(HaltReason::BackendError(format!(
                        "cannot start vp{vp}: {e}"
                    )));
                    break;
                }
            }
        }
        let reason = halt.wait();
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a vCPU thread panicked");
            }
        }
        timer.stop();
        if let Some(h) = &hyperv {
            h.shutdown();
        }
        for s in &mut serial {
            s.close();
        }
        Ok(reason)
    }
}
