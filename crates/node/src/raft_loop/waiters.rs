//! Who waits for what: proposals waiting for their entry to be applied, joins waiting
//! for their conf change, reads waiting for a read index. Bookkeeping only; the loop
//! decides when entries are applied or replaced and calls in here.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use sqlraft_log::LogStore;
use sqlraft_proto::v1 as pb;
use tokio::sync::oneshot;

use super::{AdminOutcome, Applied};
use crate::error::{NodeError, Result};

/// A proposal waiting for its entry, proposed at (`index`, `term`).
pub(super) struct Pending<T> {
    pub term: u64,
    pub reply: oneshot::Sender<Result<T>>,
    /// When it was proposed.
    pub proposed: Instant,
}

/// A join waiting for the conf change that adds `raft_id`.
pub(super) struct PendingJoin {
    pub raft_id: u64,
    pub pending: Pending<pb::JoinResponse>,
}

struct PendingRead {
    deadline: Instant,
    reply: oneshot::Sender<Result<u64>>,
}

/// One read-index request to raft, answering every read registered before it was made.
struct ReadRound {
    /// When it was handed to raft.
    asked: Instant,
    reads: Vec<u64>,
}

/// What applying one entry produced, for whoever waits on it.
pub(crate) enum EntryOutcome {
    /// A write's results, the entry that applied it (an earlier one for a repeated
    /// request id) and the seconds each statement took here.
    Write(sqlraft_sqlite::WriteApplied),
    Registry(std::result::Result<(), sqlraft_sqlite::RegistryError>),
    /// A restore's commit: the tables restored, or why it failed (on every node alike).
    Restore(std::result::Result<usize, sqlraft_sqlite::restore::RestoreRefusal>),
    Done,
}

pub(super) struct Waiters {
    metrics: crate::Metrics,
    /// When the apply transaction of the entries being resolved began.
    apply_started: Instant,
    writes: BTreeMap<u64, Pending<Applied>>,
    admin: BTreeMap<u64, Pending<AdminOutcome>>,
    joins: BTreeMap<u64, PendingJoin>,
    reads: HashMap<u64, PendingRead>,
    /// Reads registered since the last round was asked: they share the next one.
    unasked: Vec<u64>,
    /// Rounds handed to raft and not answered yet, by round id (their context).
    rounds: HashMap<u64, ReadRound>,
    /// Ids of reads and rounds alike; never repeated within a process.
    next_read_id: u64,
    /// Random per process: read-index contexts must never repeat, across nodes and
    /// restarts, or raft-rs could match a new request with an old answer.
    read_nonce: u64,
}

impl Waiters {
    pub fn new(metrics: crate::Metrics) -> Self {
        Waiters {
            metrics,
            apply_started: Instant::now(),
            writes: BTreeMap::new(),
            admin: BTreeMap::new(),
            joins: BTreeMap::new(),
            reads: HashMap::new(),
            unasked: Vec::new(),
            rounds: HashMap::new(),
            next_read_id: 1,
            read_nonce: uuid::Uuid::new_v4().as_u64_pair().0,
        }
    }

    pub fn write(&mut self, index: u64, pending: Pending<Applied>) {
        self.writes.insert(index, pending);
    }

    pub fn admin(&mut self, index: u64, pending: Pending<AdminOutcome>) {
        self.admin.insert(index, pending);
    }

    pub fn join(&mut self, index: u64, join: PendingJoin) {
        self.joins.insert(index, join);
    }

    pub fn joins_waiting(&self) -> bool {
        !self.joins.is_empty()
    }

    /// Registers a read that gives up at `deadline`. It is answered by the next round
    /// ([`Waiters::take_round`]), with every other read registered meanwhile.
    pub fn read(&mut self, deadline: Instant, reply: oneshot::Sender<Result<u64>>) {
        let id = self.next_id();
        self.reads.insert(id, PendingRead { deadline, reply });
        self.unasked.push(id);
    }

    /// The context of a new read-index round for every read registered since the last
    /// one, to hand to raft's `read_index`; `None` when no read waits for one.
    ///
    /// One round serves them all: the read index raft answers with is the leader's
    /// commit index at a moment after each of these reads arrived, confirmed by a
    /// quorum, so every one of them may read there. A read registered after the round
    /// was asked waits for the next round.
    ///
    /// One round at a time: while one is in flight, reads arriving wait for it to be
    /// answered (or abandoned) and then share the next. Under load each round serves
    /// every read that came during the last, instead of each loop turn (a few reads)
    /// paying its own quorum of heartbeats.
    pub fn take_round(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.unasked.is_empty() || !self.rounds.is_empty() {
            return None;
        }
        let id = self.next_id();
        let reads = std::mem::take(&mut self.unasked);
        self.metrics.read_rounds.inc();
        self.metrics.reads_per_round.observe(reads.len() as f64);
        self.rounds.insert(id, ReadRound { asked: now, reads });
        Some(read_context(self.read_nonce, id))
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_read_id;
        self.next_read_id += 1;
        id
    }

    /// Reads past their deadline get a timeout of `timeout_ms`. Rounds not answered
    /// for `again` are abandoned and their reads join the next round (raft-rs drops a
    /// read-index request silently when the leader has not committed an entry in its
    /// term, or when it was lost on the way).
    ///
    /// A read asked again goes out under a **new context**, and an answer to the
    /// abandoned one is ignored. Reusing the context would be unsafe: the leader counts
    /// every heartbeat response that echoes a context as an acknowledgement of the
    /// request with that context, and releases every request queued before it. A
    /// response to a heartbeat of the first round (sent before a leader was paused and
    /// deposed, say) would then release requests that arrived later at that old commit
    /// index: stale reads. A fresh context can only be echoed by heartbeats sent after
    /// it was queued.
    pub fn expire_reads(&mut self, now: Instant, again: Duration, timeout_ms: u64) {
        self.reads.retain(|_, read| {
            if read.deadline > now {
                return true;
            }
            let reply = std::mem::replace(&mut read.reply, oneshot::channel().0);
            let _ = reply.send(Err(NodeError::Timeout(timeout_ms)));
            false
        });
        let stale: Vec<u64> = self
            .rounds
            .iter()
            .filter(|(_, round)| now.duration_since(round.asked) >= again)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(round) = self.rounds.remove(&id) {
                let waiting = round
                    .reads
                    .into_iter()
                    .filter(|r| self.reads.contains_key(r));
                self.unasked.extend(waiting);
            }
        }
        self.unasked.retain(|r| self.reads.contains_key(r));
    }

    /// Abandons every round in flight: their reads join the next round, asked under a
    /// new context (an answer to an abandoned round is ignored).
    pub fn abandon_rounds(&mut self) {
        for (_, round) in self.rounds.drain() {
            let waiting = round
                .reads
                .into_iter()
                .filter(|r| self.reads.contains_key(r));
            self.unasked.extend(waiting);
        }
    }

    /// Raft answered the round with context `ctx`: everything up to `index` is
    /// committed, and every read of the round may be served there. Contexts of other
    /// processes or other nodes, and of abandoned rounds, are ignored.
    pub fn read_ready(&mut self, ctx: &[u8], index: u64) {
        let (Some(nonce), Some(id)) = (ctx.get(..8), ctx.get(8..16)) else {
            return;
        };
        let word = |b: &[u8]| b.try_into().map(u64::from_le_bytes).unwrap_or(0);
        if ctx.len() != 16 || word(nonce) != self.read_nonce {
            return;
        }
        let Some(round) = self.rounds.remove(&word(id)) else {
            return;
        };
        for read in round.reads {
            if let Some(read) = self.reads.remove(&read) {
                let _ = read.reply.send(Ok(index));
            }
        }
    }

    /// Reads waiting, in a round or for one.
    #[cfg(test)]
    fn reads_waiting(&self) -> usize {
        self.reads.len()
    }

    /// Proposals whose entries the log no longer holds at their index and term (a
    /// later leader's log replaced them) can never be committed: answer them now with
    /// `Dropped` (safe to retry) instead of letting them wait for their timeout. Log
    /// matching makes this sound: had the new leader held such an entry, it would not
    /// have been replaced here.
    pub fn drop_replaced(&mut self, log: &raft::RaftLog<LogStore>) {
        drop_all(take_replaced(&mut self.writes, log));
        drop_all(take_replaced(&mut self.admin, log));
    }

    /// Answers whoever waits on entry `index` of `term`. Waiters at lower indexes, or
    /// at this index from another term, proposed entries another leader's log
    /// replaced: they get `Dropped`.
    pub fn resolve(
        &mut self,
        index: u64,
        term: u64,
        outcome: EntryOutcome,
        join_response: impl FnOnce(u64) -> pb::JoinResponse,
    ) {
        let (write, dropped) = settle(&mut self.writes, index, term);
        drop_all(dropped);
        let (admin, dropped) = settle(&mut self.admin, index, term);
        drop_all(dropped);
        let (join, dropped) = settle(&mut self.joins, index, term);
        drop_all(dropped.into_iter().map(|j| j.pending).collect());
        // One entry has at most one waiter.
        if let Some(p) = write {
            let commit = self.apply_started.saturating_duration_since(p.proposed);
            self.metrics.write_commit.observe(commit.as_secs_f64());
            let apply = self.apply_started.elapsed();
            self.metrics.write_apply.observe(apply.as_secs_f64());
            let (results, index, seconds) = match outcome {
                EntryOutcome::Write(applied) => {
                    (applied.results, applied.raft_index, applied.seconds)
                }
                _ => (Vec::new(), index, Vec::new()),
            };
            let _ = p.reply.send(Ok(Applied {
                index,
                results,
                seconds,
                answered: Instant::now(),
            }));
        } else if let Some(p) = admin {
            let result = match outcome {
                EntryOutcome::Registry(Err(e)) => Err(e.into()),
                EntryOutcome::Restore(Err(refusal)) => Err(match refusal {
                    sqlraft_sqlite::restore::RestoreRefusal::Conflict(m) => NodeError::Conflict(m),
                    sqlraft_sqlite::restore::RestoreRefusal::Invalid(m) => NodeError::Invalid(m),
                }),
                _ => Ok(AdminOutcome { index }),
            };
            let _ = p.reply.send(result);
        } else if let Some(j) = join {
            let _ = j.pending.reply.send(Ok(join_response(j.raft_id)));
        }
    }

    /// The apply transaction of the entries about to be resolved began at `at`.
    pub fn apply_started(&mut self, at: Instant) {
        self.apply_started = at;
    }

    /// Entries up to `index` were applied through a snapshot from the leader: their
    /// results are not known here. Proposals waiting on them get an unknown outcome.
    pub fn applied_by_snapshot(&mut self, index: u64) {
        let unknown = || {
            NodeError::UnknownOutcome(format!(
                "entries up to {index} arrived as a snapshot; the result is not known here"
            ))
        };
        let keep = index + 1;
        let later = self.writes.split_off(&keep);
        for (_, p) in std::mem::replace(&mut self.writes, later) {
            let _ = p.reply.send(Err(unknown()));
        }
        let later = self.admin.split_off(&keep);
        for (_, p) in std::mem::replace(&mut self.admin, later) {
            let _ = p.reply.send(Err(unknown()));
        }
        let later = self.joins.split_off(&keep);
        for (_, j) in std::mem::replace(&mut self.joins, later) {
            let _ = j.pending.reply.send(Err(unknown()));
        }
    }

    /// The loop stopped: proposals get an unknown outcome (they may still commit
    /// elsewhere), joins and reads `Stopped`.
    pub fn fail_all(&mut self) {
        let unknown = || NodeError::UnknownOutcome("node stopped".into());
        for (_, p) in std::mem::take(&mut self.writes) {
            let _ = p.reply.send(Err(unknown()));
        }
        for (_, p) in std::mem::take(&mut self.admin) {
            let _ = p.reply.send(Err(unknown()));
        }
        for (_, j) in std::mem::take(&mut self.joins) {
            let _ = j.pending.reply.send(Err(NodeError::Stopped));
        }
        for (_, p) in std::mem::take(&mut self.reads) {
            let _ = p.reply.send(Err(NodeError::Stopped));
        }
        self.unasked.clear();
        self.rounds.clear();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pending<T>(term: u64) -> (Pending<T>, oneshot::Receiver<Result<T>>) {
        let (reply, rx) = oneshot::channel();
        (
            Pending {
                term,
                reply,
                proposed: Instant::now(),
            },
            rx,
        )
    }

    /// A write applied at `index` with no statements.
    fn write_at(index: u64) -> EntryOutcome {
        EntryOutcome::Write(sqlraft_sqlite::WriteApplied {
            results: Vec::new(),
            raft_index: index,
            seconds: Vec::new(),
        })
    }

    #[test]
    fn an_applied_entry_answers_its_proposer_and_drops_replaced_ones_below_it() {
        let mut w = Waiters::new(crate::Metrics::new());
        let (replaced, mut replaced_rx) = pending::<Applied>(2);
        let (other_term, mut other_term_rx) = pending::<Applied>(2);
        let (mine, mut mine_rx) = pending::<Applied>(3);
        let (later, mut later_rx) = pending::<Applied>(3);
        w.write(4, replaced);
        w.write(5, other_term);
        w.write(6, mine);
        w.write(7, later);
        // Entry 5 came in term 3: the term-2 proposal at 5 was replaced.
        w.resolve(5, 3, EntryOutcome::Done, |_| unreachable!());
        assert!(matches!(
            replaced_rx.try_recv(),
            Ok(Err(NodeError::Dropped))
        ));
        assert!(matches!(
            other_term_rx.try_recv(),
            Ok(Err(NodeError::Dropped))
        ));
        w.resolve(6, 3, write_at(6), |_| unreachable!());
        assert!(matches!(
            mine_rx.try_recv(),
            Ok(Ok(Applied { index: 6, .. }))
        ));
        assert!(later_rx.try_recv().is_err(), "entry 7 is not applied yet");
        w.fail_all();
        assert!(matches!(
            later_rx.try_recv(),
            Ok(Err(NodeError::UnknownOutcome(_)))
        ));
    }

    #[test]
    fn a_repeated_request_is_answered_with_the_index_that_applied_it_first() {
        let mut w = Waiters::new(crate::Metrics::new());
        let (p, mut rx) = pending::<Applied>(1);
        w.write(9, p);
        w.resolve(9, 1, write_at(4), |_| unreachable!());
        assert!(matches!(rx.try_recv(), Ok(Ok(Applied { index: 4, .. }))));
    }

    fn read(w: &mut Waiters, deadline: Instant) -> oneshot::Receiver<Result<u64>> {
        let (reply, rx) = oneshot::channel();
        w.read(deadline, reply);
        rx
    }

    /// Found by the fault campaign (a paused, deposed leader answered reads at its old
    /// commit index): a read asked again must never reuse its context.
    #[test]
    fn a_read_asked_again_gets_a_fresh_context_and_its_old_one_is_ignored() {
        let mut w = Waiters::new(crate::Metrics::new());
        let start = Instant::now();
        let mut rx = read(&mut w, start + Duration::from_secs(5));
        let first = w.take_round(start).expect("a round");
        assert!(w.take_round(start).is_none(), "no read left unasked");
        let later = start + Duration::from_millis(500);
        w.expire_reads(later, Duration::from_millis(400), 5_000);
        let again = w.take_round(later).expect("asked again");
        assert_ne!(again, first, "the context was reused");
        // An answer to the first round does not answer the read.
        w.read_ready(&first, 7);
        assert!(rx.try_recv().is_err());
        w.read_ready(&again, 9);
        assert!(matches!(rx.try_recv(), Ok(Ok(9))));
        // Asked a third time, a third context.
        let _rx = read(&mut w, later + Duration::from_secs(5));
        let one = w.take_round(later).unwrap();
        w.expire_reads(
            later + Duration::from_millis(400),
            Duration::from_millis(400),
            5_000,
        );
        let two = w.take_round(later + Duration::from_millis(400)).unwrap();
        w.expire_reads(
            later + Duration::from_millis(800),
            Duration::from_millis(400),
            5_000,
        );
        let three = w.take_round(later + Duration::from_millis(800)).unwrap();
        assert!(one != two && two != three && one != three);
    }

    #[test]
    fn one_round_answers_every_read_registered_before_it_and_no_later_one() {
        let mut w = Waiters::new(crate::Metrics::new());
        let now = Instant::now();
        let deadline = now + Duration::from_secs(5);
        let mut early: Vec<_> = (0..5).map(|_| read(&mut w, deadline)).collect();
        let round = w.take_round(now).expect("a round");
        let mut late = read(&mut w, deadline);
        w.read_ready(&round, 42);
        for rx in &mut early {
            assert!(matches!(rx.try_recv(), Ok(Ok(42))));
        }
        assert!(
            late.try_recv().is_err(),
            "a later read waits for its own round"
        );
        let next = w.take_round(now).expect("the next round");
        assert_ne!(next, round);
        w.read_ready(&round, 43);
        assert!(
            late.try_recv().is_err(),
            "an answered round is not answered twice"
        );
        w.read_ready(&next, 44);
        assert!(matches!(late.try_recv(), Ok(Ok(44))));
        assert_eq!(w.reads_waiting(), 0);
    }

    #[test]
    fn reads_arriving_while_a_round_is_in_flight_share_the_next_one() {
        let mut w = Waiters::new(crate::Metrics::new());
        let now = Instant::now();
        let deadline = now + Duration::from_secs(5);
        let mut first = read(&mut w, deadline);
        let round = w.take_round(now).expect("a round");
        let mut later: Vec<_> = (0..3).map(|_| read(&mut w, deadline)).collect();
        assert!(
            w.take_round(now).is_none(),
            "a second round while one is in flight"
        );
        w.read_ready(&round, 7);
        assert!(matches!(first.try_recv(), Ok(Ok(7))));
        for rx in &mut later {
            assert!(
                rx.try_recv().is_err(),
                "answered by a round asked before it came"
            );
        }
        let next = w
            .take_round(now)
            .expect("the next round, once the first is answered");
        w.read_ready(&next, 8);
        for rx in &mut later {
            assert!(matches!(rx.try_recv(), Ok(Ok(8))));
        }
        // A round that is never answered holds the next one back only until abandoned.
        let mut stuck = read(&mut w, deadline);
        let lost = w.take_round(now).expect("a round");
        let mut behind = read(&mut w, deadline);
        assert!(w.take_round(now).is_none());
        let then = now + Duration::from_millis(500);
        w.expire_reads(then, Duration::from_millis(400), 5_000);
        let again = w
            .take_round(then)
            .expect("asked again after the round was abandoned");
        w.read_ready(&lost, 9);
        assert!(
            stuck.try_recv().is_err(),
            "the abandoned round's answer is ignored"
        );
        w.read_ready(&again, 10);
        assert!(matches!(stuck.try_recv(), Ok(Ok(10))));
        assert!(matches!(behind.try_recv(), Ok(Ok(10))));
        assert_eq!(w.reads_waiting(), 0);
    }

    /// A new term or leader abandons the rounds in flight at once (raft-rs forgot them):
    /// their reads are asked again under a new context, not after a timeout.
    #[test]
    fn abandoned_rounds_are_asked_again_at_once_under_a_new_context() {
        let mut w = Waiters::new(crate::Metrics::new());
        let now = Instant::now();
        let mut rx = read(&mut w, now + Duration::from_secs(5));
        let first = w.take_round(now).expect("a round");
        assert!(w.take_round(now).is_none());
        w.abandon_rounds();
        let again = w.take_round(now).expect("asked again at once");
        assert_ne!(again, first);
        w.read_ready(&first, 3);
        assert!(
            rx.try_recv().is_err(),
            "an abandoned round's answer is ignored"
        );
        w.read_ready(&again, 4);
        assert!(matches!(rx.try_recv(), Ok(Ok(4))));
        assert_eq!(w.reads_waiting(), 0);
    }

    #[test]
    fn reads_match_only_their_own_contexts_and_time_out() {
        let mut w = Waiters::new(crate::Metrics::new());
        let now = Instant::now();
        let mut rx = read(&mut w, now + Duration::from_secs(5));
        let ctx = w.take_round(now).unwrap();
        // Another process's context with the same id is ignored.
        let mut foreign = ctx.clone();
        foreign[0] ^= 1;
        w.read_ready(&foreign, 10);
        assert!(rx.try_recv().is_err());
        w.read_ready(&ctx, 10);
        assert!(matches!(rx.try_recv(), Ok(Ok(10))));

        let mut rx = read(&mut w, now + Duration::from_millis(10));
        let ctx = w.take_round(now).unwrap();
        w.expire_reads(now + Duration::from_millis(5), Duration::from_millis(1), 10);
        let ask = w
            .take_round(now + Duration::from_millis(5))
            .expect("asked again");
        assert_ne!(ask, ctx, "asked again under a new context");
        w.expire_reads(
            now + Duration::from_millis(20),
            Duration::from_millis(1),
            10,
        );
        assert!(w.take_round(now + Duration::from_millis(20)).is_none());
        assert!(matches!(rx.try_recv(), Ok(Err(NodeError::Timeout(10)))));
        assert_eq!(w.reads_waiting(), 0);
    }
}
