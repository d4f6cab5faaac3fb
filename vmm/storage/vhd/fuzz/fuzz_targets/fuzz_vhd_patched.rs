//! Valid VHD images (dynamic with data and a partial bitmap, fixed, differencing) with
//! fuzzer-chosen bytes patched into their structures, checksums optionally recomputed so the
//! mutation gets past them, then a fuzzer-chosen sequence of reads, writes and flushes.
//! Nothing may panic; a differencing image's parent is the (unpatched) dynamic template.

#![no_main]

use std::sync::Arc;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use image_file::ImageFile;
use image_file::MemFile;
use libfuzzer_sys::fuzz_target;
use vhd::CreateParams;
use vhd::Vhd;

#[derive(Arbitrary, Debug)]
enum Anchor {
    FooterCopy,
    DynamicHeader,
    Locators,
    Bat,
    FirstBlock,
    Footer,
    Anywhere,
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

struct Templates {
    dynamic: Vec<u8>,
    fixed: Vec<u8>,
    child: Vec<u8>,
}

fn build(params: &CreateParams, writes: &[(u64, u8)]) -> Vec<u8> {
    let file = Arc::new(MemFile::new());
    vhd::create(&*file, params).unwrap();
    let vhd = Vhd::open(file.clone(), false).unwrap();
    for &(offset, fill) in writes {
        vhd.write(offset, &[fill; 4096]).unwrap();
    }
    drop(vhd);
    file.to_vec()
}

fn templates() -> &'static Templates {
    static T: OnceLock<Templates> = OnceLock::new();
    T.get_or_init(|| {
        let small = CreateParams {
            block_size: 64 * 1024,
            ..CreateParams::dynamic(2 << 20)
        };
        let dynamic = build(&small, &[(0, 1), (70_000 & !511, 2), ((2 << 20) - 4096, 3)]);
        let fixed = build(&CreateParams::fixed(256 * 1024), &[(4096, 4)]);
        let parent = Vhd::open(Arc::new(MemFile::from_vec(dynamic.clone())), true).unwrap();
        let child_file = Arc::new(MemFile::new());
        vhd::create_differencing(&*child_file, &parent, "p.vhd", "/p.vhd", 64 * 1024).unwrap();
        let mut child = Vhd::open(child_file.clone(), false).unwrap();
        child.set_parent(Arc::new(parent)).unwrap();
        child.write(1024, &[5; 1536]).unwrap();
        drop(child);
        Templates {
            dynamic,
            fixed,
            child: child_file.to_vec(),
        }
    })
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Recomputes the footer (both copies) and dynamic header checksums, if they are in range.
fn reseal(bytes: &mut [u8]) {
    let sum = |b: &[u8], hole: usize| -> u32 {
        !b.iter()
            .enumerate()
            .filter(|(i, _)| !(hole..hole + 4).contains(i))
            .fold(0u32, |s, (_, &x)| s.wrapping_add(u32::from(x)))
    };
    let len = bytes.len();
    for at in [0, len.saturating_sub(512)] {
        if let Some(f) = bytes.get_mut(at..at + 512) {
            let c = sum(f, 64);
            f[64..68].copy_from_slice(&c.to_be_bytes());
        }
    }
    let header = be64(bytes, len.saturating_sub(512) + 16).unwrap_or(512) as usize;
    if let Some(h) = header
        .checked_add(1024)
        .and_then(|end| bytes.get_mut(header..end))
    {
        let c = sum(h, 36);
        h[36..40].copy_from_slice(&c.to_be_bytes());
    }
}

fn anchor(bytes: &[u8], at: &Anchor) -> usize {
    let len = bytes.len();
    match at {
        Anchor::FooterCopy => 0,
        Anchor::DynamicHeader => 512,
        Anchor::Locators => 1536,
        Anchor::Bat => be64(bytes, 512 + 16).unwrap_or(1536) as usize,
        Anchor::FirstBlock => be32(bytes, be64(bytes, 512 + 16).unwrap_or(1536) as usize)
            .map_or(0, |e| e as usize * 512),
        Anchor::Footer => len.saturating_sub(512),
        Anchor::Anywhere => 0,
    }
}

fuzz_target!(|input: Input| {
    let t = templates();
    let (template, parent) = match input.template % 3 {
        0 => (&t.dynamic, None),
        1 => (&t.fixed, None),
        _ => (&t.child, Some(&t.dynamic)),
    };
    let mut bytes = template.clone();
    for p in input.patches.iter().take(16) {
        let start = anchor(&bytes, &p.at).saturating_add(usize::from(p.offset));
        let end = start.saturating_add(p.bytes.len()).min(bytes.len());
        if start < end {
            bytes[start..end].copy_from_slice(&p.bytes[..end - start]);
        }
    }
    if input.reseal {
        reseal(&mut bytes);
    }
    if let Some(n) = input.truncate {
        bytes.truncate(n as usize);
    }
    let cap = bytes.len() as u64 + (4 << 20);
    let file = Arc::new(MemFile::with_max_len(bytes, cap));
    let Ok(mut vhd) = Vhd::open(file.clone(), !input.writable) else {
        return;
    };
    if let Some(parent) = parent {
        let parent = Vhd::open(Arc::new(MemFile::from_vec(parent.clone())), true).unwrap();
        let _ = vhd.set_parent(Arc::new(parent));
    }
    let sectors = vhd.disk_size() / 512;
    for op in input.ops.iter().take(32) {
        match *op {
            Op::Read { sector, count } => {
                let mut buf = vec![0u8; usize::from(count) * 512];
                let _ = vhd.read(u64::from(sector) % (sectors + 2) * 512, &mut buf);
            }
            Op::Write {
                sector,
                count,
                fill,
            } => {
                let buf = vec![fill; usize::from(count) * 512];
                let _ = vhd.write(u64::from(sector) % (sectors + 2) * 512, &buf);
            }
            Op::Flush => {
                let _ = vhd.flush();
            }
        }
    }
    assert!(file.size().unwrap() <= cap);
});
