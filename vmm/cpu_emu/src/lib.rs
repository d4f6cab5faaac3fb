//! agar's own x86-64 CPU: the `emu` backend of the `virt` processor traits.
//!
//! On hosts without usable KVM, agar-vmm runs guests on this CPU with the same machine
//! (devices, firmware, interrupt routing) it uses with KVM. It is a plain state machine: no
//! threads inside, no KVM; each [`Vp`] runs on the thread that calls [`virt::Processor::run`].
//!
//! # Architecture
//! - **Decoding** ([`decode`]): iced-x86 decodes each instruction once into an [`op::Op`]: a
//!   handler specialized at compile time for its operand size and register/memory form, plus
//!   pre-resolved operands. Ops are grouped into blocks cached per guest-physical page and
//!   invalidated through `guest_mem`'s code-page generations ([`vp`]).
//! - **State** ([`cpu`]): registers, lazy arithmetic flags ([`flags`]), segment descriptor
//!   caches ([`seg`]), control registers and MSRs, the x87/SSE state ([`fpu`]).
//! - **Memory** ([`mmu`]): segmentation fast paths, a software TLB in front of the page walker
//!   (32-bit, PAE, 4-level paging with NX, WP, global pages, A/D bits), MMIO exits, the local
//!   APIC page.
//! - **Events** ([`interrupt`]): exceptions and interrupts in real, protected and long mode
//!   with #DF/triple-fault escalation, IRET, software interrupts; [`apic`]: the local APIC and
//!   its timer; [`partition`]: interrupt routing between processors, INIT/SIPI, halt and wake.
//! - **Instructions** ([`exec`], [`sse`], [`x87`]): the integer set, system instructions,
//!   SSE/SSE2 and the x87 subset glibc and busybox use. Anything else raises #UD in the guest
//!   and is counted and logged with its bytes.
//!
//! The CPU never panics on guest data: every guest-controlled access goes through the checked
//! guest-memory handle and bad accesses become guest-visible faults or MMIO exits.
//!
//! Specifications: Intel SDM volumes 2 (instructions) and 3 (system programming); the AMD APM
//! where Intel leaves behavior undefined and Linux relies on AMD's (BSF/BSR with a zero source).

pub(crate) mod apic;
pub(crate) mod cpu;
pub mod cpuid;
pub(crate) mod decode;
pub(crate) mod exec;
pub(crate) mod flags;
pub(crate) mod fpu;
pub(crate) mod interrupt;
pub(crate) mod mmu;
pub(crate) mod op;
pub(crate) mod partition;
pub(crate) mod seg;
pub(crate) mod size;
pub(crate) mod softfp;
pub(crate) mod sse;
pub(crate) mod vp;
pub(crate) mod x87;

#[cfg(test)]
mod tests;

pub use cpuid::supported_cpuid;
pub use cpuid::supported_cpuid_with_tsc;
pub use partition::EmuHypervisor;
pub use partition::EmuPartition;
pub use vp::RunOptions;
pub use vp::Stop;
pub use vp::Vp;
