//! The x87 subset: loads, stores, integer conversions, arithmetic on exactly representable
//! values, compares, and control/status instructions.

use iced_x86::code_asm::*;

use crate::forms::Form;
use crate::forms::Fx;
use crate::forms::check;
use crate::harness::State;
use crate::rng::Rng;

const CF: u64 = 1;
const PF: u64 = 4;
const AF: u64 = 0x10;
const ZF: u64 = 0x40;
const SF: u64 = 0x80;
const OF: u64 = 0x800;
const ALL: u64 = CF | PF | AF | ZF | SF | OF;

/// The 80-bit encoding of `v` (exact for every binary64 value).
fn f80(v: f64) -> (u64, u16) {
    let b = v.to_bits();
    let sign = ((b >> 63) as u16) << 15;
    let e = ((b >> 52) & 0x7ff) as i32;
    let frac = b & 0x000f_ffff_ffff_ffff;
    if e == 0 && frac == 0 {
        return (0, sign);
    }
    assert!(e != 0 && e != 0x7ff, "only normal numbers here");
    ((1 << 63) | (frac << 11), sign | (e - 1023 + 16383) as u16)
}

/// Small values with short significands: x87 and binary64 arithmetic agree on them.
fn small(rng: &mut Rng) -> f64 {
    let n = rng.below(4001) as f64 - 2000.0;
    n / (1u64 << rng.below(5)) as f64
}

/// Loads ST0..ST(n-1) with small values; ST1 divides ST0 exactly, and memory at [r15+8]
/// holds a small double, at [r15+16] a small float, at [r15+24] an integer.
fn stack(n: usize) -> impl Fn(&mut State, &mut Rng, u64) {
    move |s, rng, _| {
        let mut vals: Vec<f64> = (0..n).map(|_| small(rng)).collect();
        if n >= 2 {
            let d = (rng.below(16) + 1) as f64 * if rng.below(2) == 0 { 1.0 } else { -0.5 };
            vals[1] = d;
            vals[0] = d * (rng.below(200) as f64 - 100.0);
        }
        if n >= 1 && rng.below(8) == 0 {
            vals[0] = 0.0;
        }
        let enc: Vec<_> = vals.iter().map(|&v| f80(v)).collect();
        s.set_x87(&enc);
        let d = small(rng);
        s.buf[264..272].copy_from_slice(&d.to_bits().to_le_bytes());
        let f = small(rng) as f32;
        s.buf[272..276].copy_from_slice(&f.to_bits().to_le_bytes());
        let i = rng.below(100_000) as i64 - 50_000;
        s.buf[280..288].copy_from_slice(&i.to_le_bytes());
    }
}

macro_rules! x87 {
    ($v:expr, $n:expr, $flags:expr, $($name:literal => |$a:ident| $body:expr,)*) => {
        $(
            $v.push(Form::new($name, $flags, 1, Box::new(|$a, _| $body)).fx(Fx::X87).prep(stack($n)));
        )*
    };
}

#[test]
fn x87_subset_matches_the_host() {
    let mut v = Vec::new();
    x87!(v, 2, ALL,
        "fld st1" => |a| a.fld(st1),
        "fld m64" => |a| a.fld(qword_ptr(r15 + 8)),
        "fld m32" => |a| a.fld(dword_ptr(r15 + 16)),
        "fild m64" => |a| a.fild(qword_ptr(r15 + 24)),
        "fild m32" => |a| a.fild(dword_ptr(r15 + 24)),
        "fild m16" => |a| a.fild(word_ptr(r15 + 24)),
        "fld1; fldz" => |a| { a.fld1()?; a.fldz() },
        "fldpi" => |a| a.fldpi(),
        "fldl2e; fldln2" => |a| { a.fldl2e()?; a.fldln2() },
        "fstp m64" => |a| a.fstp(qword_ptr(r15 + 32)),
        "fst m32" => |a| a.fst(dword_ptr(r15 + 32)),
        "fstp m80" => |a| a.fstp(tword_ptr(r15 + 32)),
        "fstp st1" => |a| a.fstp(st1),
        "fistp m64" => |a| a.fistp(qword_ptr(r15 + 32)),
        "fistp m32" => |a| a.fistp(dword_ptr(r15 + 32)),
        "fist m16" => |a| a.fist(word_ptr(r15 + 32)),
        "fxch st1" => |a| a.fxch(st0, st1),
        "fchs" => |a| a.fchs(),
        "fabs" => |a| a.fabs(),
        "fadd st0, st1" => |a| a.fadd_2(st0, st1),
        "fsub st0, st1" => |a| a.fsub_2(st0, st1),
        "fsubr st0, st1" => |a| a.fsubr_2(st0, st1),
        "fmul st0, st1" => |a| a.fmul_2(st0, st1),
        "fdiv st0, st1" => |a| a.fdiv_2(st0, st1),
        "fadd st1, st0" => |a| a.fadd_2(st1, st0),
        "faddp" => |a| a.faddp(st1, st0),
        "fmulp" => |a| a.fmulp(st1, st0),
        "fsubrp" => |a| a.fsubrp(st1, st0),
        "fadd m64" => |a| a.fadd(qword_ptr(r15 + 8)),
        "fmul m32" => |a| a.fmul(dword_ptr(r15 + 16)),
        "fisub m32" => |a| a.fisub(dword_ptr(r15 + 24)),
        "frndint" => |a| a.frndint(),
        "ftst; fnstsw ax" => |a| { a.ftst()?; a.fnstsw(ax) },
        "fcom st1; fnstsw ax" => |a| { a.fcom_2(st0, st1)?; a.fnstsw(ax) },
        "fcomp m64; fnstsw" => |a| { a.fcomp(qword_ptr(r15 + 8))?; a.fnstsw(word_ptr(r15 + 40)) },
        "fucompp; fnstsw ax" => |a| { a.fucompp()?; a.fnstsw(ax) },
        "fxam; fnstsw ax" => |a| { a.fxam()?; a.fnstsw(ax) },
        "fnstcw; fldcw" => |a| { a.fnstcw(word_ptr(r15 + 40))?; a.fldcw(word_ptr(r15 + 40)) },
        "fninit" => |a| a.fninit(),
        "fnclex; fwait" => |a| { a.fnclex()?; a.wait() },
        "ffree st1; fincstp" => |a| { a.ffree(st1)?; a.fincstp() },
    );
    x87!(v, 2, ZF | PF | CF,
        "fcomi st0, st1" => |a| a.fcomi(st0, st1),
        "fucomip st0, st1" => |a| a.fucomip(st0, st1),
    );
    check(v);
}
