//! agar: the VM test framework.
//!
//! One attribute declares a test over a matrix of firmware x storage x guest OS x backend;
//! each cell becomes a test that `cargo nextest run` lists, filters, runs in parallel and
//! reports.
//!
//! ```ignore
//! #[agar::vm_test(linux_direct(debian12_k61), linux_direct(debian12_k612))]
//! async fn boots(vm: agar::VmBuilder) -> anyhow::Result<()> {
//!     let release = vm.kernel_release()?;
//!     let mut vm = vm.run().await?;
//!     assert_eq!(vm.agent().await?.run("uname -r").await?, release);
//!     assert_eq!(vm.power_off().await?, agar::HaltReason::PowerOff);
//!     Ok(())
//! }
//! ```
//!
//! # Architecture
//!
//! - [`cell`]: the matrix vocabulary and test names; [`capability`]: what each backend
//!   can run (cells it cannot are listed as ignored, with the reason).
//! - [`registry`]: the `linkme` slice `#[vm_test]` registers into; [`harness`]: the
//!   libtest-mimic main (`--list`, filters, `--list-required-artifacts`).
//! - [`vm`]: [`VmBuilder`] (the cell's typed `VmConfig`) and [`Vm`] (a running VM: serial
//!   waits, halt, kill, the agent); [`backend`]: agar-vmm and QEMU behind one trait;
//!   [`process`]: spawning VMMs that cannot outlive the test; [`serial`]: capture.
//! - [`agent_client`]: the host side of `agent_protocol`; [`linux`]: initrd and bzImage
//!   helpers; [`artifacts`]: artifact resolution and the agent binary.
//! - [`output`]: the per-test folder and result records; [`report`]: the HTML matrix.
//!
//! The user guide is `docs/src/writing-tests.md`.

pub mod agent_client;
pub mod artifacts;
pub mod backend;
pub mod capability;
pub mod cell;
pub mod context;
pub mod error;
pub mod harness;
pub mod linux;
pub mod output;
pub mod process;
pub mod registry;
pub mod report;
pub mod serial;
pub mod vm;

pub use agar_macros::vm_test;
pub use agent_client::Agent;
pub use agent_client::ExecResult;
pub use agent_protocol::message::ExitStatus;
pub use cell::BackendKind;
pub use cell::Cell;
pub use error::Error;
pub use harness::test_main;
pub use vm::HaltReason;
pub use vm::Vm;
pub use vm::VmBuilder;
pub use vm_config;

/// Items the `#[vm_test]` expansion refers to. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use artifacts;
    pub use linkme;

    pub use crate::capability::Capability;
    pub use crate::cell::BackendKind;
    pub use crate::cell::Cell;
    pub use crate::cell::Firmware;
    pub use crate::cell::GuestOs;
    pub use crate::cell::Paravisor;
    pub use crate::cell::Storage;
    pub use crate::registry::CellDef;
    pub use crate::registry::TESTS;
    pub use crate::registry::TestDef;
    pub use crate::registry::TestFuture;
}
