//! What each backend can run today, and what the host offers.
//!
//! A cell a backend cannot run is never dropped from the list: it is listed as ignored,
//! with the reason, so `--include-ignored` (nextest: `--run-ignored all`) still runs it.
//! That is how the agar-vmm engineers try a cell before it is switched on here, and why
//! switching it on is one line in [`backend_support`].

use std::path::Path;

use serde::Serialize;

use crate::cell::BackendKind;
use crate::cell::Cell;
use crate::cell::Firmware;
use crate::cell::Storage;

/// A feature a test can require with `requires(...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Hardware-assisted KVM on the host (vmx/svm), usable for a full Linux guest.
    Kvm,
    /// More than one virtual processor.
    Smp,
    /// A network adapter.
    Nic,
    /// A graphics adapter.
    Gfx,
    /// The pvpanic device: a guest panic halts the VM with a crash reason.
    Pvpanic,
}

impl Capability {
    /// Every capability, as `requires(...)` spells them.
    pub const ALL: [Capability; 5] = [
        Capability::Kvm,
        Capability::Smp,
        Capability::Nic,
        Capability::Gfx,
        Capability::Pvpanic,
    ];

    /// The name used in `requires(...)`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Smp => "smp",
            Self::Nic => "nic",
            Self::Gfx => "gfx",
            Self::Pvpanic => "pvpanic",
        }
    }
}

/// Whether a backend runs something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// It does.
    Yes,
    /// Planned, not implemented yet: listed as ignored with this reason.
    NotYet(&'static str),
    /// Not possible with this backend: listed as ignored with this reason.
    Never(&'static str),
}

impl Support {
    /// The reason a cell is not run, if it is not.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Self::Yes => None,
            Self::NotYet(r) | Self::Never(r) => Some(r),
        }
    }
}

/// UEFI guests boot a disk assembled at test time; only BIOS media exist so far.
const NO_UEFI_MEDIUM: Support =
    Support::NotYet("no UEFI-bootable disk yet: the artifacts crate assembles BIOS media only");

/// The capability table: can `cell.backend` run `cell`?
pub fn backend_support(cell: &Cell) -> Support {
    use Support::*;
    match cell.backend {
        BackendKind::AgarVmm => {
            if cell.paravisor.is_some() {
                return NotYet("agar-vmm cannot load IGVM files or run VTL2 yet");
            }
            match (cell.firmware, cell.storage) {
                (Firmware::LinuxDirect, _) => Yes,
                (Firmware::Pcat, Some(Storage::Vmbus)) => {
                    NotYet("agar-vmm boots PCAT guests from IDE only (no VMBus beside SeaBIOS yet)")
                }
                (Firmware::Pcat, _) => Yes,
                (Firmware::Uefi, Some(Storage::Ide)) => {
                    Never("agar-vmm attaches IDE only to PCAT guests (--ide requires --pcat)")
                }
                (Firmware::Uefi, _) => NotYet("agar-vmm does not boot UEFI or offer VMBus yet"),
            }
        }
        BackendKind::Qemu => {
            if cell.paravisor.is_some() {
                return Never("QEMU 7.2 cannot load IGVM files or run VTL2");
            }
            match (cell.firmware, cell.storage) {
                (_, Some(Storage::Vmbus)) => Never("QEMU has no VMBus SCSI controller (storvsp)"),
                (Firmware::Uefi, _) => NO_UEFI_MEDIUM,
                _ => Yes,
            }
        }
    }
}

/// Does `backend` offer `cap`?
pub fn backend_has(backend: BackendKind, cap: Capability) -> Support {
    use Support::*;
    match (backend, cap) {
        (_, Capability::Kvm) => Yes,
        (_, Capability::Smp) => Yes,
        (_, Capability::Pvpanic) => Yes,
        (BackendKind::Qemu, Capability::Nic | Capability::Gfx) => Yes,
        (BackendKind::AgarVmm, Capability::Nic) => NotYet("agar-vmm has no NIC yet"),
        (BackendKind::AgarVmm, Capability::Gfx) => NotYet("agar-vmm has no graphics yet"),
    }
}

/// Does this host offer `cap` (for capabilities that depend on the host)?
pub fn host_has(cap: Capability) -> Result<(), String> {
    match cap {
        Capability::Kvm => hardware_kvm(),
        _ => Ok(()),
    }
}

/// `/dev/kvm` usable and backed by hardware virtualization (kvm_intel or kvm_amd), not a
/// software or nested implementation that cannot run a full Linux guest at speed.
pub fn hardware_kvm() -> Result<(), String> {
    let dev = Path::new("/dev/kvm");
    if !dev.exists() {
        return Err("requires kvm: /dev/kvm does not exist".into());
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        return Err(format!("requires kvm: cannot open /dev/kvm: {e}"));
    }
    if !Path::new("/sys/module/kvm_intel").exists() && !Path::new("/sys/module/kvm_amd").exists() {
        return Err(
            "requires kvm: /dev/kvm is not hardware-assisted (neither kvm_intel nor kvm_amd is loaded)"
                .into(),
        );
    }
    Ok(())
}
