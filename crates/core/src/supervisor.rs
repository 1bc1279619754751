//! The supervised background process of `run ... --install` where systemd is not
//! running: `sqlraft-core run ... --supervise` runs the service and restarts it when it
//! fails, as `Restart=on-failure` would ([`supervise`]). Its files are
//! [`SupervisedPaths`]; [`crate::install`] starts it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::signal::unix::SignalKind;

use crate::cli::{RunConfig, service_args};
use crate::error::{CoreError, io_err};
use crate::run::watch_signal;

/// How long the supervisor gives the service to stop after SIGTERM before SIGKILL.
const STOP_TIMEOUT_MS: u64 = 30_000;
/// Restart delays of the supervisor: first, and the most it doubles to.
const RESTART_DELAY_MS: u64 = 1_000;
const MAX_RESTART_DELAY_MS: u64 = 30_000;
/// A service that ran this long before failing restarts after the first delay again.
const STABLE_RUN_MS: u64 = 60_000;
/// How often the supervisor looks at its child.
const CHILD_POLL_MS: u64 = 200;
/// The exit status of `run` for wrong flags: restarting cannot help (also in the unit).
pub(crate) const USAGE_EXIT_STATUS: i32 = 2;

/// Files of the supervised mode, inside the service directory.
#[derive(Clone, Debug)]
pub struct SupervisedPaths {
    /// `<dir>/run`.
    pub run_dir: PathBuf,
    /// `<dir>/run/supervisor.lock`: locked while a supervisor lives.
    pub lock: PathBuf,
    /// `<dir>/run/supervisor.pid`.
    pub supervisor_pid: PathBuf,
    /// `<dir>/run/core.pid`: the running service process.
    pub core_pid: PathBuf,
    /// `<dir>/log`.
    pub log_dir: PathBuf,
    /// `<dir>/log/supervisor`: the supervisor's messages and the service's stdout/stderr.
    pub log: PathBuf,
}

impl SupervisedPaths {
    /// The paths for the service directory `dir`.
    pub fn new(dir: &Path) -> Self {
        let run_dir = dir.join("run");
        let log_dir = dir.join("log");
        Self {
            lock: run_dir.join("supervisor.lock"),
            supervisor_pid: run_dir.join("supervisor.pid"),
            core_pid: run_dir.join("core.pid"),
            log: log_dir.join("supervisor"),
            run_dir,
            log_dir,
        }
    }
}

/// Whether a process lives (a zombie does not count).
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 || kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => true,
    }
}

/// Whether the command line of `pid` contains `word`.
pub(crate) fn cmdline_mentions(pid: i32, word: &str) -> bool {
    process_argv(pid).is_some_and(|argv| argv.iter().any(|arg| arg == word))
}

/// The pid in a pid file, if it names a living process.
pub fn read_live_pid(path: &Path) -> Option<i32> {
    let pid = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    process_alive(pid).then_some(pid)
}

/// How long the supervised service gets to stop (its own stop timeout is 30 s).
const SUPERVISOR_STOP_WAIT: Duration = Duration::from_secs(40);

/// Stops the supervised mode's supervisor (and with it the service); true when one ran.
pub(crate) fn stop_supervisor(id: &str, dir: &Path) -> Result<bool, CoreError> {
    let paths = SupervisedPaths::new(dir);
    if !supervisor_running(&paths)? {
        return Ok(false);
    }
    let Some(pid) = read_live_pid(&paths.supervisor_pid) else {
        return Err(CoreError::Failed(format!(
            "service {id}: a supervisor holds {} but {} names no living process",
            paths.lock.display(),
            paths.supervisor_pid.display()
        )));
    };
    kill(Pid::from_raw(pid), Signal::SIGTERM)
        .map_err(|e| CoreError::Io(format!("cannot stop the supervisor (pid {pid}): {e}")))?;
    let deadline = Instant::now() + SUPERVISOR_STOP_WAIT;
    while supervisor_running(&paths)? {
        if Instant::now() >= deadline {
            return Err(CoreError::Failed(format!(
                "service {id}: its supervisor (pid {pid}) did not stop within {}s",
                SUPERVISOR_STOP_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("service {id}: supervisor (pid {pid}) and service stopped");
    Ok(true)
}

/// The command line of process `pid`, the program first.
pub(crate) fn process_argv(pid: i32) -> Option<Vec<String>> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// The command line of the running supervisor of `paths`, without the program and
/// `--supervise`: the flags its service runs with.
pub(crate) fn supervisor_flags(paths: &SupervisedPaths) -> Option<Vec<String>> {
    let argv = process_argv(read_live_pid(&paths.supervisor_pid)?)?;
    Some(
        argv.into_iter()
            .skip(1)
            .filter(|a| a != "--supervise")
            .collect(),
    )
}

/// Whether a supervisor holds the lock. The probe takes the lock and releases it.
pub(crate) fn supervisor_running(paths: &SupervisedPaths) -> Result<bool, CoreError> {
    let file = match File::open(&paths.lock) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("open", &paths.lock, e)),
    };
    match file.try_lock() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(e)) => Err(io_err("lock", &paths.lock, e)),
    }
}

pub(crate) fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    }
}

/// The last line the supervisor log got since `offset`, for error messages.
pub(crate) fn log_tail(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    let read = File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        f.take(64 * 1024).read_to_string(&mut text)
    });
    match read {
        Ok(_) => text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map_or_else(
                || format!("see {}", path.display()),
                |l| l.trim().to_string(),
            ),
        Err(_) => format!("see {}", path.display()),
    }
}

/// How one run of the service ended.
enum Ended {
    Signal(&'static str),
    Exited(ExitStatus),
}

/// `sqlraft-core run ... --supervise` (hidden; started by `--install`): runs the service
/// and restarts it when it fails, until SIGTERM/SIGINT.
pub async fn supervise(config: &RunConfig) -> Result<(), CoreError> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
    let paths = SupervisedPaths::new(&config.dir());
    std::fs::create_dir_all(&paths.run_dir).map_err(|e| io_err("create", &paths.run_dir, e))?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&paths.lock)
        .map_err(|e| io_err("open", &paths.lock, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            tracing::info!("another supervisor runs this service; leaving");
            return Ok(());
        }
        Err(TryLockError::Error(e)) => return Err(io_err("lock", &paths.lock, e)),
    }
    let result = supervise_locked(config, &paths).await;
    let _ = std::fs::remove_file(&paths.core_pid);
    let _ = std::fs::remove_file(&paths.supervisor_pid);
    drop(lock);
    result
}

async fn supervise_locked(config: &RunConfig, paths: &SupervisedPaths) -> Result<(), CoreError> {
    let write_pid = |path: &Path, pid: u32| {
        std::fs::write(path, format!("{pid}\n")).map_err(|e| io_err("write", path, e))
    };
    write_pid(&paths.supervisor_pid, std::process::id())?;
    let mut sigterm = watch_signal(SignalKind::terminate(), "SIGTERM")?;
    let mut sigint = watch_signal(SignalKind::interrupt(), "SIGINT")?;
    // A hang-up of a terminal the installer ran in must not stop the service.
    let mut sighup = watch_signal(SignalKind::hangup(), "SIGHUP")?;
    let exe = std::env::current_exe()
        .map_err(|e| CoreError::Io(format!("cannot find this program's path: {e}")))?;
    let args = service_args(config);
    let mut delay = Duration::from_millis(RESTART_DELAY_MS);
    tracing::info!(service_id = %config.id, pid = std::process::id(), "supervisor started");
    loop {
        let started = Instant::now();
        let mut child = Command::new(&exe)
            // Its stderr is log/supervisor, not a journal stream, whatever started us.
            .env_remove("JOURNAL_STREAM")
            .args(&args)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| io_err("start", &exe, e))?;
        write_pid(&paths.core_pid, child.id())?;
        tracing::info!(pid = child.id(), "service started");
        let mut poll = tokio::time::interval(Duration::from_millis(CHILD_POLL_MS));
        let ended = loop {
            tokio::select! {
                _ = sigterm.recv() => break Ended::Signal("SIGTERM"),
                _ = sigint.recv() => break Ended::Signal("SIGINT"),
                _ = sighup.recv() => tracing::info!("SIGHUP ignored"),
                _ = poll.tick() => match child.try_wait() {
                    Ok(Some(status)) => break Ended::Exited(status),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot look at the service"),
                },
            }
        };
        let status = match ended {
            Ended::Signal(name) => {
                tracing::info!(signal = name, "stopping the service");
                stop_child(&mut child).await;
                tracing::info!("supervisor stopped");
                return Ok(());
            }
            Ended::Exited(status) => status,
        };
        let _ = std::fs::remove_file(&paths.core_pid);
        if status.success() {
            tracing::info!("service stopped cleanly; not restarting (on-failure policy)");
            return Ok(());
        }
        if status.code() == Some(USAGE_EXIT_STATUS) {
            tracing::error!("service refused its flags (exit status 2); not restarting");
            return Err(CoreError::Failed(
                "the service refused its flags; not restarting".into(),
            ));
        }
        if started.elapsed() >= Duration::from_millis(STABLE_RUN_MS) {
            delay = Duration::from_millis(RESTART_DELAY_MS);
        }
        tracing::warn!(status = %describe(status), delay_ms = delay.as_millis() as u64,
            "service failed; restarting");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = sigterm.recv() => return Ok(()),
            _ = sigint.recv() => return Ok(()),
        }
        delay = (delay * 2).min(Duration::from_millis(MAX_RESTART_DELAY_MS));
    }
}

/// SIGTERM, then SIGKILL after [`STOP_TIMEOUT_MS`].
async fn stop_child(child: &mut std::process::Child) {
    let Ok(raw) = i32::try_from(child.id()) else {
        return;
    };
    let pid = Pid::from_raw(raw);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_millis(STOP_TIMEOUT_MS);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(CHILD_POLL_MS)).await;
    }
    tracing::warn!("service did not stop in time; killing it");
    let _ = child.kill();
    let _ = child.wait();
}
