//! Running one shell command with a timeout and bounded output capture.

use std::io::Read;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

use agent_protocol::MAX_EXEC_OUTPUT;
use agent_protocol::message::ExecOutput;
use agent_protocol::message::ExitStatus;

/// How long to keep reading output after the command exited, for pipes that a background
/// child still holds open.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Reads a pipe to EOF in a thread, keeping at most `MAX_EXEC_OUTPUT` bytes.
fn collect(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<(Vec<u8>, bool)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut truncated = false;
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = MAX_EXEC_OUTPUT.saturating_sub(kept.len());
                    if n > room {
                        truncated = true;
                    }
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        let _ = tx.send((kept, truncated));
    });
    rx
}

/// Runs `command` with `/bin/sh -c` in its own process group.
pub fn run(command: &str, timeout: Option<Duration>, stdin: &[u8]) -> std::io::Result<ExecOutput> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let pgid = child.id();
    if let Some(mut i) = child.stdin.take() {
        let data = stdin.to_vec();
        // A command that never reads its input must not block us: write from a thread.
        std::thread::spawn(move || {
            let _ = i.write_all(&data);
        });
    }
    let out = child.stdout.take().map(collect);
    let err = child.stderr.take().map(collect);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            kill_group(pgid);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let status = match status {
        None => ExitStatus::TimedOut,
        Some(s) => {
            use std::os::unix::process::ExitStatusExt;
            match (s.code(), s.signal()) {
                (Some(c), _) => ExitStatus::Code(c),
                (None, Some(sig)) => ExitStatus::Signal(sig),
                (None, None) => ExitStatus::Code(-1),
            }
        }
    };
    let deadline = Instant::now() + DRAIN_GRACE;
    let take = |rx: Option<mpsc::Receiver<(Vec<u8>, bool)>>| {
        rx.and_then(|rx| {
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .ok()
        })
        .unwrap_or_default()
    };
    let (stdout, t1) = take(out);
    let (stderr, t2) = take(err);
    Ok(ExecOutput {
        status,
        stdout,
        stderr,
        truncated: t1 || t2,
    })
}

fn kill_group(pgid: u32) {
    if let Some(pid) = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_both_streams_and_the_exit_code() {
        let o = run("echo out; echo err >&2; exit 3", None, b"").unwrap();
        assert_eq!(o.status, ExitStatus::Code(3));
        assert_eq!(o.stdout, b"out\n");
        assert_eq!(o.stderr, b"err\n");
        assert!(!o.truncated);
    }

    #[test]
    fn feeds_stdin() {
        let o = run("tr a-z A-Z", None, b"agar").unwrap();
        assert_eq!(o.stdout, b"AGAR");
    }

    #[test]
    fn a_timeout_kills_the_whole_process_group() {
        let start = Instant::now();
        let o = run("sleep 30 & sleep 30", Some(Duration::from_millis(300)), b"").unwrap();
        assert_eq!(o.status, ExitStatus::TimedOut);
        // Both sleeps died with the group, so the pipes closed without the drain grace.
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_signal_is_reported() {
        let o = run("kill -TERM $$", None, b"").unwrap();
        assert_eq!(o.status, ExitStatus::Signal(15));
    }

    #[test]
    fn output_is_bounded() {
        let o = run("head -c 3000000 /dev/zero", None, b"").unwrap();
        assert_eq!(o.stdout.len(), MAX_EXEC_OUTPUT);
        assert!(o.truncated);
    }
}
