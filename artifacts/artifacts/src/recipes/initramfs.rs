//! The agar initramfs: busybox-static, `/init` and kernel modules, as a deterministic cpio.

/// The `/init` script (docs/src/guest-contract.md).
pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// Bump when the archive layout changes in a way the script text does not show.
const RECIPE_VERSION: u32 = 1;

pub(crate) fn fingerprint_input() -> String {
    format!("initramfs v{RECIPE_VERSION}\n{INIT_SCRIPT}")
}
