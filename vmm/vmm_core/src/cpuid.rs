//! The CPUID a guest sees: the backend's supported leaves, cut down to what the machine models,
//! with the machine's topology. `docs/src/cpuid-msr-policy.md` is the table this code
//! implements; keep them in step.
//!
//! The policy is an intersection: a bit is set only if the backend supports it *and* the
//! machine allows it, so the guest never sees a feature the backend lacks, and both backends
//! present the same machine (the same topology, no hypervisor-specific leaves).

use virt::CpuidEntry;
use virt::CpuidTable;

/// Basic leaves kept (when the backend has them); all others read as zero.
pub const KEPT_BASIC: &[u32] = &[0x0, 0x1, 0x2, 0x7, 0xb, 0xd, 0x15, 0x16];
/// Extended leaves kept.
pub const KEPT_EXTENDED: &[u32] = &[
    0x8000_0000,
    0x8000_0001,
    0x8000_0002,
    0x8000_0003,
    0x8000_0004,
    0x8000_0005,
    0x8000_0006,
    0x8000_0007,
    0x8000_0008,
];
/// Highest basic leaf advertised.
pub const MAX_BASIC: u32 = 0x16;
/// Highest extended leaf advertised.
pub const MAX_EXTENDED: u32 = 0x8000_0008;

/// Leaf 1 ECX bits allowed: SSE3, PCLMULQDQ, SSSE3, FMA, CX16, PCID, SSE4.1, SSE4.2, x2APIC,
/// MOVBE, POPCNT, TSC-deadline, AES, XSAVE, OSXSAVE, AVX, F16C, RDRAND. Bit 31 (hypervisor)
/// is set by the policy.
pub const LEAF1_ECX_ALLOWED: u32 = bits(&[
    0, 1, 9, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30,
]);
/// Leaf 1 EDX bits allowed: FPU, VME, DE, PSE, TSC, MSR, PAE, MCE, CX8, APIC, SEP, PGE, MCA,
/// CMOV, PAT, PSE36, CLFSH, MMX, FXSR, SSE, SSE2. HTT (28) follows the topology.
pub const LEAF1_EDX_ALLOWED: u32 = bits(&[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 14, 15, 16, 17, 19, 23, 24, 25, 26,
]);
/// Leaf 7.0 EBX bits allowed: FSGSBASE, TSC_ADJUST, BMI1, AVX2, FDP_EXCPTN_ONLY, SMEP, BMI2, ERMS,
/// INVPCID, ZERO_FCS_FDS, AVX512F, AVX512DQ, RDSEED, ADX, SMAP, AVX512_IFMA, CLFLUSHOPT,
/// CLWB, AVX512CD, SHA, AVX512BW, AVX512VL.
pub const LEAF7_EBX_ALLOWED: u32 = bits(&[
    0, 3, 5, 6, 7, 8, 9, 10, 13, 16, 17, 18, 19, 20, 21, 23, 24, 28, 29, 30, 31,
]);
/// Leaf 7.0 ECX bits allowed: AVX512_VBMI, UMIP, PKU, OSPKE, AVX512_VBMI2, GFNI, VAES,
/// VPCLMULQDQ, AVX512_VNNI, AVX512_BITALG, AVX512_VPOPCNTDQ, RDPID.
pub const LEAF7_ECX_ALLOWED: u32 = bits(&[1, 2, 3, 4, 6, 8, 9, 10, 11, 12, 14, 22]);
/// Leaf 7.0 EDX bits allowed: FSRM, MD_CLEAR, SERIALIZE, ARCH_CAPABILITIES, SSBD.
pub const LEAF7_EDX_ALLOWED: u32 = bits(&[4, 10, 14, 29, 31]);
/// Leaf 0x8000_0001 ECX bits allowed: LAHF/SAHF, ABM (LZCNT), SSE4A, MISALIGNSSE, PREFETCHW.
pub const EXT1_ECX_ALLOWED: u32 = bits(&[0, 5, 6, 7, 8]);
/// Leaf 0x8000_0001 EDX bits allowed: SYSCALL, NX, MMXEXT, FXSR_OPT, PDPE1GB, RDTSCP, LM,
/// and the leaf-1 copies AMD keeps here (FPU..SSE2 positions of leaf 1 EDX).
pub const EXT1_EDX_ALLOWED: u32 = LEAF1_EDX_ALLOWED | bits(&[11, 20, 22, 25, 26, 27, 29]);
/// Leaf 0x8000_0007 EDX bits allowed: invariant TSC.
pub const EXT7_EDX_ALLOWED: u32 = bits(&[8]);

const HYPERVISOR_BIT: u32 = 1 << 31;
const HTT_BIT: u32 = 1 << 28;

const fn bits(list: &[u32]) -> u32 {
    let mut v = 0;
    let mut i = 0;
    while i < list.len() {
        v |= 1 << list[i];
        i += 1;
    }
    v
}

/// The leaves a backend that does not report its CPUID gets (the set a 64-bit Linux needs,
/// from the project's boot census, plus TSC, APIC, PGE and NX): vendor "GenuineIntel",
/// family 6.
pub fn baseline() -> CpuidTable {
    let vendor = *b"GenuineIntel";
    let word =
        |i: usize| u32::from_le_bytes([vendor[i], vendor[i + 1], vendor[i + 2], vendor[i + 3]]);
    let leaf = |function, eax, ebx, ecx, edx| CpuidEntry {
        function,
        index: 0,
        index_significant: false,
        eax,
        ebx,
        ecx,
        edx,
    };
    CpuidTable {
        entries: vec![
            leaf(0, 1, word(0), word(8), word(4)),
            // Family 6, model 15, stepping 1; CLFLUSH line 64 bytes.
            leaf(
                1,
                0x0000_06f1,
                0x0000_0800,
                0,
                bits(&[0, 4, 5, 6, 8, 9, 13, 15, 19, 24, 25, 26]),
            ),
            leaf(0x8000_0000, 0x8000_0008, 0, 0, 0),
            leaf(0x8000_0001, 0, 0, 0, bits(&[11, 20, 29])),
            // 40 physical, 48 virtual address bits.
            leaf(0x8000_0008, 0x3028, 0, 0, 0),
        ],
    }
}

/// The clocks a guest reads its timing from CPUID (leaves 0x15 and 0x16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clocks {
    /// TSC frequency in Hz.
    pub tsc_hz: u64,
    /// Local APIC timer input frequency in Hz: the "core crystal clock" of leaf 0x15, which is
    /// what Linux programs the APIC timer with when this leaf is present.
    pub apic_hz: u64,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Leaf 0x15 (crystal = the APIC timer clock; TSC = crystal * EBX / EAX) and leaf 0x16 (base
/// frequency in MHz). `None` when the numbers do not fit the leaf's 32-bit fields.
fn clock_leaves(c: Clocks) -> Option<[CpuidEntry; 2]> {
    let crystal = u32::try_from(c.apic_hz).ok().filter(|&hz| hz > 0)?;
    let g = gcd(c.tsc_hz, c.apic_hz).max(1);
    let (mut num, mut den) = (c.tsc_hz / g, c.apic_hz / g);
    // Keep the ratio within 32 bits, giving up precision only if it must.
    while num > u64::from(u32::MAX) || den > u64::from(u32::MAX) {
        num >>= 1;
        den >>= 1;
    }
    if num == 0 || den == 0 {
        return None;
    }
    let leaf = |function, eax, ebx, ecx| CpuidEntry {
        function,
        index: 0,
        index_significant: false,
        eax,
        ebx,
        ecx,
        edx: 0,
    };
    let mhz = u32::try_from(c.tsc_hz / 1_000_000).unwrap_or(u32::MAX);
    Some([
        leaf(0x15, den as u32, num as u32, crystal),
        leaf(0x16, mhz, mhz, crystal / 1_000_000),
    ])
}

/// The machine's CPUID table for `processors` VPs over `supported` (the backend's table).
/// `clocks`, when known, are the TSC and APIC timer frequencies the guest sees: leaves 0x15 and
/// 0x16 then state them (so the guest need not calibrate either against the PIT) whenever the
/// maximum basic leaf reaches them.
pub fn machine_cpuid(
    supported: &CpuidTable,
    processors: u32,
    clocks: Option<Clocks>,
) -> CpuidTable {
    let processors = processors.max(1);
    // Bits needed to number the processors (x2APIC ID shift of the core level).
    let core_bits = 32 - (processors - 1).leading_zeros();
    let mut out = Vec::new();
    for e in &supported.entries {
        let f = e.function;
        let keep = if f < 0x4000_0000 {
            KEPT_BASIC.contains(&f)
        } else {
            KEPT_EXTENDED.contains(&f)
        };
        if !keep {
            continue;
        }
        let mut e = *e;
        match f {
            0 => e.eax = e.eax.min(MAX_BASIC),
            1 => {
                e.ecx = (e.ecx & LEAF1_ECX_ALLOWED) | HYPERVISOR_BIT;
                e.edx &= LEAF1_EDX_ALLOWED;
                // EBX: keep brand index and CLFLUSH size; logical processor count below;
                // APIC ID (31:24) is patched per VP by the backend.
                e.ebx = (e.ebx & 0xffff) | ((processors.min(255)) << 16);
                if processors > 1 {
                    e.edx |= HTT_BIT;
                }
            }
            7 => {
                if e.index == 0 {
                    e.eax = 0; // no subleaves beyond 0
                    e.ebx &= LEAF7_EBX_ALLOWED;
                    e.ecx &= LEAF7_ECX_ALLOWED;
                    e.edx &= LEAF7_EDX_ALLOWED;
                } else {
                    continue;
                }
            }
            0xb => continue,                             // rebuilt below
            0x15 | 0x16 if clocks.is_some() => continue, // rebuilt below
            0x8000_0000 => e.eax = e.eax.min(MAX_EXTENDED),
            0x8000_0001 => {
                e.ecx &= EXT1_ECX_ALLOWED;
                e.edx &= EXT1_EDX_ALLOWED;
            }
            0x8000_0007 => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx &= EXT7_EDX_ALLOWED;
            }
            0x8000_0008 => {
                // Keep address sizes (EAX) and the AMD feature bits in EBX that only describe
                // instructions; ECX: NC = processors - 1, ApicIdCoreIdSize = core_bits.
                e.ebx &= bits(&[0, 2, 9]); // CLZERO, XSAVEERPTR, WBNOINVD
                e.ecx = (processors - 1).min(255) | (core_bits << 12);
                e.edx = 0;
            }
            _ => {}
        }
        out.push(e);
    }
    // Leaf 0xb: one package of `processors` cores, one thread each. EDX (x2APIC ID) is patched
    // per VP by the backend.
    let max_basic = out.iter().find(|e| e.function == 0).map_or(0, |e| e.eax);
    if max_basic >= 0xb {
        let level = |index: u32, eax: u32, ebx: u32, ecx: u32| CpuidEntry {
            function: 0xb,
            index,
            index_significant: true,
            eax,
            ebx,
            ecx,
            edx: 0,
        };
        out.push(level(0, 0, 1, 0x100));
        out.push(level(1, core_bits, processors, 0x200 | 1));
        out.push(level(2, 0, 0, 2));
    }
    if let Some([l15, l16]) = clocks.and_then(clock_leaves)
        && max_basic >= 0x15
    {
        out.push(l15);
        if max_basic >= 0x16 {
            out.push(l16);
        }
    }
    CpuidTable { entries: out }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            index_significant: matches!(function, 4 | 7 | 0xb | 0xd),
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
        }
    }

    fn host_like() -> CpuidTable {
        CpuidTable {
            entries: vec![
                entry(0, 0, [0x1f, 1, 2, 3]),
                entry(1, 0, [0x806f8, 0x0010_0800, 0xffff_ffff, 0xffff_ffff]),
                entry(4, 0, [0x1c00_4121, 0, 0, 0]),
                entry(5, 0, [0x40, 0x40, 3, 0]),
                entry(6, 0, [4, 0, 0, 0]),
                entry(7, 0, [2, u32::MAX, u32::MAX, u32::MAX]),
                entry(7, 1, [0x10, 0, 0, 0]),
                entry(0xa, 0, [0x0703_0805, 0, 0, 0]),
                entry(0xb, 0, [1, 2, 0x100, 0]),
                entry(0xd, 0, [7, 0x340, 0x340, 0]),
                entry(
                    0x4000_0000,
                    0,
                    [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d],
                ),
                entry(0x8000_0000, 0, [0x8000_0021, 0, 0, 0]),
                entry(0x8000_0001, 0, [0, 0, u32::MAX, u32::MAX]),
                entry(0x8000_0008, 0, [0x3030, 0, 0, 0]),
                entry(0x8000_000a, 0, [1, 0, 0, 0]),
            ],
        }
    }

    #[test]
    fn drops_what_the_machine_does_not_model() {
        let t = machine_cpuid(&host_like(), 1, None);
        for gone in [4, 5, 6, 0xa, 0x4000_0000, 0x8000_000a] {
            assert_eq!(t.lookup(gone, 0), [0; 4], "leaf {gone:#x}");
        }
        assert_eq!(t.lookup(0, 0)[0], MAX_BASIC);
        assert_eq!(t.lookup(0x8000_0000, 0)[0], MAX_EXTENDED);
        let l1 = t.lookup(1, 0);
        assert_eq!(l1[2] & (1 << 5), 0, "no VMX");
        assert_eq!(l1[2] & (1 << 3), 0, "no MONITOR");
        assert_ne!(l1[2] & HYPERVISOR_BIT, 0, "hypervisor bit");
        assert_eq!(l1[3] & (1 << 12), 0, "no MTRR");
        assert_eq!(l1[3] & HTT_BIT, 0, "one processor: no HTT");
        assert_eq!(t.lookup(0x8000_0001, 0)[2] & (1 << 2), 0, "no SVM");
        assert_eq!(t.lookup(7, 1), [0; 4], "leaf 7 subleaf 1 dropped");
        assert_eq!(t.lookup(7, 0)[1] & (1 << 11), 0, "no RTM");
        assert_eq!(t.lookup(0x8000_0008, 0)[0], 0x3030, "address sizes kept");
    }

    #[test]
    fn never_adds_what_the_backend_lacks() {
        let mut sparse = host_like();
        for e in &mut sparse.entries {
            if e.function == 1 {
                e.ecx = 0;
                e.edx = 1; // FPU only
            }
        }
        let t = machine_cpuid(&sparse, 4, None);
        let l1 = t.lookup(1, 0);
        assert_eq!(l1[2], HYPERVISOR_BIT);
        assert_eq!(l1[3], 1 | HTT_BIT);
    }

    #[test]
    fn topology_for_several_processors() {
        let t = machine_cpuid(&host_like(), 6, None);
        assert_eq!((t.lookup(1, 0)[1] >> 16) & 0xff, 6);
        assert_ne!(t.lookup(1, 0)[3] & HTT_BIT, 0);
        assert_eq!(t.lookup(0xb, 0), [0, 1, 0x100, 0]);
        assert_eq!(t.lookup(0xb, 1), [3, 6, 0x201, 0]);
        assert_eq!(t.lookup(0xb, 2)[2], 2);
        assert_eq!(t.lookup(0x8000_0008, 0)[2], 5 | (3 << 12));
    }

    fn tsc(t: &CpuidTable) -> u64 {
        let [a, b, c, _] = t.lookup(0x15, 0);
        u64::from(c) * u64::from(b) / u64::from(a)
    }

    #[test]
    fn clock_leaves_state_tsc_and_apic_timer() {
        let kvm = Clocks {
            tsc_hz: 2_596_142_000,
            apic_hz: 1_000_000_000,
        };
        let t = machine_cpuid(&host_like(), 1, Some(kvm));
        assert_eq!(
            t.lookup(0x15, 0)[2],
            1_000_000_000,
            "crystal = APIC timer clock"
        );
        assert_eq!(tsc(&t), 2_596_142_000);
        assert_eq!(t.lookup(0x16, 0)[0], 2596);
        let emu = Clocks {
            tsc_hz: 1_000_000_000,
            apic_hz: 25_000_000,
        };
        let t = machine_cpuid(&host_like(), 1, Some(emu));
        assert_eq!(t.lookup(0x15, 0), [1, 40, 25_000_000, 0]);
        let odd = Clocks {
            tsc_hz: 4_999_999_937,
            apic_hz: 99_999_989,
        };
        let t = machine_cpuid(&host_like(), 1, Some(odd));
        assert!(tsc(&t).abs_diff(odd.tsc_hz) < 1000, "{}", tsc(&t));
        let t = machine_cpuid(&baseline(), 1, Some(emu));
        assert_eq!(
            t.lookup(0x15, 0),
            t.lookup(1, 0),
            "max basic 1: leaf 0x15 not added"
        );
    }

    #[test]
    fn baseline_is_a_64_bit_cpu() {
        let t = machine_cpuid(&baseline(), 1, None);
        assert_eq!(&t.lookup(0, 0)[1].to_le_bytes(), b"Genu");
        let edx = t.lookup(1, 0)[3];
        for bit in [0, 5, 6, 8, 15, 24, 25, 26] {
            assert_ne!(edx & (1 << bit), 0, "leaf 1 EDX bit {bit}");
        }
        let ext = t.lookup(0x8000_0001, 0)[3];
        assert_ne!(ext & (1 << 29), 0, "LM");
        assert_ne!(ext & (1 << 11), 0, "SYSCALL");
    }
}
