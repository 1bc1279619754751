//! The HTTP API in process against a real one-node cluster: request and response shapes
//! of the rqlite-style data API, limits and errors, and the cluster endpoints.

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
async fn associative_timings_and_pretty() {
    let h = Harness::start().await;
    h.post_json("/db/execute", CREATE).await;
    h.post_json(
        "/db/execute",
        r#"["INSERT INTO foo(id, name, age) VALUES(1, 'fiona', 20)"]"#,
    )
    .await;
    let assoc = h
        .post_json(
            "/db/query?associative",
            r#"["SELECT id, name, age FROM foo"]"#,
        )
        .await;
    assert_eq!(
        assoc,
        json!({"results": [{
            "types": {"id": "integer", "name": "text", "age": "integer"},
            "rows": [{"id": 1, "name": "fiona", "age": 20}]
        }]})
    );

    let timed = h.post_json("/db/query?timings", r#"["SELECT 1"]"#).await;
    assert!(timed["time"].as_f64().is_some(), "{timed}");
    assert!(timed["results"][0]["time"].as_f64().is_some(), "{timed}");
    let timed = h
        .post_json("/db/execute?timings", r#"["DELETE FROM foo"]"#)
        .await;
    assert!(timed["time"].as_f64().is_some(), "{timed}");
    let untimed = h.post_json("/db/query", r#"["SELECT 1"]"#).await;
    assert!(untimed.get("time").is_none());

    let pretty = h.post("/db/query?pretty", r#"["SELECT 1 AS one"]"#).await;
    assert!(pretty.text().contains("\n  "), "{}", pretty.text());
    assert_eq!(pretty.header("content-type"), Some("application/json"));
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
        json!({"columns": ["n"], "types": [""], "values": [[2]]})
    );
    assert!(out["raft_index"].as_u64().is_some());

    // Reads only: no raft_index.
    let reads = h.post_json("/db/request", r#"["SELECT 1 AS one"]"#).await;
    assert_eq!(
        reads,
        json!({"results": [{"columns": ["one"], "types": [""], "values": [[1]]}]})
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
    let r = h.get("/db/query").await;
    assert_eq!(r.status, 400, "missing q: {}", r.text());
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
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_that_cannot_be_served_in_time_gets_503() {
    let h = Harness::start().await;
    // This node will not apply index 1_000_000 within the read timeout.
    let r = h
        .post("/db/query?min_index=1000000", r#"["SELECT 1"]"#)
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.json().expect("JSON")["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out"))
    );
    h.stop().await;
}

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
        "learners": [],
        "ready": true,
    });
    for (key, value) in fixed.as_object().expect("object") {
        assert_eq!(&status[key], value, "{key} in {status}");
    }
    for key in ["term", "commit_index", "applied_index", "last_index"] {
        assert!(status[key].as_u64().is_some(), "{key} in {status}");
    }

    let nodes = h.get_json("/nodes").await;
    let applied = nodes["nodes"][0]["applied_index"]
        .as_u64()
        .expect("applied_index");
    assert_eq!(
        nodes,
        json!({"nodes": [{
            "id": "00000000-0000-0000-0000-000000000000",
            "raft_id": 1,
            "name": "core-1",
            "raft_addr": h.node.raft_addr(),
            "http_addr": h.http,
            "role": "leader",
            "voter": true,
            "reachable": true,
            "applied_index": applied
        }]})
    );

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

/// Reads that try to open a transaction or change their connection are refused, so no
/// pooled connection is left on an old snapshot: linearizable reads see the writes that
/// follow.
#[tokio::test(flavor = "multi_thread")]
async fn no_read_request_can_make_later_reads_stale() {
    let h = Harness::start().await;
    h.post_json(
        "/db/execute",
        r#"["CREATE TABLE t (v)", "INSERT INTO t VALUES (1)"]"#,
    )
    .await;
    for q in [
        "BEGIN",
        "BEGIN%20IMMEDIATE",
        "SAVEPOINT%20s",
        "PRAGMA%20query_only=0",
    ] {
        for _ in 0..12 {
            let answer = h.get_json(&format!("/db/query?q={q}")).await;
            let error = answer["results"][0]["error"].as_str().unwrap_or_default();
            assert!(error.contains("not allowed"), "{q}: {answer}");
        }
    }
    h.post_json("/db/execute", r#"["INSERT INTO t VALUES (2)"]"#)
        .await;
    h.post_json("/db/execute", r#"["INSERT INTO t VALUES (3)"]"#)
        .await;
    for _ in 0..16 {
        let read = h
            .get_json("/db/query?level=linearizable&q=SELECT%20count(*)%20FROM%20t")
            .await;
        assert_eq!(read["results"][0]["values"], json!([[3]]), "{read}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn read_results_are_bounded_in_bytes() {
    let h = Harness::start().await;
    let huge = h.get_json("/db/query?q=SELECT%20zeroblob(999999999)").await;
    let error = huge["results"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("too big"), "{huge}");
    let many = h
        .post_json(
            "/db/query",
            r#"["WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200) SELECT zeroblob(1000000) FROM c"]"#,
        )
        .await;
    let error = many["results"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("larger than 67108864 bytes"), "{many}");
    // Many reads in one request are bounded together.
    let six = h
        .post_json(
            "/db/query",
            &serde_json::to_string(&vec!["SELECT zeroblob(10000000)"; 6]).expect("JSON"),
        )
        .await;
    let errors = six["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| {
            r["error"]
                .as_str()
                .is_some_and(|e| e.contains("results of this request are larger"))
        })
        .count();
    assert!(errors >= 4, "{}", &six.to_string()[..200]);
    // Empty values are not free.
    let empty = h
        .post_json(
            "/db/query",
            r#"["WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000) SELECT '', '', '', '', '' FROM c"]"#,
        )
        .await;
    assert!(
        empty["results"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("larger than")),
        "{}",
        &empty.to_string()[..200]
    );
    // A write may store at most a value a read can return.
    h.post_json("/db/execute", r#"["CREATE TABLE big (v)"]"#)
        .await;
    let stored = h
        .post_json(
            "/db/execute",
            r#"["INSERT INTO big VALUES (zeroblob(16000000))", "INSERT INTO big VALUES (zeroblob(16777217))"]"#,
        )
        .await;
    assert!(stored["results"][0]["error"].is_null(), "{stored}");
    assert!(
        stored["results"][1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("too big")),
        "{stored}"
    );
    let back = h.get_json("/db/query?q=SELECT%20v%20FROM%20big").await;
    assert!(
        back["results"][0]["error"].is_null(),
        "a stored value cannot be read back"
    );
    // The node is fine and answers the next read.
    let one = h.get_json("/db/query?q=SELECT%201").await;
    assert_eq!(one["results"][0]["values"], json!([[1]]));
}

/// `/db/request` sends a statement the read path refuses as a write only when it
/// writes; what reads may not do at all takes no raft entry.
#[tokio::test(flavor = "multi_thread")]
async fn a_statement_refused_as_a_read_is_not_logged_as_a_write() {
    let h = Harness::start().await;
    let answer = h
        .post_json(
            "/db/request",
            r#"["PRAGMA cache_size = 1", "PRAGMA journal_mode = DELETE"]"#,
        )
        .await;
    assert!(answer.get("raft_index").is_none(), "{answer}");
    for result in answer["results"].as_array().expect("results") {
        assert!(
            result["error"]
                .as_str()
                .is_some_and(|e| e.contains("not allowed")),
            "{answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn content_hash_comes_with_its_applied_index() {
    let h = Harness::start().await;
    let before = h.get_json("/db/hash").await;
    let written = h
        .post_json(
            "/db/execute",
            r#"["CREATE TABLE t (v)", "INSERT INTO t VALUES (1)"]"#,
        )
        .await;
    let after = h.get_json("/db/hash").await;
    assert_eq!(after["applied_index"], written["raft_index"], "{after}");
    let sha = after["sha256"].as_str().expect("sha256");
    assert_eq!(sha.len(), 64, "{after}");
    assert_ne!(before["sha256"], after["sha256"]);
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

/// What a read costs depends on how it is written: column names repeated per row
/// (`associative`), blobs as arrays of numbers (`blob_array`), indentation (`pretty`).
#[tokio::test(flavor = "multi_thread")]
async fn the_read_budget_counts_the_json_as_written() {
    let h = Harness::start().await;
    let long_name = "n".repeat(10_000);
    let q = format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 60000) \
         SELECT NULL AS \"{long_name}\" FROM c"
    );
    let body = serde_json::to_string(&vec![q]).expect("JSON");
    let named = h.post_json("/db/query?associative", &body).await;
    let error = named["results"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("larger than"),
        "{}",
        &named.to_string()[..200]
    );

    let blob = "SELECT randomblob(16000000) AS b";
    let plain = h
        .post_json(
            "/db/query",
            &serde_json::to_string(&vec![blob]).expect("JSON"),
        )
        .await;
    assert!(plain["results"][0]["error"].is_null(), "base64 fits");
    let arrays = h
        .post_json(
            "/db/query?blob_array&pretty",
            &serde_json::to_string(&vec![blob]).expect("JSON"),
        )
        .await;
    let error = arrays["results"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("larger than"),
        "{}",
        &arrays.to_string()[..200]
    );
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
