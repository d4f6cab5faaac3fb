//! The HTML matrix report, rendered by a real browser: headless Chromium takes a screenshot
//! and dumps the DOM, and the test checks both (outcome colours present as pixels, one
//! table cell per test, links to the per-test pages).
//!
//! Needs Debian's `chromium` (`apt-get install -y chromium`, part of `.ci/install-deps`).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;

use agar::output::MatrixEntry;
use agar::output::MatrixRecord;
use agar::output::ResultRecord;
use agar::output::Timings;
use agar::report::colour;

fn entry(function: &str, config: &str, backend: &str, ignored: Option<&str>) -> MatrixEntry {
    MatrixEntry {
        name: format!("{backend}_{config}::{function}"),
        function: function.into(),
        module: "matrix::boot".into(),
        cell: format!("{backend}_{config}"),
        config: config.into(),
        backend: backend.into(),
        ignored: ignored.map(str::to_string),
        artifacts: vec![],
    }
}

fn result(root: &Path, e: &MatrixEntry, status: &str, error: Option<&str>) {
    let dir = root.join(agar::output::test_dir_name(&e.name));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("agar.test"), &e.name).unwrap();
    std::fs::write(dir.join("com1.log"), "agar-init: ready\n").unwrap();
    std::fs::write(dir.join("vmm.cmdline"), "qemu-system-x86_64 -M pc\n").unwrap();
    if status == "incomplete" {
        return;
    }
    agar::output::write_result(
        &dir,
        &ResultRecord {
            name: e.name.clone(),
            function: e.function.clone(),
            module: e.module.clone(),
            cell: e.cell.clone(),
            config: e.config.clone(),
            backend: e.backend.clone(),
            status: status.into(),
            error: error.map(str::to_string),
            duration_ms: 8_880,
            started_unix_ms: 0,
            ignored_reason: None,
            timings: Timings {
                setup_ms: Some(900),
                spawn_to_first_output_ms: Some(1200),
                spawn_to_ready_ms: Some(3400),
                teardown_ms: Some(4),
            },
        },
    )
    .unwrap();
}

/// Runs chromium headless with `args` in its own process group, bounded, and makes sure
/// nothing of it is left running.
fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1400,900",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let child = cmd
        .spawn()
        .expect("chromium is installed (apt-get install -y chromium)");
    let pgid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("chromium finished within 2 minutes");
    agar::process::kill_group_and_wait(pgid, Duration::from_secs(5));
    assert_eq!(agar::process::live_group_members(pgid), Vec::<u32>::new());
    out.expect("chromium ran")
}

/// The `chromium` on `PATH`, if any.
fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
}

/// Whether a missing chromium is a failure: in CI (`CI` set, or
/// `AGAR_REQUIRE_CHROMIUM=1`), where `.ci/install-deps` installs it.
fn chromium_required() -> bool {
    ["AGAR_REQUIRE_CHROMIUM", "CI"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty() && v != "0" && v != "false"))
}

type Rgb = (u8, u8, u8);

/// The screenshot's size and its pixels.
fn decode_png(png_path: &Path) -> ((u32, u32), Vec<Rgb>) {
    let decoder = png::Decoder::new(std::fs::File::open(png_path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bpp = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let pixels = buf[..info.buffer_size()]
        .chunks_exact(bpp)
        .map(|p| (p[0], p[1], p[2]))
        .collect();
    ((info.width, info.height), pixels)
}

#[test]
fn chromium_renders_the_matrix_with_outcome_colours_and_links() {
    if find_chromium().is_none() {
        assert!(
            !chromium_required(),
            "chromium is not installed, and CI requires this test: apt-get install -y chromium \
             (.ci/install-deps)"
        );
        eprintln!(
            "SKIPPED: chromium is not installed, so the HTML report is not checked in a browser \
             (apt-get install -y chromium; AGAR_REQUIRE_CHROMIUM=1 or CI=1 makes this a failure)"
        );
        return;
    }
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-chromium");
    let _ = std::fs::remove_dir_all(&base);
    let root = base.join("agar-tests");
    std::fs::create_dir_all(&root).unwrap();

    let reason = "agar-vmm does not boot Linux yet";
    let tests = vec![
        entry("boots", "linux_direct_debian12_k61", "qemu", None),
        entry(
            "boots",
            "linux_direct_debian12_k61",
            "agarvmm",
            Some(reason),
        ),
        entry("boots", "linux_direct_debian12_k612", "qemu", None),
        entry(
            "boots",
            "linux_direct_debian12_k612",
            "agarvmm",
            Some(reason),
        ),
        entry("agent_files", "linux_direct_debian12_k61", "qemu", None),
        entry("agent_files", "linux_direct_debian12_k612", "qemu", None),
        entry("never_selected", "linux_direct_debian12_k61", "qemu", None),
    ];
    std::fs::write(
        root.join("agar-matrix-matrix.json"),
        serde_json::to_vec(&MatrixRecord {
            binary: "matrix".into(),
            tests: tests.clone(),
        })
        .unwrap(),
    )
    .unwrap();
    result(&root, &tests[0], "passed", None);
    result(
        &root,
        &tests[2],
        "failed",
        Some("guest kernel panic: Kernel panic - not syncing: <boom> & more"),
    );
    result(&root, &tests[4], "failed_unstable", Some("flaky"));
    result(&root, &tests[5], "incomplete", None);

    let index = agar::report::generate(&root).unwrap();
    let html = std::fs::read_to_string(&index).unwrap();
    // Error text is escaped, not markup.
    assert!(html.contains("&lt;boom&gt; &amp; more"));
    let failed_page = std::fs::read_to_string(
        root.join(agar::output::test_dir_name(&tests[2].name))
            .join("index.html"),
    )
    .unwrap();
    assert!(failed_page.contains("com1.log"));
    assert!(failed_page.contains("qemu-system-x86_64 -M pc"));

    let url = format!("file://{}", index.display());
    let dom = chromium(&base.join("profile-dom"), &["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for (class, n) in [
        ("cell passed", 1),
        ("cell failed", 1),
        ("cell unstable", 1),
        ("cell ignored", 2),
        ("cell incomplete", 1),
        ("cell notrun", 1),
    ] {
        assert_eq!(
            dom.matches(&format!("class=\"{class}\"")).count(),
            n,
            "{class} in the rendered DOM"
        );
    }
    assert!(dom.contains(&format!(
        "href=\"{}/index.html\"",
        agar::output::test_dir_name(&tests[0].name)
    )));

    let shot = base.join("report.png");
    chromium(
        &base.join("profile-shot"),
        &[&format!("--screenshot={}", shot.display()), &url],
    );
    println!("screenshot: {}", shot.display());
    let (size, pixels) = decode_png(&shot);
    assert_eq!(size, (1400, 900), "the screenshot has the window's size");
    let count = |rgb: Rgb| pixels.iter().filter(|&&p| p == rgb).count();
    // The page background dominates: the screenshot is not blank or one colour.
    let white = count((255, 255, 255));
    assert!(
        white > pixels.len() / 4 && white < pixels.len(),
        "{white} white pixels of {}",
        pixels.len()
    );
    // Each outcome shows as a filled cell of its colour (a cell is ~120x36 px).
    for (what, c) in [
        ("passed", colour::PASSED),
        ("failed", colour::FAILED),
        ("unstable", colour::UNSTABLE),
        ("ignored", colour::IGNORED),
        ("incomplete", colour::INCOMPLETE),
    ] {
        let n = count(c);
        assert!(
            n > 1000,
            "{what}: only {n} pixels of {c:?} in the screenshot"
        );
    }
}
