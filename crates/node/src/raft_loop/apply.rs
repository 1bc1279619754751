//! Applying committed entries to the state machine.

use prost::Message as _;
use prost_011::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType};
use raft_proto::ConfChangeI;
use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::{ApplyTxn, ServiceState, SqliteError, StatementResult, WriteRequest};

use super::{EntryOutcome, RaftLoop};
use crate::error::{Fatal, NodeError, Result};

impl RaftLoop {
    /// Applies committed entries in one SQLite transaction, then answers the waiting
    /// proposers.
    pub(super) fn apply(&mut self, entries: Vec<Entry>) -> Result<()> {
        let applied_before = self.sm.applied_index();
        let entries: Vec<Entry> = entries
            .into_iter()
            .filter(|e| e.index > applied_before)
            .collect();
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let last_index = last.index;
        let mut conf_changed = false;
        let mut steps = Vec::with_capacity(entries.len());
        for entry in &entries {
            let step = self.decode_step(entry)?;
            conf_changed |= matches!(step, Step::Conf { cs: Some(_), .. });
            steps.push((entry.index, entry.term, step));
        }
        let started = std::time::Instant::now();
        let outcomes = self.run_steps(&mut steps)?;
        self.metrics.apply.observe(started.elapsed().as_secs_f64());
        self.metrics.apply_batch.observe(steps.len() as f64);
        self.waiters.apply_started(started);
        // Published before any waiter is answered: once a write is acknowledged, this
        // node's status shows it applied.
        self.outbox.applied(last_index);
        if conf_changed {
            self.reload_members()?;
        }
        for ((index, term, _), outcome) in steps.iter().zip(outcomes) {
            self.resolve(*index, *term, outcome);
        }
        Ok(())
    }

    /// What an entry asks of the state machine. Conf changes are applied to raft here,
    /// once; what they change in the state database is kept for `run_steps`.
    fn decode_step(&mut self, entry: &Entry) -> Result<Step> {
        use pb::command::Kind;
        if entry.get_entry_type() != EntryType::EntryNormal {
            let cc = decode_conf_change(entry)?;
            let me = self.raw.raft.id;
            let was_member = in_config(&self.raw.raft.prs().conf().to_conf_state(), me);
            let cs = match self.raw.apply_conf_change(&cc) {
                Ok(cs) => {
                    tracing::info!(index = entry.index, voters = ?cs.voters,
                        learners = ?cs.learners, joint = !cs.voters_outgoing.is_empty(),
                        "configuration changed");
                    if was_member && !in_config(&cs, me) {
                        self.removed = true;
                    }
                    Some(cs)
                }
                Err(e) => {
                    tracing::warn!(index = entry.index, error = %e, "conf change not applied");
                    None
                }
            };
            return Ok(Step::Conf { cc, cs });
        }
        if entry.data.is_empty() {
            return Ok(Step::Skip);
        }
        Ok(match pb::Command::decode(entry.data.as_slice()) {
            Ok(pb::Command {
                kind: Some(Kind::Write(write)),
            }) => Step::Write {
                at_unix_ms: write.at_unix_ms,
                request: write.into(),
                failed: Vec::new(),
                reruns: 0,
            },
            Ok(pb::Command {
                kind: Some(Kind::CreateService(c)),
            }) => Step::CreateService(c),
            Ok(pb::Command {
                kind: Some(Kind::RemoveService(r)),
            }) => Step::RemoveService(r.id),
            Ok(pb::Command {
                kind: Some(Kind::RestoreChunk(c)),
            }) => Step::RestoreChunk(c),
            Ok(pb::Command {
                kind: Some(Kind::RestoreCommit(c)),
            }) => Step::RestoreCommit(sqlraft_sqlite::restore::RestoreCommit {
                id: c.id,
                chunks: c.chunks,
                size: c.size,
                sha256: c.sha256,
            }),
            Ok(_) => Step::Skip,
            // Deterministic: every node fails to decode it alike.
            Err(e) => Step::Failed(format!("undecodable entry: {e}")),
        })
    }

    /// Runs the steps: in one SQLite transaction per run of steps between restore
    /// commits, each of which is applied on its own (it replaces the content in a
    /// transaction of its own).
    fn run_steps(&mut self, steps: &mut [(u64, u64, Step)]) -> Result<Vec<EntryOutcome>> {
        let mut outcomes = Vec::with_capacity(steps.len());
        let mut start = 0;
        while start < steps.len() {
            let end = steps[start..]
                .iter()
                .position(|(_, _, s)| matches!(s, Step::RestoreCommit(_)))
                .map_or(steps.len(), |k| start + k);
            if end > start {
                outcomes.extend(self.run_batch(&mut steps[start..end])?);
            }
            if let Some((index, term, Step::RestoreCommit(commit))) = steps.get(end) {
                let outcome = self
                    .sm
                    .restore_content(*index, *term, commit)
                    .map_err(NodeError::from)?;
                match &outcome {
                    Ok(tables) => tracing::warn!(
                        index,
                        tables,
                        "the replicated content was restored from a backup"
                    ),
                    Err(reason) => {
                        tracing::warn!(index, %reason, "a restore failed; nothing changed")
                    }
                }
                outcomes.push(EntryOutcome::Restore(outcome));
            }
            start = end + 1;
        }
        Ok(outcomes)
    }

    /// Runs the steps in as few SQLite transactions as it may, each committed with its
    /// applied index: a transaction ends early only after an entry that wrote a
    /// virtual table ([`sqlraft_sqlite::ApplyTxn::must_commit`]), so that such
    /// transactions are the same on every node however the entries were batched.
    fn run_batch(&mut self, steps: &mut [(u64, u64, Step)]) -> Result<Vec<EntryOutcome>> {
        let mut outcomes = Vec::with_capacity(steps.len());
        while outcomes.len() < steps.len() {
            let done = outcomes.len();
            outcomes.extend(self.run_transaction(&mut steps[done..])?);
        }
        Ok(outcomes)
    }

    /// Runs the first steps in one SQLite transaction and commits it with the applied
    /// index: all of them, or up to the first that makes the transaction end. Returns
    /// one outcome per step run. When a statement makes SQLite roll the whole
    /// transaction back, its entry is recorded as failed and the transaction runs
    /// again: apply is deterministic, so the other entries give the same results (and
    /// end it at the same step) the second time.
    fn run_transaction(&mut self, steps: &mut [(u64, u64, Step)]) -> Result<Vec<EntryOutcome>> {
        // After an entry rolled the transaction back, the transaction ends with it:
        // the entries before it run again once, not once per later abort (found by a
        // review: a catching-up follower took quadratic time over many aborts).
        let mut end = steps.len();
        // Whether the batch was applied again after a statement kept prepared was
        // compiled again as it ran (`SqliteError::PreparedAgain`): the reopened
        // connection keeps no statement prepared, and neither does one reopened after
        // that for this batch (found by a review), so it cannot happen twice.
        let mut prepared_again = false;
        'batch: loop {
            let mut txn = self.sm.begin()?;
            let mut outcomes = Vec::with_capacity(end);
            for (k, (index, term, step)) in steps[..end].iter().enumerate() {
                let outcome = match run_step(&mut txn, *index, step) {
                    Err(NodeError::Query(
                        aborted @ (SqliteError::BatchAborted(_)
                        | SqliteError::StatementsAborted { .. }),
                    )) => {
                        let index = *index;
                        drop(txn);
                        self.run_again(index, &mut steps[k].2, aborted, false, prepared_again)?;
                        end = k + 1;
                        continue 'batch;
                    }
                    Err(NodeError::Query(SqliteError::PreparedAgain)) if !prepared_again => {
                        tracing::error!(
                            index,
                            "a statement kept prepared was compiled again as it ran; \
                             the batch is applied again on a new connection, which \
                             keeps no client statement prepared"
                        );
                        prepared_again = true;
                        drop(txn);
                        self.sm.reopen_keeping_nothing()?;
                        continue 'batch;
                    }
                    other => other?,
                };
                outcomes.push(outcome);
                txn.set_term(*term);
                if txn.must_commit() {
                    break;
                }
            }
            match txn.commit() {
                // The last entry run made the commit fail (see `ApplyTxn::commit`).
                Err(
                    aborted
                    @ (SqliteError::BatchAborted(_) | SqliteError::StatementsAborted { .. }),
                ) if !outcomes.is_empty() => {
                    let k = outcomes.len() - 1;
                    self.run_again(steps[k].0, &mut steps[k].2, aborted, true, prepared_again)?;
                    end = k + 1;
                    continue 'batch;
                }
                committed => {
                    committed?;
                }
            }
            return Ok(outcomes);
        }
    }

    /// Entry `index` rolled its batch back (`aborted`, while it ran or `at_commit`): the
    /// connection is reopened, so that what it keeps in memory of the rolled-back
    /// statements goes too, on every node alike, and `step` becomes what the entry is
    /// applied as next: without the statements `StatementsAborted` names (see
    /// [`rerun_without`]), or failed whole. `keeping_nothing`: the batch ended in
    /// `PreparedAgain` before, and the new connection keeps no client statement
    /// prepared either.
    fn run_again(
        &mut self,
        index: u64,
        step: &mut Step,
        aborted: SqliteError,
        at_commit: bool,
        keeping_nothing: bool,
    ) -> Result<()> {
        if keeping_nothing {
            self.sm.reopen_keeping_nothing()?;
        } else {
            self.sm.reopen()?;
        }
        let taken = std::mem::replace(step, Step::Skip);
        *step = match aborted {
            SqliteError::StatementsAborted { failed } => rerun_without(index, taken, failed),
            SqliteError::BatchAborted(message) => {
                tracing::warn!(index, at_commit, %message, "entry rolled the batch back; recorded as failed");
                failed_step(taken, message)
            }
            other => return Err(other.into()),
        };
        Ok(())
    }

    /// Re-reads the members after a configuration change and updates the transport
    /// and the set of removed ids.
    pub(super) fn reload_members(&mut self) -> Result<()> {
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
        self.prune_known();
        self.publish_identities();
        let removed = self
            .sm
            .services()?
            .into_iter()
            .filter(|s| s.state == ServiceState::Removed)
            .filter_map(|s| s.raft_id)
            .collect();
        if let Ok(mut set) = self.shared.removed.write() {
            *set = removed;
        }
        Ok(())
    }
}

/// What one committed entry does to the state database.
pub(super) enum Step {
    Write {
        request: WriteRequest,
        /// The leader's clock when it proposed the entry.
        at_unix_ms: i64,
        /// Statements answered by their errors without running: they failed after
        /// writing a virtual table ([`SqliteError::StatementsAborted`]).
        failed: Vec<(usize, String)>,
        /// Runs of the entry that ended in `StatementsAborted` so far (see
        /// [`rerun_without`]).
        reruns: u8,
    },
    CreateService(pb::CreateService),
    RemoveService(String),
    RestoreChunk(pb::RestoreChunk),
    /// Applied on its own, outside a batch (see `run_steps`).
    RestoreCommit(sqlraft_sqlite::restore::RestoreCommit),
    /// A conf change; `cs` is the configuration after it, `None` if raft refused it.
    Conf {
        cc: ConfChangeV2,
        cs: Option<ConfState>,
    },
    /// Counts as applied and changes nothing.
    Skip,
    /// Changes nothing; the message is its result.
    Failed(String),
    /// A write that rolled its batch back: changes nothing but its request id, which
    /// is remembered with the message as its result.
    FailedWrite {
        request: WriteRequest,
        message: String,
    },
}

/// What write `step` is run with next after its run found the statements `more`, which
/// must fail without running ([`SqliteError::StatementsAborted`]): see
/// [`sqlraft_sqlite::leave_out`]; past its runs, the entry fails whole.
fn rerun_without(index: u64, step: Step, more: Vec<(usize, String)>) -> Step {
    let first = more.first().cloned().unwrap_or_default();
    let mut runs = 1;
    let step = match step {
        Step::Write {
            request,
            at_unix_ms,
            mut failed,
            reruns,
        } => {
            if sqlraft_sqlite::leave_out(&mut failed, reruns, more, &request) {
                tracing::warn!(
                    index,
                    run = reruns + 1,
                    first = %first.1,
                    "statements failed in a way a savepoint cannot undo (a virtual table written, a batched request past its step budget); their entry is applied again without them"
                );
                return Step::Write {
                    request,
                    at_unix_ms,
                    failed,
                    reruns: reruns + 1,
                };
            }
            runs = reruns + 1;
            Step::Write {
                request,
                at_unix_ms,
                failed,
                reruns,
            }
        }
        step => step,
    };
    let message = format!(
        "statement {} failed: {}; the entry was applied {} times, each time without \
         the statements that failed in a way a savepoint cannot undo (a write to a \
         virtual table, a batched request past its step budget), and such failures \
         went on: nothing of the request was applied",
        first.0 + 1,
        first.1,
        runs
    );
    tracing::warn!(index, %message, "entry failed whole");
    failed_step(step, message)
}

/// What `step` becomes when it rolled its batch back with `message`.
fn failed_step(step: Step, message: String) -> Step {
    match step {
        Step::Write { request, .. } => Step::FailedWrite { request, message },
        _ => Step::Failed(message),
    }
}

fn run_step(txn: &mut ApplyTxn<'_>, index: u64, step: &Step) -> Result<EntryOutcome> {
    Ok(match step {
        Step::Write {
            request,
            at_unix_ms,
            failed,
            ..
        } => {
            let applied = txn.write_request_failing(index, *at_unix_ms, request, failed)?;
            EntryOutcome::Write(applied)
        }
        Step::CreateService(c) => EntryOutcome::Registry(
            txn.create_service(index, &c.id, &c.fqdn, &c.raft_addr, c.at_unix_ms)?
                .map(|_| ()),
        ),
        Step::RemoveService(id) => EntryOutcome::Registry(txn.remove_created_service(index, id)?),
        Step::RestoreChunk(c) => {
            txn.stage_restore_chunk(index, &c.id, c.seq, &c.data)?;
            EntryOutcome::Done
        }
        Step::RestoreCommit(_) => {
            return Err(Fatal::Invariant("a restore commit inside a batch".into()).into());
        }
        Step::Conf { cc, cs } => {
            txn.skip(index)?;
            if let Some(cs) = cs {
                txn.set_conf_state(&cs.encode_to_vec())?;
                record_added_members(txn, cc)?;
                // A member leaves the tables only once it is in no part of the
                // configuration: a voter removed through a joint change still counts
                // for the outgoing quorum until it is left.
                for id in txn.member_ids()? {
                    if !in_config(cs, id) {
                        txn.remove_member(id)?;
                    }
                }
                txn.set_member_roles(&cs.voters, &cs.learners)?;
            }
            EntryOutcome::Done
        }
        Step::Skip => {
            txn.skip(index)?;
            EntryOutcome::Done
        }
        Step::FailedWrite { request, message } => {
            EntryOutcome::Write(txn.fail_request(index, request, message)?)
        }
        Step::Failed(message) => {
            txn.skip(index)?;
            EntryOutcome::Write(sqlraft_sqlite::WriteApplied {
                results: vec![StatementResult {
                    error: Some(message.clone()),
                    ..Default::default()
                }],
                raft_index: index,
                seconds: Vec::new(),
            })
        }
    })
}

/// Whether `id` takes any part in the configuration, joint halves included.
fn in_config(cs: &ConfState, id: u64) -> bool {
    cs.voters.contains(&id)
        || cs.learners.contains(&id)
        || cs.voters_outgoing.contains(&id)
        || cs.learners_next.contains(&id)
}

fn decode_conf_change(entry: &Entry) -> Result<ConfChangeV2> {
    let fatal = |e: prost_011::DecodeError| {
        Fatal::corrupt(format!(
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

/// Records an added node: its service id and address travel in the conf change's
/// context.
fn record_added_members(txn: &mut ApplyTxn<'_>, cc: &ConfChangeV2) -> Result<()> {
    if cc.context.is_empty() {
        return Ok(());
    }
    for change in &cc.changes {
        if matches!(
            change.get_change_type(),
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode
        ) {
            let member = pb::Member::decode(cc.context.as_slice())
                .map_err(|e| Fatal::corrupt(format!("undecodable member in conf change: {e}")))?;
            if member.raft_id == change.node_id {
                txn.put_member(&member.into())?;
            }
        }
    }
    Ok(())
}
