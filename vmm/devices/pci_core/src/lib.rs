//! PCI for the PC platform: configuration mechanism #1, a type-0 header helper, and the
//! i440FX host bridge and PIIX3 ISA bridge that SeaBIOS expects at 00:00.0 and 00:01.0.
//!
//! # Architecture
//! A PCI function implements [`PciFunction`] (dword config reads, masked config writes, and
//! the BARs it currently decodes). [`bus::PciBus`] implements [`device_api::PortIo`] for
//! ports 0xcf8 (address, 32-bit only) and 0xcfc-0xcff (data), routes accesses to functions by
//! bus/device/function, and after every config write compares each function's decoded BARs
//! with what it had mapped. Changes are queued as [`bus::BarUpdate`]s in a
//! [`bus::BarUpdates`] handle that the machine drains after the port write completes (so it
//! can change its own bus maps without holding any device lock), registering the function's
//! I/O or MMIO handler at the new range.
//!
//! # Key types
//! - [`PciFunction`], [`Bdf`].
//! - [`config::ConfigHeader`]: vendor/device/class, command/status, BAR sizing, interrupt
//!   line/pin; device crates (IDE) embed it.
//! - [`bus::PciBus`], [`bus::BarUpdates`].
//! - [`chipset::I440fxHost`] (PAM and SMRAM registers, kept but with no effect on memory:
//!   the machine maps RAM at 0xc0000-0xfffff permanently) and [`chipset::Piix3Isa`] (PIRQ
//!   route registers).

pub mod bus;
pub mod chipset;
pub mod config;

/// A bus/device/function address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    /// Bus number.
    pub bus: u8,
    /// Device number (0-31).
    pub device: u8,
    /// Function number (0-7).
    pub function: u8,
}

impl Bdf {
    /// Bus 0, `device`, `function`.
    pub const fn new(device: u8, function: u8) -> Self {
        Self {
            bus: 0,
            device,
            function,
        }
    }
}

impl std::fmt::Display for Bdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// One PCI function's configuration space.
pub trait PciFunction: Send {
    /// Reads the dword at `offset` (0-0xfc, a multiple of 4).
    fn config_read(&mut self, offset: u16) -> u32;
    /// Writes the bytes of `value` whose `mask` bytes are 0xff, at dword `offset`.
    fn config_write(&mut self, offset: u16, value: u32, mask: u32);
    /// BARs the function decodes now (see [`config::ConfigHeader::bar_mappings`]).
    fn bar_mappings(&self) -> Vec<config::BarMapping> {
        Vec::new()
    }
}

/// PCI errors (configuration mistakes by the machine).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PciError {
    /// Two functions at one address.
    #[error("PCI address {0} is taken")]
    AddressInUse(Bdf),
    /// Device or function number out of range.
    #[error("invalid PCI address {0}")]
    InvalidAddress(Bdf),
}
