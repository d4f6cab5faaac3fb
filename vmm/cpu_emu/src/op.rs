//! Pre-decoded operations: what the interpreter executes.
//!
//! The decoder turns each x86 instruction into one [`Op`]: a handler function, specialized at
//! compile time for its operand size and operand kinds, plus pre-resolved operands (register
//! indices, the effective-address recipe, the immediate). Executing an op is one indirect call;
//! no decoding happens on the hot path.

use virt::ExitHandler;

use crate::cpu::Cpu;
use crate::cpu::Res;
use crate::cpu::ZERO;

/// An op's handler. `Cpu::regs[RIP]` already points at the next instruction when it runs.
pub(crate) type Handler = fn(&mut Cpu, &Op, &dyn ExitHandler) -> Res;

/// One pre-decoded instruction.
#[derive(Clone, Copy)]
pub(crate) struct Op {
    pub f: Handler,
    /// Immediate, sign- or zero-extended as the instruction defines; for relative branches the
    /// displacement from the next instruction.
    pub imm: u64,
    /// Memory displacement (for RIP-relative operands: relative to the next instruction).
    pub disp: u64,
    /// Instruction length in bytes.
    pub len: u8,
    /// ModRM.reg operand (register index; 8-bit: 16..19 are AH, CH, DH, BH).
    pub r: u8,
    /// Register form of ModRM.rm, or a second register operand.
    pub rm: u8,
    /// Effective address: base register (`ZERO` when absent, `RIP` for RIP-relative).
    pub base: u8,
    /// Effective address: index register (`ZERO` when absent).
    pub index: u8,
    /// Effective address: log2 of the scale.
    pub scale: u8,
    /// Segment of the memory operand.
    pub seg: u8,
    /// Address size: 0 = 16, 1 = 32, 2 = 64 bits.
    pub asz: u8,
    /// Handler-specific small operand (condition code, REP kind, operand size, ...).
    pub x: u8,
    /// Second handler-specific operand.
    pub x2: u8,
}

impl Op {
    /// An op with no operands.
    pub(crate) fn new(f: Handler, len: u8) -> Op {
        Op {
            f,
            imm: 0,
            disp: 0,
            len,
            r: 0,
            rm: 0,
            base: ZERO,
            index: ZERO,
            scale: 0,
            seg: crate::cpu::DS as u8,
            asz: 2,
            x: 0,
            x2: 0,
        }
    }
}
