//! Choosing the CPU backend (`--hypervisor kvm|emu|auto`).
//!
//! `auto` uses KVM when `/dev/kvm` opens and its self-check passes (a tiny guest makes a CPL3
//! -> CPL0 system call round trip, see `virt_kvm::selfcheck`), and `emu` otherwise, saying
//! why. `kvm` with a guest that needs user mode (a Linux guest) runs the same self-check and
//! refuses with its reason instead of starting a guest that cannot get to user space.

use std::sync::Arc;

use virt::Hypervisor;
use virt::VirtError;
use vm_config::HypervisorKind;

/// The chosen backend and why.
pub struct Selected {
    /// The backend.
    pub hypervisor: Arc<dyn Hypervisor>,
    /// One line on how it was chosen.
    pub why: String,
}

/// No backend can run the guest.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// KVM was asked for and cannot run this guest.
    #[error("kvm cannot run this guest")]
    Kvm(#[source] VirtError),
    /// The software CPU was asked for and is not available.
    #[error("cannot use emu")]
    Emu(#[source] VirtError),
    /// `auto` found neither backend usable.
    #[error("no usable CPU backend (kvm: {kvm})")]
    NoBackend {
        /// Why KVM was not used.
        kvm: String,
        /// Why emu cannot be used.
        #[source]
        emu: VirtError,
    },
}

/// The `emu` backend: agar's own x86-64 CPU.
pub fn emu() -> Result<Arc<dyn Hypervisor>, VirtError> {
    Ok(Arc::new(Emu(cpu_emu::EmuHypervisor)))
}

/// `cpu_emu::EmuHypervisor` with its supported CPUID reported through the trait (the crate
/// exports the table as a function).
struct Emu(cpu_emu::EmuHypervisor);

impl Hypervisor for Emu {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn check(&self) -> Result<(), VirtError> {
        self.0.check()
    }

    fn new_partition(
        &self,
        config: virt::PartitionConfig,
    ) -> Result<Arc<dyn virt::Partition>, VirtError> {
        self.0.new_partition(config)
    }

    fn supported_cpuid(&self) -> Result<virt::CpuidTable, VirtError> {
        // The machine rebuilds topology and clock leaves; one processor is enough here.
        Ok(cpu_emu::supported_cpuid(1))
    }
}

/// The `kvm` backend, `/dev/kvm` opened and its capabilities checked.
pub fn kvm() -> Result<Arc<dyn Hypervisor>, VirtError> {
    Ok(Arc::new(virt_kvm::KvmHypervisor::new()?))
}

/// Picks the backend for `kind`. `needs_user_mode`: the guest runs an OS with a user space
/// (anything but the kernel-mode test payloads).
pub fn select(kind: HypervisorKind, needs_user_mode: bool) -> Result<Selected, SelectError> {
    match kind {
        HypervisorKind::Emu => Ok(Selected {
            hypervisor: emu().map_err(SelectError::Emu)?,
            why: "emu (requested)".into(),
        }),
        HypervisorKind::Kvm => {
            let hv = kvm().map_err(SelectError::Kvm)?;
            if needs_user_mode {
                hv.check().map_err(SelectError::Kvm)?;
                Ok(Selected {
                    hypervisor: hv,
                    why: "kvm (requested; self-check passed)".into(),
                })
            } else {
                Ok(Selected {
                    hypervisor: hv,
                    why: "kvm (requested)".into(),
                })
            }
        }
        HypervisorKind::Auto => {
            let reason = match kvm() {
                Ok(hv) => match hv.check() {
                    Ok(()) => {
                        return Ok(Selected {
                            hypervisor: hv,
                            why: "kvm (auto: self-check passed)".into(),
                        });
                    }
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            let hypervisor = emu().map_err(|emu| SelectError::NoBackend {
                kvm: reason.clone(),
                emu,
            })?;
            Ok(Selected {
                hypervisor,
                why: format!("emu (auto: {reason})"),
            })
        }
    }
}
