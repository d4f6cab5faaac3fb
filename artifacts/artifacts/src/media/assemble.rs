//! The recipe steps: Debian's tools run on plain files in a work directory (no root, no loop
//! devices), and the small bits of glue done here (placing the partition, the MBR boot code,
//! making the VHD footer reproducible).
//!
//! Disk (MBR, one bootable FAT16 partition at sector 2048):
//!
//! ```text
//! mkfs.fat -C -F 16 -h 2048 -i <id> part.img <KiB>      the partition, as a file
//! mcopy -i part.img <kernel> ::/vmlinuz                  (and initrd.img, syslinux.cfg)
//! syslinux --install part.img                            boot sector + ldlinux.sys, via mtools
//! sfdisk disk.raw < "label: dos, label-id, start=2048 ... bootable"
//! part.img -> disk.raw at 1 MiB; mbr.bin -> disk.raw[0..440]
//! disk.raw -> disk.vhd / disk.vhdx                       `disk::image::convert` (agar's own)
//! ```
//!
//! ISO: `xorriso -as mkisofs` with `isolinux/isolinux.bin` as the no-emulation El Torito boot
//! image (`-boot-info-table`), `isolinux/ldlinux.c32` and `isolinux/isolinux.cfg`.
//!
//! Reproducibility: every tool runs with a cleared environment, `TZ=UTC`, `LC_ALL=C` and
//! `SOURCE_DATE_EPOCH` (mtools and xorriso take their timestamps from it); mkfs.fat gets its
//! volume id and sfdisk its disk signature from the medium's key; no volume label is written
//! (mkfs.fat would stamp it with the current time); xorriso gets fixed file dates, owners and
//! modes; the VHD footer's timestamp and unique id are rewritten from the key.

use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::process::Stdio;

use vhd::spec as vhd_spec;
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

use super::DiskFormat;
use super::MediaError;
use super::SOURCE_DATE_EPOCH;
use super::tools::DataFile;
use super::tools::Program;
use super::tools::Resolved;
use crate::hash::Sha256;

/// Where the partition starts (sector 2048, 1 MiB: the usual alignment).
pub(crate) const PARTITION_START_SECTOR: u64 = 2048;
const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;
/// Smallest partition: FAT16 wants at least 4085 clusters.
const MIN_PARTITION_MIB: u64 = 32;
/// The MBR boot code area (the partition table starts at 446; 440..446 hold the signature).
const MBR_CODE_LEN: usize = 440;

/// The files a medium carries, prepared in the work directory.
pub(crate) struct Payload<'a> {
    /// The kernel (any absolute path).
    pub kernel: &'a Path,
    /// The initramfs, extras already appended.
    pub initrd: &'a Path,
    /// Their total size.
    pub bytes: u64,
    /// `syslinux.cfg` / `isolinux.cfg`.
    pub config: &'a str,
    /// Seeds the volume id, disk signature and VHD unique id.
    pub seed: Sha256,
}

/// The boot-loader configuration: serial console on COM1 at 115200, no prompt, one entry.
pub(crate) fn loader_config(cmdline: &str) -> String {
    format!(
        "# agar BIOS boot medium (docs/src/guest-contract.md)\n\
         SERIAL 0 115200\n\
         PROMPT 0\n\
         TIMEOUT 0\n\
         DEFAULT agar\n\
         LABEL agar\n\
         \x20 KERNEL /vmlinuz\n\
         \x20 APPEND initrd=/initrd.img {cmdline}\n"
    )
}

/// The FAT16 partition size for a payload: the files, 1/16 for cluster slack and the FAT,
/// 2.5 MiB for the loader and metadata; at least 32 MiB, in 4 MiB steps.
pub(crate) fn partition_mib(payload: u64) -> u64 {
    let need = payload + payload / 16 + 5 * MIB / 2;
    need.div_ceil(MIB)
        .max(MIN_PARTITION_MIB)
        .next_multiple_of(4)
}

/// Builds the disk in `work` and leaves it at `out`.
pub(crate) fn disk(
    tools: &Resolved,
    work: &Path,
    p: &Payload<'_>,
    format: DiskFormat,
    out: &Path,
) -> Result<(), MediaError> {
    let part_mib = partition_mib(p.bytes);
    let part_sectors = part_mib * MIB / SECTOR;
    let volume_id = u32::from_le_bytes([p.seed.0[0], p.seed.0[1], p.seed.0[2], p.seed.0[3]]);
    let disk_sig = u32::from_le_bytes([p.seed.0[4], p.seed.0[5], p.seed.0[6], p.seed.0[7]]);

    let part = work.join("part.img");
    let cfg = work.join("syslinux.cfg");
    write_file(&cfg, p.config.as_bytes())?;
    let mut mkfs = tool(tools, work, Program::MkfsFat)?;
    mkfs.args(["-C", "-F", "16", "-h"])
        .arg(PARTITION_START_SECTOR.to_string())
        .arg("-i")
        .arg(format!("{volume_id:08x}"))
        .arg(&part)
        .arg((part_mib * 1024).to_string());
    run(mkfs, None)?;
    for (src, name) in [
        (p.kernel, "vmlinuz"),
        (p.initrd, "initrd.img"),
        (cfg.as_path(), "syslinux.cfg"),
    ] {
        let mut mcopy = tool(tools, work, Program::Mcopy)?;
        mcopy
            .arg("-i")
            .arg(&part)
            .arg(src)
            .arg(format!("::/{name}"));
        run(mcopy, None)?;
    }
    let mut syslinux = tool(tools, work, Program::Syslinux)?;
    syslinux.arg("--install").arg(&part);
    run(syslinux, None)?;

    let raw = work.join("disk.raw");
    let total = (PARTITION_START_SECTOR + part_sectors) * SECTOR;
    let f = File::create(&raw).map_err(io_err("cannot create", &raw))?;
    f.set_len(total).map_err(io_err("cannot size", &raw))?;
    drop(f);
    let mut sfdisk = tool(tools, work, Program::Sfdisk)?;
    sfdisk
        .args(["--no-reread", "--no-tell-kernel", "--quiet"])
        .arg(&raw);
    let script = format!(
        "label: dos\nlabel-id: 0x{disk_sig:08x}\nunit: sectors\n\n\
         start={PARTITION_START_SECTOR}, size={part_sectors}, type=6, bootable\n"
    );
    run(sfdisk, Some(&script))?;

    let mut disk = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&raw)
        .map_err(io_err("cannot open", &raw))?;
    let mut part_file = File::open(&part).map_err(io_err("cannot open", &part))?;
    let part_len = part_file
        .metadata()
        .map_err(io_err("cannot stat", &part))?
        .len();
    if part_len != part_sectors * SECTOR {
        return Err(MediaError::Internal(format!(
            "mkfs.fat made a {part_len}-byte partition, expected {}",
            part_sectors * SECTOR
        )));
    }
    disk.seek(SeekFrom::Start(PARTITION_START_SECTOR * SECTOR))
        .map_err(io_err("cannot seek in", &raw))?;
    io::copy(&mut part_file, &mut disk).map_err(io_err("cannot write", &raw))?;
    let mbr_path = tools.file(DataFile::MbrBin)?;
    let mut mbr = Vec::new();
    File::open(mbr_path)
        .and_then(|f| f.take(MBR_CODE_LEN as u64 + 1).read_to_end(&mut mbr))
        .map_err(io_err("cannot read", mbr_path))?;
    if mbr.is_empty() || mbr.len() > MBR_CODE_LEN {
        return Err(MediaError::BadInput {
            path: mbr_path.to_owned(),
            reason: format!(
                "is {} bytes; MBR boot code is at most {MBR_CODE_LEN} (reinstall syslinux-common)",
                mbr.len()
            ),
        });
    }
    disk.write_all_at(&mbr, 0)
        .and_then(|()| disk.sync_all())
        .map_err(io_err("cannot write", &raw))?;
    drop(disk);
    let _ = std::fs::remove_file(&part);

    let converted = match format {
        DiskFormat::Raw => raw,
        DiskFormat::Vhd | DiskFormat::Vhdx => {
            let dst = work.join(format!("disk.{}", format.extension()));
            disk::image::convert(&raw, &dst, &disk::image::CreateOptions::default())
                .map_err(MediaError::Disk)?;
            let _ = std::fs::remove_file(&raw);
            if format == DiskFormat::Vhd {
                make_vhd_reproducible(&dst, &p.seed)?;
            }
            // What agar-vmm will open must open.
            disk::open_file(&dst, true).map_err(MediaError::Disk)?;
            dst
        }
    };
    std::fs::rename(&converted, out).map_err(io_err("cannot move into place", out))
}

/// Builds the ISO in `work` and leaves it at `out`.
pub(crate) fn iso(
    tools: &Resolved,
    work: &Path,
    p: &Payload<'_>,
    out: &Path,
) -> Result<(), MediaError> {
    let cfg = work.join("isolinux.cfg");
    write_file(&cfg, p.config.as_bytes())?;
    let image = work.join("boot.iso");
    let graft = |target: &str, src: &Path| {
        let mut s = std::ffi::OsString::from(target);
        s.push("=");
        s.push(escape_graft(src));
        s
    };
    let mut x = tool(tools, work, Program::Xorriso)?;
    // `-no_rc` first: no startup files from /etc or $HOME.
    x.args(["-no_rc", "-as", "mkisofs", "-o"])
        .arg(&image)
        .args(["-R", "-J", "-V", "AGAR"])
        .args([
            "-uid",
            "0",
            "-gid",
            "0",
            "-file-mode",
            "0444",
            "-dir-mode",
            "0555",
        ])
        .args(["--set_all_file_dates", "2000010100000000"])
        .args(["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat"])
        .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"])
        .arg("-graft-points")
        .arg(graft("/vmlinuz", p.kernel))
        .arg(graft("/initrd.img", p.initrd))
        .arg(graft(
            "/isolinux/isolinux.bin",
            tools.file(DataFile::IsolinuxBin)?,
        ))
        .arg(graft(
            "/isolinux/ldlinux.c32",
            tools.file(DataFile::LdlinuxC32)?,
        ))
        .arg(graft("/isolinux/isolinux.cfg", &cfg));
    run(x, None)?;
    std::fs::rename(&image, out).map_err(io_err("cannot move into place", out))
}

/// A graft-point source with `\` and `=` escaped, as xorriso's pathspecs require.
fn escape_graft(p: &Path) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::new();
    for &b in p.as_os_str().as_bytes() {
        if b == b'\\' || b == b'=' {
            out.push(b'\\');
        }
        out.push(b);
    }
    std::ffi::OsString::from_vec(out)
}

/// Rewrites the footer (and, for dynamic images, its copy at offset 0) with a timestamp of
/// 2000-01-01 and a unique id derived from `seed`, so the same inputs give the same bytes.
fn make_vhd_reproducible(path: &Path, seed: &Sha256) -> Result<(), MediaError> {
    let corrupt = |why: &str| MediaError::Internal(format!("{}: {why}", path.display()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("cannot open", path))?;
    let len = file.metadata().map_err(io_err("cannot stat", path))?.len();
    let end = len
        .checked_sub(SECTOR)
        .ok_or_else(|| corrupt("too short for a VHD"))?;
    let mut bytes = [0u8; 512];
    file.read_exact_at(&mut bytes, end)
        .map_err(io_err("cannot read", path))?;
    let mut footer =
        vhd_spec::Footer::read_from_bytes(&bytes).map_err(|_| corrupt("footer does not parse"))?;
    if footer.cookie != vhd_spec::FOOTER_COOKIE || !footer.checksum_ok() {
        return Err(corrupt("no valid VHD footer at the end"));
    }
    footer.timestamp = zerocopy::U32::new(0);
    let mut id = [0u8; 16];
    id.copy_from_slice(&seed.0[16..32]);
    // RFC 4122 variant, version 5 (name-based): derived, not random.
    id[6] = (id[6] & 0x0f) | 0x50;
    id[8] = (id[8] & 0x3f) | 0x80;
    footer.unique_id = id;
    footer.seal();
    file.write_all_at(footer.as_bytes(), end)
        .map_err(io_err("cannot write", path))?;
    if footer.data_offset.get() != vhd_spec::NO_DATA_OFFSET {
        file.write_all_at(footer.as_bytes(), 0)
            .map_err(io_err("cannot write", path))?;
    }
    file.sync_all().map_err(io_err("cannot write", path))
}

/// A command for `program`, in `work`, with the reproducible environment.
fn tool(tools: &Resolved, work: &Path, program: Program) -> Result<Command, MediaError> {
    let mut c = Command::new(tools.program(program)?);
    c.current_dir(work)
        .env_clear()
        .env("PATH", &tools.path_env)
        .env("HOME", work)
        .env("TMPDIR", work)
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH.to_string())
        .env("MTOOLS_SKIP_CHECK", "1");
    Ok(c)
}

/// Runs a command to completion; a failure carries its stderr.
fn run(mut cmd: Command, stdin: Option<&str>) -> Result<(), MediaError> {
    let command = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(%command, "running");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let spawned = cmd.spawn().map_err(|e| MediaError::ToolFailed {
        command: command.clone(),
        status: "not started".into(),
        detail: e.to_string(),
    })?;
    let mut child = spawned;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| MediaError::ToolFailed {
                command: command.clone(),
                status: "stdin closed".into(),
                detail: e.to_string(),
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| MediaError::ToolFailed {
            command: command.clone(),
            status: "lost".into(),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tail: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| !l.trim().is_empty())
        .take(6)
        .collect();
    Err(MediaError::ToolFailed {
        command,
        status: out.status.to_string(),
        detail: tail.join("; "),
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), MediaError> {
    std::fs::write(path, bytes).map_err(io_err("cannot write", path))
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> MediaError {
    let path = path.to_owned();
    move |source| MediaError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_fit_their_payload_and_grow_in_4_mib_steps() {
        assert_eq!(partition_mib(0), 32);
        assert_eq!(partition_mib(20 * MIB), 32);
        let big = 100 * MIB;
        let mib = partition_mib(big);
        assert!(mib * MIB > big + big / 16 && mib.is_multiple_of(4), "{mib}");
    }

    #[test]
    fn graft_sources_escape_equals_and_backslash() {
        assert_eq!(
            escape_graft(Path::new("/a=b\\c/d")),
            std::ffi::OsString::from("/a\\=b\\\\c/d")
        );
    }

    #[test]
    fn the_loader_config_boots_the_one_entry_on_the_serial_console() {
        let c = loader_config("console=ttyS0 agar.poweroff");
        assert!(c.contains("SERIAL 0 115200\n"));
        assert!(c.contains("DEFAULT agar\n"));
        assert!(c.ends_with("  APPEND initrd=/initrd.img console=ttyS0 agar.poweroff\n"));
    }
}
