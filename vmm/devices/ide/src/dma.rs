//! Bus-master IDE: the per-channel registers and the physical region descriptor (PRD) walk.
//!
//! A PRD entry is 8 bytes: a 32-bit physical address (bit 0 ignored), a 16-bit byte count
//! (0 means 64 KiB) and a 16-bit flags word whose bit 15 ends the table. The walk is bounded
//! (a table lives in one 64 KiB region, so at most 8192 entries) and every guest address is
//! checked by [`GuestMemory`].

use guest_mem::GuestMemory;

use crate::protocol::bm;

/// Most entries a PRD table can hold (64 KiB / 8 bytes).
const MAX_ENTRIES: u32 = 8192;

/// One channel's bus-master registers.
#[derive(Debug, Clone, Default)]
pub(crate) struct BusMaster {
    pub command: u8,
    pub status: u8,
    pub prd_table: u32,
}

impl BusMaster {
    pub fn started(&self) -> bool {
        self.command & bm::CMD_START != 0
    }
}

/// Why a DMA transfer stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DmaError {
    /// The PRD table ended before the transfer did.
    TableTooShort,
    /// A PRD entry or data buffer is not in guest memory.
    BadAddress,
}

/// A cursor over a PRD table.
pub(crate) struct PrdWalker<'a> {
    memory: &'a GuestMemory,
    next_entry: u64,
    entries_read: u32,
    /// Current segment: address and bytes left.
    addr: u64,
    left: u32,
    /// The entry just loaded was the last one.
    last: bool,
}

impl<'a> PrdWalker<'a> {
    pub fn new(memory: &'a GuestMemory, table: u32) -> Self {
        Self {
            memory,
            next_entry: u64::from(table & !3),
            entries_read: 0,
            addr: 0,
            left: 0,
            last: false,
        }
    }

    /// Makes sure a segment with bytes left is loaded.
    fn load(&mut self) -> Result<(), DmaError> {
        while self.left == 0 {
            if self.last || self.entries_read >= MAX_ENTRIES {
                return Err(DmaError::TableTooShort);
            }
            let mut e = [0u8; 8];
            self.memory
                .read_at(self.next_entry, &mut e)
                .map_err(|_| DmaError::BadAddress)?;
            self.next_entry += 8;
            self.entries_read += 1;
            self.addr = u64::from(u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & !1);
            let count = u16::from_le_bytes([e[4], e[5]]);
            self.left = if count == 0 {
                0x1_0000
            } else {
                u32::from(count)
            };
            self.last = u16::from_le_bytes([e[6], e[7]]) & 0x8000 != 0;
        }
        Ok(())
    }

    /// Copies `data` to guest memory along the table.
    pub fn scatter(&mut self, mut data: &[u8]) -> Result<(), DmaError> {
        while !data.is_empty() {
            self.load()?;
            let n = data.len().min(self.left as usize);
            self.memory
                .write_at(self.addr, &data[..n])
                .map_err(|_| DmaError::BadAddress)?;
            self.addr += n as u64;
            self.left -= n as u32;
            data = &data[n..];
        }
        Ok(())
    }

    /// Fills `buf` from guest memory along the table.
    pub fn gather(&mut self, mut buf: &mut [u8]) -> Result<(), DmaError> {
        while !buf.is_empty() {
            self.load()?;
            let n = buf.len().min(self.left as usize);
            let (head, tail) = buf.split_at_mut(n);
            self.memory
                .read_at(self.addr, head)
                .map_err(|_| DmaError::BadAddress)?;
            self.addr += n as u64;
            self.left -= n as u32;
            buf = tail;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prd(mem: &GuestMemory, at: u64, entries: &[(u32, u16, bool)]) {
        for (i, &(addr, count, last)) in entries.iter().enumerate() {
            let mut e = [0u8; 8];
            e[..4].copy_from_slice(&addr.to_le_bytes());
            e[4..6].copy_from_slice(&count.to_le_bytes());
            e[6..8].copy_from_slice(&(if last { 0x8000u16 } else { 0 }).to_le_bytes());
            mem.write_at(at + 8 * i as u64, &e).unwrap();
        }
    }

    #[test]
    fn scatter_and_gather_follow_the_table() {
        let mem = GuestMemory::allocate(0x40000);
        prd(&mem, 0x1000, &[(0x2000, 3, false), (0x3001, 5, true)]);
        let mut w = PrdWalker::new(&mem, 0x1000);
        w.scatter(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let mut a = [0u8; 3];
        let mut b = [0u8; 5];
        mem.read_at(0x2000, &mut a).unwrap();
        mem.read_at(0x3000, &mut b).unwrap();
        assert_eq!(a, [1, 2, 3]);
        assert_eq!(b, [4, 5, 6, 7, 8], "bit 0 of the address is ignored");
        let mut back = [0u8; 8];
        PrdWalker::new(&mem, 0x1000).gather(&mut back).unwrap();
        assert_eq!(back, [1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn short_tables_bad_addresses_and_64k_entries() {
        let mem = GuestMemory::allocate(0x40000);
        prd(&mem, 0x1000, &[(0x2000, 4, true)]);
        assert_eq!(
            PrdWalker::new(&mem, 0x1000).scatter(&[0; 5]),
            Err(DmaError::TableTooShort)
        );
        prd(&mem, 0x1000, &[(0xffff_0000, 4, true)]);
        assert_eq!(
            PrdWalker::new(&mem, 0x1000).scatter(&[0; 4]),
            Err(DmaError::BadAddress)
        );
        prd(&mem, 0x1000, &[(0x10000, 0, true)]);
        PrdWalker::new(&mem, 0x1000)
            .scatter(&vec![9; 0x10000])
            .unwrap();
        assert_eq!(
            PrdWalker::new(&mem, 0xffff_0000).scatter(&[1]),
            Err(DmaError::BadAddress)
        );
    }

    #[test]
    fn a_table_without_end_marker_is_bounded() {
        // 64 KiB of one-byte entries at address 0, none with the end marker.
        let mem = GuestMemory::allocate(0x20000);
        let entry = [0u8, 0, 0, 0, 1, 0, 0, 0];
        mem.write_at(0x10000, &entry.repeat(0x2000)).unwrap();
        let mut w = PrdWalker::new(&mem, 0x10000);
        let mut n = 0;
        while w.scatter(&[7]).is_ok() {
            n += 1;
            assert!(n <= MAX_ENTRIES);
        }
        assert_eq!(n, MAX_ENTRIES);
    }
}
