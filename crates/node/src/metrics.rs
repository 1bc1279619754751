//! What the node measures about itself, for `/metrics`: where a write's time goes
//! (waiting in the loop's queue, from proposal to commit, applying), log writes with
//! their fsync, apply batches, reads by level, ReadIndex rounds, leader changes and
//! replication lag. Kept in a [`prometheus::Registry`] that an embedding service
//! gathers ([`crate::Node::metrics`]) and may add its own metrics to.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use raft::eraftpb::{Message, MessageType};

/// The kinds of raft message counted apart in `sqlraft_raft_messages_sent_total`.
const MESSAGE_KINDS: [&str; 8] = [
    "append",
    "append_commit",
    "append_response",
    "heartbeat",
    "heartbeat_response",
    "vote",
    "snapshot",
    "other",
];

/// Latency buckets in seconds: 100 µs to 10 s, finer from 0.5 to 5 ms, where a
/// write's tail lies on a quiet cluster (its p99 against etcd's is one of the
/// performance goals).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Count buckets: 1 to 4096.
const COUNTS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// The node's metrics. Cheap to clone (every metric is shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Seconds a write spent in each stage on the leader (`sqlraft_write_stage_seconds`):
    /// `queue` (handed to the loop until the loop took it), `commit` (proposed until
    /// committed and persisted here), `apply` (its apply transaction), `reply` (the
    /// loop answered until the waiting request took the answer: waking its task).
    /// Each series is looked up once, here: every write observes them.
    pub(crate) write_queue: Histogram,
    pub(crate) write_commit: Histogram,
    pub(crate) write_apply: Histogram,
    pub(crate) write_reply: Histogram,
    /// Seconds of one log write, `fdatasync` included.
    pub(crate) log_write: Histogram,
    /// Seconds of one apply transaction.
    pub(crate) apply: Histogram,
    /// Entries per apply transaction.
    pub(crate) apply_batch: Histogram,
    /// Seconds a read waited and ran on this node (`sqlraft_read_seconds`), one series
    /// per level (`local`, `linearizable`, `strong`), looked up once.
    read_levels: [Histogram; 3],
    /// ReadIndex rounds asked of raft.
    pub(crate) read_rounds: IntCounter,
    /// Linearizable reads served per round.
    pub(crate) reads_per_round: Histogram,
    /// Times the leader this node knows changed.
    pub(crate) leader_changes: IntCounter,
    /// On the leader: entries each peer lacks (last index minus its matched index).
    pub(crate) replication_lag: IntGaugeVec,
    /// Requests handed to the raft loop and not yet taken.
    pub(crate) loop_queue: IntGauge,
    /// Snapshots that could not be taken.
    pub(crate) snapshot_failures: IntCounter,
    /// Raft messages handed to the transport, by kind ([`MESSAGE_KINDS`]).
    messages_sent: [IntCounter; MESSAGE_KINDS.len()],
}

impl Metrics {
    /// A fresh set, registered in a new registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("metric options are constants");
            registry
                .register(Box::new(h.clone()))
                .expect("metric names are unique");
            h
        };
        let histogram_vec = |name: &str, help: &str, label: &str| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                &[label],
            )
            .expect("metric options are constants");
            registry
                .register(Box::new(h.clone()))
                .expect("metric names are unique");
            h
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("metric options are constants");
            registry
                .register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        };
        let write_stage = histogram_vec(
            "sqlraft_write_stage_seconds",
            "Seconds a write spent in each stage on the leader: queue (waiting for the raft loop), commit (proposed until committed and persisted here), apply (its apply transaction), reply (the raft loop answered until the request took the answer).",
            "stage",
        );
        let read = histogram_vec(
            "sqlraft_read_seconds",
            "Seconds a read took on this node (waiting for its level, then running), by level.",
            "level",
        );
        let messages = IntCounterVec::new(
            Opts::new(
                "sqlraft_raft_messages_sent_total",
                "Raft messages handed to the transport for peers (one that cannot be reached included), by kind: append (with log entries), append_commit (none: a commit index or a probe), append_response, heartbeat, heartbeat_response, vote (votes, pre-votes and their answers), snapshot, other.",
            ),
            &["kind"],
        )
        .expect("metric options are constants");
        registry
            .register(Box::new(messages.clone()))
            .expect("metric names are unique");
        let metrics = Metrics {
            messages_sent: MESSAGE_KINDS.map(|k| messages.with_label_values(&[k])),
            write_queue: write_stage.with_label_values(&["queue"]),
            write_commit: write_stage.with_label_values(&["commit"]),
            write_apply: write_stage.with_label_values(&["apply"]),
            write_reply: write_stage.with_label_values(&["reply"]),
            read_levels: ["local", "linearizable", "strong"].map(|l| read.with_label_values(&[l])),
            log_write: histogram(
                "sqlraft_log_write_seconds",
                "Seconds of one raft log write, fdatasync included.",
                LATENCY_BUCKETS,
            ),
            apply: histogram(
                "sqlraft_apply_seconds",
                "Seconds of one apply transaction.",
                LATENCY_BUCKETS,
            ),
            apply_batch: histogram(
                "sqlraft_apply_batch_entries",
                "Entries applied per apply transaction.",
                COUNTS,
            ),
            read_rounds: counter(
                "sqlraft_read_index_rounds_total",
                "ReadIndex rounds asked of raft (one serves every linearizable read waiting at that moment).",
            ),
            reads_per_round: histogram(
                "sqlraft_reads_per_read_index_round",
                "Linearizable reads served by one ReadIndex round.",
                COUNTS,
            ),
            snapshot_failures: counter(
                "sqlraft_snapshot_failures_total",
                "Snapshots this node failed to take (retried after 1 s, doubling up to 60 s).",
            ),
            leader_changes: counter(
                "sqlraft_leader_changes_total",
                "Times the leader known to this node changed.",
            ),
            replication_lag: IntGaugeVec::new(
                Opts::new(
                    "sqlraft_replication_lag_entries",
                    "On the leader: log entries each peer has not yet acknowledged.",
                ),
                &["peer"],
            )
            .expect("metric options are constants"),
            loop_queue: IntGauge::new(
                "sqlraft_raft_queue_depth",
                "Requests handed to the raft loop and not yet taken.",
            )
            .expect("metric options are constants"),
            registry: registry.clone(),
        };
        for gauge in [
            Box::new(metrics.replication_lag.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.loop_queue.clone()),
        ] {
            registry.register(gauge).expect("metric names are unique");
        }
        metrics
    }

    /// Counts a raft message sent.
    pub(crate) fn message_sent(&self, m: &Message) {
        use MessageType::*;
        let kind = match m.get_msg_type() {
            MsgAppend if !m.entries.is_empty() => 0,
            MsgAppend => 1,
            MsgAppendResponse => 2,
            MsgHeartbeat => 3,
            MsgHeartbeatResponse => 4,
            MsgRequestVote
            | MsgRequestVoteResponse
            | MsgRequestPreVote
            | MsgRequestPreVoteResponse => 5,
            MsgSnapshot => 6,
            _ => 7,
        };
        self.messages_sent[kind].inc();
    }

    /// The read histogram's series for `level`.
    pub(crate) fn read_at(&self, level: &crate::Consistency) -> &Histogram {
        let i = match level {
            crate::Consistency::Local { .. } => 0,
            crate::Consistency::Linearizable => 1,
            crate::Consistency::Strong => 2,
        };
        &self.read_levels[i]
    }

    /// The registry holding every metric of this node; an embedding service may
    /// register its own in it.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_gathered_with_its_help() {
        let m = Metrics::new();
        m.write_queue.observe(0.001);
        m.read_at(&crate::Consistency::LOCAL).observe(0.0002);
        m.replication_lag.with_label_values(&["2"]).set(3);
        m.log_write.observe(0.002);
        m.message_sent(&Message::default());
        let names: Vec<String> = m
            .registry()
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        for name in [
            "sqlraft_write_stage_seconds",
            "sqlraft_log_write_seconds",
            "sqlraft_apply_seconds",
            "sqlraft_apply_batch_entries",
            "sqlraft_read_seconds",
            "sqlraft_read_index_rounds_total",
            "sqlraft_reads_per_read_index_round",
            "sqlraft_leader_changes_total",
            "sqlraft_replication_lag_entries",
            "sqlraft_raft_queue_depth",
            "sqlraft_snapshot_failures_total",
            "sqlraft_raft_messages_sent_total",
        ] {
            assert!(
                names.iter().any(|n| n == name),
                "{name} missing from {names:?}"
            );
        }
    }
}
