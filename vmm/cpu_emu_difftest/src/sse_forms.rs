//! SSE/SSE2 instruction forms.

use iced_x86::code_asm::*;

use crate::forms::Form;
use crate::forms::Fx;
use crate::forms::check;

const CF: u64 = 1;
const PF: u64 = 4;
const AF: u64 = 0x10;
const ZF: u64 = 0x40;
const SF: u64 = 0x80;
const OF: u64 = 0x800;
const ALL: u64 = CF | PF | AF | ZF | SF | OF;

/// `op xmm1, xmm2` and `op xmm1, m128` (aligned, at [r15 + 16]).
macro_rules! vv {
    ($v:expr, $fx:expr, $($m:ident),*) => {
        $(
            $v.push(Form::new(concat!(stringify!($m), " xmm, xmm"), ALL, 1, Box::new(|a, _| a.$m(xmm1, xmm2))).fx($fx));
            $v.push(Form::new(concat!(stringify!($m), " xmm, m128"), ALL, 1, Box::new(|a, _| a.$m(xmm3, xmmword_ptr(r15 + 16)))).fx($fx));
        )*
    };
}

/// Scalar forms with a 32-bit (`d`) or 64-bit (`q`) memory source.
macro_rules! vs {
    ($v:expr, $fx:expr, $sz:ident, $($m:ident),*) => {
        $(
            $v.push(Form::new(concat!(stringify!($m), " xmm, xmm"), ALL, 1, Box::new(|a, _| a.$m(xmm1, xmm2))).fx($fx));
            $v.push(Form::new(concat!(stringify!($m), " xmm, m"), ALL, 1, Box::new(|a, _| a.$m(xmm3, $sz(r15 + 12)))).fx($fx));
        )*
    };
}

/// `op xmm, xmm, imm8` and `op xmm, m128, imm8`.
macro_rules! vi {
    ($v:expr, $fx:expr, $($m:ident),*) => {
        $(
            $v.push(Form::new(concat!(stringify!($m), " xmm, xmm, imm"), ALL, 8, Box::new(|a, i| a.$m(xmm1, xmm2, (i & 0xff) as u32))).fx($fx));
            $v.push(Form::new(concat!(stringify!($m), " xmm, m128, imm"), ALL, 8, Box::new(|a, i| a.$m(xmm3, xmmword_ptr(r15 + 16), (i & 0xff) as u32))).fx($fx));
        )*
    };
}

#[test]
#[allow(
    clippy::vec_init_then_push,
    reason = "the form list is built by macros"
)]
fn sse2_integer_forms_match_the_host() {
    let mut v = Vec::new();
    vv!(
        v,
        Fx::Exact,
        paddb,
        paddw,
        paddd,
        paddq,
        psubb,
        psubw,
        psubd,
        psubq,
        paddsb,
        paddsw,
        psubsb,
        psubsw,
        paddusb,
        paddusw,
        psubusb,
        psubusw,
        pmullw,
        pmulhw,
        pmulhuw,
        pmuludq,
        pmaddwd,
        pand,
        pandn,
        por,
        pxor,
        pcmpeqb,
        pcmpeqw,
        pcmpeqd,
        pcmpgtb,
        pcmpgtw,
        pcmpgtd,
        pmaxub,
        pminub,
        pmaxsw,
        pminsw,
        pavgb,
        pavgw,
        psadbw,
        punpcklbw,
        punpcklwd,
        punpckldq,
        punpcklqdq,
        punpckhbw,
        punpckhwd,
        punpckhdq,
        punpckhqdq,
        packsswb,
        packssdw,
        packuswb,
        psllw,
        pslld,
        psllq,
        psrlw,
        psrld,
        psrlq,
        psraw,
        psrad,
        andps,
        andnps,
        orps,
        xorps,
        andpd,
        andnpd,
        orpd,
        xorpd,
        unpcklps,
        unpckhps,
        unpcklpd,
        unpckhpd,
        movaps,
        movdqa,
        movapd
    );
    // Shift counts from a register: mostly small so results are not all zero.
    for f in [
        Form::new(
            "psllw xmm, small count",
            ALL,
            1,
            Box::new(|a, _| a.psllw(xmm1, xmm2)),
        ),
        Form::new(
            "psrad xmm, small count",
            ALL,
            1,
            Box::new(|a, _| a.psrad(xmm1, xmm2)),
        ),
        Form::new(
            "psrlq xmm, small count",
            ALL,
            1,
            Box::new(|a, _| a.psrlq(xmm1, xmm2)),
        ),
    ] {
        v.push(f.prep(|s, rng, _| s.set_xmm(2, u128::from(rng.below(70)))));
    }
    vi!(v, Fx::Exact, pshufd, pshuflw, pshufhw, shufps, shufpd);
    for (name, f) in [
        ("psllw", 0),
        ("pslld", 1),
        ("psllq", 2),
        ("psrlw", 3),
        ("psrld", 4),
        ("psrlq", 5),
        ("psraw", 6),
        ("psrad", 7),
        ("pslldq", 8),
        ("psrldq", 9),
    ] {
        v.push(Form::new(
            format!("{name} xmm, imm"),
            ALL,
            8,
            Box::new(move |a, i| {
                let n = (i & 0x1f) as u32;
                match f {
                    0 => a.psllw(xmm1, n),
                    1 => a.pslld(xmm1, n),
                    2 => a.psllq(xmm1, n),
                    3 => a.psrlw(xmm1, n),
                    4 => a.psrld(xmm1, n),
                    5 => a.psrlq(xmm1, n),
                    6 => a.psraw(xmm1, n),
                    7 => a.psrad(xmm1, n),
                    8 => a.pslldq(xmm1, n),
                    _ => a.psrldq(xmm1, n),
                }
            }),
        ));
    }
    v.push(Form::new(
        "movdqu xmm, m128 (unaligned)",
        ALL,
        1,
        Box::new(|a, _| a.movdqu(xmm1, xmmword_ptr(r15 + 3))),
    ));
    v.push(Form::new(
        "movups m128, xmm (unaligned)",
        ALL,
        1,
        Box::new(|a, _| a.movups(xmmword_ptr(r15 - 7), xmm2)),
    ));
    v.push(Form::new(
        "movaps m128, xmm",
        ALL,
        1,
        Box::new(|a, _| a.movaps(xmmword_ptr(r15 + 32), xmm2)),
    ));
    v.push(Form::new(
        "movntdq m128, xmm",
        ALL,
        1,
        Box::new(|a, _| a.movntdq(xmmword_ptr(r15 + 32), xmm5)),
    ));
    v.push(Form::new(
        "movd xmm, r32",
        ALL,
        1,
        Box::new(|a, _| a.movd(xmm1, ebx)),
    ));
    v.push(Form::new(
        "movd r32, xmm",
        ALL,
        1,
        Box::new(|a, _| a.movd(ebx, xmm1)),
    ));
    v.push(Form::new(
        "movq xmm, r64",
        ALL,
        1,
        Box::new(|a, _| a.movq(xmm1, rbx)),
    ));
    v.push(Form::new(
        "movq r64, xmm",
        ALL,
        1,
        Box::new(|a, _| a.movq(rbx, xmm9)),
    ));
    v.push(Form::new(
        "movd xmm, m32",
        ALL,
        1,
        Box::new(|a, _| a.movd(xmm1, dword_ptr(r15 + 5))),
    ));
    v.push(Form::new(
        "movq xmm, m64",
        ALL,
        1,
        Box::new(|a, _| a.movq(xmm1, qword_ptr(r15 + 8))),
    ));
    v.push(Form::new(
        "movq m64, xmm",
        ALL,
        1,
        Box::new(|a, _| a.movq(qword_ptr(r15 + 8), xmm4)),
    ));
    v.push(Form::new(
        "movq xmm, xmm",
        ALL,
        1,
        Box::new(|a, _| a.movq(xmm1, xmm12)),
    ));
    v.push(Form::new(
        "movss xmm, xmm",
        ALL,
        1,
        Box::new(|a, _| a.movss(xmm1, xmm2)),
    ));
    v.push(Form::new(
        "movss xmm, m32",
        ALL,
        1,
        Box::new(|a, _| a.movss(xmm1, dword_ptr(r15 + 4))),
    ));
    v.push(Form::new(
        "movsd xmm, xmm",
        ALL,
        1,
        Box::new(|a, _| a.movsd_2(xmm1, xmm2)),
    ));
    v.push(Form::new(
        "movsd m64, xmm",
        ALL,
        1,
        Box::new(|a, _| a.movsd_2(qword_ptr(r15 + 4), xmm2)),
    ));
    v.push(Form::new(
        "movlps xmm, m64",
        ALL,
        1,
        Box::new(|a, _| a.movlps(xmm1, qword_ptr(r15))),
    ));
    v.push(Form::new(
        "movhps xmm, m64",
        ALL,
        1,
        Box::new(|a, _| a.movhps(xmm1, qword_ptr(r15))),
    ));
    v.push(Form::new(
        "movhpd m64, xmm",
        ALL,
        1,
        Box::new(|a, _| a.movhpd(qword_ptr(r15), xmm6)),
    ));
    v.push(Form::new(
        "movlpd m64, xmm",
        ALL,
        1,
        Box::new(|a, _| a.movlpd(qword_ptr(r15), xmm6)),
    ));
    v.push(Form::new(
        "movhlps",
        ALL,
        1,
        Box::new(|a, _| a.movhlps(xmm1, xmm2)),
    ));
    v.push(Form::new(
        "movlhps",
        ALL,
        1,
        Box::new(|a, _| a.movlhps(xmm1, xmm2)),
    ));
    v.push(Form::new(
        "pmovmskb",
        ALL,
        1,
        Box::new(|a, _| a.pmovmskb(ebx, xmm3)),
    ));
    v.push(Form::new(
        "movmskps",
        ALL,
        1,
        Box::new(|a, _| a.movmskps(ebx, xmm3)),
    ));
    v.push(Form::new(
        "movmskpd",
        ALL,
        1,
        Box::new(|a, _| a.movmskpd(ebx, xmm3)),
    ));
    v.push(Form::new(
        "pextrw r32, xmm, imm",
        ALL,
        8,
        Box::new(|a, i| a.pextrw(ebx, xmm3, (i & 7) as u32)),
    ));
    v.push(Form::new(
        "pinsrw xmm, r32, imm",
        ALL,
        8,
        Box::new(|a, i| a.pinsrw(xmm3, ebx, (i & 7) as u32)),
    ));
    v.push(Form::new(
        "pinsrw xmm, m16, imm",
        ALL,
        8,
        Box::new(|a, i| a.pinsrw(xmm3, word_ptr(r15 + 1), (i & 7) as u32)),
    ));
    v.push(Form::new(
        "ldmxcsr/stmxcsr",
        ALL,
        1,
        Box::new(|a, _| {
            a.stmxcsr(dword_ptr(r15 + 40))?;
            a.ldmxcsr(dword_ptr(r15 + 40))
        }),
    ));
    check(v);
}

#[test]
#[allow(
    clippy::vec_init_then_push,
    reason = "the form list is built by macros"
)]
fn sse_floating_point_forms_match_the_host() {
    let mut v = Vec::new();
    vv!(
        v,
        Fx::SseFloat,
        addps,
        addpd,
        subps,
        subpd,
        mulps,
        mulpd,
        divps,
        divpd,
        minps,
        minpd,
        maxps,
        maxpd,
        sqrtps,
        sqrtpd,
        cvtdq2ps,
        cvtps2dq,
        cvttps2dq,
        cvtpd2ps,
        cvtpd2dq,
        cvttpd2dq
    );
    vs!(
        v,
        Fx::SseFloat,
        dword_ptr,
        addss,
        subss,
        mulss,
        divss,
        minss,
        maxss,
        sqrtss,
        cvtss2sd,
        cvtps2pd
    );
    vs!(
        v,
        Fx::SseFloat,
        qword_ptr,
        addsd,
        subsd,
        mulsd,
        divsd,
        minsd,
        maxsd,
        sqrtsd,
        cvtsd2ss,
        cvtdq2pd
    );
    vi!(v, Fx::SseFloat, cmpps, cmppd);
    v.push(
        Form::new(
            "cmpss xmm, xmm, imm",
            ALL,
            8,
            Box::new(|a, i| a.cmpss(xmm1, xmm2, (i & 7) as u32)),
        )
        .fx(Fx::SseFloat),
    );
    v.push(
        Form::new(
            "cmpsd xmm, m64, imm",
            ALL,
            8,
            Box::new(|a, i| a.cmpsd_3(xmm1, qword_ptr(r15 + 8), (i & 7) as u32)),
        )
        .fx(Fx::SseFloat),
    );
    for (name, k) in [("comiss", 0), ("ucomiss", 1), ("comisd", 2), ("ucomisd", 3)] {
        v.push(
            Form::new(
                name,
                ALL,
                1,
                Box::new(move |a, _| match k {
                    0 => a.comiss(xmm1, xmm2),
                    1 => a.ucomiss(xmm1, dword_ptr(r15 + 8)),
                    2 => a.comisd(xmm1, xmm2),
                    _ => a.ucomisd(xmm1, qword_ptr(r15 + 8)),
                }),
            )
            .fx(Fx::SseFloat),
        );
    }
    v.push(
        Form::new(
            "cvtsi2ss xmm, r32",
            ALL,
            1,
            Box::new(|a, _| a.cvtsi2ss(xmm1, ebx)),
        )
        .fx(Fx::SseFloat),
    );
    v.push(
        Form::new(
            "cvtsi2sd xmm, r64",
            ALL,
            1,
            Box::new(|a, _| a.cvtsi2sd(xmm1, rbx)),
        )
        .fx(Fx::SseFloat),
    );
    v.push(
        Form::new(
            "cvtsi2ss xmm, r64",
            ALL,
            1,
            Box::new(|a, _| a.cvtsi2ss(xmm1, rbx)),
        )
        .fx(Fx::SseFloat),
    );
    v.push(
        Form::new(
            "cvtsi2sd xmm, m32",
            ALL,
            1,
            Box::new(|a, _| a.cvtsi2sd(xmm1, dword_ptr(r15 + 8))),
        )
        .fx(Fx::SseFloat),
    );
    v.push(
        Form::new(
            "cvtss2si r32, xmm",
            ALL,
            1,
            Box::new(|a, _| a.cvtss2si(ebx, xmm1)),
        )
        .fx(Fx::SseFloat),
    );
    v.push(
        Form::new(
            "cvttss2si r64, xmm",
            ALL,
            1,
            Box::new(|a, _| a.cvttss2si(rbx, xmm1)),
        )
        .fx(Fx::SseFloat),
    );
    v.push(
        Form::new(
            "cvtsd2si r64, m64",
            ALL,
            1,
            Box::new(|a, _| a.cvtsd2si(rbx, qword_ptr(r15 + 8))),
        )
        .fx(Fx::SseFloat),
    );
    v.push(
        Form::new(
            "cvttsd2si r32, xmm",
            ALL,
            1,
            Box::new(|a, _| a.cvttsd2si(ebx, xmm1)),
        )
        .fx(Fx::SseFloat),
    );
    // Conversions honour MXCSR.RC: run them in every rounding mode.
    for f in [
        Form::new(
            "cvtps2dq (RC)",
            ALL,
            1,
            Box::new(|a, _| a.cvtps2dq(xmm1, xmm2)),
        ),
        Form::new(
            "cvtsd2si r64 (RC)",
            ALL,
            1,
            Box::new(|a, _| a.cvtsd2si(rbx, xmm2)),
        ),
        Form::new(
            "cvtsi2ss r64 (RC)",
            ALL,
            1,
            Box::new(|a, _| a.cvtsi2ss(xmm1, rbx)),
        ),
        Form::new(
            "cvtsi2sd r64 (RC)",
            ALL,
            1,
            Box::new(|a, _| a.cvtsi2sd(xmm1, rbx)),
        ),
    ] {
        v.push(
            f.fx(Fx::SseFloat)
                .prep(|s, rng, _| s.set_mxcsr(0x1f80 | ((rng.below(4) as u32) << 13))),
        );
    }
    // Random bit patterns rarely make ordinary numbers: also feed small floats.
    let small: Vec<Form> = [
        Form::new(
            "addps (small)",
            ALL,
            1,
            Box::new(|a, _| a.addps(xmm1, xmm2)),
        ),
        Form::new(
            "mulsd (small)",
            ALL,
            1,
            Box::new(|a, _| a.mulsd(xmm1, xmm2)),
        ),
        Form::new(
            "divss (small)",
            ALL,
            1,
            Box::new(|a, _| a.divss(xmm1, xmm2)),
        ),
        Form::new(
            "cvtps2dq (small)",
            ALL,
            1,
            Box::new(|a, _| a.cvtps2dq(xmm1, xmm2)),
        ),
        Form::new(
            "cvttsd2si (small)",
            ALL,
            1,
            Box::new(|a, _| a.cvttsd2si(ebx, xmm2)),
        ),
        Form::new(
            "ucomisd (small)",
            ALL,
            1,
            Box::new(|a, _| a.ucomisd(xmm1, xmm2)),
        ),
    ]
    .into_iter()
    .collect();
    for f in small {
        v.push(f.fx(Fx::SseFloat).prep(|s, rng, _| {
            for r in 1..3 {
                let mut x = 0u128;
                for lane in 0..4 {
                    let f = (rng.below(2001) as f32 - 1000.0) / (1 << rng.below(4)) as f32;
                    x |= u128::from(f.to_bits()) << (32 * lane);
                }
                if rng.below(2) == 0 {
                    let d0 = ((rng.below(2001) as f64) - 1000.0) / 3.0;
                    let d1 = (rng.below(100) as f64) * 0.25;
                    x = u128::from(d0.to_bits()) | (u128::from(d1.to_bits()) << 64);
                }
                s.set_xmm(r, x);
            }
        }));
    }
    check(v);
}
