//! flowey: CI pipelines declared in Rust.
//!
//! # Architecture
//! A [`Pipeline`] is a list of [`Job`]s, each a list of shell [`Step`]s, plus triggers. The same
//! value is
//! - emitted as GitHub Actions YAML ([`Pipeline::to_github_yaml`]) into the checked-in `ci/`
//!   folder, with a banner saying it is generated, and
//! - run locally, job by job ([`run_job`]), so what CI does can be reproduced on a laptop with
//!   one command.
//!
//! The YAML emitter is written here (not a serde serializer) so the output is byte-stable:
//! the regen check compares bytes.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Errors from validating or running a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum FloweyError {
    /// The pipeline is malformed.
    #[error("pipeline {pipeline}: {message}")]
    Invalid {
        /// Pipeline name.
        pipeline: String,
        /// What is wrong.
        message: String,
    },
    /// No such job.
    #[error("pipeline {pipeline} has no job `{job}` (jobs: {known})")]
    UnknownJob {
        /// Pipeline name.
        pipeline: String,
        /// Requested job.
        job: String,
        /// Job ids that exist.
        known: String,
    },
    /// A step failed when run locally.
    #[error("step `{step}` of job `{job}` failed ({status})")]
    StepFailed {
        /// Job id.
        job: String,
        /// Step name.
        step: String,
        /// Exit status.
        status: String,
    },
    /// A step could not be started.
    #[error("cannot start step `{step}`")]
    Spawn {
        /// Step name.
        step: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

/// When a pipeline runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Triggers {
    /// Branches whose pushes run it.
    pub push_branches: Vec<String>,
    /// Run on pull requests.
    pub pull_request: bool,
    /// Cron schedule (UTC), if any.
    pub schedule: Option<String>,
    /// Allow manual runs.
    pub manual: bool,
}

/// One shell step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Display name.
    pub name: String,
    /// Bash script (run with `bash -eo pipefail`).
    pub run: String,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Run even if an earlier step failed (log collection).
    pub always: bool,
}

impl Step {
    /// A step running `run`.
    pub fn new(name: &str, run: &str) -> Self {
        Self {
            name: name.into(),
            run: run.into(),
            env: BTreeMap::new(),
            always: false,
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Marks the step to run even after a failure.
    pub fn always(mut self) -> Self {
        self.always = true;
        self
    }
}

/// Files a job keeps after it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Artifact name.
    pub name: String,
    /// Path (glob) to upload.
    pub path: String,
}

/// One job: a machine, a timeout and steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Identifier (`[a-z0-9-]`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Runner label.
    pub runs_on: String,
    /// Timeout in minutes.
    pub timeout_minutes: u32,
    /// Jobs that must finish first.
    pub needs: Vec<String>,
    /// Environment for every step.
    pub env: BTreeMap<String, String>,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Files uploaded when the job ends (also on failure).
    pub artifacts: Vec<Artifact>,
}

impl Job {
    /// An empty job.
    pub fn new(id: &str, name: &str, timeout_minutes: u32) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            runs_on: "ubuntu-latest".into(),
            timeout_minutes,
            needs: Vec::new(),
            env: BTreeMap::new(),
            steps: Vec::new(),
            artifacts: Vec::new(),
        }
    }

    /// Appends a step.
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// Adds a dependency on another job.
    pub fn needs(mut self, id: &str) -> Self {
        self.needs.push(id.into());
        self
    }

    /// Adds an environment variable for every step.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Uploads `path` as artifact `name` when the job ends.
    pub fn artifact(mut self, name: &str, path: &str) -> Self {
        self.artifacts.push(Artifact {
            name: name.into(),
            path: path.into(),
        });
        self
    }
}

/// A pipeline: triggers and jobs, emitted to one YAML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    /// Name (also the YAML file stem under `ci/`).
    pub name: String,
    /// When it runs.
    pub triggers: Triggers,
    /// Jobs.
    pub jobs: Vec<Job>,
}

const BANNER: &str = "# GENERATED by flowey from flowey/flowey_pipelines. Do not edit.\n\
# Regenerate: cargo run -p flowey_pipelines -- regen\n";

impl Pipeline {
    /// Checks ids, dependencies (exist, acyclic) and that every job has steps.
    pub fn validate(&self) -> Result<(), FloweyError> {
        let invalid = |message: String| FloweyError::Invalid {
            pipeline: self.name.clone(),
            message,
        };
        let mut ids = BTreeSet::new();
        for job in &self.jobs {
            if job.id.is_empty()
                || !job
                    .id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(invalid(format!("job id `{}` must be [a-z0-9-]+", job.id)));
            }
            if !ids.insert(job.id.as_str()) {
                return Err(invalid(format!("duplicate job id `{}`", job.id)));
            }
            if job.steps.is_empty() {
                return Err(invalid(format!("job `{}` has no steps", job.id)));
            }
        }
        for job in &self.jobs {
            for need in &job.needs {
                if !ids.contains(need.as_str()) {
                    return Err(invalid(format!(
                        "job `{}` needs unknown job `{need}`",
                        job.id
                    )));
                }
            }
        }
        // Cycle check: repeatedly remove jobs whose needs are all removed.
        let mut done: BTreeSet<&str> = BTreeSet::new();
        while done.len() < self.jobs.len() {
            let before = done.len();
            for job in &self.jobs {
                if !done.contains(job.id.as_str())
                    && job.needs.iter().all(|n| done.contains(n.as_str()))
                {
                    done.insert(&job.id);
                }
            }
            if done.len() == before {
                return Err(invalid("job dependencies form a cycle".into()));
            }
        }
        Ok(())
    }

    /// The GitHub Actions workflow for this pipeline.
    pub fn to_github_yaml(&self) -> String {
        let mut y = String::from(BANNER);
        let _ = writeln!(y, "name: {}", quote(&self.name));
        y.push_str("on:\n");
        let t = &self.triggers;
        if !t.push_branches.is_empty() {
            y.push_str("  push:\n    branches:\n");
            for b in &t.push_branches {
                let _ = writeln!(y, "      - {}", quote(b));
            }
        }
        if t.pull_request {
            y.push_str("  pull_request:\n");
        }
        if let Some(cron) = &t.schedule {
            let _ = writeln!(y, "  schedule:\n    - cron: {}", quote(cron));
        }
        if t.manual {
            y.push_str("  workflow_dispatch:\n");
        }
        y.push_str("jobs:\n");
        for job in &self.jobs {
            let _ = writeln!(y, "  {}:", job.id);
            let _ = writeln!(y, "    name: {}", quote(&job.name));
            let _ = writeln!(y, "    runs-on: {}", quote(&job.runs_on));
            let _ = writeln!(y, "    timeout-minutes: {}", job.timeout_minutes);
            if !job.needs.is_empty() {
                let needs: Vec<String> = job.needs.iter().map(|n| quote(n)).collect();
                let _ = writeln!(y, "    needs: [{}]", needs.join(", "));
            }
            write_env(&mut y, "    ", &job.env);
            y.push_str("    steps:\n");
            y.push_str("      - uses: actions/checkout@v4\n");
            for step in &job.steps {
                let _ = writeln!(y, "      - name: {}", quote(&step.name));
                if step.always {
                    y.push_str("        if: always()\n");
                }
                write_env(&mut y, "        ", &step.env);
                y.push_str("        shell: bash\n");
                y.push_str("        run: |\n");
                for line in step.run.lines() {
                    if line.is_empty() {
                        y.push('\n');
                    } else {
                        let _ = writeln!(y, "          {line}");
                    }
                }
            }
            for a in &job.artifacts {
                let _ = writeln!(y, "      - name: {}", quote(&format!("upload {}", a.name)));
                y.push_str("        if: always()\n");
                y.push_str("        uses: actions/upload-artifact@v4\n");
                y.push_str("        with:\n");
                let _ = writeln!(y, "          name: {}", quote(&a.name));
                let _ = writeln!(y, "          path: {}", quote(&a.path));
                y.push_str("          if-no-files-found: ignore\n");
            }
        }
        y
    }

    /// Looks up a job.
    pub fn job(&self, id: &str) -> Result<&Job, FloweyError> {
        self.jobs
            .iter()
            .find(|j| j.id == id)
            .ok_or_else(|| FloweyError::UnknownJob {
                pipeline: self.name.clone(),
                job: id.into(),
                known: self
                    .jobs
                    .iter()
                    .map(|j| j.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

fn write_env(y: &mut String, indent: &str, env: &BTreeMap<String, String>) {
    if env.is_empty() {
        return;
    }
    let _ = writeln!(y, "{indent}env:");
    for (k, v) in env {
        let _ = writeln!(y, "{indent}  {k}: {}", quote(v));
    }
}

/// Quotes a YAML scalar when it could be misread (always single-quoted unless plainly safe).
pub fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && !matches!(
            s,
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~"
        )
        && !s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.');
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// Runs the steps of `job` (and only that job) locally in `workdir`, like CI would: each step
/// with `bash -eo pipefail`, job and step environment applied, `always` steps run after a
/// failure. Prints one line per step with its duration.
pub fn run_job(job: &Job, workdir: &Path) -> Result<(), FloweyError> {
    let mut first_error = None;
    for step in &job.steps {
        if first_error.is_some() && !step.always {
            continue;
        }
        eprintln!("flowey: [{}] {} ...", job.id, step.name);
        let start = Instant::now();
        let status = Command::new("bash")
            .arg("-eo")
            .arg("pipefail")
            .arg("-c")
            .arg(&step.run)
            .current_dir(workdir)
            .envs(&job.env)
            .envs(&step.env)
            .status()
            .map_err(|source| FloweyError::Spawn {
                step: step.name.clone(),
                source,
            })?;
        let secs = start.elapsed().as_secs_f64();
        if status.success() {
            eprintln!("flowey: [{}] {} ok ({secs:.1} s)", job.id, step.name);
        } else {
            eprintln!("flowey: [{}] {} FAILED ({secs:.1} s)", job.id, step.name);
            first_error.get_or_insert(FloweyError::StepFailed {
                job: job.id.clone(),
                step: step.name.clone(),
                status: status.to_string(),
            });
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Pipeline {
        Pipeline {
            name: "ci".into(),
            triggers: Triggers {
                push_branches: vec!["main".into()],
                pull_request: true,
                schedule: Some("0 3 * * *".into()),
                manual: true,
            },
            jobs: vec![
                Job::new("lint", "Lint", 20).step(Step::new("fmt", "cargo fmt --check")),
                Job::new("test", "Test", 60)
                    .needs("lint")
                    .env("CARGO_TERM_COLOR", "always")
                    .step(Step::new("test", "echo 'a: b'\n\necho two").env("X", "1"))
                    .step(Step::new("logs", "true").always())
                    .artifact("junit", "target/nextest/ci/junit.xml"),
            ],
        }
    }

    #[test]
    fn yaml_is_stable_and_quoted() {
        let y = sample().to_github_yaml();
        assert!(y.starts_with("# GENERATED by flowey"));
        assert!(y.contains("    needs: [lint]\n"));
        assert!(y.contains("      CARGO_TERM_COLOR: always\n"));
        assert!(y.contains("    - cron: '0 3 * * *'\n"));
        assert!(y.contains("          echo 'a: b'\n\n          echo two\n"));
        assert!(y.contains("        if: always()\n        uses: actions/upload-artifact@v4\n"));
        assert_eq!(y, sample().to_github_yaml());
    }

    #[test]
    fn quoting_rules() {
        assert_eq!(quote("main"), "main");
        assert_eq!(quote("on"), "'on'");
        assert_eq!(quote("1.0"), "'1.0'");
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(quote("a: b"), "'a: b'");
    }

    #[test]
    fn validation_catches_mistakes() {
        let mut p = sample();
        assert!(p.validate().is_ok());
        p.jobs[0].needs.push("test".into());
        assert!(p.validate().unwrap_err().to_string().contains("cycle"));
        let mut p = sample();
        p.jobs[1].needs = vec!["nope".into()];
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("unknown job")
        );
        let mut p = sample();
        p.jobs[1].id = "lint".into();
        assert!(p.validate().unwrap_err().to_string().contains("duplicate"));
        let mut p = sample();
        p.jobs[0].id = "Lint".into();
        assert!(p.validate().is_err());
    }

    #[test]
    fn local_run_reports_failures_and_runs_always_steps() {
        let dir = std::env::temp_dir().join(format!("flowey-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let job = Job::new("j", "J", 1)
            .env("GREETING", "hi")
            .step(Step::new("write", "echo \"$GREETING $WHO\" > out.txt").env("WHO", "there"))
            .step(Step::new("fail", "false"))
            .step(Step::new("skipped", "touch skipped"))
            .step(Step::new("cleanup", "touch cleaned").always());
        let err = run_job(&job, &dir).unwrap_err();
        assert!(matches!(err, FloweyError::StepFailed { ref step, .. } if step == "fail"));
        assert_eq!(
            std::fs::read_to_string(dir.join("out.txt")).unwrap(),
            "hi there\n"
        );
        assert!(!dir.join("skipped").exists());
        assert!(dir.join("cleaned").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
