//! ACPI table builder: RSDP, RSDT/XSDT, FADT, FACS, MADT and a DSDT written with a small AML
//! encoder.
//!
//! # Architecture
//! [`AcpiConfig`] describes the machine (processors, interrupt controllers, the PM block, the
//! legacy devices the DSDT declares, plus extra DSDT devices such as VMBus or a PCI root
//! bridge). [`AcpiTables::build`] lays the tables out contiguously at a guest-physical address
//! chosen by the loader, fixes every pointer and checksum, and returns the byte regions to copy
//! into guest memory and the RSDP's address (for `boot_params.acpi_rsdp_addr`, or for firmware
//! to find in the BIOS area).
//!
//! Internally the tables are one blob with a list of pointer fields and checksum fields, so the
//! same description also goes to firmware: [`LoaderTables::build`] produces fw_cfg's
//! `etc/acpi/tables`, `etc/acpi/rsdp` and the `etc/table-loader` script that patches pointers
//! and checksums once firmware has placed the files (the PCAT/UEFI boot path).
//!
//! # Key types
//! - [`AcpiConfig`] (`AcpiConfig::pc(processors)` gives `docs/src/machine.md`'s values).
//! - [`AcpiTables`]: the built regions.
//! - [`aml`]: [`aml::Term`], [`aml::Data`], [`aml::ResourceTemplate`] for DSDT content.
//! - [`devices`]: ready-made DSDT devices (COM ports, pvpanic, VMBus, PCI root bridge, ...).
//!
//! # Spec
//! ACPI 6.5: RSDP 5.2.5, RSDT/XSDT 5.2.7-8, FADT 5.2.9 (revision 6), FACS 5.2.10, MADT 5.2.12
//! (Processor Local APIC, I/O APIC, Interrupt Source Override, Local APIC NMI), AML chapter
//! 20, resource descriptors 6.4. The tests disassemble every table with `iasl -d`.

pub mod aml;
pub mod devices;
pub mod tables;

use aml::Data;
use aml::Term;
use tables::Gas;
use tables::Oem;

/// Errors building the tables (configuration mistakes, never guest input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcpiError {
    /// A name path is not valid AML.
    #[error("invalid AML name {0:?}")]
    InvalidName(String),
    /// An EISA ID is not three capitals and four hex digits.
    #[error("invalid EISA ID {0:?}")]
    InvalidEisaId(String),
    /// A string contains NUL or non-ASCII bytes.
    #[error("invalid AML string {0:?}")]
    InvalidString(String),
    /// Something exceeds an encoding limit.
    #[error("{0} too large")]
    TooLarge(&'static str),
    /// The tables do not fit below 4 GiB (32-bit pointers) at the requested address.
    #[error("tables at {0:#x} do not fit below 4 GiB")]
    AddressTooHigh(u64),
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

/// The I/O APIC the MADT declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoApicInfo {
    /// APIC ID.
    pub id: u8,
    /// MMIO address.
    pub address: u32,
    /// First GSI.
    pub gsi_base: u32,
}

/// The ACPI PM hardware the FADT declares (I/O ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmInfo {
    /// PM1a event block (status + enable, 4 bytes).
    pub pm1a_evt: u16,
    /// PM1a control block (2 bytes).
    pub pm1a_cnt: u16,
    /// PM timer (4 bytes).
    pub pm_tmr: u16,
    /// GPE0 block.
    pub gpe0: u16,
    /// GPE0 block length in bytes (even).
    pub gpe0_len: u8,
    /// SCI interrupt (ISA IRQ, level, active high).
    pub sci_irq: u8,
    /// SLP_TYP value of S5 (the `\_S5_` package).
    pub s5_slp_typ: u8,
    /// Reset register (I/O port) and the value to write.
    pub reset: (u16, u8),
}

/// A 16550 the DSDT declares (`PNP0501`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialPortInfo {
    /// Object name, e.g. `COM1`.
    pub name: String,
    /// `_UID`.
    pub uid: u64,
    /// First port.
    pub base: u16,
    /// ISA IRQ.
    pub irq: u8,
}

/// What the tables describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of processors (APIC IDs and ACPI processor UIDs 0..n).
    pub processors: u32,
    /// Local APIC MMIO address.
    pub local_apic_address: u32,
    /// The I/O APIC.
    pub ioapic: IoApicInfo,
    /// ACPI PM hardware.
    pub pm: PmInfo,
    /// Serial ports.
    pub serial_ports: Vec<SerialPortInfo>,
    /// pvpanic I/O port (`QEMU0001`), if present.
    pub pvpanic_port: Option<u16>,
    /// Whether an i8042 with keyboard and mouse is present (FADT flag and DSDT devices).
    pub i8042: bool,
    /// Whether the CMOS RTC is declared in the DSDT (`PNP0B00`).
    pub rtc: bool,
    /// Whether VGA hardware is present (otherwise the FADT says there is none).
    pub vga: bool,
    /// More devices for `\_SB` (see [`devices`]).
    pub extra_devices: Vec<Term>,
    /// OEM identification.
    pub oem: Oem,
}

impl AcpiConfig {
    /// The machine in `docs/src/machine.md` with `processors` processors: I/O APIC at
    /// 0xfec00000 with ID `processors`, PM block at 0x600 (SCI 9, S5 = SLP_TYP 5), reset
    /// register 0xcf9 = 0x06, COM1-COM4, pvpanic at 0x505, i8042 and RTC.
    pub fn pc(processors: u32) -> Self {
        let com = |n: u64, base: u16, irq: u8| SerialPortInfo {
            name: format!("COM{n}"),
            uid: n,
            base,
            irq,
        };
        Self {
            processors,
            local_apic_address: 0xfee0_0000,
            ioapic: IoApicInfo {
                id: u8::try_from(processors).unwrap_or(0xff),
                address: 0xfec0_0000,
                gsi_base: 0,
            },
            pm: PmInfo {
                pm1a_evt: 0x600,
                pm1a_cnt: 0x604,
                pm_tmr: 0x608,
                gpe0: 0x620,
                gpe0_len: 4,
                sci_irq: 9,
                s5_slp_typ: 5,
                reset: (0xcf9, 0x06),
            },
            serial_ports: vec![
                com(1, 0x3f8, 4),
                com(2, 0x2f8, 3),
                com(3, 0x3e8, 4),
                com(4, 0x2e8, 3),
            ],
            pvpanic_port: Some(0x505),
            i8042: true,
            rtc: true,
            vga: false,
            extra_devices: Vec::new(),
            oem: Oem::default(),
        }
    }
}

/// A pointer field inside the blob, to be set to the address of another blob offset.
#[derive(Debug, Clone, Copy)]
struct Pointer {
    at: usize,
    size: usize,
    target: usize,
}

/// Tables laid out in one buffer, with the fields that need fixing.
#[derive(Debug, Default)]
struct Blob {
    bytes: Vec<u8>,
    /// (start, length) of each table, for its checksum at start + 9.
    tables: Vec<(usize, usize)>,
    pointers: Vec<Pointer>,
}

impl Blob {
    fn add(&mut self, mut table: Vec<u8>, align: usize) -> usize {
        let start = self.bytes.len().next_multiple_of(align);
        self.bytes.resize(start, 0);
        if table.len() >= tables::HEADER_LEN {
            tables::set_length(&mut table);
            self.tables.push((start, table.len()));
        }
        self.bytes.extend_from_slice(&table);
        start
    }

    fn pointer(&mut self, at: usize, size: usize, target: usize) {
        self.pointers.push(Pointer { at, size, target });
    }

    /// Patches pointers for a blob at `base` and fills checksums.
    fn finish(mut self, base: u64) -> Vec<u8> {
        for p in &self.pointers {
            let value = base + p.target as u64;
            self.bytes[p.at..p.at + p.size].copy_from_slice(&value.to_le_bytes()[..p.size]);
        }
        for &(start, len) in &self.tables {
            let t = &mut self.bytes[start..start + len];
            t[9] = tables::checksum(t, 9);
        }
        self.bytes
    }
}

/// Built tables: what to copy where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiTables {
    /// (guest-physical address, bytes) regions: the tables, then the RSDP.
    pub regions: Vec<(u64, Vec<u8>)>,
    /// Address of the RSDP.
    pub rsdp_address: u64,
}

impl AcpiTables {
    /// Builds the tables at `tables_gpa` (rounded up to 64 bytes, for the FACS) and the RSDP at
    /// `rsdp_gpa` (16-byte aligned; in 0xe0000-0xfffff if firmware or an OS should find it by
    /// scanning). Everything must lie below 4 GiB.
    pub fn build(config: &AcpiConfig, tables_gpa: u64, rsdp_gpa: u64) -> Result<Self, AcpiError> {
        if !rsdp_gpa.is_multiple_of(16) {
            return Err(AcpiError::InvalidConfig(
                "RSDP must be 16-byte aligned".into(),
            ));
        }
        let base = tables_gpa.next_multiple_of(64);
        let (blob, rsdt, xsdt) = build_blob(config)?;
        let end = base + blob.bytes.len() as u64;
        if end > 1 << 32 || rsdp_gpa + tables::RSDP_LEN as u64 > 1 << 32 {
            return Err(AcpiError::AddressTooHigh(tables_gpa));
        }
        let bytes = blob.finish(base);
        let rsdp = rsdp(&config.oem, base + rsdt as u64, base + xsdt as u64);
        Ok(Self {
            regions: vec![(base, bytes), (rsdp_gpa, rsdp)],
            rsdp_address: rsdp_gpa,
        })
    }

    /// The guest-physical range the tables (without the RSDP) occupy, for the e820 map
    /// (ACPI reclaimable).
    pub fn tables_range(&self) -> std::ops::Range<u64> {
        let (base, bytes) = &self.regions[0];
        *base..base + bytes.len() as u64
    }
}

/// File names of the fw_cfg ACPI interface (QEMU's, which SeaBIOS and OVMF consume).
pub mod loader_files {
    /// The tables blob.
    pub const TABLES: &str = "etc/acpi/tables";
    /// The RSDP.
    pub const RSDP: &str = "etc/acpi/rsdp";
    /// The linker/loader script.
    pub const LOADER: &str = "etc/table-loader";
}

/// Tables for firmware to place itself: the fw_cfg files `etc/acpi/tables`, `etc/acpi/rsdp`
/// and `etc/table-loader`. Pointers hold offsets into the tables file and checksums are left
/// for the loader script (QEMU's linker/loader format: ALLOCATE, ADD_POINTER, ADD_CHECKSUM,
/// 128-byte little-endian commands), which firmware runs after allocating the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderTables {
    /// Contents of `etc/acpi/tables`.
    pub tables: Vec<u8>,
    /// Contents of `etc/acpi/rsdp`.
    pub rsdp: Vec<u8>,
    /// Contents of `etc/table-loader`.
    pub loader: Vec<u8>,
}

/// Table-loader command numbers and zones.
mod loader {
    pub const ALLOCATE: u32 = 1;
    pub const ADD_POINTER: u32 = 2;
    pub const ADD_CHECKSUM: u32 = 3;
    pub const ZONE_HIGH: u8 = 1;
    pub const ZONE_FSEG: u8 = 2;
    pub const FILE_LEN: usize = 56;
    pub const COMMAND_LEN: usize = 128;
}

struct LoaderScript(Vec<u8>);

impl LoaderScript {
    fn command(&mut self, cmd: u32, fields: &[&[u8]]) {
        let start = self.0.len();
        self.0.extend_from_slice(&cmd.to_le_bytes());
        for f in fields {
            self.0.extend_from_slice(f);
        }
        self.0.resize(start + loader::COMMAND_LEN, 0);
    }

    fn file(name: &str) -> [u8; loader::FILE_LEN] {
        let mut f = [0u8; loader::FILE_LEN];
        let n = name.len().min(loader::FILE_LEN - 1);
        f[..n].copy_from_slice(&name.as_bytes()[..n]);
        f
    }

    fn allocate(&mut self, name: &str, align: u32, zone: u8) {
        self.command(
            loader::ALLOCATE,
            &[&Self::file(name), &align.to_le_bytes(), &[zone]],
        );
    }

    fn add_pointer(&mut self, dest: &str, src: &str, offset: usize, size: usize) {
        self.command(
            loader::ADD_POINTER,
            &[
                &Self::file(dest),
                &Self::file(src),
                &(offset as u32).to_le_bytes(),
                &[size as u8],
            ],
        );
    }

    fn add_checksum(&mut self, name: &str, at: usize, start: usize, len: usize) {
        self.command(
            loader::ADD_CHECKSUM,
            &[
                &Self::file(name),
                &(at as u32).to_le_bytes(),
                &(start as u32).to_le_bytes(),
                &(len as u32).to_le_bytes(),
            ],
        );
    }
}

impl LoaderTables {
    /// Builds the tables for firmware's table loader.
    pub fn build(config: &AcpiConfig) -> Result<Self, AcpiError> {
        use loader_files::*;
        let (blob, rsdt, xsdt) = build_blob(config)?;
        let mut script = LoaderScript(Vec::new());
        script.allocate(RSDP, 16, loader::ZONE_FSEG);
        script.allocate(TABLES, 64, loader::ZONE_HIGH);
        let mut tables = blob.bytes.clone();
        for p in &blob.pointers {
            let v = (p.target as u64).to_le_bytes();
            tables[p.at..p.at + p.size].copy_from_slice(&v[..p.size]);
            script.add_pointer(TABLES, TABLES, p.at, p.size);
        }
        for &(start, len) in &blob.tables {
            tables[start + 9] = 0;
            script.add_checksum(TABLES, start + 9, start, len);
        }
        let mut rsdp = rsdp(&config.oem, rsdt as u64, xsdt as u64);
        script.add_pointer(RSDP, TABLES, 16, 4);
        script.add_pointer(RSDP, TABLES, 24, 8);
        rsdp[8] = 0;
        rsdp[32] = 0;
        script.add_checksum(RSDP, 8, 0, 20);
        script.add_checksum(RSDP, 32, 0, tables::RSDP_LEN);
        Ok(Self {
            tables,
            rsdp,
            loader: script.0,
        })
    }
}

/// RSDP revision 2 pointing at the RSDT and XSDT.
fn rsdp(oem: &Oem, rsdt: u64, xsdt: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(tables::RSDP_LEN);
    r.extend_from_slice(b"RSD PTR ");
    r.push(0);
    r.extend_from_slice(&oem.id);
    r.push(2);
    r.extend_from_slice(&(rsdt as u32).to_le_bytes());
    r.extend_from_slice(&(tables::RSDP_LEN as u32).to_le_bytes());
    r.extend_from_slice(&xsdt.to_le_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r[8] = tables::checksum(&r[..20], 8);
    r[32] = tables::checksum(&r, 32);
    r
}

/// Lays out every table except the RSDP. Returns the blob and the RSDT/XSDT offsets.
fn build_blob(config: &AcpiConfig) -> Result<(Blob, usize, usize), AcpiError> {
    if config.processors == 0 || config.processors > 255 {
        return Err(AcpiError::InvalidConfig(format!(
            "{} processors (1-255 supported)",
            config.processors
        )));
    }
    let mut blob = Blob::default();
    let facs = blob.add(facs(), 64);
    let dsdt = blob.add(dsdt(config)?, 16);
    let fadt = blob.add(fadt(config), 16);
    blob.pointer(fadt + tables::fadt::FIRMWARE_CTRL, 4, facs);
    blob.pointer(fadt + tables::fadt::DSDT, 4, dsdt);
    blob.pointer(fadt + tables::fadt::X_FIRMWARE_CTRL, 8, facs);
    blob.pointer(fadt + tables::fadt::X_DSDT, 8, dsdt);
    let madt = blob.add(madt(config), 16);
    let listed = [fadt, madt];

    let mut rsdt_table = tables::header(b"RSDT", 1, &config.oem);
    let rsdt_entries = rsdt_table.len();
    rsdt_table.resize(rsdt_entries + 4 * listed.len(), 0);
    let rsdt = blob.add(rsdt_table, 16);
    for (i, &t) in listed.iter().enumerate() {
        blob.pointer(rsdt + rsdt_entries + 4 * i, 4, t);
    }

    let mut xsdt_table = tables::header(b"XSDT", 1, &config.oem);
    let xsdt_entries = xsdt_table.len();
    xsdt_table.resize(xsdt_entries + 8 * listed.len(), 0);
    let xsdt = blob.add(xsdt_table, 16);
    for (i, &t) in listed.iter().enumerate() {
        blob.pointer(xsdt + xsdt_entries + 8 * i, 8, t);
    }
    Ok((blob, rsdt, xsdt))
}

fn facs() -> Vec<u8> {
    let mut f = vec![0u8; tables::FACS_LEN];
    f[..4].copy_from_slice(b"FACS");
    f[4..8].copy_from_slice(&(tables::FACS_LEN as u32).to_le_bytes());
    // Version 2 (ACPI 4.0 and later).
    f[32] = 2;
    f
}

fn fadt(config: &AcpiConfig) -> Vec<u8> {
    use tables::fadt::*;
    let pm = &config.pm;
    let mut t = tables::header(b"FACP", 6, &config.oem);
    t.extend_from_slice(&0u32.to_le_bytes()); // FIRMWARE_CTRL (patched)
    t.extend_from_slice(&0u32.to_le_bytes()); // DSDT (patched)
    t.push(0); // reserved
    t.push(0); // preferred PM profile: unspecified
    t.extend_from_slice(&u16::from(pm.sci_irq).to_le_bytes());
    t.extend_from_slice(&0u32.to_le_bytes()); // SMI_CMD: none, always in ACPI mode
    t.extend_from_slice(&[0, 0, 0, 0]); // ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
    for blk in [
        u32::from(pm.pm1a_evt),
        0,
        u32::from(pm.pm1a_cnt),
        0,
        0,
        u32::from(pm.pm_tmr),
        u32::from(pm.gpe0),
        0,
    ] {
        t.extend_from_slice(&blk.to_le_bytes());
    }
    // PM1_EVT_LEN, PM1_CNT_LEN, PM2_CNT_LEN, PM_TMR_LEN, GPE0_BLK_LEN, GPE1_BLK_LEN,
    // GPE1_BASE, CST_CNT.
    t.extend_from_slice(&[4, 2, 0, 4, pm.gpe0_len, 0, 0, 0]);
    t.extend_from_slice(&0x0fffu16.to_le_bytes()); // P_LVL2_LAT: C2 unsupported
    t.extend_from_slice(&0x0fffu16.to_le_bytes()); // P_LVL3_LAT: C3 unsupported
    t.extend_from_slice(&[0; 4]); // FLUSH_SIZE, FLUSH_STRIDE
    t.extend_from_slice(&[0, 0]); // DUTY_OFFSET, DUTY_WIDTH
    t.extend_from_slice(&[0, 0, 0x32]); // DAY_ALRM, MON_ALRM, CENTURY
    let mut boot = BOOT_LEGACY_DEVICES;
    if config.i8042 {
        boot |= BOOT_8042;
    }
    if !config.vga {
        boot |= BOOT_VGA_NOT_PRESENT;
    }
    t.extend_from_slice(&boot.to_le_bytes());
    t.push(0); // reserved
    let flags = FLAG_WBINVD | FLAG_PROC_C1 | FLAG_SLP_BUTTON | FLAG_FIX_RTC | FLAG_RESET_REG_SUP;
    t.extend_from_slice(&flags.to_le_bytes());
    Gas::io(pm.reset.0, 8, 1).write(&mut t);
    t.push(pm.reset.1);
    t.extend_from_slice(&0u16.to_le_bytes()); // ARM_BOOT_ARCH
    t.push(0); // FADT minor version
    t.extend_from_slice(&0u64.to_le_bytes()); // X_FIRMWARE_CTRL (patched)
    t.extend_from_slice(&0u64.to_le_bytes()); // X_DSDT (patched)
    Gas::io(pm.pm1a_evt, 32, 2).write(&mut t);
    Gas::default().write(&mut t); // X_PM1b_EVT_BLK
    Gas::io(pm.pm1a_cnt, 16, 2).write(&mut t);
    Gas::default().write(&mut t); // X_PM1b_CNT_BLK
    Gas::default().write(&mut t); // X_PM2_CNT_BLK
    Gas::io(pm.pm_tmr, 32, 3).write(&mut t);
    Gas::io(pm.gpe0, pm.gpe0_len.saturating_mul(8), 1).write(&mut t);
    Gas::default().write(&mut t); // X_GPE1_BLK
    Gas::default().write(&mut t); // SLEEP_CONTROL_REG
    Gas::default().write(&mut t); // SLEEP_STATUS_REG
    t.extend_from_slice(&0u64.to_le_bytes()); // hypervisor vendor identity
    debug_assert_eq!(t.len(), tables::FADT_LEN);
    t
}

fn madt(config: &AcpiConfig) -> Vec<u8> {
    let mut t = tables::header(b"APIC", 5, &config.oem);
    t.extend_from_slice(&config.local_apic_address.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: 8259s present
    for cpu in 0..config.processors {
        // Processor Local APIC: UID, APIC ID, enabled.
        t.extend_from_slice(&[0, 8, cpu as u8, cpu as u8]);
        t.extend_from_slice(&1u32.to_le_bytes());
    }
    let io = &config.ioapic;
    t.extend_from_slice(&[1, 12, io.id, 0]);
    t.extend_from_slice(&io.address.to_le_bytes());
    t.extend_from_slice(&io.gsi_base.to_le_bytes());
    // Interrupt source overrides: the PIT on GSI 2 (conforming), the SCI level/active high.
    let iso = |t: &mut Vec<u8>, source: u8, gsi: u32, flags: u16| {
        t.extend_from_slice(&[2, 10, 0, source]);
        t.extend_from_slice(&gsi.to_le_bytes());
        t.extend_from_slice(&flags.to_le_bytes());
    };
    iso(&mut t, 0, 2, 0);
    let sci = config.pm.sci_irq;
    iso(&mut t, sci, u32::from(sci), 0x000d);
    // Local APIC NMI on LINT1 for all processors.
    t.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]);
    t
}

fn dsdt(config: &AcpiConfig) -> Result<Vec<u8>, AcpiError> {
    let s5 = u64::from(config.pm.s5_slp_typ);
    let mut sb = Vec::new();
    for cpu in 0..config.processors {
        sb.push(devices::processor(cpu));
    }
    for port in &config.serial_ports {
        sb.push(devices::serial_port(port));
    }
    if config.i8042 {
        sb.extend(devices::ps2_keyboard_and_mouse());
    }
    if config.rtc {
        sb.push(devices::rtc());
    }
    if let Some(port) = config.pvpanic_port {
        sb.push(devices::pvpanic(port));
    }
    sb.extend(config.extra_devices.iter().cloned());
    let terms = vec![
        Term::name(
            "\\_S5",
            Data::Package(vec![
                Data::Integer(s5),
                Data::Integer(s5),
                Data::Integer(0),
                Data::Integer(0),
            ]),
        ),
        Term::scope("\\_SB", sb),
    ];
    let mut t = tables::header(b"DSDT", 2, &config.oem);
    aml::encode_terms(&terms, &mut t)?;
    Ok(t)
}

#[cfg(test)]
mod tests;
