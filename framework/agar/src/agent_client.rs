//! The host side of the guest agent: connect to the agent's serial socket, handshake,
//! send one request at a time. Every exchange is written to the port's transcript
//! (`com2.log`) so a failure shows what was asked and answered.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use agent_protocol::ANNOUNCE_ID;
use agent_protocol::MAX_READ_CHUNK;
use agent_protocol::MAX_WRITE_CHUNK;
use agent_protocol::PROTOCOL_VERSION;
use agent_protocol::frame;
use agent_protocol::message::ExecOutput;
use agent_protocol::message::ExitStatus;
use agent_protocol::message::Message;
use agent_protocol::message::Request;
use agent_protocol::message::Response;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use crate::error::Error;
use crate::error::Result;
use crate::vm::VmShared;

/// How often the host repeats its hello until the agent answers.
const HELLO_INTERVAL: Duration = Duration::from_millis(500);

/// Default limit for a command.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a broken agent connection waits for the VM's own explanation (panic, exit).
const LINK_LOSS_GRACE: Duration = Duration::from_secs(10);

/// Limit for requests other than commands.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The result of a command run by the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// The command.
    pub command: String,
    /// How it ended.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Output was cut at the agent's limit.
    pub truncated: bool,
}

impl ExecResult {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.status == ExitStatus::Code(0)
    }

    /// Standard output as text.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text.
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// `self`, or an error with the status and stderr if the command failed.
    pub fn check(self) -> Result<Self> {
        if self.success() {
            Ok(self)
        } else {
            Err(Error::Agent(format!(
                "`{}` failed: {}; stderr: {}",
                self.command,
                self.status,
                self.stderr_str().trim_end()
            )))
        }
    }
}

struct Conn {
    stream: UnixStream,
    decoder: frame::Decoder,
    /// Non-frame bytes not yet written to the transcript (coalesced: the UART delivers
    /// them a byte at a time).
    noise: Vec<u8>,
}

/// Noise is written to the transcript in runs of at most this many bytes.
const NOISE_RUN: usize = 256;

struct Inner {
    conn: tokio::sync::Mutex<Conn>,
    transcript: Mutex<std::fs::File>,
    start: Instant,
    next_id: AtomicU32,
    vm: Arc<VmShared>,
    version: String,
}

/// A connected guest agent. Cheap to clone; requests are serialized.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

fn note(transcript: &Mutex<std::fs::File>, start: Instant, line: &str) {
    let mut f = transcript.lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(f, "[{:9.3}s] {line}", start.elapsed().as_secs_f64());
}

fn describe(r: &Request) -> String {
    match r {
        Request::Hello { min, max } => format!("hello (protocol {min}..={max})"),
        Request::Exec {
            command,
            timeout_ms,
            ..
        } => format!("exec `{command}` (timeout {timeout_ms} ms)"),
        Request::ReadFile { path, offset, max } => format!("read {path} @{offset} max {max}"),
        Request::WriteFile {
            path, offset, data, ..
        } => format!("write {path} @{offset} {} bytes", data.len()),
        Request::PowerOff => "power off".into(),
        Request::Reboot => "reboot".into(),
    }
}

fn describe_response(r: &Response) -> String {
    match r {
        Response::Hello { version, agent } => format!("hello: {agent}, protocol {version}"),
        Response::Exec(o) => format!(
            "{}; stdout {} bytes, stderr {} bytes{}",
            o.status,
            o.stdout.len(),
            o.stderr.len(),
            if o.truncated { " (truncated)" } else { "" }
        ),
        Response::FileData { data, eof } => {
            format!("{} bytes{}", data.len(), if *eof { ", eof" } else { "" })
        }
        Response::Done => "done".into(),
        Response::Error { message } => format!("error: {message}"),
    }
}

fn preview(bytes: &[u8]) -> String {
    let s: String = bytes
        .iter()
        .take(80)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if bytes.len() > 80 {
        format!("{s}...")
    } else {
        s
    }
}

impl Conn {
    /// Reads until the response to one of `ids` arrives.
    async fn read_response(
        &mut self,
        ids: &[u32],
        transcript: &Mutex<std::fs::File>,
        start: Instant,
    ) -> Result<(u32, Response)> {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            while let Some(ev) = self.decoder.next_event() {
                match ev {
                    frame::Event::Skipped(b) => {
                        self.noise.extend_from_slice(&b);
                        if self.noise.len() >= NOISE_RUN {
                            self.flush_noise(transcript, start);
                        }
                    }
                    frame::Event::Frame(p) => {
                        self.flush_noise(transcript, start);
                        match Message::decode(&p) {
                            Ok(Message::Response(id, r)) if ids.contains(&id) => {
                                return Ok((id, r));
                            }
                            Ok(Message::Response(id, r)) => {
                                note(
                                    transcript,
                                    start,
                                    &if id == ANNOUNCE_ID {
                                        format!("<- agent (re)started: {}", describe_response(&r))
                                    } else {
                                        format!("<- [{id}] stale: {}", describe_response(&r))
                                    },
                                );
                            }
                            Ok(Message::Request(id, r)) => {
                                // The guest tty echoed our own frame before the agent set raw mode.
                                note(
                                    transcript,
                                    start,
                                    &format!("<- [{id}] echo of {}", describe(&r)),
                                );
                            }
                            Err(e) => {
                                note(transcript, start, &format!("<- undecodable frame: {e}"))
                            }
                        }
                    }
                }
            }
            let n = self
                .stream
                .read(&mut buf)
                .await
                .map_err(|e| Error::Agent(format!("reading from the agent socket: {e}")))?;
            if n == 0 {
                return Err(Error::Agent("the agent socket closed".into()));
            }
            self.decoder.push(&buf[..n]);
        }
    }

    fn flush_noise(&mut self, transcript: &Mutex<std::fs::File>, start: Instant) {
        if !self.noise.is_empty() {
            let n = std::mem::take(&mut self.noise);
            note(
                transcript,
                start,
                &format!("<- {} bytes of noise: {}", n.len(), preview(&n)),
            );
        }
    }

    async fn send(&mut self, id: u32, r: &Request) -> Result<()> {
        let bytes = frame::encode(&Message::Request(id, r.clone()).encode())
            .map_err(|e| Error::Agent(e.to_string()))?;
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|e| Error::Agent(format!("writing to the agent socket: {e}")))
    }
}

impl Agent {
    /// Connects to the agent's socket and handshakes. The caller bounds this (the VM's
    /// doom and the watchdog); it retries until the agent answers.
    pub(crate) async fn connect(
        socket: &Path,
        transcript: &Path,
        vm: Arc<VmShared>,
    ) -> Result<Agent> {
        let start = Instant::now();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(transcript)
            .map_err(Error::io(transcript))?;
        let transcript = Mutex::new(file);
        let stream = loop {
            match UnixStream::connect(socket).await {
                Ok(s) => break s,
                Err(e) if start.elapsed() > Duration::from_secs(30) => {
                    return Err(Error::Agent(format!(
                        "cannot connect to {}: {e}",
                        socket.display()
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        note(
            &transcript,
            start,
            &format!("connected to {}", socket.display()),
        );
        let mut conn = Conn {
            stream,
            decoder: frame::Decoder::new(),
            noise: Vec::new(),
        };
        let hello = Request::Hello {
            min: PROTOCOL_VERSION,
            max: PROTOCOL_VERSION,
        };
        // Our hello ids, and the agent's start-up announcement.
        let mut ids = vec![ANNOUNCE_ID];
        let version = loop {
            let id = ids.len() as u32;
            if id <= 2 || id.is_multiple_of(20) {
                note(
                    &transcript,
                    start,
                    &format!("-> [{id}] {}", describe(&hello)),
                );
            }
            conn.send(id, &hello).await?;
            ids.push(id);
            let attempt =
                tokio::time::timeout(HELLO_INTERVAL, conn.read_response(&ids, &transcript, start))
                    .await;
            match attempt {
                Err(_) => continue,
                Ok(Err(e)) => return Err(e),
                Ok(Ok((ANNOUNCE_ID, r))) => {
                    // The agent just started: say hello now rather than at the next tick.
                    note(
                        &transcript,
                        start,
                        &format!("<- announcement: {}", describe_response(&r)),
                    );
                    continue;
                }
                Ok(Ok((id, r))) => {
                    note(
                        &transcript,
                        start,
                        &format!("<- [{id}] {}", describe_response(&r)),
                    );
                    match r {
                        Response::Hello { version, agent } if version == PROTOCOL_VERSION => {
                            break format!("{agent} (protocol {version})");
                        }
                        Response::Error { message } => {
                            return Err(Error::Agent(format!("handshake refused: {message}")));
                        }
                        other => {
                            return Err(Error::Agent(format!(
                                "unexpected handshake answer: {other:?}"
                            )));
                        }
                    }
                }
            }
        };
        tracing::info!(agent = %version, elapsed_ms = start.elapsed().as_millis() as u64, "agent connected");
        let next = ids.len() as u32;
        Ok(Agent {
            inner: Arc::new(Inner {
                conn: tokio::sync::Mutex::new(conn),
                transcript,
                start,
                next_id: AtomicU32::new(next),
                vm,
                version,
            }),
        })
    }

    /// The agent's name and protocol version.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    async fn request(&self, r: Request, timeout: Duration) -> Result<Response> {
        let i = &self.inner;
        let what = describe(&r);
        let exchange = async {
            let mut conn = i.conn.lock().await;
            let id = i.next_id.fetch_add(1, Ordering::Relaxed);
            note(&i.transcript, i.start, &format!("-> [{id}] {what}"));
            conn.send(id, &r).await?;
            let (_, resp) = conn.read_response(&[id], &i.transcript, i.start).await?;
            note(
                &i.transcript,
                i.start,
                &format!("<- [{id}] {}", describe_response(&resp)),
            );
            Ok::<_, Error>(resp)
        };
        let waiting = format!("waited for the agent to answer {what}");
        tokio::select! {
            r = tokio::time::timeout(timeout, exchange) => match r {
                Ok(Ok(r)) => Ok(r),
                // The connection broke: usually because the VM is going down. Report that
                // (panic, VMM exit) rather than the socket error, if it shows up soon.
                Ok(Err(e)) => match tokio::time::timeout(LINK_LOSS_GRACE, i.vm.doomed(&waiting)).await {
                    Ok(doom) => Err(doom),
                    Err(_) => Err(e),
                },
                Err(_) => Err(Error::Timeout {
                    what: format!("the agent to answer {what}"),
                    timeout,
                    tail: Box::new(i.vm.console_tail(crate::context::TAIL_LINES)),
                }),
            },
            e = i.vm.doomed(&waiting) => Err(e),
        }
    }

    /// Runs `command` with `/bin/sh -c` in the guest (limit: one minute).
    pub async fn exec(&self, command: &str) -> Result<ExecResult> {
        self.exec_with(command, DEFAULT_EXEC_TIMEOUT, b"").await
    }

    /// Runs `command` with a time limit and standard input.
    pub async fn exec_with(
        &self,
        command: &str,
        timeout: Duration,
        stdin: &[u8],
    ) -> Result<ExecResult> {
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let r = self
            .request(
                Request::Exec {
                    command: command.into(),
                    timeout_ms,
                    stdin: stdin.to_vec(),
                },
                timeout.saturating_add(Duration::from_secs(10)),
            )
            .await?;
        match r {
            Response::Exec(ExecOutput {
                status,
                stdout,
                stderr,
                truncated,
            }) => Ok(ExecResult {
                command: command.into(),
                status,
                stdout,
                stderr,
                truncated,
            }),
            Response::Error { message } => Err(Error::Agent(format!("`{command}`: {message}"))),
            other => Err(Error::Agent(format!(
                "unexpected answer to exec: {other:?}"
            ))),
        }
    }

    /// Runs `command`, fails unless it exits 0, and returns its trimmed standard output.
    pub async fn run(&self, command: &str) -> Result<String> {
        Ok(self
            .exec(command)
            .await?
            .check()?
            .stdout_str()
            .trim()
            .to_string())
    }

    /// Reads a whole guest file.
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        loop {
            let r = self
                .request(
                    Request::ReadFile {
                        path: path.into(),
                        offset: data.len() as u64,
                        max: MAX_READ_CHUNK as u32,
                    },
                    REQUEST_TIMEOUT,
                )
                .await?;
            match r {
                Response::FileData { data: chunk, eof } => {
                    data.extend_from_slice(&chunk);
                    if eof {
                        return Ok(data);
                    }
                }
                Response::Error { message } => return Err(Error::Agent(message)),
                other => {
                    return Err(Error::Agent(format!(
                        "unexpected answer to read: {other:?}"
                    )));
                }
            }
        }
    }

    /// Writes a guest file (created with `mode`, truncated first).
    pub async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        let mut offset = 0usize;
        loop {
            let chunk = &data[offset..(offset + MAX_WRITE_CHUNK).min(data.len())];
            let r = self
                .request(
                    Request::WriteFile {
                        path: path.into(),
                        offset: offset as u64,
                        mode,
                        data: chunk.to_vec(),
                    },
                    REQUEST_TIMEOUT,
                )
                .await?;
            match r {
                Response::Done => {}
                Response::Error { message } => return Err(Error::Agent(message)),
                other => {
                    return Err(Error::Agent(format!(
                        "unexpected answer to write: {other:?}"
                    )));
                }
            }
            offset += chunk.len();
            if offset >= data.len() {
                return Ok(());
            }
        }
    }

    /// Asks the guest to power off. Returns once the agent acknowledged; the halt follows.
    pub async fn power_off(&self) -> Result<()> {
        match self.request(Request::PowerOff, REQUEST_TIMEOUT).await? {
            Response::Done => Ok(()),
            Response::Error { message } => Err(Error::Agent(message)),
            other => Err(Error::Agent(format!(
                "unexpected answer to power off: {other:?}"
            ))),
        }
    }

    /// Asks the guest to reboot. Returns once the agent acknowledged.
    pub async fn reboot(&self) -> Result<()> {
        match self.request(Request::Reboot, REQUEST_TIMEOUT).await? {
            Response::Done => Ok(()),
            Response::Error { message } => Err(Error::Agent(message)),
            other => Err(Error::Agent(format!(
                "unexpected answer to reboot: {other:?}"
            ))),
        }
    }
}
