//! `sqlraft-campaign`: runs fault campaign runs and prints what they found.
//! `scripts/campaign.sh` builds and runs it; `docs/TESTING.md` describes it.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::{Pid, getppid};
use sqlraft_campaign::check::register::{DEFAULT_STEP_BUDGET, KeyVerdict};
use sqlraft_campaign::cluster::LIBFAKETIME;
use sqlraft_campaign::nemesis::Fault;
use sqlraft_campaign::net::{self, Topology};
use sqlraft_campaign::run::{NOT_COMPARED, RunConfig, RunReport, run};

#[derive(Parser, Debug)]
#[command(about = "Jepsen-style fault campaign against real sqlraft-core processes")]
struct Args {
    /// Seconds each run's clients and nemesis run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Total minutes: as many runs (of --seconds each, seeds counting up) as fit.
    /// Overrides --runs.
    #[arg(long)]
    minutes: Option<u64>,
    /// The first run's seed (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Number of runs, with seeds seed, seed+1, ...
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// Faults to draw from, comma-separated: kill, kill-leader, pause, pause-leader,
    /// partition, bridge, one-way, loss, join, remove, remove-leader, disk, clock,
    /// snapshot;
    /// `all` (those this machine allows) or `none`.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Voting nodes (odd).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: u32,
    /// Leave out the client that sends transaction control and PRAGMAs as reads.
    #[arg(long)]
    no_hostile: bool,
    /// Read registers at this level instead of a random one of weak, linearizable and
    /// strong. `none` reads are local and not linearizable, so a run with partitions
    /// or pauses should be found INVALID: a demonstration that the checker catches
    /// stale reads.
    #[arg(long, value_parser = ["none", "weak", "linearizable", "strong"])]
    register_read_level: Option<String>,
    /// Where nodes live in the network: namespaces (needs root, `ip`, `nft`) or
    /// loopback addresses (no network faults); `auto`: namespaces when possible.
    #[arg(long, value_enum, default_value_t = NetMode::Auto)]
    net: NetMode,
    /// Directory for the runs (kept when a run finds a violation, or with --keep).
    #[arg(long, default_value = "target/campaign")]
    out: PathBuf,
    /// Keep every run's directory.
    #[arg(long)]
    keep: bool,
    /// Internal: this process runs inside the hub namespace made by process N.
    #[arg(long, hide = true)]
    inside_owner: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum NetMode {
    Auto,
    Netns,
    Loopback,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = check_args(&args) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let netns = match args.net {
        NetMode::Loopback => false,
        NetMode::Netns => match net::available() {
            Ok(()) => true,
            Err(e) => {
                eprintln!("--net netns: {e}");
                return ExitCode::from(2);
            }
        },
        NetMode::Auto => net::available().is_ok(),
    };
    let faults = match parse_faults(&args.nemesis, netns) {
        Ok(faults) => faults,
        Err(e) => {
            eprintln!("--nemesis: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(owner) = args.inside_owner {
        return inside(
            &args,
            faults,
            Some(Topology::existing(owner, slots(args.nodes))),
        );
    }
    if !netns {
        return inside(&args, faults, None);
    }
    outside(&args)
}

/// Makes the namespaces, runs this program again inside the hub namespace, and removes
/// the namespaces when it ends, also after Ctrl-C or SIGTERM.
fn outside(args: &Args) -> ExitCode {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    // Blocked before anything is made (and, until it unblocks them, in the child): they
    // are waited for, and everything made is removed.
    if let Err(e) = signals.thread_block() {
        eprintln!("blocking signals: {e}");
    }
    // 0: not started; -1: told to stop before it started; otherwise the child's pid.
    let child_pid = Arc::new(AtomicI32::new(0));
    {
        let child_pid = Arc::clone(&child_pid);
        std::thread::spawn(move || {
            let mut seen = 0;
            while let Ok(signal) = signals.wait() {
                seen += 1;
                // The first asks the run to stop (it stops its nodes and keeps its
                // history); the second ends it at once. Whatever is left in the
                // namespaces is killed when they are removed.
                let (to_child, what) = if seen == 1 {
                    (
                        Signal::SIGTERM,
                        "stopping the campaign (again to stop at once)",
                    )
                } else {
                    (Signal::SIGKILL, "stopping the campaign now")
                };
                eprintln!("{signal}: {what}");
                match child_pid.compare_exchange(0, -1, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => {}
                    Err(pid) if pid > 0 => {
                        let _ = kill(Pid::from_raw(pid), to_child);
                    }
                    Err(_) => {}
                }
            }
        });
    }
    let topology = match Topology::create(slots(args.nodes)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("network namespaces: {e}");
            return ExitCode::from(2);
        }
    };
    if child_pid.load(Ordering::SeqCst) == -1 {
        topology.remove();
        return ExitCode::from(130);
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("sqlraft-campaign"));
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &topology.hub()])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .args(["--inside-owner", &std::process::id().to_string()]);
    let code = match command.spawn() {
        Ok(mut child) => {
            let pid = i32::try_from(child.id()).unwrap_or(0);
            if child_pid
                .compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                // Told to stop while it started.
                let _ = child.kill();
            }
            match child.wait() {
                Ok(status) => status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1)),
                Err(e) => {
                    eprintln!("waiting for the campaign: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("starting the campaign in {}: {e}", topology.hub());
            1
        }
    };
    topology.remove();
    ExitCode::from(code)
}

/// Runs the runs in this process (in the hub namespace, or on loopback).
fn inside(args: &Args, faults: Vec<Fault>, topology: Option<Topology>) -> ExitCode {
    // Children inherit the signal mask: nothing stays blocked here.
    let _ = SigSet::all().thread_unblock();
    let stop = stop_on_signals();
    let parent = getppid();
    let parent_alive = move || getppid() == parent && !stop.load(Ordering::SeqCst);
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let runs = match args.minutes {
        Some(minutes) => (minutes * 60).div_ceil(args.seconds.max(1)).max(1),
        None => args.runs,
    };
    println!(
        "campaign: {runs} run(s) of {} s, seeds {seed}..{}, {} nodes, {} clients, network {}, faults: {}",
        args.seconds,
        seed + runs - 1,
        args.nodes,
        args.clients,
        if topology.is_some() {
            "namespaces"
        } else {
            "loopback"
        },
        names(&faults)
    );
    let mut reports = Vec::new();
    for k in 0..runs {
        if !parent_alive() {
            eprintln!("the campaign's parent is gone: stopping");
            break;
        }
        let config = RunConfig {
            seed: seed + k,
            duration: Duration::from_secs(args.seconds),
            nodes: args.nodes,
            clients: args.clients,
            faults: faults.clone(),
            hostile: !args.no_hostile,
            register_reads: args.register_read_level.as_deref().map(level_name),
            out: args.out.clone(),
            keep: args.keep,
            budget: DEFAULT_STEP_BUDGET,
        };
        let report = run(&config, topology.as_ref(), &parent_alive);
        print_run(&report);
        reports.push(report);
    }
    print_summary(&reports);
    if reports.iter().all(|r| r.valid) && !reports.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The `'static` name of a read level the command line accepted.
fn level_name(level: &str) -> &'static str {
    match level {
        "none" => "none",
        "weak" => "weak",
        "strong" => "strong",
        _ => "linearizable",
    }
}

/// Namespaces for `nodes` services and two more, for services that join.
fn slots(nodes: usize) -> usize {
    nodes + 2
}

/// What the command line asks for makes a run that checks something.
fn check_args(args: &Args) -> Result<(), String> {
    if args.nodes < 3 || args.nodes.is_multiple_of(2) || args.nodes > 99 {
        return Err("--nodes must be odd, from 3 to 99".into());
    }
    if args.seconds < 5 {
        return Err("--seconds must be at least 5: a shorter run checks next to nothing".into());
    }
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if args.runs == 0 || args.minutes == Some(0) {
        return Err("--runs and --minutes must be at least 1".into());
    }
    let env = sqlraft_harness::processes::binary::BIN_ENV;
    match std::env::var_os(env) {
        Some(path) if !std::path::Path::new(&path).is_file() => {
            Err(format!("{env}={} is not a file", path.to_string_lossy()))
        }
        Some(_) => Ok(()),
        None => {
            let beside = std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.join("sqlraft-core")));
            match beside {
                Some(bin) if bin.is_file() => Ok(()),
                _ => Err(format!(
                    "sqlraft-core is not beside this program: build it (`cargo build -p sqlraft-core`) or set {env}"
                )),
            }
        }
    }
}

/// A flag set by SIGINT, SIGTERM or SIGHUP: the run in progress then stops early,
/// its nodes are stopped (continued first when paused) and its history kept.
fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build();
    match runtime {
        Ok(runtime) => {
            std::thread::spawn(move || {
                runtime.block_on(async move {
                    use tokio::signal::unix::{SignalKind, signal};
                    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                        signal(SignalKind::interrupt()),
                        signal(SignalKind::terminate()),
                        signal(SignalKind::hangup()),
                    ) else {
                        eprintln!("cannot listen for signals");
                        return;
                    };
                    for round in 0..2 {
                        tokio::select! {
                            _ = int.recv() => {}
                            _ = term.recv() => {}
                            _ = hup.recv() => {}
                        }
                        if round == 0 {
                            eprintln!(
                                "signal: stopping the run in progress (again to stop at once)"
                            );
                            flag.store(true, Ordering::SeqCst);
                        } else {
                            std::process::exit(130);
                        }
                    }
                });
            });
        }
        Err(e) => eprintln!("cannot listen for signals: {e}"),
    }
    stop
}

fn parse_faults(spec: &str, netns: bool) -> Result<Vec<Fault>, String> {
    // Why a fault cannot run here, if it cannot.
    let missing = |fault: Fault| -> Option<String> {
        if fault.needs_network() && !netns {
            return Some(format!(
                "{} needs network namespaces (root, `ip` and `nft`; --net netns)",
                fault.name()
            ));
        }
        if fault == Fault::Clock && !std::path::Path::new(LIBFAKETIME).exists() {
            return Some(format!("clock needs {LIBFAKETIME} (Debian: libfaketime)"));
        }
        None
    };
    match spec {
        "none" => return Ok(Vec::new()),
        "all" => {
            return Ok(Fault::ALL
                .into_iter()
                .filter(|&f| missing(f).is_none())
                .collect());
        }
        _ => {}
    }
    let mut faults = Vec::new();
    let names: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        return Err("no fault named; say `none` for a run without faults".into());
    }
    for name in names {
        if name == "all" || name == "none" {
            return Err(format!("`{name}` stands alone, not in a list"));
        }
        let fault = Fault::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
            format!(
                "unknown fault {name:?}; known: {}, all, none",
                known.join(", ")
            )
        })?;
        if let Some(why) = missing(fault) {
            return Err(why);
        }
        faults.push(fault);
    }
    Ok(faults)
}

fn names(faults: &[Fault]) -> String {
    if faults.is_empty() {
        return "none".into();
    }
    faults
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(",")
}

fn print_run(r: &RunReport) {
    println!();
    println!(
        "run seed={} {:.0} s, {} nodes, {} clients, faults from: {}",
        r.seed,
        r.seconds,
        r.nodes,
        r.clients,
        names(&r.faults_drawn_from)
    );
    println!(
        "  {:<10} {:>7} {:>7} {:>8}",
        "operation", "ok", "fail", "unknown"
    );
    for (kind, (ok, fail, unknown)) in &r.ops {
        println!("  {kind:<10} {ok:>7} {fail:>7} {unknown:>8}");
    }
    let faults: Vec<String> = r.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "  faults: {}",
        if faults.is_empty() {
            "none".into()
        } else {
            faults.join(", ")
        }
    );
    println!(
        "  longest without an acknowledged write: {:.2} s",
        r.longest_without_write
    );
    match &r.converged {
        Ok((index, hash)) => println!(
            "  nodes identical: applied index {index}, sha256 {}",
            &hash[..hash.len().min(16)]
        ),
        Err(e) if e == NOT_COMPARED => println!("  nodes not compared: the run ended early"),
        Err(e) => println!("  NODES DIFFER: {e}"),
    }
    for exit in &r.exits {
        println!(
            "  {} (slot {}) exited by itself ({}){}{}",
            exit.name,
            exit.slot,
            exit.status,
            exit.during
                .map(|f| format!(" during {}", f.name()))
                .unwrap_or_default(),
            if exit.expected { "" } else { ": UNEXPECTED" }
        );
    }
    if let Some(error) = &r.error {
        println!("  error: {error}");
    }
    if let Some(f) = &r.findings {
        for key in f.bad_keys() {
            match &f.registers[&key] {
                KeyVerdict::NotLinearizable { longest, stuck } => println!(
                    "  register {key}: NOT LINEARIZABLE: after a consistent order of {} operations, no order places operation {stuck} (register-{key}.svg)",
                    longest.len()
                ),
                other => println!("  register {key}: {other:?}"),
            }
        }
        for a in f.append.iter().take(10) {
            println!("  list: {a:?}");
        }
        for a in f.bank.iter().take(10) {
            println!("  bank: {a:?}");
        }
        if !f.unchecked.is_empty() {
            println!("  never read, so unchecked: {}", f.unchecked.join(", "));
        }
        if !f.time_went_back.is_empty() {
            println!("  stamps going back in reads: {:?}", f.time_went_back);
        }
        if !f.hostile_accepted.is_empty() {
            println!("  hostile statements run: {:?}", f.hostile_accepted);
        }
    }
    println!("  verdict: {}", if r.valid { "valid" } else { "INVALID" });
    if let Some(dir) = &r.dir {
        println!("  evidence: {}", dir.display());
    }
}

fn print_summary(reports: &[RunReport]) {
    println!();
    println!(
        "{:>12} {:>6} {:>8} {:>8} {:>7} {:>9}  {:<40} verdict",
        "seed", "secs", "ops", "ok", "unknown", "max-gap-s", "faults"
    );
    for r in reports {
        let total: usize = r.ops.values().map(|(o, f, u)| o + f + u).sum();
        let ok: usize = r.ops.values().map(|(o, _, _)| o).sum();
        let unknown: usize = r.ops.values().map(|(_, _, u)| u).sum();
        let faults: Vec<String> = r.faults.iter().map(|(k, n)| format!("{k}:{n}")).collect();
        println!(
            "{:>12} {:>6.0} {:>8} {:>8} {:>7} {:>9.2}  {:<40} {}",
            r.seed,
            r.seconds,
            total,
            ok,
            unknown,
            r.longest_without_write,
            faults.join(" "),
            if r.valid { "valid" } else { "INVALID" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut all = vec!["sqlraft-campaign"];
        all.extend_from_slice(extra);
        Args::parse_from(all)
    }

    #[test]
    fn runs_that_would_check_nothing_are_refused() {
        for bad in [
            &["--seconds", "0"][..],
            &["--clients", "0"],
            &["--runs", "0"],
            &["--minutes", "0"],
            &["--nodes", "4"],
            &["--nodes", "1"],
        ] {
            let e = check_args(&args(bad)).expect_err("refused");
            assert!(!e.is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn fault_lists_are_parsed_strictly() {
        assert_eq!(parse_faults("none", true), Ok(Vec::new()));
        assert_eq!(
            parse_faults("kill, pause", false),
            Ok(vec![Fault::Kill, Fault::Pause])
        );
        assert!(parse_faults(",", true).is_err());
        assert!(parse_faults("all,kill", true).is_err());
        assert!(parse_faults("kil", true).is_err());
        // Network and disk faults need namespaces.
        assert!(parse_faults("partition", false).is_err());
        assert!(parse_faults("disk", false).is_err());
        let all_here = parse_faults("all", false).expect("all");
        assert!(all_here.iter().all(|f| !f.needs_network()));
    }
}
