//! The raft loop: one thread that owns the `RawNode`, the log and the state machine.
//!
//! Each turn: take requests (raft messages, proposals, read-index requests, joins,
//! administration) from a bounded queue, tick on time, then handle one `Ready`:
//!
//! 1. send the messages that need nothing persisted (a leader's appends go out before
//!    its own fsync);
//! 2. apply committed entries (raft-rs hands out only entries already persisted here),
//!    all of them in one SQLite transaction together with `applied_index`;
//! 3. write the new entries and hard state with one fsync (a hard state whose only
//!    change is the commit index is noted, not written: raft's `must_sync` rule);
//! 4. only then send the messages that depend on them (votes, append responses);
//! 5. advance, and do the same for the light ready.
//!
//! Anything that makes the log or the state database untrustworthy stops the loop; the
//! error is published and every caller gets it.

mod admin;
mod apply;
mod peers;
mod publish;
mod snapshot;
mod validate;
mod waiters;

pub(crate) use snapshot::{SnapshotInfo, Snapshots, delete_older_snapshots, raft_snapshot};

pub(crate) use publish::Outbox;
use waiters::{EntryOutcome, Pending, Waiters};

pub(crate) use admin::now_unix_ms;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use raft::eraftpb::{Message, MessageType};
use raft::{RawNode, StateRole};
use sqlraft_log::LogStore;
use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::{Member, Service, StateMachine, StatementResult};
use sqlraft_transport::{PeerEvent, Transport};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{Admission, Limits, RaftTimings};
use crate::error::{Fatal, NodeError, Result};
use crate::status::{Leadership, Status};

/// Forwarded writes whose entries are watched for their commit at most (each one
/// the log holds uncommitted; beyond, a forwarding follower waits for the commit
/// index like any other, at most [`RaftTimings::commit_share_ms`] longer).
const MAX_FORWARDED_TRACKED: usize = 4096;

/// A request to the raft loop.
pub(crate) enum Request {
    Raft {
        messages: Vec<Message>,
        /// The sender's member record, as it named itself.
        sender: Option<pb::Member>,
        /// The service id the sender's TLS certificate names (`None` without TLS):
        /// every message must come from that service's raft id.
        caller: Option<Arc<str>>,
        /// A snapshot message whose file was received and checked.
        with_snapshot_file: bool,
    },
    /// Take a snapshot now, keeping `trailing` entries behind it (the configured
    /// window when `None`).
    Snapshot {
        reply: oneshot::Sender<Result<SnapshotInfo>>,
        trailing: Option<u64>,
    },
    Propose {
        command: Vec<u8>,
        reply: oneshot::Sender<Result<Applied>>,
        /// When it was handed to the loop.
        sent: Instant,
        /// A follower forwarded it, and answers once it applied it itself: its commit
        /// index goes to the followers at once (see [`RaftLoop::share_commit`]).
        forwarded: bool,
    },
    ReadIndex {
        reply: oneshot::Sender<Result<u64>>,
    },
    Join {
        request: pb::JoinRequest,
        reply: oneshot::Sender<Result<pb::JoinResponse>>,
    },
    Admin {
        request: pb::AdminRequest,
        reply: oneshot::Sender<Result<AdminOutcome>>,
    },
    Services {
        reply: oneshot::Sender<Result<Vec<Service>>>,
    },
    /// A member said this node's service was removed.
    Removed,
    /// A member this node knows said who a raft id it did not know is.
    Identified {
        member: pb::Member,
    },
    Shutdown,
}

impl Request {
    /// Bytes of log entries this request may add to the next log write.
    fn entry_bytes(&self) -> usize {
        match self {
            Request::Raft { messages, .. } => messages
                .iter()
                .flat_map(|m| m.entries.iter())
                .map(|e| e.data.len() + e.context.len())
                .sum(),
            Request::Propose { command, .. } => command.len(),
            _ => 0,
        }
    }
}

/// The outcome of an applied write.
#[derive(Debug)]
pub(crate) struct Applied {
    pub index: u64,
    pub results: Vec<StatementResult>,
    /// Seconds each statement took on this node.
    pub seconds: Vec<f64>,
    /// When the raft loop answered, for the `reply` stage of the write metrics.
    pub answered: Instant,
}

/// The outcome of an applied administrative change.
#[derive(Debug)]
pub(crate) struct AdminOutcome {
    pub index: u64,
}

/// Why the loop stopped on its own.
#[derive(Debug, Clone)]
pub(crate) enum Stop {
    /// This node was removed from the cluster.
    Removed,
    /// A fatal error.
    Failed(Arc<Fatal>),
}

/// What the loop publishes for everyone else.
pub(crate) struct Shared {
    /// The latest status the loop published; the channel closes when the loop ends.
    pub status: watch::Receiver<Status>,
    /// Who leads, published on every change of leader or term.
    pub leadership: watch::Receiver<Leadership>,
    pub stop: Mutex<Option<Stop>>,
    /// Raft ids removed from the cluster: their messages are refused, which tells them.
    pub removed: RwLock<HashSet<u64>>,
    /// The service id of each raft id this node trusts: members by the applied state,
    /// and members it learned from the log tail, a join answer or the registry. With
    /// mutual TLS, a peer speaks only for the raft ids of the service its certificate
    /// names.
    pub identities: RwLock<std::collections::HashMap<u64, String>>,
    /// When a message from the leader last arrived (or this node last led).
    pub leader_contact: Mutex<Instant>,
}

impl Shared {
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    pub fn stop(&self) -> Option<Stop> {
        self.stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// True when service `service_id` is a member, by the applied state.
    pub fn is_member(&self, service_id: &str) -> bool {
        self.status
            .borrow()
            .members
            .iter()
            .any(|m| m.service_id == service_id)
    }

    /// True when `raft_id` is the member of service `service_id` (see
    /// [`Shared::identities`]).
    pub fn is_service(&self, raft_id: u64, service_id: &str) -> bool {
        self.identities
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&raft_id)
            .is_some_and(|s| s == service_id)
    }

    pub fn is_removed(&self, raft_id: u64) -> bool {
        self.removed
            .read()
            .map(|r| r.contains(&raft_id))
            .unwrap_or(false)
    }
}

/// Something waiting for the entry proposed at an index in a term.
/// Everything the loop is built from.
pub(crate) struct LoopParts {
    pub raw: RawNode<LogStore>,
    pub sm: StateMachine,
    pub transport: Transport,
    pub requests: Receiver<Request>,
    pub peer_events: mpsc::Receiver<PeerEvent>,
    pub shared: Arc<Shared>,
    /// Where the status, the leader and the applied index are published; dropped with
    /// the loop, which closes every subscription.
    pub outbox: Outbox,
    pub service_id: String,
    pub members: BTreeMap<u64, Member>,
    /// Members not (yet) in the applied state, whose addresses came from the log tail,
    /// the join answer or their own messages.
    pub known: BTreeMap<u64, Member>,
    /// Where `raft/peers` is kept.
    pub raft_dir: std::path::PathBuf,
    /// The loop's own queue, for answers that arrive later (who a raft id is).
    pub to_self: std::sync::mpsc::SyncSender<Request>,
    pub timings: RaftTimings,
    pub limits: Limits,
    pub admission: Admission,
    pub snapshots: Snapshots,
    pub metrics: crate::Metrics,
    #[cfg(feature = "testing")]
    pub crash_at: Option<&'static str>,
}

pub(crate) struct RaftLoop {
    raw: RawNode<LogStore>,
    sm: StateMachine,
    transport: Transport,
    requests: Receiver<Request>,
    peer_events: mpsc::Receiver<PeerEvent>,
    shared: Arc<Shared>,
    outbox: Outbox,
    service_id: String,
    members: BTreeMap<u64, Member>,
    known: BTreeMap<u64, Member>,
    raft_dir: std::path::PathBuf,
    to_self: std::sync::mpsc::SyncSender<Request>,
    /// When each unknown raft id was last asked about (see `peers::identify_later`).
    asked: std::collections::HashMap<u64, Instant>,
    /// When each raft id the registry did not vouch for was last checked (see
    /// `peers::speaks_for`).
    strangers: std::collections::HashMap<u64, Instant>,
    timings: RaftTimings,
    limits: Limits,
    admission: Admission,
    waiters: Waiters,
    /// Set when this node applied its own removal; the loop ends after the turn.
    removed: bool,
    /// Highest commit index carried by a message from a leader.
    leader_commit: u64,
    snapshots: Snapshots,
    metrics: crate::Metrics,
    /// The leader last published, to count changes.
    known_leader: u64,
    /// Term and leader when the read rounds in flight were asked: a round asked of
    /// another leader or in another term is not answered (raft-rs forgets pending
    /// read-index requests when the term changes), so it is asked again at once.
    read_epoch: (u64, u64),
    /// Peers whose replication lag is in the metrics (this node leads).
    lag_peers: HashSet<u64>,
    /// The highest commit index sent to each peer (in an append or a heartbeat).
    commit_sent: HashMap<u64, u64>,
    /// When the commit index a follower lacks is sent on its own, unless an append
    /// takes it first (see [`RaftLoop::share_commit`]).
    commit_share_due: Option<Instant>,
    /// Entries of writes forwarded by followers, not committed yet, in log order.
    forwarded: VecDeque<u64>,
    /// Writes taken this turn, proposed together when the turn has taken its requests
    /// (see [`RaftLoop::propose_taken`]).
    taken: Vec<Taken>,
    #[cfg(feature = "testing")]
    crash_at: Option<&'static str>,
}

/// A write taken from the queue, not proposed yet.
struct Taken {
    command: Vec<u8>,
    reply: oneshot::Sender<Result<Applied>>,
    forwarded: bool,
}

impl RaftLoop {
    pub fn new(parts: LoopParts) -> Self {
        RaftLoop {
            raw: parts.raw,
            sm: parts.sm,
            transport: parts.transport,
            requests: parts.requests,
            peer_events: parts.peer_events,
            shared: parts.shared,
            outbox: parts.outbox,
            service_id: parts.service_id,
            members: parts.members,
            known: parts.known,
            raft_dir: parts.raft_dir,
            to_self: parts.to_self,
            asked: std::collections::HashMap::new(),
            strangers: std::collections::HashMap::new(),
            timings: parts.timings,
            limits: parts.limits,
            admission: parts.admission,
            waiters: Waiters::new(parts.metrics.clone()),
            removed: false,
            leader_commit: 0,
            snapshots: parts.snapshots,
            metrics: parts.metrics,
            known_leader: raft::INVALID_ID,
            read_epoch: (0, raft::INVALID_ID),
            lag_peers: HashSet::new(),
            commit_sent: HashMap::new(),
            commit_share_due: None,
            forwarded: VecDeque::new(),
            taken: Vec::new(),
            #[cfg(feature = "testing")]
            crash_at: parts.crash_at,
        }
        .published()
    }

    /// Publishes the identities the loop starts with.
    fn published(self) -> Self {
        self.publish_identities();
        self
    }

    /// Runs until shutdown, removal or a fatal error.
    pub fn run(mut self) {
        let raft_id = self.raw.raft.id;
        let span = tracing::info_span!("raft_loop", node_id = raft_id);
        let _enter = span.enter();
        // raft-rs panics when its storage fails; that must stop the node visibly, not
        // leave callers waiting on a dead thread.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.turns()));
        let stop = match outcome {
            Ok(Ok(())) if self.removed => Some(Stop::Removed),
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(Stop::Failed(e.into_fatal())),
            Err(panic) => Some(Stop::Failed(Arc::new(Fatal::Panicked(panic_message(
                &panic,
            ))))),
        };
        match &stop {
            None => tracing::info!("raft loop stopped"),
            Some(Stop::Removed) => {
                tracing::warn!("this node was removed from the cluster; stopping")
            }
            Some(Stop::Failed(e)) => {
                tracing::error!(error = %e, "raft loop stopped on a fatal error")
            }
        }
        *self
            .shared
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = stop;
        self.waiters.fail_all();
    }

    fn turns(&mut self) -> Result<()> {
        let tick = Duration::from_millis(self.timings.tick_ms.max(1));
        let mut next_tick = Instant::now() + tick;
        self.publish();
        loop {
            let wake = self
                .commit_share_due
                .map_or(next_tick, |due| due.min(next_tick));
            let wait = wake.saturating_duration_since(Instant::now());
            let mut turn_bytes = 0;
            match self.requests.recv_timeout(wait) {
                Ok(Request::Shutdown) => return Ok(()),
                Ok(request) => {
                    turn_bytes += request.entry_bytes();
                    self.handle(request)?;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            // Take what else is queued, so proposals arriving together share one Ready
            // (one fsync, one apply transaction), up to a turn's bytes: everything
            // taken goes into one log write, which has a size limit.
            for _ in 0..self.limits.loop_queue_len {
                if turn_bytes >= self.limits.max_turn_bytes {
                    break;
                }
                match self.requests.try_recv() {
                    Ok(Request::Shutdown) => return Ok(()),
                    Ok(request) => {
                        turn_bytes += request.entry_bytes();
                        self.handle(request)?;
                    }
                    Err(_) => break,
                }
            }
            self.propose_taken();
            while let Ok(event) = self.peer_events.try_recv() {
                match event {
                    PeerEvent::Unreachable(peer) => {
                        self.raw.report_unreachable(peer);
                        // It may have restarted, with an older commit index.
                        self.commit_sent.remove(&peer);
                    }
                    PeerEvent::Removed { by } => {
                        tracing::warn!(by, "a member says this node was removed");
                        self.removed = true;
                    }
                    PeerEvent::SnapshotSent { to, ok } => {
                        let status = if ok {
                            raft::SnapshotStatus::Finish
                        } else {
                            raft::SnapshotStatus::Failure
                        };
                        self.raw.report_snapshot(to, status);
                    }
                }
            }
            if Instant::now() >= next_tick {
                self.raw.tick();
                next_tick += tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + tick;
                }
                self.on_tick();
            }
            self.share_forwarded_commit();
            self.ask_reads();
            self.on_ready()?;
            // A round answered in that Ready lets the reads that waited for it ask the
            // next one now, not at the next turn.
            if self.ask_reads() {
                self.on_ready()?;
            }
            if self.share_commit() {
                self.on_ready()?;
            }
            self.maybe_snapshot()?;
            self.publish();
            if self.removed {
                return Ok(());
            }
        }
    }

    /// Takes one request; an error ends the loop (the node cannot be trusted).
    fn handle(&mut self, request: Request) -> Result<()> {
        self.metrics.loop_queue.dec();
        match request {
            Request::Raft {
                messages,
                sender,
                caller,
                with_snapshot_file,
            } => {
                // One sender per batch, checked once (the registry may be asked).
                if let (Some(caller), Some(first)) = (&caller, messages.first())
                    && (messages.iter().any(|m| m.from != first.from)
                        || !self.speaks_for(caller, first.from))
                {
                    let (from, named) = (first.from, sender.as_ref());
                    // A member this node has not heard of (it joined while this node
                    // was behind) names itself: the members this node knows are asked.
                    let unknown =
                        !self.members.contains_key(&from) && !self.known.contains_key(&from);
                    let asked = unknown
                        && named.is_some_and(|s| s.raft_id == from && *s.service_id == **caller)
                        && self.identify_later(from, caller);
                    if asked || !unknown {
                        tracing::warn!(from, service = %caller,
                            "dropping raft messages whose sender is not the service its certificate names");
                    }
                    return Ok(());
                }
                if let (Some(sender), Some(first)) = (sender, messages.first()) {
                    self.learn_sender(sender, first.term);
                }
                let mut from_leader = false;
                for message in messages {
                    let receiver = validate::Receiver {
                        me: self.raw.raft.id,
                        last_index: self.raw.raft.raft_log.last_index(),
                        knows: |id| {
                            self.members.contains_key(&id) || self.transport.peer_addr(id).is_some()
                        },
                        with_snapshot_file,
                    };
                    if let Err(reason) = validate::check_peer_message(&message, &receiver) {
                        tracing::warn!(from = message.from, kind = ?message.get_msg_type(), reason,
                            "dropping a malformed raft message");
                        continue;
                    }
                    if message.from == self.raw.raft.leader_id {
                        from_leader = true;
                        self.leader_commit = self.leader_commit.max(message.commit);
                    }
                    if let Err(e) = self.raw.step(message) {
                        tracing::debug!(error = %e, "raft refused a message");
                    }
                }
                if from_leader {
                    self.note_leader_contact();
                }
            }
            Request::Identified { member } => self.identified(member),
            Request::Removed => {
                tracing::warn!("a member says this service was removed");
                self.removed = true;
            }
            Request::Propose {
                command,
                reply,
                sent,
                forwarded,
            } => {
                let queued = sent.elapsed().as_secs_f64();
                self.metrics.write_queue.observe(queued);
                self.taken.push(Taken {
                    command,
                    reply,
                    forwarded,
                });
            }
            Request::ReadIndex { reply } => self.read_index(reply),
            Request::Snapshot { reply, trailing } => self.request_snapshot(reply, trailing),
            Request::Join { request, reply } => self.join(request, reply),
            Request::Admin { request, reply } => self.admin(request, reply),
            Request::Services { reply } => match self.sm.services().map_err(NodeError::from) {
                // The database failed under the apply connection: stop, as apply would.
                Err(NodeError::Fatal(fatal)) => {
                    let _ = reply.send(Err(NodeError::Fatal(Arc::clone(&fatal))));
                    return Err(NodeError::Fatal(fatal));
                }
                other => {
                    let _ = reply.send(other);
                }
            },
            Request::Shutdown => {}
        }
        Ok(())
    }

    fn note_leader_contact(&self) {
        *self
            .shared
            .leader_contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// Why raft-rs dropped a proposal while this node leads: a leadership transfer in
    /// progress (a removal of this node hands it over), this node no longer in the
    /// configuration, or more bytes of entries not yet committed than
    /// `max_uncommitted_bytes`. Each is safe to retry: nothing was proposed.
    fn dropped(&self) -> fn() -> NodeError {
        let raft = &self.raw.raft;
        if raft.lead_transferee.is_some() {
            || NodeError::LeaderChanging
        } else if raft.prs().get(raft.id).is_none() {
            || NodeError::NoLeader
        } else {
            || NodeError::Busy("too many writes not yet committed; try again")
        }
    }

    /// Proposes `entries` (normal ones) in one proposal: the index raft-rs gave the
    /// first, the others following in order; or why it refused them all, none of which
    /// is in the log then.
    fn propose(
        &mut self,
        entries: Vec<raft::eraftpb::Entry>,
    ) -> std::result::Result<u64, fn() -> NodeError> {
        if !self.is_leader() {
            return Err(|| NodeError::NoLeader);
        }
        let count = entries.len() as u64;
        let mut proposal = Message::default();
        proposal.set_msg_type(MessageType::MsgPropose);
        proposal.from = self.raw.raft.id;
        proposal.set_entries(entries);
        match self.raw.raft.step(proposal) {
            Ok(()) => Ok(self.raw.raft.raft_log.last_index() + 1 - count),
            Err(raft::Error::ProposalDropped) if self.is_leader() => Err(self.dropped()),
            Err(e) => {
                tracing::debug!(error = %e, "proposal refused");
                Err(|| NodeError::NoLeader)
            }
        }
    }

    /// Proposes a normal entry; `Some(pending)` to wait on it, `None` if raft refused.
    fn propose_entry<T>(
        &mut self,
        command: Vec<u8>,
        reply: oneshot::Sender<Result<T>>,
    ) -> Option<(u64, Pending<T>)> {
        let entry = raft::eraftpb::Entry {
            data: command,
            ..Default::default()
        };
        match self.propose(vec![entry]) {
            Ok(index) => Some((
                index,
                Pending {
                    term: self.raw.raft.term,
                    reply,
                    proposed: Instant::now(),
                },
            )),
            Err(refused) => {
                let _ = reply.send(Err(refused()));
                None
            }
        }
    }

    /// Proposes the writes taken this turn, as few proposals of up to an append's
    /// bytes of commands each as they fit in (raft-rs counts an entry's encoded size,
    /// a little more: a proposal near the limit may still go out as two appends).
    /// raft-rs sends each proposal to every follower in a message of its own, which
    /// each follower answers: one proposal per write cost a message and an answer per
    /// write and follower, where now a turn's writes share them. A proposal raft-rs
    /// refuses fails all of its writes, none of which is in the log then.
    fn propose_taken(&mut self) {
        if self.taken.is_empty() {
            return;
        }
        let mut taken = std::mem::take(&mut self.taken).into_iter().peekable();
        let limit = usize::try_from(self.timings.max_append_bytes).unwrap_or(usize::MAX);
        while taken.peek().is_some() {
            let mut entries = Vec::new();
            let mut waiting = Vec::new();
            let mut bytes = 0;
            while let Some(next) =
                taken.next_if(|t| entries.is_empty() || bytes + t.command.len() <= limit)
            {
                bytes += next.command.len();
                entries.push(raft::eraftpb::Entry {
                    data: next.command,
                    ..Default::default()
                });
                waiting.push((next.reply, next.forwarded));
            }
            self.propose_writes(entries, waiting);
        }
    }

    /// Proposes `entries` in one proposal; `waiting` has each one's proposer.
    fn propose_writes(
        &mut self,
        entries: Vec<raft::eraftpb::Entry>,
        waiting: Vec<(oneshot::Sender<Result<Applied>>, bool)>,
    ) {
        match self.propose(entries) {
            Ok(first) => {
                let term = self.raw.raft.term;
                for (index, (reply, forwarded)) in (first..).zip(waiting) {
                    self.waiters.write(
                        index,
                        Pending {
                            term,
                            reply,
                            proposed: Instant::now(),
                        },
                    );
                    if forwarded && self.forwarded.len() < MAX_FORWARDED_TRACKED {
                        self.forwarded.push_back(index);
                    }
                }
            }
            Err(refused) => {
                for (reply, _) in waiting {
                    let _ = reply.send(Err(refused()));
                }
            }
        }
    }

    fn read_index(&mut self, reply: oneshot::Sender<Result<u64>>) {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            let _ = reply.send(Err(NodeError::NoLeader));
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(self.limits.read_timeout_ms);
        self.waiters.read(deadline, reply);
    }

    /// Asks raft for one read index for every read registered since the last round,
    /// unless a round is still in flight; whether it asked. A leader that has not
    /// committed an entry of its term yet waits: raft-rs would drop the request.
    fn ask_reads(&mut self) -> bool {
        let epoch = (self.raw.raft.term, self.raw.raft.leader_id);
        if epoch != self.read_epoch {
            self.waiters.abandon_rounds();
            self.read_epoch = epoch;
        }
        if self.is_leader() && !self.raw.raft.commit_to_current_term() {
            return false;
        }
        match self.waiters.take_round(Instant::now()) {
            Some(ctx) => {
                self.raw.read_index(ctx);
                true
            }
            None => false,
        }
    }

    fn on_tick(&mut self) {
        let again =
            Duration::from_millis(self.timings.tick_ms * self.timings.heartbeat_ticks as u64 * 2);
        self.waiters
            .expire_reads(Instant::now(), again, self.limits.read_timeout_ms);
        if self.is_leader() {
            self.note_leader_contact();
            self.manage_membership();
            let last = self.raw.raft.raft_log.last_index();
            let me = self.raw.raft.id;
            let mut peers = HashSet::new();
            for (id, progress) in self.raw.raft.prs().iter() {
                if *id != me {
                    peers.insert(*id);
                    let lag =
                        i64::try_from(last.saturating_sub(progress.matched)).unwrap_or(i64::MAX);
                    self.metrics
                        .replication_lag
                        .with_label_values(&[&id.to_string()])
                        .set(lag);
                }
            }
            // Peers removed since the last tick go from the gauge.
            for gone in self.lag_peers.difference(&peers) {
                let _ = self
                    .metrics
                    .replication_lag
                    .remove_label_values(&[&gone.to_string()]);
            }
            self.lag_peers = peers;
        }
        if !self.is_leader() && !self.lag_peers.is_empty() {
            // No longer the leader: the lag it measured is no longer known.
            self.metrics.replication_lag.reset();
            self.lag_peers.clear();
        }
        let leader = self.raw.raft.leader_id;
        if leader != self.known_leader {
            if leader != raft::INVALID_ID {
                self.metrics.leader_changes.inc();
            }
            self.known_leader = leader;
            self.commit_sent.clear();
        }
    }

    fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if !ready.messages().is_empty() {
            self.send(ready.take_messages());
        }
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.install_snapshot(&snapshot)?;
        }
        // A follower's acknowledgements wait for this Ready's log write, not for the
        // entries it applies (committed already, on a majority's disks): they go out
        // first, and the leader commits without waiting for this node's apply. A
        // leader (no such messages) applies first: its clients wait for the apply, not
        // for its log write.
        let acks_wait = !ready.persisted_messages().is_empty();
        let mut committed = ready.take_committed_entries();
        if !acks_wait {
            self.apply(std::mem::take(&mut committed))?;
        }
        for state in ready.take_read_states() {
            self.waiters.read_ready(&state.request_ctx, state.index);
        }
        if !ready.must_sync() {
            // Nothing new but the commit index: no fsync for that (etcd's rule too).
            // It rides along with the next write; lost in a crash, raft learns it again
            // from the leader, and the applied index is its floor at start.
            if let Some(hs) = ready.hs() {
                self.raw.mut_store().note_commit(hs.commit);
            }
        } else if !ready.entries().is_empty() || ready.hs().is_some() {
            let started = Instant::now();
            self.raw
                .mut_store()
                .write(ready.entries(), ready.hs(), None)?;
            self.metrics
                .log_write
                .observe(started.elapsed().as_secs_f64());
        }
        if acks_wait {
            self.send(ready.take_persisted_messages());
            self.apply(committed)?;
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().note_commit(commit);
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        if !self.is_leader() {
            self.waiters.drop_replaced(&self.raw.raft.raft_log);
        }
        Ok(())
    }

    /// Sends raft's messages, noting the commit index each append and heartbeat
    /// carries to its peer.
    fn send(&mut self, messages: Vec<Message>) {
        for m in &messages {
            self.metrics.message_sent(m);
            if matches!(
                m.get_msg_type(),
                MessageType::MsgAppend | MessageType::MsgHeartbeat
            ) {
                let sent = self.commit_sent.entry(m.to).or_default();
                *sent = (*sent).max(m.commit);
            }
        }
        self.transport.send(messages);
    }

    /// A leader's followers learn a new commit index from the next append, which
    /// carries it (raft's `skip_bcast_commit`): two messages and two answers less per
    /// write, and a follower's work for them off the next write's way. When no append
    /// carried it within [`RaftTimings::commit_share_ms`] (the writes paused), it goes
    /// to every follower on its own then, so that a follower's copy is never older
    /// than that. True when it went out (a `Ready` waits).
    fn share_commit(&mut self) -> bool {
        let share = Duration::from_millis(self.timings.commit_share_ms);
        if share.is_zero() || !self.is_leader() {
            self.commit_share_due = None;
            return false;
        }
        if !self.followers_lack_commit() {
            self.commit_share_due = None;
            return false;
        }
        let now = Instant::now();
        match self.commit_share_due {
            Some(due) if due <= now => {
                self.commit_share_due = None;
                self.raw.raft.bcast_append();
                true
            }
            Some(_) => false,
            None => {
                self.commit_share_due = Some(now + share);
                false
            }
        }
    }

    /// A write forwarded by a follower that was just committed: the followers get the
    /// commit index now, in the Ready that applies the write here, as they would
    /// without [`RaftLoop::share_commit`] (the forwarding follower answers once it
    /// applied the write itself, and applies it while the leader does).
    fn share_forwarded_commit(&mut self) {
        if !self.is_leader() {
            self.forwarded.clear();
            return;
        }
        let committed = self.raw.raft.raft_log.committed;
        let mut now_committed = false;
        while self.forwarded.front().is_some_and(|&i| i <= committed) {
            self.forwarded.pop_front();
            now_committed = true;
        }
        if now_committed && self.timings.commit_share_ms > 0 && self.followers_lack_commit() {
            self.raw.raft.bcast_append();
        }
    }

    /// Whether a follower that replicates normally has not been sent the commit index
    /// yet. One probing or taking a snapshot gets it with what it is sent next; one
    /// with its window of appends in flight full (unreachable, say) would not be sent
    /// it either, and would keep the loop sharing every `commit_share_ms`.
    fn followers_lack_commit(&self) -> bool {
        let raft = &self.raw.raft;
        let committed = raft.raft_log.committed;
        raft.prs().iter().any(|(id, pr)| {
            *id != raft.id
                && pr.state == raft::ProgressState::Replicate
                && !pr.is_paused()
                && self.commit_sent.get(id).copied().unwrap_or(0) < committed
        })
    }

    /// Answers whoever waits on entry `index` of `term`.
    fn resolve(&mut self, index: u64, term: u64, outcome: EntryOutcome) {
        let members = &self.members;
        self.waiters.resolve(index, term, outcome, |raft_id| {
            join_response(members, raft_id)
        });
    }
}

/// The answer to an admitted join: its raft id and every member.
fn join_response(members: &BTreeMap<u64, Member>, raft_id: u64) -> pb::JoinResponse {
    pb::JoinResponse {
        raft_id,
        members: members.values().map(Into::into).collect(),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}
