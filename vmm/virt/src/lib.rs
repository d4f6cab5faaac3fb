//! The processor abstraction: one machine, two CPU backends.
//!
//! # Architecture
//! The machine (`vmm_core`) builds guest memory, devices and firmware once, then asks a
//! [`Hypervisor`] for a [`Partition`] and one [`Processor`] per vCPU, and runs each processor on
//! its own thread. Backends:
//! - `kvm` (`virt_kvm`): hardware virtualization, LAPIC in the kernel, everything else here;
//! - `emu` (`cpu_emu`): agar's own x86-64 CPU, LAPIC included.
//!
//! While a processor runs, it reports what the machine must handle through the
//! [`ExitHandler`] it was given: port I/O, MMIO, MSRs the backend does not own, hypercalls, PIC
//! acknowledge, EOI broadcast. [`Processor::run`] returns only for the reasons in [`VpExit`].
//! Interrupts flow the other way through [`Partition::request_interrupt`] (IOAPIC/MSI messages
//! to local APICs) and [`Partition::set_extint`] (the PIC's INTR output, ExtINT).
//!
//! # Conventions
//! - VP 0 is the bootstrap processor and starts runnable with the registers the loader sets;
//!   the others start in wait-for-SIPI, as on real hardware.
//! - CPUID is a table fixed before the processor first runs (KVM cannot change it later); the
//!   backend patches per-VP fields (initial APIC ID in leaf 1 EBX[31:24], leaves 0xB/0x1F EDX).
//! - MSRs: each backend implements the architectural MSRs it needs to run a guest (EFER,
//!   SYSCALL/SYSENTER, FS/GS bases, TSC, APIC base, PAT, ...); every other MSR goes to
//!   [`ExitHandler::msr_read`]/[`ExitHandler::msr_write`], whose answer is final (`None`/`false`
//!   means the guest gets #GP).

use std::sync::Arc;

pub use device_api::VmClock;
pub use guest_mem::GuestMemory;

/// A backend failed (not a guest failure).
#[derive(Debug, thiserror::Error)]
pub enum VirtError {
    /// The hypervisor is not usable on this host.
    #[error("{backend} is unavailable: {reason}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// Why.
        reason: String,
    },
    /// A host call failed.
    #[error("{operation} failed")]
    Host {
        /// What was attempted.
        operation: &'static str,
        /// The host error.
        #[source]
        source: std::io::Error,
    },
    /// The backend cannot do what was asked.
    #[error("{0}")]
    Unsupported(String),
    /// The backend hit a state it cannot continue from (e.g. KVM internal error); the string
    /// carries the details (exit reason, instruction bytes).
    #[error("backend error: {0}")]
    Internal(String),
}

/// A segment register with its hidden descriptor cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentRegister {
    /// Base address.
    pub base: u64,
    /// Limit in bytes (already scaled by granularity).
    pub limit: u32,
    /// Visible selector.
    pub selector: u16,
    /// Attributes in the VMX "access rights" layout: type[3:0], S[4], DPL[6:5], P[7], AVL[12],
    /// L[13], D/B[14], G[15].
    pub attributes: u16,
}

impl SegmentRegister {
    /// A segment with base 0 and a 4 GiB limit (flat protected or long mode).
    pub fn flat(selector: u16, attributes: u16) -> Self {
        Self {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            attributes,
        }
    }

    /// Present bit.
    pub fn present(&self) -> bool {
        self.attributes & 0x80 != 0
    }
    /// Long-mode (L) bit.
    pub fn long(&self) -> bool {
        self.attributes & 0x2000 != 0
    }
    /// Default size (D/B) bit.
    pub fn default_big(&self) -> bool {
        self.attributes & 0x4000 != 0
    }
    /// Descriptor privilege level.
    pub fn dpl(&self) -> u8 {
        ((self.attributes >> 5) & 3) as u8
    }
}

/// GDTR/IDTR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableRegister {
    /// Linear base address.
    pub base: u64,
    /// Limit in bytes.
    pub limit: u16,
}

/// General-purpose registers, RIP and RFLAGS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registers {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15 in encoding order.
    pub gpr: [u64; 16],
    /// Instruction pointer.
    pub rip: u64,
    /// Flags (bit 1 always set).
    pub rflags: u64,
}

impl Default for Registers {
    fn default() -> Self {
        Self {
            gpr: [0; 16],
            rip: 0xfff0,
            rflags: 2,
        }
    }
}

/// Index of a general-purpose register in [`Registers::gpr`].
#[allow(missing_docs)]
pub mod gpr {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
}

/// Segment, table and control registers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecialRegisters {
    /// Segment registers.
    pub cs: SegmentRegister,
    #[allow(missing_docs)]
    pub ds: SegmentRegister,
    #[allow(missing_docs)]
    pub es: SegmentRegister,
    #[allow(missing_docs)]
    pub fs: SegmentRegister,
    #[allow(missing_docs)]
    pub gs: SegmentRegister,
    #[allow(missing_docs)]
    pub ss: SegmentRegister,
    /// Task register.
    pub tr: SegmentRegister,
    /// LDT register.
    pub ldtr: SegmentRegister,
    /// GDTR.
    pub gdtr: TableRegister,
    /// IDTR.
    pub idtr: TableRegister,
    #[allow(missing_docs)]
    pub cr0: u64,
    #[allow(missing_docs)]
    pub cr2: u64,
    #[allow(missing_docs)]
    pub cr3: u64,
    #[allow(missing_docs)]
    pub cr4: u64,
    #[allow(missing_docs)]
    pub cr8: u64,
    #[allow(missing_docs)]
    pub efer: u64,
    /// IA32_APIC_BASE.
    pub apic_base: u64,
}

impl SpecialRegisters {
    /// The architectural state after RESET/INIT: real mode, CS base 0xffff0000 (so with
    /// RIP = 0xfff0 the first fetch is at 0xfffffff0).
    pub fn reset() -> Self {
        let data = SegmentRegister {
            base: 0,
            limit: 0xffff,
            selector: 0,
            attributes: 0x93,
        };
        Self {
            cs: SegmentRegister {
                base: 0xffff_0000,
                limit: 0xffff,
                selector: 0xf000,
                attributes: 0x9b,
            },
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: data,
            tr: SegmentRegister {
                base: 0,
                limit: 0xffff,
                selector: 0,
                attributes: 0x8b,
            },
            ldtr: SegmentRegister {
                base: 0,
                limit: 0xffff,
                selector: 0,
                attributes: 0x82,
            },
            gdtr: TableRegister {
                base: 0,
                limit: 0xffff,
            },
            idtr: TableRegister {
                base: 0,
                limit: 0xffff,
            },
            cr0: 0x6000_0010,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            cr8: 0,
            efer: 0,
            apic_base: 0xfee0_0000 | 0x800,
        }
    }
}

/// One CPUID result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuidEntry {
    /// Leaf (EAX input).
    pub function: u32,
    /// Subleaf (ECX input); ignored unless `index_significant`.
    pub index: u32,
    /// Whether ECX selects a subleaf.
    pub index_significant: bool,
    /// Output registers.
    pub eax: u32,
    #[allow(missing_docs)]
    pub ebx: u32,
    #[allow(missing_docs)]
    pub ecx: u32,
    #[allow(missing_docs)]
    pub edx: u32,
}

/// The CPUID a guest sees, built by the machine's CPUID policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuidTable {
    /// Entries; lookups take the first match.
    pub entries: Vec<CpuidEntry>,
}

impl CpuidTable {
    /// CPUID(function, index). Leaves outside the table follow Intel's rule: a basic leaf above
    /// the maximum returns the highest basic leaf; anything else returns zeros.
    pub fn lookup(&self, function: u32, index: u32) -> [u32; 4] {
        let find = |f: u32, i: u32| {
            self.entries
                .iter()
                .find(|e| e.function == f && (!e.index_significant || e.index == i))
                .map(|e| [e.eax, e.ebx, e.ecx, e.edx])
        };
        if let Some(r) = find(function, index) {
            return r;
        }
        let max_basic = find(0, 0).map_or(0, |r| r[0]);
        if function < 0x4000_0000 && function > max_basic {
            return find(max_basic, index).unwrap_or_default();
        }
        [0; 4]
    }
}

/// Delivery mode of an interrupt message (IOAPIC redirection entry / MSI data / ICR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Deliver `vector` to the destination.
    Fixed,
    /// Deliver `vector` to the lowest-priority processor of the destination set.
    LowestPriority,
    /// System management interrupt.
    Smi,
    /// Non-maskable interrupt.
    Nmi,
    /// INIT.
    Init,
    /// Start-up IPI with `vector` as the page number.
    Startup,
    /// External interrupt: the vector comes from the PIC.
    ExtInt,
}

/// An interrupt message to local APICs (from the IOAPIC or an MSI-capable device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterruptRequest {
    /// Destination APIC ID (physical) or logical destination.
    pub destination: u32,
    /// Logical destination mode.
    pub logical_destination: bool,
    /// How to deliver.
    pub delivery_mode: DeliveryMode,
    /// Vector.
    pub vector: u8,
    /// Level-triggered (the LAPIC then broadcasts EOI through [`ExitHandler::eoi`]).
    pub level_triggered: bool,
}

/// Registers a Hyper-V style hypercall passes (x64 calling convention of the TLFS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HypercallInput {
    /// RCX: hypercall control value.
    pub control: u64,
    /// RDX: input GPA or first fast-call input.
    pub input: u64,
    /// R8: output GPA or second fast-call input.
    pub output: u64,
}

/// What the machine handles for a running processor. Called on the processor's thread, from
/// several processors at once.
pub trait ExitHandler: Sync {
    /// Guest `IN` from `port`; fill `data` (1, 2 or 4 bytes).
    fn pio_read(&self, vp: u32, port: u16, data: &mut [u8]);
    /// Guest `OUT` to `port`.
    fn pio_write(&self, vp: u32, port: u16, data: &[u8]);
    /// Guest load from an address not backed by RAM/ROM.
    fn mmio_read(&self, vp: u32, gpa: u64, data: &mut [u8]);
    /// Guest store to an address not backed by RAM (or to ROM).
    fn mmio_write(&self, vp: u32, gpa: u64, data: &[u8]);
    /// RDMSR of an MSR the backend does not own. `None`: the guest gets #GP.
    fn msr_read(&self, vp: u32, msr: u32) -> Option<u64>;
    /// WRMSR of an MSR the backend does not own. `false`: the guest gets #GP.
    fn msr_write(&self, vp: u32, msr: u32, value: u64) -> bool;
    /// A hypercall (Hyper-V ABI). Returns the value for RAX.
    fn hypercall(&self, vp: u32, input: HypercallInput) -> u64;
    /// The processor accepts an ExtINT: acknowledge the PIC and return its vector, or `None`
    /// if the request went away (spurious).
    fn pic_acknowledge(&self) -> Option<u8>;
    /// A local APIC signalled EOI for a level-triggered `vector` (IOAPIC remote-IRR clear).
    fn eoi(&self, vector: u8);
}

/// An [`ExitHandler`] with no devices behind it, for processors run on their own (benchmarks,
/// differential tests): reads of ports and MMIO return all ones, writes are dropped, every
/// MSR the backend does not own is #GP, hypercalls return 0, no ExtINT is pending.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDevices;

impl ExitHandler for NoDevices {
    fn pio_read(&self, _: u32, _: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn pio_write(&self, _: u32, _: u16, _: &[u8]) {}
    fn mmio_read(&self, _: u32, _: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&self, _: u32, _: u64, _: &[u8]) {}
    fn msr_read(&self, _: u32, _: u32) -> Option<u64> {
        None
    }
    fn msr_write(&self, _: u32, _: u32, _: u64) -> bool {
        false
    }
    fn hypercall(&self, _: u32, _: HypercallInput) -> u64 {
        0
    }
    fn pic_acknowledge(&self) -> Option<u8> {
        None
    }
    fn eoi(&self, _: u8) {}
}

/// Why [`Processor::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VpExit {
    /// [`Partition::stop`] was called.
    Stopped,
    /// The processor shut down (triple fault).
    TripleFault,
}

/// Configuration of a partition.
#[derive(Debug, Clone)]
pub struct PartitionConfig {
    /// Number of virtual processors.
    pub processor_count: u32,
    /// Guest memory (all RAM and ROM regions).
    pub memory: GuestMemory,
    /// The machine's clock; the backend derives the TSC and LAPIC timer from it.
    pub clock: VmClock,
    /// TSC frequency the guest should see, in Hz. Backends that cannot choose report what they
    /// use through [`Partition::tsc_frequency`].
    pub tsc_frequency: u64,
    /// MSR ranges the machine wants to see even if the backend knows them (e.g. the Hyper-V
    /// synthetic MSRs); for KVM this becomes the MSR filter.
    pub user_msrs: Vec<std::ops::RangeInclusive<u32>>,
}

/// A hypervisor backend.
pub trait Hypervisor: Send + Sync {
    /// Short name (`kvm`, `emu`).
    fn name(&self) -> &'static str;
    /// Whether the backend can run guests here (a quick, generic self-check).
    fn check(&self) -> Result<(), VirtError>;
    /// Creates a partition.
    fn new_partition(&self, config: PartitionConfig) -> Result<Arc<dyn Partition>, VirtError>;
    /// The CPUID leaves and bits this backend can implement for a guest. The machine's CPUID
    /// policy intersects its own table with this one, so a guest never sees a feature the
    /// backend lacks. Backends that do not report (the default) get the machine's baseline.
    fn supported_cpuid(&self) -> Result<CpuidTable, VirtError> {
        Err(VirtError::Unsupported(format!(
            "{} does not report its supported CPUID",
            self.name()
        )))
    }
}

/// A VM's processors and interrupt fabric.
pub trait Partition: Send + Sync {
    /// Creates processor `index` with its CPUID table. Call once per index, before running.
    fn create_processor(
        &self,
        index: u32,
        cpuid: &CpuidTable,
    ) -> Result<Box<dyn Processor>, VirtError>;
    /// Delivers an interrupt message to the local APIC(s) it addresses.
    fn request_interrupt(&self, request: InterruptRequest);
    /// Sets the PIC's INTR output as seen by the bootstrap processor's LINT0.
    fn set_extint(&self, asserted: bool);
    /// Makes every processor return [`VpExit::Stopped`] soon, including those halted.
    fn stop(&self);
    /// TSC frequency in Hz the guest actually sees.
    fn tsc_frequency(&self) -> u64;
    /// LAPIC timer input frequency in Hz (bus clock).
    fn apic_timer_frequency(&self) -> u64;
}

/// One virtual processor, owned by its thread.
pub trait Processor: Send {
    /// Processor index (also its initial APIC ID).
    fn index(&self) -> u32;
    /// General-purpose registers.
    fn registers(&mut self) -> Result<Registers, VirtError>;
    /// Sets general-purpose registers.
    fn set_registers(&mut self, regs: &Registers) -> Result<(), VirtError>;
    /// Segment and control registers.
    fn special_registers(&mut self) -> Result<SpecialRegisters, VirtError>;
    /// Sets segment and control registers.
    fn set_special_registers(&mut self, sregs: &SpecialRegisters) -> Result<(), VirtError>;
    /// Runs until a [`VpExit`]; device accesses are handled through `exits` meanwhile.
    fn run(&mut self, exits: &dyn ExitHandler) -> Result<VpExit, VirtError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_lookup_rules() {
        let t = CpuidTable {
            entries: vec![
                CpuidEntry {
                    function: 0,
                    eax: 7,
                    ..Default::default()
                },
                CpuidEntry {
                    function: 7,
                    index: 0,
                    index_significant: true,
                    ebx: 1,
                    ..Default::default()
                },
                CpuidEntry {
                    function: 7,
                    index: 1,
                    index_significant: true,
                    ebx: 2,
                    ..Default::default()
                },
            ],
        };
        assert_eq!(t.lookup(7, 1)[1], 2);
        assert_eq!(t.lookup(7, 0)[1], 1);
        assert_eq!(t.lookup(9, 0)[1], 1, "above max basic: highest basic leaf");
        assert_eq!(t.lookup(0x8000_0000, 0), [0; 4]);
    }
}
