//! VMM backends: one trait, one typed [`VmConfig`], two renderings.
//!
//! A backend turns the cell's `VmConfig` into a command line (agar-vmm: exactly
//! [`VmConfig::to_args`]; QEMU: its own flags for the same machine), says which program
//! runs it, and explains how the process ended ([`HaltReason`]). Everything else (spawning,
//! serial capture, the agent, the watchdog) is shared in [`crate::vm`].

mod agar_vmm;
mod qemu;
pub mod qmp;

use std::path::Path;
use std::path::PathBuf;

pub use agar_vmm::AgarVmm;
pub use qemu::Qemu;
use vm_config::VmConfig;

use crate::cell::BackendKind;
use crate::error::Result;
use crate::vm::HaltReason;

/// What a backend needs to start a VM.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The command line a person runs to reproduce the VM (program first).
    pub repro: Vec<String>,
    /// The command line the framework runs: `repro` plus control flags.
    pub argv: Vec<String>,
    /// A QMP socket to connect to and resume the (paused) VM through, if any.
    pub qmp: Option<PathBuf>,
    /// Scratch files to create before the launch (path, size in bytes).
    pub scratch: Vec<(PathBuf, u64)>,
}

/// A VMM the framework can drive.
pub trait Backend: Send + Sync {
    /// Which one.
    fn kind(&self) -> BackendKind;

    /// The program's display name (`agar-vmm`, `qemu-system-x86_64`).
    fn program_name(&self) -> &'static str;

    /// Finds the program, or explains how to get it.
    fn program(&self) -> Result<PathBuf>;

    /// Renders `config` into a launch plan. `run_dir` is a short private directory for
    /// sockets and scratch disks.
    fn launch(&self, program: &Path, config: &VmConfig, run_dir: &Path) -> Result<Launch>;

    /// Explains how the process ended. `stderr` is the VMM's standard error; `qmp` holds the
    /// halt events the QMP monitor reported, if the backend has one.
    fn halt_reason(
        &self,
        status: std::process::ExitStatus,
        stderr: &str,
        qmp: &[qmp::Event],
    ) -> HaltReason;
}

/// The backend for `kind`.
pub fn backend(kind: BackendKind) -> Box<dyn Backend> {
    match kind {
        BackendKind::AgarVmm => Box::new(AgarVmm),
        BackendKind::Qemu => Box::new(Qemu),
    }
}

/// The last non-empty line of `text`.
pub(crate) fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}
