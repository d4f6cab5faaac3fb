//! The VMBus SCSI controller ("storvsp", the host side of Linux's `hv_storvsc`): the vstor
//! protocol on one VMBus channel, with [`scsi_disk`] logical units behind it.
//!
//! # Architecture
//! [`Storvsp`] is the controller: its identity (the VMBus instance GUID), its configuration
//! and its LUNs (disks at path 0, target 0, LUN n, as Hyper-V places them). When the guest
//! opens the channel, the machine calls [`Storvsp::open_channel`] with the
//! [`vmbus_server::OpenRequest`] and gets a [`StorvspChannel`]: the sans-IO worker state of
//! that channel. The machine calls [`StorvspChannel::process`] whenever the guest signals the
//! channel (HvSignalEvent on the channel's connection ID) and after the guest frees ring
//! space; `process` drains the guest's requests, runs each SCSI command synchronously on the
//! calling thread, writes the completions and signals the guest through the
//! [`GuestSignal`] given at open. Run it on a worker thread, not a vCPU.
//!
//! # Protocol
//! BEGIN_INITIALIZATION, QUERY_PROTOCOL_VERSION (6.2, 6.0, 5.1), QUERY_PROPERTIES
//! (no sub-channels; `max_transfer_bytes` from [`StorvspConfig`]), END_INITIALIZATION, then
//! EXECUTE_SRB: in-band for commands without data, GPA-direct with one page range for data.
//! Every reply is a 64-byte completion packet (80 bytes with its descriptor, the most
//! storvsc accepts). The controller only takes a request out of the ring when the reply is
//! sure to fit, and otherwise asks the guest (pending_send_sz) to signal once it has room.
//! Many requests may be outstanding in the ring; each completion echoes its transaction ID.
//!
//! Guest packets are validated (vstor length, operation, SRB CDB length, page ranges against
//! guest RAM, transfer lengths); a bad request gets a failure status, a corrupt ring stops
//! the channel ([`ChannelError`]).
//!
//! # Spec
//! Linux `drivers/scsi/storvsc_drv.c` (vstor packets, SRB status handling, init sequence).

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use scsi_disk::ScsiDisk;
use vmbus_server::Guid;
use vmbus_server::OfferParams;

mod buffer;
mod channel;
pub mod client;
pub mod protocol;

pub use channel::ChannelError;
pub use channel::Progress;
pub use channel::StorvspChannel;

/// How the controller tells the guest its host-to-guest ring has new packets (the machine:
/// set the channel's event flag on the target VP).
pub trait GuestSignal: Send + Sync {
    /// Signals the guest.
    fn signal(&self);
}

/// Controller configuration.
#[derive(Debug, Clone)]
pub struct StorvspConfig {
    /// Largest transfer per request (QUERY_PROPERTIES; Linux sets max_sectors from it).
    pub max_transfer_bytes: u32,
}

impl Default for StorvspConfig {
    fn default() -> Self {
        Self {
            max_transfer_bytes: 1 << 20,
        }
    }
}

/// Errors of the host-side API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorvspError {
    /// The LUN is taken.
    #[error("LUN {0} is already in use")]
    LunInUse(u8),
}

/// The LUNs, shared between the controller and its open channel.
#[derive(Debug, Default)]
pub(crate) struct Luns {
    pub disks: RwLock<BTreeMap<u8, Arc<ScsiDisk>>>,
    /// Bumped on every hot-add/remove so the open channel tells the guest to rescan.
    pub generation: std::sync::atomic::AtomicU64,
}

/// A VMBus SCSI controller.
#[derive(Debug)]
pub struct Storvsp {
    instance: Guid,
    config: StorvspConfig,
    luns: Arc<Luns>,
}

impl Storvsp {
    /// A controller with VMBus instance GUID `instance` and no disks.
    pub fn new(instance: Guid, config: StorvspConfig) -> Self {
        Self {
            instance,
            config,
            luns: Arc::default(),
        }
    }

    /// The offer to give the VMBus server.
    pub fn offer_params(&self) -> OfferParams {
        OfferParams::new("storvsp", protocol::SCSI_INTERFACE_TYPE, self.instance)
    }

    /// The controller configuration.
    pub fn config(&self) -> &StorvspConfig {
        &self.config
    }

    /// Attaches `disk` at LUN `lun` (path 0, target 0). An open channel tells the guest to
    /// rescan the bus.
    pub fn add_disk(&self, lun: u8, disk: Arc<ScsiDisk>) -> Result<(), StorvspError> {
        let mut disks = self.luns.disks.write();
        if disks.contains_key(&lun) {
            return Err(StorvspError::LunInUse(lun));
        }
        disks.insert(lun, disk);
        self.luns
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    /// Detaches the disk at `lun`, if any; an open channel tells the guest to rescan.
    pub fn remove_disk(&self, lun: u8) -> Option<Arc<ScsiDisk>> {
        let removed = self.luns.disks.write().remove(&lun);
        if removed.is_some() {
            self.luns
                .generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        removed
    }

    /// The LUNs in use.
    pub fn luns(&self) -> Vec<u8> {
        self.luns.disks.read().keys().copied().collect()
    }
}

#[cfg(test)]
mod tests;
