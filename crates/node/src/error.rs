use sqlraft_log::LogError;
use sqlraft_sqlite::SqliteError;
use sqlraft_transport::TransportError;

/// Errors of a [`crate::Node`].
///
/// [`NodeError::is_fatal`] separates what stops the node (its storage is broken, an
/// invariant is violated) from what the caller can handle (no leader, timeout, bad SQL).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
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
    /// A read failed: bad SQL, bad parameters, or a write sent as a read.
    #[error(transparent)]
    Query(SqliteError),
    /// Joining the cluster failed.
    #[error("cannot join the cluster: {0}")]
    Join(String),
    /// The raft log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The state database failed.
    #[error(transparent)]
    State(SqliteError),
    /// A peer could not be reached.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The node hit an error it cannot go on from and stopped.
    #[error("node failed: {0}")]
    Fatal(String),
}

impl NodeError {
    /// True when the node cannot go on (and has stopped or must stop).
    pub fn is_fatal(&self) -> bool {
        match self {
            NodeError::Log(e) => e.is_fatal(),
            NodeError::State(e) => e.is_fatal(),
            NodeError::Fatal(_) => true,
            _ => false,
        }
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
            NodeError::State(e)
        } else {
            NodeError::Query(e)
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = NodeError> = std::result::Result<T, E>;
