//! Frame layout, CRC-32 and a resynchronising decoder.
//!
//! ```text
//! offset  size  field
//! 0       4     magic   AA 41 47 55  ("\xAAAGU")
//! 4       4     length  payload length, u32 little endian, <= MAX_PAYLOAD
//! 8       4     hcrc    CRC-32 (IEEE) of bytes 0..8
//! 12      len   payload
//! 12+len  4     pcrc    CRC-32 (IEEE) of the payload
//! ```

use crate::MAX_PAYLOAD;

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = [0xAA, b'A', b'G', 0x55];

/// Bytes before the payload.
pub const HEADER_LEN: usize = 12;

/// Bytes after the payload.
pub const TRAILER_LEN: usize = 4;

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE 802.3, reflected, as used by zlib and Ethernet).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Frame too large to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("payload of {0} bytes exceeds the frame limit")]
pub struct TooLarge(pub usize);

/// Wraps `payload` in a frame.
pub fn encode(payload: &[u8]) -> Result<Vec<u8>, TooLarge> {
    if payload.len() > MAX_PAYLOAD {
        return Err(TooLarge(payload.len()));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TRAILER_LEN);
    out.extend_from_slice(&MAGIC);
    // Cannot truncate: MAX_PAYLOAD fits in a u32.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let hcrc = crc32(&out);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    Ok(out)
}

/// What [`Decoder::next_event`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete, checked payload.
    Frame(Vec<u8>),
    /// Bytes that were not part of any valid frame (for logging).
    Skipped(Vec<u8>),
}

/// Collects stream bytes and yields frames, skipping anything that is not a valid frame.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// A decoder with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next frame or run of skipped bytes, or `None` when more input is needed.
    pub fn next_event(&mut self) -> Option<Event> {
        // Garbage before the next possible magic is reported as skipped.
        let start = find_magic_candidate(&self.buf);
        if start > 0 {
            return Some(Event::Skipped(self.buf.drain(..start).collect()));
        }
        if self.buf.len() < HEADER_LEN {
            return None;
        }
        let header_ok = self.buf[..4] == MAGIC && {
            let hcrc = u32::from_le_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]]);
            crc32(&self.buf[..8]) == hcrc
        };
        let len = u32::from_le_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if !header_ok || len > MAX_PAYLOAD {
            return Some(self.skip_one());
        }
        let total = HEADER_LEN + len + TRAILER_LEN;
        if self.buf.len() < total {
            return None;
        }
        let payload = &self.buf[HEADER_LEN..HEADER_LEN + len];
        let t = &self.buf[HEADER_LEN + len..total];
        let pcrc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        if crc32(payload) != pcrc {
            return Some(self.skip_one());
        }
        let payload = payload.to_vec();
        self.buf.drain(..total);
        Some(Event::Frame(payload))
    }

    /// Drops the first byte (a magic that led nowhere) and reports it as skipped.
    fn skip_one(&mut self) -> Event {
        let b = self.buf.remove(0);
        Event::Skipped(vec![b])
    }
}

/// Offset of the first position that could start a frame: a full magic, or a prefix of it
/// at the very end of the buffer.
fn find_magic_candidate(buf: &[u8]) -> usize {
    for i in 0..buf.len() {
        let rest = &buf[i..];
        let n = rest.len().min(MAGIC.len());
        if rest[..n] == MAGIC[..n] {
            return i;
        }
    }
    buf.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(d: &mut Decoder) -> (Vec<Vec<u8>>, usize) {
        let mut frames = Vec::new();
        let mut skipped = 0;
        while let Some(e) = d.next_event() {
            match e {
                Event::Frame(f) => frames.push(f),
                Event::Skipped(s) => skipped += s.len(),
            }
        }
        (frames, skipped)
    }

    #[test]
    fn crc32_matches_the_ieee_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let f = encode(b"hello agent").unwrap();
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in &f {
            d.push(&[*b]);
            while let Some(e) = d.next_event() {
                got.push(e);
            }
        }
        assert_eq!(got, vec![Event::Frame(b"hello agent".to_vec())]);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn garbage_around_frames_is_skipped() {
        let mut stream = b"login: \xAA\xAAAG echo \r\n".to_vec();
        stream.extend(encode(b"one").unwrap());
        stream.extend(b"\xAAAGU\x01\x00\x00\x00junk");
        stream.extend(encode(b"").unwrap());
        stream.extend(encode(b"two").unwrap());
        let mut d = Decoder::new();
        d.push(&stream);
        let (f, skipped) = frames(&mut d);
        assert_eq!(f, vec![b"one".to_vec(), b"".to_vec(), b"two".to_vec()]);
        assert_eq!(skipped, 19 + 12);
    }

    #[test]
    fn a_corrupted_payload_byte_loses_only_that_frame() {
        let mut a = encode(b"first frame").unwrap();
        a[HEADER_LEN + 3] ^= 0x40;
        let b = encode(b"second").unwrap();
        let mut d = Decoder::new();
        d.push(&a);
        d.push(&b);
        let (f, skipped) = frames(&mut d);
        assert_eq!(f, vec![b"second".to_vec()]);
        assert_eq!(skipped, a.len());
    }

    #[test]
    fn a_corrupted_length_is_rejected_without_waiting_for_the_payload() {
        let mut a = encode(b"x").unwrap();
        a[6] = 0x30; // length becomes ~3 MiB but the header CRC no longer matches
        let b = encode(b"next").unwrap();
        let mut d = Decoder::new();
        d.push(&a);
        d.push(&b);
        assert_eq!(frames(&mut d).0, vec![b"next".to_vec()]);
    }

    #[test]
    fn oversized_payloads_are_refused() {
        assert_eq!(
            encode(&vec![0; MAX_PAYLOAD + 1]),
            Err(TooLarge(MAX_PAYLOAD + 1))
        );
    }

    #[test]
    fn random_noise_between_frames_never_hides_a_frame() {
        // Deterministic xorshift noise; every clean frame must come through.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for i in 0..200u32 {
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Bias the noise towards magic bytes to exercise resync.
                let b = match x % 5 {
                    0 => MAGIC[(x >> 8) as usize % 4],
                    _ => (x >> 16) as u8,
                };
                stream.push(b);
            }
            let payload = format!("frame {i}").into_bytes();
            stream.extend(encode(&payload).unwrap());
            expected.push(payload);
        }
        let mut d = Decoder::new();
        for chunk in stream.chunks(7) {
            d.push(chunk);
        }
        let (f, _) = frames(&mut d);
        assert_eq!(f, expected);
    }
}
