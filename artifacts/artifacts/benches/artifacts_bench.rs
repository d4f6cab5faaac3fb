//! Benchmarks: sha256 verify throughput, warm-cache resolve time (through the pin and
//! through the cache's ref) and BIOS boot media (first build, cached lookup), each next to a
//! peer measured in the same run (coreutils `sha256sum`; a bare `stat`; `cp` of the medium).
//!
//! `cargo bench -p artifacts --bench artifacts_bench`

use std::hint::black_box;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;

use artifacts::Resolver;
use artifacts::cache::Cache;
use artifacts::hash::Sha256;
use artifacts::manifest::Catalog;

const FILE_SIZE: usize = 256 << 20;

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn mib_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..FILE_SIZE)
        .map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(7) as u8)
        .collect();
    let file = dir.path().join("blob");
    std::fs::write(&file, &data).expect("write");

    // sha256: in memory, from a (page-cached) file, and coreutils on the same file.
    let mem = best_of(3, || Sha256::of(&data));
    let ours = best_of(3, || Sha256::of_file(&file).expect("hash"));
    let peer = best_of(3, || {
        Command::new("sha256sum")
            .arg(&file)
            .output()
            .expect("sha256sum (coreutils)")
    });
    println!("sha256 of {} MiB", FILE_SIZE >> 20);
    println!(
        "  in memory          {:>8.0} MiB/s",
        mib_per_s(FILE_SIZE, mem)
    );
    println!(
        "  file (verify)      {:>8.0} MiB/s",
        mib_per_s(FILE_SIZE, ours)
    );
    println!(
        "  sha256sum (peer)   {:>8.0} MiB/s",
        mib_per_s(FILE_SIZE, peer)
    );
    println!(
        "  ratio verify / sha256sum: {:.2}x",
        peer.as_secs_f64() / ours.as_secs_f64()
    );

    // Warm-cache resolve: manifest lookup, ref read, spec check, blob stat.
    let content = b"warm cache artifact".to_vec();
    let text = format!(
        "[artifacts.thing]\nformat = \"blob\"\nsource = \"url\"\nurl = \"http://127.0.0.1:1/t\"\nsha256 = \"{}\"\nsize = {}\n",
        Sha256::of(&content),
        content.len()
    );
    let cache = Cache::new(dir.path().join("cache"));
    cache.ensure_layout().expect("layout");
    let (sha, blob) = cache.insert_bytes(&content).expect("insert");
    let catalog = Catalog::parse(&text, "bench", None).expect("manifest");
    let entry = catalog.manifest.get("thing").expect("entry").clone();
    cache
        .set_artifact_ref(
            "thing",
            &artifacts::manifest::LockedArtifact {
                sha256: sha,
                size: content.len() as u64,
                spec: entry.spec(),
                debs: Vec::new(),
                tools: Vec::new(),
            },
        )
        .expect("ref");
    let resolver = Resolver::new(cache.clone(), None, catalog);
    const N: u32 = 20_000;
    let resolve = best_of(3, || {
        for _ in 0..N {
            black_box(resolver.resolve_name("thing").expect("resolves"));
        }
    }) / N;
    // The same through the cache's ref (an unpinned artifact: read and parse the ref file).
    let mut unpinned = Catalog::builtin().expect("builtin catalog");
    unpinned.lock = artifacts::manifest::Lock::default();
    let seabios = unpinned
        .manifest
        .get("seabios_bios")
        .expect("seabios entry")
        .spec();
    cache
        .set_artifact_ref(
            "seabios_bios",
            &artifacts::manifest::LockedArtifact {
                sha256: sha,
                size: content.len() as u64,
                spec: seabios,
                debs: Vec::new(),
                tools: Vec::new(),
            },
        )
        .expect("ref");
    let via_ref = Resolver::new(cache.clone(), None, unpinned);
    let resolve_ref = best_of(3, || {
        for _ in 0..N {
            black_box(via_ref.resolve_name("seabios_bios").expect("resolves"));
        }
    }) / N;
    let stat = best_of(3, || {
        for _ in 0..N {
            black_box(std::fs::metadata(&blob).expect("stat"));
        }
    }) / N;
    let from_env = best_of(5, || {
        Resolver::new(
            cache.clone(),
            None,
            Catalog::builtin().expect("builtin catalog"),
        )
    });
    println!("warm-cache resolve");
    println!(
        "  Resolver::resolve (pinned) {:>8.2} us",
        resolve.as_secs_f64() * 1e6
    );
    println!(
        "  Resolver::resolve (ref)    {:>8.2} us",
        resolve_ref.as_secs_f64() * 1e6
    );
    println!(
        "  one stat (peer)            {:>8.2} us",
        stat.as_secs_f64() * 1e6
    );
    println!(
        "  ratio resolve / stat: pinned {:.1}x, ref {:.1}x",
        resolve.as_secs_f64() / stat.as_secs_f64(),
        resolve_ref.as_secs_f64() / stat.as_secs_f64()
    );
    println!(
        "  building a resolver (built-in manifest + lock parse): {:.0} us",
        from_env.as_secs_f64() * 1e6
    );

    media(dir.path());
}

/// A BIOS disk with an agent-sized extra archive: the first build, then the lookup every
/// later test pays, next to copying the medium (what a test would do without the cache).
fn media(dir: &std::path::Path) {
    use artifacts::media::BiosDisk;
    use artifacts::media::BootFiles;
    let Ok(resolver) = Resolver::from_env() else {
        println!("BIOS media: no cache directory; skipped");
        return;
    };
    let Ok(files) = BootFiles::from_artifacts(
        &resolver,
        artifacts::ids::DEBIAN12_K61_KERNEL,
        artifacts::ids::DEBIAN12_K61_INITRD,
    ) else {
        println!("BIOS media: the 6.1 kernel/initrd are not restored; skipped");
        return;
    };
    let mut agent = artifacts::recipes::cpio::Archive::new();
    agent.add(
        "sbin/agar-agent",
        0o755,
        artifacts::recipes::cpio::Node::File(vec![0x5a; 4 << 20]),
    );
    let files = files.append_initrd_bytes(agent.to_bytes());
    let disk = BiosDisk::new(files);
    let cache = Cache::new(dir.join("media-cache"));
    let t = Instant::now();
    let built = disk.build(&cache).expect("build the medium");
    let first = t.elapsed();
    let lookup = best_of(20, || disk.build(&cache).expect("lookup"));
    let copy = best_of(3, || {
        std::fs::copy(&built.path, dir.join("copy.vhd")).expect("copy")
    });
    println!(
        "BIOS disk (6.1 kernel + initrd + 4 MiB agent archive, {} MiB VHD)",
        built.size >> 20
    );
    println!(
        "  first build        {:>10.1} ms",
        first.as_secs_f64() * 1e3
    );
    println!(
        "  cached lookup      {:>10.1} us",
        lookup.as_secs_f64() * 1e6
    );
    println!(
        "  cp of the medium   {:>10.1} us (peer)",
        copy.as_secs_f64() * 1e6
    );
    println!(
        "  ratio lookup / cp: {:.2}x, build / lookup: {:.0}x",
        lookup.as_secs_f64() / copy.as_secs_f64(),
        first.as_secs_f64() / lookup.as_secs_f64()
    );
}
