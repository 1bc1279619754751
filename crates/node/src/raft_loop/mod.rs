//! The raft loop: one thread that owns the `RawNode`, the log and the state machine.
//!
//! Each turn: take requests (raft messages, proposals, read-index requests, joins,
//! administration) from a bounded queue, tick on time, then handle one `Ready`:
//!
//! 1. send the messages that need nothing persisted (a leader's appends go out before
//!    its own fsync);
//! 2. apply committed entries (raft-rs hands out only entries already persisted here),
//!    all of them in one SQLite transaction together with `applied_index`;
//! 3. write the new entries and hard state with one fsync;
//! 4. only then send the messages that depend on them (votes, append responses);
//! 5. advance, and do the same for the light ready.
//!
//! Anything that makes the log or the state database untrustworthy stops the loop; the
//! error is published and every caller gets it.

mod admin;
mod apply;
mod peers;
mod validate;

pub(crate) use admin::now_unix_ms;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use raft::eraftpb::{ConfState, Message};
use raft::{RawNode, StateRole};
use sqlraft_log::LogStore;
use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::{Member, Service, StateMachine, StatementResult};
use sqlraft_transport::{PeerEvent, Transport};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{Admission, Limits, RaftTimings};
use crate::error::{Fatal, NodeError, Result};
use crate::status::{MemberStatus, Role, Status};

/// A request to the raft loop.
pub(crate) enum Request {
    Raft {
        messages: Vec<Message>,
        /// The sender's member record, as it named itself.
        sender: Option<pb::Member>,
    },
    Propose {
        command: Vec<u8>,
        reply: oneshot::Sender<Result<Applied>>,
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
    pub stop: Mutex<Option<Stop>>,
    /// Raft ids removed from the cluster: their messages are refused, which tells them.
    pub removed: RwLock<HashSet<u64>>,
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

    pub fn is_removed(&self, raft_id: u64) -> bool {
        self.removed
            .read()
            .map(|r| r.contains(&raft_id))
            .unwrap_or(false)
    }
}

/// Something waiting for the entry proposed at an index in a term.
struct Pending<T> {
    term: u64,
    reply: oneshot::Sender<Result<T>>,
}

struct PendingJoin {
    raft_id: u64,
    pending: Pending<pb::JoinResponse>,
}

struct PendingRead {
    deadline: Instant,
    /// When the read index was last requested from raft.
    asked: Instant,
    reply: oneshot::Sender<Result<u64>>,
}

/// What applying one entry produced, for whoever waits on it.
pub(crate) enum EntryOutcome {
    /// A write's results and the entry that applied it (an earlier one for a
    /// repeated request id).
    Write(Vec<StatementResult>, u64),
    Registry(std::result::Result<(), sqlraft_sqlite::RegistryError>),
    Done,
}

/// Everything the loop is built from.
pub(crate) struct LoopParts {
    pub raw: RawNode<LogStore>,
    pub sm: StateMachine,
    pub transport: Transport,
    pub requests: Receiver<Request>,
    pub peer_events: mpsc::Receiver<PeerEvent>,
    pub shared: Arc<Shared>,
    /// Where the status is published (only when something in it changed) and the
    /// applied index; dropped with the loop, which closes every subscription.
    pub status: watch::Sender<Status>,
    pub applied: watch::Sender<u64>,
    pub service_id: String,
    pub members: BTreeMap<u64, Member>,
    /// Members not (yet) in the applied state, whose addresses came from the log tail,
    /// the join answer or their own messages.
    pub known: BTreeMap<u64, Member>,
    /// Where `raft/peers` is kept.
    pub raft_dir: std::path::PathBuf,
    pub timings: RaftTimings,
    pub limits: Limits,
    pub admission: Admission,
}

pub(crate) struct RaftLoop {
    raw: RawNode<LogStore>,
    sm: StateMachine,
    transport: Transport,
    requests: Receiver<Request>,
    peer_events: mpsc::Receiver<PeerEvent>,
    shared: Arc<Shared>,
    status: watch::Sender<Status>,
    applied: watch::Sender<u64>,
    service_id: String,
    members: BTreeMap<u64, Member>,
    known: BTreeMap<u64, Member>,
    raft_dir: std::path::PathBuf,
    timings: RaftTimings,
    limits: Limits,
    admission: Admission,
    pending_writes: BTreeMap<u64, Pending<Applied>>,
    pending_admin: BTreeMap<u64, Pending<AdminOutcome>>,
    pending_joins: BTreeMap<u64, PendingJoin>,
    pending_reads: HashMap<u64, PendingRead>,
    next_read_id: u64,
    /// Random per process: read-index contexts must never repeat, across nodes and
    /// restarts, or raft-rs could match a new request with an old answer.
    read_nonce: u64,
    /// Set when this node applied its own removal; the loop ends after the turn.
    removed: bool,
    /// Highest commit index carried by a message from a leader.
    leader_commit: u64,
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
            status: parts.status,
            applied: parts.applied,
            service_id: parts.service_id,
            members: parts.members,
            known: parts.known,
            raft_dir: parts.raft_dir,
            timings: parts.timings,
            limits: parts.limits,
            admission: parts.admission,
            pending_writes: BTreeMap::new(),
            pending_admin: BTreeMap::new(),
            pending_joins: BTreeMap::new(),
            pending_reads: HashMap::new(),
            next_read_id: 1,
            read_nonce: uuid::Uuid::new_v4().as_u64_pair().0,
            removed: false,
            leader_commit: 0,
        }
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
        self.fail_pending();
    }

    fn turns(&mut self) -> Result<()> {
        let tick = Duration::from_millis(self.timings.tick_ms.max(1));
        let mut next_tick = Instant::now() + tick;
        self.publish();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut turn_bytes = 0;
            match self.requests.recv_timeout(wait) {
                Ok(Request::Shutdown) => return Ok(()),
                Ok(request) => {
                    turn_bytes += request.entry_bytes();
                    self.handle(request);
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
                        self.handle(request);
                    }
                    Err(_) => break,
                }
            }
            while let Ok(event) = self.peer_events.try_recv() {
                match event {
                    PeerEvent::Unreachable(peer) => self.raw.report_unreachable(peer),
                    PeerEvent::Removed { by } => {
                        tracing::warn!(by, "a member says this node was removed");
                        self.removed = true;
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
            self.on_ready()?;
            self.publish();
            if self.removed {
                return Ok(());
            }
        }
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Raft { messages, sender } => {
                if let (Some(sender), Some(first)) = (sender, messages.first()) {
                    self.learn_sender(sender, first.term);
                }
                let mut from_leader = false;
                for message in messages {
                    if let Err(reason) = self.check_peer_message(&message) {
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
            Request::Removed => {
                tracing::warn!("a member says this service was removed");
                self.removed = true;
            }
            Request::Propose { command, reply } => self.propose(command, reply),
            Request::ReadIndex { reply } => self.read_index(reply),
            Request::Join { request, reply } => self.join(request, reply),
            Request::Admin { request, reply } => self.admin(request, reply),
            Request::Services { reply } => {
                let _ = reply.send(self.sm.services().map_err(Into::into));
            }
            Request::Shutdown => {}
        }
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

    /// Proposes a normal entry; `Some(pending)` to wait on it, `None` if raft refused.
    fn propose_entry<T>(
        &mut self,
        command: Vec<u8>,
        reply: oneshot::Sender<Result<T>>,
    ) -> Option<(u64, Pending<T>)> {
        if !self.is_leader() {
            let _ = reply.send(Err(NodeError::NoLeader));
            return None;
        }
        match self.raw.propose(Vec::new(), command) {
            Ok(()) => Some((
                self.raw.raft.raft_log.last_index(),
                Pending {
                    term: self.raw.raft.term,
                    reply,
                },
            )),
            // Still the leader: raft-rs drops a proposal over max_uncommitted_size.
            Err(raft::Error::ProposalDropped) if self.is_leader() => {
                let _ = reply.send(Err(NodeError::Busy(
                    "too many writes not yet committed; try again",
                )));
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "proposal refused");
                let _ = reply.send(Err(NodeError::NoLeader));
                None
            }
        }
    }

    fn propose(&mut self, command: Vec<u8>, reply: oneshot::Sender<Result<Applied>>) {
        if let Some((index, pending)) = self.propose_entry(command, reply) {
            self.pending_writes.insert(index, pending);
        }
    }

    fn read_index(&mut self, reply: oneshot::Sender<Result<u64>>) {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            let _ = reply.send(Err(NodeError::NoLeader));
            return;
        }
        let id = self.next_read_id;
        self.next_read_id += 1;
        self.raw.read_index(self.read_context(id));
        let now = Instant::now();
        self.pending_reads.insert(
            id,
            PendingRead {
                deadline: now + Duration::from_millis(self.limits.read_timeout_ms),
                asked: now,
                reply,
            },
        );
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .pending_reads
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(read) = self.pending_reads.remove(&id) {
                let _ = read
                    .reply
                    .send(Err(NodeError::Timeout(self.limits.read_timeout_ms)));
            }
        }
        // raft-rs drops a read-index request silently when the leader has not yet
        // committed an entry in its term (or the request was lost on the way); ask
        // again, a duplicate answer is harmless.
        let again =
            Duration::from_millis(self.timings.tick_ms * self.timings.heartbeat_ticks as u64 * 2);
        for (id, read) in self.pending_reads.iter_mut() {
            if now.duration_since(read.asked) >= again {
                read.asked = now;
                let ctx = read_context(self.read_nonce, *id);
                self.raw.read_index(ctx);
            }
        }
        if self.is_leader() {
            self.note_leader_contact();
            self.manage_membership();
        }
    }

    fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        if !ready.snapshot().is_empty() {
            return Err(Fatal::Invariant(
                "received a snapshot, which this version cannot install".into(),
            )
            .into());
        }
        self.apply(ready.take_committed_entries())?;
        for state in ready.take_read_states() {
            self.read_ready(&state.request_ctx, state.index);
        }
        self.raw
            .mut_store()
            .write(ready.entries(), ready.hs(), None)?;
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().note_commit(commit);
        }
        self.transport.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        if !self.is_leader() {
            self.drop_replaced_proposals();
        }
        Ok(())
    }

    /// Proposals this node made as leader whose entries its log no longer holds (a
    /// later leader's log replaced them) can never be committed: answer them now with
    /// `Dropped` (safe to retry) instead of letting them wait for their timeout. Log
    /// matching makes this sound: had the new leader held such an entry, it would not
    /// have been replaced here.
    fn drop_replaced_proposals(&mut self) {
        let log = &self.raw.raft.raft_log;
        drop_all(take_replaced(&mut self.pending_writes, log));
        drop_all(take_replaced(&mut self.pending_admin, log));
    }

    fn read_context(&self, id: u64) -> Vec<u8> {
        read_context(self.read_nonce, id)
    }

    fn read_ready(&mut self, ctx: &[u8], index: u64) {
        let (Some(nonce), Some(id)) = (ctx.get(..8), ctx.get(8..16)) else {
            return;
        };
        let word = |b: &[u8]| b.try_into().map(u64::from_le_bytes).unwrap_or(0);
        if ctx.len() != 16 || word(nonce) != self.read_nonce {
            return;
        }
        if let Some(read) = self.pending_reads.remove(&word(id)) {
            let _ = read.reply.send(Ok(index));
        }
    }

    /// Answers whoever waits on entry `index` of `term`. Waiters at lower indexes, or at
    /// this index from another term, proposed entries another leader's log replaced.
    fn resolve(&mut self, index: u64, term: u64, outcome: EntryOutcome) {
        let (write, dropped) = settle(&mut self.pending_writes, index, term);
        drop_all(dropped);
        let (admin, dropped) = settle(&mut self.pending_admin, index, term);
        drop_all(dropped);
        let (join, dropped) = settle(&mut self.pending_joins, index, term);
        drop_all(dropped.into_iter().map(|j| j.pending).collect());
        // One entry has at most one waiter.
        if let Some(p) = write {
            let (results, index) = match outcome {
                EntryOutcome::Write(results, applied_at) => (results, applied_at),
                _ => (Vec::new(), index),
            };
            let _ = p.reply.send(Ok(Applied { index, results }));
        } else if let Some(p) = admin {
            let result = match outcome {
                EntryOutcome::Registry(Err(e)) => Err(e.into()),
                _ => Ok(AdminOutcome { index }),
            };
            let _ = p.reply.send(result);
        } else if let Some(j) = join {
            let response = self.join_response(j.raft_id);
            let _ = j.pending.reply.send(Ok(response));
        }
    }

    fn publish(&self) {
        let raft = &self.raw.raft;
        let conf: ConfState = raft.prs().conf().to_conf_state();
        let me = raft.id;
        let role = match raft.state {
            StateRole::Leader => Role::Leader,
            StateRole::Candidate | StateRole::PreCandidate => Role::Candidate,
            StateRole::Follower if conf.learners.contains(&me) => Role::Learner,
            StateRole::Follower
                if conf.voters.contains(&me) || conf.voters_outgoing.contains(&me) =>
            {
                Role::Follower
            }
            StateRole::Follower => Role::Joining,
        };
        let leader = raft.state == StateRole::Leader;
        let members = self
            .members
            .values()
            .map(|m| MemberStatus {
                raft_id: m.raft_id,
                service_id: m.service_id.clone(),
                raft_addr: m.raft_addr.clone(),
                http_addr: m.http_addr.clone(),
                voter: conf.voters.contains(&m.raft_id)
                    || conf.voters_outgoing.contains(&m.raft_id),
                matched: leader
                    .then(|| raft.prs().get(m.raft_id).map(|p| p.matched))
                    .flatten(),
                reachable: leader.then(|| {
                    m.raft_id == me || raft.prs().get(m.raft_id).is_some_and(|p| p.recent_active)
                }),
            })
            .collect();
        let status = Status {
            raft_id: me,
            service_id: self.service_id.clone(),
            role,
            leader_id: raft.leader_id,
            term: raft.term,
            commit_index: raft.raft_log.committed,
            leader_commit_index: if leader {
                raft.raft_log.committed
            } else {
                self.leader_commit.max(raft.raft_log.committed)
            },
            applied_index: self.sm.applied_index(),
            last_index: raft.raft_log.last_index(),
            voters: conf.voters,
            learners: conf.learners,
            members,
        };
        self.status.send_if_modified(|published| {
            let changed = *published != status;
            if changed {
                *published = status;
            }
            changed
        });
    }

    fn fail_pending(&mut self) {
        for (_, p) in std::mem::take(&mut self.pending_writes) {
            let _ = p
                .reply
                .send(Err(NodeError::UnknownOutcome("node stopped".into())));
        }
        for (_, p) in std::mem::take(&mut self.pending_admin) {
            let _ = p
                .reply
                .send(Err(NodeError::UnknownOutcome("node stopped".into())));
        }
        for (_, j) in std::mem::take(&mut self.pending_joins) {
            let _ = j.pending.reply.send(Err(NodeError::Stopped));
        }
        for (_, p) in std::mem::take(&mut self.pending_reads) {
            let _ = p.reply.send(Err(NodeError::Stopped));
        }
    }
}

/// Takes the waiters at or below `index`: the one proposed as (`index`, `term`), and
/// the others, whose entries were replaced.
fn settle<P: HasTerm>(
    pending: &mut BTreeMap<u64, P>,
    index: u64,
    term: u64,
) -> (Option<P>, Vec<P>) {
    let mut matched = None;
    let mut dropped = Vec::new();
    while let Some(entry) = pending.first_entry() {
        if *entry.key() > index {
            break;
        }
        let (at, p) = entry.remove_entry();
        if at == index && p.term() == term {
            matched = Some(p);
        } else {
            dropped.push(p);
        }
    }
    (matched, dropped)
}

/// Takes the waiters whose entries the log no longer holds at their index and term.
fn take_replaced<T>(
    pending: &mut BTreeMap<u64, Pending<T>>,
    log: &raft::RaftLog<LogStore>,
) -> Vec<Pending<T>> {
    let replaced: Vec<u64> = pending
        .iter()
        .filter(|(index, p)| log.term(**index).is_ok_and(|t| t != p.term))
        .map(|(index, _)| *index)
        .collect();
    replaced
        .iter()
        .filter_map(|index| pending.remove(index))
        .collect()
}

fn drop_all<T>(dropped: Vec<Pending<T>>) {
    for p in dropped {
        let _ = p.reply.send(Err(NodeError::Dropped));
    }
}

trait HasTerm {
    fn term(&self) -> u64;
}

impl<T> HasTerm for Pending<T> {
    fn term(&self) -> u64 {
        self.term
    }
}

impl HasTerm for PendingJoin {
    fn term(&self) -> u64 {
        self.pending.term
    }
}

fn read_context(nonce: u64, id: u64) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(16);
    ctx.extend_from_slice(&nonce.to_le_bytes());
    ctx.extend_from_slice(&id.to_le_bytes());
    ctx
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}
