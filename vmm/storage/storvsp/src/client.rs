//! The guest side of a storvsp channel, for tests, fuzzers and benchmarks: a minimal
//! storvsc that writes requests into the guest-to-host ring and reads completions, the way
//! Linux's `hv_storvsc` lays them out.

use guest_mem::GuestMemory;
use vmbus_ring::ChannelRings;
use vmbus_ring::GpaRange;
use vmbus_ring::Gpadl;
use vmbus_ring::IncomingRing;
use vmbus_ring::OutgoingRing;
use vmbus_ring::RingError;
use vmbus_ring::packet;
use vmbus_ring::packet::IncomingPacket;
use vmbus_ring::ring::FEATURE_PENDING_SEND_SIZE;
use zerocopy::FromZeros;
use zerocopy::IntoBytes;

use crate::protocol;
use crate::protocol::ScsiRequest;
use crate::protocol::VstorPacket;
use crate::protocol::operation;

/// Transaction ID Linux uses for the init sequence.
pub const INIT_TRANSACTION_ID: u64 = 0xffff_ffff_ffff_fffd;

/// The guest's view of a channel's two rings.
pub struct GuestChannel {
    memory: GuestMemory,
    out: OutgoingRing,
    inc: IncomingRing,
}

impl GuestChannel {
    /// Prepares the rings of `gpadl` the way Linux does before OPENCHANNEL (indices zeroed,
    /// pending-send-size feature set) and returns the guest side.
    pub fn new(
        memory: &GuestMemory,
        gpadl: &Gpadl,
        downstream_page: u32,
    ) -> Result<Self, RingError> {
        let pages = gpadl.ring_pages()?;
        let split = downstream_page as usize;
        for part in [
            &pages[..split.min(pages.len())],
            &pages[split.min(pages.len())..],
        ] {
            if part.len() >= 2 {
                vmbus_ring::RingPages::new(memory, part)?.reset_control(FEATURE_PENDING_SEND_SIZE);
            }
        }
        let (out, inc) = ChannelRings::guest_side(memory, gpadl, downstream_page)?;
        Ok(Self {
            memory: memory.clone(),
            out,
            inc,
        })
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemory {
        &self.memory
    }

    /// Writes a packet to the host. `Ok(true)`: the host must be signalled; `Err(None)`:
    /// the ring is full.
    pub fn send(&mut self, packet: &[u8]) -> Result<Option<bool>, RingError> {
        Ok(self.out.write(&[packet])?.ok())
    }

    /// Reads the next packet from the host, if any. Returns it with "signal the host" (the
    /// host asked for room and now has it).
    pub fn recv(&mut self) -> Result<Option<(IncomingPacket, bool)>, RingError> {
        let Some((desc, bytes)) = self.inc.peek()? else {
            return Ok(None);
        };
        let signal = self.inc.consume(&desc)?;
        let p = packet::parse_packet(&desc, &bytes)
            .map_err(|_| RingError::BadPacket("host sent a malformed packet"))?;
        Ok(Some((p, signal)))
    }

    /// After [`send`](Self::send) found the ring full: asks the host to signal once a packet
    /// of `packet_len` bytes fits. Returns whether it fits already (then nothing is asked).
    pub fn request_space(&self, packet_len: usize) -> Result<bool, RingError> {
        let len = u32::try_from(packet_len).map_err(|_| RingError::BadPacket("packet size"))?;
        self.out.request_space(len)
    }

    /// Masks (while polling) or unmasks host signals.
    pub fn set_interrupt_mask(&self, masked: bool) {
        self.inc.set_interrupt_mask(masked);
    }
}

/// A vstor packet for `operation` with `data` at offset 12.
pub fn vstor(operation: u32, data: &[u8]) -> [u8; 64] {
    let mut p = VstorPacket::new(operation, 0);
    p.flags = 1.into();
    let n = data.len().min(52);
    p.data[..n].copy_from_slice(&data[..n]);
    let mut out = [0u8; 64];
    out.copy_from_slice(p.as_bytes());
    out
}

/// The init packets storvsc sends, in order (with `version` offered).
pub fn init_sequence(version: u16) -> Vec<[u8; 64]> {
    vec![
        vstor(operation::BEGIN_INITIALIZATION, &[]),
        vstor(operation::QUERY_PROTOCOL_VERSION, &version.to_le_bytes()),
        vstor(operation::QUERY_PROPERTIES, &[]),
        vstor(operation::END_INITIALIZATION, &[]),
    ]
}

/// What an SRB asks for.
#[derive(Debug, Clone)]
pub struct SrbRequest {
    /// LUN (path 0, target 0 unless set).
    pub lun: u8,
    /// Target ID.
    pub target: u8,
    /// Path ID.
    pub path: u8,
    /// The CDB.
    pub cdb: Vec<u8>,
    /// `data_in` field: read, write or none.
    pub data_in: u8,
    /// Transfer length.
    pub transfer: u32,
}

impl SrbRequest {
    /// A request to LUN `lun` at path 0 target 0.
    pub fn new(lun: u8, cdb: &[u8], data_in: u8, transfer: u32) -> Self {
        Self {
            lun,
            target: 0,
            path: 0,
            cdb: cdb.to_vec(),
            data_in,
            transfer,
        }
    }

    /// The EXECUTE_SRB vstor packet.
    pub fn packet(&self) -> [u8; 64] {
        let mut srb = ScsiRequest::new_zeroed();
        srb.length = 52.into();
        srb.path_id = self.path;
        srb.target_id = self.target;
        srb.lun = self.lun;
        srb.cdb_length = self.cdb.len().min(16) as u8;
        srb.sense_info_length = 0x14;
        srb.data_in = self.data_in;
        srb.data_transfer_length = self.transfer.into();
        let n = self.cdb.len().min(16);
        srb.payload[..n].copy_from_slice(&self.cdb[..n]);
        srb.queue_tag = 0xff;
        srb.queue_action = 0x20;
        srb.srb_flags = match self.data_in {
            protocol::data_in::READ => protocol::srb_flags::DATA_IN,
            protocol::data_in::WRITE => protocol::srb_flags::DATA_OUT,
            _ => 0,
        }
        .into();
        srb.time_out_value = 60.into();
        vstor(operation::EXECUTE_SRB, srb.as_bytes())
    }

    /// The whole VMBus packet: in-band without a buffer, GPA-direct with one.
    pub fn vmbus_packet(&self, transaction_id: u64, buffer: Option<&GpaRange>) -> Vec<u8> {
        match buffer {
            None => packet::inband(transaction_id, true, &self.packet()),
            Some(r) => packet::gpa_direct(transaction_id, std::slice::from_ref(r), &self.packet()),
        }
    }
}

/// A completion's vstor packet and its SRB.
pub fn parse_completion(p: &IncomingPacket) -> Option<(VstorPacket, ScsiRequest)> {
    let v = VstorPacket::parse(&p.payload)?;
    let srb = v.srb();
    Some((v, srb))
}
