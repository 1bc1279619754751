use std::collections::BTreeMap;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prost::Message as _;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState,
};
use raft::{RawNode, ReadOnlyOption, Storage};
use sqlraft_log::LogStore;
use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::{
    Member, ReadPool, Rows, StateMachine, Statement, StatementResult, WriteRequest,
};
use sqlraft_transport::{Handler, Transport, TransportError};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::NodeConfig;
use crate::error::{NodeError, Result};
use crate::identity::{self, Identity};
use crate::logger::raft_logger;
use crate::raft_loop::{Applied, RaftLoop, Request, Shared};
use crate::status::{Role, Status};

/// The service id of the first core service of a cluster.
pub const FIRST_SERVICE_ID: &str = "00000000-0000-0000-0000-000000000000";

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// This node's own SQLite file as it is; with `min_index`, once this node has
    /// applied at least that index (read-your-writes from any node).
    Local {
        /// Wait until this index is applied here.
        min_index: Option<u64>,
    },
    /// Sees every write acknowledged before the read began: raft ReadIndex, then the
    /// read runs on this node (followers included) once it has applied that index.
    #[default]
    Linearizable,
    /// The read is ordered through the raft log, then runs on this node.
    Strong,
}

/// The outcome of a write.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    /// One result per statement run.
    pub results: Vec<StatementResult>,
    /// Index of the raft entry that carried the write.
    pub raft_index: u64,
}

/// A running sqlraft node. Cloning gives another handle to the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    raft_id: u64,
    service_id: String,
    raft_addr: String,
    config: NodeConfig,
    requests: SyncSender<Request>,
    shared: Arc<Shared>,
    applied: watch::Receiver<u64>,
    transport: Transport,
    reads: ReadPool,
    server: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
    raft_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Node {
    /// Starts a node from `config.dir`: restarts it when the directory holds one,
    /// otherwise joins the cluster at `config.join`, or bootstraps a one-node cluster.
    pub async fn start(config: NodeConfig) -> Result<Node> {
        validate(&config)?;
        let raft_dir = config.dir.join("raft");
        let db_dir = config.dir.join("db");
        for dir in [&raft_dir, &db_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| NodeError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        let listener = TcpListener::bind(config.listen_addr).await.map_err(|e| {
            NodeError::Config(format!("cannot listen on {}: {e}", config.listen_addr))
        })?;
        let bound = listener
            .local_addr()
            .map_err(|e| NodeError::Config(format!("listener has no address: {e}")))?;
        let raft_addr = config
            .advertise_addr
            .clone()
            .unwrap_or_else(|| bound.to_string());

        let mut log = LogStore::open(&raft_dir, config.log.clone())?;
        let sm = StateMachine::open(&db_dir.join("state.db"))?;
        let (transport, unreachable) = Transport::new(config.transport.clone());

        let identity = match identity::load(&raft_dir)? {
            Some(identity) => {
                if identity.service_id != config.service_id {
                    return Err(NodeError::Config(format!(
                        "{} belongs to service {}, not {}",
                        config.dir.display(),
                        identity.service_id,
                        config.service_id
                    )));
                }
                identity
            }
            None => {
                if log.last_index().unwrap_or(0) > 0 || sm.applied_index() > 0 {
                    return Err(NodeError::Fatal(format!(
                        "{} holds raft data but no identity file: refusing to guess",
                        raft_dir.display()
                    )));
                }
                let raft_id = match &config.join {
                    Some(addr) => join_cluster(&transport, addr, &config, &raft_addr).await?,
                    None => {
                        let http_addr = config.http_addr.clone().unwrap_or_default();
                        bootstrap(&mut log, &config.service_id, &raft_addr, &http_addr)?;
                        1
                    }
                };
                let identity = Identity {
                    service_id: config.service_id.clone(),
                    raft_id,
                };
                identity::store(&raft_dir, &identity)?;
                identity
            }
        };

        let raw = restore_raft(&config, identity.raft_id, log, &sm)?;
        let members: BTreeMap<u64, Member> =
            sm.members()?.into_iter().map(|m| (m.raft_id, m)).collect();
        for m in members.values() {
            if m.raft_id != identity.raft_id {
                transport.set_peer(m.raft_id, &m.raft_addr)?;
            }
        }
        let reads = ReadPool::open(&db_dir.join("state.db"), &config.read).await?;

        let (applied_tx, applied) = watch::channel(sm.applied_index());
        let shared = Arc::new(Shared {
            status: Mutex::new(initial_status(&identity, sm.applied_index())),
            applied: applied_tx,
            failure: Mutex::new(None),
        });
        let (requests, queue) = std::sync::mpsc::sync_channel(config.limits.loop_queue_len);
        let raft_loop = RaftLoop::new(
            raw,
            sm,
            transport.clone(),
            queue,
            unreachable,
            Arc::clone(&shared),
            identity.service_id.clone(),
            members,
            config.raft.clone(),
            config.limits.clone(),
        );
        let raft_thread = std::thread::Builder::new()
            .name(format!("raft-{}", identity.raft_id))
            .spawn(move || raft_loop.run())
            .map_err(|e| NodeError::Fatal(format!("cannot start the raft thread: {e}")))?;

        let inner = Arc::new(Inner {
            raft_id: identity.raft_id,
            service_id: identity.service_id,
            raft_addr,
            config,
            requests,
            shared,
            applied,
            transport: transport.clone(),
            reads,
            server: Mutex::new(None),
            raft_thread: Mutex::new(Some(raft_thread)),
        });
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_peers(
            listener,
            PeerHandler(Arc::downgrade(&inner)),
            transport,
            inner.config.transport.max_message_bytes,
            stop_rx,
        ));
        *inner.server.lock().unwrap_or_else(PoisonError::into_inner) = Some((stop_tx, server));
        tracing::info!(raft_id = inner.raft_id, service_id = %inner.service_id,
            raft_addr = %inner.raft_addr, "node started");
        Ok(Node { inner })
    }

    /// This node's raft id.
    pub fn raft_id(&self) -> u64 {
        self.inner.raft_id
    }

    /// This node's service id.
    pub fn service_id(&self) -> &str {
        &self.inner.service_id
    }

    /// The address peers reach this node's raft transport at.
    pub fn raft_addr(&self) -> &str {
        &self.inner.raft_addr
    }

    /// A snapshot of the node's state.
    pub fn status(&self) -> Status {
        self.inner.shared.status()
    }

    /// The error that stopped the node, if one did.
    pub fn failure(&self) -> Option<String> {
        self.inner.shared.failure()
    }

    /// Read-only sqlx pool on this node's SQLite file, for an embedding service's own
    /// typed queries. What it sees is this node's applied state ([`Consistency::Local`]).
    pub fn read_pool(&self) -> &sqlx::SqlitePool {
        self.inner.reads.pool()
    }

    /// The transport, for tests that cut links ([`Transport::block`]).
    pub fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// Runs a write request on the leader (forwarded there from a follower) and
    /// returns once it is applied on the leader.
    pub async fn execute(&self, request: WriteRequest) -> Result<WriteOutcome> {
        let inner = &self.inner;
        let limits = &inner.config.limits;
        if request.statements.len() > limits.max_statements {
            return Err(NodeError::Invalid(format!(
                "{} statements in one request; at most {}",
                request.statements.len(),
                limits.max_statements
            )));
        }
        let wire = pb::WriteRequest::from(&request);
        if wire.encoded_len() > limits.max_request_bytes {
            return Err(NodeError::Invalid(format!(
                "request of {} bytes; at most {}",
                wire.encoded_len(),
                limits.max_request_bytes
            )));
        }
        let deadline = Instant::now() + Duration::from_millis(limits.write_timeout_ms);
        loop {
            inner.check_running()?;
            let status = inner.shared.status();
            let attempt = if status.role == Role::Leader {
                inner.propose(&wire, deadline).await
            } else if let Some(leader) = status.leader() {
                inner
                    .forward(&leader.raft_addr, leader.raft_id, wire.clone())
                    .await
            } else {
                Err(NodeError::NoLeader)
            };
            match attempt {
                // Nothing was proposed: safe to try again while time is left.
                Err(NodeError::NoLeader | NodeError::Busy(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(inner.config.raft.tick_ms / 2 + 1))
                        .await;
                }
                Err(NodeError::NoLeader) => return Err(NodeError::NoLeader),
                other => return other,
            }
        }
    }

    /// Runs one read statement at the given consistency, on this node.
    pub async fn query(&self, statement: &Statement, consistency: Consistency) -> Result<Rows> {
        let inner = &self.inner;
        inner.check_running()?;
        match consistency {
            Consistency::Local { min_index: None } => {}
            Consistency::Local {
                min_index: Some(index),
            } => inner.wait_applied(index).await?,
            Consistency::Linearizable => {
                let index = inner.read_index().await?;
                inner.wait_applied(index).await?;
            }
            Consistency::Strong => {
                let barrier = self.execute(WriteRequest::transaction(Vec::new())).await?;
                inner.wait_applied(barrier.raft_index).await?;
            }
        }
        Ok(inner.reads.query(statement).await?)
    }

    /// Waits until this node has applied `index` (bounded by the read timeout).
    pub async fn wait_applied(&self, index: u64) -> Result<()> {
        self.inner.wait_applied(index).await
    }

    /// Stops the node: the raft loop finishes its turn, waiting requests get
    /// [`NodeError::Stopped`] or an unknown outcome, the transport stops.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        let _ = inner.requests.try_send(Request::Shutdown);
        let thread = inner
            .raft_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // The queue may be full; keep asking until the loop takes the request.
            let requests = inner.requests.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let _ = requests.send(Request::Shutdown);
                let _ = thread.join();
            })
            .await;
        }
        let server = inner
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((stop, task)) = server {
            let _ = stop.send(());
            let _ = task.await;
        }
        inner.reads.pool().close().await;
        tracing::info!(raft_id = inner.raft_id, "node stopped");
    }
}

impl Inner {
    fn check_running(&self) -> Result<()> {
        if let Some(failure) = self.shared.failure() {
            return Err(NodeError::Fatal(failure));
        }
        Ok(())
    }

    fn submit(&self, request: Request) -> Result<()> {
        self.requests.try_send(request).map_err(|e| match e {
            TrySendError::Full(_) => NodeError::Busy("raft queue is full"),
            TrySendError::Disconnected(_) => self.stopped(),
        })
    }

    fn stopped(&self) -> NodeError {
        match self.shared.failure() {
            Some(failure) => NodeError::Fatal(failure),
            None => NodeError::Stopped,
        }
    }

    /// Proposes on this node, which believes it is the leader.
    async fn propose(&self, write: &pb::WriteRequest, deadline: Instant) -> Result<WriteOutcome> {
        let command = pb::Command {
            kind: Some(pb::command::Kind::Write(write.clone())),
        };
        let (reply, outcome) = oneshot::channel();
        self.submit(Request::Propose {
            command: command.encode_to_vec(),
            reply,
        })?;
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, outcome).await {
            Ok(Ok(Ok(Applied { index, results }))) => Ok(WriteOutcome {
                results,
                raft_index: index,
            }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(self.stopped()),
            Err(_) => Err(NodeError::UnknownOutcome(format!(
                "not applied within {} ms",
                self.config.limits.write_timeout_ms
            ))),
        }
    }

    async fn forward(
        &self,
        addr: &str,
        leader_id: u64,
        write: pb::WriteRequest,
    ) -> Result<WriteOutcome> {
        let response = match self.transport.forward(addr, leader_id, write).await {
            Ok(response) => response,
            // The request never left this node.
            Err(TransportError::Blocked(_) | TransportError::InvalidAddress { .. }) => {
                return Err(NodeError::NoLeader);
            }
            Err(e @ TransportError::Unreachable { .. }) if was_never_sent(&e) => {
                return Err(NodeError::NoLeader);
            }
            Err(e) => return Err(NodeError::UnknownOutcome(e.to_string())),
        };
        use pb::forward_error::Kind;
        match response.outcome {
            Some(pb::forward_response::Outcome::Response(r)) => Ok(WriteOutcome {
                results: r.results.into_iter().map(Into::into).collect(),
                raft_index: r.raft_index,
            }),
            Some(pb::forward_response::Outcome::Error(e)) => Err(match e.kind() {
                Kind::NotLeader => NodeError::NoLeader,
                Kind::Dropped => NodeError::Dropped,
                Kind::Invalid => NodeError::Invalid(e.message),
                Kind::Unavailable => NodeError::Busy("leader unavailable"),
                Kind::UnknownOutcome | Kind::Unspecified => NodeError::UnknownOutcome(e.message),
            }),
            None => Err(NodeError::UnknownOutcome(
                "empty answer from the leader".into(),
            )),
        }
    }

    async fn read_index(&self) -> Result<u64> {
        let (reply, index) = oneshot::channel();
        self.submit(Request::ReadIndex { reply })?;
        match tokio::time::timeout(
            Duration::from_millis(self.config.limits.read_timeout_ms + 100),
            index,
        )
        .await
        {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.stopped()),
            Err(_) => Err(NodeError::Timeout(self.config.limits.read_timeout_ms)),
        }
    }

    async fn wait_applied(&self, index: u64) -> Result<()> {
        let mut applied = self.applied.clone();
        let wait = Duration::from_millis(self.config.limits.read_timeout_ms);
        match tokio::time::timeout(wait, applied.wait_for(|a| *a >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(self.stopped()),
            Err(_) => Err(NodeError::Timeout(self.config.limits.read_timeout_ms)),
        }
    }

    async fn join_request(&self, request: pb::JoinRequest) -> Result<pb::JoinResponse> {
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
                    TransportError::Refused { message, .. } => NodeError::Join(message),
                    _ => NodeError::NoLeader,
                });
        }
        let (reply, response) = oneshot::channel();
        self.submit(Request::Join { request, reply })?;
        match tokio::time::timeout(
            Duration::from_millis(self.config.limits.write_timeout_ms),
            response,
        )
        .await
        {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.stopped()),
            Err(_) => Err(NodeError::Timeout(self.config.limits.write_timeout_ms)),
        }
    }
}

/// tonic reports a refused connection as `Unavailable` with the connect error in
/// the message; anything else may have reached the peer.
fn was_never_sent(e: &TransportError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("connect") || text.contains("connection refused")
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.requests.try_send(Request::Shutdown);
    }
}

struct PeerHandler(std::sync::Weak<Inner>);

impl PeerHandler {
    fn node(&self) -> Option<Arc<Inner>> {
        self.0.upgrade()
    }
}

impl Handler for PeerHandler {
    fn raft_messages(&self, messages: Vec<raft::eraftpb::Message>) {
        if let Some(node) = self.node() {
            // A full queue drops the batch; raft resends.
            let _ = node.requests.try_send(Request::Raft(messages));
        }
    }

    async fn forward(&self, request: pb::WriteRequest) -> pb::ForwardResponse {
        use pb::forward_error::Kind;
        let error = |kind: Kind, message: String| pb::ForwardResponse {
            outcome: Some(pb::forward_response::Outcome::Error(pb::ForwardError {
                kind: kind as i32,
                message,
            })),
        };
        let Some(node) = self.node() else {
            return error(Kind::Unavailable, "node is stopping".into());
        };
        if node.shared.status().role != Role::Leader {
            return error(Kind::NotLeader, "not the leader".into());
        }
        let deadline = Instant::now() + Duration::from_millis(node.config.limits.write_timeout_ms);
        match node.propose(&request, deadline).await {
            Ok(outcome) => pb::ForwardResponse {
                outcome: Some(pb::forward_response::Outcome::Response(pb::WriteResponse {
                    results: outcome.results.iter().map(Into::into).collect(),
                    raft_index: outcome.raft_index,
                })),
            },
            Err(NodeError::NoLeader) => error(Kind::NotLeader, "not the leader".into()),
            Err(NodeError::Dropped) => error(Kind::Dropped, NodeError::Dropped.to_string()),
            Err(e @ NodeError::Invalid(_)) => error(Kind::Invalid, e.to_string()),
            Err(e @ (NodeError::Busy(_) | NodeError::Stopped)) => {
                error(Kind::Unavailable, e.to_string())
            }
            Err(e) => error(Kind::UnknownOutcome, e.to_string()),
        }
    }

    async fn join(&self, request: pb::JoinRequest) -> Result<pb::JoinResponse, tonic::Status> {
        let Some(node) = self.node() else {
            return Err(tonic::Status::unavailable("node is stopping"));
        };
        node.join_request(request).await.map_err(|e| match e {
            NodeError::Join(message) => tonic::Status::failed_precondition(message),
            other => tonic::Status::unavailable(other.to_string()),
        })
    }
}

async fn serve_peers(
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

fn validate(config: &NodeConfig) -> Result<()> {
    if config.service_id.trim().is_empty() {
        return Err(NodeError::Config("service id is empty".into()));
    }
    let t = &config.raft;
    if t.tick_ms == 0 || t.heartbeat_ticks == 0 || t.election_ticks <= t.heartbeat_ticks {
        return Err(NodeError::Config(
            "raft timings: tick_ms > 0 and election_ticks > heartbeat_ticks > 0".into(),
        ));
    }
    Ok(())
}

/// Asks the cluster to admit this service, retrying while the cluster is busy or
/// unreachable; a refusal is final.
async fn join_cluster(
    transport: &Transport,
    addr: &str,
    config: &NodeConfig,
    raft_addr: &str,
) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_millis(config.limits.join_timeout_ms);
    let request = pb::JoinRequest {
        service_id: config.service_id.clone(),
        raft_addr: raft_addr.to_string(),
        http_addr: config.http_addr.clone().unwrap_or_default(),
    };
    let mut pause = Duration::from_millis(100);
    loop {
        let error = match transport.join(addr, request.clone()).await {
            Ok(response) if response.raft_id > 0 => {
                tracing::info!(
                    raft_id = response.raft_id,
                    via = addr,
                    "admitted to the cluster"
                );
                for m in &response.members {
                    if m.raft_id != response.raft_id {
                        transport.set_peer(m.raft_id, &m.raft_addr)?;
                    }
                }
                return Ok(response.raft_id);
            }
            Ok(_) => "the cluster answered without a raft id".to_string(),
            Err(TransportError::Refused {
                code: tonic::Code::FailedPrecondition,
                message,
                ..
            }) => return Err(NodeError::Join(message)),
            Err(e @ TransportError::InvalidAddress { .. }) => {
                return Err(NodeError::Join(e.to_string()));
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() + pause > deadline {
            return Err(NodeError::Join(format!(
                "gave up after {} ms: {error}",
                config.limits.join_timeout_ms
            )));
        }
        tracing::info!(via = addr, %error, "join not possible yet, retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// A new cluster's first entry adds the first node as a voter and records who it is,
/// so every node that replays the log learns the first member like any other.
fn bootstrap(log: &mut LogStore, service_id: &str, raft_addr: &str, http_addr: &str) -> Result<()> {
    let member = pb::Member {
        raft_id: 1,
        service_id: service_id.to_string(),
        raft_addr: raft_addr.to_string(),
        http_addr: http_addr.to_string(),
    };
    let cc = ConfChangeV2 {
        changes: vec![ConfChangeSingle {
            change_type: ConfChangeType::AddNode as i32,
            node_id: 1,
        }],
        context: member.encode_to_vec(),
        ..Default::default()
    };
    let entry = Entry {
        entry_type: EntryType::EntryConfChangeV2 as i32,
        term: 1,
        index: 1,
        data: prost_011::Message::encode_to_vec(&cc),
        ..Default::default()
    };
    let hs = HardState {
        term: 1,
        vote: 0,
        commit: 1,
    };
    let cs = ConfState {
        voters: vec![1],
        ..Default::default()
    };
    log.write(&[entry], Some(&hs), Some(&cs))?;
    tracing::info!(service_id, raft_addr, "bootstrapped a new cluster");
    Ok(())
}

fn restore_raft(
    config: &NodeConfig,
    raft_id: u64,
    mut log: LogStore,
    sm: &StateMachine,
) -> Result<RawNode<LogStore>> {
    let applied = sm.applied_index();
    let last = log.last_index().unwrap_or(0);
    if applied > last {
        return Err(NodeError::Fatal(format!(
            "the state database has applied entry {applied} but the raft log ends at {last}: \
             the log in {} was truncated or replaced",
            log.path().display()
        )));
    }
    if applied > 0 {
        let bytes = sm.conf_state()?.ok_or_else(|| {
            NodeError::Fatal("state database has applied entries but no configuration".into())
        })?;
        let cs = <ConfState as prost_011::Message>::decode(bytes.as_slice()).map_err(|e| {
            NodeError::Fatal(format!("undecodable configuration in state database: {e}"))
        })?;
        log.set_conf_state_unpersisted(cs);
        log.raise_commit_unpersisted(applied);
    }
    let commit = log.hard_state().commit;
    if commit > last {
        return Err(NodeError::Fatal(format!(
            "raft log {} ends at {last} but its commit index is {commit}: committed entries are missing",
            log.path().display()
        )));
    }
    let timings = &config.raft;
    let raft_config = raft::Config {
        id: raft_id,
        election_tick: timings.election_ticks,
        heartbeat_tick: timings.heartbeat_ticks,
        applied,
        max_size_per_msg: timings.max_append_bytes,
        max_inflight_msgs: timings.max_inflight_appends,
        check_quorum: true,
        pre_vote: true,
        read_only_option: ReadOnlyOption::Safe,
        ..Default::default()
    };
    raft_config
        .validate()
        .map_err(|e| NodeError::Config(format!("raft configuration: {e}")))?;
    let mut raw = RawNode::new(&raft_config, log, &raft_logger())
        .map_err(|e| NodeError::Fatal(format!("cannot start raft: {e}")))?;
    let cs = raw.raft.prs().conf().to_conf_state();
    if cs.voters == [raft_id] && cs.learners.is_empty() {
        // A one-voter cluster need not wait for an election timeout.
        let _ = raw.campaign();
    }
    Ok(raw)
}

fn initial_status(identity: &Identity, applied: u64) -> Status {
    Status {
        raft_id: identity.raft_id,
        service_id: identity.service_id.clone(),
        role: Role::Joining,
        leader_id: 0,
        term: 0,
        commit_index: 0,
        applied_index: applied,
        last_index: 0,
        voters: Vec::new(),
        learners: Vec::new(),
        members: Vec::new(),
    }
}
