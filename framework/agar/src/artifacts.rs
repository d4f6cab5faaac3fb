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

/// Resolves artifact ids to local files: `$AGAR_ARTIFACTS_DIR/<name>`, then the artifact
/// cache. A missing artifact is an error naming the command that restores it.
pub fn resolve(name: &str) -> Result<PathBuf> {
    static RESOLVER: OnceLock<std::result::Result<artifacts::Resolver, String>> = OnceLock::new();
    let resolver = RESOLVER
        .get_or_init(|| artifacts::Resolver::from_env().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Artifact {
            name: name.into(),
            message: e.clone(),
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
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let command = format!(
        "RUSTFLAGS='-C target-feature=+crt-static' cargo build -p agent --target {AGENT_TARGET}"
    );
    tracing::info!(%command, "building the guest agent");
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
    Ok(p)
}

/// Fails unless `path` is an ELF executable without an interpreter (static or static-pie):
/// the initramfs has no dynamic loader.
fn check_static(path: &std::path::Path) -> Result<()> {
    let data = std::fs::read(path).map_err(Error::io(path))?;
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
