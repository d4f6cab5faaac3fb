//! User-space Hyper-V enlightenments: the hypervisor CPUID leaves, the synthetic MSRs, a
//! hypercall page that traps to the VMM, the two hypercalls Linux's VMBus driver needs
//! (HvPostMessage, HvSignalEvent), and the synthetic interrupt controller (SynIC) that carries
//! messages and event flags to the guest.
//!
//! # Architecture
//! [`HvState`] is a sans-IO state machine above the processor trait, so either CPU backend
//! can feed it: the machine forwards RDMSR/WRMSR of the synthetic range
//! ([`spec::msr::RANGE`]) to [`HvState::msr_read`]/[`HvState::msr_write`], and the hypercall
//! page's trap (VMCALL on `emu`) to [`HvState::hypercall`]. Side effects leave through traits:
//! - interrupts (SINT vectors) and crash reports go to the [`HvSink`] the machine provides;
//! - guest-to-host messages and events go to the [`MessagePort`] / [`EventPort`] registered
//!   for their connection ID (VMBus registers the message ports and one event port per open
//!   channel).
//!
//! Host-to-guest traffic comes in through [`HvState::post_message`] (queued per VP and SINT,
//! delivered into the guest's message page with the pending/EOM handshake) and
//! [`HvState::signal_event`] (an atomic bit in the guest's event-flags page).
//!
//! # Concurrency
//! Every method takes `&self` and may be called from any vCPU or device thread. Partition
//! registers and each VP's SynIC sit behind their own locks; no lock is held while calling a
//! port or the sink, so a port may call back into [`HvState`].
//!
//! # Spec
//! Hyper-V TLFS: "Feature and Interface Discovery" (CPUID), "Hypercall Interface",
//! "Virtual Processor Management" (VP_INDEX), "Inter-Partition Communication" (SynIC,
//! HvPostMessage, HvSignalEvent), "Partition Crash Enlightenment".

use std::collections::HashMap;
use std::sync::Arc;

use guest_mem::GuestMemory;
use parking_lot::Mutex;
use parking_lot::RwLock;
use virt::DeliveryMode;
use virt::HypercallInput;
use virt::InterruptRequest;
use virt::VmClock;

use device_api::warn_ratelimited;

pub mod cpuid;
pub mod spec;
mod synic;

pub use spec::HvStatus;

use spec::msr;
use synic::QueuedMessage;
use synic::Synic;

/// Errors of the host-side API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HvError {
    /// No such virtual processor.
    #[error("no virtual processor {0}")]
    InvalidVp(u32),
    /// SINT index above 15.
    #[error("no SINT {0}")]
    InvalidSint(u8),
    /// Payload larger than 240 bytes.
    #[error("message payload of {0} bytes is too large")]
    PayloadTooLarge(usize),
    /// Message type 0 is reserved for free slots.
    #[error("message type 0 is reserved")]
    InvalidMessageType,
    /// The VP's queue for this SINT is full (the guest is not consuming messages).
    #[error("message queue of VP {vp} SINT {sint} is full")]
    QueueFull {
        /// Target VP.
        vp: u32,
        /// Target SINT.
        sint: u8,
    },
    /// A connection ID is already registered.
    #[error("connection {0:#x} is already registered")]
    ConnectionInUse(u32),
}

/// Where [`HvState`] sends what leaves it. Implemented by the machine.
pub trait HvSink: Send + Sync {
    /// Delivers a SINT interrupt (fixed, edge, physical destination = the VP's APIC ID).
    fn request_interrupt(&self, request: InterruptRequest);
    /// The guest reported a crash through the crash MSRs.
    fn guest_crash(&self, report: String);
}

/// Receiver of HvPostMessage on one connection ID.
pub trait MessagePort: Send + Sync {
    /// A message from `vp`. Copy what is needed; return the hypercall status
    /// ([`HvStatus::InsufficientBuffers`] makes the guest retry later).
    fn post(&self, vp: u32, message_type: u32, payload: &[u8]) -> Result<(), HvStatus>;
}

/// Receiver of HvSignalEvent on one connection ID.
pub trait EventPort: Send + Sync {
    /// `vp` signalled event flag `flag`. Must not block.
    fn signal(&self, vp: u32, flag: u16);
}

/// Configuration of the enlightenments.
#[derive(Debug, Clone)]
pub struct HvConfig {
    /// Number of VPs (VP index = processor index = initial APIC ID).
    pub vp_count: u32,
    /// The guest's TSC frequency in Hz (reported by MSR 0x40000022).
    pub tsc_frequency: u64,
    /// The LAPIC timer input frequency in Hz (MSR 0x40000023).
    pub apic_frequency: u64,
    /// The instruction bytes the hypercall page executes to reach the VMM, between its ENDBR64
    /// and its RET; [`HvConfig::VMCALL`] for backends that report VMCALL as a hypercall.
    pub hypercall_trap: Vec<u8>,
    /// Advertise and implement the guest crash MSRs.
    pub crash_msrs: bool,
}

impl HvConfig {
    /// `vmcall` (Intel).
    pub const VMCALL: [u8; 3] = [0x0f, 0x01, 0xc1];

    /// A configuration with a VMCALL hypercall page and crash MSRs.
    pub fn new(vp_count: u32, tsc_frequency: u64, apic_frequency: u64) -> Self {
        Self {
            vp_count,
            tsc_frequency,
            apic_frequency,
            hypercall_trap: Self::VMCALL.to_vec(),
            crash_msrs: true,
        }
    }

    /// The CPUID options matching this configuration.
    pub fn cpuid_options(&self) -> cpuid::CpuidOptions {
        cpuid::CpuidOptions {
            vp_count: self.vp_count,
            crash_msrs: self.crash_msrs,
        }
    }
}

/// The contents of the hypercall page: ENDBR64 (Linux checks it when IBT is on), the trap,
/// RET, then INT3 to the end.
pub fn hypercall_page(trap: &[u8]) -> Vec<u8> {
    let mut page = vec![0xcc; spec::PAGE_SIZE as usize];
    let code: Vec<u8> = [0xf3, 0x0f, 0x1e, 0xfa]
        .iter()
        .chain(trap.iter().take(64))
        .chain(std::iter::once(&0xc3))
        .copied()
        .collect();
    page[..code.len()].copy_from_slice(&code);
    page
}

#[derive(Default)]
struct PartitionRegs {
    guest_os_id: u64,
    hypercall: u64,
    reference_tsc: u64,
    tsc_invariant_control: u64,
    crash: [u64; 5],
}

struct VpState {
    vp_assist: u64,
    synic: Synic,
}

/// Hyper-V enlightenment state of one partition. See the crate docs.
pub struct HvState {
    config: HvConfig,
    memory: GuestMemory,
    clock: VmClock,
    sink: Arc<dyn HvSink>,
    partition: Mutex<PartitionRegs>,
    vps: Vec<Mutex<VpState>>,
    message_ports: RwLock<HashMap<u32, Arc<dyn MessagePort>>>,
    event_ports: RwLock<HashMap<u32, Arc<dyn EventPort>>>,
}

impl std::fmt::Debug for HvState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HvState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A decoded hypercall control value (RCX).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HypercallControl {
    /// Call code.
    pub code: u16,
    /// Register-based input.
    pub fast: bool,
    /// Variable header size in qwords.
    pub variable_header: u16,
    /// Rep count.
    pub rep_count: u16,
    /// Rep start index.
    pub rep_start: u16,
}

impl HypercallControl {
    /// Decodes RCX; `None` when reserved bits are set.
    pub fn decode(control: u64) -> Option<Self> {
        if control & spec::control::RESERVED != 0 {
            return None;
        }
        Some(Self {
            code: control as u16,
            fast: control & spec::control::FAST != 0,
            variable_header: ((control >> spec::control::VARIABLE_HEADER_SHIFT) & 0x3ff) as u16,
            rep_count: ((control >> spec::control::REP_COUNT_SHIFT) & 0xfff) as u16,
            rep_start: ((control >> spec::control::REP_START_SHIFT) & 0xfff) as u16,
        })
    }
}

impl HvState {
    /// Enlightenment state for a partition with `memory`, reporting through `sink`.
    pub fn new(
        config: HvConfig,
        memory: GuestMemory,
        clock: VmClock,
        sink: Arc<dyn HvSink>,
    ) -> Self {
        let vps = (0..config.vp_count.max(1))
            .map(|_| {
                Mutex::new(VpState {
                    vp_assist: 0,
                    synic: Synic::new(),
                })
            })
            .collect();
        Self {
            config,
            memory,
            clock,
            sink,
            partition: Mutex::new(PartitionRegs::default()),
            vps,
            message_ports: RwLock::new(HashMap::new()),
            event_ports: RwLock::new(HashMap::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HvConfig {
        &self.config
    }

    /// The CPUID leaves 0x40000000..=0x4000000a for this configuration.
    pub fn cpuid_leaves(&self) -> Vec<virt::CpuidEntry> {
        cpuid::leaves(&self.config.cpuid_options())
    }

    /// Makes a machine CPUID table Hyper-V's (see [`cpuid::apply`]).
    pub fn apply_cpuid(&self, table: &mut virt::CpuidTable) {
        cpuid::apply(table, &self.config.cpuid_options());
    }

    /// Returns every register to its reset value and drops queued messages (VM reset). Ports
    /// stay registered; their owners reset themselves.
    pub fn reset(&self) {
        *self.partition.lock() = PartitionRegs::default();
        for vp in &self.vps {
            let mut vp = vp.lock();
            vp.vp_assist = 0;
            vp.synic = Synic::new();
        }
    }

    /// Registers the receiver of HvPostMessage on `connection_id`.
    pub fn connect_message_port(
        &self,
        connection_id: u32,
        port: Arc<dyn MessagePort>,
    ) -> Result<(), HvError> {
        let mut ports = self.message_ports.write();
        if ports.contains_key(&connection_id) {
            return Err(HvError::ConnectionInUse(connection_id));
        }
        ports.insert(connection_id, port);
        Ok(())
    }

    /// Unregisters a message port.
    pub fn disconnect_message_port(&self, connection_id: u32) {
        self.message_ports.write().remove(&connection_id);
    }

    /// Registers the receiver of HvSignalEvent on `connection_id`.
    pub fn connect_event_port(
        &self,
        connection_id: u32,
        port: Arc<dyn EventPort>,
    ) -> Result<(), HvError> {
        let mut ports = self.event_ports.write();
        if ports.contains_key(&connection_id) {
            return Err(HvError::ConnectionInUse(connection_id));
        }
        ports.insert(connection_id, port);
        Ok(())
    }

    /// Unregisters an event port.
    pub fn disconnect_event_port(&self, connection_id: u32) {
        self.event_ports.write().remove(&connection_id);
    }

    fn vp(&self, vp: u32) -> Result<&Mutex<VpState>, HvError> {
        self.vps.get(vp as usize).ok_or(HvError::InvalidVp(vp))
    }

    fn inject(&self, vp: u32, vectors: &[u8]) {
        for &vector in vectors {
            self.sink.request_interrupt(InterruptRequest {
                destination: vp,
                logical_destination: false,
                delivery_mode: DeliveryMode::Fixed,
                vector,
                level_triggered: false,
            });
        }
    }

    /// Queues a message for `vp`'s SINT `sint` and delivers it when the slot is free.
    pub fn post_message(
        &self,
        vp: u32,
        sint: u8,
        message_type: u32,
        payload: &[u8],
    ) -> Result<(), HvError> {
        if usize::from(sint) >= spec::SINT_COUNT {
            return Err(HvError::InvalidSint(sint));
        }
        if payload.len() > spec::MESSAGE_PAYLOAD_MAX {
            return Err(HvError::PayloadTooLarge(payload.len()));
        }
        if message_type == 0 {
            return Err(HvError::InvalidMessageType);
        }
        let mut message = QueuedMessage {
            message_type,
            len: payload.len() as u8,
            payload: [0; spec::MESSAGE_PAYLOAD_MAX],
        };
        message.payload[..payload.len()].copy_from_slice(payload);
        let vector = {
            let mut state = self.vp(vp)?.lock();
            state
                .synic
                .post(&self.memory, vp, usize::from(sint), message)
                .map_err(|_| HvError::QueueFull { vp, sint })?
        };
        if let Some(v) = vector {
            self.inject(vp, &[v]);
        }
        Ok(())
    }

    /// Sets event flag `flag` of `vp`'s SINT `sint`, interrupting if it was clear. Returns
    /// whether an interrupt was requested.
    pub fn signal_event(&self, vp: u32, sint: u8, flag: u32) -> Result<bool, HvError> {
        if usize::from(sint) >= spec::SINT_COUNT {
            return Err(HvError::InvalidSint(sint));
        }
        let vector =
            self.vp(vp)?
                .lock()
                .synic
                .signal_event(&self.memory, vp, usize::from(sint), flag);
        if let Some(v) = vector {
            self.inject(vp, &[v]);
        }
        Ok(vector.is_some())
    }

    /// RDMSR of a synthetic MSR. `None` means #GP (also for MSRs outside the synthetic range,
    /// so the machine can try other handlers).
    pub fn msr_read(&self, vp: u32, msr: u32) -> Option<u64> {
        if !msr::RANGE.contains(&msr) {
            return None;
        }
        let state = self.vp(vp).ok()?;
        let value = match msr {
            msr::GUEST_OS_ID => self.partition.lock().guest_os_id,
            msr::HYPERCALL => self.partition.lock().hypercall,
            msr::VP_INDEX => u64::from(vp),
            msr::TIME_REF_COUNT => self.clock.now_ns() / 100,
            msr::REFERENCE_TSC => self.partition.lock().reference_tsc,
            msr::TSC_FREQUENCY => self.config.tsc_frequency,
            msr::APIC_FREQUENCY => self.config.apic_frequency,
            msr::TSC_INVARIANT_CONTROL => self.partition.lock().tsc_invariant_control,
            msr::VP_ASSIST_PAGE => state.lock().vp_assist,
            msr::SCONTROL => state.lock().synic.scontrol,
            msr::SVERSION => 1,
            msr::SIEFP => state.lock().synic.siefp,
            msr::SIMP => state.lock().synic.simp,
            msr::EOM => 0,
            msr::SINT0..=msr::SINT15 => state.lock().synic.sint[(msr - msr::SINT0) as usize],
            msr::CRASH_P0..=msr::CRASH_P4 if self.config.crash_msrs => {
                self.partition.lock().crash[(msr - msr::CRASH_P0) as usize]
            }
            msr::CRASH_CTL if self.config.crash_msrs => {
                spec::CRASH_CTL_NOTIFY | spec::CRASH_CTL_NOTIFY_MSG
            }
            _ => {
                warn_ratelimited!(
                    vp,
                    msr = format_args!("{msr:#x}"),
                    "unimplemented synthetic MSR read, returning 0"
                );
                0
            }
        };
        Some(value)
    }

    /// WRMSR of a synthetic MSR. `false` means #GP.
    pub fn msr_write(&self, vp: u32, msr: u32, value: u64) -> bool {
        if !msr::RANGE.contains(&msr) {
            return false;
        }
        let Ok(state) = self.vp(vp) else {
            return false;
        };
        match msr {
            msr::GUEST_OS_ID => {
                let mut p = self.partition.lock();
                p.guest_os_id = value;
                tracing::debug!(
                    vp,
                    guest_os_id = format_args!("{value:#x}"),
                    "Hyper-V guest OS id"
                );
                if value == 0 {
                    p.hypercall &= !1;
                }
            }
            msr::HYPERCALL => return self.write_hypercall_msr(vp, value),
            msr::VP_INDEX
            | msr::TIME_REF_COUNT
            | msr::TSC_FREQUENCY
            | msr::APIC_FREQUENCY
            | msr::SVERSION => return false,
            msr::REFERENCE_TSC => self.partition.lock().reference_tsc = value,
            msr::TSC_INVARIANT_CONTROL => self.partition.lock().tsc_invariant_control = value,
            msr::VP_ASSIST_PAGE => state.lock().vp_assist = value,
            msr::SCONTROL => {
                let vectors = {
                    let mut s = state.lock();
                    s.synic.scontrol = value & 1;
                    s.synic.retry_all(&self.memory, vp)
                };
                self.inject(vp, &vectors);
            }
            msr::SIEFP => state.lock().synic.siefp = value,
            msr::SIMP => {
                let vectors = {
                    let mut s = state.lock();
                    s.synic.simp = value;
                    s.synic.retry_all(&self.memory, vp)
                };
                self.inject(vp, &vectors);
            }
            msr::EOM => {
                let vectors = state.lock().synic.retry_all(&self.memory, vp);
                self.inject(vp, &vectors);
            }
            msr::SINT0..=msr::SINT15 => {
                let masked = value & spec::SINT_MASKED != 0;
                if !masked && (value & spec::SINT_VECTOR_MASK) < 16 {
                    return false;
                }
                if value & spec::SINT_AUTO_EOI != 0 && !masked {
                    warn_ratelimited!(
                        vp,
                        "SINT auto-EOI requested but not supported; the guest must EOI"
                    );
                }
                let vectors = {
                    let mut s = state.lock();
                    s.synic.sint[(msr - msr::SINT0) as usize] = value;
                    s.synic.retry_all(&self.memory, vp)
                };
                self.inject(vp, &vectors);
            }
            msr::CRASH_P0..=msr::CRASH_P4 if self.config.crash_msrs => {
                self.partition.lock().crash[(msr - msr::CRASH_P0) as usize] = value;
            }
            msr::CRASH_CTL if self.config.crash_msrs => {
                if value & spec::CRASH_CTL_NOTIFY != 0 {
                    let report = self.crash_report(value);
                    tracing::error!(vp, "{report}");
                    self.sink.guest_crash(report);
                }
            }
            _ => {
                warn_ratelimited!(
                    vp,
                    msr = format_args!("{msr:#x}"),
                    value,
                    "unimplemented synthetic MSR write ignored"
                );
            }
        }
        true
    }

    fn write_hypercall_msr(&self, vp: u32, value: u64) -> bool {
        let mut p = self.partition.lock();
        if p.hypercall & 2 != 0 {
            // Locked: further writes are ignored.
            return true;
        }
        let enable = value & 1 != 0 && p.guest_os_id != 0;
        if enable {
            let gpa = value & !(spec::PAGE_SIZE - 1);
            let page = hypercall_page(&self.config.hypercall_trap);
            if let Err(e) = self.memory.write_at(gpa, &page) {
                warn_ratelimited!(vp, gpa, error = %e, "hypercall page is not guest RAM");
                return false;
            }
            tracing::debug!(vp, gpa = format_args!("{gpa:#x}"), "hypercall page enabled");
        }
        p.hypercall = if enable { value } else { value & !1 };
        true
    }

    fn crash_report(&self, ctl: u64) -> String {
        let crash = self.partition.lock().crash;
        let mut report = format!(
            "guest crash: P0={:#x} P1={:#x} P2={:#x} P3={:#x} P4={:#x}",
            crash[0], crash[1], crash[2], crash[3], crash[4]
        );
        if ctl & spec::CRASH_CTL_NOTIFY_MSG != 0 {
            // P3 = GPA of the message, P4 = its length (at most a page, as Linux sends).
            let len = crash[4].min(spec::PAGE_SIZE) as usize;
            let mut buf = vec![0u8; len];
            if self.memory.read_at(crash[3], &mut buf).is_ok() {
                report.push_str(": ");
                report.push_str(String::from_utf8_lossy(&buf).trim_end_matches('\0'));
            }
        }
        report
    }

    /// A hypercall from `vp` (RCX, RDX, R8). Returns the value for RAX: status in bits 15:0,
    /// reps completed (always 0: agar implements no rep calls) in bits 43:32.
    pub fn hypercall(&self, vp: u32, input: HypercallInput) -> u64 {
        let status = match HypercallControl::decode(input.control) {
            None => HvStatus::InvalidHypercallInput,
            Some(control) => self.dispatch(vp, control, input),
        };
        if status != HvStatus::Success {
            tracing::debug!(
                vp,
                control = format_args!("{:#x}", input.control),
                ?status,
                "hypercall failed"
            );
        }
        status as u64
    }

    fn dispatch(&self, vp: u32, control: HypercallControl, input: HypercallInput) -> HvStatus {
        match control.code {
            spec::call::POST_MESSAGE => {
                if control.fast || control.rep_count != 0 || control.variable_header != 0 {
                    return HvStatus::InvalidHypercallInput;
                }
                self.post_message_call(vp, input.input)
            }
            spec::call::SIGNAL_EVENT => {
                if control.rep_count != 0 || control.variable_header != 0 {
                    return HvStatus::InvalidHypercallInput;
                }
                let value = if control.fast {
                    input.input
                } else {
                    if !input.input.is_multiple_of(8) {
                        return HvStatus::InvalidAlignment;
                    }
                    match self.memory.read_plain::<u64>(input.input) {
                        Ok(v) => v,
                        Err(_) => return HvStatus::InvalidParameter,
                    }
                };
                self.signal_event_call(vp, value)
            }
            code => {
                warn_ratelimited!(
                    vp,
                    code = format_args!("{code:#x}"),
                    "unsupported hypercall"
                );
                HvStatus::InvalidHypercallCode
            }
        }
    }

    fn post_message_call(&self, vp: u32, gpa: u64) -> HvStatus {
        // 256 bytes, 8-byte aligned, within one page.
        if !gpa.is_multiple_of(8)
            || gpa % spec::PAGE_SIZE > spec::PAGE_SIZE - spec::POST_MESSAGE_INPUT_SIZE as u64
        {
            return HvStatus::InvalidAlignment;
        }
        let mut buf = [0u8; spec::POST_MESSAGE_INPUT_SIZE];
        if self.memory.read_at(gpa, &mut buf).is_err() {
            return HvStatus::InvalidParameter;
        }
        let word = |o: usize| u32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        let connection_id = word(0);
        let message_type = word(8);
        let size = word(12) as usize;
        if size > spec::MESSAGE_PAYLOAD_MAX || message_type == 0 || message_type & 0x8000_0000 != 0
        {
            return HvStatus::InvalidParameter;
        }
        let port = self.message_ports.read().get(&connection_id).cloned();
        let Some(port) = port else {
            return HvStatus::InvalidConnectionId;
        };
        let payload = &buf[16..16 + size];
        match port.post(vp, message_type, payload) {
            Ok(()) => HvStatus::Success,
            Err(status) => status,
        }
    }

    fn signal_event_call(&self, vp: u32, value: u64) -> HvStatus {
        let connection_id = value as u32;
        let flag = (value >> 32) as u16;
        if value >> 48 != 0 || u32::from(flag) >= spec::EVENT_FLAGS_PER_SINT {
            return HvStatus::InvalidParameter;
        }
        let port = self.event_ports.read().get(&connection_id).cloned();
        match port {
            Some(port) => {
                port.signal(vp, flag);
                HvStatus::Success
            }
            None => HvStatus::InvalidConnectionId,
        }
    }
}

#[cfg(test)]
mod tests;
