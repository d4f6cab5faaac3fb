//! Resolving artifact ids to files (through the `artifacts` crate), and providing the guest
//! agent binary.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::error::Error;
use crate::error::Result;

/// The target triple the guest agent is built for.
pub const AGENT_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Whether the `artifacts` crate declares an id with this name.
pub fn is_declared(name: &str) -> bool {
    artifacts::ArtifactId::by_name(name).is_some()
}

/// The process's artifact resolver (`artifacts::Resolver::from_env`).
pub fn resolver() -> Result<&'static artifacts::Resolver> {
    static RESOLVER: OnceLock<std::result::Result<artifacts::Resolver, String>> = OnceLock::new();
    RESOLVER
        .get_or_init(|| artifacts::Resolver::from_env().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Other(format!("artifact resolver: {e}")))
}

/// Resolves artifact ids to local files: `$AGAR_ARTIFACTS_DIR/<name>`, then the artifact
/// cache. A missing artifact is an error naming the command that restores it.
pub fn resolve(name: &str) -> Result<PathBuf> {
    let resolver = resolver().map_err(|e| Error::Artifact {
        name: name.into(),
        message: e.to_string(),
    })?;
    resolver.resolve_name(name).map_err(|e| Error::Artifact {
        name: name.into(),
        message: e.to_string(),
    })
}

/// The static guest agent: `$AGAR_AGENT`, or built (once per process) with cargo into the
/// running test binary's target directory.
pub fn agent_binary() -> Result<PathBuf> {
    static AGENT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    AGENT
        .get_or_init(|| find_or_build_agent().map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Other)
}

fn find_or_build_agent() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("AGAR_AGENT").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        check_static(&p)?;
        return Ok(p);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = crate::output::target_dir().unwrap_or_else(|| workspace.join("target"));
    let built = target.join(AGENT_TARGET).join("debug").join("agar-agent");
    if newer_than_sources(&built, &workspace) {
        // Skips a cargo run (0.2-1 s, serialized on cargo's lock across test processes).
        check_static(&built)?;
        tracing::info!(path = %built.display(), "guest agent is up to date");
        return Ok(built);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let command = format!(
        "RUSTFLAGS='-C target-feature=+crt-static' cargo build -p agent --target {AGENT_TARGET}"
    );
    tracing::info!(%command, "building the guest agent");
    let started = std::time::Instant::now();
    let out = std::process::Command::new(&cargo)
        .args(["build", "--quiet", "-p", "agent", "--target", AGENT_TARGET])
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .output()
        .map_err(|source| Error::Spawn {
            program: format!("{} (to build the guest agent)", cargo.to_string_lossy()),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "building the guest agent failed ({command}; or set AGAR_AGENT to a static build):\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let p = target.join(AGENT_TARGET).join("debug").join("agar-agent");
    check_static(&p)?;
    // Cargo leaves the binary alone when nothing it is built from changed, although a
    // watched file did (a merge rewrote Cargo.lock): mark it checked, or every later test
    // process would run cargo again (~0.2-0.3 s each, serialized on cargo's lock).
    if !newer_than_sources(&p, &workspace)
        && let Err(e) =
            std::fs::File::open(&p).and_then(|f| f.set_modified(std::time::SystemTime::now()))
    {
        tracing::warn!(path = %p.display(), error = %e, "cannot mark the guest agent up to date");
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        path = %p.display(),
        "guest agent ready"
    );
    Ok(p)
}

/// Whether `binary` exists and is newer than every source it is built from (the agent and
/// protocol crates, and the lock file). Anything else (a toolchain change) needs a clean
/// build or `AGAR_AGENT` anyway.
fn newer_than_sources(binary: &std::path::Path, workspace: &std::path::Path) -> bool {
    fn newest(p: &std::path::Path, acc: &mut Option<std::time::SystemTime>) {
        let Ok(m) = std::fs::metadata(p) else { return };
        if m.is_dir() {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                newest(&e.path(), acc);
            }
        } else if let Ok(t) = m.modified() {
            *acc = Some(acc.map_or(t, |a| a.max(t)));
        }
    }
    let Ok(built) = std::fs::metadata(binary).and_then(|m| m.modified()) else {
        return false;
    };
    let mut src = None;
    for p in [
        "framework/agent/src",
        "framework/agent/Cargo.toml",
        "framework/agent_protocol/src",
        "framework/agent_protocol/Cargo.toml",
        "Cargo.lock",
    ] {
        newest(&workspace.join(p), &mut src);
    }
    src.is_some_and(|s| s < built)
}

/// Fails unless `path` is an ELF executable without an interpreter (static or static-pie):
/// the initramfs has no dynamic loader.
fn check_static(path: &std::path::Path) -> Result<()> {
    // The ELF and program headers sit at the start of the file.
    let mut data = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            std::fs::File::open(path).map_err(Error::io(path))?,
            64 << 10,
        ),
        &mut data,
    )
    .map_err(Error::io(path))?;
    let bad = |why: &str| Error::Other(format!("guest agent {}: {why}", path.display()));
    if data.get(..4) != Some(b"\x7fELF") || data.get(4) != Some(&2) {
        return Err(bad("not a 64-bit ELF file"));
    }
    let u16_at = |o: usize| {
        data.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let phoff = data
        .get(0x20..0x28)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| bad("truncated ELF header"))?;
    let (entsize, num) = (
        u16_at(0x36).ok_or_else(|| bad("truncated ELF header"))?,
        u16_at(0x38).ok_or_else(|| bad("truncated ELF header"))?,
    );
    for i in 0..num {
        let at = phoff + i * entsize;
        let ty = data
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| bad("truncated program headers"))?;
        if ty == 3 {
            return Err(bad(
                "dynamically linked (build with RUSTFLAGS='-C target-feature=+crt-static')",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_is_refused() {
        // The shell on the host is dynamically linked; the test binary's loader check
        // must say so.
        let e = check_static(std::path::Path::new("/bin/sh")).unwrap_err();
        assert!(e.to_string().contains("dynamically linked"), "{e}");
        assert!(check_static(std::path::Path::new("/etc/hostname")).is_err());
    }
}
