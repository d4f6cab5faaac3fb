use std::process::Command;

use super::*;

const TABLES_GPA: u64 = 0x07fe_0000;
const RSDP_GPA: u64 = 0x000e_0000;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A built set of tables with lookups by guest-physical address.
struct Built {
    tables: AcpiTables,
}

impl Built {
    fn new(config: &AcpiConfig) -> Self {
        Self {
            tables: AcpiTables::build(config, TABLES_GPA, RSDP_GPA).unwrap(),
        }
    }

    fn rsdp(&self) -> &[u8] {
        &self.tables.regions[1].1
    }

    /// The table at `gpa`, by its own length field.
    fn table_at(&self, gpa: u64) -> &[u8] {
        let (base, bytes) = &self.tables.regions[0];
        let off = usize::try_from(gpa - base).unwrap();
        let len = u32_at(bytes, off + 4) as usize;
        &bytes[off..off + len]
    }

    /// Tables the XSDT lists, plus the DSDT and FACS the FADT points at.
    fn all(&self) -> Vec<&[u8]> {
        let xsdt = self.table_at(u64_at(self.rsdp(), 24));
        let mut out: Vec<&[u8]> = xsdt[36..]
            .chunks(8)
            .map(|c| self.table_at(u64::from_le_bytes(c.try_into().unwrap())))
            .collect();
        let fadt = out[0];
        out.push(self.table_at(u64_at(fadt, tables::fadt::X_DSDT)));
        out.push(self.table_at(u64_at(fadt, tables::fadt::X_FIRMWARE_CTRL)));
        out.push(xsdt);
        out.push(self.table_at(u64::from(u32_at(self.rsdp(), 16))));
        out
    }

    fn find(&self, sig: &[u8; 4]) -> &[u8] {
        self.all().into_iter().find(|t| &t[..4] == sig).unwrap()
    }
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
}

/// Disassembles `table` with `iasl -d`; `None` (with a message) when iasl is not installed.
fn iasl_disassemble(table: &[u8]) -> Option<String> {
    if Command::new("iasl").arg("-v").output().is_err() {
        eprintln!("SKIPPED: iasl not found; install acpica-tools to check the AML (CI does)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = String::from_utf8_lossy(&table[..4]).to_lowercase();
    let dat = dir.path().join(format!("{name}.dat"));
    std::fs::write(&dat, table).unwrap();
    let out = Command::new("iasl")
        .arg("-d")
        .arg(&dat)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "iasl -d failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(std::fs::read_to_string(dir.path().join(format!("{name}.dsl"))).unwrap())
}

/// Recompiles a disassembled DSDT; returns iasl's output, asserting success.
fn iasl_compile(dsl: &str) -> Option<String> {
    if Command::new("iasl").arg("-v").output().is_err() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dsdt.dsl");
    std::fs::write(&path, dsl).unwrap();
    let out = Command::new("iasl")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iasl failed to compile: {text}");
    Some(text)
}

/// Collapses whitespace so assertions do not depend on iasl's column alignment.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A data-table disassembly without the `[offset offset length]` column, squashed.
fn fields(s: &str) -> String {
    let lines: Vec<&str> = s
        .lines()
        .map(|l| {
            let t = l.trim_start();
            match (t.starts_with('['), t.find(']')) {
                (true, Some(end)) => &t[end + 1..],
                _ => t,
            }
        })
        .collect();
    squash(&lines.join("\n"))
}

#[test]
fn rsdp_points_at_rsdt_and_xsdt_with_valid_checksums() {
    let b = Built::new(&AcpiConfig::pc(2));
    let rsdp = b.rsdp();
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(rsdp[15], 2, "revision 2");
    assert_eq!(sum(&rsdp[..20]), 0, "ACPI 1.0 checksum");
    assert_eq!(sum(rsdp), 0, "extended checksum");
    assert_eq!(u32_at(rsdp, 20), 36);
    assert_eq!(b.tables.rsdp_address, RSDP_GPA);
    assert_eq!(&b.table_at(u64_at(rsdp, 24))[..4], b"XSDT");
    assert_eq!(&b.table_at(u64::from(u32_at(rsdp, 16)))[..4], b"RSDT");
}

#[test]
fn every_table_checksums_and_the_fadt_points_at_dsdt_and_facs() {
    let b = Built::new(&AcpiConfig::pc(4));
    let sigs: Vec<&[u8]> = b.all().iter().map(|t| &t[..4]).collect();
    assert_eq!(
        sigs,
        [b"FACP", b"APIC", b"DSDT", b"FACS", b"XSDT", b"RSDT"].map(|s| &s[..])
    );
    for t in b.all() {
        if &t[..4] != b"FACS" {
            assert_eq!(sum(t), 0, "{} checksum", String::from_utf8_lossy(&t[..4]));
        }
    }
    let fadt = b.find(b"FACP");
    assert_eq!(fadt.len(), tables::FADT_LEN);
    assert_eq!(
        u64::from(u32_at(fadt, tables::fadt::DSDT)),
        u64_at(fadt, tables::fadt::X_DSDT)
    );
    let facs = u64_at(fadt, tables::fadt::X_FIRMWARE_CTRL);
    assert_eq!(facs % 64, 0, "FACS is 64-byte aligned");
    let range = b.tables.tables_range();
    assert!(range.contains(&facs));
    assert_eq!(range.start, TABLES_GPA);
}

#[test]
fn dsdt_disassembles_with_the_machine_devices() {
    let b = Built::new(&AcpiConfig::pc(2));
    let Some(dsl) = iasl_disassemble(b.find(b"DSDT")) else {
        return;
    };
    let s = squash(&dsl);
    assert!(
        s.contains(
            "Name (\\_S5, Package (0x04) // _S5_: S5 System State { 0x05, 0x05, Zero, Zero })"
        ),
        "{dsl}"
    );
    assert!(s.contains("Scope (\\_SB)"));
    assert!(s.contains("Device (C000) { Name (_HID, \"ACPI0007\""));
    assert!(s.contains("Device (C001)"));
    assert!(!s.contains("Device (C002)"));
    for (name, base, irq) in [
        ("COM1", "0x03F8", 4),
        ("COM2", "0x02F8", 3),
        ("COM3", "0x03E8", 4),
        ("COM4", "0x02E8", 3),
    ] {
        let want = format!(
            "Device ({name}) {{ Name (_HID, EisaId (\"PNP0501\") /* 16550A-compatible COM Serial Port */) // _HID: Hardware ID"
        );
        assert!(s.contains(&want), "{name}: {dsl}");
        let io = format!(
            "IO (Decode16, {base}, // Range Minimum {base}, // Range Maximum 0x01, // Alignment 0x08, // Length ) IRQNoFlags () {{{irq}}}"
        );
        assert!(s.contains(&io), "{name} resources: {dsl}");
    }
    assert!(s.contains(
        "Device (PEVT) { Name (_HID, \"QEMU0001\") // _HID: Hardware ID Name (_UID, Zero)"
    ));
    assert!(s.contains("Method (_STA, 0, NotSerialized) // _STA: Status { Return (0x0F) }"));
    assert!(s.contains(
        "0x0505, // Range Minimum 0x0505, // Range Maximum 0x01, // Alignment 0x01, // Length"
    ));
    assert!(s.contains("EisaId (\"PNP0303\")"));
    assert!(s.contains("EisaId (\"PNP0F13\")"));
    assert!(s.contains("IRQNoFlags () {12}"));
    assert!(s.contains("EisaId (\"PNP0B00\")"));
    // The disassembly compiles back without errors.
    if let Some(out) = iasl_compile(&dsl) {
        assert!(out.contains("0 Errors"), "{out}");
    }
}

#[test]
fn fadt_disassembles_with_pm_blocks_reset_register_and_boot_flags() {
    let b = Built::new(&AcpiConfig::pc(1));
    let Some(dsl) = iasl_disassemble(b.find(b"FACP")) else {
        return;
    };
    let s = fields(&dsl);
    for want in [
        "Revision : 06",
        "SCI Interrupt : 0009",
        "SMI Command Port : 00000000",
        "PM1A Event Block Address : 00000600",
        "PM1A Control Block Address : 00000604",
        "PM Timer Block Address : 00000608",
        "GPE0 Block Address : 00000620",
        "PM1 Event Block Length : 04",
        "PM1 Control Block Length : 02",
        "PM Timer Block Length : 04",
        "GPE0 Block Length : 04",
        "RTC Century Index : 32",
        "Legacy Devices Supported (V2) : 1",
        "8042 Present on ports 60/64 (V2) : 1",
        "32-bit PM Timer (V1) : 0",
        "Reset Register Supported (V2) : 1",
        "Hardware Reduced (V5) : 0",
        "Reset Register : [Generic Address Structure] Space ID : 01 [SystemIO] Bit Width : 08",
        "Address : 0000000000000CF9 Value to cause reset : 06",
        "PM Timer Block : [Generic Address Structure] Space ID : 01 [SystemIO] Bit Width : 20",
    ] {
        assert!(s.contains(want), "missing {want:?} in {dsl}");
    }
    let dsdt = u64_at(b.find(b"FACP"), tables::fadt::X_DSDT);
    assert!(s.contains(&format!("DSDT Address : {dsdt:016X}")));
}

#[test]
fn madt_disassembles_with_lapics_ioapic_overrides_and_nmi() {
    let b = Built::new(&AcpiConfig::pc(3));
    let Some(dsl) = iasl_disassemble(b.find(b"APIC")) else {
        return;
    };
    let s = fields(&dsl);
    assert!(s.contains("Local Apic Address : FEE00000"));
    assert!(s.contains("PC-AT Compatibility : 1"));
    assert_eq!(s.matches("[Processor Local APIC]").count(), 3);
    for id in 0..3 {
        assert!(s.contains(&format!("Processor ID : {id:02X}")));
        assert!(s.contains(&format!("Local Apic ID : {id:02X}")));
    }
    assert!(
        s.contains("[I/O APIC] Length : 0C I/O Apic ID : 03"),
        "{dsl}"
    );
    assert!(s.contains("Address : FEC00000"));
    assert!(
        s.contains("Source : 00 Interrupt : 00000002 Flags (decoded below) : 0000"),
        "{dsl}"
    );
    assert!(
        s.contains("Source : 09 Interrupt : 00000009 Flags (decoded below) : 000D Polarity : 1 Trigger Mode : 3"),
        "{dsl}"
    );
    assert!(s.contains("[Local APIC NMI]"));
    assert!(s.contains("Processor ID : FF"));
    assert!(s.contains("Interrupt Input LINT : 01"));
}

#[test]
fn rsdt_xsdt_and_facs_disassemble() {
    let b = Built::new(&AcpiConfig::pc(1));
    for sig in [b"XSDT", b"RSDT", b"FACS"] {
        let Some(dsl) = iasl_disassemble(b.find(sig)) else {
            return;
        };
        let s = fields(&dsl);
        assert!(s.contains(&format!("Signature : \"{}\"", String::from_utf8_lossy(sig))));
        if sig == b"XSDT" {
            let fadt = u64_at(b.find(b"XSDT"), 36);
            assert!(
                s.contains(&format!("ACPI Table Address 0 : {fadt:016X}")),
                "{dsl}"
            );
        }
    }
}

#[test]
fn vmbus_device_has_its_hid_and_an_empty_crs() {
    let mut config = AcpiConfig::pc(1);
    config.extra_devices.push(devices::vmbus(None));
    let b = Built::new(&config);
    let Some(dsl) = iasl_disassemble(b.find(b"DSDT")) else {
        return;
    };
    // Not recompiled: iasl's compiler insists on 7-8 character _HID strings, but "VMBus" is
    // what Hyper-V firmware declares and what Linux's hv_vmbus matches.
    let s = squash(&dsl);
    assert!(
        s.contains("Device (VMBS) { Name (_HID, \"VMBus\")"),
        "{dsl}"
    );
    assert!(s.contains("Name (_CID, \"VMBus\")"));
    // iasl shows an empty template as the raw end tag.
    assert!(
        s.contains("Name (_CRS, Buffer (0x02) // _CRS: Current Resource Settings { 0x79, 0x00")
    );
}

#[test]
fn pci_root_bridge_resources() {
    let mut config = AcpiConfig::pc(1);
    config
        .extra_devices
        .push(devices::pci_root_bridge(&devices::PciRootInfo {
            mmio32: (0xc000_0000, 0xfebf_ffff),
            mmio64: Some((0x80_0000_0000, 0xff_ffff_ffff)),
            children: vec![],
        }));
    let b = Built::new(&config);
    let Some(dsl) = iasl_disassemble(b.find(b"DSDT")) else {
        return;
    };
    let s = squash(&dsl);
    assert!(s.contains("Device (PCI0) { Name (_HID, EisaId (\"PNP0A03\")"));
    assert!(s.contains("WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0x0000, // Granularity 0x0000, // Range Minimum 0x00FF, // Range Maximum"), "{dsl}");
    assert!(s.contains("IO (Decode16, 0x0CF8, // Range Minimum 0x0CF8, // Range Maximum 0x01, // Alignment 0x08, // Length"));
    assert!(s.contains("0x0000, // Range Minimum 0x0CF7, // Range Maximum"));
    assert!(s.contains("0x0D00, // Range Minimum 0xFFFF, // Range Maximum"));
    assert!(s.contains("0x000A0000, // Range Minimum 0x000BFFFF, // Range Maximum"));
    assert!(s.contains("0xC0000000, // Range Minimum 0xFEBFFFFF, // Range Maximum"));
    assert!(s.contains("QWordMemory (ResourceProducer"));
    assert!(
        s.contains("0x0000008000000000, // Range Minimum 0x000000FFFFFFFFFF, // Range Maximum")
    );
    if let Some(out) = iasl_compile(&dsl) {
        assert!(out.contains("0 Errors, 0 Warnings"), "{out}");
    }
}

#[test]
fn configuration_errors() {
    assert!(matches!(
        AcpiTables::build(&AcpiConfig::pc(0), TABLES_GPA, RSDP_GPA),
        Err(AcpiError::InvalidConfig(_))
    ));
    assert!(matches!(
        AcpiTables::build(&AcpiConfig::pc(256), TABLES_GPA, RSDP_GPA),
        Err(AcpiError::InvalidConfig(_))
    ));
    assert!(matches!(
        AcpiTables::build(&AcpiConfig::pc(1), 0xffff_ff00, RSDP_GPA),
        Err(AcpiError::AddressTooHigh(_))
    ));
    assert!(AcpiTables::build(&AcpiConfig::pc(1), TABLES_GPA, RSDP_GPA + 8).is_err());
    let mut bad = AcpiConfig::pc(1);
    bad.extra_devices.push(aml::Term::device("bad!", vec![]));
    assert!(matches!(
        AcpiTables::build(&bad, TABLES_GPA, RSDP_GPA),
        Err(AcpiError::InvalidName(_))
    ));
}

#[test]
fn unaligned_table_base_is_rounded_up_for_the_facs() {
    let t = AcpiTables::build(&AcpiConfig::pc(1), TABLES_GPA + 8, RSDP_GPA).unwrap();
    assert_eq!(t.tables_range().start, TABLES_GPA + 64);
}

/// Runs a table-loader script the way SeaBIOS's `romfile_loader` does, with the files placed
/// at the given addresses, and returns the patched files.
fn run_loader(lt: &LoaderTables, rsdp_at: u64, tables_at: u64) -> (Vec<u8>, Vec<u8>) {
    let mut files = [lt.rsdp.clone(), lt.tables.clone()];
    let index = |name: &[u8]| {
        let end = name.iter().position(|&b| b == 0).unwrap();
        match &name[..end] {
            b"etc/acpi/rsdp" => 0usize,
            b"etc/acpi/tables" => 1,
            other => panic!("unknown file {}", String::from_utf8_lossy(other)),
        }
    };
    let addr = [rsdp_at, tables_at];
    assert_eq!(lt.loader.len() % 128, 0);
    let mut allocated = Vec::new();
    for cmd in lt.loader.chunks(128) {
        match u32_at(cmd, 0) {
            1 => {
                let f = index(&cmd[4..60]);
                allocated.push(f);
                let zone = cmd[64];
                assert_eq!(zone, if f == 0 { 2 } else { 1 });
            }
            2 => {
                let dest = index(&cmd[4..60]);
                let src = index(&cmd[60..116]);
                let offset = u32_at(cmd, 116) as usize;
                let size = usize::from(cmd[120]);
                assert!(allocated.contains(&dest) && allocated.contains(&src));
                let mut v = [0u8; 8];
                v[..size].copy_from_slice(&files[dest][offset..offset + size]);
                let value = u64::from_le_bytes(v) + addr[src];
                files[dest][offset..offset + size].copy_from_slice(&value.to_le_bytes()[..size]);
            }
            3 => {
                let f = index(&cmd[4..60]);
                let at = u32_at(cmd, 60) as usize;
                let start = u32_at(cmd, 64) as usize;
                let len = u32_at(cmd, 68) as usize;
                let s = sum(&files[f][start..start + len]);
                files[f][at] = files[f][at].wrapping_sub(s);
            }
            other => panic!("unexpected loader command {other}"),
        }
    }
    let [rsdp, tables] = files;
    (rsdp, tables)
}

#[test]
fn loader_script_reproduces_the_directly_built_tables() {
    let config = AcpiConfig::pc(2);
    let lt = LoaderTables::build(&config).unwrap();
    let (rsdp, tables) = run_loader(&lt, RSDP_GPA, TABLES_GPA);
    let direct = AcpiTables::build(&config, TABLES_GPA, RSDP_GPA).unwrap();
    assert_eq!(rsdp, direct.regions[1].1, "RSDP");
    assert_eq!(tables, direct.regions[0].1, "tables");
}

#[test]
fn loader_files_leave_pointers_as_offsets() {
    let lt = LoaderTables::build(&AcpiConfig::pc(1)).unwrap();
    let xsdt = u64_at(&lt.rsdp, 24) as usize;
    assert_eq!(&lt.tables[xsdt..xsdt + 4], b"XSDT");
    let fadt = u64_at(&lt.tables, xsdt + 36) as usize;
    assert_eq!(&lt.tables[fadt..fadt + 4], b"FACP");
    // First command allocates the RSDP in the F segment.
    assert_eq!(u32_at(&lt.loader, 0), 1);
    assert_eq!(&lt.loader[4..17], b"etc/acpi/rsdp");
}
