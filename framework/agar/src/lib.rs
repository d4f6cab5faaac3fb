//! agar.
