//! agar-vmm: spawned with exactly `VmConfig::to_args()`.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::path::PathBuf;

use vm_config::VmConfig;

use super::Backend;
use super::Launch;
use super::last_line;
use super::qmp;
use crate::cell::BackendKind;
use crate::error::Error;
use crate::error::Result;
use crate::vm::HaltReason;

/// The agar-vmm backend.
pub struct AgarVmm;

impl Backend for AgarVmm {
    fn kind(&self) -> BackendKind {
        BackendKind::AgarVmm
    }

    fn program_name(&self) -> &'static str {
        "agar-vmm"
    }

    fn program(&self) -> Result<PathBuf> {
        if let Some(p) = std::env::var_os("AGAR_VMM").filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(Error::Other(format!(
                    "AGAR_VMM={} does not exist; build it: cargo build --release -p agar_vmm",
                    p.display()
                )))
            };
        }
        let target = crate::output::target_dir()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        for profile in ["release", "debug"] {
            let p = target.join(profile).join("agar-vmm");
            if p.is_file() {
                return Ok(p);
            }
        }
        Err(Error::Other(format!(
            "agar-vmm not found ($AGAR_VMM unset, nothing in {}/{{release,debug}}/agar-vmm); \
             build it: cargo build --release -p agar_vmm",
            target.display()
        )))
    }

    fn launch(&self, program: &Path, config: &VmConfig, _run_dir: &Path) -> Result<Launch> {
        let mut argv = vec![program.display().to_string()];
        argv.extend(config.to_args());
        Ok(Launch {
            repro: argv.clone(),
            argv,
            qmp: None,
            scratch: Vec::new(),
        })
    }

    fn halt_reason(
        &self,
        status: std::process::ExitStatus,
        stderr: &str,
        _qmp: &[qmp::Event],
    ) -> HaltReason {
        // docs/src/machine.md: exit codes and the last log line.
        let halt_line = stderr
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("agar-vmm: halt: "))
            .map(str::to_string);
        let message = halt_line.unwrap_or_else(|| last_line(stderr));
        match (status.code(), status.signal()) {
            (Some(0), _) => HaltReason::PowerOff,
            (Some(3), _) => HaltReason::Reset,
            (Some(4), _) => HaltReason::TripleFault(message),
            (Some(5), _) => HaltReason::GuestCrash(message),
            (Some(6), _) => HaltReason::BackendError(message),
            (Some(2), _) => HaltReason::BadConfig(message),
            (Some(code), _) => HaltReason::VmmError { code, message },
            (None, Some(signal)) => HaltReason::Killed { signal },
            (None, None) => HaltReason::VmmError { code: -1, message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exit status and last words of a real process that behaves like agar-vmm.
    fn halt(script: &str) -> HaltReason {
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .output()
            .unwrap();
        AgarVmm.halt_reason(out.status, &String::from_utf8_lossy(&out.stderr), &[])
    }

    #[test]
    fn exit_codes_map_to_the_documented_halt_reasons() {
        assert_eq!(
            halt("echo 'agar-vmm: halt: power off' >&2; exit 0"),
            HaltReason::PowerOff
        );
        assert_eq!(halt("exit 3"), HaltReason::Reset);
        assert_eq!(
            halt("echo 'agar-vmm: halt: triple fault at rip=0xfff0' >&2; echo 'bye' >&2; exit 4"),
            HaltReason::TripleFault("triple fault at rip=0xfff0".into())
        );
        assert_eq!(
            halt("echo 'agar-vmm: halt: guest crash (pvpanic)' >&2; exit 5"),
            HaltReason::GuestCrash("guest crash (pvpanic)".into())
        );
        assert_eq!(
            halt("echo 'agar-vmm: halt: backend error: KVM internal error' >&2; exit 6"),
            HaltReason::BackendError("backend error: KVM internal error".into())
        );
        assert_eq!(
            halt("echo 'agar-vmm: --ide requires --pcat' >&2; exit 2"),
            HaltReason::BadConfig("agar-vmm: --ide requires --pcat".into())
        );
        assert_eq!(
            halt("echo 'agar-vmm: cannot read kernel' >&2; exit 1"),
            HaltReason::VmmError {
                code: 1,
                message: "agar-vmm: cannot read kernel".into()
            }
        );
        assert_eq!(halt("kill -KILL $$"), HaltReason::Killed { signal: 9 });
    }

    #[test]
    fn renders_exactly_the_config_arguments() {
        let mut c = VmConfig::linux_direct("/k", Some("/i".into()), "console=ttyS0");
        c.serial[1] = vm_config::SerialConfig::Listen("/run/a.sock".into());
        let l = AgarVmm
            .launch(Path::new("/bin/agar-vmm"), &c, Path::new("/run"))
            .unwrap();
        assert_eq!(l.argv[0], "/bin/agar-vmm");
        assert_eq!(l.argv[1..], c.to_args()[..]);
        assert_eq!(l.repro, l.argv);
        assert!(l.qmp.is_none());
    }
}
