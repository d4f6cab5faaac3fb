//! PC chipset devices: PIC, I/O APIC, interrupt routing, PIT, CMOS/RTC, i8042, ACPI PM and the
//! small debug ports.
//!
//! # Architecture
//! Each device is a sans-IO state machine implementing the `device_api` traits it needs
//! ([`device_api::PortIo`], [`device_api::Mmio`], [`device_api::Poll`]); the machine registers
//! it on the buses at the ports in `docs/src/machine.md` and gives it interrupt lines, the VM
//! clock and a halt sink. Nothing here owns a thread, a file or a host clock.
//!
//! # Key types
//! - [`pic::DualPic`]: 8259A master/slave pair + ELCR (0x20, 0xa0, 0x4d0), INTR output,
//!   `acknowledge()` for ExtINT.
//! - [`ioapic::IoApic`]: 24-pin I/O APIC at 0xfec00000 sending [`virt::InterruptRequest`]s to
//!   an [`ioapic::InterruptSink`].
//! - [`router::IrqRouter`]: the [`device_api::IrqTarget`] devices' lines point at (ISA IRQ n ->
//!   PIC n and I/O APIC n, IRQ 0 -> pin 2, GSI 16-23 -> I/O APIC only);
//!   [`router::SharedLine`] for shared IRQs.
//! - [`pit::Pit`]: 8254 at 0x40-0x43 plus port 0x61, IRQ 0 edges through [`device_api::Poll`].
//! - [`rtc::Rtc`]: MC146818 + CMOS at 0x70-0x71, IRQ 8, memory-size fields for firmware.
//! - [`i8042::I8042`]: keyboard controller at 0x60/0x64 (reset line, A20, minimal keyboard and
//!   mouse), IRQ 1 and IRQ 12.
//! - [`pm::AcpiPm`]: ACPI PM1a event/control, PM timer and GPE0 at 0x600 (SCI on IRQ 9, S5 ->
//!   power off).
//! - [`misc`]: reset control 0xcf9, debug console 0x402, pvpanic 0x505, POST 0x80, system
//!   control port A 0x92 (not in `machine.md` yet; optional).
//!
//! Devices that request machine halts (i8042, PM, reset control, pvpanic) take an
//! `Arc<dyn device_api::HaltSink>`; devices with deadlines take a [`device_api::PollWaker`].

pub mod i8042;
pub mod ioapic;
pub mod misc;
pub mod pic;
pub mod pit;
pub mod pm;
pub mod router;
pub mod rtc;
