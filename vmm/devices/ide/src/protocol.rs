//! ATA/ATAPI register layout, commands and SCSI sense codes.
//!
//! Spec: ATA/ATAPI-6 (T13/1410D) for the task file, status/error bits, the command set and
//! IDENTIFY data; SFF-8038i / PIIX3 datasheet for bus-master IDE; MMC-3/SPC-3 for the packet
//! commands and sense data.

/// Command block register offsets from the channel's base port.
pub mod reg {
    /// Data (16-bit PIO).
    pub const DATA: u16 = 0;
    /// Error (read) / features (write).
    pub const ERROR_FEATURES: u16 = 1;
    /// Sector count / ATAPI interrupt reason.
    pub const COUNT: u16 = 2;
    /// LBA 7:0 / sector number.
    pub const LBA_LOW: u16 = 3;
    /// LBA 15:8 / cylinder low / ATAPI byte count low.
    pub const LBA_MID: u16 = 4;
    /// LBA 23:16 / cylinder high / ATAPI byte count high.
    pub const LBA_HIGH: u16 = 5;
    /// Device/head.
    pub const DEVICE: u16 = 6;
    /// Status (read) / command (write).
    pub const STATUS_COMMAND: u16 = 7;
}

/// Status register bits.
pub mod status {
    /// Busy.
    pub const BSY: u8 = 0x80;
    /// Device ready.
    pub const DRDY: u8 = 0x40;
    /// Device fault.
    pub const DF: u8 = 0x20;
    /// Seek complete (obsolete, still expected set by old software).
    pub const DSC: u8 = 0x10;
    /// Data request.
    pub const DRQ: u8 = 0x08;
    /// Error.
    pub const ERR: u8 = 0x01;
}

/// Error register bits.
pub mod error {
    /// Uncorrectable data error.
    pub const UNC: u8 = 0x40;
    /// ID not found (address out of range).
    pub const IDNF: u8 = 0x10;
    /// Command aborted.
    pub const ABRT: u8 = 0x04;
}

/// Device control register bits.
pub mod control {
    /// Interrupts disabled.
    pub const NIEN: u8 = 0x02;
    /// Software reset.
    pub const SRST: u8 = 0x04;
    /// Read the previous (high-order) 48-bit register contents.
    pub const HOB: u8 = 0x80;
}

/// Device register bits.
pub mod device {
    /// Device 1 selected.
    pub const DEV: u8 = 0x10;
    /// LBA addressing.
    pub const LBA: u8 = 0x40;
}

/// ATAPI interrupt reason (sector count register) bits.
pub mod reason {
    /// Command (1) or data (0).
    pub const COD: u8 = 0x01;
    /// To the host (1) or to the device (0).
    pub const IO: u8 = 0x02;
}

/// ATA commands.
#[allow(missing_docs)]
pub mod cmd {
    pub const NOP: u8 = 0x00;
    pub const DEVICE_RESET: u8 = 0x08;
    pub const RECALIBRATE: u8 = 0x10;
    pub const READ_SECTORS: u8 = 0x20;
    pub const READ_SECTORS_NORETRY: u8 = 0x21;
    pub const READ_SECTORS_EXT: u8 = 0x24;
    pub const READ_DMA_EXT: u8 = 0x25;
    pub const READ_NATIVE_MAX_EXT: u8 = 0x27;
    pub const READ_MULTIPLE_EXT: u8 = 0x29;
    pub const WRITE_SECTORS: u8 = 0x30;
    pub const WRITE_SECTORS_NORETRY: u8 = 0x31;
    pub const WRITE_SECTORS_EXT: u8 = 0x34;
    pub const WRITE_DMA_EXT: u8 = 0x35;
    pub const WRITE_MULTIPLE_EXT: u8 = 0x39;
    pub const WRITE_DMA_FUA_EXT: u8 = 0x3d;
    pub const READ_VERIFY: u8 = 0x40;
    pub const READ_VERIFY_NORETRY: u8 = 0x41;
    pub const READ_VERIFY_EXT: u8 = 0x42;
    pub const SEEK: u8 = 0x70;
    pub const EXECUTE_DIAGNOSTIC: u8 = 0x90;
    pub const INITIALIZE_PARAMETERS: u8 = 0x91;
    pub const PACKET: u8 = 0xa0;
    pub const IDENTIFY_PACKET: u8 = 0xa1;
    pub const READ_MULTIPLE: u8 = 0xc4;
    pub const WRITE_MULTIPLE: u8 = 0xc5;
    pub const SET_MULTIPLE: u8 = 0xc6;
    pub const READ_DMA: u8 = 0xc8;
    pub const READ_DMA_NORETRY: u8 = 0xc9;
    pub const WRITE_DMA: u8 = 0xca;
    pub const WRITE_DMA_NORETRY: u8 = 0xcb;
    pub const WRITE_MULTIPLE_FUA_EXT: u8 = 0xce;
    pub const STANDBY_IMMEDIATE: u8 = 0xe0;
    pub const IDLE_IMMEDIATE: u8 = 0xe1;
    pub const STANDBY: u8 = 0xe2;
    pub const IDLE: u8 = 0xe3;
    pub const CHECK_POWER_MODE: u8 = 0xe5;
    pub const SLEEP: u8 = 0xe6;
    pub const FLUSH_CACHE: u8 = 0xe7;
    pub const IDENTIFY: u8 = 0xec;
    pub const FLUSH_CACHE_EXT: u8 = 0xea;
    pub const SET_FEATURES: u8 = 0xef;
    pub const READ_NATIVE_MAX: u8 = 0xf8;
}

/// SCSI/MMC operation codes the CD-ROM implements.
#[allow(missing_docs)]
pub mod scsi {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
    pub const READ_CAPACITY: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const SEEK_10: u8 = 0x2b;
    pub const READ_TOC: u8 = 0x43;
    pub const GET_CONFIGURATION: u8 = 0x46;
    pub const GET_EVENT_STATUS_NOTIFICATION: u8 = 0x4a;
    pub const READ_DISC_INFORMATION: u8 = 0x51;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const READ_12: u8 = 0xa8;
    pub const SET_CD_SPEED: u8 = 0xbb;
    pub const READ_CD: u8 = 0xbe;
}

/// A sense key with its additional sense code and qualifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    /// Sense key.
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
}

impl Sense {
    /// No sense.
    pub const NONE: Sense = Sense::new(0x00, 0x00, 0x00);
    /// NOT READY, MEDIUM NOT PRESENT.
    pub const NO_MEDIUM: Sense = Sense::new(0x02, 0x3a, 0x00);
    /// MEDIUM ERROR, UNRECOVERED READ ERROR.
    pub const READ_ERROR: Sense = Sense::new(0x03, 0x11, 0x00);
    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
    pub const INVALID_OPCODE: Sense = Sense::new(0x05, 0x20, 0x00);
    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const LBA_OUT_OF_RANGE: Sense = Sense::new(0x05, 0x21, 0x00);
    /// ILLEGAL REQUEST, INVALID FIELD IN CDB.
    pub const INVALID_FIELD: Sense = Sense::new(0x05, 0x24, 0x00);
    /// UNIT ATTENTION, NOT READY TO READY CHANGE (medium may have changed).
    pub const MEDIUM_CHANGED: Sense = Sense::new(0x06, 0x28, 0x00);

    /// A sense triple.
    pub const fn new(key: u8, asc: u8, ascq: u8) -> Self {
        Self { key, asc, ascq }
    }
}

/// Bus-master IDE register offsets within a channel's 8 bytes of BAR4.
pub mod bm {
    /// Command: bit 0 start/stop, bit 3 direction (1 = write to memory).
    pub const COMMAND: u16 = 0;
    /// Status: bit 0 active, bit 1 error, bit 2 interrupt, bits 5-6 drive DMA capable.
    pub const STATUS: u16 = 2;
    /// PRD table address (dword aligned).
    pub const PRD_TABLE: u16 = 4;

    /// Command: start.
    pub const CMD_START: u8 = 0x01;
    /// Command: bus master writes to memory (device to host).
    pub const CMD_TO_MEMORY: u8 = 0x08;
    /// Status: transfer active.
    pub const STATUS_ACTIVE: u8 = 0x01;
    /// Status: error (write 1 to clear).
    pub const STATUS_ERROR: u8 = 0x02;
    /// Status: interrupt (write 1 to clear).
    pub const STATUS_INTERRUPT: u8 = 0x04;
    /// Status: drive 0/1 DMA capable (software-set).
    pub const STATUS_CAPABLE: u8 = 0x60;
}
