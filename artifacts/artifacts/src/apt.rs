//! Fetching Debian packages through the host's apt (`apt-cache`, `apt-get download`).
//!
//! apt checks each package against the signed archive index, so what lands here is
//! authenticated; the lock's sha256 then pins the exact bytes. Restoring Debian-sourced
//! artifacts therefore needs a Debian or Ubuntu host whose apt sources include Debian 12
//! ("bookworm", with bookworm-security for the 6.12 kernel).

use std::ffi::OsString;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

/// The apt programs to run (the host's `apt-get` and `apt-cache` unless told otherwise).
#[derive(Debug, Clone)]
pub struct Apt {
    /// `apt-get`.
    pub apt_get: OsString,
    /// `apt-cache`.
    pub apt_cache: OsString,
}

impl Default for Apt {
    fn default() -> Self {
        Self {
            apt_get: "apt-get".into(),
            apt_cache: "apt-cache".into(),
        }
    }
}

/// A failed apt command.
#[derive(Debug, thiserror::Error)]
pub enum AptError {
    /// apt is not installed.
    #[error(
        "restoring Debian-sourced artifacts needs apt-get and apt-cache (a Debian or Ubuntu host with Debian 12 \"bookworm\" sources); on other hosts copy a restored cache ($AGAR_CACHE_DIR) from such a host, or put the files in $AGAR_ARTIFACTS_DIR"
    )]
    Missing,
    /// apt ran and failed.
    #[error("`{command}` failed: {detail}{}", hint(detail))]
    Failed {
        /// The command line.
        command: String,
        /// Its stderr (last lines) or exit status.
        detail: String,
    },
}

fn hint(detail: &str) -> &'static str {
    if detail.contains("Unable to locate package")
        || detail.contains("has no installation candidate")
    {
        " (is Debian 12 \"bookworm\" (and bookworm-security) in the apt sources? run `sudo apt-get update`)"
    } else {
        ""
    }
}

fn run(cmd: &mut Command) -> Result<String, AptError> {
    let command = format!("{cmd:?}").replace('"', "");
    tracing::debug!(%command, "running");
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            AptError::Missing
        } else {
            AptError::Failed {
                command: command.clone(),
                detail: e.to_string(),
            }
        }
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(4).collect();
        let detail = if tail.is_empty() {
            out.status.to_string()
        } else {
            tail.into_iter().rev().collect::<Vec<_>>().join("; ")
        };
        return Err(AptError::Failed { command, detail });
    }
    if !stderr.trim().is_empty() {
        tracing::debug!(%command, stderr = %stderr.trim(), "apt said");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Apt {
    /// The package a metapackage depends on (its first real `Depends:`).
    pub fn resolve_metapackage(&self, meta: &str) -> Result<String, AptError> {
        let out = run(Command::new(&self.apt_cache).args([
            "depends",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
            meta,
        ]))?;
        parse_first_depends(&out).ok_or_else(|| AptError::Failed {
            command: format!("apt-cache depends {meta}"),
            detail: "no `Depends:` line".into(),
        })
    }

    /// The version apt would download for `package` (`Candidate:` of `apt-cache policy`).
    pub fn candidate_version(&self, package: &str) -> Result<String, AptError> {
        let out = run(Command::new(&self.apt_cache).args(["policy", package]))?;
        parse_candidate(&out).ok_or_else(|| AptError::Failed {
            command: format!("apt-cache policy {package}"),
            detail: "Unable to locate package (no candidate version)".into(),
        })
    }

    /// Downloads `package` (`version`, or the candidate) into the empty directory `dir`; returns
    /// the `.deb` path.
    pub fn download(
        &self,
        package: &str,
        version: Option<&str>,
        dir: &Path,
    ) -> Result<PathBuf, AptError> {
        let spec = match version {
            Some(v) => format!("{package}={v}"),
            None => package.to_owned(),
        };
        run(Command::new(&self.apt_get)
            .args(["download", "-q", &spec])
            .current_dir(dir))?;
        let debs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| AptError::Failed {
                command: format!("apt-get download {spec}"),
                detail: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect();
        match <[PathBuf; 1]>::try_from(debs) {
            Ok([deb]) => Ok(deb),
            Err(found) => Err(AptError::Failed {
                command: format!("apt-get download {spec}"),
                detail: format!("expected one .deb, found {}", found.len()),
            }),
        }
    }
}

fn parse_first_depends(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| !p.starts_with('<') && !p.is_empty())
        .map(str::to_owned)
}

fn parse_candidate(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .find(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_real_dependency_of_a_metapackage() {
        let out = "linux-image-cloud-amd64\n  Depends: <linux-image-virtual>\n  Depends: linux-image-6.1.0-56-cloud-amd64\n  Depends: other\n";
        assert_eq!(
            parse_first_depends(out).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(parse_first_depends("x\n"), None);
    }

    #[test]
    fn candidate_version_from_policy() {
        let out = "seabios:\n  Installed: 1.16.2-1\n  Candidate: 1.16.2-1\n  Version table:\n";
        assert_eq!(parse_candidate(out).as_deref(), Some("1.16.2-1"));
        assert_eq!(parse_candidate("x:\n  Candidate: (none)\n"), None);
    }

    #[test]
    fn missing_package_error_tells_what_to_run() {
        let e = AptError::Failed {
            command: "apt-get download nope".into(),
            detail: "E: Unable to locate package nope".into(),
        };
        assert!(e.to_string().contains("sudo apt-get update"));
    }
}
