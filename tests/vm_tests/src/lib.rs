//! vm_tests.
