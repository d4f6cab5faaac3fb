//! SeaBIOS (Debian's `seabios` package) runs on the `emu` CPU through POST (real mode, the
//! BIOS's 32-bit protected-mode init and relocation, PCI and device setup, the boot menu delay)
//! to its boot attempt.

mod common;

const BIOS: &str = "/usr/share/seabios/bios-256k.bin";

#[test]
fn seabios_runs_to_the_boot_attempt() {
    let bios = std::fs::read(BIOS).unwrap_or_else(|e| {
        panic!("{BIOS}: {e} (install Debian's `seabios` package: apt-get install seabios)")
    });
    let mut pc = common::legacy_pc::LegacyPc::new(&bios, 128 << 20, false).unwrap();
    let exit = pc.run(120).unwrap();
    let log = pc.log.lock().unwrap().clone();
    assert_eq!(exit, virt::VpExit::Stopped, "{log:#?}");
    let has = |s: &str| log.iter().any(|l| l.contains(s));
    assert!(has("SeaBIOS (version"), "{log:#?}");
    assert!(has("Relocating init from"), "32-bit init ran: {log:#?}");
    assert!(has("RamSize: 0x08000000"), "CMOS read: {log:#?}");
    assert!(has("Found 2 PCI devices"), "{log:#?}");
    assert!(has("Booting from"), "{log:#?}");
    assert_eq!(
        pc.partition.delivered().iter().find(|d| d.0 == 6),
        None,
        "no #UD"
    );
}
