//! Host ends of the serial ports: where guest output goes and where guest input comes from
//! (`vm_config::SerialConfig`: none, console, stderr, file, listen).
//!
//! Devices call their output with the device locked, once per byte, so the output side is a
//! bounded in-memory pipe drained by a writer thread per port; the guest never waits for the
//! host. Input comes from a reader thread (stdin for the console, the connected client for a
//! listening socket) and goes into the device's `SerialInput` queue.

use std::io::Read;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Condvar;
use parking_lot::Mutex;
use serial_16550::SerialInput;
use serial_16550::SerialOutput;
use vm_config::SerialConfig;

/// Output held for a destination that is slow or not connected yet, per port.
pub const PIPE_LIMIT: usize = 16 << 20;

/// Setting up a serial backend failed.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The output file cannot be opened.
    #[error("cannot open serial output file {}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The host error.
        #[source]
        source: std::io::Error,
    },
    /// The socket cannot be created.
    #[error("cannot listen on {}", path.display())]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The host error.
        #[source]
        source: std::io::Error,
    },
    /// A thread cannot be started.
    #[error("cannot start a serial thread")]
    Thread(#[source] std::io::Error),
}

#[derive(Default)]
struct PipeState {
    data: Vec<u8>,
    dropped: u64,
    closed: bool,
}

#[derive(Default)]
struct Pipe {
    state: Mutex<PipeState>,
    cv: Condvar,
}

/// The device side of an output pipe (a `serial_16550::SerialOutput`).
#[derive(Clone)]
pub struct PipeOutput {
    pipe: Arc<Pipe>,
}

impl chipset_legacy::misc::ByteOutput for PipeOutput {
    fn write(&mut self, bytes: &[u8]) {
        SerialOutput::write(self, bytes);
    }
}

impl SerialOutput for PipeOutput {
    fn write(&mut self, bytes: &[u8]) {
        let mut s = self.pipe.state.lock();
        if s.closed {
            return;
        }
        if s.data.len() + bytes.len() > PIPE_LIMIT {
            s.dropped += bytes.len() as u64;
            return;
        }
        let was_empty = s.data.is_empty();
        s.data.extend_from_slice(bytes);
        // The writer sleeps only on an empty pipe: wake it once per batch, not per byte.
        if was_empty {
            self.pipe.cv.notify_one();
        }
    }
}

enum Dest {
    Stdout,
    Stderr,
    File(std::fs::File),
    Socket(Arc<Mutex<Option<Client>>>),
}

/// The connected socket client.
struct Client {
    id: u64,
    stream: UnixStream,
}

impl Dest {
    fn ready(&self) -> bool {
        match self {
            Self::Socket(client) => client.lock().is_some(),
            _ => true,
        }
    }

    fn write(&mut self, data: &[u8]) {
        let r = match self {
            Self::Stdout => {
                let mut o = std::io::stdout().lock();
                o.write_all(data).and_then(|()| o.flush())
            }
            Self::Stderr => std::io::stderr().lock().write_all(data),
            Self::File(f) => f.write_all(data),
            Self::Socket(client) => {
                // Write on a clone so the client lock is not held across a blocking write.
                let stream = client
                    .lock()
                    .as_ref()
                    .and_then(|c| c.stream.try_clone().ok());
                match stream {
                    Some(mut s) => s.write_all(data),
                    None => Ok(()),
                }
            }
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "serial output write failed");
        }
    }
}

/// The host end of one serial port.
pub struct SerialBackend {
    what: String,
    output: Option<PipeOutput>,
    input: SerialInput,
    has_input: bool,
    closed: Arc<std::sync::atomic::AtomicBool>,
    socket: Option<PathBuf>,
    threads: Vec<JoinHandle<()>>,
}

impl SerialBackend {
    /// Starts the backend for `config`. `what` names the port in logs (`com1`). `console_input`
    /// says whether a console backend reads stdin (only one port should).
    pub fn new(
        what: &str,
        config: &SerialConfig,
        console_input: bool,
    ) -> Result<Self, SerialError> {
        let mut b = Self {
            what: what.to_string(),
            output: None,
            input: SerialInput::new(),
            has_input: false,
            closed: Arc::default(),
            socket: None,
            threads: Vec::new(),
        };
        match config {
            SerialConfig::None => {}
            SerialConfig::Console => {
                b.start_writer(Dest::Stdout)?;
                if console_input {
                    b.start_stdin_reader()?;
                }
            }
            SerialConfig::Stderr => b.start_writer(Dest::Stderr)?,
            SerialConfig::File(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| SerialError::File {
                        path: path.clone(),
                        source,
                    })?;
                b.start_writer(Dest::File(f))?;
            }
            SerialConfig::Listen(path) => b.start_listener(path)?,
        }
        Ok(b)
    }

    /// The output the device writes to.
    pub fn output(&self) -> Box<dyn SerialOutput> {
        match &self.output {
            Some(o) => Box::new(o.clone()),
            None => Box::new(serial_16550::NullOutput),
        }
    }

    /// The output for byte devices other than UARTs (the debug console).
    pub fn byte_output(&self) -> PipeOutput {
        match &self.output {
            Some(o) => o.clone(),
            // A pipe nobody drains: closed, so writes are dropped at once.
            None => {
                let pipe = Arc::new(Pipe::default());
                pipe.state.lock().closed = true;
                PipeOutput { pipe }
            }
        }
    }

    /// The input queue the device reads from (empty forever for output-only backends).
    pub fn input(&self) -> SerialInput {
        self.input.clone()
    }

    /// Whether anything feeds the input queue.
    pub fn has_input(&self) -> bool {
        self.has_input
    }

    fn spawn(&mut self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), SerialError> {
        let h = std::thread::Builder::new()
            .name(format!("{}-{name}", self.what))
            .spawn(f)
            .map_err(SerialError::Thread)?;
        self.threads.push(h);
        Ok(())
    }

    fn start_writer(&mut self, mut dest: Dest) -> Result<(), SerialError> {
        let pipe = Arc::new(Pipe::default());
        self.output = Some(PipeOutput { pipe: pipe.clone() });
        let what = self.what.clone();
        self.spawn("out", move || {
            loop {
                let data = {
                    let mut s = pipe.state.lock();
                    loop {
                        let ready = dest.ready();
                        if !s.data.is_empty() && ready {
                            break std::mem::take(&mut s.data);
                        }
                        if s.closed {
                            if s.dropped > 0 {
                                tracing::warn!(
                                    port = what,
                                    bytes = s.dropped,
                                    "serial output dropped (destination too slow)"
                                );
                            }
                            return;
                        }
                        // A socket client may connect without the pipe being notified: re-check
                        // now and then.
                        pipe.cv.wait_for(
                            &mut s,
                            std::time::Duration::from_millis(if ready { 1000 } else { 20 }),
                        );
                    }
                };
                dest.write(&data);
            }
        })
    }

    fn start_stdin_reader(&mut self) -> Result<(), SerialError> {
        self.has_input = true;
        let input = self.input.clone();
        // Detached: a blocking read on stdin cannot be interrupted; the thread ends at EOF or
        // with the process.
        std::thread::Builder::new()
            .name(format!("{}-stdin", self.what))
            .spawn(move || {
                let mut buf = [0u8; 256];
                let mut stdin = std::io::stdin();
                while let Ok(n @ 1..) = stdin.read(&mut buf) {
                    input.push(&buf[..n]);
                }
            })
            .map_err(SerialError::Thread)?;
        Ok(())
    }

    fn start_listener(&mut self, path: &Path) -> Result<(), SerialError> {
        let err = |source| SerialError::Listen {
            path: path.to_path_buf(),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                let _ = std::fs::remove_file(path);
            }
        }
        let listener = UnixListener::bind(path).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        let client: Arc<Mutex<Option<Client>>> = Arc::default();
        self.socket = Some(path.to_path_buf());
        self.start_writer(Dest::Socket(client.clone()))?;
        self.has_input = true;
        let input = self.input.clone();
        let closed = self.closed.clone();
        let what = self.what.clone();
        self.spawn("listen", move || {
            use std::sync::atomic::Ordering;
            let mut readers: Vec<JoinHandle<()>> = Vec::new();
            let mut next_id = 0u64;
            while !closed.load(Ordering::Acquire) {
                let stream = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(port = what, error = %e, "accept failed");
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        continue;
                    }
                };
                let Ok(mut read_half) = stream.try_clone() else {
                    continue;
                };
                if stream.set_nonblocking(false).is_err() {
                    continue;
                }
                next_id += 1;
                let id = next_id;
                tracing::debug!(port = what, id, "serial client connected");
                // One client at a time: a new connection replaces the old one.
                if let Some(old) = client.lock().replace(Client { id, stream }) {
                    let _ = old.stream.shutdown(std::net::Shutdown::Both);
                }
                let input = input.clone();
                let client = client.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("{what}-in"))
                    .spawn(move || {
                        let mut buf = [0u8; 4096];
                        while let Ok(n @ 1..) = read_half.read(&mut buf) {
                            input.push(&buf[..n]);
                        }
                        let mut c = client.lock();
                        if c.as_ref().is_some_and(|c| c.id == id) {
                            *c = None;
                        }
                    });
                if let Ok(h) = spawned {
                    readers.push(h);
                }
                readers.retain(|h| !h.is_finished());
            }
            if let Some(c) = client.lock().take() {
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
            }
            for r in readers {
                let _ = r.join();
            }
        })
    }

    /// Flushes pending output and stops the backend's threads (the console stdin reader, which
    /// cannot be interrupted, is left to end with the process).
    pub fn close(&mut self) {
        use std::sync::atomic::Ordering;
        self.closed.store(true, Ordering::Release);
        if let Some(o) = &self.output {
            o.pipe.state.lock().closed = true;
            o.pipe.cv.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(path) = self.socket.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for SerialBackend {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;
    use std::time::Instant;

    use super::*;

    fn temp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("agar-serial-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    fn wait_for(mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(10), "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn file_output_is_flushed_on_close() {
        let p = temp("file.log");
        let mut b = SerialBackend::new("com1", &SerialConfig::File(p.clone()), false).unwrap();
        let mut out = b.output();
        for byte in b"hello\n" {
            out.write(&[*byte]);
        }
        b.close();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello\n");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn listen_socket_is_bidirectional_and_buffers_until_connect() {
        let p = temp("sock");
        let mut b = SerialBackend::new("com2", &SerialConfig::Listen(p.clone()), false).unwrap();
        assert!(b.has_input());
        let mut out = b.output();
        out.write(b"early ");
        let mut c = UnixStream::connect(&p).unwrap();
        out.write(b"late");
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < 10 {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"early late");
        c.write_all(b"to guest").unwrap();
        let input = b.input();
        wait_for(|| input.pending() == 8);
        b.close();
        assert!(!p.exists(), "socket file removed");
    }

    #[test]
    fn none_discards_and_listen_on_a_bad_path_fails() {
        let b = SerialBackend::new("com3", &SerialConfig::None, false).unwrap();
        b.output().write(b"x");
        assert!(!b.has_input());
        let bad = SerialConfig::Listen("/nonexistent-dir/agar.sock".into());
        assert!(matches!(
            SerialBackend::new("com4", &bad, false),
            Err(SerialError::Listen { .. })
        ));
    }
}
