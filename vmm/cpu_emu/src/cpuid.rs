//! The CPUID this CPU supports: every feature bit advertised here is implemented.

use virt::CpuidEntry;
use virt::CpuidTable;

use crate::partition::CRYSTAL_HZ;

/// Default guest TSC frequency when the machine does not choose one.
pub const DEFAULT_TSC_HZ: u64 = 2_000_000_000;

fn regs(s: &[u8; 12]) -> [u32; 3] {
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    [w(0), w(4), w(8)]
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The CPUID leaves the `emu` CPU implements, for `processor_count` processors and a TSC of
/// `tsc_hz`. The machine's CPUID policy starts from this table (it may clear bits or add
/// hypervisor leaves, never set feature bits this table does not have); per-processor fields
/// (APIC IDs) are patched when each processor is created.
pub fn supported_cpuid_with_tsc(processor_count: u32, tsc_hz: u64) -> CpuidTable {
    let n = processor_count.max(1);
    let mut e = Vec::new();
    let mut add = |function: u32, index: Option<u32>, r: [u32; 4]| {
        e.push(CpuidEntry {
            function,
            index: index.unwrap_or(0),
            index_significant: index.is_some(),
            eax: r[0],
            ebx: r[1],
            ecx: r[2],
            edx: r[3],
        });
    };
    // Leaf 0: max basic leaf and vendor.
    let v = regs(b"GenuineIntel");
    add(0, None, [0x16, v[0], v[2], v[1]]);
    // Leaf 1: family 6, model 0x3a, stepping 9.
    let sig = (6 << 8) | (0xa << 4) | (0x3 << 16) | 9;
    let ebx = (8 << 8) | ((n.min(255)) << 16);
    let ecx = (1 << 13) // CX16
        | (1 << 23) // POPCNT
        | (1 << 24) // TSC-deadline timer
        | (1 << 31); // hypervisor present
    let mut edx = 1 // FPU
        | (1 << 3) // PSE
        | (1 << 4) // TSC
        | (1 << 5) // MSR
        | (1 << 6) // PAE
        | (1 << 8) // CX8
        | (1 << 9) // APIC
        | (1 << 11) // SEP
        | (1 << 13) // PGE
        | (1 << 15) // CMOV
        | (1 << 16) // PAT
        | (1 << 19) // CLFLUSH
        | (1 << 24) // FXSR
        | (1 << 25) // SSE
        | (1 << 26); // SSE2
    if n > 1 {
        edx |= 1 << 28; // HTT: EBX[23:16] is meaningful
    }
    add(1, None, [sig, ebx, ecx, edx]);
    // Leaf 2: no cache descriptors.
    add(2, None, [1, 0, 0, 0]);
    // Leaf 4: no cache parameters.
    add(4, Some(0), [0, 0, 0, 0]);
    // Leaf 6: ARAT (the APIC timer runs in every C-state).
    add(6, None, [1 << 2, 0, 0, 0]);
    // Leaf 7: TSC_ADJUST, ERMS, FSRM (REP MOVSB/STOSB are the fast path here),
    // ARCH_CAPABILITIES.
    add(
        7,
        Some(0),
        [0, (1 << 1) | (1 << 9), 0, (1 << 4) | (1 << 29)],
    );
    // Leaf 0xB: topology, one thread per core, `n` cores. EDX (x2APIC ID) is per processor.
    let shift = 32 - (n - 1).leading_zeros();
    add(0xb, Some(0), [0, 1, 1 << 8, 0]);
    add(0xb, Some(1), [shift, n, 1 | (2 << 8), 0]);
    add(0xb, Some(2), [0, 0, 2, 0]);
    // Leaf 0x15: TSC = crystal * EBX / EAX.
    let g = gcd(tsc_hz, CRYSTAL_HZ).max(1);
    let (den, num) = (CRYSTAL_HZ / g, tsc_hz / g);
    if den <= u64::from(u32::MAX) && num <= u64::from(u32::MAX) {
        add(0x15, None, [den as u32, num as u32, CRYSTAL_HZ as u32, 0]);
    } else {
        add(0x15, None, [0, 0, 0, 0]);
    }
    // Leaf 0x16: frequencies in MHz.
    let mhz = (tsc_hz / 1_000_000) as u32;
    add(0x16, None, [mhz, mhz, (CRYSTAL_HZ / 1_000_000) as u32, 0]);
    // Extended leaves.
    add(0x8000_0000, None, [0x8000_0008, 0, 0, 0]);
    let ext_edx = (1 << 11) // SYSCALL
        | (1 << 20) // NX
        | (1 << 26) // 1 GiB pages
        | (1 << 27) // RDTSCP
        | (1 << 29); // long mode
    add(0x8000_0001, None, [0, 0, 1, ext_edx]); // ECX bit 0: LAHF/SAHF in 64-bit mode
    let brand = *b"agar emu x86-64 processor\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    for i in 0..3 {
        let w = |j: usize| {
            let o = i * 16 + j * 4;
            u32::from_le_bytes([brand[o], brand[o + 1], brand[o + 2], brand[o + 3]])
        };
        add(0x8000_0002 + i as u32, None, [w(0), w(1), w(2), w(3)]);
    }
    add(0x8000_0006, None, [0, 0, 0, 0]);
    add(0x8000_0007, None, [0, 0, 0, 1 << 8]); // invariant TSC
    add(0x8000_0008, None, [0x3028, 0, 0, 0]); // 40-bit physical, 48-bit linear
    CpuidTable { entries: e }
}

/// [`supported_cpuid_with_tsc`] with the default TSC frequency.
pub fn supported_cpuid(processor_count: u32) -> CpuidTable {
    supported_cpuid_with_tsc(processor_count, DEFAULT_TSC_HZ)
}

/// Patches the per-processor fields: initial APIC ID (leaf 1 EBX[31:24]) and x2APIC ID
/// (leaves 0xB/0x1F EDX).
pub(crate) fn per_vp(t: &CpuidTable, index: u32) -> CpuidTable {
    let mut t = t.clone();
    for e in &mut t.entries {
        match e.function {
            1 => e.ebx = (e.ebx & 0x00ff_ffff) | ((index & 0xff) << 24),
            0xb | 0x1f => e.edx = index,
            _ => {}
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_leaf_reproduces_the_frequency() {
        let t = supported_cpuid_with_tsc(2, 2_400_000_000);
        let [a, b, c, _] = t.lookup(0x15, 0);
        assert_eq!(u64::from(c) * u64::from(b) / u64::from(a), 2_400_000_000);
    }

    #[test]
    fn per_vp_patches_apic_ids() {
        let t = per_vp(&supported_cpuid(2), 1);
        assert_eq!(t.lookup(1, 0)[1] >> 24, 1);
        assert_eq!(t.lookup(0xb, 1)[3], 1);
        assert_eq!(t.lookup(0xb, 1)[1], 2);
    }
}
