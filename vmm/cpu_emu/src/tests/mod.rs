//! Unit tests: small assembled programs run on a standalone processor.

mod basic;
mod fused;
pub(crate) mod harness;
mod modes;
mod paging;
