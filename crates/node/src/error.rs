//! Errors of a node, in two levels (as openraft's `RaftError` and `Fatal`):
//!
//! * [`NodeError`]: what the caller of one request handles (no leader, timeout, bad
//!   SQL, a conflict). The node goes on.
//! * [`Fatal`]: the node can no longer be trusted (its log or database failed, data on
//!   disk contradicts itself, an invariant broke). The node has stopped; every later
//!   request gets [`NodeError::Fatal`] with the same cause.
//!
//! [`NodeError::kind`] is the one place that says what an error means for the caller:
//! whether the request was applied, whether retrying is safe, and (in `sqlraft-core`)
//! which HTTP status it becomes. The forwarding node retries on its own only the
//! narrower set it can retry at once without applying anything twice
//! (`NodeError::never_proposed`, and unknown outcomes of writes with a request id).

use std::sync::Arc;

use sqlraft_log::LogError;
use sqlraft_sqlite::SqliteError;
use sqlraft_transport::TransportError;

/// Errors of a [`crate::Node`] request.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The node directory's data is in a format this version cannot open (a newer
    /// one: a downgrade; or one too old); nothing in it was changed.
    #[error("{0}")]
    Incompatible(String),
    /// No leader is known right now; retry later.
    #[error("no leader: the cluster is electing one or this node is cut off")]
    NoLeader,
    /// The request was proposed, then a leadership change dropped it before it was
    /// committed. It was not applied.
    #[error("proposal dropped by a leadership change; it was not applied")]
    Dropped,
    /// The request may or may not have been applied (the leader was lost while it
    /// was in flight).
    #[error("outcome unknown: {0}")]
    UnknownOutcome(String),
    /// The operation did not finish in time.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// Too many requests are waiting; retry later.
    #[error("node is overloaded: {0}")]
    Busy(&'static str),
    /// This node cannot serve the request now (a backup or hash could not be read or
    /// written); nothing changed and the node goes on.
    #[error("{0}")]
    Unavailable(String),
    /// The node is shutting down or has stopped.
    #[error("node is stopped")]
    Stopped,
    /// The request conflicts with the cluster's state (a duplicate address, a service
    /// already removed); nothing changed.
    #[error("{0}")]
    Conflict(String),
    /// No such service.
    #[error("{0}")]
    NotFound(String),
    /// The leader is handing leadership over; retry with the new leader.
    #[error("leadership is being handed over; retry")]
    LeaderChanging,
    /// The service was removed from the cluster and can never join again.
    #[error("{0}")]
    ServiceRemoved(String),
    /// This node was removed from the cluster and has stopped.
    #[error("this node was removed from the cluster")]
    Removed,
    /// The request is invalid (and was not executed).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A read failed: bad SQL, bad parameters, a write sent as a read, a result over
    /// its limits.
    #[error(transparent)]
    Query(SqliteError),
    /// Joining the cluster failed.
    #[error("cannot join the cluster: {0}")]
    Join(String),
    /// The raft log refused something without being damaged (it is locked by another
    /// process, or a write would break its invariants).
    #[error(transparent)]
    Log(LogError),
    /// A peer could not be reached.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The node hit an error it cannot go on from and stopped.
    #[error("node failed: {0}")]
    Fatal(#[source] Arc<Fatal>),
}

/// Why a node stopped and can no longer be trusted. Restarting it may help after an
/// environmental failure (a full disk); damaged data needs an operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Fatal {
    /// The raft log failed (i/o, corruption, an earlier failed fsync).
    #[error(transparent)]
    Log(LogError),
    /// The state database failed.
    #[error(transparent)]
    State(SqliteError),
    /// A file the node keeps beside the log could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What the node was doing.
        context: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// raft-rs failed on the node's own log or configuration.
    #[error("{context}: {source}")]
    Raft {
        /// What the node was doing.
        context: String,
        /// raft-rs's error.
        source: raft::Error,
    },
    /// Data on disk or from the log that cannot be right (an undecodable
    /// configuration, a damaged identity file, raft data without an identity).
    #[error("{0}")]
    Corrupt(String),
    /// An invariant the node relies on does not hold.
    #[error("invariant violated: {0}")]
    Invariant(String),
    /// The raft loop panicked.
    #[error("raft loop panicked: {0}")]
    Panicked(String),
    /// An error the raft loop cannot handle ended it.
    #[error("raft loop stopped: {0}")]
    Unexpected(#[source] Box<NodeError>),
}

/// What an error means for the request that got it: the one mapping every caller uses
/// (the HTTP API for its status codes, clients for whether a retry is safe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is wrong and was not executed; retrying it as is cannot help.
    Invalid,
    /// The request conflicts with the cluster's state; nothing changed.
    Conflict,
    /// The request names something that does not exist; nothing changed.
    NotFound,
    /// Nothing was applied; the node or cluster cannot take the request now (no
    /// leader, overloaded, stopped, a timeout waiting for a read). Retrying later or
    /// on another node is safe.
    Unavailable,
    /// The request may or may not have been applied. Retry only with the same
    /// request id, which makes the retry answer from the first attempt.
    UnknownOutcome,
    /// The node can no longer be trusted and has stopped.
    Fatal,
}

impl NodeError {
    /// What this error means for the request that got it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            NodeError::Config(_) | NodeError::Incompatible(_) | NodeError::Invalid(_) => {
                ErrorKind::Invalid
            }
            NodeError::Query(SqliteError::PoolUnavailable(_) | SqliteError::Backup(_)) => {
                ErrorKind::Unavailable
            }
            NodeError::Query(_) => ErrorKind::Invalid,
            NodeError::Conflict(_) | NodeError::ServiceRemoved(_) | NodeError::Join(_) => {
                ErrorKind::Conflict
            }
            NodeError::NotFound(_) => ErrorKind::NotFound,
            NodeError::NoLeader
            | NodeError::Dropped
            | NodeError::Timeout(_)
            | NodeError::Busy(_)
            | NodeError::Unavailable(_)
            | NodeError::Stopped
            | NodeError::LeaderChanging
            | NodeError::Removed
            | NodeError::Log(_)
            | NodeError::Transport(_) => ErrorKind::Unavailable,
            NodeError::UnknownOutcome(_) => ErrorKind::UnknownOutcome,
            NodeError::Fatal(_) => ErrorKind::Fatal,
        }
    }

    /// True when the node cannot go on (and has stopped or must stop).
    pub fn is_fatal(&self) -> bool {
        self.kind() == ErrorKind::Fatal
    }

    /// The cause of a fatal error.
    pub fn fatal(&self) -> Option<&Fatal> {
        match self {
            NodeError::Fatal(f) => Some(f),
            _ => None,
        }
    }

    /// True when the request was certainly never proposed: trying again cannot apply
    /// it twice.
    pub(crate) fn never_proposed(&self) -> bool {
        matches!(
            self,
            NodeError::NoLeader | NodeError::Busy(_) | NodeError::LeaderChanging
        )
    }

    /// The fatal cause this error stands for when it ends the raft loop.
    pub(crate) fn into_fatal(self) -> Arc<Fatal> {
        match self {
            NodeError::Fatal(f) => f,
            other => Arc::new(Fatal::Unexpected(Box::new(other))),
        }
    }
}

impl From<Fatal> for NodeError {
    fn from(f: Fatal) -> Self {
        NodeError::Fatal(Arc::new(f))
    }
}

impl Fatal {
    /// A failed file operation, with what the node was doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> NodeError {
        Fatal::Io {
            context: context.into(),
            source,
        }
        .into()
    }

    /// raft-rs failing on this node's own data, with what the node was doing.
    pub(crate) fn raft(context: impl Into<String>, source: raft::Error) -> NodeError {
        Fatal::Raft {
            context: context.into(),
            source,
        }
        .into()
    }

    /// Data that cannot be right.
    pub(crate) fn corrupt(message: impl Into<String>) -> NodeError {
        Fatal::Corrupt(message.into()).into()
    }
}

impl From<sqlraft_sqlite::RegistryError> for NodeError {
    fn from(e: sqlraft_sqlite::RegistryError) -> Self {
        use sqlraft_sqlite::RegistryError;
        match e {
            RegistryError::Conflict(m) => NodeError::Conflict(m),
            RegistryError::NotFound(id) => NodeError::NotFound(format!("no service with id {id}")),
            RegistryError::InvalidState(m) => NodeError::Conflict(m),
        }
    }
}

impl From<SqliteError> for NodeError {
    fn from(e: SqliteError) -> Self {
        if e.is_fatal() {
            Fatal::State(e).into()
        } else {
            NodeError::Query(e)
        }
    }
}

impl From<LogError> for NodeError {
    fn from(e: LogError) -> Self {
        if e.is_fatal() {
            Fatal::Log(e).into()
        } else {
            NodeError::Log(e)
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = NodeError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_storage_errors_become_fatal_and_keep_their_source() {
        let io = std::io::Error::other("disk gone");
        let e = NodeError::from(LogError::Poisoned);
        assert_eq!(e.kind(), ErrorKind::Fatal);
        assert!(matches!(e.fatal(), Some(Fatal::Log(LogError::Poisoned))));
        let e = Fatal::io("cannot write raft/id", io);
        let source = std::error::Error::source(&e).expect("a source");
        assert!(source.to_string().contains("disk gone"), "{source}");
    }

    #[test]
    fn caller_errors_are_not_fatal() {
        let locked = LogError::Locked {
            path: "raft/log".into(),
        };
        assert_eq!(NodeError::from(locked).kind(), ErrorKind::Unavailable);
        let query = NodeError::from(SqliteError::Query("no such table: t".into()));
        assert_eq!(query.kind(), ErrorKind::Invalid);
        assert!(!query.is_fatal());
        assert_eq!(NodeError::Removed.kind(), ErrorKind::Unavailable);
        assert_eq!(NodeError::Dropped.kind(), ErrorKind::Unavailable);
        assert_eq!(
            NodeError::UnknownOutcome("lost".into()).kind(),
            ErrorKind::UnknownOutcome
        );
    }

    #[test]
    fn an_unexpected_loop_error_keeps_the_error_as_its_source() {
        let fatal = NodeError::Timeout(5).into_fatal();
        assert!(matches!(&*fatal, Fatal::Unexpected(e) if matches!(**e, NodeError::Timeout(5))));
    }
}
