//! VMBus data path building blocks: GPADLs (guest page lists), ring buffers and packets, all
//! over checked guest memory.
//!
//! # Architecture
//! - [`gpadl`]: the page-list shape shared by GPADLs and GPA-direct packets, parsing and
//!   validation against guest RAM, scatter/gather copies.
//! - [`ring`]: one ring buffer (control page + circular data area); [`IncomingRing`] consumes,
//!   [`OutgoingRing`] produces, each with the interrupt-mask and pending-send-size signalling
//!   rules. A channel is a pair of rings carved out of one GPADL ([`ChannelRings::new`]).
//! - [`packet`]: packet descriptors, parsing incoming packets and building outgoing ones.
//!
//! Nothing here signals or blocks: operations report whether the peer must be signalled and
//! the caller (a device, or a guest-side test client) does it.
//!
//! # Spec
//! Linux `drivers/hv/ring_buffer.c`, `include/linux/hyperv.h` (`hv_ring_buffer`,
//! `vmpacket_descriptor`, `vmbus_packet_mpb_array`), `drivers/hv/channel.c` (GPADL creation).

pub mod gpadl;
pub mod packet;
pub mod ring;

pub use gpadl::GpaRange;
pub use gpadl::Gpadl;
pub use gpadl::GpadlError;
pub use ring::IncomingRing;
pub use ring::OutgoingRing;
pub use ring::RingError;
pub use ring::RingFull;
pub use ring::RingPages;

use guest_mem::GuestMemory;

/// The two rings of an open channel, from the host's point of view.
#[derive(Debug)]
pub struct ChannelRings {
    /// Guest-to-host ring (the guest's "outbound"): the host consumes.
    pub incoming: IncomingRing,
    /// Host-to-guest ring (the guest's "inbound"): the host produces.
    pub outgoing: OutgoingRing,
}

impl ChannelRings {
    /// Splits a ring-buffer GPADL at `downstream_page` (OPENCHANNEL's
    /// `downstream_ringbuffer_pageoffset`): pages before it are the guest-to-host ring, the rest
    /// the host-to-guest ring. Each needs a control page and at least one data page.
    pub fn new(
        memory: &GuestMemory,
        gpadl: &Gpadl,
        downstream_page: u32,
    ) -> Result<Self, RingError> {
        let (up, down) = split_ring_pages(gpadl, downstream_page)?;
        Ok(Self {
            incoming: IncomingRing::new(RingPages::new(memory, up)?)?,
            outgoing: OutgoingRing::new(RingPages::new(memory, down)?)?,
        })
    }

    /// The same rings from the guest's side: produce upstream, consume downstream (for
    /// guest-side clients in tests and fuzzers).
    pub fn guest_side(
        memory: &GuestMemory,
        gpadl: &Gpadl,
        downstream_page: u32,
    ) -> Result<(OutgoingRing, IncomingRing), RingError> {
        let (up, down) = split_ring_pages(gpadl, downstream_page)?;
        Ok((
            OutgoingRing::new(RingPages::new(memory, up)?)?,
            IncomingRing::new(RingPages::new(memory, down)?)?,
        ))
    }
}

fn split_ring_pages(gpadl: &Gpadl, downstream_page: u32) -> Result<(&[u64], &[u64]), RingError> {
    let pages = gpadl.ring_pages()?;
    let split = downstream_page as usize;
    if split < 2 || split > pages.len().saturating_sub(2) {
        return Err(RingError::BadSize(split));
    }
    Ok(pages.split_at(split))
}
