use std::sync::Arc;

use device_api::TestIrqTarget;
use disk::RamLayer;

use super::*;
use crate::protocol::bm;
use crate::protocol::cmd;
use crate::protocol::scsi;
use crate::protocol::status;

const BM_PORT: u16 = 0xc000;
const PRD: u64 = 0x1000;
const BUF: u64 = 0x10000;
const DISK_SECTORS: u64 = 4096;

struct Rig {
    ide: IdeController,
    irq: Arc<TestIrqTarget>,
    mem: GuestMemory,
    disk: Arc<RamLayer>,
}

fn ram_disk(sectors: u64) -> Arc<RamLayer> {
    Arc::new(RamLayer::new_zeroed(sectors * 512, 512).unwrap())
}

/// An ISO-like medium: block n starts with n as a u32.
fn cd_medium(blocks: u64) -> Arc<RamLayer> {
    let d = ram_disk(blocks * 4);
    for b in 0..blocks {
        let mut block = vec![0xcdu8; 2048];
        block[..4].copy_from_slice(&(b as u32).to_le_bytes());
        d.write(b * 4, &block).unwrap();
    }
    d
}

/// Primary: hard disk (master) + CD-ROM (slave). Secondary: empty CD-ROM master.
fn rig() -> Rig {
    let irq = TestIrqTarget::new();
    let mem = GuestMemory::allocate(0x100000);
    let disk = ram_disk(DISK_SECTORS);
    let ide = IdeController::new(
        mem.clone(),
        [irq.line(14), irq.line(15)],
        [
            [
                Some(IdeDrive::HardDisk(disk.clone())),
                Some(IdeDrive::Cdrom(Some(cd_medium(64)))),
            ],
            [Some(IdeDrive::Cdrom(None)), None],
        ],
    )
    .unwrap();
    Rig {
        ide,
        irq,
        mem,
        disk,
    }
}

impl Rig {
    fn outb(&mut self, port: u16, v: u8) {
        self.ide.io_write(port, &[v]).unwrap();
    }
    fn inb(&mut self, port: u16) -> u8 {
        let mut b = [0];
        self.ide.io_read(port, &mut b).unwrap();
        b[0]
    }
    fn inw(&mut self, port: u16) -> u16 {
        let mut b = [0; 2];
        self.ide.io_read(port, &mut b).unwrap();
        u16::from_le_bytes(b)
    }
    fn outw(&mut self, port: u16, v: u16) {
        self.ide.io_write(port, &v.to_le_bytes()).unwrap();
    }
    fn read_pio(&mut self, base: u16, bytes: usize) -> Vec<u8> {
        (0..bytes / 2)
            .flat_map(|_| self.inw(base).to_le_bytes())
            .collect()
    }
    fn write_pio(&mut self, base: u16, data: &[u8]) {
        for w in data.chunks(2) {
            self.outw(base, u16::from_le_bytes([w[0], w[1]]));
        }
    }
    fn select(&mut self, base: u16, unit: u8, extra: u8) {
        self.outb(base + 6, 0xa0 | (unit << 4) | extra);
    }
    fn lba28(&mut self, base: u16, unit: u8, lba: u32, count: u8) {
        self.select(base, unit, 0x40 | ((lba >> 24) as u8 & 0x0f));
        self.outb(base + 2, count);
        self.outb(base + 3, lba as u8);
        self.outb(base + 4, (lba >> 8) as u8);
        self.outb(base + 5, (lba >> 16) as u8);
    }
    fn lba48(&mut self, base: u16, lba: u64, count: u16) {
        self.select(base, 0, 0x40);
        for (reg, hi, lo) in [
            (2, (count >> 8) as u8, count as u8),
            (3, (lba >> 24) as u8, lba as u8),
            (4, (lba >> 32) as u8, (lba >> 8) as u8),
            (5, (lba >> 40) as u8, (lba >> 16) as u8),
        ] {
            self.outb(base + reg, hi);
            self.outb(base + reg, lo);
        }
    }
    fn status(&mut self, base: u16) -> u8 {
        self.inb(base + 7)
    }
    fn enable_bus_master(&mut self) {
        self.ide.config_write(0x20, u32::from(BM_PORT), 0xffff_ffff);
        self.ide.config_write(0x04, 0x5, 0xffff);
    }
    fn prd(&mut self, entries: &[(u32, u16)]) {
        for (i, &(addr, count)) in entries.iter().enumerate() {
            let mut e = [0u8; 8];
            e[..4].copy_from_slice(&addr.to_le_bytes());
            e[4..6].copy_from_slice(&count.to_le_bytes());
            if i + 1 == entries.len() {
                e[7] = 0x80;
            }
            self.mem.write_at(PRD + 8 * i as u64, &e).unwrap();
        }
        self.ide
            .io_write(BM_PORT + 4, &(PRD as u32).to_le_bytes())
            .unwrap();
    }
    fn packet(&mut self, base: u16, unit: u8, cdb: &[u8], dma: bool, limit: u16) {
        self.select(base, unit, 0);
        self.outb(base + 1, u8::from(dma));
        self.outb(base + 4, limit as u8);
        self.outb(base + 5, (limit >> 8) as u8);
        self.outb(base + 7, cmd::PACKET);
        assert_eq!(
            self.inb(base + 2) & 3,
            1,
            "CoD: the device wants the packet"
        );
        assert_ne!(self.status(base) & status::DRQ, 0);
        let mut p = [0u8; 12];
        p[..cdb.len()].copy_from_slice(cdb);
        self.write_pio(base, &p);
    }
    /// Reads an ATAPI PIO data-in transfer, chunk by chunk.
    fn atapi_pio_in(&mut self, base: u16) -> (Vec<u8>, Vec<usize>) {
        let mut data = Vec::new();
        let mut chunks = Vec::new();
        loop {
            let s = self.status(base);
            if s & status::DRQ == 0 {
                assert_eq!(self.inb(base + 2) & 3, 3, "command complete reason");
                return (data, chunks);
            }
            let n = usize::from(self.inb(base + 4)) | usize::from(self.inb(base + 5)) << 8;
            chunks.push(n);
            data.extend(self.read_pio(base, n));
        }
    }
}

#[test]
fn pci_identity_class_and_bus_master_bar() {
    let mut r = rig();
    assert_eq!(r.ide.config_read(0), 0x7010_8086);
    assert_eq!(r.ide.config_read(8) >> 8, 0x01_01_80);
    assert_eq!(
        r.ide.config_read(0x40),
        0x8000_8000,
        "IDE decode enabled on both channels"
    );
    r.ide.config_write(0x20, 0xffff_ffff, 0xffff_ffff);
    assert_eq!(r.ide.config_read(0x20), 0xffff_fff1, "16 bytes of I/O");
    r.enable_bus_master();
    assert_eq!(r.ide.bar_mappings()[0].base, u64::from(BM_PORT));
    let mut b = [0u8; 4];
    r.ide.io_write(BM_PORT + 12, &[0x34, 0x12, 0, 0]).unwrap();
    r.ide.io_read(BM_PORT + 12, &mut b).unwrap();
    assert_eq!(b, [0x34, 0x12, 0, 0], "secondary PRD pointer");
}

#[test]
fn software_reset_sets_ata_and_atapi_signatures() {
    let mut r = rig();
    r.outb(PRIMARY_CONTROL, 0x04);
    assert_eq!(r.inb(PRIMARY_CONTROL) & status::BSY, status::BSY);
    r.outb(PRIMARY_CONTROL, 0x00);
    let sig = |r: &mut Rig| [2, 3, 4, 5].map(|o| r.inb(PRIMARY_BASE + o));
    assert_eq!(sig(&mut r), [1, 1, 0, 0]);
    assert_eq!(r.inb(PRIMARY_BASE + 1), 1, "diagnostic code");
    assert_eq!(r.status(PRIMARY_BASE), status::DRDY | status::DSC);
    r.select(PRIMARY_BASE, 1, 0);
    assert_eq!(sig(&mut r), [1, 1, 0x14, 0xeb]);
    assert_eq!(r.status(PRIMARY_BASE), 0, "ATAPI clears DRDY after reset");
    assert!(!r.irq.level(14), "reset raises no interrupt");
    // The secondary slave is absent: status reads zero.
    r.select(SECONDARY_BASE, 1, 0);
    assert_eq!(r.status(SECONDARY_BASE), 0);
}

#[test]
fn identify_device_over_pio() {
    let mut r = rig();
    r.select(PRIMARY_BASE, 0, 0);
    r.outb(PRIMARY_BASE + 7, cmd::IDENTIFY);
    assert!(r.irq.level(14));
    assert_eq!(r.inb(PRIMARY_CONTROL) & status::DRQ, status::DRQ);
    assert_eq!(
        r.status(PRIMARY_BASE) & (status::DRQ | status::BSY),
        status::DRQ
    );
    assert!(!r.irq.level(14), "reading status acknowledged");
    let id = r.read_pio(PRIMARY_BASE, 512);
    let words: Vec<u16> = id
        .chunks(2)
        .map(|w| u16::from_le_bytes([w[0], w[1]]))
        .collect();
    assert_eq!(
        u32::from(words[60]) | u32::from(words[61]) << 16,
        DISK_SECTORS as u32
    );
    assert_eq!(r.status(PRIMARY_BASE), status::DRDY | status::DSC);
    assert_eq!(id.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
}

#[test]
fn pio_write_then_read_back_lba28() {
    let mut r = rig();
    let data: Vec<u8> = (0..3 * 512).map(|i| (i * 7 % 251) as u8).collect();
    r.lba28(PRIMARY_BASE, 0, 100, 3);
    r.outb(PRIMARY_BASE + 7, cmd::WRITE_SECTORS);
    assert!(!r.irq.level(14), "no interrupt before the first block");
    for (i, sector) in data.chunks(512).enumerate() {
        assert_ne!(r.inb(PRIMARY_CONTROL) & status::DRQ, 0);
        r.write_pio(PRIMARY_BASE, sector);
        assert!(r.irq.level(14), "interrupt after block {i}");
        r.status(PRIMARY_BASE);
    }
    assert_eq!(r.inb(PRIMARY_CONTROL), status::DRDY | status::DSC);
    let mut on_disk = vec![0u8; 3 * 512];
    r.disk.read(100, &mut on_disk).unwrap();
    assert_eq!(on_disk, data);

    r.lba28(PRIMARY_BASE, 0, 100, 3);
    r.outb(PRIMARY_BASE + 7, cmd::READ_SECTORS);
    let mut back = Vec::new();
    for _ in 0..3 {
        assert!(r.irq.level(14), "interrupt per DRQ block");
        r.status(PRIMARY_BASE);
        back.extend(r.read_pio(PRIMARY_BASE, 512));
    }
    assert!(
        !r.irq.level(14),
        "no interrupt after the last block of a read"
    );
    assert_eq!(back, data);
    assert_eq!(r.status(PRIMARY_BASE), status::DRDY | status::DSC);
}

#[test]
fn read_multiple_uses_the_block_size() {
    let mut r = rig();
    r.outb(PRIMARY_BASE + 7, cmd::READ_MULTIPLE);
    assert_eq!(
        r.status(PRIMARY_BASE) & status::ERR,
        status::ERR,
        "multiple mode not set"
    );
    r.select(PRIMARY_BASE, 0, 0);
    r.outb(PRIMARY_BASE + 2, 3);
    r.outb(PRIMARY_BASE + 7, cmd::SET_MULTIPLE);
    assert_eq!(
        r.status(PRIMARY_BASE) & status::ERR,
        status::ERR,
        "3 is not a power of two"
    );
    r.outb(PRIMARY_BASE + 2, 4);
    r.outb(PRIMARY_BASE + 7, cmd::SET_MULTIPLE);
    assert_eq!(r.status(PRIMARY_BASE) & status::ERR, 0);
    let edges = r.irq.rising_edges(14);
    r.lba28(PRIMARY_BASE, 0, 0, 10);
    r.outb(PRIMARY_BASE + 7, cmd::READ_MULTIPLE);
    let mut n = 0;
    while r.status(PRIMARY_BASE) & status::DRQ != 0 {
        r.read_pio(PRIMARY_BASE, 512);
        n += 1;
    }
    assert_eq!(n, 10);
    assert_eq!(
        r.irq.rising_edges(14) - edges,
        3,
        "blocks of 4, 4 and 2 sectors"
    );
}

#[test]
fn lba48_and_chs_addressing_and_range_errors() {
    let mut r = rig();
    r.disk.write(4000, &[0x48; 512]).unwrap();
    r.lba48(PRIMARY_BASE, 4000, 1);
    r.outb(PRIMARY_BASE + 7, cmd::READ_SECTORS_EXT);
    assert_eq!(r.read_pio(PRIMARY_BASE, 512), vec![0x48; 512]);
    // HOB read-back of the high-order registers.
    r.outb(PRIMARY_CONTROL, 0x80);
    assert_eq!(r.inb(PRIMARY_BASE + 3), 0, "LBA 31:24");
    r.outb(PRIMARY_CONTROL, 0x00);
    assert_eq!(r.inb(PRIMARY_BASE + 4), (4000 >> 8) as u8);
    // Past the end.
    r.lba48(PRIMARY_BASE, DISK_SECTORS - 1, 2);
    r.outb(PRIMARY_BASE + 7, cmd::READ_SECTORS_EXT);
    assert_eq!(
        r.status(PRIMARY_BASE),
        status::DRDY | status::DSC | status::ERR
    );
    assert_eq!(
        r.inb(PRIMARY_BASE + 1) & crate::protocol::error::IDNF,
        crate::protocol::error::IDNF
    );
    // CHS: cylinder 1, head 2, sector 3 with 16 heads / 63 sectors = LBA 1136.
    r.disk.write(1136, &[0xc5; 512]).unwrap();
    r.select(PRIMARY_BASE, 0, 0x02);
    r.outb(PRIMARY_BASE + 2, 1);
    r.outb(PRIMARY_BASE + 3, 3);
    r.outb(PRIMARY_BASE + 4, 1);
    r.outb(PRIMARY_BASE + 5, 0);
    r.outb(PRIMARY_BASE + 7, cmd::READ_SECTORS);
    assert_eq!(r.read_pio(PRIMARY_BASE, 512), vec![0xc5; 512]);
    // Sector 0 does not exist in CHS.
    r.outb(PRIMARY_BASE + 3, 0);
    r.outb(PRIMARY_BASE + 7, cmd::READ_SECTORS);
    assert_eq!(r.status(PRIMARY_BASE) & status::ERR, status::ERR);
}

#[test]
fn dma_read_and_write_through_the_prd_table() {
    let mut r = rig();
    r.enable_bus_master();
    let data: Vec<u8> = (0..8 * 512).map(|i| (i % 253) as u8).collect();
    r.disk.write(20, &data).unwrap();
    // Three PRD segments of uneven sizes.
    r.prd(&[
        (BUF as u32, 1000),
        (BUF as u32 + 0x2000, 3000),
        (BUF as u32 + 0x4000, 96),
    ]);
    r.lba28(PRIMARY_BASE, 0, 20, 8);
    r.outb(PRIMARY_BASE + 7, cmd::READ_DMA);
    assert_eq!(
        r.inb(PRIMARY_CONTROL) & status::DRQ,
        status::DRQ,
        "waiting for the bus master"
    );
    assert!(!r.irq.level(14));
    r.outb(BM_PORT, bm::CMD_START | bm::CMD_TO_MEMORY);
    assert!(r.irq.level(14));
    assert_eq!(
        r.inb(BM_PORT + 2) & 7,
        bm::STATUS_INTERRUPT,
        "done: not active, no error"
    );
    assert_eq!(r.status(PRIMARY_BASE), status::DRDY | status::DSC);
    let mut got = vec![0u8; 4096];
    r.mem.read_at(BUF, &mut got[..1000]).unwrap();
    r.mem.read_at(BUF + 0x2000, &mut got[1000..4000]).unwrap();
    r.mem.read_at(BUF + 0x4000, &mut got[4000..]).unwrap();
    assert_eq!(got, data);
    r.outb(BM_PORT + 2, bm::STATUS_INTERRUPT);
    r.outb(BM_PORT, 0);
    assert_eq!(r.inb(BM_PORT + 2), 0);

    // Write DMA: memory to disk, command after the bus master started.
    r.mem.write_at(BUF, &[0x77; 1024]).unwrap();
    r.prd(&[(BUF as u32, 1024)]);
    r.outb(BM_PORT, bm::CMD_START);
    r.lba48(PRIMARY_BASE, 3000, 2);
    r.outb(PRIMARY_BASE + 7, cmd::WRITE_DMA_EXT);
    assert!(r.irq.level(14));
    let mut on_disk = vec![0u8; 1024];
    r.disk.read(3000, &mut on_disk).unwrap();
    assert_eq!(on_disk, vec![0x77; 1024]);
}

#[test]
fn dma_waits_for_pci_bus_master_enable() {
    let mut r = rig();
    r.ide.config_write(0x20, u32::from(BM_PORT), 0xffff_ffff);
    r.ide.config_write(0x04, 0x1, 0xffff);
    r.prd(&[(BUF as u32, 512)]);
    r.lba28(PRIMARY_BASE, 0, 0, 1);
    r.outb(PRIMARY_BASE + 7, cmd::READ_DMA);
    r.outb(BM_PORT, bm::CMD_START | bm::CMD_TO_MEMORY);
    assert!(!r.irq.level(14), "bus mastering disabled in PCI command");
    r.ide.config_write(0x04, 0x5, 0xffff);
    assert!(r.irq.level(14));
}

#[test]
fn dma_with_a_short_prd_table_reports_errors() {
    let mut r = rig();
    r.enable_bus_master();
    r.prd(&[(BUF as u32, 512)]);
    r.lba28(PRIMARY_BASE, 0, 0, 2);
    r.outb(PRIMARY_BASE + 7, cmd::READ_DMA);
    r.outb(BM_PORT, bm::CMD_START | bm::CMD_TO_MEMORY);
    assert_eq!(
        r.inb(BM_PORT + 2) & 7,
        bm::STATUS_ERROR | bm::STATUS_INTERRUPT
    );
    assert_eq!(r.status(PRIMARY_BASE) & status::ERR, status::ERR);
    // A PRD pointing outside guest memory.
    r.outb(BM_PORT, 0);
    r.prd(&[(0xfff0_0000, 512)]);
    r.lba28(PRIMARY_BASE, 0, 0, 1);
    r.outb(PRIMARY_BASE + 7, cmd::READ_DMA);
    r.outb(BM_PORT, bm::CMD_START | bm::CMD_TO_MEMORY);
    assert_eq!(r.status(PRIMARY_BASE) & status::ERR, status::ERR);
}

#[test]
fn atapi_identify_packet_and_identify_device_abort() {
    let mut r = rig();
    r.select(PRIMARY_BASE, 1, 0);
    r.outb(PRIMARY_BASE + 7, cmd::IDENTIFY);
    assert_eq!(r.status(PRIMARY_BASE) & status::ERR, status::ERR);
    assert_eq!(
        [r.inb(PRIMARY_BASE + 4), r.inb(PRIMARY_BASE + 5)],
        [0x14, 0xeb]
    );
    r.outb(PRIMARY_BASE + 7, cmd::IDENTIFY_PACKET);
    let id = r.read_pio(PRIMARY_BASE, 512);
    assert_eq!(u16::from_le_bytes([id[0], id[1]]), 0x85c0);
    // And a hard disk refuses IDENTIFY PACKET.
    r.select(PRIMARY_BASE, 0, 0);
    r.outb(PRIMARY_BASE + 7, cmd::IDENTIFY_PACKET);
    assert_eq!(r.status(PRIMARY_BASE) & status::ERR, status::ERR);
}

#[test]
fn atapi_inquiry_and_read10_in_byte_count_limited_chunks() {
    let mut r = rig();
    r.packet(
        PRIMARY_BASE,
        1,
        &[scsi::INQUIRY, 0, 0, 0, 36],
        false,
        0xfffe,
    );
    let (inq, _) = r.atapi_pio_in(PRIMARY_BASE);
    assert_eq!(inq.len(), 36);
    assert_eq!(inq[0], 5);
    r.packet(
        PRIMARY_BASE,
        1,
        &[scsi::READ_10, 0, 0, 0, 0, 3, 0, 0, 2],
        false,
        3000,
    );
    let (data, chunks) = r.atapi_pio_in(PRIMARY_BASE);
    assert_eq!(chunks, [3000, 1096], "4096 bytes in chunks of at most 3000");
    assert_eq!(u32::from_le_bytes(data[..4].try_into().unwrap()), 3);
    assert_eq!(u32::from_le_bytes(data[2048..2052].try_into().unwrap()), 4);
    assert_eq!(r.inb(PRIMARY_CONTROL), status::DRDY | status::DSC);
}

#[test]
fn atapi_read12_by_dma() {
    let mut r = rig();
    r.enable_bus_master();
    r.prd(&[(BUF as u32, 0), (BUF as u32 + 0x10000, 0x2000)]);
    r.select(PRIMARY_BASE, 1, 0);
    r.outb(BM_PORT, bm::CMD_START | bm::CMD_TO_MEMORY);
    r.packet(
        PRIMARY_BASE,
        1,
        &[scsi::READ_12, 0, 0, 0, 0, 10, 0, 0, 0, 36],
        true,
        0,
    );
    assert!(r.irq.level(14));
    assert_eq!(r.inb(PRIMARY_BASE + 2) & 3, 3);
    assert_eq!(r.inb(BM_PORT + 2) & 7, bm::STATUS_INTERRUPT);
    for (i, at) in [
        (0u32, BUF),
        (32, BUF + 0x10000),
        (35, BUF + 0x10000 + 3 * 2048),
    ] {
        let mut b = [0u8; 4];
        r.mem.read_at(at, &mut b).unwrap();
        assert_eq!(u32::from_le_bytes(b), 10 + i);
    }
}

#[test]
fn atapi_errors_set_sense_for_request_sense() {
    let mut r = rig();
    r.packet(SECONDARY_BASE, 0, &[scsi::TEST_UNIT_READY], false, 0);
    assert!(r.irq.level(15));
    let s = r.status(SECONDARY_BASE);
    assert_eq!(s & status::ERR, status::ERR);
    assert_eq!(
        r.inb(SECONDARY_BASE + 1),
        0x24,
        "sense key NOT READY in the error register"
    );
    r.packet(
        SECONDARY_BASE,
        0,
        &[scsi::REQUEST_SENSE, 0, 0, 0, 18],
        false,
        18,
    );
    let (sense, _) = r.atapi_pio_in(SECONDARY_BASE);
    assert_eq!((sense[2], sense[12]), (0x02, 0x3a));
    // Insert a medium: unit attention first, then ready.
    r.ide
        .set_cdrom_medium(1, 0, Some(cd_medium(8) as Arc<dyn Disk>))
        .unwrap();
    r.packet(SECONDARY_BASE, 0, &[scsi::TEST_UNIT_READY], false, 0);
    assert_eq!(r.inb(SECONDARY_BASE + 1) >> 4, 0x6);
    r.packet(SECONDARY_BASE, 0, &[scsi::TEST_UNIT_READY], false, 0);
    assert_eq!(r.status(SECONDARY_BASE), status::DRDY | status::DSC);
    assert!(r.ide.set_cdrom_medium(0, 0, None).is_err());
    assert!(r.ide.set_cdrom_medium(2, 0, None).is_err());
}

#[test]
fn nien_masks_the_line_and_bm_interrupt_latches() {
    let mut r = rig();
    r.outb(PRIMARY_CONTROL, 0x02);
    r.select(PRIMARY_BASE, 0, 0);
    r.outb(PRIMARY_BASE + 7, cmd::FLUSH_CACHE);
    assert!(!r.irq.level(14), "nIEN");
    r.outb(PRIMARY_CONTROL, 0x00);
    assert!(r.irq.level(14), "pending interrupt shows once enabled");
    assert_eq!(
        r.inb(PRIMARY_CONTROL),
        status::DRDY | status::DSC,
        "alt status does not ack"
    );
    assert!(r.irq.level(14));
    r.status(PRIMARY_BASE);
    assert!(!r.irq.level(14));
    r.enable_bus_master();
    assert_eq!(
        r.inb(BM_PORT + 2) & bm::STATUS_INTERRUPT,
        bm::STATUS_INTERRUPT
    );
}

#[test]
fn set_features_and_misc_commands() {
    let mut r = rig();
    r.select(PRIMARY_BASE, 0, 0);
    for (feature, count, ok) in [
        (0x03, 0x22, true),
        (0x03, 0x45, true),
        (0x03, 0x99, false),
        (0x02, 0, true),
        (0x82, 0, true),
        (0x42, 0, false),
    ] {
        r.outb(PRIMARY_BASE + 1, feature);
        r.outb(PRIMARY_BASE + 2, count);
        r.outb(PRIMARY_BASE + 7, cmd::SET_FEATURES);
        assert_eq!(
            r.status(PRIMARY_BASE) & status::ERR == 0,
            ok,
            "{feature:#x}/{count:#x}"
        );
    }
    r.outb(PRIMARY_BASE + 7, cmd::CHECK_POWER_MODE);
    assert_eq!(r.inb(PRIMARY_BASE + 2), 0xff);
    r.outb(PRIMARY_BASE + 7, cmd::READ_NATIVE_MAX_EXT);
    assert_eq!(r.inb(PRIMARY_BASE + 3), ((DISK_SECTORS - 1) & 0xff) as u8);
    r.outb(PRIMARY_BASE + 7, 0x55);
    assert_eq!(r.inb(PRIMARY_BASE + 1), crate::protocol::error::ABRT);
    r.outb(PRIMARY_BASE + 7, cmd::EXECUTE_DIAGNOSTIC);
    assert_eq!(r.inb(PRIMARY_BASE + 1), 1);
}

#[test]
fn construction_errors() {
    let mem = GuestMemory::allocate(0x10000);
    let big = Arc::new(RamLayer::new_zeroed(1 << 20, 4096).unwrap());
    let err = IdeController::new(
        mem,
        [LineInterrupt::detached(), LineInterrupt::detached()],
        [[Some(IdeDrive::HardDisk(big)), None], [None, None]],
    )
    .unwrap_err();
    assert_eq!(err, IdeError::UnsupportedSectorSize(4096));
}

#[test]
fn garbage_never_panics() {
    let mut r = rig();
    r.enable_bus_master();
    let ports = [
        0x1f0u16,
        0x1f1,
        0x1f2,
        0x1f3,
        0x1f4,
        0x1f5,
        0x1f6,
        0x1f7,
        0x3f6,
        0x170,
        0x172,
        0x176,
        0x177,
        0x376,
        BM_PORT,
        BM_PORT + 2,
        BM_PORT + 4,
        BM_PORT + 8,
    ];
    let mut x: u64 = 0x0123_4567_89ab_cdef;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = ports[(x % ports.len() as u64) as usize];
        let v = (x >> 8) as u8;
        let v = if port & 7 == 7 && x & 0x100 != 0 {
            [
                0xec, 0xa1, 0xa0, 0x20, 0x24, 0x30, 0xc8, 0xca, 0x25, 0x35, 0xc4, 0xc6, 0xe7, 0xef,
                0x90,
            ][(x >> 16) as usize % 15]
        } else {
            v
        };
        if x & (1 << 40) != 0 {
            let _ = r.ide.io_write(port, &[v]);
        } else if port & 7 == 0 && port < 0x200 {
            let mut w = [0u8; 2];
            let _ = r.ide.io_read(port, &mut w);
            let _ = r.ide.io_write(port, &w);
        } else {
            let mut b = [0u8];
            let _ = r.ide.io_read(port, &mut b);
        }
    }
}
