//! DSDT device objects for the machine's devices, and for later additions through
//! [`crate::AcpiConfig::extra_devices`].

use crate::SerialPortInfo;
use crate::aml::AddressSpace;
use crate::aml::Data;
use crate::aml::ResourceTemplate;
use crate::aml::Term;

/// `_STA` value: present, enabled, shown in UI, functioning.
pub const STA_PRESENT: u64 = 0x0f;

fn crs(rt: ResourceTemplate) -> Term {
    Term::name("_CRS", Data::Resources(rt))
}

fn sta() -> Term {
    Term::method_returning("_STA", Data::Integer(STA_PRESENT))
}

/// A processor device (`ACPI0007`) for processor UID `uid`, named `Cxxx` (hex).
pub fn processor(uid: u32) -> Term {
    Term::device(
        &format!("C{:03X}", uid & 0xfff),
        vec![
            Term::name("_HID", Data::String("ACPI0007".into())),
            Term::name("_UID", Data::Integer(u64::from(uid))),
        ],
    )
}

/// A 16550 UART (`PNP0501`) with its I/O range and IRQ.
pub fn serial_port(port: &SerialPortInfo) -> Term {
    Term::device(
        &port.name,
        vec![
            Term::name("_HID", Data::EisaId("PNP0501".into())),
            Term::name("_UID", Data::Integer(port.uid)),
            sta(),
            crs(ResourceTemplate::new()
                .io_fixed(port.base, 8)
                .irq_no_flags(port.irq)),
        ],
    )
}

/// The i8042's keyboard (`PNP0303`, ports 0x60/0x64, IRQ 1) and mouse (`PNP0F13`, IRQ 12).
/// Linux's i8042 driver only probes the controller when ACPI declares these.
pub fn ps2_keyboard_and_mouse() -> [Term; 2] {
    [
        Term::device(
            "KBD",
            vec![
                Term::name("_HID", Data::EisaId("PNP0303".into())),
                sta(),
                crs(ResourceTemplate::new()
                    .io_fixed(0x60, 1)
                    .io_fixed(0x64, 1)
                    .irq_no_flags(1)),
            ],
        ),
        Term::device(
            "MOU",
            vec![
                Term::name("_HID", Data::EisaId("PNP0F13".into())),
                sta(),
                crs(ResourceTemplate::new().irq_no_flags(12)),
            ],
        ),
    ]
}

/// The CMOS RTC (`PNP0B00`, ports 0x70-0x71, IRQ 8).
pub fn rtc() -> Term {
    Term::device(
        "RTC",
        vec![
            Term::name("_HID", Data::EisaId("PNP0B00".into())),
            crs(ResourceTemplate::new().io_fixed(0x70, 2).irq_no_flags(8)),
        ],
    )
}

/// QEMU's pvpanic device (`QEMU0001`) at I/O port `port`; Linux's `pvpanic-mmio` driver binds
/// to it (it accepts an I/O resource).
pub fn pvpanic(port: u16) -> Term {
    Term::device(
        "PEVT",
        vec![
            Term::name("_HID", Data::String("QEMU0001".into())),
            Term::name("_UID", Data::Integer(0)),
            sta(),
            crs(ResourceTemplate::new().io_fixed(port, 1)),
        ],
    )
}

/// The VMBus device (`_HID "VMBus"`) with an empty `_CRS`, for Linux's `hv_vmbus` ACPI probe.
/// `irq`, when given, is declared as its interrupt.
pub fn vmbus(irq: Option<u8>) -> Term {
    let mut rt = ResourceTemplate::new();
    if let Some(irq) = irq {
        rt = rt.irq_no_flags(irq);
    }
    Term::device(
        "VMBS",
        vec![
            Term::name("_HID", Data::String("VMBus".into())),
            Term::name("_CID", Data::String("VMBus".into())),
            Term::name("_UID", Data::Integer(0)),
            sta(),
            crs(rt),
        ],
    )
}

/// What a PCI root bridge decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciRootInfo {
    /// The 32-bit MMIO window for BARs (inclusive).
    pub mmio32: (u32, u32),
    /// A 64-bit MMIO window above 4 GiB, if any (inclusive).
    pub mmio64: Option<(u64, u64)>,
    /// Extra `_SB.PCI0` children (e.g. an `_PRT` or the ISA bridge's devices).
    pub children: Vec<Term>,
}

/// A PCI host bridge (`PNP0A03`, bus 0) producing bus numbers 0-255, the configuration ports
/// 0xcf8-0xcff, the rest of I/O space, the legacy VGA window and the MMIO windows.
pub fn pci_root_bridge(info: &PciRootInfo) -> Term {
    let mut rt = ResourceTemplate::new()
        .word_space(AddressSpace::BusNumber, 0, 0xff)
        .io(0xcf8, 0xcf8, 1, 8)
        .word_space(AddressSpace::Io, 0, 0x0cf7)
        .word_space(AddressSpace::Io, 0x0d00, 0xffff)
        .dword_space(AddressSpace::Memory, 0x000a_0000, 0x000b_ffff)
        .dword_space(AddressSpace::Memory, info.mmio32.0, info.mmio32.1);
    if let Some((lo, hi)) = info.mmio64 {
        rt = rt.qword_memory(lo, hi);
    }
    let mut body = vec![
        Term::name("_HID", Data::EisaId("PNP0A03".into())),
        Term::name("_UID", Data::Integer(0)),
        Term::name("_BBN", Data::Integer(0)),
        crs(rt),
    ];
    body.extend(info.children.iter().cloned());
    Term::device("PCI0", body)
}
