//! Guest physical address descriptor lists (GPADLs) and GPA-direct page ranges.
//!
//! A GPADL is a list of ranges; each range names a byte count, a byte offset into its first
//! page and the 4 KiB guest frame numbers (PFNs) it covers. The same shape appears inline in
//! GPA-direct packets (storvsc's data buffers). Everything here is built from guest bytes, so
//! every count, offset and PFN is checked before use.

use guest_mem::GuestMemory;

/// Guest page size for GPADLs and PFNs.
pub const PAGE_SIZE: u64 = 4096;
/// Most bytes one range may describe (the wire field is 32-bit).
pub const MAX_RANGE_BYTES: u64 = u32::MAX as u64;

/// A GPADL or page range is malformed or points outside guest RAM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpadlError {
    /// The range bytes ended in the middle of a range.
    #[error("range list truncated")]
    Truncated,
    /// Bytes left over after the declared ranges.
    #[error("{0} bytes after the last range")]
    TrailingBytes(usize),
    /// A range's offset is not inside its first page.
    #[error("range byte offset {0:#x} is not within a page")]
    BadOffset(u32),
    /// A range of zero bytes.
    #[error("empty range")]
    Empty,
    /// A PFN whose address does not fit in 64 bits.
    #[error("pfn {0:#x} out of range")]
    BadPfn(u64),
    /// A page is not guest RAM.
    #[error("page at {0:#x} is not guest RAM")]
    NotRam(u64),
    /// The GPADL cannot be used as a ring buffer.
    #[error("not a ring buffer GPADL: {0}")]
    NotRing(&'static str),
    /// An access beyond the range's byte count.
    #[error("access {offset:#x}+{len:#x} beyond a range of {size:#x} bytes")]
    OutOfBounds {
        /// Offset of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Size of the range.
        size: u64,
    },
}

/// One range: `byte_count` bytes starting `byte_offset` into the page `pfns[0]`, continuing
/// through the following PFNs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpaRange {
    /// Bytes in the range.
    pub byte_count: u32,
    /// Offset into the first page.
    pub byte_offset: u32,
    /// Page frame numbers, exactly as many as the bytes touch.
    pub pfns: Vec<u64>,
}

impl GpaRange {
    /// Number of pages `byte_count` bytes starting at `byte_offset` touch.
    pub fn page_count(byte_offset: u32, byte_count: u32) -> u64 {
        (u64::from(byte_offset) + u64::from(byte_count)).div_ceil(PAGE_SIZE)
    }

    /// Checks the shape and that every page is guest RAM.
    pub fn validate(&self, memory: &GuestMemory) -> Result<(), GpadlError> {
        if self.byte_count == 0 {
            return Err(GpadlError::Empty);
        }
        if u64::from(self.byte_offset) >= PAGE_SIZE {
            return Err(GpadlError::BadOffset(self.byte_offset));
        }
        if self.pfns.len() as u64 != Self::page_count(self.byte_offset, self.byte_count) {
            return Err(GpadlError::Truncated);
        }
        check_ram_pages(memory, &self.pfns)
    }

    /// Calls `f(gpa, len, done)` for each page-bounded piece of `offset..offset+len` of the
    /// range, in order (`done` = bytes of the access already handled).
    fn for_each_chunk(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(u64, usize, usize) -> Result<(), GpadlError>,
    ) -> Result<(), GpadlError> {
        let size = u64::from(self.byte_count);
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(GpadlError::OutOfBounds { offset, len, size });
        }
        let mut pos = u64::from(self.byte_offset) + offset;
        let mut done = 0u64;
        while done < len {
            let page = (pos / PAGE_SIZE) as usize;
            let within = pos % PAGE_SIZE;
            let n = (PAGE_SIZE - within).min(len - done);
            let pfn = *self.pfns.get(page).ok_or(GpadlError::Truncated)?;
            f(pfn_to_gpa(pfn)? + within, n as usize, done as usize)?;
            pos += n;
            done += n;
        }
        Ok(())
    }

    /// Copies `buf.len()` bytes at `offset` within the range out of guest memory.
    pub fn read(
        &self,
        memory: &GuestMemory,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), GpadlError> {
        self.for_each_chunk(offset, buf.len() as u64, |gpa, n, done| {
            memory
                .read_at(gpa, &mut buf[done..done + n])
                .map_err(|_| GpadlError::NotRam(gpa))
        })
    }

    /// Copies `buf` to `offset` within the range in guest memory.
    pub fn write(&self, memory: &GuestMemory, offset: u64, buf: &[u8]) -> Result<(), GpadlError> {
        self.for_each_chunk(offset, buf.len() as u64, |gpa, n, done| {
            memory
                .write_at(gpa, &buf[done..done + n])
                .map_err(|_| GpadlError::NotRam(gpa))
        })
    }
}

/// The GPA of page frame `pfn`, if it fits.
pub fn pfn_to_gpa(pfn: u64) -> Result<u64, GpadlError> {
    pfn.checked_mul(PAGE_SIZE).ok_or(GpadlError::BadPfn(pfn))
}

/// Whether the whole page at `gpa` is writable guest RAM.
pub fn is_ram_page(memory: &GuestMemory, gpa: u64) -> bool {
    memory
        .translate(gpa)
        .is_some_and(|l| l.writable && l.available >= PAGE_SIZE)
}

/// Checks that every page of `pfns` is writable guest RAM.
pub fn check_ram_pages(memory: &GuestMemory, pfns: &[u64]) -> Result<(), GpadlError> {
    for &pfn in pfns {
        let gpa = pfn_to_gpa(pfn)?;
        if !is_ram_page(memory, gpa) {
            return Err(GpadlError::NotRam(gpa));
        }
    }
    Ok(())
}

/// A complete GPADL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpadl {
    /// Its ranges (Linux always sends one).
    pub ranges: Vec<GpaRange>,
}

impl Gpadl {
    /// Parses `range_count` ranges from `bytes` (the GPADL_HEADER range area followed by the
    /// PFNs of the GPADL_BODY messages). Every byte must belong to a range.
    pub fn parse(bytes: &[u8], range_count: u16) -> Result<Self, GpadlError> {
        let (ranges, used) = parse_ranges(bytes, u32::from(range_count))?;
        if used != bytes.len() {
            return Err(GpadlError::TrailingBytes(bytes.len() - used));
        }
        Ok(Self { ranges })
    }

    /// Total pages.
    pub fn page_count(&self) -> usize {
        self.ranges.iter().map(|r| r.pfns.len()).sum()
    }

    /// Checks every range (see [`GpaRange::validate`]).
    pub fn validate(&self, memory: &GuestMemory) -> Result<(), GpadlError> {
        self.ranges.iter().try_for_each(|r| r.validate(memory))
    }

    /// The pages of a ring-buffer GPADL: one range, page aligned, whole pages.
    pub fn ring_pages(&self) -> Result<&[u64], GpadlError> {
        match self.ranges.as_slice() {
            [r] if r.byte_offset == 0
                && u64::from(r.byte_count) == r.pfns.len() as u64 * PAGE_SIZE =>
            {
                Ok(&r.pfns)
            }
            [_] => Err(GpadlError::NotRing("range is not whole pages")),
            _ => Err(GpadlError::NotRing("more than one range")),
        }
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Parses `count` ranges (u32 byte_count, u32 byte_offset, u64 pfn[..]) from the start of
/// `bytes`. Returns them and the bytes consumed. Does not check guest memory.
pub fn parse_ranges(bytes: &[u8], count: u32) -> Result<(Vec<GpaRange>, usize), GpadlError> {
    let mut at = 0usize;
    let mut ranges = Vec::new();
    for _ in 0..count {
        let byte_count = read_u32(bytes, at).ok_or(GpadlError::Truncated)?;
        let byte_offset = read_u32(bytes, at + 4).ok_or(GpadlError::Truncated)?;
        at += 8;
        if byte_count == 0 {
            return Err(GpadlError::Empty);
        }
        if u64::from(byte_offset) >= PAGE_SIZE {
            return Err(GpadlError::BadOffset(byte_offset));
        }
        let pages = GpaRange::page_count(byte_offset, byte_count) as usize;
        // Bounded by the input: each page needs 8 bytes that must be present.
        if bytes.len().saturating_sub(at) / 8 < pages {
            return Err(GpadlError::Truncated);
        }
        let mut pfns = Vec::with_capacity(pages);
        for i in 0..pages {
            let pfn = read_u64(bytes, at + 8 * i).ok_or(GpadlError::Truncated)?;
            pfn_to_gpa(pfn)?;
            pfns.push(pfn);
        }
        at += 8 * pages;
        ranges.push(GpaRange {
            byte_count,
            byte_offset,
            pfns,
        });
    }
    Ok((ranges, at))
}

/// Serializes ranges in wire format (for guest-side clients and tests).
pub fn write_ranges(ranges: &[GpaRange]) -> Vec<u8> {
    let mut v = Vec::new();
    for r in ranges {
        v.extend_from_slice(&r.byte_count.to_le_bytes());
        v.extend_from_slice(&r.byte_offset.to_le_bytes());
        for p in &r.pfns {
            v.extend_from_slice(&p.to_le_bytes());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_rejects_trailing_or_short_input() {
        let r = GpaRange {
            byte_count: 0x2100,
            byte_offset: 0x80,
            pfns: vec![3, 4, 5],
        };
        let bytes = write_ranges(std::slice::from_ref(&r));
        let g = Gpadl::parse(&bytes, 1).unwrap();
        assert_eq!(g.ranges, vec![r]);
        assert_eq!(g.page_count(), 3);
        assert_eq!(
            Gpadl::parse(&bytes[..bytes.len() - 8], 1),
            Err(GpadlError::Truncated)
        );
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 8]);
        assert_eq!(Gpadl::parse(&long, 1), Err(GpadlError::TrailingBytes(8)));
        assert_eq!(Gpadl::parse(&bytes, 2), Err(GpadlError::Truncated));
        assert!(Gpadl::parse(&[], 0).unwrap().ranges.is_empty());
    }

    #[test]
    fn parse_rejects_bad_offsets_empty_ranges_and_huge_pfns() {
        let mk = |count: u32, offset: u32, pfn: u64| {
            let mut v = count.to_le_bytes().to_vec();
            v.extend_from_slice(&offset.to_le_bytes());
            v.extend_from_slice(&pfn.to_le_bytes());
            v
        };
        assert_eq!(
            Gpadl::parse(&mk(16, 4096, 1), 1),
            Err(GpadlError::BadOffset(4096))
        );
        assert_eq!(Gpadl::parse(&mk(0, 0, 1), 1), Err(GpadlError::Empty));
        assert_eq!(
            Gpadl::parse(&mk(16, 0, u64::MAX), 1),
            Err(GpadlError::BadPfn(u64::MAX))
        );
        // A huge byte count with few PFNs must fail without allocating for it.
        assert_eq!(
            Gpadl::parse(&mk(u32::MAX, 0, 1), 1),
            Err(GpadlError::Truncated)
        );
    }

    #[test]
    fn validate_requires_every_page_in_ram() {
        let m = GuestMemory::allocate(0x4000);
        let ok = GpaRange {
            byte_count: 0x1000,
            byte_offset: 0,
            pfns: vec![3],
        };
        assert_eq!(ok.validate(&m), Ok(()));
        let outside = GpaRange {
            pfns: vec![4],
            ..ok.clone()
        };
        assert_eq!(outside.validate(&m), Err(GpadlError::NotRam(0x4000)));
        let short = GpaRange {
            byte_count: 0x1001,
            ..ok
        };
        assert_eq!(short.validate(&m), Err(GpadlError::Truncated));
    }

    #[test]
    fn reads_and_writes_follow_the_page_list_and_stay_in_bounds() {
        let m = GuestMemory::allocate(0x10000);
        // Virtually contiguous bytes on pages 7 then 2, starting 0xff0 into page 7.
        let r = GpaRange {
            byte_count: 0x20,
            byte_offset: 0xff0,
            pfns: vec![7, 2],
        };
        let data: Vec<u8> = (0..0x20).collect();
        r.write(&m, 0, &data).unwrap();
        let mut a = [0u8; 0x10];
        m.read_at(0x7ff0, &mut a).unwrap();
        assert_eq!(a.to_vec(), (0..0x10).collect::<Vec<u8>>());
        m.read_at(0x2000, &mut a).unwrap();
        assert_eq!(a.to_vec(), (0x10..0x20).collect::<Vec<u8>>());
        let mut back = [0u8; 0x20];
        r.read(&m, 0, &mut back).unwrap();
        assert_eq!(back.to_vec(), data);
        assert!(matches!(
            r.read(&m, 0x10, &mut [0u8; 0x11]),
            Err(GpadlError::OutOfBounds { .. })
        ));
        assert!(matches!(
            r.write(&m, u64::MAX, &[0]),
            Err(GpadlError::OutOfBounds { .. })
        ));
    }

    #[test]
    fn ring_pages_need_one_whole_page_range() {
        let g = Gpadl {
            ranges: vec![GpaRange {
                byte_count: 0x2000,
                byte_offset: 0,
                pfns: vec![1, 2],
            }],
        };
        assert_eq!(g.ring_pages().unwrap(), &[1, 2]);
        let mut bad = g.clone();
        bad.ranges[0].byte_count = 0x1fff;
        assert!(bad.ring_pages().is_err());
        let mut two = g.clone();
        two.ranges.push(g.ranges[0].clone());
        assert!(two.ring_pages().is_err());
    }
}
