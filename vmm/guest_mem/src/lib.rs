//! Guest physical memory: one checked, cloneable handle that the VMM, its devices and both CPU
//! backends share.
//!
//! # Architecture
//! All guest RAM and ROM lives in a single anonymous host mapping. A [`GuestMemory`] knows the
//! guest-physical layout (a short, sorted list of [`Region`]s) and maps a guest-physical address
//! (GPA) to a *host offset* into that mapping. Two ways in:
//!
//! - the checked byte API ([`GuestMemory::read_at`], [`GuestMemory::write_at`],
//!   [`GuestMemory::read_plain`], ...): takes a GPA, validates the whole range, never panics;
//!   for devices, loaders and tests;
//! - the offset API ([`GuestMemory::translate`] once, then [`GuestMemory::load`] /
//!   [`GuestMemory::store`] / [`GuestMemory::cmpxchg`] many times): for CPU emulators, whose
//!   TLB caches the translation. Each access is still bounds checked (one compare); an
//!   out-of-range offset reads all-ones and drops writes instead of touching host memory.
//!
//! # Code-page tracking
//! A CPU emulator that caches decoded instructions marks the pages it decoded with
//! [`GuestMemory::mark_code`]. Any later write to such a page, by any vCPU or by a device
//! (DMA through [`GuestMemory::write_at`]), bumps the page's generation, which the emulator
//! compares before it reuses its cache. Stores report this through [`StoreResult`].
//!
//! # Concurrency
//! Guest memory is shared between vCPU threads and device threads exactly like RAM is shared
//! between processors: aligned accesses are single atomic (relaxed) loads/stores, locked
//! read-modify-write operations use host atomics ([`GuestMemory::cmpxchg`],
//! [`GuestMemory::swap`]). This crate holds all the unsafe code for guest memory.

#![expect(
    unsafe_code,
    reason = "this crate owns the host mapping of guest memory"
)]

use std::ops::Range;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::AtomicU16;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;

/// Size of a guest page as the tracking here sees it.
pub const PAGE_SIZE: u64 = 4096;
const PAGE_SHIFT: u32 = 12;

const FLAG_CODE: u8 = 1;
const FLAG_READONLY: u8 = 2;

/// What a region of guest-physical space is backed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// Ordinary RAM, readable and writable by the guest.
    Ram,
    /// Read-only memory (firmware images): guest writes are dropped.
    Rom,
}

/// One contiguous range of guest-physical address space backed by host memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First guest-physical address.
    pub gpa: u64,
    /// Length in bytes (a multiple of [`PAGE_SIZE`]).
    pub len: u64,
    /// Offset of this region inside the host mapping.
    pub host_offset: u64,
    /// RAM or ROM.
    pub kind: RegionKind,
}

impl Region {
    /// The guest-physical range this region covers.
    pub fn range(&self) -> Range<u64> {
        self.gpa..self.gpa + self.len
    }
}

/// Errors of the checked API.
#[derive(Debug, thiserror::Error)]
pub enum GuestMemoryError {
    /// Some byte of the range is not backed by guest RAM or ROM.
    #[error("guest physical range {gpa:#x}+{len:#x} is not backed by memory")]
    OutOfRange {
        /// Start of the access.
        gpa: u64,
        /// Length of the access.
        len: u64,
    },
    /// A write hit a read-only region.
    #[error("guest physical range {gpa:#x}+{len:#x} is read-only")]
    ReadOnly {
        /// Start of the access.
        gpa: u64,
        /// Length of the access.
        len: u64,
    },
    /// The requested layout is unusable.
    #[error("invalid memory layout: {0}")]
    InvalidLayout(String),
    /// The host refused the mapping.
    #[error("cannot map {len:#x} bytes of guest memory")]
    Map {
        /// Requested size.
        len: u64,
        /// Host error.
        #[source]
        source: std::io::Error,
    },
}

/// Where a GPA lives in the host mapping, as returned by [`GuestMemory::translate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLocation {
    /// Host offset of the translated address.
    pub offset: u64,
    /// Bytes from `offset` to the end of the region (always at least 1).
    pub available: u64,
    /// Whether guest writes are allowed.
    pub writable: bool,
}

/// Outcome of a store through the offset API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreResult {
    /// Stored; no decoded code was affected.
    Stored,
    /// Stored, and the page held decoded code whose cache is now stale.
    CodeInvalidated,
    /// Dropped: the page is read-only (ROM) or the offset is out of range.
    Dropped,
}

/// Width of an offset-API access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// 1 byte.
    U8 = 1,
    /// 2 bytes.
    U16 = 2,
    /// 4 bytes.
    U32 = 4,
    /// 8 bytes.
    U64 = 8,
}

impl Width {
    /// Width of an access of `bytes` bytes (1, 2, 4 or 8).
    pub fn from_bytes(bytes: usize) -> Option<Width> {
        Some(match bytes {
            1 => Width::U8,
            2 => Width::U16,
            4 => Width::U32,
            8 => Width::U64,
            _ => return None,
        })
    }

    /// Number of bytes.
    pub fn bytes(self) -> u64 {
        self as u64
    }
}

struct Mapping {
    // Keeps the mapping alive; all access goes through `base`.
    _map: memmap2::MmapMut,
    base: NonNull<u8>,
    len: u64,
}

// SAFETY: the mapping is plain anonymous memory; every access goes through this crate's
// methods, which use atomic or unaligned raw-pointer accesses within bounds.
unsafe impl Send for Mapping {}
// SAFETY: as above; concurrent access from several threads is the model (shared RAM).
unsafe impl Sync for Mapping {}

struct Inner {
    map: Mapping,
    regions: Vec<Region>,
    page_flags: Box<[AtomicU8]>,
    page_generation: Box<[AtomicU32]>,
    /// Bumped after any page generation changes (see [`GuestMemory::code_epoch`]).
    code_epoch: AtomicU64,
}

/// A cloneable handle to the guest's physical memory. Clones share the same memory.
#[derive(Clone)]
pub struct GuestMemory {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestMemory")
            .field("regions", &self.inner.regions)
            .finish()
    }
}

/// Serializes locked operations that straddle an atomic boundary (split locks).
static SPLIT_LOCK: Mutex<()> = Mutex::new(());

impl GuestMemory {
    /// Builds guest memory with the given layout. `layout` holds `(gpa, len, kind)`; ranges must
    /// be page aligned and must not overlap. Host memory is allocated lazily on first touch.
    pub fn new(layout: &[(u64, u64, RegionKind)]) -> Result<Self, GuestMemoryError> {
        let mut sorted: Vec<_> = layout.to_vec();
        sorted.sort_by_key(|r| r.0);
        let mut regions = Vec::with_capacity(sorted.len());
        let mut host_offset = 0u64;
        let mut prev_end = 0u64;
        for (i, &(gpa, len, kind)) in sorted.iter().enumerate() {
            if len == 0 || gpa % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 {
                return Err(GuestMemoryError::InvalidLayout(format!(
                    "region {gpa:#x}+{len:#x} is empty or not page aligned"
                )));
            }
            let end = gpa.checked_add(len).ok_or_else(|| {
                GuestMemoryError::InvalidLayout(format!("region {gpa:#x}+{len:#x} wraps"))
            })?;
            if i > 0 && gpa < prev_end {
                return Err(GuestMemoryError::InvalidLayout(format!(
                    "region {gpa:#x}+{len:#x} overlaps the previous one"
                )));
            }
            prev_end = end;
            regions.push(Region {
                gpa,
                len,
                host_offset,
                kind,
            });
            host_offset += len;
        }
        if host_offset == 0 {
            return Err(GuestMemoryError::InvalidLayout("no memory".into()));
        }
        let total = host_offset;
        let map_len = usize::try_from(total)
            .map_err(|_| GuestMemoryError::InvalidLayout("too large for this host".into()))?;
        let mut map = memmap2::MmapOptions::new()
            .len(map_len)
            .map_anon()
            .map_err(|source| GuestMemoryError::Map { len: total, source })?;
        let base = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
        let pages = (total / PAGE_SIZE) as usize;
        let page_flags: Box<[AtomicU8]> = (0..pages).map(|_| AtomicU8::new(0)).collect();
        let page_generation: Box<[AtomicU32]> = (0..pages).map(|_| AtomicU32::new(0)).collect();
        for r in &regions {
            if r.kind == RegionKind::Rom {
                let first = (r.host_offset / PAGE_SIZE) as usize;
                for f in &page_flags[first..first + (r.len / PAGE_SIZE) as usize] {
                    f.store(FLAG_READONLY, Ordering::Relaxed);
                }
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                map: Mapping {
                    _map: map,
                    base,
                    len: total,
                },
                regions,
                page_flags,
                page_generation,
                code_epoch: AtomicU64::new(0),
            }),
        })
    }

    /// RAM of `size` bytes (rounded up to a page) at GPA 0: for tests, fuzzers and tools.
    pub fn allocate(size: u64) -> Self {
        let len = size.max(1).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        Self::new(&[(0, len, RegionKind::Ram)]).expect("a single aligned region is valid")
    }

    /// The layout, sorted by GPA.
    pub fn regions(&self) -> &[Region] {
        &self.inner.regions
    }

    /// Total bytes of host memory behind the guest (RAM + ROM).
    pub fn host_len(&self) -> u64 {
        self.inner.map.len
    }

    /// Start of the host mapping, for hypervisor APIs that map guest memory (KVM memory slots).
    /// Region `r` lives at `host_base() + r.host_offset`. Dereferencing the pointer is the
    /// caller's responsibility; safe code never needs it.
    pub fn host_base(&self) -> *mut u8 {
        self.inner.map.base.as_ptr()
    }

    fn region_of(&self, gpa: u64) -> Option<&Region> {
        self.inner
            .regions
            .iter()
            .find(|r| gpa >= r.gpa && gpa - r.gpa < r.len)
    }

    /// Translates a GPA into the host mapping. `None` when the address is not backed by memory
    /// (MMIO or a hole).
    #[inline]
    pub fn translate(&self, gpa: u64) -> Option<HostLocation> {
        let r = self.region_of(gpa)?;
        let within = gpa - r.gpa;
        Some(HostLocation {
            offset: r.host_offset + within,
            available: r.len - within,
            writable: r.kind == RegionKind::Ram,
        })
    }

    /// Whether every byte of `gpa..gpa+len` is backed by memory.
    pub fn is_backed(&self, gpa: u64, len: u64) -> bool {
        self.checked_range(gpa, len, false).is_ok()
    }

    /// Validates `gpa..gpa+len` as one contiguous host range; returns its host offset.
    fn checked_range(&self, gpa: u64, len: u64, write: bool) -> Result<u64, GuestMemoryError> {
        if len == 0 {
            return Ok(self.translate(gpa).map_or(0, |l| l.offset));
        }
        let oor = || GuestMemoryError::OutOfRange { gpa, len };
        let loc = self.translate(gpa).ok_or_else(oor)?;
        if loc.available < len {
            // Adjacent regions are not necessarily adjacent in the host mapping.
            return Err(oor());
        }
        if write && !loc.writable {
            return Err(GuestMemoryError::ReadOnly { gpa, len });
        }
        Ok(loc.offset)
    }

    #[inline]
    fn ptr(&self, offset: u64) -> *mut u8 {
        // SAFETY: callers check `offset` (plus access size) against the mapping length first.
        unsafe { self.inner.map.base.as_ptr().add(offset as usize) }
    }

    #[inline]
    fn in_bounds(&self, offset: u64, len: u64) -> bool {
        offset
            .checked_add(len)
            .is_some_and(|end| end <= self.inner.map.len)
    }

    /// Reads `buf.len()` bytes at `gpa`.
    pub fn read_at(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        let off = self.checked_range(gpa, buf.len() as u64, false)?;
        self.copy_out(off, buf);
        Ok(())
    }

    /// Writes `buf` at `gpa` (device DMA, loaders). Fails on ROM; use [`Self::load_image`] to
    /// place firmware there.
    pub fn write_at(&self, gpa: u64, buf: &[u8]) -> Result<(), GuestMemoryError> {
        let off = self.checked_range(gpa, buf.len() as u64, true)?;
        self.copy_in(off, buf);
        Ok(())
    }

    /// Writes `buf` at `gpa` even if the range is ROM: for loaders placing firmware images.
    pub fn load_image(&self, gpa: u64, buf: &[u8]) -> Result<(), GuestMemoryError> {
        let off = self.checked_range(gpa, buf.len() as u64, false)?;
        self.copy_in(off, buf);
        Ok(())
    }

    /// Fills `len` bytes at `gpa` with `value`.
    pub fn fill_at(&self, gpa: u64, value: u8, len: u64) -> Result<(), GuestMemoryError> {
        let off = self.checked_range(gpa, len, true)?;
        // SAFETY: `checked_range` proved `off..off+len` lies inside the mapping.
        unsafe { std::ptr::write_bytes(self.ptr(off), value, len as usize) };
        self.invalidate_range(off, len);
        Ok(())
    }

    /// Reads a plain-data value at `gpa`.
    pub fn read_plain<T: FromBytes + IntoBytes>(&self, gpa: u64) -> Result<T, GuestMemoryError> {
        let mut v = T::new_zeroed();
        self.read_at(gpa, v.as_mut_bytes())?;
        Ok(v)
    }

    /// Writes a plain-data value at `gpa`.
    pub fn write_plain<T: IntoBytes + Immutable>(
        &self,
        gpa: u64,
        value: &T,
    ) -> Result<(), GuestMemoryError> {
        self.write_at(gpa, value.as_bytes())
    }

    /// Copies bytes out of the mapping at a host offset. Out-of-range bytes read as 0xff.
    pub fn copy_out(&self, offset: u64, buf: &mut [u8]) {
        if !self.in_bounds(offset, buf.len() as u64) {
            buf.fill(0xff);
            return;
        }
        // SAFETY: bounds checked above; `buf` is a distinct host buffer. Concurrent guest writes
        // may tear the copy, as they would on real hardware.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr(offset), buf.as_mut_ptr(), buf.len()) };
    }

    fn copy_in(&self, offset: u64, buf: &[u8]) {
        if !self.in_bounds(offset, buf.len() as u64) {
            return;
        }
        // SAFETY: bounds checked above; `buf` is a distinct host buffer.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), self.ptr(offset), buf.len()) };
        self.invalidate_range(offset, buf.len() as u64);
    }

    fn invalidate_range(&self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = offset >> PAGE_SHIFT;
        let last = (offset + len - 1) >> PAGE_SHIFT;
        for page in first..=last {
            self.invalidate_page(page as usize);
        }
    }

    #[inline]
    fn invalidate_page(&self, page: usize) -> bool {
        let Some(flags) = self.inner.page_flags.get(page) else {
            return false;
        };
        if flags.load(Ordering::Relaxed) & FLAG_CODE != 0 {
            flags.fetch_and(!FLAG_CODE, Ordering::AcqRel);
            self.inner.page_generation[page].fetch_add(1, Ordering::AcqRel);
            self.inner.code_epoch.fetch_add(1, Ordering::Release);
            return true;
        }
        false
    }

    /// Loads `width` bytes (zero-extended) at a host offset from [`Self::translate`].
    /// Out-of-range offsets read as all-ones.
    #[inline]
    pub fn load(&self, offset: u64, width: Width) -> u64 {
        if !self.in_bounds(offset, width.bytes()) {
            return u64::MAX >> (64 - 8 * width.bytes());
        }
        let p = self.ptr(offset);
        let aligned = (offset & (width.bytes() - 1)) == 0;
        // SAFETY: `p..p+width` is inside the mapping (checked above). Aligned accesses use
        // atomics because other threads may write concurrently; unaligned ones are split
        // reads, which x86 also does not guarantee to be atomic.
        unsafe {
            match (width, aligned) {
                (Width::U8, _) => AtomicU8::from_ptr(p).load(Ordering::Relaxed) as u64,
                (Width::U16, true) => AtomicU16::from_ptr(p.cast()).load(Ordering::Relaxed) as u64,
                (Width::U32, true) => AtomicU32::from_ptr(p.cast()).load(Ordering::Relaxed) as u64,
                (Width::U64, true) => AtomicU64::from_ptr(p.cast()).load(Ordering::Relaxed),
                (Width::U16, false) => p.cast::<u16>().read_unaligned() as u64,
                (Width::U32, false) => p.cast::<u32>().read_unaligned() as u64,
                (Width::U64, false) => p.cast::<u64>().read_unaligned(),
            }
        }
    }

    #[inline]
    fn store_flags(&self, offset: u64, width: Width) -> Option<bool> {
        // Returns None when the store must be dropped, Some(code_hit) otherwise.
        if !self.in_bounds(offset, width.bytes()) {
            return None;
        }
        let page = (offset >> PAGE_SHIFT) as usize;
        let last = ((offset + width.bytes() - 1) >> PAGE_SHIFT) as usize;
        let mut code = false;
        for p in page..=last {
            let f = self.inner.page_flags[p].load(Ordering::Relaxed);
            if f & FLAG_READONLY != 0 {
                return None;
            }
            if f & FLAG_CODE != 0 {
                code = true;
            }
        }
        Some(code)
    }

    /// [`Self::store`] for an access the caller knows stays inside one page (a software
    /// TLB hit): one flags check on the fast path; anything else takes the general path.
    #[inline(always)]
    pub fn store_in_page(&self, offset: u64, width: Width, value: u64) -> StoreResult {
        let page = (offset >> PAGE_SHIFT) as usize;
        let plain = self
            .inner
            .page_flags
            .get(page)
            .is_some_and(|f| f.load(Ordering::Relaxed) & (FLAG_READONLY | FLAG_CODE) == 0);
        if !plain || (offset & (PAGE_SIZE - 1)) + width.bytes() > PAGE_SIZE {
            return self.store_general(offset, width, value);
        }
        self.put(offset, width, value);
        StoreResult::Stored
    }

    /// Writes the low `width` bytes of `value` at `offset`, which the caller has checked:
    /// `offset + width` is inside the mapping. Panics (never writes out of bounds) otherwise.
    #[inline(always)]
    fn put(&self, offset: u64, width: Width, value: u64) {
        assert!(
            self.in_bounds(offset, width.bytes()),
            "guest_mem: unchecked store"
        );
        let p = self.ptr(offset);
        let aligned = (offset & (width.bytes() - 1)) == 0;
        // SAFETY: `p..p+width` is inside the mapping (asserted above). Aligned stores are
        // atomic because other threads may access the same memory; see `load`.
        unsafe {
            match (width, aligned) {
                (Width::U8, _) => AtomicU8::from_ptr(p).store(value as u8, Ordering::Relaxed),
                (Width::U16, true) => {
                    AtomicU16::from_ptr(p.cast()).store(value as u16, Ordering::Relaxed)
                }
                (Width::U32, true) => {
                    AtomicU32::from_ptr(p.cast()).store(value as u32, Ordering::Relaxed)
                }
                (Width::U64, true) => AtomicU64::from_ptr(p.cast()).store(value, Ordering::Relaxed),
                (Width::U16, false) => p.cast::<u16>().write_unaligned(value as u16),
                (Width::U32, false) => p.cast::<u32>().write_unaligned(value as u32),
                (Width::U64, false) => p.cast::<u64>().write_unaligned(value),
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn store_general(&self, offset: u64, width: Width, value: u64) -> StoreResult {
        self.store(offset, width, value)
    }

    /// Stores the low `width` bytes of `value` at a host offset from [`Self::translate`].
    #[inline]
    pub fn store(&self, offset: u64, width: Width, value: u64) -> StoreResult {
        let Some(code) = self.store_flags(offset, width) else {
            return StoreResult::Dropped;
        };
        self.put(offset, width, value);
        if code {
            self.invalidate_range(offset, width.bytes());
            StoreResult::CodeInvalidated
        } else {
            StoreResult::Stored
        }
    }

    /// Atomic compare-and-exchange at a host offset (x86 `LOCK CMPXCHG` and the base of every
    /// locked read-modify-write). Returns `Ok(old)` when the value matched and `new` was stored,
    /// `Err(current)` otherwise. A dropped store (ROM) reports `Err(current)` too.
    #[inline]
    pub fn cmpxchg(&self, offset: u64, width: Width, expected: u64, new: u64) -> Result<u64, u64> {
        let Some(code) = self.store_flags(offset, width) else {
            return Err(self.load(offset, width));
        };
        let p = self.ptr(offset);
        let aligned = (offset & (width.bytes() - 1)) == 0;
        let r = if aligned {
            // SAFETY: in bounds and naturally aligned for the atomic type.
            unsafe {
                match width {
                    Width::U8 => AtomicU8::from_ptr(p)
                        .compare_exchange(
                            expected as u8,
                            new as u8,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        )
                        .map(u64::from)
                        .map_err(u64::from),
                    Width::U16 => AtomicU16::from_ptr(p.cast())
                        .compare_exchange(
                            expected as u16,
                            new as u16,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        )
                        .map(u64::from)
                        .map_err(u64::from),
                    Width::U32 => AtomicU32::from_ptr(p.cast())
                        .compare_exchange(
                            expected as u32,
                            new as u32,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        )
                        .map(u64::from)
                        .map_err(u64::from),
                    Width::U64 => AtomicU64::from_ptr(p.cast()).compare_exchange(
                        expected,
                        new,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    ),
                }
            }
        } else {
            // Split lock: serialize against other split locks.
            let _guard = SPLIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let cur = self.load(offset, width);
            if cur == expected {
                self.store(offset, width, new);
                Ok(cur)
            } else {
                Err(cur)
            }
        };
        if code && r.is_ok() {
            self.invalidate_range(offset, width.bytes());
        }
        r
    }

    /// Atomic exchange at a host offset (x86 `XCHG` with memory). Returns the old value.
    pub fn swap(&self, offset: u64, width: Width, new: u64) -> u64 {
        let mut cur = self.load(offset, width);
        loop {
            match self.cmpxchg(offset, width, cur, new) {
                Ok(old) => return old,
                Err(now) if now == cur => return now, // dropped (ROM): nothing stored
                Err(now) => cur = now,
            }
        }
    }

    /// Marks the page holding `offset` as containing decoded code and returns its current
    /// generation. A later write to the page changes the generation.
    pub fn mark_code(&self, offset: u64) -> u32 {
        let page = (offset >> PAGE_SHIFT) as usize;
        let Some(flags) = self.inner.page_flags.get(page) else {
            return 0;
        };
        flags.fetch_or(FLAG_CODE, Ordering::AcqRel);
        self.inner.page_generation[page].load(Ordering::Acquire)
    }

    /// A counter bumped after any page's generation changes: while it is unchanged, every
    /// generation a CPU emulator recorded is still current, so it can validate all its cached
    /// code with one load instead of one per page.
    #[inline]
    pub fn code_epoch(&self) -> u64 {
        self.inner.code_epoch.load(Ordering::Acquire)
    }

    /// Generation of the page holding `offset` (see [`Self::mark_code`]).
    #[inline]
    pub fn page_generation(&self, offset: u64) -> u32 {
        let page = (offset >> PAGE_SHIFT) as usize;
        self.inner
            .page_generation
            .get(page)
            .map_or(u32::MAX, |g| g.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_regions() -> GuestMemory {
        GuestMemory::new(&[
            (0, 0x10000, RegionKind::Ram),
            (0x10_0000, 0x2000, RegionKind::Rom),
        ])
        .unwrap()
    }

    #[test]
    fn read_write_round_trip_and_bounds() {
        let m = two_regions();
        m.write_at(0x1ffe, &[1, 2, 3, 4]).unwrap();
        let mut b = [0u8; 4];
        m.read_at(0x1ffe, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(matches!(
            m.read_at(0xfffe, &mut b),
            Err(GuestMemoryError::OutOfRange {
                gpa: 0xfffe,
                len: 4
            })
        ));
        assert!(m.read_at(u64::MAX - 1, &mut b).is_err());
        assert!(m.translate(0x20000).is_none());
    }

    #[test]
    fn rom_rejects_guest_writes_but_accepts_images() {
        let m = two_regions();
        assert!(matches!(
            m.write_at(0x10_0000, &[1]),
            Err(GuestMemoryError::ReadOnly { .. })
        ));
        m.load_image(0x10_0000, &[0xaa, 0xbb]).unwrap();
        let loc = m.translate(0x10_0000).unwrap();
        assert!(!loc.writable);
        assert_eq!(m.store(loc.offset, Width::U8, 0), StoreResult::Dropped);
        assert_eq!(m.load(loc.offset, Width::U16), 0xbbaa);
    }

    #[test]
    fn offset_api_is_bounds_checked() {
        let m = GuestMemory::allocate(4096);
        assert_eq!(m.load(4093, Width::U32), 0xffff_ffff);
        assert_eq!(m.store(4093, Width::U32, 1), StoreResult::Dropped);
        assert_eq!(m.store(4092, Width::U32, 0x1234_5678), StoreResult::Stored);
        assert_eq!(m.load(4092, Width::U32), 0x1234_5678);
        assert_eq!(m.load(4093, Width::U16), 0x3456);
    }

    #[test]
    fn writes_to_code_pages_bump_generation() {
        let m = GuestMemory::allocate(0x3000);
        let g = m.mark_code(0x1000);
        assert_eq!(m.store(0x0ff8, Width::U64, 1), StoreResult::Stored);
        assert_eq!(m.store(0x1ffc, Width::U64, 1), StoreResult::CodeInvalidated);
        assert_ne!(m.page_generation(0x1000), g);
        let g = m.mark_code(0x1000);
        let e = m.code_epoch();
        m.write_at(0x1800, &[0x90]).unwrap();
        assert_ne!(m.page_generation(0x1000), g);
        assert_ne!(m.code_epoch(), e);
        let e = m.code_epoch();
        m.write_at(0x1800, &[0x90]).unwrap();
        assert_eq!(
            m.code_epoch(),
            e,
            "pages not marked as code do not bump the epoch"
        );
    }

    #[test]
    fn cmpxchg_aligned_and_split() {
        let m = GuestMemory::allocate(0x2000);
        assert_eq!(m.cmpxchg(8, Width::U64, 0, 5), Ok(0));
        assert_eq!(m.cmpxchg(8, Width::U64, 0, 6), Err(5));
        assert_eq!(m.cmpxchg(0xffe, Width::U32, 0, 7), Ok(0));
        assert_eq!(m.load(0xffe, Width::U32), 7);
        assert_eq!(m.swap(8, Width::U64, 9), 5);
        assert_eq!(m.load(8, Width::U64), 9);
    }

    #[test]
    fn plain_values() {
        let m = GuestMemory::allocate(0x1000);
        m.write_plain(0x10, &0xdead_beef_u32).unwrap();
        assert_eq!(m.read_plain::<u32>(0x10).unwrap(), 0xdead_beef);
        assert!(m.read_plain::<u64>(0xffc).is_err());
    }

    #[test]
    fn invalid_layouts_are_errors() {
        assert!(GuestMemory::new(&[]).is_err());
        assert!(GuestMemory::new(&[(0, 100, RegionKind::Ram)]).is_err());
        assert!(
            GuestMemory::new(&[
                (0, 0x2000, RegionKind::Ram),
                (0x1000, 0x1000, RegionKind::Ram)
            ])
            .is_err()
        );
    }
}
