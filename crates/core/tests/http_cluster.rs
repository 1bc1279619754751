//! The cluster endpoints in process (`/status`, `/nodes`, `/readyz`, `/metrics`) and
//! the cross-site check every route shares.

mod common;

use common::Harness;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn status_nodes_readyz_and_metrics() {
    let h = Harness::start().await;
    let status = h.get_json("/status").await;
    let fixed = json!({
        "id": "00000000-0000-0000-0000-000000000000",
        "raft_id": 1,
        "name": "core-1",
        "role": "leader",
        "leader_id": "00000000-0000-0000-0000-000000000000",
        "leader_raft_id": 1,
        "raft_addr": h.node.raft_addr(),
        "http_addr": h.http,
        "voters": [1],
        "voters_outgoing": [],
        "learners": [],
        "ready": true,
    });
    for (key, value) in fixed.as_object().expect("object") {
        assert_eq!(&status[key], value, "{key} in {status}");
    }
    for key in ["term", "commit_index", "applied_index", "last_index"] {
        assert!(status[key].as_u64().is_some(), "{key} in {status}");
    }

    // rqlite's shapes: `store.leader` for its clients, a map keyed by id from
    // `/nodes`, a list with `?ver=2`; sqlraft's keys beside rqlite's.
    let id = "00000000-0000-0000-0000-000000000000";
    assert_eq!(
        status["store"]["leader"],
        json!({"node_id": id, "addr": h.node.raft_addr()})
    );
    assert_eq!(status["store"]["node_id"], json!(id));
    assert_eq!(status["store"]["raft"]["state"], json!("Leader"));
    assert_eq!(status["store"]["raft"]["voter"], json!(true));
    assert_eq!(status["http"]["auth"], json!("disabled"));
    assert!(
        status["http"]["queue"]["_default"]["sequence_number"]
            .as_u64()
            .is_some(),
        "{status}"
    );

    let nodes = h.get_json("/nodes").await;
    let entry = &nodes[id];
    let applied = entry["applied_index"].as_u64().expect("applied_index");
    let time = entry["time"].as_f64().expect("time");
    let expected = json!({
        "id": id,
        "api_addr": format!("http://{}", h.http),
        "addr": h.node.raft_addr(),
        "version": env!("CARGO_PKG_VERSION"),
        "voter": true,
        "reachable": true,
        "leader": true,
        "time": time,
        "raft_id": 1,
        "name": "core-1",
        "raft_addr": h.node.raft_addr(),
        "http_addr": h.http,
        "role": "leader",
        "applied_index": applied
    });
    assert_eq!(nodes, json!({ id: expected.clone() }));
    assert_eq!(
        h.get_json("/nodes?ver=2").await,
        json!({ "nodes": [expected] })
    );
    let bad = h.get("/nodes?timeout=soon").await;
    assert_eq!(bad.status, 400, "{}", bad.text());

    let ready = h.get("/readyz").await;
    assert_eq!((ready.status, ready.text().as_str()), (200, "ready\n"));

    h.post_json(
        "/db/execute",
        r#"["CREATE TABLE m (x)", "INSERT INTO m VALUES (1)", "bad"]"#,
    )
    .await;
    h.post_json("/db/query", r#"["SELECT * FROM m"]"#).await;
    let _ = h.post("/db/query", "nope").await;
    let metrics = h.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for line in [
        "sqlraft_role{role=\"leader\"} 1",
        "sqlraft_role{role=\"follower\"} 0",
        "sqlraft_voters 1",
        "sqlraft_leader_known 1",
        "sqlraft_write_requests_total 1",
        "sqlraft_write_statements_total 3",
        "sqlraft_read_requests_total 1",
        "sqlraft_read_statements_total 1",
        "sqlraft_statement_errors_total 1",
        "sqlraft_http_errors_total 1",
        "# TYPE sqlraft_term gauge",
        "# TYPE sqlraft_write_requests_total counter",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    for prefix in [
        "sqlraft_term ",
        "sqlraft_commit_index ",
        "sqlraft_applied_index ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(prefix)),
            "missing {prefix}"
        );
    }
    // Histograms that explain where the time went: each observed what happened above.
    let sample = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("missing {series} in\n{text}"))
            .parse()
            .expect("a number")
    };
    for stage in ["queue", "commit", "apply", "reply"] {
        let count = sample(&format!(
            "sqlraft_write_stage_seconds_count{{stage=\"{stage}\"}}"
        ));
        assert!(count >= 1.0, "{stage}: {count}");
    }
    assert!(sample("sqlraft_log_write_seconds_count") >= 1.0);
    assert!(sample("sqlraft_apply_seconds_count") >= 1.0);
    assert!(sample("sqlraft_apply_batch_entries_count") >= 1.0);
    assert_eq!(sample("sqlraft_read_seconds_count{level=\"local\"}"), 1.0);
    assert_eq!(
        sample("sqlraft_http_request_seconds_count{path=\"/db/execute\"}"),
        1.0
    );
    assert_eq!(
        sample("sqlraft_http_request_seconds_count{path=\"/db/query\"}"),
        2.0
    );
    assert!(text.contains("# TYPE sqlraft_write_stage_seconds histogram"));
    // Latencies are told apart between 1 and 5 ms, where a write's tail lies.
    for le in ["0.0015", "0.002", "0.003", "0.004"] {
        for series in [
            format!("sqlraft_http_request_seconds_bucket{{path=\"/db/execute\",le=\"{le}\"}}"),
            format!("sqlraft_write_stage_seconds_bucket{{stage=\"commit\",le=\"{le}\"}}"),
        ] {
            assert!(text.contains(&series), "no {series}");
        }
    }
    // Every request handed to the raft loop was taken: the depth is back to zero (it
    // drifted below zero when requests sent past the counter were counted down).
    assert_eq!(sample("sqlraft_raft_queue_depth"), 0.0);
    // A linearizable read is one ReadIndex round (a single node answers at once).
    h.post_json("/db/query?level=linearizable", r#"["SELECT * FROM m"]"#)
        .await;
    let text = h.get("/metrics").await.text();
    let rounds = text
        .lines()
        .find_map(|l| l.strip_prefix("sqlraft_read_index_rounds_total "))
        .expect("rounds");
    assert!(rounds.parse::<u64>().expect("a count") >= 1, "{rounds}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_site_browser_requests_cannot_change_anything() {
    let h = Harness::start().await;
    let post = |path: &'static str, origin: Option<&'static str>, body: &'static [u8]| {
        let http = h.http.clone();
        async move {
            let mut headers = vec![("Content-Type", "text/plain")];
            headers.extend(origin.map(|o| ("Origin", o)));
            sqlraft_core::client::request_with_headers(
                &http,
                "POST",
                path,
                &headers,
                Some(body),
                std::time::Duration::from_secs(10),
            )
            .await
            .expect("answered")
        }
    };
    let evil = Some("http://evil.example");
    let sql: &[u8] = br#"["CREATE TABLE csrf (v)"]"#;
    let refused = post("/db/execute", evil, sql).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let service: &[u8] = br#"{"fqdn":"core-8.example.com","raft_addr":"core-8.example.com:7209"}"#;
    let refused = post("/api/v1/services", evil, service).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    // Clients that send no Origin (rqlite libraries, curl) are not affected.
    let allowed = post("/db/execute", None, sql).await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    h.stop().await;
}

/// Found by a hostile tester: a follower back from a restart said "ready" while
/// thousands of entries behind, because the commit index heartbeats carry is capped at
/// what the leader knows the follower holds. Here the restarted follower hears
/// heartbeats but never receives the entries it missed: it must not be ready until it
/// has them.
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_back_from_a_restart_is_not_ready_until_it_has_caught_up() {
    let leader = Harness::start().await;
    let mut follower = Harness::join("127.0.0.2", &leader).await;
    leader
        .post_json("/db/execute", r#"["CREATE TABLE t (v)"]"#)
        .await;
    follower.wait_ready().await;
    let f = follower.node.raft_id();
    follower.pause().await;
    for v in 0..20 {
        leader
            .post_json("/db/execute", &format!(r#"["INSERT INTO t VALUES ({v})"]"#))
            .await;
    }
    leader
        .node
        .transport()
        .set_link_fault(f, sqlraft_harness::LinkFault::without_entries());
    follower.resume().await;
    // It hears the leader (heartbeats pass) but holds none of the 20 new entries.
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    while follower.node.status().leader_id == 0 {
        assert!(std::time::Instant::now() < deadline, "no heartbeat arrived");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let r = follower.get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("behind the leader's commit index"),
        "{}",
        r.text()
    );

    leader
        .node
        .transport()
        .set_link_fault(f, sqlraft_harness::LinkFault::default());
    follower.wait_ready().await;
    follower.stop().await;
    leader.stop().await;
}
