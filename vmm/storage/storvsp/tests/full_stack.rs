//! The whole VMBus storage path without a VM: a simulated Linux guest talks to `hyperv`
//! through MSRs and hypercalls and to the SynIC pages in guest memory; `vmbus_server` and
//! `storvsp` are wired behind it the way the machine wires them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use disk::RamLayer;
use guest_mem::GuestMemory;
use guest_mem::Width;
use hyperv::EventPort;
use hyperv::HvConfig;
use hyperv::HvSink;
use hyperv::HvState;
use hyperv::HvStatus;
use hyperv::MessagePort;
use hyperv::spec::msr;
use parking_lot::Mutex;
use scsi_disk::ScsiDisk;
use scsi_disk::ScsiDiskConfig;
use scsi_disk::spec::op;
use storvsp::GuestSignal;
use storvsp::Storvsp;
use storvsp::StorvspChannel;
use storvsp::StorvspConfig;
use storvsp::client::GuestChannel;
use storvsp::client::INIT_TRANSACTION_ID;
use storvsp::client::SrbRequest;
use storvsp::client::init_sequence;
use storvsp::client::parse_completion;
use storvsp::protocol::data_in;
use storvsp::protocol::srb_status;
use virt::HypercallInput;
use virt::InterruptRequest;
use virt::VmClock;
use vmbus_ring::GpaRange;
use vmbus_ring::Gpadl;
use vmbus_server::Guid;
use vmbus_server::Limits;
use vmbus_server::Notifier;
use vmbus_server::OfferId;
use vmbus_server::OpenError;
use vmbus_server::OpenRequest;
use vmbus_server::VmbusServer;
use vmbus_server::client;
use vmbus_server::client::HostMessage;
use vmbus_server::protocol::msgtype;
use vmbus_server::protocol::version;

const MIB: u64 = 1 << 20;
const SIMP: [u64; 2] = [0x10_0000, 0x10_2000];
const SIEFP: [u64; 2] = [0x10_1000, 0x10_3000];
const HYPERCALL_PAGE: u64 = 0x10_4000;
const INPUT_PAGE: u64 = 0x10_5000;
const RING_PFN: u64 = 0x200; // 2 MiB
const DATA: u64 = 4 * MIB;

#[derive(Default)]
struct Interrupts(Mutex<Vec<InterruptRequest>>);

impl HvSink for Interrupts {
    fn request_interrupt(&self, request: InterruptRequest) {
        self.0.lock().push(request);
    }
    fn guest_crash(&self, report: String) {
        panic!("unexpected crash report: {report}");
    }
}

/// Channel doorbell: the machine would wake a worker thread; the test polls the flag.
#[derive(Default)]
struct Doorbell(AtomicBool);

impl EventPort for Doorbell {
    fn signal(&self, _vp: u32, _flag: u16) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Host-to-guest channel signal: the relid's event flag on the channel's target VP.
struct ChannelSignal {
    hv: Arc<HvState>,
    vp: u32,
    relid: u32,
}

impl GuestSignal for ChannelSignal {
    fn signal(&self) {
        self.hv.signal_event(self.vp, 2, self.relid).unwrap();
    }
}

/// The machine's side: what it does for each control-plane request.
struct Host {
    hv: Arc<HvState>,
    memory: GuestMemory,
    storvsp: Arc<Storvsp>,
    storvsp_offer: Option<OfferId>,
    channels: BTreeMap<u32, (StorvspChannel, Arc<Doorbell>)>,
}

impl Notifier for Host {
    fn send_message(&mut self, target_vp: u32, message: &[u8]) {
        self.hv.post_message(target_vp, 2, 1, message).unwrap();
    }
    fn open_channel(&mut self, offer: OfferId, request: &OpenRequest) -> Result<(), OpenError> {
        assert_eq!(Some(offer), self.storvsp_offer);
        let signal = Arc::new(ChannelSignal {
            hv: self.hv.clone(),
            vp: request.target_vp,
            relid: request.relid,
        });
        let channel = self.storvsp.open_channel(&self.memory, request, signal)?;
        let bell = Arc::new(Doorbell::default());
        self.hv
            .connect_event_port(request.connection_id, bell.clone())
            .map_err(|e| OpenError(e.to_string()))?;
        self.channels.insert(request.connection_id, (channel, bell));
        Ok(())
    }
    fn close_channel(&mut self, _offer: OfferId) {
        for (conn, _) in std::mem::take(&mut self.channels) {
            self.hv.disconnect_event_port(conn);
        }
    }
}

struct Bus {
    server: Mutex<(VmbusServer, Host)>,
}

impl MessagePort for Bus {
    fn post(&self, vp: u32, _message_type: u32, payload: &[u8]) -> Result<(), HvStatus> {
        let mut guard = self.server.lock();
        let (server, host) = &mut *guard;
        server.handle_message(vp, payload, host);
        Ok(())
    }
}

struct Vm {
    memory: GuestMemory,
    hv: Arc<HvState>,
    interrupts: Arc<Interrupts>,
    bus: Arc<Bus>,
    storvsp: Arc<Storvsp>,
    disk: Arc<RamLayer>,
}

fn vm() -> Vm {
    let memory = GuestMemory::allocate(16 * MIB);
    let interrupts = Arc::new(Interrupts::default());
    let hv = Arc::new(HvState::new(
        HvConfig::new(2, 1_000_000_000, 1_000_000_000),
        memory.clone(),
        VmClock::manual(),
        interrupts.clone(),
    ));
    let storvsp = Arc::new(Storvsp::new(
        Guid::new(
            0xf8b3_781a,
            0x1e82,
            0x4818,
            [0xa1, 0xc3, 0x63, 0xd8, 0x06, 0xec, 0x15, 0xbb],
        ),
        StorvspConfig::default(),
    ));
    let disk = Arc::new(RamLayer::new_zeroed(64 * MIB, 512).unwrap());
    storvsp
        .add_disk(
            0,
            Arc::new(ScsiDisk::new(disk.clone(), ScsiDiskConfig::default())),
        )
        .unwrap();
    let mut server = VmbusServer::new(memory.clone(), Limits::new(2));
    let mut host = Host {
        hv: hv.clone(),
        memory: memory.clone(),
        storvsp: storvsp.clone(),
        storvsp_offer: None,
        channels: BTreeMap::new(),
    };
    host.storvsp_offer = Some(server.add_offer(storvsp.offer_params(), &mut host).unwrap());
    let bus = Arc::new(Bus {
        server: Mutex::new((server, host)),
    });
    hv.connect_message_port(1, bus.clone()).unwrap();
    hv.connect_message_port(4, bus.clone()).unwrap();
    Vm {
        memory,
        hv,
        interrupts,
        bus,
        storvsp,
        disk,
    }
}

impl Vm {
    /// What Linux's hyperv_init and hv_synic_enable_regs do.
    fn boot_enlightenments(&self) {
        assert!(
            self.hv
                .msr_write(0, msr::GUEST_OS_ID, 0x8100_0006_0c00_0000)
        );
        let hc = self.hv.msr_read(0, msr::HYPERCALL).unwrap();
        assert!(
            self.hv
                .msr_write(0, msr::HYPERCALL, hc | HYPERCALL_PAGE | 1)
        );
        assert_eq!(
            self.memory.read_plain::<u32>(HYPERCALL_PAGE).unwrap(),
            0xfa1e_0ff3
        );
        for vp in 0..2u32 {
            assert!(self.hv.msr_write(vp, msr::VP_ASSIST_PAGE, 0));
            assert_eq!(self.hv.msr_read(vp, msr::VP_INDEX), Some(u64::from(vp)));
            assert!(self.hv.msr_write(vp, msr::SIMP, SIMP[vp as usize] | 1));
            assert!(self.hv.msr_write(vp, msr::SIEFP, SIEFP[vp as usize] | 1));
            assert!(self.hv.msr_write(vp, msr::SINT0 + 2, 0xf3));
            assert!(self.hv.msr_write(vp, msr::SCONTROL, 1));
        }
    }

    /// HvPostMessage through the hypercall interface.
    fn post(&self, connection_id: u32, message: &[u8]) -> u64 {
        let m = &self.memory;
        m.write_plain(INPUT_PAGE, &connection_id).unwrap();
        m.write_plain(INPUT_PAGE + 8, &1u32).unwrap();
        m.write_plain(INPUT_PAGE + 12, &(message.len() as u32))
            .unwrap();
        m.write_at(INPUT_PAGE + 16, message).unwrap();
        self.hv.hypercall(
            0,
            HypercallInput {
                control: 0x5c,
                input: INPUT_PAGE,
                output: 0,
            },
        )
    }

    /// Linux's message handler on `vp`: take what is in the SINT2 slot, free it, EOM if a
    /// message is pending behind it.
    fn take_messages(&self, vp: u32) -> Vec<HostMessage> {
        let slot = self
            .memory
            .translate(SIMP[vp as usize] + 2 * 256)
            .unwrap()
            .offset;
        let mut out = Vec::new();
        loop {
            let ty = self.memory.load(slot, Width::U32);
            if ty == 0 {
                return out;
            }
            let len = self.memory.load(slot + 4, Width::U8) as usize;
            let mut payload = vec![0u8; len];
            self.memory.copy_out(slot + 16, &mut payload);
            out.push(client::parse_host_message(&payload));
            assert_eq!(self.memory.cmpxchg(slot, Width::U32, ty, 0), Ok(ty));
            if self.memory.load(slot + 5, Width::U8) & 1 != 0 {
                assert!(self.hv.msr_write(vp, msr::EOM, 0));
            }
        }
    }

    /// HvSignalEvent (fast) on `connection_id`.
    fn signal(&self, connection_id: u32) -> u64 {
        self.hv.hypercall(
            1,
            HypercallInput {
                control: 0x1005d,
                input: u64::from(connection_id),
                output: 0,
            },
        )
    }

    /// The machine's worker: process every channel whose doorbell rang.
    fn run_workers(&self) {
        let mut guard = self.bus.server.lock();
        for (channel, bell) in guard.1.channels.values_mut() {
            if bell.0.swap(false, Ordering::SeqCst) {
                channel.process().unwrap();
            }
        }
    }

    /// Test-and-clear of the relid bit in `vp`'s SIEF page (Linux's vmbus_chan_sched).
    fn take_event(&self, vp: u32, relid: u32) -> bool {
        let gpa = SIEFP[vp as usize] + 2 * 256 + u64::from(relid / 64) * 8;
        let off = self.memory.translate(gpa).unwrap().offset;
        let bit = 1u64 << (relid % 64);
        let cur = self.memory.load(off, Width::U64);
        cur & bit != 0
            && self
                .memory
                .cmpxchg(off, Width::U64, cur, cur & !bit)
                .is_ok()
    }
}

/// Brings the bus up the way Linux 6.x does and opens the SCSI channel; returns the guest
/// side of the channel, its relid and connection ID.
fn connect_and_open(vm: &Vm) -> (GuestChannel, u32, u32) {
    vm.boot_enlightenments();
    assert_eq!(
        vm.post(4, &client::initiate_contact(version::WIN10_V5_3, 0)),
        0
    );
    assert_eq!(
        vm.take_messages(0),
        vec![HostMessage::VersionResponse {
            supported: true,
            msg_conn_id: 1
        }]
    );
    let irq = vm.interrupts.0.lock().last().copied().unwrap();
    assert_eq!((irq.destination, irq.vector), (0, 0xf3));
    assert_eq!(vm.post(1, &client::header_only(msgtype::REQUEST_OFFERS)), 0);
    let offers = vm.take_messages(0);
    let (relid, conn) = match &offers[..] {
        [
            HostMessage::Offer {
                interface_type,
                relid,
                connection_id,
                ..
            },
            HostMessage::AllOffersDelivered,
        ] => {
            assert_eq!(
                interface_type.to_string(),
                "ba6163d9-04a1-4d29-b605-72e2ffb1dc7f"
            );
            (*relid, *connection_id)
        }
        other => panic!("{other:?}"),
    };
    // 128 KiB each way, as storvsc allocates; GPADL header + 2 bodies.
    let pfns: Vec<u64> = (RING_PFN..RING_PFN + 64).collect();
    let gpadl = Gpadl {
        ranges: vec![client::ring_range(pfns.clone())],
    };
    let guest = GuestChannel::new(&vm.memory, &gpadl, 32).unwrap();
    for m in client::gpadl_messages(relid, 0xe1e10, &gpadl.ranges) {
        assert_eq!(vm.post(1, &m), 0);
    }
    assert_eq!(
        vm.take_messages(0),
        vec![HostMessage::GpadlCreated {
            relid,
            gpadl: 0xe1e10,
            status: 0
        }]
    );
    // Interrupts of this channel go to VP 1.
    assert_eq!(vm.post(1, &client::open_channel(relid, 0xe1e10, 1, 32)), 0);
    assert_eq!(
        vm.take_messages(0),
        vec![HostMessage::OpenResult {
            relid,
            open_id: relid,
            status: 0
        }]
    );
    (guest, relid, conn)
}

/// One request through the ring, the doorbell hypercall, the worker, the event flag.
fn request(
    vm: &Vm,
    guest: &mut GuestChannel,
    relid: u32,
    conn: u32,
    packet: &[u8],
) -> (
    storvsp::protocol::VstorPacket,
    storvsp::protocol::ScsiRequest,
) {
    if guest.send(packet).unwrap().expect("ring full") {
        assert_eq!(vm.signal(conn), 0);
    }
    vm.run_workers();
    assert!(vm.take_event(1, relid), "completion signalled on VP 1");
    let (p, _) = guest.recv().unwrap().expect("a completion");
    parse_completion(&p).unwrap()
}

#[test]
fn linux_bring_up_and_a_write_read_round_trip() {
    let vm = vm();
    let (mut guest, relid, conn) = connect_and_open(&vm);
    for p in init_sequence(0x0602) {
        let packet = vmbus_ring::packet::inband(INIT_TRANSACTION_ID, true, &p);
        let (reply, _) = request(&vm, &mut guest, relid, conn, &packet);
        assert_eq!(reply.status.get(), 0);
    }
    // Write a pattern through WRITE(16) with a scattered buffer, read it back.
    let len = 256 * 1024u32;
    let range = GpaRange {
        byte_count: len,
        byte_offset: 0,
        pfns: (0..64).map(|i| DATA / 4096 + 2 * i).collect(),
    };
    let pattern: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    range.write(&vm.memory, 0, &pattern).unwrap();
    let mut cdb = vec![0u8; 16];
    cdb[0] = op::WRITE_16;
    cdb[2..10].copy_from_slice(&4096u64.to_be_bytes());
    cdb[10..14].copy_from_slice(&512u32.to_be_bytes());
    let w = SrbRequest::new(0, &cdb, data_in::WRITE, len).vmbus_packet(1, Some(&range));
    assert_eq!(
        request(&vm, &mut guest, relid, conn, &w).1.srb_status,
        srb_status::SUCCESS
    );
    // The host-side disk holds the pattern.
    let mut check = vec![0u8; len as usize];
    disk::Disk::read(&*vm.disk, 4096, &mut check).unwrap();
    assert!(check == pattern);
    range.write(&vm.memory, 0, &vec![0; len as usize]).unwrap();
    cdb[0] = op::READ_16;
    let r = SrbRequest::new(0, &cdb, data_in::READ, len).vmbus_packet(2, Some(&range));
    let (_, srb) = request(&vm, &mut guest, relid, conn, &r);
    assert_eq!(srb.srb_status, srb_status::SUCCESS);
    assert_eq!(srb.data_transfer_length.get(), len);
    let mut back = vec![0u8; len as usize];
    range.read(&vm.memory, 0, &mut back).unwrap();
    assert!(back == pattern);
}

#[test]
fn close_teardown_and_unload_release_everything() {
    let vm = vm();
    let (_guest, relid, conn) = connect_and_open(&vm);
    assert_eq!(
        vm.post(1, &client::relid_message(msgtype::CLOSE_CHANNEL, relid)),
        0
    );
    assert_eq!(
        vm.signal(conn),
        HvStatus::InvalidConnectionId as u64,
        "doorbell gone"
    );
    assert_eq!(vm.post(1, &client::gpadl_teardown(relid, 0xe1e10)), 0);
    assert_eq!(
        vm.take_messages(0),
        vec![HostMessage::GpadlTorndown { gpadl: 0xe1e10 }]
    );
    assert_eq!(vm.post(1, &client::header_only(msgtype::UNLOAD)), 0);
    assert_eq!(vm.take_messages(0), vec![HostMessage::UnloadResponse]);
    assert_eq!(vm.bus.server.lock().0.version(), None);
}

#[test]
fn hot_remove_rescinds_the_channel() {
    let vm = vm();
    let (_guest, relid, _) = connect_and_open(&vm);
    {
        let mut guard = vm.bus.server.lock();
        let (server, host) = &mut *guard;
        let id = host.storvsp_offer.unwrap();
        server.revoke_offer(id, host).unwrap();
        assert!(host.channels.is_empty(), "device stopped");
    }
    assert_eq!(vm.take_messages(0), vec![HostMessage::Rescind { relid }]);
    assert_eq!(
        vm.post(1, &client::relid_message(msgtype::RELID_RELEASED, relid)),
        0
    );
    assert_eq!(vm.bus.server.lock().0.gpadl_count(), 0);
    let _ = &vm.storvsp;
}
