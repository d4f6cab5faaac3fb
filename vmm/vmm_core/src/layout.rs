//! The machine's guest-physical memory map and fixed addresses (`docs/src/machine.md` is the
//! prose version of this file).

use guest_mem::RegionKind;
use loaders::E820Entry;
use loaders::E820Type;

/// 4 KiB.
pub const PAGE_SIZE: u64 = 4096;
/// End of conventional low RAM (the VGA window starts here).
pub const LOW_RAM_END: u64 = 0xa_0000;
/// Start of the extended BIOS data area, reserved in the e820 map.
pub const EBDA_START: u64 = 0x9_fc00;
/// Legacy VGA window (MMIO, unclaimed unless a graphics device takes it).
pub const VGA_WINDOW: std::ops::Range<u64> = 0xa_0000..0xc_0000;
/// Option ROMs and the BIOS shadow: RAM, but not reported as usable.
pub const BIOS_AREA: std::ops::Range<u64> = 0xc_0000..0x10_0000;
/// Where a direct-boot machine puts its ACPI tables (the RSDP first, inside the range Linux
/// scans), reserved in the e820 map.
pub const ACPI_TABLES: std::ops::Range<u64> = 0xe_0000..0x10_0000;
/// The ACPI RSDP of a direct-boot machine (16-byte aligned, where Linux's scan finds it).
pub const ACPI_RSDP: u64 = ACPI_TABLES.start;
/// The ACPI tables of a direct-boot machine follow the RSDP.
pub const ACPI_TABLES_START: u64 = ACPI_TABLES.start + 0x40;
/// Start of RAM above the legacy areas.
pub const HIGH_RAM_START: u64 = 0x10_0000;
/// Start of the 32-bit PCI MMIO hole; RAM beyond this moves above 4 GiB.
pub const PCI_HOLE_START: u64 = 0xc000_0000;
/// The I/O APIC's registers.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// Size of the I/O APIC's window.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Reserved for an HPET (not emulated yet).
pub const HPET_BASE: u64 = 0xfed0_0000;
/// The local APICs' default base (per VP, inside the CPU backend).
pub const LAPIC_BASE: u64 = 0xfee0_0000;
/// 4 GiB: where RAM above the PCI hole continues.
pub const FOUR_GIB: u64 = 1 << 32;

/// Smallest guest RAM accepted.
pub const MIN_MEMORY: u64 = 2 << 20;
/// Largest guest RAM accepted.
pub const MAX_MEMORY: u64 = 1 << 40;
/// Most virtual processors (APIC IDs 0..=63 leave room for the I/O APIC's ID).
pub const MAX_PROCESSORS: u32 = 64;

/// A guest RAM size that does not work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Too small or too large.
    #[error("memory size {0} bytes is outside {min} MiB ..= {max} GiB", min = MIN_MEMORY >> 20, max = MAX_MEMORY >> 30)]
    OutOfRange(u64),
    /// Not whole pages.
    #[error("memory size {0} bytes is not a multiple of 4 KiB")]
    Unaligned(u64),
}

/// Where guest RAM lives for a given size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLayout {
    ram: u64,
    low_end: u64,
    high_len: u64,
}

impl MemoryLayout {
    /// The layout for `ram` bytes of guest RAM: up to 3 GiB below the PCI hole, the rest from
    /// 4 GiB. The 128 KiB of the VGA window are not backed (as on QEMU's `pc`).
    pub fn new(ram: u64) -> Result<Self, LayoutError> {
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&ram) {
            return Err(LayoutError::OutOfRange(ram));
        }
        if !ram.is_multiple_of(PAGE_SIZE) {
            return Err(LayoutError::Unaligned(ram));
        }
        let low_end = ram.min(PCI_HOLE_START);
        Ok(Self {
            ram,
            low_end,
            high_len: ram - low_end,
        })
    }

    /// Guest RAM requested.
    pub fn ram_size(&self) -> u64 {
        self.ram
    }

    /// End of RAM below 4 GiB.
    pub fn low_ram_end(&self) -> u64 {
        self.low_end
    }

    /// Bytes of RAM above 4 GiB.
    pub fn high_ram_len(&self) -> u64 {
        self.high_len
    }

    /// The backed regions, for `GuestMemory::new`.
    pub fn regions(&self) -> Vec<(u64, u64, RegionKind)> {
        let mut r = vec![(0, LOW_RAM_END, RegionKind::Ram)];
        if self.low_end > VGA_WINDOW.end {
            r.push((
                VGA_WINDOW.end,
                self.low_end - VGA_WINDOW.end,
                RegionKind::Ram,
            ));
        }
        if self.high_len > 0 {
            r.push((FOUR_GIB, self.high_len, RegionKind::Ram));
        }
        r
    }

    /// The memory map a directly booted OS is given: low RAM up to the EBDA, the EBDA and
    /// the BIOS/ACPI area reserved, RAM from 1 MiB to the hole, RAM above 4 GiB.
    pub fn e820(&self) -> Vec<E820Entry> {
        let mut e = vec![
            E820Entry {
                addr: 0,
                size: EBDA_START,
                kind: E820Type::Ram,
            },
            E820Entry {
                addr: EBDA_START,
                size: LOW_RAM_END - EBDA_START,
                kind: E820Type::Reserved,
            },
            E820Entry {
                addr: ACPI_TABLES.start,
                size: ACPI_TABLES.end - ACPI_TABLES.start,
                kind: E820Type::Reserved,
            },
        ];
        if self.low_end > HIGH_RAM_START {
            e.push(E820Entry {
                addr: HIGH_RAM_START,
                size: self.low_end - HIGH_RAM_START,
                kind: E820Type::Ram,
            });
        }
        if self.high_len > 0 {
            e.push(E820Entry {
                addr: FOUR_GIB,
                size: self.high_len,
                kind: E820Type::Ram,
            });
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_no_high_ram() {
        let l = MemoryLayout::new(256 << 20).unwrap();
        assert_eq!(
            l.regions(),
            [
                (0, 0xa_0000, RegionKind::Ram),
                (0xc_0000, (256 << 20) - 0xc_0000, RegionKind::Ram),
            ]
        );
        let e = l.e820();
        assert_eq!(e.len(), 4);
        assert_eq!((e[3].addr, e[3].size), (0x10_0000, (256 << 20) - 0x10_0000));
        assert!(e.iter().all(|x| x.addr + x.size <= 256 << 20));
    }

    #[test]
    fn big_guest_splits_around_the_pci_hole() {
        let l = MemoryLayout::new(4 << 30).unwrap();
        assert_eq!(l.low_ram_end(), PCI_HOLE_START);
        assert_eq!(l.high_ram_len(), 1 << 30);
        let regions = l.regions();
        assert_eq!(regions.last(), Some(&(FOUR_GIB, 1 << 30, RegionKind::Ram)));
        let e = l.e820();
        let ram: u64 = e
            .iter()
            .filter(|x| x.kind == E820Type::Ram)
            .map(|x| x.size)
            .sum();
        // Everything but the EBDA, the VGA window and the BIOS area is usable.
        assert_eq!(ram, (4 << 30) - (HIGH_RAM_START - EBDA_START));
        assert!(
            e.iter()
                .all(|x| x.addr + x.size <= PCI_HOLE_START || x.addr >= FOUR_GIB),
            "nothing in the hole"
        );
    }

    #[test]
    fn tiny_guest_is_only_low_ram() {
        let l = MemoryLayout::new(MIN_MEMORY).unwrap();
        assert_eq!(l.regions().len(), 2);
        let l = MemoryLayout::new(0xc_0000).err();
        assert_eq!(l, Some(LayoutError::OutOfRange(0xc_0000)));
    }

    #[test]
    fn bad_sizes() {
        assert_eq!(MemoryLayout::new(0), Err(LayoutError::OutOfRange(0)));
        assert_eq!(
            MemoryLayout::new((300 << 20) + 1),
            Err(LayoutError::Unaligned((300 << 20) + 1))
        );
        assert!(MemoryLayout::new(MAX_MEMORY + PAGE_SIZE).is_err());
    }

    #[test]
    fn fixed_ranges_do_not_overlap_ram() {
        let l = MemoryLayout::new(3 << 30).unwrap();
        for (start, len, _) in l.regions() {
            for fixed in [IOAPIC_BASE, HPET_BASE, LAPIC_BASE, virt_kvm::TSS_ADDR] {
                assert!(!(start..start + len).contains(&fixed), "{fixed:#x}");
            }
            assert!(start + len <= VGA_WINDOW.start || start >= VGA_WINDOW.end);
        }
    }
}
