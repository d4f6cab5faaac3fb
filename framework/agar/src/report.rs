//! The HTML matrix report (`agar report <output dir>`): one static page, no scripts.
//!
//! Rows are test functions, columns are firmware/storage/OS configurations split by
//! backend; each cell is coloured by outcome (passed, failed, failed but unstable, ignored
//! with its reason, incomplete: started but left no result, or not run) and links to a
//! per-test page with the error, the timings and every log file.
//!
//! Inputs are what the harness writes under the output root: `agar-matrix-*.json` (every
//! registered cell, including ignored ones) and `*/agar.result.json`.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::path::PathBuf;

use crate::error::Error;
use crate::error::Result;
use crate::output;
use crate::output::MatrixEntry;
use crate::output::MatrixRecord;
use crate::output::ResultRecord;

/// Outcome colours; the report's CSS and its screenshot test share them.
pub mod colour {
    /// Passed.
    pub const PASSED: (u8, u8, u8) = (0x2e, 0x9e, 0x44);
    /// Failed.
    pub const FAILED: (u8, u8, u8) = (0xd6, 0x28, 0x28);
    /// Failed, tolerated as unstable.
    pub const UNSTABLE: (u8, u8, u8) = (0xf0, 0x8c, 0x00);
    /// Ignored by default.
    pub const IGNORED: (u8, u8, u8) = (0xb4, 0xb4, 0xb4);
    /// Started but left no result (killed, crashed).
    pub const INCOMPLETE: (u8, u8, u8) = (0x7b, 0x2d, 0x9e);
    /// Registered, not selected in this run.
    pub const NOT_RUN: (u8, u8, u8) = (0xf4, 0xf4, 0xf4);
}

fn css(c: (u8, u8, u8)) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// What the report knows about one test.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    function: String,
    module: String,
    config: String,
    backend: String,
    ignored: Option<String>,
    result: Option<ResultRecord>,
    started: bool,
}

impl Entry {
    fn status(&self) -> &'static str {
        match &self.result {
            Some(r) => match r.status.as_str() {
                "passed" => "passed",
                "failed_unstable" => "unstable",
                _ => "failed",
            },
            None if self.started => "incomplete",
            None if self.ignored.is_some() => "ignored",
            None => "notrun",
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn collect(root: &Path) -> Result<Vec<Entry>> {
    let rd = std::fs::read_dir(root).map_err(Error::io(root))?;
    let mut matrix: Vec<MatrixEntry> = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            dirs.push(p);
        } else if name.starts_with("agar-matrix-")
            && name.ends_with(".json")
            && let Some(m) = read_json::<MatrixRecord>(&p)
        {
            matrix.extend(m.tests);
        }
    }
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for m in matrix {
        entries.insert(
            m.name.clone(),
            Entry {
                name: m.name,
                function: m.function,
                module: m.module,
                config: m.config,
                backend: m.backend,
                ignored: m.ignored,
                result: None,
                started: false,
            },
        );
    }
    for d in dirs {
        let result: Option<ResultRecord> = read_json(&d.join("agar.result.json"));
        let started_name = std::fs::read_to_string(d.join("agar.test"))
            .ok()
            .map(|s| s.trim().to_string());
        match (result, started_name) {
            (Some(r), _) => {
                let e = entries.entry(r.name.clone()).or_insert_with(|| Entry {
                    name: r.name.clone(),
                    function: r.function.clone(),
                    module: r.module.clone(),
                    config: r.config.clone(),
                    backend: r.backend.clone(),
                    ignored: r.ignored_reason.clone(),
                    result: None,
                    started: true,
                });
                e.started = true;
                e.result = Some(r);
            }
            (None, Some(name)) => {
                if let Some(e) = entries.get_mut(&name) {
                    e.started = true;
                }
            }
            (None, None) => {}
        }
    }
    Ok(entries.into_values().collect())
}

fn duration(ms: u64) -> String {
    if ms >= 60_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse}th,td{border:1px solid #888;padding:4px 8px;text-align:center}\
th.fn{text-align:left}td.cell{width:7.5em;height:2.2em}td.cell a{color:inherit;text-decoration:none;display:block}\
.legend span{display:inline-block;padding:2px 8px;margin-right:6px;border:1px solid #888}\
pre{background:#f6f6f6;padding:8px;overflow-x:auto;white-space:pre-wrap}";

fn status_css() -> String {
    use colour::*;
    let mut s = String::new();
    for (class, c, fg) in [
        ("passed", PASSED, "#fff"),
        ("failed", FAILED, "#fff"),
        ("unstable", UNSTABLE, "#000"),
        ("ignored", IGNORED, "#000"),
        ("incomplete", INCOMPLETE, "#fff"),
        ("notrun", NOT_RUN, "#666"),
    ] {
        let _ = write!(s, ".{class}{{background:{};color:{fg}}}", css(c));
    }
    s
}

fn label(status: &str) -> &'static str {
    match status {
        "passed" => "passed",
        "failed" => "FAILED",
        "unstable" => "failed (unstable)",
        "ignored" => "ignored",
        "incomplete" => "no result",
        _ => "not run",
    }
}

/// Writes `<root>/index.html` (and a page per test) and returns its path.
pub fn generate(root: &Path) -> Result<PathBuf> {
    let entries = collect(root)?;
    let configs: BTreeSet<String> = entries.iter().map(|e| e.config.clone()).collect();
    let backends: BTreeSet<String> = entries.iter().map(|e| e.backend.clone()).collect();
    // (module, function) -> (config, backend) -> entry
    type Row<'a> = BTreeMap<(String, String), &'a Entry>;
    let mut rows: BTreeMap<(String, String), Row<'_>> = BTreeMap::new();
    for e in &entries {
        rows.entry((e.module.clone(), e.function.clone()))
            .or_default()
            .insert((e.config.clone(), e.backend.clone()), e);
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &entries {
        *counts.entry(e.status()).or_default() += 1;
    }

    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>agar test matrix</title>\
         <style>{STYLE}{}</style></head><body><h1>agar test matrix</h1>",
        status_css()
    );
    let _ = write!(h, "<p class=\"legend\">");
    for s in [
        "passed",
        "failed",
        "unstable",
        "ignored",
        "incomplete",
        "notrun",
    ] {
        let _ = write!(
            h,
            "<span class=\"{s}\">{} {}</span>",
            label(s),
            counts.get(s).copied().unwrap_or(0)
        );
    }
    let _ = write!(
        h,
        "</p><table id=\"matrix\"><thead><tr><th rowspan=\"2\" class=\"fn\">test</th>"
    );
    for c in &configs {
        let _ = write!(h, "<th colspan=\"{}\">{}</th>", backends.len(), esc(c));
    }
    let _ = write!(h, "</tr><tr>");
    for _ in &configs {
        for b in &backends {
            let _ = write!(h, "<th>{}</th>", esc(b));
        }
    }
    let _ = write!(h, "</tr></thead><tbody>");
    for ((module, function), cells) in &rows {
        let _ = write!(
            h,
            "<tr><th class=\"fn\">{}<br><small>{}</small></th>",
            esc(function),
            esc(module)
        );
        for c in &configs {
            for b in &backends {
                match cells.get(&(c.clone(), b.clone())) {
                    None => {
                        let _ = write!(h, "<td class=\"empty\"></td>");
                    }
                    Some(e) => {
                        let status = e.status();
                        let mut text = label(status).to_string();
                        if let Some(r) = &e.result {
                            text = format!("{text}<br>{}", duration(r.duration_ms));
                            if e.ignored.is_some() {
                                text.push_str("<br><small>(ignored by default)</small>");
                            }
                        }
                        let title = match (&e.result, &e.ignored) {
                            (Some(r), _) if r.error.is_some() => r
                                .error
                                .clone()
                                .unwrap_or_default()
                                .lines()
                                .next()
                                .unwrap_or("")
                                .to_string(),
                            (_, Some(reason)) => reason.clone(),
                            _ => e.name.clone(),
                        };
                        let dir = output::test_dir_name(&e.name);
                        let inner = if e.started {
                            write_test_page(root, e)?;
                            format!("<a href=\"{}/index.html\">{text}</a>", esc(&dir))
                        } else {
                            text
                        };
                        let _ = write!(
                            h,
                            "<td class=\"cell {status}\" title=\"{}\">{inner}</td>",
                            esc(&title)
                        );
                    }
                }
            }
        }
        let _ = write!(h, "</tr>");
    }
    let _ = write!(h, "</tbody></table>");
    let ignored: Vec<&Entry> = entries.iter().filter(|e| e.status() == "ignored").collect();
    if !ignored.is_empty() {
        let _ = write!(h, "<h2>Ignored cells</h2><ul>");
        for e in ignored {
            let _ = write!(
                h,
                "<li><code>{}</code>: {}</li>",
                esc(&e.name),
                esc(e.ignored.as_deref().unwrap_or(""))
            );
        }
        let _ = write!(h, "</ul>");
    }
    let _ = writeln!(h, "</body></html>");
    let index = root.join("index.html");
    output::write_atomic(&index, h.as_bytes()).map_err(Error::io(&index))?;
    Ok(index)
}

fn write_test_page(root: &Path, e: &Entry) -> Result<()> {
    let dir = root.join(output::test_dir_name(&e.name));
    let mut h = String::new();
    let status = e.status();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}{}</style>\
         </head><body><p><a href=\"../index.html\">matrix</a></p><h1>{}</h1>\
         <p><span class=\"{status}\" style=\"padding:2px 8px\">{}</span></p>",
        esc(&e.name),
        status_css(),
        esc(&e.name),
        label(status)
    );
    if let Some(r) = &e.ignored {
        let _ = write!(h, "<p>Ignored by default: {}</p>", esc(r));
    }
    if let Some(r) = &e.result {
        let t = &r.timings;
        let ms = |v: Option<u64>| v.map(|v| format!("{v} ms")).unwrap_or_else(|| "-".into());
        let _ = write!(
            h,
            "<table><tr><th>duration</th><td>{}</td></tr><tr><th>setup (start to VMM spawn)</th><td>{}</td></tr>\
             <tr><th>spawn to first console output</th><td>{}</td></tr>\
             <tr><th>spawn to ready marker</th><td>{}</td></tr><tr><th>teardown</th><td>{}</td></tr></table>",
            duration(r.duration_ms),
            ms(t.setup_ms),
            ms(t.spawn_to_first_output_ms),
            ms(t.spawn_to_ready_ms),
            ms(t.teardown_ms)
        );
        if let Some(err) = &r.error {
            let _ = write!(h, "<h2>Error</h2><pre>{}</pre>", esc(err));
        }
    } else {
        let _ = write!(
            h,
            "<p>The test started but left no result: it was killed or crashed (see the logs).</p>"
        );
    }
    if let Ok(cmd) = std::fs::read_to_string(dir.join("vmm.cmdline")) {
        let _ = write!(h, "<h2>Reproduce</h2><pre>{}</pre>", esc(cmd.trim()));
    }
    let _ = write!(h, "<h2>Files</h2><ul>");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .map_err(Error::io(&dir))?
        .flatten()
        .filter(|f| f.path().is_file())
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "index.html")
        .collect();
    files.sort();
    for f in files {
        let _ = write!(h, "<li><a href=\"{0}\">{0}</a></li>", esc(&f));
    }
    let _ = writeln!(h, "</ul></body></html>");
    let page = dir.join("index.html");
    output::write_atomic(&page, h.as_bytes()).map_err(Error::io(&page))
}
