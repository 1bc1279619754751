//! `sqlraft-core demo`: a local cluster started the way a person would by hand, as
//! child `sqlraft-core run` processes: node N on loopback address 127.0.0.N (its host
//! name; one core service per host), each further service created through
//! `POST /api/v1/services` on the first before it is started with `--raft.join`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlraft::FIRST_SERVICE_ID;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::DemoArgs;
use crate::client;
use crate::error::CoreError;

/// Most services a demo starts.
pub const MAX_DEMO_NODES: usize = 9;
/// How long one service may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One started service.
struct DemoNode {
    id: String,
    raft: String,
    http: String,
    child: Child,
}

/// Every child started; stopped on drop too, so an error midway leaves nothing behind.
struct Children(Vec<DemoNode>);

impl Children {
    /// SIGTERM to all, then wait; whoever is still running after the timeout is killed.
    async fn stop(&mut self) {
        for node in self.0.iter().rev() {
            terminate(&node.child);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for node in self.0.iter_mut().rev() {
            while matches!(node.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
            if matches!(node.child.try_wait(), Ok(None)) {
                let _ = node.child.kill();
            }
            let _ = node.child.wait();
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for node in &mut self.0 {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

fn terminate(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// Two distinct free ports on loopback address `host` (both held while the second is
/// picked).
fn free_ports(host: &str) -> Result<(u16, u16), CoreError> {
    let bind = || {
        std::net::TcpListener::bind((host, 0))
            .and_then(|l| Ok((l.local_addr()?.port(), l)))
            .map_err(|e| CoreError::Io(format!("cannot pick a free port: {e}")))
    };
    let (a, _held_a) = bind()?;
    let (b, _held_b) = bind()?;
    Ok((a, b))
}

/// Runs the demo until SIGINT/SIGTERM.
pub async fn demo(args: DemoArgs) -> Result<(), CoreError> {
    if args.nodes == 0 || args.nodes.is_multiple_of(2) || args.nodes > MAX_DEMO_NODES {
        return Err(CoreError::Usage(format!(
            "--nodes {} is not allowed: the number of core services must be odd, from 1 to {MAX_DEMO_NODES}",
            args.nodes
        )));
    }
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| CoreError::Io(format!("cannot watch SIGTERM: {e}")))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| CoreError::Io(format!("cannot watch SIGINT: {e}")))?;
    let temp;
    let root: PathBuf = match &args.root {
        Some(root) => {
            std::fs::create_dir_all(root)
                .map_err(|e| CoreError::Io(format!("cannot create {}: {e}", root.display())))?;
            root.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("sqlraft-demo-")
                .tempdir()
                .map_err(|e| CoreError::Io(format!("cannot create a temporary directory: {e}")))?;
            temp.path().to_path_buf()
        }
    };
    let mut children = Children(Vec::new());
    let started = tokio::select! {
        started = start_all(&root, args.nodes, &mut children) => started,
        _ = sigterm.recv() => Err(CoreError::Failed("interrupted while starting".into())),
        _ = sigint.recv() => Err(CoreError::Failed("interrupted while starting".into())),
    };
    if let Err(e) = started {
        children.stop().await;
        return Err(e);
    }
    print_session(&root, &children.0);
    let outcome = tokio::select! {
        _ = sigterm.recv() => Ok(()),
        _ = sigint.recv() => Ok(()),
        died = watch_children(&mut children) => Err(died),
    };
    println!("stopping {} core service(s)", children.0.len());
    children.stop().await;
    outcome
}

async fn start_all(root: &Path, count: usize, children: &mut Children) -> Result<(), CoreError> {
    let exe = std::env::current_exe()
        .map_err(|e| CoreError::Io(format!("cannot find this program: {e}")))?;
    for i in 0..count {
        // One core service per host: node i+1 gets 127.0.0.<i+1> as its host name.
        let host = format!("127.0.0.{}", i + 1);
        let (raft_port, http_port) = free_ports(&host)?;
        let raft = format!("{host}:{raft_port}");
        let http = format!("{host}:{http_port}");
        let id = match children.0.first() {
            None => FIRST_SERVICE_ID.to_string(),
            // Created in the registry first, as in the web interface.
            Some(first) => create_service(&first.http, &host, &raft).await?,
        };
        let stderr_path = root.join(format!("node-{}.stderr", i + 1));
        let stderr = File::create(&stderr_path)
            .map_err(|e| CoreError::Io(format!("cannot create {}: {e}", stderr_path.display())))?;
        let mut command = Command::new(&exe);
        command
            .arg("run")
            .args(["--id", &id])
            .arg("--root")
            .arg(root)
            .args([
                "--raft.node.listen",
                &raft,
                "--raft.node.addr",
                &raft,
                "--http",
                &http,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(first) = children.0.first() {
            command.args(["--raft.join", &first.raft]);
        }
        let child = command
            .spawn()
            .map_err(|e| CoreError::Io(format!("cannot start {}: {e}", exe.display())))?;
        children.0.push(DemoNode {
            id,
            raft,
            http,
            child,
        });
        let node = children
            .0
            .last_mut()
            .ok_or_else(|| CoreError::Failed("no child".into()))?;
        wait_until(
            node,
            &stderr_path,
            "ready",
            |status, _| status == 200,
            "/readyz",
        )
        .await?;
        println!("node {} ready at http://{}", i + 1, node_http(children, i));
    }
    // Joined learners are promoted in pairs; wait until every node sees all voters.
    for i in 0..count {
        let stderr_path = root.join(format!("node-{}.stderr", i + 1));
        let node = &mut children.0[i];
        wait_until(
            node,
            &stderr_path,
            "settled",
            |status, body| {
                status == 200
                    && serde_json::from_slice::<serde_json::Value>(body)
                        .ok()
                        .and_then(|s| s["voters"].as_array().map(Vec::len))
                        == Some(count)
            },
            "/status",
        )
        .await?;
    }
    Ok(())
}

/// `POST /api/v1/services` on the member at `http`; returns the new service's id.
async fn create_service(http: &str, fqdn: &str, raft: &str) -> Result<String, CoreError> {
    let body = serde_json::json!({ "fqdn": fqdn, "raft_addr": raft }).to_string();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let answer = client::post(http, "/api/v1/services", body.as_bytes(), READY_TIMEOUT).await;
        match answer {
            Ok(r) if r.status == 201 => {
                return r
                    .json()
                    .ok()
                    .and_then(|j| j["id"].as_str().map(str::to_string))
                    .ok_or_else(|| {
                        CoreError::Failed(format!("no id in the answer of {http}: {}", r.text()))
                    });
            }
            // No leader yet: retry.
            Ok(r) if r.status == 503 && Instant::now() < deadline => {}
            Ok(r) => {
                return Err(CoreError::Failed(format!(
                    "cannot create core service {fqdn} at http://{http}: {} {}",
                    r.status,
                    r.text().trim()
                )));
            }
            Err(e) if Instant::now() < deadline => tracing::debug!(%e, "retrying"),
            Err(e) => {
                return Err(CoreError::Failed(format!(
                    "cannot create core service {fqdn}: {e}"
                )));
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

fn node_http(children: &Children, i: usize) -> &str {
    children.0.get(i).map_or("", |n| n.http.as_str())
}

/// Polls `path` on the node until `done` holds, the child exits, or time runs out.
async fn wait_until(
    node: &mut DemoNode,
    stderr_path: &Path,
    what: &str,
    done: impl Fn(u16, &[u8]) -> bool,
    path: &str,
) -> Result<(), CoreError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(exit)) = node.child.try_wait() {
            let said = std::fs::read_to_string(stderr_path).unwrap_or_default();
            return Err(CoreError::Failed(format!(
                "service {} exited ({exit}) before it was {what}: {}",
                node.id,
                said.trim()
            )));
        }
        if let Ok(response) = client::get(&node.http, path, PROBE_TIMEOUT).await
            && done(response.status, &response.body)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CoreError::Failed(format!(
                "service {} at http://{} was not {what} within {} s",
                node.id,
                node.http,
                READY_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Resolves when a child exits on its own.
async fn watch_children(children: &mut Children) -> CoreError {
    loop {
        for node in &mut children.0 {
            if let Ok(Some(exit)) = node.child.try_wait() {
                return CoreError::Failed(format!("service {} exited ({exit})", node.id));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn print_session(root: &Path, nodes: &[DemoNode]) {
    println!(
        "sqlraft demo: {} core service(s) on 127.0.0.1-127.0.0.{}, root {}",
        nodes.len(),
        nodes.len(),
        root.display()
    );
    for (i, n) in nodes.iter().enumerate() {
        println!(
            "  node {}  http://{}  raft {}  id {}  log {}",
            i + 1,
            n.http,
            n.raft,
            n.id,
            root.join("core")
                .join(&n.id)
                .join("log")
                .join("core")
                .display()
        );
    }
    let at = |i: usize| {
        nodes
            .get(i)
            .or(nodes.last())
            .map_or("", |n| n.http.as_str())
    };
    let json = "-H 'Content-Type: application/json'";
    println!("try:");
    println!(
        "  curl -s -XPOST 'http://{}/db/execute?pretty' {json} -d '[\"CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)\"]'",
        at(0)
    );
    println!(
        "  curl -s -XPOST 'http://{}/db/execute?pretty' {json} -d '[[\"INSERT INTO kv VALUES (?, ?)\", \"hello\", \"world\"]]'",
        at(1)
    );
    println!(
        "  curl -s -G 'http://{}/db/query?pretty&level=none' --data-urlencode 'q=SELECT * FROM kv'",
        at(2)
    );
    println!(
        "  curl -s -G 'http://{}/db/query?pretty&level=linearizable' --data-urlencode 'q=SELECT * FROM kv'",
        at(2)
    );
    println!("  curl -s 'http://{}/nodes'", at(0));
    println!("  curl -s 'http://{}/api/v1/services'", at(0));
    println!("web interface: http://{}/", at(0));
    println!("ready (Ctrl-C stops every service)");
}
