//! The typed VM configuration: what `agar-vmm` parses its command line into, and what the test
//! framework builds and renders back into a command line ([`VmConfig::to_args`]).
//!
//! The flag names follow OpenVMM's CLI (`--kernel`, `--initrd`, `-c`, `-p`, `-m`, `--hv`,
//! `--uefi`, `--pcat`, `--ide`, `--disk`, `--igvm`, `--vtl2`, `--gfx`, `--nic`,
//! `--com1..--com4`), plus agar's `--hypervisor kvm|emu|auto`, `--pcat-firmware`,
//! `--uefi-firmware` and `--firmware-log`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use disk_spec::ByteSize;
pub use disk_spec::DiskSpec;
pub use disk_spec::SpecError;

/// A value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{value}`: expected {expected}")]
pub struct ParseError {
    /// What was being parsed.
    pub what: &'static str,
    /// The input.
    pub value: String,
    /// What would have been accepted.
    pub expected: &'static str,
}

/// Which CPU backend runs the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum HypervisorKind {
    /// KVM if its self-check passes, otherwise `emu`.
    #[default]
    Auto,
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// agar's own x86-64 CPU.
    Emu,
}

impl FromStr for HypervisorKind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "auto" => Ok(Self::Auto),
            "kvm" => Ok(Self::Kvm),
            "emu" => Ok(Self::Emu),
            _ => Err(ParseError {
                what: "hypervisor",
                value: s.into(),
                expected: "kvm, emu or auto",
            }),
        }
    }
}

impl fmt::Display for HypervisorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Kvm => "kvm",
            Self::Emu => "emu",
        })
    }
}

/// Where a serial port (or the firmware debug port) goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum SerialConfig {
    /// Not connected (the UART exists; output is discarded).
    #[default]
    None,
    /// The VMM's stdout (and stdin for input).
    Console,
    /// The VMM's stderr (output only).
    Stderr,
    /// Output appended to a file.
    File(PathBuf),
    /// A Unix socket the VMM listens on; one client at a time, bidirectional.
    Listen(PathBuf),
}

impl FromStr for SerialConfig {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = || ParseError {
            what: "serial backend",
            value: s.into(),
            expected: "console, stderr, none, file=PATH or listen=PATH",
        };
        match s {
            "none" => Ok(Self::None),
            "console" => Ok(Self::Console),
            "stderr" => Ok(Self::Stderr),
            _ => {
                if let Some(p) = s.strip_prefix("file=").filter(|p| !p.is_empty()) {
                    Ok(Self::File(p.into()))
                } else if let Some(p) = s.strip_prefix("listen=").filter(|p| !p.is_empty()) {
                    Ok(Self::Listen(p.into()))
                } else {
                    Err(err())
                }
            }
        }
    }
}

impl fmt::Display for SerialConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Console => f.write_str("console"),
            Self::Stderr => f.write_str("stderr"),
            Self::File(p) => write!(f, "file={}", p.display()),
            Self::Listen(p) => write!(f, "listen={}", p.display()),
        }
    }
}

/// How the guest starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Boot {
    /// Linux boot protocol, no firmware.
    LinuxDirect {
        /// bzImage or ELF vmlinux.
        kernel: PathBuf,
        /// Initial ramdisk.
        initrd: Option<PathBuf>,
        /// Kernel command line.
        cmdline: String,
    },
    /// BIOS (SeaBIOS by default), Gen1-like.
    Pcat {
        /// Firmware image override.
        firmware: Option<PathBuf>,
    },
    /// UEFI, Gen2-like.
    Uefi {
        /// Firmware image override.
        firmware: Option<PathBuf>,
    },
    /// An IGVM file (OpenHCL paravisor); needs `hv` and usually `vtl2`.
    Igvm {
        /// The IGVM file.
        path: PathBuf,
    },
}

/// Which controller a disk hangs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskBus {
    /// Emulated IDE (Gen1); drives fill channel 0 master, slave, channel 1 master, slave.
    Ide,
    /// VMBus SCSI (storvsp); LUNs are assigned in order.
    VmbusScsi,
}

/// One disk.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DiskConfig {
    /// The controller.
    pub bus: DiskBus,
    /// The backing.
    pub spec: DiskSpec,
    /// Present as an optical drive (ATAPI / SCSI CD-ROM).
    pub dvd: bool,
}

impl DiskConfig {
    /// Parses the argument of `--ide`/`--disk`: a disk spec with an optional `,dvd` suffix.
    pub fn parse(bus: DiskBus, arg: &str) -> Result<Self, SpecError> {
        let (spec, dvd) = match arg.strip_suffix(",dvd") {
            Some(s) => (s, true),
            None => (arg, false),
        };
        Ok(Self {
            bus,
            spec: DiskSpec::parse(spec)?,
            dvd,
        })
    }

    /// The `--ide`/`--disk` argument for this disk.
    pub fn to_arg(&self) -> String {
        if self.dvd {
            format!("{},dvd", self.spec)
        } else {
            self.spec.to_string()
        }
    }
}

/// Number of COM ports.
pub const COM_PORTS: usize = 4;

/// A whole VM.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VmConfig {
    /// How it boots.
    pub boot: Boot,
    /// Virtual processors (`-p`).
    pub processors: u32,
    /// Guest RAM (`-m`).
    pub memory: ByteSize,
    /// CPU backend.
    pub hypervisor: HypervisorKind,
    /// Hyper-V enlightenments (`--hv`).
    pub hv: bool,
    /// VTL2 (`--vtl2`).
    pub vtl2: bool,
    /// Disks in attachment order.
    pub disks: Vec<DiskConfig>,
    /// COM1..COM4.
    pub serial: [SerialConfig; COM_PORTS],
    /// Firmware debug port (0x402).
    pub firmware_log: SerialConfig,
    /// Graphics console (`--gfx`).
    pub gfx: bool,
    /// Network adapter (`--nic`).
    pub nic: bool,
}

impl VmConfig {
    /// A Linux direct-boot VM with agar-vmm's defaults: 1 processor, 256 MB, COM1 on the console.
    pub fn linux_direct(
        kernel: impl Into<PathBuf>,
        initrd: Option<PathBuf>,
        cmdline: &str,
    ) -> Self {
        Self::with_boot(Boot::LinuxDirect {
            kernel: kernel.into(),
            initrd,
            cmdline: cmdline.into(),
        })
    }

    /// A VM with the given boot method and agar-vmm's defaults.
    pub fn with_boot(boot: Boot) -> Self {
        Self {
            boot,
            processors: 1,
            memory: ByteSize(256 << 20),
            hypervisor: HypervisorKind::Auto,
            hv: false,
            vtl2: false,
            disks: Vec::new(),
            serial: [
                SerialConfig::Console,
                SerialConfig::None,
                SerialConfig::None,
                SerialConfig::None,
            ],
            firmware_log: SerialConfig::None,
            gfx: false,
            nic: false,
        }
    }

    /// The `agar-vmm` arguments (without the program name) that produce this configuration.
    /// Defaults are omitted, so the line stays short enough to read in a test log.
    pub fn to_args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        match &self.boot {
            Boot::LinuxDirect {
                kernel,
                initrd,
                cmdline,
            } => {
                a.push("--kernel".into());
                a.push(kernel.display().to_string());
                if let Some(i) = initrd {
                    a.push("--initrd".into());
                    a.push(i.display().to_string());
                }
                if !cmdline.is_empty() {
                    a.push("-c".into());
                    a.push(cmdline.clone());
                }
            }
            Boot::Pcat { firmware } => {
                a.push("--pcat".into());
                if let Some(f) = firmware {
                    a.push("--pcat-firmware".into());
                    a.push(f.display().to_string());
                }
            }
            Boot::Uefi { firmware } => {
                a.push("--uefi".into());
                if let Some(f) = firmware {
                    a.push("--uefi-firmware".into());
                    a.push(f.display().to_string());
                }
            }
            Boot::Igvm { path } => {
                a.push("--igvm".into());
                a.push(path.display().to_string());
            }
        }
        if self.processors != 1 {
            a.push("-p".into());
            a.push(self.processors.to_string());
        }
        if self.memory != ByteSize(256 << 20) {
            a.push("-m".into());
            a.push(self.memory.to_string());
        }
        if self.hypervisor != HypervisorKind::Auto {
            a.push("--hypervisor".into());
            a.push(self.hypervisor.to_string());
        }
        if self.hv {
            a.push("--hv".into());
        }
        if self.vtl2 {
            a.push("--vtl2".into());
        }
        for d in &self.disks {
            a.push(
                match d.bus {
                    DiskBus::Ide => "--ide",
                    DiskBus::VmbusScsi => "--disk",
                }
                .into(),
            );
            a.push(d.to_arg());
        }
        for (i, s) in self.serial.iter().enumerate() {
            let default = if i == 0 {
                SerialConfig::Console
            } else {
                SerialConfig::None
            };
            if *s != default {
                a.push(format!("--com{}", i + 1));
                a.push(s.to_string());
            }
        }
        if self.firmware_log != SerialConfig::None {
            a.push("--firmware-log".into());
            a.push(self.firmware_log.to_string());
        }
        if self.gfx {
            a.push("--gfx".into());
        }
        if self.nic {
            a.push("--nic".into());
        }
        a
    }

    /// [`Self::to_args`] as one shell-quoted line, prefixed with `program`.
    pub fn to_command_line(&self, program: &str) -> String {
        std::iter::once(program.to_string())
            .chain(self.to_args())
            .map(|s| shell_quote(&s))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Quotes `s` for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_round_trip() {
        for s in [
            "none",
            "console",
            "stderr",
            "file=/tmp/a b.log",
            "listen=/tmp/s.sock",
        ] {
            assert_eq!(s.parse::<SerialConfig>().unwrap().to_string(), s);
        }
        assert!("file=".parse::<SerialConfig>().is_err());
        assert!("tcp:1".parse::<SerialConfig>().is_err());
    }

    #[test]
    fn renders_seed_command_lines() {
        let mut c = VmConfig::with_boot(Boot::Pcat { firmware: None });
        c.disks
            .push(DiskConfig::parse(DiskBus::Ide, "memdiff:file:disk.vhd").unwrap());
        assert_eq!(c.to_args(), ["--pcat", "--ide", "memdiff:file:disk.vhd"]);

        let mut c = VmConfig::linux_direct("vmlinuz", Some("initrd".into()), "console=ttyS0 quiet");
        c.processors = 2;
        c.memory = ByteSize(300 << 20);
        c.serial[1] = SerialConfig::Listen("/tmp/agent.sock".into());
        assert_eq!(
            c.to_command_line("agar-vmm"),
            "agar-vmm --kernel vmlinuz --initrd initrd -c 'console=ttyS0 quiet' -p 2 -m 300MB \
             --com2 listen=/tmp/agent.sock"
        );
    }

    #[test]
    fn dvd_suffix() {
        let d = DiskConfig::parse(DiskBus::Ide, "file:boot.iso;ro,dvd").unwrap();
        assert!(d.dvd);
        assert_eq!(d.to_arg(), "file:boot.iso;ro,dvd");
        assert!(DiskConfig::parse(DiskBus::Ide, "file:x;bad").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
