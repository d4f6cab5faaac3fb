//! The `kvm` backend of the processor abstraction ([`virt`]): hardware virtualization through
//! `/dev/kvm`.
//!
//! # Architecture
//! - **Split irqchip** (`KVM_CAP_SPLIT_IRQCHIP`): each vCPU's local APIC runs in the kernel; the
//!   PIC, IOAPIC and PIT are the machine's own devices in user space, the same ones the `emu`
//!   backend uses. IOAPIC messages arrive through [`virt::Partition::request_interrupt`] and
//!   become `KVM_SIGNAL_MSI`. The PIC's INTR line ([`virt::Partition::set_extint`]) is injected
//!   into VP 0 with `KVM_INTERRUPT` when KVM says it can take an interrupt, otherwise the vCPU
//!   asks for an interrupt-window exit.
//! - **EOI of level-triggered interrupts**: with a split irqchip KVM exits to user space
//!   (`KVM_EXIT_IOAPIC_EOI`) only for vectors that appear as level-triggered MSI routes among
//!   the reserved IOAPIC routes. The partition therefore keeps a small routing table of the
//!   level-triggered messages it has sent ([`partition`]), so the machine's IOAPIC sees every
//!   EOI it needs to clear remote IRR.
//! - **MSRs**: KVM handles the architectural MSRs. The ranges in
//!   [`virt::PartitionConfig::user_msrs`] are denied by an MSR filter, and unknown MSRs are
//!   reported too (`KVM_CAP_X86_USER_SPACE_MSR`), so both reach the machine's
//!   [`virt::ExitHandler`].
//! - **Stopping**: [`virt::Partition::stop`] sets a flag and sends each vCPU thread a signal
//!   whose handler sets `kvm_run.immediate_exit` ([`kick`]), so a vCPU leaves `KVM_RUN` whether
//!   it was inside it, halted in it, or about to enter it.
//! - **Emulation failures** (`KVM_EXIT_INTERNAL_ERROR`) end the run with a backend error that
//!   carries the instruction bytes, except `int3`, which the backend completes itself
//!   (RIP += 1, #BP injected): some KVM instruction emulators cannot execute it.
//! - **Self-check** ([`selfcheck`]): a tiny guest goes from CPL0 to CPL3 with `iretq` and comes
//!   back with `syscall`. Hosts where that round trip does not work cannot run an operating
//!   system's user space, whatever else works.
//!
//! # Guest-physical addresses this backend claims
//! Intel VMX needs a 3-page TSS and an identity-map page for real-mode emulation:
//! [`TSS_ADDR`] and [`IDENTITY_MAP_ADDR`], just below the 16 MiB that end at 4 GiB, clear of
//! the IOAPIC, HPET, LAPIC and firmware ranges of the machine's memory map.
//!
//! All `unsafe` code of the backend is here: ioctls on raw descriptors, the shared `kvm_run`
//! page and the kick signal handler.

#![expect(
    unsafe_code,
    reason = "KVM ioctls, the shared kvm_run page and the kick signal handler"
)]

mod convert;
pub mod kick;
mod partition;
pub mod selfcheck;
mod vcpu;

use std::sync::Arc;

use kvm_ioctls::Kvm;
use virt::CpuidTable;
use virt::Hypervisor;
use virt::Partition;
use virt::PartitionConfig;
use virt::VirtError;

pub use partition::KvmPartition;
pub use vcpu::KvmProcessor;

/// Guest-physical address of the 3-page TSS Intel VMX uses for real-mode emulation.
pub const TSS_ADDR: u64 = 0xfeff_d000;
/// Guest-physical address of the identity-map page table Intel VMX uses without EPT
/// unrestricted guest.
pub const IDENTITY_MAP_ADDR: u64 = 0xfeff_c000;
/// IOAPIC pins reserved for routes in split-irqchip mode (one per pin of the machine's IOAPIC).
pub const IOAPIC_ROUTES: u32 = 24;

/// The KVM hypervisor, `/dev/kvm` opened.
pub struct KvmHypervisor {
    kvm: Arc<Kvm>,
}

impl std::fmt::Debug for KvmHypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmHypervisor").finish_non_exhaustive()
    }
}

pub(crate) fn unavailable(reason: impl Into<String>) -> VirtError {
    VirtError::Unavailable {
        backend: "kvm",
        reason: reason.into(),
    }
}

pub(crate) fn host_error(operation: &'static str, e: kvm_ioctls::Error) -> VirtError {
    VirtError::Host {
        operation,
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}

impl KvmHypervisor {
    /// Opens `/dev/kvm` and checks the capabilities this backend needs.
    pub fn new() -> Result<Self, VirtError> {
        Self::with_path("/dev/kvm")
    }

    /// Opens the KVM device at `path`.
    pub fn with_path(path: &str) -> Result<Self, VirtError> {
        let cpath = std::ffi::CString::new(path).map_err(|_| unavailable("bad device path"))?;
        let kvm = Kvm::new_with_path(&cpath).map_err(|e| {
            unavailable(format!(
                "cannot open {path}: {}",
                std::io::Error::from_raw_os_error(e.errno())
            ))
        })?;
        let api = kvm.get_api_version();
        if api != 12 {
            return Err(unavailable(format!("KVM API version {api}, expected 12")));
        }
        use kvm_ioctls::Cap;
        for (cap, name) in [
            (Cap::SplitIrqchip, "KVM_CAP_SPLIT_IRQCHIP"),
            (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
            (Cap::X86UserSpaceMsr, "KVM_CAP_X86_USER_SPACE_MSR"),
            (Cap::X86MsrFilter, "KVM_CAP_X86_MSR_FILTER"),
            (Cap::SignalMsi, "KVM_CAP_SIGNAL_MSI"),
            (Cap::IrqRouting, "KVM_CAP_IRQ_ROUTING"),
            (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(unavailable(format!("{name} is not supported")));
            }
        }
        Ok(Self { kvm: Arc::new(kvm) })
    }
}

impl Hypervisor for KvmHypervisor {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn check(&self) -> Result<(), VirtError> {
        selfcheck::run(self, selfcheck::DEFAULT_TIMEOUT)
    }

    fn new_partition(&self, config: PartitionConfig) -> Result<Arc<dyn Partition>, VirtError> {
        Ok(Arc::new(KvmPartition::new(self.kvm.clone(), config)?))
    }

    fn supported_cpuid(&self) -> Result<CpuidTable, VirtError> {
        let cpuid = self
            .kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| host_error("KVM_GET_SUPPORTED_CPUID", e))?;
        Ok(convert::cpuid_from_kvm(&cpuid))
    }
}
