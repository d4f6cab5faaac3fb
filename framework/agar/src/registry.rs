//! The test registry that `#[vm_test]` fills through a `linkme` distributed slice.

use std::future::Future;
use std::pin::Pin;

use crate::capability::Capability;
use crate::cell::Cell;
use crate::vm::VmBuilder;

/// The future a test body returns.
pub type TestFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>>>>;

/// A test body, adapted from `async fn(VmBuilder) -> anyhow::Result<()>`.
pub type TestFn = fn(VmBuilder) -> TestFuture;

/// One cell of a test's matrix as written in the attribute.
#[derive(Debug, Clone, Copy)]
pub struct CellDef {
    /// The cell.
    pub cell: Cell,
    /// `ignore(reason = ..., cell)`.
    pub ignore: Option<&'static str>,
    /// `unstable(reason = ..., cell)`.
    pub unstable: Option<&'static str>,
}

/// One `#[vm_test]` function.
#[derive(Debug)]
pub struct TestDef {
    /// The function name: the last part of every test name.
    pub name: &'static str,
    /// `module_path!()` where it is defined.
    pub module: &'static str,
    /// Source location, for error messages.
    pub file: &'static str,
    /// Source line.
    pub line: u32,
    /// The matrix.
    pub cells: &'static [CellDef],
    /// `ignore(reason = ...)` for the whole test.
    pub ignore: Option<&'static str>,
    /// `unstable(reason = ...)` for the whole test.
    pub unstable: Option<&'static str>,
    /// `requires(...)`.
    pub requires: &'static [Capability],
    /// Extra artifact ids (`artifacts(...)`), beyond what the cell needs.
    pub artifacts: &'static [&'static str],
    /// `timeout = seconds`: the watchdog for this test.
    pub timeout_secs: Option<u64>,
    /// A fixture for the framework's own tests: never listed, run only through
    /// `--agar-fixture <name>`.
    pub fixture: bool,
    /// The body.
    pub run: TestFn,
}

/// Every registered test.
#[linkme::distributed_slice]
pub static TESTS: [TestDef];
