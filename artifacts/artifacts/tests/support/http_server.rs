//! A small HTTP/1.1 file server on 127.0.0.1 for download tests, with scripted misbehaviour.
//!
//! It serves `GET /<name>` from an in-memory map, honours `Range: bytes=N-`, closes every
//! connection after one response, and records each request. A queue of [`Fault`]s applies
//! to the next requests in order (one fault per request), then it behaves.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::HashMap;
use std::collections::VecDeque;
use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::net::TcpListener;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// How the server misbehaves on one request.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer with this status and an empty body.
    Status(u16),
    /// Announce the full length, send this many bytes, then close the connection.
    Truncate(usize),
    /// Send the whole file with 200 even if a range was asked for.
    IgnoreRange,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The path, e.g. `/blob`.
    pub path: String,
    /// The first byte of a `Range: bytes=N-` header, if any.
    pub range_start: Option<u64>,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    faults: VecDeque<Fault>,
    requests: Vec<Request>,
    body_bytes_sent: u64,
    /// Pause between 64 KiB chunks (to make transfers overlap in concurrency tests).
    chunk_delay: Duration,
}

/// A running server; it stops with the test process.
#[derive(Clone)]
pub struct Server {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl Server {
    /// Starts a server on an ephemeral port of 127.0.0.1.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &st);
                });
            }
        });
        Self { port, state }
    }

    /// The URL of `/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// Serves `data` at `/<name>`.
    pub fn put(&self, name: &str, data: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(format!("/{name}"), data);
    }

    /// Queues misbehaviour for the next requests.
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().faults.extend(faults);
    }

    /// Slows body transfers down.
    pub fn set_chunk_delay(&self, d: Duration) {
        self.state.lock().unwrap().chunk_delay = d;
    }

    /// Requests seen so far.
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Body bytes sent so far (all requests).
    pub fn body_bytes_sent(&self) -> u64 {
        self.state.lock().unwrap().body_bytes_sent
    }
}

fn handle(conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut range_start = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((&h, ""));
        if name.eq_ignore_ascii_case("range") {
            range_start = value
                .trim()
                .strip_prefix("bytes=")
                .and_then(|r| r.split('-').next())
                .and_then(|n| n.parse().ok());
        }
    }
    let (file, fault, delay) = {
        let mut st = state.lock().unwrap();
        st.requests.push(Request {
            path: path.clone(),
            range_start,
        });
        let fault = st.faults.pop_front();
        (st.files.get(&path).cloned(), fault, st.chunk_delay)
    };
    let mut out = conn;
    let Some(file) = file else {
        return write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    };
    let (status, start, limit) = match fault {
        Some(Fault::Status(code)) => {
            return write!(
                out,
                "HTTP/1.1 {code} Scripted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        Some(Fault::Truncate(n)) => (200, 0, Some(n)),
        Some(Fault::IgnoreRange) => (200, 0, None),
        None => match range_start {
            Some(s) if (s as usize) < file.len() => (206, s as usize, None),
            Some(_) => {
                return write!(
                    out,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    file.len()
                );
            }
            None => (200, 0, None),
        },
    };
    let body = &file[start..];
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        if status == 206 {
            "Partial Content"
        } else {
            "OK"
        },
        body.len()
    );
    if status == 206 {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{}\r\n",
            file.len() - 1,
            file.len()
        ));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    let send = &body[..limit.unwrap_or(body.len()).min(body.len())];
    for chunk in send.chunks(64 * 1024) {
        out.write_all(chunk)?;
        state.lock().unwrap().body_bytes_sent += chunk.len() as u64;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
    out.flush()?;
    // Dropping the stream closes the connection (early, for Truncate).
    Ok(())
}
