//! QEMU (`qemu-system-x86_64 -M pc`): the same `VmConfig` rendered to QEMU's flags.
//!
//! The machine matches agar-vmm's (docs/src/machine.md) where QEMU can: four 16550 UARTs at
//! the standard ports, the 0x402 debug console, pvpanic at 0x505, IDE on the PIIX, reset
//! ends the process (`-no-reboot`, like agar-vmm's exit code 3). The framework adds `-S`
//! and a QMP socket: the VM starts paused, the framework connects the monitor, then resumes
//! it, so no halt event is ever missed. The reproduction line omits both.

use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::path::PathBuf;

use vm_config::Boot;
use vm_config::DiskBus;
use vm_config::DiskSpec;
use vm_config::HypervisorKind;
use vm_config::SerialConfig;
use vm_config::VmConfig;

use super::Backend;
use super::Launch;
use super::last_line;
use super::qmp;
use crate::cell::BackendKind;
use crate::error::Error;
use crate::error::Result;
use crate::vm::HaltReason;

/// The QEMU backend.
pub struct Qemu;

fn unsupported(message: impl Into<String>) -> Error {
    Error::Unsupported {
        backend: "qemu",
        message: message.into(),
    }
}

/// `accel` for a hypervisor choice: `auto` means KVM only where it is hardware-assisted.
fn accel(h: HypervisorKind) -> &'static str {
    match h {
        HypervisorKind::Kvm => "kvm",
        HypervisorKind::Emu => "tcg",
        HypervisorKind::Auto => {
            if crate::capability::hardware_kvm().is_ok() {
                "kvm"
            } else {
                "tcg"
            }
        }
    }
}

/// QEMU's `format=` for an image file, sniffed like agar-vmm does.
fn image_format(path: &Path) -> Result<&'static str> {
    let mut f = std::fs::File::open(path).map_err(Error::io(path))?;
    let mut head = [0u8; 8];
    let n = f.read(&mut head).map_err(Error::io(path))?;
    if n == 8 && &head == b"vhdxfile" {
        return Ok("vhdx");
    }
    if n >= 4 && head[..4] == *b"QFI\xfb" {
        return Ok("qcow2");
    }
    if n == 8 && &head == b"conectix" {
        return Ok("vpc");
    }
    let len = f.metadata().map_err(Error::io(path))?.len();
    if len >= 512 {
        let mut footer = [0u8; 8];
        f.seek(SeekFrom::Start(len - 512))
            .map_err(Error::io(path))?;
        if f.read_exact(&mut footer).is_ok() && &footer == b"conectix" {
            return Ok("vpc");
        }
    }
    Ok("raw")
}

/// `-drive` options for a disk spec (without `if=`/`index=`).
fn drive_options(
    spec: &DiskSpec,
    scratch_name: &str,
    run_dir: &Path,
    scratch: &mut Vec<(PathBuf, u64)>,
) -> Result<String> {
    let escape = |p: &Path| p.display().to_string().replace(',', ",,");
    match spec {
        DiskSpec::File {
            path,
            read_only,
            create,
            direct: _,
        } => {
            if let Some(size) = create.filter(|_| !path.exists()) {
                scratch.push((path.clone(), size.0));
                return Ok(format!("file={},format=raw", escape(path)));
            }
            let mut o = format!("file={},format={}", escape(path), image_format(path)?);
            if *read_only {
                o.push_str(",readonly=on");
            }
            Ok(o)
        }
        DiskSpec::Mem(size) => {
            let p = run_dir.join(format!("{scratch_name}.img"));
            scratch.push((p.clone(), size.0));
            Ok(format!("file={},format=raw", escape(&p)))
        }
        DiskSpec::MemDiff(lower) => {
            let inner = drive_options(lower, scratch_name, run_dir, scratch)?;
            // QEMU's temporary overlay: writes never reach the lower image.
            Ok(format!("{},snapshot=on", inner.replace(",readonly=on", "")))
        }
    }
}

fn chardev(id: &str, s: &SerialConfig) -> Option<String> {
    let esc = |p: &Path| p.display().to_string().replace(',', ",,");
    Some(match s {
        SerialConfig::None => return None,
        SerialConfig::Console => format!("stdio,id={id},signal=off"),
        SerialConfig::Stderr => format!("file,id={id},path=/dev/stderr"),
        SerialConfig::File(p) => format!("file,id={id},path={}", esc(p)),
        SerialConfig::Listen(p) => format!("socket,id={id},path={},server=on,wait=off", esc(p)),
    })
}

/// Files to create before launching: path and size in bytes.
pub type Scratch = Vec<(PathBuf, u64)>;

/// Renders `config` into QEMU arguments (without the program) and the scratch files they
/// refer to.
pub fn render(config: &VmConfig, run_dir: &Path) -> Result<(Vec<String>, Scratch)> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    let accel = accel(config.hypervisor);
    push(&["-M", "pc", "-accel", accel]);
    push(&["-nodefaults", "-no-user-config", "-display", "none"]);
    let mib = config.memory.0 >> 20;
    if mib << 20 != config.memory.0 || mib == 0 {
        return Err(unsupported(format!(
            "memory {} is not a whole number of MiB",
            config.memory
        )));
    }
    push(&["-m", &format!("{mib}M")]);
    push(&["-smp", &config.processors.to_string()]);
    if config.vtl2 {
        return Err(unsupported("VTL2 (--vtl2)"));
    }
    if config.hv {
        if accel != "kvm" {
            return Err(unsupported(
                "Hyper-V enlightenments (--hv) need KVM; QEMU's TCG has none",
            ));
        }
        push(&[
            "-cpu",
            "host,hv-relaxed,hv-vapic,hv-spinlocks=0x1fff,hv-time,hv-vpindex,hv-synic,hv-stimer",
        ]);
    }
    match &config.boot {
        Boot::LinuxDirect {
            kernel,
            initrd,
            cmdline,
        } => {
            push(&["-kernel", &kernel.display().to_string()]);
            if let Some(i) = initrd {
                push(&["-initrd", &i.display().to_string()]);
            }
            if !cmdline.is_empty() {
                push(&["-append", cmdline]);
            }
        }
        Boot::Pcat { firmware } => {
            if let Some(f) = firmware {
                push(&["-bios", &f.display().to_string()]);
            }
        }
        Boot::Uefi { firmware } => {
            let f = firmware
                .as_ref()
                .ok_or_else(|| unsupported("UEFI needs a firmware image (OVMF) path"))?;
            push(&["-bios", &f.display().to_string()]);
        }
        Boot::Igvm { .. } => return Err(unsupported("IGVM files (QEMU 7.2 has no IGVM loader)")),
    }
    let mut scratch = Vec::new();
    let mut ide_index = 0;
    for (i, d) in config.disks.iter().enumerate() {
        match d.bus {
            DiskBus::Ide => {
                if ide_index >= 4 {
                    return Err(unsupported("more than four IDE drives"));
                }
                let opts = drive_options(&d.spec, &format!("disk{i}"), run_dir, &mut scratch)?;
                let media = if d.dvd { "cdrom" } else { "disk" };
                push(&[
                    "-drive",
                    &format!("{opts},if=ide,index={ide_index},media={media}"),
                ]);
                ide_index += 1;
            }
            DiskBus::VmbusScsi => {
                return Err(unsupported("VMBus SCSI disks (QEMU has no storvsp)"));
            }
        }
    }
    for (i, s) in config.serial.iter().enumerate() {
        let id = format!("com{}", i + 1);
        match chardev(&id, s) {
            Some(c) => push(&["-chardev", &c, "-serial", &format!("chardev:{id}")]),
            None => push(&["-serial", "null"]),
        }
    }
    if let Some(c) = chardev("fwlog", &config.firmware_log) {
        push(&[
            "-chardev",
            &c,
            "-device",
            "isa-debugcon,iobase=0x402,chardev=fwlog",
        ]);
    }
    if config.gfx {
        push(&["-vga", "std"]);
    }
    if config.nic {
        push(&["-nic", "user,model=e1000"]);
    }
    push(&[
        "-device",
        "pvpanic",
        "-no-reboot",
        "-action",
        "panic=shutdown",
    ]);
    Ok((a, scratch))
}

impl Backend for Qemu {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    fn program_name(&self) -> &'static str {
        "qemu-system-x86_64"
    }

    fn program(&self) -> Result<PathBuf> {
        if let Some(p) = std::env::var_os("AGAR_QEMU").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join("qemu-system-x86_64"))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::Other(
                    "qemu-system-x86_64 not found in PATH (apt-get install qemu-system-x86, \
                     or set AGAR_QEMU)"
                        .into(),
                )
            })
    }

    fn launch(&self, program: &Path, config: &VmConfig, run_dir: &Path) -> Result<Launch> {
        let (args, scratch) = render(config, run_dir)?;
        let mut repro = vec![program.display().to_string()];
        repro.extend(args);
        let qmp = run_dir.join("qmp.sock");
        let mut argv = repro.clone();
        argv.extend([
            "-S".to_string(),
            "-qmp".to_string(),
            format!("unix:{},server=on,wait=off", qmp.display()),
        ]);
        Ok(Launch {
            repro,
            argv,
            qmp: Some(qmp),
            scratch,
        })
    }

    fn halt_reason(
        &self,
        status: std::process::ExitStatus,
        stderr: &str,
        qmp: &[qmp::Event],
    ) -> HaltReason {
        let panicked = qmp.iter().any(|e| e.name == "GUEST_PANICKED");
        let shutdown = qmp.iter().rev().find(|e| e.name == "SHUTDOWN");
        if let Some(reason) = shutdown.and_then(|e| e.data["reason"].as_str()) {
            match reason {
                "guest-shutdown" => return HaltReason::PowerOff,
                // -no-reboot turns every reset into a shutdown with this reason; QEMU
                // reports a triple fault as a reset too.
                "guest-reset" => return HaltReason::Reset,
                "guest-panic" => return HaltReason::GuestCrash("pvpanic".into()),
                _ => {}
            }
        }
        if panicked {
            return HaltReason::GuestCrash("pvpanic".into());
        }
        match (status.code(), status.signal()) {
            (_, Some(signal)) => HaltReason::Killed { signal },
            (Some(code), _) => HaltReason::VmmError {
                code,
                message: last_line(stderr),
            },
            (None, None) => HaltReason::VmmError {
                code: -1,
                message: last_line(stderr),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use vm_config::ByteSize;
    use vm_config::DiskConfig;

    use super::*;

    #[test]
    fn renders_linux_direct_with_files_and_an_agent_socket() {
        let mut c = VmConfig::linux_direct("/k", Some("/i".into()), "console=ttyS0");
        c.hypervisor = HypervisorKind::Emu;
        c.serial[0] = SerialConfig::File("/out/com1.log".into());
        c.serial[1] = SerialConfig::Listen("/run/agent.sock".into());
        let (a, scratch) = render(&c, Path::new("/run")).unwrap();
        let line = a.join(" ");
        assert!(scratch.is_empty());
        assert!(line.starts_with("-M pc -accel tcg -nodefaults"), "{line}");
        assert!(line.contains("-m 256M -smp 1 -kernel /k -initrd /i -append console=ttyS0"));
        assert!(line.contains("-chardev file,id=com1,path=/out/com1.log -serial chardev:com1"));
        assert!(line.contains(
            "-chardev socket,id=com2,path=/run/agent.sock,server=on,wait=off -serial chardev:com2"
        ));
        assert!(line.contains("-serial null -serial null -device pvpanic -no-reboot"));
    }

    #[test]
    fn renders_ide_disks_with_a_ram_overlay() {
        let dir = std::env::temp_dir().join(format!("agar-qemu-render-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("disk,1.vhd");
        let mut data = vec![0u8; 4096];
        data[4096 - 512..4096 - 504].copy_from_slice(b"conectix");
        std::fs::write(&img, &data).unwrap();
        let mut c = VmConfig::with_boot(Boot::Pcat { firmware: None });
        c.hypervisor = HypervisorKind::Emu;
        c.memory = ByteSize(1 << 30);
        c.disks.push(
            DiskConfig::parse(DiskBus::Ide, &format!("memdiff:file:{}", img.display())).unwrap(),
        );
        c.disks
            .push(DiskConfig::parse(DiskBus::Ide, "mem:64MB,dvd").unwrap());
        let (a, scratch) = render(&c, &dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let line = a.join(" ");
        assert!(line.contains("-m 1024M"), "{line}");
        assert!(
            line.contains(&format!(
                "-drive file={}/disk,,1.vhd,format=vpc,snapshot=on,if=ide,index=0,media=disk",
                dir.display()
            )),
            "{line}"
        );
        assert!(line.contains(",if=ide,index=1,media=cdrom"), "{line}");
        assert_eq!(scratch, vec![(dir.join("disk1.img"), 64 << 20)]);
    }

    #[test]
    fn refuses_what_qemu_cannot_do() {
        let mut c = VmConfig::with_boot(Boot::Uefi {
            firmware: Some("/ovmf".into()),
        });
        c.hypervisor = HypervisorKind::Emu;
        c.disks
            .push(DiskConfig::parse(DiskBus::VmbusScsi, "mem:1GB").unwrap());
        let e = render(&c, Path::new("/run")).unwrap_err().to_string();
        assert!(e.contains("storvsp"), "{e}");
        let mut c = VmConfig::with_boot(Boot::Igvm {
            path: "/x.igvm".into(),
        });
        c.hypervisor = HypervisorKind::Emu;
        assert!(
            render(&c, Path::new("/run"))
                .unwrap_err()
                .to_string()
                .contains("IGVM")
        );
        let mut c = VmConfig::linux_direct("/k", None, "");
        c.hypervisor = HypervisorKind::Emu;
        c.hv = true;
        assert!(
            render(&c, Path::new("/run"))
                .unwrap_err()
                .to_string()
                .contains("--hv")
        );
    }
}

#[cfg(test)]
mod halt_tests {
    use serde_json::json;

    use super::*;

    fn status(script: &str) -> std::process::ExitStatus {
        std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .status()
            .unwrap()
    }

    fn shutdown(reason: &str) -> qmp::Event {
        qmp::Event {
            name: "SHUTDOWN".into(),
            data: json!({ "guest": true, "reason": reason }),
        }
    }

    #[test]
    fn qmp_events_explain_the_exit() {
        let ok = status("exit 0");
        assert_eq!(
            Qemu.halt_reason(ok, "", &[shutdown("guest-shutdown")]),
            HaltReason::PowerOff
        );
        assert_eq!(
            Qemu.halt_reason(ok, "", &[shutdown("guest-reset")]),
            HaltReason::Reset
        );
        let panicked = qmp::Event {
            name: "GUEST_PANICKED".into(),
            data: json!({ "action": "pause" }),
        };
        assert_eq!(
            Qemu.halt_reason(ok, "", &[panicked, shutdown("guest-panic")]),
            HaltReason::GuestCrash("pvpanic".into())
        );
        assert_eq!(
            Qemu.halt_reason(status("kill -KILL $$"), "", &[]),
            HaltReason::Killed { signal: 9 }
        );
        assert_eq!(
            Qemu.halt_reason(status("exit 1"), "qemu: could not load kernel\n", &[]),
            HaltReason::VmmError {
                code: 1,
                message: "qemu: could not load kernel".into()
            }
        );
    }
}
