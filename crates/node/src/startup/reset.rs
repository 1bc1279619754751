//! Recovery with `raft/.reset` when the majority is lost.

use super::restore::restored_conf_state;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState,
};
use raft::{RawNode, Storage};
use sqlraft_log::LogStore;
use sqlraft_sqlite::StateMachine;

use crate::error::{Fatal, NodeError, Result};

/// A file in `raft/` that makes the node forget the other members at start.
pub(crate) const RESET_FILE: &str = ".reset";

/// Recovery when the majority is lost (`raft/.reset` present): this node forgets the
/// other members and becomes a one-node cluster with its data.
///
/// Like etcd's `--force-new-cluster`, it appends, in a new term, one simple
/// configuration change per other member (leaving a joint configuration first, and
/// promoting itself if it was a learner), and marks everything in its log committed:
/// entries it holds but never saw committed are kept. Each change is applied through
/// the normal apply path, so the members table and the services registry record the
/// others as removed. The file is consumed once the log is written.
pub(crate) fn reset_membership(
    log: &mut LogStore,
    sm: &StateMachine,
    me: u64,
    reset_file: &std::path::Path,
) -> Result<()> {
    // The configuration the log ends with: the state machine's, then every conf
    // change of the tail that is about to be marked committed.
    let mut scratch = ScratchConfig::new(restored_conf_state(log, sm)?, me)?;
    let last = log.last_index().unwrap_or(0);
    let mut index = sm.applied_index() + 1;
    while index <= last {
        let high = (index + 256).min(last + 1);
        let entries = log
            .entries(
                index,
                high,
                Some(16 << 20),
                raft::GetEntriesContext::empty(false),
            )
            .map_err(|e| Fatal::raft("cannot read the raft log", e))?;
        for entry in &entries {
            if let Some(cc) = conf_change_of(entry)? {
                // As in the apply path, a change raft refuses changes nothing.
                let _ = scratch.apply(&cc);
            }
        }
        index += entries.len().max(1) as u64;
    }

    let single = |change_type: ConfChangeType, node_id: u64| ConfChangeV2 {
        changes: vec![ConfChangeSingle {
            change_type: change_type as i32,
            node_id,
        }],
        ..Default::default()
    };
    let mut changes: Vec<ConfChangeV2> = Vec::new();
    let mut plan = |scratch: &mut ScratchConfig, cc: ConfChangeV2| -> Result<()> {
        scratch.apply(&cc)?;
        changes.push(cc);
        Ok(())
    };
    if !scratch.conf.voters_outgoing.is_empty() {
        plan(&mut scratch, ConfChangeV2::default())?;
    }
    if !scratch.conf.voters.contains(&me) {
        plan(&mut scratch, single(ConfChangeType::AddNode, me))?;
    }
    let others: Vec<u64> = scratch
        .conf
        .voters
        .iter()
        .chain(scratch.conf.learners.iter())
        .copied()
        .filter(|id| *id != me)
        .collect();
    for id in &others {
        plan(&mut scratch, single(ConfChangeType::RemoveNode, *id))?;
    }
    let end = &scratch.conf;
    if end.voters != [me] || !end.learners.is_empty() || !end.voters_outgoing.is_empty() {
        return Err(NodeError::from(Fatal::Invariant(format!(
            "raft/.reset: cannot reduce the configuration to this node alone (would end with \
             voters {:?}, learners {:?}); nothing was changed",
            end.voters, end.learners
        ))));
    }
    let last_term = log.term(last).unwrap_or(0);
    let term = log.hard_state().term.max(last_term) + 1;
    let entries: Vec<Entry> = changes
        .iter()
        .enumerate()
        .map(|(i, cc)| Entry {
            entry_type: EntryType::EntryConfChangeV2 as i32,
            term,
            index: last + 1 + i as u64,
            data: prost_011::Message::encode_to_vec(cc),
            ..Default::default()
        })
        .collect();
    let commit = last + entries.len() as u64;
    let hs = HardState {
        term,
        vote: me,
        commit,
    };
    log.write(&entries, Some(&hs), None)?;
    std::fs::remove_file(reset_file)
        .map_err(|e| Fatal::io(format!("cannot remove {}", reset_file.display()), e))?;
    if let Some(dir) = reset_file.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Fatal::io(format!("cannot sync {}", dir.display()), e))?;
    }
    tracing::warn!(removed = ?others, term, commit,
        "raft/.reset: this node forgot the other members and continues as a one-node cluster");
    Ok(())
}

/// A throwaway raft node on which configuration changes are tried out.
struct ScratchConfig {
    raw: RawNode<raft::storage::MemStorage>,
    conf: ConfState,
}

impl ScratchConfig {
    fn new(conf: ConfState, me: u64) -> Result<Self> {
        let storage = raft::storage::MemStorage::new_with_conf_state(conf.clone());
        let config = raft::Config {
            id: me,
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw =
            RawNode::new(&config, storage, &logger).map_err(|e| Fatal::raft("raft/.reset", e))?;
        Ok(ScratchConfig { raw, conf })
    }

    fn apply(&mut self, cc: &ConfChangeV2) -> Result<()> {
        self.conf = self
            .raw
            .apply_conf_change(cc)
            .map_err(|e| Fatal::raft("raft/.reset", e))?;
        Ok(())
    }
}

fn conf_change_of(entry: &Entry) -> Result<Option<ConfChangeV2>> {
    use raft_proto::ConfChangeI;
    let bad = |e: prost_011::DecodeError| {
        Fatal::corrupt(format!(
            "undecodable conf change at index {}: {e}",
            entry.index
        ))
    };
    Ok(match entry.get_entry_type() {
        EntryType::EntryConfChange => Some(
            <raft::eraftpb::ConfChange as prost_011::Message>::decode(entry.data.as_slice())
                .map_err(bad)?
                .into_v2(),
        ),
        EntryType::EntryConfChangeV2 => {
            Some(<ConfChangeV2 as prost_011::Message>::decode(entry.data.as_slice()).map_err(bad)?)
        }
        EntryType::EntryNormal => None,
    })
}
