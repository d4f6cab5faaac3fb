//! Unit tests: small assembled programs run on a standalone processor.

mod basic;
pub(crate) mod harness;
mod modes;
mod paging;
