use guest_mem::GuestMemory;

use crate::client;
use crate::client::HostMessage;
use crate::protocol::Guid;
use crate::protocol::msgtype;
use crate::protocol::version;
use crate::*;

const SCSI: Guid = Guid::new(
    0xba6163d9,
    0x04a1,
    0x4d29,
    [0xb6, 0x05, 0x72, 0xe2, 0xff, 0xb1, 0xdc, 0x7f],
);
const INSTANCE: Guid = Guid::new(0x1234_5678, 1, 2, [3, 4, 5, 6, 7, 8, 9, 10]);
const INSTANCE2: Guid = Guid::new(0x1234_5678, 1, 2, [3, 4, 5, 6, 7, 8, 9, 11]);

#[derive(Default)]
struct TestNotifier {
    sent: Vec<(u32, HostMessage)>,
    opened: Vec<(OfferId, OpenRequest)>,
    closed: Vec<OfferId>,
    retargeted: Vec<(OfferId, u32)>,
    refuse_open: bool,
}

impl Notifier for TestNotifier {
    fn send_message(&mut self, target_vp: u32, message: &[u8]) {
        assert!(message.len() <= 240);
        self.sent
            .push((target_vp, client::parse_host_message(message)));
    }
    fn open_channel(&mut self, offer: OfferId, request: &OpenRequest) -> Result<(), OpenError> {
        if self.refuse_open {
            return Err(OpenError("refused".into()));
        }
        self.opened.push((offer, request.clone()));
        Ok(())
    }
    fn close_channel(&mut self, offer: OfferId) {
        self.closed.push(offer);
    }
    fn retarget_channel(&mut self, offer: OfferId, target_vp: u32) {
        self.retargeted.push((offer, target_vp));
    }
}

impl TestNotifier {
    fn take(&mut self) -> Vec<HostMessage> {
        self.sent.drain(..).map(|(_, m)| m).collect()
    }
}

struct Harness {
    server: VmbusServer,
    n: TestNotifier,
    memory: GuestMemory,
}

impl Harness {
    fn new() -> Self {
        let memory = GuestMemory::allocate(1 << 20);
        Self {
            server: VmbusServer::new(memory.clone(), Limits::new(2)),
            n: TestNotifier::default(),
            memory,
        }
    }

    fn send(&mut self, msg: &[u8]) -> Vec<HostMessage> {
        self.server.handle_message(0, msg, &mut self.n);
        self.n.take()
    }

    fn offer(&mut self, instance: Guid) -> OfferId {
        self.server
            .add_offer(OfferParams::new("scsi", SCSI, instance), &mut self.n)
            .unwrap()
    }

    /// Negotiates 5.3 and requests offers, returning the offer messages.
    fn connect(&mut self) -> Vec<HostMessage> {
        let r = self.send(&client::initiate_contact(version::WIN10_V5_3, 0));
        assert_eq!(
            r,
            vec![HostMessage::VersionResponse {
                supported: true,
                msg_conn_id: 1
            }]
        );
        self.send(&client::header_only(msgtype::REQUEST_OFFERS))
    }

    fn gpadl(&mut self, relid: u32, handle: u32, pfns: Vec<u64>) -> Vec<HostMessage> {
        let mut out = Vec::new();
        for m in client::gpadl_messages(relid, handle, &[client::ring_range(pfns)]) {
            out.extend(self.send(&m));
        }
        out
    }

    /// Offer, connect, 64-page GPADL, open; returns the offer id.
    fn open(&mut self) -> OfferId {
        let id = self.offer(INSTANCE);
        self.connect();
        let created = self.gpadl(1, 0xe1e10, (16..80).collect());
        assert_eq!(
            created,
            vec![HostMessage::GpadlCreated {
                relid: 1,
                gpadl: 0xe1e10,
                status: 0
            }]
        );
        let r = self.send(&client::open_channel(1, 0xe1e10, 1, 32));
        assert_eq!(
            r,
            vec![HostMessage::OpenResult {
                relid: 1,
                open_id: 1,
                status: 0
            }]
        );
        id
    }
}

#[test]
fn every_version_linux_tries_is_accepted_and_others_refused() {
    for v in version::SUPPORTED {
        let mut h = Harness::new();
        let r = h.send(&client::initiate_contact(v, 1));
        assert_eq!(
            r,
            vec![HostMessage::VersionResponse {
                supported: true,
                msg_conn_id: 1
            }],
            "{v:#x}"
        );
        assert_eq!(h.server.version(), Some(v));
    }
    let mut h = Harness::new();
    for v in [0x0006_0000, 0x0001_0001, 0x0000_000d] {
        let r = h.send(&client::initiate_contact(v, 0));
        assert_eq!(
            r,
            vec![HostMessage::VersionResponse {
                supported: false,
                msg_conn_id: 1
            }]
        );
        assert_eq!(h.server.version(), None);
    }
}

#[test]
fn version_response_goes_to_the_requested_vp_and_bad_vps_get_nothing() {
    let mut h = Harness::new();
    h.server
        .handle_message(0, &client::initiate_contact(version::WIN10_V5, 1), &mut h.n);
    assert_eq!(h.n.sent[0].0, 1);
    h.n.sent.clear();
    h.server
        .handle_message(0, &client::initiate_contact(version::WIN10_V5, 2), &mut h.n);
    assert!(h.n.sent.is_empty());
}

#[test]
fn v5_contact_must_name_sint_2() {
    let mut h = Harness::new();
    let mut m = client::initiate_contact(version::WIN10_V5_3, 0);
    m[16] = 3;
    assert_eq!(
        h.send(&m),
        vec![HostMessage::VersionResponse {
            supported: false,
            msg_conn_id: 1
        }]
    );
}

#[test]
fn messages_before_contact_are_ignored() {
    let mut h = Harness::new();
    h.offer(INSTANCE);
    assert!(
        h.send(&client::header_only(msgtype::REQUEST_OFFERS))
            .is_empty()
    );
    assert!(h.send(&client::open_channel(1, 1, 0, 2)).is_empty());
}

#[test]
fn request_offers_sends_each_offer_then_all_offers_delivered() {
    let mut h = Harness::new();
    h.offer(INSTANCE);
    h.offer(INSTANCE2);
    let r = h.connect();
    assert_eq!(r.len(), 3);
    assert_eq!(
        r[0],
        HostMessage::Offer {
            interface_type: SCSI,
            interface_instance: INSTANCE,
            relid: 1,
            connection_id: 0x2001,
            dedicated_interrupt: true,
            monitor_allocated: false,
            sub_channel_index: 0,
        }
    );
    assert!(matches!(
        r[1],
        HostMessage::Offer {
            relid: 2,
            connection_id: 0x2002,
            ..
        }
    ));
    assert_eq!(r[2], HostMessage::AllOffersDelivered);
    // Hot-add after the guest asked: offered at once.
    h.offer(Guid::new(9, 9, 9, [9; 8]));
    assert!(matches!(
        h.n.take()[..],
        [HostMessage::Offer { relid: 3, .. }]
    ));
}

#[test]
fn gpadl_is_created_only_after_its_last_body() {
    let mut h = Harness::new();
    h.offer(INSTANCE);
    h.connect();
    let msgs = client::gpadl_messages(1, 7, &[client::ring_range((16..80).collect())]);
    assert_eq!(msgs.len(), 3, "26 + 28 + 10 PFNs");
    assert!(h.send(&msgs[0]).is_empty());
    assert!(h.send(&msgs[1]).is_empty());
    assert_eq!(
        h.send(&msgs[2]),
        vec![HostMessage::GpadlCreated {
            relid: 1,
            gpadl: 7,
            status: 0
        }]
    );
    assert_eq!(h.server.gpadl_count(), 1);
}

#[test]
fn bodies_of_interleaved_gpadls_are_kept_apart() {
    let mut h = Harness::new();
    h.offer(INSTANCE);
    h.connect();
    let a = client::gpadl_messages(1, 1, &[client::ring_range((16..60).collect())]);
    let b = client::gpadl_messages(1, 2, &[client::ring_range((100..140).collect())]);
    assert!(h.send(&a[0]).is_empty());
    assert!(h.send(&b[0]).is_empty());
    assert_eq!(h.send(&b[1]).len(), 1);
    assert_eq!(
        h.send(&a[1]),
        vec![HostMessage::GpadlCreated {
            relid: 1,
            gpadl: 1,
            status: 0
        }]
    );
}

#[test]
fn gpadls_outside_ram_or_malformed_fail_without_disturbing_others() {
    let mut h = Harness::new();
    h.offer(INSTANCE);
    h.connect();
    let failed = |gpadl| {
        vec![HostMessage::GpadlCreated {
            relid: 1,
            gpadl,
            status: 0xc000_0001,
        }]
    };
    // PFN beyond guest RAM (1 MiB = 256 pages).
    assert_eq!(h.gpadl(1, 1, vec![10, 300]), failed(1));
    // Unknown channel.
    assert_eq!(
        h.gpadl(9, 2, vec![10]),
        vec![HostMessage::GpadlCreated {
            relid: 9,
            gpadl: 2,
            status: 0xc000_0001
        }]
    );
    // Good one, then a duplicate handle: the first survives.
    assert_eq!(
        h.gpadl(1, 3, vec![10, 11])[0],
        HostMessage::GpadlCreated {
            relid: 1,
            gpadl: 3,
            status: 0
        }
    );
    assert_eq!(h.gpadl(1, 3, vec![12]), failed(3));
    assert_eq!(h.server.gpadl_count(), 1);
    // Body overflowing the declared size.
    let mut msgs = client::gpadl_messages(1, 4, &[client::ring_range((16..60).collect())]);
    msgs[1].extend_from_slice(&[0; 8]);
    h.send(&msgs[0]);
    assert_eq!(h.send(&msgs[1]), failed(4));
    // Header claiming fewer bytes than it carries; zero ranges.
    let mut m = client::gpadl_messages(1, 5, &[client::ring_range(vec![10])]).remove(0);
    m[16] = 8;
    assert_eq!(h.send(&m), failed(5));
    let mut m = client::gpadl_messages(1, 6, &[client::ring_range(vec![10])]).remove(0);
    m[18] = 0;
    assert_eq!(h.send(&m), failed(6));
    // Range bytes that do not parse: byte count bigger than the PFNs given.
    let mut m = client::gpadl_messages(1, 8, &[client::ring_range(vec![10])]).remove(0);
    m[20..24].copy_from_slice(&0x2000u32.to_le_bytes());
    assert_eq!(h.send(&m), failed(8));
    // Bodies for unknown handles are ignored.
    let body = client::gpadl_messages(1, 99, &[client::ring_range((0..40).collect())]).remove(1);
    assert!(h.send(&body).is_empty());
    assert_eq!(h.server.gpadl_count(), 1);
}

#[test]
fn gpadl_count_is_bounded() {
    let mut h = Harness::new();
    h.server = VmbusServer::new(
        h.memory.clone(),
        Limits {
            max_gpadls: 4,
            ..Limits::new(1)
        },
    );
    h.offer(INSTANCE);
    h.connect();
    for handle in 0..6 {
        let r = h.gpadl(1, handle, vec![10]);
        let expect = if handle < 4 { 0 } else { 0xc000_0001 };
        assert_eq!(
            r,
            vec![HostMessage::GpadlCreated {
                relid: 1,
                gpadl: handle,
                status: expect
            }]
        );
    }
}

#[test]
fn open_hands_the_device_a_validated_ring_gpadl() {
    let mut h = Harness::new();
    let id = h.open();
    let (offer, req) = &h.n.opened[0];
    assert_eq!(*offer, id);
    assert_eq!(req.relid, 1);
    assert_eq!(req.connection_id, 0x2001);
    assert_eq!(req.target_vp, 1);
    assert_eq!(req.downstream_page, 32);
    assert_eq!(req.ring_gpadl.ring_pages().unwrap().len(), 64);
    assert_eq!(
        h.server.channel(id),
        Some(ChannelInfo {
            relid: 1,
            connection_id: 0x2001,
            open: true,
            revoked: false
        })
    );
    // A second open of an open channel fails and changes nothing.
    let r = h.send(&client::open_channel(1, 0xe1e10, 1, 32));
    assert!(matches!(
        r[..],
        [HostMessage::OpenResult {
            status: 0xc000_0001,
            ..
        }]
    ));
    assert_eq!(h.n.opened.len(), 1);
}

#[test]
fn bad_opens_fail_with_a_status() {
    let mut h = Harness::new();
    h.offer(INSTANCE);
    h.connect();
    h.gpadl(1, 5, (16..80).collect());
    let fail = |relid| {
        vec![HostMessage::OpenResult {
            relid,
            open_id: relid,
            status: 0xc000_0001,
        }]
    };
    assert_eq!(
        h.send(&client::open_channel(1, 6, 0, 32)),
        fail(1),
        "unknown GPADL"
    );
    assert_eq!(
        h.send(&client::open_channel(2, 5, 0, 32)),
        fail(2),
        "unknown channel"
    );
    assert_eq!(
        h.send(&client::open_channel(1, 5, 7, 32)),
        fail(1),
        "bad VP"
    );
    h.n.refuse_open = true;
    assert_eq!(
        h.send(&client::open_channel(1, 5, 0, 32)),
        fail(1),
        "device refused"
    );
    assert!(!h.server.channel(OfferId(1)).unwrap().open);
    // A GPADL still being built is not usable either.
    let msgs = client::gpadl_messages(1, 9, &[client::ring_range((100..164).collect())]);
    h.send(&msgs[0]);
    h.n.refuse_open = false;
    assert_eq!(
        h.send(&client::open_channel(1, 9, 0, 32)),
        fail(1),
        "partial GPADL"
    );
}

#[test]
fn close_stops_the_device_and_teardown_answers() {
    let mut h = Harness::new();
    let id = h.open();
    assert!(
        h.send(&client::relid_message(msgtype::CLOSE_CHANNEL, 1))
            .is_empty()
    );
    assert_eq!(h.n.closed, vec![id]);
    assert_eq!(
        h.send(&client::gpadl_teardown(1, 0xe1e10)),
        vec![HostMessage::GpadlTorndown { gpadl: 0xe1e10 }]
    );
    assert_eq!(h.server.gpadl_count(), 0);
    // Reopen works with a new GPADL.
    h.gpadl(1, 0xe1e11, (16..80).collect());
    let r = h.send(&client::open_channel(1, 0xe1e11, 0, 32));
    assert!(matches!(r[..], [HostMessage::OpenResult { status: 0, .. }]));
}

#[test]
fn teardown_of_a_ring_in_use_waits_for_the_close() {
    let mut h = Harness::new();
    h.open();
    assert!(h.send(&client::gpadl_teardown(1, 0xe1e10)).is_empty());
    assert_eq!(
        h.send(&client::relid_message(msgtype::CLOSE_CHANNEL, 1)),
        vec![HostMessage::GpadlTorndown { gpadl: 0xe1e10 }]
    );
    // Teardown naming the wrong channel is ignored.
    h.gpadl(1, 3, vec![10]);
    assert!(h.send(&client::gpadl_teardown(2, 3)).is_empty());
    assert_eq!(h.server.gpadl_count(), 1);
}

#[test]
fn rescind_closes_the_device_and_the_relid_waits_for_release() {
    let mut h = Harness::new();
    let id = h.open();
    h.server.revoke_offer(id, &mut h.n).unwrap();
    assert_eq!(h.n.closed, vec![id]);
    assert_eq!(h.n.take(), vec![HostMessage::Rescind { relid: 1 }]);
    // The guest's close after a rescind is harmless; opens are refused.
    assert!(
        h.send(&client::relid_message(msgtype::CLOSE_CHANNEL, 1))
            .is_empty()
    );
    assert_eq!(h.n.closed.len(), 1);
    // Relid 1 is still reserved: a new offer gets relid 2.
    h.offer(INSTANCE2);
    assert!(matches!(
        h.n.take()[..],
        [HostMessage::Offer { relid: 2, .. }]
    ));
    assert!(
        h.send(&client::relid_message(msgtype::RELID_RELEASED, 1))
            .is_empty()
    );
    assert_eq!(h.server.channel(id), None);
    assert_eq!(
        h.server.gpadl_count(),
        0,
        "the rescinded channel's GPADLs are gone"
    );
    h.offer(Guid::new(7, 7, 7, [7; 8]));
    assert!(matches!(
        h.n.take()[..],
        [HostMessage::Offer { relid: 1, .. }]
    ));
}

#[test]
fn revoking_an_offer_the_guest_never_saw_removes_it_silently() {
    let mut h = Harness::new();
    let id = h.offer(INSTANCE);
    h.server.revoke_offer(id, &mut h.n).unwrap();
    assert!(h.n.sent.is_empty());
    assert_eq!(h.server.channel(id), None);
    assert_eq!(
        h.server.revoke_offer(id, &mut h.n),
        Err(ServerError::NoOffer(id))
    );
}

#[test]
fn unload_closes_everything_and_a_new_contact_reoffers() {
    let mut h = Harness::new();
    let id = h.open();
    assert_eq!(
        h.send(&client::header_only(msgtype::UNLOAD)),
        vec![HostMessage::UnloadResponse]
    );
    assert_eq!(h.n.closed, vec![id]);
    assert_eq!(h.server.gpadl_count(), 0);
    assert_eq!(h.server.version(), None);
    let offers = h.connect();
    assert!(matches!(offers[0], HostMessage::Offer { relid: 1, .. }));
}

#[test]
fn initiate_contact_resets_an_existing_connection() {
    let mut h = Harness::new();
    let id = h.open();
    h.send(&client::initiate_contact(version::WIN10_V5_2, 0));
    assert_eq!(h.n.closed, vec![id]);
    assert_eq!(h.server.gpadl_count(), 0);
    assert_eq!(h.server.version(), Some(version::WIN10_V5_2));
}

#[test]
fn reset_closes_channels_and_forgets_rescinded_offers() {
    let mut h = Harness::new();
    let id = h.open();
    let other = h.offer(INSTANCE2);
    h.server.revoke_offer(other, &mut h.n).unwrap();
    h.server.reset(&mut h.n);
    assert!(h.n.closed.contains(&id));
    assert_eq!(h.server.channel(other), None);
    assert!(h.server.channel(id).is_some());
}

#[test]
fn modify_channel_retargets_and_answers_from_5_3() {
    let mut h = Harness::new();
    let id = h.open();
    assert_eq!(
        h.send(&client::modify_channel(1, 0)),
        vec![HostMessage::ModifyChannelResponse {
            relid: 1,
            status: 0
        }]
    );
    assert_eq!(h.n.retargeted, vec![(id, 0)]);
    assert_eq!(
        h.send(&client::modify_channel(1, 5)),
        vec![HostMessage::ModifyChannelResponse {
            relid: 1,
            status: 0xc000_0001
        }]
    );
    // 5.2 has no response message.
    let mut h = Harness::new();
    h.offer(INSTANCE);
    h.send(&client::initiate_contact(version::WIN10_V5_2, 0));
    assert!(h.send(&client::modify_channel(1, 0)).is_empty());
}

#[test]
fn truncated_messages_of_every_type_change_nothing() {
    let mut h = Harness::new();
    let id = h.open();
    let full = [
        client::initiate_contact(version::WIN10_V5_3, 0),
        client::gpadl_messages(1, 50, &[client::ring_range(vec![10])]).remove(0),
        client::gpadl_teardown(1, 0xe1e10),
        client::open_channel(1, 0xe1e10, 0, 32),
        client::relid_message(msgtype::CLOSE_CHANNEL, 1),
        client::relid_message(msgtype::RELID_RELEASED, 1),
        client::modify_channel(1, 0),
    ];
    for m in &full {
        for len in 0..m.len().min(24) {
            h.server.handle_message(0, &m[..len], &mut h.n);
        }
    }
    let sent: Vec<HostMessage> = h.n.take();
    assert!(sent.iter().all(|m| matches!(
        m,
        HostMessage::GpadlCreated {
            status: 0xc000_0001,
            ..
        }
    )));
    assert!(h.server.channel(id).unwrap().open);
    // The ring GPADL, plus handle 50 whose header arrived without its ranges: it waits for
    // bodies (a short header is indistinguishable from one followed by GPADL_BODY messages).
    assert_eq!(h.server.gpadl_count(), 2);
    // Unknown message types are ignored.
    assert!(h.send(&client::header_only(99)).is_empty());
    assert!(
        h.send(&client::header_only(msgtype::TL_CONNECT_REQUEST))
            .is_empty()
    );
}
