//! Integer instruction forms.

use iced_x86::code_asm::*;

use crate::forms::Form;
use crate::forms::check;

const CF: u64 = 1;
const PF: u64 = 4;
const AF: u64 = 0x10;
const ZF: u64 = 0x40;
const SF: u64 = 0x80;
const OF: u64 = 0x800;
const ALL: u64 = CF | PF | AF | ZF | SF | OF;

/// Immediate of `bits` width from a random value, as code_asm wants it.
fn imm(bits: u32, v: u64) -> i32 {
    match bits {
        8 => v as i8 as i32,
        16 => v as i16 as i32,
        _ => v as i32,
    }
}

/// Expands `$body` once per operand size with `$d`/`$s` registers (RBX, RDX families),
/// `$m` a memory operand at [r15 + 8] and `$bits` the size.
macro_rules! sizes {
    ($v:expr, $name:expr, $flags:expr, $imms:expr, |$a:ident, $i:ident, $d:ident, $s:ident, $m:ident, $bits:ident| $body:expr) => {
        sizes!(@one $v, $name, $flags, $imms, 8, bl, dl, byte_ptr(r15 + 8), |$a, $i, $d, $s, $m, $bits| $body);
        sizes!(@one $v, $name, $flags, $imms, 16, bx, dx, word_ptr(r15 + 8), |$a, $i, $d, $s, $m, $bits| $body);
        sizes!(@one $v, $name, $flags, $imms, 32, ebx, edx, dword_ptr(r15 + 8), |$a, $i, $d, $s, $m, $bits| $body);
        sizes!(@one $v, $name, $flags, $imms, 64, rbx, rdx, qword_ptr(r15 + 8), |$a, $i, $d, $s, $m, $bits| $body);
    };
    (@one $v:expr, $name:expr, $flags:expr, $imms:expr, $sz:literal, $dr:expr, $sr:expr, $mr:expr, |$a:ident, $i:ident, $d:ident, $s:ident, $m:ident, $bits:ident| $body:expr) => {
        $v.push(Form::new(
            format!("{} ({}-bit)", $name, $sz),
            $flags,
            $imms,
            Box::new(move |$a: &mut CodeAssembler, $i: u64| {
                let ($d, $s, $m, $bits): (_, _, _, u32) = ($dr, $sr, $mr, $sz);
                let _ = ($i, $bits, $d, $s, $m);
                $body
            }),
        ));
    };
}

/// Sizes 16, 32 and 64 only.
macro_rules! wide {
    ($v:expr, $name:expr, $flags:expr, $imms:expr, |$a:ident, $i:ident, $d:ident, $s:ident, $m:ident, $bits:ident| $body:expr) => {
        sizes!(@one $v, $name, $flags, $imms, 16, bx, dx, word_ptr(r15 + 8), |$a, $i, $d, $s, $m, $bits| $body);
        sizes!(@one $v, $name, $flags, $imms, 32, ebx, edx, dword_ptr(r15 + 8), |$a, $i, $d, $s, $m, $bits| $body);
        sizes!(@one $v, $name, $flags, $imms, 64, rbx, rdx, qword_ptr(r15 + 8), |$a, $i, $d, $s, $m, $bits| $body);
    };
}

macro_rules! alu {
    ($v:expr, $name:literal, $m_:ident, $flags:expr) => {
        sizes!(
            $v,
            concat!($name, " r, r"),
            $flags,
            1,
            |a, i, d, s, m, b| a.$m_(d, s)
        );
        sizes!(
            $v,
            concat!($name, " m, r"),
            $flags,
            1,
            |a, i, d, s, m, b| a.$m_(m, s)
        );
        sizes!(
            $v,
            concat!($name, " r, imm"),
            $flags,
            8,
            |a, i, d, s, m, b| a.$m_(d, imm(b, i))
        );
        sizes!(
            $v,
            concat!($name, " m, imm"),
            $flags,
            8,
            |a, i, d, s, m, b| a.$m_(m, imm(b, i))
        );
        wide!(
            $v,
            concat!($name, " r, imm8"),
            $flags,
            8,
            |a, i, d, s, m, b| a.$m_(d, i as i8 as i32)
        );
        $v.push(Form::new(
            concat!($name, " ah, bh"),
            $flags,
            1,
            Box::new(|a, _| a.$m_(ah, bh)),
        ));
        $v.push(Form::new(
            concat!($name, " dl, ch"),
            $flags,
            1,
            Box::new(|a, _| a.$m_(dl, ch)),
        ));
    };
}

#[test]
fn alu_arithmetic_and_logic_match_the_host() {
    let mut v = Vec::new();
    alu!(v, "add", add, ALL);
    alu!(v, "adc", adc, ALL);
    alu!(v, "sub", sub, ALL);
    alu!(v, "sbb", sbb, ALL);
    alu!(v, "cmp", cmp, ALL);
    alu!(v, "and", and, ALL & !AF);
    alu!(v, "or", or, ALL & !AF);
    alu!(v, "xor", xor, ALL & !AF);
    sizes!(v, "add r, m", ALL, 1, |a, i, d, s, m, b| a.add(d, m));
    sizes!(v, "sub r, m", ALL, 1, |a, i, d, s, m, b| a.sub(d, m));
    sizes!(v, "test r, r", ALL & !AF, 1, |a, i, d, s, m, b| a
        .test(d, s));
    sizes!(v, "test m, r", ALL & !AF, 1, |a, i, d, s, m, b| a
        .test(m, s));
    sizes!(v, "test r, imm", ALL & !AF, 8, |a, i, d, s, m, b| a
        .test(d, imm(b, i)));
    sizes!(v, "lock add m, r", ALL, 1, |a, i, d, s, m, b| a
        .lock()
        .add(m, s));
    sizes!(v, "lock sub m, imm", ALL, 4, |a, i, d, s, m, b| a
        .lock()
        .sub(m, imm(b, i)));
    sizes!(v, "lock xor m, r", ALL & !AF, 1, |a, i, d, s, m, b| a
        .lock()
        .xor(m, s));
    sizes!(v, "inc r", ALL, 1, |a, i, d, s, m, b| a.inc(d));
    sizes!(v, "dec m", ALL, 1, |a, i, d, s, m, b| a.dec(m));
    sizes!(v, "lock inc m", ALL, 1, |a, i, d, s, m, b| a.lock().inc(m));
    sizes!(v, "neg r", ALL, 1, |a, i, d, s, m, b| a.neg(d));
    sizes!(v, "neg m", ALL, 1, |a, i, d, s, m, b| a.neg(m));
    sizes!(v, "not r", ALL, 1, |a, i, d, s, m, b| a.not(d));
    sizes!(v, "not m", ALL, 1, |a, i, d, s, m, b| a.not(m));
    check(v);
}

#[test]
fn multiply_and_divide_match_the_host() {
    let mut v = Vec::new();
    // MUL/IMUL: SF, ZF, AF, PF undefined.
    sizes!(v, "mul r", CF | OF, 1, |a, i, d, s, m, b| a.mul(d));
    sizes!(v, "mul m", CF | OF, 1, |a, i, d, s, m, b| a.mul(m));
    sizes!(v, "imul r", CF | OF, 1, |a, i, d, s, m, b| a.imul(d));
    sizes!(v, "imul m", CF | OF, 1, |a, i, d, s, m, b| a.imul(m));
    wide!(v, "imul r, r", CF | OF, 1, |a, i, d, s, m, b| a
        .imul_2(d, s));
    wide!(v, "imul r, m", CF | OF, 1, |a, i, d, s, m, b| a
        .imul_2(d, m));
    wide!(v, "imul r, r, imm", CF | OF, 8, |a, i, d, s, m, b| a
        .imul_3(d, s, imm(b, i)));
    wide!(v, "imul r, m, imm8", CF | OF, 8, |a, i, d, s, m, b| a
        .imul_3(d, m, i as i8 as i32));
    // DIV/IDIV: all flags undefined; inputs chosen so the quotient fits (no #DE).
    let mut divs = Vec::new();
    sizes!(divs, "div r", 0, 1, |a, i, d, s, m, b| a.div(d));
    sizes!(divs, "div m", 0, 1, |a, i, d, s, m, b| a.div(m));
    sizes!(divs, "idiv r", 0, 1, |a, i, d, s, m, b| a.idiv(d));
    sizes!(divs, "idiv m", 0, 1, |a, i, d, s, m, b| a.idiv(m));
    for f in divs {
        let signed = f.name.starts_with("idiv");
        let bits: u32 = f
            .name
            .split('(')
            .nth(1)
            .and_then(|x| x.split('-').next())
            .and_then(|x| x.parse().ok())
            .unwrap();
        let mem = f.name.contains(" m");
        v.push(f.prep(move |s, rng, _| {
            let mask = u64::MAX >> (64 - bits);
            let mut divisor = rng.interesting() & mask;
            if divisor == 0 {
                divisor = 1;
            }
            if signed && divisor == mask {
                divisor = 3;
            }
            // Dividend high part: zero or sign, so the quotient fits for any divisor >= 1.
            let lo = rng.interesting() & mask;
            let hi = if signed && (lo >> (bits - 1)) & 1 != 0 {
                mask
            } else {
                0
            };
            let lo = if signed && divisor >> (bits - 1) != 0 && lo == 1 << (bits - 1) {
                5
            } else {
                lo
            };
            if bits == 8 {
                s.gpr[0] = (s.gpr[0] & !0xffff) | (hi & 0xff) << 8 | lo;
            } else {
                s.gpr[0] = (s.gpr[0] & !mask) | lo;
                s.gpr[2] = (s.gpr[2] & !mask) | hi;
            }
            if mem {
                s.buf[256 + 8..256 + 16].copy_from_slice(&divisor.to_le_bytes());
            } else {
                s.gpr[3] = (s.gpr[3] & !mask) | divisor;
            }
        }));
    }
    check(v);
}

/// Flags a shift or rotate defines, for a masked count `n` of `bits`-bit data.
fn shift_flags(kind: &str, bits: u32, n: u64) -> u64 {
    if n == 0 {
        return ALL;
    }
    let rotate = kind.starts_with("ro") || kind.starts_with("rc");
    let mut f = if rotate {
        ALL & !(CF | OF)
    } else {
        ZF | SF | PF
    };
    // RCL/RCR on 8/16-bit data rotate by n mod 9/17: a multiple is a no-op for the value but
    // still defines CF.
    f |= CF;
    if n == 1 {
        f |= OF;
    }
    if !rotate && n >= u64::from(bits) && bits < 32 {
        f &= !CF;
    }
    f
}

macro_rules! shifts {
    ($v:expr, $name:literal, $m_:ident) => {
        sizes!($v, concat!($name, " r, 1"), ALL, 1, |a, i, d, s, m, b| a
            .$m_(d, 1));
        sizes!(
            $v,
            concat!($name, " r, imm"),
            ALL,
            12,
            |a, i, d, s, m, b| a.$m_(d, (i & 0x3f) as u32)
        );
        sizes!($v, concat!($name, " r, cl"), ALL, 1, |a, i, d, s, m, b| a
            .$m_(d, cl));
        sizes!($v, concat!($name, " m, cl"), ALL, 1, |a, i, d, s, m, b| a
            .$m_(m, cl));
    };
}

#[test]
fn shifts_and_rotates_match_the_host() {
    let mut v = Vec::new();
    shifts!(v, "shl", shl);
    shifts!(v, "shr", shr);
    shifts!(v, "sar", sar);
    shifts!(v, "rol", rol);
    shifts!(v, "ror", ror);
    shifts!(v, "rcl", rcl);
    shifts!(v, "rcr", rcr);
    let v: Vec<Form> = v
        .into_iter()
        .map(|f| {
            let name = f.name.clone();
            let kind = name[..3].to_string();
            let bits: u32 = name
                .split('(')
                .nth(1)
                .and_then(|x| x.split('-').next())
                .and_then(|x| x.parse().ok())
                .unwrap();
            let by_cl = name.contains(", cl");
            let by_one = name.contains(", 1 ");
            f.flags_by(move |s, imm| {
                let raw = if by_cl {
                    s.gpr[1]
                } else if by_one {
                    1
                } else {
                    imm & 0x3f
                };
                let n = raw & if bits == 64 { 63 } else { 31 };
                let mut n_eff = n;
                if kind == "rcl" || kind == "rcr" {
                    n_eff = match bits {
                        8 => n % 9,
                        16 => n % 17,
                        _ => n,
                    };
                    if n_eff == 0 {
                        // Nothing rotates; OF is undefined unless the masked count is 0.
                        return if n == 0 { ALL } else { ALL & !OF };
                    }
                }
                if (kind == "rol" || kind == "ror") && n != 0 && n % u64::from(bits) == 0 {
                    // Rotation by a multiple of the width: value unchanged, CF defined; OF
                    // only for a count of 1.
                    return ALL & !OF | if n == 1 { OF } else { 0 };
                }
                shift_flags(&kind, bits, n_eff)
            })
        })
        .collect();
    check(v);
}

#[test]
fn double_shifts_match_the_host() {
    let mut v = Vec::new();
    wide!(v, "shld r, r, imm", ALL, 12, |a, i, d, s, m, b| a.shld(
        d,
        s,
        (i % u64::from(b)) as u32
    ));
    wide!(v, "shrd r, r, imm", ALL, 12, |a, i, d, s, m, b| a.shrd(
        d,
        s,
        (i % u64::from(b)) as u32
    ));
    wide!(v, "shld r, r, cl", ALL, 1, |a, i, d, s, m, b| a
        .shld(d, s, cl));
    wide!(v, "shrd m, r, cl", ALL, 1, |a, i, d, s, m, b| a
        .shrd(m, s, cl));
    let v: Vec<Form> = v
        .into_iter()
        .map(|f| {
            let name = f.name.clone();
            let bits: u64 = name
                .split('(')
                .nth(1)
                .and_then(|x| x.split('-').next())
                .and_then(|x| x.parse().ok())
                .unwrap();
            let by_cl = name.contains(", cl");
            f.prep(move |s, rng, _| {
                // Counts above the operand size are undefined (16-bit forms).
                if by_cl {
                    s.gpr[1] = (s.gpr[1] & !0xff) | rng.below(bits.min(32));
                }
            })
            .flags_by(move |s, imm| {
                let n = if by_cl {
                    s.gpr[1] & if bits == 64 { 63 } else { 31 }
                } else {
                    imm % bits
                };
                match n {
                    0 => ALL,
                    1 => ALL & !AF,
                    _ => ALL & !(AF | OF),
                }
            })
        })
        .collect();
    check(v);
}

#[test]
fn bit_operations_match_the_host() {
    let mut v = Vec::new();
    // BT family: only CF is defined.
    wide!(v, "bt r, r", CF, 1, |a, i, d, s, m, b| a.bt(d, s));
    wide!(v, "bts r, r", CF, 1, |a, i, d, s, m, b| a.bts(d, s));
    wide!(v, "btr r, imm", CF, 8, |a, i, d, s, m, b| a
        .btr(d, (i & 0xff) as u32));
    wide!(v, "btc m, imm", CF, 8, |a, i, d, s, m, b| a
        .btc(m, (i & 0xff) as u32));
    wide!(v, "lock bts m, imm", CF, 8, |a, i, d, s, m, b| a
        .lock()
        .bts(m, (i & 0xff) as u32));
    let mut mr = Vec::new();
    wide!(mr, "bt m, r", CF, 1, |a, i, d, s, m, b| a.bt(m, s));
    wide!(mr, "btc m, r", CF, 1, |a, i, d, s, m, b| a.btc(m, s));
    wide!(mr, "lock btr m, r", CF, 1, |a, i, d, s, m, b| a
        .lock()
        .btr(m, s));
    for f in mr {
        // Register bit offsets address memory around the operand: keep them in the buffer.
        v.push(f.prep(|s, rng, _| s.gpr[2] = rng.below(1024).wrapping_sub(512)));
    }
    // BSF/BSR: ZF defined; a zero source leaves the destination unchanged (as AMD documents).
    wide!(v, "bsf r, r", ZF, 1, |a, i, d, s, m, b| a.bsf(d, s));
    wide!(v, "bsr r, m", ZF, 1, |a, i, d, s, m, b| a.bsr(d, m));
    wide!(v, "popcnt r, r", ALL, 1, |a, i, d, s, m, b| a.popcnt(d, s));
    wide!(v, "popcnt r, m", ALL, 1, |a, i, d, s, m, b| a.popcnt(d, m));
    v.push(Form::new(
        "bswap r32",
        ALL,
        1,
        Box::new(|a, _| a.bswap(ebx)),
    ));
    v.push(Form::new(
        "bswap r64",
        ALL,
        1,
        Box::new(|a, _| a.bswap(rbx)),
    ));
    check(v);
}

macro_rules! each_cc {
    ($v:expr, $kind:literal, |$a:ident, $d:ident, $s:ident, $m:ident, $b:ident| $($name:literal => $body:expr,)*) => {
        $(
            $v.push(Form::new(format!("{} {}", $kind, $name), ALL, 1, Box::new(|$a, _| {
                let ($d, $s, $m, $b) = (ebx, edx, dword_ptr(r15 + 8), byte_ptr(r15 + 8));
                let _ = ($d, $s, $m, $b);
                $body
            })));
        )*
    };
}

#[test]
fn moves_conditionals_and_exchanges_match_the_host() {
    let mut v = Vec::new();
    sizes!(v, "mov r, r", ALL, 1, |a, i, d, s, m, b| a.mov(d, s));
    sizes!(v, "mov r, m", ALL, 1, |a, i, d, s, m, b| a.mov(d, m));
    sizes!(v, "mov m, r", ALL, 1, |a, i, d, s, m, b| a.mov(m, s));
    sizes!(v, "mov m, imm", ALL, 4, |a, i, d, s, m, b| a
        .mov(m, imm(b, i)));
    v.push(Form::new(
        "mov r64, imm64",
        ALL,
        8,
        Box::new(|a, i| a.mov(rbx, i)),
    ));
    v.push(Form::new(
        "mov r32, imm32",
        ALL,
        8,
        Box::new(|a, i| a.mov(ebx, i as u32)),
    ));
    v.push(Form::new(
        "mov ah, dh",
        ALL,
        1,
        Box::new(|a, _| a.mov(ah, dh)),
    ));
    v.push(Form::new(
        "movzx r32, r8",
        ALL,
        1,
        Box::new(|a, _| a.movzx(ebx, dl)),
    ));
    v.push(Form::new(
        "movzx r32, ah",
        ALL,
        1,
        Box::new(|a, _| a.movzx(ebx, ah)),
    ));
    v.push(Form::new(
        "movzx r64, m16",
        ALL,
        1,
        Box::new(|a, _| a.movzx(rbx, word_ptr(r15 + 3))),
    ));
    v.push(Form::new(
        "movzx r16, m8",
        ALL,
        1,
        Box::new(|a, _| a.movzx(bx, byte_ptr(r15 - 5))),
    ));
    v.push(Form::new(
        "movsx r64, r8",
        ALL,
        1,
        Box::new(|a, _| a.movsx(rbx, dl)),
    ));
    v.push(Form::new(
        "movsx r32, m16",
        ALL,
        1,
        Box::new(|a, _| a.movsx(ebx, word_ptr(r15 + 9))),
    ));
    v.push(Form::new(
        "movsx r16, r8",
        ALL,
        1,
        Box::new(|a, _| a.movsx(bx, sil)),
    ));
    v.push(Form::new(
        "movsxd r64, r32",
        ALL,
        1,
        Box::new(|a, _| a.movsxd(rbx, edx)),
    ));
    v.push(Form::new(
        "movsxd r64, m32",
        ALL,
        1,
        Box::new(|a, _| a.movsxd(rbx, dword_ptr(r15 + 12))),
    ));
    v.push(Form::new(
        "lea r64, [r+r*4+d]",
        ALL,
        1,
        Box::new(|a, _| a.lea(rbx, qword_ptr(rcx + rdx * 4 + 0x1234))),
    ));
    v.push(Form::new(
        "lea r32, [r+r*8-d]",
        ALL,
        1,
        Box::new(|a, _| a.lea(ebx, dword_ptr(rsi + rdi * 8 - 9))),
    ));
    v.push(Form::new(
        "lea r16, [r+r]",
        ALL,
        1,
        Box::new(|a, _| a.lea(bx, word_ptr(rcx + rdx))),
    ));
    sizes!(v, "xchg r, r", ALL, 1, |a, i, d, s, m, b| a.xchg(d, s));
    sizes!(v, "xchg m, r", ALL, 1, |a, i, d, s, m, b| a.xchg(m, s));
    sizes!(v, "cmpxchg r, r", ALL, 1, |a, i, d, s, m, b| a
        .cmpxchg(d, s));
    sizes!(v, "lock cmpxchg m, r", ALL, 1, |a, i, d, s, m, b| a
        .lock()
        .cmpxchg(m, s));
    sizes!(v, "xadd r, r", ALL, 1, |a, i, d, s, m, b| a.xadd(d, s));
    sizes!(v, "lock xadd m, r", ALL, 1, |a, i, d, s, m, b| a
        .lock()
        .xadd(m, s));
    v.push(
        Form::new(
            "lock cmpxchg8b m",
            ALL,
            1,
            Box::new(|a, _| a.lock().cmpxchg8b(qword_ptr(r15 + 16))),
        )
        .prep(|s, rng, _| {
            if rng.below(2) == 0 {
                let v = (s.gpr[0] & 0xffff_ffff) | (s.gpr[2] << 32);
                s.buf[256 + 16..256 + 24].copy_from_slice(&v.to_le_bytes());
            }
        }),
    );
    v.push(
        Form::new(
            "lock cmpxchg16b m",
            ALL,
            1,
            Box::new(|a, _| a.lock().cmpxchg16b(xmmword_ptr(r15 + 16))),
        )
        .prep(|s, rng, _| {
            if rng.below(2) == 0 {
                let (lo, hi) = (s.gpr[0], s.gpr[2]);
                s.buf[256 + 16..256 + 24].copy_from_slice(&lo.to_le_bytes());
                s.buf[256 + 24..256 + 32].copy_from_slice(&hi.to_le_bytes());
            }
        }),
    );
    each_cc!(v, "cmovcc r32, r32", |a, d, s, m, b|
        "o" => a.cmovo(d, s), "no" => a.cmovno(d, s), "b" => a.cmovb(d, s), "ae" => a.cmovae(d, s),
        "e" => a.cmove(d, s), "ne" => a.cmovne(d, s), "be" => a.cmovbe(d, s), "a" => a.cmova(d, s),
        "s" => a.cmovs(d, s), "ns" => a.cmovns(d, s), "p" => a.cmovp(d, s), "np" => a.cmovnp(d, s),
        "l" => a.cmovl(d, s), "ge" => a.cmovge(d, s), "le" => a.cmovle(d, s), "g" => a.cmovg(d, s),
    );
    each_cc!(v, "cmovcc r32, m32", |a, d, s, m, b|
        "b" => a.cmovb(d, m), "ne" => a.cmovne(d, m), "le" => a.cmovle(d, m), "p" => a.cmovp(d, m),
    );
    v.push(Form::new(
        "cmova r64, r64",
        ALL,
        1,
        Box::new(|a, _| a.cmova(rbx, rdx)),
    ));
    v.push(Form::new(
        "cmovg r16, m16",
        ALL,
        1,
        Box::new(|a, _| a.cmovg(bx, word_ptr(r15 + 2))),
    ));
    each_cc!(v, "setcc", |a, d, s, m, b|
        "o" => a.seto(bl), "no" => a.setno(bh), "b" => a.setb(b), "ae" => a.setae(dl),
        "e" => a.sete(bl), "ne" => a.setne(b), "be" => a.setbe(bl), "a" => a.seta(bl),
        "s" => a.sets(bl), "ns" => a.setns(bl), "p" => a.setp(bl), "np" => a.setnp(b),
        "l" => a.setl(bl), "ge" => a.setge(bl), "le" => a.setle(bl), "g" => a.setg(b),
    );
    v.push(Form::new("cbw", ALL, 1, Box::new(|a, _| a.cbw())));
    v.push(Form::new("cwde", ALL, 1, Box::new(|a, _| a.cwde())));
    v.push(Form::new("cdqe", ALL, 1, Box::new(|a, _| a.cdqe())));
    v.push(Form::new("cwd", ALL, 1, Box::new(|a, _| a.cwd())));
    v.push(Form::new("cdq", ALL, 1, Box::new(|a, _| a.cdq())));
    v.push(Form::new("cqo", ALL, 1, Box::new(|a, _| a.cqo())));
    v.push(Form::new("lahf", ALL, 1, Box::new(|a, _| a.lahf())));
    v.push(Form::new("sahf", ALL, 1, Box::new(|a, _| a.sahf())));
    v.push(Form::new("clc", ALL, 1, Box::new(|a, _| a.clc())));
    v.push(Form::new("stc", ALL, 1, Box::new(|a, _| a.stc())));
    v.push(Form::new("cmc", ALL, 1, Box::new(|a, _| a.cmc())));
    check(v);
}
