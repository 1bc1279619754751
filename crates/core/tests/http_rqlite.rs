//! What rqlite's clients rely on beyond the basic data API, in process: SQLite's own
//! error texts, types of expression columns, `timings`, `RETURNING` rows, `?redirect`,
//! queued writes, `/db/backup` and `/db/load`, `X-Rqlite-Version`, rqlite's forms of
//! typed values, `/nodes` with non-voters, and the web interface's query console.
//! (The client libraries themselves run in tests/rqlite_clients.rs.)

mod common;

use std::time::Duration;

use common::Harness;
use serde_json::{Value as Json, json};
use sqlraft_core::client;

const CREATE: &str = r#"["CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT UNIQUE, at DATETIME, ok BOOLEAN, note TEXT, data BLOB)"]"#;

#[tokio::test(flavor = "multi_thread")]
async fn errors_types_timings_and_returning_as_rqlite_gives_them() {
    let h = Harness::start().await;
    h.post_json("/db/execute", CREATE).await;

    // SQLite's message, nothing appended; a UNIQUE violation names table.column.
    let r = h
        .post_json(
            "/db/execute",
            r#"["SELEC 1", "INSERT INTO foo (name) VALUES ('a')", "INSERT INTO foo (name) VALUES ('a')"]"#,
        )
        .await;
    assert_eq!(
        r["results"][0],
        json!({"error": "near \"SELEC\": syntax error"})
    );
    assert_eq!(
        r["results"][2],
        json!({"error": "UNIQUE constraint failed: foo.name"})
    );
    let r = h.post_json("/db/query", r#"["SELECT * FROM nope"]"#).await;
    assert_eq!(r["results"][0], json!({"error": "no such table: nope"}));

    // Expression columns take the type of their first row's value; none without rows.
    let r = h
        .post_json(
            "/db/query",
            r#"["SELECT count(*), 1.5, 'x', x'00', NULL FROM foo", "SELECT 1 WHERE 0"]"#,
        )
        .await;
    assert_eq!(
        r["results"][0]["types"],
        json!(["integer", "real", "text", "blob", ""])
    );
    assert_eq!(
        r["results"][1],
        json!({"columns": ["1"], "types": [""]}),
        "no rows: no values, as rqlite"
    );

    // timings: every result and the whole request.
    let r = h
        .post_json(
            "/db/execute?timings",
            r#"["INSERT INTO foo (name) VALUES ('t')", "SELEC"]"#,
        )
        .await;
    assert!(r["time"].as_f64().is_some(), "{r}");
    assert!(r["results"][0]["time"].as_f64().is_some(), "{r}");
    assert!(
        r["results"][1].get("time").is_none(),
        "errors carry no time: {r}"
    );
    let r = h.post_json("/db/query?timings", r#"["SELECT 1"]"#).await;
    assert!(r["results"][0]["time"].as_f64().is_some(), "{r}");

    // RETURNING: the rows instead of the counts, on /db/execute and /db/request.
    let r = h
        .post_json(
            "/db/execute",
            r#"["INSERT INTO foo (name) VALUES ('r') RETURNING id, name, 2*3", "INSERT INTO foo (name) VALUES ('s')"]"#,
        )
        .await;
    let id = r["results"][0]["values"][0][0].as_i64().expect("id");
    assert_eq!(
        r["results"][0],
        json!({"columns": ["id", "name", "2*3"], "types": ["integer", "text", "integer"], "values": [[id, "r", 6]]})
    );
    assert_eq!(r["results"][1]["rows_affected"], json!(1));
    let r = h
        .post_json(
            "/db/request?associative",
            r#"["UPDATE foo SET note = 'n' WHERE name = 'r' RETURNING name, note"]"#,
        )
        .await;
    assert_eq!(
        r["results"][0],
        json!({"types": {"name": "text", "note": "text"}, "rows": [{"name": "r", "note": "n"}]})
    );
    // A RETURNING that fails is rolled back like any statement.
    let r = h
        .post_json(
            "/db/execute",
            r#"["INSERT INTO foo (name) VALUES ('r') RETURNING id"]"#,
        )
        .await;
    assert_eq!(
        r["results"][0],
        json!({"error": "UNIQUE constraint failed: foo.name"})
    );

    // RETURNING rows over the request's budget are written, left out and counted.
    let r = h
        .post_json(
            "/db/execute",
            r#"["WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 6) INSERT INTO foo (name, note) SELECT 'big' || n, printf('%.2000000c', 'x') FROM c RETURNING name, note"]"#,
        )
        .await;
    let kept = r["results"][0]["values"].as_array().map_or(0, Vec::len);
    let omitted = r["results"][0]["rows_omitted"].as_u64().unwrap_or(0);
    assert!(kept > 0 && omitted > 0, "{kept} kept, {omitted} omitted");
    assert_eq!(kept as u64 + omitted, 6);
    let count = h
        .post_json(
            "/db/query",
            r#"["SELECT count(*) FROM foo WHERE name LIKE 'big%'"]"#,
        )
        .await;
    assert_eq!(count["results"][0]["values"], json!([[6]]));

    // Every answer says which API it is, errors and unknown paths too.
    for path in ["/status", "/nope"] {
        let r = h.get(path).await;
        assert_eq!(
            r.header("x-rqlite-version"),
            Some(concat!("sqlraft-", env!("CARGO_PKG_VERSION"))),
            "{path}"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_values_take_rqlite_forms_and_hex_strings_are_blobs() {
    let h = Harness::start().await;
    h.post_json("/db/execute", CREATE).await;
    h.post_json(
        "/db/execute",
        r#"[
            ["INSERT INTO foo (name, at, ok, note, data) VALUES (?, ?, ?, ?, ?)", "a", "2021-10-22 19:39:32.016087", 1, "x'68690a'", "x'00ff'"],
            ["INSERT INTO foo (name, at, ok, note) VALUES (?, ?, ?, ?)", "b", 1000000000, 0, "plain"],
            ["INSERT INTO foo (name, at) VALUES (?, ?)", "c", "not a time"]
        ]"#,
    )
    .await;
    let r = h
        .post_json(
            "/db/query",
            r#"["SELECT name, at, ok, note, typeof(note), data FROM foo ORDER BY name"]"#,
        )
        .await;
    assert_eq!(
        r["results"][0]["values"],
        json!([
            // x'..' strings are bound as blobs; a blob in a text column is written as
            // its text, one in a blob column as base64.
            [
                "a",
                "2021-10-22T19:39:32.016087Z",
                true,
                "hi\n",
                "blob",
                "AP8="
            ],
            ["b", "2001-09-09T01:46:40Z", false, "plain", "text", null],
            ["c", "not a time", null, null, "null", null]
        ]),
        "{r}"
    );
    h.stop().await;
}

/// What the parsers would change behind the client's back is refused, and nothing is
/// written (found by a review): an integer beyond 64 bits, which serde_json reads as a
/// real, and a query string whose escapes are not UTF-8, which the query's parser
/// replaces.
#[tokio::test(flavor = "multi_thread")]
async fn an_integer_beyond_64_bits_or_a_query_that_is_not_utf8_is_refused() {
    let h = Harness::start().await;
    h.post_json("/db/execute", r#"["CREATE TABLE n (v)"]"#)
        .await;
    for body in [
        r#"[["INSERT INTO n VALUES (?)", 18446744073709551616]]"#,
        r#"[["INSERT INTO n VALUES (:v)", {"v": -9223372036854775809}]]"#,
    ] {
        let r = h.post("/db/execute", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(
            r.text().contains("does not fit in 64 signed bits"),
            "{}",
            r.text()
        );
    }
    let r = h
        .post("/db/execute", r#"[["INSERT INTO n VALUES (?)", 1e20]]"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = h.get("/db/query?q=SELECT%20%27%ff%27").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("UTF-8"), "{}", r.text());
    let r = h
        .get("/db/query?q=SELECT%20%27%C3%A9%27%2C%20count(*)%2C%20max(v)%20FROM%20n")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let values = r.json().expect("json")["results"][0]["values"].clone();
    assert_eq!(values, json!([["\u{e9}", 1, 1e20]]), "{}", r.text());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_redirects_when_asked_and_lists_learners_only_when_asked() {
    let leader = Harness::start().await;
    let follower = Harness::join("127.0.0.2", &leader).await;
    leader.post_json("/db/execute", CREATE).await;

    let r = follower
        .post(
            "/db/execute?redirect&pretty",
            r#"["INSERT INTO foo (name) VALUES ('x')"]"#,
        )
        .await;
    assert_eq!(r.status, 301, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("http://{}/db/execute?redirect&pretty", leader.http).as_str())
    );
    assert!(r.body.is_empty());
    let r = follower
        .get("/db/query?redirect&level=strong&q=SELECT%201")
        .await;
    assert_eq!(r.status, 301, "{}", r.text());
    // Reads any node serves are not redirected; nor is anything on the leader.
    for level in ["none", "linearizable"] {
        let r = follower
            .get(&format!("/db/query?redirect&level={level}&q=SELECT%201"))
            .await;
        assert_eq!(r.status, 200, "{level}: {}", r.text());
    }
    let r = follower
        .post("/db/request?redirect", r#"["SELECT 1"]"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = leader
        .post(
            "/db/execute?redirect",
            r#"["INSERT INTO foo (name) VALUES ('y')"]"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Without redirect the follower forwards.
    let r = follower
        .post("/db/execute", r#"["INSERT INTO foo (name) VALUES ('z')"]"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // The follower joined as a learner (the voters stay odd): rqlite lists voters
    // only, unless ?nonvoters.
    let voters = follower.get_json("/nodes").await;
    assert_eq!(voters.as_object().map(|m| m.len()), Some(1), "{voters}");
    let all = follower.get_json("/nodes?nonvoters").await;
    let learner = &all[follower.node.service_id()];
    assert_eq!(learner["voter"], json!(false), "{all}");
    assert_eq!(learner["reachable"], json!(true), "{all}");
    assert_eq!(
        learner["api_addr"],
        json!(format!("http://{}", follower.http))
    );
    // The follower asked the leader about itself over the raft port.
    let seen = &all[leader.node.service_id()];
    assert_eq!(seen["reachable"], json!(true), "{all}");
    assert_eq!(seen["leader"], json!(true), "{all}");
    assert_eq!(seen["role"], json!("leader"), "{all}");
    assert_eq!(seen["version"], json!(env!("CARGO_PKG_VERSION")), "{all}");
    assert!(seen["applied_index"].as_u64() > Some(0), "{all}");
    let listed = follower.get_json("/nodes?ver=2&nonvoters").await;
    assert_eq!(
        listed["nodes"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    let status = follower.get_json("/status").await;
    assert_eq!(status["store"]["raft"]["voter"], json!(false));
    assert_eq!(
        follower.get_json("/status?key=store.leader").await,
        status["store"]["leader"]
    );
    assert_eq!(follower.get_json("/status?key=store.nope").await, json!({}));
    assert_eq!(
        follower.get_json("/status?key=store.raft.state.x").await,
        json!("Follower")
    );
    let led = follower.get_json("/leader").await;
    assert_eq!(led["id"], json!(leader.node.service_id()), "{led}");
    assert_eq!(led["leader"], json!(true), "{led}");
    assert_eq!(
        status["store"]["leader"]["node_id"],
        json!(leader.node.service_id())
    );

    follower.stop().await;
    leader.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_writes_are_numbered_batched_and_waited_for() {
    let leader = Harness::start().await;
    let follower = Harness::join("127.0.0.2", &leader).await;
    leader.post_json("/db/execute", CREATE).await;

    let mut numbers = Vec::new();
    for i in 0..20 {
        let r = follower
            .post_json(
                "/db/execute?queue",
                &format!(r#"[["INSERT INTO foo (name) VALUES (?)", "q{i}"], "BAD SQL"]"#),
            )
            .await;
        assert_eq!(r["results"], json!([]), "{r}");
        numbers.push(r["sequence_number"].as_u64().expect("sequence_number"));
    }
    assert!(numbers.windows(2).all(|w| w[1] > w[0]), "{numbers:?}");
    // &wait answers once the batch holding the request is written.
    let waited = follower
        .post_json(
            "/db/execute?queue&wait&timeout=10s",
            r#"["INSERT INTO foo (name) VALUES ('last')"]"#,
        )
        .await;
    let last = waited["sequence_number"].as_u64().expect("sequence_number");
    let count = follower
        .post_json(
            "/db/query",
            r#"["SELECT count(*) FROM foo WHERE name LIKE 'q%' OR name = 'last'"]"#,
        )
        .await;
    assert_eq!(count["results"][0]["values"], json!([[21]]), "{count}");
    let status = follower.get_json("/status").await;
    let queue = &status["http"]["queue"]["_default"];
    assert!(queue["sequence_number"].as_u64() >= Some(last), "{queue}");
    // Fewer batches than requests, and the bad statements were counted.
    assert!(queue["batches"].as_u64() < Some(21), "{queue}");
    assert_eq!(queue["failed_statements"], json!(20), "{queue}");
    assert_eq!(queue["pending"], json!(0), "{queue}");

    let r = follower.post("/db/execute?queue", "[]").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = follower.post("/db/execute?queue&wait", "[]").await;
    assert_eq!(
        r.status,
        200,
        "an empty request with wait is a checkpoint: {}",
        r.text()
    );
    let r = follower.post("/db/execute?queue&timeout=soon", "[]").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = client::request_with_headers(
        &follower.http,
        "POST",
        "/db/execute?queue",
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "k"),
        ],
        Some(br#"["SELECT 1"]"#),
        Duration::from_secs(10),
    )
    .await
    .expect("answer");
    assert_eq!(r.status, 400, "{}", r.text());
    follower.stop().await;
    leader.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sql_dump_from_backup_loads_back_and_a_database_file_loads_too() {
    let h = Harness::start().await;
    h.post_json("/db/execute", CREATE).await;
    h.post_json(
        "/db/execute",
        r#"[["INSERT INTO foo (name, note, data) VALUES (?, ?, ?)", "it's", "line\nbreak", [0, 1, 255]],
            "CREATE INDEX foo_note ON foo (note)",
            "CREATE VIEW names AS SELECT name FROM foo"]"#,
    )
    .await;
    let dump = h.get("/db/backup?fmt=sql").await;
    assert_eq!(dump.status, 200);
    assert_eq!(dump.header("content-type"), Some("application/sql"));
    let text = dump.text();
    assert!(
        text.starts_with("PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n"),
        "{text}"
    );
    assert!(
        text.contains("INSERT INTO \"foo\"(\"_rowid_\",\"id\",\"name\",\"at\",\"ok\",\"note\",\"data\") VALUES(1,1,'it''s',NULL,NULL,'line\nbreak',X'0001FF');"),
        "{text}"
    );
    assert!(!text.contains("_sqlraft"), "{text}");
    let binary = h.get("/db/backup").await;
    assert_eq!(binary.status, 200);
    assert!(binary.body.starts_with(b"SQLite format 3\0"));
    assert_eq!(h.get("/db/backup?fmt=SQL").await.status, 200);
    for bad in ["/db/backup?fmt=csv", "/db/backup?compress"] {
        assert_eq!(h.get(bad).await.status, 400, "{bad}");
    }

    // Loading the dump where its tables are gone gives the same content back.
    h.post_json("/db/execute", r#"["DROP VIEW names", "DROP TABLE foo"]"#)
        .await;
    let loaded = h.post("/db/load", &text).await;
    assert_eq!(loaded.status, 200, "{}", loaded.text());
    let rows = h
        .post_json(
            "/db/query",
            r#"["SELECT name, note, data FROM foo", "SELECT * FROM names"]"#,
        )
        .await;
    assert_eq!(
        rows["results"][0]["values"],
        json!([["it's", "line\nbreak", "AAH/"]])
    );
    assert_eq!(rows["results"][1]["values"], json!([["it's"]]));
    // A dump that fails part way loads nothing.
    let r = h.post("/db/load", &text).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("already exists"), "{}", r.text());

    // A database file replaces the content, answering {"results": []} as rqlite.
    h.post_json("/db/execute", r#"["DELETE FROM foo"]"#).await;
    let r = client::request_with_headers(
        &h.http,
        "POST",
        "/db/load",
        &[("Content-Type", "application/octet-stream")],
        Some(&binary.body),
        Duration::from_secs(30),
    )
    .await
    .expect("answer");
    assert_eq!(r.status, 200, "{}", r.text());
    let body: Json = r.json().expect("json");
    assert_eq!(body["results"], json!([]), "{body}");
    let rows = h
        .post_json("/db/query", r#"["SELECT count(*) FROM foo"]"#)
        .await;
    assert_eq!(rows["results"][0]["values"], json!([[1]]));
    let r = h.post("/db/load", "\u{1}\u{2}not sql").await;
    assert_eq!(r.status, 400, "{}", r.text());
    // Nothing to load is said so, not answered as a load (found by a review).
    for nothing in ["", "  \n", "BEGIN TRANSACTION;\nCOMMIT;\n"] {
        let r = h.post("/db/load", nothing).await;
        assert_eq!(r.status, 400, "{nothing:?}: {}", r.text());
        assert!(r.text().contains("nothing to load"), "{}", r.text());
    }
    h.stop().await;
}

/// Queued requests that fit the node's limits one by one but not together are cut
/// into several batches, none lost; one that does not fit alone is refused when it is
/// queued (found by a review: a batch over the limits was given up, every request in
/// it answered 200).
#[tokio::test(flavor = "multi_thread")]
async fn queued_batches_stay_within_the_nodes_limits() {
    let h = Harness::start().await;
    h.post_json("/db/execute", r#"["CREATE TABLE q (n INTEGER)"]"#)
        .await;
    let many = |from: usize| {
        let statements: Vec<Json> = (from..from + 6000)
            .map(|n| json!(["INSERT INTO q VALUES (?)", n]))
            .collect();
        Json::Array(statements).to_string()
    };
    let (first, second) = (many(0), many(6000));
    let (a, b) = tokio::join!(
        h.post("/db/execute?queue", &first),
        h.post("/db/execute?queue", &second),
    );
    assert_eq!(
        (a.status, b.status),
        (200, 200),
        "{} {}",
        a.text(),
        b.text()
    );
    let last = h
        .post_json(
            "/db/execute?queue&wait&timeout=30s",
            r#"["INSERT INTO q VALUES (-1)"]"#,
        )
        .await;
    assert!(last["sequence_number"].as_u64().is_some(), "{last}");
    let count = h
        .post_json("/db/query", r#"["SELECT count(*) FROM q"]"#)
        .await;
    assert_eq!(count["results"][0]["values"], json!([[12001]]), "{count}");
    let status = h.get_json("/status").await;
    assert_eq!(
        status["http"]["queue"]["_default"]["failed_batches"],
        json!(0),
        "{status}"
    );

    let too_many: Vec<Json> = (0..10_001).map(|_| json!("SELECT 1")).collect();
    let r = h
        .post("/db/execute?queue", &Json::Array(too_many).to_string())
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("at most 10000"), "{}", r.text());
    h.stop().await;
}

/// A node with a table `n (x)`.
async fn with_table_n() -> Harness {
    let h = Harness::start().await;
    h.post_json("/db/execute", r#"["CREATE TABLE n (x)"]"#)
        .await;
    h
}

/// Checks that every queued request was taken, waits for their batch, and returns the
/// queue's counters. Sent together, the requests were written in one batch (one entry):
/// the case the queue's budget tests are for.
async fn written_in_one_batch(h: &Harness, answers: &[client::Response]) -> Json {
    for r in answers {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Runaway statements take seconds each in a debug build, and a batch may run
    // five times: longer than the harness's usual wait.
    let waited = client::post(
        &h.http,
        "/db/execute?queue&wait&timeout=120s",
        b"[]",
        Duration::from_secs(130),
    )
    .await
    .expect("answered");
    assert_eq!(waited.status, 200, "{}", waited.text());
    let status = h.get_json("/status").await;
    let queue = status["http"]["queue"]["_default"].clone();
    assert_eq!(queue["batches"], json!(1), "{queue}");
    queue
}

/// A statement past its budget of 100 million VM instructions.
const RUNAWAY_INSERT: &str =
    "INSERT INTO n WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c";

/// Each queued request keeps its own step budget in the batch that carries it: five
/// statements that together run past one request's budget (300 million VM
/// instructions), each within it, queued by five clients, all apply.
#[tokio::test(flavor = "multi_thread")]
async fn queued_requests_keep_their_own_step_budget() {
    // About 68 million VM instructions (a recursive count of 4 million rows).
    const HEAVY: &str = "INSERT INTO n SELECT count(*) FROM (WITH RECURSIVE c(x) AS \
        (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 4000000) SELECT x FROM c)";
    let h = with_table_n().await;
    let body = json!([HEAVY]).to_string();
    let (a, b, c, d, e) = tokio::join!(
        h.post("/db/execute?queue", &body),
        h.post("/db/execute?queue", &body),
        h.post("/db/execute?queue", &body),
        h.post("/db/execute?queue", &body),
        h.post("/db/execute?queue", &body),
    );
    let queue = &written_in_one_batch(&h, &[a, b, c, d, e]).await;
    assert_eq!(queue["failed_statements"], json!(0), "{queue}");
    let count = h
        .post_json("/db/query", r#"["SELECT count(*) FROM n"]"#)
        .await;
    assert_eq!(count["results"][0]["values"], json!([[5]]), "{count}");
    h.stop().await;
}

/// A queued request that runs past its step budget fails alone: the other requests of
/// its batch are applied.
#[tokio::test(flavor = "multi_thread")]
async fn a_queued_request_past_its_step_budget_fails_alone() {
    let h = with_table_n().await;
    let runaway = json!(["INSERT INTO n VALUES (2)", RUNAWAY_INSERT]).to_string();
    let (a, b, c) = tokio::join!(
        h.post("/db/execute?queue", r#"["INSERT INTO n VALUES (1)"]"#),
        h.post("/db/execute?queue", &runaway),
        h.post("/db/execute?queue", r#"["INSERT INTO n VALUES (3)"]"#),
    );
    let queue = &written_in_one_batch(&h, &[a, b, c]).await;
    // Both statements of the runaway request failed, none of the others.
    assert_eq!(queue["failed_statements"], json!(2), "{queue}");
    let rows = h
        .post_json("/db/query", r#"["SELECT x FROM n ORDER BY x"]"#)
        .await;
    assert_eq!(rows["results"][0]["values"], json!([[1], [3]]), "{rows}");
    h.stop().await;
}

/// More queued requests past their step budgets than an entry has runs: the requests
/// before the last one found stand, it and the ones after it fail (found by a review:
/// the whole batch failed).
#[tokio::test(flavor = "multi_thread")]
async fn queued_requests_past_their_budgets_cost_only_the_tail_of_their_batch() {
    let h = with_table_n().await;
    let runaway = json!([RUNAWAY_INSERT]).to_string();
    let (a, b, c, d, e, f, g) = tokio::join!(
        h.post("/db/execute?queue", r#"["INSERT INTO n VALUES (1)"]"#),
        h.post("/db/execute?queue", &runaway),
        h.post("/db/execute?queue", &runaway),
        h.post("/db/execute?queue", r#"["INSERT INTO n VALUES (2)"]"#),
        h.post("/db/execute?queue", &runaway),
        h.post("/db/execute?queue", &runaway),
        h.post("/db/execute?queue", r#"["INSERT INTO n VALUES (3)"]"#),
    );
    let answers = [a, b, c, d, e, f, g];
    let queue = &written_in_one_batch(&h, &answers).await;
    // The requests' order in the batch is the order of their sequence numbers.
    let mut order: Vec<(u64, usize)> = answers
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let json = r.json().expect("JSON");
            (json["sequence_number"].as_u64().expect("a number"), i)
        })
        .collect();
    order.sort_unstable();
    let order: Vec<usize> = order.into_iter().map(|(_, i)| i).collect();
    // The four runaways fail, and so does every insert queued after the fourth.
    let runaways = [1, 2, 4, 5];
    let inserts = [(0, 1), (3, 2), (6, 3)];
    let fourth = order
        .iter()
        .rposition(|i| runaways.contains(i))
        .expect("a runaway");
    let mut standing: Vec<i64> = order[..fourth]
        .iter()
        .filter_map(|&i| inserts.iter().find(|(at, _)| *at == i))
        .map(|(_, v)| *v)
        .collect();
    standing.sort_unstable();
    assert_eq!(
        queue["failed_statements"],
        json!(7 - standing.len()),
        "{queue}"
    );
    let rows = h
        .post_json("/db/query", r#"["SELECT x FROM n ORDER BY x"]"#)
        .await;
    let expected: Vec<[i64; 1]> = standing.iter().map(|v| [*v]).collect();
    assert_eq!(rows["results"][0]["values"], json!(expected), "{rows}");
    h.stop().await;
}

/// A dump as `sqlite3 .dump` writes it: comments, the framing, an AUTOINCREMENT
/// counter, a trigger with CASE ... END in its body. (Foreign keys are enforced as
/// the statements run: a dump that inserts a child row before its parent fails with
/// SQLite's error and loads nothing; docs/API.md.)
#[tokio::test(flavor = "multi_thread")]
async fn a_dump_written_by_other_tools_loads() {
    let h = Harness::start().await;
    let dump = "-- written by sqlite3\n\
        PRAGMA foreign_keys=OFF;\n\
        /* framing */ BEGIN TRANSACTION;\n\
        CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT);\n\
        INSERT INTO posts VALUES(1,'hello');\n\
        CREATE TABLE comments (id INTEGER PRIMARY KEY AUTOINCREMENT, post REFERENCES posts (id), body TEXT);\n\
        INSERT INTO comments VALUES(1,1,'first; with a semicolon');\n\
        CREATE TABLE log (what TEXT);\n\
        DELETE FROM sqlite_sequence;\n\
        INSERT INTO sqlite_sequence VALUES('comments',1);\n\
        CREATE TRIGGER tr AFTER INSERT ON posts BEGIN \
          INSERT INTO log VALUES (CASE WHEN new.id > 0 THEN 'pos' ELSE 'neg' END); END;\n\
        COMMIT;\n";
    let r = h.post("/db/load", dump).await;
    assert_eq!(r.status, 200, "{}", r.text());
    h.post_json(
        "/db/execute",
        r#"["INSERT INTO posts VALUES (2, 'again')"]"#,
    )
    .await;
    let rows = h
        .post_json(
            "/db/query",
            r#"["SELECT body FROM comments", "SELECT what FROM log"]"#,
        )
        .await;
    assert_eq!(
        rows["results"][0]["values"],
        json!([["first; with a semicolon"]])
    );
    assert_eq!(rows["results"][1]["values"], json!([["pos"]]));
    // A statement no write can carry is refused before anything is written.
    let huge = format!(
        "CREATE TABLE z (b); INSERT INTO z VALUES (X'{}');",
        "00".repeat(4_300_000)
    );
    let r = h.post("/db/load", &huge).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("statement 2 of the load"), "{}", r.text());
    let z = h
        .post_json(
            "/db/query",
            r#"["SELECT count(*) FROM sqlite_schema WHERE name = 'z'"]"#,
        )
        .await;
    assert_eq!(z["results"][0]["values"], json!([[0]]));
    // A trigger whose body holds CASE ... END; loads whole.
    let r = h
        .post(
            "/db/load",
            "CREATE TABLE w (v); CREATE TABLE wl (x);\n\
             CREATE TRIGGER wt AFTER INSERT ON w BEGIN \
               INSERT INTO wl VALUES (1); UPDATE wl SET x = CASE WHEN new.v > 0 THEN 2 ELSE 3 END; END;\n\
             INSERT INTO w VALUES (5);",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let wl = h.post_json("/db/query", r#"["SELECT x FROM wl"]"#).await;
    assert_eq!(wl["results"][0]["values"], json!([[2]]));

    // A child row before its parent: SQLite's error, nothing loaded.
    let r = h
        .post(
            "/db/load",
            "CREATE TABLE a (p REFERENCES b (id)); INSERT INTO a VALUES (1); \
             CREATE TABLE b (id INTEGER PRIMARY KEY); INSERT INTO b VALUES (1);",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("nothing was loaded"), "{}", r.text());
    let tables = h
        .post_json(
            "/db/query",
            r#"["SELECT count(*) FROM sqlite_schema WHERE name IN ('a', 'b')"]"#,
        )
        .await;
    assert_eq!(tables["results"][0]["values"], json!([[0]]));

    // A transaction that fails whole (a full-text insert failed after writing its
    // table) is named whole, its first statement not blamed (found by a review); a
    // load that fits one transaction loads whole or not at all, its index included.
    let r = h
        .post(
            "/db/load",
            "CREATE TABLE la (x); INSERT INTO la VALUES (1); CREATE INDEX lai ON la (x); \
             CREATE VIRTUAL TABLE lf USING fts5(t); INSERT INTO lf (rowid, t) VALUES (1, 'a'); \
             INSERT INTO lf (rowid, t) VALUES (1, 'b'); INSERT INTO la VALUES (2);",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("the transaction of its statements 1 to 7 failed"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("nothing was loaded"), "{}", r.text());
    let tables = h
        .post_json(
            "/db/query",
            r#"["SELECT count(*) FROM sqlite_schema WHERE name IN ('la', 'lai', 'lf')"]"#,
        )
        .await;
    assert_eq!(tables["results"][0]["values"], json!([[0]]));
    h.stop().await;
}

/// The console's reads share one result budget, as a data API request's do (found by
/// a review: each read kept up to the per-read limit, together without bound).
#[tokio::test(flavor = "multi_thread")]
async fn the_consoles_reads_share_one_budget() {
    let h = Harness::with_options(sqlraft_core::app::ApiOptions {
        max_result_bytes: 20_000,
        ..Default::default()
    })
    .await;
    h.post_json(
        "/db/execute",
        r#"["CREATE TABLE big (s TEXT)", "INSERT INTO big VALUES (printf('%.4000c', 'x'))"]"#,
    )
    .await;
    let read = "SELECT s FROM big; SELECT s FROM big; SELECT s FROM big; SELECT 1";
    let page = console(&h, "/ui/console/query", &[("sql", read)])
        .await
        .text();
    assert!(page.contains("larger than 20000 bytes"), "{page}");
    assert!(page.contains("not run"), "{page}");
    h.stop().await;
}

/// A form post to the console (no `--auth` here: no session or CSRF token needed).
async fn console(h: &Harness, action: &str, form: &[(&str, &str)]) -> client::Response {
    let body: String = form_urlencoded(form);
    client::request_with_headers(
        &h.http,
        "POST",
        action,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(body.as_bytes()),
        Duration::from_secs(10),
    )
    .await
    .expect("answer")
}

fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", sqlraft_core::web::encode_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_query_console_runs_reads_and_writes_and_shows_tables() {
    let h = Harness::start().await;
    let page = h.get("/ui/console").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("id=\"console-form\""));
    assert!(h.get("/").await.text().contains("href=\"/ui/console\""));

    let written = console(
        &h,
        "/ui/console/execute",
        &[
            (
                "sql",
                "CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('<b>') RETURNING v",
            ),
            ("transaction", "on"),
        ],
    )
    .await;
    let text = written.text();
    assert_eq!(written.status, 200, "{text}");
    assert!(text.contains("as one transaction"), "{text}");
    assert!(text.contains("<td>&lt;b&gt;</td>"), "{text}");

    let read = console(
        &h,
        "/ui/console/query",
        &[
            ("sql", "SELECT v, 42 AS n FROM t; DELETE FROM t"),
            ("level", "linearizable"),
        ],
    )
    .await;
    let text = read.text();
    assert!(
        text.contains("<td>&lt;b&gt;</td><td class=\"number\">42</td>"),
        "{text}"
    );
    assert!(text.contains("Run as a write"), "{text}");
    assert!(
        text.contains("class=\"error\""),
        "a write in a read is refused: {text}"
    );
    let still = h
        .post_json("/db/query", r#"["SELECT count(*) FROM t"]"#)
        .await;
    assert_eq!(still["results"][0]["values"], json!([[1]]));

    // A request that fails whole is shown so, not as written with its one error under
    // the first statement (found by a review). Here FTS4 with automerge on fails the
    // commit after it was renamed in the request that filled it.
    let mut setup = vec![json!("CREATE VIRTUAL TABLE f4 USING fts4 (x)")];
    setup.extend((0..17).map(|i| json!(format!("INSERT INTO f4 VALUES ('small{i}')"))));
    setup.push(json!("INSERT INTO f4 (f4) VALUES ('automerge=2')"));
    for statement in setup {
        h.post_json("/db/execute", &json!([statement]).to_string())
            .await;
    }
    let words: Vec<String> = (0..3000).map(|i| format!("w{i}")).collect();
    let sql = format!(
        "INSERT INTO f4 VALUES ('{}'); ALTER TABLE f4 RENAME TO g4",
        words.join(" ")
    );
    let stopped = console(&h, "/ui/console/execute", &[("sql", sql.as_str())]).await;
    let text = stopped.text();
    assert!(
        text.contains("Nothing written: the request failed"),
        "{text}"
    );
    assert!(text.contains("(all 2 statements)"), "{text}");
    assert!(text.contains("virtual table"), "{text}");
    // A request of one statement that fails wrote nothing either.
    let refused = console(
        &h,
        "/ui/console/execute",
        &[("sql", "INSERT INTO nosuch VALUES (1)")],
    )
    .await;
    let text = refused.text();
    assert!(
        text.contains("Nothing written: the request failed"),
        "{text}"
    );
    let still = h
        .post_json("/db/query", r#"["SELECT count(*) FROM t"]"#)
        .await;
    assert_eq!(still["results"][0]["values"], json!([[1]]));
    h.stop().await;
}

/// `/db/request?transaction` as rqlite's clients expect it (found by a review): the
/// first failure rolls the transaction back and ends the request, the results being
/// those of the statements up to it; `WITH … INSERT` is a write, in the same
/// transaction as the writes around it; writes with a read between them cannot be one
/// transaction here and are refused before anything runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_in_a_transaction_stops_at_its_first_failure_and_is_one_transaction() {
    let h = Harness::start().await;
    h.post_json(
        "/db/execute",
        r#"["CREATE TABLE t (a INTEGER UNIQUE)", "INSERT INTO t VALUES (1)"]"#,
    )
    .await;
    let count = |h: &Harness| {
        let h = h.http.clone();
        async move {
            let r = client::get(
                &h,
                "/db/query?level=strong&q=SELECT%20count(*)%20FROM%20t",
                Duration::from_secs(10),
            )
            .await
            .expect("count");
            r.json().expect("JSON")["results"][0]["values"][0][0].clone()
        }
    };

    // A failure in the transaction: nothing of it applied, and nothing after it ran.
    let r = h
        .post_json(
            "/db/request?transaction",
            r#"["SELECT 0 AS before", "INSERT INTO t VALUES (50)", "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (51)", "SELECT 111 AS after"]"#,
        )
        .await;
    let results = r["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "{r}");
    assert_eq!(results[0]["columns"], json!(["before"]), "{r}");
    assert!(
        results[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("UNIQUE")),
        "{r}"
    );
    assert_eq!(count(&h).await, json!(1), "the transaction was rolled back");

    // WITH … INSERT among writes: one transaction, rolled back whole.
    let r = h
        .post_json(
            "/db/request?transaction",
            r#"["INSERT INTO t VALUES (2000)", "WITH x AS (SELECT 1 AS v) INSERT INTO t SELECT v FROM x", "INSERT INTO t VALUES (2001)"]"#,
        )
        .await;
    assert!(
        r["results"][1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("UNIQUE")),
        "{r}"
    );
    assert_eq!(count(&h).await, json!(1), "{r}");
    // And one that succeeds, then a read that sees it.
    let r = h
        .post_json(
            "/db/request?transaction",
            r#"["WITH x AS (SELECT 7 AS v) INSERT INTO t SELECT v FROM x", "INSERT INTO t VALUES (8)", "WITH c AS (SELECT count(*) AS n FROM t) SELECT n FROM c"]"#,
        )
        .await;
    assert_eq!(r["results"][2]["values"], json!([[3]]), "{r}");

    // Writes on both sides of a read: refused, nothing applied.
    let refused = h
        .post(
            "/db/request?transaction",
            r#"["INSERT INTO t VALUES (60)", "SELECT 1", "INSERT INTO t VALUES (61)"]"#,
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused.text().contains("nothing was done"),
        "{}",
        refused.text()
    );
    assert_eq!(count(&h).await, json!(3));

    // A failed read ends it too, before the writes after it (found by a review).
    let r = h
        .post_json(
            "/db/request?transaction",
            r#"["SELECT * FROM nosuch", "INSERT INTO t VALUES (100)"]"#,
        )
        .await;
    assert_eq!(r["results"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(count(&h).await, json!(3), "{r}");
    let r = h
        .post_json(
            "/db/request?transaction",
            r#"["INSERT INTO t VALUES (101)", "SELECT * FROM nosuch", "SELECT 1"]"#,
        )
        .await;
    assert_eq!(r["results"].as_array().map(Vec::len), Some(2), "{r}");
    assert_eq!(
        count(&h).await,
        json!(4),
        "the write before the failed read stands"
    );
    // A name SQLite reads as one word (found by a review): `éselect` is not `select`.
    let r = h
        .post_json(
            "/db/request?transaction",
            r#"["INSERT INTO t VALUES (200)", "WITH éselect AS (SELECT 1 AS v) INSERT INTO t SELECT v FROM éselect"]"#,
        )
        .await;
    assert!(
        r["results"][1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("UNIQUE")),
        "{r}"
    );
    assert_eq!(count(&h).await, json!(4), "rolled back whole: {r}");
    let r = h
        .post_json(
            "/db/request",
            r#"["WITH éinsert AS (SELECT 5 AS v) SELECT v FROM éinsert"]"#,
        )
        .await;
    assert_eq!(r["results"][0]["values"], json!([[5]]), "a read: {r}");

    // Without ?transaction every statement runs, each answered in its place.
    let r = h
        .post_json(
            "/db/request",
            r#"["INSERT INTO t VALUES (1)", "SELECT 111 AS marker", "INSERT INTO t VALUES (70)"]"#,
        )
        .await;
    assert!(r["results"][0]["error"].is_string(), "{r}");
    assert_eq!(r["results"][1]["values"], json!([[111]]), "{r}");
    assert_eq!(r["results"][2]["rows_affected"], json!(1), "{r}");
    h.stop().await;
}
