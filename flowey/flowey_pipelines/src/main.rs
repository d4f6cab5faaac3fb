//! `flowey`: regenerate `ci/*.yml` from the pipelines in Rust, check they are current, or run
//! one job locally exactly as CI would.

use std::path::PathBuf;

use anyhow::Context;
use anyhow::bail;
use clap::Parser;
use clap::Subcommand;

#[derive(Parser)]
#[command(about = "agar's CI pipelines")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write ci/<pipeline>.yml for every pipeline.
    Regen {
        /// Do not write; fail if any file differs.
        #[arg(long)]
        check: bool,
    },
    /// List pipelines and their jobs.
    List,
    /// Run one job's steps locally.
    Run {
        /// Pipeline name.
        pipeline: String,
        /// Job id.
        job: String,
    },
}

fn workspace_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    let pipelines = flowey_pipelines::all();
    match cli.command {
        Command::Regen { check } => {
            let mut stale = Vec::new();
            for p in &pipelines {
                p.validate()?;
                let path = root.join("ci").join(format!("{}.yml", p.name));
                let yaml = p.to_github_yaml();
                let current = std::fs::read_to_string(&path).unwrap_or_default();
                if current == yaml {
                    continue;
                }
                if check {
                    stale.push(path.display().to_string());
                } else {
                    std::fs::create_dir_all(root.join("ci"))?;
                    std::fs::write(&path, yaml)
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!("wrote {}", path.display());
                }
            }
            if !stale.is_empty() {
                bail!(
                    "stale generated files: {}; run `cargo run -p flowey_pipelines -- regen`",
                    stale.join(", ")
                );
            }
        }
        Command::List => {
            for p in &pipelines {
                println!("{}", p.name);
                for j in &p.jobs {
                    println!(
                        "  {:<16} {} ({} steps, {} min)",
                        j.id,
                        j.name,
                        j.steps.len(),
                        j.timeout_minutes
                    );
                }
            }
        }
        Command::Run { pipeline, job } => {
            let Some(p) = pipelines.iter().find(|p| p.name == pipeline) else {
                bail!("no pipeline `{pipeline}`");
            };
            flowey_core::run_job(p.job(&job)?, &root)?;
        }
    }
    Ok(())
}
