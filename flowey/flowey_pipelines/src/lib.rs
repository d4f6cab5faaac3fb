//! agar's pipelines. Each function returns one [`Pipeline`]; [`all`] lists them. The YAML in
//! `ci/` is generated from here (`cargo run -p flowey_pipelines -- regen`), and any job runs
//! locally with `cargo run -p flowey_pipelines -- run <pipeline> <job>`.

use flowey_core::Job;
use flowey_core::Pipeline;
use flowey_core::Step;
use flowey_core::Triggers;

/// Installs the Debian packages the build and the tests use (same script as `.ci/run`).
fn install_deps() -> Step {
    Step::new("install Debian packages", "sudo bash .ci/install-deps")
}

/// Restores guest artifacts and builds the binaries the VM tests spawn.
fn setup() -> Step {
    Step::new("restore artifacts and build", "bash .ci/setup")
}

/// The checks every change gets: lint, unit + VM tests on the default matrix.
pub fn ci() -> Pipeline {
    Pipeline {
        name: "ci".into(),
        triggers: Triggers {
            push_branches: vec!["main".into()],
            pull_request: true,
            schedule: None,
            manual: true,
        },
        jobs: vec![
            Job::new("lint", "fmt, clippy, generated files", 30)
                .env("CARGO_TERM_COLOR", "always")
                .step(Step::new("rustfmt", "cargo fmt --all -- --check"))
                .step(Step::new(
                    "clippy",
                    "cargo clippy --workspace --all-targets -- -D warnings",
                ))
                .step(Step::new(
                    "generated CI YAML is current",
                    "cargo run -q -p flowey_pipelines -- regen --check",
                )),
            Job::new("test", "unit and VM tests (default matrix)", 90)
                .env("CARGO_TERM_COLOR", "always")
                .env("AGAR_REQUIRE_QEMU_IMG", "1")
                .env("AGAR_REQUIRE_CHROMIUM", "1")
                .step(install_deps())
                .step(setup())
                .step(Step::new(
                    "tests",
                    "cargo nextest run --workspace --profile ci",
                ))
                .step(
                    Step::new(
                        "matrix report",
                        "cargo run -q -p agar_cli -- report target/agar-tests -o target/agar-report",
                    )
                    .always(),
                )
                .artifact("junit", "target/nextest/ci/junit.xml")
                .artifact("vm-test-logs", "target/agar-tests")
                .artifact("matrix-report", "target/agar-report"),
        ],
    }
}

/// Heavier work on a schedule: the full VM matrix, fuzzing, benchmarks.
pub fn nightly() -> Pipeline {
    Pipeline {
        name: "nightly".into(),
        triggers: Triggers {
            push_branches: Vec::new(),
            pull_request: false,
            schedule: Some("0 2 * * *".into()),
            manual: true,
        },
        jobs: vec![
            Job::new("vm-matrix-full", "full VM matrix (both kernels, all cells, -p 2)", 240)
                .env("AGAR_FULL_MATRIX", "1")
                .step(install_deps())
                .step(setup())
                .step(Step::new(
                    "tests",
                    "cargo nextest run -p vm_tests --profile ci --run-ignored all",
                ))
                .artifact("junit", "target/nextest/ci/junit.xml")
                .artifact("vm-test-logs", "target/agar-tests"),
            Job::new("fuzz", "fuzz every target for 10 minutes", 240)
                .step(Step::new("cargo-fuzz", "cargo install cargo-fuzz --locked"))
                .step(Step::new(
                    "fuzz",
                    "for manifest in $(git ls-files '*/fuzz/Cargo.toml'); do\n  \
                     dir=$(dirname \"$manifest\")/..\n  \
                     for target in $(cd \"$dir\" && cargo +nightly fuzz list); do\n    \
                     (cd \"$dir\" && cargo +nightly fuzz run \"$target\" -- -max_total_time=600)\n  \
                     done\n\
                     done",
                )),
            Job::new("bench", "benchmarks against QEMU and qemu-img", 120)
                .step(install_deps())
                .step(setup())
                .step(Step::new("benchmarks", "bash .ci/bench")),
        ],
    }
}

/// Every pipeline, in the order their files are written.
pub fn all() -> Vec<Pipeline> {
    vec![ci(), nightly()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_validate() {
        for p in all() {
            p.validate().unwrap();
        }
    }

    #[test]
    fn checked_in_yaml_is_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for p in all() {
            let path = root.join("ci").join(format!("{}.yml", p.name));
            let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; run `cargo run -p flowey_pipelines -- regen`",
                    path.display()
                )
            });
            assert_eq!(
                on_disk,
                p.to_github_yaml(),
                "{} is stale; run `cargo run -p flowey_pipelines -- regen`",
                path.display()
            );
        }
    }
}
