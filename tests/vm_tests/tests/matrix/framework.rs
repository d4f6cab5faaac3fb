//! Tests of the framework itself, on real guests and real VMMs: a guest that panics, a
//! guest that hangs, a VMM killed under the test, a test process killed under its VMM.
//!
//! Failures of the harness path (result markers, the message the runner prints) are checked
//! by running a fixture (a `#[vm_test(fixture, ...)]`, never listed) in a child process of
//! this test binary, with its output folder inside this test's.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use agar::Error;
use agar::HaltReason;
use agar::VmBuilder;
use agar::vm_test;

/// A fixture run in a child process.
struct FixtureRun {
    exit_code: Option<i32>,
    stdout: String,
    dir: PathBuf,
    elapsed: Duration,
}

impl FixtureRun {
    fn marker(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name)).ok()
    }
}

fn fixture_command(vm: &VmBuilder, name: &str) -> (Command, PathBuf) {
    let root = vm.output_dir().join("fixture");
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.args(["--agar-fixture", name])
        .env("AGAR_TEST_OUTPUT", &root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    (cmd, root.join(name.replace("::", "__")))
}

/// Runs a fixture to completion (bounded by `limit`).
fn run_fixture(vm: &VmBuilder, name: &str, limit: Duration) -> anyhow::Result<FixtureRun> {
    let (mut cmd, dir) = fixture_command(vm, name);
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("fixture {name} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = start.elapsed();
    let stdout = reader.join().unwrap_or_default();
    println!("--- fixture {name} stdout ---\n{stdout}--- end ---");
    Ok(FixtureRun {
        exit_code: status.code(),
        stdout,
        dir,
        elapsed,
    })
}

/// Boots with a command line on which the kernel panics before user space (no init, no
/// root): there is no pvpanic driver yet, so only the console tells.
#[vm_test(fixture, qemu_linux_direct(debian12_k61))]
async fn fixture_panics_at_boot(vm: VmBuilder) -> anyhow::Result<()> {
    let mut vm = vm.with_kernel_cmdline("rdinit=/nonexistent").run().await?;
    vm.wait_for_ready(Duration::from_secs(600)).await?;
    Ok(())
}

#[vm_test(qemu_linux_direct(debian12_k61))]
async fn framework_fails_fast_on_a_kernel_panic(vm: VmBuilder) -> anyhow::Result<()> {
    let run = run_fixture(
        &vm,
        "qemu_linux_direct_debian12_k61::fixture_panics_at_boot",
        Duration::from_secs(240),
    )?;
    assert_eq!(run.exit_code, Some(1), "the fixture must fail");
    assert!(
        run.stdout.contains("guest kernel panic: "),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Kernel panic - not syncing"));
    // The serial tail is part of the failure, with the panic report's last line.
    assert!(run.stdout.contains("lines of com1.log ---"));
    assert!(run.stdout.contains("---[ end Kernel panic"));
    let failed = run.marker("agar.failed").expect("agar.failed marker");
    assert!(failed.contains("guest kernel panic"));
    assert!(run.marker("agar.passed").is_none());
    // Fast: the watchdog is five minutes; the panic comes within seconds of boot.
    assert!(run.elapsed < Duration::from_secs(120), "{:?}", run.elapsed);
    Ok(())
}

/// A guest that never becomes ready: no init in the initramfs, and the kernel waits forever
/// for a root disk that does not exist.
#[vm_test(fixture, timeout = 20, qemu_linux_direct(debian12_k61))]
async fn fixture_hangs(vm: VmBuilder) -> anyhow::Result<()> {
    let mut vm = vm
        .with_kernel_cmdline("rdinit=/nonexistent root=/dev/sdz rootwait")
        .run()
        .await?;
    vm.wait_for_ready(Duration::from_secs(3600)).await?;
    Ok(())
}

#[vm_test(qemu_linux_direct(debian12_k61))]
async fn framework_watchdog_fails_a_hung_guest(vm: VmBuilder) -> anyhow::Result<()> {
    let run = run_fixture(
        &vm,
        "qemu_linux_direct_debian12_k61::fixture_hangs",
        Duration::from_secs(120),
    )?;
    assert_eq!(run.exit_code, Some(1), "the fixture must fail");
    assert!(
        run.stdout
            .contains("watchdog: the test did not finish within 20s"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Waiting for root device"));
    assert!(run.marker("agar.failed").is_some());
    assert!(
        run.elapsed >= Duration::from_secs(20) && run.elapsed < Duration::from_secs(60),
        "{:?}",
        run.elapsed
    );
    Ok(())
}

#[vm_test(linux_direct(debian12_k61))]
async fn framework_names_a_vmm_killed_under_the_test(vm: VmBuilder) -> anyhow::Result<()> {
    let program = match vm.backend() {
        agar::BackendKind::Qemu => "qemu-system-x86_64",
        agar::BackendKind::AgarVmm => "agar-vmm",
    };
    let mut vm = vm.run().await?;
    let agent = vm.agent().await?;
    agent.run("true").await?;
    // Killed from outside the framework's API, as the OOM killer or a person would.
    let pid = rustix::process::Pid::from_raw(vm.pid() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL)?;
    let err = agent.exec("sleep 30").await.expect_err("the VMM is gone");
    let msg = err.to_string();
    assert!(matches!(err, Error::VmmExited { .. }), "{msg}");
    assert!(
        msg.contains(&format!("{program} (pid {})", vm.pid())),
        "{msg}"
    );
    assert!(msg.contains("killed by signal 9 (SIGKILL)"), "{msg}");
    assert_eq!(vm.wait_for_halt().await?, HaltReason::Killed { signal: 9 });
    Ok(())
}

#[vm_test(linux_direct(debian12_k61))]
async fn framework_reports_a_guest_crash(vm: VmBuilder) -> anyhow::Result<()> {
    let backend = vm.backend();
    let mut vm = vm.run().await?;
    let agent = vm.agent().await?;
    // pvpanic is loaded by /init: the panic halts the VM with a crash reason.
    assert!(
        agent
            .run("ls /sys/bus/platform/drivers/pvpanic-mmio")
            .await
            .is_ok()
    );
    let err = agent
        .exec("echo c > /proc/sysrq-trigger")
        .await
        .expect_err("the guest panics");
    assert!(matches!(err, Error::KernelPanic { .. }), "{err}");
    assert!(err.to_string().contains("sysrq triggered crash"), "{err}");
    // Each VMM names the crash its own way (QEMU: the pvpanic event; agar-vmm: its halt
    // line), but both halt with a guest crash.
    let halt = vm.wait_for_halt().await?;
    assert!(
        matches!(halt, HaltReason::GuestCrash(_)),
        "{backend:?}: {halt}"
    );
    Ok(())
}

/// Boots and waits: the parent kills this process and checks the VMM dies with it.
#[vm_test(fixture, qemu_linux_direct(debian12_k61))]
async fn fixture_boots_and_waits(vm: VmBuilder) -> anyhow::Result<()> {
    let mut vm = vm.run().await?;
    vm.wait_for_ready(Duration::from_secs(600)).await?;
    vm.wait_for_serial(1, "this line never comes", Duration::from_secs(600))
        .await?;
    Ok(())
}

fn read_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("vmm.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

#[vm_test(qemu_linux_direct(debian12_k61))]
async fn framework_leaves_no_vmm_when_the_test_process_is_killed(
    vm: VmBuilder,
) -> anyhow::Result<()> {
    let name = "qemu_linux_direct_debian12_k61::fixture_boots_and_waits";
    let (mut cmd, dir) = fixture_command(&vm, name);
    let mut child = cmd.stdout(Stdio::null()).spawn()?;
    let start = Instant::now();
    let vmm = loop {
        let ready = std::fs::read_to_string(dir.join("com1.log"))
            .is_ok_and(|s| s.contains("agar-init: ready"));
        if let (true, Some(pid)) = (ready, read_pid(&dir)) {
            break pid;
        }
        if start.elapsed() > Duration::from_secs(180) || child.try_wait()?.is_some() {
            let _ = child.kill();
            anyhow::bail!("the fixture never booted its guest");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(process_alive(vmm));
    // SIGKILL: no destructor, no unwinding. Only the parent-death signal can stop the VMM.
    child.kill()?;
    child.wait()?;
    let killed = Instant::now();
    while process_alive(vmm) && killed.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !process_alive(vmm),
        "VMM {vmm} outlived its test process by 5 s"
    );
    // Nothing else of its process group either.
    assert_eq!(agar::process::live_group_members(vmm), Vec::<u32>::new());
    println!(
        "VMM {vmm} gone {} ms after its test process was killed",
        killed.elapsed().as_millis()
    );
    Ok(())
}

/// A BIOS guest that boots, answers and powers off: every file of its output folder is
/// checked by the parent.
#[vm_test(fixture, qemu_pcat(ide(debian12)))]
async fn fixture_pcat_boots_and_powers_off(vm: VmBuilder) -> anyhow::Result<()> {
    let mut vm = vm.run().await?;
    let agent = vm.agent().await?;
    agent.run("echo to the console > /dev/ttyS0").await?;
    assert_eq!(vm.power_off().await?, HaltReason::PowerOff);
    Ok(())
}

/// The attachment lines a test printed: the paths, in order.
fn attachments(stdout: &str) -> Vec<PathBuf> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("[[ATTACHMENT|"))
        .filter_map(|l| l.strip_suffix("]]"))
        .map(PathBuf::from)
        .collect()
}

#[vm_test(qemu_pcat(ide(debian12)))]
async fn framework_leaves_every_log_in_the_output_folder(vm: VmBuilder) -> anyhow::Result<()> {
    let name = "qemu_pcat_ide_debian12::fixture_pcat_boots_and_powers_off";
    let run = run_fixture(&vm, name, Duration::from_secs(240))?;
    assert_eq!(run.exit_code, Some(0), "the fixture must pass");
    let read = |f: &str| -> String {
        std::fs::read_to_string(run.dir.join(f))
            .unwrap_or_else(|e| panic!("{f} in {}: {e}", run.dir.display()))
    };

    assert_eq!(read("agar.test").trim(), name);
    // The console, and what the agent wrote to it.
    let com1 = read("com1.log");
    assert!(com1.contains("Linux version"), "{com1}");
    assert!(com1.contains("agar-init: ready"));
    assert!(com1.contains("to the console"));
    // The agent transcript on COM2: the handshake, the command, the power off.
    let com2 = read("com2.log");
    assert!(com2.contains("hello: agar-agent"), "{com2}");
    assert!(
        com2.contains("exec `echo to the console > /dev/ttyS0`"),
        "{com2}"
    );
    assert!(com2.contains("power off"), "{com2}");
    // COM3 and COM4 are captured, and quiet.
    assert_eq!(read("com3.log"), "");
    assert_eq!(read("com4.log"), "");
    // SeaBIOS's debug port 0x402.
    let firmware = read("firmware.log");
    assert!(firmware.starts_with("SeaBIOS (version"), "{firmware}");
    assert!(firmware.contains("Booting from Hard Disk"), "{firmware}");
    // The VMM: its command line (reproducible by hand), pid, output files.
    let cmdline = read("vmm.cmdline");
    assert!(cmdline.contains("qemu-system-x86_64 -M pc"), "{cmdline}");
    assert!(cmdline.contains("-device isa-debugcon,iobase=0x402,chardev=fwlog"));
    let pid: u32 = read("vmm.pid").trim().parse()?;
    assert!(!process_alive(pid), "VMM {pid} outlived its test");
    read("vmm.stdout.log");
    read("vmm.stderr.log");
    // The framework log: JSON lines, from start to finish, with the command line.
    let jsonl = read("agar.jsonl");
    let messages: Vec<String> = jsonl
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            v["fields"]["message"].as_str().unwrap_or("").to_string()
        })
        .collect();
    for m in [
        "test started",
        "boot disk ready",
        "agent connected",
        "test finished",
    ] {
        assert!(messages.iter().any(|x| x == m), "no `{m}` in {messages:?}");
    }
    assert!(
        messages
            .iter()
            .any(|x| x.contains("reproduce by hand with this command line"))
    );
    // The result: marker and record.
    assert_eq!(run.marker("agar.passed").as_deref(), Some(""));
    assert!(run.marker("agar.failed").is_none());
    let result: serde_json::Value = serde_json::from_str(&read("agar.result.json"))?;
    assert_eq!(result["status"], "passed");
    assert_eq!(result["cell"], "qemu_pcat_ide_debian12");
    assert!(
        result["timings"]["spawn_to_first_output_ms"]
            .as_u64()
            .is_some()
    );
    assert!(result["timings"]["teardown_ms"].as_u64().is_some());

    // Every file is announced as an attachment, exactly once, by absolute path.
    let mut listed = attachments(&run.stdout);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&run.dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    listed.sort();
    files.sort();
    assert_eq!(listed, files);
    for f in [
        "agar.test",
        "agar.jsonl",
        "agar.passed",
        "agar.result.json",
        "com1.log",
        "com2.log",
        "com3.log",
        "com4.log",
        "firmware.log",
        "vmm.cmdline",
        "vmm.pid",
        "vmm.stdout.log",
        "vmm.stderr.log",
    ] {
        assert!(listed.contains(&run.dir.join(f)), "{f} not attached");
    }
    Ok(())
}

/// Starts a VM through a "VMM" that leaves a helper process in its process group (a shell
/// wrapper: `sleep &` then `exec qemu`), and leaks the `Vm` handle, so nothing kills the
/// group before the harness's after-test check.
#[vm_test(fixture, qemu_linux_direct(debian12_k61))]
async fn fixture_leaks_a_vmm_helper(vm: VmBuilder) -> anyhow::Result<()> {
    let vm = vm.run().await?;
    std::mem::forget(vm);
    Ok(())
}

#[vm_test(qemu_linux_direct(debian12_k61))]
async fn framework_kills_and_reports_leftover_vmm_processes(vm: VmBuilder) -> anyhow::Result<()> {
    let name = "qemu_linux_direct_debian12_k61::fixture_leaks_a_vmm_helper";
    let wrapper = vm.output_dir().join("qemu-with-helper");
    let qemu = std::env::var("AGAR_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nsleep 600 &\nexec {qemu} \"$@\"\n"),
    )?;
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let (mut cmd, dir) = fixture_command(&vm, name);
    cmd.env("AGAR_QEMU", &wrapper);
    let start = Instant::now();
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("--- fixture {name} stdout ---\n{stdout}--- end ---");
    assert!(start.elapsed() < Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(1), "the fixture must fail");
    let vmm = read_pid(&dir).expect("vmm.pid");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("left VMM processes behind: "))
        .unwrap_or_else(|| panic!("no leftover report in:\n{stdout}"));
    // `left VMM processes behind: <wrapper> (pid N): pids [M]`: the helper, not the VMM.
    assert!(line.contains(&format!("(pid {vmm}): pids [")), "{line}");
    let pids: Vec<u32> = line
        .rsplit_once('[')
        .and_then(|(_, r)| r.strip_suffix(']'))
        .map(|r| r.split(", ").filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default();
    assert_eq!(pids.len(), 1, "{line}");
    assert_ne!(pids[0], vmm);
    // The harness killed what it found.
    assert!(!process_alive(pids[0]), "helper {} still alive", pids[0]);
    assert!(!process_alive(vmm));
    assert!(
        run_marker(&dir, "agar.failed").is_some_and(|m| m.contains("left VMM processes behind"))
    );
    Ok(())
}

fn run_marker(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}
