//! The runtime API: [`VmBuilder`] (what the test body receives) and [`Vm`] (a running VM).

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use vm_config::Boot;
use vm_config::ByteSize;
use vm_config::DiskBus;
use vm_config::DiskConfig;
use vm_config::DiskSpec;
use vm_config::SerialConfig;
use vm_config::VmConfig;

use crate::agent_client::Agent;
use crate::backend;
use crate::backend::qmp;
use crate::cell::BackendKind;
use crate::cell::Cell;
use crate::cell::Firmware;
use crate::cell::Paravisor;
use crate::cell::Storage;
use crate::context::TAIL_LINES;
use crate::context::TestContext;
use crate::error::Error;
use crate::error::Result;
use crate::error::SerialTail;
use crate::process;
use crate::serial::SerialLog;

/// How long a kernel panic report may take to finish printing before the test fails.
const PANIC_GRACE: Duration = Duration::from_secs(3);

/// How long to wait for the VMM's monitor socket and for the VMM to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaltReason {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest reset the machine (the VMM exits on reset).
    Reset,
    /// A triple fault (agar-vmm; QEMU reports it as a reset), with the VMM's detail.
    TripleFault(String),
    /// The guest reported a crash (pvpanic, Hyper-V crash MSRs), with the VMM's detail.
    GuestCrash(String),
    /// The VMM's CPU backend failed (agar-vmm exit code 6).
    BackendError(String),
    /// The VMM refused its configuration (agar-vmm exit code 2).
    BadConfig(String),
    /// The VMM exited with another code.
    VmmError {
        /// Exit code.
        code: i32,
        /// Its last words.
        message: String,
    },
    /// The VMM died from a signal (the test's `kill()`, or something outside the test).
    Killed {
        /// The signal number.
        signal: i32,
    },
}

impl std::fmt::Display for HaltReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PowerOff => f.write_str("power off"),
            Self::Reset => f.write_str("reset"),
            Self::TripleFault(m) => write!(f, "triple fault ({m})"),
            Self::GuestCrash(m) => write!(f, "guest crash ({m})"),
            Self::BackendError(m) => write!(f, "backend error: {m}"),
            Self::BadConfig(m) => write!(f, "bad configuration: {m}"),
            Self::VmmError { code, message } => write!(f, "exited with code {code}: {message}"),
            Self::Killed { signal } => {
                write!(f, "killed by {}", process::signal_name(*signal))
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Exit {
    reason: HaltReason,
    at: Instant,
}

/// The part of a running VM that outlives the [`Vm`] handle: process identity, serial
/// logs and the exit, shared with the agent client, the watchdog and the harness.
pub struct VmShared {
    program: &'static str,
    pid: u32,
    spawned_at: Instant,
    serial: [Option<Arc<SerialLog>>; 4],
    exit: tokio::sync::watch::Receiver<Option<Exit>>,
    activity: tokio::sync::watch::Sender<u64>,
    dropped_at: Mutex<Option<Instant>>,
}

impl VmShared {
    /// `qemu-system-x86_64 (pid 1234)`.
    pub fn vmm_name(&self) -> String {
        format!("{} (pid {})", self.program, self.pid)
    }

    /// The VMM's pid, which is also its process group.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last `n` lines of the console (COM1).
    pub fn console_tail(&self, n: usize) -> SerialTail {
        self.serial[0]
            .as_ref()
            .map(|l| l.tail(n))
            .unwrap_or_default()
    }

    /// The halt reason, once the VMM has exited and its logs are drained.
    pub fn halt(&self) -> Option<HaltReason> {
        self.exit.borrow().as_ref().map(|e| e.reason.clone())
    }

    /// When the VMM exited.
    pub fn exited_at(&self) -> Option<Instant> {
        self.exit.borrow().as_ref().map(|e| e.at)
    }

    /// When the test dropped its handle.
    pub fn dropped_at(&self) -> Option<Instant> {
        *self.dropped_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the VMM was spawned.
    pub fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    /// The console log.
    pub fn console(&self) -> Option<&Arc<SerialLog>> {
        self.serial[0].as_ref()
    }

    fn panic_line(&self) -> Option<(String, bool)> {
        self.serial
            .iter()
            .flatten()
            .find_map(|l| l.panic_line().map(|p| (p, l.panic_ended())))
    }

    /// Resolves with the error to report when the VM can no longer do what the test
    /// waits for: the guest panicked, or the VMM exited. `waiting` says what the test was
    /// doing ("waited for the agent").
    pub async fn doomed(&self, waiting: &str) -> Error {
        let mut activity = self.activity.subscribe();
        let mut exit = self.exit.clone();
        let mut panic_deadline: Option<Instant> = None;
        loop {
            if let Some((line, ended)) = self.panic_line() {
                let deadline = *panic_deadline.get_or_insert_with(|| Instant::now() + PANIC_GRACE);
                if ended || self.halt().is_some() || Instant::now() >= deadline {
                    return Error::KernelPanic {
                        line,
                        tail: Box::new(self.console_tail(TAIL_LINES)),
                    };
                }
            } else if let Some(reason) = self.halt() {
                return Error::VmmExited {
                    vmm: self.vmm_name(),
                    waiting: waiting.to_string(),
                    reason,
                    tail: Box::new(self.console_tail(TAIL_LINES)),
                };
            }
            let grace = async {
                match panic_deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = activity.changed() => {}
                r = exit.changed(), if self.halt().is_none() => {
                    if r.is_err() {
                        // The monitor is gone (runtime shutting down): nothing will change.
                        std::future::pending::<()>().await;
                    }
                }
                _ = grace => {}
            }
        }
    }

    /// Waits for the VMM to exit and its logs to drain.
    async fn wait_exit(&self) -> HaltReason {
        let mut exit = self.exit.clone();
        loop {
            if let Some(r) = self.halt() {
                return r;
            }
            if exit.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The kernel command line every Linux guest of a `backend` cell starts from.
///
/// On QEMU, `no_timer_check`: under TCG the guest's early check that the PIT interrupt
/// reaches the IO-APIC counts timer ticks against a delay loop run by the emulated CPU, and
/// on a loaded host (other VMs, builds) the vCPU thread is descheduled long enough for the
/// check to fail: `Kernel panic - not syncing: IO-APIC + timer doesn't work!` at 0.06 s,
/// seen here on both kernels with three QEMU guests booting at once. KVM guests skip the
/// check on their own (kvmclock); the option does the same for TCG.
fn base_cmdline(backend: BackendKind) -> &'static str {
    match backend {
        BackendKind::Qemu => "console=ttyS0 agar.agent=/dev/ttyS1 no_timer_check",
        BackendKind::AgarVmm => "console=ttyS0 agar.agent=/dev/ttyS1",
    }
}

/// A BIOS boot disk the framework assembles when the VM starts (kernel, initramfs with the
/// agent appended, command line), through the artifacts crate's media cache.
#[derive(Debug, Clone)]
struct BootMedium {
    kernel: PathBuf,
    initrd: PathBuf,
    cmdline: String,
    bus: DiskBus,
}

/// What a test body receives: the cell's configuration, ready to adjust and run.
#[derive(Clone)]
pub struct VmBuilder {
    ctx: Arc<TestContext>,
    config: VmConfig,
    agent: bool,
    medium: Option<BootMedium>,
}

impl VmBuilder {
    /// The cell's default VM: its firmware and boot media from the resolved artifacts, the
    /// agent on COM2.
    pub(crate) fn new(ctx: Arc<TestContext>) -> Result<Self> {
        let cell = ctx.cell;
        let art = |id: &str| -> Result<PathBuf> {
            ctx.artifacts
                .get(id)
                .cloned()
                .ok_or_else(|| Error::Artifact {
                    name: id.into(),
                    message: "not resolved for this test".into(),
                })
        };
        let base_cmdline = base_cmdline(cell.backend);
        let mut boot = match cell.firmware {
            Firmware::LinuxDirect => {
                let (k, i) = cell.os.kernel_initrd().ok_or_else(|| {
                    Error::Other(format!(
                        "{} has no kernel for Linux direct boot",
                        cell.os.name()
                    ))
                })?;
                Boot::LinuxDirect {
                    kernel: art(k)?,
                    initrd: Some(art(i)?),
                    cmdline: base_cmdline.into(),
                }
            }
            Firmware::Pcat => Boot::Pcat {
                firmware: Some(art("seabios_bios")?),
            },
            Firmware::Uefi => Boot::Uefi {
                firmware: Some(art("ovmf_fd")?),
            },
        };
        if cell.paravisor.is_some() {
            boot = Boot::Igvm {
                path: art("openhcl_x64_igvm")?,
            };
        }
        let mut config = VmConfig::with_boot(boot);
        if cell.paravisor.is_some() {
            config.hv = true;
            config.vtl2 = cell.paravisor == Some(Paravisor::OpenHcl);
        }
        let medium = match (cell.storage, cell.os.medium_inputs()) {
            (Some(storage), Some((k, i))) => {
                let bus = match storage {
                    Storage::Ide => DiskBus::Ide,
                    Storage::Vmbus => DiskBus::VmbusScsi,
                };
                // The guest loads its own disk controller's driver, so it sees the disk
                // it booted from.
                let modules = match storage {
                    Storage::Ide => "ata_piix,sd_mod",
                    Storage::Vmbus => "hv_vmbus,hv_storvsc,sd_mod",
                };
                Some(BootMedium {
                    kernel: art(k)?,
                    initrd: art(i)?,
                    cmdline: format!("{base_cmdline} agar.modules={modules}"),
                    bus,
                })
            }
            _ => None,
        };
        Ok(Self {
            ctx,
            config,
            agent: true,
            medium,
        })
    }

    /// The matrix cell this test runs in.
    pub fn cell(&self) -> Cell {
        self.ctx.cell
    }

    /// The backend.
    pub fn backend(&self) -> BackendKind {
        self.ctx.cell.backend
    }

    /// The configuration that [`Self::run`] will start (serial ports are assigned then).
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// Changes the configuration.
    pub fn modify_config(mut self, f: impl FnOnce(&mut VmConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Sets the number of virtual processors.
    pub fn with_processors(self, n: u32) -> Self {
        self.modify_config(|c| c.processors = n)
    }

    /// Sets guest RAM in MiB.
    pub fn with_memory_mb(self, mb: u64) -> Self {
        self.modify_config(|c| c.memory = ByteSize(mb << 20))
    }

    /// Appends to the kernel command line: Linux direct boot, or the boot loader
    /// configuration of a disk the framework assembles. Ignored for other guests.
    pub fn with_kernel_cmdline(mut self, extra: &str) -> Self {
        let append = |cmdline: &mut String| {
            if !cmdline.is_empty() {
                cmdline.push(' ');
            }
            cmdline.push_str(extra);
        };
        if let Some(m) = &mut self.medium {
            append(&mut m.cmdline);
        }
        self.modify_config(|c| {
            if let Boot::LinuxDirect { cmdline, .. } = &mut c.boot {
                append(cmdline);
            }
        })
    }

    /// Boots without the guest agent: COM2 becomes a plain captured port.
    pub fn without_agent(mut self) -> Self {
        self.agent = false;
        self
    }

    /// Re-arms the test's watchdog to fire `timeout` from now (default 5 minutes).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.ctx.set_timeout(timeout);
        self
    }

    /// A resolved artifact of this test (the cell's, or one named in `artifacts(...)`).
    pub fn artifact(&self, id: &str) -> Result<&Path> {
        self.ctx
            .artifacts
            .get(id)
            .map(PathBuf::as_path)
            .ok_or_else(|| Error::Artifact {
                name: id.into(),
                message: "not declared by this test; add it to `artifacts(...)`".into(),
            })
    }

    /// The test's output folder.
    pub fn output_dir(&self) -> &Path {
        &self.ctx.output_dir
    }

    /// The kernel release (`uname -r`) of the cell's kernel (Linux direct, or on the boot
    /// disk the framework assembles), read from the bzImage header.
    pub fn kernel_release(&self) -> Result<String> {
        match (&self.config.boot, &self.medium) {
            (Boot::LinuxDirect { kernel, .. }, _) => crate::linux::bzimage_release(kernel),
            (_, Some(m)) => crate::linux::bzimage_release(&m.kernel),
            _ => Err(Error::Other(
                "the guest's kernel is not known to the framework".into(),
            )),
        }
    }

    /// Starts the VM.
    pub async fn run(self) -> Result<Vm> {
        let mut config = self.config;
        if let Some(m) = self.medium {
            let agent = self.agent;
            // The test's log subscriber is thread-local: carry it to the blocking thread.
            let log = tracing::dispatcher::get_default(|d| d.clone());
            let disk = tokio::task::spawn_blocking(move || {
                tracing::dispatcher::with_default(&log, || build_medium(&m, agent))
            })
            .await
            .map_err(|e| Error::Other(format!("building the boot disk: {e}")))??;
            // The boot disk goes first: IDE channel 0 master / LUN 0.
            config.disks.insert(0, disk);
        }
        Vm::start(self.ctx, config, self.agent).await
    }
}

/// Assembles (or finds in the media cache) the BIOS disk for `m`.
fn build_medium(m: &BootMedium, agent: bool) -> Result<DiskConfig> {
    use artifacts::media::BiosDisk;
    use artifacts::media::BootFiles;
    let err = |e: artifacts::media::MediaError| Error::Other(format!("boot disk: {e}"));
    let mut files = BootFiles::new(&m.kernel, &m.initrd)
        .replace_cmdline(&m.cmdline)
        .map_err(err)?;
    if agent {
        files = files
            .append_agent(&crate::artifacts::agent_binary()?)
            .map_err(err)?;
    }
    let started = Instant::now();
    let medium = BiosDisk::new(files)
        .build(crate::artifacts::resolver()?.cache())
        .map_err(err)?;
    tracing::info!(
        path = %medium.path.display(),
        cached = medium.cached,
        elapsed_ms = started.elapsed().as_millis() as u64,
        cmdline = %m.cmdline,
        "boot disk ready"
    );
    Ok(DiskConfig {
        bus: m.bus,
        // A cache blob shared by every test: writes go to a RAM layer.
        spec: DiskSpec::MemDiff(Box::new(DiskSpec::File {
            path: medium.path,
            read_only: true,
            create: None,
            direct: false,
        })),
        dvd: false,
    })
}

/// A running VM. Dropping it kills the VMM.
pub struct Vm {
    shared: Arc<VmShared>,
    qmp: Option<qmp::Qmp>,
    agent_socket: Option<PathBuf>,
    agent: Option<Agent>,
    transcript: PathBuf,
    cursors: [usize; 4],
    run_dir: PathBuf,
}

fn short_run_dir(n: u32) -> Result<PathBuf> {
    // Unix socket paths are limited to 108 bytes: keep sockets out of the output folder.
    let tmp = std::env::temp_dir();
    if n == 0 {
        sweep_stale_run_dirs(&tmp);
    }
    let d = tmp.join(format!("agar-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(Error::io(&d))?;
    Ok(d)
}

/// Removes `agar-<pid>-<n>` socket folders left by test processes that were killed (a
/// nextest timeout, Ctrl-C) before their `Vm` was dropped: their pid no longer runs.
fn sweep_stale_run_dirs(tmp: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("agar-")) else {
            continue;
        };
        let Some((pid, n)) = rest.split_once('-') else {
            continue;
        };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), n.parse::<u32>()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Vm {
    async fn start(ctx: Arc<TestContext>, mut config: VmConfig, agent: bool) -> Result<Vm> {
        let n = ctx.next_vm_number();
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-vm{n}")
        };
        let out = ctx.output_dir.clone();
        let run_dir = short_run_dir(n)?;
        let file = |name: &str| out.join(format!("{name}{suffix}.log"));

        // Serial ports the test left at their defaults are captured.
        let mut agent_socket = None;
        for i in 0..4 {
            let default = if i == 0 {
                SerialConfig::Console
            } else {
                SerialConfig::None
            };
            if config.serial[i] != default {
                continue;
            }
            config.serial[i] = if i == 1 && agent {
                let s = run_dir.join("agent.sock");
                agent_socket = Some(s.clone());
                SerialConfig::Listen(s)
            } else {
                SerialConfig::File(file(&format!("com{}", i + 1)))
            };
        }
        if matches!(config.boot, Boot::Pcat { .. } | Boot::Uefi { .. })
            && config.firmware_log == SerialConfig::None
        {
            config.firmware_log = SerialConfig::File(file("firmware"));
        }
        if agent
            && let Boot::LinuxDirect {
                initrd: Some(initrd),
                ..
            } = &mut config.boot
        {
            let cache = crate::output::target_dir()
                .map(|t| t.join("agar-cache"))
                .unwrap_or_else(|| std::env::temp_dir().join("agar-cache"));
            let with_agent = crate::linux::cached_initrd_with_agent(
                initrd,
                &crate::artifacts::agent_binary()?,
                &cache,
            )?;
            *initrd = with_agent;
        }

        let be = backend::backend(ctx.cell.backend);
        let program = be.program()?;
        let launch = be.launch(&program, &config, &run_dir)?;
        let repro = launch
            .repro
            .iter()
            .map(|a| vm_config::shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ");
        std::fs::write(
            out.join(format!("vmm{suffix}.cmdline")),
            format!("{repro}\n"),
        )
        .map_err(Error::io(&out))?;
        tracing::info!(command = %repro, "starting {}; reproduce by hand with this command line", be.program_name());
        println!("agar: {} command line: {repro}", be.program_name());
        for (path, size) in &launch.scratch {
            let f = std::fs::File::create(path).map_err(Error::io(path))?;
            f.set_len(*size).map_err(Error::io(path))?;
        }
        let mut logs: [Option<Arc<SerialLog>>; 4] = Default::default();
        let activity = tokio::sync::watch::channel(0u64).0;
        for (i, s) in config.serial.iter().enumerate() {
            if let SerialConfig::File(p) = s {
                std::fs::write(p, b"").map_err(Error::io(p))?;
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                logs[i] = Some(Arc::new(
                    SerialLog::new(name, p.clone()).with_activity(activity.clone()),
                ));
            }
        }
        let stdout_path = file("vmm.stdout");
        let stderr_path = file("vmm.stderr");
        let stdout = std::fs::File::create(&stdout_path).map_err(Error::io(&stdout_path))?;
        let stderr = std::fs::File::create(&stderr_path).map_err(Error::io(&stderr_path))?;
        let mut child = process::spawn(&launch.argv, &out, stdout, stderr)?;
        let spawned_at = Instant::now();
        let pid = child.id().unwrap_or(0);
        tracing::info!(pid, "spawned {}", be.program_name());
        let _ = std::fs::write(out.join(format!("vmm{suffix}.pid")), format!("{pid}\n"));

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tailers: Vec<_> = logs
            .iter()
            .flatten()
            .map(|l| {
                let l = l.clone();
                let rx = stop_rx.clone();
                tokio::spawn(async move { l.run_tailer(rx).await })
            })
            .collect();
        let (exit_tx, exit_rx) = tokio::sync::watch::channel(None);
        let qmp_events = qmp::Events::default();
        {
            let qmp_events = qmp_events.clone();
            let has_qmp = launch.qmp.is_some();
            let be = backend::backend(ctx.cell.backend);
            let program = be.program_name();
            tokio::spawn(async move {
                let status = child.wait().await;
                let at = Instant::now();
                if has_qmp {
                    qmp_events.wait_closed(Duration::from_secs(1)).await;
                }
                let _ = stop_tx.send(true);
                for t in tailers {
                    let _ = t.await;
                }
                let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                let reason = match status {
                    Ok(s) => be.halt_reason(s, &stderr, &qmp_events.snapshot()),
                    Err(e) => HaltReason::VmmError {
                        code: -1,
                        message: format!("wait: {e}"),
                    },
                };
                tracing::info!(%reason, "{program} exited");
                let _ = exit_tx.send(Some(Exit { reason, at }));
            });
        }
        let shared = Arc::new(VmShared {
            program: be.program_name(),
            pid,
            spawned_at,
            serial: logs,
            exit: exit_rx,
            activity,
            dropped_at: Mutex::new(None),
        });
        ctx.register(shared.clone());
        let mut vm = Vm {
            shared: shared.clone(),
            qmp: None,
            agent_socket,
            agent: None,
            transcript: file("com2"),
            cursors: [0; 4],
            run_dir,
        };
        if let Some(path) = &launch.qmp {
            let connect = async {
                let q = qmp::Qmp::connect(path, START_TIMEOUT, qmp_events).await?;
                q.execute("cont", None).await?;
                Ok::<_, Error>(q)
            };
            let q = tokio::select! {
                q = connect => q?,
                e = shared.doomed("was starting the VM") => return Err(e),
            };
            vm.qmp = Some(q);
        }
        Ok(vm)
    }

    /// The VMM's pid (also its process group).
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// `qemu-system-x86_64 (pid 1234)`.
    pub fn vmm_name(&self) -> String {
        self.shared.vmm_name()
    }

    fn port(&self, port: u8) -> Result<&Arc<SerialLog>> {
        usize::from(port)
            .checked_sub(1)
            .and_then(|i| self.shared.serial.get(i))
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::Other(format!("COM{port} is not captured to a file")))
    }

    /// The last `n` lines of COM`port`.
    pub fn serial_tail(&self, port: u8, n: usize) -> Result<Vec<String>> {
        Ok(self.port(port)?.tail(n).lines)
    }

    /// Waits for a line on COM`port` matching `pattern` (a regex) and returns it.
    ///
    /// Each port has a cursor: the search starts after the line the previous successful
    /// wait on that port matched, and includes lines that arrived before the call. Fails
    /// at once if the guest panics or the VMM exits.
    pub async fn wait_for_serial(
        &mut self,
        port: u8,
        pattern: &str,
        timeout: Duration,
    ) -> Result<String> {
        let re = regex::Regex::new(pattern)
            .map_err(|e| Error::Other(format!("bad pattern /{pattern}/: {e}")))?;
        let log = self.port(port)?.clone();
        let idx = usize::from(port) - 1;
        let what = format!("/{pattern}/ on {}", log.name());
        // A huge timeout means "no limit" (the watchdog still applies).
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400));
        let mut rx = log.subscribe();
        let found = async {
            loop {
                if let Some((i, line)) = log.find(self.cursors[idx], &re) {
                    return Ok((i, line));
                }
                if log.finished() {
                    std::future::pending::<()>().await;
                }
                tokio::select! {
                    _ = rx.changed() => {}
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(Error::Timeout {
                            what: what.clone(),
                            timeout,
                            tail: Box::new(log.tail(TAIL_LINES)),
                        });
                    }
                }
            }
        };
        let waiting = format!("waited for {what}");
        let (i, line) = tokio::select! {
            r = found => r?,
            e = self.shared.doomed(&waiting) => {
                // A match that arrived together with the end still counts.
                match log.find(self.cursors[idx], &re) {
                    Some(m) => m,
                    None => return Err(e),
                }
            }
        };
        self.cursors[idx] = i + 1;
        tracing::info!(port, %line, "serial matched /{pattern}/");
        Ok(line)
    }

    /// Waits for the guest's readiness marker (`agar-init: ready`) on the console.
    pub async fn wait_for_ready(&mut self, timeout: Duration) -> Result<String> {
        self.wait_for_serial(1, crate::serial::READY_MARKER, timeout)
            .await
    }

    /// The guest agent, connected and handshaken on first use. Fails at once if the guest
    /// panics or the VMM exits before it answers.
    pub async fn agent(&mut self) -> Result<Agent> {
        if let Some(a) = &self.agent {
            return Ok(a.clone());
        }
        let socket = self
            .agent_socket
            .clone()
            .ok_or_else(|| Error::Agent("this VM was started without the agent".into()))?;
        let waiting = "waited for the agent";
        let a = tokio::select! {
            a = Agent::connect(&socket, &self.transcript, self.shared.clone()) => match a {
                Ok(a) => a,
                // A broken connection usually means the VM is going down: prefer its reason.
                Err(e) => {
                    return Err(
                        tokio::time::timeout(Duration::from_secs(10), self.shared.doomed(waiting))
                            .await
                            .unwrap_or(e),
                    );
                }
            },
            e = self.shared.doomed(waiting) => return Err(e),
        };
        self.agent = Some(a.clone());
        Ok(a)
    }

    /// Waits until the VM halts and returns why. A guest panic without a crash halt
    /// (no pvpanic) fails with the panic after a short grace.
    pub async fn wait_for_halt(&mut self) -> Result<HaltReason> {
        tokio::select! {
            r = self.shared.wait_exit() => Ok(r),
            e = self.shared.doomed("waited for the VM to halt") => {
                match (&e, self.shared.halt()) {
                    (_, Some(r)) => Ok(r),
                    _ => {
                        // Panicked: give pvpanic a moment to halt the VM.
                        match tokio::time::timeout(Duration::from_secs(5), self.shared.wait_exit()).await {
                            Ok(r) => Ok(r),
                            Err(_) => Err(e),
                        }
                    }
                }
            }
        }
    }

    /// Asks the guest agent to power off and waits for the halt; returns the halt reason.
    pub async fn power_off(&mut self) -> Result<HaltReason> {
        let agent = self.agent().await?;
        let start = Instant::now();
        agent.power_off().await?;
        let r = self.wait_for_halt().await?;
        tracing::info!(elapsed_ms = start.elapsed().as_millis() as u64, %r, "powered off");
        Ok(r)
    }

    /// Kills the VMM (SIGKILL to its process group) and waits for it to be gone.
    pub async fn kill(&mut self) -> Result<HaltReason> {
        if self.shared.halt().is_none() {
            tracing::info!(pid = self.shared.pid, "killing the VMM");
            process::kill_group(self.shared.pid, rustix::process::Signal::KILL);
        }
        Ok(self.shared.wait_exit().await)
    }

    /// The QEMU monitor, on the QEMU backend.
    pub fn qmp(&self) -> Option<&qmp::Qmp> {
        self.qmp.as_ref()
    }

    /// Shared state (for the framework's own tests and the harness).
    pub fn shared(&self) -> &Arc<VmShared> {
        &self.shared
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        *self
            .shared
            .dropped_at
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        if self.shared.halt().is_none() {
            process::kill_group(self.shared.pid, rustix::process::Signal::KILL);
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::sweep_stale_run_dirs;

    #[test]
    fn stale_socket_folders_of_dead_processes_are_swept() {
        let root = std::env::temp_dir().join(format!("agar-sweep-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        // A process that has exited: its pid is (almost certainly) free.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = root.join(format!("agar-{dead}-0"));
        let mine = root.join(format!("agar-{}-1", std::process::id()));
        let other = root.join("agar-cache-dev");
        for d in [&stale, &mine, &other] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("agent.sock"), b"").unwrap();
        }
        sweep_stale_run_dirs(&root);
        assert!(!stale.exists(), "a dead process's folder is removed");
        assert!(mine.exists(), "this process's folders stay");
        assert!(other.exists(), "folders that are not run folders stay");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
