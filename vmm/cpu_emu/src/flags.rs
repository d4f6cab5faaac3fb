//! Lazy arithmetic flags.
//!
//! ALU instructions do not compute RFLAGS. They record two words:
//! - `lf_res`: the result, sign-extended from the operand size to 64 bits, so ZF is
//!   `lf_res == 0` and SF is bit 63, whatever the size;
//! - `lf_aux`: bit 63 = CF, bit 62 = CF xor OF (for add/sub: the carries out of the two top
//!   bits of the operand), bit 3 = AF (the carry out of bit 3), bit 61 = an SF correction and
//!   bits 15:8 a parity correction, both zero after ALU operations and used only when flags are
//!   written explicitly (POPF, SAHF, IRET), where the result word cannot express every
//!   combination (ZF=1 with SF=1, for example).
//!
//! Conditions (`Jcc`, `SETcc`, `CMOVcc`) are evaluated straight from the two words; RFLAGS is
//! materialized only when read as a whole.

use crate::cpu::Cpu;
use crate::size::Sz;

pub(crate) const CF: u64 = 1 << 0;
pub(crate) const PF: u64 = 1 << 2;
pub(crate) const AF: u64 = 1 << 4;
pub(crate) const ZF: u64 = 1 << 6;
pub(crate) const SF: u64 = 1 << 7;
pub(crate) const TF: u64 = 1 << 8;
pub(crate) const IF: u64 = 1 << 9;
pub(crate) const DF: u64 = 1 << 10;
pub(crate) const OF: u64 = 1 << 11;
pub(crate) const IOPL: u64 = 3 << 12;
pub(crate) const NT: u64 = 1 << 14;
pub(crate) const RF: u64 = 1 << 16;
pub(crate) const VM: u64 = 1 << 17;
pub(crate) const AC: u64 = 1 << 18;
pub(crate) const VIF: u64 = 1 << 19;
pub(crate) const VIP: u64 = 1 << 20;
pub(crate) const ID: u64 = 1 << 21;
/// The six status flags kept lazily.
pub(crate) const STATUS: u64 = CF | PF | AF | ZF | SF | OF;

const AUX_CF: u64 = 1 << 63;
const AUX_OFX: u64 = 1 << 62;
const AUX_SFD: u64 = 1 << 61;
const AUX_AF: u64 = 1 << 3;

/// Packs explicit CF/OF/AF into an aux word.
#[inline(always)]
pub(crate) fn pack(cf: bool, of: bool, af: bool) -> u64 {
    ((cf as u64) << 63) | (((cf ^ of) as u64) << 62) | ((af as u64) << 3)
}

impl Cpu {
    /// Records the flags of `a + b (+ carry) = r`.
    #[inline(always)]
    pub(crate) fn flags_add<S: Sz>(&mut self, a: u64, b: u64, r: u64) {
        let cout = (a & b) | ((a | b) & !r);
        self.lf_aux = ((cout << (64 - S::BITS)) & (AUX_CF | AUX_OFX)) | (cout & AUX_AF);
        self.lf_res = S::sx(r);
    }

    /// Records the flags of `a - b (- borrow) = r`.
    #[inline(always)]
    pub(crate) fn flags_sub<S: Sz>(&mut self, a: u64, b: u64, r: u64) {
        let bout = (!a & b) | ((!a | b) & r);
        self.lf_aux = ((bout << (64 - S::BITS)) & (AUX_CF | AUX_OFX)) | (bout & AUX_AF);
        self.lf_res = S::sx(r);
    }

    /// Records the flags of a logical operation (CF = OF = 0; AF is left 0).
    #[inline(always)]
    pub(crate) fn flags_logic<S: Sz>(&mut self, r: u64) {
        self.lf_aux = 0;
        self.lf_res = S::sx(r);
    }

    /// Records a result with explicit CF/OF/AF (shifts, multiplies, bit operations).
    #[inline(always)]
    pub(crate) fn flags_res_cf_of<S: Sz>(&mut self, r: u64, cf: bool, of: bool, af: bool) {
        self.lf_aux = pack(cf, of, af);
        self.lf_res = S::sx(r);
    }

    #[inline(always)]
    pub(crate) fn cf(&self) -> bool {
        self.lf_aux & AUX_CF != 0
    }
    #[inline(always)]
    pub(crate) fn of(&self) -> bool {
        (self.lf_aux ^ (self.lf_aux << 1)) & AUX_CF != 0
    }
    #[inline(always)]
    pub(crate) fn zf(&self) -> bool {
        self.lf_res == 0
    }
    #[inline(always)]
    pub(crate) fn sf(&self) -> bool {
        (self.lf_res ^ (self.lf_aux << 2)) & (1 << 63) != 0
    }
    #[inline(always)]
    pub(crate) fn pf(&self) -> bool {
        let b = (self.lf_res ^ (self.lf_aux >> 8)) as u8;
        b.count_ones() & 1 == 0
    }
    #[inline(always)]
    pub(crate) fn af(&self) -> bool {
        self.lf_aux & AUX_AF != 0
    }

    /// Evaluates condition code `cc` (the low nibble of Jcc/SETcc/CMOVcc opcodes).
    #[inline(always)]
    pub(crate) fn cond(&self, cc: u8) -> bool {
        let r = match cc >> 1 {
            0 => self.of(),
            1 => self.cf(),
            2 => self.zf(),
            3 => self.cf() || self.zf(),
            4 => self.sf(),
            5 => self.pf(),
            6 => self.sf() != self.of(),
            _ => self.zf() || (self.sf() != self.of()),
        };
        r ^ (cc & 1 != 0)
    }

    /// The status flags as RFLAGS bits.
    #[inline]
    pub(crate) fn status_flags(&self) -> u64 {
        (self.cf() as u64)
            | ((self.pf() as u64) << 2)
            | ((self.af() as u64) << 4)
            | ((self.zf() as u64) << 6)
            | ((self.sf() as u64) << 7)
            | ((self.of() as u64) << 11)
    }

    /// Full RFLAGS.
    #[inline]
    pub(crate) fn rflags(&self) -> u64 {
        (self.flags & !STATUS) | self.status_flags() | 2
    }

    /// Writes the status flags from RFLAGS bits (other bits of `f` are ignored).
    pub(crate) fn set_status_flags(&mut self, f: u64) {
        let zf = f & ZF != 0;
        let sf = f & SF != 0;
        let pf = f & PF != 0;
        let res = if zf {
            0
        } else {
            0x100 | if sf { 1 << 63 } else { 0 }
        };
        let sfd = sf != (res >> 63 == 1);
        self.lf_res = res;
        self.lf_aux = pack(f & CF != 0, f & OF != 0, f & AF != 0)
            | if sfd { AUX_SFD } else { 0 }
            | if pf { 0 } else { 0x100 };
    }

    /// Sets only CF, keeping the other status flags.
    #[inline]
    pub(crate) fn set_cf(&mut self, cf: bool) {
        let of = self.of();
        self.lf_aux =
            (self.lf_aux & !(AUX_CF | AUX_OFX)) | ((cf as u64) << 63) | (((cf ^ of) as u64) << 62);
    }

    /// Replaces CF/OF/AF keeping ZF/SF/PF (used by INC/DEC to keep CF, and BT-style ops).
    #[inline]
    pub(crate) fn set_cf_of_af(&mut self, cf: bool, of: bool, af: bool) {
        self.lf_aux = (self.lf_aux & !(AUX_CF | AUX_OFX | AUX_AF)) | pack(cf, of, af);
    }

    /// Writes the whole RFLAGS (status flags and the rest); bit 1 is forced on.
    pub(crate) fn set_rflags_raw(&mut self, f: u64) {
        self.set_status_flags(f);
        self.flags = (f & !STATUS) | 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::{B, D, Q};

    fn cpu() -> Cpu {
        Cpu::new_for_test(guest_mem::GuestMemory::allocate(0x1000))
    }

    #[test]
    fn add_flags_match_the_definition() {
        let mut c = cpu();
        c.flags_add::<B>(0x7f, 1, 0x80);
        assert!(c.of() && c.sf() && !c.cf() && !c.zf() && c.af());
        c.flags_add::<B>(0xff, 1, 0);
        assert!(c.cf() && c.zf() && !c.of() && !c.sf() && c.pf());
        c.flags_add::<Q>(u64::MAX, 1, 0);
        assert!(c.cf() && c.zf() && !c.of());
        c.flags_add::<D>(0x8000_0000, 0x8000_0000, 0);
        assert!(c.cf() && c.of() && c.zf());
    }

    #[test]
    fn sub_flags_match_the_definition() {
        let mut c = cpu();
        c.flags_sub::<B>(0, 1, 0xff);
        assert!(c.cf() && c.sf() && !c.of() && !c.zf() && c.af());
        c.flags_sub::<B>(0x80, 1, 0x7f);
        assert!(!c.cf() && c.of() && !c.sf());
        assert!(c.cond(0x2) == c.cf()); // jb
        assert!(c.cond(0xc)); // jl: SF != OF
    }

    #[test]
    fn explicit_flags_round_trip_every_combination() {
        let mut c = cpu();
        for bits in 0..64u64 {
            let f = [CF, PF, AF, ZF, SF, OF]
                .iter()
                .enumerate()
                .filter(|(i, _)| bits >> i & 1 != 0)
                .fold(0, |a, (_, b)| a | b);
            c.set_status_flags(f);
            assert_eq!(c.status_flags(), f, "flags {f:#x}");
        }
    }
}
