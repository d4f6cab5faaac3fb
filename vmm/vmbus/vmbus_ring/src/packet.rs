//! VMBus packets: parsing what the peer wrote and building what we send.
//!
//! A packet is a 16-byte [`Descriptor`], type-specific header bytes up to `offset8 * 8`, the
//! payload up to `len8 * 8`, then (in the ring) an 8-byte trailer.

use crate::gpadl::GpaRange;
use crate::gpadl::GpadlError;
use crate::gpadl::parse_ranges;
use crate::gpadl::write_ranges;
use crate::ring::Descriptor;

/// Packet types.
pub mod packet_type {
    /// Payload only.
    pub const DATA_INBAND: u16 = 6;
    /// Payload referring to transfer pages (netvsc; not supported by agar's devices).
    pub const DATA_USING_XFER_PAGES: u16 = 7;
    /// Payload referring to a GPADL.
    pub const DATA_USING_GPADL: u16 = 8;
    /// Payload plus inline guest page ranges (storvsc data buffers).
    pub const DATA_USING_GPA_DIRECT: u16 = 9;
    /// Completion of an earlier packet (same transaction ID).
    pub const COMPLETION: u16 = 11;
}

/// Descriptor flag: the sender wants a completion.
pub const FLAG_COMPLETION_REQUESTED: u16 = 1;
/// Most ranges accepted in one GPA-direct packet.
pub const MAX_GPA_DIRECT_RANGES: u32 = 64;

/// What kind of packet arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketKind {
    /// In-band data.
    InBand,
    /// A completion.
    Completion,
    /// Data with inline guest page ranges.
    GpaDirect(Vec<GpaRange>),
    /// A type agar's devices do not handle.
    Other(u16),
}

/// A parsed incoming packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingPacket {
    /// Kind (and for GPA direct, its ranges, not yet checked against guest memory).
    pub kind: PacketKind,
    /// Transaction ID, to echo in the completion.
    pub transaction_id: u64,
    /// The sender asked for a completion.
    pub completion_requested: bool,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

/// A packet's header area is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Descriptor offset/length do not match the bytes.
    #[error("descriptor does not match the packet bytes")]
    Length,
    /// GPA-direct header is malformed.
    #[error("bad GPA-direct ranges")]
    Ranges(#[from] GpadlError),
    /// Too many ranges.
    #[error("{0} ranges in one packet")]
    TooManyRanges(u32),
}

/// Parses a packet read from a ring (`bytes` = descriptor through the end of the payload).
pub fn parse_packet(desc: &Descriptor, bytes: &[u8]) -> Result<IncomingPacket, PacketError> {
    let offset = usize::from(desc.offset8) * 8;
    let len = usize::from(desc.len8) * 8;
    if len != bytes.len() || offset < Descriptor::SIZE || offset > len {
        return Err(PacketError::Length);
    }
    let header = &bytes[Descriptor::SIZE..offset];
    let kind = match desc.packet_type {
        packet_type::DATA_INBAND => PacketKind::InBand,
        packet_type::COMPLETION => PacketKind::Completion,
        packet_type::DATA_USING_GPA_DIRECT => {
            // u32 reserved, u32 range count, then the ranges.
            if header.len() < 8 {
                return Err(PacketError::Length);
            }
            let count = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if count > MAX_GPA_DIRECT_RANGES {
                return Err(PacketError::TooManyRanges(count));
            }
            let (ranges, _) = parse_ranges(&header[8..], count)?;
            PacketKind::GpaDirect(ranges)
        }
        other => PacketKind::Other(other),
    };
    Ok(IncomingPacket {
        kind,
        transaction_id: desc.transaction_id,
        completion_requested: desc.flags & FLAG_COMPLETION_REQUESTED != 0,
        payload: bytes[offset..].to_vec(),
    })
}

fn build(
    packet_type: u16,
    flags: u16,
    transaction_id: u64,
    header: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let offset = Descriptor::SIZE + header.len();
    let len = (offset + payload.len()).next_multiple_of(8);
    let desc = Descriptor {
        packet_type,
        offset8: (offset / 8) as u16,
        len8: (len / 8) as u16,
        flags,
        transaction_id,
    };
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&desc.to_bytes());
    v.extend_from_slice(header);
    v.extend_from_slice(payload);
    v.resize(len, 0);
    v
}

/// An in-band data packet.
pub fn inband(transaction_id: u64, completion_requested: bool, payload: &[u8]) -> Vec<u8> {
    let flags = if completion_requested {
        FLAG_COMPLETION_REQUESTED
    } else {
        0
    };
    build(
        packet_type::DATA_INBAND,
        flags,
        transaction_id,
        &[],
        payload,
    )
}

/// A completion packet.
pub fn completion(transaction_id: u64, payload: &[u8]) -> Vec<u8> {
    build(packet_type::COMPLETION, 0, transaction_id, &[], payload)
}

/// A GPA-direct data packet (what a guest driver sends with a data buffer).
pub fn gpa_direct(transaction_id: u64, ranges: &[GpaRange], payload: &[u8]) -> Vec<u8> {
    let mut header = 0u32.to_le_bytes().to_vec();
    header.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
    header.extend_from_slice(&write_ranges(ranges));
    build(
        packet_type::DATA_USING_GPA_DIRECT,
        FLAG_COMPLETION_REQUESTED,
        transaction_id,
        &header,
        payload,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<IncomingPacket, PacketError> {
        let desc = Descriptor::parse(bytes[..16].try_into().unwrap());
        parse_packet(&desc, bytes)
    }

    #[test]
    fn inband_and_completion_round_trip() {
        let p = parse(&inband(7, true, &[1, 2, 3])).unwrap();
        assert_eq!(p.kind, PacketKind::InBand);
        assert_eq!(p.transaction_id, 7);
        assert!(p.completion_requested);
        assert_eq!(p.payload, vec![1, 2, 3, 0, 0, 0, 0, 0]);
        let c = completion(9, &[0; 64]);
        assert_eq!(c.len(), 80, "storvsc's limit: 16 + 64");
        let p = parse(&c).unwrap();
        assert_eq!(p.kind, PacketKind::Completion);
        assert!(!p.completion_requested);
    }

    #[test]
    fn gpa_direct_ranges_are_parsed() {
        let r = GpaRange {
            byte_count: 4096,
            byte_offset: 512,
            pfns: vec![10, 11],
        };
        let bytes = gpa_direct(5, std::slice::from_ref(&r), &[0xee; 64]);
        let desc = Descriptor::parse(bytes[..16].try_into().unwrap());
        assert_eq!(usize::from(desc.offset8) * 8, 16 + 8 + 8 + 16);
        let p = parse(&bytes).unwrap();
        assert_eq!(p.kind, PacketKind::GpaDirect(vec![r]));
        assert_eq!(p.payload, vec![0xee; 64]);
    }

    #[test]
    fn malformed_headers_are_errors() {
        let mut b = gpa_direct(
            1,
            &[GpaRange {
                byte_count: 8192,
                byte_offset: 0,
                pfns: vec![1, 2],
            }],
            &[],
        );
        // Claim 3 pages' worth of bytes: the PFN list is too short.
        b[24..28].copy_from_slice(&12288u32.to_le_bytes());
        assert!(matches!(parse(&b), Err(PacketError::Ranges(_))));
        b[20..24].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(parse(&b), Err(PacketError::TooManyRanges(1000)));
        let mut short = inband(1, false, &[0; 8]);
        short[2] = 4; // offset beyond length
        assert_eq!(parse(&short), Err(PacketError::Length));
        let d = Descriptor::parse(inband(1, false, &[]).as_slice().try_into().unwrap());
        assert_eq!(parse_packet(&d, &[0; 24]), Err(PacketError::Length));
    }
}
