//! The data API's writes in process against a real one-node cluster: parameters,
//! per-statement errors, value types, `/db/request`, idempotency keys, bad requests.

mod common;

use common::Harness;
use serde_json::json;
use sqlraft_core::app::ApiOptions;

const CREATE: &str = r#"["CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT, age INTEGER, score REAL, data BLOB)"]"#;

#[tokio::test(flavor = "multi_thread")]
async fn execute_with_positional_and_named_parameters_then_query() {
    let h = Harness::start().await;
    let answer = h.post("/db/execute", CREATE).await;
    assert_eq!(answer.header("x-sqlraft-applied-locally"), Some("true"));
    let created = answer.json().expect("JSON");
    assert_eq!(created["results"].as_array().map(Vec::len), Some(1));
    assert!(created["results"][0].get("error").is_none(), "{created}");
    assert!(created["raft_index"].as_u64().is_some());

    let written = h
        .post_json(
            "/db/execute",
            r#"[
                "INSERT INTO foo(name, age) VALUES('fiona', 20)",
                ["INSERT INTO foo(name, age) VALUES(?, ?)", "declan", 25],
                ["INSERT INTO foo(name, age) VALUES(:name, :age)", {"name": "aoife", "age": 30}]
            ]"#,
        )
        .await;
    let index = written["raft_index"].as_u64().expect("raft_index");
    assert_eq!(
        written,
        json!({
            "results": [
                {"last_insert_id": 1, "rows_affected": 1},
                {"last_insert_id": 2, "rows_affected": 1},
                {"last_insert_id": 3, "rows_affected": 1}
            ],
            "raft_index": index
        })
    );

    let read = h
        .get_json("/db/query?q=SELECT%20id,%20name,%20age%20FROM%20foo%20ORDER%20BY%20id")
        .await;
    assert_eq!(
        read,
        json!({"results": [{
            "columns": ["id", "name", "age"],
            "types": ["integer", "text", "integer"],
            "values": [[1, "fiona", 20], [2, "declan", 25], [3, "aoife", 30]]
        }]})
    );

    let posted = h
        .post_json(
            &format!("/db/query?level=none&min_index={index}"),
            r#"[["SELECT name FROM foo WHERE age > ?", 21], ["SELECT name FROM foo WHERE id = :id", {"id": 1}]]"#,
        )
        .await;
    assert_eq!(
        posted,
        json!({"results": [
            {"columns": ["name"], "types": ["text"], "values": [["declan"], ["aoife"]]},
            {"columns": ["name"], "types": ["text"], "values": [["fiona"]]}
        ]})
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_errors_are_per_statement_results_and_transaction_rolls_back() {
    let h = Harness::start().await;
    h.post_json("/db/execute", CREATE).await;

    // Without ?transaction the failing statement alone is rolled back.
    let out = h
        .post_json(
            "/db/execute",
            r#"["INSERT INTO foo(id, name) VALUES(1, 'a')", "INSERT INTO nope VALUES(1)", "INSERT INTO foo(id, name) VALUES(2, 'b')"]"#,
        )
        .await;
    let results = out["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0], json!({"last_insert_id": 1, "rows_affected": 1}));
    assert!(
        results[1]["error"]
            .as_str()
            .expect("error")
            .contains("nope"),
        "{out}"
    );
    assert_eq!(results[2], json!({"last_insert_id": 2, "rows_affected": 1}));

    // With ?transaction the first failure undoes the whole request and stops it.
    let out = h
        .post_json(
            "/db/execute?transaction",
            r#"["INSERT INTO foo(id, name) VALUES(3, 'c')", "INSERT INTO foo(id, name) VALUES(1, 'dup')", "INSERT INTO foo(id, name) VALUES(4, 'd')"]"#,
        )
        .await;
    let results = out["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{out}");
    assert!(
        results[1]["error"]
            .as_str()
            .expect("error")
            .contains("UNIQUE"),
        "{out}"
    );

    let count = h
        .post_json(
            "/db/query?level=strong",
            r#"["SELECT count(*) AS n FROM foo"]"#,
        )
        .await;
    assert_eq!(count["results"][0]["values"], json!([[2]]));

    // A write sent to the read endpoint is refused as a statement error.
    let refused = h.post_json("/db/query", r#"["DELETE FROM foo"]"#).await;
    assert!(refused["results"][0]["error"].is_string(), "{refused}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn values_keep_their_types_and_blobs_round_trip() {
    let h = Harness::start().await;
    h.post_json("/db/execute", CREATE).await;
    h.post_json(
        "/db/execute",
        r#"[["INSERT INTO foo(id, name, age, score, data) VALUES(?, ?, ?, ?, ?)", 1, "x", null, 2.5, [0, 1, 254, 255]],
            ["INSERT INTO foo(id, name, age, score, data) VALUES(?, ?, ?, ?, ?)", 2, "y", 9007199254740993, 1, null]]"#,
    )
    .await;
    let read = h
        .post_json(
            "/db/query",
            r#"["SELECT id, name, age, score, data FROM foo ORDER BY id"]"#,
        )
        .await;
    assert_eq!(
        read,
        json!({"results": [{
            "columns": ["id", "name", "age", "score", "data"],
            "types": ["integer", "text", "integer", "real", "blob"],
            "values": [[1, "x", null, 2.5, "AAH+/w=="], [2, "y", 9007199254740993_i64, 1.0, null]]
        }]})
    );
    let arrays = h
        .post_json(
            "/db/query?blob_array",
            r#"["SELECT data FROM foo WHERE id = 1"]"#,
        )
        .await;
    assert_eq!(arrays["results"][0]["values"], json!([[[0, 1, 254, 255]]]));

    // The base64 text read back is a string; the bytes match what was written.
    let typed = h
        .post_json(
            "/db/query",
            r#"["SELECT typeof(data), length(data), hex(data) FROM foo WHERE id = 1"]"#,
        )
        .await;
    assert_eq!(
        typed["results"][0]["values"],
        json!([["blob", 4, "0001FEFF"]])
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn request_endpoint_mixes_reads_and_writes_in_order() {
    let h = Harness::start().await;
    let out = h
        .post_json(
            "/db/request?level=linearizable",
            r#"[
                "CREATE TABLE t (x INTEGER)",
                ["INSERT INTO t VALUES(?)", 7],
                "SELECT x FROM t",
                " /* comment */ WITH w AS (SELECT 8) INSERT INTO t SELECT * FROM w",
                "select count(*) AS n from t"
            ]"#,
        )
        .await;
    let results = out["results"].as_array().expect("results");
    assert_eq!(results.len(), 5, "{out}");
    assert_eq!(results[1], json!({"last_insert_id": 1, "rows_affected": 1}));
    assert_eq!(
        results[2],
        json!({"columns": ["x"], "types": ["integer"], "values": [[7]]})
    );
    assert_eq!(results[3], json!({"last_insert_id": 2, "rows_affected": 1}));
    assert_eq!(
        results[4],
        json!({"columns": ["n"], "types": ["integer"], "values": [[2]]})
    );
    assert!(out["raft_index"].as_u64().is_some());

    // Reads only: no raft_index.
    let reads = h.post_json("/db/request", r#"["SELECT 1 AS one"]"#).await;
    assert_eq!(
        reads,
        json!({"results": [{"columns": ["one"], "types": ["integer"], "values": [[1]]}]})
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_400_and_large_bodies_413() {
    let h = Harness::with_options(ApiOptions {
        max_body_bytes: 4096,
        max_statements: 3,
        ..ApiOptions::default()
    })
    .await;
    for (path, body) in [
        ("/db/execute", "[\"SELECT 1\""),
        ("/db/execute", "{\"sql\": \"SELECT 1\"}"),
        ("/db/execute", "[42]"),
        ("/db/execute", "[[\"SELECT ?\", {\"a\": 1}, 2]]"),
        ("/db/execute", ""),
        ("/db/query", "not json"),
        ("/db/query?min_index=-1", "[\"SELECT 1\"]"),
        (
            "/db/request",
            "[\"SELECT 1\", \"SELECT 2\", \"SELECT 3\", \"SELECT 4\"]",
        ),
    ] {
        let r = h.post(path, body).await;
        assert_eq!(r.status, 400, "{path} {body}: {}", r.text());
        let error = r.json().expect("JSON error")["error"]
            .as_str()
            .map(str::to_string);
        assert!(
            error.is_some_and(|e| !e.is_empty()),
            "{path} {body}: {}",
            r.text()
        );
    }
    // As in rqlite: no `q` is no statement; an empty `q` is refused.
    let r = h.get("/db/query").await;
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"results":[]}"#));
    let r = h.get("/db/query?q=").await;
    assert_eq!(r.status, 400, "empty q: {}", r.text());
    // As in rqlite, `auto` and levels it does not know are served as weak.
    for level in ["bogus", "auto"] {
        let r = h
            .get(&format!("/db/query?q=SELECT%201&level={level}"))
            .await;
        assert_eq!(r.status, 200, "level={level}: {}", r.text());
        assert_eq!(r.json().expect("JSON")["results"][0]["values"][0][0], 1);
    }

    let big = format!("[\"SELECT '{}'\"]", "x".repeat(8192));
    let r = h.post("/db/execute", &big).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json().expect("JSON error")["error"].is_string());
    // The refused body was not read, so the server closes the connection and must say
    // so: a client that pooled it sent its next request into a closing socket and got a
    // broken pipe (one CI run in three). The client here shares one pool.
    assert_eq!(r.header("connection"), Some("close"), "{:?}", r.headers);
    for round in 0..20 {
        let r = h.post("/db/execute", &big).await;
        assert_eq!(r.status, 413, "round {round}: {}", r.text());
        let r = h.post("/db/query", "[\"SELECT 1\"]").await;
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_repeated_with_its_idempotency_key_applies_once() {
    let h = Harness::start().await;
    h.post_json(
        "/db/execute",
        r#"["CREATE TABLE t (id INTEGER PRIMARY KEY, v)"]"#,
    )
    .await;
    let send = |key: &'static str, body: &'static str| {
        let http = h.http.clone();
        async move {
            sqlraft_core::client::request_with_headers(
                &http,
                "POST",
                "/db/execute",
                &[
                    ("Content-Type", "application/json"),
                    ("Idempotency-Key", key),
                ],
                Some(body.as_bytes()),
                common::TIMEOUT,
            )
            .await
            .expect("answered")
        }
    };
    let insert = r#"[["INSERT INTO t (v) VALUES (?)", "once"]]"#;
    let first = send("order-17", insert).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let repeat = send("order-17", insert).await;
    assert_eq!(repeat.json().expect("JSON"), first.json().expect("JSON"));
    let count = h
        .get_json("/db/query?level=linearizable&q=SELECT%20count(*)%20FROM%20t")
        .await;
    assert_eq!(count["results"][0]["values"], json!([[1]]));
    // The same key for another request is refused; a bad key changes nothing.
    let other = send("order-17", r#"[["INSERT INTO t (v) VALUES (?)", "twice"]]"#).await;
    let error = other.json().expect("JSON")["results"][0]["error"].clone();
    assert!(
        error
            .as_str()
            .unwrap_or_default()
            .contains("different request"),
        "{error}"
    );
    let bad = send("has space", insert).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    let count = h
        .get_json("/db/query?level=linearizable&q=SELECT%20count(*)%20FROM%20t")
        .await;
    assert_eq!(count["results"][0]["values"], json!([[1]]));
}

/// In `/db/request` the first run of writes is keyed by the key itself (the same
/// write sent with that key to `/db/execute` is not applied twice), later runs by
/// `<key> #N`; a key with no room for that is refused before anything is applied.
#[tokio::test(flavor = "multi_thread")]
async fn request_keys_match_execute_keys_and_leave_room_for_runs() {
    let h = Harness::start().await;
    h.post_json("/db/execute", r#"["CREATE TABLE t (v)"]"#)
        .await;
    let post = |path: &'static str, key: String, body: &'static str| {
        let http = h.http.clone();
        async move {
            sqlraft_core::client::request_with_headers(
                &http,
                "POST",
                path,
                &[
                    ("Content-Type", "application/json"),
                    ("Idempotency-Key", &key),
                ],
                Some(body.as_bytes()),
                common::TIMEOUT,
            )
            .await
            .expect("answered")
        }
    };
    let insert = r#"["INSERT INTO t VALUES (1)"]"#;
    let first = post("/db/execute", "k1".into(), insert).await;
    let again = post("/db/request", "k1".into(), insert).await;
    assert_eq!(
        first.json().expect("JSON")["raft_index"],
        again.json().expect("JSON")["raft_index"]
    );
    let two_runs = r#"["INSERT INTO t VALUES (2)", "SELECT 1", "INSERT INTO t VALUES (3)"]"#;
    assert_eq!(post("/db/request", "k2".into(), two_runs).await.status, 200);
    assert_eq!(post("/db/request", "k2".into(), two_runs).await.status, 200);
    let long = post("/db/request", "x".repeat(250), two_runs).await;
    assert_eq!(long.status, 400, "{}", long.text());
    let count = h
        .get_json("/db/query?level=linearizable&q=SELECT%20count(*)%20FROM%20t")
        .await;
    assert_eq!(count["results"][0]["values"], json!([[3]]));
}

/// A follower that cannot hear the leader (the leader's raft messages to it are lost,
/// its requests to the leader still arrive): what it forwards is applied on the
/// leader but never here. Nothing it answers may then say "nothing was applied" (503).
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_that_cannot_apply_never_answers_503_for_an_applied_change() {
    let leader = Harness::start().await;
    let follower = Harness::join("127.0.0.2", &leader).await;
    leader.post_json("/db/execute", CREATE).await;
    let f = follower.node.raft_id();
    leader
        .node
        .transport()
        .set_link_fault(f, sqlraft_harness::LinkFault::lossy(1.0));

    // A write, then a read that must see it: the write is applied on the leader, the
    // read cannot be served here in time.
    let body = r#"["INSERT INTO foo (name) VALUES ('x')", "SELECT name FROM foo"]"#;
    let r = follower.post("/db/request", body).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("were applied"), "{}", r.text());
    let on_leader = leader
        .post_json("/db/query?level=strong", r#"["SELECT count(*) FROM foo"]"#)
        .await;
    assert_eq!(
        on_leader["results"][0]["values"],
        json!([[1]]),
        "{on_leader}"
    );

    // A service created through the follower: committed on the leader, not seen here.
    let created = follower
        .post(
            "/api/v1/services",
            r#"{"fqdn": "127.0.0.9", "raft_addr": "127.0.0.9:7209"}"#,
        )
        .await;
    assert_eq!(created.status, 500, "{}", created.text());
    assert!(
        created.text().contains("outcome unknown"),
        "{}",
        created.text()
    );
    let listed = leader.get_json("/api/v1/services").await;
    assert!(
        listed["services"]
            .as_array()
            .expect("services")
            .iter()
            .any(|s| s["fqdn"] == "127.0.0.9"),
        "{listed}"
    );

    leader
        .node
        .transport()
        .set_link_fault(f, sqlraft_harness::LinkFault::default());
    follower.stop().await;
    leader.stop().await;
}

/// An R-tree written by a trigger while the statement firing it reads that R-tree
/// fails with SQLITE_LOCKED_VTAB, the same on every node: the statement's result. It
/// stopped every node, at every start (found by a review).
#[tokio::test(flavor = "multi_thread")]
async fn a_locked_r_tree_fails_the_statement_not_the_node() {
    let h = Harness::start().await;
    let setup = h
        .post_json(
            "/db/execute",
            r#"["CREATE VIRTUAL TABLE rt USING rtree(id, x0, x1)",
                "INSERT INTO rt VALUES (1, 1, 2), (2, 3, 4), (3, 5, 6)",
                "CREATE TABLE t(a)", "INSERT INTO t VALUES (1), (2), (3)",
                "CREATE TRIGGER tr AFTER UPDATE ON t BEGIN INSERT INTO rt VALUES (new.a + 100, 1, 2); END"]"#,
        )
        .await;
    assert!(!setup.to_string().contains("error"), "{setup}");
    let out = h
        .post_json(
            "/db/execute",
            r#"["UPDATE t SET a = a WHERE EXISTS (SELECT 1 FROM rt WHERE rt.id = t.a)", "INSERT INTO t VALUES (4)"]"#,
        )
        .await;
    let results = out["results"].as_array().expect("results");
    let error = results[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("locked"), "{out}");
    assert_eq!(results[1]["rows_affected"], 1, "{out}");
    assert!(h.node.failure().is_none());
    let count = h
        .get_json("/db/query?q=SELECT%20count(*)%20FROM%20rt&level=strong")
        .await;
    assert_eq!(count["results"][0]["values"], json!([[3]]), "{count}");
    h.stop().await;
}
