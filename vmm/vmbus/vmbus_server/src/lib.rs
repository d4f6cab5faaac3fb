//! The VMBus control channel: version negotiation, channel offers, GPADLs, opening and
//! closing channels, rescinds, unload.
//!
//! # Architecture
//! [`VmbusServer`] is a sans-IO state machine. The machine feeds it the guest's messages
//! (HvPostMessage payloads on message connections 1 and 4) through
//! [`VmbusServer::handle_message`] and host events (a device offered, hot-removed, VM reset)
//! through [`VmbusServer::add_offer`], [`VmbusServer::revoke_offer`] and
//! [`VmbusServer::reset`]. Everything it wants done goes out through the [`Notifier`] passed
//! to each call: messages to the guest, and open/close/retarget requests to the device that
//! owns a channel. It holds no threads, no locks and no device objects, so it is unit-tested
//! and fuzzed with an in-process guest ([`client`]).
//!
//! Guest messages are hostile: a malformed or out-of-order message is logged (rate-limited)
//! and either ignored or answered with a failure status where the protocol has one
//! (GPADL_CREATED, OPENCHANNEL_RESULT); it never panics and never lets a device see a GPADL
//! whose pages are not guest RAM.
//!
//! # Key types
//! - [`OfferParams`]: what a device offers (class and instance GUIDs, ...).
//! - [`OfferId`]: the host's handle for an offer; the guest sees a relid.
//! - [`OpenRequest`]: what a device gets when the guest opens its channel (the ring GPADL,
//!   the downstream ring offset, the VP to interrupt, the connection ID it will be signalled on).
//!
//! # Spec
//! Linux `drivers/hv/connection.c` (`vmbus_connect`), `channel_mgmt.c` (offers, rescind,
//! message table with minimum lengths), `channel.c` (GPADLs, open/close),
//! `include/linux/hyperv.h` (message layouts); the TLFS for SynIC messages.

pub mod client;
pub mod protocol;
mod server;

pub use protocol::Guid;
pub use server::ChannelInfo;
pub use server::Limits;
pub use server::Notifier;
pub use server::OfferId;
pub use server::OfferParams;
pub use server::OpenError;
pub use server::OpenRequest;
pub use server::ServerError;
pub use server::VmbusServer;

#[cfg(test)]
mod tests;
