//! Write throughput of a 3-node cluster on loopback with durable acknowledgements:
//! every acknowledged write is fsynced by a majority and applied on the leader.
//!
//! Usage: `write_bench [writers] [seconds]` (defaults 32 and 10).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlraft::naming::FIRST_SERVICE_ID;
use sqlraft::{Admission, Node, NodeConfig, Role, Statement, WriteRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let writers: usize = args.next().map_or(Ok(32), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(10), |a| a.parse())?;

    let root = tempfile::tempdir()?;
    let mut nodes = Vec::new();
    for i in 0..3 {
        let id = if i == 0 {
            FIRST_SERVICE_ID.to_string()
        } else {
            format!("00000000-0000-0000-0000-00000000000{i}")
        };
        let mut config = NodeConfig::new(
            id,
            root.path().join(format!("n{i}")),
            "127.0.0.1:0".parse()?,
        );
        config.admission = Admission::Open;
        if let Some(first) = nodes.first() {
            let first: &Node = first;
            config.join = Some(first.raft_addr().to_string());
        }
        nodes.push(Node::start(config).await?);
    }
    let leader = loop {
        let found = nodes.iter().find(|n| {
            let s = n.status();
            s.role == Role::Leader && s.voters.len() == 3
        });
        if let Some(node) = found {
            break node.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    leader
        .execute(WriteRequest::transaction(vec![Statement::new(
            "CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        )]))
        .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (node, stop) = (leader.clone(), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut k = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let key = (w as i64) * 1_000_000_000 + k;
                let started = Instant::now();
                let outcome = node
                    .execute(WriteRequest::transaction(vec![Statement::with_params(
                        "INSERT INTO kv VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                        vec![key.into(), "a value of some length, like a rule".into()],
                    )]))
                    .await;
                if outcome.is_ok() {
                    latencies.push(started.elapsed());
                }
                k += 1;
            }
            latencies
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    if latencies.is_empty() {
        return Err("no write was acknowledged".into());
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "writers={writers} seconds={seconds} acknowledged={} writes/s={:.0} p50={:?} p99={:?}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
    for node in &nodes {
        node.shutdown().await;
    }
    Ok(())
}
