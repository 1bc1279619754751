//! `sqlraft-core demo`: a local cluster started the way a person would by hand, as
//! child `sqlraft-core run` processes: node N on loopback address 127.0.0.N (its host
//! name; one core service per host), each further service created through
//! `POST /api/v1/services` on a member before it is started with `--raft.join`.
//!
//! The demo exists to show fault tolerance, so it survives what it shows: a service
//! that exits (killed, crashed, or removed from the cluster) leaves the others running.
//! The demo says so, and commands on its standard input kill, restart and add services.

mod node;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sqlraft::naming::FIRST_SERVICE_ID;
use tokio::signal::unix::SignalKind;

use crate::run::watch_signal;
use tokio::sync::mpsc;

use self::node::{Children, DemoNode, POLL, READY_TIMEOUT, State};
use crate::cli::DemoArgs;
use crate::client;
use crate::error::CoreError;

/// Most services a demo starts.
pub const MAX_DEMO_NODES: usize = 9;
/// Most services a demo runs, counting those added later (one loopback host each).
const MAX_HOSTS: usize = 250;
/// How often the demo looks for services that exited.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

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

/// Runs the demo until SIGINT/SIGTERM or `quit` on standard input.
pub async fn demo(args: DemoArgs) -> Result<(), CoreError> {
    if args.nodes == 0 || args.nodes.is_multiple_of(2) || args.nodes > MAX_DEMO_NODES {
        return Err(CoreError::Usage(format!(
            "--nodes {} is not allowed: the number of core services must be odd, from 1 to {MAX_DEMO_NODES}",
            args.nodes
        )));
    }
    let mut sigterm = watch_signal(SignalKind::terminate(), "SIGTERM")?;
    let mut sigint = watch_signal(SignalKind::interrupt(), "SIGINT")?;
    let mut sighup = watch_signal(SignalKind::hangup(), "SIGHUP")?;
    let temp;
    let root: PathBuf = match &args.root {
        Some(root) => {
            // An earlier demo's services would wait for members that are not started
            // again: say so now rather than time out.
            let services = root.join("core");
            if std::fs::read_dir(&services).is_ok_and(|mut d| d.next().is_some()) {
                return Err(CoreError::Usage(format!(
                    "{} holds the services of an earlier demo; the demo starts a new cluster: \
                     give an empty or new --root (the old services can be started again \
                     with the commands their demo printed)",
                    root.display()
                )));
            }
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
    let mut demo = Demo::new(&root, !args.raft_insecure)?;
    let started = tokio::select! {
        started = demo.start_all(args.nodes) => started,
        _ = sigterm.recv() => Err(CoreError::Failed("interrupted while starting".into())),
        _ = sigint.recv() => Err(CoreError::Failed("interrupted while starting".into())),
        _ = sighup.recv() => Err(CoreError::Failed("interrupted while starting".into())),
    };
    if let Err(e) = started {
        demo.children.stop().await;
        return Err(e);
    }
    print_session(&demo.root, &demo.children.0);
    let mut commands = read_commands();
    let mut watch = tokio::time::interval(WATCH_INTERVAL);
    loop {
        let line = tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => break,
            _ = watch.tick() => {
                demo.report_exits();
                continue;
            }
            line = commands.recv() => line,
        };
        let Some(line) = line else {
            // Standard input closed (or was never there): only signals stop the demo.
            commands = never();
            continue;
        };
        // A command may take a while (a restart waits for readiness): signals still
        // stop the demo meanwhile.
        let flow = tokio::select! {
            _ = sigterm.recv() => Flow::Quit,
            _ = sigint.recv() => Flow::Quit,
            _ = sighup.recv() => Flow::Quit,
            flow = demo.command(&line) => flow,
        };
        if flow == Flow::Quit {
            break;
        }
    }
    println!(
        "stopping {} core service(s)",
        demo.children.running().count()
    );
    demo.children.stop().await;
    Ok(())
}

struct Demo {
    exe: PathBuf,
    root: PathBuf,
    children: Children,
    /// The cluster's CA: every service gets a certificate from it, in `<root>/tls/`;
    /// `None` when the services talk in plaintext (`demo --raft.insecure`).
    ca: Option<crate::certs::Ca>,
}

/// A local cluster of child `sqlraft-core run` processes started as the demo starts
/// them (node N on 127.0.0.N, each further service created through the REST API and
/// joined); `bench` measures one. Every process is stopped by [`LocalCluster::stop`],
/// or killed when the value is dropped.
pub(crate) struct LocalCluster(Demo);

impl LocalCluster {
    /// Starts `count` services under `root` and waits until every one sees them all
    /// as voters.
    pub(crate) async fn start(root: &Path, count: usize) -> Result<Self, CoreError> {
        let mut demo = Demo::new(root, true)?;
        if let Err(e) = demo.start_all(count).await {
            demo.children.stop().await;
            return Err(e);
        }
        Ok(LocalCluster(demo))
    }

    /// Each running service's HTTP address (`host:port`), in the order started.
    pub(crate) fn http_addrs(&self) -> Vec<String> {
        self.0.children.running().map(|n| n.http.clone()).collect()
    }

    /// Each running service's process id.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.0.children.running().filter_map(|n| n.pid()).collect()
    }

    /// Stops every service (SIGTERM, then SIGKILL after a timeout).
    pub(crate) async fn stop(mut self) {
        self.0.children.stop().await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

impl Demo {
    /// A demo of no services yet under `root`; with `tls`, a new cluster CA in
    /// `<root>/tls/` and mutual TLS between the services.
    fn new(root: &Path, tls: bool) -> Result<Demo, CoreError> {
        let exe = std::env::current_exe()
            .map_err(|e| CoreError::Io(format!("cannot find this program: {e}")))?;
        let ca = if tls {
            let ca = crate::certs::Ca::new(crate::certs::CA_DAYS)?;
            ca.write(&root.join("tls"))?;
            Some(ca)
        } else {
            None
        };
        Ok(Demo {
            exe,
            root: root.to_path_buf(),
            children: Children(Vec::new()),
            ca,
        })
    }

    async fn start_all(&mut self, count: usize) -> Result<(), CoreError> {
        for _ in 0..count {
            self.add().await?;
        }
        // Joined learners are promoted in pairs; wait until every node sees all voters,
        // the change of voters finished.
        for node in &mut self.children.0 {
            node.wait_until("settled", "/status", |status, body| {
                status == 200
                    && serde_json::from_slice::<serde_json::Value>(body)
                        .ok()
                        .is_some_and(|s| {
                            s["voters"].as_array().map(Vec::len) == Some(count)
                                && s["voters_outgoing"].as_array().is_some_and(Vec::is_empty)
                        })
            })
            .await?;
        }
        Ok(())
    }

    /// Starts one more service on the next loopback host: the first bootstraps the
    /// cluster; every other one is created through a running member's REST API, as in
    /// the web interface, then joins through it.
    async fn add(&mut self) -> Result<(), CoreError> {
        let number = self.children.0.len() + 1;
        if number > MAX_HOSTS {
            return Err(CoreError::Usage(format!(
                "the demo runs at most {MAX_HOSTS} services"
            )));
        }
        let host = format!("127.0.0.{number}");
        let (raft_port, http_port) = free_ports(&host)?;
        let addrs = (format!("{host}:{raft_port}"), format!("{host}:{http_port}"));
        let member = self
            .children
            .running()
            .map(|n| (n.http.clone(), n.raft.clone()))
            .next();
        let (id, join) = match member {
            None if number == 1 => (FIRST_SERVICE_ID.to_string(), None),
            None => {
                return Err(CoreError::Failed(
                    "no service is running to join through: restart one first".into(),
                ));
            }
            Some((http, raft)) => (create_service(&http, &host, &addrs.0).await?, Some(raft)),
        };
        let transport_flags = match &self.ca {
            Some(ca) => crate::certs::run_flags(&crate::certs::write_service_files(
                ca,
                &id,
                &host,
                crate::certs::SERVICE_DAYS,
                &self.root.join("tls"),
            )?),
            None => vec!["--raft.insecure".to_string()],
        };
        let node = DemoNode::spawn(
            &self.exe,
            &self.root,
            number,
            id,
            addrs,
            join.as_deref(),
            transport_flags,
        )?;
        self.children.0.push(node);
        let node = self
            .children
            .0
            .last_mut()
            .ok_or_else(|| CoreError::Failed("no child".into()))?;
        node.wait_until("ready", "/readyz", |status, _| status == 200)
            .await?;
        println!("node {number} ready at http://{}", node.http);
        Ok(())
    }

    /// Says which services exited since the last look, and what the user can do.
    fn report_exits(&mut self) {
        let running = self.children.running().count();
        for node in &mut self.children.0 {
            let Some(state) = node.reap().cloned() else {
                continue;
            };
            match state {
                State::Removed => println!(
                    "node {} (service {}) was removed from the cluster and stopped; a removed id \
                     never joins again. `add` starts a new service in its place.",
                    node.number, node.id
                ),
                State::Exited(ref how) => println!(
                    "node {} (service {}) exited ({how}); its data is kept. `restart {}` starts \
                     it again, or by hand: {}",
                    node.number,
                    node.id,
                    node.number,
                    node.command_line()
                ),
                State::Running => continue,
            }
            let words = node.last_words();
            if !words.trim().is_empty() && !matches!(node.state, State::Removed) {
                println!("  its last words: {}", words.trim().replace('\n', "\n  "));
            }
        }
        let now = self.children.running().count();
        if now < running {
            println!(
                "{now} of {} core service(s) still running",
                self.children.0.len()
            );
        }
    }

    /// Carries out one line typed on standard input.
    async fn command(&mut self, line: &str) -> Flow {
        let words: Vec<&str> = line.split_whitespace().collect();
        let outcome = match words.as_slice() {
            [] => Ok(()),
            ["help" | "?"] => {
                print_help();
                Ok(())
            }
            ["quit" | "exit"] => return Flow::Quit,
            ["status" | "list"] => {
                for node in &self.children.0 {
                    println!(
                        "  node {}  http://{}  id {}  {}",
                        node.number,
                        node.http,
                        node.id,
                        node.state_text()
                    );
                }
                Ok(())
            }
            ["add"] => self.add().await,
            [verb @ ("kill" | "stop" | "restart"), n] => self.on_node(verb, n).await,
            _ => Err(CoreError::Usage(format!(
                "unknown command {:?}; type help",
                line.trim()
            ))),
        };
        if let Err(e) = outcome {
            println!("error: {}", e.one_line());
        }
        Flow::Continue
    }

    async fn on_node(&mut self, verb: &str, number: &str) -> Result<(), CoreError> {
        let node = number
            .parse::<usize>()
            .ok()
            .and_then(|n| self.children.0.iter_mut().find(|node| node.number == n))
            .ok_or_else(|| CoreError::Usage(format!("no node {number}; type status")))?;
        match (verb, &node.state) {
            ("kill" | "stop", State::Running) => {
                let signal = if verb == "kill" {
                    Signal::SIGKILL
                } else {
                    Signal::SIGTERM
                };
                node.signal(signal);
                println!("sent {signal} to node {}", node.number);
                Ok(())
            }
            ("kill" | "stop", _) => Err(CoreError::Usage(format!(
                "node {} is not running",
                node.number
            ))),
            ("restart", State::Exited(_)) => {
                node.start()?;
                node.wait_until("ready", "/readyz", |status, _| status == 200)
                    .await?;
                println!("node {} ready again at http://{}", node.number, node.http);
                Ok(())
            }
            ("restart", State::Running) => Err(CoreError::Usage(format!(
                "node {} is running; kill or stop it first",
                node.number
            ))),
            _ => Err(CoreError::Usage(format!(
                "node {} was removed from the cluster and cannot come back; `add` starts a new service",
                node.number
            ))),
        }
    }
}

/// Lines typed on standard input. A plain thread reads them: a blocking read does not
/// hold the process open at exit, as a tokio blocking task would.
fn read_commands() -> mpsc::UnboundedReceiver<String> {
    let (lines, commands) = mpsc::unbounded_channel();
    let reader = std::thread::Builder::new()
        .name("demo-stdin".into())
        .spawn(move || {
            use std::io::BufRead;
            let mut stdin = std::io::stdin().lock();
            let mut line = Vec::new();
            // Bytes, not UTF-8 lines: one bad byte must not end the commands.
            while matches!(stdin.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                if lines
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    break;
                }
                line.clear();
            }
        });
    if let Err(e) = reader {
        tracing::warn!(error = %e, "cannot read commands from standard input");
    }
    commands
}

/// A receiver that never yields.
fn never() -> mpsc::UnboundedReceiver<String> {
    let (keep, rx) = mpsc::unbounded_channel();
    std::mem::forget(keep);
    rx
}

fn print_help() {
    println!("commands (type them here and press Enter):");
    println!("  status         every service, its URL and whether it runs");
    println!("  kill N         SIGKILL node N (a crash: watch the others elect a leader)");
    println!("  stop N         SIGTERM node N (a clean stop)");
    println!("  restart N      start a killed or stopped node N again, with its data");
    println!("  add            create a new core service and join it to the cluster");
    println!("  quit           stop every service and end the demo (Ctrl-C does the same)");
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

fn print_session(root: &Path, nodes: &[DemoNode]) {
    println!(
        "sqlraft demo: {} core service(s) on 127.0.0.1-127.0.0.{}, root {}",
        nodes.len(),
        nodes.len(),
        root.display()
    );
    for n in nodes {
        println!(
            "  node {}  http://{}  raft {}  id {}  pid {}  log {}",
            n.number,
            n.http,
            n.raft,
            n.id,
            n.pid().unwrap_or(0),
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
    println!(
        "to watch failover: `kill 1` here, or kill -9 a pid above; `restart 1` brings it back"
    );
    println!("ready (Ctrl-C stops every service; type help for commands)");
}
