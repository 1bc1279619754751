//! Starting a node: bootstrap, join, restart, and recovery with `raft/.reset`.

use std::time::{Duration, Instant};

use prost::Message as _;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState,
};
use raft::{RawNode, ReadOnlyOption, Storage};
use sqlraft_log::LogStore;
use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::{Member, StateMachine};
use sqlraft_transport::{Transport, TransportError};

use crate::config::NodeConfig;
use crate::error::{NodeError, Result};
use crate::identity::Identity;
use crate::logger::raft_logger;
use crate::status::{Role, Status};

/// A file in `raft/` that makes the node forget the other members at start.
pub(crate) const RESET_FILE: &str = ".reset";

pub(crate) fn validate(config: &NodeConfig) -> Result<()> {
    if config.service_id.trim().is_empty() {
        return Err(NodeError::Config("service id is empty".into()));
    }
    let t = &config.raft;
    if t.tick_ms == 0 || t.heartbeat_ticks == 0 || t.election_ticks <= t.heartbeat_ticks {
        return Err(NodeError::Config(
            "raft timings: tick_ms > 0 and election_ticks > heartbeat_ticks > 0".into(),
        ));
    }
    // One turn's log write holds at most a turn's budget plus the one item that
    // crossed it (a request, or a transport message of entries).
    let l = &config.limits;
    let largest_item = l.max_request_bytes.max(config.transport.max_message_bytes);
    let turn_write = l
        .max_turn_bytes
        .saturating_add(largest_item)
        .saturating_add(1 << 20);
    if turn_write > config.log.max_write_bytes {
        return Err(NodeError::Config(format!(
            "limits: max_turn_bytes ({}) plus the largest request or peer message ({largest_item}) \
             must fit in one log write (max_write_bytes {})",
            l.max_turn_bytes, config.log.max_write_bytes
        )));
    }
    Ok(())
}

/// Asks the cluster to admit this service, retrying while the cluster is busy or
/// unreachable; a refusal is final.
pub(crate) async fn join_cluster(
    transport: &Transport,
    addr: &str,
    config: &NodeConfig,
    raft_addr: &str,
) -> Result<(u64, Vec<Member>)> {
    let deadline = Instant::now() + Duration::from_millis(config.limits.join_timeout_ms);
    let request = pb::JoinRequest {
        service_id: config.service_id.clone(),
        raft_addr: raft_addr.to_string(),
        http_addr: config.http_addr.clone().unwrap_or_default(),
    };
    let mut pause = Duration::from_millis(100);
    loop {
        let error = match transport.join(addr, request.clone()).await {
            Ok(response) if response.raft_id > 0 => {
                tracing::info!(
                    raft_id = response.raft_id,
                    via = addr,
                    "admitted to the cluster"
                );
                for m in &response.members {
                    if m.raft_id != response.raft_id {
                        transport.set_peer(m.raft_id, &m.raft_addr)?;
                    }
                }
                return Ok((
                    response.raft_id,
                    response.members.into_iter().map(Into::into).collect(),
                ));
            }
            Ok(_) => "the cluster answered without a raft id".to_string(),
            Err(TransportError::Refused {
                code: tonic::Code::FailedPrecondition,
                message,
                ..
            }) => return Err(NodeError::Join(message)),
            Err(TransportError::Refused { message, .. })
                if message.starts_with(sqlraft_transport::REMOVED) =>
            {
                return Err(NodeError::Join(message));
            }
            Err(e @ TransportError::InvalidAddress { .. }) => {
                return Err(NodeError::Join(e.to_string()));
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() + pause > deadline {
            return Err(NodeError::Join(format!(
                "gave up after {} ms: {error}",
                config.limits.join_timeout_ms
            )));
        }
        tracing::info!(via = addr, %error, "join not possible yet, retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// A new cluster's first entry adds the first node as a voter and records who it is,
/// so every node that replays the log learns the first member like any other.
pub(crate) fn bootstrap(
    log: &mut LogStore,
    service_id: &str,
    raft_addr: &str,
    http_addr: &str,
) -> Result<()> {
    let member = pb::Member {
        raft_id: 1,
        service_id: service_id.to_string(),
        raft_addr: raft_addr.to_string(),
        http_addr: http_addr.to_string(),
    };
    let cc = ConfChangeV2 {
        changes: vec![ConfChangeSingle {
            change_type: ConfChangeType::AddNode as i32,
            node_id: 1,
        }],
        context: member.encode_to_vec(),
        ..Default::default()
    };
    let entry = Entry {
        entry_type: EntryType::EntryConfChangeV2 as i32,
        term: 1,
        index: 1,
        data: prost_011::Message::encode_to_vec(&cc),
        ..Default::default()
    };
    let hs = HardState {
        term: 1,
        vote: 0,
        commit: 1,
    };
    let cs = ConfState {
        voters: vec![1],
        ..Default::default()
    };
    log.write(&[entry], Some(&hs), Some(&cs))?;
    tracing::info!(service_id, raft_addr, "bootstrapped a new cluster");
    Ok(())
}

pub(crate) fn restore_raft(
    config: &NodeConfig,
    raft_id: u64,
    mut log: LogStore,
    sm: &StateMachine,
) -> Result<RawNode<LogStore>> {
    let applied = sm.applied_index();
    let last = log.last_index().unwrap_or(0);
    if applied > last {
        return Err(NodeError::Fatal(format!(
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
        return Err(NodeError::Fatal(format!(
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
        ..Default::default()
    };
    raft_config
        .validate()
        .map_err(|e| NodeError::Config(format!("raft configuration: {e}")))?;
    let mut raw = RawNode::new(&raft_config, log, &raft_logger())
        .map_err(|e| NodeError::Fatal(format!("cannot start raft: {e}")))?;
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
        voters: Vec::new(),
        learners: Vec::new(),
        members: Vec::new(),
    }
}

/// The configuration a node restarts with: the state machine's as of its applied
/// index, or the log's when nothing was applied yet.
fn restored_conf_state(log: &LogStore, sm: &StateMachine) -> Result<ConfState> {
    if sm.applied_index() == 0 {
        return Ok(log.conf_state().clone());
    }
    let bytes = sm.conf_state()?.ok_or_else(|| {
        NodeError::Fatal("state database has applied entries but no configuration".into())
    })?;
    <ConfState as prost_011::Message>::decode(bytes.as_slice())
        .map_err(|e| NodeError::Fatal(format!("undecodable configuration in state database: {e}")))
}

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
            .map_err(|e| NodeError::Fatal(format!("cannot read the raft log: {e}")))?;
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
        return Err(NodeError::Fatal(format!(
            "raft/.reset: cannot reduce the configuration to this node alone (would end with \
             voters {:?}, learners {:?}); nothing was changed",
            end.voters, end.learners
        )));
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
        .map_err(|e| NodeError::Fatal(format!("cannot remove {}: {e}", reset_file.display())))?;
    if let Some(dir) = reset_file.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| NodeError::Fatal(format!("cannot sync {}: {e}", dir.display())))?;
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
        let raw = RawNode::new(&config, storage, &logger)
            .map_err(|e| NodeError::Fatal(format!("raft/.reset: {e}")))?;
        Ok(ScratchConfig { raw, conf })
    }

    fn apply(&mut self, cc: &ConfChangeV2) -> Result<()> {
        self.conf = self
            .raw
            .apply_conf_change(cc)
            .map_err(|e| NodeError::Fatal(format!("raft/.reset: {e}")))?;
        Ok(())
    }
}

fn conf_change_of(entry: &Entry) -> Result<Option<ConfChangeV2>> {
    use raft_proto::ConfChangeI;
    let bad = |e: prost_011::DecodeError| {
        NodeError::Fatal(format!(
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
