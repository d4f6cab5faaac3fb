//! The command line: OpenVMM's flag names, parsed into a [`VmConfig`].
//!
//! Parsing accepts every flag `VmConfig::to_args` can render (a unit test round-trips them);
//! [`unsupported`] then refuses the ones whose features have not landed yet.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::ArgMatches;
use clap::CommandFactory;
use clap::FromArgMatches;
use clap::Parser;
use vm_config::Boot;
use vm_config::ByteSize;
use vm_config::DiskBus;
use vm_config::DiskConfig;
use vm_config::HypervisorKind;
use vm_config::SerialConfig;
use vm_config::VmConfig;

/// agar-vmm: runs one virtual machine.
#[derive(Parser, Debug)]
#[command(name = "agar-vmm", version, about, max_term_width = 100)]
struct Args {
    /// Linux kernel to boot directly (bzImage or ELF vmlinux).
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Initial ramdisk for --kernel.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line (repeat to append, space-separated).
    #[arg(short = 'c', long = "cmdline", value_name = "STRING")]
    cmdline: Vec<String>,
    /// Virtual processors.
    #[arg(short = 'p', long = "processors", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(vmm_core::layout::MAX_PROCESSORS)))]
    processors: u32,
    /// Guest RAM: bytes or a size such as 256MB, 4GB, 1G.
    #[arg(
        short = 'm',
        long = "memory",
        value_name = "SIZE",
        default_value = "256MB"
    )]
    memory: ByteSize,
    /// Hyper-V enlightenments.
    #[arg(long)]
    hv: bool,
    /// CPU backend: kvm, emu (agar's software CPU) or auto (kvm if its self-check passes).
    #[arg(long, value_name = "KIND", default_value = "auto")]
    hypervisor: HypervisorKind,
    /// COM1: console, stderr, none, file=PATH or listen=PATH (a Unix socket).
    #[arg(long, value_name = "BACKEND")]
    com1: Option<SerialConfig>,
    /// COM2 (same values as --com1).
    #[arg(long, value_name = "BACKEND")]
    com2: Option<SerialConfig>,
    /// COM3 (same values as --com1).
    #[arg(long, value_name = "BACKEND")]
    com3: Option<SerialConfig>,
    /// COM4 (same values as --com1).
    #[arg(long, value_name = "BACKEND")]
    com4: Option<SerialConfig>,
    /// Firmware debug port 0x402 (same values as --com1).
    #[arg(long = "firmware-log", value_name = "BACKEND")]
    firmware_log: Option<SerialConfig>,
    /// Log filter (tracing syntax, e.g. `info,vmm_core=debug`).
    #[arg(long, value_name = "FILTER", env = "AGAR_LOG")]
    log: Option<String>,
    /// Boot through UEFI firmware.
    #[arg(long)]
    uefi: bool,
    /// Boot through PC/AT BIOS firmware.
    #[arg(long)]
    pcat: bool,
    /// PC/AT firmware image.
    #[arg(long = "pcat-firmware", value_name = "PATH")]
    pcat_firmware: Option<PathBuf>,
    /// UEFI firmware image.
    #[arg(long = "uefi-firmware", value_name = "PATH")]
    uefi_firmware: Option<PathBuf>,
    /// IDE disk (disk spec, `,dvd` for an optical drive).
    #[arg(long, value_name = "SPEC")]
    ide: Vec<String>,
    /// VMBus SCSI disk (disk spec, `,dvd` for an optical drive).
    #[arg(long, value_name = "SPEC")]
    disk: Vec<String>,
    /// Graphics console.
    #[arg(long)]
    gfx: bool,
    /// Network adapter.
    #[arg(long)]
    nic: bool,
    /// VTL2.
    #[arg(long)]
    vtl2: bool,
    /// Boot an IGVM file.
    #[arg(long, value_name = "PATH")]
    igvm: Option<PathBuf>,
    /// Skip the KVM self-check for --hypervisor kvm (for kernel-mode test programs, which do
    /// not need user mode).
    #[arg(long = "no-kvm-check", hide = true)]
    no_kvm_check: bool,
}

/// A command line that does not parse.
#[derive(Debug)]
pub enum CliError {
    /// clap's own outcome: help, version, or a syntax error.
    Clap(clap::Error),
    /// A value that does not fit together with the rest.
    Invalid(String),
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The VM.
    pub config: VmConfig,
    /// The log filter (`--log` or `AGAR_LOG`).
    pub log: Option<String>,
    /// `--no-kvm-check`.
    pub no_kvm_check: bool,
}

/// Parses `args` (program name first).
pub fn parse<I, T>(args: I) -> Result<Parsed, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = Args::command()
        .try_get_matches_from(args)
        .map_err(CliError::Clap)?;
    let a = Args::from_arg_matches(&matches).map_err(CliError::Clap)?;
    let invalid = |s: &str| Err(CliError::Invalid(s.to_string()));

    let boots = [a.kernel.is_some(), a.pcat, a.uefi, a.igvm.is_some()];
    let boot = match boots {
        [true, false, false, false] => Boot::LinuxDirect {
            kernel: a.kernel.clone().unwrap_or_default(),
            initrd: a.initrd.clone(),
            cmdline: a.cmdline.join(" "),
        },
        [false, true, false, false] => Boot::Pcat {
            firmware: a.pcat_firmware.clone(),
        },
        [false, false, true, false] => Boot::Uefi {
            firmware: a.uefi_firmware.clone(),
        },
        [false, false, false, true] => Boot::Igvm {
            path: a.igvm.clone().unwrap_or_default(),
        },
        [false, false, false, false] => {
            return invalid("nothing to boot: give --kernel (or --pcat, --uefi, --igvm)");
        }
        _ => return invalid("choose one of --kernel, --pcat, --uefi and --igvm"),
    };
    if a.kernel.is_none() && (a.initrd.is_some() || !a.cmdline.is_empty()) {
        return invalid("--initrd and --cmdline need --kernel");
    }
    if a.pcat_firmware.is_some() && !a.pcat {
        return invalid("--pcat-firmware needs --pcat");
    }
    if a.uefi_firmware.is_some() && !a.uefi {
        return invalid("--uefi-firmware needs --uefi");
    }

    let mut config = VmConfig::with_boot(boot);
    config.processors = a.processors;
    config.memory = a.memory;
    config.hypervisor = a.hypervisor;
    config.hv = a.hv;
    config.vtl2 = a.vtl2;
    config.gfx = a.gfx;
    config.nic = a.nic;
    config.disks = disks(&matches, &a)?;
    for (i, s) in [&a.com1, &a.com2, &a.com3, &a.com4].into_iter().enumerate() {
        if let Some(s) = s {
            config.serial[i] = s.clone();
        }
    }
    if let Some(f) = &a.firmware_log {
        config.firmware_log = f.clone();
    }
    Ok(Parsed {
        config,
        log: a.log,
        no_kvm_check: a.no_kvm_check,
    })
}

/// `--ide` and `--disk` in command-line order.
fn disks(matches: &ArgMatches, a: &Args) -> Result<Vec<DiskConfig>, CliError> {
    let mut all: Vec<(usize, DiskBus, &String)> = Vec::new();
    for (id, bus, values) in [
        ("ide", DiskBus::Ide, &a.ide),
        ("disk", DiskBus::VmbusScsi, &a.disk),
    ] {
        if let Some(indices) = matches.indices_of(id) {
            all.extend(indices.zip(values).map(|(i, v)| (i, bus, v)));
        }
    }
    all.sort_by_key(|d| d.0);
    all.into_iter()
        .map(|(_, bus, v)| {
            DiskConfig::parse(bus, v).map_err(|e| {
                let flag = if bus == DiskBus::Ide {
                    "--ide"
                } else {
                    "--disk"
                };
                CliError::Invalid(format!("{flag} {v}: {e}"))
            })
        })
        .collect()
}

/// The first flag in `config` whose feature has not landed, as the error to print.
pub fn unsupported(config: &VmConfig) -> Option<String> {
    for d in config.disks.iter().filter(|d| d.bus == DiskBus::VmbusScsi) {
        if !config.hv {
            return Some("--disk needs --hv (the VMBus SCSI controller)".into());
        }
        if d.dvd {
            return Some("--disk ...,dvd is not supported yet".into());
        }
    }
    if !matches!(config.boot, Boot::Pcat { .. })
        && config.disks.iter().any(|d| d.bus == DiskBus::Ide)
    {
        return Some("--ide requires --pcat".into());
    }
    let flag = match &config.boot {
        Boot::Uefi { .. } => Some("--uefi"),
        Boot::Igvm { .. } => Some("--igvm"),
        Boot::Pcat { .. } | Boot::LinuxDirect { .. } => None,
    }
    .or(config.vtl2.then_some("--vtl2"))
    .or(config.gfx.then_some("--gfx"))
    .or(config.nic.then_some("--nic"))?;
    Some(format!("{flag} is not supported yet"))
}

/// The one line to print for a clap error (clap's own rendering spans several lines).
pub fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("invalid command line");
    first.trim_start_matches("error: ").to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse_str(line: &str) -> Result<Parsed, CliError> {
        parse(std::iter::once("agar-vmm").chain(line.split_whitespace()))
    }

    fn round_trip(c: &VmConfig) {
        let args = c.to_args();
        let parsed = parse(std::iter::once("agar-vmm".to_string()).chain(args.clone()))
            .unwrap_or_else(|e| panic!("{args:?}: {e:?}"));
        assert_eq!(&parsed.config, c, "{args:?}");
    }

    #[test]
    fn rendered_configs_parse_back_to_themselves() {
        let mut c = VmConfig::linux_direct(
            "/k/vmlinuz",
            Some("/k/initrd".into()),
            "console=ttyS0 quiet",
        );
        round_trip(&c);
        c.processors = 2;
        c.memory = ByteSize(300 << 20);
        c.hypervisor = HypervisorKind::Emu;
        c.serial[0] = SerialConfig::File("/tmp/com1 log".into());
        c.serial[1] = SerialConfig::Listen("/tmp/agent.sock".into());
        c.serial[3] = SerialConfig::Stderr;
        c.firmware_log = SerialConfig::Stderr;
        round_trip(&c);
        let mut c = VmConfig::linux_direct("vmlinux", None, "");
        c.memory = ByteSize(4 << 30);
        c.hypervisor = HypervisorKind::Kvm;
        c.serial[0] = SerialConfig::None;
        round_trip(&c);

        // Features that have not landed still parse (and round-trip); `unsupported` refuses
        // them afterwards.
        let mut c = VmConfig::with_boot(Boot::Pcat {
            firmware: Some("bios.bin".into()),
        });
        c.disks
            .push(DiskConfig::parse(DiskBus::Ide, "memdiff:file:disk.vhd").unwrap());
        c.disks
            .push(DiskConfig::parse(DiskBus::VmbusScsi, "mem:1G").unwrap());
        c.disks
            .push(DiskConfig::parse(DiskBus::Ide, "file:boot.iso;ro,dvd").unwrap());
        c.gfx = true;
        c.nic = true;
        round_trip(&c);
        let mut c = VmConfig::with_boot(Boot::Uefi { firmware: None });
        c.hv = true;
        round_trip(&c);
        let mut c = VmConfig::with_boot(Boot::Igvm {
            path: "openhcl.bin".into(),
        });
        c.hv = true;
        c.vtl2 = true;
        round_trip(&c);
    }

    #[test]
    fn defaults() {
        let p = parse_str("--kernel vmlinuz").unwrap();
        assert_eq!(p.config, VmConfig::linux_direct("vmlinuz", None, ""));
        assert_eq!(p.config.serial[0], SerialConfig::Console);
        assert!(unsupported(&p.config).is_none());
    }

    #[test]
    fn sizes_and_repeated_cmdline() {
        for (arg, bytes) in [
            ("256MB", 256u64 << 20),
            ("4GB", 4 << 30),
            ("1G", 1 << 30),
            ("1048576", 1 << 20),
        ] {
            let p = parse_str(&format!("--kernel k -m {arg}")).unwrap();
            assert_eq!(p.config.memory, ByteSize(bytes), "{arg}");
        }
        let p = parse_str("--kernel k -c console=ttyS0 --cmdline quiet").unwrap();
        assert!(
            matches!(&p.config.boot, Boot::LinuxDirect { cmdline, .. } if cmdline == "console=ttyS0 quiet")
        );
    }

    #[test]
    fn bad_values_are_errors() {
        for line in [
            "--kernel k -p 0",
            "--kernel k -p 65",
            "--kernel k -p two",
            "--kernel k -m lots",
            "--kernel k --hypervisor xen",
            "--kernel k --com1 tcp:1234",
            "--kernel k --bogus",
            "--kernel",
        ] {
            match parse_str(line) {
                Err(CliError::Clap(e)) => {
                    let l = one_line(&e);
                    assert!(!l.contains('\n') && !l.is_empty(), "{line}: {l}");
                }
                other => panic!("{line}: {other:?}"),
            }
        }
        for line in [
            "",
            "--kernel k --pcat",
            "--initrd i",
            "--pcat --uefi-firmware u.fd",
            "--pcat --ide bogus",
        ] {
            assert!(
                matches!(parse_str(line), Err(CliError::Invalid(_))),
                "{line:?}"
            );
        }
    }

    #[test]
    fn unlanded_features_are_refused_by_name() {
        for (line, flag) in [
            ("--uefi --uefi-firmware x.fd", "--uefi"),
            ("--igvm x.bin", "--igvm"),
            ("--kernel k --vtl2", "--vtl2"),
            ("--kernel k --gfx", "--gfx"),
            ("--kernel k --nic", "--nic"),
        ] {
            let p = parse_str(line).unwrap();
            assert_eq!(
                unsupported(&p.config).as_deref(),
                Some(format!("{flag} is not supported yet").as_str()),
                "{line}"
            );
        }
    }

    #[test]
    fn pcat_takes_ide_disks_and_cds() {
        let p = parse_str("--pcat --ide memdiff:file:x.vhd --ide file:y.iso,dvd").unwrap();
        assert_eq!(unsupported(&p.config), None);
        assert_eq!(p.config.disks.len(), 2);
        assert!(p.config.disks[1].dvd);
        let p = parse_str("--pcat --pcat-firmware bios.bin").unwrap();
        assert_eq!(unsupported(&p.config), None);
        let p = parse_str("--kernel k --ide file:x.vhd").unwrap();
        assert_eq!(
            unsupported(&p.config).as_deref(),
            Some("--ide requires --pcat")
        );
    }

    #[test]
    fn vmbus_disks_need_hv_and_are_not_dvds() {
        let ok = parse_str("--kernel k --hv --disk mem:1G --disk memdiff:file:x.vhdx").unwrap();
        assert_eq!(unsupported(&ok.config), None);
        let no_hv = parse_str("--kernel k --disk mem:1G").unwrap();
        assert_eq!(
            unsupported(&no_hv.config).as_deref(),
            Some("--disk needs --hv (the VMBus SCSI controller)")
        );
        let dvd = parse_str("--kernel k --hv --disk file:x.iso,dvd").unwrap();
        assert_eq!(
            unsupported(&dvd.config).as_deref(),
            Some("--disk ...,dvd is not supported yet")
        );
    }

    #[test]
    fn kernel_path_is_kept_verbatim() {
        let p = parse_str("--kernel ./a/b.bin").unwrap();
        assert!(
            matches!(&p.config.boot, Boot::LinuxDirect { kernel, .. } if kernel == Path::new("./a/b.bin"))
        );
    }
}
