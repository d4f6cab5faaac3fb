//! Disk backend throughput: sequential and random 4 KiB reads and writes on raw, VHD dynamic,
//! VHDX dynamic and memdiff disks, next to `qemu-img bench` on the same files in the same run.
//!
//! `cargo bench -p disk --bench disk_bench` (optionally `-- --size-mb 512 --ops 65536`).
//!
//! The images are fully allocated first (converted from a raw file of random data), so the
//! steady-state rows measure lookup and I/O, not allocation; the `alloc write` row writes
//! sequentially into a fresh dynamic image. Everything is in the host page cache: the numbers
//! are the software cost of each format, which is what differs between them. agar issues one
//! synchronous request at a time from one thread; qemu-img bench runs with `-d 1` (one request
//! in flight) for the same shape. qemu-img bench has no random mode and no memdiff
//! equivalent; those cells are `-`. Each cell is the best of three runs.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use disk::Disk;
use disk::DiskSpec;
use disk::image;
use disk::image::CreateOptions;

const BLOCK: usize = 4096;

struct Config {
    size_mb: u64,
    ops: u64,
}

fn config() -> Config {
    let mut c = Config {
        size_mb: 256,
        ops: 32768,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        match pair[0].as_str() {
            "--size-mb" => c.size_mb = pair[1].parse().expect("--size-mb N"),
            "--ops" => c.ops = pair[1].parse().expect("--ops N"),
            _ => {}
        }
    }
    c
}

/// xorshift: deterministic offsets and data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[derive(Clone, Copy)]
enum Pattern {
    SeqRead,
    RandRead,
    SeqWrite,
    RandWrite,
}

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::SeqRead => "seq read",
            Pattern::RandRead => "rand read",
            Pattern::SeqWrite => "seq write",
            Pattern::RandWrite => "rand write",
        }
    }

    fn is_write(self) -> bool {
        matches!(self, Pattern::SeqWrite | Pattern::RandWrite)
    }
}

/// Runs `ops` 4 KiB requests; returns the elapsed time.
fn run(disk: &dyn Disk, pattern: Pattern, ops: u64) -> Duration {
    let blocks = disk.sector_count() * u64::from(disk.sector_size()) / BLOCK as u64;
    let per_block = BLOCK as u64 / u64::from(disk.sector_size());
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut buf = vec![0u8; BLOCK];
    for b in buf.iter_mut() {
        *b = rng.next() as u8;
    }
    let start = Instant::now();
    for i in 0..ops {
        let block = match pattern {
            Pattern::SeqRead | Pattern::SeqWrite => i % blocks,
            Pattern::RandRead | Pattern::RandWrite => rng.next() % blocks,
        };
        if pattern.is_write() {
            buf[0] = i as u8;
            disk.write(block * per_block, &buf).unwrap();
        } else {
            disk.read(block * per_block, &mut buf).unwrap();
        }
    }
    start.elapsed()
}

fn best_of_3(mut f: impl FnMut() -> Option<Duration>) -> Option<Duration> {
    (0..3).filter_map(|_| f()).min()
}

/// `qemu-img bench` sequential 4 KiB, one request in flight.
fn qemu_bench(path: &Path, format: &str, write: bool, ops: u64) -> Option<Duration> {
    let count = ops.to_string();
    let mut args = vec![
        "bench",
        "-f",
        format,
        "-c",
        &count,
        "-d",
        "1",
        "-s",
        "4096",
        "-S",
        "4096",
        "-t",
        "writeback",
    ];
    if write {
        args.push("-w");
    }
    let path = path.to_str()?;
    args.push(path);
    let out = Command::new("qemu-img").args(&args).output().ok()?;
    if !out.status.success() {
        eprintln!(
            "qemu-img bench {format} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let secs: f64 = text
        .split("Run completed in ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64(secs))
}

fn mb_per_s(ops: u64, d: Duration) -> f64 {
    (ops * BLOCK as u64) as f64 / d.as_secs_f64() / 1e6
}

fn cell(ops: u64, d: Option<Duration>) -> String {
    match d {
        Some(d) => format!(
            "{:>8.0} MB/s {:>7.0}k IOPS",
            mb_per_s(ops, d),
            ops as f64 / d.as_secs_f64() / 1e3
        ),
        None => format!("{:>25}", "-"),
    }
}

struct Subject {
    name: &'static str,
    /// The disk spec agar opens.
    spec: String,
    /// The file and format qemu-img benches, if it applies.
    qemu: Option<(PathBuf, &'static str)>,
}

fn main() {
    let cfg = config();
    let have_qemu = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let dir = tempfile::tempdir().unwrap();
    let size = cfg.size_mb << 20;
    println!(
        "disk_bench: {} MiB disks, {} x 4 KiB requests per cell, best of 3, page cache warm",
        cfg.size_mb, cfg.ops
    );
    if !have_qemu {
        println!("!!! qemu-img not found: the qemu-img columns are empty !!!");
    }

    // A raw file of random data, converted to the other formats (fully allocated).
    // The raw file is written the way agar writes the others (sized, then 1 MiB writes): on
    // ext4 a file written by one large `write` takes 4 KiB overwrites about 2.5x slower, a
    // host effect that would otherwise show up as a raw-format cost.
    let raw = dir.path().join("bench.raw");
    {
        use std::os::unix::fs::FileExt;
        let mut rng = Rng(42);
        let file = std::fs::File::create_new(&raw).unwrap();
        file.set_len(size).unwrap();
        let mut chunk = vec![0u8; 1 << 20];
        for at in (0..size).step_by(chunk.len()) {
            chunk.iter_mut().for_each(|b| *b = rng.next() as u8);
            file.write_all_at(&chunk, at).unwrap();
        }
    }
    let vhd = dir.path().join("bench.vhd");
    let vhdx = dir.path().join("bench.vhdx");
    let memdiff_base = dir.path().join("base.vhdx");
    image::convert(&raw, &vhd, &CreateOptions::default()).unwrap();
    image::convert(&raw, &vhdx, &CreateOptions::default()).unwrap();
    image::convert(&raw, &memdiff_base, &CreateOptions::default()).unwrap();
    // Write back every setup page now, so no row pays for another's dirty pages.
    for path in [&raw, &vhd, &vhdx, &memdiff_base] {
        std::fs::File::open(path).unwrap().sync_all().unwrap();
    }
    let subjects = [
        Subject {
            name: "raw",
            spec: format!("file:{}", raw.display()),
            qemu: Some((raw.clone(), "raw")),
        },
        Subject {
            name: "vhd dynamic",
            spec: format!("file:{}", vhd.display()),
            qemu: Some((vhd.clone(), "vpc")),
        },
        Subject {
            name: "vhdx dynamic",
            spec: format!("file:{}", vhdx.display()),
            qemu: Some((vhdx.clone(), "vhdx")),
        },
        Subject {
            name: "memdiff/vhdx",
            spec: format!("memdiff:file:{}", memdiff_base.display()),
            qemu: None,
        },
    ];

    println!();
    println!(
        "{:<14} {:<11} {:>25} {:>25} {:>8}",
        "disk", "pattern", "agar", "qemu-img bench -d 1", "agar/qemu"
    );
    let mut raw_agar = std::collections::HashMap::new();
    for subject in &subjects {
        let disk: Arc<dyn Disk> = disk::open(&DiskSpec::parse(&subject.spec).unwrap()).unwrap();
        for pattern in [
            Pattern::SeqRead,
            Pattern::RandRead,
            Pattern::SeqWrite,
            Pattern::RandWrite,
        ] {
            let ours = best_of_3(|| Some(run(&*disk, pattern, cfg.ops)));
            let theirs = match (&subject.qemu, pattern) {
                (Some((path, format)), Pattern::SeqRead | Pattern::SeqWrite) if have_qemu => {
                    // Release our handle's dirty state first: qemu opens the file itself.
                    disk.flush().unwrap();
                    best_of_3(|| qemu_bench(path, format, pattern.is_write(), cfg.ops))
                }
                _ => None,
            };
            let ratio = match (ours, theirs) {
                (Some(a), Some(b)) => format!("{:>8.2}", b.as_secs_f64() / a.as_secs_f64()),
                _ => format!("{:>8}", "-"),
            };
            if subject.name == "raw" {
                raw_agar.insert(pattern.name(), ours);
            }
            println!(
                "{:<14} {:<11} {} {} {}",
                subject.name,
                pattern.name(),
                cell(cfg.ops, ours),
                cell(cfg.ops, theirs),
                ratio
            );
        }
        disk.flush().unwrap();
    }

    // Allocation: sequential writes into fresh dynamic images.
    println!();
    println!("{:<14} {:<11} {:>25}", "fresh image", "pattern", "agar");
    for (name, file, options) in [
        ("vhd dynamic", "fresh.vhd", CreateOptions::default()),
        ("vhdx dynamic", "fresh.vhdx", CreateOptions::default()),
        (
            "vhdx 1M blocks",
            "fresh1m.vhdx",
            CreateOptions {
                block_size: Some(1 << 20),
                ..Default::default()
            },
        ),
    ] {
        let d = best_of_3(|| {
            let path = dir.path().join(file);
            let _ = std::fs::remove_file(&path);
            image::create(
                &path,
                image::ImageFormat::from_path(&path).unwrap(),
                size,
                &options,
            )
            .unwrap();
            let disk = disk::open_file(&path, false).unwrap();
            let start = Instant::now();
            run(&*disk, Pattern::SeqWrite, cfg.ops.min(size / BLOCK as u64));
            disk.flush().unwrap();
            Some(start.elapsed())
        });
        println!(
            "{:<14} {:<11} {}",
            name,
            "alloc write",
            cell(cfg.ops.min(size / BLOCK as u64), d)
        );
    }
    println!();
    println!(
        "agar/qemu > 1 means agar is faster. Numbers vary with machine load; compare rows of one run."
    );
}
