//! The #[vm_test] attribute
