//! `agar disk` as a standalone program until `agar_cli` has a `main`:
//! `cargo run -p disk --example agar_disk -- info disk.vhdx`.

use clap::Parser;

/// agar disk
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: disk::cli::DiskArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = disk::cli::run(&cli.args, &mut std::io::stdout()) {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        eprintln!("agar disk: {msg}");
        std::process::exit(1);
    }
}
