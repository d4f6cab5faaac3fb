//! The framework's errors. Test bodies see them through `anyhow`; the harness prints the
//! whole chain, so messages here are short and carry the serial tail where it helps.

use std::path::PathBuf;
use std::time::Duration;

use crate::vm::HaltReason;

/// The last lines of a serial port, printed under an error.
#[derive(Debug, Clone, Default)]
pub struct SerialTail {
    /// The log file name (`com1.log`).
    pub port: String,
    /// The lines, oldest first.
    pub lines: Vec<String>,
}

impl std::fmt::Display for SerialTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.lines.is_empty() {
            return write!(f, "\n--- {} is empty ---", self.port);
        }
        write!(
            f,
            "\n--- last {} lines of {} ---",
            self.lines.len(),
            self.port
        )?;
        for l in &self.lines {
            write!(f, "\n{l}")?;
        }
        write!(f, "\n--- end of {} ---", self.port)
    }
}

/// Anything the framework reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The guest printed `Kernel panic - not syncing`.
    #[error("guest kernel panic: {line}{tail}")]
    KernelPanic {
        /// The panic line.
        line: String,
        /// Context.
        tail: Box<SerialTail>,
    },
    /// The VMM process went away while the test was waiting for something else.
    #[error("{vmm} exited while the test {waiting}: {reason}{tail}")]
    VmmExited {
        /// Program and pid.
        vmm: String,
        /// What the test was doing.
        waiting: String,
        /// Why it halted.
        reason: HaltReason,
        /// Context.
        tail: Box<SerialTail>,
    },
    /// The test ran longer than its watchdog allows.
    #[error("watchdog: the test did not finish within {timeout:?}{tail}")]
    Watchdog {
        /// The limit.
        timeout: Duration,
        /// Context.
        tail: Box<SerialTail>,
    },
    /// A wait with its own timeout expired.
    #[error("timed out after {timeout:?} waiting for {what}{tail}")]
    Timeout {
        /// What did not happen.
        what: String,
        /// The limit.
        timeout: Duration,
        /// Context.
        tail: Box<SerialTail>,
    },
    /// An artifact is missing or unknown.
    #[error("artifact `{name}`: {message}")]
    Artifact {
        /// The artifact id.
        name: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The VMM or another tool could not be started.
    #[error("cannot start {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A configuration the backend cannot express.
    #[error("{backend} cannot run this configuration: {message}")]
    Unsupported {
        /// The backend name.
        backend: &'static str,
        /// What is missing.
        message: String,
    },
    /// The guest agent failed or misbehaved.
    #[error("agent: {0}")]
    Agent(String),
    /// The QEMU monitor failed.
    #[error("qmp: {0}")]
    Qmp(String),
    /// File system trouble.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Anything else, already explained.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
