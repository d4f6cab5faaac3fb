//! The PC/AT platform a BIOS boots on (`--pcat`): the firmware image at the reset vector and
//! in the legacy BIOS window, fw_cfg, PCI mechanism #1 with the i440FX host bridge, the PIIX3
//! ISA bridge and the PIIX3 IDE function, and port 0x92.
//!
//! # Memory
//! The firmware image (SeaBIOS's `bios-256k.bin` by default) is read-only memory ending at
//! 4 GiB, where the processor's first fetch (CS base 0xffff0000, IP 0xfff0) lands. Its last
//! 128 KiB are copied into RAM at 0xe0000-0xfffff, the "shadow" a real chipset produces by
//! routing those addresses to the flash until the BIOS programs the i440FX PAM registers.
//! Here that window is always plain RAM: PAM writes are recorded by the host bridge (and read
//! back) but change nothing. SeaBIOS's "make the BIOS writable" step then finds the area
//! writable already and its "read-only" step is a no-op, which a guest cannot tell apart
//! unless it writes to the BIOS area on purpose.
//!
//! # Firmware interface
//! SeaBIOS reads the machine from QEMU's fw_cfg ([`fw_cfg::FwCfg`]): RAM size, processor
//! count, `etc/e820` (RAM below the PCI hole from 0, RAM above 4 GiB), `bootorder` (IDE hard
//! disks first, then CD-ROMs; there is no floppy controller) and the ACPI tables through
//! `etc/table-loader`. The CMOS memory-size fields come from the RTC (`CmosConfig`). The host
//! bridge reports QEMU's subsystem ID (1af4:1100) so SeaBIOS takes its QEMU paths.
//!
//! # PCI and IDE
//! | BDF | function |
//! |---|---|
//! | 00:00.0 | i440FX host bridge |
//! | 00:01.0 | PIIX3 ISA bridge |
//! | 00:01.1 | PIIX3 IDE: legacy ports 0x1f0/0x3f6 (IRQ 14), 0x170/0x376 (IRQ 15), bus master at BAR4 |
//!
//! The bus-master BAR moves when the firmware or OS programs it; the machine applies the
//! [`pci_core::bus::BarUpdates`] after every port write (see `exits.rs`).

use std::sync::Arc;

use device_api::PioBus;
use device_api::RegisterError;
use device_api::Shared;
use device_api::shared;
use disk::Disk;
use fw_cfg::FwCfg;
use fw_cfg::FwCfgConfig;
use guest_mem::GuestMemory;
use guest_mem::RegionKind;
use ide::IdeController;
use ide::IdeDrive;
use pci_core::PciFunction;
use pci_core::bus::BarUpdates;
use pci_core::bus::PciBus;

use crate::layout::FOUR_GIB;
use crate::layout::MemoryLayout;

/// The legacy BIOS window at the top of the first MiB the image's tail is copied into.
pub const BIOS_WINDOW: std::ops::Range<u64> = 0xe_0000..0x10_0000;
/// Largest firmware image accepted (it must stay clear of the LAPIC and I/O APIC windows).
pub const MAX_FIRMWARE: usize = 16 << 20;

/// A firmware image (held by reference; printed by size).
#[derive(Clone, PartialEq, Eq)]
pub struct FirmwareImage(pub Arc<[u8]>);

impl std::fmt::Debug for FirmwareImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FirmwareImage({} bytes)", self.0.len())
    }
}

/// The PC/AT platform could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PcatError {
    /// The image is empty, too large or not whole 4 KiB pages.
    #[error(
        "firmware image is {0} bytes; expected a multiple of 4 KiB between 64 KiB and {max} MiB",
        max = MAX_FIRMWARE >> 20
    )]
    BadFirmwareSize(usize),
    /// More than four IDE devices.
    #[error("{0} IDE devices given; two channels hold at most 4")]
    TooManyIdeDevices(usize),
    /// A disk could not be attached to the IDE controller.
    #[error(transparent)]
    Ide(#[from] ide::IdeError),
    /// fw_cfg content could not be added.
    #[error(transparent)]
    FwCfg(#[from] fw_cfg::FwCfgError),
    /// PCI function placement failed.
    #[error(transparent)]
    Pci(#[from] pci_core::PciError),
    /// Two devices claim the same ports.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// The ACPI tables for the firmware could not be built.
    #[error("cannot build the ACPI tables for the firmware")]
    Acpi(#[from] acpi::AcpiError),
}

/// Checks a firmware image's size.
pub fn check_firmware(image: &[u8]) -> Result<(), PcatError> {
    let len = image.len();
    if !(64 << 10..=MAX_FIRMWARE).contains(&len) || !len.is_multiple_of(4096) {
        return Err(PcatError::BadFirmwareSize(len));
    }
    Ok(())
}

/// Guest memory regions of a PC/AT machine: the RAM of `layout` and the firmware ROM ending
/// at 4 GiB.
pub fn memory_regions(layout: &MemoryLayout, firmware_len: usize) -> Vec<(u64, u64, RegionKind)> {
    let mut r = layout.regions();
    let len = firmware_len as u64;
    r.push((FOUR_GIB - len, len, RegionKind::Rom));
    r
}

/// Puts the firmware at the top of 4 GiB and its last 128 KiB (or all of it, if smaller)
/// into the legacy BIOS window, ending at 1 MiB.
pub fn load_firmware(
    memory: &GuestMemory,
    image: &[u8],
) -> Result<(), guest_mem::GuestMemoryError> {
    memory.load_image(FOUR_GIB - image.len() as u64, image)?;
    let window = (BIOS_WINDOW.end - BIOS_WINDOW.start) as usize;
    let tail = &image[image.len().saturating_sub(window)..];
    memory.write_at(BIOS_WINDOW.end - tail.len() as u64, tail)
}

/// The e820 table SeaBIOS gets through fw_cfg (as QEMU's: RAM only; the firmware adds its own
/// reservations).
pub fn fw_cfg_e820(layout: &MemoryLayout) -> Vec<fw_cfg::E820Entry> {
    let mut e = vec![fw_cfg::E820Entry {
        address: 0,
        length: layout.low_ram_end(),
        kind: fw_cfg::E820Entry::RAM,
    }];
    if layout.high_ram_len() > 0 {
        e.push(fw_cfg::E820Entry {
            address: FOUR_GIB,
            length: layout.high_ram_len(),
            kind: fw_cfg::E820Entry::RAM,
        });
    }
    e
}

/// The PCI root bridge the DSDT describes: 32-bit BARs between the end of low RAM and the
/// I/O APIC (the firmware places them there), no 64-bit window.
pub fn pci_root(layout: &MemoryLayout) -> acpi::devices::PciRootInfo {
    acpi::devices::PciRootInfo {
        mmio32: (
            layout.low_ram_end() as u32,
            crate::layout::IOAPIC_BASE as u32 - 1,
        ),
        mmio64: None,
        children: Vec::new(),
    }
}

/// An IDE device to attach.
#[derive(Clone)]
pub struct IdeAttachment {
    /// The backing disk.
    pub disk: Arc<dyn Disk>,
    /// An ATAPI CD-ROM rather than an ATA hard disk.
    pub optical: bool,
}

/// Drives by channel and unit.
pub type IdeDrives = [[Option<IdeDrive>; 2]; 2];

/// Where IDE devices go: in command-line order to primary master, primary slave, secondary
/// master, secondary slave; and the firmware boot order (hard disks, then CD-ROMs, each in
/// command-line order).
pub fn place_ide(devices: &[IdeAttachment]) -> Result<(IdeDrives, Vec<(u8, u8)>), PcatError> {
    if devices.len() > 4 {
        return Err(PcatError::TooManyIdeDevices(devices.len()));
    }
    let mut drives: IdeDrives = Default::default();
    let mut disks = Vec::new();
    let mut cds = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let (ch, unit) = (i / 2, i % 2);
        drives[ch][unit] = Some(if d.optical {
            cds.push((ch as u8, unit as u8));
            IdeDrive::Cdrom(Some(d.disk.clone()))
        } else {
            disks.push((ch as u8, unit as u8));
            IdeDrive::HardDisk(d.disk.clone())
        });
    }
    disks.extend(cds);
    Ok((drives, disks))
}

/// The i440FX host bridge with QEMU's subsystem ID, which SeaBIOS checks to take its QEMU
/// paths (fw_cfg, the i440FX memory setup).
struct HostBridge(pci_core::chipset::I440fxHost);

/// Subsystem vendor 0x1af4, subsystem 0x1100 (register 0x2c).
const QEMU_SUBSYSTEM: u32 = 0x1100_1af4;

impl PciFunction for HostBridge {
    fn config_read(&mut self, offset: u16) -> u32 {
        if offset == 0x2c {
            QEMU_SUBSYSTEM
        } else {
            self.0.config_read(offset)
        }
    }

    fn config_write(&mut self, offset: u16, value: u32, mask: u32) {
        self.0.config_write(offset, value, mask);
    }
}

/// What the PC/AT platform needs from the rest of the machine.
pub struct PcatParts<'a> {
    /// Guest memory (fw_cfg DMA, IDE bus mastering).
    pub memory: &'a GuestMemory,
    /// The memory layout.
    pub layout: &'a MemoryLayout,
    /// Processors.
    pub processors: u32,
    /// IDE devices in command-line order.
    pub ide: &'a [IdeAttachment],
    /// IRQ 14 and 15.
    pub ide_irqs: [device_api::LineInterrupt; 2],
    /// The ACPI description the firmware installs.
    pub acpi: &'a acpi::AcpiConfig,
    /// Where port 0x92's reset goes.
    pub halt: Arc<dyn device_api::HaltSink>,
}

/// The platform's devices, registered on the port bus.
pub struct Pcat {
    /// BAR changes to apply after port writes.
    pub bar_updates: BarUpdates,
    /// The IDE controller.
    pub ide: Shared<IdeController>,
    /// fw_cfg.
    pub fw_cfg: Shared<FwCfg>,
}

/// Builds fw_cfg, the PCI bus with its three functions and port 0x92 on `pio`.
pub fn build(parts: PcatParts<'_>, pio: &mut PioBus) -> Result<Pcat, PcatError> {
    let (drives, boot) = place_ide(parts.ide)?;

    let mut fw = FwCfg::new(
        parts.memory.clone(),
        &FwCfgConfig {
            processors: parts.processors as u16,
            max_processors: parts.processors as u16,
            ram_size: parts.layout.ram_size(),
            uuid: [0; 16],
            nographic: true,
            boot_menu: false,
        },
    );
    fw.set_e820(&fw_cfg_e820(parts.layout))?;
    let paths: Vec<String> = boot
        .iter()
        .map(|&(ch, unit)| fw_cfg::ide_boot_path(ch, unit))
        .collect();
    fw.set_boot_order(&paths)?;
    let tables = acpi::LoaderTables::build(parts.acpi)?;
    fw.add_file(acpi::loader_files::TABLES, tables.tables)?;
    fw.add_file(acpi::loader_files::RSDP, tables.rsdp)?;
    fw.add_file(acpi::loader_files::LOADER, tables.loader)?;
    let fw_cfg = shared(fw);
    for (i, range) in FwCfg::port_ranges().into_iter().enumerate() {
        pio.register(["fw-cfg", "fw-cfg-dma"][i], range, fw_cfg.clone())?;
    }

    let ide = shared(IdeController::new(
        parts.memory.clone(),
        parts.ide_irqs,
        drives,
    )?);
    for (i, range) in IdeController::legacy_port_ranges().into_iter().enumerate() {
        let name = ["ide0", "ide0-control", "ide1", "ide1-control"][i];
        pio.register(name, range, ide.clone())?;
    }

    let mut bus = PciBus::new();
    let host: Arc<parking_lot::Mutex<dyn PciFunction>> = Arc::new(parking_lot::Mutex::new(
        HostBridge(pci_core::chipset::I440fxHost::new()),
    ));
    let isa: Arc<parking_lot::Mutex<dyn PciFunction>> =
        Arc::new(parking_lot::Mutex::new(pci_core::chipset::Piix3Isa::new()));
    bus.add(
        pci_core::chipset::HOST_BRIDGE_BDF,
        "i440fx",
        host,
        None,
        None,
    )?;
    bus.add(pci_core::chipset::ISA_BRIDGE_BDF, "piix3", isa, None, None)?;
    bus.add(ide::IDE_BDF, "ide", ide.clone(), Some(ide.clone()), None)?;
    let bar_updates = bus.bar_updates();
    let bus = shared(bus);
    for (i, range) in PciBus::port_ranges().into_iter().enumerate() {
        pio.register(["pci-address", "pci-data"][i], range, bus.clone())?;
    }

    let port92 = chipset_legacy::misc::PORT_SYSTEM_CONTROL_A;
    pio.register(
        "port92",
        port92..=port92,
        shared(chipset_legacy::misc::SystemControlA::new(parts.halt)),
    )?;

    Ok(Pcat {
        bar_updates,
        ide,
        fw_cfg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> MemoryLayout {
        MemoryLayout::new(256 << 20).unwrap()
    }

    #[test]
    fn firmware_sizes() {
        assert!(check_firmware(&vec![0; 256 << 10]).is_ok());
        assert!(check_firmware(&vec![0; 128 << 10]).is_ok());
        for bad in [0usize, 4096, (256 << 10) + 1, MAX_FIRMWARE + 4096] {
            assert!(
                matches!(check_firmware(&vec![0; bad]), Err(PcatError::BadFirmwareSize(n)) if n == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn firmware_is_at_the_reset_vector_and_its_tail_in_the_bios_window() {
        let l = layout();
        let mut image = vec![0u8; 256 << 10];
        for (i, b) in image.iter_mut().enumerate() {
            *b = (i / 4096) as u8;
        }
        let mem = GuestMemory::new(&memory_regions(&l, image.len())).unwrap();
        load_firmware(&mem, &image).unwrap();
        let mut b = [0u8; 16];
        mem.read_at(0xffff_fff0, &mut b).unwrap();
        assert_eq!(b, image[image.len() - 16..], "reset vector");
        let mut w = vec![0u8; 128 << 10];
        mem.read_at(BIOS_WINDOW.start, &mut w).unwrap();
        assert_eq!(w, image[128 << 10..], "last 128 KiB at 0xe0000");
        // The ROM is read-only; the shadow copy is RAM.
        let _ = mem.write_at(0xffff_0000, &[0xaa]);
        mem.read_at(0xffff_0000, &mut b[..1]).unwrap();
        assert_eq!(b[0], image[(256 << 10) - 0x1_0000]);
        mem.write_at(0xf_0000, &[0xaa]).unwrap();
        mem.read_at(0xf_0000, &mut b[..1]).unwrap();
        assert_eq!(b[0], 0xaa);

        // A 64 KiB image lands in the last 64 KiB of the window.
        let small = vec![0x5a; 64 << 10];
        let mem = GuestMemory::new(&memory_regions(&l, small.len())).unwrap();
        load_firmware(&mem, &small).unwrap();
        mem.read_at(0xf_0000, &mut b).unwrap();
        assert_eq!(b, [0x5a; 16]);
        mem.read_at(0xe_0000, &mut b).unwrap();
        assert_eq!(b, [0; 16]);
    }

    #[test]
    fn e820_is_ram_from_zero_and_above_4g() {
        let e = fw_cfg_e820(&layout());
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].address, e[0].length), (0, 256 << 20));
        let big = MemoryLayout::new(4 << 30).unwrap();
        let e = fw_cfg_e820(&big);
        assert_eq!(e.len(), 2);
        assert_eq!((e[1].address, e[1].length), (FOUR_GIB, 1 << 30));
    }

    fn mem_disk(mib: u64) -> Arc<dyn Disk> {
        disk::open(&disk::DiskSpec::Mem(disk::ByteSize(mib << 20))).unwrap()
    }

    #[test]
    fn ide_placement_and_boot_order() {
        let cd = IdeAttachment {
            disk: mem_disk(1),
            optical: true,
        };
        let hd = IdeAttachment {
            disk: mem_disk(2),
            optical: false,
        };
        let (drives, boot) = place_ide(&[cd.clone(), hd.clone(), hd.clone()]).unwrap();
        assert!(matches!(drives[0][0], Some(IdeDrive::Cdrom(Some(_)))));
        assert!(matches!(drives[0][1], Some(IdeDrive::HardDisk(_))));
        assert!(matches!(drives[1][0], Some(IdeDrive::HardDisk(_))));
        assert!(drives[1][1].is_none());
        assert_eq!(boot, [(0, 1), (1, 0), (0, 0)], "disks first, then the CD");
        assert!(matches!(
            place_ide(&[hd.clone(), hd.clone(), hd.clone(), hd.clone(), cd]),
            Err(PcatError::TooManyIdeDevices(5))
        ));
    }

    /// The platform with one 8-sector IDE disk on a fresh port bus, its interrupts recorded
    /// and halt requests ignored.
    fn test_platform(processors: u32) -> (Pcat, PioBus) {
        struct NoHalt;
        impl device_api::HaltSink for NoHalt {
            fn request_halt(&self, _: device_api::HaltRequest) {}
        }
        let l = layout();
        let mem = GuestMemory::new(&memory_regions(&l, 256 << 10)).unwrap();
        let hd = IdeAttachment {
            disk: mem_disk(8),
            optical: false,
        };
        let irqs = device_api::TestIrqTarget::new();
        let mut pio = PioBus::new();
        let pcat = build(
            PcatParts {
                memory: &mem,
                layout: &l,
                processors,
                ide: std::slice::from_ref(&hd),
                ide_irqs: [irqs.line(14), irqs.line(15)],
                acpi: &acpi::AcpiConfig::pc(processors),
                halt: Arc::new(NoHalt),
            },
            &mut pio,
        )
        .unwrap();
        (pcat, pio)
    }

    /// The platform on a port bus, as the firmware sees it: fw_cfg signature and files, the
    /// PCI functions, and the IDE bus master appearing where BAR4 is programmed.
    #[test]
    fn platform_through_the_port_bus() {
        let (pcat, pio) = test_platform(2);

        // fw_cfg signature through the legacy data port.
        pio.write(fw_cfg::PORT_SELECTOR, &0u16.to_le_bytes());
        let mut sig = [0u8; 4];
        for b in &mut sig {
            let mut x = [0u8];
            pio.read(fw_cfg::PORT_DATA, &mut x);
            *b = x[0];
        }
        assert_eq!(&sig, b"QEMU");
        let fw = pcat.fw_cfg.lock();
        assert_eq!(
            fw.file("bootorder"),
            Some(b"/pci@i0cf8/ide@1,1/drive@0/disk@0\n\0".as_slice())
        );
        assert!(fw.file("etc/table-loader").is_some());
        assert_eq!(fw.file("etc/e820").map(<[u8]>::len), Some(20));
        drop(fw);

        let cfg_read = |pio: &PioBus, dev: u32, func: u32, reg: u32| {
            let addr = 0x8000_0000 | (dev << 11) | (func << 8) | reg;
            pio.write(0xcf8, &addr.to_le_bytes());
            let mut d = [0u8; 4];
            pio.read(0xcfc, &mut d);
            u32::from_le_bytes(d)
        };
        assert_eq!(cfg_read(&pio, 0, 0, 0), 0x1237_8086);
        assert_eq!(cfg_read(&pio, 0, 0, 0x2c), QEMU_SUBSYSTEM);
        assert_eq!(cfg_read(&pio, 1, 0, 0), 0x7000_8086);
        assert_eq!(cfg_read(&pio, 1, 1, 0), 0x7010_8086);
        assert_eq!(cfg_read(&pio, 2, 0, 0), u32::MAX, "nothing at 00:02.0");

        // Legacy IDE: the primary master answers IDENTIFY's signature registers.
        let mut st = [0u8];
        pio.read(0x1f7, &mut st);
        assert_eq!(st[0] & 0x80, 0, "not busy");

        // Program BAR4 and enable I/O decoding: a bus-master mapping is queued.
        let write = |pio: &PioBus, reg: u32, v: u32| {
            pio.write(
                0xcf8,
                &(0x8000_0000 | (1 << 11) | (1 << 8) | reg).to_le_bytes(),
            );
            pio.write(0xcfc, &v.to_le_bytes());
        };
        write(&pio, 0x20, 0xc000);
        write(&pio, 0x04, 0x5);
        assert!(pcat.bar_updates.pending());
        let updates = pcat.bar_updates.take();
        assert!(
            updates.iter().any(
                |u| matches!(u, pci_core::bus::BarUpdate::MapIo { ports, .. } if *ports == (0xc000..=0xc00f))
            ),
            "{updates:?}"
        );

        // Port 0x92 is claimed.
        assert_eq!(pio.owner(0x92), Some("port92"));
    }

    /// The machine's exit handler applies BAR moves: the bus-master block answers where BAR4
    /// points and nowhere else, and a BAR pointed at claimed ports maps nothing.
    #[test]
    fn exits_follow_the_bus_master_bar() {
        use virt::ExitHandler;

        let (pcat, pio) = test_platform(1);
        let exits = crate::exits::MachineExits::new(
            pio,
            device_api::MmioBus::new(),
            None,
            None,
            crate::msr::MsrPolicy::new(false),
        )
        .with_bar_updates(Some(pcat.bar_updates.clone()));
        let cfg_write = |reg: u32, v: u32| {
            exits.pio_write(
                0,
                0xcf8,
                &(0x8000_0000 | (1 << 11) | (1 << 8) | reg).to_le_bytes(),
            );
            exits.pio_write(0, 0xcfc, &v.to_le_bytes());
        };
        let bm_status = |base: u16| {
            let mut b = [0u8];
            exits.pio_read(0, base + 2, &mut b);
            b[0]
        };
        assert_eq!(
            bm_status(0xc000),
            0xff,
            "nothing there before the BAR is set"
        );
        cfg_write(0x20, 0xc000);
        cfg_write(0x04, 0x5);
        assert_ne!(bm_status(0xc000), 0xff, "bus master at BAR4");
        cfg_write(0x20, 0xd000);
        assert_eq!(bm_status(0xc000), 0xff, "old range released");
        assert_ne!(bm_status(0xd000), 0xff, "moved");
        // Onto fw_cfg's ports: refused (logged), fw_cfg keeps answering.
        cfg_write(0x20, 0x510);
        exits.pio_write(0, fw_cfg::PORT_SELECTOR, &0u16.to_le_bytes());
        let mut q = [0u8];
        exits.pio_read(0, fw_cfg::PORT_DATA, &mut q);
        assert_eq!(q[0], b'Q');
        // Moving away from the refused range releases nothing of fw_cfg's.
        cfg_write(0x20, 0xe000);
        assert_ne!(bm_status(0xe000), 0xff);
        exits.pio_write(0, fw_cfg::PORT_SELECTOR, &0u16.to_le_bytes());
        exits.pio_read(0, fw_cfg::PORT_DATA, &mut q);
        assert_eq!(q[0], b'Q', "fw_cfg still mapped");
        // I/O decoding off: unmapped.
        cfg_write(0x04, 0x0);
        assert_eq!(bm_status(0xe000), 0xff);
    }
}
