//! A minimal QMP (QEMU Machine Protocol) client: connect, negotiate, run commands, and
//! collect events (`SHUTDOWN` with its reason, `GUEST_PANICKED`) for the halt reason.

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::io::AsyncWriteExt;
use tokio::io::BufReader;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

use crate::error::Error;
use crate::error::Result;

/// An asynchronous QMP event.
#[derive(Debug, Clone)]
pub struct Event {
    /// `SHUTDOWN`, `GUEST_PANICKED`, ...
    pub name: String,
    /// The event's `data` object.
    pub data: Value,
}

type Command = (Value, oneshot::Sender<Result<Value>>);

/// The events a monitor connection collects, shared with whoever explains the halt. It
/// exists before the connection does, so the process monitor can hold it from the start.
#[derive(Clone)]
pub struct Events {
    events: Arc<Mutex<Vec<Event>>>,
    closed: tokio::sync::watch::Sender<bool>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            events: Arc::default(),
            closed: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Events {
    /// Every event so far.
    pub fn snapshot(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the monitor connection closed (QEMU exited and its last events were
    /// read), at most `timeout`.
    pub async fn wait_closed(&self, timeout: Duration) {
        let mut rx = self.closed.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|c| *c)).await;
    }
}

/// A connected monitor. Commands are answered in order by a background task that also
/// records every event.
pub struct Qmp {
    commands: mpsc::Sender<Command>,
    events: Events,
}

impl Qmp {
    /// Connects to the socket at `path` (retrying until it appears or `timeout` passes),
    /// reads the greeting and leaves negotiation mode. Events go to `events`.
    pub async fn connect(path: &Path, timeout: Duration, events: Events) -> Result<Self> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if start.elapsed() > timeout => {
                    return Err(Error::Qmp(format!(
                        "cannot connect to {}: {e}",
                        path.display()
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = tokio::time::timeout(timeout, lines.next_line())
            .await
            .map_err(|_| Error::Qmp("no greeting".into()))?
            .map_err(|e| Error::Qmp(format!("reading the greeting: {e}")))?
            .ok_or_else(|| Error::Qmp("closed before the greeting".into()))?;
        if !greeting.contains("\"QMP\"") {
            return Err(Error::Qmp(format!("unexpected greeting: {greeting}")));
        }
        let (tx, mut rx) = mpsc::channel::<Command>(4);
        let ev = events.clone();
        tokio::spawn(async move {
            let mut pending: Option<oneshot::Sender<Result<Value>>> = None;
            loop {
                tokio::select! {
                    line = lines.next_line() => {
                        let Ok(Some(line)) = line else { break };
                        let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                        if let Some(name) = v["event"].as_str() {
                            tracing::debug!(event = name, data = %v["data"], "qmp event");
                            ev.events.lock().unwrap_or_else(|e| e.into_inner()).push(Event {
                                name: name.to_string(),
                                data: v["data"].clone(),
                            });
                        } else if let Some(p) = pending.take() {
                            let r = if v.get("return").is_some() {
                                Ok(v["return"].clone())
                            } else {
                                Err(Error::Qmp(v["error"]["desc"].as_str().unwrap_or(&line).to_string()))
                            };
                            let _ = p.send(r);
                        }
                    }
                    cmd = rx.recv(), if pending.is_none() => {
                        let Some((cmd, reply)) = cmd else { break };
                        let mut bytes = cmd.to_string().into_bytes();
                        bytes.push(b'\n');
                        if let Err(e) = write.write_all(&bytes).await {
                            let _ = reply.send(Err(Error::Qmp(format!("write: {e}"))));
                            break;
                        }
                        pending = Some(reply);
                    }
                }
            }
            if let Some(p) = pending {
                let _ = p.send(Err(Error::Qmp("monitor closed".into())));
            }
            ev.closed.send_replace(true);
        });
        let qmp = Qmp {
            commands: tx,
            events,
        };
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs a command and returns its `return` value.
    pub async fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut cmd = json!({ "execute": command });
        if let Some(a) = arguments {
            cmd["arguments"] = a;
        }
        let (tx, rx) = oneshot::channel();
        self.commands
            .send((cmd, tx))
            .await
            .map_err(|_| Error::Qmp("monitor closed".into()))?;
        rx.await.map_err(|_| Error::Qmp("monitor closed".into()))?
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use super::*;

    #[test]
    fn talks_to_a_real_qemu_and_records_its_shutdown() {
        let dir = std::env::temp_dir().join(format!("agar-qmp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("qmp.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut qemu = tokio::process::Command::new("qemu-system-x86_64")
                .args([
                    "-M",
                    "none",
                    "-nodefaults",
                    "-display",
                    "none",
                    "-S",
                    "-qmp",
                ])
                .arg(format!("unix:{},server=on,wait=off", sock.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("qemu-system-x86_64 is installed");
            let events = Events::default();
            let qmp = Qmp::connect(&sock, Duration::from_secs(30), events.clone())
                .await
                .unwrap();
            let status = qmp.execute("query-status", None).await.unwrap();
            assert_eq!(status["status"], "prelaunch");
            let e = qmp.execute("no-such-command", None).await.unwrap_err();
            assert!(e.to_string().contains("no-such-command"), "{e}");
            qmp.execute("quit", None).await.unwrap();
            events.wait_closed(Duration::from_secs(10)).await;
            assert!(qemu.wait().await.unwrap().success());
            let shutdown = events
                .snapshot()
                .into_iter()
                .find(|e| e.name == "SHUTDOWN")
                .expect("a SHUTDOWN event");
            assert_eq!(shutdown.data["reason"], "host-qmp-quit");
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
