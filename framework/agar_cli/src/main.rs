//! `agar`: the user-facing command (artifacts, boot the default guest, and more).
//!
//! # Architecture
//!
//! A thin dispatcher. Each subcommand lives in its own `<name>_cmd.rs` with
//!
//! ```ignore
//! #[derive(clap::Args)]
//! /// One line of help for `agar <name>`.
//! pub struct Args { ... }
//! impl Args {
//!     pub fn run(self) -> anyhow::Result<std::process::ExitCode> { ... }
//! }
//! ```
//!
//! and is wired in with one line in the `subcommands!` list below.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Declares the subcommand modules, the clap enum and the dispatch, one line per subcommand.
macro_rules! subcommands {
    ($($(#[doc = $doc:literal])* $variant:ident => $module:ident,)*) => {
        $(mod $module;)*

        #[derive(clap::Subcommand)]
        enum Command {
            $($(#[doc = $doc])* $variant($module::Args),)*
        }

        impl Command {
            fn run(self) -> anyhow::Result<ExitCode> {
                match self {
                    $(Self::$variant(args) => args.run(),)*
                }
            }
        }
    };
}

subcommands! {
    /// List, restore, verify and clean the test artifacts (kernels, initrds, firmware).
    Artifacts => artifacts_cmd,
    /// Boot the default guest (Debian 12 kernel + agar initramfs) with agar-vmm.
    Run => run_cmd,
    /// Inspect, create and convert disk images (.raw/.img, .vhd, .vhdx).
    Disk => disk_cmd,
    /// Write the HTML matrix report of a VM test run.
    Report => report_cmd,
}

/// agar: test operating systems and firmware in virtual machines.
#[derive(Parser)]
#[command(name = "agar", version, propagate_version = true)]
struct Cli {
    /// More log output (-v: info, -vv: debug, -vvv: trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    match cli.command.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agar: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
