//! The vstor protocol (Linux `drivers/scsi/storvsc_drv.c`): every packet on the SCSI channel
//! carries one 64-byte [`VstorPacket`]; SCSI requests embed a 52-byte [`ScsiRequest`] (SRB).

use zerocopy::FromBytes;
use zerocopy::FromZeros;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;
use zerocopy::Unaligned;
use zerocopy::little_endian::U16;
use zerocopy::little_endian::U32;
use zerocopy::little_endian::U64;

use vmbus_server::Guid;

/// VMBus class GUID of a SCSI controller.
pub const SCSI_INTERFACE_TYPE: Guid = Guid::new(
    0xba6163d9,
    0x04a1,
    0x4d29,
    [0xb6, 0x05, 0x72, 0xe2, 0xff, 0xb1, 0xdc, 0x7f],
);

/// Size of a vstor packet.
pub const VSTOR_PACKET_SIZE: usize = 64;
/// Size of a vstor packet without the Windows 8 SRB extension (pre-6.0 Linux before
/// negotiation); shorter payloads are zero-extended.
pub const VSTOR_PACKET_MIN_SIZE: usize = 48;

/// Operations.
#[allow(missing_docs)]
pub mod operation {
    pub const COMPLETE_IO: u32 = 1;
    pub const REMOVE_DEVICE: u32 = 2;
    pub const EXECUTE_SRB: u32 = 3;
    pub const RESET_LUN: u32 = 4;
    pub const RESET_ADAPTER: u32 = 5;
    pub const RESET_BUS: u32 = 6;
    pub const BEGIN_INITIALIZATION: u32 = 7;
    pub const END_INITIALIZATION: u32 = 8;
    pub const QUERY_PROTOCOL_VERSION: u32 = 9;
    pub const QUERY_PROPERTIES: u32 = 10;
    pub const ENUMERATE_BUS: u32 = 11;
    pub const FCHBA_DATA: u32 = 12;
    pub const CREATE_SUB_CHANNELS: u32 = 13;
}

/// Protocol versions (major << 8 | minor) agar accepts, newest first.
pub mod version {
    /// Windows 10.
    pub const WIN10: u16 = 0x0602;
    /// Windows 8.1.
    pub const WIN8_1: u16 = 0x0600;
    /// Windows 8.
    pub const WIN8: u16 = 0x0501;
    /// All accepted versions.
    pub const SUPPORTED: [u16; 3] = [WIN10, WIN8_1, WIN8];
}

/// NTSTATUS values used in replies.
#[allow(missing_docs)]
pub mod status {
    pub const SUCCESS: u32 = 0;
    pub const INVALID_DEVICE_REQUEST: u32 = 0xc000_0010;
    pub const INVALID_PARAMETER: u32 = 0xc000_000d;
    pub const REVISION_MISMATCH: u32 = 0xc000_0059;
    pub const INVALID_DEVICE_STATE: u32 = 0xc000_0184;
    pub const IO_DEVICE_ERROR: u32 = 0xc000_0185;
}

/// SRB status codes (low 6 bits) and flags.
#[allow(missing_docs)]
pub mod srb_status {
    pub const SUCCESS: u8 = 0x01;
    pub const ABORTED: u8 = 0x02;
    pub const ERROR: u8 = 0x04;
    pub const INVALID_REQUEST: u8 = 0x06;
    pub const INVALID_LUN: u8 = 0x20;
    pub const INTERNAL_ERROR: u8 = 0x30;
    /// Sense data in the reply is valid.
    pub const AUTOSENSE_VALID: u8 = 0x80;
}

/// SRB `data_in` values.
#[allow(missing_docs)]
pub mod data_in {
    pub const WRITE: u8 = 0;
    pub const READ: u8 = 1;
    pub const UNKNOWN: u8 = 2;
}

/// SRB flags.
#[allow(missing_docs)]
pub mod srb_flags {
    pub const DATA_IN: u32 = 0x40;
    pub const DATA_OUT: u32 = 0x80;
}

/// Channel properties flag: sub-channels supported.
pub const PROPERTIES_MULTI_CHANNEL: u32 = 1;

/// The 64-byte packet.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct VstorPacket {
    /// Operation.
    pub operation: U32,
    /// Guest: 1 = completion requested. Host replies 0.
    pub flags: U32,
    /// NTSTATUS (host to guest).
    pub status: U32,
    /// Operation-specific: [`ScsiRequest`], [`ChannelProperties`], [`ProtocolVersion`].
    pub data: [u8; 52],
}

/// A SCSI request block.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct ScsiRequest {
    pub length: U16,
    pub srb_status: u8,
    pub scsi_status: u8,
    pub port_number: u8,
    pub path_id: u8,
    pub target_id: u8,
    pub lun: u8,
    pub cdb_length: u8,
    pub sense_info_length: u8,
    pub data_in: u8,
    pub reserved: u8,
    pub data_transfer_length: U32,
    /// The CDB in requests, sense data in completions.
    pub payload: [u8; 20],
    pub reserve: U16,
    pub queue_tag: u8,
    pub queue_action: u8,
    pub srb_flags: U32,
    pub time_out_value: U32,
    pub queue_sort_key: U32,
}

/// QUERY_PROPERTIES reply.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct ChannelProperties {
    pub reserved: U32,
    pub max_channel_count: U16,
    pub reserved2: U16,
    pub flags: U32,
    pub max_transfer_bytes: U32,
    pub reserved3: U64,
}

/// QUERY_PROTOCOL_VERSION payload.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct ProtocolVersion {
    pub major_minor: U16,
    pub revision: U16,
}

impl VstorPacket {
    /// A packet with `operation` and `status` and a zero body.
    pub fn new(operation: u32, status: u32) -> Self {
        Self {
            operation: operation.into(),
            flags: 0.into(),
            status: status.into(),
            data: [0; 52],
        }
    }

    /// Parses a payload: at least [`VSTOR_PACKET_MIN_SIZE`] bytes, zero-extended to 64.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        if payload.len() < VSTOR_PACKET_MIN_SIZE {
            return None;
        }
        let mut b = [0u8; VSTOR_PACKET_SIZE];
        let n = payload.len().min(VSTOR_PACKET_SIZE);
        b[..n].copy_from_slice(&payload[..n]);
        Self::read_from_bytes(&b).ok()
    }

    /// The body as an SRB.
    pub fn srb(&self) -> ScsiRequest {
        ScsiRequest::read_from_bytes(&self.data).unwrap_or_else(|_| ScsiRequest::new_zeroed())
    }

    /// Stores an SRB in the body.
    pub fn set_srb(&mut self, srb: &ScsiRequest) {
        self.data.copy_from_slice(srb.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_linux() {
        assert_eq!(size_of::<VstorPacket>(), 64);
        assert_eq!(size_of::<ScsiRequest>(), 52);
        assert_eq!(size_of::<ChannelProperties>(), 24);
        assert_eq!(std::mem::offset_of!(ScsiRequest, data_transfer_length), 12);
        assert_eq!(std::mem::offset_of!(ScsiRequest, srb_flags), 40);
    }

    #[test]
    fn short_packets_are_zero_extended_and_tiny_ones_rejected() {
        let p = VstorPacket::parse(&[3; 48]).unwrap();
        assert_eq!(p.operation.get(), 0x0303_0303);
        assert_eq!(p.data[40..], [0; 12]);
        assert!(VstorPacket::parse(&[0; 47]).is_none());
    }
}
