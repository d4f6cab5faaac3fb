//! The x86 Linux boot protocol, 64-bit entry (Documentation/arch/x86/boot.rst).
//!
//! # What the load looks like
//! - The kernel is a bzImage (its payload is decompressed here, on the host) or an ELF vmlinux.
//!   Either way the ELF's `PT_LOAD` segments go to their physical addresses and the boot
//!   processor starts at the physical `startup_64` in 64-bit mode: no real-mode setup code and
//!   no in-guest decompressor run.
//! - Low memory holds what the boot protocol asks the loader for, at fixed addresses:
//!
//! | address | what |
//! |---|---|
//! | [`GDT_ADDR`] | flat GDT (`__BOOT_CS` = 0x10, `__BOOT_DS` = 0x18) |
//! | [`ZERO_PAGE_ADDR`] | the zero page (`struct boot_params`), passed in RSI |
//! | [`STACK_TOP`] | an initial stack (the kernel switches to its own at once) |
//! | [`PAGE_TABLES_ADDR`] | identity map of the first 4 GiB (2 MiB pages) |
//! | [`CMDLINE_ADDR`] | the NUL-terminated command line |
//!
//! - The initrd goes at the top of the highest RAM range below both 4 GiB and the kernel's
//!   `initrd_addr_max`, page aligned, above the kernel.
//! - The zero page carries the kernel's own setup header (a synthesized one for an ELF vmlinux),
//!   the e820 map the machine passes in, and the ACPI RSDP address.

mod decompress;
mod elf;
mod spec;

use std::sync::Arc;

pub use decompress::Format as Compression;
pub use decompress::MAX_DECOMPRESSED;

use crate::Chunk;
use crate::E820Entry;
use crate::E820Type;
use crate::LoadError;
use crate::LoadPlan;
use crate::le_u16;
use crate::le_u32;
use crate::x86;

/// Where the GDT goes.
pub const GDT_ADDR: u64 = 0x500;
/// Where the zero page goes.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial RSP.
pub const STACK_TOP: u64 = 0x8ff0;
/// Where the identity page tables go (six pages).
pub const PAGE_TABLES_ADDR: u64 = 0x9000;
/// Where the command line goes.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Lowest address a kernel segment may use (everything below is the loader's or firmware's).
pub const KERNEL_MIN_ADDR: u64 = 0x10_0000;
/// End of the address range the boot structures and kernel pointers may use (32-bit fields).
const FOUR_GIB: u64 = 1 << 32;

/// What the machine tells the loader about the guest.
#[derive(Debug, Clone)]
pub struct GuestInfo {
    /// The guest's memory map; `Ram` entries are where the loader may place things.
    pub e820: Vec<E820Entry>,
    /// Address of the ACPI RSDP, if the machine provides ACPI tables.
    pub acpi_rsdp: Option<u64>,
}

/// The kernel after parsing: what was recognized and where it wants to live.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The setup header bytes of a bzImage (file offsets 0x1f1 up to the header's end), or
    /// `None` for an ELF vmlinux.
    header: Option<Vec<u8>>,
    /// The ELF vmlinux (decompressed).
    elf_bytes: Arc<Vec<u8>>,
    elf: elf::Elf,
    /// How the payload was compressed (`None` for a bare ELF file).
    pub compression: Option<Compression>,
    /// Boot protocol version (the synthesized one for an ELF).
    pub protocol: u16,
    /// Longest command line accepted, without the NUL.
    pub cmdline_max: usize,
    /// Highest address the initrd may end at (inclusive).
    pub initrd_addr_max: u64,
    /// Memory the kernel needs from its load address while it boots (`init_size`, 0 if the
    /// image does not say); nothing else is placed there.
    pub init_size: u64,
}

impl Kernel {
    /// Recognizes and checks a kernel image (bzImage or ELF vmlinux), decompressing a bzImage's
    /// payload.
    pub fn parse(image: &[u8]) -> Result<Self, LoadError> {
        if elf::is_elf(image) {
            let elf = elf::parse(image)?;
            return Ok(Self {
                header: None,
                elf_bytes: Arc::new(image.to_vec()),
                elf,
                compression: None,
                protocol: spec::SYNTHETIC_VERSION,
                cmdline_max: spec::DEFAULT_CMDLINE_MAX,
                initrd_addr_max: u64::from(i32::MAX as u32),
                init_size: 0,
            });
        }
        Self::parse_bzimage(image)
    }

    fn parse_bzimage(image: &[u8]) -> Result<Self, LoadError> {
        const WHAT: &str = "bzImage";
        if le_u32(image, spec::HEADER, WHAT).ok() != Some(spec::HEADER_MAGIC) {
            return Err(LoadError::UnknownFormat { what: "kernel" });
        }
        let version = le_u16(image, spec::VERSION, WHAT)?;
        if version < spec::MIN_VERSION {
            return Err(LoadError::Unsupported {
                what: WHAT,
                detail: format!(
                    "boot protocol {}.{:02} (need 2.08 or later)",
                    version >> 8,
                    version & 0xff
                ),
            });
        }
        // The header ends where the jump at 0x200 lands: 0x202 plus its displacement.
        let jump_len = *image
            .get(spec::JUMP + 1)
            .ok_or_else(|| LoadError::malformed(WHAT, "truncated header"))?;
        let header_end = (spec::HEADER + usize::from(jump_len)).min(spec::HEADER_AREA_END);
        let header = image
            .get(spec::SETUP_SECTS..header_end)
            .ok_or_else(|| LoadError::malformed(WHAT, "truncated header"))?
            .to_vec();
        if version >= 0x020c && le_u16(image, spec::XLOADFLAGS, WHAT)? & spec::XLF_KERNEL_64 == 0 {
            return Err(LoadError::Unsupported {
                what: WHAT,
                detail: "no 64-bit entry point (not an x86-64 kernel)".into(),
            });
        }
        let setup_sects = match image[spec::SETUP_SECTS] {
            0 => 4,
            n => usize::from(n),
        };
        let pm_start = (setup_sects + 1) * 512;
        let payload_offset = le_u32(image, spec::PAYLOAD_OFFSET, WHAT)? as usize;
        let payload_length = le_u32(image, spec::PAYLOAD_LENGTH, WHAT)? as usize;
        let payload = pm_start
            .checked_add(payload_offset)
            .and_then(|start| Some(start..start.checked_add(payload_length)?))
            .and_then(|r| image.get(r))
            .ok_or_else(|| {
                LoadError::malformed(
                    WHAT,
                    format!(
                        "payload ({payload_length} bytes at {pm_start:#x}+{payload_offset:#x}) \
                         lies outside the {}-byte file",
                        image.len()
                    ),
                )
            })?;
        let (compression, elf_bytes) = decompress::decompress(payload)?;
        let elf = elf::parse(&elf_bytes)?;
        let cmdline_max = if version >= 0x0206 {
            le_u32(image, spec::CMDLINE_SIZE, WHAT)? as usize
        } else {
            255
        };
        let initrd_addr_max = if version >= 0x0203 {
            le_u32(image, spec::INITRD_ADDR_MAX, WHAT)?
        } else {
            spec::OLD_INITRD_ADDR_MAX
        };
        let init_size = if version >= 0x020a {
            u64::from(le_u32(image, spec::INIT_SIZE, WHAT)?)
        } else {
            0
        };
        Ok(Self {
            init_size,
            header: Some(header),
            elf_bytes: Arc::new(elf_bytes),
            elf,
            compression: Some(compression),
            protocol: version,
            cmdline_max,
            initrd_addr_max: u64::from(initrd_addr_max),
        })
    }

    /// The physical entry point (`startup_64`).
    pub fn entry(&self) -> u64 {
        self.elf.entry
    }

    /// The physical range the kernel occupies while it boots: lowest segment start to the
    /// higher of the highest segment end and `start + init_size`.
    pub fn physical_range(&self) -> std::ops::Range<u64> {
        let start = self.elf.segments.iter().map(|s| s.paddr).min().unwrap_or(0);
        let end = self
            .elf
            .segments
            .iter()
            .map(|s| s.paddr + s.mem_size)
            .max()
            .unwrap_or(0)
            .max(start.saturating_add(self.init_size));
        start..end
    }

    fn describe(&self) -> String {
        match (self.compression, &self.header) {
            (Some(c), Some(_)) => format!(
                "bzImage (protocol {}.{:02}, {} payload)",
                self.protocol >> 8,
                self.protocol & 0xff,
                c.name()
            ),
            _ => "ELF vmlinux".into(),
        }
    }
}

/// Loads `kernel` with `initrd` and `cmdline` into a guest described by `guest`.
pub fn load(
    kernel: &Kernel,
    initrd: Option<Vec<u8>>,
    cmdline: &str,
    guest: &GuestInfo,
) -> Result<LoadPlan, LoadError> {
    let ram: Vec<std::ops::Range<u64>> = guest
        .e820
        .iter()
        .filter(|e| e.kind == E820Type::Ram)
        .filter_map(|e| Some(e.addr..e.addr.checked_add(e.size)?))
        .collect();
    let in_ram =
        |r: &std::ops::Range<u64>| ram.iter().any(|m| m.start <= r.start && r.end <= m.end);

    let mut chunks = Vec::new();

    // Fixed low structures.
    let cmdline_bytes = cmdline.as_bytes();
    if cmdline_bytes.len() > kernel.cmdline_max {
        return Err(LoadError::CmdlineTooLong {
            len: cmdline_bytes.len(),
            max: kernel.cmdline_max,
        });
    }
    if cmdline_bytes.contains(&0) {
        return Err(LoadError::malformed(
            "kernel command line",
            "contains a NUL byte",
        ));
    }
    let mut cmdline_z = cmdline_bytes.to_vec();
    cmdline_z.push(0);
    chunks.push(x86::flat_gdt(GDT_ADDR));
    chunks.push(x86::identity_page_tables(PAGE_TABLES_ADDR));
    chunks.push(Chunk::new(CMDLINE_ADDR, cmdline_z, "command line"));
    for c in &chunks {
        if !in_ram(&c.gpa_range()) {
            return Err(LoadError::DoesNotFit {
                what: c.what,
                detail: format!("{:#x?} is not RAM in the memory map", c.gpa_range()),
            });
        }
    }

    // Kernel segments.
    for s in &kernel.elf.segments {
        let range = s.paddr..s.paddr + s.mem_size;
        if range.start < KERNEL_MIN_ADDR || range.end > x86::IDENTITY_MAPPED || !in_ram(&range) {
            return Err(LoadError::DoesNotFit {
                what: "kernel",
                detail: format!(
                    "segment at {:#x}..{:#x} is not in RAM between 1 MiB and 4 GiB",
                    range.start, range.end
                ),
            });
        }
        chunks.push(Chunk {
            gpa: s.paddr,
            source: kernel.elf_bytes.clone(),
            range: s.offset..s.offset + s.file_size,
            zero_tail: s.mem_size - s.file_size as u64,
            what: "kernel",
        });
    }
    let kernel_end = kernel.physical_range().end;

    // Initrd.
    let mut initrd_range = 0..0u64;
    if let Some(initrd) = initrd {
        let len = initrd.len() as u64;
        let limit = kernel
            .initrd_addr_max
            .saturating_add(1)
            .min(FOUR_GIB)
            .min(x86::IDENTITY_MAPPED);
        let placed = ram
            .iter()
            .rev()
            .filter_map(|m| {
                let top = m.end.min(limit);
                let start = top.checked_sub(len)? & !0xfff;
                (start >= m.start.max(kernel_end) && top > start).then_some(start)
            })
            .next();
        let start = placed.ok_or_else(|| LoadError::DoesNotFit {
            what: "initrd",
            detail: format!(
                "{len} bytes do not fit between the kernel's end ({kernel_end:#x}) and \
                 {limit:#x}"
            ),
        })?;
        initrd_range = start..start + len;
        if len > 0 {
            chunks.push(Chunk::new(start, initrd, "initrd"));
        }
    }

    // The zero page.
    let mut zp = vec![0u8; spec::ZERO_PAGE_SIZE];
    match &kernel.header {
        Some(h) => zp[spec::SETUP_SECTS..spec::SETUP_SECTS + h.len()].copy_from_slice(h),
        None => {
            put16(&mut zp, spec::BOOT_FLAG, 0xaa55);
            put32(&mut zp, spec::HEADER, spec::HEADER_MAGIC);
            put16(&mut zp, spec::VERSION, spec::SYNTHETIC_VERSION);
            zp[spec::LOADFLAGS] = spec::LOADED_HIGH;
            put32(&mut zp, spec::KERNEL_ALIGNMENT, 0x100_0000);
            put32(
                &mut zp,
                spec::CMDLINE_SIZE,
                spec::DEFAULT_CMDLINE_MAX as u32,
            );
            put32(
                &mut zp,
                spec::INITRD_ADDR_MAX,
                kernel.initrd_addr_max as u32,
            );
        }
    }
    zp[spec::TYPE_OF_LOADER] = spec::LOADER_UNDEFINED;
    zp[spec::LOADFLAGS] |= spec::CAN_USE_HEAP;
    put16(&mut zp, spec::HEAP_END_PTR, spec::HEAP_END);
    put32(&mut zp, spec::CMD_LINE_PTR, CMDLINE_ADDR as u32);
    put32(
        &mut zp,
        spec::ZP_EXT_CMD_LINE_PTR,
        (CMDLINE_ADDR >> 32) as u32,
    );
    let initrd_len = initrd_range.end - initrd_range.start;
    put32(&mut zp, spec::RAMDISK_IMAGE, initrd_range.start as u32);
    put32(
        &mut zp,
        spec::ZP_EXT_RAMDISK_IMAGE,
        (initrd_range.start >> 32) as u32,
    );
    put32(&mut zp, spec::RAMDISK_SIZE, initrd_len as u32);
    put32(
        &mut zp,
        spec::ZP_EXT_RAMDISK_SIZE,
        (initrd_len >> 32) as u32,
    );
    if let Some(rsdp) = guest.acpi_rsdp {
        zp[spec::ZP_ACPI_RSDP_ADDR..spec::ZP_ACPI_RSDP_ADDR + 8]
            .copy_from_slice(&rsdp.to_le_bytes());
    }
    if guest.e820.len() > spec::ZP_E820_MAX {
        return Err(LoadError::Unsupported {
            what: "memory map",
            detail: format!(
                "{} e820 entries (the zero page holds 128)",
                guest.e820.len()
            ),
        });
    }
    zp[spec::ZP_E820_ENTRIES] = guest.e820.len() as u8;
    for (i, e) in guest.e820.iter().enumerate() {
        let at = spec::ZP_E820_TABLE + i * 20;
        zp[at..at + 8].copy_from_slice(&e.addr.to_le_bytes());
        zp[at + 8..at + 16].copy_from_slice(&e.size.to_le_bytes());
        zp[at + 16..at + 20].copy_from_slice(&(e.kind as u32).to_le_bytes());
    }
    let zp_chunk = Chunk::new(ZERO_PAGE_ADDR, zp, "zero page");
    if !in_ram(&zp_chunk.gpa_range()) {
        return Err(LoadError::DoesNotFit {
            what: "zero page",
            detail: format!("{ZERO_PAGE_ADDR:#x} is not RAM in the memory map"),
        });
    }
    chunks.push(zp_chunk);

    let (mut registers, special_registers) =
        x86::long_mode_state(kernel.entry(), GDT_ADDR, PAGE_TABLES_ADDR);
    registers.gpr[virt::gpr::RSI] = ZERO_PAGE_ADDR;
    registers.gpr[virt::gpr::RSP] = STACK_TOP;

    let kr = kernel.physical_range();
    let summary = format!(
        "linux: {} at {:#x}..{:#x}, entry {:#x}, initrd {} bytes at {:#x}, cmdline {} bytes",
        kernel.describe(),
        kr.start,
        kr.end,
        kernel.entry(),
        initrd_len,
        initrd_range.start,
        cmdline_bytes.len()
    );
    Ok(LoadPlan {
        chunks,
        registers,
        special_registers,
        e820: guest.e820.clone(),
        summary,
    })
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::decompress::Format;
    use super::*;

    const RAM: u64 = 256 << 20;

    fn guest() -> GuestInfo {
        GuestInfo {
            e820: vec![
                E820Entry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: E820Type::Ram,
                },
                E820Entry {
                    addr: 0x9fc00,
                    size: 0x400,
                    kind: E820Type::Reserved,
                },
                E820Entry {
                    addr: 0x10_0000,
                    size: RAM - 0x10_0000,
                    kind: E820Type::Ram,
                },
            ],
            acpi_rsdp: Some(0xe0000),
        }
    }

    fn vmlinux() -> Vec<u8> {
        elf::tests::build(
            &[0xf4; 64],
            0x100_0000,
            0xffff_ffff_8100_0000,
            0x1000,
            0x100_0000,
        )
    }

    /// A bzImage around `payload`: boot sector, `setup_sects` sectors, then the payload.
    fn bzimage(payload: &[u8], version: u16) -> Vec<u8> {
        let setup_sects = 4u8;
        let pm_start = (usize::from(setup_sects) + 1) * 512;
        let mut b = vec![0u8; pm_start];
        b[spec::SETUP_SECTS] = setup_sects;
        b[spec::BOOT_FLAG..spec::BOOT_FLAG + 2].copy_from_slice(&0xaa55u16.to_le_bytes());
        b[spec::JUMP] = 0xeb;
        b[spec::JUMP + 1] = 0x6a; // header ends at 0x26c, as in 2.15 kernels
        put32(&mut b, spec::HEADER, spec::HEADER_MAGIC);
        put16(&mut b, spec::VERSION, version);
        b[spec::LOADFLAGS] = spec::LOADED_HIGH;
        put32(&mut b, spec::INITRD_ADDR_MAX, 0x7fff_ffff);
        put16(&mut b, spec::XLOADFLAGS, 0x7f);
        put32(&mut b, spec::CMDLINE_SIZE, 2047);
        put32(&mut b, spec::PAYLOAD_OFFSET, 0);
        put32(&mut b, spec::PAYLOAD_LENGTH, payload.len() as u32);
        b.extend_from_slice(payload);
        b
    }

    fn zero_page(plan: &LoadPlan) -> &[u8] {
        plan.chunks
            .iter()
            .find(|c| c.what == "zero page")
            .unwrap()
            .bytes()
    }

    fn get32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn bzimage_with_each_compression_loads_the_elf() {
        let elf = vmlinux();
        for f in [Format::Gzip, Format::Xz, Format::Lz4Legacy, Format::Zstd] {
            let img = bzimage(&decompress::tests::compress(f, &elf), 0x020f);
            let k = Kernel::parse(&img).unwrap();
            assert_eq!(k.compression, Some(f));
            assert_eq!(k.entry(), 0x100_0000);
            let plan = load(&k, Some(vec![7; 5000]), "console=ttyS0", &guest()).unwrap();
            let kc = plan.chunks.iter().find(|c| c.what == "kernel").unwrap();
            assert_eq!(kc.gpa, 0x100_0000);
            assert_eq!(kc.bytes(), &[0xf4; 64]);
            assert_eq!(kc.zero_tail, 0x1000);
            assert!(plan.summary.contains(f.name()), "{}", plan.summary);
        }
    }

    #[test]
    fn zero_page_fields() {
        let img = bzimage(
            &decompress::tests::compress(Format::Gzip, &vmlinux()),
            0x020f,
        );
        let k = Kernel::parse(&img).unwrap();
        let plan = load(&k, Some(vec![1; 10_000]), "console=ttyS0 quiet", &guest()).unwrap();
        let zp = zero_page(&plan);
        assert_eq!(get32(zp, spec::HEADER), spec::HEADER_MAGIC, "header copied");
        assert_eq!(zp[spec::TYPE_OF_LOADER], 0xff);
        assert_eq!(zp[spec::LOADFLAGS], spec::LOADED_HIGH | spec::CAN_USE_HEAP);
        assert_eq!(get32(zp, spec::CMD_LINE_PTR), CMDLINE_ADDR as u32);
        let image = get32(zp, spec::RAMDISK_IMAGE) as u64;
        assert_eq!(get32(zp, spec::RAMDISK_SIZE), 10_000);
        assert_eq!(image % 4096, 0);
        assert!(
            image + 10_000 <= RAM && image + 10_000 > RAM - 8192,
            "initrd at the top"
        );
        assert_eq!(zp[spec::ZP_E820_ENTRIES], 3);
        assert_eq!(get32(zp, spec::ZP_E820_TABLE + 2 * 20), 0x10_0000);
        assert_eq!(
            get32(zp, spec::ZP_E820_TABLE + 20 + 16),
            E820Type::Reserved as u32
        );
        assert_eq!(get32(zp, spec::ZP_ACPI_RSDP_ADDR), 0xe0000);
        assert_eq!(zp[0x1ef], 0, "sentinel stays zero");
        let cl = plan
            .chunks
            .iter()
            .find(|c| c.what == "command line")
            .unwrap();
        assert_eq!(cl.bytes(), b"console=ttyS0 quiet\0");
        assert_eq!(plan.registers.gpr[virt::gpr::RSI], ZERO_PAGE_ADDR);
        assert_eq!(plan.registers.rip, 0x100_0000);
        assert_eq!(plan.special_registers.efer, x86::EFER_LONG_MODE);
    }

    #[test]
    fn elf_vmlinux_gets_a_synthesized_header() {
        let k = Kernel::parse(&vmlinux()).unwrap();
        assert_eq!(k.compression, None);
        let plan = load(&k, None, "", &guest()).unwrap();
        let zp = zero_page(&plan);
        assert_eq!(get32(zp, spec::HEADER), spec::HEADER_MAGIC);
        assert_eq!(u16::from_le_bytes([zp[0x206], zp[0x207]]), 0x020f);
        assert_eq!(get32(zp, spec::RAMDISK_SIZE), 0);
        assert!(plan.summary.starts_with("linux: ELF vmlinux"));
    }

    #[test]
    fn malformed_bzimages_are_errors() {
        let payload = decompress::tests::compress(Format::Gzip, &vmlinux());
        let good = bzimage(&payload, 0x020f);
        let err = |img: &[u8]| Kernel::parse(img).unwrap_err().to_string();

        assert!(err(&[0u8; 100]).contains("not a bzImage"));
        assert!(
            err(&good[..0x204]).contains("not a bzImage"),
            "cut inside the magic"
        );
        assert!(
            err(&good[..0x210]).contains("truncated") || err(&good[..0x210]).contains("outside")
        );
        assert!(err(&bzimage(&payload, 0x0204)).contains("2.04"));
        let mut b = good.clone();
        put32(&mut b, spec::PAYLOAD_LENGTH, u32::MAX);
        assert!(err(&b).contains("outside"));
        let mut b = good.clone();
        put32(&mut b, spec::PAYLOAD_OFFSET, u32::MAX);
        assert!(err(&b).contains("outside"));
        let mut b = good.clone();
        b[spec::SETUP_SECTS] = 0xff;
        assert!(err(&b).contains("outside"));
        let mut b = good.clone();
        put16(&mut b, spec::XLOADFLAGS, 0);
        assert!(err(&b).contains("64-bit"));
        let mut b = good.clone();
        let pm = 5 * 512;
        b[pm..pm + 4].copy_from_slice(b"BZh9");
        assert!(err(&b).contains("bzip2"));
        // A payload that decompresses to something that is not an ELF.
        let not_elf = bzimage(
            &decompress::tests::compress(Format::Zstd, &[0x55; 4096]),
            0x020f,
        );
        assert!(err(&not_elf).contains("unknown compression") || err(&not_elf).contains("ELF"));
    }

    #[test]
    fn placement_errors() {
        let k = Kernel::parse(&vmlinux()).unwrap();
        let long = "x".repeat(2048);
        assert!(matches!(
            load(&k, None, &long, &guest()),
            Err(LoadError::CmdlineTooLong {
                len: 2048,
                max: 2047
            })
        ));
        assert!(load(&k, None, "a\0b", &guest()).is_err());
        let e = load(&k, Some(vec![0; RAM as usize]), "", &guest()).unwrap_err();
        assert!(e.to_string().contains("initrd"), "{e}");

        let mut small = guest();
        small.e820[2].size = 8 << 20; // RAM ends at 9 MiB, below the kernel's 16 MiB
        let e = load(&k, None, "", &small).unwrap_err();
        assert!(e.to_string().contains("kernel does not fit"), "{e}");

        let mut no_low = guest();
        no_low.e820.remove(0);
        let e = load(&k, None, "", &no_low).unwrap_err();
        assert!(e.to_string().contains("gdt"), "{e}");
    }

    #[test]
    fn initrd_respects_initrd_addr_max() {
        let payload = decompress::tests::compress(Format::Gzip, &vmlinux());
        let mut img = bzimage(&payload, 0x020f);
        put32(&mut img, spec::INITRD_ADDR_MAX, (64 << 20) - 1);
        let k = Kernel::parse(&img).unwrap();
        let plan = load(&k, Some(vec![1; 4096]), "", &guest()).unwrap();
        let c = plan.chunks.iter().find(|c| c.what == "initrd").unwrap();
        assert_eq!(c.gpa_range().end, 64 << 20);
    }
}
