//! SSE and SSE2: the 128-bit integer and floating-point instructions compilers and glibc emit,
//! MXCSR, and FXSAVE/FXRSTOR.
//!
//! Each operation is a pure function of (destination, source, immediate) on 128-bit values;
//! handlers differ only in where the source comes from (register, aligned or unaligned m128,
//! m64, m32). Floating-point results follow x86's NaN rules (see [`crate::softfp`]) and round
//! to nearest-even; MXCSR.RC is honored by conversions to integers. Not modelled: MXCSR
//! exception flags and unmasked SIMD exceptions (#XM), DAZ/FTZ, other rounding modes for
//! arithmetic. RCPPS/RSQRTPS (and scalar forms) return the exactly rounded reciprocal, which is
//! within the architectural 1.5 * 2^-12 relative error.

use iced_x86::Instruction;
use iced_x86::Mnemonic as Mn;
use iced_x86::OpKind;
use iced_x86::Register;
use virt::ExitHandler;

use crate::cpu::CR0_EM;
use crate::cpu::CR0_TS;
use crate::cpu::CR4_OSFXSR;
use crate::cpu::Cpu;
use crate::cpu::Ex;
use crate::cpu::GP;
use crate::cpu::Mode;
use crate::cpu::Res;
use crate::decode::gpr;
use crate::op::Handler;
use crate::op::Op;
use crate::size::B;
use crate::size::D;
use crate::size::Q;
use crate::size::Sz;
use crate::size::W;
use crate::softfp as fp;
use crate::softfp::F32;
use crate::softfp::F64;
use crate::softfp::Fp;

/// A 128-bit operation: destination, source, immediate, MXCSR -> result.
pub(crate) trait V {
    fn f(d: u128, s: u128, imm: u8, mxcsr: u32) -> u128;
}

// ---- lane helpers ----

#[inline(always)]
fn zip<const BITS: u32>(a: u128, b: u128, f: impl Fn(u64, u64) -> u64) -> u128 {
    let m = u128::MAX >> (128 - BITS);
    let mut r = 0u128;
    let mut i = 0;
    while i < 128 {
        let x = ((a >> i) & m) as u64;
        let y = ((b >> i) & m) as u64;
        r |= (u128::from(f(x, y)) & m) << i;
        i += BITS;
    }
    r
}

#[inline(always)]
fn lane<const BITS: u32>(v: u128, i: u32) -> u64 {
    ((v >> (i * BITS)) & (u128::MAX >> (128 - BITS))) as u64
}

#[inline(always)]
fn sx(v: u64, bits: u32) -> i64 {
    ((v << (64 - bits)) as i64) >> (64 - bits)
}

#[inline(always)]
fn sat_s(v: i64, bits: u32) -> u64 {
    let max = (1i64 << (bits - 1)) - 1;
    let min = -(1i64 << (bits - 1));
    (v.clamp(min, max) as u64) & (u64::MAX >> (64 - bits))
}

#[inline(always)]
fn sat_u(v: i64, bits: u32) -> u64 {
    v.clamp(0, (1i64 << bits) - 1) as u64
}

/// Low-lane scalar op on `BITS` bits, keeping the rest of the destination.
#[inline(always)]
fn scalar<const BITS: u32>(d: u128, r: u64) -> u128 {
    let m = u128::MAX >> (128 - BITS);
    (d & !m) | (u128::from(r) & m)
}

fn interleave<const BITS: u32>(d: u128, s: u128, high: bool) -> u128 {
    let n = 64 / BITS;
    let base = if high { n } else { 0 };
    let mut r = 0u128;
    for i in 0..n {
        r |= u128::from(lane::<BITS>(d, base + i)) << (2 * i * BITS);
        r |= u128::from(lane::<BITS>(s, base + i)) << ((2 * i + 1) * BITS);
    }
    r
}

fn pack<const FROM: u32>(d: u128, s: u128, signed: bool) -> u128 {
    let to = FROM / 2;
    let n = 128 / FROM;
    let mut r = 0u128;
    for (k, v) in [d, s].into_iter().enumerate() {
        for i in 0..n {
            let x = sx(lane::<FROM>(v, i), FROM);
            let y = if signed { sat_s(x, to) } else { sat_u(x, to) };
            r |= u128::from(y) << ((k as u32 * n + i) * to);
        }
    }
    r
}

fn shift<const BITS: u32>(d: u128, count: u64, kind: u8) -> u128 {
    // kind: 0 left logical, 1 right logical, 2 right arithmetic.
    zip::<BITS>(d, 0, |x, _| match kind {
        0 => {
            if count >= u64::from(BITS) {
                0
            } else {
                x << count
            }
        }
        1 => {
            if count >= u64::from(BITS) {
                0
            } else {
                x >> count
            }
        }
        _ => {
            let c = count.min(u64::from(BITS) - 1);
            (sx(x, BITS) >> c) as u64
        }
    })
}

macro_rules! vops {
    ($($name:ident |$d:ident, $s:ident, $i:ident, $m:ident| $body:expr;)*) => {
        $(
            pub(crate) struct $name;
            impl V for $name {
                #[inline(always)]
                #[allow(unused_variables)]
                fn f($d: u128, $s: u128, $i: u8, $m: u32) -> u128 {
                    $body
                }
            }
        )*
    };
}

vops! {
    Mov |d, s, i, m| s;
    Paddb |d, s, i, m| zip::<8>(d, s, |x, y| x.wrapping_add(y));
    Paddw |d, s, i, m| zip::<16>(d, s, |x, y| x.wrapping_add(y));
    Paddd |d, s, i, m| zip::<32>(d, s, |x, y| x.wrapping_add(y));
    Paddq |d, s, i, m| zip::<64>(d, s, |x, y| x.wrapping_add(y));
    Psubb |d, s, i, m| zip::<8>(d, s, |x, y| x.wrapping_sub(y));
    Psubw |d, s, i, m| zip::<16>(d, s, |x, y| x.wrapping_sub(y));
    Psubd |d, s, i, m| zip::<32>(d, s, |x, y| x.wrapping_sub(y));
    Psubq |d, s, i, m| zip::<64>(d, s, |x, y| x.wrapping_sub(y));
    Paddsb |d, s, i, m| zip::<8>(d, s, |x, y| sat_s(sx(x, 8) + sx(y, 8), 8));
    Paddsw |d, s, i, m| zip::<16>(d, s, |x, y| sat_s(sx(x, 16) + sx(y, 16), 16));
    Psubsb |d, s, i, m| zip::<8>(d, s, |x, y| sat_s(sx(x, 8) - sx(y, 8), 8));
    Psubsw |d, s, i, m| zip::<16>(d, s, |x, y| sat_s(sx(x, 16) - sx(y, 16), 16));
    Paddusb |d, s, i, m| zip::<8>(d, s, |x, y| sat_u((x + y) as i64, 8));
    Paddusw |d, s, i, m| zip::<16>(d, s, |x, y| sat_u((x + y) as i64, 16));
    Psubusb |d, s, i, m| zip::<8>(d, s, |x, y| x.saturating_sub(y));
    Psubusw |d, s, i, m| zip::<16>(d, s, |x, y| x.saturating_sub(y));
    Pmullw |d, s, i, m| zip::<16>(d, s, |x, y| (sx(x, 16) * sx(y, 16)) as u64);
    Pmulhw |d, s, i, m| zip::<16>(d, s, |x, y| ((sx(x, 16) * sx(y, 16)) >> 16) as u64);
    Pmulhuw |d, s, i, m| zip::<16>(d, s, |x, y| (x * y) >> 16);
    Pmuludq |d, s, i, m| zip::<64>(d, s, |x, y| (x & 0xffff_ffff) * (y & 0xffff_ffff));
    Pmaddwd |d, s, i, m| zip::<32>(d, s, |x, y| {
        let a = sx(x & 0xffff, 16) * sx(y & 0xffff, 16);
        let b = sx(x >> 16, 16) * sx(y >> 16, 16);
        (a.wrapping_add(b)) as u64
    });
    Pand |d, s, i, m| d & s;
    Pandn |d, s, i, m| !d & s;
    Por |d, s, i, m| d | s;
    Pxor |d, s, i, m| d ^ s;
    Pcmpeqb |d, s, i, m| zip::<8>(d, s, |x, y| if x == y { u64::MAX } else { 0 });
    Pcmpeqw |d, s, i, m| zip::<16>(d, s, |x, y| if x == y { u64::MAX } else { 0 });
    Pcmpeqd |d, s, i, m| zip::<32>(d, s, |x, y| if x == y { u64::MAX } else { 0 });
    Pcmpgtb |d, s, i, m| zip::<8>(d, s, |x, y| if sx(x, 8) > sx(y, 8) { u64::MAX } else { 0 });
    Pcmpgtw |d, s, i, m| zip::<16>(d, s, |x, y| if sx(x, 16) > sx(y, 16) { u64::MAX } else { 0 });
    Pcmpgtd |d, s, i, m| zip::<32>(d, s, |x, y| if sx(x, 32) > sx(y, 32) { u64::MAX } else { 0 });
    Pmaxub |d, s, i, m| zip::<8>(d, s, |x, y| x.max(y));
    Pminub |d, s, i, m| zip::<8>(d, s, |x, y| x.min(y));
    Pmaxsw |d, s, i, m| zip::<16>(d, s, |x, y| if sx(x, 16) >= sx(y, 16) { x } else { y });
    Pminsw |d, s, i, m| zip::<16>(d, s, |x, y| if sx(x, 16) <= sx(y, 16) { x } else { y });
    Pavgb |d, s, i, m| zip::<8>(d, s, |x, y| (x + y + 1) >> 1);
    Pavgw |d, s, i, m| zip::<16>(d, s, |x, y| (x + y + 1) >> 1);
    Psadbw |d, s, i, m| {
        let mut r = 0u128;
        for half in 0..2u32 {
            let mut sum = 0u64;
            for b in 0..8 {
                let x = lane::<8>(d, half * 8 + b);
                let y = lane::<8>(s, half * 8 + b);
                sum += x.abs_diff(y);
            }
            r |= u128::from(sum) << (64 * half);
        }
        r
    };
    Punpcklbw |d, s, i, m| interleave::<8>(d, s, false);
    Punpcklwd |d, s, i, m| interleave::<16>(d, s, false);
    Punpckldq |d, s, i, m| interleave::<32>(d, s, false);
    Punpcklqdq |d, s, i, m| interleave::<64>(d, s, false);
    Punpckhbw |d, s, i, m| interleave::<8>(d, s, true);
    Punpckhwd |d, s, i, m| interleave::<16>(d, s, true);
    Punpckhdq |d, s, i, m| interleave::<32>(d, s, true);
    Punpckhqdq |d, s, i, m| interleave::<64>(d, s, true);
    Packsswb |d, s, i, m| pack::<16>(d, s, true);
    Packssdw |d, s, i, m| pack::<32>(d, s, true);
    Packuswb |d, s, i, m| pack::<16>(d, s, false);
    Psllw |d, s, i, m| shift::<16>(d, s as u64, 0);
    Pslld |d, s, i, m| shift::<32>(d, s as u64, 0);
    Psllq |d, s, i, m| shift::<64>(d, s as u64, 0);
    Psrlw |d, s, i, m| shift::<16>(d, s as u64, 1);
    Psrld |d, s, i, m| shift::<32>(d, s as u64, 1);
    Psrlq |d, s, i, m| shift::<64>(d, s as u64, 1);
    Psraw |d, s, i, m| shift::<16>(d, s as u64, 2);
    Psrad |d, s, i, m| shift::<32>(d, s as u64, 2);
    PsllwI |d, s, i, m| shift::<16>(d, u64::from(i), 0);
    PslldI |d, s, i, m| shift::<32>(d, u64::from(i), 0);
    PsllqI |d, s, i, m| shift::<64>(d, u64::from(i), 0);
    PsrlwI |d, s, i, m| shift::<16>(d, u64::from(i), 1);
    PsrldI |d, s, i, m| shift::<32>(d, u64::from(i), 1);
    PsrlqI |d, s, i, m| shift::<64>(d, u64::from(i), 1);
    PsrawI |d, s, i, m| shift::<16>(d, u64::from(i), 2);
    PsradI |d, s, i, m| shift::<32>(d, u64::from(i), 2);
    Pslldq |d, s, i, m| if i > 15 { 0 } else { d << (8 * u32::from(i)) };
    Psrldq |d, s, i, m| if i > 15 { 0 } else { d >> (8 * u32::from(i)) };
    Pshufd |d, s, i, m| {
        let mut r = 0u128;
        for k in 0..4u32 {
            r |= u128::from(lane::<32>(s, u32::from(i >> (2 * k)) & 3)) << (32 * k);
        }
        r
    };
    Pshuflw |d, s, i, m| {
        let mut r = s & (u128::MAX << 64);
        for k in 0..4u32 {
            r |= u128::from(lane::<16>(s, u32::from(i >> (2 * k)) & 3)) << (16 * k);
        }
        r
    };
    Pshufhw |d, s, i, m| {
        let mut r = s & u128::from(u64::MAX);
        for k in 0..4u32 {
            r |= u128::from(lane::<16>(s, 4 + (u32::from(i >> (2 * k)) & 3))) << (64 + 16 * k);
        }
        r
    };
    Shufps |d, s, i, m| {
        let a = lane::<32>(d, u32::from(i) & 3);
        let b = lane::<32>(d, u32::from(i >> 2) & 3);
        let c = lane::<32>(s, u32::from(i >> 4) & 3);
        let e = lane::<32>(s, u32::from(i >> 6) & 3);
        u128::from(a) | (u128::from(b) << 32) | (u128::from(c) << 64) | (u128::from(e) << 96)
    };
    Shufpd |d, s, i, m| {
        u128::from(lane::<64>(d, u32::from(i) & 1)) | (u128::from(lane::<64>(s, u32::from(i >> 1) & 1)) << 64)
    };
    Unpcklps |d, s, i, m| interleave::<32>(d, s, false);
    Unpckhps |d, s, i, m| interleave::<32>(d, s, true);
    Unpcklpd |d, s, i, m| interleave::<64>(d, s, false);
    Unpckhpd |d, s, i, m| interleave::<64>(d, s, true);
    Andnps |d, s, i, m| !d & s;
    Addps |d, s, i, m| zip::<32>(d, s, |x, y| fp::arith::<F32>(x, y, F32::add));
    Addpd |d, s, i, m| zip::<64>(d, s, |x, y| fp::arith::<F64>(x, y, F64::add));
    Subps |d, s, i, m| zip::<32>(d, s, |x, y| fp::arith::<F32>(x, y, F32::sub));
    Subpd |d, s, i, m| zip::<64>(d, s, |x, y| fp::arith::<F64>(x, y, F64::sub));
    Mulps |d, s, i, m| zip::<32>(d, s, |x, y| fp::arith::<F32>(x, y, F32::mul));
    Mulpd |d, s, i, m| zip::<64>(d, s, |x, y| fp::arith::<F64>(x, y, F64::mul));
    Divps |d, s, i, m| zip::<32>(d, s, |x, y| fp::arith::<F32>(x, y, F32::div));
    Divpd |d, s, i, m| zip::<64>(d, s, |x, y| fp::arith::<F64>(x, y, F64::div));
    Minps |d, s, i, m| zip::<32>(d, s, fp::min::<F32>);
    Minpd |d, s, i, m| zip::<64>(d, s, fp::min::<F64>);
    Maxps |d, s, i, m| zip::<32>(d, s, fp::max::<F32>);
    Maxpd |d, s, i, m| zip::<64>(d, s, fp::max::<F64>);
    Sqrtps |d, s, i, m| zip::<32>(s, 0, |x, _| fp::sqrt::<F32>(x));
    Sqrtpd |d, s, i, m| zip::<64>(s, 0, |x, _| fp::sqrt::<F64>(x));
    Rcpps |d, s, i, m| zip::<32>(s, 0, |x, _| fp::arith::<F32>(1f32.to_bits().into(), x, F32::div));
    Rsqrtps |d, s, i, m| zip::<32>(s, 0, |x, _| fp::arith::<F32>(1f32.to_bits().into(), fp::sqrt::<F32>(x), F32::div));
    Cmpps |d, s, i, m| zip::<32>(d, s, |x, y| if fp::cmp::<F32>(x, y, i) { u64::MAX } else { 0 });
    Cmppd |d, s, i, m| zip::<64>(d, s, |x, y| if fp::cmp::<F64>(x, y, i) { u64::MAX } else { 0 });
    Addss |d, s, i, m| scalar::<32>(d, fp::arith::<F32>(lane::<32>(d, 0), lane::<32>(s, 0), F32::add));
    Addsd |d, s, i, m| scalar::<64>(d, fp::arith::<F64>(lane::<64>(d, 0), lane::<64>(s, 0), F64::add));
    Subss |d, s, i, m| scalar::<32>(d, fp::arith::<F32>(lane::<32>(d, 0), lane::<32>(s, 0), F32::sub));
    Subsd |d, s, i, m| scalar::<64>(d, fp::arith::<F64>(lane::<64>(d, 0), lane::<64>(s, 0), F64::sub));
    Mulss |d, s, i, m| scalar::<32>(d, fp::arith::<F32>(lane::<32>(d, 0), lane::<32>(s, 0), F32::mul));
    Mulsd |d, s, i, m| scalar::<64>(d, fp::arith::<F64>(lane::<64>(d, 0), lane::<64>(s, 0), F64::mul));
    Divss |d, s, i, m| scalar::<32>(d, fp::arith::<F32>(lane::<32>(d, 0), lane::<32>(s, 0), F32::div));
    Divsd |d, s, i, m| scalar::<64>(d, fp::arith::<F64>(lane::<64>(d, 0), lane::<64>(s, 0), F64::div));
    Minss |d, s, i, m| scalar::<32>(d, fp::min::<F32>(lane::<32>(d, 0), lane::<32>(s, 0)));
    Minsd |d, s, i, m| scalar::<64>(d, fp::min::<F64>(lane::<64>(d, 0), lane::<64>(s, 0)));
    Maxss |d, s, i, m| scalar::<32>(d, fp::max::<F32>(lane::<32>(d, 0), lane::<32>(s, 0)));
    Maxsd |d, s, i, m| scalar::<64>(d, fp::max::<F64>(lane::<64>(d, 0), lane::<64>(s, 0)));
    Sqrtss |d, s, i, m| scalar::<32>(d, fp::sqrt::<F32>(lane::<32>(s, 0)));
    Sqrtsd |d, s, i, m| scalar::<64>(d, fp::sqrt::<F64>(lane::<64>(s, 0)));
    Rcpss |d, s, i, m| scalar::<32>(d, fp::arith::<F32>(1f32.to_bits().into(), lane::<32>(s, 0), F32::div));
    Rsqrtss |d, s, i, m| scalar::<32>(d, fp::arith::<F32>(1f32.to_bits().into(), fp::sqrt::<F32>(lane::<32>(s, 0)), F32::div));
    Cmpss |d, s, i, m| scalar::<32>(d, if fp::cmp::<F32>(lane::<32>(d, 0), lane::<32>(s, 0), i) { u64::MAX } else { 0 });
    Cmpsd |d, s, i, m| scalar::<64>(d, if fp::cmp::<F64>(lane::<64>(d, 0), lane::<64>(s, 0), i) { u64::MAX } else { 0 });
    Cvtss2sd |d, s, i, m| scalar::<64>(d, fp::f32_to_f64(lane::<32>(s, 0)));
    Cvtsd2ss |d, s, i, m| scalar::<32>(d, fp::f64_to_f32(lane::<64>(s, 0)));
    Cvtps2pd |d, s, i, m| u128::from(fp::f32_to_f64(lane::<32>(s, 0))) | (u128::from(fp::f32_to_f64(lane::<32>(s, 1))) << 64);
    Cvtpd2ps |d, s, i, m| u128::from(fp::f64_to_f32(lane::<64>(s, 0))) | (u128::from(fp::f64_to_f32(lane::<64>(s, 1))) << 32);
    Cvtdq2ps |d, s, i, m| zip::<32>(s, 0, |x, _| u64::from((sx(x, 32) as f32).to_bits()));
    Cvtdq2pd |d, s, i, m| u128::from((sx(lane::<32>(s, 0), 32) as f64).to_bits()) | (u128::from((sx(lane::<32>(s, 1), 32) as f64).to_bits()) << 64);
    Cvtps2dq |d, s, i, m| zip::<32>(s, 0, |x, _| fp::to_int(fp::round(F32::to_f64(x), m >> 13), 32));
    Cvttps2dq |d, s, i, m| zip::<32>(s, 0, |x, _| fp::to_int(F32::to_f64(x).trunc(), 32));
    Cvtpd2dq |d, s, i, m| u128::from(fp::to_int(fp::round(F64::to_f64(lane::<64>(s, 0)), m >> 13), 32)) | (u128::from(fp::to_int(fp::round(F64::to_f64(lane::<64>(s, 1)), m >> 13), 32)) << 32);
    Cvttpd2dq |d, s, i, m| u128::from(fp::to_int(F64::to_f64(lane::<64>(s, 0)).trunc(), 32)) | (u128::from(fp::to_int(F64::to_f64(lane::<64>(s, 1)).trunc(), 32)) << 32);
    // Moves with partial destinations.
    MovLow32Zero |d, s, i, m| s & 0xffff_ffff;
    MovLow64Zero |d, s, i, m| s & u128::from(u64::MAX);
    MovLow32Merge |d, s, i, m| scalar::<32>(d, lane::<32>(s, 0));
    MovLow64Merge |d, s, i, m| scalar::<64>(d, lane::<64>(s, 0));
    MovHigh64 |d, s, i, m| (d & u128::from(u64::MAX)) | (s << 64);
    Movhlps |d, s, i, m| (d & (u128::MAX << 64)) | (s >> 64);
    Movlhps |d, s, i, m| (d & u128::from(u64::MAX)) | (s << 64);
}

/// Source operand kinds.
const SRC_REG: u8 = 0;
const SRC_M128A: u8 = 1;
const SRC_M128U: u8 = 2;
const SRC_M64: u8 = 3;
const SRC_M32: u8 = 4;

impl Cpu {
    /// #UD/#NM checks every SSE instruction makes.
    #[inline(always)]
    pub(crate) fn sse_check(&self) -> Result<(), Ex> {
        if self.cr0 & CR0_EM != 0 || self.cr4 & CR4_OSFXSR == 0 {
            return crate::cpu::ud();
        }
        if self.cr0 & CR0_TS != 0 {
            return Err(Ex::Fault(crate::cpu::NM, 0));
        }
        Ok(())
    }

    pub(crate) fn read_m128(
        &mut self,
        op: &Op,
        aligned: bool,
        io: &dyn ExitHandler,
    ) -> Result<u128, Ex> {
        let lin = self.lin_off_r(op.seg, self.ea(op), 16)?;
        if aligned && lin & 15 != 0 {
            return Err(Ex::Fault(GP, 0));
        }
        let lo = self.read::<Q>(lin, io)?;
        let hi = self.read::<Q>(lin.wrapping_add(8) & self.lin_mask, io)?;
        Ok(u128::from(lo) | (u128::from(hi) << 64))
    }

    pub(crate) fn write_m128(
        &mut self,
        op: &Op,
        v: u128,
        aligned: bool,
        io: &dyn ExitHandler,
    ) -> Result<(), Ex> {
        let lin = self.lin_off_w(op.seg, self.ea(op), 16)?;
        if aligned && lin & 15 != 0 {
            return Err(Ex::Fault(GP, 0));
        }
        let bytes = v.to_le_bytes();
        if lin & 0xfff <= 0xff0 {
            self.write::<Q>(lin, v as u64, io)?;
            self.write::<Q>(lin + 8, (v >> 64) as u64, io)
        } else {
            self.write_bytes(lin, &bytes, self.tlb_sel != 0, io)
        }
    }

    #[inline(always)]
    fn sse_src<const SRC: u8>(&mut self, op: &Op, io: &dyn ExitHandler) -> Result<u128, Ex> {
        Ok(match SRC {
            SRC_REG => self.fpu.xmm[op.rm as usize & 15],
            SRC_M128A => self.read_m128(op, true, io)?,
            SRC_M128U => self.read_m128(op, false, io)?,
            SRC_M64 => u128::from(self.read_op::<Q>(op, io)?),
            _ => u128::from(self.read_op::<D>(op, io)?),
        })
    }
}

/// `op xmm, src`.
fn vop<O: V, const SRC: u8>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    c.sse_check()?;
    let s = c.sse_src::<SRC>(op, io)?;
    let r = op.r as usize & 15;
    c.fpu.xmm[r] = O::f(c.fpu.xmm[r], s, op.imm as u8, c.fpu.mxcsr);
    Ok(())
}

/// Stores the low `BYTES` bytes of xmm(`r`) to memory (16: whole register).
fn vstore<const BYTES: u8, const ALIGNED: bool, const HIGH: bool>(
    c: &mut Cpu,
    op: &Op,
    io: &dyn ExitHandler,
) -> Res {
    c.sse_check()?;
    let v = c.fpu.xmm[op.r as usize & 15];
    let v = if HIGH { v >> 64 } else { v };
    match BYTES {
        16 => c.write_m128(op, v, ALIGNED, io),
        8 => c.write_op::<Q>(op, v as u64, io),
        _ => c.write_op::<D>(op, v as u64 & 0xffff_ffff, io),
    }
}

/// MOVD/MOVQ xmm, r/m32|64 (zero-extends into the register).
fn movd_to_xmm<S: Sz, const MEM: bool>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    c.sse_check()?;
    let v = if MEM {
        c.read_op::<S>(op, io)?
    } else {
        S::get(c, op.rm)
    };
    c.fpu.xmm[op.r as usize & 15] = u128::from(v);
    Ok(())
}

/// MOVD/MOVQ r/m32|64, xmm.
fn movd_from_xmm<S: Sz, const MEM: bool>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    c.sse_check()?;
    let v = c.fpu.xmm[op.r as usize & 15] as u64 & S::MASK;
    if MEM {
        c.write_op::<S>(op, v, io)
    } else {
        S::set(c, op.rm, v);
        Ok(())
    }
}

/// PMOVMSKB (x=0), MOVMSKPS (1), MOVMSKPD (2) reg, xmm.
fn movmsk(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    c.sse_check()?;
    let v = c.fpu.xmm[op.rm as usize & 15];
    let (bits, n) = match op.x {
        0 => (8, 16),
        1 => (32, 4),
        _ => (64, 2),
    };
    let mut r = 0u64;
    for i in 0..n {
        r |= (((v >> (i * bits + bits - 1)) & 1) as u64) << i;
    }
    c.regs[op.r as usize & 15] = r;
    Ok(())
}

/// PEXTRW reg, xmm, imm8.
fn pextrw(c: &mut Cpu, op: &Op, _: &dyn ExitHandler) -> Res {
    c.sse_check()?;
    let v = lane::<16>(c.fpu.xmm[op.rm as usize & 15], (op.imm & 7) as u32);
    c.regs[op.r as usize & 15] = v;
    Ok(())
}

/// PINSRW xmm, r32/m16, imm8.
fn pinsrw<const MEM: bool>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    c.sse_check()?;
    let w = if MEM {
        c.read_op::<W>(op, io)?
    } else {
        c.regs[op.rm as usize & 15] & 0xffff
    };
    let sh = 16 * (op.imm & 7) as u32;
    let r = op.r as usize & 15;
    c.fpu.xmm[r] = (c.fpu.xmm[r] & !(0xffffu128 << sh)) | (u128::from(w) << sh);
    Ok(())
}

/// CVTSI2SS/CVTSI2SD xmm, r/m32|64 (`DOUBLE` selects SD).
fn cvtsi2f<S: Sz, const MEM: bool, const DOUBLE: bool>(
    c: &mut Cpu,
    op: &Op,
    io: &dyn ExitHandler,
) -> Res {
    c.sse_check()?;
    let v = if MEM {
        c.read_op::<S>(op, io)?
    } else {
        S::get(c, op.rm)
    };
    let i = S::sx(v) as i64;
    let r = op.r as usize & 15;
    let rc = c.fpu.mxcsr >> 13;
    c.fpu.xmm[r] = if DOUBLE {
        scalar::<64>(c.fpu.xmm[r], int_to_f64(i, rc).to_bits())
    } else {
        scalar::<32>(c.fpu.xmm[r], u64::from(int_to_f32(i, rc).to_bits()))
    };
    Ok(())
}

fn int_to_f64(i: i64, rc: u32) -> f64 {
    let r = i as f64;
    if rc & 3 == 0 || r as i128 == i128::from(i) {
        return r;
    }
    directed(r, i128::from(i) - r as i128, rc, i < 0, |v, up| {
        if up { v.next_up() } else { v.next_down() }
    })
}

fn int_to_f32(i: i64, rc: u32) -> f32 {
    let r = i as f32;
    if rc & 3 == 0 || r as i128 == i128::from(i) {
        return r;
    }
    directed(r, i128::from(i) - r as i128, rc, i < 0, |v, up| {
        if up { v.next_up() } else { v.next_down() }
    })
}

/// Adjusts a nearest-rounded integer conversion to a directed rounding mode. `err` is
/// exact minus rounded; `neg` whether the exact value is negative.
fn directed<F: Copy>(r: F, err: i128, rc: u32, neg: bool, step: impl Fn(F, bool) -> F) -> F {
    match rc & 3 {
        1 if err < 0 => step(r, false),
        2 if err > 0 => step(r, true),
        3 if !neg && err < 0 => step(r, false),
        3 if neg && err > 0 => step(r, true),
        _ => r,
    }
}

/// CVT(T)SS2SI / CVT(T)SD2SI reg, xmm/m32|m64. `S` is the integer size.
fn cvtf2si<S: Sz, const SRC: u8, const DOUBLE: bool, const TRUNC: bool>(
    c: &mut Cpu,
    op: &Op,
    io: &dyn ExitHandler,
) -> Res {
    c.sse_check()?;
    let s = c.sse_src::<SRC>(op, io)?;
    let v = if DOUBLE {
        F64::to_f64(s as u64)
    } else {
        F32::to_f64(s as u64 & 0xffff_ffff)
    };
    let v = if TRUNC {
        v.trunc()
    } else {
        fp::round(v, c.fpu.mxcsr >> 13)
    };
    let r = fp::to_int(v, S::BITS);
    S::set(c, op.r, r);
    Ok(())
}

/// COMISS/UCOMISS/COMISD/UCOMISD.
fn comis<const SRC: u8, const DOUBLE: bool>(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    c.sse_check()?;
    let s = c.sse_src::<SRC>(op, io)?;
    let d = c.fpu.xmm[op.r as usize & 15];
    let (zf, pf, cf) = if DOUBLE {
        fp::comi::<F64>(d as u64, s as u64)
    } else {
        fp::comi::<F32>(d as u64 & 0xffff_ffff, s as u64 & 0xffff_ffff)
    };
    let f = (zf as u64) << 6 | (pf as u64) << 2 | cf as u64;
    c.set_status_flags(f);
    Ok(())
}

/// MASKMOVDQU xmm1, xmm2: byte-masked store to [seg:rDI].
fn maskmovdqu(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    c.sse_check()?;
    let v = c.fpu.xmm[op.r as usize & 15];
    let mask = c.fpu.xmm[op.rm as usize & 15];
    let base = c.regs[7] & crate::mmu::AMASK[op.asz as usize & 3];
    for i in 0..16u32 {
        if (mask >> (8 * i + 7)) & 1 != 0 {
            let lin = c.lin_off_w(op.seg, base.wrapping_add(u64::from(i)), 1)?;
            c.write::<B>(lin, (v >> (8 * i)) as u64 & 0xff, io)?;
        }
    }
    Ok(())
}

/// LDMXCSR m32.
fn ldmxcsr(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    c.sse_check()?;
    let v = c.read_op::<D>(op, io)? as u32;
    if v & !crate::fpu::MXCSR_MASK != 0 {
        return crate::cpu::gp0();
    }
    c.fpu.mxcsr = v;
    Ok(())
}

/// STMXCSR m32.
fn stmxcsr(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    c.sse_check()?;
    let v = u64::from(c.fpu.mxcsr);
    c.write_op::<D>(op, v, io)
}

/// FXSAVE (x=0) / FXSAVE64 (x=1) m512.
fn fxsave(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    if c.cr0 & (CR0_EM | CR0_TS) != 0 {
        return Err(Ex::Fault(crate::cpu::NM, 0));
    }
    let lin = c.lin_off_w(op.seg, c.ea(op), 512)?;
    if lin & 15 != 0 {
        return crate::cpu::gp0();
    }
    let img = c.fxsave_image(op.x == 1);
    c.write_bytes(lin, &img, c.tlb_sel != 0, io)
}

/// FXRSTOR (x=0) / FXRSTOR64 (x=1) m512.
fn fxrstor(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    if c.cr0 & (CR0_EM | CR0_TS) != 0 {
        return Err(Ex::Fault(crate::cpu::NM, 0));
    }
    let lin = c.lin_off_r(op.seg, c.ea(op), 512)?;
    if lin & 15 != 0 {
        return crate::cpu::gp0();
    }
    let mut img = [0u8; 512];
    c.read_bytes(lin, &mut img, c.tlb_sel != 0, io)?;
    let mxcsr = u32::from_le_bytes([img[24], img[25], img[26], img[27]]);
    if mxcsr & !crate::fpu::MXCSR_MASK != 0 {
        return crate::cpu::gp0();
    }
    c.fxrstor_image(&img, op.x == 1);
    Ok(())
}

impl Cpu {
    /// The 512-byte FXSAVE image.
    pub(crate) fn fxsave_image(&self, wide: bool) -> [u8; 512] {
        let f = &self.fpu;
        let mut b = [0u8; 512];
        b[0..2].copy_from_slice(&f.fcw.to_le_bytes());
        b[2..4].copy_from_slice(&self.fsw_full().to_le_bytes());
        let mut abridged = 0u8;
        for i in 0..8 {
            if (f.ftw >> (2 * i)) & 3 != 3 {
                abridged |= 1 << i;
            }
        }
        b[4] = abridged;
        b[6..8].copy_from_slice(&f.fop.to_le_bytes());
        if wide {
            b[8..16].copy_from_slice(&f.fip.to_le_bytes());
            b[16..24].copy_from_slice(&f.fdp.to_le_bytes());
        } else {
            b[8..12].copy_from_slice(&(f.fip as u32).to_le_bytes());
            b[12..14].copy_from_slice(&f.fcs.to_le_bytes());
            b[16..20].copy_from_slice(&(f.fdp as u32).to_le_bytes());
            b[20..22].copy_from_slice(&f.fds.to_le_bytes());
        }
        b[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
        b[28..32].copy_from_slice(&crate::fpu::MXCSR_MASK.to_le_bytes());
        for i in 0..8 {
            // Registers are stored in stack order: ST(0) first.
            let r = f.st[(usize::from(f.top) + i) & 7];
            let o = 32 + 16 * i;
            b[o..o + 8].copy_from_slice(&r.mant.to_le_bytes());
            b[o + 8..o + 10].copy_from_slice(&r.se.to_le_bytes());
        }
        let nx = if self.mode == Mode::Long { 16 } else { 8 };
        for i in 0..nx {
            let o = 160 + 16 * i;
            b[o..o + 16].copy_from_slice(&f.xmm[i].to_le_bytes());
        }
        b
    }

    /// Loads an FXSAVE image (MXCSR already validated).
    pub(crate) fn fxrstor_image(&mut self, b: &[u8; 512], wide: bool) {
        let u16at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64at = |o: usize| u64::from(u32at(o)) | (u64::from(u32at(o + 4)) << 32);
        let mode_long = self.mode == Mode::Long;
        let f = &mut self.fpu;
        f.fcw = u16at(0);
        let fsw = u16at(2);
        f.top = ((fsw >> 11) & 7) as u8;
        f.fsw = fsw & !(7 << 11);
        f.fop = u16at(6) & 0x7ff;
        if wide {
            f.fip = u64at(8);
            f.fdp = u64at(16);
        } else {
            f.fip = u64::from(u32at(8));
            f.fcs = u16at(12);
            f.fdp = u64::from(u32at(16));
            f.fds = u16at(20);
        }
        f.mxcsr = u32at(24);
        for i in 0..8usize {
            let o = 32 + 16 * i;
            let phys = (usize::from(f.top) + i) & 7;
            f.st[phys] = crate::fpu::F80 {
                mant: u64at(o),
                se: u16at(o + 8),
            };
        }
        let abridged = b[4];
        let mut ftw = 0u16;
        for phys in 0..8usize {
            let tag = if abridged & (1 << phys) == 0 {
                3
            } else {
                crate::x87::tag_of(f.st[phys])
            };
            ftw |= tag << (2 * phys);
        }
        f.ftw = ftw;
        let nx = if mode_long { 16 } else { 8 };
        for i in 0..nx {
            let o = 160 + 16 * i;
            f.xmm[i] = u128::from(u64at(o)) | (u128::from(u64at(o + 8)) << 64);
        }
    }
}

fn xmm(r: Register) -> Option<u8> {
    let v = r as u32;
    let x0 = Register::XMM0 as u32;
    (x0..x0 + 16).contains(&v).then(|| (v - x0) as u8)
}

/// Translates an SSE/SSE2 instruction, or `None`.
pub(crate) fn translate(ins: &Instruction, op: &mut Op, _bitness: u32) -> Option<Handler> {
    let m = ins.mnemonic();
    let k0 = ins.op_kind(0);
    let k1 = if ins.op_count() > 1 {
        ins.op_kind(1)
    } else {
        OpKind::Register
    };
    let r0 = if k0 == OpKind::Register {
        ins.op_register(0)
    } else {
        Register::None
    };
    let r1 = if ins.op_count() > 1 && k1 == OpKind::Register {
        ins.op_register(1)
    } else {
        Register::None
    };
    let x0 = xmm(r0);
    let x1 = xmm(r1);
    let mem0 = k0 == OpKind::Memory;
    let mem1 = k1 == OpKind::Memory;
    if ins.op_count() >= 3 && matches!(ins.op_kind(2), OpKind::Immediate8) {
        op.imm = ins.immediate(2);
    }
    // xmm, xmm/m op with a given memory form.
    macro_rules! v {
        ($o:ident, $msrc:expr) => {{
            op.r = x0?;
            if let Some(s) = x1 {
                op.rm = s;
                vop::<$o, SRC_REG> as Handler
            } else if mem1 {
                match $msrc {
                    SRC_M128A => vop::<$o, SRC_M128A>,
                    SRC_M128U => vop::<$o, SRC_M128U>,
                    SRC_M64 => vop::<$o, SRC_M64>,
                    _ => vop::<$o, SRC_M32>,
                }
            } else {
                return None;
            }
        }};
    }
    macro_rules! imm_shift {
        ($o:ident) => {{
            op.r = x0?;
            op.imm = ins.immediate(1);
            vop::<$o, SRC_REG> as Handler
        }};
    }
    // Shift by xmm/m128 or by imm8.
    macro_rules! sh {
        ($x:ident, $i:ident) => {
            if matches!(k1, OpKind::Immediate8) {
                imm_shift!($i)
            } else {
                v!($x, SRC_M128A)
            }
        };
    }
    Some(match m {
        Mn::Paddb => v!(Paddb, SRC_M128A),
        Mn::Paddw => v!(Paddw, SRC_M128A),
        Mn::Paddd => v!(Paddd, SRC_M128A),
        Mn::Paddq => v!(Paddq, SRC_M128A),
        Mn::Psubb => v!(Psubb, SRC_M128A),
        Mn::Psubw => v!(Psubw, SRC_M128A),
        Mn::Psubd => v!(Psubd, SRC_M128A),
        Mn::Psubq => v!(Psubq, SRC_M128A),
        Mn::Paddsb => v!(Paddsb, SRC_M128A),
        Mn::Paddsw => v!(Paddsw, SRC_M128A),
        Mn::Psubsb => v!(Psubsb, SRC_M128A),
        Mn::Psubsw => v!(Psubsw, SRC_M128A),
        Mn::Paddusb => v!(Paddusb, SRC_M128A),
        Mn::Paddusw => v!(Paddusw, SRC_M128A),
        Mn::Psubusb => v!(Psubusb, SRC_M128A),
        Mn::Psubusw => v!(Psubusw, SRC_M128A),
        Mn::Pmullw => v!(Pmullw, SRC_M128A),
        Mn::Pmulhw => v!(Pmulhw, SRC_M128A),
        Mn::Pmulhuw => v!(Pmulhuw, SRC_M128A),
        Mn::Pmuludq => v!(Pmuludq, SRC_M128A),
        Mn::Pmaddwd => v!(Pmaddwd, SRC_M128A),
        Mn::Pand | Mn::Andps | Mn::Andpd => v!(Pand, SRC_M128A),
        Mn::Pandn | Mn::Andnps | Mn::Andnpd => v!(Pandn, SRC_M128A),
        Mn::Por | Mn::Orps | Mn::Orpd => v!(Por, SRC_M128A),
        Mn::Pxor | Mn::Xorps | Mn::Xorpd => v!(Pxor, SRC_M128A),
        Mn::Pcmpeqb => v!(Pcmpeqb, SRC_M128A),
        Mn::Pcmpeqw => v!(Pcmpeqw, SRC_M128A),
        Mn::Pcmpeqd => v!(Pcmpeqd, SRC_M128A),
        Mn::Pcmpgtb => v!(Pcmpgtb, SRC_M128A),
        Mn::Pcmpgtw => v!(Pcmpgtw, SRC_M128A),
        Mn::Pcmpgtd => v!(Pcmpgtd, SRC_M128A),
        Mn::Pmaxub => v!(Pmaxub, SRC_M128A),
        Mn::Pminub => v!(Pminub, SRC_M128A),
        Mn::Pmaxsw => v!(Pmaxsw, SRC_M128A),
        Mn::Pminsw => v!(Pminsw, SRC_M128A),
        Mn::Pavgb => v!(Pavgb, SRC_M128A),
        Mn::Pavgw => v!(Pavgw, SRC_M128A),
        Mn::Psadbw => v!(Psadbw, SRC_M128A),
        Mn::Punpcklbw => v!(Punpcklbw, SRC_M128A),
        Mn::Punpcklwd => v!(Punpcklwd, SRC_M128A),
        Mn::Punpckldq => v!(Punpckldq, SRC_M128A),
        Mn::Punpcklqdq => v!(Punpcklqdq, SRC_M128A),
        Mn::Punpckhbw => v!(Punpckhbw, SRC_M128A),
        Mn::Punpckhwd => v!(Punpckhwd, SRC_M128A),
        Mn::Punpckhdq => v!(Punpckhdq, SRC_M128A),
        Mn::Punpckhqdq => v!(Punpckhqdq, SRC_M128A),
        Mn::Packsswb => v!(Packsswb, SRC_M128A),
        Mn::Packssdw => v!(Packssdw, SRC_M128A),
        Mn::Packuswb => v!(Packuswb, SRC_M128A),
        Mn::Psllw => sh!(Psllw, PsllwI),
        Mn::Pslld => sh!(Pslld, PslldI),
        Mn::Psllq => sh!(Psllq, PsllqI),
        Mn::Psrlw => sh!(Psrlw, PsrlwI),
        Mn::Psrld => sh!(Psrld, PsrldI),
        Mn::Psrlq => sh!(Psrlq, PsrlqI),
        Mn::Psraw => sh!(Psraw, PsrawI),
        Mn::Psrad => sh!(Psrad, PsradI),
        Mn::Pslldq => imm_shift!(Pslldq),
        Mn::Psrldq => imm_shift!(Psrldq),
        Mn::Pshufd => v!(Pshufd, SRC_M128A),
        Mn::Pshuflw => v!(Pshuflw, SRC_M128A),
        Mn::Pshufhw => v!(Pshufhw, SRC_M128A),
        Mn::Shufps => v!(Shufps, SRC_M128A),
        Mn::Shufpd => v!(Shufpd, SRC_M128A),
        Mn::Unpcklps => v!(Unpcklps, SRC_M128A),
        Mn::Unpckhps => v!(Unpckhps, SRC_M128A),
        Mn::Unpcklpd => v!(Unpcklpd, SRC_M128A),
        Mn::Unpckhpd => v!(Unpckhpd, SRC_M128A),
        Mn::Addps => v!(Addps, SRC_M128A),
        Mn::Addpd => v!(Addpd, SRC_M128A),
        Mn::Subps => v!(Subps, SRC_M128A),
        Mn::Subpd => v!(Subpd, SRC_M128A),
        Mn::Mulps => v!(Mulps, SRC_M128A),
        Mn::Mulpd => v!(Mulpd, SRC_M128A),
        Mn::Divps => v!(Divps, SRC_M128A),
        Mn::Divpd => v!(Divpd, SRC_M128A),
        Mn::Minps => v!(Minps, SRC_M128A),
        Mn::Minpd => v!(Minpd, SRC_M128A),
        Mn::Maxps => v!(Maxps, SRC_M128A),
        Mn::Maxpd => v!(Maxpd, SRC_M128A),
        Mn::Sqrtps => v!(Sqrtps, SRC_M128A),
        Mn::Sqrtpd => v!(Sqrtpd, SRC_M128A),
        Mn::Rcpps => v!(Rcpps, SRC_M128A),
        Mn::Rsqrtps => v!(Rsqrtps, SRC_M128A),
        Mn::Cmpps => v!(Cmpps, SRC_M128A),
        Mn::Cmppd => v!(Cmppd, SRC_M128A),
        Mn::Addss => v!(Addss, SRC_M32),
        Mn::Addsd => v!(Addsd, SRC_M64),
        Mn::Subss => v!(Subss, SRC_M32),
        Mn::Subsd => v!(Subsd, SRC_M64),
        Mn::Mulss => v!(Mulss, SRC_M32),
        Mn::Mulsd => v!(Mulsd, SRC_M64),
        Mn::Divss => v!(Divss, SRC_M32),
        Mn::Divsd => v!(Divsd, SRC_M64),
        Mn::Minss => v!(Minss, SRC_M32),
        Mn::Minsd => v!(Minsd, SRC_M64),
        Mn::Maxss => v!(Maxss, SRC_M32),
        Mn::Maxsd => v!(Maxsd, SRC_M64),
        Mn::Sqrtss => v!(Sqrtss, SRC_M32),
        Mn::Sqrtsd => v!(Sqrtsd, SRC_M64),
        Mn::Rcpss => v!(Rcpss, SRC_M32),
        Mn::Rsqrtss => v!(Rsqrtss, SRC_M32),
        Mn::Cmpss => v!(Cmpss, SRC_M32),
        Mn::Cmpsd if x0.is_some() => v!(Cmpsd, SRC_M64),
        Mn::Cvtss2sd => v!(Cvtss2sd, SRC_M32),
        Mn::Cvtsd2ss => v!(Cvtsd2ss, SRC_M64),
        Mn::Cvtps2pd => v!(Cvtps2pd, SRC_M64),
        Mn::Cvtpd2ps => v!(Cvtpd2ps, SRC_M128A),
        Mn::Cvtdq2ps => v!(Cvtdq2ps, SRC_M128A),
        Mn::Cvtdq2pd => v!(Cvtdq2pd, SRC_M64),
        Mn::Cvtps2dq => v!(Cvtps2dq, SRC_M128A),
        Mn::Cvttps2dq => v!(Cvttps2dq, SRC_M128A),
        Mn::Cvtpd2dq => v!(Cvtpd2dq, SRC_M128A),
        Mn::Cvttpd2dq => v!(Cvttpd2dq, SRC_M128A),
        Mn::Movaps
        | Mn::Movapd
        | Mn::Movdqa
        | Mn::Movups
        | Mn::Movupd
        | Mn::Movdqu
        | Mn::Movntps
        | Mn::Movntpd
        | Mn::Movntdq => {
            let aligned = !matches!(m, Mn::Movups | Mn::Movupd | Mn::Movdqu);
            if mem0 {
                op.r = x1?;
                if aligned {
                    vstore::<16, true, false>
                } else {
                    vstore::<16, false, false>
                }
            } else if aligned {
                v!(Mov, SRC_M128A)
            } else {
                v!(Mov, SRC_M128U)
            }
        }
        Mn::Movss | Mn::Movsd if x0.is_some() || x1.is_some() => {
            let double = m == Mn::Movsd;
            if mem0 {
                op.r = x1?;
                if double {
                    vstore::<8, false, false>
                } else {
                    vstore::<4, false, false>
                }
            } else if mem1 {
                if double {
                    v!(MovLow64Zero, SRC_M64)
                } else {
                    v!(MovLow32Zero, SRC_M32)
                }
            } else if double {
                v!(MovLow64Merge, SRC_REG)
            } else {
                v!(MovLow32Merge, SRC_REG)
            }
        }
        Mn::Movlps | Mn::Movlpd => {
            if mem0 {
                op.r = x1?;
                vstore::<8, false, false>
            } else {
                v!(MovLow64Merge, SRC_M64)
            }
        }
        Mn::Movhps | Mn::Movhpd => {
            if mem0 {
                op.r = x1?;
                vstore::<8, false, true>
            } else {
                v!(MovHigh64, SRC_M64)
            }
        }
        Mn::Movhlps => v!(Movhlps, SRC_REG),
        Mn::Movlhps => v!(Movlhps, SRC_REG),
        Mn::Movd | Mn::Movq => {
            if let (Some(d), Some(s)) = (x0, x1) {
                // movq xmm, xmm
                op.r = d;
                op.rm = s;
                return Some(vop::<MovLow64Zero, SRC_REG>);
            }
            if let Some(d) = x0 {
                op.r = d;
                if mem1 {
                    let sz = ins.memory_size().size();
                    return Some(if sz == 8 {
                        movd_to_xmm::<Q, true>
                    } else {
                        movd_to_xmm::<D, true>
                    });
                }
                let (g, sz) = gpr(r1)?;
                op.rm = g;
                return Some(if sz == 8 {
                    movd_to_xmm::<Q, false>
                } else {
                    movd_to_xmm::<D, false>
                });
            }
            op.r = x1?;
            if mem0 {
                let sz = ins.memory_size().size();
                return Some(if sz == 8 {
                    movd_from_xmm::<Q, true>
                } else {
                    movd_from_xmm::<D, true>
                });
            }
            let (g, sz) = gpr(r0)?;
            op.rm = g;
            if sz == 8 {
                movd_from_xmm::<Q, false>
            } else {
                movd_from_xmm::<D, false>
            }
        }
        Mn::Movnti => {
            op.r = gpr(r1)?.0;
            match gpr(r1)?.1 {
                8 => crate::exec::alu::mov_rm_r::<Q, crate::exec::M>,
                _ => crate::exec::alu::mov_rm_r::<D, crate::exec::M>,
            }
        }
        Mn::Maskmovdqu => {
            op.r = x0?;
            op.rm = x1?;
            op.seg = crate::decode::sreg(ins.memory_segment()).unwrap_or(3);
            op.asz = match ins.op_kind(0) {
                OpKind::MemorySegDI => 0,
                OpKind::MemorySegEDI => 1,
                _ => 2,
            };
            // The register operands are 1 and 2 when the implicit memory operand is first.
            if let (Some(a), Some(b)) = (xmm(ins.op_register(1)), xmm(ins.op_register(2))) {
                op.r = a;
                op.rm = b;
            }
            maskmovdqu
        }
        Mn::Pmovmskb | Mn::Movmskps | Mn::Movmskpd => {
            op.r = gpr(r0)?.0;
            op.rm = x1?;
            op.x = match m {
                Mn::Pmovmskb => 0,
                Mn::Movmskps => 1,
                _ => 2,
            };
            movmsk
        }
        Mn::Pextrw if x1.is_some() => {
            op.r = gpr(r0)?.0;
            op.rm = x1?;
            op.imm = ins.immediate(2);
            pextrw
        }
        Mn::Pinsrw => {
            op.r = x0?;
            op.imm = ins.immediate(2);
            if mem1 {
                pinsrw::<true>
            } else {
                op.rm = gpr(r1)?.0;
                pinsrw::<false>
            }
        }
        Mn::Cvtsi2ss | Mn::Cvtsi2sd => {
            op.r = x0?;
            let double = m == Mn::Cvtsi2sd;
            let (sz, mem) = if mem1 {
                (ins.memory_size().size(), true)
            } else {
                let (g, s) = gpr(r1)?;
                op.rm = g;
                (s as usize, false)
            };
            match (sz, mem, double) {
                (8, true, true) => cvtsi2f::<Q, true, true>,
                (8, true, false) => cvtsi2f::<Q, true, false>,
                (8, false, true) => cvtsi2f::<Q, false, true>,
                (8, false, false) => cvtsi2f::<Q, false, false>,
                (_, true, true) => cvtsi2f::<D, true, true>,
                (_, true, false) => cvtsi2f::<D, true, false>,
                (_, false, true) => cvtsi2f::<D, false, true>,
                (_, false, false) => cvtsi2f::<D, false, false>,
            }
        }
        Mn::Cvtss2si | Mn::Cvttss2si | Mn::Cvtsd2si | Mn::Cvttsd2si => {
            let (g, sz) = gpr(r0)?;
            op.r = g;
            let double = matches!(m, Mn::Cvtsd2si | Mn::Cvttsd2si);
            let trunc = matches!(m, Mn::Cvttss2si | Mn::Cvttsd2si);
            if let Some(s) = x1 {
                op.rm = s;
            }
            macro_rules! c2 {
                ($s:ident, $src:expr) => {
                    match (double, trunc) {
                        (true, true) => cvtf2si::<$s, $src, true, true> as Handler,
                        (true, false) => cvtf2si::<$s, $src, true, false>,
                        (false, true) => cvtf2si::<$s, $src, false, true>,
                        (false, false) => cvtf2si::<$s, $src, false, false>,
                    }
                };
            }
            match (sz, x1.is_some(), double) {
                (8, true, _) => c2!(Q, SRC_REG),
                (_, true, _) => c2!(D, SRC_REG),
                (8, false, true) => c2!(Q, SRC_M64),
                (8, false, false) => c2!(Q, SRC_M32),
                (_, false, true) => c2!(D, SRC_M64),
                (_, false, false) => c2!(D, SRC_M32),
            }
        }
        Mn::Comiss | Mn::Ucomiss | Mn::Comisd | Mn::Ucomisd => {
            op.r = x0?;
            let double = matches!(m, Mn::Comisd | Mn::Ucomisd);
            if let Some(s) = x1 {
                op.rm = s;
                if double {
                    comis::<SRC_REG, true>
                } else {
                    comis::<SRC_REG, false>
                }
            } else if double {
                comis::<SRC_M64, true>
            } else {
                comis::<SRC_M32, false>
            }
        }
        Mn::Ldmxcsr => ldmxcsr,
        Mn::Stmxcsr => stmxcsr,
        Mn::Fxsave | Mn::Fxsave64 => {
            op.x = (m == Mn::Fxsave64) as u8;
            fxsave
        }
        Mn::Fxrstor | Mn::Fxrstor64 => {
            op.x = (m == Mn::Fxrstor64) as u8;
            fxrstor
        }
        _ => return None,
    })
}
