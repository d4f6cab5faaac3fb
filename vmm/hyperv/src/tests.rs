use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use guest_mem::GuestMemory;
use guest_mem::Width;
use parking_lot::Mutex;
use virt::HypercallInput;
use virt::InterruptRequest;
use virt::VmClock;

use crate::*;

#[derive(Default)]
struct RecordingSink {
    interrupts: Mutex<Vec<InterruptRequest>>,
    crashes: Mutex<Vec<String>>,
}

impl HvSink for RecordingSink {
    fn request_interrupt(&self, request: InterruptRequest) {
        self.interrupts.lock().push(request);
    }
    fn guest_crash(&self, report: String) {
        self.crashes.lock().push(report);
    }
}

#[derive(Default)]
struct RecordingPort {
    messages: Mutex<Vec<(u32, u32, Vec<u8>)>>,
    events: Mutex<Vec<(u32, u16)>>,
    busy: AtomicBool,
}

impl MessagePort for RecordingPort {
    fn post(&self, vp: u32, message_type: u32, payload: &[u8]) -> Result<(), HvStatus> {
        if self.busy.load(Ordering::Relaxed) {
            return Err(HvStatus::InsufficientBuffers);
        }
        self.messages
            .lock()
            .push((vp, message_type, payload.to_vec()));
        Ok(())
    }
}

impl EventPort for RecordingPort {
    fn signal(&self, vp: u32, flag: u16) {
        self.events.lock().push((vp, flag));
    }
}

const SIMP: u64 = 0x10000;
const SIEFP: u64 = 0x11000;
const HC_PAGE: u64 = 0x12000;
const INPUT: u64 = 0x13000;
const LINUX_OS_ID: u64 = 0x8100_0006_0177_0000;

struct Fixture {
    memory: GuestMemory,
    sink: Arc<RecordingSink>,
    hv: Arc<HvState>,
}

fn fixture(vps: u32) -> Fixture {
    let memory = GuestMemory::allocate(0x20000);
    let sink = Arc::new(RecordingSink::default());
    let hv = Arc::new(HvState::new(
        HvConfig::new(vps, 2_500_000_000, 1_000_000_000),
        memory.clone(),
        VmClock::manual(),
        sink.clone(),
    ));
    Fixture { memory, sink, hv }
}

/// What Linux's hv_synic_enable_regs does on one CPU (pages per VP).
fn enable_synic(f: &Fixture, vp: u32) {
    let off = u64::from(vp) * 0x2000;
    assert!(f.hv.msr_write(vp, spec::msr::SIMP, (SIMP + off) | 1));
    assert!(f.hv.msr_write(vp, spec::msr::SIEFP, (SIEFP + off) | 1));
    let sint2 = f.hv.msr_read(vp, spec::msr::SINT0 + 2).unwrap();
    assert_eq!(sint2, spec::SINT_MASKED, "SINTs reset masked");
    assert!(f.hv.msr_write(vp, spec::msr::SINT0 + 2, 0xf3));
    assert!(f.hv.msr_write(vp, spec::msr::SCONTROL, 1));
}

#[test]
fn vp_index_frequencies_and_version_read_as_configured() {
    let f = fixture(2);
    assert_eq!(f.hv.msr_read(1, spec::msr::VP_INDEX), Some(1));
    assert_eq!(f.hv.msr_read(0, spec::msr::VP_INDEX), Some(0));
    assert_eq!(
        f.hv.msr_read(0, spec::msr::TSC_FREQUENCY),
        Some(2_500_000_000)
    );
    assert_eq!(
        f.hv.msr_read(0, spec::msr::APIC_FREQUENCY),
        Some(1_000_000_000)
    );
    assert_eq!(f.hv.msr_read(0, spec::msr::SVERSION), Some(1));
    assert!(
        !f.hv.msr_write(0, spec::msr::VP_INDEX, 5),
        "VP_INDEX is read-only"
    );
    assert_eq!(f.hv.msr_read(2, spec::msr::VP_INDEX), None, "no VP 2");
    assert_eq!(f.hv.msr_read(0, 0x10), None, "not a synthetic MSR");
    assert_eq!(
        f.hv.msr_read(0, 0x4000_01f0),
        Some(0),
        "unknown synthetic reads 0"
    );
    assert!(f.hv.msr_write(0, spec::msr::VP_ASSIST_PAGE, 0x5001));
    assert_eq!(f.hv.msr_read(0, spec::msr::VP_ASSIST_PAGE), Some(0x5001));
    assert!(f.hv.msr_write(0, spec::msr::TSC_INVARIANT_CONTROL, 1));
}

#[test]
fn time_ref_count_follows_the_clock_in_100ns_units() {
    let memory = GuestMemory::allocate(0x1000);
    let clock = VmClock::manual();
    let hv = HvState::new(
        HvConfig::new(1, 1, 1),
        memory,
        clock.clone(),
        Arc::new(RecordingSink::default()),
    );
    clock.advance(1_000_000);
    assert_eq!(hv.msr_read(0, spec::msr::TIME_REF_COUNT), Some(10_000));
}

#[test]
fn hypercall_page_needs_a_guest_os_id() {
    let f = fixture(1);
    assert!(f.hv.msr_write(0, spec::msr::HYPERCALL, HC_PAGE | 1));
    assert_eq!(f.hv.msr_read(0, spec::msr::HYPERCALL), Some(HC_PAGE));
    assert_eq!(f.memory.read_plain::<u32>(HC_PAGE).unwrap(), 0);
}

#[test]
fn hypercall_page_starts_with_endbr64_and_traps_with_vmcall() {
    let f = fixture(1);
    assert!(f.hv.msr_write(0, spec::msr::GUEST_OS_ID, LINUX_OS_ID));
    let cur = f.hv.msr_read(0, spec::msr::HYPERCALL).unwrap();
    assert!(f.hv.msr_write(0, spec::msr::HYPERCALL, cur | HC_PAGE | 1));
    assert_eq!(f.hv.msr_read(0, spec::msr::HYPERCALL), Some(HC_PAGE | 1));
    let mut code = [0u8; 9];
    f.memory.read_at(HC_PAGE, &mut code).unwrap();
    assert_eq!(code, [0xf3, 0x0f, 0x1e, 0xfa, 0x0f, 0x01, 0xc1, 0xc3, 0xcc]);
    // Clearing the guest OS id disables the page.
    assert!(f.hv.msr_write(0, spec::msr::GUEST_OS_ID, 0));
    assert_eq!(f.hv.msr_read(0, spec::msr::HYPERCALL).unwrap() & 1, 0);
}

#[test]
fn locked_hypercall_msr_ignores_writes_and_bad_pages_fault() {
    let f = fixture(1);
    f.hv.msr_write(0, spec::msr::GUEST_OS_ID, LINUX_OS_ID);
    assert!(
        !f.hv.msr_write(0, spec::msr::HYPERCALL, 0xfff0_0000 | 1),
        "page not in RAM"
    );
    assert!(f.hv.msr_write(0, spec::msr::HYPERCALL, HC_PAGE | 3));
    assert!(f.hv.msr_write(0, spec::msr::HYPERCALL, 0));
    assert_eq!(f.hv.msr_read(0, spec::msr::HYPERCALL), Some(HC_PAGE | 3));
}

#[test]
fn sint_vectors_below_16_fault_unless_masked() {
    let f = fixture(1);
    assert!(!f.hv.msr_write(0, spec::msr::SINT0 + 2, 0x0f));
    assert!(f.hv.msr_write(0, spec::msr::SINT0 + 2, spec::SINT_MASKED | 0x0f));
}

#[test]
fn host_message_lands_in_slot_2_and_interrupts_the_target_vp() {
    let f = fixture(2);
    enable_synic(&f, 0);
    enable_synic(&f, 1);
    f.hv.post_message(1, 2, 1, &[0xaa; 16]).unwrap();
    let slot = SIMP + 0x2000 + 2 * 256;
    assert_eq!(f.memory.read_plain::<u32>(slot).unwrap(), 1);
    assert_eq!(f.memory.read_plain::<u8>(slot + 4).unwrap(), 16);
    assert_eq!(f.memory.read_plain::<u8>(slot + 16 + 15).unwrap(), 0xaa);
    let irqs = f.sink.interrupts.lock().clone();
    assert_eq!(irqs.len(), 1);
    assert_eq!(irqs[0].destination, 1);
    assert_eq!(irqs[0].vector, 0xf3);
    assert!(!irqs[0].level_triggered);
    assert_eq!(
        f.memory.read_plain::<u32>(SIMP + 2 * 256).unwrap(),
        0,
        "VP 0 untouched"
    );
}

#[test]
fn messages_wait_for_synic_enable_and_then_arrive() {
    let f = fixture(1);
    f.hv.post_message(0, 2, 1, &[7]).unwrap();
    assert!(f.sink.interrupts.lock().is_empty());
    enable_synic(&f, 0);
    assert_eq!(f.sink.interrupts.lock().len(), 1);
    assert_eq!(f.memory.read_plain::<u8>(SIMP + 512 + 16).unwrap(), 7);
}

#[test]
fn eom_delivers_the_queued_message_after_the_guest_frees_the_slot() {
    let f = fixture(1);
    enable_synic(&f, 0);
    f.hv.post_message(0, 2, 1, &[1]).unwrap();
    f.hv.post_message(0, 2, 1, &[2]).unwrap();
    let slot = SIMP + 512;
    assert_eq!(
        f.memory.read_plain::<u8>(slot + 5).unwrap(),
        1,
        "pending set"
    );
    // Spurious EOM with the slot still busy changes nothing.
    assert!(f.hv.msr_write(0, spec::msr::EOM, 0));
    assert_eq!(f.memory.read_plain::<u8>(slot + 16).unwrap(), 1);
    f.memory.write_plain(slot, &0u32).unwrap();
    assert!(f.hv.msr_write(0, spec::msr::EOM, 0));
    assert_eq!(f.memory.read_plain::<u8>(slot + 16).unwrap(), 2);
    assert_eq!(f.sink.interrupts.lock().len(), 2);
    assert_eq!(f.hv.msr_read(0, spec::msr::EOM), Some(0));
}

#[test]
fn host_messages_are_validated() {
    let f = fixture(1);
    assert_eq!(f.hv.post_message(1, 2, 1, &[]), Err(HvError::InvalidVp(1)));
    assert_eq!(
        f.hv.post_message(0, 16, 1, &[]),
        Err(HvError::InvalidSint(16))
    );
    assert_eq!(
        f.hv.post_message(0, 2, 0, &[]),
        Err(HvError::InvalidMessageType)
    );
    assert_eq!(
        f.hv.post_message(0, 2, 1, &[0; 241]),
        Err(HvError::PayloadTooLarge(241))
    );
}

fn write_post_input(f: &Fixture, gpa: u64, conn: u32, ty: u32, payload: &[u8]) {
    f.memory.write_plain(gpa, &conn).unwrap();
    f.memory.write_plain(gpa + 8, &ty).unwrap();
    f.memory
        .write_plain(gpa + 12, &(payload.len() as u32))
        .unwrap();
    f.memory.write_at(gpa + 16, payload).unwrap();
}

fn call(f: &Fixture, control: u64, input: u64) -> u64 {
    f.hv.hypercall(
        0,
        HypercallInput {
            control,
            input,
            output: 0,
        },
    )
}

#[test]
fn post_message_hypercall_reaches_the_connection_port() {
    let f = fixture(1);
    let port = Arc::new(RecordingPort::default());
    f.hv.connect_message_port(4, port.clone()).unwrap();
    assert_eq!(
        f.hv.connect_message_port(4, port.clone()),
        Err(HvError::ConnectionInUse(4))
    );
    write_post_input(&f, INPUT, 4, 1, &[14, 0, 0, 0, 0, 0, 0, 0, 3, 0, 5, 0]);
    assert_eq!(call(&f, 0x5c, INPUT), 0);
    let msgs = port.messages.lock().clone();
    assert_eq!(
        msgs,
        vec![(0, 1, vec![14, 0, 0, 0, 0, 0, 0, 0, 3, 0, 5, 0])]
    );

    port.busy.store(true, Ordering::Relaxed);
    assert_eq!(call(&f, 0x5c, INPUT), HvStatus::InsufficientBuffers as u64);
}

#[test]
fn post_message_hypercall_rejects_bad_input() {
    let f = fixture(1);
    f.hv.connect_message_port(1, Arc::new(RecordingPort::default()))
        .unwrap();
    write_post_input(&f, INPUT, 9, 1, &[1]);
    assert_eq!(call(&f, 0x5c, INPUT), HvStatus::InvalidConnectionId as u64);
    write_post_input(&f, INPUT, 1, 1, &[]);
    f.memory.write_plain(INPUT + 12, &241u32).unwrap();
    assert_eq!(call(&f, 0x5c, INPUT), HvStatus::InvalidParameter as u64);
    write_post_input(&f, INPUT, 1, 0, &[]);
    assert_eq!(call(&f, 0x5c, INPUT), HvStatus::InvalidParameter as u64);
    write_post_input(&f, INPUT, 1, 0x8000_0001, &[]);
    assert_eq!(call(&f, 0x5c, INPUT), HvStatus::InvalidParameter as u64);
    assert_eq!(call(&f, 0x5c, INPUT + 4), HvStatus::InvalidAlignment as u64);
    assert_eq!(
        call(&f, 0x5c, INPUT + 0xf08),
        HvStatus::InvalidAlignment as u64,
        "crosses a page"
    );
    assert_eq!(
        call(&f, 0x5c, 0x7fff_0000),
        HvStatus::InvalidParameter as u64,
        "not RAM"
    );
    assert_eq!(
        call(&f, 0x1005c, INPUT),
        HvStatus::InvalidHypercallInput as u64,
        "fast"
    );
    assert_eq!(
        call(&f, 0x5c | 1 << 27, INPUT),
        HvStatus::InvalidHypercallInput as u64
    );
    assert_eq!(
        call(&f, 0x5c | 1 << 32, INPUT),
        HvStatus::InvalidHypercallInput as u64,
        "rep"
    );
    assert_eq!(call(&f, 0x99, 0), HvStatus::InvalidHypercallCode as u64);
}

#[test]
fn signal_event_fast_and_slow_reach_the_event_port() {
    let f = fixture(1);
    let port = Arc::new(RecordingPort::default());
    f.hv.connect_event_port(0x2001, port.clone()).unwrap();
    assert_eq!(call(&f, 0x1005d, 0x2001), 0);
    f.memory.write_plain(INPUT, &(0x2001u64 | 5 << 32)).unwrap();
    assert_eq!(call(&f, 0x5d, INPUT), 0);
    assert_eq!(port.events.lock().clone(), vec![(0, 0), (0, 5)]);
    assert_eq!(
        call(&f, 0x1005d, 0x2002),
        HvStatus::InvalidConnectionId as u64
    );
    assert_eq!(
        call(&f, 0x1005d, 0x2001 | 2048 << 32),
        HvStatus::InvalidParameter as u64
    );
    assert_eq!(call(&f, 0x5d, INPUT + 1), HvStatus::InvalidAlignment as u64);
    f.hv.disconnect_event_port(0x2001);
    assert_eq!(
        call(&f, 0x1005d, 0x2001),
        HvStatus::InvalidConnectionId as u64
    );
}

#[test]
fn host_event_sets_the_relid_bit_in_the_target_vps_page() {
    let f = fixture(2);
    enable_synic(&f, 1);
    assert_eq!(f.hv.signal_event(1, 2, 1), Ok(true));
    assert_eq!(f.hv.signal_event(1, 2, 1), Ok(false), "already pending");
    let word: u64 = f.memory.read_plain(SIEFP + 0x2000 + 512).unwrap();
    assert_eq!(word, 2);
    assert_eq!(f.sink.interrupts.lock().len(), 1);
    // VP 0 has no SynIC enabled: nothing happens there.
    assert_eq!(f.hv.signal_event(0, 2, 1), Ok(false));
}

#[test]
fn crash_msrs_report_registers_and_the_message_page() {
    let f = fixture(1);
    f.memory
        .write_at(INPUT, b"Kernel panic - not syncing: test\0")
        .unwrap();
    for (i, v) in [0u64, 0, 0, INPUT, 33].into_iter().enumerate() {
        assert!(f.hv.msr_write(0, spec::msr::CRASH_P0 + i as u32, v));
    }
    assert_eq!(f.hv.msr_read(0, spec::msr::CRASH_P0 + 3), Some(INPUT));
    let ctl = f.hv.msr_read(0, spec::msr::CRASH_CTL).unwrap();
    assert_eq!(ctl, spec::CRASH_CTL_NOTIFY | spec::CRASH_CTL_NOTIFY_MSG);
    assert!(f.hv.msr_write(0, spec::msr::CRASH_CTL, ctl));
    let crashes = f.sink.crashes.lock().clone();
    assert_eq!(crashes.len(), 1);
    assert!(
        crashes[0].contains("Kernel panic - not syncing: test"),
        "{}",
        crashes[0]
    );
}

#[test]
fn reset_returns_registers_to_their_initial_values() {
    let f = fixture(1);
    enable_synic(&f, 0);
    f.hv.msr_write(0, spec::msr::GUEST_OS_ID, LINUX_OS_ID);
    f.hv.reset();
    assert_eq!(f.hv.msr_read(0, spec::msr::GUEST_OS_ID), Some(0));
    assert_eq!(f.hv.msr_read(0, spec::msr::SIMP), Some(0));
    assert_eq!(
        f.hv.msr_read(0, spec::msr::SINT0 + 2),
        Some(spec::SINT_MASKED)
    );
}

/// A guest thread consumes messages the way Linux does (cmpxchg the type to 0, then EOM if
/// the pending flag is set) while the host posts from another thread: nothing is lost and
/// order is kept.
#[test]
fn concurrent_delivery_loses_no_message() {
    const N: u32 = 2000;
    let f = fixture(1);
    enable_synic(&f, 0);
    let slot = SIMP + 512;
    let loc = f.memory.translate(slot).unwrap().offset;
    let hv = f.hv.clone();
    let producer = std::thread::spawn(move || {
        for i in 0..N {
            loop {
                match hv.post_message(0, 2, 1, &i.to_le_bytes()) {
                    Ok(()) => break,
                    Err(HvError::QueueFull { .. }) => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
        }
    });
    let mut seen = 0u32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen < N {
        assert!(std::time::Instant::now() < deadline, "stalled at {seen}");
        let ty = f.memory.load(loc, Width::U32);
        if ty == 0 {
            std::thread::yield_now();
            continue;
        }
        let value = f.memory.load(loc + 16, Width::U32) as u32;
        assert_eq!(value, seen);
        seen += 1;
        assert_eq!(f.memory.cmpxchg(loc, Width::U32, ty, 0), Ok(ty));
        std::sync::atomic::fence(Ordering::SeqCst);
        if f.memory.load(loc + 5, Width::U8) & 1 != 0 {
            f.hv.msr_write(0, spec::msr::EOM, 0);
        }
    }
    producer.join().unwrap();
}
