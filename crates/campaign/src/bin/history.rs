//! `sqlraft-history`: what a long history costs. Starts a 3-node cluster of
//! `sqlraft-core` processes on loopback, writes N single-statement upserts over a bounded
//! key space (the database stays the same size; only the history grows), and samples
//! each node's raft directory, database and RSS along the way. Then a fourth service
//! joins, and the time until it has caught up with the leader is measured.
//!
//! Run it twice to compare a compacted log with full replay:
//!
//! ```text
//! sqlraft-history --writes 1000000                 # snapshots at their defaults
//! sqlraft-history --writes 1000000 --no-snapshots  # the log is never compacted
//! ```
//!
//! It prints one line per sample and a JSON summary at the end (also written to
//! `--out/summary.json`). Every process it starts is stopped, and its directory removed
//! unless `--keep`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value as Json, json};
use sqlraft_campaign::measure::{sample, start_cluster, start_node, status};
use sqlraft_harness::http;

#[derive(Debug, Parser)]
#[command(name = "sqlraft-history", about = "Measure what a long history costs")]
struct Args {
    /// Writes (one raft entry each).
    #[arg(long, default_value_t = 1_000_000)]
    writes: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Keys the upserts spread over (the database's size).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Bytes of each value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// A sample every this many writes.
    #[arg(long, default_value_t = 100_000)]
    sample_every: u64,
    /// Never compact: snapshots far beyond the run's writes.
    #[arg(long)]
    no_snapshots: bool,
    /// Where the cluster lives and the summary is written.
    #[arg(long, default_value = "/work/history-run")]
    out: PathBuf,
    /// Keep the cluster's directories afterwards.
    #[arg(long)]
    keep: bool,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("sqlraft-history: {e}");
        std::process::exit(1);
    }
}

fn snapshot_flags(no_snapshots: bool) -> Vec<&'static str> {
    if no_snapshots {
        vec![
            "--raft.snapshot.entries",
            "1000000000000",
            "--raft.snapshot.log-bytes",
            "1000000000000000",
        ]
    } else {
        Vec::new()
    }
}

fn run(args: &Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let root = tempfile::Builder::new()
        .prefix("history-")
        .tempdir_in(&args.out)
        .map_err(|e| e.to_string())?;
    let flags = snapshot_flags(args.no_snapshots);
    let mut nodes = start_cluster(root.path(), 3, &flags)?;
    let join = nodes[0].raft.clone();
    let leader = nodes
        .iter()
        .position(|n| status(n)["role"] == "leader")
        .unwrap_or(0);
    let target = nodes[leader].http.clone();
    let r = http::post(
        &target,
        "/db/execute",
        &json!(["CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL)"]),
        Duration::from_secs(10),
    )
    .map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("create table: {} {}", r.status, r.text()));
    }

    println!("writes,node,raft_dir_bytes,log_bytes,log_first_index,db_bytes,rss_kib");
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let value = "x".repeat(args.value_bytes);
    let writers: Vec<_> = (0..args.clients)
        .map(|c| {
            let (done, failed, stop) = (Arc::clone(&done), Arc::clone(&failed), Arc::clone(&stop));
            let (target, value, keys, total) = (target.clone(), value.clone(), args.keys, args.writes);
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(c as u64);
                while !stop.load(Ordering::Relaxed) && done.load(Ordering::Relaxed) < total {
                    let k = rng.u64(..keys.max(1));
                    let body = json!([[
                        "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                        k,
                        value
                    ]]);
                    match http::post(&target, "/db/execute", &body, Duration::from_secs(10)) {
                        Ok(r) if r.status == 200 => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })
        })
        .collect();
    let mut samples = Vec::new();
    let mut next = args.sample_every.min(args.writes);
    loop {
        if writers.iter().all(|w| w.is_finished()) && done.load(Ordering::Relaxed) < args.writes {
            return Err("every writer stopped before the writes were done".into());
        }
        let now = done.load(Ordering::Relaxed);
        if now >= next || now >= args.writes {
            let elapsed = started.elapsed().as_secs_f64();
            let per_node: Vec<Json> = nodes.iter().map(sample).collect();
            for n in &per_node {
                println!(
                    "{now},{},{},{},{},{},{}",
                    n["name"].as_str().unwrap_or(""),
                    n["raft_dir_bytes"],
                    n["log_bytes"],
                    n["log_first_index"],
                    n["db_bytes"],
                    n["rss_kib"]
                );
            }
            samples.push(json!({"writes": now, "seconds": elapsed, "nodes": per_node}));
            if now >= args.writes {
                break;
            }
            next += args.sample_every;
        }
        if failed.load(Ordering::Relaxed) > args.writes / 10 + 1000 {
            stop.store(true, Ordering::Relaxed);
            return Err(format!(
                "too many failed writes ({})",
                failed.load(Ordering::Relaxed)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    let write_seconds = started.elapsed().as_secs_f64();

    // A fourth service joins: how long until it has applied what the leader had
    // committed when it started, and did it get a snapshot?
    let commit = status(&nodes[leader])["commit_index"].as_u64().unwrap_or(0);
    let join_started = Instant::now();
    let joiner = start_node(root.path(), 3, Some((&target, &join)), &flags)?;
    let caught_up = loop {
        let s = status(&joiner);
        if s["applied_index"].as_u64().unwrap_or(0) >= commit {
            break join_started.elapsed();
        }
        if join_started.elapsed() > Duration::from_secs(1800) {
            return Err("the new service did not catch up within 30 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let joined = status(&joiner);
    nodes.push(joiner);
    let final_samples: Vec<Json> = nodes.iter().map(sample).collect();
    let summary = json!({
        "writes": args.writes,
        "failed_attempts": failed.load(Ordering::Relaxed),
        "clients": args.clients,
        "keys": args.keys,
        "snapshots": !args.no_snapshots,
        "write_seconds": write_seconds,
        "writes_per_second": args.writes as f64 / write_seconds,
        "join": {
            "leader_commit_at_start": commit,
            "seconds_to_catch_up": caught_up.as_secs_f64(),
            "snapshots_installed": joined["snapshots_installed"],
            "log_first_index": joined["log"]["first_index"],
        },
        "samples": samples,
        "final": final_samples,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&summary["join"]).unwrap_or_default()
    );
    println!(
        "write rate: {:.0}/s over {:.0} s",
        args.writes as f64 / write_seconds,
        write_seconds
    );
    let path = args.out.join(if args.no_snapshots {
        "summary-no-snapshots.json"
    } else {
        "summary.json"
    });
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    println!("summary: {}", path.display());
    for node in &mut nodes {
        if node.is_running() {
            node.sigterm();
        }
    }
    if args.keep {
        let kept = root.keep();
        println!("kept: {}", kept.display());
    }
    Ok(())
}
