//! String instructions (MOVS, STOS, LODS, CMPS, SCAS) with and without REP/REPE/REPNE, every
//! element size, against the host.
//!
//! rSI and rDI are inputs relative to the base register (so both runs see the same values),
//! made absolute before the instruction and relative again after it without touching the
//! flags (`not r15; lea rsi, [rsi + r15 + 1]` is `rsi - r15`). rCX is a small count, and the
//! prepared buffers hold equal runs with at most one differing byte, so REPE and REPNE stop
//! at every position and run to the end.

use iced_x86::code_asm::*;

use crate::forms::Form;
use crate::forms::check;
use crate::harness::BUF_MID;
use crate::harness::State;
use crate::rng::Rng;

const ALL: u64 = 0x8d5;
/// Longest run: 24 elements of 8 bytes stay inside the 256 bytes each pointer has.
const MAX_COUNT: u64 = 24;

/// rSI in the lower half of the buffer, rDI in the upper half, both relative to the base.
fn prep(s: &mut State, rng: &mut Rng) {
    let src = rng.below(64);
    let dst = rng.below(64);
    s.gpr[6] = src.wrapping_sub(BUF_MID);
    s.gpr[7] = dst;
    s.gpr[1] = match rng.below(4) {
        0 => 0,
        _ => rng.below(MAX_COUNT + 1),
    };
    let fill = rng.next() as u8;
    let (lo, hi) = s.buf.split_at_mut(BUF_MID as usize);
    for b in lo.iter_mut() {
        *b = rng.next() as u8;
    }
    match rng.below(3) {
        // Equal runs: the destination copies the source (CMPS), or every byte is `fill`
        // and rAX holds it (SCAS).
        0 => hi.copy_from_slice(lo),
        1 => {
            hi.fill(fill);
            s.gpr[0] = u64::from_ne_bytes([fill; 8]);
        }
        _ => {
            for b in hi.iter_mut() {
                *b = rng.next() as u8;
            }
        }
    }
    if rng.below(2) == 0 {
        let at = (dst + rng.below(MAX_COUNT * 8)) as usize;
        s.buf[BUF_MID as usize + at] ^= 1 << rng.below(8);
    }
}

type Op = fn(&mut CodeAssembler) -> Result<(), IcedError>;

fn form(name: &str, flags: u64, op: Op) -> Form {
    Form::new(
        name,
        flags,
        1,
        Box::new(move |a, _| {
            a.lea(rsi, qword_ptr(rsi + r15))?;
            a.lea(rdi, qword_ptr(rdi + r15))?;
            op(a)?;
            a.not(r15)?;
            a.lea(rsi, qword_ptr(rsi + r15 + 1))?;
            a.lea(rdi, qword_ptr(rdi + r15 + 1))?;
            a.not(r15)
        }),
    )
    .prep(|s, rng, _| prep(s, rng))
}

#[test]
fn string_instructions_match_the_host() {
    let mut v = Vec::new();
    macro_rules! each_size {
        ($name:literal, $flags:expr, $(.$prefix:ident())? $b:ident, $w:ident, $d:ident, $q:ident) => {
            v.push(form(concat!($name, " (8-bit)"), $flags, |a| a$(.$prefix())?.$b()));
            v.push(form(concat!($name, " (16-bit)"), $flags, |a| a$(.$prefix())?.$w()));
            v.push(form(concat!($name, " (32-bit)"), $flags, |a| a$(.$prefix())?.$d()));
            v.push(form(concat!($name, " (64-bit)"), $flags, |a| a$(.$prefix())?.$q()));
        };
    }
    each_size!("movs", 0, movsb, movsw, movsd, movsq);
    each_size!("rep movs", 0, .rep() movsb, movsw, movsd, movsq);
    each_size!("stos", 0, stosb, stosw, stosd, stosq);
    each_size!("rep stos", 0, .rep() stosb, stosw, stosd, stosq);
    each_size!("lods", 0, lodsb, lodsw, lodsd, lodsq);
    each_size!("cmps", ALL, cmpsb, cmpsw, cmpsd, cmpsq);
    each_size!("repe cmps", ALL, .repe() cmpsb, cmpsw, cmpsd, cmpsq);
    each_size!("repne cmps", ALL, .repne() cmpsb, cmpsw, cmpsd, cmpsq);
    each_size!("scas", ALL, scasb, scasw, scasd, scasq);
    each_size!("repe scas", ALL, .repe() scasb, scasw, scasd, scasq);
    each_size!("repne scas", ALL, .repne() scasb, scasw, scasd, scasq);
    check(v);
}
