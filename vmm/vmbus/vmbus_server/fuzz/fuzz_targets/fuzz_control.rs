//! Random control-message sequences (well-formed, mutated and raw) plus host events against
//! the VMBus server. Nothing may panic; every message the server sends must be one a Linux
//! guest accepts; a device is only opened on a GPADL of guest RAM, and open/close pair up.

#![no_main]

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use guest_mem::GuestMemory;
use libfuzzer_sys::fuzz_target;
use vmbus_ring::GpaRange;
use vmbus_server::Guid;
use vmbus_server::Limits;
use vmbus_server::Notifier;
use vmbus_server::OfferId;
use vmbus_server::OfferParams;
use vmbus_server::OpenError;
use vmbus_server::OpenRequest;
use vmbus_server::VmbusServer;
use vmbus_server::client;
use vmbus_server::client::HostMessage;
use vmbus_server::protocol::msgtype;
use vmbus_server::protocol::version;

const PAGES: u64 = 256;

#[derive(Arbitrary, Debug)]
enum Op {
    Raw(Vec<u8>),
    Contact {
        version: u8,
        vp: u8,
        sint: u8,
    },
    RequestOffers,
    Gpadl {
        relid: u8,
        handle: u8,
        offset: u16,
        pfns: Vec<u16>,
        cut: u8,
    },
    Body {
        handle: u8,
        pfns: Vec<u16>,
    },
    Open {
        relid: u8,
        handle: u8,
        vp: u8,
        downstream: u8,
    },
    Close {
        relid: u8,
    },
    Teardown {
        relid: u8,
        handle: u8,
    },
    Released {
        relid: u8,
    },
    Unload,
    Modify {
        relid: u8,
        vp: u8,
    },
    AddOffer,
    Revoke {
        index: u8,
    },
    Reset,
    RefuseOpens(bool),
    Mutate {
        kind: u8,
        at: u8,
        value: u8,
    },
}

#[derive(Default)]
struct Checker {
    open: BTreeSet<OfferId>,
    refuse: bool,
}

impl Notifier for Checker {
    fn send_message(&mut self, target_vp: u32, message: &[u8]) {
        assert!(target_vp < 2);
        assert!(message.len() <= 240);
        assert!(
            !matches!(client::parse_host_message(message), HostMessage::Invalid(_)),
            "host sent a message Linux would drop: {message:x?}"
        );
    }
    fn open_channel(&mut self, offer: OfferId, request: &OpenRequest) -> Result<(), OpenError> {
        assert!(self.open.insert(offer), "opened twice");
        for r in &request.ring_gpadl.ranges {
            for &pfn in &r.pfns {
                assert!(pfn < PAGES, "GPADL page outside guest RAM reached a device");
            }
        }
        if self.refuse {
            self.open.remove(&offer);
            return Err(OpenError("refused".into()));
        }
        Ok(())
    }
    fn close_channel(&mut self, offer: OfferId) {
        assert!(
            self.open.remove(&offer),
            "closed a channel that was not open"
        );
    }
}

fn message(op: &Op) -> Option<Vec<u8>> {
    let m = match op {
        Op::Raw(b) => b.clone(),
        Op::Contact {
            version: v,
            vp,
            sint,
        } => {
            let versions = version::SUPPORTED;
            let requested = versions
                .get(usize::from(*v) % (versions.len() + 1))
                .copied()
                .unwrap_or(u32::from(*v) << 16);
            let mut m = client::initiate_contact(requested, u32::from(*vp % 3));
            m[16] = *sint % 4;
            m
        }
        Op::RequestOffers => client::header_only(msgtype::REQUEST_OFFERS),
        Op::Gpadl { .. } | Op::Body { .. } => return None,
        Op::Open {
            relid,
            handle,
            vp,
            downstream,
        } => client::open_channel(
            u32::from(*relid % 4),
            u32::from(*handle % 8),
            u32::from(*vp % 3),
            u32::from(*downstream),
        ),
        Op::Close { relid } => client::relid_message(msgtype::CLOSE_CHANNEL, u32::from(*relid % 4)),
        Op::Teardown { relid, handle } => {
            client::gpadl_teardown(u32::from(*relid % 4), u32::from(*handle % 8))
        }
        Op::Released { relid } => {
            client::relid_message(msgtype::RELID_RELEASED, u32::from(*relid % 4))
        }
        Op::Unload => client::header_only(msgtype::UNLOAD),
        Op::Modify { relid, vp } => {
            client::modify_channel(u32::from(*relid % 4), u32::from(*vp % 3))
        }
        _ => return None,
    };
    Some(m)
}

fuzz_target!(|ops: Vec<Op>| {
    let memory = GuestMemory::allocate(PAGES * 4096);
    let mut server = VmbusServer::new(
        memory,
        Limits {
            max_gpadls: 16,
            ..Limits::new(2)
        },
    );
    let mut n = Checker::default();
    let mut offers = Vec::new();
    let mut last: Vec<u8> = Vec::new();
    for op in ops.iter().take(256) {
        match op {
            Op::Gpadl {
                relid,
                handle,
                offset,
                pfns,
                cut,
            } => {
                let pfns: Vec<u64> = pfns
                    .iter()
                    .take(200)
                    .map(|&p| u64::from(p) % (PAGES + 8))
                    .collect();
                if pfns.is_empty() {
                    continue;
                }
                let offset = u32::from(*offset) % 4096;
                let range = GpaRange {
                    byte_count: (pfns.len() as u32 * 4096).saturating_sub(offset).max(1),
                    byte_offset: offset,
                    pfns,
                };
                let msgs =
                    client::gpadl_messages(u32::from(*relid % 4), u32::from(*handle % 8), &[range]);
                let keep = msgs.len().saturating_sub(usize::from(*cut % 2));
                for m in msgs.into_iter().take(keep.max(1)) {
                    server.handle_message(0, &m, &mut n);
                }
            }
            Op::Body { handle, pfns } => {
                let mut m = client::header_only(msgtype::GPADL_BODY);
                m.extend_from_slice(&0u32.to_le_bytes());
                m.extend_from_slice(&u32::from(*handle % 8).to_le_bytes());
                for p in pfns.iter().take(28) {
                    m.extend_from_slice(&(u64::from(*p) % (PAGES + 8)).to_le_bytes());
                }
                server.handle_message(1, &m, &mut n);
            }
            Op::AddOffer => {
                let k = offers.len() as u32;
                let g = Guid::new(k, 0, 0, [0; 8]);
                if let Ok(id) = server.add_offer(OfferParams::new("fuzz", g, g), &mut n) {
                    offers.push(id);
                }
            }
            Op::Revoke { index } => {
                if let Some(id) = offers.get(usize::from(*index) % offers.len().max(1)) {
                    let _ = server.revoke_offer(*id, &mut n);
                }
            }
            Op::Reset => server.reset(&mut n),
            Op::RefuseOpens(r) => n.refuse = *r,
            Op::Mutate { kind, at, value } => {
                // Re-send the previous message with one byte changed or truncated.
                let mut m = last.clone();
                if m.is_empty() {
                    continue;
                }
                if kind % 2 == 0 {
                    let i = usize::from(*at) % m.len();
                    m[i] = *value;
                } else {
                    m.truncate(usize::from(*at) % m.len());
                }
                server.handle_message(0, &m, &mut n);
            }
            other => {
                if let Some(m) = message(other) {
                    server.handle_message(0, &m, &mut n);
                    last = m;
                }
            }
        }
    }
});
