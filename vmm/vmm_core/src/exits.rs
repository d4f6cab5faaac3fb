//! The machine's [`ExitHandler`]: what a running processor's port, MMIO, MSR, hypercall,
//! ExtINT-acknowledge and EOI events turn into.

use chipset_legacy::ioapic::IoApic;
use chipset_legacy::pic::DualPic;
use device_api::MmioBus;
use device_api::PioBus;
use device_api::Shared;
use parking_lot::RwLock;
use pci_core::bus::BarUpdate;
use pci_core::bus::BarUpdates;
use virt::ExitHandler;
use virt::HypercallInput;

use crate::msr::HYPERV_MSRS;
use crate::msr::MsrPolicy;
use crate::vmbus::HyperV;

/// Hyper-V status for a hypercall the machine does not implement.
pub const HV_STATUS_INVALID_HYPERCALL_CODE: u64 = 2;

/// Dispatches processor exits to the machine's buses and devices.
pub struct MachineExits {
    pio: RwLock<PioBus>,
    mmio: RwLock<MmioBus>,
    bar_updates: Option<BarUpdates>,
    /// First port / address of each BAR range this handler mapped (an unmap for a range whose
    /// mapping was refused must not release another device's range).
    bar_ranges: parking_lot::Mutex<(Vec<u16>, Vec<u64>)>,
    pic: Option<Shared<DualPic>>,
    ioapic: Option<Shared<IoApic>>,
    msrs: MsrPolicy,
    hyperv: Option<std::sync::Arc<HyperV>>,
}

impl MachineExits {
    /// The exit handler over the machine's buses, interrupt controllers and MSR policy.
    pub fn new(
        pio: PioBus,
        mmio: MmioBus,
        pic: Option<Shared<DualPic>>,
        ioapic: Option<Shared<IoApic>>,
        msrs: MsrPolicy,
    ) -> Self {
        Self {
            pio: RwLock::new(pio),
            mmio: RwLock::new(mmio),
            bar_updates: None,
            bar_ranges: parking_lot::Mutex::new((Vec::new(), Vec::new())),
            pic,
            ioapic,
            msrs,
            hyperv: None,
        }
    }

    /// Routes the Hyper-V synthetic MSRs and hypercalls to `hyperv` (`--hv`).
    pub fn with_hyperv(mut self, hyperv: Option<std::sync::Arc<HyperV>>) -> Self {
        self.hyperv = hyperv;
        self
    }

    /// Applies PCI BAR changes from `updates` to the buses after port writes (the PCI
    /// configuration data port is where BARs and command bits change).
    pub fn with_bar_updates(mut self, updates: Option<BarUpdates>) -> Self {
        self.bar_updates = updates;
        self
    }

    fn apply_bar_updates(&self, updates: &BarUpdates) {
        let mut mapped = self.bar_ranges.lock();
        let (io, mem) = &mut *mapped;
        for u in updates.take() {
            tracing::debug!(?u, "PCI BAR update");
            let r = match u {
                BarUpdate::MapIo {
                    name,
                    ports,
                    device,
                } => {
                    let first = *ports.start();
                    self.pio
                        .write()
                        .register(&name, ports, device)
                        .map(|()| io.push(first))
                }
                BarUpdate::UnmapIo { first } => {
                    if let Some(i) = io.iter().position(|&p| p == first) {
                        io.swap_remove(i);
                        self.pio.write().unregister(first);
                    }
                    Ok(())
                }
                BarUpdate::MapMmio {
                    name,
                    range,
                    device,
                } => {
                    let start = *range.start();
                    self.mmio
                        .write()
                        .register(&name, range, device)
                        .map(|()| mem.push(start))
                }
                BarUpdate::UnmapMmio { start } => {
                    if let Some(i) = mem.iter().position(|&a| a == start) {
                        mem.swap_remove(i);
                        self.mmio.write().unregister(start);
                    }
                    Ok(())
                }
            };
            // The guest chose the address: a clash is its mistake, not the machine's. The
            // BAR then decodes nothing, as on hardware where the older decoder wins.
            if let Err(e) = r {
                tracing::warn!(error = %e, "PCI BAR not mapped");
            }
        }
    }
}

impl ExitHandler for MachineExits {
    fn pio_read(&self, _vp: u32, port: u16, data: &mut [u8]) {
        self.pio.read().read(port, data);
    }

    fn pio_write(&self, _vp: u32, port: u16, data: &[u8]) {
        self.pio.read().write(port, data);
        if let Some(u) = &self.bar_updates
            && u.pending()
        {
            self.apply_bar_updates(u);
        }
    }

    fn mmio_read(&self, _vp: u32, gpa: u64, data: &mut [u8]) {
        self.mmio.read().read(gpa, data);
    }

    fn mmio_write(&self, _vp: u32, gpa: u64, data: &[u8]) {
        self.mmio.read().write(gpa, data);
    }

    fn msr_read(&self, vp: u32, msr: u32) -> Option<u64> {
        if let Some(hv) = &self.hyperv
            && HYPERV_MSRS.contains(&msr)
        {
            return hv.msr_read(vp, msr);
        }
        let r = self.msrs.read(msr);
        if r.is_none() {
            tracing::debug!(vp, msr = format_args!("{msr:#x}"), "rdmsr refused (#GP)");
        }
        r
    }

    fn msr_write(&self, vp: u32, msr: u32, value: u64) -> bool {
        if let Some(hv) = &self.hyperv
            && HYPERV_MSRS.contains(&msr)
        {
            return hv.msr_write(vp, msr, value);
        }
        let ok = self.msrs.write(msr, value);
        if !ok {
            tracing::debug!(
                vp,
                msr = format_args!("{msr:#x}"),
                value = format_args!("{value:#x}"),
                "wrmsr refused (#GP)"
            );
        }
        ok
    }

    fn hypercall(&self, vp: u32, input: HypercallInput) -> u64 {
        if let Some(hv) = &self.hyperv {
            return hv.hypercall(vp, input);
        }
        tracing::debug!(
            vp,
            control = input.control,
            "hypercall without Hyper-V emulation"
        );
        HV_STATUS_INVALID_HYPERCALL_CODE
    }

    fn pic_acknowledge(&self) -> Option<u8> {
        self.pic.as_ref()?.lock().acknowledge()
    }

    fn eoi(&self, vector: u8) {
        if let Some(io) = &self.ioapic {
            io.lock().eoi(vector);
        }
    }
}

#[cfg(test)]
mod tests {
    use chipset_legacy::ioapic::TestInterruptSink;
    use device_api::IoResult;
    use device_api::Mmio;
    use device_api::PortIo;
    use device_api::TestIrqTarget;
    use device_api::shared;

    use super::*;

    #[derive(Default)]
    struct Reg {
        value: u64,
        writes: u32,
    }

    impl PortIo for Reg {
        fn io_read(&mut self, _port: u16, data: &mut [u8]) -> IoResult {
            let b = self.value.to_le_bytes();
            data.copy_from_slice(&b[..data.len()]);
            Ok(())
        }
        fn io_write(&mut self, _port: u16, data: &[u8]) -> IoResult {
            let mut b = [0u8; 8];
            b[..data.len()].copy_from_slice(data);
            self.value = u64::from_le_bytes(b);
            self.writes += 1;
            Ok(())
        }
    }

    impl Mmio for Reg {
        fn mmio_read(&mut self, port: u64, data: &mut [u8]) -> IoResult {
            self.io_read(port as u16, data)
        }
        fn mmio_write(&mut self, port: u64, data: &[u8]) -> IoResult {
            self.io_write(port as u16, data)
        }
    }

    fn exits() -> (MachineExits, Shared<Reg>, Shared<Reg>) {
        let port = shared(Reg::default());
        let mem = shared(Reg::default());
        let mut pio = PioBus::new();
        pio.register("reg", 0x100..=0x103, port.clone()).unwrap();
        let mut mmio = MmioBus::new();
        mmio.register("reg", 0xd000_0000..=0xd000_0fff, mem.clone())
            .unwrap();
        (
            MachineExits::new(pio, mmio, None, None, MsrPolicy::new(false)),
            port,
            mem,
        )
    }

    #[test]
    fn port_and_mmio_exits_reach_their_devices() {
        let (e, port, mem) = exits();
        e.pio_write(0, 0x101, &[0x34, 0x12]);
        assert_eq!(port.lock().value, 0x1234);
        let mut b = [0u8; 2];
        e.pio_read(1, 0x100, &mut b);
        assert_eq!(b, [0x34, 0x12]);
        e.pio_read(0, 0x200, &mut b);
        assert_eq!(b, [0xff, 0xff], "unclaimed port");
        e.mmio_write(0, 0xd000_0008, &0xdead_beef_u32.to_le_bytes());
        assert_eq!(mem.lock().value, 0xdead_beef);
        let mut q = [0u8; 8];
        e.mmio_read(0, 0xc000_0000, &mut q);
        assert_eq!(q, [0xff; 8], "unclaimed MMIO");
    }

    #[test]
    fn msrs_hypercalls_and_missing_controllers() {
        let (e, ..) = exits();
        assert_eq!(e.msr_read(0, 0x8b), Some(0));
        assert_eq!(e.msr_read(0, 0xc000_1234), None);
        assert!(!e.msr_write(0, 0xc000_1234, 1));
        let h = HypercallInput::default();
        assert_eq!(e.hypercall(0, h), HV_STATUS_INVALID_HYPERCALL_CODE);
        assert_eq!(e.pic_acknowledge(), None, "no PIC wired");
        e.eoi(0x30);
    }

    #[test]
    fn pic_acknowledge_and_eoi_reach_the_controllers() {
        let intr = TestIrqTarget::new();
        let pic = shared(DualPic::new(intr.line(0)));
        let sink = TestInterruptSink::new();
        let ioapic = shared(IoApic::new(1, 0xfec0_0000, sink.clone()));
        let mut pio = PioBus::new();
        for (i, r) in DualPic::port_ranges().into_iter().enumerate() {
            pio.register(&format!("pic{i}"), r, pic.clone()).unwrap();
        }
        let mut mmio = MmioBus::new();
        let range = ioapic.lock().mmio_range();
        mmio.register("ioapic", range, ioapic.clone()).unwrap();
        let e = MachineExits::new(
            pio,
            mmio,
            Some(pic.clone()),
            Some(ioapic),
            MsrPolicy::new(false),
        );
        // Initialize the master PIC through port writes: ICW1..ICW4, vector base 0x20.
        for (port, v) in [
            (0x20u16, 0x11u8),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, 0x00),
        ] {
            e.pio_write(0, port, &[v]);
        }
        pic.lock().set_irq(3, true);
        assert!(intr.level(0), "INTR raised");
        assert_eq!(e.pic_acknowledge(), Some(0x23));

        // I/O APIC pin 9: level-triggered, vector 0x41, to APIC 0, through the MMIO window.
        let write_reg = |index: u32, value: u32| {
            e.mmio_write(0, 0xfec0_0000, &index.to_le_bytes());
            e.mmio_write(0, 0xfec0_0010, &value.to_le_bytes());
        };
        write_reg(0x10 + 2 * 9, 0x41 | (1 << 15));
        write_reg(0x11 + 2 * 9, 0);
        let ioapic_dev = e.ioapic.clone().unwrap();
        ioapic_dev.lock().set_irq(9, true);
        assert_eq!(sink.take().len(), 1, "delivered once");
        ioapic_dev.lock().set_irq(9, true);
        assert!(sink.take().is_empty(), "remote IRR holds it");
        e.eoi(0x41);
        assert_eq!(
            sink.take().len(),
            1,
            "EOI re-delivers the still-asserted pin"
        );
    }
}
