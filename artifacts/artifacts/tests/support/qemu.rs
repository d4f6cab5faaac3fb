//! Booting a guest under QEMU TCG (`-M pc`, SeaBIOS) and collecting its serial console.

use std::ffi::OsString;
use std::io::BufRead;
use std::io::BufReader;
use std::process::Command;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

/// Generous: TCG on a shared 2-core machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// What a boot printed and how QEMU ended.
pub struct Boot {
    /// COM1, line by line (`\r` removed).
    pub console: String,
    /// QEMU's exit code (0 after the guest powered off).
    pub exit_code: Option<i32>,
    /// From start to exit.
    pub elapsed: Duration,
}

impl Boot {
    /// The console lines.
    pub fn lines(&self) -> Vec<&str> {
        self.console.lines().collect()
    }

    /// Index of the first line equal to `line`.
    pub fn position(&self, line: &str) -> Option<usize> {
        self.lines().iter().position(|l| *l == line)
    }
}

/// Runs `nice qemu-system-x86_64 -M pc -accel tcg -m 256 -nographic -no-reboot <args>` until
/// it exits; panics (with the console so far) after [`BOOT_TIMEOUT`].
pub fn boot(args: &[OsString]) -> Boot {
    let started = Instant::now();
    let mut child = Command::new("nice")
        .arg("qemu-system-x86_64")
        .args([
            "-M",
            "pc",
            "-accel",
            "tcg",
            "-m",
            "256",
            "-nographic",
            "-no-reboot",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 is installed (apt-get install qemu-system-x86)");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // The firmware and boot loader print escape sequences: read bytes, not UTF-8 lines.
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line).replace('\r', "");
            if tx.send(text.trim_end_matches('\n').to_owned()).is_err() {
                break;
            }
            line.clear();
        }
    });
    let deadline = started + BOOT_TIMEOUT;
    let mut console = String::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                console.push_str(&line);
                console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no power-off within {BOOT_TIMEOUT:?}; console:\n{console}");
            }
        }
    }
    let status = child.wait().expect("wait for qemu");
    Boot {
        console,
        exit_code: status.code(),
        elapsed: started.elapsed(),
    }
}
