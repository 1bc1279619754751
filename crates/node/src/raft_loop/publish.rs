//! What the raft loop publishes after each turn: the status, who leads, the applied
//! index. The loop owns the senders; when it ends they close, and so does every
//! subscription.

use raft::StateRole;
use raft::eraftpb::ConfState;
use tokio::sync::watch;

use super::RaftLoop;
use crate::status::{Leadership, MemberStatus, Role, Status};

/// The loop's side of what it publishes.
pub(crate) struct Outbox {
    /// Sent only when something in it changed.
    pub status: watch::Sender<Status>,
    pub leadership: watch::Sender<Leadership>,
    pub applied: watch::Sender<u64>,
}

impl Outbox {
    /// Publishes a newly applied index, before any waiter on it is answered: once a
    /// write is acknowledged, this node's status shows it applied.
    pub fn applied(&self, index: u64) {
        self.applied.send_replace(index);
        self.status
            .send_modify(|status| status.applied_index = index);
    }

    fn status(&self, status: Status) {
        let leadership = Leadership {
            leader_id: (status.leader_id != raft::INVALID_ID).then_some(status.leader_id),
            term: status.term,
        };
        self.leadership.send_if_modified(|published| {
            let changed = *published != leadership;
            *published = leadership;
            changed
        });
        self.status.send_if_modified(|published| {
            let changed = *published != status;
            if changed {
                *published = status;
            }
            changed
        });
    }
}

impl RaftLoop {
    pub(super) fn publish(&self) {
        let raft = &self.raw.raft;
        let mut conf: ConfState = raft.prs().conf().to_conf_state();
        // raft-rs gives them in its sets' order.
        conf.voters.sort_unstable();
        conf.voters_outgoing.sort_unstable();
        conf.learners.sort_unstable();
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
            first_index: raft.raft_log.first_index(),
            log_bytes: raft.raft_log.store.size_bytes(),
            snapshot: self.snapshots.latest.clone(),
            snapshots_installed: self.snapshots.installed,
            voters: conf.voters,
            voters_outgoing: conf.voters_outgoing,
            learners: conf.learners,
            members,
        };
        self.outbox.status(status);
    }
}
