//! Scalar floating-point helpers with x86's NaN rules (SSE: the first source NaN wins, quieted;
//! an invalid operation yields the negative "default NaN"), and conversions with x86's
//! "integer indefinite" results. Arithmetic itself is IEEE 754 round-to-nearest-even, which
//! Rust's `f32`/`f64` operations give bit-exactly.

/// A float format: f32 or f64 as raw bits.
pub(crate) trait Fp: Copy {
    type F: Copy + PartialOrd;
    const BITS: u32;
    const QUIET: u64;
    const DEFAULT_NAN: u64;
    fn to_f(b: u64) -> Self::F;
    fn from_f(f: Self::F) -> u64;
    fn is_nan(b: u64) -> bool;
    fn add(a: Self::F, b: Self::F) -> Self::F;
    fn sub(a: Self::F, b: Self::F) -> Self::F;
    fn mul(a: Self::F, b: Self::F) -> Self::F;
    fn div(a: Self::F, b: Self::F) -> Self::F;
    fn sqrt(a: Self::F) -> Self::F;
    fn is_zero(b: u64) -> bool;
    fn sign(b: u64) -> bool;
    fn to_f64(b: u64) -> f64;
}

#[derive(Clone, Copy)]
pub(crate) struct F32;
#[derive(Clone, Copy)]
pub(crate) struct F64;

impl Fp for F32 {
    type F = f32;
    const BITS: u32 = 32;
    const QUIET: u64 = 0x0040_0000;
    const DEFAULT_NAN: u64 = 0xffc0_0000;
    fn to_f(b: u64) -> f32 {
        f32::from_bits(b as u32)
    }
    fn from_f(f: f32) -> u64 {
        u64::from(f.to_bits())
    }
    fn is_nan(b: u64) -> bool {
        (b as u32) & 0x7fff_ffff > 0x7f80_0000
    }
    fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    fn sub(a: f32, b: f32) -> f32 {
        a - b
    }
    fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    fn div(a: f32, b: f32) -> f32 {
        a / b
    }
    fn sqrt(a: f32) -> f32 {
        a.sqrt()
    }
    fn is_zero(b: u64) -> bool {
        (b as u32) & 0x7fff_ffff == 0
    }
    fn sign(b: u64) -> bool {
        (b as u32) >> 31 != 0
    }
    fn to_f64(b: u64) -> f64 {
        f64::from(f32::from_bits(b as u32))
    }
}

impl Fp for F64 {
    type F = f64;
    const BITS: u32 = 64;
    const QUIET: u64 = 0x0008_0000_0000_0000;
    const DEFAULT_NAN: u64 = 0xfff8_0000_0000_0000;
    fn to_f(b: u64) -> f64 {
        f64::from_bits(b)
    }
    fn from_f(f: f64) -> u64 {
        f.to_bits()
    }
    fn is_nan(b: u64) -> bool {
        b & 0x7fff_ffff_ffff_ffff > 0x7ff0_0000_0000_0000
    }
    fn add(a: f64, b: f64) -> f64 {
        a + b
    }
    fn sub(a: f64, b: f64) -> f64 {
        a - b
    }
    fn mul(a: f64, b: f64) -> f64 {
        a * b
    }
    fn div(a: f64, b: f64) -> f64 {
        a / b
    }
    fn sqrt(a: f64) -> f64 {
        a.sqrt()
    }
    fn is_zero(b: u64) -> bool {
        b & 0x7fff_ffff_ffff_ffff == 0
    }
    fn sign(b: u64) -> bool {
        b >> 63 != 0
    }
    fn to_f64(b: u64) -> f64 {
        f64::from_bits(b)
    }
}

/// A binary arithmetic operation with SSE NaN rules.
#[inline]
pub(crate) fn arith<P: Fp>(a: u64, b: u64, f: fn(P::F, P::F) -> P::F) -> u64 {
    if P::is_nan(a) {
        return a | P::QUIET;
    }
    if P::is_nan(b) {
        return b | P::QUIET;
    }
    let r = P::from_f(f(P::to_f(a), P::to_f(b)));
    if P::is_nan(r) { P::DEFAULT_NAN } else { r }
}

/// SQRT with SSE NaN rules.
#[inline]
pub(crate) fn sqrt<P: Fp>(a: u64) -> u64 {
    if P::is_nan(a) {
        return a | P::QUIET;
    }
    let r = P::from_f(P::sqrt(P::to_f(a)));
    if P::is_nan(r) { P::DEFAULT_NAN } else { r }
}

/// MIN: returns the second operand when either is NaN or both are zero.
#[inline]
pub(crate) fn min<P: Fp>(a: u64, b: u64) -> u64 {
    if P::is_nan(a) || P::is_nan(b) {
        return b;
    }
    if P::to_f(a) < P::to_f(b) { a } else { b }
}

/// MAX: returns the second operand when either is NaN or both are zero.
#[inline]
pub(crate) fn max<P: Fp>(a: u64, b: u64) -> u64 {
    if P::is_nan(a) || P::is_nan(b) {
        return b;
    }
    if P::to_f(a) > P::to_f(b) { a } else { b }
}

/// CMPPS/CMPSS predicate 0..7: all-ones or zero.
#[inline]
pub(crate) fn cmp<P: Fp>(a: u64, b: u64, pred: u8) -> bool {
    let unord = P::is_nan(a) || P::is_nan(b);
    let (x, y) = (P::to_f(a), P::to_f(b));
    match pred & 7 {
        0 => !unord && x == y,
        1 => !unord && x < y,
        2 => !unord && x <= y,
        3 => unord,
        4 => unord || x != y,
        5 => unord || !(x < y),
        6 => unord || !(x <= y),
        _ => !unord,
    }
}

/// COMISS/UCOMISS result as (ZF, PF, CF).
#[inline]
pub(crate) fn comi<P: Fp>(a: u64, b: u64) -> (bool, bool, bool) {
    if P::is_nan(a) || P::is_nan(b) {
        return (true, true, true);
    }
    let (x, y) = (P::to_f(a), P::to_f(b));
    if x < y {
        (false, false, true)
    } else if x > y {
        (false, false, false)
    } else {
        (true, false, false)
    }
}

/// Rounds `v` per MXCSR.RC (0 nearest-even, 1 down, 2 up, 3 toward zero).
#[inline]
pub(crate) fn round(v: f64, rc: u32) -> f64 {
    match rc & 3 {
        0 => v.round_ties_even(),
        1 => v.floor(),
        2 => v.ceil(),
        _ => v.trunc(),
    }
}

/// Float (as f64) to a signed integer of `bits`, rounding already applied; out of range or
/// NaN gives the integer indefinite value (the most negative integer).
#[inline]
pub(crate) fn to_int(v: f64, bits: u32) -> u64 {
    let indefinite = 1u64 << (bits - 1);
    if v.is_nan() {
        return indefinite;
    }
    let lim = (1u64 << (bits - 1)) as f64;
    if v >= lim || v < -lim {
        return indefinite;
    }
    let i = v as i64;
    (i as u64) & (u64::MAX >> (64 - bits))
}

/// f64 bits to f32 bits (CVTSD2SS), NaNs quieted with their payload's top bits kept.
#[inline]
pub(crate) fn f64_to_f32(b: u64) -> u64 {
    if F64::is_nan(b) {
        let sign = (b >> 63) as u32;
        let payload = ((b >> 29) & 0x3f_ffff) as u32;
        return u64::from((sign << 31) | 0x7fc0_0000 | payload);
    }
    u64::from((f64::from_bits(b) as f32).to_bits())
}

/// f32 bits to f64 bits (CVTSS2SD), NaNs quieted with their payload kept.
#[inline]
pub(crate) fn f32_to_f64(b: u64) -> u64 {
    let b = b as u32;
    if F32::is_nan(u64::from(b)) {
        let sign = u64::from(b >> 31);
        let payload = u64::from(b & 0x3f_ffff) << 29;
        return (sign << 63) | 0x7ff8_0000_0000_0000 | payload;
    }
    f64::from(f32::from_bits(b)).to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_rules_follow_sse() {
        let qnan = 0x7fc0_0001u64;
        let snan = 0x7f80_0001u64;
        let one = 1.0f32.to_bits() as u64;
        assert_eq!(arith::<F32>(one, snan, F32::add), snan | F32::QUIET);
        assert_eq!(arith::<F32>(qnan, snan, F32::add), qnan);
        let inf = f32::INFINITY.to_bits() as u64;
        assert_eq!(arith::<F32>(inf, inf, F32::sub), F32::DEFAULT_NAN);
        assert_eq!(min::<F32>(qnan, one), one);
        assert_eq!(to_int(3e10, 32), 0x8000_0000);
        assert_eq!(to_int(-2.0, 32), 0xffff_fffe);
    }
}
