//! Snapshots, log compaction, snapshot transfer and fast join, in process: a lagging
//! follower catches up by entries inside the log's window and by snapshot outside it, a
//! new node joins a compacted cluster, a transfer broken half way resumes, and a crash
//! at each step of taking and of installing a snapshot loses nothing and applies
//! nothing twice.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use sqlraft::{Node, NodeConfig, Role};

/// Small snapshot intervals so that a few hundred writes compact the log.
fn small_snapshots(config: &mut NodeConfig) {
    config.snapshot.entries = 100;
    config.snapshot.trailing_entries = 30;
    config.log.segment_bytes = 8 << 10;
}

async fn create_table(node: &Node) {
    write_ok(
        node,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL, n INTEGER NOT NULL DEFAULT 0)",
    )
    .await;
}

/// Inserts rows `ids` and bumps a shared counter once per row: a write applied twice
/// shows as a counter ahead of the row count.
async fn insert_rows(node: &Node, ids: std::ops::Range<u64>) {
    for id in ids {
        let sql = format!(
            "INSERT INTO t (id, v) VALUES ({id}, 'row {id}') ON CONFLICT (id) DO UPDATE SET n = n + 1"
        );
        write_ok(node, &sql).await;
    }
}

/// Every row is there once, with no update applied to it (each insert ran once).
async fn assert_rows(node: &Node, count: u64) {
    let rows = dump(
        node,
        "SELECT count(*), coalesce(sum(n), 0), coalesce(max(id), 0) FROM t",
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![
            sqlraft::Value::Integer(count as i64),
            sqlraft::Value::Integer(0),
            sqlraft::Value::Integer(count as i64 - 1),
        ]],
        "raft id {}: rows, repeats, largest id",
        node.raft_id()
    );
}

async fn same_content(cluster: &Cluster) {
    cluster.same_content().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_follower_catches_up_by_entries_inside_the_window_and_by_snapshot_outside_it() {
    let mut cluster = Cluster::with_config(3, small_snapshots).await;
    let leader = cluster.leader().await;
    create_table(cluster.node(leader)).await;
    insert_rows(cluster.node(leader), 0..150).await;
    cluster.converge().await;
    // Snapshots are taken in the background.
    cluster
        .wait("the leader's log compacted", |c| {
            c.node(leader).status().first_index > 1
        })
        .await;
    let follower = cluster.followers(leader)[0];

    // Inside the window: ten entries behind, well within the thirty kept.
    cluster.stop(follower).await;
    insert_rows(cluster.node(leader), 150..160).await;
    cluster.restart(follower).await;
    same_content(&cluster).await;
    assert_eq!(
        cluster.node(follower).status().snapshots_installed,
        0,
        "a follower inside the window was sent a snapshot"
    );

    // Outside it: hundreds of entries behind, compacted away on the leader.
    cluster.stop(follower).await;
    insert_rows(cluster.node(leader), 160..500).await;
    let leader_first = cluster.node(leader).status().first_index;
    cluster.restart(follower).await;
    same_content(&cluster).await;
    let status = cluster.node(follower).status();
    assert!(
        status.snapshots_installed >= 1,
        "a follower behind the leader's first index {leader_first} caught up without a snapshot: {status:?}"
    );
    assert!(status.first_index > 1, "{status:?}");
    for node in cluster.live() {
        assert_rows(node, 500).await;
    }
    // It takes writes from there on, and restarts from its snapshot and log.
    insert_rows(cluster.node(leader), 500..520).await;
    cluster.stop(follower).await;
    cluster.restart(follower).await;
    same_content(&cluster).await;
    assert_rows(cluster.node(follower), 520).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_node_joins_a_compacted_cluster_by_snapshot_and_the_tail() {
    let mut cluster = Cluster::with_config(1, small_snapshots).await;
    create_table(cluster.node(0)).await;
    insert_rows(cluster.node(0), 0..400).await;
    let first = cluster.node(0).status().first_index;
    assert!(
        first > 100,
        "the log was not compacted: first index {first}"
    );
    cluster.add_node().await;
    cluster.add_node().await;
    cluster
        .wait("three voters", |c| c.node(0).status().voters.len() == 3)
        .await;
    same_content(&cluster).await;
    for i in [1, 2] {
        let status = cluster.node(i).status();
        assert!(
            status.snapshots_installed >= 1,
            "node {i} replayed the history instead of installing a snapshot: {status:?}"
        );
        assert!(
            status.first_index > 1,
            "node {i} holds the log from the start: {status:?}"
        );
        assert_rows(cluster.node(i), 400).await;
    }
    insert_rows(cluster.node(0), 400..410).await;
    same_content(&cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_on_demand_compacts_the_log_and_a_restart_keeps_everything() {
    let mut cluster = Cluster::with_config(1, |c| {
        c.snapshot.entries = 1_000_000;
        c.snapshot.trailing_entries = 10;
    })
    .await;
    create_table(cluster.node(0)).await;
    insert_rows(cluster.node(0), 0..60).await;
    let applied = cluster.node(0).status().applied_index;
    let info = cluster.node(0).snapshot().await.expect("snapshot");
    assert!(info.index >= applied, "{info:?} behind applied {applied}");
    assert!(info.size_bytes > 0);
    let status = cluster.node(0).status();
    assert_eq!(status.first_index, info.index - 10 + 1, "{status:?}");
    assert_eq!(status.snapshot.as_ref(), Some(&info));
    cluster.stop(0).await;
    cluster.restart(0).await;
    cluster
        .wait("leader again", |c| c.node(0).status().role == Role::Leader)
        .await;
    assert_rows(cluster.node(0), 60).await;
    let status = cluster.node(0).status();
    assert_eq!(status.first_index, info.index - 10 + 1, "{status:?}");
    assert_eq!(status.snapshot.as_ref().map(|s| s.index), Some(info.index));
    insert_rows(cluster.node(0), 60..70).await;
    assert_rows(cluster.node(0), 70).await;
    cluster.shutdown().await;
}

/// Starts node `i` of `cluster` again from its directory, crashing at `point`.
async fn restart_crashing_at(cluster: &mut Cluster, i: usize, point: &'static str) {
    let n = &cluster.nodes[i];
    let mut config = fast_config(&n.service_id, n.dir.clone(), &n.raft_addr);
    small_snapshots(&mut config);
    config.crash_at = Some(point);
    let node = Node::start(config).await.expect("restart node");
    cluster.nodes[i].node = Some(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_at_each_step_of_taking_a_snapshot_loses_nothing() {
    for point in ["snapshot:taken", "snapshot:compacted"] {
        let mut cluster = Cluster::with_config(1, small_snapshots).await;
        create_table(cluster.node(0)).await;
        insert_rows(cluster.node(0), 0..40).await;
        cluster.stop(0).await;
        restart_crashing_at(&mut cluster, 0, point).await;
        cluster
            .wait("leader", |c| c.node(0).status().role == Role::Leader)
            .await;
        insert_rows(cluster.node(0), 40..60).await;
        let crashed = cluster.node(0).snapshot().await;
        assert!(
            crashed.is_err(),
            "{point}: the node did not stop: {crashed:?}"
        );
        let failure = cluster
            .node(0)
            .failure()
            .expect("stopped on the crash point");
        assert!(failure.to_string().contains(point), "{failure}");
        cluster.stop(0).await;
        cluster.restart(0).await;
        cluster
            .wait("leader", |c| c.node(0).status().role == Role::Leader)
            .await;
        assert_rows(cluster.node(0), 60).await;
        // The next snapshot and compaction go through.
        insert_rows(cluster.node(0), 60..200).await;
        cluster
            .node(0)
            .snapshot()
            .await
            .expect("snapshot after the crash");
        assert!(cluster.node(0).status().first_index > 1);
        assert_rows(cluster.node(0), 200).await;
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_at_each_step_of_installing_a_snapshot_loses_nothing() {
    for point in ["install:log", "install:db"] {
        let mut cluster = Cluster::with_config(3, small_snapshots).await;
        let leader = cluster.leader().await;
        create_table(cluster.node(leader)).await;
        insert_rows(cluster.node(leader), 0..20).await;
        cluster.converge().await;
        let follower = cluster.followers(leader)[0];
        cluster.stop(follower).await;
        insert_rows(cluster.node(leader), 20..400).await;
        restart_crashing_at(&mut cluster, follower, point).await;
        cluster
            .wait("the follower stops at the crash point", |c| {
                c.node(follower).failure().is_some()
            })
            .await;
        let failure = cluster.node(follower).failure().expect("failed");
        assert!(failure.to_string().contains(point), "{point}: {failure}");
        cluster.stop(follower).await;
        cluster.restart(follower).await;
        same_content(&cluster).await;
        for node in cluster.live() {
            assert_rows(node, 400).await;
        }
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_transfer_broken_half_way_resumes_where_it_stopped() {
    // Offsets of the chunks sent, and one break after the first megabyte.
    static OFFSETS: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());
    static BROKEN: AtomicBool = AtomicBool::new(false);
    static BROKEN_AT: AtomicU64 = AtomicU64::new(0);
    fn config(c: &mut NodeConfig) {
        small_snapshots(c);
        c.transport.break_snapshot_stream =
            Some(sqlraft_transport::SnapshotStreamFault(Arc::new(|offset| {
                OFFSETS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(offset);
                if offset >= 1 << 20 && !BROKEN.swap(true, Ordering::SeqCst) {
                    BROKEN_AT.store(offset, Ordering::SeqCst);
                    return true;
                }
                false
            })));
    }
    let mut cluster = Cluster::with_config(3, config).await;
    let leader = cluster.leader().await;
    create_table(cluster.node(leader)).await;
    cluster.converge().await;
    let follower = cluster.followers(leader)[0];
    cluster.stop(follower).await;
    // About 3 MiB of rows: a snapshot of a dozen chunks.
    for batch in 0..30u64 {
        let sql = format!(
            "WITH RECURSIVE s(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM s WHERE x < 999) \
             INSERT INTO t (id, v) SELECT {batch} * 1000 + x, hex(zeroblob(50)) || x FROM s"
        );
        write_ok(cluster.node(leader), &sql).await;
    }
    insert_rows(cluster.node(leader), 100_000..100_200).await;
    cluster.restart(follower).await;
    same_content(&cluster).await;
    assert!(BROKEN.load(Ordering::SeqCst), "the stream never broke");
    let broken_at = BROKEN_AT.load(Ordering::SeqCst);
    let offsets = OFFSETS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let after = offsets
        .iter()
        .skip_while(|&&o| o != broken_at)
        .nth(1)
        .copied();
    assert!(
        after.is_some_and(|o| o > 0 && o <= broken_at),
        "after breaking at {broken_at}, the next stream started at {after:?} (offsets {offsets:?})"
    );
    assert!(cluster.node(follower).status().snapshots_installed >= 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_recovers_a_lost_majority_on_a_compacted_log_and_new_members_join_by_snapshot() {
    let mut cluster = Cluster::with_config(3, small_snapshots).await;
    let leader = cluster.leader().await;
    create_table(cluster.node(leader)).await;
    insert_rows(cluster.node(leader), 0..300).await;
    cluster.converge().await;
    let survivor = cluster.followers(leader)[0];
    let survivor_id = cluster.node(survivor).raft_id();
    cluster
        .wait("the survivor's log compacted", |c| {
            c.node(survivor).status().first_index > 1
        })
        .await;
    for i in 0..3 {
        cluster.stop(i).await;
    }
    let reset = cluster.nodes[survivor].dir.join("raft").join(".reset");
    std::fs::write(&reset, b"").expect("reset file");
    cluster.restart(survivor).await;
    assert!(!reset.exists(), "the reset file is consumed");
    cluster
        .wait("the survivor leads alone", |c| {
            let s = c.node(survivor).status();
            s.role == Role::Leader && s.voters == vec![survivor_id]
        })
        .await;
    assert_rows(cluster.node(survivor), 300).await;
    insert_rows(cluster.node(survivor), 300..350).await;
    // New members join the recovered cluster from its snapshot.
    cluster.add_node().await;
    cluster.add_node().await;
    cluster
        .wait("three voters again", |c| {
            c.node(survivor).status().voters.len() == 3
        })
        .await;
    same_content(&cluster).await;
    for node in cluster.live() {
        assert_rows(node, 350).await;
    }
    for i in [3, 4] {
        let status = cluster.node(i).status();
        assert!(status.snapshots_installed >= 1, "node {i}: {status:?}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_window_behind_a_snapshot_is_bounded_in_bytes_too() {
    let cluster = Cluster::with_config(1, |c| {
        c.snapshot.entries = 1_000_000;
        c.snapshot.trailing_entries = 1_000;
        c.snapshot.log_bytes = 4 << 20;
        c.log.segment_bytes = 1 << 20;
    })
    .await;
    create_table(cluster.node(0)).await;
    // Twenty entries of 512 KiB: far fewer than the thousand entries of the window,
    // far more than its quarter of log_bytes (1 MiB).
    for id in 0..20u64 {
        let sql = format!(
            "INSERT INTO t (id, v) VALUES ({id}, '{}')",
            "x".repeat(512 << 10)
        );
        write_ok(cluster.node(0), &sql).await;
    }
    let info = cluster.node(0).snapshot().await.expect("snapshot");
    let status = cluster.node(0).status();
    assert!(
        info.index + 1 - status.first_index <= 2,
        "the window kept {} entries of 512 KiB: {status:?}",
        info.index + 1 - status.first_index
    );
    // On disk: the window, and the rest of the segment it starts in.
    assert!(status.log_bytes < 3 << 20, "{status:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_file_damaged_on_disk_is_neither_offered_nor_installed() {
    let mut cluster = Cluster::with_config(1, small_snapshots).await;
    create_table(cluster.node(0)).await;
    insert_rows(cluster.node(0), 0..50).await;
    let info = cluster.node(0).snapshot().await.expect("snapshot");
    cluster.stop(0).await;
    let file = cluster.nodes[0]
        .dir
        .join("raft")
        .join("snapshots")
        .join(format!("snap-{:020}-{:020}.sqlite", info.index, info.term));
    let mut bytes = std::fs::read(&file).expect("snapshot file");
    let page = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
    for b in &mut bytes[page..page + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&file, &bytes).expect("damage");
    cluster.restart(0).await;
    cluster
        .wait("leader", |c| c.node(0).status().role == Role::Leader)
        .await;
    assert_eq!(
        cluster.node(0).status().snapshot,
        None,
        "a damaged file was offered"
    );
    assert_rows(cluster.node(0), 50).await;
    // The next snapshot is taken from the database, and a new node joins with it.
    cluster.node(0).snapshot().await.expect("a new snapshot");
    cluster.add_node().await;
    cluster.add_node().await;
    same_content(&cluster).await;
    cluster.shutdown().await;
}

/// Found by a hostile review: a snapshot that cannot be written (a read-only or full
/// disk) was tried again at every turn of the raft loop, 786 times in 6 s, each try a
/// whole copy of the database. Failures now back off (1 s, doubling to 60 s); writes
/// go on meanwhile, and once the directory is usable again snapshots resume.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_snapshot_is_retried_with_backoff_not_every_turn() {
    let cluster = Cluster::with_config(1, |c| {
        c.snapshot.entries = 5;
        c.snapshot.trailing_entries = 2;
    })
    .await;
    let node = cluster.node(0);
    create_table(node).await;
    // The snapshot directory becomes a file: every copy fails.
    let snapshots = cluster.nodes[0].dir.join("raft").join("snapshots");
    std::fs::remove_dir_all(&snapshots).expect("remove the snapshot directory");
    std::fs::write(&snapshots, b"in the way").expect("put a file in its place");
    let failures = || {
        node.metrics()
            .registry()
            .gather()
            .iter()
            .find(|f| f.name() == "sqlraft_snapshot_failures_total")
            .map_or(0.0, |f| f.get_metric()[0].get_counter().get_value())
    };
    let started = std::time::Instant::now();
    insert_rows(node, 0..200).await;
    while started.elapsed() < std::time::Duration::from_millis(2500) {
        insert_rows(node, 1000..1001).await;
        write_ok(node, "DELETE FROM t WHERE id = 1000").await;
    }
    let failed = failures();
    // Without backoff: hundreds (one per turn). With it: at 0, 1 and 3 s at most.
    assert!(
        (1.0..=4.0).contains(&failed),
        "{failed} failed snapshots in 2.5 s"
    );
    std::fs::remove_file(&snapshots).expect("remove the file");
    let info = node
        .snapshot()
        .await
        .expect("a snapshot asked for is tried at once");
    assert!(info.index > 200, "{info:?}");
    cluster.shutdown().await;
}
