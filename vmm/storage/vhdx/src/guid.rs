//! GUIDs in the Windows on-disk layout.

use std::fmt;

use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

/// A GUID as stored in VHDX: `data1` (u32), `data2`, `data3` (u16) little-endian, then 8
/// bytes.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Guid([u8; 16]);

impl Guid {
    /// The all-zero GUID (meaning "none" in several header fields).
    pub const ZERO: Guid = Guid([0; 16]);

    /// A GUID from its textual fields, e.g. `2DC27766-F623-4200-9D64-115E9BFD4A08` is
    /// `from_fields(0x2dc27766, 0xf623, 0x4200, [0x9d, 0x64, 0x11, ...])`.
    pub const fn from_fields(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> Self {
        let a = data1.to_le_bytes();
        let b = data2.to_le_bytes();
        let c = data3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], data4[0], data4[1], data4[2], data4[3],
            data4[4], data4[5], data4[6], data4[7],
        ])
    }

    /// The stored bytes.
    pub const fn bytes(&self) -> [u8; 16] {
        self.0
    }

    /// A random (version 4) GUID.
    pub fn new_random() -> Result<Self, getrandom::Error> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b)?;
        // Version 4 in data3's high nibble, RFC 4122 variant in data4[0].
        b[7] = (b[7] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Ok(Guid(b))
    }

    /// Whether this is [`Guid::ZERO`].
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, with or without braces.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let s = s
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or(s);
        let parts: Vec<&str> = s.split('-').collect();
        let [p1, p2, p3, p4, p5] = parts.as_slice() else {
            return None;
        };
        if p1.len() != 8 || p2.len() != 4 || p3.len() != 4 || p4.len() != 4 || p5.len() != 12 {
            return None;
        }
        let data1 = u32::from_str_radix(p1, 16).ok()?;
        let data2 = u16::from_str_radix(p2, 16).ok()?;
        let data3 = u16::from_str_radix(p3, 16).ok()?;
        let tail = format!("{p4}{p5}");
        let mut data4 = [0u8; 8];
        for (i, d) in data4.iter_mut().enumerate() {
            *d = u8::from_str_radix(tail.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self::from_fields(data1, data2, data3, data4))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]])
        )?;
        for x in &b[8..10] {
            write!(f, "{x:02x}")?;
        }
        f.write_str("-")?;
        for x in &b[10..] {
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{self}}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_round_trips() {
        let g = Guid::from_fields(
            0x2dc27766,
            0xf623,
            0x4200,
            [0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08],
        );
        assert_eq!(g.to_string(), "2dc27766-f623-4200-9d64-115e9bfd4a08");
        assert_eq!(
            Guid::parse("{2DC27766-F623-4200-9D64-115E9BFD4A08}"),
            Some(g)
        );
        assert_eq!(Guid::parse("2dc27766-f623-4200-9d64-115e9bfd4a08"), Some(g));
        assert_eq!(Guid::parse("2dc27766-f623-4200-9d64-115e9bfd4a0"), None);
        assert_eq!(Guid::parse("zzc27766-f623-4200-9d64-115e9bfd4a08"), None);
        assert_eq!(Guid::parse("{é}"), None);
    }

    #[test]
    fn random_guids_differ_and_are_version_4() {
        let a = Guid::new_random().unwrap();
        let b = Guid::new_random().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.to_string().as_bytes()[14], b'4');
    }
}
