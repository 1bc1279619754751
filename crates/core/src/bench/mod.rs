//! `sqlraft-core bench`: named workloads (sequential and concurrent writes, batched
//! and large writes, reads at each level on the leader and on a follower, a mixed
//! load) against a local cluster it starts or against given nodes. Each workload runs
//! once per client count, closed loop (every client sends its next request when the
//! last one is answered), with a warm-up and a fixed duration. It prints a table
//! (ops/s, p50, p90, p99, max, errors) and writes `results.json`, `results.csv`,
//! `throughput.svg` and `latency.svg`.
//!
//! ```text
//! sqlraft-core bench --workloads write,read-none-follower --clients 1,8,32 --duration 10
//! ```
//!
//! Numbers from one machine mean little alone: compare runs on the same machine
//! (docs/PERFORMANCE.md, `scripts/bench-vs-etcd.sh`).

mod driver;
mod report;
mod resources;
mod workload;

use std::time::{Duration, Instant};

use crate::cli::BenchArgs;
use crate::client;
use crate::demo::LocalCluster;
use crate::error::CoreError;

use report::{Report, RunResult};
use workload::{TABLE, Target, Workload};

/// How long setup requests (status, table creation) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Rows written per request while filling the table.
const FILL_BATCH: u64 = 500;

/// Runs the bench described by `args`.
pub async fn bench(args: BenchArgs) -> Result<(), CoreError> {
    if args.list {
        for w in workload::WORKLOADS {
            println!("{:<28} {}", w.name, w.about);
        }
        return Ok(());
    }
    let workloads = workload::by_names(&args.workloads)?;
    if args.clients.is_empty() || args.clients.iter().any(|&c| c == 0 || c > 4096) {
        return Err(CoreError::Usage(
            "--clients takes counts from 1 to 4096, comma separated".into(),
        ));
    }
    for (flag, value) in [("--duration", args.duration), ("--warmup", args.warmup)] {
        if !value.is_finite() || !(0.0..=86_400.0).contains(&value) {
            return Err(CoreError::Usage(format!(
                "{flag} {value} is not a number of seconds from 0 to 86400"
            )));
        }
    }
    if args.duration <= 0.0 {
        return Err(CoreError::Usage("--duration must be above 0".into()));
    }
    if args.large_bytes == 0 || args.large_bytes > 8 << 20 {
        return Err(CoreError::Usage(
            "--large-bytes takes 1 to 8388608 bytes".into(),
        ));
    }
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if args.urls.is_empty() {
        if args.nodes == 0
            || args.nodes.is_multiple_of(2)
            || args.nodes > crate::demo::MAX_DEMO_NODES
        {
            return Err(CoreError::Usage(format!(
                "--nodes {} is not allowed: the number of core services must be odd, from 1 to {}",
                args.nodes,
                crate::demo::MAX_DEMO_NODES
            )));
        }
        let temp;
        let root = match &args.root {
            Some(root) => root.clone(),
            None => {
                temp = tempfile::Builder::new()
                    .prefix("sqlraft-bench-")
                    .tempdir()
                    .map_err(|e| {
                        CoreError::Io(format!("cannot create a temporary directory: {e}"))
                    })?;
                temp.path().to_path_buf()
            }
        };
        eprintln!(
            "bench: starting {} core services under {}",
            args.nodes,
            root.display()
        );
        let cluster = LocalCluster::start(&root, args.nodes).await?;
        let addrs = cluster.http_addrs();
        let pids = cluster.pids();
        // Stopped by a signal too, so that no node outlives the bench.
        let outcome = tokio::select! {
            outcome = measure(&args, &workloads, &addrs, &pids) => outcome,
            _ = stop_signal() => Err(CoreError::Failed("interrupted".into())),
        };
        cluster.stop().await;
        let (idle, runs) = outcome?;
        finish(&args, "local", args.nodes, started_unix, idle, runs)
    } else {
        let addrs: Vec<String> = args
            .urls
            .iter()
            .map(|u| {
                u.trim()
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string()
            })
            .filter(|u| !u.is_empty())
            .collect();
        let (idle, runs) = measure(&args, &workloads, &addrs, &[]).await?;
        finish(&args, "given", addrs.len(), started_unix, idle, runs)
    }
}

/// Resolves on SIGTERM, SIGINT or SIGHUP (never, if they cannot be watched).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = hup.recv() => {}
    }
}

fn finish(
    args: &BenchArgs,
    cluster: &'static str,
    nodes: usize,
    started_unix: u64,
    idle_rss_mib: Option<Vec<f64>>,
    runs: Vec<RunResult>,
) -> Result<(), CoreError> {
    println!("{}", report::table(&runs));
    if let Some(idle) = &idle_rss_mib {
        let each: Vec<String> = idle.iter().map(|m| format!("{m:.1}")).collect();
        println!("idle RSS per node before the runs: {} MiB", each.join(", "));
    }
    let report = Report {
        started_unix,
        version: env!("CARGO_PKG_VERSION"),
        machine: report::Machine::here(),
        cluster,
        nodes,
        warmup_s: args.warmup,
        duration_s: args.duration,
        idle_rss_mib,
        runs,
    };
    report::write_all(&args.out, &report)?;
    println!(
        "results: {0}/results.json, {0}/results.csv; plots: {0}/throughput.svg, {0}/latency.svg",
        args.out.display()
    );
    if report.runs.iter().any(|r| r.ops == 0) {
        return Err(CoreError::Failed(
            "a run completed no request: see its first error above".into(),
        ));
    }
    Ok(())
}

/// Creates and fills the table, then runs every workload at every client count.
/// The local cluster's idle RSS (when `pids` are known) and every run's result.
type Measurements = (Option<Vec<f64>>, Vec<RunResult>);

async fn measure(
    args: &BenchArgs,
    workloads: &[Workload],
    addrs: &[String],
    pids: &[u32],
) -> Result<Measurements, CoreError> {
    let (leader, _) = roles(addrs).await?;
    prepare(&leader, args.rows).await?;
    let idle = (!pids.is_empty()).then(|| {
        resources::Sample::of(pids)
            .rss_kib
            .iter()
            .map(|k| *k as f64 / 1024.0)
            .collect()
    });
    let large = "x".repeat(args.large_bytes);
    let mut runs = Vec::new();
    for workload in workloads {
        for &clients in &args.clients {
            // The leader may have changed since the last run.
            let (leader, follower) = roles(addrs).await?;
            let (target, addr) = match (workload.target, follower) {
                (Target::Leader, _) => ("leader", leader),
                (Target::Follower, Some(f)) => ("follower", f),
                (Target::Follower, None) => ("leader (no follower)", leader),
            };
            let plan = driver::Plan {
                workload: *workload,
                addr: addr.clone(),
                clients,
                warmup: Duration::from_secs_f64(args.warmup),
                duration: Duration::from_secs_f64(args.duration),
                rows: args.rows,
                large: &large,
            };
            let before = resources::Sample::of(pids);
            let measured = driver::run(&plan).await;
            let after = resources::Sample::of(pids);
            let mut result = summarize(workload, target, addr, clients, &measured);
            if !pids.is_empty() && measured.completed > 0 {
                let per_op = |v: f64| v / measured.completed as f64;
                result.cpu_ms_per_1k_ops =
                    Some(per_op((after.cpu_seconds - before.cpu_seconds) * 1e6));
                result.disk_bytes_per_op = Some(per_op(
                    after.write_bytes.saturating_sub(before.write_bytes) as f64,
                ));
                result.max_rss_mib = after.rss_kib.iter().max().map(|k| *k as f64 / 1024.0);
            }
            eprintln!(
                "{:<28} {:>4} clients: {:>8.0} ops/s  p50 {:.2} ms  p99 {:.2} ms  errors {}{}",
                result.workload,
                clients,
                result.ops_per_s,
                result.p50_ms,
                result.p99_ms,
                result.errors,
                result
                    .first_error
                    .as_deref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            );
            runs.push(result);
        }
    }
    Ok((idle, runs))
}

fn summarize(
    workload: &Workload,
    target: &str,
    addr: String,
    clients: usize,
    m: &driver::Measured,
) -> RunResult {
    let seconds = m.elapsed.as_secs_f64();
    let ms = |q: f64| m.latencies.value_at_quantile(q) as f64 / 1000.0;
    let (p50, p90, p99, max) = if m.ok == 0 {
        (0.0, 0.0, 0.0, 0.0)
    } else {
        (
            ms(0.5),
            ms(0.9),
            ms(0.99),
            m.latencies.max() as f64 / 1000.0,
        )
    };
    let ops_per_s = m.ok as f64 / seconds;
    RunResult {
        workload: workload.name.to_string(),
        target: target.to_string(),
        addr,
        clients,
        duration_s: seconds,
        ops: m.ok,
        errors: m.errors,
        ops_per_s,
        rows_per_s: ops_per_s * workload.rows_per_request() as f64,
        p50_ms: p50,
        p90_ms: p90,
        p99_ms: p99,
        max_ms: max,
        first_error: m.first_error.clone(),
        cpu_ms_per_1k_ops: None,
        disk_bytes_per_op: None,
        max_rss_mib: None,
    }
}

/// The leader's address and a follower's, asked of every node (waits up to
/// [`SETUP_TIMEOUT`] for a leader).
async fn roles(addrs: &[String]) -> Result<(String, Option<String>), CoreError> {
    if addrs.is_empty() {
        return Err(CoreError::Usage("no node to measure".into()));
    }
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let mut leader = None;
        let mut follower = None;
        for addr in addrs {
            let role = client::get(addr, "/status", Duration::from_secs(5))
                .await
                .ok()
                .filter(|r| r.status == 200)
                .and_then(|r| r.json().ok())
                .and_then(|s| s["role"].as_str().map(str::to_string));
            match role.as_deref() {
                Some("leader") => leader = Some(addr.clone()),
                Some("follower") if follower.is_none() => follower = Some(addr.clone()),
                _ => {}
            }
        }
        if let Some(leader) = leader {
            return Ok((leader, follower));
        }
        if Instant::now() >= deadline {
            return Err(CoreError::Failed(format!(
                "no leader among {} within {} s",
                addrs.join(", "),
                SETUP_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates the bench table on `leader` and fills it to `rows` rows.
async fn prepare(leader: &str, rows: u64) -> Result<(), CoreError> {
    let create = serde_json::json!([format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, v TEXT)"
    )]);
    execute(leader, &create.to_string()).await?;
    let count = format!("SELECT count(*) FROM {TABLE}");
    let answer = post(
        leader,
        "/db/query?level=strong",
        &serde_json::json!([count]).to_string(),
    )
    .await?;
    let have = answer["results"][0]["values"][0][0].as_u64().unwrap_or(0);
    let mut written = have;
    while written < rows {
        let n = (rows - written).min(FILL_BATCH);
        let statements: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                serde_json::json!([
                    format!("INSERT INTO {TABLE} (v) VALUES (?)"),
                    format!("row-{}", written + i + 1)
                ])
            })
            .collect();
        execute(leader, &serde_json::Value::Array(statements).to_string()).await?;
        written += n;
    }
    Ok(())
}

async fn execute(addr: &str, body: &str) -> Result<(), CoreError> {
    let answer = post(addr, "/db/execute", body).await?;
    match answer["results"]
        .as_array()
        .and_then(|r| r.iter().find_map(|r| r["error"].as_str()))
    {
        Some(error) => Err(CoreError::Failed(format!(
            "setup write failed at {addr}: {error}"
        ))),
        None => Ok(()),
    }
}

async fn post(addr: &str, path: &str, body: &str) -> Result<serde_json::Value, CoreError> {
    let answer = client::post(addr, path, body.as_bytes(), SETUP_TIMEOUT)
        .await
        .map_err(|e| CoreError::Failed(format!("setup request failed: {e}")))?;
    if answer.status != 200 {
        return Err(CoreError::Failed(format!(
            "setup request {path} at {addr}: HTTP {}: {}",
            answer.status,
            answer.text().trim()
        )));
    }
    answer
        .json()
        .map_err(|e| CoreError::Failed(format!("setup request {path} at {addr}: {e}")))
}
