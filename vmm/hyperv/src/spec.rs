//! Hyper-V interface constants (TLFS: "Feature Discovery", "Hypercall Interface",
//! "Inter-Partition Communication", and the synthetic MSR list), limited to what agar uses.

/// First CPUID leaf of the hypervisor range.
pub const CPUID_VENDOR: u32 = 0x4000_0000;
/// "Hv#1" interface signature.
pub const CPUID_INTERFACE: u32 = 0x4000_0001;
/// Hypervisor version.
pub const CPUID_VERSION: u32 = 0x4000_0002;
/// Partition privileges and features.
pub const CPUID_FEATURES: u32 = 0x4000_0003;
/// Enlightenment recommendations.
pub const CPUID_HINTS: u32 = 0x4000_0004;
/// Implementation limits.
pub const CPUID_LIMITS: u32 = 0x4000_0005;
/// Highest leaf agar reports (0x40000006..=0x4000000A are all zero).
pub const CPUID_MAX_LEAF: u32 = 0x4000_000a;

/// "Micr" "osof" "t Hv".
pub const VENDOR_EBX: u32 = 0x7263_694d;
/// See [`VENDOR_EBX`].
pub const VENDOR_ECX: u32 = 0x666f_736f;
/// See [`VENDOR_EBX`].
pub const VENDOR_EDX: u32 = 0x7648_2074;
/// "Hv#1".
pub const INTERFACE_HV1: u32 = 0x3123_7648;

/// 0x40000003 EAX: partition privileges (low half).
pub mod privilege {
    /// SynIC MSRs.
    pub const SYNIC: u32 = 1 << 2;
    /// GUEST_OS_ID and HYPERCALL MSRs.
    pub const HYPERCALL_MSRS: u32 = 1 << 5;
    /// VP_INDEX MSR.
    pub const VP_INDEX: u32 = 1 << 6;
    /// TSC and APIC frequency MSRs.
    pub const FREQUENCY_MSRS: u32 = 1 << 11;
    /// TSC_INVARIANT_CONTROL MSR (the TSC is invariant).
    pub const TSC_INVARIANT: u32 = 1 << 15;
    /// 0x40000003 EBX: HvPostMessage allowed.
    pub const POST_MESSAGES: u32 = 1 << 4;
    /// 0x40000003 EBX: HvSignalEvent allowed.
    pub const SIGNAL_EVENTS: u32 = 1 << 5;
    /// 0x40000003 EDX: the frequency MSRs are available.
    pub const MISC_FREQUENCY_MSRS: u32 = 1 << 8;
    /// 0x40000003 EDX: guest crash MSRs.
    pub const MISC_CRASH_MSRS: u32 = 1 << 10;
    /// 0x40000004 EAX: do not use AutoEOI (Linux then EOIs the LAPIC itself).
    pub const HINT_DEPRECATE_AUTO_EOI: u32 = 1 << 9;
}

/// Synthetic MSR numbers.
pub mod msr {
    /// Guest OS identity; writing 0 disables the hypercall page.
    pub const GUEST_OS_ID: u32 = 0x4000_0000;
    /// Hypercall page: bit 0 enable, bit 1 locked, bits 63:12 GPA page number.
    pub const HYPERCALL: u32 = 0x4000_0001;
    /// Index of the reading VP.
    pub const VP_INDEX: u32 = 0x4000_0002;
    /// Partition reset (not advertised).
    pub const RESET: u32 = 0x4000_0003;
    /// VP runtime in 100 ns (not advertised).
    pub const VP_RUNTIME: u32 = 0x4000_0010;
    /// Partition reference time in 100 ns.
    pub const TIME_REF_COUNT: u32 = 0x4000_0020;
    /// Reference TSC page (kept as a plain register).
    pub const REFERENCE_TSC: u32 = 0x4000_0021;
    /// TSC frequency in Hz.
    pub const TSC_FREQUENCY: u32 = 0x4000_0022;
    /// LAPIC timer input frequency in Hz.
    pub const APIC_FREQUENCY: u32 = 0x4000_0023;
    /// VP assist page (stored, not used).
    pub const VP_ASSIST_PAGE: u32 = 0x4000_0073;
    /// SynIC control: bit 0 enable.
    pub const SCONTROL: u32 = 0x4000_0080;
    /// SynIC version (read-only, 1).
    pub const SVERSION: u32 = 0x4000_0081;
    /// Event flags page: bit 0 enable, bits 63:12 GPA page number.
    pub const SIEFP: u32 = 0x4000_0082;
    /// Message page: bit 0 enable, bits 63:12 GPA page number.
    pub const SIMP: u32 = 0x4000_0083;
    /// End of message (write-only trigger).
    pub const EOM: u32 = 0x4000_0084;
    /// SINT0; SINTn is `SINT0 + n`.
    pub const SINT0: u32 = 0x4000_0090;
    /// SINT15.
    pub const SINT15: u32 = 0x4000_009f;
    /// Crash parameter P0; P1..P4 follow.
    pub const CRASH_P0: u32 = 0x4000_0100;
    /// Crash parameter P4.
    pub const CRASH_P4: u32 = 0x4000_0104;
    /// Crash control.
    pub const CRASH_CTL: u32 = 0x4000_0105;
    /// TSC invariant control (Linux writes 1).
    pub const TSC_INVARIANT_CONTROL: u32 = 0x4000_0118;
    /// The whole synthetic range agar claims.
    pub const RANGE: std::ops::RangeInclusive<u32> = 0x4000_0000..=0x4000_01ff;
}

/// CRASH_CTL: the guest crashed (P0..P4 hold the report).
pub const CRASH_CTL_NOTIFY: u64 = 1 << 63;
/// CRASH_CTL: P3 holds the GPA and P4 the length of a kernel message buffer.
pub const CRASH_CTL_NOTIFY_MSG: u64 = 1 << 62;

/// Hypercall call codes.
pub mod call {
    /// HvPostMessage (memory-based input).
    pub const POST_MESSAGE: u16 = 0x005c;
    /// HvSignalEvent (usually fast).
    pub const SIGNAL_EVENT: u16 = 0x005d;
}

/// Hypercall control value (RCX) fields.
pub mod control {
    /// Fast (register-based) input.
    pub const FAST: u64 = 1 << 16;
    /// Bits that must be zero: 31:27, 47:44, 63:60.
    pub const RESERVED: u64 = (0x1f << 27) | (0xf << 44) | (0xf << 60);
    /// Variable header size (qwords), bits 26:17.
    pub const VARIABLE_HEADER_SHIFT: u32 = 17;
    /// Rep count, bits 43:32.
    pub const REP_COUNT_SHIFT: u32 = 32;
    /// Rep start index, bits 59:48.
    pub const REP_START_SHIFT: u32 = 48;
}

/// Hypercall status codes (RAX bits 15:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum HvStatus {
    /// The call succeeded.
    Success = 0,
    /// Unknown call code.
    InvalidHypercallCode = 2,
    /// Reserved control bits set, or a rep count where none is allowed.
    InvalidHypercallInput = 3,
    /// Misaligned or page-crossing input/output.
    InvalidAlignment = 4,
    /// A parameter is invalid.
    InvalidParameter = 5,
    /// The caller may not do this.
    AccessDenied = 6,
    /// Unknown connection ID.
    InvalidConnectionId = 0x12,
    /// The receiver's queue is full; the guest retries.
    InsufficientBuffers = 0x13,
}

/// Message page slot size; SINT n uses slot n.
pub const MESSAGE_SIZE: u64 = 256;
/// Largest message payload.
pub const MESSAGE_PAYLOAD_MAX: usize = 240;
/// Offset of the payload within a message slot.
pub const MESSAGE_PAYLOAD_OFFSET: u64 = 16;
/// Message header flags: another message is queued behind this one.
pub const MESSAGE_FLAG_PENDING: u8 = 1;
/// Number of SINTs per VP.
pub const SINT_COUNT: usize = 16;
/// Event flags per SINT (256 bytes of bits).
pub const EVENT_FLAGS_PER_SINT: u32 = 2048;
/// SINT register: vector bits 7:0.
pub const SINT_VECTOR_MASK: u64 = 0xff;
/// SINT register: masked.
pub const SINT_MASKED: u64 = 1 << 16;
/// SINT register: auto-EOI.
pub const SINT_AUTO_EOI: u64 = 1 << 17;
/// SINT register: polling (no interrupt).
pub const SINT_POLLING: u64 = 1 << 18;
/// Size of HvPostMessage input.
pub const POST_MESSAGE_INPUT_SIZE: usize = 256;
/// Guest page size for the synthetic page MSRs.
pub const PAGE_SIZE: u64 = 4096;
