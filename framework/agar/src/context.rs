//! Per-test state shared by the harness, the builder and every VM of the test.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use crate::cell::Cell;
use crate::error::Error;
use crate::error::SerialTail;
use crate::vm::VmShared;

/// Lines of serial output quoted under a failure.
pub const TAIL_LINES: usize = 40;

/// The default watchdog.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// State of one running test.
pub struct TestContext {
    /// Full test name.
    pub name: String,
    /// The output folder.
    pub output_dir: PathBuf,
    /// The cell.
    pub cell: Cell,
    /// Resolved artifacts (the cell's and the test's extra ones), by id.
    pub artifacts: BTreeMap<String, PathBuf>,
    watchdog: tokio::sync::watch::Sender<(Duration, Instant)>,
    vms: Mutex<Vec<Arc<VmShared>>>,
    seq: AtomicU32,
}

impl TestContext {
    /// A context whose watchdog fires `timeout` from now.
    pub fn new(
        name: String,
        output_dir: PathBuf,
        cell: Cell,
        artifacts: BTreeMap<String, PathBuf>,
        timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            output_dir,
            cell,
            artifacts,
            watchdog: tokio::sync::watch::channel((timeout, Instant::now() + timeout)).0,
            vms: Mutex::default(),
            seq: AtomicU32::new(0),
        })
    }

    /// Re-arms the watchdog to fire `timeout` from now.
    pub fn set_timeout(&self, timeout: Duration) {
        tracing::info!(?timeout, "watchdog re-armed");
        self.watchdog
            .send_replace((timeout, Instant::now() + timeout));
    }

    /// A fresh number for the next VM of this test.
    pub fn next_vm_number(&self) -> u32 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Records a started VM (for the watchdog's tail and the leftover check).
    pub fn register(&self, vm: Arc<VmShared>) {
        self.vms.lock().unwrap_or_else(|e| e.into_inner()).push(vm);
    }

    /// Every VM the test started.
    pub fn vms(&self) -> Vec<Arc<VmShared>> {
        self.vms.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The console tail of the most recent VM.
    pub fn tail(&self) -> SerialTail {
        self.vms()
            .last()
            .map(|v| v.console_tail(TAIL_LINES))
            .unwrap_or_default()
    }

    /// Resolves when the watchdog fires, with the error to report.
    pub async fn watchdog(&self) -> Error {
        let mut rx = self.watchdog.subscribe();
        loop {
            let (timeout, deadline) = *rx.borrow_and_update();
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => {
                    return Error::Watchdog { timeout, tail: Box::new(self.tail()) };
                }
                r = rx.changed() => {
                    if r.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}
