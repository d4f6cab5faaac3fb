//! The test matrix: what one cell is, how it is named, what it needs.
//!
//! A cell is one point of backend x firmware x storage x guest OS. Its name is the stable
//! handle that nextest filters and CI routing use:
//!
//! ```text
//! {backend}_[{paravisor}_]{firmware}_[{storage}_]{os}
//! qemu_linux_direct_debian12_k61      agarvmm_pcat_ide_debian12
//! qemu_uefi_ide_debian12              agarvmm_openhcl_uefi_vmbus_debian12
//! agarvmm_igvm_linux_direct_debian12_k61
//! ```
//!
//! The full test name is `{cell}::{fn}`, so `-E 'test(/^qemu_/)'`, `test(/_pcat_/)` or
//! `test(/debian12_k612::/)` select by backend, firmware or OS.

use serde::Serialize;

/// The VMM that runs a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// agar's own VMM (`agar-vmm`), driven through its OpenVMM-style CLI.
    AgarVmm,
    /// `qemu-system-x86_64`, the reference peer.
    Qemu,
}

impl BackendKind {
    /// All backends, in matrix order.
    pub const ALL: [BackendKind; 2] = [BackendKind::AgarVmm, BackendKind::Qemu];

    /// The name prefix (`agarvmm`, `qemu`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::AgarVmm => "agarvmm",
            Self::Qemu => "qemu",
        }
    }
}

/// A paravisor layer between the VMM and the guest firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Paravisor {
    /// The guest is loaded from an IGVM file (`--igvm`), e.g. an OpenHCL Linux-direct build.
    Igvm,
    /// OpenHCL in VTL2 (`--igvm --vtl2 --hv`) hosting the firmware in VTL0.
    OpenHcl,
}

impl Paravisor {
    /// The name token.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Igvm => "igvm",
            Self::OpenHcl => "openhcl",
        }
    }
}

/// How the guest starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Firmware {
    /// Linux boot protocol: kernel + initrd, no firmware.
    LinuxDirect,
    /// BIOS (SeaBIOS), Gen1-like.
    Pcat,
    /// UEFI (OVMF on QEMU), Gen2-like.
    Uefi,
}

impl Firmware {
    /// The name token.
    pub const fn name(self) -> &'static str {
        match self {
            Self::LinuxDirect => "linux_direct",
            Self::Pcat => "pcat",
            Self::Uefi => "uefi",
        }
    }
}

/// The controller the boot disk hangs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// Emulated IDE (PIIX).
    Ide,
    /// VMBus SCSI (storvsp).
    Vmbus,
}

impl Storage {
    /// The name token.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ide => "ide",
            Self::Vmbus => "vmbus",
        }
    }
}

/// The guest operating system image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestOs {
    /// Debian 12 disk image (issue 7's recipe), booted by firmware from a disk.
    Debian12,
    /// Debian 12 cloud kernel 6.1 with the agar initramfs (Linux direct).
    Debian12K61,
    /// Debian 12 backports cloud kernel 6.12 with the agar initramfs (Linux direct).
    Debian12K612,
}

impl GuestOs {
    /// The name token.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Debian12 => "debian12",
            Self::Debian12K61 => "debian12_k61",
            Self::Debian12K612 => "debian12_k612",
        }
    }

    /// Kernel and initrd artifact ids, for a guest booted without a disk.
    pub const fn kernel_initrd(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::Debian12 => None,
            Self::Debian12K61 => Some(("debian12_k61_kernel", "debian12_k61_initrd")),
            Self::Debian12K612 => Some(("debian12_k612_kernel", "debian12_k612_initrd")),
        }
    }

    /// Kernel and initrd artifact ids a boot disk is assembled from at test time (with the
    /// agent appended), for a guest booted by firmware.
    pub const fn medium_inputs(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::Debian12 => Some(("debian12_k61_kernel", "debian12_k61_initrd")),
            Self::Debian12K61 | Self::Debian12K612 => None,
        }
    }
}

/// One point of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Cell {
    /// The VMM.
    pub backend: BackendKind,
    /// A paravisor layer, if any.
    pub paravisor: Option<Paravisor>,
    /// Firmware or direct boot.
    pub firmware: Firmware,
    /// Boot disk controller (`None` for Linux direct).
    pub storage: Option<Storage>,
    /// Guest image.
    pub os: GuestOs,
}

impl Cell {
    /// The cell's name, the first part of every test name in it.
    pub fn name(&self) -> String {
        let mut parts = vec![self.backend.name()];
        if let Some(p) = self.paravisor {
            parts.push(p.name());
        }
        parts.push(self.firmware.name());
        if let Some(s) = self.storage {
            parts.push(s.name());
        }
        parts.push(self.os.name());
        parts.join("_")
    }

    /// The cell without its backend (`linux_direct_debian12_k61`): the report's column.
    pub fn config_name(&self) -> String {
        let n = self.name();
        n[self.backend.name().len() + 1..].to_string()
    }

    /// Artifact ids every test in this cell needs.
    pub fn artifacts(&self) -> Vec<&'static str> {
        let mut a = Vec::new();
        if let Some((k, i)) = self.os.kernel_initrd().or(self.os.medium_inputs()) {
            a.push(k);
            a.push(i);
        }
        match self.firmware {
            Firmware::LinuxDirect => {}
            Firmware::Pcat => a.push("seabios_bios"),
            Firmware::Uefi => a.push("ovmf_fd"),
        }
        if self.paravisor.is_some() {
            a.push("openhcl_x64_igvm");
        }
        a
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_pattern() {
        let c = Cell {
            backend: BackendKind::Qemu,
            paravisor: None,
            firmware: Firmware::LinuxDirect,
            storage: None,
            os: GuestOs::Debian12K61,
        };
        assert_eq!(c.name(), "qemu_linux_direct_debian12_k61");
        assert_eq!(c.config_name(), "linux_direct_debian12_k61");
        let c = Cell {
            backend: BackendKind::AgarVmm,
            paravisor: Some(Paravisor::OpenHcl),
            firmware: Firmware::Uefi,
            storage: Some(Storage::Vmbus),
            os: GuestOs::Debian12,
        };
        assert_eq!(c.name(), "agarvmm_openhcl_uefi_vmbus_debian12");
        assert_eq!(
            c.artifacts(),
            [
                "debian12_k61_kernel",
                "debian12_k61_initrd",
                "ovmf_fd",
                "openhcl_x64_igvm"
            ]
        );
    }
}
