use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, RwLock};

use prost_011::Message as _;
use raft::eraftpb::Message;
use sqlraft_proto::v1 as pb;
use sqlraft_proto::v1::raft_transport_server::{RaftTransport, RaftTransportServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::TransportError;

/// Start of the status message that tells a node it was removed from the cluster.
pub const REMOVED: &str = "member removed";

/// What a node does with what its peers send.
pub trait Handler: Send + Sync + 'static {
    /// Raft messages from peers, with the sender's member record when it sent one
    /// (its raft id is that of every message). Must not block: queue them for the
    /// raft loop. `Err(sender)`: the sender was removed from the cluster; it is told so.
    fn raft_messages(&self, sender: Option<pb::Member>, messages: Vec<Message>) -> Result<(), u64>;
    /// A write or an administrative request forwarded by another node; answered once
    /// it is applied here.
    fn forward(
        &self,
        request: pb::ForwardRequest,
    ) -> impl Future<Output = pb::ForwardResponse> + Send;
    /// A service asking to join the cluster.
    fn join(
        &self,
        request: pb::JoinRequest,
    ) -> impl Future<Output = Result<pb::JoinResponse, Status>> + Send;
}

struct Service<H> {
    handler: Arc<H>,
    blocked: Arc<RwLock<HashSet<u64>>>,
}

#[tonic::async_trait]
impl<H: Handler> RaftTransport for Service<H> {
    async fn send(&self, request: Request<pb::RaftBatch>) -> Result<Response<pb::RaftAck>, Status> {
        let batch = request.into_inner();
        let sender = batch.sender;
        let mut messages = Vec::with_capacity(batch.messages.len());
        for bytes in batch.messages {
            let message = Message::decode(bytes)
                .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))?;
            messages.push(message);
        }
        {
            let blocked = self
                .blocked
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !blocked.is_empty() {
                messages.retain(|m| !blocked.contains(&m.from));
            }
        }
        // A sender record that does not match the messages' sender is ignored.
        let sender = sender.filter(|s| messages.iter().all(|m| m.from == s.raft_id));
        if !messages.is_empty()
            && let Err(sender) = self.handler.raft_messages(sender, messages)
        {
            return Err(Status::permission_denied(format!(
                "{REMOVED}: raft id {sender} is no longer a member of this cluster"
            )));
        }
        Ok(Response::new(pb::RaftAck {}))
    }

    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        let request = request.into_inner();
        if request.request.is_some() == request.admin.is_some() {
            return Err(Status::invalid_argument(
                "a forward request carries exactly one of a write and an admin request",
            ));
        }
        Ok(Response::new(self.handler.forward(request).await))
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        self.handler
            .join(request.into_inner())
            .await
            .map(Response::new)
    }
}

/// Serves the peer transport on `listener` until `shutdown` completes.
///
/// `blocked` is the same set as the node's [`crate::Transport`] uses (see
/// [`crate::Transport::blocked_set`]): raft messages from those peers are dropped.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    blocked: Arc<RwLock<HashSet<u64>>>,
    max_message_bytes: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), TransportError> {
    let service = RaftTransportServer::new(Service { handler, blocked })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
