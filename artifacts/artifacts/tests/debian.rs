//! Restoring Debian-sourced artifacts: pins, the mirror moving on, integrity, recipes.
//!
//! The packages are real `.deb` files made by `dpkg-deb --build`; apt is replaced by two
//! small stand-in programs (shell scripts) that serve them from a directory and log every
//! call, so the tests can say exactly when apt was asked for what.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

use artifacts::Resolver;
use artifacts::apt::Apt;
use artifacts::cache::Cache;
use artifacts::manifest::Catalog;
use artifacts::manifest::Lock;
use artifacts::progress::Progress;
use artifacts::restore::Outcome;
use artifacts::restore::RestoreError;
use artifacts::restore::RestoreOptions;
use artifacts::restore::Restored;
use artifacts::restore::Restorer;

/// A directory of packages behind stand-in `apt-get` and `apt-cache` programs.
struct FakeApt {
    dir: tempfile::TempDir,
}

impl FakeApt {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let log = dir.path().join("log");
        let script = |name: &str, body: &str| {
            let path = dir.path().join(name);
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\necho \"{name} $*\" >> '{}'\nREPO='{}'\n{body}",
                    log.display(),
                    repo.display()
                ),
            )
            .unwrap();
            let mut p = std::fs::metadata(&path).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
            std::fs::set_permissions(&path, p).unwrap();
        };
        script(
            "apt-get",
            r#"[ "$1" = download ] || exit 100
spec="$3"; pkg="${spec%%=*}"; ver="${spec#*=}"
if [ -f "$REPO/${pkg}_${ver}.deb" ]; then cp "$REPO/${pkg}_${ver}.deb" .
else echo "E: Version '$ver' for '$pkg' was not found" >&2; exit 100; fi
"#,
        );
        script(
            "apt-cache",
            r#"for last; do :; done
case "$1" in
depends) [ -f "$REPO/$last.depends" ] || exit 100
         printf '%s\n  Depends: %s\n' "$last" "$(cat "$REPO/$last.depends")" ;;
policy)  [ -f "$REPO/$last.candidate" ] || exit 0
         printf '%s:\n  Installed: (none)\n  Candidate: %s\n' "$last" "$(cat "$REPO/$last.candidate")" ;;
*) exit 100 ;;
esac
"#,
        );
        Self { dir }
    }

    fn apt(&self) -> Apt {
        Apt {
            apt_get: self.dir.path().join("apt-get").into(),
            apt_cache: self.dir.path().join("apt-cache").into(),
        }
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// Builds `package_version.deb` with `files` and makes `version` the candidate.
    fn publish(&self, package: &str, version: &str, files: &[(&str, &[u8])]) {
        let root = self.dir.path().join(format!("build-{package}-{version}"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            format!("Package: {package}\nVersion: {version}\nArchitecture: amd64\nMaintainer: agar tests <t@example.org>\nDescription: test package\n"),
        )
        .unwrap();
        for (path, data) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        let out = Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&root)
            .arg(self.repo().join(format!("{package}_{version}.deb")))
            .output()
            .expect("dpkg-deb (Debian's dpkg package)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(self.repo().join(format!("{package}.candidate")), version).unwrap();
    }

    /// Removes a version from the archive (the mirror moved on).
    fn unpublish(&self, package: &str, version: &str) {
        std::fs::remove_file(self.repo().join(format!("{package}_{version}.deb"))).unwrap();
    }

    fn set_metapackage(&self, meta: &str, real: &str) {
        std::fs::write(self.repo().join(format!("{meta}.depends")), real).unwrap();
    }

    /// Every apt call so far, one per line.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn restorer(cache: &Path, catalog: Catalog, apt: &FakeApt, offline: bool) -> Restorer {
    Restorer::new(
        Cache::new(cache),
        catalog,
        RestoreOptions {
            offline,
            apt: apt.apt(),
            ..RestoreOptions::default()
        },
        Progress::Silent,
    )
}

const FW_MANIFEST: &str = r#"
[artifacts.fw]
format = "bios-rom"
source = "deb"
package = "fake-firmware"
file = "usr/share/fake/fw.bin"
"#;

fn with_lock(manifest: &str, lock: &Lock) -> Catalog {
    Catalog::parse(
        manifest,
        "test manifest",
        Some((&lock.to_toml(), "test lock")),
    )
    .unwrap()
}

fn only(r: Vec<Restored>, name: &str) -> Restored {
    r.into_iter().find(|x| x.name == name).unwrap()
}

#[test]
fn deb_file_is_extracted_pinned_and_then_restored_from_the_pin() {
    let apt = FakeApt::new();
    apt.publish(
        "fake-firmware",
        "1.0-1",
        &[("usr/share/fake/fw.bin", b"ROM v1")],
    );
    let cache = tempfile::tempdir().unwrap();
    let unlocked = Catalog::parse(FW_MANIFEST, "m", None).unwrap();

    let r = restorer(cache.path(), unlocked, &apt, false);
    let first = r.restore(&[]).unwrap();
    let lock = r.updated_lock(&first);

    let fw = only(first, "fw");
    assert_eq!(fw.outcome, Outcome::Extracted);
    assert_eq!(std::fs::read(&fw.path).unwrap(), b"ROM v1");
    let pinned = lock.get("fw").unwrap();
    assert_eq!(pinned.debs[0].package, "fake-firmware");
    assert_eq!(pinned.debs[0].version, "1.0-1");

    // With the lock, a warm cache needs no apt at all.
    let calls_before = apt.calls().len();
    let again = restorer(cache.path(), with_lock(FW_MANIFEST, &lock), &apt, false)
        .restore(&[])
        .unwrap();
    assert_eq!(again[0].outcome, Outcome::Cached);
    assert_eq!(apt.calls().len(), calls_before);

    // A cold cache with the lock asks apt for exactly the pinned version.
    let cold = tempfile::tempdir().unwrap();
    let calls_before = apt.calls().len();
    let from_pin = restorer(cold.path(), with_lock(FW_MANIFEST, &lock), &apt, false)
        .restore(&[])
        .unwrap();
    assert_eq!(from_pin[0].record.sha256, pinned.sha256);
    assert_eq!(
        apt.calls()[calls_before..],
        ["apt-get download -q fake-firmware=1.0-1".to_owned()]
    );
}

#[test]
fn when_the_mirror_moves_on_the_newer_package_is_used_with_a_warning() {
    let apt = FakeApt::new();
    apt.publish(
        "fake-firmware",
        "1.0-1",
        &[("usr/share/fake/fw.bin", b"ROM v1")],
    );
    let seed = tempfile::tempdir().unwrap();
    let r = restorer(
        seed.path(),
        Catalog::parse(FW_MANIFEST, "m", None).unwrap(),
        &apt,
        false,
    );
    let lock = r.updated_lock(&r.restore(&[]).unwrap());
    apt.unpublish("fake-firmware", "1.0-1");
    apt.publish(
        "fake-firmware",
        "1.0-2",
        &[("usr/share/fake/fw.bin", b"ROM v2")],
    );
    let cache = tempfile::tempdir().unwrap();

    let moved = restorer(cache.path(), with_lock(FW_MANIFEST, &lock), &apt, false)
        .restore(&[])
        .unwrap();
    let again = restorer(cache.path(), with_lock(FW_MANIFEST, &lock), &apt, false)
        .restore(&[])
        .unwrap();
    let offline = restorer(cache.path(), with_lock(FW_MANIFEST, &lock), &apt, true)
        .restore(&[])
        .unwrap();

    assert_eq!(moved[0].outcome, Outcome::Extracted);
    assert_eq!(std::fs::read(&moved[0].path).unwrap(), b"ROM v2");
    assert_eq!(moved[0].record.debs[0].version, "1.0-2");
    assert!(
        moved[0].warnings.iter().any(|w| w.contains(
            "fake-firmware 1.0-1, which apt cannot fetch any more; using fake-firmware 1.0-2"
        )),
        "{:?}",
        moved[0].warnings
    );
    assert_eq!(again[0].outcome, Outcome::Cached);
    assert_eq!(offline[0].outcome, Outcome::Cached);
    // 1.0-1 for the seed, then 1.0-1 (refused) and 1.0-2 once; never 1.0-2 again.
    let fetched_v2 = apt
        .calls()
        .iter()
        .filter(|c| *c == "apt-get download -q fake-firmware=1.0-2")
        .count();
    assert_eq!(fetched_v2, 1);
    // Tests resolve the newer file.
    let resolver = Resolver::new(
        Cache::new(cache.path()),
        None,
        with_lock(FW_MANIFEST, &lock),
    );
    assert_eq!(
        std::fs::read(resolver.resolve_name("fw").unwrap()).unwrap(),
        b"ROM v2"
    );
}

#[test]
fn a_locked_version_with_other_bytes_is_refused() {
    let apt = FakeApt::new();
    apt.publish(
        "fake-firmware",
        "1.0-1",
        &[("usr/share/fake/fw.bin", b"ROM v1")],
    );
    let seed = tempfile::tempdir().unwrap();
    let r = restorer(
        seed.path(),
        Catalog::parse(FW_MANIFEST, "m", None).unwrap(),
        &apt,
        false,
    );
    let lock = r.updated_lock(&r.restore(&[]).unwrap());
    // Same name and version, different contents.
    apt.publish(
        "fake-firmware",
        "1.0-1",
        &[("usr/share/fake/fw.bin", b"EVIL")],
    );
    let cache = tempfile::tempdir().unwrap();

    let err = restorer(cache.path(), with_lock(FW_MANIFEST, &lock), &apt, false)
        .restore(&[])
        .unwrap_err();

    let RestoreError::Artifact { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(**source, RestoreError::DebMismatch { .. }),
        "{source}"
    );
    let cache = Cache::new(cache.path());
    assert!(cache.artifact_ref("fw").unwrap().is_none());
    assert!(cache.deb_refs().unwrap().is_empty());
}

#[test]
fn locked_inputs_that_give_other_bytes_are_not_reproducible() {
    let apt = FakeApt::new();
    apt.publish(
        "fake-firmware",
        "1.0-1",
        &[("usr/share/fake/fw.bin", b"ROM v1")],
    );
    let seed = tempfile::tempdir().unwrap();
    let r = restorer(
        seed.path(),
        Catalog::parse(FW_MANIFEST, "m", None).unwrap(),
        &apt,
        false,
    );
    let mut lock = r.updated_lock(&r.restore(&[]).unwrap());
    lock.artifacts.get_mut("fw").unwrap().sha256 = artifacts::hash::Sha256::of(b"something else");
    let cache = tempfile::tempdir().unwrap();

    let err = restorer(cache.path(), with_lock(FW_MANIFEST, &lock), &apt, false)
        .restore(&[])
        .unwrap_err();

    let RestoreError::Artifact { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(**source, RestoreError::NotReproducible { .. }),
        "{source}"
    );
    assert!(
        Cache::new(cache.path())
            .artifact_ref("fw")
            .unwrap()
            .is_none()
    );
}

#[test]
fn missing_apt_is_explained() {
    let cache = tempfile::tempdir().unwrap();
    let r = Restorer::new(
        Cache::new(cache.path()),
        Catalog::parse(FW_MANIFEST, "m", None).unwrap(),
        RestoreOptions {
            apt: Apt {
                apt_get: "/nonexistent/apt-get".into(),
                apt_cache: "/nonexistent/apt-cache".into(),
            },
            ..RestoreOptions::default()
        },
        Progress::Silent,
    );

    let err = r.restore(&[]).unwrap_err();

    let RestoreError::Artifact { source, .. } = &err else {
        panic!("{err:?}")
    };
    let msg = source.to_string();
    assert!(
        msg.contains("needs apt-get and apt-cache (a Debian or Ubuntu host"),
        "{msg}"
    );
}

/// A minimal ELF64 object with a `.modinfo` section, as the kernel's module loader reads it.
fn module(info: &[&str]) -> Vec<u8> {
    let mut modinfo = Vec::new();
    for s in info {
        modinfo.extend_from_slice(s.as_bytes());
        modinfo.push(0);
    }
    let names = b"\0.modinfo\0.shstrtab\0";
    let mut elf = vec![0u8; 64];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    let modinfo_at = elf.len();
    elf.extend_from_slice(&modinfo);
    let names_at = elf.len();
    elf.extend_from_slice(names);
    let shoff = elf.len() as u64;
    elf[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
    elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
    for (name, at, len) in [
        (0u32, 0usize, 0usize),
        (1, modinfo_at, modinfo.len()),
        (10, names_at, names.len()),
    ] {
        let mut h = [0u8; 64];
        h[..4].copy_from_slice(&name.to_le_bytes());
        h[24..32].copy_from_slice(&(at as u64).to_le_bytes());
        h[32..40].copy_from_slice(&(len as u64).to_le_bytes());
        elf.extend_from_slice(&h);
    }
    elf
}

const GUEST_MANIFEST: &str = r#"
[artifacts.kernel]
format = "bzimage"
source = "deb"
metapackage = "linux-image-fake"
file = "boot/vmlinuz-*"

[artifacts.initrd]
format = "cpio-newc"
source = "build"
recipe = "initramfs"
kernel = "kernel"
busybox = "busybox-static"
modules = ["sd_mod"]
"#;

fn publish_kernel(apt: &FakeApt, release: &str, version: &str) {
    let m = |rel: &str| format!("lib/modules/{release}/{rel}");
    let pv_mmio = module(&["name=pvpanic_mmio", "depends=pvpanic"]);
    let pv = module(&["name=pvpanic", "depends="]);
    let sd = module(&["name=sd_mod", "depends=scsi_mod"]);
    let scsi = module(&["name=scsi_mod", "depends="]);
    let package = format!("linux-image-{release}");
    apt.publish(
        &package,
        version,
        &[
            (
                &format!("boot/vmlinuz-{release}"),
                format!("KERNEL {release}").as_bytes(),
            ),
            (&m("kernel/drivers/misc/pvpanic/pvpanic-mmio.ko"), &pv_mmio),
            (&m("kernel/drivers/misc/pvpanic/pvpanic.ko"), &pv),
            (&m("kernel/drivers/scsi/sd_mod.ko"), &sd),
            (&m("kernel/drivers/scsi/scsi_mod.ko"), &scsi),
            (&m("modules.builtin"), b"kernel/lib/crc32.ko\n"),
        ],
    );
    apt.set_metapackage("linux-image-fake", &package);
}

#[test]
fn initramfs_follows_its_kernel_when_the_kernel_package_moves_on() {
    let apt = FakeApt::new();
    apt.publish(
        "busybox-static",
        "1:1.0-1",
        &[("bin/busybox", b"\x7fELF busybox")],
    );
    publish_kernel(&apt, "9.1-fake", "9.1-1");
    let seed = tempfile::tempdir().unwrap();
    let r = restorer(
        seed.path(),
        Catalog::parse(GUEST_MANIFEST, "m", None).unwrap(),
        &apt,
        false,
    );
    let first = r.restore(&[]).unwrap();
    let lock = r.updated_lock(&first);
    let first_initrd = only(first, "initrd");
    let cpio = std::fs::read(&first_initrd.path).unwrap();
    let text = String::from_utf8_lossy(&cpio);
    assert!(text.contains("lib/modules/9.1-fake/kernel/drivers/scsi/sd_mod.ko"));
    assert!(text.contains("kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko\n"));
    assert_eq!(first_initrd.outcome, Outcome::Built);

    // The ABI moves: a new kernel package behind the same metapackage.
    apt.unpublish("linux-image-9.1-fake", "9.1-1");
    publish_kernel(&apt, "9.2-fake", "9.2-1");
    let cache = tempfile::tempdir().unwrap();
    let moved = restorer(cache.path(), with_lock(GUEST_MANIFEST, &lock), &apt, false)
        .restore(&[])
        .unwrap();

    let kernel = moved.iter().find(|r| r.name == "kernel").unwrap();
    let initrd = moved.iter().find(|r| r.name == "initrd").unwrap();
    assert_eq!(std::fs::read(&kernel.path).unwrap(), b"KERNEL 9.2-fake");
    assert_eq!(kernel.record.debs[0].package, "linux-image-9.2-fake");
    assert_eq!(initrd.record.debs[0], kernel.record.debs[0]);
    assert!(
        String::from_utf8_lossy(&std::fs::read(&initrd.path).unwrap())
            .contains("lib/modules/9.2-fake/kernel/drivers/scsi/sd_mod.ko")
    );
    assert!(kernel.warnings.iter().any(|w| w.contains("--update-lock")));
    // busybox was still at its locked version: no warning about it.
    assert!(
        !initrd.warnings.iter().any(|w| w.contains("busybox")),
        "{:?}",
        initrd.warnings
    );
    let resolver = Resolver::new(
        Cache::new(cache.path()),
        None,
        with_lock(GUEST_MANIFEST, &lock),
    );
    assert_eq!(resolver.resolve_name("initrd").unwrap(), initrd.path);
}

const MEDIA_MANIFEST: &str = r#"
[artifacts.k]
format = "bzimage"
source = "deb"
package = "fake-kernel"
file = "boot/vmlinuz"

[artifacts.i]
format = "cpio-newc"
source = "deb"
package = "fake-initrd"
file = "boot/initrd.cpio"

[artifacts.disk]
format = "vhd"
source = "build"
recipe = "bios-disk"
kernel = "k"
initrd = "i"
cmdline = "console=ttyS0 agar.poweroff"

[artifacts.iso]
format = "iso"
source = "build"
recipe = "bios-iso"
kernel = "k"
initrd = "i"
"#;

fn publish_media_inputs(apt: &FakeApt) {
    let mut kernel = vec![0u8; 4096];
    kernel[0x202..0x206].copy_from_slice(b"HdrS");
    let mut a = artifacts::recipes::cpio::Archive::new();
    a.add(
        "init",
        0o755,
        artifacts::recipes::cpio::Node::File(b"#!/bin/sh\n".to_vec()),
    );
    apt.publish("fake-kernel", "1", &[("boot/vmlinuz", &kernel)]);
    apt.publish("fake-initrd", "1", &[("boot/initrd.cpio", &a.to_bytes())]);
}

#[test]
fn bios_media_are_built_from_their_inputs_and_pinned_with_the_tool_versions() {
    let apt = FakeApt::new();
    publish_media_inputs(&apt);
    let cache = tempfile::tempdir().unwrap();
    let unlocked = Catalog::parse(MEDIA_MANIFEST, "m", None).unwrap();

    let r = restorer(cache.path(), unlocked, &apt, false);
    let first = r.restore(&[]).unwrap();
    let lock = r.updated_lock(&first);

    let disk = only(first.clone(), "disk");
    assert_eq!(disk.outcome, Outcome::Built);
    assert_eq!(
        artifacts::media::tools::Toolchain::system()
            .versions(artifacts::media::MediumKind::Disk)
            .unwrap(),
        disk.record.tools
    );
    let pinned = lock.get("disk").unwrap();
    assert!(pinned.tools.iter().any(|t| t.package == "dosfstools"));
    let packages: Vec<&str> = pinned.debs.iter().map(|d| d.package.as_str()).collect();
    assert_eq!(packages, ["fake-kernel", "fake-initrd"]);
    assert!(
        lock.get("iso")
            .unwrap()
            .tools
            .iter()
            .any(|t| t.package == "xorriso")
    );
    assert_eq!(
        std::fs::read(&disk.path).unwrap().get(..8),
        Some(&b"conectix"[..]),
        "a dynamic VHD starts with its footer copy"
    );

    // With the lock and a warm cache: nothing to do, no apt, even offline.
    let calls = apt.calls().len();
    let again = restorer(cache.path(), with_lock(MEDIA_MANIFEST, &lock), &apt, true)
        .restore(&[])
        .unwrap();
    assert!(
        again.iter().all(|x| x.outcome == Outcome::Cached),
        "{again:?}"
    );
    assert_eq!(apt.calls().len(), calls);

    // A cold cache builds the same bytes the lock pins.
    let cold = tempfile::tempdir().unwrap();
    let rebuilt = restorer(cold.path(), with_lock(MEDIA_MANIFEST, &lock), &apt, false)
        .restore(&["disk".into(), "iso".into()])
        .unwrap();
    for x in &rebuilt {
        assert_eq!(x.outcome, Outcome::Built);
        assert_eq!(x.record.sha256, lock.get(&x.name).unwrap().sha256);
        assert!(x.warnings.is_empty(), "{:?}", x.warnings);
    }
}

#[test]
fn bios_media_with_other_bytes_are_refused_unless_the_tools_differ() {
    let apt = FakeApt::new();
    publish_media_inputs(&apt);
    let unlocked = Catalog::parse(MEDIA_MANIFEST, "m", None).unwrap();
    let seed = tempfile::tempdir().unwrap();
    let r = restorer(seed.path(), unlocked, &apt, false);
    let lock = r.updated_lock(&r.restore(&["disk".into()]).unwrap());

    // Same inputs, same tools, other bytes: not reproducible.
    let mut wrong = lock.clone();
    if let Some(d) = wrong.artifacts.get_mut("disk") {
        d.sha256 = artifacts::hash::Sha256::of(b"something else");
    }
    let cache = tempfile::tempdir().unwrap();
    let e = restorer(cache.path(), with_lock(MEDIA_MANIFEST, &wrong), &apt, false)
        .restore(&["disk".into()])
        .unwrap_err();
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(chain.contains("not deterministic"), "{chain}");

    // Locked with other tool versions: the host's build is used, with a warning.
    let mut other_tools = wrong.clone();
    if let Some(d) = other_tools.artifacts.get_mut("disk") {
        for t in &mut d.tools {
            if t.package == "dosfstools" {
                t.version = "4.1-2".into();
            }
        }
    }
    let cache = tempfile::tempdir().unwrap();
    let built = restorer(
        cache.path(),
        with_lock(MEDIA_MANIFEST, &other_tools),
        &apt,
        false,
    )
    .restore(&["disk".into()])
    .unwrap();
    let disk = only(built, "disk");
    assert_eq!(disk.record.sha256, lock.get("disk").unwrap().sha256);
    assert!(
        disk.warnings
            .iter()
            .any(|w| w.contains("dosfstools 4.1-2 -> ") && w.contains("--update-lock")),
        "{:?}",
        disk.warnings
    );
    let resolver = Resolver::new(
        Cache::new(cache.path()),
        None,
        with_lock(MEDIA_MANIFEST, &other_tools),
    );
    assert_eq!(resolver.resolve_name("disk").unwrap(), disk.path);
}

#[test]
fn media_recipes_check_their_manifest_entries() {
    let bad = |text: &str| Catalog::parse(text, "m", None).unwrap_err().to_string();
    let base = MEDIA_MANIFEST.replace("format = \"iso\"", "format = \"vhd\"");
    assert!(
        bad(&base).contains("recipe `bios-iso` makes format `iso`, not `vhd`"),
        "{}",
        bad(&base)
    );
    let swapped = MEDIA_MANIFEST.replace(
        "kernel = \"k\"\ninitrd = \"i\"\ncmdline",
        "kernel = \"i\"\ninitrd = \"i\"\ncmdline",
    );
    assert!(
        bad(&swapped).contains("`i` must be an artifact with format = \"bzimage\""),
        "{}",
        bad(&swapped)
    );
    let newline = MEDIA_MANIFEST.replace("agar.poweroff\"", "agar.poweroff\\nDEFAULT x\"");
    assert!(
        bad(&newline).contains("contains '\\n'"),
        "{}",
        bad(&newline)
    );
    let stray = MEDIA_MANIFEST.replace(
        "recipe = \"bios-iso\"",
        "recipe = \"bios-iso\"\nbusybox = \"b\"",
    );
    assert!(
        bad(&stray).contains("`busybox` does not apply"),
        "{}",
        bad(&stray)
    );
}
