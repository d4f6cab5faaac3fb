//! The i440FX host bridge (00:00.0) and the PIIX3 PCI-to-ISA bridge (00:01.0).
//!
//! Spec: Intel 440FX PMC datasheet (PAM0-6 at 0x59-0x5f, SMRAM at 0x72) and Intel
//! 82371SB PIIX3 datasheet (PIRQ route control at 0x60-0x63). Registers beyond the header
//! are kept as plain bytes with their documented reset values; only what firmware and guests
//! read back matters here.

use crate::PciFunction;
use crate::config::ConfigHeader;

/// Where the host bridge sits.
pub const HOST_BRIDGE_BDF: crate::Bdf = crate::Bdf::new(0, 0);
/// Where the ISA bridge sits.
pub const ISA_BRIDGE_BDF: crate::Bdf = crate::Bdf::new(1, 0);

/// First PAM register.
pub const PAM0: usize = 0x59;
/// SMRAM control register.
pub const SMRAM: usize = 0x72;
/// First PIRQ route control register.
pub const PIRQRC: usize = 0x60;

/// Device-specific configuration bytes 0x40-0xff with a write mask per byte.
#[derive(Debug, Clone)]
struct Extended {
    bytes: [u8; 0xc0],
    writable: [u8; 0xc0],
}

impl Extended {
    fn new() -> Self {
        Self {
            bytes: [0; 0xc0],
            writable: [0; 0xc0],
        }
    }

    fn set(&mut self, offset: usize, value: u8, writable: u8) {
        if let Some(i) = offset.checked_sub(0x40).filter(|&i| i < 0xc0) {
            self.bytes[i] = value;
            self.writable[i] = writable;
        }
    }

    fn get(&self, offset: usize) -> u8 {
        offset
            .checked_sub(0x40)
            .and_then(|i| self.bytes.get(i))
            .copied()
            .unwrap_or(0)
    }

    fn read(&self, offset: u16) -> u32 {
        let o = usize::from(offset);
        u32::from_le_bytes([
            self.get(o),
            self.get(o + 1),
            self.get(o + 2),
            self.get(o + 3),
        ])
    }

    fn write(&mut self, offset: u16, value: u32, mask: u32) {
        let v = value.to_le_bytes();
        let m = mask.to_le_bytes();
        for k in 0..4 {
            if let Some(i) = (usize::from(offset) + k)
                .checked_sub(0x40)
                .filter(|&i| i < 0xc0)
            {
                let w = self.writable[i] & m[k];
                self.bytes[i] = (self.bytes[i] & !w) | (v[k] & w);
            }
        }
    }
}

/// The i440FX PCI and memory controller (host bridge).
#[derive(Debug, Clone)]
pub struct I440fxHost {
    header: ConfigHeader,
    regs: Extended,
}

impl Default for I440fxHost {
    fn default() -> Self {
        Self::new()
    }
}

impl I440fxHost {
    /// A host bridge in its reset state.
    pub fn new() -> Self {
        let mut regs = Extended::new();
        // PMCCFG, DETURBO, DBC, DRAMC, DRAMT: plain read-write.
        for o in [0x50, 0x51, 0x53, 0x55, 0x56, 0x57, 0x58] {
            regs.set(o, 0, 0xff);
        }
        for pam in PAM0..PAM0 + 7 {
            regs.set(pam, 0, 0x33);
        }
        // DRAM row boundaries.
        for o in 0x60..0x68 {
            regs.set(o, 0x01, 0xff);
        }
        regs.set(SMRAM, 0x02, 0x78);
        Self {
            header: ConfigHeader::new(0x8086, 0x1237, 0x06_00_00, 0x02),
            regs,
        }
    }

    /// The PAM registers (PAM0 controls 0xf0000-0xfffff, PAM1-6 16 KiB pairs from 0xc0000).
    /// They only record what the guest asked: the machine keeps RAM there.
    pub fn pam(&self) -> [u8; 7] {
        std::array::from_fn(|i| self.regs.get(PAM0 + i))
    }
}

impl PciFunction for I440fxHost {
    fn config_read(&mut self, offset: u16) -> u32 {
        if offset < 0x40 {
            self.header.read(offset)
        } else {
            self.regs.read(offset)
        }
    }

    fn config_write(&mut self, offset: u16, value: u32, mask: u32) {
        if offset < 0x40 {
            self.header.write(offset, value, mask);
        } else {
            let locked = self.regs.get(SMRAM) & 0x10 != 0;
            self.regs.write(offset, value, mask);
            if locked {
                // D_LCK: SMRAM stays as it was until reset.
                self.regs.bytes[SMRAM - 0x40] |= 0x10;
            }
        }
    }
}

/// The PIIX3 PCI-to-ISA bridge (function 0 of the multi-function south bridge).
#[derive(Debug, Clone)]
pub struct Piix3Isa {
    header: ConfigHeader,
    regs: Extended,
}

impl Default for Piix3Isa {
    fn default() -> Self {
        Self::new()
    }
}

impl Piix3Isa {
    /// An ISA bridge in its reset state (PIRQ routing disabled).
    pub fn new() -> Self {
        let mut regs = Extended::new();
        // ISA clock divisor, X-bus chip select, PIRQ routes, top of memory, misc status,
        // motherboard IRQ/DMA routes, APIC base, deterministic latency, SMI control/enables.
        for (o, v, w) in [
            (0x4c, 0x4d, 0x7f),
            (0x4e, 0x03, 0xff),
            (0x4f, 0x00, 0xff),
            (0x60, 0x80, 0x8f),
            (0x61, 0x80, 0x8f),
            (0x62, 0x80, 0x8f),
            (0x63, 0x80, 0x8f),
            (0x69, 0x02, 0xfe),
            (0x6a, 0x00, 0xff),
            (0x70, 0x80, 0xcf),
            (0x76, 0x0c, 0x8f),
            (0x77, 0x0c, 0x8f),
            (0x78, 0x02, 0xff),
            (0x80, 0x00, 0x7f),
            (0x82, 0x00, 0x0f),
            (0xa0, 0x08, 0x1f),
            (0xa2, 0x00, 0xff),
            (0xa3, 0x00, 0xff),
        ] {
            regs.set(o, v, w);
        }
        Self {
            header: ConfigHeader::new(0x8086, 0x7000, 0x06_01_00, 0x00).multi_function(),
            regs,
        }
    }

    /// The ISA IRQ PIRQ `n` (0 = PIRQA .. 3 = PIRQD) is routed to, if routing is enabled.
    pub fn pirq_route(&self, n: usize) -> Option<u8> {
        let v = self.regs.get(PIRQRC + n.min(3));
        let irq = v & 0x0f;
        // Bit 7 disables routing; IRQ 0-2, 8 and 13 are reserved.
        (v & 0x80 == 0 && !matches!(irq, 0..=2 | 8 | 13)).then_some(irq)
    }
}

impl PciFunction for Piix3Isa {
    fn config_read(&mut self, offset: u16) -> u32 {
        if offset < 0x40 {
            self.header.read(offset)
        } else {
            self.regs.read(offset)
        }
    }

    fn config_write(&mut self, offset: u16, value: u32, mask: u32) {
        if offset < 0x40 {
            self.header.write(offset, value, mask);
        } else {
            self.regs.write(offset, value, mask);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bridge_identity_and_pam() {
        let mut h = I440fxHost::new();
        assert_eq!(h.config_read(0), 0x1237_8086);
        assert_eq!(h.config_read(8) >> 8, 0x06_00_00);
        // SeaBIOS's make_bios_writable: PAM1-6 = 0x33 (bytes 0x5a-0x5f), PAM0 (0x59) = 0x30.
        h.config_write(0x58, 0x3333_0000, 0xffff_0000);
        h.config_write(0x5c, 0x3333_3333, 0xffff_ffff);
        h.config_write(0x58, 0x0000_3000, 0x0000_ff00);
        assert_eq!(h.pam(), [0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33]);
        h.config_write(0x58, 0xffff_ffff, 0x0000_ff00);
        assert_eq!(h.pam()[0], 0x33, "reserved PAM bits stay clear");
        assert_eq!(h.config_read(0x58) >> 8 & 0xff, 0x33);
    }

    #[test]
    fn smram_lock_sticks() {
        let mut h = I440fxHost::new();
        assert_eq!(h.config_read(0x70) >> 16 & 0xff, 0x02);
        h.config_write(0x70, 0x0010_0000, 0x00ff_0000);
        h.config_write(0x70, 0x0000_0000, 0x00ff_0000);
        assert_eq!(h.config_read(0x70) >> 16 & 0x10, 0x10);
    }

    #[test]
    fn isa_bridge_is_multifunction_with_pirq_routes() {
        let mut i = Piix3Isa::new();
        assert_eq!(i.config_read(0), 0x7000_8086);
        assert_eq!(i.config_read(0x0c) >> 16 & 0x80, 0x80);
        assert_eq!(i.pirq_route(0), None);
        // SeaBIOS: PIRQA-D -> 10, 10, 11, 11.
        i.config_write(0x60, 0x0b0b_0a0a, 0xffff_ffff);
        assert_eq!(
            [0, 1, 2, 3].map(|n| i.pirq_route(n)),
            [Some(10), Some(10), Some(11), Some(11)]
        );
        assert_eq!(i.config_read(0x60), 0x0b0b_0a0a);
        i.config_write(0x60, 0x8d, 0xff);
        assert_eq!(i.pirq_route(0), None, "disabled");
        i.config_write(0x60, 0x0d, 0xff);
        assert_eq!(i.pirq_route(0), None, "IRQ 13 is reserved");
    }
}
