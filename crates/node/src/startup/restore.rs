//! Rebuilding the raft node from the log and the state database at every start.

use raft::eraftpb::ConfState;
use raft::{RawNode, ReadOnlyOption, Storage};
use sqlraft_log::LogStore;
use sqlraft_sqlite::StateMachine;

use crate::config::NodeConfig;
use crate::error::{Fatal, NodeError, Result};
use crate::identity::Identity;
use crate::logger::raft_logger;
use crate::status::{Role, Status};

pub(crate) fn restore_raft(
    config: &NodeConfig,
    raft_id: u64,
    mut log: LogStore,
    sm: &StateMachine,
) -> Result<RawNode<LogStore>> {
    let applied = sm.applied_index();
    let last = log.last_index().unwrap_or(0);
    if applied > last {
        return Err(Fatal::corrupt(format!(
            "the state database has applied entry {applied} but the raft log ends at {last}: \
             the log in {} was truncated or replaced",
            log.path().display()
        )));
    }
    if applied > 0 {
        let cs = restored_conf_state(&log, sm)?;
        log.set_conf_state_unpersisted(cs);
        log.raise_commit_unpersisted(applied);
    }
    let commit = log.hard_state().commit;
    if commit > last {
        return Err(Fatal::corrupt(format!(
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
        max_committed_size_per_ready: timings.max_apply_batch_bytes,
        max_uncommitted_size: config.limits.max_uncommitted_bytes,
        // Shared by the loop instead (`RaftLoop::share_commit`).
        skip_bcast_commit: timings.commit_share_ms > 0,
        ..Default::default()
    };
    raft_config
        .validate()
        .map_err(|e| NodeError::Config(format!("raft configuration: {e}")))?;
    let mut raw = RawNode::new(&raft_config, log, &raft_logger())
        .map_err(|e| Fatal::raft("cannot start raft", e))?;
    let cs = raw.raft.prs().conf().to_conf_state();
    if cs.voters == [raft_id] && cs.learners.is_empty() {
        // A one-voter cluster need not wait for an election timeout.
        let _ = raw.campaign();
    }
    Ok(raw)
}

pub(crate) fn initial_status(identity: &Identity, applied: u64) -> Status {
    Status {
        raft_id: identity.raft_id,
        service_id: identity.service_id.clone(),
        role: Role::Joining,
        leader_id: 0,
        term: 0,
        commit_index: 0,
        leader_commit_index: 0,
        applied_index: applied,
        last_index: 0,
        first_index: 0,
        log_bytes: 0,
        snapshot: None,
        snapshots_installed: 0,
        voters: Vec::new(),
        voters_outgoing: Vec::new(),
        learners: Vec::new(),
        members: Vec::new(),
    }
}

/// The configuration a node restarts with: the state machine's as of its applied
/// index, or the log's when nothing was applied yet.
pub(super) fn restored_conf_state(log: &LogStore, sm: &StateMachine) -> Result<ConfState> {
    if sm.applied_index() == 0 {
        return Ok(log.conf_state().clone());
    }
    let bytes = sm
        .conf_state()?
        .ok_or_else(|| Fatal::corrupt("state database has applied entries but no configuration"))?;
    <ConfState as prost_011::Message>::decode(bytes.as_slice())
        .map_err(|e| Fatal::corrupt(format!("undecodable configuration in state database: {e}")))
}
