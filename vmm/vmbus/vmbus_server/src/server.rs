//! The control-channel state machine (see the crate docs).

use std::collections::BTreeMap;
use std::collections::HashMap;

use device_api::warn_ratelimited;
use guest_mem::GuestMemory;
use vmbus_ring::Gpadl;
use zerocopy::IntoBytes;

use crate::protocol;
use crate::protocol::Guid;
use crate::protocol::Header;
use crate::protocol::msgtype;
use crate::protocol::version;

/// NTSTATUS STATUS_UNSUCCESSFUL: failure status in GPADL_CREATED / OPENCHANNEL_RESULT.
const STATUS_UNSUCCESSFUL: u32 = 0xc000_0001;
/// Event connection IDs are `EVENT_CONNECTION_BASE + relid` (below 0x2800, clear of the
/// message connections 1 and 4).
pub const EVENT_CONNECTION_BASE: u32 = 0x2000;
/// Largest relid (the SIEF area of one SINT has 2048 flags; 0 is reserved).
pub const MAX_RELID: u32 = 2047;

/// Host handle of an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OfferId(pub(crate) u32);

/// What a device offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferParams {
    /// Device name, for logs.
    pub name: String,
    /// Class GUID (what the guest matches its driver on).
    pub interface_type: Guid,
    /// Instance GUID (unique per device; the guest's device name).
    pub interface_instance: Guid,
    /// Sub-channel index (0: primary).
    pub sub_channel_index: u16,
    /// Channel flags.
    pub flags: u16,
    /// MMIO space the device wants, in MiB.
    pub mmio_megabytes: u16,
    /// Device-specific offer bytes.
    pub user_defined: [u8; 120],
}

impl OfferParams {
    /// A plain offer of `interface_type` / `interface_instance`.
    pub fn new(name: impl Into<String>, interface_type: Guid, interface_instance: Guid) -> Self {
        Self {
            name: name.into(),
            interface_type,
            interface_instance,
            sub_channel_index: 0,
            flags: 0,
            mmio_megabytes: 0,
            user_defined: [0; 120],
        }
    }
}

/// What a device receives when the guest opens its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    /// The guest's name for the channel (its SIEF event flag for host-to-guest signals).
    pub relid: u32,
    /// The connection ID the guest signals this channel on (HvSignalEvent).
    pub connection_id: u32,
    /// VP to interrupt for host-to-guest signals (SINT 2, event flag = relid).
    pub target_vp: u32,
    /// The ring GPADL, validated as guest RAM.
    pub ring_gpadl: Gpadl,
    /// Page index in the GPADL where the host-to-guest ring starts.
    pub downstream_page: u32,
    /// Device-specific bytes from OPENCHANNEL.
    pub user_data: [u8; 120],
}

/// A device refused an open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device refused to open the channel: {0}")]
pub struct OpenError(pub String);

/// Everything the server asks the outside world to do.
pub trait Notifier {
    /// Sends a control message to the guest: SynIC message type 1 on `target_vp`'s SINT 2.
    fn send_message(&mut self, target_vp: u32, message: &[u8]);
    /// The guest opened `offer`'s channel: start serving its rings.
    fn open_channel(&mut self, offer: OfferId, request: &OpenRequest) -> Result<(), OpenError>;
    /// Stop using `offer`'s rings (guest close, rescind, unload, reset).
    fn close_channel(&mut self, offer: OfferId);
    /// The guest moved `offer`'s interrupts to `target_vp`.
    fn retarget_channel(&mut self, offer: OfferId, target_vp: u32) {
        let _ = (offer, target_vp);
    }
}

/// Host-side API misuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    /// All relids are in use.
    #[error("no free channel id")]
    NoRelid,
    /// Unknown offer.
    #[error("no offer {0:?}")]
    NoOffer(OfferId),
}

/// Bounds on what one guest may make the server hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Number of VPs (target VPs must be below it).
    pub vp_count: u32,
    /// Most GPADLs (complete or being built) at once.
    pub max_gpadls: usize,
    /// Most pages per GPADL.
    pub max_gpadl_pages: usize,
}

impl Limits {
    /// Defaults for a machine with `vp_count` VPs.
    pub fn new(vp_count: u32) -> Self {
        Self {
            vp_count: vp_count.max(1),
            max_gpadls: 256,
            max_gpadl_pages: 8192,
        }
    }
}

/// Public view of a channel (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Relid.
    pub relid: u32,
    /// Event connection ID.
    pub connection_id: u32,
    /// Whether the guest has it open.
    pub open: bool,
    /// Whether it was rescinded.
    pub revoked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    Disconnected,
    Connected {
        version: u32,
        target_vp: u32,
        /// The guest asked for offers: new offers are sent as they appear.
        offers_requested: bool,
    },
}

#[derive(Debug)]
enum ChannelState {
    /// Known to the host; not (yet) sent to the guest.
    Unoffered,
    /// OFFERCHANNEL sent.
    Offered,
    /// Open: the device serves the rings.
    Open { ring_gpadl: u32, target_vp: u32 },
}

#[derive(Debug)]
struct Channel {
    params: OfferParams,
    relid: u32,
    state: ChannelState,
    /// RESCIND sent; waiting for RELID_RELEASED.
    revoked: bool,
}

#[derive(Debug)]
enum GpadlState {
    /// Waiting for GPADL_BODY messages: range bytes so far, the expected total.
    Building {
        bytes: Vec<u8>,
        total: usize,
        range_count: u16,
    },
    Ready(Gpadl),
}

#[derive(Debug)]
struct GpadlEntry {
    relid: u32,
    state: GpadlState,
    /// GPADL_TEARDOWN arrived while an open channel used it: answer once it closes.
    teardown_pending: bool,
}

/// The VMBus control-channel state machine.
#[derive(Debug)]
pub struct VmbusServer {
    memory: GuestMemory,
    limits: Limits,
    connection: Connection,
    next_offer: u32,
    /// By offer id.
    channels: BTreeMap<OfferId, Channel>,
    /// By GPADL handle.
    gpadls: HashMap<u32, GpadlEntry>,
}

impl VmbusServer {
    /// A server for a guest with `memory`, disconnected and without offers.
    pub fn new(memory: GuestMemory, limits: Limits) -> Self {
        Self {
            memory,
            limits,
            connection: Connection::Disconnected,
            next_offer: 1,
            channels: BTreeMap::new(),
            gpadls: HashMap::new(),
        }
    }

    /// The negotiated protocol version, if connected.
    pub fn version(&self) -> Option<u32> {
        match self.connection {
            Connection::Connected { version, .. } => Some(version),
            Connection::Disconnected => None,
        }
    }

    /// The state of `offer`'s channel.
    pub fn channel(&self, offer: OfferId) -> Option<ChannelInfo> {
        self.channels.get(&offer).map(|c| ChannelInfo {
            relid: c.relid,
            connection_id: EVENT_CONNECTION_BASE + c.relid,
            open: matches!(c.state, ChannelState::Open { .. }),
            revoked: c.revoked,
        })
    }

    /// Number of GPADLs the guest holds (complete or being built).
    pub fn gpadl_count(&self) -> usize {
        self.gpadls.len()
    }

    fn free_relid(&self) -> Option<u32> {
        (1..=MAX_RELID).find(|r| !self.channels.values().any(|c| c.relid == *r))
    }

    fn find_relid(&self, relid: u32) -> Option<OfferId> {
        self.channels
            .iter()
            .find(|(_, c)| c.relid == relid)
            .map(|(id, _)| *id)
    }

    /// Adds an offer; it reaches the guest now if the guest already asked for offers.
    pub fn add_offer(
        &mut self,
        params: OfferParams,
        notifier: &mut dyn Notifier,
    ) -> Result<OfferId, ServerError> {
        let relid = self.free_relid().ok_or(ServerError::NoRelid)?;
        let id = OfferId(self.next_offer);
        self.next_offer = self.next_offer.wrapping_add(1);
        self.channels.insert(
            id,
            Channel {
                params,
                relid,
                state: ChannelState::Unoffered,
                revoked: false,
            },
        );
        if let Connection::Connected {
            target_vp,
            offers_requested: true,
            ..
        } = self.connection
        {
            self.send_offer(id, target_vp, notifier);
        }
        Ok(id)
    }

    /// Hot-removes an offer: the device is told to stop now; the guest gets a rescind and
    /// the relid stays reserved until it answers with RELID_RELEASED.
    pub fn revoke_offer(
        &mut self,
        offer: OfferId,
        notifier: &mut dyn Notifier,
    ) -> Result<(), ServerError> {
        let channel = self
            .channels
            .get_mut(&offer)
            .ok_or(ServerError::NoOffer(offer))?;
        if channel.revoked {
            return Ok(());
        }
        if matches!(channel.state, ChannelState::Open { .. }) {
            notifier.close_channel(offer);
            channel.state = ChannelState::Offered;
        }
        let offered = !matches!(channel.state, ChannelState::Unoffered);
        match self.connection {
            Connection::Connected { target_vp, .. } if offered => {
                channel.revoked = true;
                let msg = protocol::RelidMessage {
                    header: Header::new(msgtype::RESCIND_CHANNEL_OFFER),
                    child_relid: channel.relid.into(),
                };
                notifier.send_message(target_vp, msg.as_bytes());
            }
            _ => {
                let relid = channel.relid;
                self.channels.remove(&offer);
                self.drop_gpadls_of(relid);
            }
        }
        Ok(())
    }

    /// VM reset: closes every channel, forgets GPADLs and rescinded offers, disconnects.
    /// Offers stay registered and are sent again after the next negotiation.
    pub fn reset(&mut self, notifier: &mut dyn Notifier) {
        self.disconnect(notifier);
    }

    fn disconnect(&mut self, notifier: &mut dyn Notifier) {
        let mut removed = Vec::new();
        for (&id, c) in self.channels.iter_mut() {
            if matches!(c.state, ChannelState::Open { .. }) {
                notifier.close_channel(id);
            }
            c.state = ChannelState::Unoffered;
            if c.revoked {
                removed.push(id);
            }
        }
        for id in removed {
            self.channels.remove(&id);
        }
        self.gpadls.clear();
        self.connection = Connection::Disconnected;
    }

    fn send_offer(&mut self, id: OfferId, target_vp: u32, notifier: &mut dyn Notifier) {
        let Some(c) = self.channels.get_mut(&id) else {
            return;
        };
        if !matches!(c.state, ChannelState::Unoffered) || c.revoked {
            return;
        }
        let offer = protocol::OfferChannel {
            header: Header::new(msgtype::OFFER_CHANNEL),
            interface_type: c.params.interface_type.0,
            interface_instance: c.params.interface_instance.0,
            reserved1: 0.into(),
            reserved2: 0.into(),
            flags: c.params.flags.into(),
            mmio_megabytes: c.params.mmio_megabytes.into(),
            user_defined: c.params.user_defined,
            sub_channel_index: c.params.sub_channel_index.into(),
            reserved3: 0.into(),
            child_relid: c.relid.into(),
            monitor_id: 0,
            monitor_allocated: 0,
            is_dedicated_interrupt: 1.into(),
            connection_id: (EVENT_CONNECTION_BASE + c.relid).into(),
        };
        c.state = ChannelState::Offered;
        tracing::debug!(name = %c.params.name, relid = c.relid, "offering channel");
        notifier.send_message(target_vp, offer.as_bytes());
    }

    /// Handles one message the guest posted from `vp`.
    pub fn handle_message(&mut self, vp: u32, message: &[u8], notifier: &mut dyn Notifier) {
        let Some(header) = protocol::read::<Header>(message) else {
            warn_ratelimited!(
                vp,
                len = message.len(),
                "VMBus message shorter than its header"
            );
            return;
        };
        let ty = header.msgtype.get();
        let result = match ty {
            msgtype::INITIATE_CONTACT => self.initiate_contact(message, notifier),
            msgtype::UNLOAD => self.unload(notifier),
            _ => match self.connection {
                Connection::Disconnected => Err("message before INITIATE_CONTACT"),
                Connection::Connected {
                    version, target_vp, ..
                } => self.handle_connected(ty, message, version, target_vp, notifier),
            },
        };
        if let Err(reason) = result {
            warn_ratelimited!(vp, msgtype = ty, reason, "VMBus message rejected");
        }
    }

    fn handle_connected(
        &mut self,
        ty: u32,
        message: &[u8],
        version: u32,
        target_vp: u32,
        notifier: &mut dyn Notifier,
    ) -> Result<(), &'static str> {
        match ty {
            msgtype::REQUEST_OFFERS => {
                let ids: Vec<OfferId> = self.channels.keys().copied().collect();
                for id in ids {
                    self.send_offer(id, target_vp, notifier);
                }
                if let Connection::Connected {
                    offers_requested, ..
                } = &mut self.connection
                {
                    *offers_requested = true;
                }
                notifier.send_message(
                    target_vp,
                    Header::new(msgtype::ALL_OFFERS_DELIVERED).as_bytes(),
                );
                Ok(())
            }
            msgtype::GPADL_HEADER => self.gpadl_header(message, target_vp, notifier),
            msgtype::GPADL_BODY => self.gpadl_body(message, target_vp, notifier),
            msgtype::GPADL_TEARDOWN => self.gpadl_teardown(message, target_vp, notifier),
            msgtype::OPEN_CHANNEL => self.open_channel(message, target_vp, notifier),
            msgtype::CLOSE_CHANNEL => self.close_channel(message, target_vp, notifier),
            msgtype::RELID_RELEASED => self.relid_released(message),
            msgtype::MODIFY_CHANNEL if version >= version::WIN10_RS3 => {
                self.modify_channel(message, version, target_vp, notifier)
            }
            _ => Err("unsupported message type"),
        }
    }

    fn initiate_contact(
        &mut self,
        message: &[u8],
        notifier: &mut dyn Notifier,
    ) -> Result<(), &'static str> {
        let m: protocol::InitiateContact =
            protocol::read(message).ok_or("short INITIATE_CONTACT")?;
        let requested = m.version_requested.get();
        let target_vp = m.target_vcpu.get();
        if target_vp >= self.limits.vp_count {
            return Err("INITIATE_CONTACT target VP out of range");
        }
        // Every INITIATE_CONTACT restarts the connection (kexec, firmware hand-off).
        self.disconnect(notifier);
        let sint_ok = requested < version::WIN10_V5
            || (m.interrupt_page_or_sint.get() & 0xff) as u8 == protocol::VMBUS_SINT;
        let supported = version::SUPPORTED.contains(&requested) && sint_ok;
        let response = protocol::VersionResponse {
            header: Header::new(msgtype::VERSION_RESPONSE),
            version_supported: u8::from(supported),
            connection_state: 0,
            padding: 0.into(),
            msg_conn_id: protocol::MESSAGE_CONNECTION_ID.into(),
        };
        if supported {
            self.connection = Connection::Connected {
                version: requested,
                target_vp,
                offers_requested: false,
            };
            tracing::info!(
                version = format_args!("{}.{}", requested >> 16, requested & 0xffff),
                target_vp,
                "VMBus connected"
            );
        }
        notifier.send_message(target_vp, response.as_bytes());
        Ok(())
    }

    fn unload(&mut self, notifier: &mut dyn Notifier) -> Result<(), &'static str> {
        let Connection::Connected { target_vp, .. } = self.connection else {
            return Err("UNLOAD while disconnected");
        };
        self.disconnect(notifier);
        notifier.send_message(target_vp, Header::new(msgtype::UNLOAD_RESPONSE).as_bytes());
        Ok(())
    }

    fn offered_channel(&self, relid: u32) -> Option<OfferId> {
        self.find_relid(relid).filter(|id| {
            self.channels
                .get(id)
                .is_some_and(|c| !matches!(c.state, ChannelState::Unoffered))
        })
    }

    fn gpadl_header(
        &mut self,
        message: &[u8],
        target_vp: u32,
        notifier: &mut dyn Notifier,
    ) -> Result<(), &'static str> {
        let m: protocol::GpadlHeader = protocol::read(message).ok_or("short GPADL_HEADER")?;
        let relid = m.child_relid.get();
        let handle = m.gpadl.get();
        let total = usize::from(m.range_buflen.get());
        let range_count = m.range_count.get();
        let first = &message[size_of::<protocol::GpadlHeader>()..];
        let channel_ok = self
            .offered_channel(relid)
            .is_some_and(|id| self.channels.get(&id).is_some_and(|c| !c.revoked));
        if !channel_ok {
            self.send_gpadl_created(target_vp, relid, handle, false, notifier);
            return Err("GPADL_HEADER for a channel that is not offered");
        }
        if self.gpadls.contains_key(&handle) {
            // Do not disturb the existing GPADL; fail only this request.
            self.send_gpadl_created(target_vp, relid, handle, false, notifier);
            return Err("GPADL handle already in use");
        }
        if self.gpadls.len() >= self.limits.max_gpadls {
            self.send_gpadl_created(target_vp, relid, handle, false, notifier);
            return Err("too many GPADLs");
        }
        if range_count == 0 || first.len() > total || total / 8 > self.limits.max_gpadl_pages + 2 {
            self.send_gpadl_created(target_vp, relid, handle, false, notifier);
            return Err("bad GPADL range sizes");
        }
        self.gpadls.insert(
            handle,
            GpadlEntry {
                relid,
                state: GpadlState::Building {
                    bytes: first.to_vec(),
                    total,
                    range_count,
                },
                teardown_pending: false,
            },
        );
        self.try_complete_gpadl(handle, target_vp, notifier)
    }

    fn gpadl_body(
        &mut self,
        message: &[u8],
        target_vp: u32,
        notifier: &mut dyn Notifier,
    ) -> Result<(), &'static str> {
        let m: protocol::GpadlBody = protocol::read(message).ok_or("short GPADL_BODY")?;
        let handle = m.gpadl.get();
        let data = &message[size_of::<protocol::GpadlBody>()..];
        let entry = self
            .gpadls
            .get_mut(&handle)
            .ok_or("GPADL_BODY for an unknown GPADL")?;
        let GpadlState::Building { bytes, total, .. } = &mut entry.state else {
            return Err("GPADL_BODY for a complete GPADL");
        };
        if bytes.len() + data.len() > *total {
            let relid = entry.relid;
            self.gpadls.remove(&handle);
            self.send_gpadl_created(target_vp, relid, handle, false, notifier);
            return Err("GPADL_BODY beyond the declared size");
        }
        bytes.extend_from_slice(data);
        self.try_complete_gpadl(handle, target_vp, notifier)
    }

    fn try_complete_gpadl(
        &mut self,
        handle: u32,
        target_vp: u32,
        notifier: &mut dyn Notifier,
    ) -> Result<(), &'static str> {
        let Some(entry) = self.gpadls.get_mut(&handle) else {
            return Ok(());
        };
        let GpadlState::Building {
            bytes,
            total,
            range_count,
        } = &entry.state
        else {
            return Ok(());
        };
        if bytes.len() < *total {
            return Ok(());
        }
        let relid = entry.relid;
        let parsed = Gpadl::parse(bytes, *range_count)
            .ok()
            .filter(|g| g.page_count() <= self.limits.max_gpadl_pages)
            .filter(|g| g.validate(&self.memory).is_ok());
        match parsed {
            Some(gpadl) => {
                entry.state = GpadlState::Ready(gpadl);
                self.send_gpadl_created(target_vp, relid, handle, true, notifier);
                Ok(())
            }
            None => {
                self.gpadls.remove(&handle);
                self.send_gpadl_created(target_vp, relid, handle, false, notifier);
                Err("GPADL is malformed or not guest RAM")
            }
        }
    }

    fn send_gpadl_created(
        &self,
        target_vp: u32,
        relid: u32,
        handle: u32,
        ok: bool,
        notifier: &mut dyn Notifier,
    ) {
        let m = protocol::GpadlCreated {
            header: Header::new(msgtype::GPADL_CREATED),
            child_relid: relid.into(),
            gpadl: handle.into(),
            status: if ok { 0 } else { STATUS_UNSUCCESSFUL }.into(),
        };
        notifier.send_message(target_vp, m.as_bytes());
    }

    fn send_torndown(&self, target_vp: u32, handle: u32, notifier: &mut dyn Notifier) {
        let m = protocol::GpadlTorndown {
            header: Header::new(msgtype::GPADL_TORNDOWN),
            gpadl: handle.into(),
        };
        notifier.send_message(target_vp, m.as_bytes());
    }

    fn gpadl_in_use(&self, handle: u32) -> bool {
        self.channels.values().any(
            |c| matches!(c.state, ChannelState::Open { ring_gpadl, .. } if ring_gpadl == handle),
        )
    }

    fn gpadl_teardown(
        &mut self,
        message: &[u8],
        target_vp: u32,
        notifier: &mut dyn Notifier,
    ) -> Result<(), &'static str> {
        let m: protocol::GpadlTeardown = protocol::read(message).ok_or("short GPADL_TEARDOWN")?;
        let handle = m.gpadl.get();
        let in_use = self.gpadl_in_use(handle);
        let entry = self
            .gpadls
            .get_mut(&handle)
            .ok_or("GPADL_TEARDOWN for an unknown GPADL")?;
        if entry.relid != m.child_relid.get() {
            return Err("GPADL_TEARDOWN names the wrong channel");
        }
        if in_use {
            entry.teardown_pending = true;
            return Ok(());
        }
        self.gpadls.remove(&handle);
        self.send_torndown(target_vp, handle, notifier);
        Ok(())
    }

    fn open_channel(
        &mut self,
        message: &[u8],
        target_vp: u32,
        notifier: &mut dyn Notifier,
    ) -> Result<(), &'static str> {
        let m: protocol::OpenChannel = protocol::read(message).ok_or("short OPENCHANNEL")?;
        let relid = m.child_relid.get();
        let open_id = m.open_id.get();
        let reply = |notifier: &mut dyn Notifier, ok: bool| {
            let r = protocol::OpenResult {
                header: Header::new(msgtype::OPEN_CHANNEL_RESULT),
                child_relid: relid.into(),
                open_id: open_id.into(),
                status: if ok { 0 } else { STATUS_UNSUCCESSFUL }.into(),
            };
            notifier.send_message(target_vp, r.as_bytes());
        };
        let Some(id) = self.offered_channel(relid) else {
            reply(notifier, false);
            return Err("OPENCHANNEL for a channel that is not offered");
        };
        let channel = &self.channels[&id];
        if channel.revoked || !matches!(channel.state, ChannelState::Offered) {
            reply(notifier, false);
            return Err("OPENCHANNEL for a rescinded or open channel");
        }
        let handle = m.ring_gpadl.get();
        let gpadl = match self.gpadls.get(&handle) {
            Some(GpadlEntry {
                relid: r,
                state: GpadlState::Ready(g),
                teardown_pending: false,
            }) if *r == relid => g.clone(),
            _ => {
                reply(notifier, false);
                return Err("OPENCHANNEL with an unusable ring GPADL");
            }
        };
        let vp = m.target_vp.get();
        if vp >= self.limits.vp_count {
            reply(notifier, false);
            return Err("OPENCHANNEL target VP out of range");
        }
        let request = OpenRequest {
            relid,
            connection_id: EVENT_CONNECTION_BASE + relid,
            target_vp: vp,
            ring_gpadl: gpadl,
            downstream_page: m.downstream_page_offset.get(),
            user_data: m.user_data,
        };
        match notifier.open_channel(id, &request) {
            Ok(()) => {
                if let Some(c) = self.channels.get_mut(&id) {
                    c.state = ChannelState::Open {
                        ring_gpadl: handle,
                        target_vp: vp,
                    };
                }
                reply(notifier, true);
                Ok(())
            }
            Err(e) => {
                reply(notifier, false);
                warn_ratelimited!(relid, error = %e, "channel open failed");
                Ok(())
            }
        }
    }

    fn close_channel(
        &mut self,
        message: &[u8],
        target_vp: u32,
        notifier: &mut dyn Notifier,
    ) -> Result<(), &'static str> {
        let m: protocol::RelidMessage = protocol::read(message).ok_or("short CLOSECHANNEL")?;
        let id = self
            .find_relid(m.child_relid.get())
            .ok_or("CLOSECHANNEL for an unknown channel")?;
        let Some(channel) = self.channels.get_mut(&id) else {
            return Ok(());
        };
        let ChannelState::Open { ring_gpadl, .. } = channel.state else {
            // Already closed (e.g. by a rescind): nothing to do.
            return Ok(());
        };
        channel.state = ChannelState::Offered;
        notifier.close_channel(id);
        if self
            .gpadls
            .get(&ring_gpadl)
            .is_some_and(|g| g.teardown_pending)
        {
            self.gpadls.remove(&ring_gpadl);
            self.send_torndown(target_vp, ring_gpadl, notifier);
        }
        Ok(())
    }

    fn relid_released(&mut self, message: &[u8]) -> Result<(), &'static str> {
        let m: protocol::RelidMessage = protocol::read(message).ok_or("short RELID_RELEASED")?;
        let relid = m.child_relid.get();
        let id = self
            .find_relid(relid)
            .ok_or("RELID_RELEASED for an unknown channel")?;
        if !self.channels[&id].revoked {
            return Err("RELID_RELEASED for a channel that was not rescinded");
        }
        self.channels.remove(&id);
        self.drop_gpadls_of(relid);
        Ok(())
    }

    fn drop_gpadls_of(&mut self, relid: u32) {
        self.gpadls.retain(|_, g| g.relid != relid);
    }

    fn modify_channel(
        &mut self,
        message: &[u8],
        version: u32,
        target_vp: u32,
        notifier: &mut dyn Notifier,
    ) -> Result<(), &'static str> {
        let m: protocol::ModifyChannel = protocol::read(message).ok_or("short MODIFYCHANNEL")?;
        let relid = m.child_relid.get();
        let new_vp = m.target_vp.get();
        let id = self.find_relid(relid);
        let ok = new_vp < self.limits.vp_count
            && id.is_some_and(|id| {
                matches!(
                    self.channels.get(&id).map(|c| &c.state),
                    Some(ChannelState::Open { .. })
                )
            });
        if let (true, Some(id)) = (ok, id) {
            if let Some(Channel {
                state: ChannelState::Open { target_vp: vp, .. },
                ..
            }) = self.channels.get_mut(&id)
            {
                *vp = new_vp;
            }
            notifier.retarget_channel(id, new_vp);
        }
        if version >= version::WIN10_V5_3 {
            let r = protocol::ModifyChannelResponse {
                header: Header::new(msgtype::MODIFY_CHANNEL_RESPONSE),
                child_relid: relid.into(),
                status: if ok { 0 } else { STATUS_UNSUCCESSFUL }.into(),
            };
            notifier.send_message(target_vp, r.as_bytes());
        }
        if ok {
            Ok(())
        } else {
            Err("MODIFYCHANNEL for a channel that is not open or a bad VP")
        }
    }
}
