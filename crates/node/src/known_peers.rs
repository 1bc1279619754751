//! What a node knows of the members' addresses beyond its applied state.
//!
//! The members table in the state database is authoritative, but it only holds what
//! this node has applied. A node that restarts behind the cluster (it was down while
//! members joined) or a learner restarted while catching up would otherwise have no
//! address for members its log already names, or for a leader it has yet to apply:
//! it could neither answer their votes and appends nor reach them. So at start a node
//! also takes the members named in the conf changes of its unapplied log tail and
//! those in `raft/peers`, which keeps the join answer and every address learned at
//! run time from a member's own messages (see `RaftLoop::learn_sender`).

use std::fs;
use std::path::Path;

use prost::Message as _;
use prost_011::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, EntryType};
use raft::{GetEntriesContext, Storage};
use raft_proto::ConfChangeI;
use sqlraft_log::LogStore;
use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::Member;

use crate::error::{Fatal, Result};

const KNOWN_PEERS_FILE: &str = "peers";
/// Bytes of log entries read at once while scanning the tail.
const SCAN_CHUNK_BYTES: u64 = 16 << 20;

/// Members named in `raft/peers`. The file is a hint: a damaged line is skipped.
pub(crate) fn load(raft_dir: &Path) -> Vec<Member> {
    let path = raft_dir.join(KNOWN_PEERS_FILE);
    let Ok(text) = fs::read_to_string(&path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let member = Member {
                raft_id: fields.next()?.parse().ok()?,
                service_id: fields.next()?.to_string(),
                raft_addr: fields.next()?.to_string(),
                http_addr: fields.next().unwrap_or_default().to_string(),
            };
            (member.raft_id > 0 && !member.raft_addr.is_empty()).then_some(member)
        })
        .collect()
}

/// Writes `raft/peers` atomically.
pub(crate) fn store(raft_dir: &Path, members: &[Member]) -> Result<()> {
    let clean = |s: &str| s.replace(['\t', '\n'], " ");
    let text: String = members
        .iter()
        .map(|m| {
            format!(
                "{}\t{}\t{}\t{}\n",
                m.raft_id,
                clean(&m.service_id),
                clean(&m.raft_addr),
                clean(&m.http_addr)
            )
        })
        .collect();
    crate::identity::write_atomically(raft_dir, KNOWN_PEERS_FILE, text.as_bytes())
}

/// Members added by the conf changes of the log after `applied` (their record travels
/// in the change's context), in log order.
pub(crate) fn from_log_tail(log: &LogStore, applied: u64) -> Result<Vec<Member>> {
    let failed = |e: raft::Error| Fatal::raft("cannot read the raft log", e);
    let last = log.last_index().map_err(failed)?;
    let mut members = Vec::new();
    let mut next = applied.max(log.first_index().map_err(failed)?.saturating_sub(1)) + 1;
    while next <= last {
        let entries = log
            .entries(
                next,
                last + 1,
                Some(SCAN_CHUNK_BYTES),
                GetEntriesContext::empty(false),
            )
            .map_err(failed)?;
        let Some(end) = entries.last().map(|e| e.index) else {
            break;
        };
        for entry in &entries {
            let context = match entry.get_entry_type() {
                EntryType::EntryNormal => continue,
                EntryType::EntryConfChange => ConfChange::decode(entry.data.as_slice())
                    .map(|cc| cc.into_v2().context)
                    .ok(),
                EntryType::EntryConfChangeV2 => ConfChangeV2::decode(entry.data.as_slice())
                    .map(|cc| cc.context)
                    .ok(),
            };
            if let Some(member) = context
                .filter(|c| !c.is_empty())
                .and_then(|c| pb::Member::decode(c.as_slice()).ok())
                .filter(|m| m.raft_id > 0 && !m.raft_addr.is_empty())
            {
                members.push(member.into());
            }
        }
        next = end + 1;
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{ConfChangeSingle, ConfChangeType, Entry};

    fn member(id: u64) -> Member {
        Member {
            raft_id: id,
            service_id: format!("service-{id}"),
            raft_addr: format!("127.0.0.{id}:7209"),
            http_addr: String::new(),
        }
    }

    fn conf_entry(index: u64, added: &Member) -> Entry {
        let cc = ConfChangeV2 {
            changes: vec![ConfChangeSingle {
                change_type: ConfChangeType::AddLearnerNode as i32,
                node_id: added.raft_id,
            }],
            context: pb::Member::from(added).encode_to_vec(),
            ..Default::default()
        };
        let mut entry = Entry {
            index,
            term: 1,
            data: cc.encode_to_vec(),
            ..Default::default()
        };
        entry.set_entry_type(EntryType::EntryConfChangeV2);
        entry
    }

    #[test]
    fn the_unapplied_log_tail_names_its_members() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogStore::open(dir.path(), Default::default()).expect("log");
        let normal = Entry {
            index: 2,
            term: 1,
            data: b"x".to_vec(),
            ..Default::default()
        };
        let entries = vec![
            conf_entry(1, &member(1)),
            normal,
            conf_entry(3, &member(4)),
            conf_entry(4, &member(5)),
        ];
        log.write(&entries, None, None).expect("write");
        assert_eq!(
            from_log_tail(&log, 0).expect("scan"),
            vec![member(1), member(4), member(5)]
        );
        assert_eq!(
            from_log_tail(&log, 3).expect("scan"),
            vec![member(5)],
            "applied entries are the state machine's business"
        );
    }

    #[test]
    fn known_peers_survive_a_restart_and_damage_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        store(dir.path(), &[member(2), member(3)]).expect("store");
        assert_eq!(load(dir.path()), vec![member(2), member(3)]);
        std::fs::write(
            dir.path().join(KNOWN_PEERS_FILE),
            "2\tservice-2\t127.0.0.2:7209\t\ngarbage\n0\tx\t\t\n",
        )
        .expect("damage");
        assert_eq!(load(dir.path()), vec![member(2)]);
    }
}
