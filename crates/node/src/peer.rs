//! What this node does with what its peers send: raft messages, forwarded writes and
//! administration, joins.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlraft_proto::v1 as pb;
use sqlraft_transport::{Handler, Transport, TransportError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::error::NodeError;
use crate::node::Inner;
use crate::raft_loop::Request;
use crate::status::Role;

pub(crate) struct PeerHandler(pub(crate) std::sync::Weak<Inner>);

impl PeerHandler {
    fn node(&self) -> Option<Arc<Inner>> {
        self.0.upgrade()
    }
}

impl Handler for PeerHandler {
    fn raft_messages(
        &self,
        sender: Option<pb::Member>,
        messages: Vec<raft::eraftpb::Message>,
    ) -> Result<(), u64> {
        let Some(node) = self.node() else {
            return Ok(());
        };
        if let Some(m) = messages.iter().find(|m| node.shared.is_removed(m.from)) {
            return Err(m.from);
        }
        // A full queue drops the batch; raft resends.
        let _ = node.requests.try_send(Request::Raft { messages, sender });
        Ok(())
    }

    async fn forward(&self, request: pb::ForwardRequest) -> pb::ForwardResponse {
        let Some(node) = self.node() else {
            return forward_error(&NodeError::Stopped);
        };
        if node.shared.status().role != Role::Leader {
            return forward_error(&NodeError::NoLeader);
        }
        if let Some(admin) = request.admin {
            return match node.admin_local(admin).await {
                Ok(outcome) => pb::ForwardResponse {
                    outcome: Some(pb::forward_response::Outcome::Admin(pb::AdminResponse {
                        raft_index: outcome.index,
                    })),
                },
                Err(e) => forward_error(&e),
            };
        }
        let Some(mut write) = request.request else {
            return forward_error(&NodeError::Invalid("empty forward request".into()));
        };
        let deadline = Instant::now() + Duration::from_millis(node.config.limits.write_timeout_ms);
        match node.propose(&mut write, deadline).await {
            Ok(outcome) => pb::ForwardResponse {
                outcome: Some(pb::forward_response::Outcome::Response(pb::WriteResponse {
                    results: outcome.results.iter().map(Into::into).collect(),
                    raft_index: outcome.raft_index,
                })),
            },
            Err(e) => forward_error(&e),
        }
    }

    async fn join(&self, request: pb::JoinRequest) -> Result<pb::JoinResponse, tonic::Status> {
        let Some(node) = self.node() else {
            return Err(tonic::Status::unavailable("node is stopping"));
        };
        node.join_request(request).await.map_err(|e| match e {
            NodeError::Join(message) => tonic::Status::failed_precondition(message),
            NodeError::ServiceRemoved(message) => tonic::Status::permission_denied(format!(
                "{}: {message}",
                sqlraft_transport::REMOVED
            )),
            other => tonic::Status::unavailable(other.to_string()),
        })
    }
}

/// How an error travels back to the node that forwarded the request.
fn forward_error(e: &NodeError) -> pb::ForwardResponse {
    use pb::forward_error::Kind;
    let kind = match e {
        NodeError::NoLeader | NodeError::LeaderChanging => Kind::NotLeader,
        NodeError::Dropped => Kind::Dropped,
        NodeError::Invalid(_) => Kind::Invalid,
        NodeError::Busy(_) | NodeError::Stopped => Kind::Unavailable,
        NodeError::Conflict(_) => Kind::Conflict,
        NodeError::NotFound(_) => Kind::NotFound,
        _ => Kind::UnknownOutcome,
    };
    pb::ForwardResponse {
        outcome: Some(pb::forward_response::Outcome::Error(pb::ForwardError {
            kind: kind as i32,
            message: e.to_string(),
        })),
    }
}

/// The error a forwarded request came back with.
pub(crate) fn error_from_peer(e: pb::ForwardError) -> NodeError {
    use pb::forward_error::Kind;
    match e.kind() {
        Kind::NotLeader => NodeError::NoLeader,
        Kind::Dropped => NodeError::Dropped,
        Kind::Invalid => NodeError::Invalid(e.message),
        Kind::Unavailable => NodeError::Busy("leader unavailable"),
        Kind::Conflict => NodeError::Conflict(e.message),
        Kind::NotFound => NodeError::NotFound(e.message),
        Kind::UnknownOutcome | Kind::Unspecified => NodeError::UnknownOutcome(e.message),
    }
}

/// Sends a request to the leader at `addr`; a transport failure that certainly left
/// the request unsent is `NoLeader` (safe to retry), any other is an unknown outcome.
pub(crate) async fn send_to_leader(
    transport: &Transport,
    addr: &str,
    leader_id: u64,
    request: pb::ForwardRequest,
) -> Result<pb::forward_response::Outcome, NodeError> {
    let response = match transport.forward(addr, leader_id, request).await {
        Ok(response) => response,
        Err(TransportError::Blocked(_) | TransportError::InvalidAddress { .. }) => {
            return Err(NodeError::NoLeader);
        }
        Err(TransportError::Unreachable {
            never_sent: true, ..
        }) => {
            return Err(NodeError::NoLeader);
        }
        Err(e) => return Err(NodeError::UnknownOutcome(e.to_string())),
    };
    match response.outcome {
        Some(pb::forward_response::Outcome::Error(e)) => Err(error_from_peer(e)),
        Some(outcome) => Ok(outcome),
        None => Err(NodeError::UnknownOutcome(
            "empty answer from the leader".into(),
        )),
    }
}

pub(crate) async fn serve_peers(
    listener: TcpListener,
    handler: PeerHandler,
    transport: Transport,
    max_message_bytes: usize,
    stop: oneshot::Receiver<()>,
) {
    let shutdown = async {
        let _ = stop.await;
    };
    if let Err(e) = sqlraft_transport::serve(
        listener,
        Arc::new(handler),
        transport.blocked_set(),
        max_message_bytes,
        shutdown,
    )
    .await
    {
        tracing::error!(error = %e, "raft listener stopped");
    }
}
