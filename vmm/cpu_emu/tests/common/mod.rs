//! Support shared by integration tests.

pub mod legacy_pc;
