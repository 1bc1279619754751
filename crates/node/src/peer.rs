//! What this node does with what its peers send: raft messages, forwarded writes and
//! administration, joins.

use std::path::{Path, PathBuf};
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
        caller: Option<Arc<str>>,
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
        let _ = node.submit(Request::Raft {
            messages,
            sender,
            caller,
            with_snapshot_file: false,
        });
        Ok(())
    }

    fn snapshot_dir(&self) -> Option<PathBuf> {
        self.node().map(|node| node.snapshot_dir())
    }

    fn node_status(&self) -> Option<pb::NodeStatusResponse> {
        let node = self.node()?;
        let status = node.shared.status.borrow();
        Some(pb::NodeStatusResponse {
            role: status.role.as_str().to_string(),
            term: status.term,
            applied_index: status.applied_index,
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    fn identify(&self, caller: Option<&str>, raft_id: u64) -> Option<pb::Member> {
        let node = self.node()?;
        let status = node.shared.status.borrow();
        // Only a member asks (a removed one learns nothing).
        if let Some(caller) = caller
            && !status.members.iter().any(|m| m.service_id == caller)
        {
            return None;
        }
        status
            .members
            .iter()
            .find(|m| m.raft_id == raft_id)
            .map(|m| pb::Member {
                raft_id: m.raft_id,
                service_id: m.service_id.clone(),
                raft_addr: m.raft_addr.clone(),
                http_addr: m.http_addr.clone(),
            })
    }

    fn speaks_for(&self, caller: &str, raft_id: u64) -> bool {
        self.node()
            .is_some_and(|node| node.shared.is_service(raft_id, caller))
    }

    fn snapshot_received(
        &self,
        caller: Option<Arc<str>>,
        sender: Option<pb::Member>,
        message: raft::eraftpb::Message,
        path: &Path,
    ) -> Result<(), String> {
        let node = self.node().ok_or("the node is stopping")?;
        // Checked before the file takes the place of a snapshot (the transport checked
        // at the start of the stream; membership may have changed since).
        if let Some(caller) = &caller
            && !node.shared.is_service(message.from, caller)
        {
            return Err(format!(
                "raft id {} is not service {caller}'s",
                message.from
            ));
        }
        if node.shared.is_removed(message.from) {
            return Err(format!(
                "raft id {} was removed from the cluster",
                message.from
            ));
        }
        let meta = message.get_snapshot().get_metadata();
        let (index, term) = (meta.index, meta.term);
        let found = sqlraft_sqlite::snapshot::applied_meta(path).map_err(|e| e.to_string())?;
        if found.index != index || found.term.is_some_and(|t| t != term) {
            return Err(format!(
                "the file holds entry {} (term {:?}), the message says {index} (term {term})",
                found.index, found.term
            ));
        }
        let announced = prost_011::Message::encode_to_vec(meta.get_conf_state());
        if found.conf_state.as_deref() != Some(announced.as_slice()) {
            return Err("the file's configuration is not the message's".into());
        }
        // The leader's copy may have been damaged on its disk after it was taken.
        sqlraft_sqlite::snapshot::check_integrity(path).map_err(|e| e.to_string())?;
        let dir = node.snapshot_dir();
        let dest = dir.join(sqlraft_sqlite::snapshot::snapshot_file_name(index, term));
        std::fs::rename(path, &dest)
            .map_err(|e| format!("cannot keep the snapshot as {}: {e}", dest.display()))?;
        sqlraft_sqlite::snapshot::sync_dir(&dir).map_err(|e| e.to_string())?;
        tracing::info!(from = message.from, index, term, "snapshot received");
        node.submit(Request::Raft {
            messages: vec![message],
            sender,
            caller,
            with_snapshot_file: true,
        })
        .map_err(|_| "the raft loop is busy; send it again".to_string())
    }

    async fn forward(
        &self,
        caller: Option<Arc<str>>,
        request: pb::ForwardRequest,
    ) -> pb::ForwardResponse {
        let Some(node) = self.node() else {
            return forward_error(&NodeError::Stopped);
        };
        // Only a leader judges: a node that has not published its state yet (just
        // restarted) knows no members, and one behind may not know a new member yet;
        // either would refuse a member's write as a bad request, which a client does
        // not retry (found by a review). Not leading, it says so, which is retried.
        if node.shared.status().role != Role::Leader {
            return forward_error(&NodeError::NoLeader);
        }
        // With TLS, only a member forwards: a removed service keeps a valid certificate.
        if let Some(caller) = &caller
            && !node.shared.is_member(caller)
        {
            return forward_error(&NodeError::Invalid(format!(
                "service {caller} is not a member of this cluster; it may not forward requests"
            )));
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
        match node.propose_forwarded(&mut write, deadline).await {
            Ok(outcome) => pb::ForwardResponse {
                outcome: Some(pb::forward_response::Outcome::Response(pb::WriteResponse {
                    results: outcome.results.iter().map(Into::into).collect(),
                    raft_index: outcome.raft_index,
                    seconds: outcome.seconds,
                })),
            },
            Err(e) => forward_error(&e),
        }
    }

    async fn join(
        &self,
        caller: Option<Arc<str>>,
        request: pb::JoinRequest,
    ) -> Result<pb::JoinResponse, tonic::Status> {
        let Some(node) = self.node() else {
            return Err(tonic::Status::unavailable("node is stopping"));
        };
        // With TLS a service joins only as itself; a member may pass a join on to the
        // leader (it checked the joining service's certificate first).
        if let Some(caller) = &caller
            && **caller != *request.service_id
            && !node.shared.is_member(caller)
        {
            return Err(tonic::Status::permission_denied(format!(
                "the client certificate is service {caller}'s, the request speaks for {}",
                request.service_id
            )));
        }
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
    stop: oneshot::Receiver<()>,
) {
    let shutdown = async {
        let _ = stop.await;
    };
    if let Err(e) =
        sqlraft_transport::serve(listener, Arc::new(handler), &transport, shutdown).await
    {
        tracing::error!(error = %e, "raft listener stopped");
    }
}
