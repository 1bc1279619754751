/// Errors of the peer transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer address is not a valid `host:port`.
    #[error("invalid peer address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The peer could not be reached or did not answer in time.
    #[error("peer {addr} unreachable: {message}")]
    Unreachable {
        /// The peer's address.
        addr: String,
        /// What failed.
        message: String,
        /// The connection could not be opened: the request certainly did not arrive.
        never_sent: bool,
    },
    /// The peer answered with an error status.
    #[error("peer {addr} refused: {message}")]
    Refused {
        /// The peer's address.
        addr: String,
        /// gRPC status code.
        code: tonic::Code,
        /// The peer's message.
        message: String,
    },
    /// Traffic to the peer is blocked on this node (tests).
    #[error("link to {0} is blocked")]
    Blocked(String),
    /// The listener could not serve.
    #[error("raft listener failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

impl TransportError {
    /// True when the peer refused because the asking node was removed from the cluster.
    pub fn says_removed(&self) -> bool {
        matches!(self, TransportError::Refused { code: tonic::Code::PermissionDenied, message, .. }
            if message.starts_with(crate::server::REMOVED))
    }
}
