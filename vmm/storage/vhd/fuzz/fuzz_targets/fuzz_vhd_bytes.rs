//! Any bytes as a VHD file: open (read-only and writable) and I/O never panic, and never grow
//! the file past a small cap.

#![no_main]

use std::sync::Arc;

use image_file::MemFile;
use libfuzzer_sys::fuzz_target;
use vhd::Vhd;

fuzz_target!(|data: &[u8]| {
    for read_only in [true, false] {
        let file = Arc::new(MemFile::with_max_len(data.to_vec(), data.len() as u64 + (8 << 20)));
        let Ok(vhd) = Vhd::open(file, read_only) else {
            continue;
        };
        let size = vhd.disk_size();
        let mut buf = vec![0u8; 4096];
        for offset in [0, size / 2, size.saturating_sub(4096), size] {
            let offset = offset & !511;
            let _ = vhd.read(offset, &mut buf);
            let _ = vhd.write(offset, &buf);
        }
        let _ = vhd.flush();
    }
});
