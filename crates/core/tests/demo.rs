//! `sqlraft-core demo`, the real binary: a local cluster that starts, survives what it
//! demonstrates (a killed leader, a removed service), and cleans up.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, TIMEOUT};
use sqlraft_core::client;

const BIN: &str = env!("CARGO_BIN_EXE_sqlraft-core");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn demo_starts_a_cluster_and_cleans_up_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let child = Command::new(BIN)
        .args(["demo", "--nodes", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let mut guard = ChildGuard(Some(child));
    let stdout = guard.child().stdout.take().expect("stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut root = None;
    let mut http = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("demo became ready");
        if let Some(at) = line.find(", root ") {
            root = Some(PathBuf::from(&line[at + 7..]));
        }
        if line.trim_start().starts_with("node 1 ") && line.contains("raft") {
            http = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .map(str::to_string);
        }
        if line.starts_with("ready") {
            break;
        }
    }
    let root = root.expect("root printed");
    let http = http.expect("URL printed");
    let addr = http.trim_start_matches("http://");
    let status = runtime()
        .block_on(client::get(addr, "/status", TIMEOUT))
        .expect("status");
    assert_eq!(status.json().expect("JSON")["role"], "leader");

    guard.sigterm();
    let exit = guard.wait_exit(Duration::from_secs(30));
    assert!(exit.success());
    assert!(!root.exists(), "{} left behind", root.display());
}

/// A running `sqlraft-core demo` whose output is read line by line, and whose own
/// services are killed if the test ends early (killing the demo alone would leave them).
struct Demo {
    guard: ChildGuard,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    service_pids: Vec<i32>,
    /// The demo's root, the test's own: removed even when the demo is killed.
    _root: tempfile::TempDir,
}

/// One service as the demo printed it.
#[derive(Debug, Clone)]
struct DemoService {
    number: usize,
    http: String,
    id: String,
    pid: i32,
}

impl Demo {
    fn start(nodes: usize) -> (Demo, Vec<DemoService>) {
        Demo::start_with(nodes, &[])
    }

    /// [`Demo::start`] with more of the demo's flags.
    fn start_with(nodes: usize, flags: &[&str]) -> (Demo, Vec<DemoService>) {
        use std::io::{BufRead, BufReader};
        let root = tempfile::tempdir().expect("demo root");
        let mut child = Command::new(BIN)
            .args(["demo", "--nodes", &nodes.to_string()])
            .arg("--root")
            .arg(root.path())
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn demo");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (lines_tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut demo = Demo {
            guard: ChildGuard(Some(child)),
            stdin,
            lines,
            service_pids: Vec::new(),
            _root: root,
        };
        let mut services = Vec::new();
        demo.expect_line("ready", |line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["node", number, http, "raft", _, "id", id, "pid", pid, ..] = words.as_slice() {
                services.push(DemoService {
                    number: number.parse().expect("node number"),
                    http: http.trim_start_matches("http://").to_string(),
                    id: id.to_string(),
                    pid: pid.parse().expect("pid"),
                });
            }
            line.starts_with("ready")
        });
        demo.service_pids = services.iter().map(|s| s.pid).collect();
        assert_eq!(services.len(), nodes, "every service printed");
        (demo, services)
    }

    /// Reads lines until `done` accepts one (within a minute); returns that line.
    fn expect_line(&mut self, what: &str, mut done: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("demo did not print {what}"));
            if done(&line) {
                return line;
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{line}").expect("demo reads its standard input");
    }

    fn is_running(&mut self) -> bool {
        matches!(self.guard.child().try_wait(), Ok(None))
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        for pid in &self.service_pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn status_of(http: &str) -> Option<serde_json::Value> {
    let answer = runtime()
        .block_on(client::get(http, "/status", TIMEOUT))
        .ok()?;
    answer.json().ok()
}

/// Retries an insert through `http` until the cluster takes it.
fn insert_through(http: &str, value: &str) {
    let body = serde_json::json!([["INSERT INTO t (v) VALUES (?)", value]]).to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer =
            runtime().block_on(client::post(http, "/db/execute", body.as_bytes(), TIMEOUT));
        if let Ok(r) = &answer
            && r.status == 200
            && r.json().expect("JSON")["results"][0]["error"].is_null()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "insert through {http} not taken: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn demo_survives_a_killed_leader_and_a_removed_service() {
    let (mut demo, services) = Demo::start(3);
    let leader_http = |services: &[DemoService], skip: &[usize]| {
        services
            .iter()
            .filter(|s| !skip.contains(&s.number))
            .find(|s| status_of(&s.http).is_some_and(|st| st["role"] == "leader"))
            .cloned()
    };
    let first = &services[0];
    let body = br#"["CREATE TABLE t (v TEXT)"]"#;
    let created = runtime()
        .block_on(client::post(&first.http, "/db/execute", body, TIMEOUT))
        .expect("create table");
    assert_eq!(created.status, 200, "{}", created.text());

    // Kill the leader as a user would, from outside the demo.
    let leader = leader_http(&services, &[]).expect("a leader");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(leader.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL sent");
    let line = demo.expect_line("the exit", |l| {
        l.starts_with(&format!("node {} ", leader.number)) && l.contains("exited")
    });
    assert!(line.contains("killed by SIGKILL"), "{line}");
    assert!(
        line.contains(&format!("restart {}", leader.number)),
        "{line}"
    );
    // The command for a person's shell has only the flags `run --help` lists.
    assert!(
        line.contains("or by hand: ")
            && line.contains(" run --id ")
            && !line.contains("--exit-with-parent"),
        "{line}"
    );
    demo.expect_line("the count", |l| {
        l.contains("2 of 3 core service(s) still running")
    });
    assert!(demo.is_running(), "the demo ended with one service");

    // The other two elect a leader and take writes.
    let survivor = services
        .iter()
        .find(|s| s.number != leader.number)
        .expect("survivor");
    insert_through(&survivor.http, "after failover");
    assert!(
        leader_http(&services, &[leader.number]).is_some(),
        "no new leader"
    );

    // Bring it back from the demo's prompt; it catches up.
    demo.type_line(&format!("restart {}", leader.number));
    let line = demo.expect_line("the restart", |l| l.contains("ready again"));
    assert!(
        line.starts_with(&format!("node {} ", leader.number)),
        "{line}"
    );
    let restarted_pid = {
        demo.type_line("status");
        let line = demo.expect_line("the status", |l| {
            l.trim_start()
                .starts_with(&format!("node {} ", leader.number))
        });
        assert!(line.contains("running, pid "), "{line}");
        line.rsplit(' ')
            .next()
            .expect("pid")
            .parse::<i32>()
            .expect("pid")
    };
    demo.service_pids.push(restarted_pid);
    let rows = runtime()
        .block_on(client::get(
            &leader.http,
            "/db/query?level=linearizable&q=SELECT%20count(*)%20FROM%20t",
            TIMEOUT,
        ))
        .expect("query the restarted node");
    assert_eq!(rows.json().expect("JSON")["results"][0]["values"][0][0], 1);

    // Remove the current leader's service through REST: the demo reports it and goes on.
    let leader = leader_http(&services, &[]).expect("a leader");
    let removed = runtime()
        .block_on(client::request(
            &leader.http,
            "DELETE",
            &format!("/api/v1/services/{}", leader.id),
            None,
            TIMEOUT,
        ))
        .expect("remove the leader's service");
    assert!(
        removed.status < 300,
        "{} {}",
        removed.status,
        removed.text()
    );
    let line = demo.expect_line("the removal", |l| {
        l.starts_with(&format!("node {} ", leader.number)) && l.contains("removed")
    });
    assert!(line.contains("`add`"), "{line}");
    assert!(demo.is_running(), "the demo ended with a removal");
    let survivor = services
        .iter()
        .find(|s| s.number != leader.number)
        .expect("survivor");
    insert_through(&survivor.http, "after removal");

    demo.type_line("quit");
    let exit = demo.guard.wait_exit(Duration::from_secs(30));
    assert!(exit.success());
}

/// `demo --raft.insecure` runs its services with a plaintext raft transport (what
/// `scripts/bench-vs-etcd.sh --peer-tls off` compares with a plaintext etcd), and they
/// replicate as the TLS demo's do.
#[test]
fn demo_with_raft_insecure_runs_plaintext_services() {
    let (mut demo, services) = Demo::start_with(3, &["--raft.insecure"]);
    for service in &services {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", service.pid)).expect("cmdline");
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert!(args.iter().any(|a| a == "--raft.insecure"), "{args:?}");
        assert!(
            !args.iter().any(|a| a.starts_with("--raft.tls")),
            "{args:?}"
        );
    }
    assert!(
        !demo._root.path().join("tls").exists(),
        "no CA is made for a plaintext demo"
    );
    let body = br#"["CREATE TABLE t (v TEXT)"]"#;
    let created = runtime()
        .block_on(client::post(
            &services[0].http,
            "/db/execute",
            body,
            TIMEOUT,
        ))
        .expect("create table");
    assert_eq!(created.status, 200, "{}", created.text());
    insert_through(&services[0].http, "plaintext");
    for service in &services {
        let rows = runtime()
            .block_on(client::get(
                &service.http,
                "/db/query?level=linearizable&q=SELECT%20count(*)%20FROM%20t",
                TIMEOUT,
            ))
            .expect("query");
        assert_eq!(
            rows.json().expect("JSON")["results"][0]["values"][0][0],
            1,
            "node {}",
            service.number
        );
    }
    demo.type_line("quit");
    let exit = demo.guard.wait_exit(Duration::from_secs(30));
    assert!(exit.success());
}

/// The demo's services never outlive it, even when it is killed outright.
#[test]
fn demo_services_stop_when_the_demo_is_killed() {
    let (mut demo, services) = Demo::start(1);
    demo.guard.child().kill().expect("SIGKILL the demo");
    demo.guard.wait_exit(Duration::from_secs(10));
    let pid = nix::unistd::Pid::from_raw(services[0].pid);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Reap nothing here: the service was the demo's child, not ours; once it has
        // exited and init has reaped it, the pid is gone.
        match nix::sys::signal::kill(pid, None) {
            Err(_) => break,
            Ok(()) => {
                let state = std::fs::read_to_string(format!("/proc/{}/stat", services[0].pid))
                    .unwrap_or_default();
                if state.split_whitespace().nth(2) == Some("Z") {
                    break;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the service outlived the killed demo"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
