//! Per-VP synthetic interrupt controller: the message and event-flag pages, SINT registers and
//! the queue of messages waiting for a free slot.
//!
//! # Delivery handshake (TLFS "SynIC Message Flags")
//! Only agar writes a non-zero `message_type` into a slot; the guest frees a slot by changing
//! the type back to 0 (Linux: `cmpxchg`), then reads the pending flag and writes EOM if it was
//! set. agar, finding a slot busy, sets the pending flag with an atomic compare-exchange on the
//! whole 8-byte header, so either its exchange fails (the guest freed the slot first and the
//! message goes in now) or the guest sees the flag afterwards and writes EOM, which retries.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::atomic::fence;

use guest_mem::GuestMemory;
use guest_mem::Width;

use crate::spec;
use device_api::warn_ratelimited;

/// Most messages queued per (VP, SINT) before senders are told to back off.
pub const QUEUE_LIMIT: usize = 128;

#[derive(Clone)]
pub(crate) struct QueuedMessage {
    pub message_type: u32,
    pub len: u8,
    pub payload: [u8; spec::MESSAGE_PAYLOAD_MAX],
}

/// The (VP, SINT) queue is at [`QUEUE_LIMIT`].
#[derive(Debug)]
pub(crate) struct QueueFull;

/// SynIC registers and queues of one VP.
pub(crate) struct Synic {
    pub scontrol: u64,
    pub siefp: u64,
    pub simp: u64,
    pub sint: [u64; spec::SINT_COUNT],
    queues: [VecDeque<QueuedMessage>; spec::SINT_COUNT],
}

impl Synic {
    pub fn new() -> Self {
        Self {
            scontrol: 0,
            siefp: 0,
            simp: 0,
            sint: [spec::SINT_MASKED; spec::SINT_COUNT],
            queues: Default::default(),
        }
    }

    fn enabled(&self) -> bool {
        self.scontrol & 1 != 0
    }

    /// The vector to inject for `sint`, if it interrupts at all (enabled, unmasked, not polled).
    fn interrupt_vector(&self, sint: usize) -> Option<u8> {
        let r = self.sint[sint];
        (self.enabled() && r & (spec::SINT_MASKED | spec::SINT_POLLING) == 0)
            .then_some((r & spec::SINT_VECTOR_MASK) as u8)
    }

    fn sint_accepts(&self, sint: usize) -> bool {
        self.enabled() && self.sint[sint] & spec::SINT_MASKED == 0
    }

    #[cfg(test)]
    pub fn queued(&self, sint: usize) -> usize {
        self.queues[sint].len()
    }

    /// Appends a message and tries to deliver. Returns the vector to inject, if any.
    pub fn post(
        &mut self,
        memory: &GuestMemory,
        vp: u32,
        sint: usize,
        message: QueuedMessage,
    ) -> Result<Option<u8>, QueueFull> {
        if self.queues[sint].len() >= QUEUE_LIMIT {
            return Err(QueueFull);
        }
        self.queues[sint].push_back(message);
        Ok(self.deliver(memory, vp, sint))
    }

    /// Re-attempts delivery on every SINT with queued messages (EOM, unmask, page enable).
    /// Returns the vectors to inject.
    pub fn retry_all(&mut self, memory: &GuestMemory, vp: u32) -> Vec<u8> {
        let mut vectors = Vec::new();
        for sint in 0..spec::SINT_COUNT {
            if !self.queues[sint].is_empty()
                && let Some(v) = self.deliver(memory, vp, sint)
                && !vectors.contains(&v)
            {
                vectors.push(v);
            }
        }
        vectors
    }

    /// Host offset of the message slot for `sint`, if the message page is usable.
    fn slot_offset(&self, memory: &GuestMemory, vp: u32, sint: usize) -> Option<u64> {
        if self.simp & 1 == 0 {
            return None;
        }
        let gpa = (self.simp & !(spec::PAGE_SIZE - 1)) + sint as u64 * spec::MESSAGE_SIZE;
        match memory.translate(gpa) {
            Some(loc) if loc.writable && loc.available >= spec::MESSAGE_SIZE => Some(loc.offset),
            _ => {
                warn_ratelimited!(vp, gpa, "SynIC message page is not guest RAM");
                None
            }
        }
    }

    /// Moves the head of `sint`'s queue into the message slot if it is free; otherwise marks
    /// the slot as having a message pending. Returns the vector to inject after a delivery.
    fn deliver(&mut self, memory: &GuestMemory, vp: u32, sint: usize) -> Option<u8> {
        if !self.sint_accepts(sint) {
            return None;
        }
        let offset = self.slot_offset(memory, vp, sint)?;
        let head = self.queues[sint].front()?;
        // Bounded: each failed exchange means the guest changed the header, which it only does
        // to free the slot (after which the next pass delivers).
        for _ in 0..16 {
            let header = memory.load(offset, Width::U64);
            if header as u32 != 0 {
                let pending = header | (u64::from(spec::MESSAGE_FLAG_PENDING) << 40);
                if header == pending || memory.cmpxchg(offset, Width::U64, header, pending).is_ok()
                {
                    return None;
                }
                continue;
            }
            let gpa_offset_payload = offset + spec::MESSAGE_PAYLOAD_OFFSET;
            // Sender/port id (unused by guests) then the payload, through the offset API so
            // the writes go to exactly the slot translated above.
            memory.store(offset + 8, Width::U64, 0);
            let len = usize::from(head.len);
            for (i, chunk) in head.payload[..len].chunks(8).enumerate() {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                memory.store(
                    gpa_offset_payload + 8 * i as u64,
                    Width::U64,
                    u64::from_le_bytes(word),
                );
            }
            let more = self.queues[sint].len() > 1;
            let flags = if more { spec::MESSAGE_FLAG_PENDING } else { 0 };
            let new_header = u64::from(head.message_type)
                | (u64::from(head.len) << 32)
                | (u64::from(flags) << 40);
            fence(Ordering::Release);
            // The slot is free, and the guest never writes a free slot: a plain store would do,
            // but an exchange keeps this correct even against a misbehaving guest.
            if memory
                .cmpxchg(offset, Width::U64, header, new_header)
                .is_err()
            {
                continue;
            }
            self.queues[sint].pop_front();
            return self.interrupt_vector(sint);
        }
        None
    }

    /// Sets event flag `flag` of `sint` in the event-flags page. Returns the vector to inject
    /// when the flag was newly set.
    pub fn signal_event(
        &mut self,
        memory: &GuestMemory,
        vp: u32,
        sint: usize,
        flag: u32,
    ) -> Option<u8> {
        if !self.enabled() || self.siefp & 1 == 0 || flag >= spec::EVENT_FLAGS_PER_SINT {
            return None;
        }
        let gpa = (self.siefp & !(spec::PAGE_SIZE - 1))
            + sint as u64 * u64::from(spec::EVENT_FLAGS_PER_SINT / 8)
            + u64::from(flag / 64) * 8;
        let offset = match memory.translate(gpa) {
            Some(loc) if loc.writable && loc.available >= 8 => loc.offset,
            _ => {
                warn_ratelimited!(vp, gpa, "SynIC event flags page is not guest RAM");
                return None;
            }
        };
        let bit = 1u64 << (flag % 64);
        let mut cur = memory.load(offset, Width::U64);
        for _ in 0..1000 {
            if cur & bit != 0 {
                return None;
            }
            match memory.cmpxchg(offset, Width::U64, cur, cur | bit) {
                Ok(_) => return self.interrupt_vector(sint),
                Err(now) => cur = now,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMP: u64 = 0x2000;
    const SIEFP: u64 = 0x3000;

    fn enabled() -> (GuestMemory, Synic) {
        let m = GuestMemory::allocate(0x10000);
        let mut s = Synic::new();
        s.scontrol = 1;
        s.simp = SIMP | 1;
        s.siefp = SIEFP | 1;
        s.sint[2] = 0xf3;
        (m, s)
    }

    fn msg(t: u32, bytes: &[u8]) -> QueuedMessage {
        let mut payload = [0; 240];
        payload[..bytes.len()].copy_from_slice(bytes);
        QueuedMessage {
            message_type: t,
            len: bytes.len() as u8,
            payload,
        }
    }

    #[test]
    fn message_goes_into_the_sint_slot_and_interrupts() {
        let (m, mut s) = enabled();
        assert_eq!(s.post(&m, 0, 2, msg(1, &[1, 2, 3])).ok(), Some(Some(0xf3)));
        let slot = SIMP + 2 * 256;
        assert_eq!(m.read_plain::<u32>(slot).unwrap(), 1);
        assert_eq!(m.read_plain::<u8>(slot + 4).unwrap(), 3);
        assert_eq!(m.read_plain::<u8>(slot + 5).unwrap(), 0);
        let mut p = [0u8; 3];
        m.read_at(slot + 16, &mut p).unwrap();
        assert_eq!(p, [1, 2, 3]);
    }

    #[test]
    fn busy_slot_sets_pending_and_eom_delivers_the_next() {
        let (m, mut s) = enabled();
        let slot = SIMP + 2 * 256;
        s.post(&m, 0, 2, msg(1, &[1])).ok();
        assert_eq!(s.post(&m, 0, 2, msg(1, &[2])).ok(), Some(None));
        assert_eq!(m.read_plain::<u8>(slot + 5).unwrap(), 1, "pending flag");
        assert_eq!(s.queued(2), 1);
        // Guest consumes: type -> 0, then EOM.
        m.write_plain(slot, &0u32).unwrap();
        assert_eq!(s.retry_all(&m, 0), vec![0xf3]);
        assert_eq!(m.read_plain::<u8>(slot + 16).unwrap(), 2);
        assert_eq!(m.read_plain::<u8>(slot + 5).unwrap(), 0);
        assert_eq!(s.queued(2), 0);
    }

    #[test]
    fn masked_sint_keeps_messages_queued_until_unmasked() {
        let (m, mut s) = enabled();
        s.sint[2] |= spec::SINT_MASKED;
        assert_eq!(s.post(&m, 0, 2, msg(1, &[9])).ok(), Some(None));
        assert_eq!(m.read_plain::<u32>(SIMP + 512).unwrap(), 0);
        s.sint[2] &= !spec::SINT_MASKED;
        assert_eq!(s.retry_all(&m, 0), vec![0xf3]);
        assert_eq!(m.read_plain::<u32>(SIMP + 512).unwrap(), 1);
    }

    #[test]
    fn queue_is_bounded() {
        let (m, mut s) = enabled();
        s.sint[2] |= spec::SINT_MASKED;
        for _ in 0..QUEUE_LIMIT {
            assert!(s.post(&m, 0, 2, msg(1, &[])).is_ok());
        }
        assert!(s.post(&m, 0, 2, msg(1, &[])).is_err());
    }

    #[test]
    fn event_flag_interrupts_only_on_the_clear_to_set_edge() {
        let (m, mut s) = enabled();
        assert_eq!(s.signal_event(&m, 0, 2, 70), Some(0xf3));
        assert_eq!(s.signal_event(&m, 0, 2, 70), None);
        let word: u64 = m.read_plain(SIEFP + 512 + 8).unwrap();
        assert_eq!(word, 1 << 6);
        // Guest clears the bit: the next signal interrupts again.
        m.write_plain(SIEFP + 512 + 8, &0u64).unwrap();
        assert_eq!(s.signal_event(&m, 0, 2, 70), Some(0xf3));
        assert_eq!(s.signal_event(&m, 0, 2, 2048), None, "flag out of range");
    }

    #[test]
    fn pages_outside_ram_are_not_touched() {
        let (m, mut s) = enabled();
        s.simp = 0xffff_f000 | 1;
        s.siefp = 0xffff_f000 | 1;
        assert_eq!(s.post(&m, 0, 2, msg(1, &[1])).ok(), Some(None));
        assert_eq!(s.signal_event(&m, 0, 2, 1), None);
    }
}
