//! One run: a fresh cluster, the clients and the nemesis for a while, then everything
//! healed, the nodes compared, final reads taken, and the history checked. A run that
//! finds a violation keeps its directory: the history, the faults, the report, a
//! timeline of each failing key, and every node's data and log.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use sqlraft_harness::http;

use crate::check::{self, Findings, register::KeyVerdict};
use crate::cluster::{LIBFAKETIME, NodeOptions, Nodes};
use crate::history::{Call, Op, Outcome, Recorder};
use crate::nemesis::{Exit, Fault, FaultEvent, Nemesis};
use crate::net::Topology;
use crate::timeline;
use crate::workload::{self, Client, Clients, LIST_KEYS, REGISTER_KEYS};

/// The size of each service's file system when the disk fault is on: room for hours
/// of this workload's log, small enough to fill in a moment.
const TMPFS_MIB: u64 = 256;

/// What `converged` says when the run ended before the nodes were compared.
pub const NOT_COMPARED: &str = "not compared: the run ended early";

/// What a run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    /// How long the clients run.
    pub duration: Duration,
    pub nodes: usize,
    pub clients: u32,
    /// The kinds of fault to draw from (none: a run without faults).
    pub faults: Vec<Fault>,
    pub hostile: bool,
    /// The level of every register read (default: weak, linearizable or strong, each
    /// linearizable by the API's contract). `none` is not: a run with it shows that
    /// the checker notices stale reads.
    pub register_reads: Option<&'static str>,
    /// Where run directories go.
    pub out: PathBuf,
    /// Keep the run directory even when the run is valid.
    pub keep: bool,
    /// Configurations the register search may try per key.
    pub budget: u64,
}

/// What a run found.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub seed: u64,
    pub seconds: f64,
    pub nodes: usize,
    pub clients: u32,
    pub faults_drawn_from: Vec<Fault>,
    /// Per kind of operation: (ok, fail, unknown).
    pub ops: BTreeMap<String, (usize, usize, usize)>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// Services that exited by themselves.
    pub exits: Vec<Exit>,
    /// The longest time no write was acknowledged, in seconds.
    pub longest_without_write: f64,
    /// The applied index and content hash every node reached, or why not.
    pub converged: Result<(u64, String), String>,
    pub findings: Option<Findings>,
    /// Why the run could not be completed (a node that would not start again, …).
    pub error: Option<String>,
    pub valid: bool,
    /// Where the evidence is, when kept.
    pub dir: Option<PathBuf>,
}

/// Runs one campaign run.
pub fn run(
    config: &RunConfig,
    topology: Option<&Topology>,
    keep_going: &dyn Fn() -> bool,
) -> RunReport {
    let dir = config
        .out
        .join(format!("run-seed{}-{}", config.seed, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    let recorder = Recorder::new();
    let mut report = RunReport {
        seed: config.seed,
        seconds: 0.0,
        nodes: config.nodes,
        clients: config.clients,
        faults_drawn_from: config.faults.clone(),
        ops: BTreeMap::new(),
        faults: BTreeMap::new(),
        exits: Vec::new(),
        longest_without_write: 0.0,
        converged: Err(NOT_COMPARED.into()),
        findings: None,
        error: None,
        valid: false,
        dir: Some(dir.clone()),
    };
    if let Err(e) = std::fs::create_dir_all(&data) {
        report.error = Some(format!("{}: {e}", data.display()));
        return report;
    }
    let membership = config
        .faults
        .iter()
        .any(|f| matches!(f, Fault::Join | Fault::Remove | Fault::RemoveLeader));
    // Room for two more services when members come and go.
    let slots = config.nodes + if membership { 2 } else { 0 };
    let options = NodeOptions {
        tmpfs_mib: config.faults.contains(&Fault::Disk).then_some(TMPFS_MIB),
        fake_clock: config
            .faults
            .contains(&Fault::Clock)
            .then(|| PathBuf::from(LIBFAKETIME)),
    };
    let mut nodes = match Nodes::start(&data, slots, config.nodes, topology, options) {
        Ok(nodes) => nodes,
        Err(e) => {
            report.error = Some(format!("setup: {e}"));
            let _ = keep_evidence(&dir, &[], &[], &report);
            return report;
        }
    };
    if let Err(e) = create_schema(&nodes) {
        report.error = Some(format!("setup: {e}"));
        nodes.preserve(&dir.join("services"));
        drop(nodes);
        let _ = keep_evidence(&dir, &[], &[], &report);
        return report;
    }

    let began = Instant::now();
    let clients = Clients::start(
        config.clients,
        nodes.targets(),
        config.hostile,
        config.register_reads,
        config.seed,
        &recorder,
    );
    let clients_started = recorder.now();
    let mut nemesis = Nemesis {
        nodes: &mut nodes,
        topology,
        rng: fastrand::Rng::with_seed(config.seed),
        recorder: recorder.clone(),
        events: Vec::new(),
        exits: Vec::new(),
        full: None,
        no_leader: false,
    };
    let end = began + config.duration;
    let mut error = None;
    while Instant::now() < end && keep_going() {
        let quiet = Duration::from_millis(nemesis.rng.u64(1000..3000));
        std::thread::sleep(quiet.min(end.saturating_duration_since(Instant::now())));
        if config.faults.is_empty() || Instant::now() >= end {
            continue;
        }
        let fault = config.faults[nemesis.rng.usize(..config.faults.len())];
        let hold = Duration::from_millis(nemesis.rng.u64(3000..6000));
        if let Err(e) = nemesis.strike(fault, hold) {
            error = Some(format!("nemesis ({}): {e}", fault.name()));
            break;
        }
    }
    // Stopped early (a signal, or the campaign's parent gone): no healing, converging or
    // final reads; the history so far is checked and kept.
    let interrupted = !keep_going();
    if interrupted {
        error.get_or_insert("interrupted before the end of the run".to_string());
    }
    let died = clients.stop();
    if died > 0 {
        error.get_or_insert(format!(
            "{died} client(s) panicked: the history is incomplete"
        ));
    }
    let clients_stopped = recorder.now();
    report.seconds = began.elapsed().as_secs_f64();
    if !interrupted && let Err(e) = nemesis.heal_all() {
        error.get_or_insert(format!("healing: {e}"));
    }
    for event in &nemesis.events {
        *report
            .faults
            .entry(event.fault.name().to_string())
            .or_default() += 1;
    }
    let events = std::mem::take(&mut nemesis.events);
    report.exits = std::mem::take(&mut nemesis.exits);

    if !interrupted {
        report.converged = nodes
            .converged(Duration::from_secs(60))
            .map_err(|e| e.to_string());
        if let Err(e) = final_reads(&nodes, &recorder) {
            error.get_or_insert(e);
        }
    }

    let history = recorder.history();
    report.ops = count_ops(&history);
    report.longest_without_write =
        longest_without_write(&history, clients_started, clients_stopped);
    let acknowledged = history
        .iter()
        .filter(|op| op.outcome == Outcome::Ok && is_write(&op.call))
        .count();
    if acknowledged == 0 {
        error.get_or_insert("no write was acknowledged: the run tested nothing".to_string());
    }
    let findings = check::check(&history, config.budget);
    report.valid = error.is_none()
        && report.converged.is_ok()
        && findings.valid()
        && report.exits.iter().all(|e| e.expected);
    report.error = error;
    report.findings = Some(findings);

    if !report.valid || config.keep {
        nodes.preserve(&dir.join("services"));
    }
    drop(nodes);
    if report.valid && !config.keep {
        let _ = std::fs::remove_dir_all(&dir);
        report.dir = None;
    } else if let Err(e) = keep_evidence(&dir, &history, &events, &report) {
        report
            .error
            .get_or_insert(format!("writing the evidence: {e}"));
    }
    report
}

fn create_schema(nodes: &Nodes) -> Result<(), String> {
    let addr = &nodes.slots[0].http;
    let r = http::post(
        addr,
        "/db/execute",
        &workload::schema(),
        Duration::from_secs(30),
    )
    .map_err(|e| e.to_string())?;
    let body = r.text();
    if r.status != 200 || body.contains("\"error\"") {
        return Err(format!("creating the schema: {} {body}", r.status));
    }
    Ok(())
}

/// After healing: a linearizable read of every register and list through each member
/// in turn, and every member's balances and stamps read locally. They join the history,
/// so every acknowledged write must show in them.
fn final_reads(nodes: &Nodes, recorder: &Recorder) -> Result<(), String> {
    let addrs: Vec<String> = nodes
        .members()
        .iter()
        .map(|&i| nodes.slots[i].http.clone())
        .collect();
    let mut reader = Client::final_reader(nodes.targets(), recorder);
    let mut missing = Vec::new();
    let mut until_ok = |what: String, read: &mut dyn FnMut() -> Outcome| {
        for _ in 0..20 {
            if read() == Outcome::Ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        missing.push(what);
    };
    let n = addrs.len();
    for key in 0..REGISTER_KEYS {
        let addr = &addrs[key as usize % n];
        until_ok(format!("register {key} on {addr}"), &mut || {
            reader.read(addr, key, "linearizable")
        });
    }
    for key in 0..LIST_KEYS {
        let addr = &addrs[key as usize % n];
        until_ok(format!("list {key} on {addr}"), &mut || {
            reader.list(addr, key, "linearizable")
        });
    }
    for addr in &addrs {
        until_ok(format!("balances on {addr}"), &mut || {
            reader.balances(addr, "none")
        });
        until_ok(format!("stamps on {addr}"), &mut || {
            reader.stamps(addr, "none")
        });
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "final reads without an answer: {}",
            missing.join(", ")
        ))
    }
}

fn kind(call: &Call) -> &'static str {
    match call {
        Call::Read { .. } => "read",
        Call::Write { .. } => "write",
        Call::Cas { .. } => "cas",
        Call::Transfer { .. } => "transfer",
        Call::Balances { .. } => "balances",
        Call::Append { .. } => "append",
        Call::List { .. } => "list",
        Call::Hostile { .. } => "hostile",
        Call::Stamp => "stamp",
        Call::Stamps { .. } => "stamps",
    }
}

fn count_ops(history: &[Op]) -> BTreeMap<String, (usize, usize, usize)> {
    let mut ops: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for op in history {
        let counts = ops.entry(kind(&op.call).to_string()).or_default();
        match op.outcome {
            Outcome::Ok => counts.0 += 1,
            Outcome::Fail => counts.1 += 1,
            Outcome::Unknown => counts.2 += 1,
        }
    }
    ops
}

/// Whether `call` changes the database.
fn is_write(call: &Call) -> bool {
    matches!(
        call,
        Call::Write { .. }
            | Call::Cas { .. }
            | Call::Transfer { .. }
            | Call::Append { .. }
            | Call::Stamp
    )
}

/// The longest stretch between `from` and `to` in which no write was acknowledged.
fn longest_without_write(history: &[Op], from: u64, to: u64) -> f64 {
    let mut acks: Vec<u64> = history
        .iter()
        .filter(|op| op.outcome == Outcome::Ok && is_write(&op.call))
        .map(|op| op.end.clamp(from, to))
        .collect();
    acks.push(from);
    acks.push(to);
    acks.sort_unstable();
    acks.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0) as f64 / 1e9
}

/// The operations on register `key` worth drawing: with no stuck operation, all of
/// them; otherwise those within a second before the stuck one (and just after it), the
/// writes of the value it saw, and the last few of the consistent order found.
fn around_stuck<'h>(
    history: &'h [Op],
    key: u32,
    order: &[usize],
    stuck: Option<usize>,
) -> Vec<&'h Op> {
    let on_key = |op: &&Op| matches!(op.call, Call::Read { key: k, .. } | Call::Write { key: k, .. } | Call::Cas { key: k, .. } if k == key);
    let Some(stuck) = stuck.and_then(|id| history.get(id)) else {
        return history.iter().filter(on_key).collect();
    };
    let (from, to) = (
        stuck.start.saturating_sub(1_000_000_000),
        stuck.end + 200_000_000,
    );
    let seen = match &stuck.answer {
        crate::history::Answer::Value { value } => *value,
        _ => None,
    };
    let tail: Vec<usize> = order.iter().rev().take(5).copied().collect();
    history
        .iter()
        .filter(on_key)
        .filter(|op| {
            (op.start <= to && op.end >= from)
                || tail.contains(&op.id)
                || matches!(op.call, Call::Write { value, .. } | Call::Cas { to: value, .. } if Some(value) == seen)
        })
        .collect()
}

fn keep_evidence(
    dir: &Path,
    history: &[Op],
    events: &[FaultEvent],
    report: &RunReport,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl"))?);
    for op in history {
        serde_json::to_writer(&mut out, op)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    std::fs::write(dir.join("faults.json"), serde_json::to_vec_pretty(events)?)?;
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(report)?)?;
    let Some(findings) = &report.findings else {
        return Ok(());
    };
    for (key, verdict) in &findings.registers {
        let (order, stuck) = match verdict {
            KeyVerdict::Linearizable => continue,
            KeyVerdict::NotLinearizable { longest, stuck } => (longest.clone(), Some(*stuck)),
            KeyVerdict::TooLarge { .. } => (Vec::new(), None),
        };
        let ops = around_stuck(history, *key, &order, stuck);

        let title = match stuck {
            Some(stuck) => format!(
                "register {key}, seed {}: not linearizable at operation {stuck}",
                report.seed
            ),
            None => format!("register {key}, seed {}: undecided", report.seed),
        };
        std::fs::write(
            dir.join(format!("register-{key}.svg")),
            timeline::svg(&title, &ops, &order, stuck),
        )?;
    }
    let mut list_keys: Vec<u32> = findings
        .append
        .iter()
        .map(|a| match a {
            check::append::AppendAnomaly::Diverged { key, .. }
            | check::append::AppendAnomaly::Duplicate { key, .. }
            | check::append::AppendAnomaly::Phantom { key, .. }
            | check::append::AppendAnomaly::Lost { key, .. }
            | check::append::AppendAnomaly::WentBack { key, .. } => *key,
        })
        .collect();
    list_keys.dedup();
    for key in list_keys {
        let ops: Vec<&Op> = history
            .iter()
            .filter(|op| matches!(op.call, Call::Append { key: k, .. } | Call::List { key: k, .. } if k == key))
            .collect();
        let title = format!("list {key}, seed {}", report.seed);
        std::fs::write(
            dir.join(format!("list-{key}.svg")),
            timeline::svg(&title, &ops, &[], None),
        )?;
    }
    let summary = json!({ "seed": report.seed, "valid": report.valid });
    std::fs::write(dir.join("verdict.json"), summary.to_string())?;
    Ok(())
}
