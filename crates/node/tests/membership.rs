//! The services registry, admission, removal and recovery of a lost majority.

mod common;

use std::path::Path;

use common::*;
use sqlraft::naming::FIRST_SERVICE_ID;
use sqlraft::{Admission, Node, NodeError, Role, ServiceState};

use std::sync::atomic::{AtomicU8, Ordering};

/// One core service per host: each service of a test gets its own loopback address
/// (127.0.0.0/8 is all loopback on Linux), which also serves as its host name.
fn next_host() -> String {
    static NEXT: AtomicU8 = AtomicU8::new(2);
    format!("127.0.0.{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn free_addr(host: &str) -> String {
    let port = std::net::TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    format!("{host}:{port}")
}

fn registered_config(
    service_id: &str,
    dir: &Path,
    addr: &str,
    join: Option<&str>,
) -> sqlraft::NodeConfig {
    let addr = addr.to_string();
    let mut config = fast_config(service_id, dir.to_path_buf(), &addr);
    config.advertise_addr = Some(addr);
    config.admission = Admission::Registered;
    config.join = join.map(str::to_string);
    config
}

async fn start_first(root: &Path) -> Node {
    init_logging();
    let addr = free_addr(&next_host());
    let node = Node::start(registered_config(
        FIRST_SERVICE_ID,
        &root.join("first"),
        &addr,
        None,
    ))
    .await
    .expect("bootstrap");
    wait_until("first node leads", || node.status().role == Role::Leader).await;
    node
}

/// Creates a service through `via`, then starts it joining `via`.
async fn create_and_join(via: &Node, root: &Path, name: &str) -> Node {
    let host = next_host();
    let addr = free_addr(&host);
    let service = via
        .create_service(&host, &addr)
        .await
        .expect("create service");
    assert_eq!(service.state, ServiceState::Created);
    let config = registered_config(&service.id, &root.join(name), &addr, Some(via.raft_addr()));
    Node::start(config).await.expect("join")
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until `node` learns it was removed; on timeout, says what it is doing instead.
async fn wait_removed(node: &Node) {
    let deadline = std::time::Instant::now() + WAIT;
    while !node.is_removed() {
        assert!(
            std::time::Instant::now() < deadline,
            "node {} did not learn it was removed: failure {:?}, status {:#?}",
            node.raft_id(),
            node.failure(),
            node.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn start_err(config: sqlraft::NodeConfig) -> NodeError {
    match Node::start(config).await {
        Ok(node) => {
            node.shutdown().await;
            panic!("the node was admitted");
        }
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_created_services_join_with_their_address_and_never_after_removal() {
    let root = tempfile::tempdir().expect("temp dir");
    let first = start_first(root.path()).await;
    let via = first.raft_addr().to_string();

    let err = start_err(registered_config(
        "11111111-2222-3333-4444-555555555555",
        &root.path().join("stranger"),
        &free_addr(&next_host()),
        Some(&via),
    ))
    .await;
    assert!(err.to_string().contains("was never created"), "{err}");

    let host = next_host();
    let addr = free_addr(&host);
    let service = first.create_service(&host, &addr).await.expect("create");
    assert_ne!(service.id, FIRST_SERVICE_ID);
    assert_eq!(service.name, format!("core-{host}"));
    let err = start_err(registered_config(
        &service.id,
        &root.path().join("elsewhere"),
        &free_addr(&host),
        Some(&via),
    ))
    .await;
    assert!(
        err.to_string().contains("was created with raft address"),
        "{err}"
    );

    let duplicate = first
        .create_service(&host, &addr)
        .await
        .expect_err("same host twice");
    assert!(matches!(duplicate, NodeError::Conflict(_)), "{duplicate}");

    let second = Node::start(registered_config(
        &service.id,
        &root.path().join("second"),
        &addr,
        Some(&via),
    ))
    .await
    .expect("a created service joins");
    wait_until("second is a learner", || {
        second.status().role == Role::Learner
    })
    .await;
    let listed = first.services().await.expect("services");
    let states: Vec<(&str, ServiceState)> =
        listed.iter().map(|s| (s.name.as_str(), s.state)).collect();
    assert_eq!(
        states,
        vec![
            ("core-1", ServiceState::Voter),
            (service.name.as_str(), ServiceState::Learner)
        ]
    );

    first.remove_service(&service.id).await.expect("remove");
    wait_removed(&second).await;
    let removed = first.services().await.expect("services");
    assert_eq!(removed[1].state, ServiceState::Removed);
    assert_eq!(first.status().learners, Vec::<u64>::new());
    second.shutdown().await;

    let err = start_err(registered_config(
        &service.id,
        &root.path().join("again"),
        &addr,
        Some(&via),
    ))
    .await;
    assert!(err.to_string().contains("was removed"), "{err}");
    let err = first
        .remove_service("no-such-id")
        .await
        .expect_err("unknown id");
    assert!(matches!(err, NodeError::NotFound(_)), "{err}");
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_never_joined_can_be_removed() {
    let root = tempfile::tempdir().expect("temp dir");
    let first = start_first(root.path()).await;
    let host = next_host();
    let service = first
        .create_service(&host, &free_addr(&host))
        .await
        .expect("create");
    first.remove_service(&service.id).await.expect("remove");
    let listed = first.services().await.expect("services");
    assert_eq!(listed[1].state, ServiceState::Removed);
    let again = first.remove_service(&service.id).await.expect_err("twice");
    assert!(matches!(again, NodeError::Conflict(_)), "{again}");
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_voter_keeps_the_voter_count_odd() {
    let root = tempfile::tempdir().expect("temp dir");
    let first = start_first(root.path()).await;
    let second = create_and_join(&first, root.path(), "second").await;
    let third = create_and_join(&first, root.path(), "third").await;
    wait_until("three voters", || first.status().voters.len() == 3).await;

    // Through a follower, to a follower: 3 - 1 = 2 voters would be even, so another
    // voter becomes a learner in the same change.
    third
        .remove_service(second.service_id())
        .await
        .expect("remove a voter");
    wait_until("one voter and one learner", || {
        let s = first.status();
        s.voters.len() == 1 && s.learners.len() == 1
    })
    .await;
    wait_removed(&second).await;
    assert_eq!(
        first.status().voters,
        vec![first.raft_id()],
        "the leader keeps its vote"
    );
    write_ok(&first, "CREATE TABLE still_writable (v)").await;

    // A new service brings the learner back: two learners are promoted together.
    let fourth = create_and_join(&first, root.path(), "fourth").await;
    wait_until("three voters again", || first.status().voters.len() == 3).await;
    for node in [&first, &third, &fourth, &second] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_hands_leadership_over_first() {
    let root = tempfile::tempdir().expect("temp dir");
    let first = start_first(root.path()).await;
    let second = create_and_join(&first, root.path(), "second").await;
    let third = create_and_join(&first, root.path(), "third").await;
    wait_until("three voters", || first.status().voters.len() == 3).await;
    assert_eq!(first.status().role, Role::Leader);

    second
        .remove_service(FIRST_SERVICE_ID)
        .await
        .expect("remove the leader");
    wait_removed(&first).await;
    wait_until("a new leader with odd voters", || {
        let s = second.status();
        s.leader_id != 0 && s.leader_id != first.raft_id() && s.voters.len() == 1
    })
    .await;
    let outcome = write_ok(&third, "CREATE TABLE after_removal (v)").await;
    second
        .wait_applied(outcome.raft_index)
        .await
        .expect("applied");
    for node in [&first, &second, &third] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_file_recovers_a_lost_majority() {
    let root = tempfile::tempdir().expect("temp dir");
    let first = start_first(root.path()).await;
    let second = create_and_join(&first, root.path(), "second").await;
    let third = create_and_join(&first, root.path(), "third").await;
    wait_until("three voters", || first.status().voters.len() == 3).await;
    write_ok(&first, "CREATE TABLE kept (v)").await;
    let last = write_ok(&first, "INSERT INTO kept VALUES ('before the loss')").await;
    second.wait_applied(last.raft_index).await.expect("applied");

    // Two of three are lost for good; the survivor cannot commit alone.
    let survivor_dir = root.path().join("second");
    let survivor_id = second.service_id().to_string();
    let survivor_addr = second.raft_addr().to_string();
    first.shutdown().await;
    third.shutdown().await;
    second.shutdown().await;

    std::fs::write(survivor_dir.join("raft").join(".reset"), b"").expect("reset file");
    let survivor = Node::start(registered_config(
        &survivor_id,
        &survivor_dir,
        &survivor_addr,
        None,
    ))
    .await
    .expect("restart with .reset");
    assert!(
        !survivor_dir.join("raft").join(".reset").exists(),
        "the file is consumed"
    );
    wait_until("the survivor leads alone", || {
        let s = survivor.status();
        s.role == Role::Leader && s.voters == vec![survivor.raft_id()]
    })
    .await;
    assert_eq!(
        dump(&survivor, "SELECT v FROM kept").await,
        vec![vec![sqlraft::Value::Text("before the loss".into())]]
    );
    write_ok(&survivor, "INSERT INTO kept VALUES ('after the reset')").await;
    let services = survivor.services().await.expect("services");
    let removed = services
        .iter()
        .filter(|s| s.state == ServiceState::Removed)
        .count();
    assert_eq!(removed, 2, "the lost services are removed: {services:?}");

    let fresh_a = create_and_join(&survivor, root.path(), "fresh-a").await;
    let fresh_b = create_and_join(&survivor, root.path(), "fresh-b").await;
    wait_until("three voters after recovery", || {
        survivor.status().voters.len() == 3
    })
    .await;
    let outcome = write_ok(&fresh_a, "INSERT INTO kept VALUES ('through a new member')").await;
    fresh_b
        .wait_applied(outcome.raft_index)
        .await
        .expect("applied");
    assert_eq!(
        dump(&fresh_b, "SELECT count(*) FROM kept").await,
        vec![vec![sqlraft::Value::Integer(3)]]
    );
    for node in [&survivor, &fresh_a, &fresh_b] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_removed_while_down_learns_it_when_it_comes_back() {
    let root = tempfile::tempdir().expect("temp dir");
    let first = start_first(root.path()).await;
    let learner = create_and_join(&first, root.path(), "learner").await;
    wait_until("learner", || learner.status().role == Role::Learner).await;
    let (id, addr) = (
        learner.service_id().to_string(),
        learner.raft_addr().to_string(),
    );
    learner.shutdown().await;

    first.remove_service(&id).await.expect("remove while down");
    // Nothing reaches a removed learner through raft any more; it has to ask.
    let back = Node::start(registered_config(
        &id,
        &root.path().join("learner"),
        &addr,
        None,
    ))
    .await
    .expect("restart");
    wait_until("the restarted learner stops itself", || back.is_removed()).await;
    let err = back
        .execute(sqlraft::WriteRequest::transaction(vec![]))
        .await
        .expect_err("a removed node takes no writes");
    assert!(matches!(err, NodeError::Removed), "{err}");
    back.shutdown().await;
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_voter_while_another_is_down_keeps_a_leader() {
    let root = tempfile::tempdir().expect("temp dir");
    let first = start_first(root.path()).await;
    let second = create_and_join(&first, root.path(), "second").await;
    let third = create_and_join(&first, root.path(), "third").await;
    wait_until("three voters", || first.status().voters.len() == 3).await;
    third.shutdown().await;

    // The joint change needs a majority of the old voters, the removed one included:
    // it must keep taking part until the joint configuration is left.
    first
        .remove_service(second.service_id())
        .await
        .expect("remove a healthy voter");
    wait_until("the joint configuration is left", || {
        let s = first.status();
        s.voters == vec![first.raft_id()] && s.role == Role::Leader
    })
    .await;
    write_ok(&first, "CREATE TABLE still_led (v)").await;
    wait_removed(&second).await;
    for node in [&first, &second] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_on_a_surviving_learner_makes_it_the_only_voter() {
    let root = tempfile::tempdir().expect("temp dir");
    let first = start_first(root.path()).await;
    let learner = create_and_join(&first, root.path(), "learner").await;
    wait_until("learner", || learner.status().role == Role::Learner).await;
    let outcome = write_ok(&first, "CREATE TABLE kept (v)").await;
    learner
        .wait_applied(outcome.raft_index)
        .await
        .expect("applied");
    let (id, addr) = (
        learner.service_id().to_string(),
        learner.raft_addr().to_string(),
    );
    first.shutdown().await;
    learner.shutdown().await;

    let dir = root.path().join("learner");
    std::fs::write(dir.join("raft").join(".reset"), b"").expect("reset file");
    let survivor = Node::start(registered_config(&id, &dir, &addr, None))
        .await
        .expect("restart with .reset");
    wait_until("the former learner leads alone", || {
        let s = survivor.status();
        s.role == Role::Leader && s.voters == vec![survivor.raft_id()] && s.learners.is_empty()
    })
    .await;
    write_ok(&survivor, "INSERT INTO kept VALUES (1)").await;
    survivor.shutdown().await;
}

/// Cluster {1,2,3}; 2 is down while 4 and 5 join and are promoted; 1 and 3 stop; 2
/// restarts knowing only {1,2,3}. {2,4,5} is a majority of the five voters: it must
/// elect a leader, 2 learning 4's and 5's addresses from their own messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_behind_membership_changes_joins_the_new_majority() {
    let mut cluster = Cluster::new(3).await;
    let behind = cluster.followers(cluster.leader().await)[0];
    write_ok(cluster.node(0), "CREATE TABLE t (v INTEGER)").await;
    cluster.stop(behind).await;
    cluster.add_node().await;
    cluster.add_node().await;
    cluster.wait_voters(5).await;
    write_ok(cluster.node(3), "INSERT INTO t VALUES (1)").await;
    for i in 0..3 {
        if i != behind {
            cluster.stop(i).await;
        }
    }
    cluster.restart(behind).await;
    cluster
        .wait("a leader among the three live voters", |c| {
            c.live().any(|n| n.status().role == Role::Leader)
        })
        .await;
    let outcome = write_ok(cluster.node(behind), "INSERT INTO t VALUES (2)").await;
    cluster.wait_applied(outcome.raft_index).await;
    let rows = dump(cluster.node(behind), "SELECT v FROM t ORDER BY v").await;
    assert_eq!(
        rows,
        vec![
            vec![sqlraft::Value::Integer(1)],
            vec![sqlraft::Value::Integer(2)]
        ]
    );
    assert_eq!(cluster.node(behind).status().voters.len(), 5);
    cluster.shutdown().await;
}

/// A learner stopped right after it was admitted, before it applied anything, knows
/// the members only from its join answer (kept in raft/peers); restarted, it must
/// still catch up with a leader that is not the node it joined through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_restarted_before_it_applied_anything_catches_up() {
    let mut cluster = Cluster::new(3).await;
    write_ok(cluster.node(0), "CREATE TABLE t (v INTEGER)").await;
    let mut last = 0;
    for i in 0..200 {
        last = write_ok(cluster.node(0), &format!("INSERT INTO t VALUES ({i})"))
            .await
            .raft_index;
    }
    let learner = cluster.nodes.len();
    cluster.add_node().await;
    cluster.stop(learner).await;
    // The leader from now on is not the first node, whose address the learner's
    // first applied entries would have told it.
    let leader = cluster.leader().await;
    if leader == 0 {
        cluster.stop(0).await;
        cluster.restart(0).await;
    }
    cluster.restart(learner).await;
    cluster
        .wait("the learner catches up", |c| {
            c.node(learner).status().applied_index >= last
        })
        .await;
    let rows = dump(cluster.node(learner), "SELECT count(*) FROM t").await;
    assert_eq!(rows, vec![vec![sqlraft::Value::Integer(200)]]);
    cluster.shutdown().await;
}
