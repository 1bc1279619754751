use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use prost_011::Message as _;
use raft::eraftpb::Message;
use sqlraft_proto::v1 as pb;
use sqlraft_proto::v1::raft_transport_server::{RaftTransport, RaftTransportServer};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::TransportError;

/// Start of the status message that tells a node it was removed from the cluster.
pub const REMOVED: &str = "member removed";

/// What a node does with what its peers send.
pub trait Handler: Send + Sync + 'static {
    /// Raft messages from peers, with the sender's member record when it sent one
    /// (its raft id is that of every message). `caller` is the service id the sender's
    /// certificate names (`None` without TLS); when the record is there it names the
    /// same service (checked here), and the node must check that every message's raft
    /// id is that service's. Must not block: queue them for the raft loop.
    /// `Err(sender)`: the sender was removed from the cluster; it is told so.
    fn raft_messages(
        &self,
        caller: Option<Arc<str>>,
        sender: Option<pb::Member>,
        messages: Vec<Message>,
    ) -> Result<(), u64>;
    /// A write or an administrative request forwarded by another node; answered once
    /// it is applied here. `caller` as for [`Handler::raft_messages`].
    fn forward(
        &self,
        caller: Option<Arc<str>>,
        request: pb::ForwardRequest,
    ) -> impl Future<Output = pb::ForwardResponse> + Send;
    /// A service asking to join the cluster, or a member passing such a request on to
    /// the leader. With TLS, `caller` is the certificate's service: the joining service
    /// itself, or a member (which checked the joining one's certificate).
    fn join(
        &self,
        caller: Option<Arc<str>>,
        request: pb::JoinRequest,
    ) -> impl Future<Output = Result<pb::JoinResponse, Status>> + Send;
    /// Where snapshots being received are written; `None` refuses snapshots.
    fn snapshot_dir(&self) -> Option<PathBuf>;
    /// The member with raft id `raft_id`, by this node's applied state, for a member
    /// (`caller`, with TLS) that does not know it; `None` when unknown or when the
    /// caller is not a member.
    fn identify(&self, caller: Option<&str>, raft_id: u64) -> Option<pb::Member>;
    /// With TLS: true when raft id `raft_id` belongs to service `caller` (the service
    /// the peer's certificate names) as far as this node trusts; a snapshot stream is
    /// refused before anything is written otherwise.
    fn speaks_for(&self, caller: &str, raft_id: u64) -> bool;
    /// What this node says of itself (role, term, applied index, version); `None`
    /// while it has no node (starting, stopped).
    fn node_status(&self) -> Option<pb::NodeStatusResponse>;
    /// A snapshot file received whole, its size and SHA-256 checked against what the
    /// sender announced, with the raft message (`MsgSnapshot`) that goes with it. The
    /// node checks the content, takes the file over and steps the message into raft.
    /// `Err(reason)` refuses it; the file is deleted. `caller` as for
    /// [`Handler::raft_messages`].
    fn snapshot_received(
        &self,
        caller: Option<Arc<str>>,
        sender: Option<pb::Member>,
        message: Message,
        path: &Path,
    ) -> Result<(), String>;
}

struct Service<H> {
    handler: Arc<H>,
    blocked: Arc<RwLock<HashSet<u64>>>,
    transfers: Arc<crate::snapshot::Transfers>,
    max_snapshot_bytes: u64,
    /// Becomes true when the server is told to stop: open `Stream` calls end then,
    /// instead of holding their connections (and the server's graceful stop) open.
    stopping: tokio::sync::watch::Receiver<bool>,
    /// Connections are mutual TLS: every call must name its service by certificate.
    tls: bool,
}

impl<H> Service<H> {
    /// The service id the caller's certificate names; `None` without TLS.
    fn caller<T>(&self, request: &Request<T>) -> Result<Option<Arc<str>>, Status> {
        if !self.tls {
            return Ok(None);
        }
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let id = certs
            .first()
            .and_then(crate::tls::service_id_of)
            .ok_or_else(|| {
                Status::permission_denied("the client certificate names no sqlraft service")
            })?;
        Ok(Some(Arc::from(id)))
    }

    fn is_blocked(&self, peer: u64) -> bool {
        self.blocked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&peer)
    }
}

impl<H: Handler> Service<H> {
    /// Hands one batch to the node. `Err`: the sender was removed from the cluster, or
    /// sent something undecodable.
    fn deliver(&self, caller: &Option<Arc<str>>, batch: pb::RaftBatch) -> Result<(), Status> {
        let sender = batch.sender;
        check_claim(caller, sender.as_ref().map(|s| s.service_id.as_str()))?;
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
            && let Err(sender) = self.handler.raft_messages(caller.clone(), sender, messages)
        {
            return Err(Status::permission_denied(format!(
                "{REMOVED}: raft id {sender} is no longer a member of this cluster"
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl<H: Handler> RaftTransport for Service<H> {
    async fn send(&self, request: Request<pb::RaftBatch>) -> Result<Response<pb::RaftAck>, Status> {
        let caller = self.caller(&request)?;
        self.deliver(&caller, request.into_inner())?;
        Ok(Response::new(pb::RaftAck {}))
    }

    async fn stream(
        &self,
        request: Request<tonic::Streaming<pb::RaftBatch>>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        let caller = self.caller(&request)?;
        let mut batches = request.into_inner();
        let mut stopping = self.stopping.clone();
        loop {
            let batch = tokio::select! {
                batch = batches.message() => batch?,
                _ = stopping.wait_for(|stopping| *stopping) => {
                    return Err(Status::unavailable("the peer is stopping"));
                }
            };
            match batch {
                Some(batch) => self.deliver(&caller, batch)?,
                None => return Ok(Response::new(pb::RaftAck {})),
            }
        }
    }

    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        if request.request.is_some() == request.admin.is_some() {
            return Err(Status::invalid_argument(
                "a forward request carries exactly one of a write and an admin request",
            ));
        }
        Ok(Response::new(self.handler.forward(caller, request).await))
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let caller = self.caller(&request)?;
        self.handler
            .join(caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn identify(
        &self,
        request: Request<pb::IdentifyRequest>,
    ) -> Result<Response<pb::IdentifyResponse>, Status> {
        let caller = self.caller(&request)?;
        let raft_id = request.into_inner().raft_id;
        Ok(Response::new(pb::IdentifyResponse {
            member: self.handler.identify(caller.as_deref(), raft_id),
        }))
    }

    async fn node_status(
        &self,
        request: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        self.caller(&request)?;
        self.handler
            .node_status()
            .map(Response::new)
            .ok_or_else(|| Status::unavailable("this node is not running"))
    }

    async fn snapshot_offset(
        &self,
        request: Request<pb::SnapshotOffer>,
    ) -> Result<Response<pb::SnapshotResume>, Status> {
        self.caller(&request)?;
        let offer = request.into_inner();
        let Some(dir) = self.handler.snapshot_dir() else {
            return Err(Status::unavailable("this node takes no snapshots"));
        };
        let offset = crate::snapshot::resume_offset(&dir, &offer).await;
        Ok(Response::new(pb::SnapshotResume { offset }))
    }

    async fn install_snapshot(
        &self,
        request: Request<tonic::Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotAck>, Status> {
        let caller = self.caller(&request)?;
        let Some(dir) = self.handler.snapshot_dir() else {
            return Err(Status::unavailable("this node takes no snapshots"));
        };
        let incoming = crate::snapshot::Incoming {
            dir,
            transfers: &self.transfers,
            max_bytes: self.max_snapshot_bytes,
        };
        let received = incoming
            .receive(request.into_inner(), |from, sender| {
                if self.is_blocked(from) {
                    return Err(Status::unavailable("this peer is cut off"));
                }
                let Some(caller) = &caller else {
                    return Ok(());
                };
                // With TLS the stream names its sender, and that is the certificate's
                // service, the member with the message's raft id.
                match sender {
                    Some(s) if s.raft_id == from && *s.service_id == **caller => {}
                    _ => {
                        return Err(Status::permission_denied(
                            "a snapshot must name its sender, the service of the client certificate",
                        ));
                    }
                }
                if !self.handler.speaks_for(caller, from) {
                    return Err(Status::permission_denied(format!(
                        "raft id {from} is not service {caller}'s"
                    )));
                }
                Ok(())
            })
            .await?;
        let handler = Arc::clone(&self.handler);
        let path = received.path.clone();
        let (sender, message) = (received.sender, received.message);
        if let Err(refused) = check_claim(&caller, sender.as_ref().map(|s| s.service_id.as_str())) {
            let _ = tokio::fs::remove_file(&received.path).await;
            return Err(refused);
        }
        // Opening the file to check it is blocking work.
        let accepted = tokio::task::spawn_blocking(move || {
            handler.snapshot_received(caller, sender, message, &path)
        })
        .await
        .map_err(|e| Status::internal(format!("snapshot check failed: {e}")))?;
        if let Err(reason) = accepted {
            let _ = tokio::fs::remove_file(&received.path).await;
            return Err(Status::invalid_argument(format!(
                "snapshot refused: {reason}"
            )));
        }
        Ok(Response::new(pb::SnapshotAck {
            received: received.size,
        }))
    }
}

/// With TLS, a service may speak only for itself: the service id a request claims
/// (`claimed`) must be the one its certificate names.
fn check_claim(caller: &Option<Arc<str>>, claimed: Option<&str>) -> Result<(), Status> {
    match (caller, claimed) {
        (Some(caller), Some(claimed)) if **caller != *claimed => {
            Err(Status::permission_denied(format!(
                "the client certificate is service {caller}'s, the request speaks for {claimed}"
            )))
        }
        _ => Ok(()),
    }
}

/// Serves the peer transport on `listener` until `shutdown` completes.
///
/// `transport` is the node's own: raft messages from the peers it blocks are dropped
/// (see [`crate::Transport::blocked_set`]), and snapshots being received show in its
/// [`crate::Transport::snapshot_transfers`].
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    transport: &crate::Transport,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), TransportError> {
    let max_message_bytes = transport.options().max_message_bytes;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let service = RaftTransportServer::new(Service {
        handler,
        blocked: transport.blocked_set(),
        transfers: transport.transfers(),
        max_snapshot_bytes: transport.options().max_snapshot_bytes,
        stopping,
        tls: transport.options().tls.is_some(),
    })
    .max_decoding_message_size(max_message_bytes)
    .max_encoding_message_size(max_message_bytes);
    let router = tonic::transport::Server::builder()
        // A peer that vanished (killed, paused, cut off) is noticed, and a stream it
        // held open (a snapshot being received) ends.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)))
        .add_service(service);
    match transport.options().tls.clone() {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls_incoming(listener, tls), shutdown)
                .await?
        }
        None => {
            router
                .serve_with_incoming_shutdown(incoming(listener), shutdown)
                .await?
        }
    }
    Ok(())
}

/// How long a connecting peer has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connections accepted on `listener` that completed a mutual-TLS handshake (each
/// handshake runs on its own task, so a slow one holds up no other). A connection
/// without a certificate from the cluster CA (plaintext, another CA, expired) is
/// closed during the handshake and logged.
fn tls_incoming(
    listener: TcpListener,
    tls: crate::PeerTls,
) -> tokio_stream::wrappers::ReceiverStream<
    std::io::Result<crate::tls::Rotating<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>>,
> {
    let (accepted, incoming) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                next = listener.accept() => match next {
                    Ok(next) => next,
                    Err(e) => {
                        // Out of file descriptors, or a connection reset before it was
                        // taken: wait a little rather than spin.
                        tracing::warn!(error = %e, "raft listener could not accept a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = accepted.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor();
            let tls = tls.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = accepted.send(Ok(tls.bind(stream))).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%remote, error = %e, "refused a peer connection: TLS handshake failed")
                    }
                    Err(_) => tracing::warn!(%remote,
                        "refused a peer connection: no TLS handshake within 10 s"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(incoming)
}

/// Connections accepted on `listener`, with Nagle's algorithm off: a raft batch's
/// answer waiting for the peer's delayed ACK stalls that peer's replication for 40 ms.
/// (The server builder's own `tcp_nodelay` applies only to listeners tonic binds
/// itself, not to an incoming stream it is given.)
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

#[cfg(test)]
mod tests {
    /// Every connection the peer transport accepts has Nagle's algorithm off.
    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        use tokio_stream::StreamExt as _;
        let bound = super::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = bound.local_addr().unwrap();
        let mut incoming = super::incoming(bound);
        let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());
        drop(client.await.unwrap().unwrap());
    }
}
