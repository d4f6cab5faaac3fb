//! Invalid `#[vm_test]` matrices are compile errors that say what to write instead.
//!
//! The cases only use the attribute: an invalid attribute expands to nothing but the error,
//! so these files need neither agar nor a runtime. `TRYBUILD=overwrite` refreshes the
//! expected `.stderr` files after a deliberate message change.

#[test]
fn invalid_matrices_are_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
