//! The hypervisor CPUID leaves agar shows a guest when Hyper-V enlightenments are on.
//!
//! Linux (`ms_hyperv_platform`) requires "Microsoft Hv" at 0x40000000 with a maximum leaf of
//! at least 0x40000005, and the HYPERCALL and VP_INDEX privileges. It picks the hypervisor
//! whose signature sits at the highest base leaf, so no other signature (KVM's in
//! particular) may appear anywhere in 0x40000000..=0x4000ffff; [`apply`] removes them.

use virt::CpuidEntry;
use virt::CpuidTable;

use crate::spec;
use crate::spec::privilege;

/// What the leaves advertise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidOptions {
    /// Number of virtual processors (0x40000005 EAX).
    pub vp_count: u32,
    /// Advertise the guest crash MSRs (0x40000003 EDX bit 10).
    pub crash_msrs: bool,
}

/// Partition privileges, low half (0x40000003 EAX).
pub const PRIVILEGES_LOW: u32 = privilege::SYNIC
    | privilege::HYPERCALL_MSRS
    | privilege::VP_INDEX
    | privilege::FREQUENCY_MSRS
    | privilege::TSC_INVARIANT;
/// Partition privileges, high half (0x40000003 EBX).
pub const PRIVILEGES_HIGH: u32 = privilege::POST_MESSAGES | privilege::SIGNAL_EVENTS;
/// Recommendations (0x40000004 EAX).
pub const HINTS: u32 = privilege::HINT_DEPRECATE_AUTO_EOI;

fn entry(function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
    CpuidEntry {
        function,
        index: 0,
        index_significant: false,
        eax,
        ebx,
        ecx,
        edx,
    }
}

/// The leaves 0x40000000..=0x4000000a.
pub fn leaves(options: &CpuidOptions) -> Vec<CpuidEntry> {
    let misc = privilege::MISC_FREQUENCY_MSRS
        | if options.crash_msrs {
            privilege::MISC_CRASH_MSRS
        } else {
            0
        };
    let mut v = vec![
        entry(
            spec::CPUID_VENDOR,
            spec::CPUID_MAX_LEAF,
            spec::VENDOR_EBX,
            spec::VENDOR_ECX,
            spec::VENDOR_EDX,
        ),
        entry(spec::CPUID_INTERFACE, spec::INTERFACE_HV1, 0, 0, 0),
        // Build 20348 of version 10.0 (what Windows Server 2022 reports).
        entry(spec::CPUID_VERSION, 20348, 10 << 16, 0, 0),
        entry(
            spec::CPUID_FEATURES,
            PRIVILEGES_LOW,
            PRIVILEGES_HIGH,
            0,
            misc,
        ),
        // Spinlock retries: 0xffffffff = never notify.
        entry(spec::CPUID_HINTS, HINTS, 0xffff_ffff, 0, 0),
        entry(
            spec::CPUID_LIMITS,
            options.vp_count.max(1),
            options.vp_count.max(1),
            0,
            0,
        ),
    ];
    for leaf in spec::CPUID_LIMITS + 1..=spec::CPUID_MAX_LEAF {
        v.push(entry(leaf, 0, 0, 0, 0));
    }
    v
}

/// Turns a machine CPUID table into a Hyper-V one: sets the hypervisor-present bit
/// (leaf 1 ECX bit 31), drops every existing leaf in 0x40000000..=0x4000ffff (another
/// hypervisor signature there would win over Hyper-V), and adds [`leaves`].
pub fn apply(table: &mut CpuidTable, options: &CpuidOptions) {
    table
        .entries
        .retain(|e| !(0x4000_0000..=0x4000_ffff).contains(&e.function));
    for e in table.entries.iter_mut().filter(|e| e.function == 1) {
        e.ecx |= 1 << 31;
    }
    table.entries.extend(leaves(options));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> CpuidOptions {
        CpuidOptions {
            vp_count: 2,
            crash_msrs: false,
        }
    }

    #[test]
    fn vendor_leaf_spells_microsoft_hv_and_linux_minimums_hold() {
        let mut t = CpuidTable {
            entries: leaves(&opts()),
        };
        t.entries.push(entry(0, 0xd, 0, 0, 0));
        let [max, b, c, d] = t.lookup(0x4000_0000, 0);
        let sig: Vec<u8> = [b, c, d].iter().flat_map(|r| r.to_le_bytes()).collect();
        assert_eq!(&sig, b"Microsoft Hv");
        assert!((0x4000_0005..=0x4000_ffff).contains(&max));
        let [eax, ebx, _, edx] = t.lookup(0x4000_0003, 0);
        assert_eq!(eax, 0x8864, "privilege flags low as Linux prints them");
        assert_eq!(ebx, 0x30);
        assert_eq!(edx, 0x100);
        assert_eq!(t.lookup(0x4000_0004, 0)[0], 0x200);
        assert_eq!(t.lookup(0x4000_0001, 0)[0].to_le_bytes(), *b"Hv#1");
        assert_eq!(t.lookup(0x4000_0005, 0)[0], 2);
        assert_eq!(t.lookup(0x4000_000a, 0), [0; 4]);
    }

    #[test]
    fn apply_removes_other_hypervisor_signatures_and_sets_the_present_bit() {
        let kvm = |f| entry(f, 0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d);
        let mut t = CpuidTable {
            entries: vec![
                entry(0, 0xd, 0, 0, 0),
                entry(1, 0, 0, 0x1, 0),
                kvm(0x4000_0000),
                kvm(0x4000_0100),
                entry(0x4000_0101, 1, 0, 0, 0),
            ],
        };
        apply(
            &mut t,
            &CpuidOptions {
                vp_count: 1,
                crash_msrs: true,
            },
        );
        assert_eq!(t.lookup(1, 0)[2], 0x8000_0001);
        assert_eq!(t.lookup(0x4000_0100, 0), [0; 4]);
        assert_eq!(t.lookup(0x4000_0101, 0), [0; 4]);
        assert_eq!(t.lookup(0x4000_0000, 0)[1], spec::VENDOR_EBX);
        assert_eq!(t.lookup(0x4000_0003, 0)[3], 0x500);
        let hv_leaves = t
            .entries
            .iter()
            .filter(|e| e.function == 0x4000_0000)
            .count();
        assert_eq!(hv_leaves, 1);
    }
}
