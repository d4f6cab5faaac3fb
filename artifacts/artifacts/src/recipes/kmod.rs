//! Kernel modules: the `.modinfo` section of a `.ko` (ELF64) and dependency closures.
//!
//! A Debian kernel package ships modules but no `modules.dep` (depmod runs at install time),
//! so the recipe reads each module's `depends=` from its `.modinfo` section and writes
//! `modules.dep` itself. Module files are untrusted input: every offset and size is checked.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

/// Why a module could not be read or a closure computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// Not an ELF64 little-endian relocatable with a readable `.modinfo`.
    #[error("{path}: {reason}")]
    BadModule {
        /// Path in the package.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A requested or depended-on module is not in the package.
    #[error("module `{module}` is not in the kernel package{}", needed_by.as_ref().map(|n| format!(" (needed by `{n}`)")).unwrap_or_default())]
    NotFound {
        /// The module.
        module: String,
        /// Who depends on it.
        needed_by: Option<String>,
    },
}

/// Module names compare with `-` and `_` as the same character, as the kernel does.
pub fn canonical_name(name: &str) -> String {
    name.replace('-', "_")
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Section `index`'s (name offset, file offset, size).
fn section(
    elf: &[u8],
    shoff: usize,
    shentsize: usize,
    index: usize,
) -> Option<(u32, usize, usize)> {
    let base = shoff.checked_add(index.checked_mul(shentsize)?)?;
    let name = u32_at(elf, base)?;
    let offset = usize::try_from(u64_at(elf, base.checked_add(24)?)?).ok()?;
    let size = usize::try_from(u64_at(elf, base.checked_add(32)?)?).ok()?;
    Some((name, offset, size))
}

/// The `key=value` strings of a module's `.modinfo` section.
pub fn modinfo(path: &str, elf: &[u8]) -> Result<Vec<(String, String)>, ModuleError> {
    let bad = |reason: &str| ModuleError::BadModule {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if elf.get(0..4) != Some(b"\x7fELF") {
        return Err(bad("not an ELF file"));
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err(bad("not a 64-bit little-endian ELF file"));
    }
    let shoff = u64_at(elf, 0x28).and_then(|v| usize::try_from(v).ok());
    let shentsize = u16_at(elf, 0x3a).map(usize::from);
    let shnum = u16_at(elf, 0x3c).map(usize::from);
    let shstrndx = u16_at(elf, 0x3e).map(usize::from);
    let (Some(shoff), Some(shentsize), Some(shnum), Some(shstrndx)) =
        (shoff, shentsize, shnum, shstrndx)
    else {
        return Err(bad("truncated ELF header"));
    };
    if shentsize < 64 {
        return Err(bad("section headers too small"));
    }
    let (_, strtab_off, strtab_size) =
        section(elf, shoff, shentsize, shstrndx).ok_or_else(|| bad("bad section name table"))?;
    let strtab = strtab_off
        .checked_add(strtab_size)
        .and_then(|end| elf.get(strtab_off..end))
        .ok_or_else(|| bad("section name table outside the file"))?;
    for i in 0..shnum {
        let (name_off, off, size) = section(elf, shoff, shentsize, i)
            .ok_or_else(|| bad("section header outside the file"))?;
        let name = usize::try_from(name_off)
            .ok()
            .and_then(|n| strtab.get(n..))
            .and_then(|s| s.split(|&b| b == 0).next())
            .unwrap_or_default();
        if name != b".modinfo" {
            continue;
        }
        let data = off
            .checked_add(size)
            .and_then(|end| elf.get(off..end))
            .ok_or_else(|| bad(".modinfo outside the file"))?;
        return Ok(data
            .split(|&b| b == 0)
            .filter_map(|s| {
                let s = std::str::from_utf8(s).ok()?;
                let (k, v) = s.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect());
    }
    Err(bad("no .modinfo section"))
}

/// One module as the recipe sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Canonical name (`_` for `-`).
    pub name: String,
    /// Path relative to `lib/modules/<version>/`, with `.ko` (decompressed) as the suffix.
    pub rel_path: String,
    /// Canonical names of the modules it depends on.
    pub depends: Vec<String>,
}

impl ModuleInfo {
    /// Builds the record from a module's path (relative to `lib/modules/<version>/`, `.ko`
    /// suffix) and its decompressed contents.
    pub fn read(rel_path: &str, elf: &[u8]) -> Result<Self, ModuleError> {
        let info = modinfo(rel_path, elf)?;
        let from_file = rel_path
            .rsplit('/')
            .next()
            .unwrap_or(rel_path)
            .trim_end_matches(".ko");
        let name = info
            .iter()
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v.as_str())
            .unwrap_or(from_file);
        let depends = info
            .iter()
            .filter(|(k, _)| k == "depends")
            .flat_map(|(_, v)| v.split(','))
            .filter(|d| !d.is_empty())
            .map(canonical_name)
            .collect();
        Ok(Self {
            name: canonical_name(name),
            rel_path: rel_path.to_owned(),
            depends,
        })
    }
}

/// The requested modules and everything they depend on, in an order where every module comes
/// after its dependencies.
pub fn closure(
    available: &BTreeMap<String, ModuleInfo>,
    requested: &[String],
) -> Result<Vec<String>, ModuleError> {
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    for r in requested {
        let r = canonical_name(r);
        visit(
            available,
            &r,
            None,
            &mut done,
            &mut BTreeSet::new(),
            &mut order,
        )?;
    }
    Ok(order)
}

fn visit(
    available: &BTreeMap<String, ModuleInfo>,
    name: &str,
    needed_by: Option<&str>,
    done: &mut BTreeSet<String>,
    in_progress: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) -> Result<(), ModuleError> {
    if done.contains(name) || in_progress.contains(name) {
        // A dependency cycle cannot load anyway; modprobe reports it at boot.
        return Ok(());
    }
    let info = available.get(name).ok_or_else(|| ModuleError::NotFound {
        module: name.to_owned(),
        needed_by: needed_by.map(str::to_owned),
    })?;
    in_progress.insert(name.to_owned());
    for dep in &info.depends {
        visit(available, dep, Some(name), done, in_progress, order)?;
    }
    in_progress.remove(name);
    done.insert(name.to_owned());
    order.push(name.to_owned());
    Ok(())
}

/// `modules.dep` for `modules`: one `path: deps...` line per module, in the order given,
/// dependencies listed the way depmod lists them (the one to load last first).
pub fn modules_dep(available: &BTreeMap<String, ModuleInfo>, modules: &[String]) -> String {
    let mut out = String::new();
    let mut sorted: Vec<&ModuleInfo> = modules.iter().filter_map(|m| available.get(m)).collect();
    sorted.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    for info in sorted {
        // All transitive dependencies, each after everything that needs it.
        let deps = closure(available, &info.depends).unwrap_or_default();
        let paths: Vec<&str> = deps
            .iter()
            .rev()
            .filter_map(|d| available.get(d).map(|m| m.rel_path.as_str()))
            .collect();
        out.push_str(&info.rel_path);
        out.push(':');
        for p in paths {
            out.push(' ');
            out.push_str(p);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 relocatable with a `.modinfo` section holding `info`.
    pub(crate) fn fake_module(info: &[&str]) -> Vec<u8> {
        let mut modinfo = Vec::new();
        for s in info {
            modinfo.extend_from_slice(s.as_bytes());
            modinfo.push(0);
        }
        let shstrtab = b"\0.modinfo\0.shstrtab\0".to_vec();
        let mut elf = vec![0u8; 64];
        elf[0..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        let modinfo_off = elf.len();
        elf.extend_from_slice(&modinfo);
        let shstrtab_off = elf.len();
        elf.extend_from_slice(&shstrtab);
        let shoff = elf.len();
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, modinfo_off, modinfo.len());
        sh(10, shstrtab_off, shstrtab.len());
        elf
    }

    fn table(mods: &[(&str, &str, &str)]) -> BTreeMap<String, ModuleInfo> {
        mods.iter()
            .map(|(name, path, deps)| {
                let elf = fake_module(&[&format!("name={name}"), &format!("depends={deps}")]);
                let info = ModuleInfo::read(path, &elf).unwrap();
                (info.name.clone(), info)
            })
            .collect()
    }

    #[test]
    fn reads_name_and_depends_from_modinfo() {
        let elf = fake_module(&["license=GPL", "depends=scsi_mod,scsi_common", "name=sd_mod"]);
        let info = ModuleInfo::read("kernel/drivers/scsi/sd_mod.ko", &elf).unwrap();
        assert_eq!(info.name, "sd_mod");
        assert_eq!(info.depends, vec!["scsi_mod", "scsi_common"]);
    }

    #[test]
    fn closure_orders_dependencies_first_and_canonicalizes_dashes() {
        let t = table(&[
            ("ata_piix", "kernel/drivers/ata/ata_piix.ko", "libata"),
            (
                "libata",
                "kernel/drivers/ata/libata.ko",
                "scsi_mod,scsi_common",
            ),
            ("scsi_mod", "kernel/drivers/scsi/scsi_mod.ko", "scsi_common"),
            ("scsi_common", "kernel/drivers/scsi/scsi_common.ko", ""),
            (
                "pvpanic_mmio",
                "kernel/drivers/misc/pvpanic/pvpanic-mmio.ko",
                "pvpanic",
            ),
            ("pvpanic", "kernel/drivers/misc/pvpanic/pvpanic.ko", ""),
        ]);
        let order = closure(&t, &["ata_piix".into(), "pvpanic-mmio".into()]).unwrap();
        assert_eq!(
            order,
            vec![
                "scsi_common",
                "scsi_mod",
                "libata",
                "ata_piix",
                "pvpanic",
                "pvpanic_mmio"
            ]
        );
        let dep = modules_dep(&t, &order);
        assert!(
            dep.contains(
                "kernel/drivers/ata/ata_piix.ko: kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko\n"
            ),
            "{dep}"
        );
        assert!(
            dep.contains("kernel/drivers/scsi/scsi_common.ko:\n"),
            "{dep}"
        );
    }

    #[test]
    fn missing_dependency_names_who_needs_it() {
        let t = table(&[("a", "kernel/a.ko", "b")]);
        let e = closure(&t, &["a".into()]).unwrap_err();
        assert_eq!(
            e,
            ModuleError::NotFound {
                module: "b".into(),
                needed_by: Some("a".into())
            }
        );
    }

    #[test]
    fn truncated_or_lying_elf_is_an_error_not_a_panic() {
        let good = fake_module(&["name=x", "depends="]);
        for cut in 0..good.len() {
            let _ = modinfo("x.ko", &good[..cut]);
        }
        let mut lying = good.clone();
        lying[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(modinfo("x.ko", &lying).is_err());
        let mut lying = good.clone();
        lying[0x3e..0x40].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(modinfo("x.ko", &lying).is_err());
        // Section count larger than the table: .modinfo (index 1) is still found first.
        let mut lying = good;
        lying[0x3c..0x3e].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(modinfo("x.ko", &lying).is_ok());
    }
}
