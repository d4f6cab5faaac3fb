//! Typed artifact ids: one line per artifact, each with the tags that say what it is.
//!
//! A handle such as [`DEBIAN12_K61_KERNEL`] is an [`Artifact<Kernel>`](Artifact): code that
//! wants a kernel can take `Artifact<Kernel>` and the compiler refuses an initrd. Every handle
//! derefs to its [`ArtifactId`], the untyped record (`name()`, `kind()`, `os()`, `arch()`) the
//! resolver and the manifest work with.
//!
//! The snake_case [`ArtifactId::name`] is the stable key: it names the manifest and lock
//! entries, the `$AGAR_ARTIFACTS_DIR/<name>` override and the JSON the test framework prints
//! for `--list-required-artifacts`.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

/// What an artifact is, as far as a VM is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArtifactKind {
    /// A Linux kernel the VMM loads directly (bzImage).
    Kernel,
    /// An initial ramdisk (cpio newc) that goes with a kernel.
    Initrd,
    /// A legacy BIOS image (PCAT boot).
    BiosFirmware,
    /// A UEFI firmware volume (code, variables, or both in one image).
    UefiFirmware,
    /// A bootable disk image (raw, VHD, VHDX).
    DiskImage,
    /// A bootable CD/DVD image (ISO 9660).
    OpticalImage,
    /// An IGVM file (paravisor).
    Igvm,
}

impl ArtifactKind {
    /// The kind as a lowercase word, as `agar artifacts list` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Initrd => "initrd",
            Self::BiosFirmware => "bios",
            Self::UefiFirmware => "uefi",
            Self::DiskImage => "disk",
            Self::OpticalImage => "optical",
            Self::Igvm => "igvm",
        }
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The guest operating system an artifact belongs to, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Os {
    /// Not tied to a guest OS (firmware).
    Any,
    /// Debian 12 "bookworm".
    Debian12,
}

impl Os {
    /// The OS as a short lowercase word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::Debian12 => "debian12",
        }
    }
}

impl fmt::Display for Os {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The guest architecture an artifact runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    /// x86-64.
    X86_64,
}

impl Arch {
    /// The architecture as Rust spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One artifact, untyped: its stable name and its tags.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ArtifactId {
    name: &'static str,
    kind: ArtifactKind,
    os: Os,
    arch: Arch,
    summary: &'static str,
}

impl ArtifactId {
    /// The snake_case name, e.g. `debian12_k61_kernel`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// What it is.
    pub fn kind(&self) -> ArtifactKind {
        self.kind
    }

    /// Which guest OS it belongs to.
    pub fn os(&self) -> Os {
        self.os
    }

    /// Which architecture it is for.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// One line describing it (its doc comment).
    pub fn summary(&self) -> &'static str {
        self.summary.trim()
    }

    /// The id with this name, if the crate declares one.
    pub fn by_name(name: &str) -> Option<&'static ArtifactId> {
        ALL.iter().copied().find(|id| id.name == name)
    }
}

impl fmt::Display for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl AsRef<ArtifactId> for ArtifactId {
    fn as_ref(&self) -> &ArtifactId {
        self
    }
}

/// Type-level kinds for [`Artifact`] handles.
pub mod kind {
    use super::ArtifactKind;

    /// A type-level [`ArtifactKind`].
    pub trait Kind {
        /// The runtime kind this type stands for.
        const KIND: ArtifactKind;
    }

    macro_rules! kinds {
        ($($(#[$doc:meta])* $ty:ident => $kind:ident;)*) => {$(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
            pub enum $ty {}
            impl Kind for $ty {
                const KIND: ArtifactKind = ArtifactKind::$kind;
            }
        )*};
    }

    kinds! {
        /// A kernel.
        Kernel => Kernel;
        /// An initrd.
        Initrd => Initrd;
        /// A BIOS image.
        BiosFirmware => BiosFirmware;
        /// A UEFI firmware image.
        UefiFirmware => UefiFirmware;
        /// A disk image.
        DiskImage => DiskImage;
        /// A CD/DVD image.
        OpticalImage => OpticalImage;
        /// An IGVM file.
        Igvm => Igvm;
    }
}

pub use kind::BiosFirmware;
pub use kind::DiskImage;
pub use kind::Igvm;
pub use kind::Initrd;
pub use kind::Kernel;
pub use kind::OpticalImage;
pub use kind::UefiFirmware;

/// A typed handle: an [`ArtifactId`] whose kind is known to the compiler.
pub struct Artifact<K: kind::Kind> {
    id: &'static ArtifactId,
    _kind: PhantomData<fn() -> K>,
}

impl<K: kind::Kind> Artifact<K> {
    /// The untyped id.
    pub const fn id(self) -> &'static ArtifactId {
        self.id
    }
}

impl<K: kind::Kind> Clone for Artifact<K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K: kind::Kind> Copy for Artifact<K> {}

impl<K: kind::Kind> PartialEq for Artifact<K> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<K: kind::Kind> Eq for Artifact<K> {}

impl<K: kind::Kind> fmt::Debug for Artifact<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Artifact({})", self.id.name)
    }
}

impl<K: kind::Kind> fmt::Display for Artifact<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id.name)
    }
}

impl<K: kind::Kind> Deref for Artifact<K> {
    type Target = ArtifactId;
    fn deref(&self) -> &ArtifactId {
        self.id
    }
}

impl<K: kind::Kind> AsRef<ArtifactId> for Artifact<K> {
    fn as_ref(&self) -> &ArtifactId {
        self.id
    }
}

/// Declares typed artifact handles, one line each, and the [`ALL`] list.
macro_rules! declare_artifacts {
    ($($(#[doc = $doc:literal])+ $ident:ident: $kind:ident, $os:ident, $arch:ident = $name:literal;)*) => {
        $(
            $(#[doc = $doc])+
            pub const $ident: Artifact<kind::$kind> = Artifact {
                id: &ArtifactId {
                    name: $name,
                    kind: <kind::$kind as kind::Kind>::KIND,
                    os: Os::$os,
                    arch: Arch::$arch,
                    summary: concat!($($doc),+),
                },
                _kind: PhantomData,
            };
        )*

        /// Every artifact this crate declares, in declaration order.
        pub const ALL: &[&ArtifactId] = &[$($ident.id),*];

        #[cfg(test)]
        const DECLARED_IDENTS: &[(&str, &str)] = &[$((stringify!($ident), $name)),*];
    };
}

declare_artifacts! {
    /// Debian 12 cloud kernel 6.1 (bzImage), from `linux-image-cloud-amd64`.
    DEBIAN12_K61_KERNEL: Kernel, Debian12, X86_64 = "debian12_k61_kernel";
    /// The agar initramfs for the 6.1 kernel: busybox-static, `/init`, its modules.
    DEBIAN12_K61_INITRD: Initrd, Debian12, X86_64 = "debian12_k61_initrd";
    /// Debian 12 cloud kernel 6.12 (bzImage), from `linux-image-6.12-cloud-amd64`.
    DEBIAN12_K612_KERNEL: Kernel, Debian12, X86_64 = "debian12_k612_kernel";
    /// The agar initramfs for the 6.12 kernel: busybox-static, `/init`, its modules.
    DEBIAN12_K612_INITRD: Initrd, Debian12, X86_64 = "debian12_k612_initrd";
    /// SeaBIOS `bios-256k.bin`, from Debian's `seabios`.
    SEABIOS_BIOS: BiosFirmware, Any, X86_64 = "seabios_bios";
    /// OVMF `OVMF_CODE.fd` (2 MiB flash layout, no secure boot), from Debian's `ovmf`.
    OVMF_CODE: UefiFirmware, Any, X86_64 = "ovmf_code";
    /// OVMF `OVMF_VARS.fd`, the empty variable store that goes with [`OVMF_CODE`].
    OVMF_VARS: UefiFirmware, Any, X86_64 = "ovmf_vars";
    /// OVMF `OVMF.fd`: code and variables in one 2 MiB image, for VMMs without pflash.
    OVMF_FD: UefiFirmware, Any, X86_64 = "ovmf_fd";
    /// Debian 12, 6.1 kernel + agar initramfs on a BIOS-bootable MBR disk (VHD, syslinux),
    /// no agent; boots with `console=ttyS0 agar.poweroff` (IDE, `pcat(ide(debian12))`).
    DEBIAN12_K61_BIOS_VHD: DiskImage, Debian12, X86_64 = "debian12_k61_bios_vhd";
    /// Debian 12, 6.1 kernel + agar initramfs on a BIOS-bootable ISO (isolinux, El Torito),
    /// no agent; boots with `console=ttyS0 agar.poweroff` from a CD/DVD drive.
    DEBIAN12_K61_BIOS_ISO: OpticalImage, Debian12, X86_64 = "debian12_k61_bios_iso";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_lowercase_const_names() {
        for (ident, name) in DECLARED_IDENTS {
            assert_eq!(ident.to_ascii_lowercase(), *name);
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = ALL.iter().map(|id| id.name()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn typed_handles_carry_their_kind_and_tags() {
        assert_eq!(DEBIAN12_K61_KERNEL.kind(), ArtifactKind::Kernel);
        assert_eq!(DEBIAN12_K612_INITRD.kind(), ArtifactKind::Initrd);
        assert_eq!(SEABIOS_BIOS.kind(), ArtifactKind::BiosFirmware);
        assert_eq!(OVMF_CODE.kind(), ArtifactKind::UefiFirmware);
        assert_eq!(DEBIAN12_K61_BIOS_VHD.kind(), ArtifactKind::DiskImage);
        assert_eq!(DEBIAN12_K61_BIOS_ISO.kind(), ArtifactKind::OpticalImage);
        assert_eq!(DEBIAN12_K61_BIOS_VHD.os(), Os::Debian12);
        assert_eq!(DEBIAN12_K61_BIOS_ISO.kind().as_str(), "optical");
        assert_eq!(DEBIAN12_K61_KERNEL.os(), Os::Debian12);
        assert_eq!(SEABIOS_BIOS.os(), Os::Any);
        assert_eq!(DEBIAN12_K61_INITRD.name(), "debian12_k61_initrd");
        assert!(DEBIAN12_K61_KERNEL.summary().contains("6.1"));
    }

    #[test]
    fn by_name_finds_declared_ids_only() {
        assert_eq!(
            ArtifactId::by_name("debian12_k61_kernel"),
            Some(DEBIAN12_K61_KERNEL.id())
        );
        assert_eq!(ArtifactId::by_name("nope"), None);
    }
}
