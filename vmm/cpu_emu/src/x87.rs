//! The x87 floating-point unit: the subset glibc, busybox and boot code use.
//!
//! Registers keep their 80-bit encodings exactly (loads, stores, FXCH, FXSAVE/FXRSTOR and
//! FNSAVE/FRSTOR move bits unchanged). Arithmetic is computed in binary64 and the result
//! widened back, so results carry 53 significant bits instead of the 64 of the default
//! precision control; operations on values representable in binary64 with exact or
//! double-rounded-identical results match hardware. Exception flags are set for stack faults
//! and invalid operations only; unmasked exceptions (#MF) are not raised.

use iced_x86::Instruction;
use iced_x86::Mnemonic as Mn;
use iced_x86::OpKind;
use iced_x86::Register;
use virt::ExitHandler;

use crate::cpu::CR0_EM;
use crate::cpu::CR0_MP;
use crate::cpu::CR0_TS;
use crate::cpu::Cpu;
use crate::cpu::Ex;
use crate::cpu::Res;
use crate::fpu::F80;
use crate::op::Handler;
use crate::op::Op;
use crate::size::D;
use crate::size::Q;
use crate::size::W;

const IE: u16 = 1;
const SF: u16 = 1 << 6;
const C0: u16 = 1 << 8;
const C1: u16 = 1 << 9;
const C2: u16 = 1 << 10;
const C3: u16 = 1 << 14;

/// The "real indefinite" QNaN.
const INDEFINITE: F80 = F80 {
    mant: 0xc000_0000_0000_0000,
    se: 0xffff,
};

/// Tag (0 valid, 1 zero, 2 special) of a register's contents.
pub(crate) fn tag_of(v: F80) -> u16 {
    let e = v.se & 0x7fff;
    if e == 0 && v.mant == 0 {
        1
    } else if e == 0x7fff || e == 0 || v.mant >> 63 == 0 {
        2
    } else {
        0
    }
}

/// Widens binary64 to the 80-bit format (exact).
pub(crate) fn from_f64(f: f64) -> F80 {
    let b = f.to_bits();
    let sign = ((b >> 63) as u16) << 15;
    let e = ((b >> 52) & 0x7ff) as i32;
    let frac = b & 0x000f_ffff_ffff_ffff;
    if e == 0x7ff {
        return F80 {
            mant: (1 << 63) | (frac << 11),
            se: sign | 0x7fff,
        };
    }
    if e == 0 {
        if frac == 0 {
            return F80 { mant: 0, se: sign };
        }
        // Denormal, frac * 2^-1074: normalize (the 80-bit exponent range covers it). The
        // shift puts the leading one at bit 63 (at most 63: frac is not zero).
        let lz = frac.leading_zeros();
        let mant = frac << lz;
        let exp = (16383 - 1074 + 63 - lz as i32) as u16;
        return F80 {
            mant,
            se: sign | exp,
        };
    }
    F80 {
        mant: (1 << 63) | (frac << 11),
        se: sign | (e - 1023 + 16383) as u16,
    }
}

/// Narrows to binary64, rounding to nearest-even.
pub(crate) fn to_f64(v: F80) -> f64 {
    let sign = u64::from(v.se >> 15) << 63;
    let e = i32::from(v.se & 0x7fff);
    if e == 0x7fff {
        if v.mant << 1 == 0 {
            return f64::from_bits(sign | 0x7ff0_0000_0000_0000);
        }
        return f64::from_bits(
            sign | 0x7ff8_0000_0000_0000 | ((v.mant >> 11) & 0x000f_ffff_ffff_ffff),
        );
    }
    if v.mant == 0 {
        return f64::from_bits(sign);
    }
    if v.mant >> 63 == 0 && e != 0 {
        // Unnormal: invalid.
        return f64::from_bits(0xfff8_0000_0000_0000);
    }
    // value = mant * 2^(max(e, 1) - 16383 - 63), rounded in integers: host float arithmetic
    // (powi in particular) is not exact for results near f64's denormal range.
    let lz = v.mant.leading_zeros();
    let m = v.mant << lz; // leading one at bit 63
    let exp = e.max(1) - 16383 - lz as i32; // value = m / 2^63 * 2^exp
    if exp > 1023 {
        return f64::from_bits(sign | 0x7ff0_0000_0000_0000);
    }
    // Keep the top bits of `m` at the scale of f64's last place: 2^(exp-52) for normals,
    // 2^-1074 for denormals; `shift` is how many low bits of `m` are rounded away.
    let shift = if exp >= -1022 {
        11
    } else {
        (-1011 - exp) as u32
    };
    let (mut q, rem, half) = if shift >= 64 {
        (0, if shift == 64 { m } else { 0 }, 1u64 << 63)
    } else {
        (m >> shift, m & ((1u64 << shift) - 1), 1u64 << (shift - 1))
    };
    if rem > half || (rem == half && q & 1 == 1) {
        q += 1;
    }
    let bits = if exp >= -1022 {
        // q is in [2^52, 2^53]: adding it to the exponent field carries a rounding overflow.
        (((exp + 1022) as u64) << 52) + q
    } else {
        // A denormal; q == 2^52 is exactly the smallest normal's encoding.
        q
    };
    if bits >= 0x7ff0_0000_0000_0000 {
        return f64::from_bits(sign | 0x7ff0_0000_0000_0000);
    }
    f64::from_bits(bits | sign)
}

/// FSW with TOP.
impl Cpu {
    pub(crate) fn fsw_full(&self) -> u16 {
        (self.fpu.fsw & !(7 << 11)) | (u16::from(self.fpu.top & 7) << 11)
    }

    fn st_phys(&self, i: u8) -> usize {
        usize::from((self.fpu.top + i) & 7)
    }

    fn st_empty(&self, i: u8) -> bool {
        let p = self.st_phys(i);
        (self.fpu.ftw >> (2 * p)) & 3 == 3
    }

    /// ST(i); an empty register is a stack underflow (invalid, result indefinite).
    fn st(&mut self, i: u8) -> F80 {
        if self.st_empty(i) {
            self.fpu.fsw = (self.fpu.fsw | IE | SF) & !C1;
            return INDEFINITE;
        }
        self.fpu.st[self.st_phys(i)]
    }

    fn set_st(&mut self, i: u8, v: F80) {
        let p = self.st_phys(i);
        self.fpu.st[p] = v;
        self.fpu.ftw = (self.fpu.ftw & !(3 << (2 * p))) | (tag_of(v) << (2 * p));
    }

    fn fpush(&mut self, v: F80) {
        self.fpu.top = self.fpu.top.wrapping_sub(1) & 7;
        if !self.st_empty(0) {
            self.fpu.fsw |= IE | SF | C1;
            self.set_st(0, INDEFINITE);
            return;
        }
        self.set_st(0, v);
    }

    fn fpop(&mut self) {
        let p = self.st_phys(0);
        self.fpu.ftw |= 3 << (2 * p);
        self.fpu.top = (self.fpu.top + 1) & 7;
    }

    fn x87_check(&self, wait: bool) -> Result<(), Ex> {
        if wait {
            if self.cr0 & (CR0_TS | CR0_MP) == (CR0_TS | CR0_MP) {
                return Err(Ex::Fault(crate::cpu::NM, 0));
            }
            return Ok(());
        }
        if self.cr0 & (CR0_EM | CR0_TS) != 0 {
            return Err(Ex::Fault(crate::cpu::NM, 0));
        }
        Ok(())
    }

    fn fninit(&mut self) {
        let f = &mut self.fpu;
        f.fcw = 0x37f;
        f.fsw = 0;
        f.top = 0;
        f.ftw = 0xffff;
        f.fop = 0;
        f.fip = 0;
        f.fdp = 0;
        f.fcs = 0;
        f.fds = 0;
    }

    fn set_cc(&mut self, c0: bool, c2: bool, c3: bool) {
        let mut s = self.fpu.fsw & !(C0 | C1 | C2 | C3);
        if c0 {
            s |= C0;
        }
        if c2 {
            s |= C2;
        }
        if c3 {
            s |= C3;
        }
        self.fpu.fsw = s;
    }
}

/// Memory operand formats.
const M32F: u8 = 1;
const M64F: u8 = 2;
const M80F: u8 = 3;
const M16I: u8 = 4;
const M32I: u8 = 5;
const M64I: u8 = 6;

/// Operations (`Op::x`).
mod k {
    pub const FNINIT: u8 = 0;
    pub const FNSTCW: u8 = 1;
    pub const FLDCW: u8 = 2;
    pub const FNSTSW_M: u8 = 3;
    pub const FNSTSW_AX: u8 = 4;
    pub const FNCLEX: u8 = 5;
    pub const FWAIT: u8 = 6;
    pub const FLD_M: u8 = 7;
    pub const FLD_ST: u8 = 8;
    pub const FST_M: u8 = 9;
    pub const FSTP_M: u8 = 10;
    pub const FST_ST: u8 = 11;
    pub const FSTP_ST: u8 = 12;
    pub const FXCH: u8 = 13;
    pub const ARITH_M: u8 = 14;
    pub const ARITH_ST0_STI: u8 = 15;
    pub const ARITH_STI_ST0: u8 = 16;
    pub const ARITH_STI_ST0_P: u8 = 17;
    pub const FCHS: u8 = 18;
    pub const FABS: u8 = 19;
    pub const FSQRT: u8 = 20;
    pub const FRNDINT: u8 = 21;
    pub const FCONST: u8 = 22;
    pub const FCOM_M: u8 = 23;
    pub const FCOM_ST: u8 = 24;
    pub const FCOMI: u8 = 25;
    pub const FTST: u8 = 26;
    pub const FXAM: u8 = 27;
    pub const FFREE: u8 = 28;
    pub const FINCSTP: u8 = 29;
    pub const FDECSTP: u8 = 30;
    pub const FNOP: u8 = 31;
    pub const FNSTENV: u8 = 32;
    pub const FLDENV: u8 = 33;
    pub const FNSAVE: u8 = 34;
    pub const FRSTOR: u8 = 35;
    pub const FSCALE: u8 = 36;
    pub const FCMOV: u8 = 37;
    pub const FUNARY: u8 = 38;
    pub const FPREM: u8 = 39;
    pub const FXTRACT: u8 = 40;
    pub const FBINARY_POP: u8 = 41;
    pub const FEMMS: u8 = 42;
}

/// Arithmetic selectors (`Op::x2` high nibble for arith forms).
const ADD: u8 = 0;
const MUL: u8 = 1;
const SUB: u8 = 4;
const SUBR: u8 = 5;
const DIV: u8 = 6;
const DIVR: u8 = 7;

fn arith(kind: u8, a: f64, b: f64) -> f64 {
    match kind {
        ADD => a + b,
        MUL => a * b,
        SUB => a - b,
        SUBR => b - a,
        DIV => a / b,
        _ => b / a,
    }
}

impl Cpu {
    fn x87_load_mem(&mut self, op: &Op, fmt: u8, io: &dyn ExitHandler) -> Result<F80, Ex> {
        Ok(match fmt {
            M32F => from_f64(f64::from(f32::from_bits(self.read_op::<D>(op, io)? as u32))),
            M64F => from_f64(f64::from_bits(self.read_op::<Q>(op, io)?)),
            M80F => {
                let lin = self.lin_off_r(op.seg, self.ea(op), 10)?;
                let mut b = [0u8; 10];
                self.read_bytes(lin, &mut b, self.tlb_sel != 0, io)?;
                F80 {
                    mant: u64::from_le_bytes(b[..8].try_into().unwrap_or_default()),
                    se: u16::from_le_bytes([b[8], b[9]]),
                }
            }
            M16I => from_f64(f64::from(self.read_op::<W>(op, io)? as u16 as i16)),
            M32I => from_f64(f64::from(self.read_op::<D>(op, io)? as u32 as i32)),
            _ => int64_to_f80(self.read_op::<Q>(op, io)? as i64),
        })
    }

    fn x87_store_mem(&mut self, op: &Op, fmt: u8, v: F80, io: &dyn ExitHandler) -> Result<(), Ex> {
        match fmt {
            M32F => {
                let f = to_f64(v);
                let bits = if f.is_nan() {
                    crate::softfp::f64_to_f32(f.to_bits()) as u32
                } else {
                    (f as f32).to_bits()
                };
                self.write_op::<D>(op, u64::from(bits), io)
            }
            M64F => self.write_op::<Q>(op, to_f64(v).to_bits(), io),
            M80F => {
                let lin = self.lin_off_w(op.seg, self.ea(op), 10)?;
                let mut b = [0u8; 10];
                b[..8].copy_from_slice(&v.mant.to_le_bytes());
                b[8..].copy_from_slice(&v.se.to_le_bytes());
                self.write_bytes(lin, &b, self.tlb_sel != 0, io)
            }
            _ => {
                let bits = match fmt {
                    M16I => 16,
                    M32I => 32,
                    _ => 64,
                };
                let rc = u32::from(self.fpu.fcw >> 10) & 3;
                let r = f80_to_int(v, rc, bits);
                let r = match r {
                    Some(r) => r,
                    None => {
                        self.fpu.fsw |= IE;
                        1u64 << (bits - 1)
                    }
                };
                match bits {
                    16 => self.write_op::<W>(op, r & 0xffff, io),
                    32 => self.write_op::<D>(op, r & 0xffff_ffff, io),
                    _ => self.write_op::<Q>(op, r, io),
                }
            }
        }
    }

    fn fcompare(&mut self, a: F80, b: F80) -> (bool, bool, bool) {
        let (x, y) = (to_f64(a), to_f64(b));
        if x.is_nan() || y.is_nan() {
            self.fpu.fsw |= IE;
            (true, true, true)
        } else if x < y {
            (true, false, false)
        } else if x > y {
            (false, false, false)
        } else {
            (false, false, true)
        }
    }
}

/// Exact i64 -> 80-bit conversion.
fn int64_to_f80(i: i64) -> F80 {
    if i == 0 {
        return F80 { mant: 0, se: 0 };
    }
    let sign = if i < 0 { 0x8000 } else { 0 };
    let a = i.unsigned_abs();
    let lz = a.leading_zeros();
    F80 {
        mant: a << lz,
        se: sign | (16383 + 63 - lz) as u16,
    }
}

/// 80-bit to a `bits`-bit integer with rounding control `rc`; `None` when out of range/NaN.
fn f80_to_int(v: F80, rc: u32, bits: u32) -> Option<u64> {
    let e = i32::from(v.se & 0x7fff);
    let neg = v.se & 0x8000 != 0;
    if e == 0x7fff {
        return None;
    }
    if v.mant == 0 {
        return Some(0);
    }
    // value = mant * 2^(e - 16383 - 63): integer part and the fraction as a 128-bit fixed point.
    let shift = e - 16383 - 63;
    let (int, frac_half, frac_nonzero): (u128, i8, bool) = if shift >= 0 {
        if shift > 64 {
            return None;
        }
        (u128::from(v.mant) << shift, 0, false)
    } else if shift <= -128 {
        (0, -1, true)
    } else {
        let s = (-shift) as u32;
        let int = if s >= 128 { 0 } else { u128::from(v.mant) >> s };
        let rem = u128::from(v.mant) & ((1u128 << s.min(127)) - 1);
        let half = 1u128 << (s - 1).min(127);
        let cmp = if s > 64 && rem == 0 {
            -1
        } else {
            (rem.cmp(&half)) as i8
        };
        (int, cmp, rem != 0)
    };
    let round_up = match rc {
        0 => frac_half > 0 || (frac_half == 0 && frac_nonzero && int & 1 == 1),
        1 => neg && frac_nonzero,
        2 => !neg && frac_nonzero,
        _ => false,
    };
    let mag = int + u128::from(round_up);
    let limit = 1u128 << (bits - 1);
    if (!neg && mag >= limit) || (neg && mag > limit) {
        return None;
    }
    let r = if neg {
        (mag as u64).wrapping_neg()
    } else {
        mag as u64
    };
    Some(r & (u64::MAX >> (64 - bits)))
}

fn consts(i: u8) -> F80 {
    // FLD1, FLDL2T, FLDL2E, FLDPI, FLDLG2, FLDLN2, FLDZ (80-bit encodings, round to nearest).
    match i {
        0 => F80 {
            mant: 1 << 63,
            se: 0x3fff,
        },
        1 => F80 {
            mant: 0xd49a_784b_cd1b_8afe,
            se: 0x4000,
        },
        2 => F80 {
            mant: 0xb8aa_3b29_5c17_f0bc,
            se: 0x3fff,
        },
        3 => F80 {
            mant: 0xc90f_daa2_2168_c235,
            se: 0x4000,
        },
        4 => F80 {
            mant: 0x9a20_9a84_fbcf_f799,
            se: 0x3ffd,
        },
        5 => F80 {
            mant: 0xb172_17f7_d1cf_79ac,
            se: 0x3ffe,
        },
        _ => F80 { mant: 0, se: 0 },
    }
}

fn x87(c: &mut Cpu, op: &Op, io: &dyn ExitHandler) -> Res {
    let kind = op.x;
    c.x87_check(kind == k::FWAIT)?;
    let fmt = op.x2 & 0xf;
    let ak = op.x2 >> 4;
    let i = op.rm & 7;
    match kind {
        k::FWAIT | k::FNOP | k::FEMMS => {}
        k::FNINIT => c.fninit(),
        k::FNCLEX => c.fpu.fsw &= !0x80ff,
        k::FNSTCW => {
            let v = u64::from(c.fpu.fcw);
            c.write_op::<W>(op, v, io)?;
        }
        k::FLDCW => {
            let v = c.read_op::<W>(op, io)? as u16;
            c.fpu.fcw = v | 0x40;
        }
        k::FNSTSW_M => {
            let v = u64::from(c.fsw_full());
            c.write_op::<W>(op, v, io)?;
        }
        k::FNSTSW_AX => {
            let v = u64::from(c.fsw_full());
            c.regs[0] = (c.regs[0] & !0xffff) | v;
        }
        k::FLD_M => {
            let v = c.x87_load_mem(op, fmt, io)?;
            c.fpush(v);
        }
        k::FLD_ST => {
            let v = c.st(i);
            c.fpush(v);
        }
        k::FST_M | k::FSTP_M => {
            let v = c.st(0);
            c.x87_store_mem(op, fmt, v, io)?;
            if kind == k::FSTP_M {
                c.fpop();
            }
        }
        k::FST_ST | k::FSTP_ST => {
            let v = c.st(0);
            c.set_st(i, v);
            if kind == k::FSTP_ST {
                c.fpop();
            }
        }
        k::FXCH => {
            let a = c.st(0);
            let b = c.st(i);
            c.set_st(0, b);
            c.set_st(i, a);
        }
        k::ARITH_M => {
            let m = c.x87_load_mem(op, fmt, io)?;
            let a = c.st(0);
            let r = arith(ak, to_f64(a), to_f64(m));
            c.set_st(0, from_f64(r));
        }
        k::ARITH_ST0_STI => {
            let a = c.st(0);
            let b = c.st(i);
            let r = arith(ak, to_f64(a), to_f64(b));
            c.set_st(0, from_f64(r));
        }
        k::ARITH_STI_ST0 | k::ARITH_STI_ST0_P => {
            let a = c.st(i);
            let b = c.st(0);
            let r = arith(ak, to_f64(a), to_f64(b));
            c.set_st(i, from_f64(r));
            if kind == k::ARITH_STI_ST0_P {
                c.fpop();
            }
        }
        k::FCHS => {
            let mut v = c.st(0);
            v.se ^= 0x8000;
            c.set_st(0, v);
        }
        k::FABS => {
            let mut v = c.st(0);
            v.se &= 0x7fff;
            c.set_st(0, v);
        }
        k::FSQRT => {
            let v = to_f64(c.st(0));
            c.set_st(
                0,
                if v < 0.0 {
                    INDEFINITE
                } else {
                    from_f64(v.sqrt())
                },
            );
        }
        k::FRNDINT => {
            let v = c.st(0);
            let rc = u32::from(c.fpu.fcw >> 10) & 3;
            let f = to_f64(v);
            c.set_st(
                0,
                from_f64(crate::softfp::round(f, [0, 1, 2, 3][rc as usize])),
            );
        }
        k::FCONST => c.fpush(consts(i)),
        k::FCOM_M | k::FCOM_ST => {
            let b = if kind == k::FCOM_M {
                c.x87_load_mem(op, fmt, io)?
            } else {
                c.st(i)
            };
            let a = c.st(0);
            let (c0, c2, c3) = c.fcompare(a, b);
            c.set_cc(c0, c2, c3);
            for _ in 0..(ak & 3) {
                c.fpop();
            }
        }
        k::FCOMI => {
            let a = c.st(0);
            let b = c.st(i);
            let (cf, pf, zf) = c.fcompare(a, b);
            c.set_status_flags((zf as u64) << 6 | (pf as u64) << 2 | cf as u64);
            if ak & 1 != 0 {
                c.fpop();
            }
        }
        k::FTST => {
            let a = c.st(0);
            let (c0, c2, c3) = c.fcompare(a, F80::default());
            c.set_cc(c0, c2, c3);
        }
        k::FXAM => {
            let p = c.st_phys(0);
            let v = c.fpu.st[p];
            let sign = v.se & 0x8000 != 0;
            let e = v.se & 0x7fff;
            let (c3, c2, c0) = if c.st_empty(0) {
                (true, false, true)
            } else if e == 0 && v.mant == 0 {
                (true, false, false)
            } else if e == 0x7fff {
                if v.mant << 1 == 0 {
                    (false, true, true)
                } else {
                    (false, false, true)
                }
            } else if e == 0 {
                (true, true, false)
            } else if v.mant >> 63 == 0 {
                (false, false, false)
            } else {
                (false, true, false)
            };
            c.set_cc(c0, c2, c3);
            if sign {
                c.fpu.fsw |= C1;
            }
        }
        k::FFREE => {
            let p = c.st_phys(i);
            c.fpu.ftw |= 3 << (2 * p);
        }
        k::FINCSTP => c.fpu.top = (c.fpu.top + 1) & 7,
        k::FDECSTP => c.fpu.top = c.fpu.top.wrapping_sub(1) & 7,
        k::FSCALE => {
            let a = to_f64(c.st(0));
            let b = to_f64(c.st(1)).trunc();
            c.set_st(0, from_f64(a * 2f64.powf(b)));
        }
        k::FCMOV => {
            if c.cond(ak) {
                let v = c.st(i);
                c.set_st(0, v);
            }
        }
        k::FUNARY => {
            let a = to_f64(c.st(0));
            match ak {
                0 => c.set_st(0, from_f64(a.exp2() - 1.0)),
                1 => {
                    c.set_st(0, from_f64(a.sin()));
                    c.fpu.fsw &= !C2;
                }
                2 => {
                    c.set_st(0, from_f64(a.cos()));
                    c.fpu.fsw &= !C2;
                }
                3 => {
                    c.set_st(0, from_f64(a.tan()));
                    c.fpu.fsw &= !C2;
                    c.fpush(consts(0));
                }
                _ => {
                    c.set_st(0, from_f64(a.sin()));
                    c.fpush(from_f64(a.cos()));
                    c.fpu.fsw &= !C2;
                }
            }
        }
        k::FBINARY_POP => {
            // ST(1) = f(ST(1), ST(0)); pop.
            let a = to_f64(c.st(0));
            let b = to_f64(c.st(1));
            let r = match ak {
                0 => b * a.log2(),
                1 => b * (a + 1.0).log2(),
                _ => b.atan2(a),
            };
            c.set_st(1, from_f64(r));
            c.fpop();
        }
        k::FPREM => {
            let a = to_f64(c.st(0));
            let b = to_f64(c.st(1));
            let q = if ak == 1 {
                (a / b).round_ties_even()
            } else {
                (a / b).trunc()
            };
            let r = a - q * b;
            c.set_st(0, from_f64(r));
            let qi = q.abs() as u64;
            c.set_cc(qi & 2 != 0, false, qi & 4 != 0);
            if qi & 1 != 0 {
                c.fpu.fsw |= C1;
            }
        }
        k::FXTRACT => {
            let v = c.st(0);
            let e = i32::from(v.se & 0x7fff) - 16383;
            c.set_st(0, from_f64(f64::from(e)));
            c.fpush(F80 {
                mant: v.mant,
                se: (v.se & 0x8000) | 0x3fff,
            });
        }
        k::FNSTENV | k::FNSAVE => {
            let env = c.fenv_image(op.x2 != 0);
            let len = if kind == k::FNSAVE {
                env.len() + 80
            } else {
                env.len()
            };
            let mut buf = [0u8; 108];
            buf[..env.len()].copy_from_slice(&env);
            if kind == k::FNSAVE {
                for j in 0..8u8 {
                    let r = c.fpu.st[c.st_phys(j)];
                    let o = env.len() + 10 * j as usize;
                    buf[o..o + 8].copy_from_slice(&r.mant.to_le_bytes());
                    buf[o + 8..o + 10].copy_from_slice(&r.se.to_le_bytes());
                }
            }
            let lin = c.lin_off_w(op.seg, c.ea(op), len as u64)?;
            c.write_bytes(lin, &buf[..len], c.tlb_sel != 0, io)?;
            // FNSTENV masks all exceptions afterwards; FNSAVE reinitializes.
            if kind == k::FNSAVE {
                c.fninit();
            } else {
                c.fpu.fcw |= 0x3f;
            }
        }
        k::FLDENV | k::FRSTOR => {
            let wide = op.x2 != 0;
            let elen = if wide { 28 } else { 14 };
            let len = if kind == k::FRSTOR { elen + 80 } else { elen };
            let mut buf = [0u8; 108];
            let lin = c.lin_off_r(op.seg, c.ea(op), len as u64)?;
            c.read_bytes(lin, &mut buf[..len], c.tlb_sel != 0, io)?;
            c.load_fenv(&buf[..elen], wide);
            if kind == k::FRSTOR {
                for j in 0..8u8 {
                    let o = elen + 10 * j as usize;
                    let r = F80 {
                        mant: u64::from_le_bytes(buf[o..o + 8].try_into().unwrap_or_default()),
                        se: u16::from_le_bytes([buf[o + 8], buf[o + 9]]),
                    };
                    let p = c.st_phys(j);
                    c.fpu.st[p] = r;
                }
            }
        }
        _ => return crate::cpu::ud(),
    }
    Ok(())
}

impl Cpu {
    /// FNSTENV image: 28 bytes (32-bit operand size) or 14 bytes (16-bit), protected-mode
    /// layout (real mode uses the same layout here).
    fn fenv_image(&self, wide: bool) -> Vec<u8> {
        let f = &self.fpu;
        let vals = [
            u32::from(f.fcw),
            u32::from(self.fsw_full()),
            u32::from(f.ftw),
            f.fip as u32,
            u32::from(f.fcs) | (u32::from(f.fop) << 16),
            f.fdp as u32,
            u32::from(f.fds),
        ];
        let mut out = Vec::with_capacity(28);
        for v in vals {
            if wide {
                let v = if out.len() < 12 { v | 0xffff_0000 } else { v };
                out.extend_from_slice(&v.to_le_bytes());
            } else {
                out.extend_from_slice(&(v as u16).to_le_bytes());
            }
        }
        out
    }

    fn load_fenv(&mut self, b: &[u8], wide: bool) {
        let get = |i: usize| -> u32 {
            if wide {
                u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
            } else {
                u32::from(u16::from_le_bytes([b[2 * i], b[2 * i + 1]]))
            }
        };
        self.fpu.fcw = get(0) as u16;
        let fsw = get(1) as u16;
        self.fpu.top = ((fsw >> 11) & 7) as u8;
        self.fpu.fsw = fsw & !(7 << 11);
        self.fpu.ftw = get(2) as u16;
        self.fpu.fip = u64::from(get(3));
        self.fpu.fdp = u64::from(get(5));
    }
}

fn st_index(r: Register) -> Option<u8> {
    let v = r as u32;
    let s0 = Register::ST0 as u32;
    (s0..s0 + 8).contains(&v).then(|| (v - s0) as u8)
}

/// Translates an x87 instruction, or `None`.
pub(crate) fn translate(ins: &Instruction, op: &mut Op, _bitness: u32) -> Option<Handler> {
    let m = ins.mnemonic();
    let mem = (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Memory);
    let msz = if mem { ins.memory_size().size() } else { 0 };
    let regs: Vec<u8> = (0..ins.op_count())
        .filter(|&i| ins.op_kind(i) == OpKind::Register)
        .filter_map(|i| st_index(ins.op_register(i)))
        .collect();
    let float_fmt = match msz {
        4 => M32F,
        8 => M64F,
        _ => M80F,
    };
    let int_fmt = match msz {
        2 => M16I,
        4 => M32I,
        _ => M64I,
    };
    let set = |op: &mut Op, kind: u8, x2: u8, st: u8| {
        op.x = kind;
        op.x2 = x2;
        op.rm = st;
    };
    let arith_kind = |m: Mn| -> Option<u8> {
        Some(match m {
            Mn::Fadd | Mn::Faddp | Mn::Fiadd => ADD,
            Mn::Fmul | Mn::Fmulp | Mn::Fimul => MUL,
            Mn::Fsub | Mn::Fsubp | Mn::Fisub => SUB,
            Mn::Fsubr | Mn::Fsubrp | Mn::Fisubr => SUBR,
            Mn::Fdiv | Mn::Fdivp | Mn::Fidiv => DIV,
            Mn::Fdivr | Mn::Fdivrp | Mn::Fidivr => DIVR,
            _ => return None,
        })
    };
    match m {
        Mn::Fninit => set(op, k::FNINIT, 0, 0),
        Mn::Fnclex => set(op, k::FNCLEX, 0, 0),
        Mn::Wait => set(op, k::FWAIT, 0, 0),
        Mn::Fnop => set(op, k::FNOP, 0, 0),
        Mn::Fnstcw => set(op, k::FNSTCW, 0, 0),
        Mn::Fldcw => set(op, k::FLDCW, 0, 0),
        Mn::Fnstsw => {
            if mem {
                set(op, k::FNSTSW_M, 0, 0)
            } else {
                set(op, k::FNSTSW_AX, 0, 0)
            }
        }
        Mn::Fld => {
            if mem {
                set(op, k::FLD_M, float_fmt, 0)
            } else {
                set(op, k::FLD_ST, 0, *regs.first()?)
            }
        }
        Mn::Fild => set(op, k::FLD_M, int_fmt, 0),
        Mn::Fst | Mn::Fstp => {
            let pop = m == Mn::Fstp;
            if mem {
                set(op, if pop { k::FSTP_M } else { k::FST_M }, float_fmt, 0)
            } else {
                set(
                    op,
                    if pop { k::FSTP_ST } else { k::FST_ST },
                    0,
                    *regs.first()?,
                )
            }
        }
        Mn::Fist => set(op, k::FST_M, int_fmt, 0),
        Mn::Fistp => set(op, k::FSTP_M, int_fmt, 0),
        Mn::Fxch => set(op, k::FXCH, 0, regs.get(1).copied().unwrap_or(1)),
        Mn::Fadd | Mn::Fmul | Mn::Fsub | Mn::Fsubr | Mn::Fdiv | Mn::Fdivr => {
            let a = arith_kind(m)? << 4;
            if mem {
                set(op, k::ARITH_M, a | float_fmt, 0)
            } else if regs.first() == Some(&0) {
                set(op, k::ARITH_ST0_STI, a, *regs.get(1)?)
            } else {
                set(op, k::ARITH_STI_ST0, a, *regs.first()?)
            }
        }
        Mn::Faddp | Mn::Fmulp | Mn::Fsubp | Mn::Fsubrp | Mn::Fdivp | Mn::Fdivrp => {
            let a = arith_kind(m)? << 4;
            set(
                op,
                k::ARITH_STI_ST0_P,
                a,
                regs.first().copied().unwrap_or(1),
            )
        }
        Mn::Fiadd | Mn::Fimul | Mn::Fisub | Mn::Fisubr | Mn::Fidiv | Mn::Fidivr => {
            let a = arith_kind(m)? << 4;
            set(op, k::ARITH_M, a | int_fmt, 0)
        }
        Mn::Fchs => set(op, k::FCHS, 0, 0),
        Mn::Fabs => set(op, k::FABS, 0, 0),
        Mn::Fsqrt => set(op, k::FSQRT, 0, 0),
        Mn::Frndint => set(op, k::FRNDINT, 0, 0),
        Mn::Fld1 => set(op, k::FCONST, 0, 0),
        Mn::Fldl2t => set(op, k::FCONST, 0, 1),
        Mn::Fldl2e => set(op, k::FCONST, 0, 2),
        Mn::Fldpi => set(op, k::FCONST, 0, 3),
        Mn::Fldlg2 => set(op, k::FCONST, 0, 4),
        Mn::Fldln2 => set(op, k::FCONST, 0, 5),
        Mn::Fldz => set(op, k::FCONST, 0, 6),
        Mn::Fcom | Mn::Fcomp | Mn::Fucom | Mn::Fucomp | Mn::Ficom | Mn::Ficomp => {
            let pops = matches!(m, Mn::Fcomp | Mn::Fucomp | Mn::Ficomp) as u8;
            if mem {
                let fmt = if matches!(m, Mn::Ficom | Mn::Ficomp) {
                    int_fmt
                } else {
                    float_fmt
                };
                set(op, k::FCOM_M, (pops << 4) | fmt, 0)
            } else {
                set(op, k::FCOM_ST, pops << 4, regs.get(1).copied().unwrap_or(1))
            }
        }
        Mn::Fcompp | Mn::Fucompp => set(op, k::FCOM_ST, 2 << 4, 1),
        Mn::Fcomi | Mn::Fucomi | Mn::Fcomip | Mn::Fucomip => {
            let pop = matches!(m, Mn::Fcomip | Mn::Fucomip) as u8;
            set(op, k::FCOMI, pop << 4, *regs.get(1)?)
        }
        Mn::Ftst => set(op, k::FTST, 0, 0),
        Mn::Fxam => set(op, k::FXAM, 0, 0),
        Mn::Ffree | Mn::Ffreep => set(op, k::FFREE, 0, *regs.first()?),
        Mn::Fincstp => set(op, k::FINCSTP, 0, 0),
        Mn::Fdecstp => set(op, k::FDECSTP, 0, 0),
        Mn::Fscale => set(op, k::FSCALE, 0, 0),
        Mn::Fcmovb
        | Mn::Fcmove
        | Mn::Fcmovbe
        | Mn::Fcmovu
        | Mn::Fcmovnb
        | Mn::Fcmovne
        | Mn::Fcmovnbe
        | Mn::Fcmovnu => {
            let cc: u8 = match m {
                Mn::Fcmovb => 2,
                Mn::Fcmove => 4,
                Mn::Fcmovbe => 6,
                Mn::Fcmovu => 10,
                Mn::Fcmovnb => 3,
                Mn::Fcmovne => 5,
                Mn::Fcmovnbe => 7,
                _ => 11,
            };
            set(op, k::FCMOV, cc << 4, *regs.get(1)?)
        }
        Mn::F2xm1 => set(op, k::FUNARY, 0, 0),
        Mn::Fsin => set(op, k::FUNARY, 1 << 4, 0),
        Mn::Fcos => set(op, k::FUNARY, 2 << 4, 0),
        Mn::Fptan => set(op, k::FUNARY, 3 << 4, 0),
        Mn::Fsincos => set(op, k::FUNARY, 4 << 4, 0),
        Mn::Fyl2x => set(op, k::FBINARY_POP, 0, 0),
        Mn::Fyl2xp1 => set(op, k::FBINARY_POP, 1 << 4, 0),
        Mn::Fpatan => set(op, k::FBINARY_POP, 2 << 4, 0),
        Mn::Fprem => set(op, k::FPREM, 0, 0),
        Mn::Fprem1 => set(op, k::FPREM, 1 << 4, 0),
        Mn::Fxtract => set(op, k::FXTRACT, 0, 0),
        Mn::Fnstenv | Mn::Fnsave | Mn::Fldenv | Mn::Frstor => {
            let kind = match m {
                Mn::Fnstenv => k::FNSTENV,
                Mn::Fnsave => k::FNSAVE,
                Mn::Fldenv => k::FLDENV,
                _ => k::FRSTOR,
            };
            // 32-bit (28-byte) environment unless the operand size is 16.
            let wide = !matches!(
                ins.memory_size(),
                iced_x86::MemorySize::FpuEnv14 | iced_x86::MemorySize::FpuState94
            );
            set(op, kind, wide as u8, 0)
        }
        Mn::Emms => set(op, k::FEMMS, 0, 0),
        _ => return None,
    }
    Some(x87)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzzer regression (`execute`, FLD of a denormal double): the smallest denormal
    /// overflowed the normalizing shift (a panic with overflow checks), and every denormal was
    /// loaded at half its value.
    #[test]
    fn denormal_doubles_convert_exactly_both_ways() {
        for (bits, exp) in [
            (1u64, 16383 - 1074),
            (1 << 51, 16383 - 1023),
            (0x3, 16383 - 1073),
        ] {
            for sign in [0u64, 1 << 63] {
                let f = f64::from_bits(sign | bits);
                let v = from_f64(f);
                assert_eq!(v.mant >> 63, 1, "{bits:#x}: normalized");
                assert_eq!(v.mant << 1 >> 1 == 0, bits.is_power_of_two(), "{bits:#x}");
                assert_eq!(v.se & 0x7fff, exp as u16, "{bits:#x}");
                assert_eq!(v.se >> 15, (sign >> 63) as u16);
                assert_eq!(to_f64(v).to_bits(), f.to_bits(), "{bits:#x} round trip");
            }
        }
    }

    /// Narrowing rounds to nearest-even in integers, at both ends of f64's range, whatever the
    /// host's floating-point library does with extreme powers of two.
    #[test]
    fn narrowing_rounds_to_nearest_even_at_every_scale() {
        let one = |se: u16, mant: u64| to_f64(F80 { mant, se }).to_bits();
        // 1 + 2^-53 (a tie) -> 1.0; 1 + 3*2^-54 -> 1 + 2^-52.
        assert_eq!(one(16383, (1 << 63) | (1 << 10)), 1f64.to_bits());
        assert_eq!(one(16383, (1 << 63) | (3 << 9)), 1f64.to_bits() + 1);
        // All ones rounds up into the next binade.
        assert_eq!(one(16383, u64::MAX), 2f64.to_bits());
        // Largest finite rounds up to infinity; 2^1024 is infinity.
        assert_eq!(one(16383 + 1023, u64::MAX), f64::INFINITY.to_bits());
        assert_eq!(one(16383 + 1024, 1 << 63), f64::INFINITY.to_bits());
        // Half the smallest denormal is a tie with zero (even) -> 0; a bit more -> 2^-1074.
        assert_eq!(one(16383 - 1075, 1 << 63), 0);
        assert_eq!(one(16383 - 1075, (1 << 63) | 1), 1);
        // Far below the range: zero, with the sign kept.
        assert_eq!(one(0x8000 | 1, 1 << 63), (-0f64).to_bits());
        // The largest denormal plus a rounding carry becomes the smallest normal.
        assert_eq!(one(16383 - 1023, u64::MAX), 1 << 52);
        // A value in the middle of the range is exact.
        let x = 12345.678_f64;
        assert_eq!(to_f64(from_f64(x)).to_bits(), x.to_bits());
    }
}
