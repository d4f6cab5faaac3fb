//! The ATA hard disk: geometry, addressing and IDENTIFY data.

use std::sync::Arc;

use disk::Disk;

/// Sectors per DRQ block READ/WRITE MULTIPLE may use.
pub const MAX_MULTIPLE: u16 = 16;
/// ATA sector size.
pub const SECTOR: u64 = 512;
/// Largest LBA28 sector count.
const LBA28_MAX: u64 = 0x0fff_ffff;

/// Transfer modes selected with SET FEATURES.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct XferModes {
    /// Multiword DMA mode selected (0-2), if any.
    pub mwdma: Option<u8>,
    /// Ultra DMA mode selected (0-5), if any.
    pub udma: Option<u8>,
}

impl XferModes {
    /// SET FEATURES 0x03: `value` is the sector count register.
    pub fn set(&mut self, value: u8) -> bool {
        match value {
            // PIO default / PIO modes: no DMA mode selected changes.
            0x00..=0x01 | 0x08..=0x0c => {}
            0x20..=0x22 => {
                self.mwdma = Some(value & 7);
                self.udma = None;
            }
            0x40..=0x45 => {
                self.udma = Some(value & 7);
                self.mwdma = None;
            }
            _ => return false,
        }
        true
    }

    fn identify_words(&self, out: &mut [u16; 256]) {
        out[63] = 0x0007 | self.mwdma.map_or(0, |m| 0x100 << m);
        out[88] = 0x003f | self.udma.map_or(0, |m| 0x100 << m);
    }
}

/// Writes `text` into IDENTIFY words as ATA strings: two characters per word, first in the
/// high byte, padded with spaces.
fn put_string(words: &mut [u16], text: &str) {
    let mut bytes: Vec<u8> = text.bytes().take(words.len() * 2).collect();
    bytes.resize(words.len() * 2, b' ');
    for (w, pair) in words.iter_mut().zip(bytes.chunks(2)) {
        *w = u16::from_be_bytes([pair[0], pair[1]]);
    }
}

/// The IDENTIFY integrity word: signature 0xa5 and a checksum making all bytes sum to zero.
fn seal(words: &mut [u16; 256]) {
    words[255] = 0x00a5;
    let sum = words
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .fold(0u8, u8::wrapping_add);
    words[255] |= u16::from(0u8.wrapping_sub(sum)) << 8;
}

/// The words as the 512 bytes the host reads (little-endian words).
pub fn identify_bytes(words: &[u16; 256]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// A hard disk on an IDE channel.
#[derive(Debug)]
pub(crate) struct HardDisk {
    pub disk: Arc<dyn Disk>,
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    /// Sectors per block for READ/WRITE MULTIPLE (0 = not set).
    pub multiple: u16,
    /// CHS translation set by INITIALIZE DEVICE PARAMETERS.
    pub heads: u8,
    pub sectors_per_track: u8,
    pub write_cache: bool,
    pub modes: XferModes,
    pub serial: String,
}

impl HardDisk {
    pub fn new(disk: Arc<dyn Disk>) -> Self {
        let sectors = disk.sector_count();
        let serial = disk.disk_id().serial();
        Self {
            disk,
            sectors,
            multiple: 0,
            heads: 16,
            sectors_per_track: 63,
            write_cache: true,
            modes: XferModes::default(),
            serial,
        }
    }

    /// Default cylinders for the 16-head, 63-sector geometry.
    fn cylinders(&self) -> u64 {
        (self.sectors / (16 * 63)).clamp(1, 16383)
    }

    /// Current CHS geometry (cylinders, heads, sectors per track).
    pub fn current_chs(&self) -> (u64, u64, u64) {
        let heads = u64::from(self.heads.max(1));
        let spt = u64::from(self.sectors_per_track.max(1));
        let cyl = (self.sectors / (heads * spt)).clamp(1, 65535);
        (cyl, heads, spt)
    }

    /// IDENTIFY DEVICE data.
    pub fn identify(&self) -> [u16; 256] {
        let mut w = [0u16; 256];
        // Fixed, non-removable ATA device.
        w[0] = 0x0040;
        w[1] = self.cylinders() as u16;
        w[3] = 16;
        w[6] = 63;
        put_string(&mut w[10..20], &self.serial);
        put_string(&mut w[23..27], "1.0");
        put_string(&mut w[27..47], "AGAR HARDDISK");
        w[47] = 0x8000 | MAX_MULTIPLE;
        // IORDY, LBA and DMA supported.
        w[49] = (1 << 11) | (1 << 9) | (1 << 8);
        w[50] = 0x4000;
        w[51] = 0x0200;
        w[52] = 0x0200;
        // Words 54-58, 64-70 and 88 are valid.
        w[53] = 0x0007;
        let (cyl, heads, spt) = self.current_chs();
        w[54] = cyl as u16;
        w[55] = heads as u16;
        w[56] = spt as u16;
        let chs_capacity = (cyl * heads * spt).min(u64::from(u32::MAX)) as u32;
        w[57] = chs_capacity as u16;
        w[58] = (chs_capacity >> 16) as u16;
        if self.multiple != 0 {
            w[59] = 0x0100 | self.multiple;
        }
        let lba28 = self.sectors.min(LBA28_MAX) as u32;
        w[60] = lba28 as u16;
        w[61] = (lba28 >> 16) as u16;
        // PIO modes 3 and 4, minimum cycle times.
        w[64] = 0x0003;
        w[65] = 120;
        w[66] = 120;
        w[67] = 120;
        w[68] = 120;
        // ATA/ATAPI-4 through -7.
        w[80] = 0x00f0;
        // NOP and write cache supported; FLUSH CACHE (EXT) and 48-bit addressing supported.
        w[82] = (1 << 14) | (1 << 5);
        w[83] = 0x4000 | (1 << 13) | (1 << 12) | (1 << 10);
        w[84] = 0x4000;
        w[85] = (1 << 14) | if self.write_cache { 1 << 5 } else { 0 };
        w[86] = (1 << 13) | (1 << 12) | (1 << 10);
        w[87] = 0x4000;
        w[93] = 0x4000 | 0x2000 | 0x0001;
        for (i, word) in w[100..104].iter_mut().enumerate() {
            *word = (self.sectors >> (16 * i)) as u16;
        }
        // Logical/physical sector size word is valid; physical sector size per the disk.
        let ratio = (self.disk.physical_sector_size() / 512).max(1);
        w[106] = 0x4000
            | if ratio > 1 {
                0x2000 | ratio.trailing_zeros() as u16
            } else {
                0
            };
        self.modes.identify_words(&mut w);
        seal(&mut w);
        w
    }
}

/// IDENTIFY PACKET DEVICE data for the CD-ROM.
pub(crate) fn identify_packet(serial: &str, modes: &XferModes) -> [u16; 256] {
    let mut w = [0u16; 256];
    // ATAPI, CD-ROM device, removable, accelerated DRQ (50 us), 12-byte packets.
    w[0] = 0x8000 | (5 << 8) | 0x80 | (2 << 5);
    put_string(&mut w[10..20], serial);
    put_string(&mut w[23..27], "1.0");
    put_string(&mut w[27..47], "AGAR DVD-ROM");
    // IORDY, LBA and DMA supported.
    w[49] = (1 << 11) | (1 << 9) | (1 << 8);
    w[53] = 0x0006;
    w[64] = 0x0003;
    w[65] = 120;
    w[66] = 120;
    w[67] = 120;
    w[68] = 120;
    w[80] = 0x00f0;
    // NOP, DEVICE RESET and PACKET supported.
    w[82] = (1 << 14) | (1 << 9) | (1 << 4);
    w[83] = 0x4000;
    w[84] = 0x4000;
    w[85] = (1 << 14) | (1 << 9) | (1 << 4);
    w[87] = 0x4000;
    w[93] = 0x4000 | 0x2000 | 0x0001;
    modes.identify_words(&mut w);
    seal(&mut w);
    w
}

#[cfg(test)]
mod tests {
    use disk::RamLayer;

    use super::*;

    #[test]
    fn identify_describes_capacity_and_strings() {
        let d = HardDisk::new(Arc::new(RamLayer::new_zeroed(1 << 30, 512).unwrap()));
        let w = d.identify();
        let sectors = (1u64 << 30) / 512;
        assert_eq!(u32::from(w[60]) | u32::from(w[61]) << 16, sectors as u32);
        assert_eq!(
            (0..4)
                .map(|i| u64::from(w[100 + i]) << (16 * i))
                .sum::<u64>(),
            sectors
        );
        assert_eq!((w[1], w[3], w[6]), (2080, 16, 63));
        let model: Vec<u8> = w[27..47].iter().flat_map(|x| x.to_be_bytes()).collect();
        assert_eq!(
            String::from_utf8(model).unwrap().trim_end(),
            "AGAR HARDDISK"
        );
        let bytes = identify_bytes(&w);
        assert_eq!(bytes[510], 0xa5);
        assert_eq!(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
        assert_ne!(w[83] & (1 << 10), 0, "48-bit");
    }

    #[test]
    fn lba28_capacity_saturates_for_big_disks() {
        let d = HardDisk::new(Arc::new(RamLayer::new_zeroed(200 << 30, 512).unwrap()));
        let w = d.identify();
        assert_eq!(u32::from(w[60]) | u32::from(w[61]) << 16, 0x0fff_ffff);
        assert_eq!(w[1], 16383);
    }

    #[test]
    fn transfer_mode_selection_shows_in_identify() {
        let mut m = XferModes::default();
        assert!(m.set(0x22));
        let w = identify_packet("S", &m);
        assert_eq!(w[63], 0x0407);
        assert!(m.set(0x45));
        let w = identify_packet("S", &m);
        assert_eq!((w[63], w[88]), (0x0007, 0x203f));
        assert!(!m.set(0x50));
        assert_eq!(w[0], 0x85c0);
    }
}
