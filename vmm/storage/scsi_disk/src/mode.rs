//! MODE SENSE(6/10): the caching and control pages.

use crate::DataBuffer;
use crate::ScsiDisk;
use crate::ScsiResult;
use crate::Sense;
use crate::be16;
use crate::data_in;
use crate::spec::asc;
use crate::spec::op;

const PAGE_CACHING: u8 = 0x08;
const PAGE_CONTROL: u8 = 0x0a;
const PAGE_ALL: u8 = 0x3f;

impl ScsiDisk {
    fn caching_page(&self, changeable: bool) -> [u8; 20] {
        let mut p = [0u8; 20];
        p[0] = PAGE_CACHING;
        p[1] = 18;
        if !changeable && self.config.write_cache {
            p[2] = 0x04; // WCE
        }
        p
    }

    fn control_page(&self, changeable: bool) -> [u8; 12] {
        let mut p = [0u8; 12];
        p[0] = PAGE_CONTROL;
        p[1] = 10;
        if !changeable {
            p[3] = 0x10; // unrestricted reordering
        }
        p
    }

    pub(crate) fn mode_sense(&self, cdb: &[u8], buffer: &mut dyn DataBuffer) -> ScsiResult {
        let ten = cdb[0] == op::MODE_SENSE_10;
        let dbd = cdb[1] & 0x08 != 0;
        let pc = cdb[2] >> 6;
        let page = cdb[2] & 0x3f;
        let subpage = cdb[3];
        let alloc = if ten {
            usize::from(be16(cdb, 7))
        } else {
            usize::from(cdb[4])
        };
        if pc == 3 {
            return ScsiResult::check(Sense::illegal(asc::SAVING_PARAMETERS_NOT_SUPPORTED));
        }
        let changeable = pc == 1;
        let mut pages = Vec::new();
        match (page, subpage) {
            (PAGE_CACHING, 0) => pages.extend_from_slice(&self.caching_page(changeable)),
            (PAGE_CONTROL, 0) => pages.extend_from_slice(&self.control_page(changeable)),
            (PAGE_ALL, 0 | 0xff) => {
                pages.extend_from_slice(&self.caching_page(changeable));
                pages.extend_from_slice(&self.control_page(changeable));
            }
            _ => return ScsiResult::check(Sense::illegal(asc::INVALID_FIELD_IN_CDB)),
        }
        let mut block_descriptor = Vec::new();
        if !dbd {
            let blocks = self.sector_count.min(0xff_ffff) as u32;
            block_descriptor.extend_from_slice(&blocks.to_be_bytes());
            block_descriptor[0] = 0; // density code
            block_descriptor.extend_from_slice(&self.sector_size.to_be_bytes());
            block_descriptor[4] = 0; // reserved
        }
        // WP if read-only; DPOFUA (FUA honoured).
        let device_specific = if self.read_only { 0x80 } else { 0 } | 0x10;
        let mut data = Vec::new();
        if ten {
            let len = (6 + block_descriptor.len() + pages.len()) as u16;
            data.extend_from_slice(&len.to_be_bytes());
            data.extend_from_slice(&[0, device_specific, 0, 0]);
            data.extend_from_slice(&(block_descriptor.len() as u16).to_be_bytes());
        } else {
            let len = (3 + block_descriptor.len() + pages.len()) as u8;
            data.extend_from_slice(&[len, 0, device_specific, block_descriptor.len() as u8]);
        }
        data.extend_from_slice(&block_descriptor);
        data.extend_from_slice(&pages);
        data_in(buffer, &data, alloc)
    }
}
