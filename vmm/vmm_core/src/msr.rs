//! MSRs that reach the machine (`docs/src/cpuid-msr-policy.md`, "MSRs").
//!
//! The backends implement the architectural MSRs a guest needs (EFER, the SYSCALL and
//! SYSENTER MSRs, FS/GS bases, TSC, APIC base, PAT, ...). Whatever they do not own comes
//! here through `ExitHandler::msr_read`/`msr_write`. The machine answers the few it models
//! and refuses the rest with #GP, which is what hardware does for an MSR it does not have;
//! Linux probes optional MSRs with `rdmsr_safe`, so a refusal is an answer, not a failure.

use std::ops::RangeInclusive;

/// The Hyper-V synthetic MSR range. With `--hv` the machine owns it (`crate::vmbus`); the KVM
/// backend is told so through `PartitionConfig::user_msrs`.
pub const HYPERV_MSRS: RangeInclusive<u32> = 0x4000_0000..=0x4000_01ff;

/// IA32_BIOS_SIGN_ID: microcode revision (read-only here; writes, which ask the CPU to
/// report its revision, are accepted and ignored).
pub const IA32_BIOS_SIGN_ID: u32 = 0x8b;
/// MSR_SMI_COUNT: SMIs since reset (the machine has no SMM: always 0).
pub const MSR_SMI_COUNT: u32 = 0x34;

/// What the machine answers for an MSR that reached it.
#[derive(Debug, Default)]
pub struct MsrPolicy {
    hv: bool,
}

impl MsrPolicy {
    /// The policy for a machine with (`hv`) or without Hyper-V enlightenments.
    pub fn new(hv: bool) -> Self {
        Self { hv }
    }

    /// The ranges the machine wants to see even where a backend knows the MSR: the ones it
    /// answers itself (so every backend gives the same answer) and, with `hv`, the Hyper-V
    /// range.
    pub fn user_msrs(&self) -> Vec<RangeInclusive<u32>> {
        let mut v = vec![
            MSR_SMI_COUNT..=MSR_SMI_COUNT,
            IA32_BIOS_SIGN_ID..=IA32_BIOS_SIGN_ID,
        ];
        if self.hv {
            v.push(HYPERV_MSRS);
        }
        v
    }

    /// RDMSR: `None` means #GP.
    pub fn read(&self, msr: u32) -> Option<u64> {
        match msr {
            IA32_BIOS_SIGN_ID | MSR_SMI_COUNT => Some(0),
            _ => None,
        }
    }

    /// WRMSR: `false` means #GP.
    pub fn write(&self, msr: u32, _value: u64) -> bool {
        matches!(msr, IA32_BIOS_SIGN_ID)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_table_and_refuses_the_rest() {
        let p = MsrPolicy::new(false);
        assert_eq!(p.read(IA32_BIOS_SIGN_ID), Some(0));
        assert!(p.write(IA32_BIOS_SIGN_ID, 0));
        assert_eq!(p.read(MSR_SMI_COUNT), Some(0));
        assert!(!p.write(MSR_SMI_COUNT, 1), "read-only");
        assert_eq!(p.read(0x4000_0000), None);
        assert_eq!(p.read(0xc001_0114), None);
        for msr in [IA32_BIOS_SIGN_ID, MSR_SMI_COUNT] {
            assert!(
                p.user_msrs().iter().any(|r| r.contains(&msr)),
                "{msr:#x} routed here"
            );
        }
        assert!(!p.user_msrs().iter().any(|r| r.contains(&0x4000_0000)));
        assert!(MsrPolicy::new(true).user_msrs().contains(&HYPERV_MSRS));
    }
}
