//! Membership and the services registry: joins, promotions, removals.

use prost::Message as _;
use raft::eraftpb::{ConfChangeV2, ConfState};
use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::Member;
use tokio::sync::oneshot;

use super::waiters::{Pending, PendingJoin};
use super::{AdminOutcome, RaftLoop};
use crate::error::{NodeError, Result};
use crate::membership::admission::{self, AdmissionInput, Admit};
use crate::membership::removal::{self, Removal, RemovalInput};
use crate::membership::{self, PromotionInput};

impl RaftLoop {
    pub(super) fn join(
        &mut self,
        request: pb::JoinRequest,
        reply: oneshot::Sender<Result<pb::JoinResponse>>,
    ) {
        match self.admit(&request) {
            Ok(Some(raft_id)) => {
                let index = self.raw.raft.raft_log.last_index();
                let pending = Pending {
                    term: self.raw.raft.term,
                    reply,
                    proposed: std::time::Instant::now(),
                };
                self.waiters.join(index, PendingJoin { raft_id, pending });
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
        if !self.is_leader() {
            return Err(NodeError::NoLeader);
        }
        let conf = self.conf_state();
        let registry = self.sm.services()?;
        let members: Vec<Member> = self.members.values().cloned().collect();
        let highest_raft_id = self
            .members
            .keys()
            .chain(conf.voters.iter())
            .chain(conf.learners.iter())
            .copied()
            .chain(registry.iter().filter_map(|s| s.raft_id))
            .max()
            .unwrap_or(0);
        let input = AdmissionInput {
            members: &members,
            registered: registry.iter().find(|s| s.id == request.service_id),
            admission: self.admission,
            change_in_progress: self.raw.raft.has_pending_conf()
                || self.waiters.joins_waiting()
                || !conf.voters_outgoing.is_empty(),
            highest_raft_id,
        };
        let raft_id = match admission::admit(&request.service_id, &request.raft_addr, &input)? {
            Admit::AlreadyMember => return Ok(None),
            Admit::AsLearner { raft_id } => raft_id,
        };
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

    pub(super) fn join_response(&self, raft_id: u64) -> pb::JoinResponse {
        super::join_response(&self.members, raft_id)
    }

    fn conf_state(&self) -> ConfState {
        self.raw.raft.prs().conf().to_conf_state()
    }

    pub(super) fn admin(
        &mut self,
        request: pb::AdminRequest,
        reply: oneshot::Sender<Result<AdminOutcome>>,
    ) {
        use pb::admin_request::Kind;
        if !self.is_leader() {
            let _ = reply.send(Err(NodeError::NoLeader));
            return;
        }
        match request.kind {
            Some(Kind::CreateService(create)) => {
                let command = pb::Command {
                    kind: Some(pb::command::Kind::CreateService(create)),
                };
                if let Some((index, pending)) = self.propose_entry(command.encode_to_vec(), reply) {
                    self.waiters.admin(index, pending);
                }
            }
            Some(Kind::RemoveService(id)) => self.remove_service(&id, reply),
            Some(Kind::RestoreChunk(chunk)) => {
                let command = pb::Command {
                    kind: Some(pb::command::Kind::RestoreChunk(chunk)),
                };
                if let Some((index, pending)) = self.propose_entry(command.encode_to_vec(), reply) {
                    self.waiters.admin(index, pending);
                }
            }
            Some(Kind::RestoreCommit(commit)) => {
                let command = pb::Command {
                    kind: Some(pb::command::Kind::RestoreCommit(commit)),
                };
                if let Some((index, pending)) = self.propose_entry(command.encode_to_vec(), reply) {
                    self.waiters.admin(index, pending);
                }
            }
            Some(Kind::TransferLeader(to)) => {
                let to = if to == 0 { self.successor() } else { Some(to) };
                match to {
                    Some(to) => {
                        tracing::info!(to, "handing leadership over");
                        self.raw.transfer_leader(to);
                        let _ = reply.send(Ok(AdminOutcome { index: 0 }));
                    }
                    None => {
                        let _ = reply.send(Err(NodeError::Invalid(
                            "no other voter is reachable to take over leadership".into(),
                        )));
                    }
                }
            }
            None => {
                let _ = reply.send(Err(NodeError::Invalid("empty admin request".into())));
            }
        }
    }

    /// The voter best placed to take over leadership: another voter that answered within
    /// the last election timeout (check-quorum keeps that up to date), the one holding
    /// the most of the log. `None` when there is none.
    fn successor(&self) -> Option<u64> {
        let me = self.raw.raft.id;
        let voters = self.conf_state().voters;
        self.raw
            .raft
            .prs()
            .iter()
            .filter(|(id, p)| **id != me && voters.contains(id) && p.recent_active)
            .max_by_key(|(id, p)| (p.matched, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }

    /// Removes a service: a created one is marked removed; a member leaves the
    /// configuration (a voter whose removal would leave an even number of voters takes
    /// another voter down to learner in the same joint change). The leader itself
    /// hands leadership over first; the caller retries with the new leader.
    fn remove_service(&mut self, id: &str, reply: oneshot::Sender<Result<AdminOutcome>>) {
        let plan = match self.removal_plan(id) {
            Ok(plan) => plan,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let cc = match plan {
            Removal::Registry => {
                let command = pb::Command {
                    kind: Some(pb::command::Kind::RemoveService(pb::RemoveService {
                        id: id.to_string(),
                        at_unix_ms: now_unix_ms(),
                    })),
                };
                if let Some((index, pending)) = self.propose_entry(command.encode_to_vec(), reply) {
                    self.waiters.admin(index, pending);
                }
                return;
            }
            Removal::HandOver { to } => {
                tracing::info!(to, "handing leadership over before removing this node");
                self.raw.transfer_leader(to);
                let _ = reply.send(Err(NodeError::LeaderChanging));
                return;
            }
            Removal::Conf { raft_id, demote } => {
                tracing::info!(raft_id, ?demote, service_id = id, "proposing removal");
                membership::remove(raft_id, demote)
            }
        };
        match self.raw.propose_conf_change(Vec::new(), cc) {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                let pending = Pending {
                    term: self.raw.raft.term,
                    reply,
                    proposed: std::time::Instant::now(),
                };
                self.waiters.admin(index, pending);
            }
            Err(e) => {
                let _ = reply.send(Err(NodeError::Invalid(format!("conf change refused: {e}"))));
            }
        }
    }

    fn removal_plan(&self, id: &str) -> Result<Removal> {
        let service = self.sm.service(id)?;
        let matched: Vec<(u64, u64)> = self
            .raw
            .raft
            .prs()
            .iter()
            .map(|(id, p)| (*id, p.matched))
            .collect();
        removal::plan(
            id,
            &RemovalInput {
                service: service.as_ref(),
                conf: &self.conf_state(),
                me: self.raw.raft.id,
                pending_conf: self.raw.raft.has_pending_conf(),
                matched: &matched,
            },
        )
    }

    /// Leader only: leave a joint configuration left behind by a previous leader, and
    /// promote learners when that keeps the voter count odd.
    pub(super) fn manage_membership(&mut self) {
        if self.raw.raft.has_pending_conf() {
            return;
        }
        let conf = self.conf_state();
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
}

pub(crate) fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
