//! One `sqlraft-core run` child process: start, wait for `/readyz`, SIGKILL, SIGTERM,
//! SIGSTOP/SIGCONT, restart from the same directory and ports. Dropping it kills it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value as Json;

use super::{POLL, WAIT, sqlraft_core_bin};
use crate::http;

/// How often a first start is tried again when a picked port was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// A core service process and everything needed to start it again.
pub struct CoreProcess {
    /// Service id.
    pub id: String,
    /// Short name for messages (`node-0`, …).
    pub name: String,
    /// The cluster root (`--root`); the service lives in `<root>/core/<id>/`.
    pub root: PathBuf,
    /// `--raft.node.listen` and `--raft.node.addr`.
    pub raft: String,
    /// `--http`.
    pub http: String,
    /// The network namespace it runs in (`ip netns exec`), if not the caller's.
    netns: Option<String>,
    /// Extra environment variables.
    env: Vec<(String, String)>,
    /// Extra flags of `run`.
    args: Vec<String>,
    child: Option<Child>,
    starts: usize,
}

/// Why a start did not become ready.
#[derive(Debug)]
pub enum StartError {
    /// The process exited; its stderr.
    Exited(ExitStatus, String),
    /// Still running but not ready within [`WAIT`].
    NotReady(String),
}

impl CoreProcess {
    /// Starts a new service with fresh ports (retrying when a port was taken in between)
    /// and waits until it is ready. It listens on loopback address `host`. `id_for` gives the service id for a raft address
    /// (a joining service is created with the address it will use); `join`: a member's
    /// raft address.
    pub fn start_new(
        root: &Path,
        name: &str,
        host: &str,
        id_for: impl FnMut(&str) -> String,
        join: Option<&str>,
    ) -> CoreProcess {
        CoreProcess::start_new_with(root, name, host, id_for, join, &[])
    }

    /// Like [`CoreProcess::start_new`], with `args` added to `sqlraft-core run` (for
    /// every start).
    pub fn start_new_with(
        root: &Path,
        name: &str,
        host: &str,
        mut id_for: impl FnMut(&str) -> String,
        join: Option<&str>,
        args: &[String],
    ) -> CoreProcess {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let raft = format!("{host}:{}", free_port(host));
            let http = format!("{host}:{}", free_port(host));
            if raft == http {
                continue;
            }
            let id = id_for(&raft);
            let mut process = CoreProcess::at(root, name, &id, &raft, &http, None);
            process.args.extend_from_slice(args);
            match process.spawn(join).and_then(|()| process.wait_ready()) {
                Ok(()) => return process,
                Err(StartError::Exited(_, stderr)) if stderr.contains("in use") => {
                    // Someone took a port between picking and binding: fresh ports,
                    // fresh directory.
                    let _ = std::fs::remove_dir_all(process.dir());
                    last = Some(stderr);
                }
                Err(e) => panic!(
                    "{name} ({id}) did not start: {e:?}\n{}",
                    process.log_tail(40)
                ),
            }
        }
        panic!("{name}: no free ports after {PORT_ATTEMPTS} attempts: {last:?}");
    }

    /// A service that is not started yet, with fixed addresses, run in network
    /// namespace `netns` when given (its addresses are that namespace's).
    pub fn at(
        root: &Path,
        name: &str,
        id: &str,
        raft: &str,
        http: &str,
        netns: Option<&str>,
    ) -> CoreProcess {
        CoreProcess {
            id: id.to_string(),
            name: name.to_string(),
            root: root.to_path_buf(),
            raft: raft.to_string(),
            http: http.to_string(),
            netns: netns.map(str::to_string),
            env: Vec::new(),
            args: Vec::new(),
            child: None,
            starts: 0,
        }
    }

    /// Adds flags to `sqlraft-core run` for every later start.
    pub fn add_args(&mut self, args: &[&str]) {
        self.args.extend(args.iter().map(|a| a.to_string()));
    }

    /// Sets an environment variable for every later start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Waits up to `within` for the process to exit by itself (a removed service);
    /// kills it when it does not.
    pub fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + within;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(format!("{} is not running", self.name));
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Ok(status);
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                Ok(None) => {
                    let _ = kill(self.pid(), Signal::SIGCONT);
                    self.kill9();
                    return Err(format!(
                        "{} still running after {within:?}: killed",
                        self.name
                    ));
                }
                Err(e) => return Err(format!("try_wait: {e}")),
            }
        }
    }

    /// Starts it (joining the member at raft address `join`, if given) and waits until
    /// it is ready.
    pub fn try_start(&mut self, join: Option<&str>) -> Result<(), StartError> {
        if self.child.is_some() {
            return Err(StartError::NotReady(format!(
                "{} is already running",
                self.name
            )));
        }
        self.spawn(join).and_then(|()| self.wait_ready())
    }

    /// Starts the stopped service again from its directory, on the same ports, and
    /// waits until it is ready. A port still held by the old process's sockets is
    /// waited out.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        if let Err(e) = self.try_restart() {
            panic!(
                "{} did not restart: {e:?}\n{}",
                self.name,
                self.log_tail(40)
            );
        }
    }

    /// [`CoreProcess::restart`] that says why it failed instead of panicking.
    pub fn try_restart(&mut self) -> Result<(), StartError> {
        if self.child.is_some() {
            return Err(StartError::NotReady(format!(
                "{} is still running",
                self.name
            )));
        }
        let deadline = Instant::now() + WAIT;
        loop {
            match self.spawn(None).and_then(|()| self.wait_ready()) {
                Err(StartError::Exited(_, stderr))
                    if stderr.contains("in use") && Instant::now() < deadline =>
                {
                    std::thread::sleep(POLL * 10);
                }
                other => return other,
            }
        }
    }

    fn spawn(&mut self, join: Option<&str>) -> Result<(), StartError> {
        self.starts += 1;
        let stderr = File::create(self.stderr_path())
            .map_err(|e| StartError::NotReady(format!("stderr file: {e}")))?;
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", netns])
                    .arg(sqlraft_core_bin());
                command
            }
            None => Command::new(sqlraft_core_bin()),
        };
        command
            .args(["run", "--id", &self.id, "--root"])
            .arg(&self.root)
            .args(["--raft.node.listen", &self.raft])
            .args(["--raft.node.addr", &self.raft])
            .args(["--http", &self.http])
            .args(self.tls_flags()?)
            // Gone with the test even when it is killed and Drop never runs (the
            // signal follows the spawning thread: the test's own).
            .arg("--exit-with-parent")
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(join) = join {
            command.args(["--raft.join", join]);
        }
        let child = command
            .spawn()
            .map_err(|e| StartError::NotReady(format!("spawn sqlraft-core run: {e}")))?;
        self.child = Some(child);
        Ok(())
    }

    /// Mutual TLS, as an installed cluster runs: a CA for the cluster in `<root>/tls/`
    /// and a certificate for this service (kept across restarts). None when the test
    /// gave `--raft.insecure` or its own `--raft.tls.*` flags.
    fn tls_flags(&self) -> Result<Vec<String>, StartError> {
        if self
            .args
            .iter()
            .any(|a| a == "--raft.insecure" || a.starts_with("--raft.tls"))
        {
            return Ok(Vec::new());
        }
        let host = sqlraft::naming::host_of(&self.raft);
        let files =
            sqlraft_core::certs::ensure_service_files(&self.root.join("tls"), &self.id, host, 30)
                .map_err(|e| StartError::NotReady(format!("TLS files: {e}")))?;
        Ok(sqlraft_core::certs::run_flags(&files))
    }

    /// Polls `/readyz` until it answers 200 (within [`WAIT`]).
    pub fn wait_ready(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + WAIT;
        loop {
            let exited = self
                .child_mut()
                .try_wait()
                .map_err(|e| StartError::NotReady(format!("try_wait: {e}")))?;
            if let Some(status) = exited {
                self.child = None;
                return Err(StartError::Exited(status, self.stderr_text()));
            }
            let last = match http::get(&self.http, "/readyz", Duration::from_secs(2)) {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => r.text(),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(StartError::NotReady(last));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The exit status when the process has exited by itself since it was started
    /// (it is then no longer running); `None` while it runs or when it is not started.
    pub fn try_reap(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Whether the process is running (started and not yet stopped by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn child_mut(&mut self) -> &mut Child {
        let name = &self.name;
        self.child
            .as_mut()
            .unwrap_or_else(|| panic!("{name} is not running"))
    }

    /// The process id.
    pub fn pid(&self) -> Pid {
        let child = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"))
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL sent");
        child.wait().expect("reaped");
    }

    /// SIGTERM, and wait (up to [`WAIT`]) for the exit.
    pub fn sigterm(&mut self) -> ExitStatus {
        kill(self.pid(), Signal::SIGTERM).expect("SIGTERM sent");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {WAIT:?} of SIGTERM\n{}",
                self.name,
                self.log_tail(40)
            );
            std::thread::sleep(POLL);
        }
    }

    /// SIGSTOP: the process stays alive but does nothing (a partition that keeps its
    /// sockets open). The guard sends SIGCONT when dropped.
    pub fn pause(&self) -> Paused {
        let pid = self.pid();
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP sent");
        Paused {
            pid: Some(pid),
            name: self.name.clone(),
        }
    }

    /// `GET /status` as JSON; `None` when the node does not answer.
    pub fn status(&self) -> Option<Json> {
        match http::get(&self.http, "/status", Duration::from_secs(5)) {
            Ok(r) if r.status == 200 => Some(r.json()),
            _ => None,
        }
    }

    /// `<root>/core/<id>/`.
    pub fn dir(&self) -> PathBuf {
        self.root.join("core").join(&self.id)
    }

    /// The service log, `<root>/core/<id>/log/core`.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("log").join("core")
    }

    fn stderr_path(&self) -> PathBuf {
        self.root.join(format!("{}.stderr", self.name))
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// The last `lines` lines of the service log and the process's stderr.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "--- {} ({}) {}, started {} time(s), last {lines} lines:\n{tail}\n--- stderr: {}",
            self.name,
            self.id,
            self.log_path().display(),
            self.starts,
            self.stderr_text()
        )
    }
}

impl Drop for CoreProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A SIGSTOPped process; SIGCONT when dropped or [`Paused::resume`]d.
#[must_use = "dropping the guard resumes the process"]
pub struct Paused {
    pid: Option<Pid>,
    name: String,
}

impl Paused {
    /// SIGCONT now.
    pub fn resume(mut self) {
        self.cont();
    }

    fn cont(&mut self) {
        if let Some(pid) = self.pid.take()
            && let Err(e) = kill(pid, Signal::SIGCONT)
        {
            eprintln!("SIGCONT to {} ({pid}) failed: {e}", self.name);
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.cont();
    }
}

/// A port of `ip` that was free a moment ago (bound on port 0, then released), never
/// the same twice in this process ([`crate::api::free_port_on`]).
pub fn free_port(ip: &str) -> u16 {
    crate::api::free_port_on(ip)
}
