//! One open storvsp channel: drains the guest's requests, runs them, writes completions.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use device_api::warn_ratelimited;
use guest_mem::GuestMemory;
use scsi_disk::ScsiStatus;
use scsi_disk::spec::op;
use vmbus_ring::ChannelRings;
use vmbus_ring::RingError;
use vmbus_ring::packet;
use vmbus_ring::packet::PacketKind;
use vmbus_ring::ring::Descriptor;
use vmbus_server::OpenError;
use vmbus_server::OpenRequest;
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

use crate::GuestSignal;
use crate::Luns;
use crate::Storvsp;
use crate::StorvspConfig;
use crate::buffer::GuestBuffer;
use crate::protocol;
use crate::protocol::VstorPacket;
use crate::protocol::operation;
use crate::protocol::srb_status;
use crate::protocol::status;

/// Size of every packet the controller sends: descriptor + vstor packet.
const REPLY_LEN: u32 = (Descriptor::SIZE + protocol::VSTOR_PACKET_SIZE) as u32;
/// Most requests one [`StorvspChannel::process`] call handles before returning.
const BATCH_LIMIT: usize = 1024;

/// The channel cannot continue (the guest corrupted its rings).
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// A ring is corrupt.
    #[error("ring failure")]
    Ring(#[from] RingError),
    /// An earlier error stopped the channel.
    #[error("channel stopped after an earlier error")]
    Stopped,
}

/// What a [`StorvspChannel::process`] call ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// No requests left; call again when the guest signals.
    Idle,
    /// The guest's ring has no room for replies; the guest signals once it has.
    WaitingForSpace,
    /// The batch limit was reached with requests left: call again.
    More,
}

/// The worker state of an open channel (see the crate docs).
pub struct StorvspChannel {
    memory: GuestMemory,
    rings: ChannelRings,
    luns: Arc<Luns>,
    config: StorvspConfig,
    signal: Arc<dyn GuestSignal>,
    relid: u32,
    version: Option<u16>,
    initialized: bool,
    seen_generation: u64,
    /// Unsolicited packets (bus rescan) waiting for ring space.
    pending: VecDeque<Vec<u8>>,
    stopped: bool,
}

impl std::fmt::Debug for StorvspChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorvspChannel")
            .field("relid", &self.relid)
            .field("version", &self.version)
            .field("initialized", &self.initialized)
            .finish_non_exhaustive()
    }
}

impl Storvsp {
    /// Starts serving the channel the guest opened: maps its rings (already validated as
    /// guest RAM by the VMBus server; their layout is checked here).
    pub fn open_channel(
        &self,
        memory: &GuestMemory,
        request: &OpenRequest,
        signal: Arc<dyn GuestSignal>,
    ) -> Result<StorvspChannel, OpenError> {
        let rings = ChannelRings::new(memory, &request.ring_gpadl, request.downstream_page)
            .map_err(|e| OpenError(e.to_string()))?;
        Ok(StorvspChannel {
            memory: memory.clone(),
            rings,
            luns: self.luns.clone(),
            config: self.config.clone(),
            signal,
            relid: request.relid,
            version: None,
            initialized: false,
            seen_generation: self.luns.generation.load(Ordering::Acquire),
            pending: VecDeque::new(),
            stopped: false,
        })
    }
}

/// Outcome of one SRB.
struct SrbOutcome {
    srb_status: u8,
    scsi_status: u8,
    transferred: u32,
    sense: Option<[u8; scsi_disk::spec::SENSE_LEN]>,
}

impl StorvspChannel {
    /// The negotiated vstor protocol version.
    pub fn version(&self) -> Option<u16> {
        self.version
    }

    /// Handles everything the guest has queued (see [`Progress`]). After an error the
    /// channel stays stopped and every call returns [`ChannelError::Stopped`].
    pub fn process(&mut self) -> Result<Progress, ChannelError> {
        if self.stopped {
            return Err(ChannelError::Stopped);
        }
        let r = self.process_inner();
        if let Err(e) = &r {
            warn_ratelimited!(relid = self.relid, error = %e, "storvsp channel stopped");
            self.stopped = true;
        }
        r
    }

    fn process_inner(&mut self) -> Result<Progress, ChannelError> {
        let generation = self.luns.generation.load(Ordering::Acquire);
        if generation != self.seen_generation && self.initialized {
            self.seen_generation = generation;
            let p = VstorPacket::new(operation::ENUMERATE_BUS, status::SUCCESS);
            self.pending
                .push_back(packet::inband(0, false, p.as_bytes()));
        }
        for _ in 0..BATCH_LIMIT {
            while let Some(p) = self.pending.front() {
                match self.rings.outgoing.write(&[p])? {
                    Ok(signal) => {
                        self.pending.pop_front();
                        if signal {
                            self.signal.signal();
                        }
                    }
                    Err(_) => {
                        if !self.rings.outgoing.request_space(p.len() as u32)? {
                            return Ok(Progress::WaitingForSpace);
                        }
                    }
                }
            }
            self.rings.incoming.set_interrupt_mask(true);
            let Some((desc, bytes)) = self.rings.incoming.peek()? else {
                self.rings.incoming.set_interrupt_mask(false);
                if self.rings.incoming.is_empty()? {
                    return Ok(Progress::Idle);
                }
                continue;
            };
            // Take a request only when its reply is sure to fit.
            if !self.rings.outgoing.fits(REPLY_LEN)?
                && !self.rings.outgoing.request_space(REPLY_LEN)?
            {
                self.rings.incoming.set_interrupt_mask(false);
                return Ok(Progress::WaitingForSpace);
            }
            if self.rings.incoming.consume(&desc)? {
                self.signal.signal();
            }
            if let Some(reply) = self.handle_packet(&desc, &bytes) {
                let reply = packet::completion(desc.transaction_id, reply.as_bytes());
                match self.rings.outgoing.write(&[&reply])? {
                    Ok(true) => self.signal.signal(),
                    Ok(false) => {}
                    // Checked above; keep it rather than lose it.
                    Err(_) => self.pending.push_back(reply),
                }
            }
        }
        Ok(Progress::More)
    }

    /// Handles one packet; returns the reply if the guest wants one.
    fn handle_packet(&mut self, desc: &Descriptor, bytes: &[u8]) -> Option<VstorPacket> {
        let packet = match packet::parse_packet(desc, bytes) {
            Ok(p) => p,
            Err(e) => {
                warn_ratelimited!(relid = self.relid, error = %e, "malformed storvsc packet");
                let wants = desc.flags & packet::FLAG_COMPLETION_REQUESTED != 0;
                return wants
                    .then(|| VstorPacket::new(operation::COMPLETE_IO, status::INVALID_PARAMETER));
            }
        };
        let range = match &packet.kind {
            PacketKind::InBand => None,
            PacketKind::GpaDirect(ranges) => Some(ranges.as_slice()),
            PacketKind::Completion => return None,
            PacketKind::Other(t) => {
                warn_ratelimited!(
                    relid = self.relid,
                    packet_type = t,
                    "unsupported packet type"
                );
                return packet
                    .completion_requested
                    .then(|| VstorPacket::new(operation::COMPLETE_IO, status::INVALID_PARAMETER));
            }
        };
        let reply = match VstorPacket::parse(&packet.payload) {
            Some(request) => self.handle_request(&request, range),
            None => VstorPacket::new(operation::COMPLETE_IO, status::INVALID_PARAMETER),
        };
        packet.completion_requested.then_some(reply)
    }

    fn handle_request(
        &mut self,
        request: &VstorPacket,
        ranges: Option<&[vmbus_ring::GpaRange]>,
    ) -> VstorPacket {
        let op = request.operation.get();
        let mut reply = VstorPacket::new(operation::COMPLETE_IO, status::SUCCESS);
        match op {
            operation::BEGIN_INITIALIZATION => {
                self.version = None;
                self.initialized = false;
            }
            operation::QUERY_PROTOCOL_VERSION => {
                let v = protocol::ProtocolVersion::read_from_prefix(&request.data)
                    .map(|(v, _)| v.major_minor.get())
                    .unwrap_or(0);
                if protocol::version::SUPPORTED.contains(&v) {
                    self.version = Some(v);
                    reply.data[..4].copy_from_slice(&request.data[..4]);
                } else {
                    reply.status = status::REVISION_MISMATCH.into();
                }
            }
            operation::QUERY_PROPERTIES => {
                let props = protocol::ChannelProperties {
                    reserved: 0.into(),
                    max_channel_count: 0.into(),
                    reserved2: 0.into(),
                    flags: 0.into(),
                    max_transfer_bytes: self.config.max_transfer_bytes.into(),
                    reserved3: 0.into(),
                };
                reply.data[..24].copy_from_slice(props.as_bytes());
            }
            operation::END_INITIALIZATION => {
                if self.version.is_some() {
                    self.initialized = true;
                    self.seen_generation = self.luns.generation.load(Ordering::Acquire);
                } else {
                    reply.status = status::INVALID_DEVICE_STATE.into();
                }
            }
            operation::EXECUTE_SRB if self.version.is_some() => {
                self.execute_srb(request, ranges, &mut reply);
            }
            operation::EXECUTE_SRB => reply.status = status::INVALID_DEVICE_STATE.into(),
            operation::RESET_LUN | operation::RESET_ADAPTER | operation::RESET_BUS => {
                // Requests run to completion before the next is read: nothing is in flight.
            }
            _ => {
                warn_ratelimited!(
                    relid = self.relid,
                    operation = op,
                    "unsupported vstor operation"
                );
                reply.status = status::INVALID_DEVICE_REQUEST.into();
            }
        }
        reply
    }

    fn execute_srb(
        &mut self,
        request: &VstorPacket,
        ranges: Option<&[vmbus_ring::GpaRange]>,
        reply: &mut VstorPacket,
    ) {
        let srb = request.srb();
        let outcome = self.run_srb(&srb, ranges);
        let mut out = srb;
        out.srb_status = outcome.srb_status;
        out.scsi_status = outcome.scsi_status;
        out.data_transfer_length = outcome.transferred.into();
        out.payload = [0; 20];
        out.sense_info_length = 0;
        if let Some(sense) = outcome.sense {
            out.payload[..sense.len()].copy_from_slice(&sense);
            out.sense_info_length = sense.len() as u8;
        }
        if outcome.srb_status != srb_status::SUCCESS {
            reply.status = status::IO_DEVICE_ERROR.into();
        }
        reply.set_srb(&out);
    }

    fn run_srb(
        &self,
        srb: &protocol::ScsiRequest,
        ranges: Option<&[vmbus_ring::GpaRange]>,
    ) -> SrbOutcome {
        let invalid = SrbOutcome {
            srb_status: srb_status::INVALID_REQUEST,
            scsi_status: 0,
            transferred: 0,
            sense: None,
        };
        let cdb_len = usize::from(srb.cdb_length);
        if cdb_len == 0 || cdb_len > 16 {
            return invalid;
        }
        let cdb = &srb.payload[..cdb_len];
        let transfer = srb.data_transfer_length.get();
        if transfer > self.config.max_transfer_bytes {
            return invalid;
        }
        let range = match ranges {
            None => None,
            Some([r]) if r.validate(&self.memory).is_ok() => Some(r),
            Some(_) => return invalid,
        };
        let mut buffer = GuestBuffer::new(&self.memory, range, transfer as usize);
        let on_target = srb.path_id == 0 && srb.target_id == 0;
        let disk = if on_target {
            self.luns.disks.read().get(&srb.lun).cloned()
        } else {
            None
        };
        let result = match (disk, cdb[0]) {
            (_, op::REPORT_LUNS) => {
                let luns: Vec<u16> = if on_target {
                    self.luns
                        .disks
                        .read()
                        .keys()
                        .map(|&l| u16::from(l))
                        .collect()
                } else {
                    Vec::new()
                };
                scsi_disk::report_luns(cdb, &mut buffer, &luns)
            }
            (Some(d), _) => d.execute(cdb, &mut buffer),
            (None, op::INQUIRY) if cdb.get(1).is_some_and(|b| b & 1 == 0) => {
                scsi_disk::inquiry_no_lun(cdb, &mut buffer)
            }
            (None, _) => {
                return SrbOutcome {
                    srb_status: srb_status::INVALID_LUN,
                    scsi_status: 0,
                    transferred: 0,
                    sense: None,
                };
            }
        };
        match result.status {
            ScsiStatus::Good => SrbOutcome {
                srb_status: srb_status::SUCCESS,
                scsi_status: 0,
                transferred: result.transferred as u32,
                sense: None,
            },
            status => SrbOutcome {
                srb_status: srb_status::ERROR | srb_status::AUTOSENSE_VALID,
                scsi_status: status as u8,
                transferred: 0,
                sense: result.sense.map(|s| s.to_fixed()),
            },
        }
    }
}
