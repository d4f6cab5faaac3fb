//! The error the image-format crates share: a kind a caller can act on, what was being done,
//! and the cause. Each format names itself through [`ImageFormat`] so messages say "corrupt
//! VHD" or "corrupt VHDX" while the type, its constructors and its conversions exist once.

use std::fmt;
use std::io;
use std::marker::PhantomData;

/// A disk-image format, as named in error messages.
pub trait ImageFormat: 'static {
    /// The format's name, e.g. `VHD`.
    const NAME: &'static str;
}

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The host file could not be read or written.
    Io,
    /// The image violates the format (bad cookie, checksum, offsets, sizes).
    Corrupt,
    /// A valid image uses something the format crate does not implement.
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

/// An image-format error: kind, context and (for I/O and parent errors) the cause.
pub struct Error<F: ImageFormat> {
    kind: ErrorKind,
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    format: PhantomData<fn() -> F>,
}

impl<F: ImageFormat> Error<F> {
    /// An error without a cause.
    pub fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        Self {
            kind,
            context: context.into(),
            source: None,
            format: PhantomData,
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
            format: PhantomData,
        }
    }

    /// The image violates the format.
    pub fn corrupt(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, context)
    }

    /// A host I/O error. Reading past the end of the file means the image is truncated, so
    /// `UnexpectedEof` is [`ErrorKind::Corrupt`], not [`ErrorKind::Io`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        let kind = if source.kind() == io::ErrorKind::UnexpectedEof {
            ErrorKind::Corrupt
        } else {
            ErrorKind::Io
        };
        Self::with_source(kind, context, source)
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What was being done.
    pub fn context(&self) -> &str {
        &self.context
    }
}

impl<F: ImageFormat> fmt::Display for Error<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = F::NAME;
        match self.kind {
            ErrorKind::Io => write!(f, "I/O error"),
            ErrorKind::Corrupt => write!(f, "corrupt {name}"),
            ErrorKind::Unsupported => write!(f, "unsupported {name}"),
            ErrorKind::ReadOnly => write!(f, "read-only {name}"),
            ErrorKind::OutOfRange => write!(f, "out of range"),
            ErrorKind::InvalidArgument => write!(f, "invalid argument"),
            ErrorKind::Parent => write!(f, "{name} parent"),
        }?;
        write!(f, ": {}", self.context)
    }
}

impl<F: ImageFormat> fmt::Debug for Error<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("format", &F::NAME)
            .field("kind", &self.kind)
            .field("context", &self.context)
            .field("source", &self.source)
            .finish()
    }
}

impl<F: ImageFormat> std::error::Error for Error<F> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fmt;
    impl ImageFormat for Fmt {
        const NAME: &'static str = "FMT";
    }

    #[test]
    fn messages_name_the_format_and_keep_the_cause() {
        let e = Error::<Fmt>::corrupt("bad cookie");
        assert_eq!(e.to_string(), "corrupt FMT: bad cookie");
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let p = Error::<Fmt>::new(ErrorKind::Parent, "missing");
        assert_eq!(p.to_string(), "FMT parent: missing");
        let io = Error::<Fmt>::io("reading", io::Error::other("disk gone"));
        assert_eq!(io.kind(), ErrorKind::Io);
        assert_eq!(
            std::error::Error::source(&io).unwrap().to_string(),
            "disk gone"
        );
    }

    #[test]
    fn a_short_read_is_corruption_not_a_host_failure() {
        let e = Error::<Fmt>::io("reading", io::Error::from(io::ErrorKind::UnexpectedEof));
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().starts_with("corrupt FMT: reading"));
    }
}
