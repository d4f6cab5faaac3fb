//! Image loaders: turn a guest image (today a Linux kernel) into a [`LoadPlan`] that says what
//! to put where in guest memory and how the boot processor starts.
//!
//! # Architecture
//! A loader *describes* a load; it never touches guest memory or a processor. The machine
//! (`vmm_core`) applies the plan: it copies each [`Chunk`] into guest memory and sets the boot
//! processor's registers. Tests inspect plans directly, so every header check is unit-tested
//! without a VM.
//!
//! - [`linux`]: the x86 Linux boot protocol (Documentation/arch/x86/boot.rst): a bzImage whose
//!   payload is decompressed on the host (gzip, xz, lz4 legacy, zstd) or a plain ELF `vmlinux`,
//!   loaded at its physical addresses and entered at `startup_64` in 64-bit mode with page
//!   tables and a GDT the loader builds; initrd, command line, and the zero page with e820.
//! - [`x86`]: the long-mode entry state (identity page tables, flat GDT, registers) shared by
//!   loaders that enter 64-bit code directly.
//!
//! Kernel and initrd files are user input: every header field is bounds-checked with checked
//! arithmetic and a malformed file becomes a [`LoadError`], never a panic.

use std::ops::Range;
use std::sync::Arc;

pub mod linux;
pub mod x86;

/// A load failed; the message names the field or the part of the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is not in a format this loader knows.
    #[error("{what}: not a bzImage or an ELF vmlinux")]
    UnknownFormat {
        /// Which file.
        what: &'static str,
    },
    /// A header field or structure is inconsistent with the file.
    #[error("{what}: malformed: {detail}")]
    Malformed {
        /// Which file or structure.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The image needs something this loader does not implement.
    #[error("{what}: unsupported: {detail}")]
    Unsupported {
        /// Which file or structure.
        what: &'static str,
        /// What is missing.
        detail: String,
    },
    /// The compressed kernel payload does not decompress.
    #[error("kernel payload ({format}) does not decompress: {detail}")]
    Decompress {
        /// Compression format.
        format: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// The image does not fit the guest's memory.
    #[error("{what} does not fit in guest memory: {detail}")]
    DoesNotFit {
        /// What was being placed.
        what: &'static str,
        /// Where it would go and why it fails.
        detail: String,
    },
    /// The kernel command line is longer than the kernel accepts.
    #[error("kernel command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong {
        /// Length in bytes (without the terminating NUL).
        len: usize,
        /// The kernel's limit.
        max: usize,
    },
}

impl LoadError {
    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            detail: detail.into(),
        }
    }
}

/// Type of an e820 memory-map entry (ACPI address range types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    /// Usable RAM.
    Ram = 1,
    /// Reserved: not usable by the OS.
    Reserved = 2,
    /// ACPI tables (reclaimable after the OS read them).
    Acpi = 3,
    /// ACPI non-volatile storage.
    Nvs = 4,
}

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// First guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range is.
    pub kind: E820Type,
}

/// Bytes to place at a guest-physical address.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Where the first byte goes.
    pub gpa: u64,
    /// The buffer holding the bytes (shared, so a big decompressed kernel is not copied per
    /// segment).
    pub source: Arc<Vec<u8>>,
    /// The bytes of `source` to copy.
    pub range: Range<usize>,
    /// Zero bytes that follow the copied ones (an ELF segment's `.bss`).
    pub zero_tail: u64,
    /// What this is, for logs and errors.
    pub what: &'static str,
}

impl Chunk {
    /// A chunk holding all of `bytes`.
    pub fn new(gpa: u64, bytes: Vec<u8>, what: &'static str) -> Self {
        let len = bytes.len();
        Self {
            gpa,
            source: Arc::new(bytes),
            range: 0..len,
            zero_tail: 0,
            what,
        }
    }

    /// The bytes to copy.
    pub fn bytes(&self) -> &[u8] {
        self.source.get(self.range.clone()).unwrap_or_default()
    }

    /// Total guest bytes covered (copied plus zeroed).
    pub fn len(&self) -> u64 {
        self.range.len() as u64 + self.zero_tail
    }

    /// Whether the chunk covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The guest-physical range covered.
    pub fn gpa_range(&self) -> Range<u64> {
        self.gpa..self.gpa.saturating_add(self.len())
    }
}

/// Everything a loader wants done before the boot processor's first instruction.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Memory contents, applied in order.
    pub chunks: Vec<Chunk>,
    /// The boot processor's general-purpose registers.
    pub registers: virt::Registers,
    /// The boot processor's segment and control registers. The machine keeps the backend's
    /// own `apic_base`.
    pub special_registers: virt::SpecialRegisters,
    /// The memory map the guest was told about (already written into the image's tables).
    pub e820: Vec<E820Entry>,
    /// One line describing the load, for the VMM log.
    pub summary: String,
}

/// Reads a little-endian integer from `bytes` at `offset`, failing when the file is too short.
pub(crate) fn read_le<const N: usize>(
    bytes: &[u8],
    offset: usize,
    what: &'static str,
) -> Result<[u8; N], LoadError> {
    offset
        .checked_add(N)
        .and_then(|end| bytes.get(offset..end))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or_else(|| LoadError::malformed(what, format!("truncated at offset {offset:#x}")))
}

pub(crate) fn le_u16(bytes: &[u8], offset: usize, what: &'static str) -> Result<u16, LoadError> {
    read_le::<2>(bytes, offset, what).map(u16::from_le_bytes)
}

pub(crate) fn le_u32(bytes: &[u8], offset: usize, what: &'static str) -> Result<u32, LoadError> {
    read_le::<4>(bytes, offset, what).map(u32::from_le_bytes)
}

pub(crate) fn le_u64(bytes: &[u8], offset: usize, what: &'static str) -> Result<u64, LoadError> {
    read_le::<8>(bytes, offset, what).map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reads_are_errors() {
        let b = [1u8, 2, 3];
        assert_eq!(le_u16(&b, 1, "t").unwrap(), 0x0302);
        assert!(le_u32(&b, 0, "t").is_err());
        assert!(le_u64(&b, usize::MAX, "t").is_err());
    }

    #[test]
    fn chunk_ranges() {
        let mut c = Chunk::new(0x1000, vec![1, 2, 3], "t");
        c.zero_tail = 5;
        assert_eq!(c.len(), 8);
        assert_eq!(c.gpa_range(), 0x1000..0x1008);
        assert_eq!(c.bytes(), &[1, 2, 3]);
    }
}
