//! Project recipes: artifacts agar builds itself from other inputs. (The BIOS boot media
//! recipes live in [`crate::media`], which the framework also calls directly.)

use crate::manifest::Recipe;

pub mod cpio;
pub mod initramfs;
pub mod kmod;

/// What, besides the manifest entry, decides a recipe's output: its code version and scripts.
pub(crate) fn fingerprint_input(recipe: &Recipe) -> String {
    match recipe {
        Recipe::Initramfs { .. } => initramfs::fingerprint_input(),
        Recipe::BiosDisk { .. } | Recipe::BiosIso { .. } => crate::media::fingerprint_input(),
    }
}
