//! What this node does with what its peers send: raft messages, forwarded writes and
//! administration, joins.

use std::sync::{Arc, Weak};
use std::time::Instant;

use sqlraft_proto::v1 as pb;
use sqlraft_transport::{Handler, Transport};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::error::NodeError;
use crate::forward::forward_error;
use crate::handle::Handle;
use crate::raft_loop::Request;
use crate::status::Role;

/// The peer service of one node. It holds the node weakly: a node dropped by its
/// owner stops, whatever its peers still send.
pub(crate) struct PeerHandler(pub(crate) Weak<Handle>);

impl PeerHandler {
    fn node(&self) -> Option<Arc<Handle>> {
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
        let deadline = Instant::now() + node.write_timeout();
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
        node.join(request).await.map_err(|e| match e {
            NodeError::Join(message) => tonic::Status::failed_precondition(message),
            NodeError::ServiceRemoved(message) => tonic::Status::permission_denied(format!(
                "{}: {message}",
                sqlraft_transport::REMOVED
            )),
            other => tonic::Status::unavailable(other.to_string()),
        })
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
