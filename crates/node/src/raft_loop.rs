//! The raft loop: one thread that owns the `RawNode`, the log and the state machine.
//!
//! Each turn: take requests (raft messages, proposals, read-index requests, joins) from
//! a bounded queue, tick on time, then handle one `Ready`:
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

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prost::Message as _;
use prost_011::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message,
};
use raft::{RawNode, StateRole};
use raft_proto::ConfChangeI;
use sqlraft_log::LogStore;
use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::{Member, StateMachine, StatementResult};
use sqlraft_transport::Transport;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{Limits, RaftTimings};
use crate::error::{NodeError, Result};
use crate::membership::{self, PromotionInput};
use crate::status::{MemberStatus, Role, Status};

/// A request to the raft loop.
pub(crate) enum Request {
    Raft(Vec<Message>),
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
    Shutdown,
}

/// The outcome of an applied write.
#[derive(Debug)]
pub(crate) struct Applied {
    pub index: u64,
    pub results: Vec<StatementResult>,
}

/// What the loop publishes for everyone else.
pub(crate) struct Shared {
    pub status: Mutex<Status>,
    pub applied: watch::Sender<u64>,
    /// Set when the loop stopped on a fatal error.
    pub failure: Mutex<Option<String>>,
}

impl Shared {
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

struct PendingWrite {
    term: u64,
    reply: oneshot::Sender<Result<Applied>>,
}

struct PendingJoin {
    term: u64,
    raft_id: u64,
    reply: oneshot::Sender<Result<pb::JoinResponse>>,
}

struct PendingRead {
    deadline: Instant,
    /// When the read index was last requested from raft.
    asked: Instant,
    reply: oneshot::Sender<Result<u64>>,
}

pub(crate) struct RaftLoop {
    pub raw: RawNode<LogStore>,
    pub sm: StateMachine,
    pub transport: Transport,
    pub requests: Receiver<Request>,
    pub unreachable: mpsc::Receiver<u64>,
    pub shared: Arc<Shared>,
    pub service_id: String,
    pub members: BTreeMap<u64, Member>,
    pub timings: RaftTimings,
    pub limits: Limits,
    pending_writes: BTreeMap<u64, PendingWrite>,
    pending_joins: BTreeMap<u64, PendingJoin>,
    pending_reads: HashMap<u64, PendingRead>,
    next_read_id: u64,
}

impl RaftLoop {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        raw: RawNode<LogStore>,
        sm: StateMachine,
        transport: Transport,
        requests: Receiver<Request>,
        unreachable: mpsc::Receiver<u64>,
        shared: Arc<Shared>,
        service_id: String,
        members: BTreeMap<u64, Member>,
        timings: RaftTimings,
        limits: Limits,
    ) -> Self {
        RaftLoop {
            raw,
            sm,
            transport,
            requests,
            unreachable,
            shared,
            service_id,
            members,
            timings,
            limits,
            pending_writes: BTreeMap::new(),
            pending_joins: BTreeMap::new(),
            pending_reads: HashMap::new(),
            next_read_id: 1,
        }
    }

    /// Runs until shutdown or a fatal error.
    pub fn run(mut self) {
        let raft_id = self.raw.raft.id;
        let span = tracing::info_span!("raft_loop", node_id = raft_id);
        let _enter = span.enter();
        // raft-rs panics when its storage fails; that must stop the node visibly, not
        // leave callers waiting on a dead thread.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.turns()));
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(panic) => Some(format!("raft loop panicked: {}", panic_message(&panic))),
        };
        match &failure {
            None => tracing::info!("raft loop stopped"),
            Some(e) => tracing::error!(error = %e, "raft loop stopped on a fatal error"),
        }
        *self
            .shared
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = failure;
        self.fail_pending();
    }

    fn turns(&mut self) -> Result<()> {
        let tick = Duration::from_millis(self.timings.tick_ms.max(1));
        let mut next_tick = Instant::now() + tick;
        self.publish();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.requests.recv_timeout(wait) {
                Ok(Request::Shutdown) => return Ok(()),
                Ok(request) => self.handle(request)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            // Take what else is queued, so proposals arriving together share one Ready
            // (one fsync, one apply transaction).
            for _ in 0..self.limits.loop_queue_len {
                match self.requests.try_recv() {
                    Ok(Request::Shutdown) => return Ok(()),
                    Ok(request) => self.handle(request)?,
                    Err(_) => break,
                }
            }
            while let Ok(peer) = self.unreachable.try_recv() {
                self.raw.report_unreachable(peer);
            }
            if Instant::now() >= next_tick {
                self.raw.tick();
                next_tick += tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + tick;
                }
                self.on_tick()?;
            }
            self.on_ready()?;
            self.publish();
        }
    }

    fn handle(&mut self, request: Request) -> Result<()> {
        match request {
            Request::Raft(messages) => {
                for message in messages {
                    if let Err(e) = self.raw.step(message) {
                        tracing::debug!(error = %e, "raft refused a message");
                    }
                }
            }
            Request::Propose { command, reply } => self.propose(command, reply),
            Request::ReadIndex { reply } => self.read_index(reply),
            Request::Join { request, reply } => self.join(request, reply),
            Request::Shutdown => {}
        }
        Ok(())
    }

    fn propose(&mut self, command: Vec<u8>, reply: oneshot::Sender<Result<Applied>>) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(NodeError::NoLeader));
            return;
        }
        match self.raw.propose(Vec::new(), command) {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                let term = self.raw.raft.term;
                self.pending_writes
                    .insert(index, PendingWrite { term, reply });
            }
            Err(e) => {
                tracing::debug!(error = %e, "proposal refused");
                let _ = reply.send(Err(NodeError::NoLeader));
            }
        }
    }

    fn read_index(&mut self, reply: oneshot::Sender<Result<u64>>) {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            let _ = reply.send(Err(NodeError::NoLeader));
            return;
        }
        let id = self.next_read_id;
        self.next_read_id += 1;
        self.raw.read_index(id.to_le_bytes().to_vec());
        let deadline = Instant::now() + Duration::from_millis(self.limits.read_timeout_ms);
        self.pending_reads.insert(
            id,
            PendingRead {
                deadline,
                asked: Instant::now(),
                reply,
            },
        );
    }

    fn join(&mut self, request: pb::JoinRequest, reply: oneshot::Sender<Result<pb::JoinResponse>>) {
        let outcome = self.admit(&request);
        match outcome {
            Ok(Some(pending)) => {
                let index = self.raw.raft.raft_log.last_index();
                let term = self.raw.raft.term;
                self.pending_joins.insert(
                    index,
                    PendingJoin {
                        term,
                        raft_id: pending,
                        reply,
                    },
                );
            }
            Ok(None) => {
                let raft_id = self
                    .members
                    .values()
                    .find(|m| m.service_id == request.service_id)
                    .map_or(0, |m| m.raft_id);
                let _ = reply.send(Ok(self.join_response(raft_id)));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Proposes adding the service as a learner. `Ok(None)`: it is a member already
    /// with that address (a retried join).
    fn admit(&mut self, request: &pb::JoinRequest) -> Result<Option<u64>> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(NodeError::NoLeader);
        }
        if let Some(m) = self
            .members
            .values()
            .find(|m| m.service_id == request.service_id)
        {
            if m.raft_addr == request.raft_addr {
                return Ok(None);
            }
            return Err(NodeError::Join(format!(
                "service {} is already a member with raft address {}",
                m.service_id, m.raft_addr
            )));
        }
        if let Some(m) = self
            .members
            .values()
            .find(|m| m.raft_addr == request.raft_addr)
        {
            return Err(NodeError::Join(format!(
                "raft address {} is already used by service {}",
                m.raft_addr, m.service_id
            )));
        }
        if self.raw.raft.has_pending_conf() || !self.pending_joins.is_empty() {
            return Err(NodeError::Busy("another membership change is in progress"));
        }
        let conf = self.raw.raft.prs().conf().to_conf_state();
        let raft_id = self
            .members
            .keys()
            .chain(conf.voters.iter())
            .chain(conf.learners.iter())
            .copied()
            .max()
            .unwrap_or(0)
            + 1;
        let member = pb::Member {
            raft_id,
            service_id: request.service_id.clone(),
            raft_addr: request.raft_addr.clone(),
            http_addr: request.http_addr.clone(),
        };
        let cc = membership::add_learner(raft_id, member.encode_to_vec());
        self.raw
            .propose_conf_change(Vec::new(), cc)
            .map_err(|e| NodeError::Join(format!("conf change refused: {e}")))?;
        tracing::info!(raft_id, service_id = %request.service_id, addr = %request.raft_addr,
            "proposed adding a learner");
        Ok(Some(raft_id))
    }

    fn join_response(&self, raft_id: u64) -> pb::JoinResponse {
        pb::JoinResponse {
            raft_id,
            members: self.members.values().map(Into::into).collect(),
        }
    }

    fn on_tick(&mut self) -> Result<()> {
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
                self.raw.read_index(id.to_le_bytes().to_vec());
            }
        }
        if self.raw.raft.state == StateRole::Leader {
            self.manage_membership();
        }
        Ok(())
    }

    /// Leader only: leave a joint configuration left behind by a previous leader, and
    /// promote learners when that keeps the voter count odd.
    fn manage_membership(&mut self) {
        if self.raw.raft.has_pending_conf() {
            return;
        }
        let conf = self.raw.raft.prs().conf().to_conf_state();
        if !conf.voters_outgoing.is_empty() {
            // raft-rs leaves a joint config automatically only if the leader that
            // entered it stays leader until it is applied.
            if let Err(e) = self
                .raw
                .propose_conf_change(Vec::new(), ConfChangeV2::default())
            {
                tracing::warn!(error = %e, "could not propose leaving the joint configuration");
            }
            return;
        }
        let matched: Vec<(u64, u64)> = self
            .raw
            .raft
            .prs()
            .iter()
            .map(|(id, p)| (*id, p.matched))
            .collect();
        let promote = membership::learners_to_promote(&PromotionInput {
            voters: &conf.voters,
            learners: &conf.learners,
            matched: &matched,
            commit_index: self.raw.raft.raft_log.committed,
            catch_up_entries: self.timings.learner_catch_up_entries,
        });
        if promote.is_empty() {
            return;
        }
        match self
            .raw
            .propose_conf_change(Vec::new(), membership::promote(&promote))
        {
            Ok(()) => tracing::info!(?promote, voters = ?conf.voters, "promoting learners"),
            Err(e) => tracing::warn!(error = %e, ?promote, "could not propose promotion"),
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
            return Err(NodeError::Fatal(
                "received a snapshot, which this version cannot install".into(),
            ));
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
        Ok(())
    }

    fn read_ready(&mut self, ctx: &[u8], index: u64) {
        let Ok(bytes) = <[u8; 8]>::try_from(ctx) else {
            return;
        };
        if let Some(read) = self.pending_reads.remove(&u64::from_le_bytes(bytes)) {
            let _ = read.reply.send(Ok(index));
        }
    }

    /// Applies committed entries in one SQLite transaction, then answers the waiting
    /// proposers.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<()> {
        let applied_before = self.sm.applied_index();
        let entries: Vec<Entry> = entries
            .into_iter()
            .filter(|e| e.index > applied_before)
            .collect();
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let last_index = last.index;
        let mut outcomes: Vec<(u64, u64, Vec<StatementResult>)> = Vec::with_capacity(entries.len());
        let mut conf_changed = false;
        let mut txn = self.sm.begin()?;
        for entry in &entries {
            let results = match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    if entry.data.is_empty() {
                        txn.skip(entry.index)?;
                        Vec::new()
                    } else {
                        match pb::Command::decode(entry.data.as_slice()) {
                            Ok(pb::Command {
                                kind: Some(pb::command::Kind::Write(write)),
                            }) => txn.write(entry.index, &write.into())?,
                            Ok(_) => {
                                txn.skip(entry.index)?;
                                Vec::new()
                            }
                            Err(e) => {
                                // Deterministic: every node fails to decode it alike.
                                tracing::error!(index = entry.index, error = %e, "undecodable entry skipped");
                                txn.skip(entry.index)?;
                                vec![StatementResult {
                                    error: Some(format!("undecodable entry: {e}")),
                                    ..Default::default()
                                }]
                            }
                        }
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let cc = decode_conf_change(entry)?;
                    match self.raw.apply_conf_change(&cc) {
                        Ok(cs) => {
                            conf_changed = true;
                            txn.set_conf_state(&cs.encode_to_vec())?;
                            record_members(&mut txn, &cc)?;
                            tracing::info!(index = entry.index, voters = ?cs.voters,
                                learners = ?cs.learners, joint = !cs.voters_outgoing.is_empty(),
                                "configuration changed");
                        }
                        Err(e) => {
                            tracing::warn!(index = entry.index, error = %e, "conf change not applied")
                        }
                    }
                    txn.skip(entry.index)?;
                    Vec::new()
                }
            };
            outcomes.push((entry.index, entry.term, results));
        }
        txn.commit()?;
        // Published before any waiter is answered: once a write is acknowledged, this
        // node's status shows it applied.
        self.shared.applied.send_replace(last_index);
        self.shared
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .applied_index = last_index;
        if conf_changed {
            self.reload_members()?;
        }
        for (index, term, results) in outcomes {
            self.resolve(index, term, results);
        }
        Ok(())
    }

    fn resolve(&mut self, index: u64, term: u64, results: Vec<StatementResult>) {
        let mut results = Some(results);
        // Anything pending below this index was overwritten by another leader's log.
        while let Some(entry) = self.pending_writes.first_entry() {
            if *entry.key() > index {
                break;
            }
            let (pending_index, pending) = entry.remove_entry();
            let outcome = if pending_index == index && pending.term == term {
                Ok(Applied {
                    index,
                    results: results.take().unwrap_or_default(),
                })
            } else {
                Err(NodeError::Dropped)
            };
            let _ = pending.reply.send(outcome);
        }
        while let Some(entry) = self.pending_joins.first_entry() {
            if *entry.key() > index {
                break;
            }
            let (pending_index, pending) = entry.remove_entry();
            let outcome = if pending_index == index && pending.term == term {
                Ok(self.join_response(pending.raft_id))
            } else {
                Err(NodeError::Dropped)
            };
            let _ = pending.reply.send(outcome);
        }
    }

    fn reload_members(&mut self) -> Result<()> {
        let members = self.sm.members()?;
        let me = self.raw.raft.id;
        for member in &members {
            if member.raft_id != me
                && let Err(e) = self.transport.set_peer(member.raft_id, &member.raft_addr)
            {
                tracing::warn!(raft_id = member.raft_id, error = %e, "bad peer address");
            }
        }
        for old in self.members.keys() {
            if !members.iter().any(|m| m.raft_id == *old) {
                self.transport.remove_peer(*old);
            }
        }
        self.members = members.into_iter().map(|m| (m.raft_id, m)).collect();
        Ok(())
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
                matched: if leader {
                    raft.prs().get(m.raft_id).map(|p| p.matched)
                } else {
                    None
                },
                reachable: if leader {
                    Some(
                        m.raft_id == me
                            || raft.prs().get(m.raft_id).is_some_and(|p| p.recent_active),
                    )
                } else {
                    None
                },
            })
            .collect();
        let status = Status {
            raft_id: me,
            service_id: self.service_id.clone(),
            role,
            leader_id: raft.leader_id,
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: self.sm.applied_index(),
            last_index: raft.raft_log.last_index(),
            voters: conf.voters,
            learners: conf.learners,
            members,
        };
        *self
            .shared
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = status;
    }

    fn fail_pending(&mut self) {
        for (_, p) in std::mem::take(&mut self.pending_writes) {
            let _ = p
                .reply
                .send(Err(NodeError::UnknownOutcome("node stopped".into())));
        }
        for (_, p) in std::mem::take(&mut self.pending_joins) {
            let _ = p.reply.send(Err(NodeError::Stopped));
        }
        for (_, p) in std::mem::take(&mut self.pending_reads) {
            let _ = p.reply.send(Err(NodeError::Stopped));
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

fn decode_conf_change(entry: &Entry) -> Result<ConfChangeV2> {
    let fatal = |e: prost_011::DecodeError| {
        NodeError::Fatal(format!(
            "undecodable conf change at index {}: {e}",
            entry.index
        ))
    };
    if entry.get_entry_type() == EntryType::EntryConfChange {
        Ok(ConfChange::decode(entry.data.as_slice())
            .map_err(fatal)?
            .into_v2())
    } else {
        ConfChangeV2::decode(entry.data.as_slice()).map_err(fatal)
    }
}

/// Keeps the members table in step with the configuration: an added node's service id
/// and address travel in the conf change's context.
fn record_members(txn: &mut sqlraft_sqlite::ApplyTxn<'_>, cc: &ConfChangeV2) -> Result<()> {
    for change in &cc.changes {
        match change.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                if cc.context.is_empty() {
                    continue;
                }
                let member = pb::Member::decode(cc.context.as_slice()).map_err(|e| {
                    NodeError::Fatal(format!("undecodable member in conf change: {e}"))
                })?;
                if member.raft_id == change.node_id {
                    txn.put_member(&member.into())?;
                }
            }
            ConfChangeType::RemoveNode => txn.remove_member(change.node_id)?,
        }
    }
    Ok(())
}
