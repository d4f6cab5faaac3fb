//! agar-vmm: runs one virtual machine from an OpenVMM-style command line.
//!
//! Exit status (docs/src/machine.md): 0 power off, 2 bad command line or configuration
//! (nothing ran), 3 reset, 4 triple fault, 5 guest crash, 6 backend error, 1 any other
//! failure. The last line on stderr names the halt reason.

mod cli;

use std::process::ExitCode;

use anyhow::Context;
use vm_config::Boot;
use vm_config::VmConfig;
use vmm_core::Machine;
use vmm_core::MachineConfig;

/// A failure before or around the guest, with the exit status it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

fn config_error(error: anyhow::Error) -> Failure {
    Failure { code: 2, error }
}

fn other_error(error: anyhow::Error) -> Failure {
    Failure { code: 1, error }
}

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    let parsed = match cli::parse(std::env::args_os()) {
        Ok(p) => p,
        Err(cli::CliError::Clap(e)) if !e.use_stderr() => {
            // --help, --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(cli::CliError::Clap(e)) => {
            eprintln!("agar-vmm: {}", cli::one_line(&e));
            return ExitCode::from(2);
        }
        Err(cli::CliError::Invalid(msg)) => {
            eprintln!("agar-vmm: {msg}");
            return ExitCode::from(2);
        }
    };
    init_logging(parsed.log.as_deref());
    match run(&parsed.config, parsed.no_kvm_check, started) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("agar-vmm: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn init_logging(filter: Option<&str>) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter.unwrap_or("info")).unwrap_or_else(|e| {
            eprintln!("agar-vmm: bad log filter ({e}); using `info`");
            tracing_subscriber::EnvFilter::new("info")
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(config: &VmConfig, no_kvm_check: bool, started: std::time::Instant) -> Result<u8, Failure> {
    if let Some(msg) = cli::unsupported(config) {
        return Err(config_error(anyhow::anyhow!(msg)));
    }
    let (kernel, initrd, cmdline) = match &config.boot {
        Boot::LinuxDirect {
            kernel,
            initrd,
            cmdline,
        } => (kernel, initrd, cmdline),
        Boot::Pcat { firmware } => {
            return run_pcat(config, firmware.as_deref(), no_kvm_check, started);
        }
        _ => {
            return Err(config_error(anyhow::anyhow!(
                "only --kernel and --pcat boots are supported"
            )));
        }
    };
    let layout = vmm_core::layout::MemoryLayout::new(config.memory.0)
        .context("-m")
        .map_err(config_error)?;

    let kernel_bytes = std::fs::read(kernel)
        .with_context(|| format!("cannot read kernel {}", kernel.display()))
        .map_err(config_error)?;
    let kernel_image = loaders::linux::Kernel::parse(&kernel_bytes)
        .with_context(|| kernel.display().to_string())
        .map_err(config_error)?;
    drop(kernel_bytes);
    let initrd_bytes = initrd
        .as_ref()
        .map(|p| {
            std::fs::read(p)
                .with_context(|| format!("cannot read initrd {}", p.display()))
                .map_err(config_error)
        })
        .transpose()?;

    // Everything the guest is made of is checked before a backend is touched.
    let guest = loaders::linux::GuestInfo {
        e820: layout.e820(),
        acpi_rsdp: Some(vmm_core::layout::ACPI_RSDP),
    };
    let plan = loaders::linux::load(&kernel_image, initrd_bytes, cmdline, &guest)
        .map_err(|e| config_error(e.into()))?;
    tracing::info!("{}", plan.summary);

    let needs_user_mode = !no_kvm_check;
    let selected = vmm_core::backend::select(config.hypervisor, needs_user_mode)
        .map_err(|e| other_error(e.into()))?;
    tracing::info!("hypervisor: {}", selected.why);

    let machine_config = machine_config(config);
    let mut machine = Machine::new(&machine_config, &*selected.hypervisor)
        .context("building the machine")
        .map_err(other_error)?;

    machine
        .load(&plan)
        .context("loading the kernel")
        .map_err(other_error)?;
    drop(plan);

    start(config, machine, started)
}

/// The machine description shared by every boot path.
fn machine_config(config: &VmConfig) -> MachineConfig {
    let mut machine_config = MachineConfig::new(config.processors, config.memory.0);
    machine_config.serial = config.serial.clone();
    machine_config.firmware_log = config.firmware_log.clone();
    machine_config.hv = config.hv;
    machine_config.disks = config.disks.clone();
    machine_config
}

/// Where `--pcat` finds its firmware without `--pcat-firmware`: Debian's `seabios` package
/// (the file the `seabios_bios` artifact is taken from).
pub const DEFAULT_PCAT_FIRMWARE: &str = "/usr/share/seabios/bios-256k.bin";

/// `--pcat`: the BIOS starts at the reset vector and boots from the IDE devices.
fn run_pcat(
    config: &VmConfig,
    firmware: Option<&std::path::Path>,
    no_kvm_check: bool,
    started: std::time::Instant,
) -> Result<u8, Failure> {
    vmm_core::layout::MemoryLayout::new(config.memory.0)
        .context("-m")
        .map_err(config_error)?;
    let path = firmware.unwrap_or(std::path::Path::new(DEFAULT_PCAT_FIRMWARE));
    let image = std::fs::read(path)
        .with_context(|| {
            if firmware.is_some() {
                format!("cannot read --pcat-firmware {}", path.display())
            } else {
                format!(
                    "cannot read the default PC/AT firmware {} (install Debian's seabios \
                     package or give --pcat-firmware PATH)",
                    path.display()
                )
            }
        })
        .map_err(config_error)?;
    vmm_core::pcat::check_firmware(&image)
        .with_context(|| path.display().to_string())
        .map_err(config_error)?;

    // The firmware alone needs no user mode; the OS it boots does.
    let selected = vmm_core::backend::select(config.hypervisor, !no_kvm_check)
        .map_err(|e| other_error(e.into()))?;
    tracing::info!("hypervisor: {}", selected.why);
    let mut machine_config = machine_config(config);
    machine_config.pcat = Some(vmm_core::pcat::FirmwareImage(image.into()));
    let machine = Machine::new(&machine_config, &*selected.hypervisor)
        .context("building the machine")
        .map_err(other_error)?;
    start(config, machine, started)
}

fn start(config: &VmConfig, machine: Machine, started: std::time::Instant) -> Result<u8, Failure> {
    tracing::info!(
        "starting {} vCPU(s) on {} after {:.1} ms",
        config.processors,
        machine.backend(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let reason = machine
        .run()
        .context("running the machine")
        .map_err(other_error)?;
    eprintln!("{}", reason.log_line());
    Ok(reason.exit_code() as u8)
}
