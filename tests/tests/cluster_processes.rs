//! Real `sqlraft-core` processes on loopback addresses: leader loss under writes, rolling
//! restarts, linearizable reads on a restarted node, forwarding. See tests/README.md.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlraft_harness::processes::cluster::{Cluster, raft_index, statement};
use sqlraft_harness::processes::workload::{CREATE_TABLE, Workload, verify};
use sqlraft_harness::processes::{POLL, WAIT, http, serial};

/// Writes acknowledged between two steps of a test: enough to be "in the middle".
const WRITES_PER_STEP: usize = 30;

#[test]
fn leader_kill_during_writes_loses_no_acknowledged_write() {
    let _serial = serial();
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(None);
    cluster.execute(leader, &json!([CREATE_TABLE]));
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let workload = Workload::start(
        followers
            .iter()
            .map(|&i| cluster.nodes[i].http.clone())
            .collect(),
        2,
    );
    workload.wait_for_more(WRITES_PER_STEP, "before the leader is killed");

    let killed_id = cluster.nodes[leader].id.clone();
    cluster.nodes[leader].kill9();
    let new_leader = cluster.leader(Some(&killed_id));
    assert!(followers.contains(&new_leader));
    workload.wait_for_more(WRITES_PER_STEP, "after the leader was killed");

    cluster.nodes[leader].restart();
    workload.wait_for_more(WRITES_PER_STEP, "after the old leader restarted");
    let outcomes = workload.stop();
    cluster.wait_voters(3);
    let verified = verify(&cluster, leader, &outcomes);
    eprintln!(
        "leader kill: {verified:?}, unknown outcomes: {:?}",
        outcomes.unknown
    );
}

#[test]
fn rolling_restart_with_sigterm_loses_nothing() {
    let _serial = serial();
    let mut cluster = Cluster::start(3);
    cluster.execute(0, &json!([CREATE_TABLE]));
    let workload = Workload::start(cluster.nodes.iter().map(|n| n.http.clone()).collect(), 2);
    workload.wait_for_more(WRITES_PER_STEP, "before the first restart");
    for i in 0..cluster.nodes.len() {
        let status = cluster.nodes[i].sigterm();
        assert!(
            status.success(),
            "{} exited with {status} on SIGTERM\n{}",
            cluster.nodes[i].name,
            cluster.nodes[i].log_tail(40)
        );
        workload.wait_for_more(
            WRITES_PER_STEP / 2,
            &format!("while {} is down", cluster.nodes[i].name),
        );
        cluster.nodes[i].restart();
        cluster.wait_voters(3);
        workload.wait_for_more(
            WRITES_PER_STEP / 2,
            &format!("after {} restarted", cluster.nodes[i].name),
        );
    }
    let outcomes = workload.stop();
    let verified = verify(&cluster, 0, &outcomes);
    eprintln!(
        "rolling restart: {verified:?}, unknown outcomes: {:?}",
        outcomes.unknown
    );
}

#[test]
fn restarted_node_does_not_serve_linearizable_reads_it_cannot_prove() {
    let _serial = serial();
    let mut cluster = Cluster::start(3);
    let paused = cluster.leader(None);
    let (restarted, third) = match paused {
        0 => (1, 2),
        1 => (2, 0),
        _ => (0, 1),
    };
    cluster.execute(
        paused,
        &json!(["CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)"]),
    );
    let set = |v: &str| {
        statement(
            "INSERT INTO kv(k, v) VALUES ('x', ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            &[json!(v)],
        )
    };
    let read = json!(["SELECT v FROM kv WHERE k = 'x'"]);
    cluster.execute(third, &set("v1"));

    // The restarted node misses v2: it is down while the other two acknowledge it.
    cluster.nodes[restarted].kill9();
    let v2 = raft_index(&cluster.execute(third, &set("v2")));

    // The leader freezes; the restarted node and the third one are a majority.
    let frozen_leader = cluster.nodes[paused].pause();
    cluster.nodes[restarted].restart();
    let linearizable_value = |cluster: &Cluster| -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match cluster.query(restarted, "level=linearizable", &read) {
                Ok(r) if r.status == 200 => {
                    return r.json()["results"][0]["values"][0][0]
                        .as_str()
                        .unwrap_or_else(|| panic!("no value: {}", r.text()))
                        .to_string();
                }
                Ok(r) if r.status == 503 => {}
                Ok(r) => panic!("linearizable read: {} {}", r.status, r.text()),
                Err(e) => panic!("linearizable read: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "no linearizable read within {WAIT:?}"
            );
            std::thread::sleep(POLL);
        }
    };
    assert_eq!(
        linearizable_value(&cluster),
        "v2",
        "a linearizable read on the restarted node missed v2 (raft index {v2})"
    );
    cluster.execute(third, &set("v3"));
    assert_eq!(linearizable_value(&cluster), "v3");

    // Alone, it cannot prove that v3 is still the latest value.
    let frozen_third = cluster.nodes[third].pause();
    for _ in 0..2 {
        let answer = cluster
            .query(restarted, "level=linearizable", &read)
            .expect("an answer");
        assert_eq!(
            answer.status,
            503,
            "a node without a majority answered a linearizable read: {}",
            answer.text()
        );
    }
    let local = cluster
        .query(restarted, "level=none", &read)
        .expect("an answer");
    assert_eq!(local.status, 200, "{}", local.text());
    assert_eq!(local.json()["results"][0]["values"], json!([["v3"]]));

    frozen_third.resume();
    frozen_leader.resume();
    cluster.wait_voters(3);
    let (_, dumps) = cluster.converged_dumps(0, &json!(["SELECT k, v FROM kv ORDER BY k"]));
    for dump in &dumps {
        assert_eq!(dump[0]["values"], json!([["x", "v3"]]));
    }
}

#[test]
fn follower_forwards_writes_and_answers_itself() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let leader = cluster.leader(None);
    let follower = (leader + 1) % 3;
    cluster.execute(leader, &json!(["CREATE TABLE f (v TEXT)"]));
    let before = metric(
        &cluster.nodes[follower].http,
        "sqlraft_write_requests_total",
    );

    let answer = http::post(
        &cluster.nodes[follower].http,
        "/db/execute",
        &statement(
            "INSERT INTO f(v) VALUES (?)",
            &[json!("through a follower")],
        ),
        WAIT,
    )
    .expect("the follower answers");
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    let index = raft_index(&body);
    assert_eq!(body["results"][0]["rows_affected"], 1, "{body}");
    assert_eq!(
        metric(
            &cluster.nodes[follower].http,
            "sqlraft_write_requests_total"
        ),
        before + 1.0,
        "the follower did not count the write it answered"
    );
    let status = cluster.nodes[follower].status().expect("status");
    assert_eq!(status["role"], "follower", "{status}");

    for node in &cluster.nodes {
        let r = http::post(
            &node.http,
            &format!("/db/query?level=none&min_index={index}"),
            &json!(["SELECT v FROM f"]),
            WAIT,
        )
        .expect("answer");
        assert_eq!(r.status, 200, "{}: {}", node.name, r.text());
        assert_eq!(
            r.json()["results"][0]["values"],
            json!([["through a follower"]]),
            "{}",
            node.name
        );
    }
}

/// A write costs each node one log fsync: the hard state whose only change is the
/// commit index (the next turn after every write) is noted, not written and synced
/// (raft's `must_sync` rule). Counted with the log-write histogram, not timed.
#[test]
fn a_write_costs_one_log_fsync_per_node() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let leader = cluster.leader(None);
    let follower = (leader + 1) % 3;
    cluster.execute(leader, &json!(["CREATE TABLE s (v)"]));
    let count = |node: usize| metric(&cluster.nodes[node].http, "sqlraft_log_write_seconds_count");
    let before = (count(leader), count(follower));
    let writes = 100;
    for i in 0..writes {
        cluster.execute(leader, &statement("INSERT INTO s VALUES (?)", &[json!(i)]));
    }
    let after = (count(leader), count(follower));
    let (on_leader, on_follower) = (after.0 - before.0, after.1 - before.1);
    // Heartbeats and elections write nothing; a little slack for a term change.
    for (name, n) in [("leader", on_leader), ("follower", on_follower)] {
        assert!(
            n >= f64::from(writes) && n <= f64::from(writes) * 1.2,
            "{name}: {n} log writes for {writes} sequential writes ({before:?} -> {after:?})"
        );
    }
}

/// The Grafana dashboard in `deploy/grafana` charts only metrics a cluster exposes:
/// every `sqlraft_*` name in its queries is on the leader's `/metrics` (after writes and
/// reads, so every histogram has samples, and with followers, so replication lag has).
#[test]
fn the_dashboard_charts_only_metrics_the_cluster_exposes() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let leader = cluster.leader(None);
    cluster.execute(
        leader,
        &json!(["CREATE TABLE d (v)", "INSERT INTO d VALUES (1)"]),
    );
    for level in ["none", "linearizable", "strong"] {
        let r = http::post(
            &cluster.nodes[leader].http,
            &format!("/db/query?level={level}"),
            &json!(["SELECT v FROM d"]),
            WAIT,
        )
        .expect("read");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/grafana/sqlraft-dashboard.json"),
    )
    .expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("JSON");
    let exposed = http::get(&cluster.nodes[leader].http, "/metrics", WAIT)
        .expect("metrics")
        .text();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for name in metric_names(expr) {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    exposed
                        .lines()
                        .any(|l| l.starts_with(&format!("{base}_bucket"))
                            || l.starts_with(&format!("{name} "))
                            || l.starts_with(&format!("{name}{{"))),
                    "panel {:?} charts {name}, which /metrics does not have:\n{exposed}",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 15,
        "only {checked} metric names found in the dashboard"
    );
}

/// The `sqlraft_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("sqlraft_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// A counter or gauge from `/metrics` (0 when absent).
fn metric(addr: &str, name: &str) -> f64 {
    let r = http::get(addr, "/metrics", Duration::from_secs(10)).expect("metrics");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The runbook for a lost majority (docs/OPERATIONS.md, "Recovering from a lost
/// majority"), step by step on real processes: every service stopped, the lost ones
/// wiped, `.reset` on the survivor, the survivor started alone (it leads and takes
/// writes with its data), then new services created for the wiped hosts and started
/// joining it, until three voters hold the same content.
#[test]
fn a_lost_majority_is_recovered_as_the_runbook_says() {
    let _serial = serial();
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(None);
    let written = cluster.execute(
        leader,
        &json!([
            "CREATE TABLE kept (v TEXT)",
            "INSERT INTO kept VALUES ('before')"
        ]),
    );
    let index = raft_index(&written);
    let survivor = (0..3).find(|&i| i != leader).expect("a follower");
    cluster.wait_until("the survivor has the write", |c| {
        c.nodes[survivor]
            .status()
            .and_then(|s| s["applied_index"].as_u64())
            .is_some_and(|a| a >= index)
    });
    let lost: Vec<usize> = (0..3).filter(|&i| i != survivor).collect();

    // 1. Stop every core service (the lost ones die with their hosts).
    for &i in &lost {
        cluster.nodes[i].kill9();
    }
    let stopped = cluster.nodes[survivor].sigterm();
    assert!(stopped.success(), "the survivor exited with {stopped}");
    // 2. Wipe the lost ones.
    for &i in &lost {
        std::fs::remove_dir_all(cluster.nodes[i].dir()).expect("wipe a lost service");
    }
    // 3. Mark the survivor for reset. 4. Start it: it leads alone, with its data.
    std::fs::write(cluster.nodes[survivor].dir().join("raft/.reset"), b"").expect("touch .reset");
    cluster.nodes[survivor].restart();
    cluster.wait_voters(1);
    assert!(
        !cluster.nodes[survivor].dir().join("raft/.reset").exists(),
        ".reset is consumed"
    );
    cluster.execute(survivor, &json!(["INSERT INTO kept VALUES ('after')"]));

    // 5. New services for the wiped hosts, created on the survivor and started
    // joining it, one after the other.
    let (root, http, raft) = (
        cluster.root().to_path_buf(),
        cluster.nodes[survivor].http.clone(),
        cluster.nodes[survivor].raft.clone(),
    );
    for (n, &i) in lost.iter().enumerate() {
        let host = sqlraft_harness::processes::cluster::loopback_host(i);
        let node = sqlraft_harness::processes::process::CoreProcess::start_new(
            &root,
            &format!("node-new-{n}"),
            &host,
            |raft_addr| sqlraft_harness::processes::cluster::create_service(&http, raft_addr),
            Some(&raft),
        );
        cluster.nodes.push(node);
    }
    cluster.wait_voters(3);
    let count = json!(["SELECT group_concat(v) FROM (SELECT v FROM kept ORDER BY rowid)"]);
    cluster.wait_until("every node has the data from before and after", |c| {
        c.running().iter().all(|&i| {
            c.query(i, "level=none", &count)
                .is_ok_and(|r| r.json()["results"][0]["values"] == json!([["before,after"]]))
        })
    });
}
