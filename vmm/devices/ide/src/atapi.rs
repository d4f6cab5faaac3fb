//! The CD-ROM behind the ATAPI transport: SCSI/MMC commands on a read-only medium of
//! 2048-byte blocks.
//!
//! [`Optical::execute`] turns a 12-byte CDB into an [`Outcome`]; the channel moves the data
//! (PIO chunks or bus-master DMA) and reports errors through the ATAPI status, error register
//! and REQUEST SENSE.

use std::sync::Arc;

use disk::Disk;

use crate::protocol::Sense;
use crate::protocol::scsi;

/// CD block size.
pub const BLOCK: u64 = 2048;
/// Blocks read from the medium at a time while streaming a READ.
const READ_CHUNK_BLOCKS: u64 = 32;
/// Above this many blocks (about 800 MB) the medium reports the DVD-ROM profile.
const DVD_THRESHOLD_BLOCKS: u64 = 400_000;

/// What a command produced.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Completed without data.
    Done,
    /// Completed with data for the host.
    DataIn(DataSource),
    /// Failed (CHECK CONDITION).
    Error(Sense),
}

/// Data a command sends to the host: a prepared buffer or blocks read from the medium on
/// demand (so a large READ never allocates its whole length).
#[derive(Debug)]
pub(crate) struct DataSource {
    pending: Vec<u8>,
    pos: usize,
    lba: u64,
    blocks_left: u64,
}

impl DataSource {
    fn buffer(data: Vec<u8>) -> Self {
        Self {
            pending: data,
            pos: 0,
            lba: 0,
            blocks_left: 0,
        }
    }

    fn read(lba: u64, blocks: u64) -> Self {
        Self {
            pending: Vec::new(),
            pos: 0,
            lba,
            blocks_left: blocks,
        }
    }

    /// Bytes still to transfer.
    pub fn remaining(&self) -> u64 {
        (self.pending.len() - self.pos) as u64 + self.blocks_left * BLOCK
    }

    /// Takes up to `max` bytes (fewer only at the end).
    pub fn take(&mut self, optical: &Optical, max: usize) -> Result<Vec<u8>, Sense> {
        let mut out = Vec::with_capacity(max.min(self.remaining() as usize));
        while out.len() < max {
            if self.pos == self.pending.len() {
                if self.blocks_left == 0 {
                    break;
                }
                let n = self.blocks_left.min(READ_CHUNK_BLOCKS);
                self.pending = optical.read_blocks(self.lba, n)?;
                self.pos = 0;
                self.lba += n;
                self.blocks_left -= n;
            }
            let n = (max - out.len()).min(self.pending.len() - self.pos);
            out.extend_from_slice(&self.pending[self.pos..self.pos + n]);
            self.pos += n;
        }
        Ok(out)
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Truncates a reply to the allocation length.
fn reply(mut data: Vec<u8>, alloc: usize) -> Outcome {
    data.truncate(alloc);
    if data.is_empty() {
        Outcome::Done
    } else {
        Outcome::DataIn(DataSource::buffer(data))
    }
}

/// LBA to MSF as the 4-byte address field `[0, M, S, F]` (2-second pregap included).
fn msf(lba: u64) -> [u8; 4] {
    let f = lba + 150;
    [
        0,
        (f / (75 * 60)).min(255) as u8,
        (f / 75 % 60) as u8,
        (f % 75) as u8,
    ]
}

fn address(lba: u64, use_msf: bool) -> [u8; 4] {
    if use_msf {
        msf(lba)
    } else {
        (lba.min(u64::from(u32::MAX)) as u32).to_be_bytes()
    }
}

fn pad(text: &str, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = text.bytes().take(len).collect();
    v.resize(len, b' ');
    v
}

/// A CD/DVD-ROM drive.
#[derive(Debug)]
pub(crate) struct Optical {
    medium: Option<Arc<dyn Disk>>,
    /// Sense of the last failed command, for REQUEST SENSE.
    pub sense: Sense,
    /// The medium changed since the host last looked.
    unit_attention: bool,
    /// Media event for GET EVENT STATUS NOTIFICATION (0 none, 2 new media, 3 removal).
    media_event: u8,
    locked: bool,
    serial: String,
}

impl Optical {
    pub fn new(medium: Option<Arc<dyn Disk>>, serial: String) -> Self {
        Self {
            medium,
            sense: Sense::NONE,
            unit_attention: false,
            media_event: 0,
            locked: false,
            serial,
        }
    }

    /// Inserts or removes the medium; the host sees a unit attention and a media event.
    pub fn set_medium(&mut self, medium: Option<Arc<dyn Disk>>) {
        self.media_event = if medium.is_some() { 2 } else { 3 };
        self.medium = medium;
        self.unit_attention = true;
    }

    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Capacity in 2048-byte blocks.
    pub fn capacity(&self) -> Option<u64> {
        let m = self.medium.as_ref()?;
        Some(m.sector_count().saturating_mul(u64::from(m.sector_size())) / BLOCK)
    }

    /// Reads `count` blocks at `lba`.
    pub fn read_blocks(&self, lba: u64, count: u64) -> Result<Vec<u8>, Sense> {
        let m = self.medium.as_ref().ok_or(Sense::NO_MEDIUM)?;
        let ss = u64::from(m.sector_size()).max(1);
        let start = lba.checked_mul(BLOCK).ok_or(Sense::LBA_OUT_OF_RANGE)?;
        let len = count.checked_mul(BLOCK).ok_or(Sense::LBA_OUT_OF_RANGE)?;
        let first = start / ss;
        let end = start
            .checked_add(len)
            .ok_or(Sense::LBA_OUT_OF_RANGE)?
            .div_ceil(ss);
        let mut buf = vec![0u8; ((end - first) * ss) as usize];
        m.read(first, &mut buf).map_err(|e| {
            tracing::debug!(error = %e, lba, count, "atapi: read failed");
            Sense::READ_ERROR
        })?;
        let skip = (start - first * ss) as usize;
        Ok(buf[skip..skip + len as usize].to_vec())
    }

    fn profile(&self) -> u16 {
        match self.capacity() {
            None => 0,
            Some(c) if c > DVD_THRESHOLD_BLOCKS => 0x0010,
            Some(_) => 0x0008,
        }
    }

    /// Executes one CDB.
    pub fn execute(&mut self, cdb: &[u8; 12]) -> Outcome {
        let op = cdb[0];
        if self.unit_attention
            && !matches!(
                op,
                scsi::INQUIRY | scsi::REQUEST_SENSE | scsi::GET_EVENT_STATUS_NOTIFICATION
            )
        {
            self.unit_attention = false;
            return self.fail(Sense::MEDIUM_CHANGED);
        }
        if op != scsi::REQUEST_SENSE {
            self.sense = Sense::NONE;
        }
        let outcome = match op {
            scsi::TEST_UNIT_READY => self
                .need_medium()
                .map_or_else(Outcome::Error, |_| Outcome::Done),
            scsi::REQUEST_SENSE => self.request_sense(cdb),
            scsi::INQUIRY => self.inquiry(cdb),
            scsi::MODE_SENSE_6 | scsi::MODE_SENSE_10 => self.mode_sense(cdb),
            scsi::START_STOP_UNIT | scsi::SET_CD_SPEED => Outcome::Done,
            scsi::PREVENT_ALLOW_MEDIUM_REMOVAL => {
                self.locked = cdb[4] & 1 != 0;
                Outcome::Done
            }
            scsi::SEEK_10 => self
                .need_medium()
                .map_or_else(Outcome::Error, |_| Outcome::Done),
            scsi::READ_CAPACITY => match self.need_medium() {
                Ok(blocks) => {
                    let last = blocks.saturating_sub(1).min(u64::from(u32::MAX)) as u32;
                    let mut v = last.to_be_bytes().to_vec();
                    v.extend_from_slice(&(BLOCK as u32).to_be_bytes());
                    reply(v, 8)
                }
                Err(s) => Outcome::Error(s),
            },
            scsi::READ_10 => self.read(u64::from(be32(&cdb[2..])), u64::from(be16(&cdb[7..]))),
            scsi::READ_12 => self.read(u64::from(be32(&cdb[2..])), u64::from(be32(&cdb[6..]))),
            scsi::READ_CD => self.read_cd(cdb),
            scsi::READ_TOC => self.read_toc(cdb),
            scsi::GET_CONFIGURATION => self.get_configuration(cdb),
            scsi::GET_EVENT_STATUS_NOTIFICATION => self.event_status(cdb),
            scsi::READ_DISC_INFORMATION => self.disc_information(cdb),
            _ => {
                tracing::debug!(op, "atapi: unsupported command");
                Outcome::Error(Sense::INVALID_OPCODE)
            }
        };
        if let Outcome::Error(sense) = outcome {
            self.sense = sense;
        }
        outcome
    }

    fn fail(&mut self, sense: Sense) -> Outcome {
        self.sense = sense;
        Outcome::Error(sense)
    }

    fn need_medium(&self) -> Result<u64, Sense> {
        self.capacity().ok_or(Sense::NO_MEDIUM)
    }

    fn read(&self, lba: u64, count: u64) -> Outcome {
        let blocks = match self.need_medium() {
            Ok(b) => b,
            Err(s) => return Outcome::Error(s),
        };
        if lba.checked_add(count).is_none_or(|end| end > blocks) {
            return Outcome::Error(Sense::LBA_OUT_OF_RANGE);
        }
        if count == 0 {
            return Outcome::Done;
        }
        Outcome::DataIn(DataSource::read(lba, count))
    }

    fn read_cd(&self, cdb: &[u8; 12]) -> Outcome {
        let sector_type = (cdb[1] >> 2) & 7;
        let count = u64::from(be32(&[0, cdb[6], cdb[7], cdb[8]]));
        if count == 0 {
            return Outcome::Done;
        }
        // User data only, of any or mode-1 sectors: the same as READ.
        if cdb[9] & 0xf8 != 0x10 || !matches!(sector_type, 0 | 2) {
            return Outcome::Error(Sense::INVALID_FIELD);
        }
        self.read(u64::from(be32(&cdb[2..])), count)
    }

    fn request_sense(&mut self, cdb: &[u8; 12]) -> Outcome {
        let s = std::mem::replace(&mut self.sense, Sense::NONE);
        let mut v = vec![0u8; 18];
        v[0] = 0x70;
        v[2] = s.key;
        v[7] = 10;
        v[12] = s.asc;
        v[13] = s.ascq;
        reply(v, usize::from(cdb[4]))
    }

    fn inquiry(&self, cdb: &[u8; 12]) -> Outcome {
        let alloc = usize::from(be16(&cdb[3..]));
        if cdb[1] & 1 != 0 {
            // Vital product data: supported pages and the unit serial number.
            return match cdb[2] {
                0x00 => reply(vec![0x05, 0x00, 0x00, 2, 0x00, 0x80], alloc),
                0x80 => {
                    let serial = pad(&self.serial, 20);
                    let mut v = vec![0x05, 0x80, 0, serial.len() as u8];
                    v.extend_from_slice(&serial);
                    reply(v, alloc)
                }
                _ => Outcome::Error(Sense::INVALID_FIELD),
            };
        }
        let mut v = vec![0x05, 0x80, 0x00, 0x21, 31, 0, 0, 0];
        v.extend_from_slice(&pad("AGAR", 8));
        v.extend_from_slice(&pad("AGAR DVD-ROM", 16));
        v.extend_from_slice(&pad("1.0", 4));
        reply(v, alloc)
    }

    fn capabilities_page(&self) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[0] = 0x2a;
        p[1] = 18;
        // Reads CD-R/RW and DVD-ROM media.
        p[2] = 0x3b;
        // Audio play, mode 2 form 1 and 2, multi-session.
        p[4] = 0x71;
        // CD-DA commands, accurate stream.
        p[5] = 0x03;
        // Tray loader, eject, lock, and the current lock state.
        p[6] = 0x29 | if self.locked { 0x02 } else { 0 };
        p[7] = 0x03;
        // Max speed 4x (706 kB/s), 256 volume levels, 512 KiB buffer, current speed 4x.
        p[8..10].copy_from_slice(&706u16.to_be_bytes());
        p[10..12].copy_from_slice(&256u16.to_be_bytes());
        p[12..14].copy_from_slice(&512u16.to_be_bytes());
        p[14..16].copy_from_slice(&706u16.to_be_bytes());
        p
    }

    fn mode_sense(&self, cdb: &[u8; 12]) -> Outcome {
        let ten = cdb[0] == scsi::MODE_SENSE_10;
        let alloc = if ten {
            usize::from(be16(&cdb[7..]))
        } else {
            usize::from(cdb[4])
        };
        let error_recovery = vec![0x01, 0x06, 0x00, 0x05, 0, 0, 0, 0];
        let pages = match cdb[2] & 0x3f {
            0x01 => error_recovery,
            0x2a => self.capabilities_page(),
            0x3f => [error_recovery, self.capabilities_page()].concat(),
            _ => return Outcome::Error(Sense::INVALID_FIELD),
        };
        let medium_type = if self.medium.is_some() { 0x00 } else { 0x70 };
        let mut v = if ten {
            let len = (pages.len() + 6) as u16;
            let [hi, lo] = len.to_be_bytes();
            vec![hi, lo, medium_type, 0, 0, 0, 0, 0]
        } else {
            vec![(pages.len() + 3) as u8, medium_type, 0, 0]
        };
        v.extend_from_slice(&pages);
        reply(v, alloc)
    }

    fn read_toc(&self, cdb: &[u8; 12]) -> Outcome {
        let blocks = match self.need_medium() {
            Ok(b) => b,
            Err(s) => return Outcome::Error(s),
        };
        let use_msf = cdb[1] & 0x02 != 0;
        let format = match cdb[2] & 0x0f {
            0 => cdb[9] >> 6,
            f => f,
        };
        let track = cdb[6];
        let alloc = usize::from(be16(&cdb[7..]));
        let mut v = vec![0, 0, 1, 1];
        match format {
            0 => {
                if track > 1 && track != 0xaa {
                    return Outcome::Error(Sense::INVALID_FIELD);
                }
                if track <= 1 {
                    v.extend_from_slice(&[0, 0x14, 1, 0]);
                    v.extend_from_slice(&address(0, use_msf));
                }
                v.extend_from_slice(&[0, 0x14, 0xaa, 0]);
                v.extend_from_slice(&address(blocks, use_msf));
            }
            1 => {
                v.extend_from_slice(&[0, 0x14, 1, 0]);
                v.extend_from_slice(&address(0, use_msf));
            }
            2 => {
                let lead_out = msf(blocks);
                let start = msf(0);
                for (point, p) in [
                    (0xa0u8, [1u8, 0, 0]),
                    (0xa1, [1, 0, 0]),
                    (0xa2, [lead_out[1], lead_out[2], lead_out[3]]),
                    (1, [start[1], start[2], start[3]]),
                ] {
                    v.extend_from_slice(&[1, 0x14, 0, point, 0, 0, 0, 0, p[0], p[1], p[2]]);
                }
            }
            _ => return Outcome::Error(Sense::INVALID_FIELD),
        }
        let len = (v.len() - 2) as u16;
        v[..2].copy_from_slice(&len.to_be_bytes());
        reply(v, alloc)
    }

    fn get_configuration(&self, cdb: &[u8; 12]) -> Outcome {
        let rt = cdb[1] & 0x03;
        let start = be16(&cdb[2..]);
        let alloc = usize::from(be16(&cdb[7..]));
        let profile = self.profile();
        let has = self.medium.is_some();
        let features: Vec<(u16, bool, Vec<u8>)> = vec![
            (
                0x0000,
                true,
                vec![
                    0x00,
                    0x10,
                    u8::from(profile == 0x10),
                    0,
                    0x00,
                    0x08,
                    u8::from(profile == 0x08),
                    0,
                ],
            ),
            // Core: ATAPI physical interface, device busy event.
            (0x0001, true, vec![0, 0, 0, 2, 0x01, 0, 0, 0]),
            // Removable medium: tray, eject, lock.
            (0x0003, true, vec![0x29, 0, 0, 0]),
            // Random readable: 2048-byte blocks, blocking 1.
            (0x0010, has, vec![0, 0, 0x08, 0, 0, 1, 0, 0]),
            (0x001e, has && profile == 0x08, vec![0, 0, 0, 0]),
            (0x001f, has && profile == 0x10, vec![0, 0, 0, 0]),
        ];
        let mut v = vec![0u8; 8];
        v[6..8].copy_from_slice(&profile.to_be_bytes());
        for (code, current, body) in features {
            let wanted = match rt {
                0 => code >= start,
                1 => code >= start && current,
                2 => code == start,
                _ => false,
            };
            if !wanted {
                continue;
            }
            let version = match code {
                0x0001 => 0x08,
                0x001e => 0x08,
                0x001f => 0x04,
                _ => 0,
            };
            let [hi, lo] = code.to_be_bytes();
            let persistent = code < 0x10;
            let flags = version | (u8::from(persistent) << 1) | u8::from(current);
            v.extend_from_slice(&[hi, lo, flags, body.len() as u8]);
            v.extend_from_slice(&body);
        }
        let len = (v.len() - 4) as u32;
        v[..4].copy_from_slice(&len.to_be_bytes());
        reply(v, alloc)
    }

    fn event_status(&mut self, cdb: &[u8; 12]) -> Outcome {
        if cdb[1] & 1 == 0 {
            // Only polled operation.
            return Outcome::Error(Sense::INVALID_FIELD);
        }
        let alloc = usize::from(be16(&cdb[7..]));
        if cdb[4] & 0x10 == 0 {
            return reply(vec![0, 2, 0x80, 0x10], alloc);
        }
        let event = std::mem::take(&mut self.media_event);
        let present = if self.medium.is_some() { 0x02 } else { 0 };
        reply(vec![0, 6, 0x04, 0x10, event, present, 0, 0], alloc)
    }

    fn disc_information(&self, cdb: &[u8; 12]) -> Outcome {
        if let Err(s) = self.need_medium() {
            return Outcome::Error(s);
        }
        let alloc = usize::from(be16(&cdb[7..]));
        let mut v = vec![0u8; 34];
        v[1] = 32;
        // Complete disc, complete last session, not erasable.
        v[2] = 0x0e;
        v[3] = 1;
        v[4] = 1;
        v[5] = 1;
        v[6] = 1;
        v[16..24].fill(0xff);
        reply(v, alloc)
    }
}

#[cfg(test)]
mod tests {
    use disk::RamLayer;

    use super::*;

    fn cdrom(blocks: u64) -> Optical {
        let disk = RamLayer::new_zeroed(blocks * BLOCK, 512).unwrap();
        for b in 0..blocks {
            let mut block = vec![0u8; BLOCK as usize];
            block[..8].copy_from_slice(&b.to_le_bytes());
            disk.write(b * 4, &block).unwrap();
        }
        Optical::new(Some(Arc::new(disk)), "CD0".into())
    }

    fn cdb(bytes: &[u8]) -> [u8; 12] {
        let mut c = [0u8; 12];
        c[..bytes.len()].copy_from_slice(bytes);
        c
    }

    fn run(o: &mut Optical, c: [u8; 12]) -> Vec<u8> {
        let outcome = o.execute(&c);
        data(o, outcome)
    }

    fn data(o: &Optical, outcome: Outcome) -> Vec<u8> {
        match outcome {
            Outcome::DataIn(mut src) => {
                let n = src.remaining() as usize;
                src.take(o, n).unwrap()
            }
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn read_streams_blocks_in_any_chunk_size() {
        let mut o = cdrom(100);
        let Outcome::DataIn(mut src) = o.execute(&cdb(&[scsi::READ_10, 0, 0, 0, 0, 10, 0, 0, 40]))
        else {
            panic!()
        };
        assert_eq!(src.remaining(), 40 * BLOCK);
        let mut all = Vec::new();
        while src.remaining() > 0 {
            all.extend(src.take(&o, 3000).unwrap());
        }
        assert_eq!(all.len(), 40 * BLOCK as usize);
        for (i, block) in all.chunks(BLOCK as usize).enumerate() {
            assert_eq!(
                u64::from_le_bytes(block[..8].try_into().unwrap()),
                10 + i as u64
            );
        }
    }

    #[test]
    fn read_range_and_medium_errors() {
        let mut o = cdrom(100);
        assert!(matches!(
            o.execute(&cdb(&[scsi::READ_12, 0, 0, 0, 0, 99, 0, 0, 0, 2])),
            Outcome::Error(Sense::LBA_OUT_OF_RANGE)
        ));
        assert!(matches!(
            o.execute(&cdb(&[
                scsi::READ_12,
                0,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff
            ])),
            Outcome::Error(Sense::LBA_OUT_OF_RANGE)
        ));
        let sense = run(&mut o, cdb(&[scsi::REQUEST_SENSE, 0, 0, 0, 18]));
        assert_eq!((sense[2], sense[12], sense[13]), (0x05, 0x21, 0x00));
        let mut empty = Optical::new(None, "CD1".into());
        assert!(matches!(
            empty.execute(&cdb(&[scsi::TEST_UNIT_READY])),
            Outcome::Error(Sense::NO_MEDIUM)
        ));
        assert!(matches!(
            empty.execute(&cdb(&[0xff])),
            Outcome::Error(Sense::INVALID_OPCODE)
        ));
    }

    #[test]
    fn capacity_inquiry_and_toc() {
        let mut o = cdrom(100);
        let cap = run(&mut o, cdb(&[scsi::READ_CAPACITY]));
        assert_eq!(cap, [0, 0, 0, 99, 0, 0, 8, 0]);
        let inq = run(&mut o, cdb(&[scsi::INQUIRY, 0, 0, 0, 96]));
        assert_eq!(inq.len(), 36);
        assert_eq!(inq[0], 5, "CD/DVD device");
        assert_eq!(inq[1], 0x80, "removable");
        assert_eq!(&inq[16..28], b"AGAR DVD-ROM");
        let toc = run(&mut o, cdb(&[scsi::READ_TOC, 0, 0, 0, 0, 0, 0, 0, 100]));
        assert_eq!(
            toc,
            [
                0, 18, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0, 0, 0x14, 0xaa, 0, 0, 0, 0, 100
            ]
        );
        let msf = run(&mut o, cdb(&[scsi::READ_TOC, 2, 0, 0, 0, 0, 0xaa, 0, 12]));
        assert_eq!(
            &msf[4..],
            [0, 0x14, 0xaa, 0, 0, 0, 3, 25],
            "100 + 150 frames = 00:03:25"
        );
        let session = run(&mut o, cdb(&[scsi::READ_TOC, 0, 1, 0, 0, 0, 0, 0, 12]));
        assert_eq!(session, [0, 10, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0]);
        let raw = run(&mut o, cdb(&[scsi::READ_TOC, 0, 2, 0, 0, 0, 0, 0, 255]));
        assert_eq!(raw.len(), 4 + 4 * 11);
        assert!(matches!(
            o.execute(&cdb(&[scsi::READ_TOC, 0, 0, 0, 0, 0, 5, 0, 100])),
            Outcome::Error(Sense::INVALID_FIELD)
        ));
    }

    #[test]
    fn configuration_mode_pages_and_events() {
        let mut o = cdrom(100);
        let cfg = run(
            &mut o,
            cdb(&[scsi::GET_CONFIGURATION, 0, 0, 0, 0, 0, 0, 1, 0]),
        );
        assert_eq!(
            u16::from_be_bytes([cfg[6], cfg[7]]),
            0x0008,
            "CD-ROM profile"
        );
        assert_eq!(
            u32::from_be_bytes(cfg[..4].try_into().unwrap()) as usize,
            cfg.len() - 4
        );
        assert_eq!(&cfg[8..10], [0, 0], "profile list first");
        let only_core = run(
            &mut o,
            cdb(&[scsi::GET_CONFIGURATION, 2, 0, 1, 0, 0, 0, 1, 0]),
        );
        assert_eq!(only_core.len(), 8 + 4 + 8);
        assert_eq!(&only_core[8..10], [0, 1]);
        let page = run(
            &mut o,
            cdb(&[scsi::MODE_SENSE_10, 0, 0x2a, 0, 0, 0, 0, 0, 255]),
        );
        assert_eq!(page[8], 0x2a);
        assert_eq!(
            u16::from_be_bytes([page[0], page[1]]) as usize,
            page.len() - 2
        );
        assert!(matches!(
            o.execute(&cdb(&[scsi::MODE_SENSE_10, 0, 0x05, 0, 0, 0, 0, 0, 255])),
            Outcome::Error(Sense::INVALID_FIELD)
        ));
        let ev = run(
            &mut o,
            cdb(&[
                scsi::GET_EVENT_STATUS_NOTIFICATION,
                1,
                0,
                0,
                0x10,
                0,
                0,
                0,
                8,
            ]),
        );
        assert_eq!(ev, [0, 6, 4, 0x10, 0, 2, 0, 0]);
        o.set_medium(None);
        let ev = run(
            &mut o,
            cdb(&[
                scsi::GET_EVENT_STATUS_NOTIFICATION,
                1,
                0,
                0,
                0x10,
                0,
                0,
                0,
                8,
            ]),
        );
        assert_eq!(ev[4..6], [3, 0], "removal event, no medium");
        assert!(matches!(
            o.execute(&cdb(&[scsi::TEST_UNIT_READY])),
            Outcome::Error(Sense::MEDIUM_CHANGED)
        ));
        assert!(matches!(
            o.execute(&cdb(&[scsi::TEST_UNIT_READY])),
            Outcome::Error(Sense::NO_MEDIUM)
        ));
    }

    #[test]
    fn large_media_report_dvd_and_4k_sector_media_read_correctly() {
        let o = Optical::new(
            Some(Arc::new(RamLayer::new_zeroed(900 << 20, 512).unwrap())),
            "x".into(),
        );
        assert_eq!(o.profile(), 0x0010);
        let disk = RamLayer::new_zeroed(64 * 4096, 4096).unwrap();
        let mut sector = vec![0u8; 4096];
        sector[2048] = 0x5a;
        disk.write(3, &sector).unwrap();
        let o = Optical::new(Some(Arc::new(disk)), "y".into());
        let b = o.read_blocks(7, 1).unwrap();
        assert_eq!(b[0], 0x5a, "block 7 is the second half of sector 3");
    }

    #[test]
    fn garbage_cdbs_never_panic() {
        let mut o = cdrom(20);
        let mut x: u64 = 0x1111_2222_3333_4444;
        for _ in 0..20_000 {
            let mut c = [0u8; 12];
            for b in c.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            if x & 1 == 0 {
                c[0] = [
                    0x00, 0x03, 0x12, 0x1a, 0x25, 0x28, 0x43, 0x46, 0x4a, 0x51, 0x5a, 0xa8, 0xbe,
                ][(x >> 8) as usize % 13];
            }
            if let Outcome::DataIn(mut src) = o.execute(&c) {
                let _ = src.take(&o, 4096);
            }
        }
    }
}
