//! The crate's error: a kind a caller can act on, what was being done, and the cause.

use std::fmt;
use std::io;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The host file could not be read or written.
    Io,
    /// The image violates the format (bad cookie, checksum, offsets, sizes).
    Corrupt,
    /// A valid image uses something this crate does not implement.
    Unsupported,
    /// A write to an image opened read-only.
    ReadOnly,
    /// A request outside the virtual disk.
    OutOfRange,
    /// A request that is not sector-aligned, or a bad creation parameter.
    InvalidArgument,
    /// A differencing image whose parent is not attached or does not match.
    Parent,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Io => "I/O error",
            ErrorKind::Corrupt => "corrupt VHDX",
            ErrorKind::Unsupported => "unsupported VHDX",
            ErrorKind::ReadOnly => "read-only VHDX",
            ErrorKind::OutOfRange => "out of range",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Parent => "VHDX parent",
        })
    }
}

/// A VHDX error: kind, context and (for I/O and parent errors) the cause.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {context}")]
pub struct Error {
    kind: ErrorKind,
    context: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// An error without a cause.
    pub fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        Self {
            kind,
            context: context.into(),
            source: None,
        }
    }

    /// An error caused by `source`.
    pub fn with_source(
        kind: ErrorKind,
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What was being done.
    pub fn context(&self) -> &str {
        &self.context
    }

    pub(crate) fn corrupt(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, context)
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        // Reading past the end of the file means the image is truncated, not that the host
        // failed.
        let kind = if source.kind() == io::ErrorKind::UnexpectedEof {
            ErrorKind::Corrupt
        } else {
            ErrorKind::Io
        };
        Self::with_source(kind, context, source)
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
