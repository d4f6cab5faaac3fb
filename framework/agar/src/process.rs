//! Starting VMM processes so they can never outlive the test.
//!
//! Three layers, each covering a way the test process can end:
//! 1. The `Vm` kills the VMM's process group when it is dropped (test body returned,
//!    failed, panicked, or the watchdog cancelled it).
//! 2. The VMM runs in its own process group (`setpgid(0, 0)`), so one `killpg` reaches
//!    anything it started, and a terminal's Ctrl-C reaches the test, not the VMM directly.
//! 3. `PR_SET_PDEATHSIG(SIGKILL)`: if the test process dies without unwinding (SIGKILL from
//!    nextest's timeout, OOM killer), the kernel kills the VMM. The death signal follows the
//!    spawning *thread*; the harness spawns from the thread that runs the test body, which
//!    lives until the test is over.
//!
//! After each test the harness checks that no process of any VMM group it started is
//! still alive ([`live_group_members`]).

use std::path::Path;
use std::process::Stdio;

use crate::error::Error;
use crate::error::Result;

/// Spawns `argv` in its own process group with a parent-death signal, stdout and stderr
/// going to the given files.
pub fn spawn(
    argv: &[String],
    cwd: &Path,
    stdout: std::fs::File,
    stderr: std::fs::File,
) -> Result<tokio::process::Child> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::Other("empty command line".into()))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true);
    set_parent_death_signal(&mut cmd);
    cmd.spawn().map_err(|source| Error::Spawn {
        program: program.clone(),
        source,
    })
}

#[expect(
    unsafe_code,
    reason = "pre_exec is the only way to set PR_SET_PDEATHSIG in the child before exec"
)]
fn set_parent_death_signal(cmd: &mut tokio::process::Command) {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec. It only makes two system
    // calls (prctl, getppid), which are async-signal-safe, allocates nothing and touches no
    // lock or state shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // The parent may have died between fork and prctl: then no signal would come.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::other("test process exited during spawn"));
            }
            Ok(())
        });
    }
}

/// Sends `signal` to every process of group `pgid`. Errors (the group is gone) are ignored.
pub fn kill_group(pgid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// Waits, at most `timeout`, until no process of group `pgid` is alive. Returns the pids
/// still alive at the deadline (none when the group is gone).
pub fn wait_group_gone(pgid: u32, timeout: std::time::Duration) -> Vec<u32> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let live = live_group_members(pgid);
        if live.is_empty() || std::time::Instant::now() >= deadline {
            return live;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Sends SIGKILL to group `pgid` and waits, at most `timeout`, until none of its
/// processes is alive. SIGKILL takes effect when the target is next scheduled, so on a
/// loaded host a process can look alive for a moment after `kill` returns. Returns the
/// pids still alive at the deadline (normally none).
pub fn kill_group_and_wait(pgid: u32, timeout: std::time::Duration) -> Vec<u32> {
    kill_group(pgid, rustix::process::Signal::KILL);
    wait_group_gone(pgid, timeout)
}

/// Pids of processes in group `pgid` that are alive (not zombies).
pub fn live_group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((state, pgrp)) = stat_state_pgrp(pid)
            && pgrp == pgid
            && state != 'Z'
            && state != 'X'
        {
            out.push(pid);
        }
    }
    out
}

/// Is `pid` alive (exists and is not a zombie)?
pub fn alive(pid: u32) -> bool {
    stat_state_pgrp(pid).is_some_and(|(s, _)| s != 'Z' && s != 'X')
}

/// State letter and process group of `pid`, from `/proc/<pid>/stat`.
fn stat_state_pgrp(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid pgrp ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// A signal's name, for messages (`SIGKILL`).
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("signal {sig}"),
    };
    format!("signal {sig} ({name})")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;
    use std::time::Instant;

    use super::*;

    fn null() -> std::fs::File {
        std::fs::File::create("/dev/null").unwrap()
    }

    #[test]
    fn a_spawned_process_leads_its_own_group_and_dies_with_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let argv = ["/bin/sh", "-c", "sleep 60 & sleep 60"].map(String::from);
            let mut child = spawn(&argv, Path::new("/"), null(), null()).unwrap();
            let pid = child.id().unwrap();
            // The shell and its background sleep share the shell's own group.
            let start = Instant::now();
            while live_group_members(pid).len() < 3 && start.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(stat_state_pgrp(pid).unwrap().1, pid);
            assert!(live_group_members(pid).len() >= 2);
            // Returns only once the whole group is dead, before anyone reaps the shell.
            assert_eq!(
                kill_group_and_wait(pid, Duration::from_secs(5)),
                Vec::<u32>::new()
            );
            assert_eq!(live_group_members(pid), Vec::<u32>::new());
            child.wait().await.unwrap();
        });
    }

    #[test]
    fn the_parent_death_signal_kills_the_child_when_its_thread_exits() {
        // The death signal follows the spawning thread: spawn from a thread that then
        // exits, exactly what happens to a VMM when its test process dies.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let argv = ["/bin/sleep", "60"].map(String::from);
                let child = spawn(&argv, Path::new("/"), null(), null()).unwrap();
                tx.send(child.id().unwrap()).unwrap();
                // Leak the child handle: only the death signal may end it.
                std::mem::forget(child);
            });
        })
        .join()
        .unwrap();
        let pid = rx.recv().unwrap();
        let start = Instant::now();
        while alive(pid) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(pid), "child {pid} survived its parent thread");
    }
}
