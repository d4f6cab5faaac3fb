//! The agar initramfs: busybox-static, `/init` and kernel modules, as a deterministic cpio.
//!
//! Inputs: the kernel's Debian package (its `lib/modules/<release>/`), the `busybox-static`
//! package, and the module list from the manifest. Output: an uncompressed newc archive (see
//! [`super::cpio`]) holding
//!
//! ```text
//! init                                  the script in init.sh (guest contract)
//! bin/busybox, bin/sh -> busybox        applet links are made at boot (`busybox --install`)
//! dev/console, dev/null                 so PID 1 has a console before devtmpfs is mounted
//! lib/modules/<release>/kernel/...      requested modules and their dependencies (.ko,
//!                                       decompressed when the package ships .ko.xz)
//! lib/modules/<release>/modules.dep     written here: Debian runs depmod at install time
//! lib/modules/<release>/modules.builtin from the package
//! proc sys run tmp root sbin            mount points and the agent's directory
//! ```
//!
//! The archive is left uncompressed: its bytes then depend only on the inputs (not on a
//! compressor's version), and a guest on an emulated CPU does not spend seconds inflating it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use super::cpio::Archive;
use super::cpio::Node;
use super::kmod;
use super::kmod::ModuleInfo;
use crate::deb;
use crate::deb::DebError;

/// The `/init` script (docs/src/guest-contract.md).
pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// Bump when the archive layout changes in a way the script text does not show.
const RECIPE_VERSION: u32 = 1;

/// The module `/init` always loads first.
const ALWAYS: &str = "pvpanic-mmio";

/// Largest single module file accepted (compressed or not).
const MAX_MODULE: u64 = 64 << 20;

pub(crate) fn fingerprint_input() -> String {
    format!("initramfs v{RECIPE_VERSION} always={ALWAYS}\n{INIT_SCRIPT}")
}

/// Why the initramfs could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// A package could not be read.
    #[error(transparent)]
    Deb(#[from] DebError),
    /// A module is missing or unreadable.
    #[error(transparent)]
    Module(#[from] kmod::ModuleError),
    /// The kernel package is not laid out as expected.
    #[error("{}: {reason}", package.display())]
    Layout {
        /// The package.
        package: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The built archive and what went into it.
#[derive(Debug, Clone)]
pub struct Initramfs {
    /// The newc archive.
    pub bytes: Vec<u8>,
    /// The kernel release (`uname -r`) the modules are for.
    pub kernel_release: String,
    /// Canonical names of the modules included, dependencies first.
    pub modules: Vec<String>,
}

/// Splits `lib/modules/<release>/<rest>`.
fn modules_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("lib/modules/")?;
    rest.split_once('/')
}

fn read_module(
    deb_path: &Path,
    name: &str,
    reader: &mut dyn Read,
) -> Result<Option<(String, Vec<u8>)>, DebError> {
    let io = |e: std::io::Error| DebError {
        path: deb_path.to_owned(),
        reason: format!("{name}: {e}"),
    };
    let mut raw = Vec::new();
    reader.take(MAX_MODULE).read_to_end(&mut raw).map_err(io)?;
    if let Some(stem) = name.strip_suffix(".ko.xz") {
        let mut out = Vec::new();
        xz2::read::XzDecoder::new(raw.as_slice())
            .take(MAX_MODULE)
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(Some((format!("{stem}.ko"), out)))
    } else if name.ends_with(".ko") {
        Ok(Some((name.to_owned(), raw)))
    } else {
        Ok(None)
    }
}

/// Builds the initramfs from the kernel package, the busybox package and the module list.
pub fn build(
    kernel_deb: &Path,
    busybox_deb: &Path,
    modules: &[String],
) -> Result<Initramfs, InitramfsError> {
    let layout = |reason: String| InitramfsError::Layout {
        package: kernel_deb.to_owned(),
        reason,
    };

    // Pass 1: every module's name and dependencies, and the release directory.
    let mut releases = BTreeSet::new();
    let mut available: BTreeMap<String, ModuleInfo> = BTreeMap::new();
    let mut deb_paths: BTreeMap<String, String> = BTreeMap::new();
    let mut builtin_text = String::new();
    deb::for_each_file(kernel_deb, |path, reader| {
        let Some((release, rest)) = modules_path(path) else {
            return Ok(());
        };
        releases.insert(release.to_owned());
        if rest == "modules.builtin" {
            reader
                .take(MAX_MODULE)
                .read_to_string(&mut builtin_text)
                .map_err(|e| DebError {
                    path: kernel_deb.to_owned(),
                    reason: format!("{path}: {e}"),
                })?;
            return Ok(());
        }
        if !rest.starts_with("kernel/") {
            return Ok(());
        }
        if let Some((rel, bytes)) = read_module(kernel_deb, rest, reader)? {
            match ModuleInfo::read(&rel, &bytes) {
                Ok(info) => {
                    deb_paths.insert(info.name.clone(), path.to_owned());
                    available.insert(info.name.clone(), info);
                }
                Err(e) => tracing::debug!(error = %e, "skipping an unreadable module"),
            }
        }
        Ok(())
    })?;
    let release = match releases.len() {
        1 => releases.pop_first().unwrap_or_default(),
        0 => return Err(layout("no lib/modules/<release>/ directory".into())),
        _ => return Err(layout(format!("several module directories: {releases:?}"))),
    };
    let builtin: BTreeSet<String> = builtin_text
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(|f| kmod::canonical_name(f.trim_end_matches(".ko")))
        .collect();

    let mut requested: Vec<String> = vec![ALWAYS.to_owned()];
    requested.extend(modules.iter().cloned());
    requested.retain(|m| !builtin.contains(&kmod::canonical_name(m)));
    let order = kmod::closure(&available, &requested)?;

    // Pass 2: the contents of the modules in the closure.
    let wanted: BTreeMap<&str, &str> = order
        .iter()
        .filter_map(|m| Some((deb_paths.get(m)?.as_str(), m.as_str())))
        .collect();
    let mut archive = Archive::new();
    let prefix = format!("lib/modules/{release}");
    deb::for_each_file(kernel_deb, |path, reader| {
        if !wanted.contains_key(path) {
            return Ok(());
        }
        let Some((_, rest)) = modules_path(path) else {
            return Ok(());
        };
        if let Some((rel, bytes)) = read_module(kernel_deb, rest, reader)? {
            archive.add(&format!("{prefix}/{rel}"), 0o644, Node::File(bytes));
        }
        Ok(())
    })?;
    archive.add(
        &format!("{prefix}/modules.dep"),
        0o644,
        Node::File(kmod::modules_dep(&available, &order).into_bytes()),
    );
    archive.add(
        &format!("{prefix}/modules.builtin"),
        0o644,
        Node::File(builtin_text.into_bytes()),
    );

    let busybox = deb::extract_one(busybox_deb, "bin/busybox")?;
    if busybox.data.get(0..4) != Some(b"\x7fELF") {
        return Err(InitramfsError::Layout {
            package: busybox_deb.to_owned(),
            reason: "bin/busybox is not an ELF executable".into(),
        });
    }
    archive.add("bin/busybox", 0o755, Node::File(busybox.data));
    archive.add("bin/sh", 0o777, Node::Symlink("busybox".into()));
    archive.add("init", 0o755, Node::File(INIT_SCRIPT.as_bytes().to_vec()));
    archive.add("dev/console", 0o600, Node::CharDev(5, 1));
    archive.add("dev/null", 0o666, Node::CharDev(1, 3));
    for dir in ["proc", "sys", "run", "tmp", "root", "sbin"] {
        archive.add(dir, 0o755, Node::Dir);
    }
    Ok(Initramfs {
        bytes: archive.to_bytes(),
        kernel_release: release,
        modules: order,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deb::tests::fake_deb;
    use crate::recipes::kmod::tests::fake_module;

    fn write(dir: &Path, name: &str, bytes: Vec<u8>) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        xz2::read::XzEncoder::new(data, 6)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn builds_the_closure_with_modules_dep_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let m = |n: &str, d: &str| fake_module(&[&format!("name={n}"), &format!("depends={d}")]);
        let r = "lib/modules/9.9-cloud";
        let kernel = write(
            dir.path(),
            "k.deb",
            fake_deb(
                "linux-image-9.9-cloud",
                "9.9-1",
                &[
                    (
                        &format!("{r}/kernel/drivers/ata/ata_piix.ko"),
                        &m("ata_piix", "libata"),
                    ),
                    (
                        &format!("{r}/kernel/drivers/ata/libata.ko.xz"),
                        &xz(&m("libata", "")),
                    ),
                    (
                        &format!("{r}/kernel/drivers/misc/pvpanic/pvpanic-mmio.ko"),
                        &m("pvpanic_mmio", "pvpanic"),
                    ),
                    (
                        &format!("{r}/kernel/drivers/misc/pvpanic/pvpanic.ko"),
                        &m("pvpanic", ""),
                    ),
                    (&format!("{r}/kernel/drivers/unused.ko"), &m("unused", "")),
                    (
                        &format!("{r}/modules.builtin"),
                        b"kernel/drivers/scsi/sd_mod.ko\n",
                    ),
                    ("boot/vmlinuz-9.9-cloud", b"K"),
                ],
            ),
        );
        let busybox = write(
            dir.path(),
            "b.deb",
            fake_deb(
                "busybox-static",
                "1",
                &[("bin/busybox", b"\x7fELF-busybox")],
            ),
        );
        let wanted = vec!["ata_piix".to_owned(), "sd_mod".to_owned()];
        let a = build(&kernel, &busybox, &wanted).unwrap();
        assert_eq!(a.kernel_release, "9.9-cloud");
        assert_eq!(
            a.modules,
            vec!["pvpanic", "pvpanic_mmio", "libata", "ata_piix"]
        );
        let text = String::from_utf8_lossy(&a.bytes);
        assert!(text.contains("lib/modules/9.9-cloud/kernel/drivers/ata/libata.ko\0"));
        assert!(!text.contains("unused.ko"));
        assert!(text.contains("kernel/drivers/ata/ata_piix.ko: kernel/drivers/ata/libata.ko\n"));
        assert!(text.contains("agar-init: ready"));
        // Same inputs, same bytes.
        assert_eq!(build(&kernel, &busybox, &wanted).unwrap().bytes, a.bytes);
    }

    #[test]
    fn a_missing_module_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let r = "lib/modules/9.9-cloud";
        let pv = fake_module(&["name=pvpanic_mmio", "depends="]);
        let kernel = write(
            dir.path(),
            "k.deb",
            fake_deb("k", "1", &[(&format!("{r}/kernel/pvpanic-mmio.ko"), &pv)]),
        );
        let busybox = write(
            dir.path(),
            "b.deb",
            fake_deb("busybox-static", "1", &[("bin/busybox", b"\x7fELF")]),
        );
        let e = build(&kernel, &busybox, &["hv_storvsc".into()]).unwrap_err();
        assert!(
            e.to_string()
                .contains("`hv_storvsc` is not in the kernel package"),
            "{e}"
        );
    }
}
