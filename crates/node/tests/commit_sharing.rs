//! How a leader's followers learn its commit index (`RaftTimings::commit_share_ms`):
//! from the next append, which carries it, or on its own once writes pause for that
//! long; at once for a write a follower forwarded. Heartbeats are made rare here (every
//! 2.5 s), so that a follower that learned a commit soon after it did not learn it
//! from one: each write waits for that within 1 s, which a follower waiting for
//! heartbeats would manage for 40% of the writes, and for all eight of them once in
//! 1,500 runs.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use raft::eraftpb::MessageType;
use sqlraft::NodeConfig;
use sqlraft_transport::SendObserver;

/// Heartbeats every 2.5 s (ticks of 25 ms), elections after 3 s without one (the
/// first node's own election waits that long).
fn rare_heartbeats(config: &mut NodeConfig) {
    config.raft.heartbeat_ticks = 100;
    config.raft.election_ticks = 120;
}

const WRITES: u64 = 8;
/// Far below the 2.5 s between heartbeats, far above the milliseconds it takes.
const SOON: Duration = Duration::from_secs(1);

/// Waits until `node` applied `index`; how long that took.
async fn time_to_apply(node: &sqlraft::Node, index: u64, limit: Duration) -> Duration {
    let started = Instant::now();
    while node.status().applied_index < index {
        assert!(
            started.elapsed() < limit,
            "the follower had not applied entry {index} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    started.elapsed()
}

/// After the last write of a burst, nothing carries its commit index to the
/// followers: the leader sends it on its own after `commit_share_ms`, not at the
/// next heartbeat seconds later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_learn_the_last_commit_without_a_heartbeat() {
    let cluster = Cluster::with_config(3, rare_heartbeats).await;
    let leader = cluster.leader().await;
    write_ok(cluster.node(leader), "CREATE TABLE t (v)").await;
    for i in 0..WRITES {
        let index = write_ok(cluster.node(leader), &format!("INSERT INTO t VALUES ({i})"))
            .await
            .raft_index;
        for follower in cluster.followers(leader) {
            time_to_apply(cluster.node(follower), index, SOON).await;
        }
        // Longer than the commit_share_ms of 1 ms: each write starts after a pause.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.shutdown().await;
}

/// The same with sharing off (`commit_share_ms = 0`): every commit goes out at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sharing_off_followers_learn_each_commit_at_once() {
    fn config(config: &mut NodeConfig) {
        rare_heartbeats(config);
        config.raft.commit_share_ms = 0;
    }
    let cluster = Cluster::with_config(3, config).await;
    let leader = cluster.leader().await;
    let index = write_ok(cluster.node(leader), "CREATE TABLE t (v)")
        .await
        .raft_index;
    for follower in cluster.followers(leader) {
        time_to_apply(cluster.node(follower), index, SOON).await;
    }
    cluster.shutdown().await;
}

/// A follower answers a write it forwarded once it applied the write itself: the
/// leader sends it the commit index at once, not after `commit_share_ms` (3 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_is_applied_by_its_follower_at_once() {
    fn config(config: &mut NodeConfig) {
        rare_heartbeats(config);
        config.raft.commit_share_ms = 3_000;
        config.limits.read_timeout_ms = 10_000;
    }
    let cluster = Cluster::with_config(3, config).await;
    let leader = cluster.leader().await;
    let follower = cluster.node(cluster.followers(leader)[0]);
    write_ok(follower, "CREATE TABLE t (v)").await;
    for i in 0..WRITES {
        let started = Instant::now();
        let outcome = write_ok(follower, &format!("INSERT INTO t VALUES ({i})")).await;
        assert!(outcome.applied_here, "answered before it was applied here");
        assert!(
            started.elapsed() < SOON,
            "the forwarded write took {:?}: its follower waited for the commit index",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.shutdown().await;
}

/// Appends with entries the leader sent, and all appends it sent.
static WITH_ENTRIES: AtomicU64 = AtomicU64::new(0);
static ALL_APPENDS: AtomicU64 = AtomicU64::new(0);

/// One write after another: the commit of each rides with the next write's append, so
/// the leader sends one append per follower and write, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_writes_send_their_commit_with_the_next_append() {
    fn config(config: &mut NodeConfig) {
        rare_heartbeats(config);
        // Long enough that no commit goes out on its own while the writes run.
        config.raft.commit_share_ms = 5_000;
        config.transport.on_send = Some(SendObserver(Arc::new(|m| {
            if m.get_msg_type() == MessageType::MsgAppend {
                ALL_APPENDS.fetch_add(1, Ordering::SeqCst);
                if !m.entries.is_empty() {
                    WITH_ENTRIES.fetch_add(1, Ordering::SeqCst);
                }
            }
        })));
    }
    let cluster = Cluster::with_config(3, config).await;
    let leader = cluster.leader().await;
    write_ok(cluster.node(leader), "CREATE TABLE t (v)").await;
    let (all, with_entries) = (
        ALL_APPENDS.load(Ordering::SeqCst),
        WITH_ENTRIES.load(Ordering::SeqCst),
    );
    const SEQUENTIAL: u64 = 40;
    for i in 0..SEQUENTIAL {
        write_ok(cluster.node(leader), &format!("INSERT INTO t VALUES ({i})")).await;
    }
    let sent = ALL_APPENDS.load(Ordering::SeqCst) - all;
    let carrying = WITH_ENTRIES.load(Ordering::SeqCst) - with_entries;
    // Two followers: two appends with entries per write; with every commit sent on
    // its own there would be two more per write.
    assert!(
        carrying >= 2 * SEQUENTIAL,
        "{carrying} appends carried entries"
    );
    assert!(
        sent - carrying <= SEQUENTIAL / 4,
        "{} appends without entries for {SEQUENTIAL} writes ({sent} appends in all)",
        sent - carrying
    );
    cluster.shutdown().await;
}
