//! Messages: what goes inside a frame.
//!
//! ```text
//! payload  := kind:u8 id:u32 tag:u8 fields...
//! kind     := 1 (request, host -> agent) | 2 (response, agent -> host)
//! string   := len:u32 utf8-bytes        bytes := len:u32 raw-bytes
//! ```
//!
//! All integers are little endian. Requests and their tags:
//!
//! | tag | request | fields | response |
//! |---|---|---|---|
//! | 1 | `Hello` | min:u16 max:u16 | `Hello` (version:u16 agent:string) |
//! | 2 | `Exec` | command:string timeout_ms:u32 stdin:bytes | `Exec` (status, stdout:bytes stderr:bytes truncated:u8) |
//! | 3 | `ReadFile` | path:string offset:u64 max:u32 | `FileData` (data:bytes eof:u8) |
//! | 4 | `WriteFile` | path:string offset:u64 mode:u32 data:bytes | `Done` |
//! | 5 | `PowerOff` | | `Done`, then the guest powers off |
//! | 6 | `Reboot` | | `Done`, then the guest reboots |
//!
//! Any request may instead get `Error` (tag 255, message:string). An exit status is
//! `kind:u8 value:i32`: 0 = exited with code, 1 = killed by signal, 2 = timed out.

/// A request id; responses echo the id of the request they answer.
pub type RequestId = u32;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Still running when its timeout passed; the agent killed its process group.
    TimedOut,
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(c) => write!(f, "exit code {c}"),
            Self::Signal(s) => write!(f, "killed by signal {s}"),
            Self::TimedOut => f.write_str("timed out"),
        }
    }
}

/// The result of [`Request::Exec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// How the command ended.
    pub status: ExitStatus,
    /// Captured standard output.
    pub stdout: Vec<u8>,
    /// Captured standard error.
    pub stderr: Vec<u8>,
    /// Output beyond [`crate::MAX_EXEC_OUTPUT`] per stream was dropped.
    pub truncated: bool,
}

/// Host -> agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Version handshake; the first request on a connection.
    Hello {
        /// Oldest version the host speaks.
        min: u16,
        /// Newest version the host speaks.
        max: u16,
    },
    /// Run `command` with `/bin/sh -c`.
    Exec {
        /// The shell command.
        command: String,
        /// Kill the command's process group after this many milliseconds (0 = no limit).
        timeout_ms: u32,
        /// Bytes fed to the command's standard input.
        stdin: Vec<u8>,
    },
    /// Read up to `max` bytes of `path` from `offset`.
    ReadFile {
        /// Absolute guest path.
        path: String,
        /// Byte offset.
        offset: u64,
        /// Largest chunk wanted.
        max: u32,
    },
    /// Write `data` at `offset` of `path`, creating it with `mode`; offset 0 truncates.
    WriteFile {
        /// Absolute guest path.
        path: String,
        /// Byte offset.
        offset: u64,
        /// Permission bits for a new file.
        mode: u32,
        /// The chunk.
        data: Vec<u8>,
    },
    /// Sync and power off.
    PowerOff,
    /// Sync and reboot.
    Reboot,
}

/// Agent -> host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Handshake accepted.
    Hello {
        /// The version both sides now speak.
        version: u16,
        /// Agent name and build, for logs.
        agent: String,
    },
    /// A command finished.
    Exec(ExecOutput),
    /// A file chunk.
    FileData {
        /// The bytes read.
        data: Vec<u8>,
        /// The end of the file was reached.
        eof: bool,
    },
    /// The request succeeded and has no data.
    Done,
    /// The request failed.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// A request or a response with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Host -> agent.
    Request(RequestId, Request),
    /// Agent -> host.
    Response(RequestId, Response),
}

/// A payload that is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ended inside a field.
    #[error("message truncated")]
    Truncated,
    /// Unknown kind or tag.
    #[error("unknown message {kind}/{tag}")]
    Unknown {
        /// The kind byte.
        kind: u8,
        /// The tag byte.
        tag: u8,
    },
    /// A string field is not UTF-8.
    #[error("string field is not UTF-8")]
    Utf8,
    /// Bytes left after the last field.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// An exit status kind other than 0, 1, 2.
    #[error("invalid exit status kind {0}")]
    Status(u8),
}

const KIND_REQUEST: u8 = 1;
const KIND_RESPONSE: u8 = 2;

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        // Frames are limited to MAX_PAYLOAD (< 4 GiB); oversize messages fail at framing.
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.take(4)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes()?).map_err(|_| DecodeError::Utf8)
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.u8()? != 0)
    }
}

impl Message {
    /// The payload bytes (without framing).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        match self {
            Message::Request(id, r) => {
                w.u8(KIND_REQUEST);
                w.u32(*id);
                match r {
                    Request::Hello { min, max } => {
                        w.u8(1);
                        w.u16(*min);
                        w.u16(*max);
                    }
                    Request::Exec {
                        command,
                        timeout_ms,
                        stdin,
                    } => {
                        w.u8(2);
                        w.str(command);
                        w.u32(*timeout_ms);
                        w.bytes(stdin);
                    }
                    Request::ReadFile { path, offset, max } => {
                        w.u8(3);
                        w.str(path);
                        w.u64(*offset);
                        w.u32(*max);
                    }
                    Request::WriteFile {
                        path,
                        offset,
                        mode,
                        data,
                    } => {
                        w.u8(4);
                        w.str(path);
                        w.u64(*offset);
                        w.u32(*mode);
                        w.bytes(data);
                    }
                    Request::PowerOff => w.u8(5),
                    Request::Reboot => w.u8(6),
                }
            }
            Message::Response(id, r) => {
                w.u8(KIND_RESPONSE);
                w.u32(*id);
                match r {
                    Response::Hello { version, agent } => {
                        w.u8(1);
                        w.u16(*version);
                        w.str(agent);
                    }
                    Response::Exec(o) => {
                        w.u8(2);
                        let (k, v) = match o.status {
                            ExitStatus::Code(c) => (0, c),
                            ExitStatus::Signal(s) => (1, s),
                            ExitStatus::TimedOut => (2, 0),
                        };
                        w.u8(k);
                        w.i32(v);
                        w.bytes(&o.stdout);
                        w.bytes(&o.stderr);
                        w.u8(o.truncated.into());
                    }
                    Response::FileData { data, eof } => {
                        w.u8(3);
                        w.bytes(data);
                        w.u8((*eof).into());
                    }
                    Response::Done => w.u8(4),
                    Response::Error { message } => {
                        w.u8(255);
                        w.str(message);
                    }
                }
            }
        }
        w.0
    }

    /// Parses a payload. Never panics, whatever the bytes.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(payload);
        let kind = r.u8()?;
        let id = r.u32()?;
        let tag = r.u8()?;
        let msg = match (kind, tag) {
            (KIND_REQUEST, 1) => Message::Request(
                id,
                Request::Hello {
                    min: r.u16()?,
                    max: r.u16()?,
                },
            ),
            (KIND_REQUEST, 2) => Message::Request(
                id,
                Request::Exec {
                    command: r.string()?,
                    timeout_ms: r.u32()?,
                    stdin: r.bytes()?,
                },
            ),
            (KIND_REQUEST, 3) => Message::Request(
                id,
                Request::ReadFile {
                    path: r.string()?,
                    offset: r.u64()?,
                    max: r.u32()?,
                },
            ),
            (KIND_REQUEST, 4) => Message::Request(
                id,
                Request::WriteFile {
                    path: r.string()?,
                    offset: r.u64()?,
                    mode: r.u32()?,
                    data: r.bytes()?,
                },
            ),
            (KIND_REQUEST, 5) => Message::Request(id, Request::PowerOff),
            (KIND_REQUEST, 6) => Message::Request(id, Request::Reboot),
            (KIND_RESPONSE, 1) => Message::Response(
                id,
                Response::Hello {
                    version: r.u16()?,
                    agent: r.string()?,
                },
            ),
            (KIND_RESPONSE, 2) => {
                let k = r.u8()?;
                let v = r.i32()?;
                let status = match k {
                    0 => ExitStatus::Code(v),
                    1 => ExitStatus::Signal(v),
                    2 => ExitStatus::TimedOut,
                    _ => return Err(DecodeError::Status(k)),
                };
                Message::Response(
                    id,
                    Response::Exec(ExecOutput {
                        status,
                        stdout: r.bytes()?,
                        stderr: r.bytes()?,
                        truncated: r.bool()?,
                    }),
                )
            }
            (KIND_RESPONSE, 3) => Message::Response(
                id,
                Response::FileData {
                    data: r.bytes()?,
                    eof: r.bool()?,
                },
            ),
            (KIND_RESPONSE, 4) => Message::Response(id, Response::Done),
            (KIND_RESPONSE, 255) => Message::Response(
                id,
                Response::Error {
                    message: r.string()?,
                },
            ),
            _ => return Err(DecodeError::Unknown { kind, tag }),
        };
        if !r.0.is_empty() {
            return Err(DecodeError::Trailing(r.0.len()));
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_messages() -> Vec<Message> {
        vec![
            Message::Request(1, Request::Hello { min: 1, max: 3 }),
            Message::Request(
                2,
                Request::Exec {
                    command: "uname -r".into(),
                    timeout_ms: 5000,
                    stdin: b"in".to_vec(),
                },
            ),
            Message::Request(
                3,
                Request::ReadFile {
                    path: "/proc/version".into(),
                    offset: 1 << 40,
                    max: 4096,
                },
            ),
            Message::Request(
                4,
                Request::WriteFile {
                    path: "/tmp/x".into(),
                    offset: 7,
                    mode: 0o644,
                    data: vec![0, 0xff, 0xaa],
                },
            ),
            Message::Request(5, Request::PowerOff),
            Message::Request(6, Request::Reboot),
            Message::Response(
                1,
                Response::Hello {
                    version: 1,
                    agent: "agar-agent 0.1.0".into(),
                },
            ),
            Message::Response(
                2,
                Response::Exec(ExecOutput {
                    status: ExitStatus::Signal(9),
                    stdout: b"6.1.0\n".to_vec(),
                    stderr: vec![],
                    truncated: true,
                }),
            ),
            Message::Response(
                2,
                Response::Exec(ExecOutput {
                    status: ExitStatus::TimedOut,
                    stdout: vec![],
                    stderr: b"e".to_vec(),
                    truncated: false,
                }),
            ),
            Message::Response(
                3,
                Response::FileData {
                    data: b"Linux".to_vec(),
                    eof: true,
                },
            ),
            Message::Response(4, Response::Done),
            Message::Response(
                u32::MAX,
                Response::Error {
                    message: "no such file".into(),
                },
            ),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in all_messages() {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for m in all_messages() {
            let b = m.encode();
            for n in 0..b.len() {
                assert!(Message::decode(&b[..n]).is_err(), "{m:?} cut at {n}");
            }
        }
    }

    #[test]
    fn trailing_bytes_and_unknown_tags_are_rejected() {
        let mut b = Message::Request(1, Request::PowerOff).encode();
        b.push(0);
        assert_eq!(Message::decode(&b), Err(DecodeError::Trailing(1)));
        assert_eq!(
            Message::decode(&[1, 0, 0, 0, 0, 77]),
            Err(DecodeError::Unknown { kind: 1, tag: 77 })
        );
    }

    #[test]
    fn a_huge_length_field_does_not_allocate() {
        // kind, id, tag ReadFile, then a string length of 4 GiB - 1 with no data.
        let b = [1, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(Message::decode(&b), Err(DecodeError::Truncated));
    }
}
