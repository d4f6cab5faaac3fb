//! Random synthetic-MSR accesses, hypercalls (with guest-controlled input pages) and
//! host-side message/event traffic against the enlightenments. Nothing may panic; every
//! interrupt requested names a real VP with a vector of at least 16.

#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use guest_mem::GuestMemory;
use hyperv::EventPort;
use hyperv::HvConfig;
use hyperv::HvSink;
use hyperv::HvState;
use hyperv::HvStatus;
use hyperv::MessagePort;
use libfuzzer_sys::fuzz_target;
use virt::HypercallInput;
use virt::InterruptRequest;
use virt::VmClock;

const MEMORY: u64 = 64 * 1024;

struct Sink;

impl HvSink for Sink {
    fn request_interrupt(&self, r: InterruptRequest) {
        assert!(r.destination < 2);
        assert!(r.vector >= 16);
    }
    fn guest_crash(&self, _report: String) {}
}

struct Port;

impl MessagePort for Port {
    fn post(&self, _vp: u32, _ty: u32, payload: &[u8]) -> Result<(), HvStatus> {
        assert!(payload.len() <= 240);
        Ok(())
    }
}

impl EventPort for Port {
    fn signal(&self, _vp: u32, _flag: u16) {}
}

#[derive(Arbitrary, Debug)]
enum Op {
    Read {
        vp: u8,
        msr: u16,
    },
    Write {
        vp: u8,
        msr: u16,
        value: u64,
    },
    Hypercall {
        vp: u8,
        control: u64,
        input: u64,
        output: u64,
    },
    Post {
        vp: u8,
        sint: u8,
        ty: u32,
        payload: Vec<u8>,
    },
    Signal {
        vp: u8,
        sint: u8,
        flag: u16,
    },
    Guest {
        offset: u16,
        value: u64,
    },
    Reset,
}

fuzz_target!(|ops: Vec<Op>| {
    let memory = GuestMemory::allocate(MEMORY);
    let hv = HvState::new(
        HvConfig::new(2, 1_000_000_000, 1_000_000_000),
        memory.clone(),
        VmClock::manual(),
        Arc::new(Sink),
    );
    hv.connect_message_port(1, Arc::new(Port)).unwrap();
    hv.connect_event_port(0x2001, Arc::new(Port)).unwrap();
    for op in ops.iter().take(256) {
        match op {
            Op::Read { vp, msr } => {
                let _ = hv.msr_read(u32::from(vp % 3), 0x4000_0000 + u32::from(*msr % 0x210));
            }
            Op::Write { vp, msr, value } => {
                let _ = hv.msr_write(
                    u32::from(vp % 3),
                    0x4000_0000 + u32::from(*msr % 0x210),
                    *value,
                );
            }
            Op::Hypercall {
                vp,
                control,
                input,
                output,
            } => {
                let r = hv.hypercall(
                    u32::from(vp % 3),
                    HypercallInput {
                        control: *control,
                        input: input % (MEMORY + 8192),
                        output: *output,
                    },
                );
                assert!(r <= 0xffff);
            }
            Op::Post {
                vp,
                sint,
                ty,
                payload,
            } => {
                let _ = hv.post_message(u32::from(vp % 3), sint % 17, *ty, payload);
            }
            Op::Signal { vp, sint, flag } => {
                let _ = hv.signal_event(u32::from(vp % 3), sint % 17, u32::from(*flag));
            }
            Op::Guest { offset, value } => {
                let _ = memory.write_plain(u64::from(*offset) & !7, value);
            }
            Op::Reset => hv.reset(),
        }
    }
});
