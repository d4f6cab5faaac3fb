//! VMBus control messages (Linux `include/linux/hyperv.h`, `vmbus_channel_*`), carried as
//! SynIC message payloads of at most 240 bytes. Every message starts with an 8-byte header:
//! u32 message type, u32 padding. Multi-byte fields are little-endian; GUIDs use the
//! Windows mixed-endian layout.

use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;
use zerocopy::Unaligned;
use zerocopy::little_endian::U16;
use zerocopy::little_endian::U32;
use zerocopy::little_endian::U64;

/// SynIC message type of VMBus messages.
pub const SYNIC_MESSAGE_TYPE: u32 = 1;
/// The SINT VMBus uses for messages and channel events.
pub const VMBUS_SINT: u8 = 2;
/// Message connection ID for versions below 5.0 (and after negotiation, for all versions).
pub const MESSAGE_CONNECTION_ID: u32 = 1;
/// Message connection ID INITIATE_CONTACT uses for version 5.0 and later.
pub const MESSAGE_CONNECTION_ID_V5: u32 = 4;
/// Largest message.
pub const MAX_MESSAGE_SIZE: usize = 240;

/// Message types.
#[allow(missing_docs)]
pub mod msgtype {
    pub const OFFER_CHANNEL: u32 = 1;
    pub const RESCIND_CHANNEL_OFFER: u32 = 2;
    pub const REQUEST_OFFERS: u32 = 3;
    pub const ALL_OFFERS_DELIVERED: u32 = 4;
    pub const OPEN_CHANNEL: u32 = 5;
    pub const OPEN_CHANNEL_RESULT: u32 = 6;
    pub const CLOSE_CHANNEL: u32 = 7;
    pub const GPADL_HEADER: u32 = 8;
    pub const GPADL_BODY: u32 = 9;
    pub const GPADL_CREATED: u32 = 10;
    pub const GPADL_TEARDOWN: u32 = 11;
    pub const GPADL_TORNDOWN: u32 = 12;
    pub const RELID_RELEASED: u32 = 13;
    pub const INITIATE_CONTACT: u32 = 14;
    pub const VERSION_RESPONSE: u32 = 15;
    pub const UNLOAD: u32 = 16;
    pub const UNLOAD_RESPONSE: u32 = 17;
    pub const TL_CONNECT_REQUEST: u32 = 21;
    pub const MODIFY_CHANNEL: u32 = 22;
    pub const TL_CONNECT_RESULT: u32 = 23;
    pub const MODIFY_CHANNEL_RESPONSE: u32 = 24;
}

/// Protocol versions (major << 16 | minor), newest first: what agar accepts.
pub mod version {
    /// Windows 8 / Server 2012.
    pub const WIN8: u32 = 0x0002_0004;
    /// Windows 8.1 / Server 2012 R2.
    pub const WIN8_1: u32 = 0x0003_0000;
    /// Windows 10.
    pub const WIN10: u32 = 0x0004_0000;
    /// Windows 10 RS3 (MODIFYCHANNEL).
    pub const WIN10_RS3: u32 = 0x0004_0001;
    /// Windows 10 v5: INITIATE_CONTACT on connection 4 with a message SINT.
    pub const WIN10_V5: u32 = 0x0005_0000;
    /// Windows 10 v5.1.
    pub const WIN10_V5_1: u32 = 0x0005_0001;
    /// Windows 10 v5.2.
    pub const WIN10_V5_2: u32 = 0x0005_0002;
    /// Windows Server 2022: MODIFYCHANNEL_RESPONSE.
    pub const WIN10_V5_3: u32 = 0x0005_0003;
    /// Every version agar accepts.
    pub const SUPPORTED: [u32; 8] = [
        WIN10_V5_3, WIN10_V5_2, WIN10_V5_1, WIN10_V5, WIN10_RS3, WIN10, WIN8_1, WIN8,
    ];
}

/// A GUID in its wire layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Builds a GUID from its textual fields (`data1-data2-data3-data4`).
    pub const fn new(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> Self {
        let a = data1.to_le_bytes();
        let b = data2.to_le_bytes();
        let c = data3.to_le_bytes();
        Self([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], data4[0], data4[1], data4[2], data4[3],
            data4[4], data4[5], data4[6], data4[7],
        ])
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

/// Message header.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct Header {
    /// Message type.
    pub msgtype: U32,
    /// Padding.
    pub padding: U32,
}

impl Header {
    /// A header for `msgtype`.
    pub fn new(msgtype: u32) -> Self {
        Self {
            msgtype: msgtype.into(),
            padding: 0.into(),
        }
    }
}

/// INITIATE_CONTACT (guest): 40 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct InitiateContact {
    pub header: Header,
    pub version_requested: U32,
    pub target_vcpu: U32,
    /// Below 5.0: interrupt page GPA. From 5.0: byte 0 message SINT, byte 1 VTL.
    pub interrupt_page_or_sint: U64,
    pub monitor_page1: U64,
    pub monitor_page2: U64,
}

/// VERSION_RESPONSE (host): 16 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct VersionResponse {
    pub header: Header,
    pub version_supported: u8,
    pub connection_state: u8,
    pub padding: U16,
    pub msg_conn_id: U32,
}

/// OFFERCHANNEL (host): 196 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct OfferChannel {
    pub header: Header,
    pub interface_type: [u8; 16],
    pub interface_instance: [u8; 16],
    pub reserved1: U64,
    pub reserved2: U64,
    pub flags: U16,
    pub mmio_megabytes: U16,
    pub user_defined: [u8; 120],
    pub sub_channel_index: U16,
    pub reserved3: U16,
    pub child_relid: U32,
    pub monitor_id: u8,
    /// Bit 0: monitor allocated.
    pub monitor_allocated: u8,
    /// Bit 0: dedicated interrupt (signal with HvSignalEvent on `connection_id`).
    pub is_dedicated_interrupt: U16,
    pub connection_id: U32,
}

/// RESCIND_CHANNELOFFER (host), CLOSECHANNEL and RELID_RELEASED (guest): 12 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct RelidMessage {
    pub header: Header,
    pub child_relid: U32,
}

/// OPENCHANNEL (guest): 148 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct OpenChannel {
    pub header: Header,
    pub child_relid: U32,
    pub open_id: U32,
    pub ring_gpadl: U32,
    pub target_vp: U32,
    /// Page index within the ring GPADL where the host-to-guest ring starts.
    pub downstream_page_offset: U32,
    pub user_data: [u8; 120],
}

/// OPENCHANNEL_RESULT (host): 20 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct OpenResult {
    pub header: Header,
    pub child_relid: U32,
    pub open_id: U32,
    pub status: U32,
}

/// GPADL_HEADER (guest): 20 bytes, then the range bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct GpadlHeader {
    pub header: Header,
    pub child_relid: U32,
    pub gpadl: U32,
    /// Bytes of all ranges with their PFN arrays.
    pub range_buflen: U16,
    pub range_count: U16,
}

/// GPADL_BODY (guest): 16 bytes, then PFNs.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct GpadlBody {
    pub header: Header,
    pub msgnumber: U32,
    pub gpadl: U32,
}

/// GPADL_CREATED (host): 20 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct GpadlCreated {
    pub header: Header,
    pub child_relid: U32,
    pub gpadl: U32,
    pub status: U32,
}

/// GPADL_TEARDOWN (guest): 16 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct GpadlTeardown {
    pub header: Header,
    pub child_relid: U32,
    pub gpadl: U32,
}

/// GPADL_TORNDOWN (host): 12 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct GpadlTorndown {
    pub header: Header,
    pub gpadl: U32,
}

/// MODIFYCHANNEL (guest): 16 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct ModifyChannel {
    pub header: Header,
    pub child_relid: U32,
    pub target_vp: U32,
}

/// MODIFYCHANNEL_RESPONSE (host): 16 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct ModifyChannelResponse {
    pub header: Header,
    pub child_relid: U32,
    pub status: U32,
}

/// Reads a `T` from the start of `bytes` (the message may be longer, e.g. a SynIC payload
/// padded by the sender).
pub fn read<T: FromBytes>(bytes: &[u8]) -> Option<T> {
    T::read_from_prefix(bytes).ok().map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_linux() {
        assert_eq!(size_of::<InitiateContact>(), 40);
        assert_eq!(size_of::<VersionResponse>(), 16);
        assert_eq!(size_of::<OfferChannel>(), 196);
        assert_eq!(size_of::<RelidMessage>(), 12);
        assert_eq!(size_of::<OpenChannel>(), 148);
        assert_eq!(size_of::<OpenResult>(), 20);
        assert_eq!(size_of::<GpadlHeader>(), 20);
        assert_eq!(size_of::<GpadlBody>(), 16);
        assert_eq!(size_of::<GpadlCreated>(), 20);
        assert_eq!(size_of::<GpadlTeardown>(), 16);
        assert_eq!(size_of::<GpadlTorndown>(), 12);
        assert_eq!(size_of::<ModifyChannel>(), 16);
        assert_eq!(size_of::<ModifyChannelResponse>(), 16);
    }

    #[test]
    fn guid_wire_layout_is_mixed_endian() {
        let scsi = Guid::new(
            0xba6163d9,
            0x04a1,
            0x4d29,
            [0xb6, 0x05, 0x72, 0xe2, 0xff, 0xb1, 0xdc, 0x7f],
        );
        assert_eq!(
            scsi.0,
            [
                0xd9, 0x63, 0x61, 0xba, 0xa1, 0x04, 0x29, 0x4d, 0xb6, 0x05, 0x72, 0xe2, 0xff, 0xb1,
                0xdc, 0x7f
            ]
        );
        assert_eq!(scsi.to_string(), "ba6163d9-04a1-4d29-b605-72e2ffb1dc7f");
    }
}
