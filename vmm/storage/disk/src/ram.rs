//! RAM disks (`mem:`) and RAM differencing layers (`memdiff:`).
//!
//! Written sectors live in 128-sector chunks (64 KiB with 512-byte sectors), each with a
//! 128-bit mask of the sectors it holds. A read copies the sectors a chunk holds and takes the
//! rest from the lower disk (or zeros for `mem:`); a write never reads the lower disk. Chunks
//! are spread over 16 independently locked maps, so concurrent requests to different areas do
//! not contend. Memory grows only with what the guest writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use parking_lot::RwLock;

use crate::Disk;
use crate::DiskError;
use crate::DiskErrorKind;
use crate::DiskId;
use crate::check_request;
use crate::check_sectors;

const CHUNK_SECTORS: u64 = 128;
const SHARDS: u64 = 16;

/// Counts RAM disks so that each gets a distinct, run-to-run stable identity.
static RAM_DISKS: AtomicU64 = AtomicU64::new(0);

struct Chunk {
    /// Bit `i` set: sector `i` of the chunk is in `data`.
    present: u128,
    data: Box<[u8]>,
}

/// A RAM layer: writes stay in memory; unwritten sectors read from the lower disk, or as
/// zeros when there is none.
pub struct RamLayer {
    lower: Option<Arc<dyn Disk>>,
    sector_size: u32,
    sectors: u64,
    id: DiskId,
    shards: Box<[RwLock<HashMap<u64, Chunk>>]>,
}

impl std::fmt::Debug for RamLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RamLayer")
            .field("sectors", &self.sectors)
            .field("sector_size", &self.sector_size)
            .field("lower", &self.lower)
            .finish_non_exhaustive()
    }
}

/// The sector runs of `first..first + count` within a chunk, split by presence in `mask`.
fn runs(mask: u128, first: u64, count: u64) -> impl Iterator<Item = (u64, u64, bool)> {
    let present = move |i: u64| mask & (1u128 << i) != 0;
    let mut at = first;
    let end = first + count;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let start = at;
        let p = present(at);
        while at < end && present(at) == p {
            at += 1;
        }
        Some((start, at, p))
    })
}

fn range_mask(first: u64, count: u64) -> u128 {
    if count >= 128 {
        u128::MAX
    } else {
        ((1u128 << count) - 1) << first
    }
}

impl RamLayer {
    /// A zero-filled RAM disk of `size` bytes.
    pub fn new_zeroed(size: u64, sector_size: u32) -> Result<Self, DiskError> {
        if size == 0 || !size.is_multiple_of(u64::from(sector_size)) {
            return Err(DiskError::new(
                DiskErrorKind::InvalidArgument,
                format!(
                    "RAM disk of {size} bytes is not a whole number of {sector_size}-byte sectors"
                ),
            ));
        }
        let n = RAM_DISKS.fetch_add(1, Ordering::Relaxed);
        let mut seed = b"agar mem disk".to_vec();
        seed.extend_from_slice(&size.to_le_bytes());
        seed.extend_from_slice(&n.to_le_bytes());
        Ok(Self::build(
            None,
            sector_size,
            size / u64::from(sector_size),
            DiskId::from_hash(&seed),
        ))
    }

    /// A differencing layer over `lower`, which it only ever reads.
    pub fn over(lower: Arc<dyn Disk>) -> Self {
        let (sector_size, sectors, id) =
            (lower.sector_size(), lower.sector_count(), lower.disk_id());
        Self::build(Some(lower), sector_size, sectors, id)
    }

    fn build(lower: Option<Arc<dyn Disk>>, sector_size: u32, sectors: u64, id: DiskId) -> Self {
        Self {
            lower,
            sector_size,
            sectors,
            id,
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }

    /// The disk under this layer.
    pub fn lower(&self) -> Option<&Arc<dyn Disk>> {
        self.lower.as_ref()
    }

    /// Bytes of guest data held in memory.
    pub fn resident_bytes(&self) -> u64 {
        let chunk_bytes = CHUNK_SECTORS * u64::from(self.sector_size);
        self.shards
            .iter()
            .map(|s| s.read().len() as u64 * chunk_bytes)
            .sum()
    }

    fn shard(&self, chunk: u64) -> &RwLock<HashMap<u64, Chunk>> {
        &self.shards[(chunk % SHARDS) as usize]
    }

    /// Calls `f(chunk, first sector in chunk, sector count, byte range in the buffer)` for
    /// each chunk a request covers.
    fn for_each_chunk(
        &self,
        sector: u64,
        len: usize,
        mut f: impl FnMut(u64, u64, u64, std::ops::Range<usize>) -> Result<(), DiskError>,
    ) -> Result<(), DiskError> {
        let ss = self.sector_size as usize;
        let mut done = 0usize;
        let mut s = sector;
        while done < len {
            let chunk = s / CHUNK_SECTORS;
            let first = s % CHUNK_SECTORS;
            let n = (CHUNK_SECTORS - first).min(((len - done) / ss) as u64);
            let bytes = n as usize * ss;
            f(chunk, first, n, done..done + bytes)?;
            done += bytes;
            s += n;
        }
        Ok(())
    }

    fn read_lower(&self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        match &self.lower {
            Some(lower) => lower.read(sector, buf),
            None => {
                buf.fill(0);
                Ok(())
            }
        }
    }
}

impl Disk for RamLayer {
    fn sector_size(&self) -> u32 {
        self.sector_size
    }

    fn physical_sector_size(&self) -> u32 {
        self.lower
            .as_ref()
            .map_or(self.sector_size, |l| l.physical_sector_size())
    }

    fn sector_count(&self) -> u64 {
        self.sectors
    }

    fn is_read_only(&self) -> bool {
        false
    }

    fn disk_id(&self) -> DiskId {
        self.id
    }

    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_request(self, sector, buf.len())?;
        let ss = self.sector_size as usize;
        self.for_each_chunk(sector, buf.len(), |chunk, first, n, range| {
            let piece = &mut buf[range];
            let mask = {
                let shard = self.shard(chunk).read();
                match shard.get(&chunk) {
                    Some(c) => {
                        for (a, b, present) in runs(c.present, first, n) {
                            if present {
                                let (pa, pb) =
                                    ((a - first) as usize * ss, (b - first) as usize * ss);
                                piece[pa..pb]
                                    .copy_from_slice(&c.data[a as usize * ss..b as usize * ss]);
                            }
                        }
                        c.present
                    }
                    None => 0,
                }
            };
            for (a, b, present) in runs(mask, first, n) {
                if !present {
                    let (pa, pb) = ((a - first) as usize * ss, (b - first) as usize * ss);
                    self.read_lower(chunk * CHUNK_SECTORS + a, &mut piece[pa..pb])?;
                }
            }
            Ok(())
        })
    }

    fn write(&self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
        check_request(self, sector, buf.len())?;
        let ss = self.sector_size as usize;
        let chunk_bytes = CHUNK_SECTORS as usize * ss;
        self.for_each_chunk(sector, buf.len(), |chunk, first, n, range| {
            let mut shard = self.shard(chunk).write();
            let c = shard.entry(chunk).or_insert_with(|| Chunk {
                present: 0,
                data: vec![0; chunk_bytes].into_boxed_slice(),
            });
            let at = first as usize * ss;
            c.data[at..at + range.len()].copy_from_slice(&buf[range]);
            c.present |= range_mask(first, n);
            Ok(())
        })
    }

    fn flush(&self) -> Result<(), DiskError> {
        Ok(())
    }

    fn unmap(&self, sector: u64, count: u64) -> Result<(), DiskError> {
        check_sectors(self, sector, count)?;
        let mut s = sector;
        let end = sector + count;
        while s < end {
            let chunk = s / CHUNK_SECTORS;
            let first = s % CHUNK_SECTORS;
            let n = (CHUNK_SECTORS - first).min(end - s);
            let mut shard = self.shard(chunk).write();
            if let Some(c) = shard.get_mut(&chunk) {
                c.present &= !range_mask(first, n);
                if c.present == 0 {
                    shard.remove(&chunk);
                }
            }
            s += n;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match &self.lower {
            Some(lower) => format!("memdiff over {}", lower.describe()),
            None => "mem".to_string(),
        }
    }
}
