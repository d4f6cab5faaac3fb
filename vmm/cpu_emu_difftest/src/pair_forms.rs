//! Flag-setting instructions followed by a conditional branch: the pairs `emu` fuses into
//! one op (`cpu_emu::exec::fused`). Every condition, size and operand form runs against the
//! host; the branch's outcome lands in ESI.

use iced_x86::code_asm::*;

use crate::forms::Form;
use crate::forms::check;
use crate::harness::State;
use crate::rng::Rng;

const ALL: u64 = 0x8d5; // CF PF AF ZF SF OF
const LOGIC: u64 = ALL & !0x10; // AF undefined

/// Cases per pair form are the default divided by this (there are about 1200 forms).
const FEWER: u64 = 8;

/// The 16 conditions, in opcode order.
const CONDITIONS: [&str; 16] = [
    "o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g",
];

fn jcc(a: &mut CodeAssembler, cc: usize, l: CodeLabel) -> Result<(), IcedError> {
    match cc {
        0 => a.jo(l),
        1 => a.jno(l),
        2 => a.jb(l),
        3 => a.jae(l),
        4 => a.je(l),
        5 => a.jne(l),
        6 => a.jbe(l),
        7 => a.ja(l),
        8 => a.js(l),
        9 => a.jns(l),
        10 => a.jp(l),
        11 => a.jnp(l),
        12 => a.jl(l),
        13 => a.jge(l),
        14 => a.jle(l),
        _ => a.jg(l),
    }
}

/// `first`, then `j<cc>` over a move of 1 into ESI, else 2.
fn pair(
    a: &mut CodeAssembler,
    cc: usize,
    first: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    let mut taken = a.create_label();
    let mut end = a.create_label();
    first(a)?;
    jcc(a, cc, taken)?;
    a.mov(esi, 1u32)?;
    a.jmp(end)?;
    a.set_label(&mut taken)?;
    a.mov(esi, 2u32)?;
    a.set_label(&mut end)?;
    a.nop()
}

/// Biases the operands (RBX, RDX and the memory word at [r15 + 8]) towards equal,
/// off-by-one and zero, where the conditions differ.
fn bias(s: &mut State, rng: &mut Rng, _: u64) {
    match rng.below(6) {
        0 => s.gpr[2] = s.gpr[3],
        1 => s.gpr[2] = s.gpr[3].wrapping_add(1),
        2 => s.gpr[3] = 0,
        3 => s.gpr[3] = s.gpr[3].wrapping_neg() & 0xff,
        _ => {}
    }
    if rng.below(4) == 0 {
        let v = s.gpr[3].to_le_bytes();
        s.buf[8..16].copy_from_slice(&v);
    }
}

/// Registers and memory operand of one size: (name, RBX family, RDX family, [r15 + 8]).
macro_rules! each_size {
    ($body:ident) => {
        $body!(8, bl, dl, byte_ptr(r15 + 8));
        $body!(16, bx, dx, word_ptr(r15 + 8));
        $body!(32, ebx, edx, dword_ptr(r15 + 8));
        $body!(64, rbx, rdx, qword_ptr(r15 + 8));
    };
}

#[test]
fn flag_setting_instructions_and_branches_match_the_host() {
    let mut v = Vec::new();
    for (cc, &c) in CONDITIONS.iter().enumerate() {
        macro_rules! alu {
            ($name:literal, $m:ident, $flags:expr) => {
                macro_rules! one {
                    ($bits:literal, $d:expr, $s:expr, $mem:expr) => {
                        v.push(
                            Form::new(
                                format!("{} r, r; j{c} ({}-bit)", $name, $bits),
                                $flags,
                                1,
                                Box::new(move |a, _| pair(a, cc, |a| a.$m($d, $s))),
                            )
                            .prep(bias)
                            .fewer(FEWER),
                        );
                        v.push(
                            Form::new(
                                format!("{} r, imm; j{c} ({}-bit)", $name, $bits),
                                $flags,
                                4,
                                Box::new(move |a, i| {
                                    let imm = match $bits {
                                        8 => i as i8 as i32,
                                        16 => i as i16 as i32,
                                        _ => i as i32,
                                    };
                                    pair(a, cc, |a| a.$m($d, imm))
                                }),
                            )
                            .prep(bias)
                            .fewer(FEWER),
                        );
                    };
                }
                each_size!(one);
            };
        }
        alu!("cmp", cmp, ALL);
        alu!("test", test, LOGIC);
        alu!("add", add, ALL);
        alu!("sub", sub, ALL);
        alu!("and", and, LOGIC);
        alu!("or", or, LOGIC);
        alu!("xor", xor, LOGIC);
        macro_rules! mem {
            ($bits:literal, $d:expr, $s:expr, $mem:expr) => {
                v.push(
                    Form::new(
                        format!("cmp m, r; j{c} ({}-bit)", $bits),
                        ALL,
                        1,
                        Box::new(move |a, _| pair(a, cc, |a| a.cmp($mem, $s))),
                    )
                    .prep(bias)
                    .fewer(FEWER),
                );
                v.push(
                    Form::new(
                        format!("cmp r, m; j{c} ({}-bit)", $bits),
                        ALL,
                        1,
                        Box::new(move |a, _| pair(a, cc, |a| a.cmp($d, $mem))),
                    )
                    .prep(bias)
                    .fewer(FEWER),
                );
                v.push(
                    Form::new(
                        format!("test m, r; j{c} ({}-bit)", $bits),
                        LOGIC,
                        1,
                        Box::new(move |a, _| pair(a, cc, |a| a.test($mem, $s))),
                    )
                    .prep(bias)
                    .fewer(FEWER),
                );
                // INC/DEC leave CF alone: it comes from the input flags.
                v.push(
                    Form::new(
                        format!("inc r; j{c} ({}-bit)", $bits),
                        ALL,
                        1,
                        Box::new(move |a, _| pair(a, cc, |a| a.inc($d))),
                    )
                    .prep(bias)
                    .fewer(FEWER),
                );
                v.push(
                    Form::new(
                        format!("dec r; j{c} ({}-bit)", $bits),
                        ALL,
                        1,
                        Box::new(move |a, _| pair(a, cc, |a| a.dec($d))),
                    )
                    .prep(bias)
                    .fewer(FEWER),
                );
            };
        }
        each_size!(mem);
    }
    check(v);
}
