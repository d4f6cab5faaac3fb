//! `agar run`: restore the default guest if needed and boot it with agar-vmm.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::ExitCode;

use anyhow::Context;
use anyhow::bail;
use artifacts::Resolver;
use artifacts::ids;
use artifacts::progress::Progress;
use artifacts::restore::RestoreOptions;
use artifacts::restore::Restorer;
use vm_config::ByteSize;
use vm_config::HypervisorKind;
use vm_config::VmConfig;

/// The environment variable naming the agar-vmm binary to run.
const AGAR_VMM_ENV: &str = "AGAR_VMM";

/// Boot the default guest (Debian 12 kernel + agar initramfs) with agar-vmm.
#[derive(clap::Args)]
pub struct Args {
    /// CPU backend: kvm, emu or auto.
    #[arg(long, default_value = "auto")]
    hypervisor: HypervisorKind,
    /// Virtual processors.
    #[arg(short = 'p', long, default_value_t = 1)]
    processors: u32,
    /// Guest memory, e.g. 256MB or 1GB.
    #[arg(short = 'm', long, default_value = "256MB")]
    memory: ByteSize,
    /// Which Debian 12 cloud kernel to boot.
    #[arg(long, default_value = "6.1", value_parser = ["6.1", "6.12"])]
    kernel_version: String,
    /// Kernel command line (default: `console=ttyS0 agar.poweroff`).
    #[arg(short = 'c', long)]
    cmdline: Option<String>,
    /// Do not restore missing artifacts; fail instead.
    #[arg(long)]
    offline: bool,
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let (kernel, initrd) = match self.kernel_version.as_str() {
            "6.12" => (ids::DEBIAN12_K612_KERNEL, ids::DEBIAN12_K612_INITRD),
            _ => (ids::DEBIAN12_K61_KERNEL, ids::DEBIAN12_K61_INITRD),
        };
        let vmm = find_agar_vmm()?;
        let resolver = Resolver::from_env()?;
        let paths = match resolver.resolve_all([kernel.id(), initrd.id()]) {
            Ok(p) => p,
            Err(_) if !self.offline => {
                eprintln!("agar: restoring the default guest ({kernel}, {initrd})");
                let restorer = Restorer::new(
                    resolver.cache().clone(),
                    resolver.catalog().clone(),
                    RestoreOptions::default(),
                    Progress::for_stderr(),
                );
                restorer.restore(&[kernel.name().to_owned(), initrd.name().to_owned()])?;
                resolver.resolve_all([kernel.id(), initrd.id()])?
            }
            Err(e) => return Err(e.into()),
        };
        let [kernel_path, initrd_path] = <[PathBuf; 2]>::try_from(paths)
            .map_err(|_| anyhow::anyhow!("internal error: expected two paths"))?;
        let cmdline = self
            .cmdline
            .unwrap_or_else(|| "console=ttyS0 agar.poweroff".to_owned());
        let mut config = VmConfig::linux_direct(kernel_path, Some(initrd_path), &cmdline);
        config.processors = self.processors;
        config.memory = self.memory;
        config.hypervisor = self.hypervisor;
        let args = config.to_args();
        tracing::info!(vmm = %vmm.display(), ?args, "starting agar-vmm");
        let status = Command::new(&vmm)
            .args(&args)
            .status()
            .with_context(|| format!("cannot start {}", vmm.display()))?;
        Ok(match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => {
                eprintln!("agar: agar-vmm was killed by a signal ({status})");
                ExitCode::FAILURE
            }
        })
    }
}

/// `$AGAR_VMM`, else `agar-vmm` next to this executable, else `target/{release,debug}` of the
/// workspace this binary was built from.
fn find_agar_vmm() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(AGAR_VMM_ENV).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("${AGAR_VMM_ENV} is {}, which is not a file", p.display());
    }
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::current_exe().ok().as_deref().and_then(Path::parent) {
        candidates.push(dir.join("agar-vmm"));
    }
    // framework/agar_cli -> the workspace root.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    candidates.push(target.join("release").join("agar-vmm"));
    candidates.push(target.join("debug").join("agar-vmm"));
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    bail!(
        "cannot find agar-vmm (looked at ${AGAR_VMM_ENV}, {}); build it with `cargo build --release -p agar_vmm` or set {AGAR_VMM_ENV}",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
