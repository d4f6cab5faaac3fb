//! Valid VHDX images (dynamic with data, one left with a dirty log, a differencing child with
//! partially present blocks, fixed with 4 KiB sectors) with fuzzer-chosen bytes patched into
//! their structures, CRC-32Cs optionally recomputed (headers, region tables, the first log
//! entry) so mutations reach the parsers, then fuzzer-chosen reads, writes and flushes.
//! Nothing may panic or grow the file past a cap.

#![no_main]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use image_file::ImageFile;
use image_file::MemFile;
use libfuzzer_sys::fuzz_target;
use vhdx::CreateParams;
use vhdx::Vhdx;

const MIB: usize = 1 << 20;

#[derive(Arbitrary, Debug)]
enum Anchor {
    FileId,
    Header1,
    Header2,
    RegionTable1,
    RegionTable2,
    Log,
    MetadataTable,
    MetadataItems,
    Bat,
    Data,
}

#[derive(Arbitrary, Debug)]
struct Patch {
    at: Anchor,
    offset: u16,
    bytes: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Read { sector: u32, count: u8 },
    Write { sector: u32, count: u8, fill: u8 },
    Flush,
}

#[derive(Arbitrary, Debug)]
struct Input {
    template: u8,
    patches: Vec<Patch>,
    reseal: bool,
    truncate: Option<u32>,
    writable: bool,
    ops: Vec<Op>,
}

/// A copy-on-write file over a template: each run copies only the 4 KiB pages it changes, so
/// a multi-megabyte template costs nothing per run.
struct CowFile {
    base: &'static [u8],
    state: Mutex<CowState>,
    cap: u64,
}

struct CowState {
    pages: HashMap<u64, Box<[u8; 4096]>>,
    len: u64,
    /// Template bytes at or past this offset read as zero (the file was truncated there).
    base_limit: u64,
}

impl CowFile {
    fn new(base: &'static [u8], cap: u64) -> Self {
        Self {
            base,
            state: Mutex::new(CowState {
                pages: HashMap::new(),
                len: base.len() as u64,
                base_limit: base.len() as u64,
            }),
            cap,
        }
    }
}

impl CowState {
    fn page(&self, base: &[u8], n: u64) -> [u8; 4096] {
        if let Some(p) = self.pages.get(&n) {
            return **p;
        }
        let mut p = [0u8; 4096];
        let start = n * 4096;
        let end = (start + 4096).min(self.base_limit);
        if start < end {
            p[..(end - start) as usize].copy_from_slice(&base[start as usize..end as usize]);
        }
        p
    }
}

impl ImageFile for CowFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let s = self.state.lock().unwrap();
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= s.len)
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        let mut at = offset;
        while at < end {
            let page = s.page(self.base, at / 4096);
            let in_page = (at % 4096) as usize;
            let n = (4096 - in_page).min((end - at) as usize);
            let dst = (at - offset) as usize;
            buf[dst..dst + n].copy_from_slice(&page[in_page..in_page + n]);
            at += n as u64;
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        let mut s = self.state.lock().unwrap();
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.cap)
            .ok_or(std::io::ErrorKind::FileTooLarge)?;
        let mut at = offset;
        while at < end {
            let n_page = at / 4096;
            let mut page = s.page(self.base, n_page);
            let in_page = (at % 4096) as usize;
            let n = (4096 - in_page).min((end - at) as usize);
            let src = (at - offset) as usize;
            page[in_page..in_page + n].copy_from_slice(&buf[src..src + n]);
            s.pages.insert(n_page, Box::new(page));
            at += n as u64;
        }
        s.len = s.len.max(end);
        Ok(())
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.state.lock().unwrap().len)
    }

    fn set_size(&self, len: u64) -> std::io::Result<()> {
        if len > self.cap {
            return Err(std::io::ErrorKind::FileTooLarge.into());
        }
        let mut s = self.state.lock().unwrap();
        if len < s.len {
            // Forget everything past the new end, keeping the head of a partial page.
            let keep = len.div_ceil(4096);
            s.pages.retain(|&n, _| n < keep);
            if len % 4096 != 0 {
                let n = len / 4096;
                let mut page = s.page(self.base, n);
                page[(len % 4096) as usize..].fill(0);
                s.pages.insert(n, Box::new(page));
            }
            s.base_limit = s.base_limit.min(len);
        }
        s.len = len;
        Ok(())
    }

    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Templates {
    dynamic: Vec<u8>,
    dirty: Vec<u8>,
    child: Vec<u8>,
    fixed4k: Vec<u8>,
}

fn small(size: u64) -> CreateParams {
    CreateParams {
        block_size: MIB as u32,
        ..CreateParams::dynamic(size)
    }
}

fn templates() -> &'static Templates {
    static T: OnceLock<Templates> = OnceLock::new();
    T.get_or_init(|| {
        let file = Arc::new(MemFile::new());
        vhdx::create(&*file, &small(8 << 20)).unwrap();
        let vhdx = Vhdx::open(file.clone(), false).unwrap();
        vhdx.write(0, &[1; 4096]).unwrap();
        vhdx.write(5 << 20, &[2; 8192]).unwrap();
        let dirty = file.to_vec();
        drop(vhdx);
        let dynamic = file.to_vec();

        let parent = Vhdx::open(Arc::new(MemFile::from_vec(dynamic.clone())), true).unwrap();
        let child_file = Arc::new(MemFile::new());
        vhdx::create_differencing(&*child_file, &parent, "p.vhdx", "/p.vhdx").unwrap();
        let mut child = Vhdx::open(child_file.clone(), false).unwrap();
        child.set_parent(Arc::new(parent)).unwrap();
        child.write(1024, &[3; 1536]).unwrap();
        child.write(6 << 20, &[4; 512]).unwrap();
        drop(child);

        let fixed_file = Arc::new(MemFile::new());
        vhdx::create(
            &*fixed_file,
            &CreateParams {
                fixed: true,
                logical_sector_size: 4096,
                physical_sector_size: 4096,
                ..small(2 << 20)
            },
        )
        .unwrap();
        Templates {
            dynamic,
            dirty,
            child: child_file.to_vec(),
            fixed4k: fixed_file.to_vec(),
        }
    })
}

fn le32(f: &CowFile, at: u64) -> Option<u32> {
    let mut b = [0u8; 4];
    f.read_at(at, &mut b).ok()?;
    Some(u32::from_le_bytes(b))
}

fn seal(f: &CowFile, at: u64, len: usize) {
    let mut area = vec![0u8; len];
    if f.read_at(at, &mut area).is_err() {
        return;
    }
    area[4..8].fill(0);
    let crc = crc32c::crc32c(&area);
    let _ = f.write_at(at + 4, &crc.to_le_bytes());
}

fn reseal(f: &CowFile) {
    seal(f, 64 * 1024, 4096);
    seal(f, 128 * 1024, 4096);
    seal(f, 192 * 1024, 64 * 1024);
    seal(f, 256 * 1024, 64 * 1024);
    // The first log entry, if its length is sane.
    if let Some(len) = le32(f, MIB as u64 + 8).filter(|&l| l >= 4096 && l as usize <= MIB) {
        seal(f, MIB as u64, len as usize);
    }
}

fn anchor(at: &Anchor) -> usize {
    match at {
        Anchor::FileId => 0,
        Anchor::Header1 => 64 * 1024,
        Anchor::Header2 => 128 * 1024,
        Anchor::RegionTable1 => 192 * 1024,
        Anchor::RegionTable2 => 256 * 1024,
        Anchor::Log => MIB,
        Anchor::MetadataTable => 2 * MIB,
        Anchor::MetadataItems => 2 * MIB + 64 * 1024,
        Anchor::Bat => 3 * MIB,
        Anchor::Data => 4 * MIB,
    }
}

fuzz_target!(|input: Input| {
    let t = templates();
    let (template, parent) = match input.template % 4 {
        0 => (t.dynamic.as_slice(), None),
        1 => (t.dirty.as_slice(), None),
        2 => (t.child.as_slice(), Some(t.dynamic.as_slice())),
        _ => (t.fixed4k.as_slice(), None),
    };
    let cap = template.len() as u64 + (64 << 20);
    let file = Arc::new(CowFile::new(template, cap));
    for p in input.patches.iter().take(16) {
        let start = (anchor(&p.at) + usize::from(p.offset)) as u64;
        let room = template.len().saturating_sub(start as usize);
        let _ = file.write_at(start, &p.bytes[..p.bytes.len().min(room)]);
    }
    if input.reseal {
        reseal(&file);
    }
    if let Some(n) = input.truncate {
        let _ = file.set_size(u64::from(n));
    }
    let Ok(mut vhdx) = Vhdx::open(file.clone(), !input.writable) else {
        return;
    };
    if let Some(parent) = parent {
        let parent = Vhdx::open(Arc::new(CowFile::new(parent, cap)), true).unwrap();
        let _ = vhdx.set_parent(Arc::new(parent));
    }
    let lss = u64::from(vhdx.logical_sector_size());
    let sectors = vhdx.disk_size() / lss;
    for op in input.ops.iter().take(32) {
        match *op {
            Op::Read { sector, count } => {
                let mut buf = vec![0u8; usize::from(count) * lss as usize];
                let _ = vhdx.read(u64::from(sector) % (sectors + 2) * lss, &mut buf);
            }
            Op::Write {
                sector,
                count,
                fill,
            } => {
                let buf = vec![fill; usize::from(count) * lss as usize];
                let _ = vhdx.write(u64::from(sector) % (sectors + 2) * lss, &buf);
            }
            Op::Flush => {
                let _ = vhdx.flush();
            }
        }
    }
    drop(vhdx);
    assert!(file.size().unwrap() <= cap);
});
