//! Applying committed entries to the state machine.

use prost::Message as _;
use prost_011::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType};
use raft_proto::ConfChangeI;
use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::{ApplyTxn, ServiceState, StatementResult};

use super::{EntryOutcome, RaftLoop};
use crate::error::{NodeError, Result};

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
        let me = self.raw.raft.id;
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut conf_changed = false;
        let mut txn = self.sm.begin()?;
        for entry in &entries {
            let outcome = match entry.get_entry_type() {
                EntryType::EntryNormal => apply_command(&mut txn, entry)?,
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let cc = decode_conf_change(entry)?;
                    let was_member = in_config(&self.raw.raft.prs().conf().to_conf_state(), me);
                    match self.raw.apply_conf_change(&cc) {
                        Ok(cs) => {
                            conf_changed = true;
                            txn.skip(entry.index)?;
                            txn.set_conf_state(&cs.encode_to_vec())?;
                            record_added_members(&mut txn, &cc)?;
                            // A member leaves the tables only once it is in no part of
                            // the configuration: a voter removed through a joint change
                            // still counts for the outgoing quorum until it is left.
                            for id in txn.member_ids()? {
                                if !in_config(&cs, id) {
                                    txn.remove_member(id)?;
                                }
                            }
                            txn.set_member_roles(&cs.voters, &cs.learners)?;
                            if was_member && !in_config(&cs, me) {
                                self.removed = true;
                            }
                            tracing::info!(index = entry.index, voters = ?cs.voters,
                                learners = ?cs.learners, joint = !cs.voters_outgoing.is_empty(),
                                "configuration changed");
                        }
                        Err(e) => {
                            txn.skip(entry.index)?;
                            tracing::warn!(index = entry.index, error = %e, "conf change not applied");
                        }
                    }
                    EntryOutcome::Done
                }
            };
            outcomes.push((entry.index, entry.term, outcome));
        }
        txn.commit()?;
        // Published before any waiter is answered: once a write is acknowledged, this
        // node's status shows it applied.
        self.shared.applied.send_replace(last_index);
        self.shared
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .applied_index = last_index;
        if conf_changed {
            self.reload_members()?;
        }
        for (index, term, outcome) in outcomes {
            self.resolve(index, term, outcome);
        }
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

fn apply_command(txn: &mut ApplyTxn<'_>, entry: &Entry) -> Result<EntryOutcome> {
    use pb::command::Kind;
    if entry.data.is_empty() {
        txn.skip(entry.index)?;
        return Ok(EntryOutcome::Done);
    }
    let command = match pb::Command::decode(entry.data.as_slice()) {
        Ok(command) => command,
        Err(e) => {
            // Deterministic: every node fails to decode it alike.
            tracing::error!(index = entry.index, error = %e, "undecodable entry skipped");
            txn.skip(entry.index)?;
            return Ok(EntryOutcome::Write(vec![StatementResult {
                error: Some(format!("undecodable entry: {e}")),
                ..Default::default()
            }]));
        }
    };
    Ok(match command.kind {
        Some(Kind::Write(write)) => EntryOutcome::Write(txn.write(entry.index, &write.into())?),
        Some(Kind::CreateService(c)) => EntryOutcome::Registry(
            txn.create_service(entry.index, &c.id, &c.fqdn, &c.raft_addr, c.at_unix_ms)?
                .map(|_| ()),
        ),
        Some(Kind::RemoveService(r)) => {
            EntryOutcome::Registry(txn.remove_created_service(entry.index, &r.id)?)
        }
        Some(Kind::Noop(_)) | None => {
            txn.skip(entry.index)?;
            EntryOutcome::Done
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
                .map_err(|e| NodeError::Fatal(format!("undecodable member in conf change: {e}")))?;
            if member.raft_id == change.node_id {
                txn.put_member(&member.into())?;
            }
        }
    }
    Ok(())
}
