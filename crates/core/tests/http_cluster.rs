//! The API of a node that is not the leader: forwarded writes, `/nodes` probing other
//! members, and 503 when the leader is gone.

mod common;

use common::Harness;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_learner_forwards_writes_probes_members_and_refuses_reads_without_a_leader() {
    let leader = Harness::start().await;
    // Created through POST /api/v1/services on the leader: only created ids may join.
    let learner = Harness::join("127.0.0.2", &leader).await;
    let peer_id = learner.node.service_id().to_string();

    // A write sent to the learner is forwarded; the learner answers.
    let written = learner
        .post_json(
            "/db/execute",
            r#"["CREATE TABLE t (x)", ["INSERT INTO t VALUES (?)", 5]]"#,
        )
        .await;
    let index = written["raft_index"].as_u64().expect("raft_index");
    let read = learner
        .post_json(
            &format!("/db/query?min_index={index}"),
            r#"["SELECT x FROM t"]"#,
        )
        .await;
    assert_eq!(read["results"][0]["values"], json!([[5]]));
    let read = learner
        .post_json("/db/query?level=linearizable", r#"["SELECT x FROM t"]"#)
        .await;
    assert_eq!(read["results"][0]["values"], json!([[5]]));

    let status = learner.get_json("/status").await;
    assert_eq!(status["id"], peer_id.as_str());
    assert_eq!(status["role"], "learner");
    assert_eq!(status["leader_id"], "00000000-0000-0000-0000-000000000000");

    let nodes = learner.get_json("/nodes").await;
    let nodes = nodes["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2);
    let first = nodes
        .iter()
        .find(|n| n["raft_id"] == 1)
        .expect("first member");
    assert_eq!(first["name"], "core-1");
    assert_eq!(first["role"], "leader");
    assert_eq!(first["reachable"], true);
    assert_eq!(first["http_addr"], leader.http.as_str());
    assert!(first["applied_index"].as_u64().is_some_and(|a| a >= index));
    let peer = nodes
        .iter()
        .find(|n| n["id"] == peer_id.as_str())
        .expect("peer");
    assert_eq!(peer["name"], "core-127.0.0.2");
    assert_eq!(peer["role"], "learner");
    assert_eq!(peer["voter"], false);

    // The leader's view: reachability from raft.
    let nodes = leader.get_json("/nodes").await;
    let peer = nodes["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["id"] == peer_id.as_str()).cloned())
        .expect("peer");
    assert_eq!(peer["reachable"], true);
    assert!(peer["applied_index"].as_u64().is_some());

    leader.stop().await;
    let refused = learner
        .post("/db/query?level=linearizable", r#"["SELECT x FROM t"]"#)
        .await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.json().expect("JSON")["error"].is_string());
    let refused = learner
        .post("/db/execute", r#"["INSERT INTO t VALUES (6)"]"#)
        .await;
    assert!(
        refused.status == 503 || refused.status == 500,
        "{}",
        refused.text()
    );
    // Local reads still work.
    let local = learner
        .post_json("/db/query?level=none", r#"["SELECT x FROM t"]"#)
        .await;
    assert_eq!(local["results"][0]["values"], json!([[5]]));
    let nodes = learner.get_json("/nodes").await;
    let first = nodes["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["raft_id"] == 1).cloned())
        .expect("first");
    assert_eq!(first["reachable"], false);
    assert_eq!(first["applied_index"], serde_json::Value::Null);
    learner.stop().await;
}
