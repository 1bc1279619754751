//! Per-link faults for tests (the `testing` feature), as raft-rs's harness network
//! injects them in memory: partitions, message loss and delay on one node's links.

/// What goes wrong on the link from this node to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkFault {
    /// Nothing passes in either direction: raft messages to and from the peer are
    /// dropped and forwarded requests to it fail as unsent.
    pub partitioned: bool,
    /// Each outgoing raft message is lost with this probability (0.0 to 1.0).
    pub drop_rate: f64,
    /// Each outgoing raft message is held back this long, so that later ones may
    /// overtake it.
    pub delay_ms: u64,
    /// Outgoing appends that carry log entries are lost; heartbeats, votes, read-index
    /// messages and answers pass (a peer that hears the leader but never receives its
    /// log).
    pub drop_entries: bool,
}

impl LinkFault {
    /// A link that passes nothing.
    pub fn partition() -> Self {
        LinkFault {
            partitioned: true,
            ..LinkFault::default()
        }
    }

    /// A link that loses each message with probability `rate`.
    pub fn lossy(rate: f64) -> Self {
        LinkFault {
            drop_rate: rate.clamp(0.0, 1.0),
            ..LinkFault::default()
        }
    }

    /// A link that loses every message carrying log entries, and nothing else.
    pub fn without_entries() -> Self {
        LinkFault {
            drop_entries: true,
            ..LinkFault::default()
        }
    }

    /// A link that delays each message by `ms`.
    pub fn delayed(ms: u64) -> Self {
        LinkFault {
            delay_ms: ms,
            ..LinkFault::default()
        }
    }
}
