//! Framed, versioned host <-> guest agent protocol.
//!
//! The guest agent (`framework/agent`) and the host client (`framework/agar`) talk over a
//! serial port: a byte stream that may carry garbage (a tty echoing before the agent set raw
//! mode, boot noise, a half-written frame from an agent that was restarted). The protocol
//! therefore has two layers:
//!
//! # Architecture
//!
//! - [`frame`]: a self-synchronising framing. Every frame starts with a 4-byte magic, then a
//!   length and a CRC-32 of the header, then the payload and a CRC-32 of the payload. A
//!   receiver that sees anything else skips bytes until the next magic whose header checks
//!   out, so garbage on the line costs bytes, never a desynchronised stream. The header CRC
//!   rejects a corrupted length at once instead of waiting for megabytes that never come.
//! - [`message`]: the payload of each frame, one [`message::Message`]: a request from the
//!   host or a response from the agent, tagged with a request id. The encoding is a small
//!   hand-written little-endian format (no serde), so decoding guest bytes is bounded and
//!   never panics.
//!
//! # Versioning
//!
//! The frame layout never changes. The message set is versioned: the host opens with
//! [`message::Request::Hello`] carrying the range of versions it speaks, the agent answers
//! with the version it picked ([`message::Response::Hello`]) or an error naming its own.
//! [`PROTOCOL_VERSION`] is the version this crate implements.
//!
//! When it starts serving, the agent also sends one unsolicited `Hello` response with
//! request id [`ANNOUNCE_ID`] (0): a host that is already connected then handshakes at
//! once instead of waiting to repeat its hello. Hosts never use id 0 for a request.
//!
//! # Flow control
//!
//! A 16550 UART has a 16-byte FIFO and the guest tty layer drops input it cannot buffer, so
//! the host never sends more than one request at a time and keeps requests small: file
//! writes go in chunks of at most [`MAX_WRITE_CHUNK`] bytes, each acknowledged. Responses
//! (guest to host) may be large; the host reads continuously.

pub mod frame;
pub mod message;

/// The request id of the agent's unsolicited start-up announcement.
pub const ANNOUNCE_ID: message::RequestId = 0;

/// The message-set version this crate implements.
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest payload a frame may carry. Bigger lengths are treated as corruption.
pub const MAX_PAYLOAD: usize = 4 << 20;

/// Largest file chunk the host sends in one [`message::Request::WriteFile`].
pub const MAX_WRITE_CHUNK: usize = 16 << 10;

/// Largest file chunk the agent returns for one [`message::Request::ReadFile`].
pub const MAX_READ_CHUNK: usize = 1 << 20;

/// Largest amount of stdout (and, separately, stderr) the agent returns for one command;
/// the rest is dropped and [`message::ExecOutput::truncated`] is set.
pub const MAX_EXEC_OUTPUT: usize = 1 << 20;
