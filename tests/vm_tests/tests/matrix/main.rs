//! The VM test matrix: `cargo nextest run -p vm_tests`.

mod boot;

fn main() {
    agar::test_main()
}
