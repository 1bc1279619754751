//! The data API's reads in process against a real one-node cluster: result shapes,
//! consistency, byte budgets, reads that are refused, the content hash.

mod common;

use common::Harness;
use serde_json::json;

const CREATE: &str = r#"["CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT, age INTEGER, score REAL, data BLOB)"]"#;

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
