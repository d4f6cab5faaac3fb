//! The guest side of the control protocol, for tests, fuzzers and benchmarks: builders for
//! the messages a guest posts (split the way Linux splits them) and a parser for what the
//! host sends (with Linux's minimum lengths).

use vmbus_ring::GpaRange;
use vmbus_ring::gpadl::write_ranges;
use zerocopy::IntoBytes;

use crate::protocol;
use crate::protocol::Guid;
use crate::protocol::Header;
use crate::protocol::msgtype;

/// Range bytes Linux puts in GPADL_HEADER (one range header + 26 PFNs).
pub const GPADL_HEADER_BYTES: usize = 8 + 26 * 8;
/// PFN bytes Linux puts in each GPADL_BODY (28 PFNs).
pub const GPADL_BODY_BYTES: usize = 28 * 8;

/// A message from the host, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum HostMessage {
    VersionResponse {
        supported: bool,
        msg_conn_id: u32,
    },
    Offer {
        interface_type: Guid,
        interface_instance: Guid,
        relid: u32,
        connection_id: u32,
        dedicated_interrupt: bool,
        monitor_allocated: bool,
        sub_channel_index: u16,
    },
    Rescind {
        relid: u32,
    },
    AllOffersDelivered,
    OpenResult {
        relid: u32,
        open_id: u32,
        status: u32,
    },
    GpadlCreated {
        relid: u32,
        gpadl: u32,
        status: u32,
    },
    GpadlTorndown {
        gpadl: u32,
    },
    UnloadResponse,
    ModifyChannelResponse {
        relid: u32,
        status: u32,
    },
    /// A type the guest does not know or a message shorter than Linux accepts.
    Invalid(u32),
}

/// Parses a host message, applying Linux's minimum payload lengths.
pub fn parse_host_message(bytes: &[u8]) -> HostMessage {
    let Some(h) = protocol::read::<Header>(bytes) else {
        return HostMessage::Invalid(0);
    };
    let ty = h.msgtype.get();
    let parsed = match ty {
        msgtype::VERSION_RESPONSE => protocol::read::<protocol::VersionResponse>(bytes).map(|m| {
            HostMessage::VersionResponse {
                supported: m.version_supported != 0,
                msg_conn_id: m.msg_conn_id.get(),
            }
        }),
        msgtype::OFFER_CHANNEL => {
            protocol::read::<protocol::OfferChannel>(bytes).map(|m| HostMessage::Offer {
                interface_type: Guid(m.interface_type),
                interface_instance: Guid(m.interface_instance),
                relid: m.child_relid.get(),
                connection_id: m.connection_id.get(),
                dedicated_interrupt: m.is_dedicated_interrupt.get() & 1 != 0,
                monitor_allocated: m.monitor_allocated & 1 != 0,
                sub_channel_index: m.sub_channel_index.get(),
            })
        }
        msgtype::RESCIND_CHANNEL_OFFER => {
            protocol::read::<protocol::RelidMessage>(bytes).map(|m| HostMessage::Rescind {
                relid: m.child_relid.get(),
            })
        }
        msgtype::ALL_OFFERS_DELIVERED => Some(HostMessage::AllOffersDelivered),
        msgtype::OPEN_CHANNEL_RESULT => {
            protocol::read::<protocol::OpenResult>(bytes).map(|m| HostMessage::OpenResult {
                relid: m.child_relid.get(),
                open_id: m.open_id.get(),
                status: m.status.get(),
            })
        }
        msgtype::GPADL_CREATED => {
            protocol::read::<protocol::GpadlCreated>(bytes).map(|m| HostMessage::GpadlCreated {
                relid: m.child_relid.get(),
                gpadl: m.gpadl.get(),
                status: m.status.get(),
            })
        }
        msgtype::GPADL_TORNDOWN => {
            protocol::read::<protocol::GpadlTorndown>(bytes).map(|m| HostMessage::GpadlTorndown {
                gpadl: m.gpadl.get(),
            })
        }
        msgtype::UNLOAD_RESPONSE => Some(HostMessage::UnloadResponse),
        msgtype::MODIFY_CHANNEL_RESPONSE => {
            protocol::read::<protocol::ModifyChannelResponse>(bytes).map(|m| {
                HostMessage::ModifyChannelResponse {
                    relid: m.child_relid.get(),
                    status: m.status.get(),
                }
            })
        }
        _ => None,
    };
    parsed.unwrap_or(HostMessage::Invalid(ty))
}

/// INITIATE_CONTACT for `version`, host messages to `target_vp` (SINT 2 from 5.0 on).
pub fn initiate_contact(version: u32, target_vp: u32) -> Vec<u8> {
    let sint = if version >= protocol::version::WIN10_V5 {
        u64::from(protocol::VMBUS_SINT)
    } else {
        0
    };
    protocol::InitiateContact {
        header: Header::new(msgtype::INITIATE_CONTACT),
        version_requested: version.into(),
        target_vcpu: target_vp.into(),
        interrupt_page_or_sint: sint.into(),
        monitor_page1: 0.into(),
        monitor_page2: 0.into(),
    }
    .as_bytes()
    .to_vec()
}

/// A header-only message (REQUESTOFFERS, UNLOAD).
pub fn header_only(ty: u32) -> Vec<u8> {
    Header::new(ty).as_bytes().to_vec()
}

/// A message carrying only a relid (CLOSECHANNEL, RELID_RELEASED).
pub fn relid_message(ty: u32, relid: u32) -> Vec<u8> {
    protocol::RelidMessage {
        header: Header::new(ty),
        child_relid: relid.into(),
    }
    .as_bytes()
    .to_vec()
}

/// GPADL_HEADER followed by as many GPADL_BODY messages as the ranges need.
pub fn gpadl_messages(relid: u32, handle: u32, ranges: &[GpaRange]) -> Vec<Vec<u8>> {
    let bytes = write_ranges(ranges);
    let first = bytes.len().min(GPADL_HEADER_BYTES);
    let mut header = protocol::GpadlHeader {
        header: Header::new(msgtype::GPADL_HEADER),
        child_relid: relid.into(),
        gpadl: handle.into(),
        range_buflen: (bytes.len() as u16).into(),
        range_count: (ranges.len() as u16).into(),
    }
    .as_bytes()
    .to_vec();
    header.extend_from_slice(&bytes[..first]);
    let mut v = vec![header];
    for chunk in bytes[first..].chunks(GPADL_BODY_BYTES) {
        let mut body = protocol::GpadlBody {
            header: Header::new(msgtype::GPADL_BODY),
            msgnumber: 0.into(),
            gpadl: handle.into(),
        }
        .as_bytes()
        .to_vec();
        body.extend_from_slice(chunk);
        v.push(body);
    }
    v
}

/// GPADL_TEARDOWN.
pub fn gpadl_teardown(relid: u32, handle: u32) -> Vec<u8> {
    protocol::GpadlTeardown {
        header: Header::new(msgtype::GPADL_TEARDOWN),
        child_relid: relid.into(),
        gpadl: handle.into(),
    }
    .as_bytes()
    .to_vec()
}

/// OPENCHANNEL with open id = relid, as Linux sends it.
pub fn open_channel(relid: u32, ring_gpadl: u32, target_vp: u32, downstream_page: u32) -> Vec<u8> {
    protocol::OpenChannel {
        header: Header::new(msgtype::OPEN_CHANNEL),
        child_relid: relid.into(),
        open_id: relid.into(),
        ring_gpadl: ring_gpadl.into(),
        target_vp: target_vp.into(),
        downstream_page_offset: downstream_page.into(),
        user_data: [0; 120],
    }
    .as_bytes()
    .to_vec()
}

/// MODIFYCHANNEL.
pub fn modify_channel(relid: u32, target_vp: u32) -> Vec<u8> {
    protocol::ModifyChannel {
        header: Header::new(msgtype::MODIFY_CHANNEL),
        child_relid: relid.into(),
        target_vp: target_vp.into(),
    }
    .as_bytes()
    .to_vec()
}

/// A ring-buffer GPADL range over `pfns` (whole pages).
pub fn ring_range(pfns: Vec<u64>) -> GpaRange {
    GpaRange {
        byte_count: (pfns.len() * 4096) as u32,
        byte_offset: 0,
        pfns,
    }
}
