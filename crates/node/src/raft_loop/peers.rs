//! Learning members' addresses from their own messages.

use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::Member;

use super::RaftLoop;
use crate::known_peers;

impl RaftLoop {
    /// A batch of raft messages named its sender. When the applied state does not
    /// know that member (this node is behind: it restarted after members joined, or it
    /// is a learner catching up), its address is taken from the batch, so that its
    /// votes and appends can be answered. Only from a sender whose messages are of
    /// this node's term or later: a member of the current configuration, not an old
    /// one. The applied state stays authoritative; removed members are refused before
    /// this (their messages never reach the loop).
    pub(super) fn learn_sender(&mut self, sender: pb::Member, term: u64) {
        let id = sender.raft_id;
        if id == self.raw.raft.id
            || id == raft::INVALID_ID
            || sender.raft_addr.is_empty()
            || term < self.raw.raft.term
            || self.members.contains_key(&id)
            || self.shared.is_removed(id)
            || self.transport.peer_addr(id).as_deref() == Some(sender.raft_addr.as_str())
        {
            return;
        }
        if let Err(e) = self.transport.set_peer(id, &sender.raft_addr) {
            tracing::warn!(raft_id = id, addr = %sender.raft_addr, error = %e,
                "a member named itself with an unusable address");
            return;
        }
        tracing::info!(raft_id = id, addr = %sender.raft_addr, term,
            "learned a member's address from its messages");
        self.known.insert(id, Member::from(sender));
        self.store_known();
    }

    /// True when raft id `from` is service `caller` (the service a TLS certificate
    /// names): by the applied state, else by what this node learned, else (a member it
    /// does not know yet) by the batch's own sender record, which the transport
    /// checked against the certificate.
    pub(super) fn speaks_for(&self, caller: &str, from: u64, sender: Option<&pb::Member>) -> bool {
        match self.members.get(&from).or_else(|| self.known.get(&from)) {
            Some(member) => member.service_id == caller,
            None => sender.is_some_and(|s| s.raft_id == from && s.service_id == caller),
        }
    }

    /// Forgets hints about members the applied state now knows or has removed.
    pub(super) fn prune_known(&mut self) {
        let before = self.known.len();
        let removed: Vec<u64> = self
            .known
            .keys()
            .copied()
            .filter(|id| self.shared.is_removed(*id))
            .collect();
        for id in removed {
            self.known.remove(&id);
            self.transport.remove_peer(id);
        }
        let members = &self.members;
        self.known.retain(|id, _| !members.contains_key(id));
        if self.known.len() != before {
            self.store_known();
        }
    }

    fn store_known(&self) {
        let known: Vec<Member> = self.known.values().cloned().collect();
        if let Err(e) = known_peers::store(&self.raft_dir, &known) {
            // A hint only: the address is in use now; a restart may have to learn it again.
            tracing::warn!(error = %e, "cannot keep learned member addresses");
        }
    }
}
