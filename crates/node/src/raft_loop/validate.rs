//! What a message from the network must look like before raft-rs sees it. raft-rs
//! trusts its input: some malformed messages make it panic (a read-index request
//! without its context entry, a heartbeat committing past the log, an empty proposal),
//! and a snapshot would stop this version. Such messages are dropped here.

use raft::eraftpb::{Message, MessageType};

use super::RaftLoop;

impl RaftLoop {
    /// `Err(reason)` when the message must be dropped.
    pub(super) fn check_peer_message(&self, m: &Message) -> Result<(), &'static str> {
        use MessageType::*;
        let me = self.raw.raft.id;
        if m.to != me {
            return Err("addressed to another node");
        }
        if m.from == me || m.from == raft::INVALID_ID {
            return Err("bad sender");
        }
        if !self.members.contains_key(&m.from) && self.transport.peer_addr(m.from).is_none() {
            return Err("sender is not a known member");
        }
        match m.get_msg_type() {
            MsgHup | MsgBeat | MsgPropose | MsgUnreachable | MsgSnapStatus | MsgCheckQuorum => {
                Err("local message type")
            }
            MsgSnapshot => Err("snapshots are not supported"),
            // Forwarded to the leader without a term, as raft-rs sends it.
            MsgReadIndex if m.entries.len() == 1 => Ok(()),
            MsgReadIndex | MsgReadIndexResp if m.entries.len() != 1 => {
                Err("read index message without exactly one context entry")
            }
            _ if m.term == 0 => Err("no term"),
            MsgAppend
                if m.entries
                    .iter()
                    .enumerate()
                    .any(|(i, e)| e.index != m.index + 1 + i as u64) =>
            {
                Err("append entries do not follow its index")
            }
            MsgHeartbeat if m.commit > self.raw.raft.raft_log.last_index() => {
                Err("heartbeat commits past the log")
            }
            _ => Ok(()),
        }
    }
}
