//! A guest's console shell driven through a VMM's stdin/stdout (shared by the `--pcat` test
//! and the IDE benchmark).

#![allow(dead_code, reason = "each user takes what it needs")]

use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::process::Command;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

/// agar-vmm on `emu` booting SeaBIOS with 256 MB, the console on COM1 (stdio), and the
/// `ide` disk specs attached in order (the first is the boot disk).
pub fn pcat_emu_command(ide: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agar-vmm"));
    cmd.args([
        "--pcat",
        "--hypervisor",
        "emu",
        "-m",
        "256MB",
        "--com1",
        "console",
    ]);
    for spec in ide {
        cmd.args(["--ide", spec]);
    }
    cmd
}

/// A running VMM whose COM1 (the guest's console shell) is this process's pipe.
pub struct Guest {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    /// Every console line so far.
    pub seen: Vec<String>,
}

impl Guest {
    /// Starts `cmd` (agar-vmm or QEMU with COM1 on stdio).
    pub fn spawn(mut cmd: Command) -> Guest {
        let mut child = cmd
            .env_remove("AGAR_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the VMM starts");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).split(b'\n') {
                let Ok(line) = line else { break };
                let s = String::from_utf8_lossy(&line).trim_end().to_string();
                if tx.send(s).is_err() {
                    break;
                }
            }
        });
        Guest {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a console line for which `pick` returns something.
    pub fn wait_for<T>(&mut self, secs: u64, pick: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let found = pick(&l);
                    self.seen.push(l);
                    if let Some(t) = found {
                        return t;
                    }
                }
                Err(_) => panic!("timed out after {secs} s; console tail:\n{}", self.tail()),
            }
        }
    }

    pub fn tail(&self) -> String {
        let n = self.seen.len().saturating_sub(40);
        self.seen[n..].join("\n")
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Runs a shell command whose output is one line, returned.
    pub fn run(&mut self, tag: &str, command: &str) -> String {
        self.send(&format!("echo \"R:{tag}=$({command})\""));
        let prefix = format!("R:{tag}=");
        self.wait_for(120, |l| {
            let l = l.trim_start_matches(|c: char| c != 'R');
            // The shell echoes the command itself (with `$(`); the answer has no `$`.
            l.strip_prefix(&prefix)
                .filter(|v| !v.contains('$'))
                .map(str::to_string)
        })
    }

    /// Powers the guest off and returns agar-vmm's exit status.
    pub fn power_off(mut self) -> i32 {
        self.send("poweroff -f");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("no power off within 60 s:\n{}", self.tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
