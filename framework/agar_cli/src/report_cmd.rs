//! `agar report`: the HTML matrix of a VM test run.

use std::path::PathBuf;
use std::process::ExitCode;

/// Write an HTML matrix of a VM test run (rows: tests; columns: firmware/storage/OS per
/// backend; colours: outcome) with a page of logs per test.
#[derive(clap::Args)]
pub struct Args {
    /// The test output folder (default: $AGAR_TEST_OUTPUT, else target/agar-tests).
    dir: Option<PathBuf>,
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let dir = self.dir.unwrap_or_else(agar::output::output_root);
        let index = agar::report::generate(&dir)?;
        println!("{}", index.display());
        Ok(ExitCode::SUCCESS)
    }
}
