//! Binary layouts of the fixed tables (ACPI 6.5 chapter 5).

/// Size of the common system description table header.
pub const HEADER_LEN: usize = 36;
/// FADT length for revision 6.
pub const FADT_LEN: usize = 276;
/// FACS length.
pub const FACS_LEN: usize = 64;
/// RSDP length for revision 2.
pub const RSDP_LEN: usize = 36;

/// OEM identification written into every table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oem {
    /// OEM ID (6 bytes).
    pub id: [u8; 6],
    /// OEM table ID (8 bytes).
    pub table_id: [u8; 8],
    /// OEM revision.
    pub revision: u32,
}

impl Default for Oem {
    fn default() -> Self {
        Self {
            id: *b"AGAR  ",
            table_id: *b"AGARVMM ",
            revision: 1,
        }
    }
}

/// Creator ID and revision.
const CREATOR_ID: [u8; 4] = *b"AGAR";
const CREATOR_REVISION: u32 = 1;

/// Starts a table: the header with the length and checksum to be filled by [`finish`].
pub fn header(signature: &[u8; 4], revision: u8, oem: &Oem) -> Vec<u8> {
    let mut t = Vec::with_capacity(256);
    t.extend_from_slice(signature);
    t.extend_from_slice(&0u32.to_le_bytes());
    t.push(revision);
    t.push(0);
    t.extend_from_slice(&oem.id);
    t.extend_from_slice(&oem.table_id);
    t.extend_from_slice(&oem.revision.to_le_bytes());
    t.extend_from_slice(&CREATOR_ID);
    t.extend_from_slice(&CREATOR_REVISION.to_le_bytes());
    t
}

/// Writes the table's length field (checksums come last, after pointers are patched).
pub fn set_length(table: &mut [u8]) {
    let len = u32::try_from(table.len()).unwrap_or(u32::MAX);
    table[4..8].copy_from_slice(&len.to_le_bytes());
}

/// The byte that makes `bytes` sum to zero once stored at `at` (whose current value is
/// ignored).
pub fn checksum(bytes: &[u8], at: usize) -> u8 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != at)
        .fold(0u8, |acc, (_, &b)| acc.wrapping_add(b));
    0u8.wrapping_sub(sum)
}

/// Generic Address Structure (12 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gas {
    /// 0 = system memory, 1 = system I/O.
    pub space_id: u8,
    /// Register width in bits.
    pub bit_width: u8,
    /// Bit offset.
    pub bit_offset: u8,
    /// Access size: 0 undefined, 1 byte, 2 word, 3 dword, 4 qword.
    pub access_size: u8,
    /// Address.
    pub address: u64,
}

impl Gas {
    /// A register in I/O space.
    pub fn io(port: u16, bit_width: u8, access_size: u8) -> Self {
        Self {
            space_id: 1,
            bit_width,
            bit_offset: 0,
            access_size,
            address: u64::from(port),
        }
    }

    /// Appends the 12-byte encoding.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[
            self.space_id,
            self.bit_width,
            self.bit_offset,
            self.access_size,
        ]);
        out.extend_from_slice(&self.address.to_le_bytes());
    }
}

/// FADT field offsets the builder patches.
pub mod fadt {
    /// FIRMWARE_CTRL (32-bit FACS address).
    pub const FIRMWARE_CTRL: usize = 36;
    /// DSDT (32-bit).
    pub const DSDT: usize = 40;
    /// X_FIRMWARE_CTRL (64-bit).
    pub const X_FIRMWARE_CTRL: usize = 132;
    /// X_DSDT (64-bit).
    pub const X_DSDT: usize = 140;

    /// IAPC_BOOT_ARCH: legacy devices on the LPC/ISA bus.
    pub const BOOT_LEGACY_DEVICES: u16 = 1 << 0;
    /// IAPC_BOOT_ARCH: an 8042 is present.
    pub const BOOT_8042: u16 = 1 << 1;
    /// IAPC_BOOT_ARCH: no VGA hardware.
    pub const BOOT_VGA_NOT_PRESENT: u16 = 1 << 2;

    /// Flags: WBINVD works.
    pub const FLAG_WBINVD: u32 = 1 << 0;
    /// Flags: C1 supported on all processors.
    pub const FLAG_PROC_C1: u32 = 1 << 2;
    /// Flags: no fixed-feature sleep button.
    pub const FLAG_SLP_BUTTON: u32 = 1 << 5;
    /// Flags: RTC wake status is not in the fixed register space.
    pub const FLAG_FIX_RTC: u32 = 1 << 6;
    /// Flags: the reset register is supported.
    pub const FLAG_RESET_REG_SUP: u32 = 1 << 10;
}
