//! Offsets and constants of the x86 Linux boot protocol (Documentation/arch/x86/boot.rst) and
//! the zero page (`struct boot_params`, Documentation/arch/x86/zero-page.rst). Offsets are from
//! the start of the bzImage file, which is also where the zero page holds the same header.

/// `setup_sects`: number of 512-byte setup sectors after the boot sector (0 means 4).
pub const SETUP_SECTS: usize = 0x1f1;
/// `boot_flag`: 0xaa55.
pub const BOOT_FLAG: usize = 0x1fe;
/// `jump`: a short jump whose displacement byte (at 0x201) ends the header.
pub const JUMP: usize = 0x200;
/// `header`: the magic "HdrS".
pub const HEADER: usize = 0x202;
/// `version`: boot protocol version (0x020f = 2.15).
pub const VERSION: usize = 0x206;
/// `type_of_loader`.
pub const TYPE_OF_LOADER: usize = 0x210;
/// `loadflags`.
pub const LOADFLAGS: usize = 0x211;
/// `ramdisk_image`.
pub const RAMDISK_IMAGE: usize = 0x218;
/// `ramdisk_size`.
pub const RAMDISK_SIZE: usize = 0x21c;
/// `heap_end_ptr`.
pub const HEAP_END_PTR: usize = 0x224;
/// `cmd_line_ptr`.
pub const CMD_LINE_PTR: usize = 0x228;
/// `initrd_addr_max` (protocol 2.03+).
pub const INITRD_ADDR_MAX: usize = 0x22c;
/// `kernel_alignment` (2.05+).
pub const KERNEL_ALIGNMENT: usize = 0x230;
/// `xloadflags` (2.12+).
pub const XLOADFLAGS: usize = 0x236;
/// `cmdline_size` (2.06+): longest command line, without the NUL.
pub const CMDLINE_SIZE: usize = 0x238;
/// `payload_offset` (2.08+): from the start of the protected-mode code.
pub const PAYLOAD_OFFSET: usize = 0x248;
/// `payload_length` (2.08+).
pub const PAYLOAD_LENGTH: usize = 0x24c;
/// `init_size` (2.10+): memory the kernel needs from its load address during boot.
pub const INIT_SIZE: usize = 0x260;
/// End of the header area in the zero page (`edd_mbr_sig_buffer` follows).
pub const HEADER_AREA_END: usize = 0x290;

/// "HdrS".
pub const HEADER_MAGIC: u32 = 0x5372_6448;
/// Protocol 2.08: the first version with `payload_offset`/`payload_length`.
pub const MIN_VERSION: u16 = 0x0208;
/// The version agar claims in the header it writes for an ELF vmlinux.
pub const SYNTHETIC_VERSION: u16 = 0x020f;
/// `type_of_loader` for a loader without an assigned ID.
pub const LOADER_UNDEFINED: u8 = 0xff;
/// `loadflags`: the protected-mode code is loaded at 0x100000.
pub const LOADED_HIGH: u8 = 0x01;
/// `loadflags`: `heap_end_ptr` is valid.
pub const CAN_USE_HEAP: u8 = 0x80;
/// `xloadflags`: the kernel has the 64-bit entry point.
pub const XLF_KERNEL_64: u16 = 0x01;
/// `heap_end_ptr` value (offset from the real-mode code, as boot.rst suggests).
pub const HEAP_END: u16 = 0xfe00;
/// `initrd_addr_max` assumed for protocols before 2.03.
pub const OLD_INITRD_ADDR_MAX: u32 = 0x37ff_ffff;
/// `COMMAND_LINE_SIZE - 1` on x86, for kernels whose header does not say.
pub const DEFAULT_CMDLINE_MAX: usize = 2047;

/// Zero page: `acpi_rsdp_addr` (u64).
pub const ZP_ACPI_RSDP_ADDR: usize = 0x070;
/// Zero page: `ext_ramdisk_image` (u32, bits 63:32).
pub const ZP_EXT_RAMDISK_IMAGE: usize = 0x0c0;
/// Zero page: `ext_ramdisk_size` (u32).
pub const ZP_EXT_RAMDISK_SIZE: usize = 0x0c4;
/// Zero page: `ext_cmd_line_ptr` (u32).
pub const ZP_EXT_CMD_LINE_PTR: usize = 0x0c8;
/// Zero page: `e820_entries` (u8).
pub const ZP_E820_ENTRIES: usize = 0x1e8;
/// Zero page: `e820_table`, 20-byte entries.
pub const ZP_E820_TABLE: usize = 0x2d0;
/// Entries the zero page's table holds.
pub const ZP_E820_MAX: usize = 128;
/// Size of the zero page.
pub const ZERO_PAGE_SIZE: usize = 4096;
