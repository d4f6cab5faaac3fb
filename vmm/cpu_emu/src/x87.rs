//! x87 instructions (to be filled in).

use iced_x86::Instruction;

use crate::op::Handler;
use crate::op::Op;

/// Translates an x87 instruction, or `None` if it is not one this CPU implements.
pub(crate) fn translate(_ins: &Instruction, _op: &mut Op, _bitness: u32) -> Option<Handler> {
    None
}
