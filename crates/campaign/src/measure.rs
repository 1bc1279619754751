//! What the measuring tools (`sqlraft-history`, `sqlraft-snapshot-bench`) share: a
//! cluster of `sqlraft-core` processes on loopback started with extra flags, and the
//! numbers read off a node (status, directory sizes, RSS).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use sqlraft_harness::http;
use sqlraft_harness::processes::FIRST_SERVICE_ID;
use sqlraft_harness::processes::cluster::{create_service, loopback_host, settled_voters};
use sqlraft_harness::processes::process::{CoreProcess, free_port};

/// Bytes of the files under `dir`, recursively.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Resident set size of process `pid` in KiB (0 when unknown).
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `GET /status` of a node; `Null` when it does not answer.
pub fn status(node: &CoreProcess) -> Json {
    http::get(&node.http, "/status", Duration::from_secs(5))
        .ok()
        .filter(|r| r.status == 200)
        .map(|r| r.json())
        .unwrap_or(Json::Null)
}

/// Starts node `i` on its own loopback host with `flags`: the first service when
/// `join` is `None`, otherwise a service created through `admin` and joining `join`.
pub fn start_node(
    root: &Path,
    i: usize,
    join: Option<(&str, &str)>,
    flags: &[&str],
) -> Result<CoreProcess, String> {
    let host = loopback_host(i);
    let raft = format!("{host}:{}", free_port(&host));
    let http_addr = format!("{host}:{}", free_port(&host));
    let id = match join {
        None => FIRST_SERVICE_ID.to_string(),
        Some((admin, _)) => create_service(admin, &raft),
    };
    let mut node = CoreProcess::at(root, &format!("node-{i}"), &id, &raft, &http_addr, None);
    node.add_args(flags);
    node.try_start(join.map(|(_, raft)| raft))
        .map_err(|e| format!("node-{i}: {e:?}\n{}", node.log_tail(30)))?;
    Ok(node)
}

/// A cluster of `size` nodes: the first bootstraps, the others join it; returns once
/// it has `size` voters.
pub fn start_cluster(root: &Path, size: usize, flags: &[&str]) -> Result<Vec<CoreProcess>, String> {
    let first = start_node(root, 0, None, flags)?;
    let (admin, join) = (first.http.clone(), first.raft.clone());
    let mut nodes = vec![first];
    for i in 1..size {
        nodes.push(start_node(root, i, Some((&admin, &join)), flags)?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    // On every node: the faults start now.
    while !nodes.iter().all(|n| settled_voters(&status(n), size)) {
        if Instant::now() > deadline {
            return Err(format!("no {size} voters within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(nodes)
}

/// The index of the node that says it leads.
pub fn leader(nodes: &[CoreProcess]) -> Option<usize> {
    nodes
        .iter()
        .position(|n| n.is_running() && status(n)["role"] == "leader")
}

/// `POST /db/execute` with `body`; `Err` unless 200 with no statement error.
pub fn execute(http_addr: &str, body: &Json) -> Result<Json, String> {
    let r = http::post(http_addr, "/db/execute", body, Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("{}: {}", r.status, r.text()));
    }
    let answer = r.json();
    if let Some(error) = answer["results"]
        .as_array()
        .and_then(|rs| rs.iter().find_map(|r| r["error"].as_str()))
    {
        return Err(error.to_string());
    }
    Ok(answer)
}

/// A node's sizes and memory now.
pub fn sample(node: &CoreProcess) -> Json {
    let dir = node.dir();
    let s = status(node);
    json!({
        "name": node.name,
        "raft_dir_bytes": dir_bytes(&dir.join("raft")),
        "log_bytes": s["log"]["bytes"],
        "log_first_index": s["log"]["first_index"],
        "db_bytes": dir_bytes(&dir.join("db")),
        "rss_kib": node.is_running().then(|| rss_kib(node.pid().as_raw())),
        "applied_index": s["applied_index"],
        "snapshot_index": s["snapshot"]["index"],
    })
}

/// Median and largest of `values` (seconds), in milliseconds.
pub fn median_and_max_ms(values: &mut [f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    values.sort_by(f64::total_cmp);
    (
        values[values.len() / 2] * 1000.0,
        values[values.len() - 1] * 1000.0,
    )
}
