//! `agar disk info|create|convert`, driven through the clap types as the `agar` binary will.

use clap::Parser;
use disk::cli::DiskArgs;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: DiskArgs,
}

fn run(args: &[&str]) -> Result<String, disk::DiskError> {
    let cli = Cli::try_parse_from(std::iter::once("agar-disk").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let mut out = Vec::new();
    disk::cli::run(&cli.args, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

#[test]
fn create_info_and_convert() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    let out = run(&["create", &p("a.vhdx"), "64MB"]).unwrap();
    assert!(out.contains("vhdx dynamic"), "{out}");
    let info = run(&["info", &p("a.vhdx")]).unwrap();
    assert!(info.contains("format:          vhdx dynamic"), "{info}");
    assert!(info.contains("virtual size:    67108864 bytes"), "{info}");
    assert!(info.contains("block size:      33554432 bytes"), "{info}");

    run(&["create", &p("b.vhd"), "10MB", "--fixed"]).unwrap();
    let info = run(&["info", &p("b.vhd")]).unwrap();
    assert!(info.contains("vhd fixed"), "{info}");
    assert_eq!(
        std::fs::metadata(p("b.vhd")).unwrap().len(),
        10 * 1024 * 1024 + 512
    );

    run(&[
        "create",
        &p("c.vhdx"),
        "8M",
        "--block-size",
        "1M",
        "--sector-size",
        "4096",
    ])
    .unwrap();
    let info = run(&["info", &p("c.vhdx")]).unwrap();
    assert!(info.contains("4096 logical"), "{info}");
    assert!(info.contains("block size:      1048576 bytes"), "{info}");

    // Put data in, convert through the formats, compare.
    let raw = p("d.raw");
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&raw, &data).unwrap();
    run(&["convert", &raw, &p("d.vhd")]).unwrap();
    run(&["convert", &p("d.vhd"), &p("d.vhdx"), "--fixed"]).unwrap();
    let out = run(&["convert", &p("d.vhdx"), &p("e.img")]).unwrap();
    assert!(out.contains("4194304 bytes"), "{out}");
    assert_eq!(std::fs::read(p("e.img")).unwrap(), data);
    let info = run(&["info", &p("d.vhdx")]).unwrap();
    assert!(info.contains("vhdx fixed"), "{info}");
}

#[test]
fn mistakes_are_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let e = run(&["create", &p("x.qcow2"), "1MB"]).unwrap_err();
    assert!(e.to_string().contains("unknown image extension"), "{e}");
    run(&["create", &p("x.vhd"), "1MB"]).unwrap();
    let e = run(&["create", &p("x.vhd"), "1MB"]).unwrap_err();
    assert!(e.to_string().contains("x.vhd"), "{e}");
    let e = run(&["create", &p("y.vhd"), "1000"]).unwrap_err();
    assert_eq!(e.kind(), disk::DiskErrorKind::InvalidArgument);
    assert!(
        !dir.path().join("y.vhd").exists(),
        "a failed create left a file"
    );
    let e = run(&["info", &p("missing.vhdx")]).unwrap_err();
    assert_eq!(e.kind(), disk::DiskErrorKind::NotFound);
    let e = run(&["convert", &p("x.vhd"), &p("x.vhd")]).unwrap_err();
    assert!(e.to_string().contains("x.vhd"), "{e}");
    assert!(Cli::try_parse_from(["agar-disk", "create", "z.vhd", "12Q"]).is_err());
}
