//! INQUIRY: standard data and the vital product data pages.

use crate::DataBuffer;
use crate::MAX_UNMAP_DESCRIPTORS;
use crate::ScsiDisk;
use crate::ScsiResult;
use crate::Sense;
use crate::be16;
use crate::data_in;
use crate::spec::asc;

/// Peripheral device type: direct access block device.
const DIRECT_ACCESS: u8 = 0x00;
/// Supported VPD pages without / with logical block provisioning.
const PAGES: [u8; 5] = [0x00, 0x80, 0x83, 0xb0, 0xb1];

impl ScsiDisk {
    pub(crate) fn inquiry(&self, cdb: &[u8], buffer: &mut dyn DataBuffer) -> ScsiResult {
        let evpd = cdb[1] & 0x01 != 0;
        let page = cdb[2];
        let alloc = usize::from(be16(cdb, 3));
        if cdb[1] & 0x02 != 0 || (!evpd && page != 0) {
            return ScsiResult::check(Sense::illegal(asc::INVALID_FIELD_IN_CDB));
        }
        if !evpd {
            return data_in(buffer, &self.standard_inquiry(), alloc);
        }
        let body = match page {
            0x00 => self.supported_pages(),
            0x80 => self.serial.as_bytes().to_vec(),
            0x83 => self.device_identification(),
            0xb0 => self.block_limits(),
            0xb1 => {
                let mut b = vec![0u8; 0x3c];
                b[0..2].copy_from_slice(&1u16.to_be_bytes()); // non-rotating medium
                b
            }
            0xb2 if self.unmap_supported() => {
                // LBPU (UNMAP supported); provisioning type 2 (thin).
                vec![0, 0x80, 0x02, 0]
            }
            _ => return ScsiResult::check(Sense::illegal(asc::INVALID_FIELD_IN_CDB)),
        };
        let mut data = vec![DIRECT_ACCESS, page];
        data.extend_from_slice(&(body.len() as u16).to_be_bytes());
        data.extend_from_slice(&body);
        data_in(buffer, &data, alloc)
    }

    fn standard_inquiry(&self) -> [u8; 96] {
        let mut d = [0u8; 96];
        d[0] = DIRECT_ACCESS;
        d[1] = 0; // not removable
        d[2] = 0x05; // SPC-3
        d[3] = 0x02; // response data format 2
        d[4] = (d.len() - 5) as u8;
        d[7] = 0x02; // CMDQUE
        d[8..16].copy_from_slice(&self.config.vendor);
        d[16..32].copy_from_slice(&self.config.product);
        d[32..36].copy_from_slice(&self.config.revision);
        d
    }

    fn supported_pages(&self) -> Vec<u8> {
        let mut p = PAGES.to_vec();
        if self.unmap_supported() {
            p.push(0xb2);
        }
        p
    }

    fn device_identification(&self) -> Vec<u8> {
        let mut d = Vec::new();
        // NAA 6 (IEEE registered extended), binary, associated with the logical unit.
        d.extend_from_slice(&[0x01, 0x03, 0x00, 16]);
        let mut naa = self.id;
        naa[0] = 0x60 | (naa[0] & 0x0f);
        d.extend_from_slice(&naa);
        // T10 vendor identification, ASCII: vendor + serial.
        let t10: Vec<u8> = self
            .config
            .vendor
            .iter()
            .chain(self.serial.as_bytes())
            .copied()
            .collect();
        d.extend_from_slice(&[0x02, 0x01, 0x00, t10.len() as u8]);
        d.extend_from_slice(&t10);
        d
    }

    fn block_limits(&self) -> Vec<u8> {
        // Offsets below are relative to the page body (page offset - 4).
        let mut b = vec![0u8; 0x3c];
        let max_blocks = self.config.max_transfer_bytes / self.sector_size.max(1);
        let phys = (self.disk.physical_sector_size() / self.sector_size.max(1)).max(1) as u16;
        b[2..4].copy_from_slice(&phys.to_be_bytes()); // optimal transfer length granularity
        b[4..8].copy_from_slice(&max_blocks.to_be_bytes()); // maximum transfer length
        b[8..12].copy_from_slice(&max_blocks.to_be_bytes()); // optimal transfer length
        if self.unmap_supported() {
            b[16..20].copy_from_slice(&u32::MAX.to_be_bytes()); // max UNMAP LBA count
            b[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
            b[24..28].copy_from_slice(&u32::from(phys).to_be_bytes()); // UNMAP granularity
        }
        b
    }
}
