//! Serial capture: the VMM writes each port to a file in the output folder; the framework
//! tails those files into a line store that tests wait on.
//!
//! Files (not pipes or sockets) are the capture path on purpose: nothing is lost before
//! the framework starts reading, the log survives a crashed test process, and both
//! backends support it the same way (`--comN file=PATH`, `-chardev file`).

use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use crate::error::SerialTail;

/// The line the kernel prints when it panics.
pub const PANIC_MARKER: &str = "Kernel panic - not syncing";

/// The line that closes a panic report (after the stack trace).
pub const PANIC_END_MARKER: &str = "---[ end Kernel panic";

/// The guest's readiness marker (docs/src/guest-contract.md).
pub const READY_MARKER: &str = "agar-init: ready";

/// How often the tailer polls the file.
const POLL: Duration = Duration::from_millis(20);

/// Lines kept per port; older lines are dropped (the file keeps everything).
const MAX_LINES: usize = 200_000;

#[derive(Default)]
struct State {
    /// Complete lines. `dropped` lines before these were discarded.
    lines: Vec<String>,
    dropped: usize,
    partial: Vec<u8>,
    first_output: Option<Instant>,
    ready_at: Option<Instant>,
    panic_line: Option<String>,
    panic_ended: bool,
    finished: bool,
}

/// One captured port.
pub struct SerialLog {
    name: String,
    path: PathBuf,
    state: Mutex<State>,
    changed: tokio::sync::watch::Sender<u64>,
    activity: Option<tokio::sync::watch::Sender<u64>>,
}

impl SerialLog {
    /// A log for `path`, shown as `name` (`com1.log`).
    pub fn new(name: impl Into<String>, path: PathBuf) -> Self {
        Self {
            name: name.into(),
            path,
            state: Mutex::default(),
            changed: tokio::sync::watch::channel(0).0,
            activity: None,
        }
    }

    /// Also bumps `activity` whenever this log changes (one channel for all ports of a VM).
    pub fn with_activity(mut self, activity: tokio::sync::watch::Sender<u64>) -> Self {
        self.activity = Some(activity);
        self
    }

    /// When the readiness marker arrived.
    pub fn ready_at(&self) -> Option<Instant> {
        self.state().ready_at
    }

    /// Whether the panic report is complete (its closing line arrived).
    pub fn panic_ended(&self) -> bool {
        self.state().panic_ended
    }

    /// The file name (`com1.log`).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that changes whenever new lines arrive.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// When the first byte arrived.
    pub fn first_output(&self) -> Option<Instant> {
        self.state().first_output
    }

    /// The first kernel panic line seen, if any.
    pub fn panic_line(&self) -> Option<String> {
        self.state().panic_line.clone()
    }

    /// Whether the tailer has stopped (the VMM exited and the file was drained).
    pub fn finished(&self) -> bool {
        self.state().finished
    }

    /// Index of the next line to arrive.
    pub fn end(&self) -> usize {
        let s = self.state();
        s.dropped + s.lines.len()
    }

    /// The first line at or after index `from` matching `re`, and its index.
    pub fn find(&self, from: usize, re: &regex::Regex) -> Option<(usize, String)> {
        let s = self.state();
        let start = from.saturating_sub(s.dropped);
        s.lines
            .iter()
            .enumerate()
            .skip(start)
            .find(|(_, l)| re.is_match(l))
            .map(|(i, l)| (i + s.dropped, l.clone()))
    }

    /// The last `n` lines, including an unterminated last line.
    pub fn tail(&self, n: usize) -> SerialTail {
        let s = self.state();
        let mut lines: Vec<String> = s.lines.iter().rev().take(n).rev().cloned().collect();
        if !s.partial.is_empty() {
            if lines.len() == n && n > 0 {
                lines.remove(0);
            }
            lines.push(String::from_utf8_lossy(&s.partial).into_owned());
        }
        SerialTail {
            port: self.name.clone(),
            lines,
        }
    }

    fn notify(&self) {
        self.changed.send_modify(|g| *g += 1);
        if let Some(a) = &self.activity {
            a.send_modify(|g| *g += 1);
        }
    }

    fn ingest(&self, data: &[u8]) {
        let mut s = self.state();
        if s.first_output.is_none() && !data.is_empty() {
            s.first_output = Some(Instant::now());
        }
        s.partial.extend_from_slice(data);
        while let Some(nl) = s.partial.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = s.partial.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&raw[..raw.len() - 1])
                .trim_end_matches('\r')
                .to_string();
            if s.panic_line.is_none() && line.contains(PANIC_MARKER) {
                tracing::warn!(port = %self.name, %line, "guest kernel panic");
                s.panic_line = Some(line.clone());
            }
            if line.contains(PANIC_END_MARKER) {
                s.panic_ended = true;
            }
            if s.ready_at.is_none() && line.contains(READY_MARKER) {
                s.ready_at = Some(Instant::now());
            }
            s.lines.push(line);
        }
        if s.lines.len() > MAX_LINES {
            let excess = s.lines.len() - MAX_LINES;
            s.lines.drain(..excess);
            s.dropped += excess;
        }
    }

    /// Tails the file until `stop` turns true, then drains it once more and finishes.
    pub async fn run_tailer(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut file = None;
        let mut offset = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let stopping = *stop.borrow();
            if file.is_none() {
                file = std::fs::File::open(&self.path).ok();
            }
            let mut got = false;
            if let Some(f) = file.as_mut() {
                // The VMM may truncate the file when it opens it: start over if it shrank.
                if f.metadata().map(|m| m.len() < offset).unwrap_or(false) {
                    offset = 0;
                }
                if f.seek(SeekFrom::Start(offset)).is_ok() {
                    while let Ok(n) = f.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        offset += n as u64;
                        self.ingest(&buf[..n]);
                        got = true;
                    }
                }
            }
            if got {
                self.notify();
            }
            if stopping {
                self.state().finished = true;
                self.notify();
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_spots_a_panic() {
        let log = SerialLog::new("com1.log", PathBuf::from("/nonexistent"));
        log.ingest(b"Linux version 6.1\r\nagar-init: rea");
        assert_eq!(log.end(), 1);
        log.ingest(b"dy 6.1.0\n[ 1.0] Kernel panic - not syncing: VFS\n");
        let re = regex::Regex::new("agar-init: ready").unwrap();
        assert_eq!(log.find(0, &re), Some((1, "agar-init: ready 6.1.0".into())));
        assert_eq!(log.find(2, &re), None);
        assert_eq!(
            log.panic_line().as_deref(),
            Some("[ 1.0] Kernel panic - not syncing: VFS")
        );
        assert_eq!(log.tail(2).lines.len(), 2);
        assert!(log.first_output().is_some());
    }

    #[test]
    fn tails_a_growing_file_until_stopped() {
        let dir = std::env::temp_dir().join(format!("agar-serial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("com1.log");
        std::fs::write(&path, b"one\n").unwrap();
        let log = std::sync::Arc::new(SerialLog::new("com1.log", path.clone()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let l = log.clone();
            let tailer = tokio::spawn(async move { l.run_tailer(stop_rx).await });
            let mut rx = log.subscribe();
            while log.end() < 1 {
                rx.changed().await.unwrap();
            }
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"two\nthr").unwrap();
            while log.end() < 2 {
                rx.changed().await.unwrap();
            }
            f.write_all(b"ee\n").unwrap();
            stop_tx.send(true).unwrap();
            tailer.await.unwrap();
        });
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(log.finished());
        assert_eq!(log.tail(10).lines, ["one", "two", "three"]);
    }
}
