//! `--hv` and `--disk`: the Hyper-V enlightenments, the VMBus control channel and the VMBus
//! SCSI controller (storvsp), wired to the machine (`docs/src/vmbus.md`).
//!
//! The three parts are sans-IO state machines in their own crates (`hyperv`, `vmbus_server`,
//! `storvsp`); this module supplies what they need from the machine:
//! - [`HvSink`]: SINT interrupts to [`Partition::request_interrupt`], crash reports to the
//!   halt sink;
//! - the VMBus server behind a mutex, as the message port of connections 1 and 4;
//! - its [`Notifier`]: host messages through [`HvState::post_message`], and for each channel
//!   the guest opens a worker thread that runs [`StorvspChannel::process`] whenever the
//!   guest signals the channel's connection ID (an [`EventPort`]); completions are signalled
//!   back with [`HvState::signal_event`] on the channel's target VP.
//!
//! Lock order: the bus mutex, then `hyperv`'s internal locks. Workers never take the bus
//! mutex, so closing a channel (under the bus mutex) may join its worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Weak;
use std::thread::JoinHandle;

use device_api::HaltRequest;
use device_api::HaltSink;
use guest_mem::GuestMemory;
use hyperv::EventPort;
use hyperv::HvConfig;
use hyperv::HvSink;
use hyperv::HvState;
use hyperv::HvStatus;
use hyperv::MessagePort;
use parking_lot::Condvar;
use parking_lot::Mutex;
use scsi_disk::ScsiDisk;
use scsi_disk::ScsiDiskConfig;
use storvsp::GuestSignal;
use storvsp::Progress;
use storvsp::Storvsp;
use storvsp::StorvspChannel;
use storvsp::StorvspConfig;
use virt::CpuidTable;
use virt::HypercallInput;
use virt::InterruptRequest;
use virt::Partition;
use virt::VmClock;
use vmbus_server::Guid;
use vmbus_server::Limits;
use vmbus_server::Notifier;
use vmbus_server::OfferId;
use vmbus_server::OpenError;
use vmbus_server::OpenRequest;
use vmbus_server::VmbusServer;
use vmbus_server::protocol::MESSAGE_CONNECTION_ID;
use vmbus_server::protocol::MESSAGE_CONNECTION_ID_V5;
use vmbus_server::protocol::SYNIC_MESSAGE_TYPE;
use vmbus_server::protocol::VMBUS_SINT;

/// Instance GUID of the (single) VMBus SCSI controller; the guest names the device by it.
pub const SCSI_CONTROLLER_INSTANCE: Guid = Guid::new(
    0x6167_6172,
    0x5343,
    0x5349,
    [0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
);

/// Setting up the VMBus devices failed.
#[derive(Debug, thiserror::Error)]
pub enum VmbusError {
    /// A message connection could not be registered.
    #[error("cannot register the VMBus message port")]
    Port(#[source] hyperv::HvError),
    /// Too many disks.
    #[error("the VMBus SCSI controller takes at most 64 disks")]
    TooManyDisks,
    /// The controller could not be offered.
    #[error("cannot offer the SCSI controller")]
    Offer(#[source] vmbus_server::ServerError),
}

/// Interrupts and crash reports from the enlightenments.
struct Sink {
    partition: Arc<dyn Partition>,
    halt: Arc<dyn HaltSink>,
}

impl HvSink for Sink {
    fn request_interrupt(&self, request: InterruptRequest) {
        self.partition.request_interrupt(request);
    }

    fn guest_crash(&self, report: String) {
        self.halt.request_halt(HaltRequest::GuestCrash(report));
    }
}

/// A channel's doorbell: HvSignalEvent on its connection ID wakes its worker.
#[derive(Default)]
struct Doorbell {
    /// (rung, stop)
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl EventPort for Doorbell {
    fn signal(&self, _vp: u32, _flag: u16) {
        self.state.lock().0 = true;
        self.cv.notify_one();
    }
}

/// Host-to-guest signal of one channel: its relid's event flag on its target VP.
struct ChannelSignal {
    hv: Arc<HvState>,
    vp: u32,
    relid: u32,
}

impl GuestSignal for ChannelSignal {
    fn signal(&self) {
        if let Err(e) = self.hv.signal_event(self.vp, VMBUS_SINT, self.relid) {
            tracing::warn!(error = %e, relid = self.relid, "cannot signal the guest");
        }
    }
}

struct Worker {
    doorbell: Arc<Doorbell>,
    connection_id: u32,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn start(
        mut channel: StorvspChannel,
        doorbell: Arc<Doorbell>,
    ) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("storvsp".into())
            .spawn(move || {
                loop {
                    {
                        let mut s = doorbell.state.lock();
                        while !s.0 && !s.1 {
                            doorbell.cv.wait(&mut s);
                        }
                        if s.1 {
                            return;
                        }
                        s.0 = false;
                    }
                    loop {
                        match channel.process() {
                            Ok(Progress::More) => {}
                            Ok(Progress::Idle | Progress::WaitingForSpace) => break,
                            // Logged by the channel; it stays stopped.
                            Err(_) => break,
                        }
                    }
                }
            })
    }

    fn stop(&mut self) {
        self.doorbell.state.lock().1 = true;
        self.doorbell.cv.notify_one();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("a storvsp worker panicked");
        }
    }
}

/// What the VMBus server asks of the machine.
struct Host {
    hv: Weak<HvState>,
    memory: GuestMemory,
    storvsp: Arc<Storvsp>,
    storvsp_offer: Option<OfferId>,
    workers: HashMap<OfferId, Worker>,
}

impl Notifier for Host {
    fn send_message(&mut self, target_vp: u32, message: &[u8]) {
        let Some(hv) = self.hv.upgrade() else { return };
        if let Err(e) = hv.post_message(target_vp, VMBUS_SINT, SYNIC_MESSAGE_TYPE, message) {
            tracing::warn!(error = %e, "VMBus message to the guest dropped");
        }
    }

    fn open_channel(&mut self, offer: OfferId, request: &OpenRequest) -> Result<(), OpenError> {
        let hv = self
            .hv
            .upgrade()
            .ok_or_else(|| OpenError("machine is shutting down".into()))?;
        if Some(offer) != self.storvsp_offer {
            return Err(OpenError("no device behind this offer".into()));
        }
        let signal = Arc::new(ChannelSignal {
            hv: hv.clone(),
            vp: request.target_vp,
            relid: request.relid,
        });
        let channel = self.storvsp.open_channel(&self.memory, request, signal)?;
        let doorbell = Arc::new(Doorbell::default());
        hv.connect_event_port(request.connection_id, doorbell.clone())
            .map_err(|e| OpenError(e.to_string()))?;
        let thread = match Worker::start(channel, doorbell.clone()) {
            Ok(t) => t,
            Err(e) => {
                hv.disconnect_event_port(request.connection_id);
                return Err(OpenError(format!("cannot start the worker: {e}")));
            }
        };
        tracing::info!(
            relid = request.relid,
            vp = request.target_vp,
            "storvsp channel open"
        );
        self.workers.insert(
            offer,
            Worker {
                doorbell,
                connection_id: request.connection_id,
                thread: Some(thread),
            },
        );
        Ok(())
    }

    fn close_channel(&mut self, offer: OfferId) {
        if let Some(mut w) = self.workers.remove(&offer) {
            if let Some(hv) = self.hv.upgrade() {
                hv.disconnect_event_port(w.connection_id);
            }
            w.stop();
        }
    }

    fn retarget_channel(&mut self, _offer: OfferId, target_vp: u32) {
        // The channel keeps signalling its original VP; Linux only retargets from sysfs.
        tracing::warn!(
            target_vp,
            "VMBus channel retarget not supported; keeping the old VP"
        );
    }
}

/// The VMBus server as the guest's message port.
struct Bus {
    inner: Mutex<(VmbusServer, Host)>,
}

impl MessagePort for Bus {
    fn post(&self, vp: u32, _message_type: u32, payload: &[u8]) -> Result<(), HvStatus> {
        let mut guard = self.inner.lock();
        let (server, host) = &mut *guard;
        server.handle_message(vp, payload, host);
        Ok(())
    }
}

/// The Hyper-V and VMBus side of the machine.
pub struct HyperV {
    hv: Arc<HvState>,
    bus: Arc<Bus>,
}

impl HyperV {
    /// Enlightenments for `partition`'s VPs, a VMBus, and a SCSI controller with `disks` at
    /// LUNs 0, 1, ...
    pub fn new(
        memory: &GuestMemory,
        clock: &VmClock,
        partition: Arc<dyn Partition>,
        halt: Arc<dyn HaltSink>,
        vp_count: u32,
        disks: Vec<Arc<dyn disk::Disk>>,
    ) -> Result<Self, VmbusError> {
        let config = HvConfig::new(
            vp_count,
            partition.tsc_frequency(),
            partition.apic_timer_frequency(),
        );
        let hv = Arc::new(HvState::new(
            config,
            memory.clone(),
            clock.clone(),
            Arc::new(Sink { partition, halt }),
        ));
        let storvsp_config = StorvspConfig::default();
        let storvsp = Arc::new(Storvsp::new(
            SCSI_CONTROLLER_INSTANCE,
            storvsp_config.clone(),
        ));
        if disks.len() > 64 {
            return Err(VmbusError::TooManyDisks);
        }
        for (lun, d) in disks.into_iter().enumerate() {
            let scsi = ScsiDisk::new(
                d,
                ScsiDiskConfig {
                    max_transfer_bytes: storvsp_config.max_transfer_bytes,
                    ..ScsiDiskConfig::default()
                },
            );
            storvsp
                .add_disk(lun as u8, Arc::new(scsi))
                .map_err(|_| VmbusError::TooManyDisks)?;
        }
        let mut server = VmbusServer::new(memory.clone(), Limits::new(vp_count));
        let mut host = Host {
            hv: Arc::downgrade(&hv),
            memory: memory.clone(),
            storvsp: storvsp.clone(),
            storvsp_offer: None,
            workers: HashMap::new(),
        };
        if !storvsp.luns().is_empty() {
            host.storvsp_offer = Some(
                server
                    .add_offer(storvsp.offer_params(), &mut host)
                    .map_err(VmbusError::Offer)?,
            );
        }
        let bus = Arc::new(Bus {
            inner: Mutex::new((server, host)),
        });
        for conn in [MESSAGE_CONNECTION_ID, MESSAGE_CONNECTION_ID_V5] {
            hv.connect_message_port(conn, bus.clone())
                .map_err(VmbusError::Port)?;
        }
        Ok(Self { hv, bus })
    }

    /// Makes the machine's CPUID table Hyper-V's.
    pub fn apply_cpuid(&self, table: &mut CpuidTable) {
        self.hv.apply_cpuid(table);
    }

    /// RDMSR of a synthetic MSR (`None`: #GP or not synthetic).
    pub fn msr_read(&self, vp: u32, msr: u32) -> Option<u64> {
        self.hv.msr_read(vp, msr)
    }

    /// WRMSR of a synthetic MSR (`false`: #GP).
    pub fn msr_write(&self, vp: u32, msr: u32, value: u64) -> bool {
        self.hv.msr_write(vp, msr, value)
    }

    /// A hypercall; returns RAX.
    pub fn hypercall(&self, vp: u32, input: HypercallInput) -> u64 {
        self.hv.hypercall(vp, input)
    }

    /// Stops every channel worker (machine shutdown).
    pub fn shutdown(&self) {
        let mut guard = self.bus.inner.lock();
        let (server, host) = &mut *guard;
        server.reset(host);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    use std::time::Instant;

    use disk::RamLayer;
    use guest_mem::Width;
    use hyperv::spec::msr;
    use storvsp::client::GuestChannel;
    use storvsp::client::INIT_TRANSACTION_ID;
    use storvsp::client::SrbRequest;
    use storvsp::client::init_sequence;
    use storvsp::client::parse_completion;
    use storvsp::protocol::data_in;
    use storvsp::protocol::srb_status;
    use virt::CpuidEntry;
    use virt::Processor;
    use virt::VirtError;
    use vmbus_ring::Gpadl;
    use vmbus_server::client;
    use vmbus_server::client::HostMessage;
    use vmbus_server::protocol::msgtype;
    use vmbus_server::protocol::version;

    use super::*;

    #[derive(Default)]
    struct TestPartition {
        interrupts: AtomicUsize,
    }

    impl Partition for TestPartition {
        fn create_processor(
            &self,
            _: u32,
            _: &CpuidTable,
        ) -> Result<Box<dyn Processor>, VirtError> {
            Err(VirtError::Unsupported("test".into()))
        }
        fn request_interrupt(&self, r: InterruptRequest) {
            assert_eq!(r.vector, 0xf3);
            self.interrupts.fetch_add(1, Ordering::SeqCst);
        }
        fn set_extint(&self, _: bool) {}
        fn stop(&self) {}
        fn tsc_frequency(&self) -> u64 {
            2_000_000_000
        }
        fn apic_timer_frequency(&self) -> u64 {
            1_000_000_000
        }
    }

    struct NoHalt;

    impl HaltSink for NoHalt {
        fn request_halt(&self, r: HaltRequest) {
            panic!("{r:?}");
        }
    }

    const SIMP: u64 = 0x10_0000;
    const SIEFP: u64 = 0x10_1000;
    const INPUT: u64 = 0x10_2000;

    fn post(hv: &HyperV, memory: &GuestMemory, conn: u32, msg: &[u8]) {
        memory.write_plain(INPUT, &conn).unwrap();
        memory.write_plain(INPUT + 8, &1u32).unwrap();
        memory.write_plain(INPUT + 12, &(msg.len() as u32)).unwrap();
        memory.write_at(INPUT + 16, msg).unwrap();
        let input = HypercallInput {
            control: 0x5c,
            input: INPUT,
            output: 0,
        };
        assert_eq!(hv.hypercall(0, input), 0);
    }

    fn take(hv: &HyperV, memory: &GuestMemory) -> Vec<HostMessage> {
        let slot = memory.translate(SIMP + 512).unwrap().offset;
        let mut v = Vec::new();
        while memory.load(slot, Width::U32) != 0 {
            let len = memory.load(slot + 4, Width::U8) as usize;
            let mut p = vec![0u8; len];
            memory.copy_out(slot + 16, &mut p);
            v.push(client::parse_host_message(&p));
            memory.store(slot, Width::U32, 0);
            hv.msr_write(0, msr::EOM, 0);
        }
        v
    }

    /// The machine's VMBus through its public surface, with a worker thread serving the
    /// SCSI channel: a write, then a read of the same blocks.
    #[test]
    fn storvsp_serves_a_guest_through_its_worker_thread() {
        let memory = GuestMemory::allocate(8 << 20);
        let partition = Arc::new(TestPartition::default());
        let disk = Arc::new(RamLayer::new_zeroed(16 << 20, 512).unwrap());
        let hv = HyperV::new(
            &memory,
            &VmClock::manual(),
            partition.clone(),
            Arc::new(NoHalt),
            1,
            vec![disk.clone()],
        )
        .unwrap();
        let mut cpuid = CpuidTable {
            entries: vec![CpuidEntry {
                function: 1,
                ..Default::default()
            }],
        };
        hv.apply_cpuid(&mut cpuid);
        assert_eq!(cpuid.lookup(0x4000_0000, 0)[1], 0x7263_694d);
        assert_eq!(hv.msr_read(0, msr::TSC_FREQUENCY), Some(2_000_000_000));
        hv.msr_write(0, msr::SIMP, SIMP | 1);
        hv.msr_write(0, msr::SIEFP, SIEFP | 1);
        hv.msr_write(0, msr::SINT0 + 2, 0xf3);
        hv.msr_write(0, msr::SCONTROL, 1);
        post(
            &hv,
            &memory,
            4,
            &client::initiate_contact(version::WIN10_V5_3, 0),
        );
        post(
            &hv,
            &memory,
            1,
            &client::header_only(msgtype::REQUEST_OFFERS),
        );
        let msgs = take(&hv, &memory);
        let Some(HostMessage::Offer {
            relid,
            connection_id,
            ..
        }) = msgs.get(1).cloned()
        else {
            panic!("{msgs:?}");
        };
        let gpadl = Gpadl {
            ranges: vec![client::ring_range((0x200..0x240).collect())],
        };
        let mut guest = GuestChannel::new(&memory, &gpadl, 32).unwrap();
        for m in client::gpadl_messages(relid, 7, &gpadl.ranges) {
            post(&hv, &memory, 1, &m);
        }
        post(&hv, &memory, 1, &client::open_channel(relid, 7, 0, 32));
        assert!(matches!(
            take(&hv, &memory)[..],
            [
                HostMessage::GpadlCreated { status: 0, .. },
                HostMessage::OpenResult { status: 0, .. }
            ]
        ));
        let mut exchange = |packet: &[u8]| {
            if guest.send(packet).unwrap().unwrap() {
                let input = HypercallInput {
                    control: 0x1005d,
                    input: u64::from(connection_id),
                    output: 0,
                };
                assert_eq!(hv.hypercall(0, input), 0);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some((p, _)) = guest.recv().unwrap() {
                    return parse_completion(&p).unwrap();
                }
                assert!(Instant::now() < deadline, "no completion from the worker");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        for p in init_sequence(0x0602) {
            let (v, _) = exchange(&vmbus_ring::packet::inband(INIT_TRANSACTION_ID, true, &p));
            assert_eq!(v.status.get(), 0);
        }
        let buffer = vmbus_ring::GpaRange {
            byte_count: 8192,
            byte_offset: 0,
            pfns: vec![0x300, 0x302],
        };
        buffer.write(&memory, 0, &[0xa5; 8192]).unwrap();
        let mut cdb = [0u8; 10];
        cdb[0] = 0x2a;
        cdb[5] = 64;
        cdb[8] = 16;
        let w = SrbRequest::new(0, &cdb, data_in::WRITE, 8192);
        let (_, srb) = exchange(&w.vmbus_packet(1, Some(&buffer)));
        assert_eq!(srb.srb_status, srb_status::SUCCESS);
        let mut check = vec![0u8; 8192];
        disk::Disk::read(&*disk, 64, &mut check).unwrap();
        assert_eq!(check, vec![0xa5; 8192]);
        assert!(partition.interrupts.load(Ordering::SeqCst) > 0);
        hv.shutdown();
        // After shutdown the doorbell is gone.
        let input = HypercallInput {
            control: 0x1005d,
            input: u64::from(connection_id),
            output: 0,
        };
        assert_eq!(hv.hypercall(0, input), HvStatus::InvalidConnectionId as u64);
    }
}
