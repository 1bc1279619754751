//! The embedding API: barriers, subscriptions, backups, typed queries on the read pool.

mod common;

use std::time::Duration;

use common::*;
use sqlraft::sql::sqlx;
use sqlraft::{Consistency, Leadership, Role, Statement, WriteRequest, params};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_barrier_on_a_follower_covers_every_acknowledged_write() {
    let cluster = Cluster::new(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.followers(leader)[0];
    write_ok(cluster.node(leader), "CREATE TABLE t (n INTEGER)").await;
    for n in 0..20 {
        let outcome = write_ok(cluster.node(leader), &format!("INSERT INTO t VALUES ({n})")).await;
        // Whatever the leader acknowledged, a barrier on the follower has applied.
        let reached = cluster
            .node(follower)
            .barrier(Consistency::Linearizable)
            .await
            .expect("barrier");
        assert!(
            reached >= outcome.raft_index,
            "{reached} < {}",
            outcome.raft_index
        );
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(cluster.node(follower).read_pool())
            .await
            .expect("typed read");
        assert_eq!(count, n + 1);
    }
    // Local with a min_index waits for it; a strong barrier goes through the log.
    let last = cluster.node(leader).status().applied_index;
    let local = Consistency::Local {
        min_index: Some(last),
    };
    assert!(cluster.node(follower).barrier(local).await.expect("local") >= last);
    let strong = cluster
        .node(follower)
        .barrier(Consistency::Strong)
        .await
        .expect("strong");
    assert!(strong > last, "a strong barrier appends an entry");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_a_new_leader_after_the_old_one_is_cut_off() {
    let cluster = Cluster::new(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.followers(leader)[0];
    let old = cluster.node(leader).raft_id();
    // Subscribing needs no runtime.
    let node = cluster.node(follower).clone();
    let mut leadership = std::thread::spawn(move || node.watch_leader())
        .join()
        .expect("subscribed from a plain thread");
    let before: Leadership = *leadership.borrow_and_update();
    assert_eq!(before.leader_id, Some(old));

    cluster.isolate(leader);
    let after: Leadership = *tokio::time::timeout(
        WAIT,
        leadership.wait_for(|l| l.leader_id.is_some_and(|id| id != old)),
    )
    .await
    .expect("a new leader in time")
    .expect("the node runs");
    assert!(after.term > before.term, "{before:?} then {after:?}");

    // Status subscribers see the same change.
    let mut status = cluster.node(follower).watch_status();
    let seen = status
        .wait_for(|s| s.leader_id == after.leader_id.unwrap_or(0))
        .await
        .expect("status")
        .clone();
    assert_ne!(seen.role, Role::Candidate);
    cluster.heal();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_applied_wakes_for_a_write_and_closes_when_the_node_stops() {
    let mut cluster = Cluster::new(1).await;
    let node = cluster.node(0).clone();
    let mut applied = node.watch_applied();
    let outcome = write_ok(&node, "CREATE TABLE t (x)").await;
    applied
        .wait_for(|&a| a >= outcome.raft_index)
        .await
        .expect("applied");
    let mut leader = node.watch_leader();
    cluster.stop(0).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while applied.changed().await.is_ok() {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "the applied subscription ends with the node"
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while leader.changed().await.is_ok() {}
    })
    .await;
    assert!(closed.is_ok(), "the leader subscription ends with the node");
    // A stopped node can still be backed up: that is when an operator wants a copy.
    let dir = tempfile::tempdir().expect("temp dir");
    let index = node
        .backup(&dir.path().join("after-stop.sqlite3"))
        .await
        .expect("backup of a stopped node");
    assert!(index >= outcome.raft_index);
    drop(node);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_holds_exactly_the_content_of_the_index_it_reports() {
    let cluster = Cluster::new(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.followers(leader)[0];
    let node = cluster.node(leader);
    node.execute(WriteRequest::transaction(vec![
        Statement::new("CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB, flag INTEGER)"),
        Statement::with_params(
            "INSERT INTO kv VALUES (?, ?, ?)",
            params!["a", &b"\x00\x01"[..], true],
        ),
    ]))
    .await
    .expect("write");
    // Writes go on while the follower is backed up: the copy must hold exactly the
    // writes at or below the index it reports.
    let writer = {
        let node = node.clone();
        tokio::spawn(async move {
            let mut written = Vec::new();
            for n in 0..50 {
                let outcome =
                    write_ok(&node, &format!("INSERT INTO kv VALUES ('k{n}', NULL, 0)")).await;
                written.push((format!("k{n}"), outcome.raft_index));
            }
            written
        })
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("backup.sqlite3");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let index = cluster.node(follower).backup(&copy).await.expect("backup");
    let written = writer.await.expect("writer");
    let of_copy = sqlraft_sqlite::content_hash(&copy).expect("hash of the copy");
    assert_eq!(of_copy.applied_index, index);
    let conn = sqlraft::sql::rusqlite::Connection::open(&copy).expect("open the copy");
    let mut in_copy: Vec<String> = conn
        .prepare("SELECT k FROM kv WHERE k != 'a' ORDER BY k")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("rows of the copy");
    in_copy.sort();
    let mut expected: Vec<String> = written
        .into_iter()
        .filter(|(_, at)| *at <= index)
        .map(|(k, _)| k)
        .collect();
    expected.sort();
    assert_eq!(in_copy, expected, "the copy at index {index}");

    // Quiet: the copy's content hash is the node's.
    cluster.converge().await;
    let quiet = dir.path().join("quiet.sqlite3");
    let index = cluster.node(follower).backup(&quiet).await.expect("backup");
    let hash = cluster.node(follower).content_hash().await.expect("hash");
    assert_eq!(hash.applied_index, index);
    assert_eq!(sqlraft_sqlite::content_hash(&quiet).expect("hash"), hash);

    // A backup never overwrites.
    let again = cluster.node(follower).backup(&copy).await;
    assert!(again.is_err(), "overwrote an existing file");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_ids_the_identity_file_cannot_hold_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    for id in [" n1", "n1 ", "n\n1", ""] {
        let config = sqlraft::NodeConfig::new(
            id,
            dir.path().join("n"),
            "127.0.0.1:0".parse().expect("addr"),
        );
        let e = sqlraft::Node::start(config).await.err().expect("refused");
        assert!(matches!(e, sqlraft::NodeError::Config(_)), "{id:?}: {e}");
        assert!(
            !dir.path().join("n").exists(),
            "{id:?} created the directory"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_holding_a_borrowed_value_does_not_stall_the_node() {
    let cluster = Cluster::new(1).await;
    let node = cluster.node(0).clone();
    let status = node.watch_status();
    let applied = node.watch_applied();
    let leader = node.watch_leader();
    // A careless subscriber keeps all three borrowed while the node works.
    let held = (status.borrow(), applied.borrow(), leader.borrow());
    for n in 0..5 {
        tokio::time::timeout(WAIT, write(&node, &format!("CREATE TABLE t{n} (x)")))
            .await
            .expect("the write is not stalled by a subscriber")
            .expect("write");
    }
    drop(held);
    cluster.shutdown().await;
}

/// Found by a hostile tester: a strong read on a leader that lost its followers got
/// "outcome unknown" (HTTP 500) although a read applies nothing; it is a read that
/// could not reach its level (503, safe to retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strong_read_that_cannot_reach_its_level_is_unavailable_not_unknown() {
    let cluster = Cluster::new(3).await;
    let leader = cluster.leader().await;
    for follower in cluster.followers(leader) {
        cluster.set_link(leader, follower, LinkFault::partition());
    }
    let error = cluster
        .node(leader)
        .barrier(Consistency::Strong)
        .await
        .expect_err("no quorum");
    assert_eq!(error.kind(), sqlraft::ErrorKind::Unavailable, "{error}");
    cluster.heal();
    cluster.shutdown().await;
}
