//! Learning members' addresses from their own messages.

use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::Member;

use super::RaftLoop;
use crate::known_peers;

/// How long a raft id found untrusted stays so before it is checked (and asked about)
/// again.
const STRANGER_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

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
        self.publish_identities();
    }

    /// True when raft id `from` is service `caller` (the service a TLS certificate
    /// names): by the applied state, else by what this node learned from trusted
    /// sources, else (a member that joined after this node's applied state) by the
    /// services registry: `caller` joined with raft id `from` and is not removed. A
    /// batch's own sender record is never enough: a certificate of a service that was
    /// created but never joined (or was removed) could claim any raft id with it
    /// (found by a review: such a claim got entries applied on a follower). The
    /// registry (a query on this thread) is read at most once per [`STRANGER_WINDOW`]
    /// for a raft id it did not vouch for: a stranger's batches keep coming.
    pub(super) fn speaks_for(&mut self, caller: &str, from: u64) -> bool {
        if let Some(member) = self.members.get(&from).or_else(|| self.known.get(&from)) {
            return member.service_id == caller;
        }
        if self
            .strangers
            .get(&from)
            .is_some_and(|at| at.elapsed() < STRANGER_WINDOW)
        {
            return false;
        }
        let vouched = match self.sm.services() {
            Ok(services) => services.iter().any(|s| {
                s.id == caller
                    && s.raft_id == Some(from)
                    && s.state != sqlraft_sqlite::ServiceState::Removed
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the services registry");
                false
            }
        };
        if !vouched {
            self.strangers
                .retain(|_, at| at.elapsed() < STRANGER_WINDOW);
            self.strangers.insert(from, std::time::Instant::now());
        }
        vouched
    }

    /// Asks the members this node knows, in the background, who raft id `raft_id` is;
    /// an answer naming service `service` comes back as `Request::Identified`. At most
    /// once every 2 s per raft id. True when it asked now.
    pub(super) fn identify_later(&mut self, raft_id: u64, service: &str) -> bool {
        const AGAIN: std::time::Duration = STRANGER_WINDOW;
        if self
            .asked
            .get(&raft_id)
            .is_some_and(|at| at.elapsed() < AGAIN)
        {
            return false;
        }
        self.asked.retain(|_, at| at.elapsed() < AGAIN);
        self.asked.insert(raft_id, std::time::Instant::now());
        let me = self.raw.raft.id;
        let peers: Vec<String> = self
            .members
            .values()
            .filter(|m| m.raft_id != me && !m.raft_addr.is_empty())
            .map(|m| m.raft_addr.clone())
            .collect();
        let (transport, to_self, service) = (
            self.transport.clone(),
            self.to_self.clone(),
            service.to_string(),
        );
        self.transport.spawn(async move {
            for addr in peers {
                match transport.identify(&addr, raft_id).await {
                    Ok(Some(member))
                        if member.service_id == service && member.raft_id == raft_id =>
                    {
                        let _ = to_self.try_send(super::Request::Identified { member });
                        return;
                    }
                    // Another service, or unknown there: this member does not vouch.
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(addr, error = %e, "cannot ask a member who a raft id is")
                    }
                }
            }
        });
        true
    }

    /// A member this node knows vouched for `member`: it is trusted as a hint, as one
    /// from the log tail would be, and its messages are heard from now on.
    pub(super) fn identified(&mut self, member: pb::Member) {
        let id = member.raft_id;
        if id == self.raw.raft.id
            || self.members.contains_key(&id)
            || self.known.contains_key(&id)
            || self.shared.is_removed(id)
        {
            return;
        }
        if let Err(e) = self.transport.set_peer(id, &member.raft_addr) {
            tracing::warn!(raft_id = id, addr = %member.raft_addr, error = %e,
                "a member vouched for a member with an unusable address");
            return;
        }
        tracing::info!(raft_id = id, service = %member.service_id, addr = %member.raft_addr,
            "learned a member that joined while this node was behind, from a member it knows");
        self.known.insert(id, Member::from(member));
        self.store_known();
        self.publish_identities();
    }

    /// Publishes who is who ([`super::Shared::identities`]) for the peer service.
    pub(super) fn publish_identities(&self) {
        let identities = self
            .members
            .values()
            .chain(self.known.values())
            .map(|m| (m.raft_id, m.service_id.clone()))
            .collect();
        *self
            .shared
            .identities
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = identities;
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
            self.publish_identities();
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
