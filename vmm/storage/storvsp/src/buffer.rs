//! The guest data buffer of a SCSI request: the page range of a GPA-direct packet.

use guest_mem::GuestMemory;
use scsi_disk::BufferError;
use scsi_disk::DataBuffer;
use vmbus_ring::GpaRange;

/// A request's data buffer in guest memory, at most `len` bytes of `range`. Built only from
/// a range whose pages were checked to be guest RAM.
pub(crate) struct GuestBuffer<'a> {
    memory: &'a GuestMemory,
    range: Option<&'a GpaRange>,
    len: usize,
}

impl<'a> GuestBuffer<'a> {
    pub fn new(memory: &'a GuestMemory, range: Option<&'a GpaRange>, len: usize) -> Self {
        let len = range.map_or(0, |r| len.min(r.byte_count as usize));
        Self { memory, range, len }
    }
}

impl DataBuffer for GuestBuffer<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<(), BufferError> {
        let range = self.range.ok_or(BufferError { offset })?;
        if offset
            .checked_add(data.len())
            .is_none_or(|end| end > self.len)
        {
            return Err(BufferError { offset });
        }
        range
            .write(self.memory, offset as u64, data)
            .map_err(|_| BufferError { offset })
    }

    fn read_at(&mut self, offset: usize, data: &mut [u8]) -> Result<(), BufferError> {
        let range = self.range.ok_or(BufferError { offset })?;
        if offset
            .checked_add(data.len())
            .is_none_or(|end| end > self.len)
        {
            return Err(BufferError { offset });
        }
        range
            .read(self.memory, offset as u64, data)
            .map_err(|_| BufferError { offset })
    }
}
