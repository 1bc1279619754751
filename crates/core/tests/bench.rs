//! `sqlraft-core bench`, the real binary, at a tiny size so the tool does not rot: every
//! workload runs against a local 3-node cluster, the results files and plots are
//! written, and the cluster is gone afterwards. No speed is asserted (benchmarks are
//! not tests): only that every run completed requests without errors.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ChildGuard;

const BIN: &str = env!("CARGO_BIN_EXE_sqlraft-core");

#[test]
fn every_workload_runs_and_writes_results_and_plots() {
    let out = tempfile::tempdir().expect("out dir");
    let root = tempfile::tempdir().expect("root dir");
    let listed = Command::new(BIN)
        .args(["bench", "--list"])
        .output()
        .expect("bench --list");
    assert!(listed.status.success());
    let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(names.len() >= 10, "workloads: {names:?}");
    let workloads = names.join(",");
    let mut guard = start_bench(
        &[
            "--clients",
            "1,2",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--rows",
            "50",
            "--large-bytes",
            "4096",
            "--workloads",
            &workloads,
            "--root",
            root.path().to_str().expect("UTF-8 path"),
        ],
        out.path(),
    );
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = guard.child().try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "bench did not finish in time");
        std::thread::sleep(Duration::from_millis(100));
    };
    let child = guard.0.take().expect("child");
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(status.success(), "bench failed: {stdout}\n{stderr}");
    assert!(stdout.contains("p99 ms"), "no table: {stdout}");

    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results.json")).expect("results.json"),
    )
    .expect("results.json is JSON");
    let runs = results["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), names.len() * 2, "{results:#}");
    for name in &names {
        for clients in [1, 2] {
            let run = runs
                .iter()
                .find(|r| r["workload"] == name.as_str() && r["clients"] == clients)
                .unwrap_or_else(|| panic!("no run of {name} x {clients}"));
            assert!(run["ops"].as_u64().unwrap() > 0, "{run}");
            assert_eq!(run["errors"], 0, "{run}");
            let (p50, p99, max) = (
                run["p50_ms"].as_f64().unwrap(),
                run["p99_ms"].as_f64().unwrap(),
                run["max_ms"].as_f64().unwrap(),
            );
            assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{run}");
        }
    }
    // Resource figures of the local cluster: CPU per 1k requests (every run uses
    // some), bytes written per request (writes write), idle memory of each node.
    for run in runs {
        assert!(
            run["cpu_ms_per_1k_ops"].as_f64().is_some_and(|v| v > 0.0),
            "{run}"
        );
        assert!(
            run["max_rss_mib"].as_f64().is_some_and(|v| v > 1.0),
            "{run}"
        );
        if run["workload"]
            .as_str()
            .is_some_and(|w| w.starts_with("write"))
        {
            assert!(
                run["disk_bytes_per_op"].as_f64().is_some_and(|v| v > 0.0),
                "{run}"
            );
        }
    }
    let idle = results["idle_rss_mib"].as_array().expect("idle RSS");
    assert_eq!(idle.len(), 3, "{results:#}");
    assert!(idle.iter().all(|m| m.as_f64().is_some_and(|m| m > 1.0)));
    let csv = std::fs::read_to_string(out.path().join("results.csv")).expect("csv");
    assert_eq!(csv.lines().count(), runs.len() + 1);
    for plot in ["throughput.svg", "latency.svg"] {
        let svg = std::fs::read_to_string(out.path().join(plot)).expect(plot);
        assert!(
            svg.contains("<svg") && svg.contains("write-batch"),
            "{plot}"
        );
    }
    // The cluster it started is stopped: its nodes no longer answer.
    let mut addrs: Vec<String> = runs
        .iter()
        .filter_map(|r| r["addr"].as_str().map(str::to_string))
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    assert!(addrs.len() >= 2, "leader and follower runs: {addrs:?}");
    assert_nothing_answers(&addrs);
}

#[test]
fn bad_arguments_are_refused_before_anything_starts() {
    for args in [
        vec!["--workloads", "nope"],
        vec!["--clients", "0"],
        vec!["--nodes", "2"],
        vec!["--duration", "0"],
    ] {
        let output = Command::new(BIN)
            .arg("bench")
            .args(&args)
            .output()
            .expect("bench");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with("sqlraft-core: error:"),
            "{args:?}: {stderr}"
        );
    }
}

/// Found by a review: stopped by a signal (`timeout`, `kill`), the bench exited at
/// once and left its temporary directory behind. It stops every node it started and
/// removes what it created before it exits.
#[test]
fn a_stopped_bench_stops_its_cluster_and_removes_its_directory() {
    use std::io::{BufRead, BufReader};
    let out = tempfile::tempdir().expect("out dir");
    let mut guard = start_bench(
        &[
            "--clients",
            "1",
            "--duration",
            "600",
            "--workloads",
            "read-none-leader",
        ],
        out.path(),
    );
    let stderr = guard.child().stderr.take().expect("stderr");
    let mut first = String::new();
    BufReader::new(stderr)
        .read_line(&mut first)
        .expect("first line");
    let root = first
        .trim()
        .rsplit(" under ")
        .next()
        .map(std::path::PathBuf::from)
        .expect("the bench says where its cluster lives");
    assert!(root.exists(), "{first}");
    let stdout = guard.child().stdout.take().expect("stdout");
    let mut addrs = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(at) = line.find("ready at http://") {
            addrs.push(line[at + "ready at http://".len()..].trim().to_string());
        }
        if addrs.len() == 3 {
            break;
        }
    }
    assert_eq!(addrs.len(), 3, "the cluster did not start");
    // Let the run begin, then stop the bench as `timeout` would.
    std::thread::sleep(Duration::from_secs(2));
    guard.sigterm();
    let deadline = Instant::now() + Duration::from_secs(60);
    while guard.child().try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the bench did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!root.exists(), "{} was left behind", root.display());
    assert_nothing_answers(&addrs);
}

/// The nodes the bench started are gone: none of them answers.
fn assert_nothing_answers(addrs: &[String]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for addr in addrs {
        let answer = rt.block_on(sqlraft_core::client::get(
            addr,
            "/status",
            Duration::from_secs(2),
        ));
        assert!(answer.is_err(), "{addr} still answers after the bench");
    }
}

/// `sqlraft-core bench --nodes 3 <args> --out <out>`, its output piped.
fn start_bench(args: &[&str], out: &std::path::Path) -> ChildGuard {
    let child = Command::new(BIN)
        .args(["bench", "--nodes", "3"])
        .args(args)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bench");
    ChildGuard(Some(child))
}
