//! Random port, MMIO, interrupt and time sequences against the whole legacy chipset, wired the
//! way the machine wires it (buses, IRQ router, PIC INTR, I/O APIC sink). Nothing may panic,
//! and the PIC's INTR line must always match its own view.

#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use chipset_legacy::i8042::I8042;
use chipset_legacy::ioapic::IOAPIC_BASE;
use chipset_legacy::ioapic::IoApic;
use chipset_legacy::ioapic::TestInterruptSink;
use chipset_legacy::misc;
use chipset_legacy::pic::DualPic;
use chipset_legacy::pit::Pit;
use chipset_legacy::pm::AcpiPm;
use chipset_legacy::pm::PM_BASE;
use chipset_legacy::router::IrqRouter;
use chipset_legacy::rtc::CmosConfig;
use chipset_legacy::rtc::Rtc;
use device_api::HaltRequest;
use device_api::HaltSink;
use device_api::LineInterrupt;
use device_api::MmioBus;
use device_api::PioBus;
use device_api::Poll;
use device_api::PollWaker;
use device_api::TestIrqTarget;
use device_api::VmClock;
use device_api::shared;
use libfuzzer_sys::fuzz_target;
use parking_lot::Mutex;
use serial_16550::NullOutput;
use serial_16550::Serial16550;
use serial_16550::SerialInput;

/// Ports worth hitting (the fuzzer also gets raw ports).
const PORTS: &[u16] = &[
    0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x60, 0x64, 0x70, 0x71,
    0x80, 0x402, 0x505, 0x600, 0x601, 0x602, 0x603, 0x604, 0x605, 0x608, 0x60a, 0x620, 0x622,
    0xcf9, 0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff,
];

#[derive(Arbitrary, Debug)]
enum Op {
    Out { port: u8, width: u8, value: u32 },
    In { port: u8, width: u8 },
    RawOut { port: u16, value: u8 },
    MmioWrite { offset: u8, width: u8, value: u32 },
    MmioRead { offset: u8, width: u8 },
    Irq { line: u8, level: bool },
    Acknowledge,
    Eoi { vector: u8 },
    Advance { ns: u32 },
    Poll,
    SerialInput { bytes: Vec<u8> },
}

#[derive(Default)]
struct Halts(Mutex<Vec<HaltRequest>>);

impl HaltSink for Halts {
    fn request_halt(&self, request: HaltRequest) {
        let mut h = self.0.lock();
        if h.len() < 16 {
            h.push(request);
        }
    }
}

struct Null;

impl misc::ByteOutput for Null {
    fn write(&mut self, _bytes: &[u8]) {}
}

fn width(w: u8) -> usize {
    [1, 2, 4][usize::from(w % 3)]
}

fuzz_target!(|ops: Vec<Op>| {
    let clock = VmClock::manual();
    let halts = Arc::new(Halts::default());
    let intr = TestIrqTarget::new();
    let sink = TestInterruptSink::new();
    let pic = shared(DualPic::new(intr.line(0)));
    let ioapic = shared(IoApic::new(1, IOAPIC_BASE, sink.clone()));
    let router = IrqRouter::new(pic.clone(), ioapic.clone());
    let line = |n: u32| LineInterrupt::new(router.clone(), n);

    let pit = shared(Pit::new(line(0), clock.clone(), PollWaker::detached()));
    let rtc = shared(Rtc::new(
        &CmosConfig {
            initial_time: 1_700_000_000,
            ram_below_4g: 1 << 30,
            ram_above_4g: 0,
            processors: 2,
        },
        line(8),
        clock.clone(),
        PollWaker::detached(),
    ));
    let kbc = shared(I8042::new(line(1), line(12), halts.clone()));
    let pm = shared(AcpiPm::new(
        PM_BASE,
        line(9),
        clock.clone(),
        halts.clone(),
        PollWaker::detached(),
    ));
    let input = SerialInput::new();
    let uart = shared(Serial16550::new(
        0x3f8,
        line(4),
        Box::new(NullOutput),
        input.clone(),
        clock.clone(),
    ));

    let mut pio = PioBus::new();
    for r in DualPic::port_ranges() {
        pio.register("pic", r, pic.clone()).unwrap();
    }
    for r in Pit::port_ranges() {
        pio.register("pit", r, pit.clone()).unwrap();
    }
    pio.register("rtc", Rtc::port_range(), rtc.clone()).unwrap();
    for r in I8042::ports() {
        pio.register("i8042", r, kbc.clone()).unwrap();
    }
    for r in pm.lock().port_ranges() {
        pio.register("pm", r, pm.clone()).unwrap();
    }
    pio.register("uart", 0x3f8..=0x3ff, uart.clone()).unwrap();
    pio.register(
        "reset",
        0xcf9..=0xcf9,
        shared(misc::ResetControl::new(halts.clone())),
    )
    .unwrap();
    pio.register(
        "debugcon",
        0x402..=0x402,
        shared(misc::DebugConsole::new(Box::new(Null))),
    )
    .unwrap();
    pio.register(
        "pvpanic",
        0x505..=0x505,
        shared(misc::PvPanic::new(halts.clone())),
    )
    .unwrap();
    pio.register("post", 0x80..=0x80, shared(misc::PostCode::new()))
        .unwrap();
    let mut mmio = MmioBus::new();
    let range = ioapic.lock().mmio_range();
    mmio.register("ioapic", range, ioapic.clone()).unwrap();

    for op in ops.into_iter().take(4096) {
        match op {
            Op::Out {
                port,
                width: w,
                value,
            } => {
                let port = PORTS[usize::from(port) % PORTS.len()];
                let bytes = value.to_le_bytes();
                pio.write(port, &bytes[..width(w)]);
            }
            Op::In { port, width: w } => {
                let port = PORTS[usize::from(port) % PORTS.len()];
                let mut b = [0u8; 4];
                pio.read(port, &mut b[..width(w)]);
            }
            Op::RawOut { port, value } => pio.write(port, &[value]),
            Op::MmioWrite {
                offset,
                width: w,
                value,
            } => {
                let addr = IOAPIC_BASE + u64::from(offset) * 4;
                mmio.write(addr, &value.to_le_bytes()[..width(w)]);
            }
            Op::MmioRead { offset, width: w } => {
                let mut b = [0u8; 4];
                mmio.read(IOAPIC_BASE + u64::from(offset) * 4, &mut b[..width(w)]);
            }
            Op::Irq { line: l, level } => line(u32::from(l % 26)).set_level(level),
            Op::Acknowledge => {
                pic.lock().acknowledge();
            }
            Op::Eoi { vector } => ioapic.lock().eoi(vector),
            Op::Advance { ns } => clock.advance(u64::from(ns)),
            Op::Poll => {
                let now = clock.now_ns();
                for d in [
                    pit.lock().poll(now),
                    rtc.lock().poll(now),
                    pm.lock().poll(now),
                    uart.lock().poll(now),
                ]
                .into_iter()
                .flatten()
                {
                    assert!(d > now, "deadline in the past");
                }
            }
            Op::SerialInput { bytes } => input.push(&bytes[..bytes.len().min(64)]),
        }
        assert_eq!(intr.level(0), pic.lock().intr());
        sink.take();
    }
});
