//! agar's test artifacts: typed ids, the pinned manifest and lock, the resolver tests use,
//! and the restore side (verified downloads, Debian packages, recipes) behind `agar artifacts`.
//!
//! # Architecture
//!
//! - [`ids`]: one typed handle per artifact (`ids::DEBIAN12_K61_KERNEL: Artifact<Kernel>`),
//!   tagged with kind, OS and architecture. The snake_case name is the key everywhere else.
//! - [`manifest`]: `manifest.toml` (where each artifact comes from: `url`, `deb`, `build`) and
//!   `artifacts.lock` (the sha256 and size of each, and the Debian packages it came from),
//!   both compiled in.
//! - [`cache`]: the content-addressed cache (`$AGAR_CACHE_DIR`, default `~/.cache/agar`):
//!   read-only blobs named by digest, small ref files naming them, advisory locks.
//! - [`restore`]: what `agar artifacts restore` runs: [`download`] (verified, resumable,
//!   retried HTTP), [`apt`] + [`deb`] (Debian packages), [`recipes`] (the initramfs).
//! - [`media`]: BIOS boot media (an MBR disk as VHD/VHDX/raw, an El Torito ISO) assembled from
//!   a kernel, initramfs archives and a command line with Debian's syslinux/mtools/xorriso,
//!   cached by the hash of their inputs. The framework builds media with the agent inside
//!   at test time; `restore` builds the pinned ones.
//! - [`resolve`]: what tests call. `$AGAR_ARTIFACTS_DIR/<name>`, then the cache; a missing
//!   artifact is an error naming the command to run. Tests never build or download.
//!
//! ```no_run
//! let resolver = artifacts::Resolver::from_env()?;
//! let kernel = resolver.resolve(&artifacts::ids::DEBIAN12_K61_KERNEL)?;
//! # Ok::<(), artifacts::ResolveError>(())
//! ```

pub mod apt;
pub mod cache;
pub mod deb;
pub mod download;
pub mod hash;
pub mod ids;
pub mod maintenance;
pub mod manifest;
pub mod media;
pub mod progress;
pub mod recipes;
pub mod resolve;
pub mod restore;

pub use ids::Artifact;
pub use ids::ArtifactId;
pub use ids::ArtifactKind;
pub use resolve::ResolveError;
pub use resolve::Resolver;
