//! Runs SeaBIOS on the `emu` CPU in a minimal legacy PC (see `tests/common/legacy_pc.rs`),
//! printing the firmware's debug console, until it tries to boot.
//!
//! `cargo run --release -p cpu_emu --example seabios -- [BIOS] [SECS]`

#[path = "../tests/common/legacy_pc.rs"]
mod legacy_pc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .cloned()
        .unwrap_or("/usr/share/seabios/bios-256k.bin".into());
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(60);
    let bios = std::fs::read(&path)?;
    let start = std::time::Instant::now();
    let mut pc = legacy_pc::LegacyPc::new(&bios, 128 << 20, true)?;
    let exit = pc.run(secs)?;
    let r = pc.vp.registers()?;
    let s = pc.vp.special_registers()?;
    eprintln!(
        "exit {exit:?} after {:.3}s, {} instructions; cs={:#x} rip={:#x} cr0={:#x}; delivered {:?}",
        start.elapsed().as_secs_f64(),
        pc.partition.instructions(),
        s.cs.selector,
        r.rip,
        s.cr0,
        pc.partition.delivered()
    );
    Ok(())
}
