//! What runs on this node, for the public [`crate::Node`], the peer service and the
//! watchdog alike: requests handed to the raft loop and the waits on their answers.

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use prost::Message as _;
use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::{ReadPool, Service};
use sqlraft_transport::{Transport, TransportError};
use tokio::sync::{oneshot, watch};

use crate::config::NodeConfig;
use crate::error::{NodeError, Result};
use crate::raft_loop::{AdminOutcome, Applied, Request, Shared, Stop};
use crate::status::Role;
use crate::write::WriteOutcome;

/// One node's raft loop as seen from the async side. Dropping the last handle stops
/// the loop.
pub(crate) struct Handle {
    pub raft_id: u64,
    pub service_id: String,
    pub raft_addr: String,
    pub config: NodeConfig,
    pub requests: SyncSender<Request>,
    pub shared: Arc<Shared>,
    pub applied: watch::Receiver<u64>,
    pub transport: Transport,
    pub reads: ReadPool,
    pub metrics: crate::Metrics,
}

impl Handle {
    /// Where this node keeps its snapshots: `raft/snapshots`.
    pub fn snapshot_dir(&self) -> std::path::PathBuf {
        self.config.dir.join("raft").join("snapshots")
    }

    pub fn check_running(&self) -> Result<()> {
        match self.shared.stop() {
            Some(_) => Err(self.stopped()),
            None => Ok(()),
        }
    }

    /// Hands `request` to the raft loop (every request but `Shutdown` goes through
    /// here, so that the queue-depth gauge, counted up here and down as the loop takes
    /// each one, stays true).
    pub fn submit(&self, request: Request) -> Result<()> {
        // Counted before it is sent: the loop may take it at once.
        self.metrics.loop_queue.inc();
        self.requests.try_send(request).map_err(|e| {
            self.metrics.loop_queue.dec();
            match e {
                TrySendError::Full(_) => NodeError::Busy("raft queue is full"),
                TrySendError::Disconnected(_) => self.stopped(),
            }
        })
    }

    /// The error a request gets once the loop has stopped.
    pub fn stopped(&self) -> NodeError {
        match self.shared.stop() {
            Some(Stop::Failed(fatal)) => NodeError::Fatal(fatal),
            Some(Stop::Removed) => NodeError::Removed,
            None => NodeError::Stopped,
        }
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.config.limits.write_timeout_ms)
    }

    fn not_applied_in_time(&self) -> NodeError {
        NodeError::UnknownOutcome(format!(
            "not applied within {} ms",
            self.config.limits.write_timeout_ms
        ))
    }

    /// Proposes a write on this node, which believes it is the leader.
    pub async fn propose(
        &self,
        write: &mut pb::WriteRequest,
        deadline: Instant,
    ) -> Result<WriteOutcome> {
        self.propose_as(write, deadline, false).await
    }

    /// Proposes a write a follower forwarded (see [`Handle::propose`]).
    pub(crate) async fn propose_forwarded(
        &self,
        write: &mut pb::WriteRequest,
        deadline: Instant,
    ) -> Result<WriteOutcome> {
        self.propose_as(write, deadline, true).await
    }

    async fn propose_as(
        &self,
        write: &mut pb::WriteRequest,
        deadline: Instant,
        forwarded: bool,
    ) -> Result<WriteOutcome> {
        // The leader's clock, captured once: every node's SQLite sees this time.
        write.at_unix_ms = crate::raft_loop::now_unix_ms();
        // Encoded where it lies: the request is moved into the command and back, not
        // copied (it may be megabytes, and the caller may retry with it).
        let command = pb::Command {
            kind: Some(pb::command::Kind::Write(std::mem::take(write))),
        };
        let encoded = command.encode_to_vec();
        if let Some(pb::command::Kind::Write(taken)) = command.kind {
            *write = taken;
        }
        let (reply, outcome) = oneshot::channel();
        self.submit(Request::Propose {
            command: encoded,
            reply,
            sent: Instant::now(),
            forwarded,
        })?;
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, outcome).await {
            Ok(Ok(Ok(Applied {
                index,
                results,
                seconds,
                answered,
            }))) => {
                let reply = answered.elapsed().as_secs_f64();
                self.metrics.write_reply.observe(reply);
                Ok(WriteOutcome {
                    results,
                    raft_index: index,
                    applied_here: true,
                    seconds,
                })
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(self.stopped()),
            Err(_) => Err(self.not_applied_in_time()),
        }
    }

    /// Hands an administrative request to this node's raft loop (it is the leader).
    pub async fn admin_local(&self, request: pb::AdminRequest) -> Result<AdminOutcome> {
        let wait = admin_wait(self.write_timeout(), request.kind.as_ref());
        let (reply, outcome) = oneshot::channel();
        self.submit(Request::Admin { request, reply })?;
        match tokio::time::timeout(wait, outcome).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.stopped()),
            Err(_) => Err(NodeError::UnknownOutcome(format!(
                "not applied within {} ms",
                wait.as_millis()
            ))),
        }
    }

    /// Raft's ReadIndex: an index that covers every write acknowledged before now.
    pub async fn read_index(&self) -> Result<u64> {
        let (reply, index) = oneshot::channel();
        self.submit(Request::ReadIndex { reply })?;
        let limit = self.config.limits.read_timeout_ms;
        match tokio::time::timeout(Duration::from_millis(limit + 100), index).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.stopped()),
            Err(_) => Err(NodeError::Timeout(limit)),
        }
    }

    /// Waits until this node has applied `index` (bounded by the read timeout).
    pub async fn wait_applied(&self, index: u64) -> Result<()> {
        let wait = Duration::from_millis(self.config.limits.read_timeout_ms);
        self.wait_applied_within(index, wait).await
    }

    /// Waits until this node has applied `index`, at most `wait`.
    pub async fn wait_applied_within(&self, index: u64, wait: Duration) -> Result<()> {
        let mut applied = self.applied.clone();
        match tokio::time::timeout(wait, applied.wait_for(|a| *a >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(self.stopped()),
            Err(_) => Err(NodeError::Timeout(
                u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            )),
        }
    }

    /// The services registry as this node has applied it.
    pub async fn services(&self) -> Result<Vec<Service>> {
        let (reply, services) = oneshot::channel();
        self.submit(Request::Services { reply })?;
        services.await.map_err(|_| self.stopped())?
    }

    /// A join request from a new service: handled on the leader, passed on to it from
    /// a follower.
    pub async fn join(&self, request: pb::JoinRequest) -> Result<pb::JoinResponse> {
        let status = self.shared.status();
        if status.role != Role::Leader {
            let Some(leader) = status.leader() else {
                return Err(NodeError::NoLeader);
            };
            return self
                .transport
                .join(&leader.raft_addr, request)
                .await
                .map_err(|e| match e {
                    e if e.says_removed() => NodeError::ServiceRemoved(e.to_string()),
                    TransportError::Refused { message, .. } => NodeError::Join(message),
                    _ => NodeError::NoLeader,
                });
        }
        let (reply, response) = oneshot::channel();
        self.submit(Request::Join { request, reply })?;
        match tokio::time::timeout(self.write_timeout(), response).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.stopped()),
            Err(_) => Err(NodeError::Timeout(self.config.limits.write_timeout_ms)),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.requests.try_send(Request::Shutdown);
    }
}

/// How long the leader may take to apply administrative request `kind`: the write
/// timeout, and for a restore's commit a second more per 4 MiB it restores: its apply
/// copies the whole file (a 406 MB restore, answered "not applied within 10000 ms"
/// after it had worked, found by a hostile review).
pub(crate) fn admin_wait(
    write_timeout: Duration,
    kind: Option<&pb::admin_request::Kind>,
) -> Duration {
    match kind {
        Some(pb::admin_request::Kind::RestoreCommit(commit)) => {
            write_timeout + Duration::from_secs(commit.size / (4 << 20))
        }
        _ => write_timeout,
    }
}
