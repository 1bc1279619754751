use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use prost::Message as _;
use raft::Storage;
use sqlraft_log::LogStore;
use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::{
    Member, ReadPool, Rows, Service, StateMachine, Statement, StatementResult, WriteRequest,
};
use sqlraft_transport::{Transport, TransportError};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::NodeConfig;
use crate::error::{NodeError, Result};
use crate::identity::{self, Identity};
use crate::known_peers;
use crate::peer::{PeerHandler, send_to_leader, serve_peers};
use crate::raft_loop::{AdminOutcome, Applied, LoopParts, RaftLoop, Request, Shared, Stop};
use crate::startup::{
    RESET_FILE, bootstrap, initial_status, join_cluster, reset_membership, restore_raft, validate,
};
use crate::status::{Role, Status};

pub use sqlraft_sqlite::FIRST_SERVICE_ID;

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
    /// Whether this node had applied the entry when it answered, so that every later
    /// read here sees the write. Always true on the leader; a follower waits for it up
    /// to the read timeout, then answers anyway with `false` (read again with
    /// [`Consistency::Local`] `min_index: Some(raft_index)` to wait longer).
    pub applied_here: bool,
}

/// A running sqlraft node. Cloning gives another handle to the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    raft_id: u64,
    service_id: String,
    raft_addr: String,
    pub(crate) config: NodeConfig,
    pub(crate) requests: SyncSender<Request>,
    pub(crate) shared: Arc<Shared>,
    applied: watch::Receiver<u64>,
    transport: Transport,
    reads: ReadPool,
    server: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
    watchdog: Mutex<Option<JoinHandle<()>>>,
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
        let (transport, peer_events) = Transport::new(config.transport.clone());

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
                    Some(addr) => {
                        let (raft_id, members) =
                            join_cluster(&transport, addr, &config, &raft_addr).await?;
                        // Kept: until this node has applied its own admission, the join
                        // answer is all it knows of the members, restarts included.
                        known_peers::store(&raft_dir, &members)?;
                        raft_id
                    }
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

        let reset_file = raft_dir.join(RESET_FILE);
        if reset_file.exists() {
            reset_membership(&mut log, &sm, identity.raft_id, &reset_file)?;
        }
        // Members the log tail names and those remembered in raft/peers, for what the
        // applied state does not know yet (it wins where it does).
        let mut hinted = known_peers::load(&raft_dir);
        hinted.extend(known_peers::from_log_tail(&log, sm.applied_index())?);
        let raw = restore_raft(&config, identity.raft_id, log, &sm)?;
        let members: BTreeMap<u64, Member> =
            sm.members()?.into_iter().map(|m| (m.raft_id, m)).collect();
        let mut known = BTreeMap::new();
        for m in hinted {
            if m.raft_id != identity.raft_id && !members.contains_key(&m.raft_id) {
                known.insert(m.raft_id, m);
            }
        }
        for m in members.values().chain(known.values()) {
            if m.raft_id != identity.raft_id {
                transport.set_peer(m.raft_id, &m.raft_addr)?;
            }
        }
        transport.set_local(pb::Member {
            raft_id: identity.raft_id,
            service_id: identity.service_id.clone(),
            raft_addr: raft_addr.clone(),
            http_addr: config.http_addr.clone().unwrap_or_default(),
        });
        let reads = ReadPool::open(&db_dir.join("state.db"), &config.read).await?;

        let (applied_tx, applied) = watch::channel(sm.applied_index());
        let removed: HashSet<u64> = sm
            .services()?
            .iter()
            .filter(|s| s.state == sqlraft_sqlite::ServiceState::Removed)
            .filter_map(|s| s.raft_id)
            .collect();
        let shared = Arc::new(Shared {
            status: Mutex::new(initial_status(&identity, sm.applied_index())),
            applied: applied_tx,
            stop: Mutex::new(None),
            removed: RwLock::new(removed),
            leader_contact: Mutex::new(Instant::now()),
        });
        let (requests, queue) = std::sync::mpsc::sync_channel(config.limits.loop_queue_len);
        let raft_loop = RaftLoop::new(LoopParts {
            raw,
            sm,
            transport: transport.clone(),
            requests: queue,
            peer_events,
            shared: Arc::clone(&shared),
            service_id: identity.service_id.clone(),
            members,
            known,
            raft_dir: raft_dir.clone(),
            timings: config.raft.clone(),
            limits: config.limits.clone(),
            admission: config.admission,
        });
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
            watchdog: Mutex::new(None),
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
        let watchdog = tokio::spawn(removal_watchdog(Arc::downgrade(&inner)));
        *inner
            .watchdog
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(watchdog);
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
        match self.inner.shared.stop() {
            Some(Stop::Failed(e)) => Some(e),
            _ => None,
        }
    }

    /// True once this node learned that it was removed from the cluster; it has
    /// stopped taking part and should be shut down.
    pub fn is_removed(&self) -> bool {
        self.inner.shared.stop() == Some(Stop::Removed)
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
        if let Some(id) = &request.request_id
            && (id.is_empty() || id.len() > sqlraft_sqlite::MAX_REQUEST_ID_BYTES)
        {
            return Err(NodeError::Invalid(format!(
                "a request id has 1 to {} bytes",
                sqlraft_sqlite::MAX_REQUEST_ID_BYTES
            )));
        }
        let mut wire = pb::WriteRequest::from(request);
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
                inner.propose(&mut wire, deadline).await
            } else if let Some(leader) = status.leader() {
                // Forwarded writes carry a request id, so that this node can retry one
                // whose outcome it did not hear without applying it twice.
                if wire.request_id.is_empty() {
                    wire.request_id = format!("sqlraft-forward-{}", uuid::Uuid::new_v4());
                }
                match inner
                    .forward_write(&leader.raft_addr, leader.raft_id, &wire)
                    .await
                {
                    // Read-your-writes: what this node acknowledges, it shows to every
                    // later read here, at every level. Bounded: after the read
                    // timeout the answer goes out anyway, saying so.
                    Ok(mut outcome) => {
                        outcome.applied_here = inner.wait_applied(outcome.raft_index).await.is_ok();
                        Ok(outcome)
                    }
                    Err(e) => Err(e),
                }
            } else {
                Err(NodeError::NoLeader)
            };
            match attempt {
                // Nothing was proposed: safe to try again while time is left.
                Err(NodeError::NoLeader | NodeError::Busy(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(inner.config.raft.tick_ms / 2 + 1))
                        .await;
                }
                // With a request id, a retry is answered from the first attempt if that
                // one was applied: an unknown outcome becomes a known one.
                Err(NodeError::UnknownOutcome(_) | NodeError::Dropped)
                    if !wire.request_id.is_empty() && Instant::now() < deadline =>
                {
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

    /// Registers a core service that may then join with the returned id and the given
    /// raft address ([`crate::Admission::Registered`]). Sent to the leader from any node.
    pub async fn create_service(&self, fqdn: &str, raft_addr: &str) -> Result<Service> {
        check_service_address(fqdn, raft_addr)?;
        let id = uuid::Uuid::new_v4().to_string();
        let request = pb::admin_request::Kind::CreateService(pb::CreateService {
            id: id.clone(),
            name: String::new(),
            fqdn: fqdn.to_string(),
            raft_addr: raft_addr.to_string(),
            at_unix_ms: crate::raft_loop::now_unix_ms(),
        });
        let index = self.inner.admin(request).await?;
        self.inner.wait_applied(index).await?;
        self.services()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| {
                NodeError::UnknownOutcome(format!("service {id} not found after creation"))
            })
    }

    /// Removes a core service: one that never joined is marked removed; a member leaves
    /// the configuration through a joint-consensus change that keeps the number of
    /// voters odd (demoting another voter to learner when needed). Removing the leader
    /// hands leadership over first. A removed service can never join again.
    ///
    /// Returns once this node has applied the removal completely: a voter leaves
    /// through a joint configuration, and is removed only when that is left.
    pub async fn remove_service(&self, service_id: &str) -> Result<u64> {
        let request = pb::admin_request::Kind::RemoveService(service_id.to_string());
        let index = self.inner.admin(request).await?;
        let limits = &self.inner.config.limits;
        let deadline = Instant::now() + Duration::from_millis(limits.write_timeout_ms);
        loop {
            if service_id == self.inner.service_id {
                // This node is the one leaving: it may never apply the rest.
                if self.is_removed() || Instant::now() >= deadline {
                    return Ok(index);
                }
                tokio::time::sleep(Duration::from_millis(self.inner.config.raft.tick_ms)).await;
                continue;
            }
            self.inner.wait_applied(index).await?;
            let removed =
                self.services().await?.iter().any(|s| {
                    s.id == service_id && s.state == sqlraft_sqlite::ServiceState::Removed
                });
            if removed {
                return Ok(index);
            }
            if Instant::now() >= deadline {
                return Err(NodeError::UnknownOutcome(format!(
                    "removal of {service_id} started at index {index} but did not finish within {} ms",
                    limits.write_timeout_ms
                )));
            }
            tokio::time::sleep(Duration::from_millis(self.inner.config.raft.tick_ms)).await;
        }
    }

    /// The services registry as this node has applied it.
    pub async fn services(&self) -> Result<Vec<Service>> {
        let (reply, services) = oneshot::channel();
        self.inner.submit(Request::Services { reply })?;
        services.await.map_err(|_| self.inner.stopped())?
    }

    /// A hash of this node's replicated content (user schema and rows) with the index
    /// it was taken at: nodes at the same index must agree (compare them as etcd's
    /// `hashkv` does).
    pub async fn content_hash(&self) -> Result<sqlraft_sqlite::ContentHash> {
        let path = self.inner.config.dir.join("db").join("state.db");
        tokio::task::spawn_blocking(move || sqlraft_sqlite::content_hash(&path))
            .await
            .map_err(|e| sqlraft_sqlite::SqliteError::Query(format!("hash task failed: {e}")))?
            .map_err(Into::into)
    }

    /// Waits until this node has applied `index` (bounded by the read timeout).
    pub async fn wait_applied(&self, index: u64) -> Result<()> {
        self.inner.wait_applied(index).await
    }

    /// Stops the node: the raft loop finishes its turn, waiting requests get
    /// [`NodeError::Stopped`] or an unknown outcome, the transport stops.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        if let Some(watchdog) = inner
            .watchdog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            watchdog.abort();
        }
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
        inner.reads.close().await;
        tracing::info!(raft_id = inner.raft_id, "node stopped");
    }
}

impl Inner {
    fn check_running(&self) -> Result<()> {
        match self.shared.stop() {
            Some(_) => Err(self.stopped()),
            None => Ok(()),
        }
    }

    fn submit(&self, request: Request) -> Result<()> {
        self.requests.try_send(request).map_err(|e| match e {
            TrySendError::Full(_) => NodeError::Busy("raft queue is full"),
            TrySendError::Disconnected(_) => self.stopped(),
        })
    }

    fn stopped(&self) -> NodeError {
        match self.shared.stop() {
            Some(Stop::Failed(failure)) => NodeError::Fatal(failure),
            Some(Stop::Removed) => NodeError::Removed,
            None => NodeError::Stopped,
        }
    }

    /// Proposes on this node, which believes it is the leader.
    pub(crate) async fn propose(
        &self,
        write: &mut pb::WriteRequest,
        deadline: Instant,
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
        })?;
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, outcome).await {
            Ok(Ok(Ok(Applied { index, results }))) => Ok(WriteOutcome {
                results,
                raft_index: index,
                applied_here: true,
            }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(self.stopped()),
            Err(_) => Err(NodeError::UnknownOutcome(format!(
                "not applied within {} ms",
                self.config.limits.write_timeout_ms
            ))),
        }
    }

    async fn forward_write(
        &self,
        addr: &str,
        leader_id: u64,
        write: &pb::WriteRequest,
    ) -> Result<WriteOutcome> {
        let request = pb::ForwardRequest {
            request: Some(write.clone()),
            admin: None,
        };
        match send_to_leader(&self.transport, addr, leader_id, request).await? {
            pb::forward_response::Outcome::Response(r) => Ok(WriteOutcome {
                results: r.results.into_iter().map(Into::into).collect(),
                raft_index: r.raft_index,
                applied_here: false,
            }),
            _ => Err(NodeError::UnknownOutcome(
                "unexpected answer from the leader".into(),
            )),
        }
    }

    /// Carries out an administrative request on the leader, wherever it is; returns
    /// the index of the entry that carried it.
    async fn admin(&self, kind: pb::admin_request::Kind) -> Result<u64> {
        let deadline = Instant::now() + Duration::from_millis(self.config.limits.write_timeout_ms);
        loop {
            self.check_running()?;
            let request = pb::AdminRequest {
                kind: Some(kind.clone()),
            };
            let status = self.shared.status();
            let attempt = if status.role == Role::Leader {
                self.admin_local(request).await.map(|o| o.index)
            } else if let Some(leader) = status.leader() {
                let forward = pb::ForwardRequest {
                    request: None,
                    admin: Some(request),
                };
                match send_to_leader(&self.transport, &leader.raft_addr, leader.raft_id, forward)
                    .await
                {
                    Ok(pb::forward_response::Outcome::Admin(a)) => Ok(a.raft_index),
                    Ok(_) => Err(NodeError::UnknownOutcome(
                        "unexpected answer from the leader".into(),
                    )),
                    Err(e) => Err(e),
                }
            } else {
                Err(NodeError::NoLeader)
            };
            match attempt {
                // Nothing was changed: safe to try again while time is left.
                Err(NodeError::NoLeader | NodeError::Busy(_) | NodeError::LeaderChanging)
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(self.config.raft.tick_ms)).await;
                }
                other => return other,
            }
        }
    }

    /// Hands an administrative request to this node's raft loop (it is the leader).
    pub(crate) async fn admin_local(&self, request: pb::AdminRequest) -> Result<AdminOutcome> {
        let (reply, outcome) = oneshot::channel();
        self.submit(Request::Admin { request, reply })?;
        let wait = Duration::from_millis(self.config.limits.write_timeout_ms);
        match tokio::time::timeout(wait, outcome).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.stopped()),
            Err(_) => Err(NodeError::UnknownOutcome(format!(
                "not applied within {} ms",
                self.config.limits.write_timeout_ms
            ))),
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

    pub(crate) async fn join_request(&self, request: pb::JoinRequest) -> Result<pb::JoinResponse> {
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

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.requests.try_send(Request::Shutdown);
    }
}

/// A service's address must be `host:port`, its host the service's FQDN (or an IP
/// address given as both).
fn check_service_address(fqdn: &str, raft_addr: &str) -> Result<()> {
    let invalid = |m: String| NodeError::Invalid(m);
    if fqdn.is_empty()
        || fqdn.len() > 253
        || fqdn
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
    {
        return Err(invalid(format!("{fqdn:?} is not a host name")));
    }
    let Some((host, port)) = raft_addr.rsplit_once(':') else {
        return Err(invalid(format!("raft address {raft_addr:?} has no port")));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => {
            return Err(invalid(format!(
                "raft address {raft_addr:?}: port must be 1-65535"
            )));
        }
    }
    if host != fqdn {
        return Err(invalid(format!(
            "raft address {raft_addr:?} does not name host {fqdn}"
        )));
    }
    Ok(())
}

/// A removed node may never hear of its removal through raft: the leader stops
/// replicating to it as soon as the change is applied, and a learner sends nothing on
/// its own. So a node that has not heard from a leader for a while asks a member to
/// admit it again; "removed" as the answer stops it.
async fn removal_watchdog(node: std::sync::Weak<Inner>) {
    let mut next_member = 0usize;
    loop {
        let Some(inner) = node.upgrade() else { return };
        let timings = &inner.config.raft;
        let election = Duration::from_millis(timings.tick_ms * timings.election_ticks as u64);
        drop(inner);
        tokio::time::sleep(election).await;
        let Some(inner) = node.upgrade() else { return };
        if inner.shared.stop().is_some() {
            return;
        }
        let silent_for = inner
            .shared
            .leader_contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed();
        let status = inner.shared.status();
        if status.role == Role::Leader || silent_for < election * 3 {
            continue;
        }
        let others: Vec<String> = status
            .members
            .iter()
            .filter(|m| m.raft_id != inner.raft_id)
            .map(|m| m.raft_addr.clone())
            .collect();
        let Some(addr) = others.get(next_member % others.len().max(1)).cloned() else {
            continue;
        };
        next_member += 1;
        let request = pb::JoinRequest {
            service_id: inner.service_id.clone(),
            raft_addr: inner.raft_addr.clone(),
            http_addr: inner.config.http_addr.clone().unwrap_or_default(),
        };
        if let Err(e) = inner.transport.join(&addr, request).await
            && e.says_removed()
        {
            tracing::warn!(via = %addr, "the cluster says this service was removed");
            let _ = inner.submit(Request::Removed);
            return;
        }
    }
}
