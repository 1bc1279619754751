use std::io;
use std::path::PathBuf;

/// Errors of the durable raft log.
///
/// [`LogError::is_fatal`] tells whether the store can go on: after a failed write or
/// fsync the page cache can no longer be trusted (a later fsync may report success for
/// data that never reached the disk), so the store refuses every further write.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file could not be opened, read, written or synced.
    #[error("log i/o error on {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Another process (or another store in this one) holds the log.
    #[error("log {path} is locked by another process")]
    Locked {
        /// The log file.
        path: PathBuf,
    },
    /// The file is not a sqlraft log, or a record before the last one is damaged.
    #[error("log {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The caller asked for something that would break the log's invariants.
    #[error("invalid log write: {0}")]
    InvalidWrite(String),
    /// An earlier write or fsync failed; the store accepts no more writes.
    #[error("log is unusable after an earlier write failure")]
    Poisoned,
}

impl LogError {
    /// True when the store cannot be used any more and the node must stop.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, LogError::InvalidWrite(_) | LogError::Locked { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
