//! The VM test matrix: `cargo nextest run -p vm_tests`.

mod agent;
mod boot;
mod framework;
mod vmbus;

fn main() {
    agar::test_main()
}
