//! Differential tests of agar's `emu` CPU against the host CPU.
//!
//! # Architecture
//! Every tested instruction form is wrapped in a stub that loads the general registers,
//! RFLAGS and the x87/SSE state (FXRSTOR) from a [`State`](harness::State) block, executes the
//! instruction, and stores everything back (FXSAVE). The same stub bytes run twice: natively,
//! from an executable anonymous mapping, and on a standalone `emu` processor in 64-bit mode.
//! Inputs are random, biased towards edge values; results must agree on every register, the
//! flags the SDM defines for the instruction, the vector and x87 state, and a memory buffer
//! that memory operands point into.
//!
//! The crate holds only tests. It is the one place that runs generated machine code on the
//! host, which needs `unsafe`; that code is confined to `harness::native`.
//!
//! `cargo test -p cpu_emu_difftest` runs the default number of cases per form;
//! `EMU_DIFFTEST_CASES=N` runs N per form.

#![cfg_attr(
    test,
    expect(
        unsafe_code,
        reason = "runs generated instruction stubs on the host CPU"
    )
)]

#[cfg(test)]
mod forms;
#[cfg(test)]
mod harness;
#[cfg(test)]
mod int_forms;
#[cfg(test)]
mod pair_forms;
#[cfg(test)]
mod rng;
#[cfg(test)]
mod sse_forms;
#[cfg(test)]
mod string_forms;
#[cfg(test)]
mod x87_forms;
