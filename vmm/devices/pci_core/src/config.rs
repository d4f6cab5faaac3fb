//! A type-0 configuration header (the first 64 bytes) with BAR sizing and decode state.
//!
//! Spec: PCI Local Bus Specification 3.0, section 6.1-6.2 (header layout, command/status,
//! base address registers).

/// Command register: I/O space decode.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command register: memory space decode.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: bus master.
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register bits a function here implements.
const COMMAND_WRITABLE: u16 =
    COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | (1 << 6) | (1 << 8) | (1 << 10);
/// Status register error bits, write 1 to clear.
const STATUS_W1C: u16 = 0xf900;

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// I/O space.
    Io,
    /// Memory space.
    Memory,
}

/// How a BAR is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarType {
    /// I/O BAR of `size` bytes (power of two, at least 4).
    Io(u32),
    /// 32-bit memory BAR of `size` bytes (power of two, at least 16).
    Memory32(u32),
    /// 64-bit memory BAR (takes this slot and the next).
    Memory64(u64),
}

/// A BAR the function currently decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarMapping {
    /// BAR index (0-5).
    pub index: u8,
    /// I/O or memory.
    pub kind: BarKind,
    /// Programmed base address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Unused,
    Bar(BarType),
    /// Upper half of a 64-bit BAR.
    Upper,
}

/// The standard header of one PCI function.
#[derive(Debug, Clone)]
pub struct ConfigHeader {
    vendor: u16,
    device: u16,
    command: u16,
    status: u16,
    revision: u8,
    class_code: u32,
    cache_line: u8,
    latency: u8,
    header_type: u8,
    subsystem_vendor: u16,
    subsystem: u16,
    interrupt_line: u8,
    interrupt_pin: u8,
    slots: [Slot; 6],
    bars: [u32; 6],
}

impl ConfigHeader {
    /// A header for `vendor:device`, with `class_code` = class << 16 | subclass << 8 | prog-if.
    pub fn new(vendor: u16, device: u16, class_code: u32, revision: u8) -> Self {
        Self {
            vendor,
            device,
            command: 0,
            status: 0,
            revision,
            class_code: class_code & 0xff_ffff,
            cache_line: 0,
            latency: 0,
            header_type: 0,
            subsystem_vendor: 0,
            subsystem: 0,
            interrupt_line: 0,
            interrupt_pin: 0,
            slots: [Slot::Unused; 6],
            bars: [0; 6],
        }
    }

    /// Marks the function as part of a multi-function device (header type bit 7).
    pub fn multi_function(mut self) -> Self {
        self.header_type |= 0x80;
        self
    }

    /// Sets the subsystem IDs.
    pub fn subsystem(mut self, vendor: u16, device: u16) -> Self {
        self.subsystem_vendor = vendor;
        self.subsystem = device;
        self
    }

    /// Declares INTx pin `pin` (1 = INTA# .. 4 = INTD#).
    pub fn interrupt_pin(mut self, pin: u8) -> Self {
        self.interrupt_pin = pin.min(4);
        self
    }

    /// Sets the interrupt line register's initial value.
    pub fn interrupt_line(mut self, line: u8) -> Self {
        self.interrupt_line = line;
        self
    }

    /// Declares BAR `index`. Sizes are rounded up to a power of two.
    pub fn bar(mut self, index: usize, bar: BarType) -> Self {
        let Some(slot) = self.slots.get_mut(index) else {
            return self;
        };
        *slot = Slot::Bar(bar);
        let low_bits = match bar {
            BarType::Io(_) => 1,
            BarType::Memory32(_) => 0,
            BarType::Memory64(_) => 0b100,
        };
        self.bars[index] = low_bits;
        if let BarType::Memory64(_) = bar
            && let Some(upper) = self.slots.get_mut(index + 1)
        {
            *upper = Slot::Upper;
        }
        self
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.command
    }

    /// Whether bus mastering (DMA) is enabled.
    pub fn bus_master(&self) -> bool {
        self.command & COMMAND_BUS_MASTER != 0
    }

    /// Sets status bits (e.g. an error the device detected).
    pub fn set_status(&mut self, bits: u16) {
        self.status |= bits;
    }

    /// The interrupt line register.
    pub fn line(&self) -> u8 {
        self.interrupt_line
    }

    fn bar_size(bar: BarType) -> u64 {
        match bar {
            BarType::Io(s) => u64::from(s.max(4)).next_power_of_two(),
            BarType::Memory32(s) => u64::from(s.max(16)).next_power_of_two(),
            BarType::Memory64(s) => s.max(16).next_power_of_two(),
        }
    }

    /// The programmed base of BAR `index` (without type bits).
    pub fn bar_base(&self, index: usize) -> Option<u64> {
        match self.slots.get(index)? {
            Slot::Bar(BarType::Io(_)) => Some(u64::from(self.bars[index] & !0x3)),
            Slot::Bar(BarType::Memory32(_)) => Some(u64::from(self.bars[index] & !0xf)),
            Slot::Bar(BarType::Memory64(_)) => {
                let hi = u64::from(*self.bars.get(index + 1)?);
                Some((hi << 32) | u64::from(self.bars[index] & !0xf))
            }
            _ => None,
        }
    }

    /// BARs decoded now: declared, with their space enabled in the command register.
    pub fn bar_mappings(&self) -> Vec<BarMapping> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let Slot::Bar(bar) = *slot else { continue };
            let (kind, enabled) = match bar {
                BarType::Io(_) => (BarKind::Io, self.command & COMMAND_IO != 0),
                _ => (BarKind::Memory, self.command & COMMAND_MEMORY != 0),
            };
            let Some(base) = self.bar_base(i) else {
                continue;
            };
            if enabled && base != 0 {
                out.push(BarMapping {
                    index: i as u8,
                    kind,
                    base,
                    size: Self::bar_size(bar),
                });
            }
        }
        out
    }

    /// Reads the dword at `offset` (< 0x40, dword aligned).
    pub fn read(&self, offset: u16) -> u32 {
        match offset & 0x3c {
            0x00 => u32::from(self.vendor) | (u32::from(self.device) << 16),
            0x04 => u32::from(self.command) | (u32::from(self.status) << 16),
            0x08 => u32::from(self.revision) | (self.class_code << 8),
            0x0c => {
                u32::from(self.cache_line)
                    | (u32::from(self.latency) << 8)
                    | (u32::from(self.header_type) << 16)
            }
            o @ 0x10..=0x24 => self.bars[usize::from((o - 0x10) / 4)],
            0x2c => u32::from(self.subsystem_vendor) | (u32::from(self.subsystem) << 16),
            0x3c => u32::from(self.interrupt_line) | (u32::from(self.interrupt_pin) << 8),
            // Cardbus CIS, expansion ROM, capabilities pointer: not implemented.
            _ => 0,
        }
    }

    /// Writes the bytes of `value` selected by `mask` at dword `offset` (< 0x40).
    pub fn write(&mut self, offset: u16, value: u32, mask: u32) {
        let merge = |old: u32| (old & !mask) | (value & mask);
        match offset & 0x3c {
            0x04 => {
                let new = merge(u32::from(self.command));
                self.command = (new as u16) & COMMAND_WRITABLE;
                let clear = ((value & mask) >> 16) as u16 & STATUS_W1C;
                self.status &= !clear;
            }
            0x0c => {
                let new = merge(u32::from(self.cache_line) | (u32::from(self.latency) << 8));
                self.cache_line = new as u8;
                self.latency = (new >> 8) as u8;
            }
            o @ 0x10..=0x24 => {
                let i = usize::from((o - 0x10) / 4);
                let new = merge(self.bars[i]);
                self.bars[i] = match self.slots[i] {
                    Slot::Unused => 0,
                    Slot::Upper => {
                        let Some(Slot::Bar(bar)) = i.checked_sub(1).map(|l| self.slots[l]) else {
                            return;
                        };
                        let size = Self::bar_size(bar);
                        new & ((!(size - 1)) >> 32) as u32
                    }
                    Slot::Bar(bar) => {
                        let size = Self::bar_size(bar);
                        let addr_mask = !(size - 1) as u32;
                        match bar {
                            BarType::Io(_) => (new & addr_mask & !0x3) | 1,
                            BarType::Memory32(_) => new & addr_mask & !0xf,
                            BarType::Memory64(_) => (new & addr_mask & !0xf) | 0b100,
                        }
                    }
                };
            }
            0x3c => {
                let new = merge(u32::from(self.interrupt_line));
                self.interrupt_line = new as u8;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_class_and_header_type() {
        let h = ConfigHeader::new(0x8086, 0x7010, 0x01_01_80, 0)
            .multi_function()
            .subsystem(0x1af4, 0x1100)
            .interrupt_pin(1);
        assert_eq!(h.read(0), 0x7010_8086);
        assert_eq!(h.read(8), 0x0101_8000);
        assert_eq!(h.read(0x0c) >> 16 & 0xff, 0x80);
        assert_eq!(h.read(0x2c), 0x1100_1af4);
        assert_eq!(h.read(0x3c) >> 8 & 0xff, 1);
    }

    #[test]
    fn io_bar_sizing_and_mapping() {
        let mut h = ConfigHeader::new(1, 2, 0, 0).bar(4, BarType::Io(16));
        h.write(0x20, 0xffff_ffff, 0xffff_ffff);
        assert_eq!(h.read(0x20), 0xffff_fff1, "size 16, I/O");
        h.write(0x20, 0xc001, 0xffff_ffff);
        assert_eq!(h.read(0x20), 0xc001);
        assert!(h.bar_mappings().is_empty(), "I/O decode off");
        h.write(0x04, u32::from(COMMAND_IO | COMMAND_BUS_MASTER), 0xffff);
        assert_eq!(
            h.bar_mappings(),
            [BarMapping {
                index: 4,
                kind: BarKind::Io,
                base: 0xc000,
                size: 16
            }]
        );
        assert!(h.bus_master());
        // Unused BARs read zero and ignore writes.
        h.write(0x10, 0xffff_ffff, 0xffff_ffff);
        assert_eq!(h.read(0x10), 0);
    }

    #[test]
    fn memory64_bar_spans_two_slots() {
        let mut h = ConfigHeader::new(1, 2, 0, 0).bar(0, BarType::Memory64(1 << 33));
        h.write(0x10, 0xffff_ffff, 0xffff_ffff);
        h.write(0x14, 0xffff_ffff, 0xffff_ffff);
        assert_eq!(h.read(0x10), 0x0000_0004);
        assert_eq!(h.read(0x14), 0xffff_fffe);
        h.write(0x10, 0, 0xffff_ffff);
        h.write(0x14, 0x10, 0xffff_ffff);
        h.write(0x04, u32::from(COMMAND_MEMORY), 0xffff);
        assert_eq!(h.bar_mappings()[0].base, 0x10_0000_0000);
        assert_eq!(h.bar_mappings()[0].size, 1 << 33);
    }

    #[test]
    fn status_bits_clear_on_write_one_and_byte_masks_apply() {
        let mut h = ConfigHeader::new(1, 2, 0, 0);
        h.set_status(0x2000);
        h.write(0x04, 0x0000_0007, 0x0000_00ff);
        assert_eq!(
            h.read(4),
            0x2000_0007,
            "status untouched by a command byte write"
        );
        h.write(0x04, 0x2000_0000, 0xffff_0000);
        assert_eq!(h.read(4) >> 16, 0);
        h.write(0x3c, 0x0000_ff0b, 0x0000_ffff);
        assert_eq!(h.read(0x3c), 0x0b, "pin is read-only");
    }
}
