//! [`Node`]: the public handle of a running node.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::{ContentHash, Rows, Service, ServiceState, Statement, WriteRequest};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::NodeConfig;
use crate::consistency::Consistency;
use crate::error::{Fatal, NodeError, Result};
use crate::forward::{LeaderAnswer, LeaderRequest};
use crate::handle::Handle;
use crate::membership::check_service_address;
use crate::peer::{PeerHandler, serve_peers};
use crate::raft_loop::{Request, Stop};
use crate::startup::{Launched, launch};
use crate::status::{Leadership, Role, Status};
use crate::watchdog::removal_watchdog;
use crate::write::{self, WriteOutcome};

/// A running sqlraft node. Cloning gives another handle to the same node.
#[derive(Clone)]
pub struct Node {
    handle: Arc<Handle>,
    tasks: Arc<Tasks>,
}

/// Backups and content hashes that may run at once: each reads the whole database
/// (and a backup writes a copy of it).
pub const MAX_WHOLE_DATABASE_READS: usize = 2;

/// What [`Node::shutdown`] stops, besides the raft loop, and what bounds the node's
/// own heavy work.
struct Tasks {
    whole_database_reads: tokio::sync::Semaphore,
    /// One restore at a time.
    restoring: tokio::sync::Mutex<()>,
    subscriptions: Subscriptions,
    server: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
    watchdog: Mutex<Option<JoinHandle<()>>>,
    raft_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What subscribers get: copies of the raft loop's channels, each fed by a relay task
/// started at its first subscription (a node nobody watches pays nothing), so that a
/// subscriber holding a borrowed value stalls its relay at worst, never the raft loop.
/// Each closes when the loop's channel closes (the node stopped).
struct Subscriptions {
    /// Relays run here, whichever thread subscribes.
    runtime: tokio::runtime::Handle,
    status: OnceLock<watch::Receiver<Status>>,
    applied: OnceLock<watch::Receiver<u64>>,
    leadership: OnceLock<watch::Receiver<Leadership>>,
}

impl Subscriptions {
    fn subscribe<T: Clone + PartialEq + Send + Sync + 'static>(
        &self,
        relayed: &OnceLock<watch::Receiver<T>>,
        source: &watch::Receiver<T>,
    ) -> watch::Receiver<T> {
        relayed
            .get_or_init(|| {
                let mut source = source.clone();
                let (tx, rx) = watch::channel(source.borrow_and_update().clone());
                self.runtime.spawn(async move {
                    while source.changed().await.is_ok() {
                        let value = source.borrow_and_update().clone();
                        tx.send_if_modified(|seen| {
                            let changed = *seen != value;
                            if changed {
                                *seen = value;
                            }
                            changed
                        });
                    }
                });
                rx
            })
            .clone()
    }
}

impl Node {
    /// Starts a node from `config.dir`: restarts it when the directory holds one,
    /// otherwise joins the cluster at `config.join`, or bootstraps a one-node cluster.
    pub async fn start(config: NodeConfig) -> Result<Node> {
        let Launched {
            handle,
            listener,
            raft_thread,
        } = launch(config).await?;
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_peers(
            listener,
            PeerHandler(Arc::downgrade(&handle)),
            handle.transport.clone(),
            stopped,
        ));
        let watchdog = tokio::spawn(removal_watchdog(Arc::downgrade(&handle)));
        tracing::info!(raft_id = handle.raft_id, service_id = %handle.service_id,
            raft_addr = %handle.raft_addr, "node started");
        let subscriptions = Subscriptions {
            runtime: tokio::runtime::Handle::current(),
            status: OnceLock::new(),
            applied: OnceLock::new(),
            leadership: OnceLock::new(),
        };
        Ok(Node {
            handle,
            tasks: Arc::new(Tasks {
                whole_database_reads: tokio::sync::Semaphore::new(MAX_WHOLE_DATABASE_READS),
                restoring: tokio::sync::Mutex::new(()),
                subscriptions,
                server: Mutex::new(Some((stop_server, server))),
                watchdog: Mutex::new(Some(watchdog)),
                raft_thread: Mutex::new(Some(raft_thread)),
            }),
        })
    }

    /// This node's raft id.
    pub fn raft_id(&self) -> u64 {
        self.handle.raft_id
    }

    /// This node's service id.
    pub fn service_id(&self) -> &str {
        &self.handle.service_id
    }

    /// The address peers reach this node's raft transport at.
    pub fn raft_addr(&self) -> &str {
        &self.handle.raft_addr
    }

    /// The configuration the node was started with.
    pub fn config(&self) -> &NodeConfig {
        &self.handle.config
    }

    /// A snapshot of the node's state.
    pub fn status(&self) -> Status {
        self.handle.shared.status()
    }

    /// Status changes as they happen: the receiver sees each new [`Status`] (role,
    /// leader, term, commit and applied index, members); a slow receiver skips to the
    /// latest. It closes when the node stops.
    ///
    /// Like every `tokio::sync::watch` receiver, do not hold what `borrow` returns
    /// across an `.await`: copy the value out. The node's own raft loop never waits for
    /// a subscriber (subscriptions are fed by a relay task).
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        let subscriptions = &self.tasks.subscriptions;
        subscriptions.subscribe(&subscriptions.status, &self.handle.shared.status)
    }

    /// The applied index as it grows; closes when the node stops. Wait for one of this
    /// node's writes with `watch_applied().wait_for(|&a| a >= index)`.
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        let subscriptions = &self.tasks.subscriptions;
        subscriptions.subscribe(&subscriptions.applied, &self.handle.applied)
    }

    /// Leader changes (and elections, as `leader_id: None`), without the rest of the
    /// status. Closes when the node stops.
    pub fn watch_leader(&self) -> watch::Receiver<Leadership> {
        let subscriptions = &self.tasks.subscriptions;
        subscriptions.subscribe(&subscriptions.leadership, &self.handle.shared.leadership)
    }

    /// The error that stopped the node, if one did.
    pub fn failure(&self) -> Option<Arc<Fatal>> {
        match self.handle.shared.stop() {
            Some(Stop::Failed(fatal)) => Some(fatal),
            _ => None,
        }
    }

    /// True once this node learned that it was removed from the cluster; it has
    /// stopped taking part and should be shut down.
    pub fn is_removed(&self) -> bool {
        matches!(self.handle.shared.stop(), Some(Stop::Removed))
    }

    /// Read-only sqlx pool on this node's SQLite file, for an embedding service's own
    /// typed queries. What it sees is this node's applied state: call
    /// [`Node::barrier`] first for anything fresher than [`Consistency::Local`].
    pub fn read_pool(&self) -> &sqlx::SqlitePool {
        self.handle.reads.pool()
    }

    /// Runs a write request on the leader (forwarded there from a follower) and
    /// returns once it is applied on the leader. On a follower it also waits, up to
    /// the read timeout, until the write is applied here (see
    /// [`WriteOutcome::applied_here`]).
    pub async fn execute(&self, request: WriteRequest) -> Result<WriteOutcome> {
        let wire = write::checked(request, &self.handle.config.limits)?;
        let mut outcome = match self.handle.on_leader(LeaderRequest::Write(wire)).await? {
            LeaderAnswer::Write(outcome) => outcome,
            LeaderAnswer::Admin(_) => {
                return Err(NodeError::UnknownOutcome(
                    "the leader answered a write as administration".into(),
                ));
            }
        };
        if !outcome.applied_here {
            // Read-your-writes: what this node acknowledges, it shows to every later
            // read here, at every level. Bounded: after the read timeout the answer
            // goes out anyway, saying so.
            outcome.applied_here = self.handle.wait_applied(outcome.raft_index).await.is_ok();
        }
        Ok(outcome)
    }

    /// Waits until a read on this node would be as fresh as `consistency` asks, and
    /// returns the index this node has applied by then. Then read through
    /// [`Node::read_pool`] with your own typed queries.
    pub async fn barrier(&self, consistency: Consistency) -> Result<u64> {
        let handle = &self.handle;
        handle.check_running()?;
        let index = match consistency {
            Consistency::Local { min_index: None } => 0,
            Consistency::Local {
                min_index: Some(index),
            } => index,
            Consistency::Linearizable => handle.read_index().await?,
            Consistency::Strong => {
                match self.execute(WriteRequest::transaction(Vec::new())).await {
                    Ok(outcome) => outcome.raft_index,
                    // A read applies nothing: an empty entry whose fate is unknown, or that a
                    // leadership change dropped, only means the read could not reach its
                    // level (safe to retry). Said as it is: "timed out" was said of a
                    // barrier dropped at once (found by a review).
                    Err(NodeError::UnknownOutcome(why)) => {
                        return Err(NodeError::Unavailable(format!(
                            "the strong read could not confirm it is up to date ({why}); \
                             retry"
                        )));
                    }
                    Err(NodeError::Dropped) => {
                        return Err(NodeError::Unavailable(
                            "a leadership change dropped the strong read's barrier entry; retry"
                                .into(),
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        handle.wait_applied(index).await?;
        Ok((*handle.applied.borrow()).max(index))
    }

    /// The leader's commit index now, confirmed by a quorum (raft ReadIndex): what a
    /// linearizable read on this node waits for. A node has caught up when it has
    /// applied this far; the commit index a follower hears in heartbeats is capped at
    /// what the leader knows it holds, so it cannot tell that alone.
    pub async fn read_index(&self) -> Result<u64> {
        self.handle.check_running()?;
        self.handle.read_index().await
    }

    /// Runs one read statement at the given consistency, on this node.
    pub async fn query(&self, statement: &Statement, consistency: Consistency) -> Result<Rows> {
        let started = Instant::now();
        self.barrier(consistency).await?;
        let rows = self.handle.reads.query(statement).await?;
        self.handle
            .metrics
            .read_at(&consistency)
            .observe(started.elapsed().as_secs_f64());
        Ok(rows)
    }

    /// This node's metrics (`/metrics` of `sqlraft-core` encodes them); an embedding
    /// service may register its own metrics in [`crate::Metrics::registry`].
    pub fn metrics(&self) -> &crate::Metrics {
        &self.handle.metrics
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
        let index = self.admin(request).await?;
        self.applied_here_after_commit(index).await?;
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
        let index = self.admin(request).await?;
        let deadline = Instant::now() + self.handle.write_timeout();
        let pause = Duration::from_millis(self.handle.config.raft.tick_ms);
        loop {
            if service_id == self.handle.service_id {
                // This node is the one leaving: it may never apply the rest.
                if self.is_removed() || Instant::now() >= deadline {
                    return Ok(index);
                }
                tokio::time::sleep(pause).await;
                continue;
            }
            self.applied_here_after_commit(index).await?;
            let removed = self
                .services()
                .await?
                .iter()
                .any(|s| s.id == service_id && s.state == ServiceState::Removed);
            if removed {
                return Ok(index);
            }
            if Instant::now() >= deadline {
                return Err(NodeError::UnknownOutcome(format!(
                    "removal of {service_id} started at index {index} but did not finish within {} ms",
                    self.handle.config.limits.write_timeout_ms
                )));
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Waits for this node to apply `index`, an entry the leader has applied already: a
    /// timeout here must not read as "nothing was applied".
    async fn applied_here_after_commit(&self, index: u64) -> Result<()> {
        let wait = Duration::from_millis(self.handle.config.limits.read_timeout_ms);
        self.applied_here_within(index, wait).await
    }

    /// Like [`Node::applied_here_after_commit`], waiting at most `wait`.
    async fn applied_here_within(&self, index: u64, wait: Duration) -> Result<()> {
        match self.handle.wait_applied_within(index, wait).await {
            Err(NodeError::Timeout(ms)) => Err(NodeError::UnknownOutcome(format!(
                "applied by the leader at index {index}, but not on this node within {ms} ms"
            ))),
            other => other,
        }
    }

    /// On the leader: hands leadership to the reachable voter that holds the most of
    /// the log and waits up to `wait` for it to lead; what a graceful stop does first,
    /// so a restart (an upgrade) costs the cluster no election timeout. `Ok(None)` when
    /// this node does not lead or has no voter to hand over to; `Ok(Some(raft id))` of
    /// the new leader; an error when the hand-over did not happen within `wait` (this
    /// node may still lead).
    pub async fn hand_over_leadership(&self, wait: Duration) -> Result<Option<u64>> {
        let me = self.handle.raft_id;
        let status = self.status();
        if status.role != Role::Leader || status.voters.len() < 2 {
            return Ok(None);
        }
        let request = pb::AdminRequest {
            kind: Some(pb::admin_request::Kind::TransferLeader(0)),
        };
        match self.handle.admin_local(request).await {
            Ok(_) => {}
            Err(NodeError::Invalid(reason)) => {
                tracing::info!(%reason, "leadership not handed over");
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let status = self.status();
            if status.leader_id != 0 && status.leader_id != me {
                return Ok(Some(status.leader_id));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::Timeout(wait.as_millis() as u64));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn admin(&self, kind: pb::admin_request::Kind) -> Result<u64> {
        match self.handle.on_leader(LeaderRequest::Admin(kind)).await? {
            LeaderAnswer::Admin(index) => Ok(index),
            LeaderAnswer::Write(_) => Err(NodeError::UnknownOutcome(
                "the leader answered administration as a write".into(),
            )),
        }
    }

    /// The services registry as this node has applied it.
    pub async fn services(&self) -> Result<Vec<Service>> {
        self.handle.services().await
    }

    /// A hash of this node's replicated content (user schema and rows) with the index
    /// it was taken at: nodes at the same index must agree (compare them as etcd's
    /// `hashkv` does).
    pub async fn content_hash(&self) -> Result<ContentHash> {
        let path = self.state_db();
        self.whole_database_read("content hash", move || sqlraft_sqlite::content_hash(&path))
            .await
    }

    /// Writes a consistent copy of this node's SQLite database to `dst` (which must not
    /// exist) and returns the raft index it holds: content and index are read in one
    /// transaction. The copy is a plain SQLite file. Call [`Node::barrier`] first for
    /// a copy that holds every acknowledged write.
    ///
    /// It works on a node that has stopped (failed or removed) too: that is when an
    /// operator wants a copy most.
    pub async fn backup(&self, dst: &Path) -> Result<u64> {
        let src = self.state_db();
        let dst = dst.to_path_buf();
        self.whole_database_read("backup", move || sqlraft_sqlite::backup(&src, &dst))
            .await
    }

    /// Takes a snapshot of this node's state database now and compacts the log behind
    /// it (keeping the trailing window, [`crate::SnapshotOptions`]); returns once it is
    /// taken. A snapshot already being taken is waited for and the next one taken.
    pub async fn snapshot(&self) -> Result<crate::SnapshotInfo> {
        self.snapshot_keeping(None).await
    }

    /// Like [`Node::snapshot`], keeping only `trailing` entries behind the snapshot
    /// this time (the configured window when `None`; it is never widened). Followers
    /// further behind are sent the snapshot.
    pub async fn snapshot_keeping(&self, trailing: Option<u64>) -> Result<crate::SnapshotInfo> {
        let handle = &self.handle;
        handle.check_running()?;
        let (reply, taken) = oneshot::channel();
        handle.submit(Request::Snapshot { reply, trailing })?;
        match tokio::time::timeout(SNAPSHOT_WAIT, taken).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(handle.stopped()),
            Err(_) => Err(NodeError::Timeout(SNAPSHOT_WAIT.as_millis() as u64)),
        }
    }

    /// Replaces the replicated user content on every node by the SQLite database at
    /// `upload` (a backup from [`Node::backup`] or any SQLite file of the same shape).
    ///
    /// The file is checked first: a SQLite database that passes `integrity_check`, holds
    /// no `_sqlraft_*` object sqlraft does not know, is at most
    /// [`crate::Limits::max_restore_bytes`], and restores cleanly into a scratch
    /// database; otherwise [`NodeError::Invalid`] and nothing changes. Then it goes
    /// through the log in chunks staged on every node, and a final entry replaces every
    /// user table, index, view and trigger (with `sqlite_sequence` and `user_version`)
    /// in one transaction on each node. The members, the services registry and the
    /// idempotency records stay as they are on the cluster: a restore never changes
    /// membership. Returns once this node has applied the restore.
    ///
    /// A restore that fails half way (a leader change between chunks) changes nothing;
    /// its staged chunks are dropped by the next restore. One restore runs at a time
    /// per node.
    pub async fn restore(&self, upload: &Path) -> Result<crate::RestoreOutcome> {
        let Ok(_one) = self.tasks.restoring.try_lock() else {
            return Err(NodeError::Busy("a restore is already running on this node"));
        };
        self.handle.check_running()?;
        let work = self
            .handle
            .config
            .dir
            .join("db")
            .join(format!("restore-work-{}", uuid::Uuid::new_v4()));
        let outcome = self.restore_in(upload, &work).await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        outcome
    }

    /// False once the node has stopped (shut down, or failed).
    pub fn is_running(&self) -> bool {
        self.handle.check_running().is_ok()
    }

    /// True while a restore runs on this node (another one would be refused).
    pub fn is_restoring(&self) -> bool {
        self.tasks.restoring.try_lock().is_err()
    }

    async fn restore_in(&self, upload: &Path, work: &Path) -> Result<crate::RestoreOutcome> {
        let max = self.handle.config.limits.max_restore_bytes;
        let (upload, dir) = (upload.to_path_buf(), work.to_path_buf());
        let prepared = tokio::task::spawn_blocking(move || {
            sqlraft_sqlite::restore::prepare_restore(&upload, &dir, max)
        })
        .await
        .map_err(|e| NodeError::Unavailable(format!("restore check failed: {e}")))?
        .map_err(|e| match e {
            sqlraft_sqlite::SqliteError::Restore(m) => NodeError::Invalid(m),
            other => NodeError::Unavailable(other.to_string()),
        })?;
        let id = uuid::Uuid::new_v4().to_string();
        let mut file = tokio::fs::File::open(&prepared.path)
            .await
            .map_err(|e| NodeError::Unavailable(format!("cannot read the checked copy: {e}")))?;
        let chunk_bytes = RESTORE_CHUNK_BYTES.min(self.handle.config.limits.max_request_bytes / 2);
        let mut seq = 0u32;
        let mut sent = 0u64;
        while sent < prepared.size || seq == 0 {
            use tokio::io::AsyncReadExt;
            let want = chunk_bytes.min((prepared.size - sent) as usize);
            let mut data = vec![0u8; want];
            file.read_exact(&mut data).await.map_err(|e| {
                NodeError::Unavailable(format!("cannot read the checked copy: {e}"))
            })?;
            sent += want as u64;
            let chunk = pb::RestoreChunk {
                id: id.clone(),
                seq,
                data,
            };
            self.admin(pb::admin_request::Kind::RestoreChunk(chunk))
                .await?;
            seq += 1;
        }
        tracing::info!(
            id,
            chunks = seq,
            bytes = prepared.size,
            "restore staged; committing"
        );
        let commit = pb::admin_request::Kind::RestoreCommit(pb::RestoreCommit {
            id,
            chunks: seq,
            size: prepared.size,
            sha256: prepared.sha256.to_vec(),
        });
        // Applying it copies the whole file, here as on the leader.
        let wait = crate::handle::admin_wait(self.handle.write_timeout(), Some(&commit));
        let index = self.admin(commit).await?;
        self.applied_here_within(index, wait).await?;
        Ok(crate::RestoreOutcome {
            raft_index: index,
            bytes: prepared.size,
            tables: prepared.tables,
        })
    }

    /// Snapshot transfers in progress on this node, to followers and from the leader.
    pub fn snapshot_transfers(&self) -> Vec<crate::SnapshotTransfer> {
        self.handle
            .transport
            .snapshot_transfers()
            .into_iter()
            .map(Into::into)
            .collect()
    }

    /// Runs a read of the whole database on a blocking thread, at most
    /// [`MAX_WHOLE_DATABASE_READS`] at a time (more are `Busy`). Its failures are this
    /// request's, never the node's: they are not fatal.
    async fn whole_database_read<T: Send + 'static>(
        &self,
        what: &'static str,
        read: impl FnOnce() -> sqlraft_sqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let Ok(_permit) = self.tasks.whole_database_reads.try_acquire() else {
            return Err(NodeError::Busy(
                "too many backups or content hashes at once",
            ));
        };
        match tokio::task::spawn_blocking(read).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(NodeError::Unavailable(format!("{what} failed: {e}"))),
            Err(e) => Err(NodeError::Unavailable(format!("{what} failed: {e}"))),
        }
    }

    fn state_db(&self) -> std::path::PathBuf {
        self.handle.config.dir.join("db").join("state.db")
    }

    /// Waits until this node has applied `index` (bounded by the read timeout).
    pub async fn wait_applied(&self, index: u64) -> Result<()> {
        self.handle.wait_applied(index).await
    }

    /// Stops the node: the raft loop finishes its turn, waiting requests get
    /// [`NodeError::Stopped`] or an unknown outcome, the transport stops.
    pub async fn shutdown(&self) {
        let tasks = &self.tasks;
        if let Some(watchdog) = take(&tasks.watchdog) {
            watchdog.abort();
        }
        let requests = self.handle.requests.clone();
        let _ = requests.try_send(Request::Shutdown);
        if let Some(thread) = take(&tasks.raft_thread) {
            // The queue may be full; keep asking until the loop takes the request.
            let _ = tokio::task::spawn_blocking(move || {
                let _ = requests.send(Request::Shutdown);
                let _ = thread.join();
            })
            .await;
        }
        if let Some((stop, mut task)) = take(&tasks.server) {
            let _ = stop.send(());
            // A graceful stop waits for every peer connection to end, and a peer that
            // cannot be reached (a partition, a peer stopping at the same moment) never
            // answers: the drain is bounded, then the connections are dropped.
            if tokio::time::timeout(PEER_DRAIN, &mut task).await.is_err() {
                tracing::warn!(
                    raft_id = self.handle.raft_id,
                    "peer connections still open after {PEER_DRAIN:?}; closing them"
                );
                task.abort();
                let _ = task.await;
            }
        }
        self.handle.reads.close().await;
        tracing::info!(raft_id = self.handle.raft_id, "node stopped");
    }

    /// The size of `request` in the log, or why this node would refuse it (too many
    /// statements, too many bytes, a bad request id): what [`Node::execute`] checks
    /// before anything is proposed.
    pub fn write_size(&self, request: &WriteRequest) -> Result<usize> {
        use prost::Message as _;
        write::checked(request.clone(), &self.config().limits).map(|wire| wire.encoded_len())
    }

    /// What the member at raft address `raft_addr` says of itself, asked over the raft
    /// transport (mutual TLS when the cluster has it) within `timeout`.
    pub async fn member_status(
        &self,
        raft_addr: &str,
        timeout: std::time::Duration,
    ) -> Result<crate::MemberReport> {
        let answer = self
            .handle
            .transport
            .node_status(raft_addr, timeout)
            .await
            .map_err(|e| NodeError::Unavailable(e.to_string()))?;
        Ok(crate::MemberReport {
            role: answer.role,
            term: answer.term,
            applied_index: answer.applied_index,
            version: answer.version,
        })
    }

    /// The transport, for the test harness's per-link faults.
    #[cfg(feature = "testing")]
    pub fn transport(&self) -> &sqlraft_transport::Transport {
        &self.handle.transport
    }
}

/// Bytes of a backup per log entry of a restore.
const RESTORE_CHUNK_BYTES: usize = 4 << 20;

/// How long [`Node::snapshot`] waits for the snapshot to be taken.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(600);

/// How long a stopping node waits for its peers' connections to end.
const PEER_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}
