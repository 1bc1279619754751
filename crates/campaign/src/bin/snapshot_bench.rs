//! `sqlraft-snapshot-bench`: what snapshots of a large database cost. Starts a 3-node
//! cluster of `sqlraft-core` processes on loopback, fills the database to `--mib` MiB,
//! then measures:
//!
//! * taking a snapshot on the leader (`POST /api/v1/system/snapshot`), and the latency
//!   of small writes sent meanwhile, against the same writes before it;
//! * a follower that was stopped while every node compacted its whole log, restarted:
//!   the time until it has caught up (transfer and install of the snapshot), and the
//!   writes' latency meanwhile;
//! * the three ways to copy a live SQLite database (on a copy of a node's file, with a
//!   writer committing to it meanwhile): `VACUUM INTO`, the online backup API, and a
//!   checkpoint followed by a file copy (the writer held off for the copy).
//!
//! ```text
//! sqlraft-snapshot-bench --mib 1024
//! ```
//!
//! Every process it starts is stopped and its directory removed unless `--keep`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value as Json, json};
use sqlraft::sql::rusqlite;
use sqlraft_campaign::measure::{execute, leader, median_and_max_ms, start_cluster, status};
use sqlraft_harness::http;

#[derive(Debug, Parser)]
#[command(
    name = "sqlraft-snapshot-bench",
    about = "Measure snapshots of a large database"
)]
struct Args {
    /// Size to fill the database to, in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Where the cluster lives and the summary is written.
    #[arg(long, default_value = "/work/snapshot-bench")]
    out: PathBuf,
    /// Keep the cluster's directories afterwards.
    #[arg(long)]
    keep: bool,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("sqlraft-snapshot-bench: {e}");
        std::process::exit(1);
    }
}

/// Small writes, one at a time, until stopped; each one's latency in seconds.
struct Prober {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<f64>>,
}

impl Prober {
    fn start(http_addr: &str) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, target) = (Arc::clone(&stop), http_addr.to_string());
        let thread = std::thread::spawn(move || {
            let mut latencies = Vec::new();
            let mut k = 0u64;
            while !flag.load(Ordering::Relaxed) {
                k += 1;
                let body = json!([["INSERT OR REPLACE INTO probe (k) VALUES (?)", k]]);
                let started = Instant::now();
                match http::post(&target, "/db/execute", &body, Duration::from_secs(30)) {
                    Ok(r) if r.status == 200 => latencies.push(started.elapsed().as_secs_f64()),
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            latencies
        });
        Prober { stop, thread }
    }

    fn stop(self) -> Json {
        self.stop.store(true, Ordering::Relaxed);
        let mut latencies = self.thread.join().unwrap_or_default();
        let (median, max) = median_and_max_ms(&mut latencies);
        json!({"writes": latencies.len(), "median_ms": median, "max_ms": max})
    }
}

/// Takes a snapshot on `target` while small writes go on, from half a second before
/// to `after_ms` after it: its answer, its wall time in seconds, and the writes'
/// latency meanwhile.
fn snapshot_while_writing(
    target: &str,
    what: &str,
    after_ms: u64,
) -> Result<(Json, f64, Json), String> {
    let probe = Prober::start(target);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let r = http::post(
        target,
        "/api/v1/system/snapshot",
        &json!({}),
        Duration::from_secs(1800),
    )
    .map_err(|e| e.to_string())?;
    let wall = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(after_ms));
    let writes = probe.stop();
    if r.status != 200 {
        return Err(format!("{what}: {} {}", r.status, r.text()));
    }
    Ok((r.json(), wall, writes))
}

fn run(args: &Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let root = tempfile::Builder::new()
        .prefix("snapshot-bench-")
        .tempdir_in(&args.out)
        .map_err(|e| e.to_string())?;
    let mut nodes = start_cluster(root.path(), 3, &[])?;
    let outcome = measure(args, root.path(), &mut nodes);
    for node in &mut nodes {
        if node.is_running() {
            node.sigterm();
        }
    }
    if args.keep {
        println!("kept: {}", root.keep().display());
    }
    outcome
}

fn measure(
    args: &Args,
    root: &Path,
    nodes: &mut [sqlraft_harness::processes::process::CoreProcess],
) -> Result<(), String> {
    let l = leader(nodes).ok_or("no leader")?;
    let target = nodes[l].http.clone();
    execute(
        &target,
        &json!([
            "CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
            "CREATE TABLE probe (k INTEGER PRIMARY KEY)"
        ]),
    )?;
    // 8 MiB per write (8,192 rows of 1 KiB), made by the statement itself.
    let fill_started = Instant::now();
    let batches = args.mib.div_ceil(8);
    for b in 0..batches {
        let sql = format!(
            "WITH RECURSIVE s(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM s WHERE x < 8191) \
             INSERT INTO big (id, v) SELECT {b} * 8192 + x, printf('%01024d', x) FROM s"
        );
        execute(&target, &json!([sql]))?;
    }
    let fill_seconds = fill_started.elapsed().as_secs_f64();
    let commit = status(&nodes[l])["commit_index"].as_u64().unwrap_or(0);
    wait_applied(nodes, commit, Duration::from_secs(600))?;
    let db_bytes = sqlraft_campaign::measure::dir_bytes(&nodes[l].dir().join("db"));
    println!("filled {} MiB in {fill_seconds:.1} s", db_bytes >> 20);

    // Baseline write latency, then during a snapshot on the leader.
    let probe = Prober::start(&target);
    std::thread::sleep(Duration::from_secs(5));
    let baseline = probe.stop();
    let (taken, snapshot_wall, during_snapshot) = snapshot_while_writing(&target, "snapshot", 500)?;
    println!(
        "snapshot: {taken} in {snapshot_wall:.1} s; writes meanwhile {during_snapshot}, before {baseline}"
    );
    // A second snapshot: the first one's file is deleted once it is taken, which the
    // first snapshot of a fresh database does not show (deleting a large file takes
    // time; it must not hold the raft thread up).
    execute(&target, &json!(["INSERT INTO probe (k) VALUES (-1)"]))?;
    let (second, second_wall, during_second) =
        snapshot_while_writing(&target, "second snapshot", 1000)?;
    println!(
        "second snapshot (the first one's file deleted after it): {second} in {second_wall:.1} s; writes meanwhile {during_second}"
    );

    // A follower stopped, every live log compacted, the follower back: it needs the
    // snapshot.
    let f = (0..nodes.len()).find(|&i| i != l).ok_or("no follower")?;
    nodes[f].sigterm();
    for k in 0..20 {
        execute(
            &target,
            &json!([["INSERT OR REPLACE INTO probe (k) VALUES (?)", -2 - k]]),
        )?;
    }
    for (i, node) in nodes.iter().enumerate() {
        if i != f {
            let r = http::post(
                &node.http,
                "/api/v1/system/snapshot?trailing=0",
                &json!({}),
                Duration::from_secs(1800),
            )
            .map_err(|e| e.to_string())?;
            if r.status != 200 {
                return Err(format!("compact node-{i}: {} {}", r.status, r.text()));
            }
        }
    }
    execute(
        &target,
        &json!([["INSERT OR REPLACE INTO probe (k) VALUES (?)", -1]]),
    )?;
    let commit = status(&nodes[l])["commit_index"].as_u64().unwrap_or(0);
    let probe = Prober::start(&target);
    let started = Instant::now();
    nodes[f]
        .try_restart()
        .map_err(|e| format!("restart: {e:?}\n{}", nodes[f].log_tail(30)))?;
    wait_applied(&nodes[f..=f], commit, Duration::from_secs(1800))?;
    let catch_up = started.elapsed().as_secs_f64();
    let during_transfer = probe.stop();
    let follower_status = status(&nodes[f]);
    println!(
        "follower caught up by snapshot in {catch_up:.1} s (installed {}); writes meanwhile {during_transfer}",
        follower_status["snapshots_installed"]
    );

    // The three ways to copy a live database, on a copy of the leader's file.
    let methods = compare_copy_methods(root, &nodes[l].dir().join("db").join("state.db"))?;
    println!("copy methods: {methods}");

    let summary = json!({
        "db_bytes": db_bytes,
        "fill_seconds": fill_seconds,
        "writes_before_snapshot": baseline,
        "snapshot": {"answer": taken, "wall_seconds": snapshot_wall, "writes_meanwhile": during_snapshot},
        "second_snapshot": {"wall_seconds": second_wall, "writes_meanwhile": during_second},
        "follower_catch_up": {
            "seconds": catch_up,
            "snapshots_installed": follower_status["snapshots_installed"],
            "writes_meanwhile": during_transfer,
        },
        "copy_methods": methods,
    });
    let path = args.out.join("summary.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    println!("summary: {}", path.display());
    Ok(())
}

fn wait_applied(
    nodes: &[sqlraft_harness::processes::process::CoreProcess],
    index: u64,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !nodes
        .iter()
        .all(|n| status(n)["applied_index"].as_u64().unwrap_or(0) >= index)
    {
        if Instant::now() > deadline {
            return Err(format!("index {index} not applied within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Copies `db` to a scratch file, then times `VACUUM INTO`, the online backup API and
/// checkpoint + file copy on it while a writer commits a small transaction every
/// millisecond.
fn compare_copy_methods(root: &Path, db: &Path) -> Result<Json, String> {
    let scratch = root.join("methods");
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let source = scratch.join("source.db");
    {
        let live =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| e.to_string())?;
        live.execute("VACUUM INTO ?1", [source.to_string_lossy().as_ref()])
            .map_err(|e| e.to_string())?;
    }
    let conn = rusqlite::Connection::open(&source).map_err(|e| e.to_string())?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .map_err(|e| e.to_string())?;
    drop(conn);
    // Each method runs with a writer committing a small transaction every millisecond;
    // its slowest commit is what the method cost the writer.
    let timed = |what: &str, f: &dyn Fn() -> Result<String, String>| -> Json {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, source) = (Arc::clone(&stop), source.clone());
            std::thread::spawn(move || {
                let conn = rusqlite::Connection::open(&source).ok()?;
                conn.busy_timeout(Duration::from_secs(120)).ok()?;
                let mut writes = 0u64;
                let mut slowest = 0f64;
                while !stop.load(Ordering::Relaxed) {
                    writes += 1;
                    let started = Instant::now();
                    let _ = conn.execute(
                        "INSERT INTO probe (k) VALUES (1000000000 + abs(random() % 1000000000))",
                        [],
                    );
                    slowest = slowest.max(started.elapsed().as_secs_f64());
                    std::thread::sleep(Duration::from_millis(1));
                }
                Some((writes, slowest))
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let outcome = f();
        let seconds = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let (writes, slowest) = writer.join().ok().flatten().unwrap_or((0, 0.0));
        json!({
            "method": what,
            "seconds": seconds,
            "outcome": outcome.unwrap_or_else(|e| format!("failed: {e}")),
            "writer_commits": writes,
            "writer_slowest_commit_ms": slowest * 1000.0,
        })
    };
    let vacuum_into = timed("VACUUM INTO", &|| {
        let target = scratch.join("vacuum.db");
        let conn = rusqlite::Connection::open(&source).map_err(|e| e.to_string())?;
        conn.execute("VACUUM INTO ?1", [target.to_string_lossy().as_ref()])
            .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&target);
        Ok("done".into())
    });
    let backup_api = timed("online backup API (100 pages per step)", &|| {
        let target = scratch.join("backup.db");
        let from = rusqlite::Connection::open(&source).map_err(|e| e.to_string())?;
        let mut to = rusqlite::Connection::open(&target).map_err(|e| e.to_string())?;
        let backup = rusqlite::backup::Backup::new(&from, &mut to).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut restarts = 0u64;
        let mut last_remaining = i32::MAX;
        loop {
            match backup.step(100).map_err(|e| e.to_string())? {
                rusqlite::backup::StepResult::Done => break,
                _ => {
                    let remaining = backup.progress().remaining;
                    if remaining > last_remaining {
                        restarts += 1;
                    }
                    last_remaining = remaining;
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not done after 120 s ({restarts} restarts seen)"));
            }
        }
        drop(backup);
        let _ = std::fs::remove_file(&target);
        Ok(format!("done ({restarts} restarts seen)"))
    });
    let checkpoint_copy = timed("checkpoint + file copy, writer held off", &|| {
        let target = scratch.join("copy.db");
        let conn = rusqlite::Connection::open(&source).map_err(|e| e.to_string())?;
        conn.busy_timeout(Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
        // Holding a write transaction keeps the writer out while the file is copied.
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); BEGIN IMMEDIATE;")
            .map_err(|e| e.to_string())?;
        std::fs::copy(&source, &target).map_err(|e| e.to_string())?;
        conn.execute_batch("COMMIT").map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&target);
        Ok("done".into())
    });
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(json!([vacuum_into, backup_api, checkpoint_copy]))
}
