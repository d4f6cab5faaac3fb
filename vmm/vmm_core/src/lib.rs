//! The agar-vmm machine: guest memory, devices, interrupt routing, processors and halt
//! reasons, the same for both CPU backends.
//!
//! # Architecture
//! [`Machine::new`] builds everything once from a [`MachineConfig`] on a [`virt::Hypervisor`]:
//!
//! 1. guest RAM with the PCI hole ([`layout`]);
//! 2. a partition on the backend, with the MSR ranges the machine owns ([`msr`]);
//! 3. the chipset (`chipset_legacy`): PIC pair (INTR -> [`virt::Partition::set_extint`]), I/O
//!    APIC (messages -> [`virt::Partition::request_interrupt`]), the IRQ router devices' lines
//!    point at, PIT, RTC/CMOS, i8042, ACPI PM block (S5 -> power off), reset control 0xcf9,
//!    pvpanic, POST and the debug console, and the four 16550 UARTs, each with its host
//!    backend ([`serial`]); halt requests go to [`halt::Halt`];
//! 4. ACPI tables (`acpi`: RSDP, XSDT, FADT, MADT, DSDT) at [`layout::ACPI_TABLES`] for a
//!    directly booted OS;
//! 5. with `--pcat` instead of 4: the firmware at the reset vector, fw_cfg, PCI with the
//!    i440FX/PIIX3 functions and the IDE controller ([`pcat`]);
//! 6. one processor per VP with the machine's CPUID table ([`cpuid`]).
//!
//! A loader's [`loaders::LoadPlan`] is applied with [`Machine::load`]. [`Machine::run`] starts
//! one thread per VP plus the timer thread ([`timer`]) that polls time-driven devices, and
//! returns the [`HaltReason`] once the guest powers off, resets, triple-faults, crashes or the
//! backend fails ([`halt`]). Processor exits go to [`exits::MachineExits`].
//!
//! The backend is picked by [`backend::select`] (`--hypervisor kvm|emu|auto`); the machine
//! only talks to it through the `virt` traits.

pub mod backend;
pub mod cpuid;
pub mod exits;
pub mod halt;
pub mod layout;
mod machine;
pub mod msr;
pub mod pcat;
pub mod serial;
pub mod timer;
pub mod vmbus;

pub use halt::HaltReason;
pub use machine::COM_PORTS;
pub use machine::Machine;
pub use machine::MachineConfig;
pub use machine::MachineError;
pub use machine::TSC_FREQUENCY;
