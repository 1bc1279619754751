//! Writes, reads and membership on healthy clusters.

mod common;

use common::*;
use sqlraft::{Consistency, Role, Statement, Value, WriteRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_bootstraps_writes_and_reads() {
    let cluster = Cluster::new(1).await;
    let node = cluster.node(0);
    assert_eq!(node.status().role, Role::Leader);
    write_ok(node, "CREATE TABLE t (v TEXT)").await;
    let outcome = node
        .execute(WriteRequest::transaction(vec![Statement::with_params(
            "INSERT INTO t VALUES (?)",
            vec!["hello".into()],
        )]))
        .await
        .expect("insert");
    assert_eq!(outcome.results[0].rows_affected, 1);
    for consistency in [
        Consistency::Local {
            min_index: Some(outcome.raft_index),
        },
        Consistency::Linearizable,
        Consistency::Strong,
    ] {
        let rows = node
            .query(&Statement::new("SELECT v FROM t"), consistency)
            .await
            .expect("query");
        assert_eq!(
            rows.values,
            vec![vec![Value::Text("hello".into())]],
            "{consistency:?}"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_follower_is_visible_on_every_node() {
    let cluster = Cluster::new(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.followers(leader)[0];
    write_ok(cluster.node(follower), "CREATE TABLE t (v INTEGER)").await;
    let outcome = write_ok(cluster.node(follower), "INSERT INTO t VALUES (42)").await;
    for node in cluster.live() {
        let rows = node
            .query(
                &Statement::new("SELECT v FROM t"),
                Consistency::Local {
                    min_index: Some(outcome.raft_index),
                },
            )
            .await
            .expect("read own file");
        assert_eq!(
            rows.values,
            vec![vec![Value::Integer(42)]],
            "node {}",
            node.raft_id()
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_one_by_one_keeps_the_voter_count_odd() {
    init_logging();
    let mut cluster = Cluster::new(1).await;
    let voters = |c: &Cluster| c.node(0).status().voters.len();
    let learners = |c: &Cluster| c.node(0).status().learners.len();
    assert_eq!((voters(&cluster), learners(&cluster)), (1, 0));

    cluster.add_node().await;
    cluster
        .wait("second node is a learner", |c| learners(c) == 1)
        .await;
    // A lone learner is never promoted: two voters would be even.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!((voters(&cluster), learners(&cluster)), (1, 1));
    assert_eq!(cluster.node(1).status().role, Role::Learner);

    cluster.add_node().await;
    cluster
        .wait("two learners promoted together", |c| {
            voters(c) == 3 && learners(c) == 0
        })
        .await;

    cluster.add_node().await;
    cluster
        .wait("fourth node is a learner", |c| learners(c) == 1)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!((voters(&cluster), learners(&cluster)), (3, 1));

    cluster.add_node().await;
    cluster
        .wait("five voters", |c| voters(c) == 5 && learners(c) == 0)
        .await;
    for node in cluster.live() {
        cluster
            .wait("every node knows five voters", |_| {
                node.status().voters.len() == 5
            })
            .await;
        // In raft id order, whatever order raft-rs keeps them in.
        assert_eq!(node.status().voters, vec![1, 2, 3, 4, 5]);
    }
    cluster.shutdown().await;
}

/// While a change of voters is under way (raft's joint configuration) the status names
/// the voters of the configuration before it, and an election still needs a majority of
/// them: a cluster has not settled before the change ends. The first node's messages to the members that join are held
/// back, so the change lasts at least two of those delays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_voters_names_the_voters_it_leaves_until_it_ends() {
    init_logging();
    let mut cluster = Cluster::new(1).await;
    let first = cluster.node(0).clone();
    // Raft ids are given out in order: the members that join are 2 and 3.
    for joining in [2, 3] {
        first
            .transport()
            .set_link_fault(joining, LinkFault::delayed(150));
    }
    let mut status = first.watch_status();
    cluster.add_node().await;
    cluster.add_node().await;
    let joint = tokio::time::timeout(WAIT, status.wait_for(|s| !s.voters_outgoing.is_empty()))
        .await
        .expect("a joint configuration in time")
        .expect("the node runs")
        .clone();
    assert_eq!(joint.voters, vec![1, 2, 3], "{joint:?}");
    assert_eq!(joint.voters_outgoing, vec![first.raft_id()], "{joint:?}");
    // The change ends on its own, on every node.
    cluster.wait_voters(3).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_serves_local_reads() {
    let mut cluster = Cluster::new(1).await;
    write_ok(cluster.node(0), "CREATE TABLE t (v)").await;
    let outcome = write_ok(cluster.node(0), "INSERT INTO t VALUES (1)").await;
    cluster.add_node().await;
    cluster
        .wait("learner", |c| c.node(1).status().role == Role::Learner)
        .await;
    let rows = cluster
        .node(1)
        .query(
            &Statement::new("SELECT count(*) FROM t"),
            Consistency::Local {
                min_index: Some(outcome.raft_index),
            },
        )
        .await
        .expect("learner read");
    assert_eq!(rows.values, vec![vec![Value::Integer(1)]]);
    // A write sent to the learner is forwarded to the leader.
    write_ok(cluster.node(1), "INSERT INTO t VALUES (2)").await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sql_is_an_error_result_and_the_cluster_keeps_working() {
    let cluster = Cluster::new(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.followers(leader)[0];
    write_ok(cluster.node(leader), "CREATE TABLE t (v INTEGER NOT NULL)").await;
    let outcome = write(cluster.node(follower), "INSERT INTO nowhere VALUES (1)")
        .await
        .expect("bad SQL is a result, not a failure");
    let error = outcome.results[0]
        .error
        .as_deref()
        .expect("an error result");
    assert!(error.contains("no such table"), "{error}");
    let outcome = write(cluster.node(leader), "INSERT INTO t VALUES (NULL)")
        .await
        .expect("constraint failure is a result");
    assert!(outcome.results[0].error.is_some());
    let err = cluster
        .node(follower)
        .query(
            &Statement::new("SELEC 1"),
            Consistency::Local { min_index: None },
        )
        .await
        .unwrap_err();
    assert!(!err.is_fatal(), "{err}");
    let err = cluster
        .node(follower)
        .query(
            &Statement::new("DELETE FROM t"),
            Consistency::Local { min_index: None },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("read cannot change"), "{err}");

    let ok = write_ok(cluster.node(follower), "INSERT INTO t VALUES (7)").await;
    for node in cluster.live() {
        node.wait_applied(ok.raft_index).await.expect("applied");
        assert_eq!(
            dump(node, "SELECT v FROM t").await,
            vec![vec![Value::Integer(7)]]
        );
        assert!(node.failure().is_none());
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_statement_fails_alone_and_the_cluster_goes_on() {
    // Each node runs the statement to its step budget (seconds in a debug build, three
    // nodes on the machine's cores): the writes get more than the usual 5 s.
    let cluster = Cluster::with_config(3, |config| {
        config.limits.write_timeout_ms = 30_000;
    })
    .await;
    let leader = cluster.leader().await;
    let node = cluster.node(leader);
    write_ok(node, "CREATE TABLE n (x)").await;
    // Sent together so that they are likely applied in one batch.
    let runaway = "INSERT INTO n WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c";
    let (before, stopped, after) = tokio::join!(
        write(node, "INSERT INTO n VALUES (-1)"),
        write(node, runaway),
        write(node, "INSERT INTO n VALUES (-2)"),
    );
    let stopped = stopped.expect("the runaway request has a result");
    let error = stopped.results[0]
        .error
        .as_deref()
        .expect("an error result");
    assert!(error.contains("runs too long"), "{error}");
    let last = [before, after]
        .into_iter()
        .map(|w| w.expect("the other writes are applied").raft_index)
        .max()
        .expect("two writes");
    let last = last.max(stopped.raft_index);
    cluster.wait_applied(last).await;
    for node in cluster.live() {
        assert_eq!(
            dump(node, "SELECT x FROM n ORDER BY x").await,
            vec![vec![Value::Integer(-2)], vec![Value::Integer(-1)]],
            "node {}",
            node.raft_id()
        );
        assert!(node.failure().is_none());
    }
    cluster.shutdown().await;
}

/// Read-your-writes at every level: once a follower acknowledged a write, every later
/// read on that follower sees it, `Consistency::Local` without `min_index` included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_acknowledged_by_a_node_is_visible_to_its_next_local_read() {
    let cluster = Cluster::new(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.node(cluster.followers(leader)[0]);
    write_ok(follower, "CREATE TABLE t (v INTEGER)").await;
    for i in 1..=300_i64 {
        let outcome = follower
            .execute(WriteRequest::transaction(vec![Statement::with_params(
                "INSERT INTO t VALUES (?)",
                vec![i.into()],
            )]))
            .await
            .expect("insert through the follower");
        assert!(outcome.applied_here, "answered before it was applied here");
        let rows = follower
            .query(
                &Statement::new("SELECT count(*) FROM t"),
                Consistency::Local { min_index: None },
            )
            .await
            .expect("local read");
        assert_eq!(
            rows.values,
            vec![vec![Value::Integer(i)]],
            "after write {i}"
        );
    }
    cluster.shutdown().await;
}

/// Appends carrying log entries that `node` has sent, from its metrics.
fn appends_sent(node: &sqlraft::Node) -> u64 {
    node.metrics()
        .registry()
        .gather()
        .iter()
        .filter(|f| f.name() == "sqlraft_raft_messages_sent_total")
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "kind" && l.value() == "append")
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// Writes the raft loop takes in one turn are proposed together: each follower gets
/// them in one append and answers once, where a proposal per write cost an append and
/// an answer per write and follower. Each write still gets its own entry and answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_taken_together_share_their_appends() {
    const WRITES: i64 = 64;
    let cluster = Cluster::new(3).await;
    let leader = cluster.node(cluster.leader().await).clone();
    write_ok(&leader, "CREATE TABLE t (n INTEGER)").await;
    let before = appends_sent(&leader);
    let writes = (0..WRITES).map(|n| {
        let node = leader.clone();
        async move {
            node.execute(WriteRequest::transaction(vec![Statement::with_params(
                "INSERT INTO t VALUES (?)",
                vec![n.into()],
            )]))
            .await
        }
    });
    let outcomes = futures::future::join_all(writes).await;
    let mut indices = Vec::new();
    for (n, outcome) in outcomes.into_iter().enumerate() {
        let outcome = outcome.unwrap_or_else(|e| panic!("write {n}: {e}"));
        assert_eq!(outcome.results[0].rows_affected, 1, "write {n}");
        assert_eq!(outcome.results[0].last_insert_id, {
            // Each write answers with its own row, the one its entry inserted.
            let rows = dump(&leader, &format!("SELECT rowid FROM t WHERE n = {n}")).await;
            match rows.as_slice() {
                [row] => match row.as_slice() {
                    [Value::Integer(id)] => *id,
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            }
        });
        indices.push(outcome.raft_index);
    }
    indices.sort_unstable();
    indices.dedup();
    assert_eq!(indices.len(), WRITES as usize, "one entry per write");
    let sent = appends_sent(&leader) - before;
    // A proposal per write: at least one append per write to each of the two
    // followers (128).
    assert!(
        sent < WRITES as u64,
        "{sent} appends with entries for {WRITES} writes to two followers"
    );
    cluster.converge().await;
    for node in cluster.live() {
        assert_eq!(
            dump(node, "SELECT count(*), count(DISTINCT n) FROM t").await,
            vec![vec![Value::Integer(WRITES), Value::Integer(WRITES)]]
        );
    }
    cluster.shutdown().await;
}

/// Many large writes at once: the raft loop takes them over several turns (each one
/// log write under the log's limit) on the leader and on the followers, and the
/// uncommitted backlog is bounded; no node stops. The burst may cost an election on a
/// loaded machine, so every write carries a request id: what did not get an answer is
/// sent again with its id afterwards, and each is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_writes_is_spread_over_log_writes_within_their_limit() {
    let cluster = Cluster::with_config(3, |config| {
        config.log.max_write_bytes = 12 << 20;
        config.limits.max_request_bytes = 2 << 20;
        config.transport.max_message_bytes = 4 << 20;
        config.limits.max_turn_bytes = 4 << 20;
        config.limits.max_uncommitted_bytes = 24 << 20;
        config.limits.write_timeout_ms = 20_000;
        config.raft.election_ticks = 40;
    })
    .await;
    let leader = cluster.node(cluster.leader().await).clone();
    write_ok(&leader, "CREATE TABLE big (n INTEGER, v BLOB)").await;
    let blob = vec![7u8; (1 << 20) + 512 * 1024];
    let request = |n: i64| WriteRequest {
        statements: vec![Statement::with_params(
            "INSERT INTO big VALUES (?, ?)",
            vec![n.into(), blob.clone().into()],
        )],
        transaction: true,
        request_id: Some(format!("burst-{n}")),
        parts: Vec::new(),
    };
    let writes = (0..40).map(|n| {
        let (node, request) = (leader.clone(), request(n));
        async move { node.execute(request).await }
    });
    let outcomes = futures::future::join_all(writes).await;
    // Before the turn budget, the first turn's log write exceeded the log's limit and
    // the leader stopped with a fatal error.
    for node in cluster.live() {
        assert!(node.failure().is_none(), "a node stopped");
    }
    for (n, outcome) in outcomes.iter().enumerate() {
        if outcome.is_ok() {
            continue;
        }
        let again = eventually("a write sent again with its id", || {
            let node = cluster.node(cluster.nodes.len() - 1).clone();
            let request = request(n as i64);
            async move { node.execute(request).await }
        })
        .await;
        assert!(again.results[0].error.is_none(), "{again:?}");
    }
    cluster.converge().await;
    for node in cluster.live() {
        assert_eq!(
            dump(node, "SELECT count(*), count(DISTINCT n) FROM big").await,
            vec![vec![Value::Integer(40), Value::Integer(40)]],
            "each write applied exactly once"
        );
    }
    // A request that can never fit in one entry is refused up front.
    let too_big = leader
        .execute(WriteRequest::transaction(vec![Statement::with_params(
            "INSERT INTO big VALUES (?)",
            vec![vec![0u8; 3 << 20].into()],
        )]))
        .await
        .expect_err("a request over max_request_bytes");
    assert!(too_big.to_string().contains("at most"), "{too_big}");
    cluster.same_content().await;
    cluster.shutdown().await;
}

/// A write retried with its request id through another node is applied once, and the
/// retry gets the first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_retried_with_its_request_id_is_applied_once() {
    let cluster = Cluster::new(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.followers(leader)[0];
    write_ok(cluster.node(leader), "CREATE TABLE t (v INTEGER)").await;
    let request = WriteRequest {
        statements: vec![Statement::new("INSERT INTO t VALUES (1)")],
        transaction: true,
        request_id: Some("client-42".into()),
        parts: Vec::new(),
    };
    let first = cluster
        .node(follower)
        .execute(request.clone())
        .await
        .expect("first attempt");
    for node in [follower, leader] {
        let again = cluster
            .node(node)
            .execute(request.clone())
            .await
            .expect("retry");
        assert_eq!(again.raft_index, first.raft_index);
        assert_eq!(again.results, first.results);
    }
    cluster.converge().await;
    for node in cluster.live() {
        assert_eq!(
            dump(node, "SELECT count(*) FROM t").await,
            vec![vec![Value::Integer(1)]]
        );
    }
    cluster.shutdown().await;
}

/// The leader applies a forwarded write but its answer is lost on the way back (the
/// transport drops the first answer of each forwarded write): the follower retries
/// with the request id it gave the write and answers with the first outcome; the write
/// is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_whose_answer_is_lost_is_retried_and_applied_once() {
    use std::sync::{Arc, Mutex};
    fn lose_first_answers(config: &mut sqlraft::NodeConfig) {
        let answered: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
        config.transport.lose_forward_answer =
            Some(sqlraft_transport::ForwardFault(Arc::new(move |request| {
                let Some(write) = &request.request else {
                    return false;
                };
                // The first answer for each request id is lost; retries get theirs.
                answered
                    .lock()
                    .expect("answered ids")
                    .insert(write.request_id.clone())
            })));
    }
    let cluster = Cluster::with_config(3, lose_first_answers).await;
    let leader = cluster.leader().await;
    write_ok(cluster.node(leader), "CREATE TABLE t (v INTEGER)").await;
    let follower = cluster.node(cluster.followers(leader)[0]);
    for i in 0..5_i64 {
        let outcome = follower
            .execute(WriteRequest::transaction(vec![Statement::with_params(
                "INSERT INTO t VALUES (?)",
                vec![i.into()],
            )]))
            .await
            .expect("the retry turns the lost answer into the first outcome");
        assert_eq!(outcome.results[0].rows_affected, 1);
    }
    cluster.converge().await;
    for node in cluster.live() {
        assert_eq!(
            dump(node, "SELECT count(*), count(DISTINCT v) FROM t").await,
            vec![vec![Value::Integer(5), Value::Integer(5)]]
        );
    }
    cluster.shutdown().await;
}

/// Found by a hostile tester: the leader applies a forwarded write, its answer is lost,
/// and then the follower loses the leader for good. Retrying until the deadline ends
/// with "no leader", which the HTTP API answers 503 ("nothing was applied"), and a
/// client retrying without a key wrote the row twice. The answer must stay an unknown
/// outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_outcome_became_unknown_never_ends_as_not_applied() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};
    /// The follower's transport and the leader's raft id, once the cluster is up.
    static CUT: OnceLock<(sqlraft_transport::Transport, u64)> = OnceLock::new();
    static FIRED: AtomicBool = AtomicBool::new(false);
    fn lose_the_answer_then_the_leader(config: &mut sqlraft::NodeConfig) {
        config.transport.lose_forward_answer =
            Some(sqlraft_transport::ForwardFault(Arc::new(|request| {
                let (Some((follower, leader)), Some(_)) = (CUT.get(), &request.request) else {
                    return false;
                };
                if FIRED.swap(true, Ordering::SeqCst) {
                    return false;
                }
                // From now on the follower reaches no leader: every retry is "not sent".
                follower.set_link_fault(*leader, sqlraft_harness::LinkFault::partition());
                true
            })));
    }
    let cluster = Cluster::with_config(3, lose_the_answer_then_the_leader).await;
    let leader = cluster.leader().await;
    write_ok(cluster.node(leader), "CREATE TABLE t (v INTEGER)").await;
    cluster.converge().await;
    let follower = cluster.followers(leader)[0];
    let leader_id = cluster.node(leader).raft_id();
    let _ = CUT.set((cluster.node(follower).transport().clone(), leader_id));

    let error = write(cluster.node(follower), "INSERT INTO t VALUES (1)")
        .await
        .expect_err("the follower cannot hear the outcome");
    assert!(FIRED.load(Ordering::SeqCst), "the fault fired");
    assert_eq!(error.kind(), sqlraft::ErrorKind::UnknownOutcome, "{error}");
    // It was applied, once, on the leader.
    assert_eq!(
        dump(cluster.node(leader), "SELECT count(*) FROM t").await,
        vec![vec![Value::Integer(1)]]
    );
    cluster.heal();
    cluster.shutdown().await;
}

/// What a graceful stop of the leader does first: leadership goes to another voter, the
/// cluster takes writes through it, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_hands_leadership_over_to_a_voter() {
    let cluster = Cluster::new(3).await;
    let leader = cluster.leader().await;
    let old = cluster.node(leader);
    write_ok(old, "CREATE TABLE t (v INTEGER)").await;
    write_ok(old, "INSERT INTO t VALUES (1)").await;
    let follower = cluster.followers(leader)[0];
    assert_eq!(
        cluster
            .node(follower)
            .hand_over_leadership(std::time::Duration::from_secs(3))
            .await
            .expect("a follower has nothing to hand over"),
        None
    );
    let to = old
        .hand_over_leadership(std::time::Duration::from_secs(5))
        .await
        .expect("handed over")
        .expect("a new leader");
    assert_ne!(to, old.status().raft_id);
    let new = cluster.node(cluster.index_of(to));
    cluster
        .wait("the new leader knows it leads", |c| {
            c.node(c.index_of(to)).status().role == Role::Leader
        })
        .await;
    assert_ne!(old.status().role, Role::Leader);
    write_ok(new, "INSERT INTO t VALUES (2)").await;
    cluster.converge().await;
    for node in cluster.live() {
        assert_eq!(
            dump(node, "SELECT v FROM t ORDER BY v").await,
            vec![vec![Value::Integer(1)], vec![Value::Integer(2)]]
        );
    }
    cluster.shutdown().await;
}
