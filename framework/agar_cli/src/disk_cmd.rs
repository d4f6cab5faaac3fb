//! `agar disk`: inspect, create and convert raw, VHD and VHDX images (the `disk` crate's CLI).

use std::process::ExitCode;

/// Inspect, create and convert disk images (.raw/.img, .vhd, .vhdx).
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    disk: disk::cli::DiskArgs,
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        disk::cli::run(&self.disk, &mut std::io::stdout().lock())?;
        Ok(ExitCode::SUCCESS)
    }
}
