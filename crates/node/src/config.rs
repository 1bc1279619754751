use std::net::SocketAddr;
use std::path::PathBuf;

use sqlraft_log::LogOptions;
use sqlraft_sqlite::ReadOptions;
use sqlraft_transport::TransportOptions;

/// How to start a [`crate::Node`].
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The service id, unique in the cluster: 1 to 255 bytes of text without control
    /// characters or surrounding spaces (the core product uses UUIDs,
    /// [`crate::naming::FIRST_SERVICE_ID`] for its first service).
    pub service_id: String,
    /// The service's directory: `raft/` (log, identity) and `db/` (state database).
    pub dir: PathBuf,
    /// Where the raft transport listens. Port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// The address peers reach this node at (`host:port`). `None`: the bound
    /// listen address.
    pub advertise_addr: Option<String>,
    /// Where this service's HTTP API answers, recorded with its membership so that
    /// other nodes and clients can find it. Not used by the library itself.
    pub http_addr: Option<String>,
    /// Which services the leader admits when they join.
    pub admission: Admission,
    /// Any member's raft address, to join an existing cluster. Ignored when the
    /// directory already holds a node (restart).
    pub join: Option<String>,
    /// Raft timings and limits.
    pub raft: RaftTimings,
    /// Limits of the raft log.
    pub log: LogOptions,
    /// Limits of the read pool.
    pub read: ReadOptions,
    /// Limits and timings of the transport.
    pub transport: TransportOptions,
    /// Limits of the node's queues and waits.
    pub limits: Limits,
    /// When snapshots are taken and how much log is kept behind them.
    pub snapshot: SnapshotOptions,
    /// Test hook: the node stops as if killed at this point of taking or installing a
    /// snapshot (`"snapshot:taken"`, `"snapshot:compacted"`, `"install:log"`,
    /// `"install:db"`).
    #[cfg(feature = "testing")]
    pub crash_at: Option<&'static str>,
}

impl NodeConfig {
    /// A configuration with default timings and limits.
    pub fn new(
        service_id: impl Into<String>,
        dir: impl Into<PathBuf>,
        listen_addr: SocketAddr,
    ) -> Self {
        NodeConfig {
            service_id: service_id.into(),
            dir: dir.into(),
            listen_addr,
            advertise_addr: None,
            http_addr: None,
            admission: Admission::default(),
            join: None,
            raft: RaftTimings::default(),
            log: LogOptions::default(),
            read: ReadOptions::default(),
            transport: TransportOptions::default(),
            limits: Limits::default(),
            snapshot: SnapshotOptions::default(),
            #[cfg(feature = "testing")]
            crash_at: None,
        }
    }
}

/// When a node takes a snapshot of its state database and compacts its log.
///
/// A snapshot is taken when `entries` entries were applied since the last one, or the
/// log has grown by `log_bytes` since it was last compacted, whichever comes first, and
/// on demand ([`crate::Node::snapshot`]); a leader also takes one when a follower needs
/// a newer one than it has. The log is then compacted up to `trailing_entries` before
/// the snapshot, and never keeps more than a quarter of `log_bytes` of entries behind
/// it: a follower that lags by less catches up from the log, one that lags by more is
/// sent the snapshot.
///
/// The defaults are etcd's since 3.2 (a snapshot every 100,000 entries, 5,000 kept for
/// followers that lag): the log's memory (about 32 bytes per entry held, and a bounded
/// cache of the newest entries) and disk stay bounded by 105,000 entries or `log_bytes`
/// plus one segment, whatever the history. A snapshot copies the whole database, so
/// every 10,000 entries (etcd's default before 3.2, and this one's before) a node under
/// 16,000 small writes a second copied it more than once a second, about 6% of the
/// CPU each write costs the cluster (docs/PERFORMANCE.md). A follower that comes back
/// fewer entries behind than the log holds catches up from the log: the raft timings'
/// bounds on messages in flight and on apply batches keep its memory bounded while it
/// does. `log_bytes` (64 MiB) bounds the log when entries are large, so that a node
/// restarting replays at most that much.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// Entries applied between automatic snapshots.
    pub entries: u64,
    /// Bytes of log written between automatic snapshots.
    pub log_bytes: u64,
    /// Entries kept in the log behind a snapshot (at most `log_bytes / 4` of them).
    pub trailing_entries: u64,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            entries: 100_000,
            log_bytes: 64 << 20,
            trailing_entries: 5_000,
        }
    }
}

/// Which services may join the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Admission {
    /// Only services created in the registry first ([`crate::Node::create_service`]),
    /// joining with the raft address they were created with, and never removed.
    #[default]
    Registered,
    /// Any service id not removed before (for embedders that manage membership
    /// themselves, and tests).
    Open,
}

/// Raft timings: an election timeout of `election_ticks * tick_ms` (randomized up to
/// twice that by raft), heartbeats every `heartbeat_ticks * tick_ms`.
#[derive(Debug, Clone)]
pub struct RaftTimings {
    /// Length of one raft tick.
    pub tick_ms: u64,
    /// Ticks without a leader before a follower campaigns.
    pub election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: usize,
    /// Bytes of entries in one append message (one entry larger than this goes alone).
    pub max_append_bytes: u64,
    /// Append messages in flight to one follower. With `max_append_bytes` it bounds
    /// what a follower that catches up from the log is sent before it answers (8 MiB by
    /// default: 160 MB/s to a follower 50 ms away), and so what it holds decoded in
    /// memory meanwhile. Under steady writes a follower has one to three in flight.
    pub max_inflight_appends: usize,
    /// Bytes of committed entries handed out (and applied in one SQLite transaction)
    /// per `Ready` (one entry larger than this goes alone); bounds memory when a node
    /// catches up on a long log. Under steady small writes a batch is a few KiB.
    pub max_apply_batch_bytes: u64,
    /// A learner within this many entries of the leader's commit index is caught up.
    pub learner_catch_up_entries: u64,
    /// How long a leader lets its followers go without a commit index they lack. A
    /// commit index rides along with the next append when one goes out within this
    /// time (under load, or a client writing one request after another); otherwise
    /// the leader sends it alone then. A write forwarded by a follower has its commit
    /// sent at once. `0`: every new commit index is sent at once, in messages of its
    /// own (raft's default), which costs each write two messages and two answers more.
    pub commit_share_ms: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_append_bytes: 256 << 10,
            max_inflight_appends: 32,
            max_apply_batch_bytes: 1 << 20,
            learner_catch_up_entries: 100,
            commit_share_ms: 1,
        }
    }
}

/// Bounds on what a node queues and how long it waits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests queued for the raft loop; more are refused with `Busy`.
    pub loop_queue_len: usize,
    /// Statements in one write request.
    pub max_statements: usize,
    /// Bytes of one encoded write request.
    pub max_request_bytes: usize,
    /// Bytes of proposals and received entries the raft loop takes in one turn (one
    /// log write, one fsync); what is queued beyond waits for the next turn. With
    /// `max_request_bytes` and the transport's largest message it bounds one log write,
    /// which must stay under the log's `max_write_bytes`. Small, so that a burst of
    /// large writes is spread over short turns and heartbeats keep going out between.
    pub max_turn_bytes: usize,
    /// Bytes of entries the leader may have proposed but not yet committed; proposals
    /// beyond are refused with `Busy` (raft-rs `max_uncommitted_size`).
    pub max_uncommitted_bytes: u64,
    /// How long a write waits to be applied.
    pub write_timeout_ms: u64,
    /// How long a read waits for a read index or for `min_index` to be applied.
    pub read_timeout_ms: u64,
    /// How long joining waits for the cluster to admit this node.
    pub join_timeout_ms: u64,
    /// Largest backup [`crate::Node::restore`] takes, in bytes.
    pub max_restore_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            loop_queue_len: 16_384,
            max_statements: 10_000,
            max_request_bytes: 16 << 20,
            max_turn_bytes: 8 << 20,
            max_uncommitted_bytes: 256 << 20,
            write_timeout_ms: 10_000,
            read_timeout_ms: 5_000,
            join_timeout_ms: 60_000,
            max_restore_bytes: 1 << 30,
        }
    }
}
