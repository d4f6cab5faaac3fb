//! The little of ELF64 a kernel load needs: the header and the `PT_LOAD` program headers
//! (System V gABI, "ELF Header" and "Program Header").

use crate::LoadError;
use crate::le_u16;
use crate::le_u32;
use crate::le_u64;

const WHAT: &str = "vmlinux ELF";
const MAGIC: [u8; 4] = *b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PHDR_SIZE: u16 = 56;
/// Virtual addresses at or above this are the kernel half; anything below is taken as physical.
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

/// One loadable segment, checked against the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Offset of the file bytes.
    pub offset: usize,
    /// Bytes in the file.
    pub file_size: usize,
    /// Bytes in memory (`file_size` plus zero fill).
    pub mem_size: u64,
    /// Physical load address.
    pub paddr: u64,
    /// Virtual address.
    pub vaddr: u64,
}

/// A parsed ELF64 x86-64 executable.
#[derive(Debug, Clone)]
pub struct Elf {
    /// Physical entry point.
    pub entry: u64,
    /// `PT_LOAD` segments with a non-zero memory size, in file order.
    pub segments: Vec<Segment>,
}

/// Whether `bytes` starts with the ELF magic.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// Parses and checks an ELF64 x86-64 image.
pub fn parse(bytes: &[u8]) -> Result<Elf, LoadError> {
    if !is_elf(bytes) {
        return Err(LoadError::malformed(WHAT, "no ELF magic"));
    }
    let ident = bytes
        .get(..16)
        .ok_or_else(|| LoadError::malformed(WHAT, "truncated identification"))?;
    if ident[4] != ELFCLASS64 || ident[5] != ELFDATA2LSB {
        return Err(LoadError::Unsupported {
            what: WHAT,
            detail: "not a little-endian ELF64 file".into(),
        });
    }
    let e_type = le_u16(bytes, 0x10, WHAT)?;
    let machine = le_u16(bytes, 0x12, WHAT)?;
    if machine != EM_X86_64 {
        return Err(LoadError::Unsupported {
            what: WHAT,
            detail: format!("machine {machine} is not x86-64"),
        });
    }
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err(LoadError::Unsupported {
            what: WHAT,
            detail: format!("ELF type {e_type} is not an executable"),
        });
    }
    let entry = le_u64(bytes, 0x18, WHAT)?;
    let phoff = usize::try_from(le_u64(bytes, 0x20, WHAT)?)
        .map_err(|_| LoadError::malformed(WHAT, "program header offset out of range"))?;
    let phentsize = le_u16(bytes, 0x36, WHAT)?;
    let phnum = le_u16(bytes, 0x38, WHAT)?;
    if phentsize != PHDR_SIZE {
        return Err(LoadError::malformed(
            WHAT,
            format!("program header size {phentsize}, expected {PHDR_SIZE}"),
        ));
    }
    let mut segments = Vec::new();
    for i in 0..usize::from(phnum) {
        let at = i
            .checked_mul(usize::from(PHDR_SIZE))
            .and_then(|o| o.checked_add(phoff))
            .ok_or_else(|| LoadError::malformed(WHAT, "program header table out of range"))?;
        if le_u32(bytes, at, WHAT)? != PT_LOAD {
            continue;
        }
        let offset = le_u64(bytes, at + 0x08, WHAT)?;
        let vaddr = le_u64(bytes, at + 0x10, WHAT)?;
        let paddr = le_u64(bytes, at + 0x18, WHAT)?;
        let file_size = le_u64(bytes, at + 0x20, WHAT)?;
        let mem_size = le_u64(bytes, at + 0x28, WHAT)?;
        let bad = |d: &str| LoadError::malformed(WHAT, format!("segment {i}: {d}"));
        if file_size > mem_size {
            return Err(bad("file size exceeds memory size"));
        }
        let end = offset
            .checked_add(file_size)
            .ok_or_else(|| bad("file range overflows"))?;
        if end > bytes.len() as u64 {
            return Err(bad("extends past the end of the file"));
        }
        if paddr.checked_add(mem_size).is_none() {
            return Err(bad("physical range overflows"));
        }
        if mem_size == 0 {
            continue;
        }
        segments.push(Segment {
            // Both fit in usize: they are bounded by the file length checked above.
            offset: offset as usize,
            file_size: file_size as usize,
            mem_size,
            paddr,
            vaddr,
        });
    }
    if segments.is_empty() {
        return Err(LoadError::malformed(WHAT, "no loadable segments"));
    }
    let entry = physical_entry(entry, &segments)
        .ok_or_else(|| LoadError::malformed(WHAT, format!("entry {entry:#x} is in no segment")))?;
    Ok(Elf { entry, segments })
}

/// The physical address of `entry`: translated through the segment that maps it when it is a
/// kernel-half virtual address, taken as is otherwise. Either way it must lie in a segment.
fn physical_entry(entry: u64, segments: &[Segment]) -> Option<u64> {
    if entry >= KERNEL_HALF {
        segments.iter().find_map(|s| {
            let off = entry.checked_sub(s.vaddr)?;
            (off < s.mem_size).then(|| s.paddr + off)
        })
    } else {
        segments
            .iter()
            .any(|s| entry >= s.paddr && entry - s.paddr < s.mem_size)
            .then_some(entry)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an ELF64 x86-64 executable with one `PT_LOAD` segment holding `code` at physical
    /// `paddr` (virtual `vaddr`), `bss` zero bytes after it, entry `entry`.
    pub(crate) fn build(code: &[u8], paddr: u64, vaddr: u64, bss: u64, entry: u64) -> Vec<u8> {
        let mut e = vec![0u8; 0x40 + 56];
        e[..4].copy_from_slice(&MAGIC);
        e[4] = ELFCLASS64;
        e[5] = ELFDATA2LSB;
        e[6] = 1;
        e[0x10..0x12].copy_from_slice(&ET_EXEC.to_le_bytes());
        e[0x12..0x14].copy_from_slice(&EM_X86_64.to_le_bytes());
        e[0x18..0x20].copy_from_slice(&entry.to_le_bytes());
        e[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        e[0x34..0x36].copy_from_slice(&0x40u16.to_le_bytes());
        e[0x36..0x38].copy_from_slice(&PHDR_SIZE.to_le_bytes());
        e[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let ph = 0x40;
        let off = e.len() as u64;
        e[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        e[ph + 0x08..ph + 0x10].copy_from_slice(&off.to_le_bytes());
        e[ph + 0x10..ph + 0x18].copy_from_slice(&vaddr.to_le_bytes());
        e[ph + 0x18..ph + 0x20].copy_from_slice(&paddr.to_le_bytes());
        e[ph + 0x20..ph + 0x28].copy_from_slice(&(code.len() as u64).to_le_bytes());
        e[ph + 0x28..ph + 0x30].copy_from_slice(&(code.len() as u64 + bss).to_le_bytes());
        e.extend_from_slice(code);
        e
    }

    #[test]
    fn parses_segments_and_translates_a_virtual_entry() {
        let img = build(
            &[0x90; 16],
            0x100_0000,
            0xffff_ffff_8100_0000,
            32,
            0xffff_ffff_8100_0004,
        );
        let elf = parse(&img).unwrap();
        assert_eq!(elf.entry, 0x100_0004);
        assert_eq!(elf.segments.len(), 1);
        assert_eq!(elf.segments[0].mem_size, 48);
    }

    #[test]
    fn physical_entry_is_kept() {
        let img = build(
            &[0x90; 16],
            0x100_0000,
            0xffff_ffff_8100_0000,
            0,
            0x100_0000,
        );
        assert_eq!(parse(&img).unwrap().entry, 0x100_0000);
    }

    #[test]
    fn rejects_malformed_headers() {
        let good = build(&[0x90; 16], 0x100_0000, 0x100_0000, 0, 0x100_0000);
        let corrupt = |at: usize, bytes: &[u8]| {
            let mut b = good.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            parse(&b).unwrap_err().to_string()
        };
        assert!(corrupt(4, &[1]).contains("ELF64"));
        assert!(corrupt(0x12, &3u16.to_le_bytes()).contains("x86-64"));
        assert!(corrupt(0x20, &u64::MAX.to_le_bytes()).contains("truncated"));
        assert!(corrupt(0x36, &32u16.to_le_bytes()).contains("program header size"));
        // p_offset far beyond the file, p_filesz > p_memsz, p_offset + p_filesz overflowing.
        assert!(corrupt(0x48, &0x10_0000u64.to_le_bytes()).contains("past the end"));
        assert!(corrupt(0x60, &64u64.to_le_bytes()).contains("exceeds memory size"));
        assert!(corrupt(0x48, &(u64::MAX - 4).to_le_bytes()).contains("overflows"));
        assert!(corrupt(0x58, &(u64::MAX - 4).to_le_bytes()).contains("overflows"));
        assert!(corrupt(0x18, &0x200_0000u64.to_le_bytes()).contains("in no segment"));
        assert!(parse(&good[..0x30]).is_err());
        assert!(
            parse(&good[..0x50]).is_err(),
            "truncated program header table"
        );
    }
}
