//! Conversions between the `virt` register and CPUID types and KVM's.

use kvm_bindings::CpuId;
use kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
use kvm_bindings::kvm_cpuid_entry2;
use kvm_bindings::kvm_dtable;
use kvm_bindings::kvm_regs;
use kvm_bindings::kvm_segment;
use kvm_bindings::kvm_sregs;
use virt::CpuidEntry;
use virt::CpuidTable;
use virt::Registers;
use virt::SegmentRegister;
use virt::SpecialRegisters;
use virt::TableRegister;
use virt::VirtError;

pub(crate) fn regs_from_kvm(r: &kvm_regs) -> Registers {
    Registers {
        gpr: [
            r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ],
        rip: r.rip,
        rflags: r.rflags,
    }
}

pub(crate) fn regs_to_kvm(r: &Registers) -> kvm_regs {
    let g = &r.gpr;
    kvm_regs {
        rax: g[0],
        rcx: g[1],
        rdx: g[2],
        rbx: g[3],
        rsp: g[4],
        rbp: g[5],
        rsi: g[6],
        rdi: g[7],
        r8: g[8],
        r9: g[9],
        r10: g[10],
        r11: g[11],
        r12: g[12],
        r13: g[13],
        r14: g[14],
        r15: g[15],
        rip: r.rip,
        rflags: r.rflags,
    }
}

fn seg_from_kvm(s: &kvm_segment) -> SegmentRegister {
    let present = s.present != 0 && s.unusable == 0;
    let attributes = u16::from(s.type_ & 0xf)
        | (u16::from(s.s & 1) << 4)
        | (u16::from(s.dpl & 3) << 5)
        | (u16::from(present) << 7)
        | (u16::from(s.avl & 1) << 12)
        | (u16::from(s.l & 1) << 13)
        | (u16::from(s.db & 1) << 14)
        | (u16::from(s.g & 1) << 15);
    SegmentRegister {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        attributes,
    }
}

fn seg_to_kvm(s: &SegmentRegister) -> kvm_segment {
    let a = s.attributes;
    let bit = |n: u32| ((a >> n) & 1) as u8;
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (a & 0xf) as u8,
        s: bit(4),
        dpl: ((a >> 5) & 3) as u8,
        present: bit(7),
        avl: bit(12),
        l: bit(13),
        db: bit(14),
        g: bit(15),
        unusable: u8::from(bit(7) == 0),
        padding: 0,
    }
}

fn table_from_kvm(t: &kvm_dtable) -> TableRegister {
    TableRegister {
        base: t.base,
        limit: t.limit,
    }
}

fn table_to_kvm(t: &TableRegister) -> kvm_dtable {
    kvm_dtable {
        base: t.base,
        limit: t.limit,
        padding: [0; 3],
    }
}

pub(crate) fn sregs_from_kvm(s: &kvm_sregs) -> SpecialRegisters {
    SpecialRegisters {
        cs: seg_from_kvm(&s.cs),
        ds: seg_from_kvm(&s.ds),
        es: seg_from_kvm(&s.es),
        fs: seg_from_kvm(&s.fs),
        gs: seg_from_kvm(&s.gs),
        ss: seg_from_kvm(&s.ss),
        tr: seg_from_kvm(&s.tr),
        ldtr: seg_from_kvm(&s.ldt),
        gdtr: table_from_kvm(&s.gdt),
        idtr: table_from_kvm(&s.idt),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.apic_base,
    }
}

/// `base` keeps KVM's fields that `virt` does not model (the pending-interrupt bitmap).
pub(crate) fn sregs_to_kvm(s: &SpecialRegisters, base: &kvm_sregs) -> kvm_sregs {
    kvm_sregs {
        cs: seg_to_kvm(&s.cs),
        ds: seg_to_kvm(&s.ds),
        es: seg_to_kvm(&s.es),
        fs: seg_to_kvm(&s.fs),
        gs: seg_to_kvm(&s.gs),
        ss: seg_to_kvm(&s.ss),
        tr: seg_to_kvm(&s.tr),
        ldt: seg_to_kvm(&s.ldtr),
        gdt: table_to_kvm(&s.gdtr),
        idt: table_to_kvm(&s.idtr),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.apic_base,
        interrupt_bitmap: base.interrupt_bitmap,
    }
}

pub(crate) fn cpuid_from_kvm(c: &CpuId) -> CpuidTable {
    CpuidTable {
        entries: c
            .as_slice()
            .iter()
            .map(|e| CpuidEntry {
                function: e.function,
                index: e.index,
                index_significant: e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0,
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
            })
            .collect(),
    }
}

/// The table for one VP: the machine's table with the VP's APIC ID patched into leaf 1
/// EBX[31:24] and the x2APIC ID of leaves 0xb and 0x1f.
pub(crate) fn cpuid_to_kvm(table: &CpuidTable, apic_id: u32) -> Result<CpuId, VirtError> {
    let entries: Vec<kvm_cpuid_entry2> = table
        .entries
        .iter()
        .map(|e| {
            let mut k = kvm_cpuid_entry2 {
                function: e.function,
                index: e.index,
                flags: if e.index_significant {
                    KVM_CPUID_FLAG_SIGNIFCANT_INDEX
                } else {
                    0
                },
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
                ..Default::default()
            };
            match e.function {
                1 => k.ebx = (k.ebx & 0x00ff_ffff) | ((apic_id & 0xff) << 24),
                0xb | 0x1f => k.edx = apic_id,
                _ => {}
            }
            k
        })
        .collect();
    CpuId::from_entries(&entries).map_err(|_| {
        VirtError::Unsupported(format!("{} CPUID entries are too many", entries.len()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip() {
        for attributes in [0xa09b, 0xc093, 0x8b, 0x82, 0x93, 0x9b, 0xf3] {
            let s = SegmentRegister {
                base: 0x1234,
                limit: 0xffff_ffff,
                selector: 0x10,
                attributes,
            };
            assert_eq!(seg_from_kvm(&seg_to_kvm(&s)), s, "{attributes:#x}");
        }
        let unusable = kvm_segment {
            present: 1,
            unusable: 1,
            type_: 3,
            ..Default::default()
        };
        assert!(!seg_from_kvm(&unusable).present());
    }

    #[test]
    fn gpr_order_round_trips() {
        let mut r = Registers::default();
        for (i, g) in r.gpr.iter_mut().enumerate() {
            *g = i as u64 * 0x11;
        }
        let k = regs_to_kvm(&r);
        assert_eq!(k.rsp, 4 * 0x11);
        assert_eq!(k.rsi, 6 * 0x11);
        assert_eq!(regs_from_kvm(&k), r);
    }

    #[test]
    fn cpuid_patches_apic_id() {
        let t = CpuidTable {
            entries: vec![
                CpuidEntry {
                    function: 1,
                    ebx: 0xff00_0800,
                    ..Default::default()
                },
                CpuidEntry {
                    function: 0xb,
                    index: 1,
                    index_significant: true,
                    edx: 9,
                    ..Default::default()
                },
            ],
        };
        let k = cpuid_to_kvm(&t, 3).unwrap();
        let e = k.as_slice();
        assert_eq!(e[0].ebx, 0x0300_0800);
        assert_eq!(e[1].edx, 3);
        assert_eq!(e[1].flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        assert_eq!(cpuid_from_kvm(&k).entries[1].index, 1);
    }
}
