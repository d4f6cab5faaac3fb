//! `agar run`: restore the default guest if needed and boot it with agar-vmm: Linux direct
//! boot (`--kernel`/`--initrd`), or, with `--pcat`, BIOS firmware booting the pinned BIOS
//! disk from IDE (`--ide memdiff:file:<vhd>`) or the ISO from an IDE DVD drive (`--iso`).

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::ExitCode;

use anyhow::Context;
use anyhow::bail;
use artifacts::ArtifactId;
use artifacts::Resolver;
use artifacts::ids;
use artifacts::media;
use artifacts::progress::Progress;
use artifacts::restore::RestoreOptions;
use artifacts::restore::Restorer;
use vm_config::Boot;
use vm_config::ByteSize;
use vm_config::DiskBus;
use vm_config::DiskConfig;
use vm_config::DiskSpec;
use vm_config::HypervisorKind;
use vm_config::VmConfig;

/// The environment variable naming the agar-vmm binary to run.
const AGAR_VMM_ENV: &str = "AGAR_VMM";

/// How the guest starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Firmware {
    /// No firmware: agar-vmm loads the kernel and initramfs (Linux boot protocol).
    Linux,
    /// PC/AT BIOS: the firmware boots a BIOS disk (or `--iso`) from IDE.
    Pcat,
}

/// The default command line of the default guest (also what the pinned BIOS media carry).
const DEFAULT_CMDLINE: &str = "console=ttyS0 agar.poweroff";

/// Boot the default guest (Debian 12 kernel + agar initramfs) with agar-vmm.
#[derive(clap::Args)]
pub struct Args {
    /// How the guest starts: `linux` (direct kernel boot) or `pcat` (BIOS boots a disk).
    #[arg(long, value_enum, default_value = "linux")]
    firmware: Firmware,
    /// Short for `--firmware pcat`: boot the Debian 12 BIOS disk (`debian12_k61_bios_vhd`)
    /// from IDE. With `-c` or `--kernel-version 6.12`, a disk with that command line or
    /// kernel is built (and cached) first.
    #[arg(long, conflicts_with = "firmware")]
    pcat: bool,
    /// With PC/AT firmware: boot the ISO (`debian12_k61_bios_iso`) from an IDE DVD drive
    /// instead of the disk.
    #[arg(long)]
    iso: bool,
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
        let firmware = if self.pcat {
            Firmware::Pcat
        } else {
            self.firmware
        };
        if self.iso && firmware != Firmware::Pcat {
            bail!("--iso boots through BIOS firmware: add --pcat");
        }
        let (kernel, initrd) = match self.kernel_version.as_str() {
            "6.12" => (ids::DEBIAN12_K612_KERNEL, ids::DEBIAN12_K612_INITRD),
            _ => (ids::DEBIAN12_K61_KERNEL, ids::DEBIAN12_K61_INITRD),
        };
        let vmm = find_agar_vmm()?;
        let resolver = Resolver::from_env()?;
        let pinned_medium = if self.iso {
            ids::DEBIAN12_K61_BIOS_ISO.id()
        } else {
            ids::DEBIAN12_K61_BIOS_VHD.id()
        };
        let custom_medium = self.cmdline.is_some() || kernel != ids::DEBIAN12_K61_KERNEL;
        let mut config = match firmware {
            Firmware::Pcat if !custom_medium => {
                let [medium, bios] = self
                    .resolve_or_restore(&resolver, [pinned_medium, ids::SEABIOS_BIOS.id()])?;
                pcat_config(bios, medium, self.iso)
            }
            Firmware::Pcat => {
                let [kernel_path, initrd_path, bios] = self.resolve_or_restore(
                    &resolver,
                    [kernel.id(), initrd.id(), ids::SEABIOS_BIOS.id()],
                )?;
                let cmdline = self.cmdline.as_deref().unwrap_or(DEFAULT_CMDLINE);
                let files = media::BootFiles::new(kernel_path, initrd_path).replace_cmdline(cmdline)?;
                let medium = if self.iso {
                    media::BiosIso::new(files).build(resolver.cache())?
                } else {
                    media::BiosDisk::new(files).build(resolver.cache())?
                };
                tracing::info!(path = %medium.path.display(), cached = medium.cached, "BIOS boot medium");
                pcat_config(bios, medium.path, self.iso)
            }
            Firmware::Linux => {
                let [kernel_path, initrd_path] =
                    self.resolve_or_restore(&resolver, [kernel.id(), initrd.id()])?;
                let cmdline = self.cmdline.as_deref().unwrap_or(DEFAULT_CMDLINE);
                VmConfig::linux_direct(kernel_path, Some(initrd_path), cmdline)
            }
        };
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

impl Args {
    /// The artifacts' paths, restoring them first when missing (unless `--offline`).
    fn resolve_or_restore<const N: usize>(
        &self,
        resolver: &Resolver,
        ids: [&'static ArtifactId; N],
    ) -> anyhow::Result<[PathBuf; N]> {
        let paths = match resolver.resolve_all(ids) {
            Ok(p) => p,
            Err(_) if !self.offline => {
                let names: Vec<String> = ids.iter().map(|i| i.name().to_owned()).collect();
                eprintln!("agar: restoring {}", names.join(", "));
                let restorer = Restorer::new(
                    resolver.cache().clone(),
                    resolver.catalog().clone(),
                    RestoreOptions::default(),
                    Progress::for_stderr(),
                );
                restorer.restore(&names)?;
                resolver.resolve_all(ids)?
            }
            Err(e) => return Err(e.into()),
        };
        <[PathBuf; N]>::try_from(paths)
            .map_err(|_| anyhow::anyhow!("internal error: expected {N} paths"))
    }
}

/// The pinned SeaBIOS (`bios`) booting `medium` from the first IDE drive: a disk under a RAM
/// differencing layer (the cached image stays untouched), or a read-only DVD.
fn pcat_config(bios: PathBuf, medium: PathBuf, iso: bool) -> VmConfig {
    let mut config = VmConfig::with_boot(Boot::Pcat {
        firmware: Some(bios),
    });
    let file = DiskSpec::File {
        path: medium,
        // `memdiff:` opens its lower disk read-only anyway.
        read_only: iso,
        create: None,
        direct: false,
    };
    config.disks.push(DiskConfig {
        bus: DiskBus::Ide,
        spec: if iso {
            file
        } else {
            DiskSpec::MemDiff(Box::new(file))
        },
        dvd: iso,
    });
    config
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
