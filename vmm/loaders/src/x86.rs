//! The 64-bit entry state a loader sets up for code it enters directly in long mode: identity
//! page tables, a flat GDT and the matching registers (SDM Vol. 3A 9.8.5, "Initializing IA-32e
//! Mode"; the GDT selectors are those of Linux's 64-bit boot protocol).

use virt::Registers;
use virt::SegmentRegister;
use virt::SpecialRegisters;
use virt::TableRegister;

use crate::Chunk;

/// Code selector of the flat GDT (`__BOOT_CS` in Linux's boot protocol).
pub const CODE64_SELECTOR: u16 = 0x10;
/// Data selector of the flat GDT (`__BOOT_DS`).
pub const DATA_SELECTOR: u16 = 0x18;
/// Bytes of GDT [`flat_gdt`] builds.
pub const GDT_SIZE: u64 = 32;
/// Bytes of page tables [`identity_page_tables`] builds (PML4, PDPT, four page directories).
pub const PAGE_TABLES_SIZE: u64 = 6 * 4096;
/// Bytes [`identity_page_tables`] maps, from address 0.
pub const IDENTITY_MAPPED: u64 = 4 << 30;

const PTE_PRESENT: u64 = 1;
const PTE_WRITABLE: u64 = 2;
const PDE_LARGE: u64 = 0x80;

/// CR0: PE, MP, ET, NE, PG.
pub const CR0_LONG_MODE: u64 = 0x8000_0033;
/// CR4: PAE.
pub const CR4_LONG_MODE: u64 = 0x20;
/// EFER: LME, LMA.
pub const EFER_LONG_MODE: u64 = 0x500;

/// Access rights (VMX layout) of a present, accessed, 64-bit code segment (type 0xb, S, P, L, G).
pub const CODE64_ATTRIBUTES: u16 = 0xa09b;
/// Access rights of a present, accessed, writable 32-bit data segment (type 3, S, P, D/B, G).
pub const DATA_ATTRIBUTES: u16 = 0xc093;

/// Page tables at `base` (4 KiB aligned) that identity-map the first 4 GiB with 2 MiB pages.
/// Layout: PML4 at `base`, PDPT at `base + 4 KiB`, page directories after it.
pub fn identity_page_tables(base: u64) -> Chunk {
    let mut t = vec![0u8; PAGE_TABLES_SIZE as usize];
    let mut put = |index: usize, value: u64| {
        t[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes());
    };
    let pdpt = base + 0x1000;
    put(0, pdpt | PTE_PRESENT | PTE_WRITABLE);
    for gib in 0..4u64 {
        let pd = base + 0x2000 + gib * 0x1000;
        put(512 + gib as usize, pd | PTE_PRESENT | PTE_WRITABLE);
        for i in 0..512u64 {
            let addr = (gib << 30) | (i << 21);
            put(
                1024 + (gib * 512 + i) as usize,
                addr | PTE_PRESENT | PTE_WRITABLE | PDE_LARGE,
            );
        }
    }
    Chunk::new(base, t, "page tables")
}

/// A GDT with null, null, flat 64-bit code (0x10) and flat data (0x18) descriptors.
pub fn flat_gdt(base: u64) -> Chunk {
    let mut g = Vec::with_capacity(GDT_SIZE as usize);
    for d in [0u64, 0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff] {
        g.extend_from_slice(&d.to_le_bytes());
    }
    Chunk::new(base, g, "gdt")
}

/// Registers for entering 64-bit code at `rip` with the tables of [`flat_gdt`] at `gdt` and
/// [`identity_page_tables`] at `page_tables`. Interrupts are disabled (RFLAGS = 2) and the IDT
/// is empty; the entered code sets up its own.
pub fn long_mode_state(rip: u64, gdt: u64, page_tables: u64) -> (Registers, SpecialRegisters) {
    let regs = Registers {
        gpr: [0; 16],
        rip,
        rflags: 2,
    };
    let code = SegmentRegister::flat(CODE64_SELECTOR, CODE64_ATTRIBUTES);
    let data = SegmentRegister::flat(DATA_SELECTOR, DATA_ATTRIBUTES);
    let mut s = SpecialRegisters::reset();
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.gdtr = TableRegister {
        base: gdt,
        limit: (GDT_SIZE - 1) as u16,
    };
    s.idtr = TableRegister { base: 0, limit: 0 };
    s.cr0 = CR0_LONG_MODE;
    s.cr3 = page_tables;
    s.cr4 = CR4_LONG_MODE;
    s.efer = EFER_LONG_MODE;
    (regs, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(c: &Chunk, index: usize) -> u64 {
        u64::from_le_bytes(c.bytes()[index * 8..index * 8 + 8].try_into().unwrap())
    }

    #[test]
    fn page_tables_identity_map_4g() {
        let c = identity_page_tables(0x9000);
        assert_eq!(c.len(), PAGE_TABLES_SIZE);
        assert_eq!(entry(&c, 0), 0xa003, "PML4[0] -> PDPT");
        assert_eq!(entry(&c, 512 + 3), 0xe003, "PDPT[3] -> last PD");
        // The 2 MiB page that holds 3 GiB + 6 MiB.
        let idx = 1024 + ((3u64 << 30) + (6 << 20)) as usize / (2 << 20);
        assert_eq!(entry(&c, idx), (3 << 30) + (6 << 20) + 0x83);
        assert_eq!(entry(&c, 1024 + 2047), (IDENTITY_MAPPED - (2 << 20)) | 0x83);
    }

    #[test]
    fn gdt_descriptors_match_register_attributes() {
        let g = flat_gdt(0x500);
        let code = entry(&g, 2);
        // Descriptor bits 40..56 hold the access byte and flags nibble: same layout as VMX
        // access rights once the limit nibble (bits 48..52) is dropped.
        let attrs = |d: u64| (((d >> 40) & 0xff) | (((d >> 52) & 0xf) << 12)) as u16;
        assert_eq!(attrs(code), CODE64_ATTRIBUTES);
        assert_eq!(attrs(entry(&g, 3)), DATA_ATTRIBUTES);
        let (_, s) = long_mode_state(0x100_0000, 0x500, 0x9000);
        assert!(s.cs.long() && s.cs.present() && s.cs.dpl() == 0);
        assert_eq!(s.gdtr.limit, 31);
    }
}
