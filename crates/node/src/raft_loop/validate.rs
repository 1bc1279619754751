//! What a message from the network must look like before raft-rs sees it. raft-rs
//! trusts its input: some malformed messages make it panic (a read-index request
//! without its context entry, a heartbeat committing past the log, an empty proposal).
//! Such messages are dropped here, and so is a snapshot message that did not come with
//! its file (through the snapshot stream, which checks the file first).

use raft::eraftpb::{Message, MessageType};

/// What the receiving node knows when it checks a message.
pub(super) struct Receiver<K: Fn(u64) -> bool> {
    /// Its raft id.
    pub me: u64,
    /// The last index of its log.
    pub last_index: u64,
    /// Whether a raft id is a member it knows (and can answer).
    pub knows: K,
    /// The message came through the snapshot stream, with its file received and checked.
    pub with_snapshot_file: bool,
}

/// `Err(reason)` when the message must be dropped.
pub(super) fn check_peer_message<K: Fn(u64) -> bool>(
    m: &Message,
    receiver: &Receiver<K>,
) -> Result<(), &'static str> {
    use MessageType::*;
    let me = receiver.me;
    if m.to != me {
        return Err("addressed to another node");
    }
    if m.from == me || m.from == raft::INVALID_ID {
        return Err("bad sender");
    }
    if !(receiver.knows)(m.from) {
        return Err("sender is not a known member");
    }
    match m.get_msg_type() {
        MsgHup | MsgBeat | MsgPropose | MsgUnreachable | MsgSnapStatus | MsgCheckQuorum => {
            Err("local message type")
        }
        MsgSnapshot if !receiver.with_snapshot_file => {
            Err("a snapshot message without its file (snapshots come through their stream)")
        }
        MsgSnapshot if m.term == 0 || m.get_snapshot().get_metadata().index == 0 => {
            Err("snapshot without a term or an index")
        }
        MsgSnapshot => Ok(()),
        _ if receiver.with_snapshot_file => Err("only a snapshot message comes with a file"),
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
        MsgHeartbeat if m.commit > receiver.last_index => Err("heartbeat commits past the log"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::Entry;

    use super::*;

    fn message(kind: MessageType, from: u64, term: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(kind);
        m.to = 1;
        m.from = from;
        m.term = term;
        m
    }

    fn check(m: &Message) -> Result<(), &'static str> {
        let receiver = Receiver {
            me: 1,
            last_index: 10,
            knows: |id| id == 2 || id == 3,
            with_snapshot_file: false,
        };
        check_peer_message(m, &receiver)
    }

    #[test]
    fn well_formed_messages_from_members_pass() {
        assert_eq!(check(&message(MessageType::MsgHeartbeat, 2, 3)), Ok(()));
        let mut append = message(MessageType::MsgAppend, 3, 3);
        append.index = 4;
        append.entries = vec![
            Entry {
                index: 5,
                ..Default::default()
            },
            Entry {
                index: 6,
                ..Default::default()
            },
        ];
        assert_eq!(check(&append), Ok(()));
        let mut read = message(MessageType::MsgReadIndex, 2, 0);
        read.entries = vec![Entry::default()];
        assert_eq!(
            check(&read),
            Ok(()),
            "read index without a term, as raft-rs sends it"
        );
    }

    #[test]
    fn messages_that_would_make_raft_panic_or_lie_are_dropped() {
        let mut to_other = message(MessageType::MsgHeartbeat, 2, 3);
        to_other.to = 9;
        assert!(check(&to_other).is_err());
        assert!(
            check(&message(MessageType::MsgHeartbeat, 1, 3)).is_err(),
            "from itself"
        );
        assert!(
            check(&message(MessageType::MsgHeartbeat, 7, 3)).is_err(),
            "unknown sender"
        );
        assert!(
            check(&message(MessageType::MsgPropose, 2, 3)).is_err(),
            "local type"
        );
        assert!(check(&message(MessageType::MsgSnapshot, 2, 3)).is_err());
        assert!(
            check(&message(MessageType::MsgReadIndex, 2, 3)).is_err(),
            "no context"
        );
        assert!(
            check(&message(MessageType::MsgAppend, 2, 0)).is_err(),
            "no term"
        );
        let mut gap = message(MessageType::MsgAppend, 2, 3);
        gap.index = 4;
        gap.entries = vec![Entry {
            index: 6,
            ..Default::default()
        }];
        assert!(check(&gap).is_err(), "entries not after the index");
        let mut past = message(MessageType::MsgHeartbeat, 2, 3);
        past.commit = 11;
        assert!(check(&past).is_err(), "commits past the log");
    }
}
