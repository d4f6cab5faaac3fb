//! x87 and SSE register state.

/// An 80-bit extended-precision value as stored in the x87 registers and FXSAVE images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct F80 {
    /// Significand with the explicit integer bit (bit 63).
    pub mant: u64,
    /// Sign (bit 15) and biased exponent (bits 14:0).
    pub se: u16,
}

/// The floating-point and vector state.
#[derive(Debug, Clone)]
pub(crate) struct Fpu {
    /// ST0..ST7 by physical register number (ST(i) = `st[(top + i) & 7]`).
    pub st: [F80; 8],
    pub fcw: u16,
    /// Status word without TOP (bits 13:11 come from `top`).
    pub fsw: u16,
    pub top: u8,
    /// Full tag word (2 bits per physical register: 0 valid, 1 zero, 2 special, 3 empty).
    pub ftw: u16,
    pub fop: u16,
    pub fip: u64,
    pub fdp: u64,
    pub fcs: u16,
    pub fds: u16,
    pub xmm: [u128; 16],
    pub mxcsr: u32,
}

impl Default for Fpu {
    fn default() -> Self {
        Fpu {
            st: [F80::default(); 8],
            fcw: 0x37f,
            fsw: 0,
            top: 0,
            ftw: 0xffff,
            fop: 0,
            fip: 0,
            fdp: 0,
            fcs: 0,
            fds: 0,
            xmm: [0; 16],
            mxcsr: 0x1f80,
        }
    }
}

/// MXCSR bits a guest may set (DAZ included).
pub(crate) const MXCSR_MASK: u32 = 0xffff;
