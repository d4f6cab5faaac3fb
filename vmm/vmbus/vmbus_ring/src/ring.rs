//! One VMBus ring buffer: a 4 KiB control page followed by a circular data area, shared with
//! the guest. Both directions use the same layout; [`IncomingRing`] consumes packets and
//! [`OutgoingRing`] produces them. The host uses an incoming ring for the guest's "outbound"
//! (upstream) ring and an outgoing ring for its "inbound" (downstream) ring; a guest-side
//! client uses them the other way round.
//!
//! # Control page
//! | offset | field | written by |
//! |---|---|---|
//! | 0 | write_index (byte offset into the data area) | producer |
//! | 4 | read_index | consumer |
//! | 8 | interrupt_mask (1: consumer is polling, do not signal) | consumer |
//! | 12 | pending_send_sz (producer: signal me when this many bytes are free) | producer |
//! | 64 | feature bits (bit 0: pending_send_sz supported) | guest |
//!
//! # Trust
//! The other side may scribble on the control page at any time. Each side keeps its own
//! index in host state and only *reads* the peer's index, which is validated (below the data
//! size, 8-byte aligned) on every use; a bad value is [`RingError::CorruptIndex`] and the
//! channel is unusable, but no access ever leaves the ring's pages.

use std::sync::atomic::Ordering;
use std::sync::atomic::fence;

use guest_mem::GuestMemory;
use guest_mem::Width;

use crate::gpadl::GpadlError;
use crate::gpadl::PAGE_SIZE;
use crate::gpadl::check_ram_pages;
use crate::gpadl::pfn_to_gpa;

const WRITE_INDEX: u64 = 0;
const READ_INDEX: u64 = 4;
const INTERRUPT_MASK: u64 = 8;
const PENDING_SEND_SIZE: u64 = 12;
const FEATURE_BITS: u64 = 64;
/// Feature bit 0: the consumer honours pending_send_sz.
pub const FEATURE_PENDING_SEND_SIZE: u32 = 1;
/// Bytes after each packet: the producer's write index before the packet, in the high half.
pub const TRAILER_SIZE: u32 = 8;
/// Most pages one ring may have (control page included): 64 MiB.
pub const MAX_RING_PAGES: usize = 16384;

/// A ring is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The page list is not a usable ring.
    #[error("invalid ring pages")]
    Pages(#[from] GpadlError),
    /// Too few or too many pages.
    #[error("ring of {0} pages is not supported")]
    BadSize(usize),
    /// The peer wrote an impossible index.
    #[error("corrupt {which} index {value:#x} (data size {size:#x})")]
    CorruptIndex {
        /// Which index.
        which: &'static str,
        /// Its value.
        value: u32,
        /// Data area size.
        size: u32,
    },
    /// The next packet's descriptor is inconsistent.
    #[error("malformed packet: {0}")]
    BadPacket(&'static str),
}

/// The pages of one ring, validated as guest RAM.
#[derive(Debug, Clone)]
pub struct RingPages {
    memory: GuestMemory,
    control: u64,
    data: Vec<u64>,
    size: u32,
}

impl RingPages {
    /// A ring over `pfns` (control page first). Every page must be writable guest RAM.
    pub fn new(memory: &GuestMemory, pfns: &[u64]) -> Result<Self, RingError> {
        if pfns.len() < 2 || pfns.len() > MAX_RING_PAGES {
            return Err(RingError::BadSize(pfns.len()));
        }
        check_ram_pages(memory, pfns)?;
        let gpas = pfns
            .iter()
            .map(|&p| pfn_to_gpa(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            memory: memory.clone(),
            control: gpas[0],
            data: gpas[1..].to_vec(),
            size: ((pfns.len() - 1) as u64 * PAGE_SIZE) as u32,
        })
    }

    /// Data area size in bytes.
    pub fn data_size(&self) -> u32 {
        self.size
    }

    fn control_offset(&self, field: u64) -> Option<u64> {
        self.memory
            .translate(self.control + field)
            .map(|l| l.offset)
    }

    fn load(&self, field: u64) -> u32 {
        match self.control_offset(field) {
            Some(o) => self.memory.load(o, Width::U32) as u32,
            None => u32::MAX,
        }
    }

    fn store(&self, field: u64, value: u32) {
        if let Some(o) = self.control_offset(field) {
            self.memory.store(o, Width::U32, u64::from(value));
        }
    }

    /// Copies `buf.len()` (at most the data size) bytes starting at data offset `pos`,
    /// wrapping at the end of the data area.
    fn read_data(&self, pos: u32, buf: &mut [u8]) -> Result<(), RingError> {
        self.for_each_chunk(pos, buf.len(), |gpa, range| {
            self.memory
                .read_at(gpa, &mut buf[range])
                .map_err(|_| GpadlError::NotRam(gpa))
        })
    }

    fn write_data(&self, pos: u32, buf: &[u8]) -> Result<(), RingError> {
        self.for_each_chunk(pos, buf.len(), |gpa, range| {
            self.memory
                .write_at(gpa, &buf[range])
                .map_err(|_| GpadlError::NotRam(gpa))
        })
    }

    fn for_each_chunk(
        &self,
        pos: u32,
        len: usize,
        mut f: impl FnMut(u64, std::ops::Range<usize>) -> Result<(), GpadlError>,
    ) -> Result<(), RingError> {
        if pos >= self.size || len > self.size as usize {
            return Err(RingError::BadPacket("access beyond the data area"));
        }
        let mut pos = u64::from(pos);
        let mut done = 0usize;
        while done < len {
            let page = (pos / PAGE_SIZE) as usize;
            let within = pos % PAGE_SIZE;
            let n = ((PAGE_SIZE - within) as usize).min(len - done);
            let gpa = self.data[page] + within;
            f(gpa, done..done + n)?;
            done += n;
            pos += n as u64;
            if pos == u64::from(self.size) {
                pos = 0;
            }
        }
        Ok(())
    }

    fn checked_index(&self, which: &'static str, value: u32) -> Result<u32, RingError> {
        if value >= self.size || !value.is_multiple_of(8) {
            return Err(RingError::CorruptIndex {
                which,
                value,
                size: self.size,
            });
        }
        Ok(value)
    }

    /// Bytes between `from` and `to` going forward around the ring.
    fn distance(&self, from: u32, to: u32) -> u32 {
        if to >= from {
            to - from
        } else {
            self.size - from + to
        }
    }

    fn advance(&self, pos: u32, by: u32) -> u32 {
        let p = u64::from(pos) + u64::from(by);
        (p % u64::from(self.size)) as u32
    }

    /// Sets both indices, the masks and pending size to 0 and the feature bits (what a guest
    /// does before opening a channel; used by guest-side clients and tests).
    pub fn reset_control(&self, features: u32) {
        for f in [WRITE_INDEX, READ_INDEX, INTERRUPT_MASK, PENDING_SEND_SIZE] {
            self.store(f, 0);
        }
        self.store(FEATURE_BITS, features);
    }
}

/// A single packet's descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// Packet type.
    pub packet_type: u16,
    /// Payload offset in 8-byte units from the packet start.
    pub offset8: u16,
    /// Packet length (without trailer) in 8-byte units.
    pub len8: u16,
    /// Flags (bit 0: completion requested).
    pub flags: u16,
    /// Transaction ID.
    pub transaction_id: u64,
}

impl Descriptor {
    /// Size of the descriptor.
    pub const SIZE: usize = 16;

    /// Parses the first 16 bytes.
    pub fn parse(b: &[u8; 16]) -> Self {
        Self {
            packet_type: u16::from_le_bytes([b[0], b[1]]),
            offset8: u16::from_le_bytes([b[2], b[3]]),
            len8: u16::from_le_bytes([b[4], b[5]]),
            flags: u16::from_le_bytes([b[6], b[7]]),
            transaction_id: u64::from_le_bytes([
                b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15],
            ]),
        }
    }

    /// Serializes.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&self.packet_type.to_le_bytes());
        b[2..4].copy_from_slice(&self.offset8.to_le_bytes());
        b[4..6].copy_from_slice(&self.len8.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.transaction_id.to_le_bytes());
        b
    }
}

/// The consuming side of a ring.
#[derive(Debug)]
pub struct IncomingRing {
    pages: RingPages,
    read: u32,
}

impl IncomingRing {
    /// Starts consuming at the read index currently in the control page.
    pub fn new(pages: RingPages) -> Result<Self, RingError> {
        let read = pages.checked_index("read", pages.load(READ_INDEX))?;
        Ok(Self { pages, read })
    }

    /// The ring's pages.
    pub fn pages(&self) -> &RingPages {
        &self.pages
    }

    fn write_index(&self) -> Result<u32, RingError> {
        let w = self.pages.load(WRITE_INDEX);
        fence(Ordering::Acquire);
        self.pages.checked_index("write", w)
    }

    /// Whether no packet is waiting.
    pub fn is_empty(&self) -> Result<bool, RingError> {
        Ok(self.write_index()? == self.read)
    }

    /// Tells the producer whether to signal on new data (`false` while polling).
    pub fn set_interrupt_mask(&self, masked: bool) {
        self.pages.store(INTERRUPT_MASK, u32::from(masked));
        fence(Ordering::SeqCst);
    }

    /// Reads the next packet without consuming it: its descriptor and all its bytes
    /// (descriptor included, trailer excluded). `None` when the ring is empty.
    pub fn peek(&mut self) -> Result<Option<(Descriptor, Vec<u8>)>, RingError> {
        let write = self.write_index()?;
        let avail = self.pages.distance(self.read, write);
        if avail == 0 {
            return Ok(None);
        }
        if avail < Descriptor::SIZE as u32 + TRAILER_SIZE {
            return Err(RingError::BadPacket("fragment shorter than a descriptor"));
        }
        let mut head = [0u8; 16];
        self.pages.read_data(self.read, &mut head)?;
        let desc = Descriptor::parse(&head);
        let len = u32::from(desc.len8) * 8;
        let offset = u32::from(desc.offset8) * 8;
        if len < Descriptor::SIZE as u32 || offset < Descriptor::SIZE as u32 || offset > len {
            return Err(RingError::BadPacket("descriptor offset/length"));
        }
        if len + TRAILER_SIZE > avail {
            return Err(RingError::BadPacket("packet longer than the data written"));
        }
        let mut bytes = vec![0u8; len as usize];
        self.pages.read_data(self.read, &mut bytes)?;
        Ok(Some((desc, bytes)))
    }

    /// Consumes the packet returned by the last [`Self::peek`] and publishes the new read
    /// index. Returns whether the producer must be signalled: it asked (pending_send_sz) to be
    /// told when more than that many bytes are free, and this read crossed that threshold.
    pub fn consume(&mut self, desc: &Descriptor) -> Result<bool, RingError> {
        let write = self.write_index()?;
        let used = self.pages.distance(self.read, write);
        let len = u32::from(desc.len8) * 8 + TRAILER_SIZE;
        if len > used {
            return Err(RingError::BadPacket("consume beyond the data written"));
        }
        let free_before = self.pages.size - used;
        self.read = self.pages.advance(self.read, len);
        fence(Ordering::SeqCst);
        self.pages.store(READ_INDEX, self.read);
        fence(Ordering::SeqCst);
        if self.pages.load(FEATURE_BITS) & FEATURE_PENDING_SEND_SIZE == 0 {
            return Ok(false);
        }
        let pending = self.pages.load(PENDING_SEND_SIZE);
        Ok(pending != 0 && free_before <= pending && free_before + len > pending)
    }
}

/// The producing side of a ring.
#[derive(Debug)]
pub struct OutgoingRing {
    pages: RingPages,
    write: u32,
}

/// Not enough space for a packet now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingFull {
    /// Bytes (packet plus trailer) the write needs; free space must exceed this.
    pub needed: u32,
}

impl OutgoingRing {
    /// Starts producing at the write index currently in the control page.
    pub fn new(pages: RingPages) -> Result<Self, RingError> {
        let write = pages.checked_index("write", pages.load(WRITE_INDEX))?;
        Ok(Self { pages, write })
    }

    /// The ring's pages.
    pub fn pages(&self) -> &RingPages {
        &self.pages
    }

    fn read_index(&self) -> Result<u32, RingError> {
        let r = self.pages.load(READ_INDEX);
        fence(Ordering::Acquire);
        self.pages.checked_index("read", r)
    }

    /// Bytes that can be written now (one byte always stays free, so the usable space is
    /// this minus one).
    pub fn free(&self) -> Result<u32, RingError> {
        Ok(self.pages.size - self.pages.distance(self.read_index()?, self.write))
    }

    /// Whether a packet of `packet_len` bytes (descriptor included, trailer excluded) fits.
    pub fn fits(&self, packet_len: u32) -> Result<bool, RingError> {
        Ok(self.free()? > packet_len + TRAILER_SIZE)
    }

    /// Asks the consumer to signal once `packet_len` bytes fit, and re-checks (the consumer
    /// may have made room meanwhile). Returns whether it fits now; if so the request is
    /// withdrawn.
    pub fn request_space(&self, packet_len: u32) -> Result<bool, RingError> {
        let needed = packet_len + TRAILER_SIZE;
        self.pages.store(PENDING_SEND_SIZE, needed);
        fence(Ordering::SeqCst);
        if self.free()? > needed {
            self.pages.store(PENDING_SEND_SIZE, 0);
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes one packet built from `parts` (their total must be a multiple of 8 and at most
    /// the data size) plus its trailer, and publishes it. Returns whether the consumer must be
    /// signalled (it was not polling and the ring was empty before this packet).
    pub fn write(&mut self, parts: &[&[u8]]) -> Result<Result<bool, RingFull>, RingError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if !len.is_multiple_of(8) || len >= self.pages.size as usize {
            return Err(RingError::BadPacket("outgoing packet size"));
        }
        let len = len as u32;
        let needed = len + TRAILER_SIZE;
        let read = self.read_index()?;
        let free = self.pages.size - self.pages.distance(read, self.write);
        if free <= needed {
            return Ok(Err(RingFull { needed }));
        }
        let old = self.write;
        let mut pos = old;
        for part in parts {
            if !part.is_empty() {
                self.pages.write_data(pos, part)?;
                pos = self.pages.advance(pos, part.len() as u32);
            }
        }
        let trailer = u64::from(old) << 32;
        self.pages.write_data(pos, &trailer.to_le_bytes())?;
        self.write = self.pages.advance(pos, TRAILER_SIZE);
        fence(Ordering::SeqCst);
        self.pages.store(WRITE_INDEX, self.write);
        fence(Ordering::SeqCst);
        if self.pages.load(INTERRUPT_MASK) != 0 {
            return Ok(Ok(false));
        }
        Ok(Ok(self.pages.load(READ_INDEX) == old))
    }

    /// Whether the consumer currently asks not to be signalled (it is polling).
    pub fn peer_interrupt_mask(&self) -> bool {
        self.pages.load(INTERRUPT_MASK) != 0
    }
}

#[cfg(test)]
mod tests;
