//! [`DiskError`]: kind + context + source.

use std::fmt;

/// What went wrong, in terms a device model can turn into guest-visible status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskErrorKind {
    /// The host failed a read, write or flush (SCSI: medium error; ATA: UNC).
    Io,
    /// The image is malformed.
    Corrupt,
    /// A valid image or option that agar does not implement.
    Unsupported,
    /// A write to a read-only disk (SCSI: data protect; ATA: write protect).
    ReadOnly,
    /// A request past the last sector (SCSI: LBA out of range; ATA: IDNF).
    OutOfRange,
    /// A buffer that is not a whole number of sectors, or a bad parameter.
    InvalidArgument,
    /// A file that does not exist.
    NotFound,
}

impl fmt::Display for DiskErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskErrorKind::Io => "I/O error",
            DiskErrorKind::Corrupt => "corrupt image",
            DiskErrorKind::Unsupported => "unsupported",
            DiskErrorKind::ReadOnly => "read-only disk",
            DiskErrorKind::OutOfRange => "out of range",
            DiskErrorKind::InvalidArgument => "invalid argument",
            DiskErrorKind::NotFound => "not found",
        })
    }
}

/// A disk error: its kind, what was being done, and the underlying cause.
#[derive(Debug, thiserror::Error)]
#[error("{context} ({kind})")]
pub struct DiskError {
    kind: DiskErrorKind,
    context: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl DiskError {
    /// An error without a cause.
    pub fn new(kind: DiskErrorKind, context: impl Into<String>) -> Self {
        Self {
            kind,
            context: context.into(),
            source: None,
        }
    }

    /// An error with a cause.
    pub fn with_source(
        kind: DiskErrorKind,
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// An I/O error; `NotFound` and short reads get their own kinds.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let kind = match source.kind() {
            std::io::ErrorKind::NotFound => DiskErrorKind::NotFound,
            std::io::ErrorKind::UnexpectedEof => DiskErrorKind::Corrupt,
            _ => DiskErrorKind::Io,
        };
        Self::with_source(kind, context, source)
    }

    /// The same error, described by `context` instead.
    pub fn in_context(mut self, context: impl Into<String>) -> Self {
        self.context = context.into();
        self
    }

    /// The kind.
    pub fn kind(&self) -> DiskErrorKind {
        self.kind
    }

    /// What was being done.
    pub fn context(&self) -> &str {
        &self.context
    }
}

impl<F: image_file::ImageFormat> From<image_file::Error<F>> for DiskError {
    fn from(e: image_file::Error<F>) -> Self {
        use image_file::ErrorKind;
        let kind = match e.kind() {
            ErrorKind::Io => DiskErrorKind::Io,
            ErrorKind::Corrupt | ErrorKind::Parent => DiskErrorKind::Corrupt,
            ErrorKind::Unsupported => DiskErrorKind::Unsupported,
            ErrorKind::ReadOnly => DiskErrorKind::ReadOnly,
            ErrorKind::OutOfRange => DiskErrorKind::OutOfRange,
            ErrorKind::InvalidArgument => DiskErrorKind::InvalidArgument,
        };
        Self::with_source(kind, F::NAME, e)
    }
}
