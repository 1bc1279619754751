//! Errors of the core binary: each becomes one line on stderr and an exit status.

use sqlraft::NodeError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The flags are wrong or contradict each other (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The node could not start or stopped with an error.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A file or socket could not be used.
    #[error("{0}")]
    Io(String),
    /// The command ran and failed (invalid inventory, a demo node that died, ...).
    #[error("{0}")]
    Failed(String),
}

impl CoreError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            // Restarting cannot help either: the data needs another version.
            CoreError::Usage(_) | CoreError::Node(sqlraft::NodeError::Incompatible(_)) => 2,
            _ => 1,
        }
    }

    /// The message on one line.
    pub fn one_line(&self) -> String {
        self.to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A failed file operation: `cannot <what> <path>: <error>`.
pub(crate) fn io_err(what: &str, path: &std::path::Path, e: std::io::Error) -> CoreError {
    CoreError::Io(format!("cannot {what} {}: {e}", path.display()))
}
