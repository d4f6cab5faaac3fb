//! The VM test matrix. The tests live in `tests/matrix/` (a `harness = false` binary run by
//! agar's harness); see docs/src/writing-tests.md.
