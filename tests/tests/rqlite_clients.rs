//! rqlite's client libraries, unmodified, against a 3-node sqlraft cluster: pyrqlite
//! (DB-API), SQLAlchemy with its rqlite dialect, rqlite-js, and the `rqlite-rs` crate.
//! Each runs twice: against a follower (with the leader as the other node) and against
//! the leader (with a follower as the other node). The cluster runs as installed:
//! mutual TLS between the services and users (`--auth`): the clients send basic auth,
//! and an anonymous data request is refused.
//!
//! The Python and JavaScript programs are `tests/compat/`; scripts/compat-env.sh
//! installs their libraries (pinned) once into `target/compat`. What each checks is
//! listed in docs/TESTING.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rqlite_rs::error::RequestError;
use rqlite_rs::fallback::FallbackCount;
use rqlite_rs::prelude::*;
use rqlite_rs::query;
use rqlite_rs::request::{RqliteFreshnessLevel, RqliteQueryParam};
use rqlite_rs::response::RqliteResult;
use sqlraft_harness::processes::cluster::Cluster;
use sqlraft_harness::processes::serial;

const USER: &str = "app";
const PASSWORD: &str = "compat-secret";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// The installed clients (scripts/compat-env.sh): their directory.
fn client_env() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("scripts/compat-env.sh"))
        .output()
        .expect("run scripts/compat-env.sh");
    assert!(
        out.status.success(),
        "scripts/compat-env.sh failed (it needs python3-venv and npm, which \
         scripts/setup.sh installs):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A cluster whose data API needs a user: `app` may do everything, anonymous callers
/// may only read the cluster's state and create services (as the harness does).
fn secured_cluster() -> Cluster {
    Cluster::start_with(3, |root| {
        let file = root.join("auth.json");
        let users = serde_json::json!([
            {"username": USER, "password": PASSWORD, "perms": ["all"]},
            {"username": "*", "perms": ["status", "ready", "join"]},
        ]);
        std::fs::write(&file, users.to_string()).expect("write auth.json");
        vec!["--auth".into(), file.display().to_string()]
    })
}

/// Runs one client program against `url` (with `other` as the other node); its output
/// on failure.
fn run_program(env: &Path, program: &[&str], url: &str, other: &str) -> Result<String, String> {
    let (exe, script) = match program {
        ["python", script] => (env.join("venv/bin/python"), *script),
        ["node", script] => (PathBuf::from("node"), *script),
        _ => unreachable!("a program is python or node"),
    };
    let out = Command::new(&exe)
        .arg(repo().join("tests/compat").join(script))
        .arg(url)
        .arg(other)
        .env("RQLITE_USER", USER)
        .env("RQLITE_PASSWORD", PASSWORD)
        .env("RQLITE_JS_DIR", env.join("js"))
        .env_remove("RQLITE_LEADER")
        .env_remove("RQLITE_FOLLOWER")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let checks = text.lines().filter(|l| l.starts_with("ok - ")).count();
    if out.status.success() && checks > 0 && !text.contains("FAIL - ") {
        Ok(text)
    } else {
        Err(format!("{script} against {url}: {}\n{text}", out.status))
    }
}

#[test]
fn rqlite_client_libraries_work_against_followers_and_the_leader() {
    let _serial = serial();
    let env = client_env();
    let cluster = secured_cluster();
    let leader = cluster.leader(None);
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let url = |i: usize| format!("http://{}", cluster.nodes[i].http);
    let targets = [
        ("follower", url(follower), url(leader)),
        ("leader", url(leader), url(follower)),
    ];
    let programs: [&[&str]; 3] = [
        &["python", "pyrqlite_test.py"],
        &["python", "sqlalchemy_test.py"],
        &["node", "rqlite_js_test.mjs"],
    ];
    let mut failures = Vec::new();
    for (role, target, other) in &targets {
        for program in programs {
            match run_program(&env, program, target, other) {
                Ok(out) => eprintln!(
                    "{} against the {role}: {}",
                    program[1],
                    out.lines().last().unwrap_or_default()
                ),
                Err(e) => failures.push(format!("against the {role}: {e}")),
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (ran, failed) = runtime.block_on(rqlite_rs_checks(target, other));
        assert!(ran > 15, "only {ran} rqlite-rs checks ran");
        eprintln!(
            "rqlite-rs against the {role}: {ran} checks, {} failed",
            failed.len()
        );
        failures.extend(
            failed
                .into_iter()
                .map(|f| format!("rqlite-rs against the {role}: {f}")),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// An `rqlite-rs` client of the nodes `urls` (`http://host:port`).
fn rs_client(urls: &[&str], level: Option<RqliteFreshnessLevel>, password: &str) -> RqliteClient {
    let mut builder = RqliteClientBuilder::new()
        .fallback_count(FallbackCount::NumHosts)
        .auth(USER, password);
    for url in urls {
        builder = builder.known_host(url.trim_start_matches("http://"));
    }
    if let Some(level) = level {
        builder = builder.default_query_params(vec![RqliteQueryParam::Level(level)]);
    }
    builder.build().expect("an rqlite-rs client")
}

fn ensure(ok: bool, why: impl Into<String>) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why.into()) }
}

fn e<E: std::fmt::Debug>(err: E) -> String {
    format!("{err:?}")
}

/// What a user of the `rqlite-rs` crate does, against `url` (`other`: another node);
/// how many checks ran, and those that failed.
async fn rqlite_rs_checks(url: &str, other: &str) -> (usize, Vec<String>) {
    let t = format!(
        "rs_{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() % 1_000_000_000)
    );
    let c = rs_client(&[url], None, PASSWORD);
    let mut failed = Vec::new();
    let mut ran = 0;
    macro_rules! check {
        ($name:expr, $body:expr) => {{
            ran += 1;
            let outcome: Result<(), String> = async { $body }.await;
            if let Err(why) = outcome {
                failed.push(format!("{}: {why}", $name));
            }
        }};
    }

    check!("ready(): GET /readyz", ensure(c.ready().await, "not ready"));
    check!("CREATE TABLE", {
        let sql = format!(
            "CREATE TABLE {t} (id INTEGER PRIMARY KEY, name TEXT UNIQUE, n INTEGER, r REAL, b BLOB)"
        );
        c.exec(sql.as_str()).await.map(|_| ()).map_err(e)
    });

    let big: i64 = (1 << 60) + 1;
    let blob: Vec<u8> = (0u8..=255).collect();
    let text = "héllo wörld ✓ 日本語 🚀 O'Brien \"q\" \\ tab\t";
    check!(
        "parameterized INSERTs: 2^60+1, real, unicode, blob, NULLs",
        {
            let sql = format!("INSERT INTO {t} (name, n, r, b) VALUES (?, ?, ?, ?)");
            let q = query!(sql.as_str(), text, big, std::f64::consts::PI, blob.clone());
            let r = c.exec(q).await.map_err(e)?;
            ensure(
                r.last_insert_id() == Some(1),
                format!("last_insert_id {:?}", r.last_insert_id()),
            )?;
            ensure(
                r.rows_affected() == Some(1),
                format!("rows_affected {:?}", r.rows_affected()),
            )?;
            let q = query!(
                sql.as_str(),
                "nulls",
                None::<i64>,
                None::<f64>,
                None::<Vec<u8>>
            );
            c.exec(q).await.map(|_| ()).map_err(e)
        }
    );
    check!("types read back exactly, with rqlite's type names", {
        let sql = format!("SELECT id, name, n, r, b FROM {t} WHERE id = ?");
        let rows = c.fetch(query!(sql.as_str(), 1i64)).await.map_err(e)?;
        ensure(rows.len() == 1, format!("{} rows", rows.len()))?;
        let row = &rows[0];
        ensure(
            row.get::<String>("name").map_err(e)? == text,
            "text differs",
        )?;
        ensure(
            row.get::<i64>("n").map_err(e)? == big,
            "2^60+1 lost precision",
        )?;
        ensure(
            row.get::<f64>("r").map_err(e)? == std::f64::consts::PI,
            "real differs",
        )?;
        ensure(row.get::<Vec<u8>>("b").map_err(e)? == blob, "blob differs")?;
        let sql = format!("SELECT n, r, b, count(*) AS k FROM {t} WHERE name = ?");
        let rows = c.fetch(query!(sql.as_str(), "nulls")).await.map_err(e)?;
        ensure(
            rows[0].get_opt::<i64>("n").map_err(e)?.is_none(),
            "NULL integer",
        )?;
        ensure(
            rows[0].get_opt::<Vec<u8>>("b").map_err(e)?.is_none(),
            "NULL blob",
        )?;
        let types: Vec<String> = rows[0]
            .columns()
            .iter()
            .map(|col| col.type_data().to_string())
            .collect();
        ensure(
            types == ["integer", "real", "blob", "integer"],
            format!("types {types:?}"),
        )
    });
    check!("an empty result is no rows, not an error", {
        let rows = c
            .fetch(format!("SELECT id FROM {t} WHERE 0").as_str())
            .await
            .map_err(e)?;
        ensure(rows.is_empty(), format!("{} rows", rows.len()))
    });
    for (name, level) in [
        ("none", RqliteFreshnessLevel::None),
        ("weak", RqliteFreshnessLevel::Weak),
        ("strong", RqliteFreshnessLevel::Strong),
    ] {
        check!(format!("read at level={name}"), {
            let leveled = rs_client(&[url], Some(level), PASSWORD);
            let sql = format!("SELECT COUNT(*) AS c FROM {t}");
            let rows = leveled.fetch(sql.as_str()).await.map_err(e)?;
            ensure(rows[0].get::<i64>("c").map_err(e)? == 2, "count != 2")
        });
    }
    check!("transaction(): three inserts in one request", {
        let sql = format!("INSERT INTO {t} (name, n) VALUES (?, ?)");
        let qs = (0..3i64)
            .map(|i| query!(sql.as_str(), format!("tx{i}"), i))
            .collect::<Vec<_>>();
        let res = c.transaction(qs).await.map_err(e)?;
        ensure(
            res.len() == 3 && res.iter().all(|r| matches!(r, RqliteResult::Success(_))),
            format!("{res:?}"),
        )
    });
    check!(
        "a failed transaction applies nothing and names the constraint",
        {
            let sql = format!("INSERT INTO {t} (name) VALUES (?)");
            let res = c
                .transaction(vec![
                    query!(sql.as_str(), "tx-new"),
                    query!(sql.as_str(), "tx0"),
                ])
                .await
                .map_err(e)?;
            let error = res.iter().find_map(|r| match r {
                RqliteResult::Error(q) => Some(q.error.clone()),
                RqliteResult::Success(_) => None,
            });
            ensure(
                error.as_deref() == Some(&format!("UNIQUE constraint failed: {t}.name")),
                format!("{res:?}"),
            )?;
            let sql = format!("SELECT COUNT(*) AS c FROM {t} WHERE name = ?");
            let rows = c.fetch(query!(sql.as_str(), "tx-new")).await.map_err(e)?;
            ensure(
                rows[0].get::<i64>("c").map_err(e)? == 0,
                "part of a failed transaction stayed",
            )
        }
    );
    check!("batch(): a write and a read in one /db/request", {
        let res = c
            .batch(vec![
                query!(
                    format!("INSERT INTO {t} (name) VALUES (?)").as_str(),
                    "batch"
                ),
                query!(
                    format!("SELECT name FROM {t} WHERE name = ?").as_str(),
                    "batch"
                ),
            ])
            .await
            .map_err(e)?;
        ensure(res.len() == 2, format!("{res:?}"))
    });
    check!(
        "a UNIQUE violation is the client's DatabaseError with SQLite's text",
        {
            let sql = format!("INSERT INTO {t} (name) VALUES (?)");
            match c.exec(query!(sql.as_str(), "tx1")).await {
                Err(RequestError::DatabaseError(m))
                    if m == format!("UNIQUE constraint failed: {t}.name") =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        }
    );
    check!(
        "a syntax error is the client's DatabaseError with SQLite's text",
        {
            match c
                .fetch(format!("SELECT * FROM {t} WHERE WHERE").as_str())
                .await
            {
                Err(RequestError::DatabaseError(m)) if m == "near \"WHERE\": syntax error" => {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        }
    );
    check!("UPDATE and DELETE report rows_affected", {
        let r = c
            .exec(format!("UPDATE {t} SET r = 1.5 WHERE name LIKE 'tx%'").as_str())
            .await
            .map_err(e)?;
        ensure(
            r.rows_affected() == Some(3),
            format!("update {:?}", r.rows_affected()),
        )?;
        let r = c
            .exec(format!("DELETE FROM {t} WHERE name = 'tx2'").as_str())
            .await
            .map_err(e)?;
        ensure(
            r.rows_affected() == Some(1),
            format!("delete {:?}", r.rows_affected()),
        )
    });
    check!("queue(): a queued write is applied", {
        let sql = format!("INSERT INTO {t} (name) VALUES (?)");
        c.queue(vec![query!(sql.as_str(), "queued")])
            .await
            .map_err(e)?;
        let count = format!("SELECT COUNT(*) AS c FROM {t} WHERE name = 'queued'");
        for _ in 0..100 {
            let rows = c.fetch(count.as_str()).await.map_err(e)?;
            if rows[0].get::<i64>("c").map_err(e)? == 1 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("the queued write was not applied within 10 s".to_string())
    });
    check!("nodes() and leader(): GET /nodes?ver=2", {
        let nodes = c.nodes().await.map_err(e)?;
        ensure(nodes.len() == 3, format!("{nodes:?}"))?;
        let leader = c
            .leader()
            .await
            .map_err(e)?
            .ok_or("no node is the leader")?;
        ensure(
            leader.api_addr.starts_with("http://")
                && nodes.iter().filter(|n| n.leader).count() == 1,
            format!("{nodes:?}"),
        )
    });
    check!(
        "a write through the other node is read here at level=weak at once",
        {
            let elsewhere = rs_client(&[other], None, PASSWORD);
            let sql = format!("INSERT INTO {t} (name) VALUES (?)");
            elsewhere
                .exec(query!(sql.as_str(), "elsewhere"))
                .await
                .map_err(e)?;
            let weak = rs_client(&[url], Some(RqliteFreshnessLevel::Weak), PASSWORD);
            let sql = format!("SELECT COUNT(*) AS c FROM {t} WHERE name = 'elsewhere'");
            let rows = weak.fetch(sql.as_str()).await.map_err(e)?;
            ensure(
                rows[0].get::<i64>("c").map_err(e)? == 1,
                "the write is missing",
            )
        }
    );
    check!(
        "a node that does not answer: the client falls over to the next",
        {
            let falls_over = rs_client(&["http://127.0.0.1:1", url], None, PASSWORD);
            let rows = falls_over
                .fetch(format!("SELECT COUNT(*) AS c FROM {t}").as_str())
                .await
                .map_err(e)?;
            ensure(rows.len() == 1, "no row")
        }
    );
    check!("a wrong password is the client's Unauthorized", {
        match rs_client(&[url], None, "wrong").fetch("SELECT 1").await {
            Err(RequestError::Unauthorized) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    check!("DROP TABLE", {
        c.exec(format!("DROP TABLE {t}").as_str())
            .await
            .map(|_| ())
            .map_err(e)
    });
    (ran, failed)
}
