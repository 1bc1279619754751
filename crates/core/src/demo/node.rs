//! One core service of the demo: a child `sqlraft-core run` process, the command that
//! starts it again, and what became of it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::client;
use crate::error::CoreError;

/// How long one service may take to become ready.
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub(super) const POLL: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a service is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum State {
    Running,
    /// It stopped (killed, crashed, stopped on request); its data is kept and the
    /// same command starts it again.
    Exited(String),
    /// The cluster removed it; its id can never join again.
    Removed,
}

/// One service the demo started.
pub(super) struct DemoNode {
    /// 1-based; the service runs on host 127.0.0.<number>.
    pub number: usize,
    pub id: String,
    pub raft: String,
    pub http: String,
    pub state: State,
    stderr_path: PathBuf,
    command: Vec<String>,
    exe: PathBuf,
    child: Option<Child>,
}

impl DemoNode {
    /// Starts service `id` as node `number`; `join` is a member's raft address, for
    /// every service but the first; `transport_flags` name its certificate files (or
    /// ask for plaintext).
    pub fn spawn(
        exe: &Path,
        root: &Path,
        number: usize,
        id: String,
        (raft, http): (String, String),
        join: Option<&str>,
        transport_flags: Vec<String>,
    ) -> Result<Self, CoreError> {
        let mut command = vec![
            "run".to_string(),
            "--exit-with-parent".into(),
            "--id".into(),
            id.clone(),
            "--root".into(),
            root.display().to_string(),
            "--raft.node.listen".into(),
            raft.clone(),
            "--raft.node.addr".into(),
            raft.clone(),
            "--http".into(),
            http.clone(),
        ];
        command.extend(transport_flags);
        if let Some(join) = join {
            command.extend(["--raft.join".to_string(), join.to_string()]);
        }
        let mut node = DemoNode {
            number,
            id,
            raft,
            http,
            state: State::Running,
            stderr_path: root.join(format!("node-{number}.stderr")),
            command,
            exe: exe.to_path_buf(),
            child: None,
        };
        node.start()?;
        Ok(node)
    }

    /// (Re)starts the child with the command it was first started with; on a restart
    /// the service finds its data and ignores `--raft.join`.
    pub fn start(&mut self) -> Result<(), CoreError> {
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .map_err(|e| {
                CoreError::Io(format!("cannot open {}: {e}", self.stderr_path.display()))
            })?;
        let child = Command::new(&self.exe)
            .args(&self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| CoreError::Io(format!("cannot start {}: {e}", self.exe.display())))?;
        self.child = Some(child);
        self.state = State::Running;
        Ok(())
    }

    /// The child's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The command line that starts this service again by hand (without the demo's
    /// own `--exit-with-parent`: a person's shell is not the demo).
    pub fn command_line(&self) -> String {
        std::iter::once(self.exe.display().to_string())
            .chain(
                self.command
                    .iter()
                    .filter(|a| *a != "--exit-with-parent")
                    .cloned(),
            )
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Notices that the child exited: takes it and records why. `None` while it runs
    /// (or if it was already noticed).
    pub fn reap(&mut self) -> Option<&State> {
        let exit = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.state = if exit.success() && self.says_removed() {
            State::Removed
        } else {
            State::Exited(describe(exit))
        };
        Some(&self.state)
    }

    /// The service prints this on its way out when the cluster removed it.
    fn says_removed(&self) -> bool {
        std::fs::read_to_string(&self.stderr_path)
            .map(|said| said.contains("was removed from the cluster"))
            .unwrap_or(false)
    }

    /// The last lines the service wrote to stderr.
    pub fn last_words(&self) -> String {
        let said = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = said.lines().collect();
        lines[lines.len().saturating_sub(3)..].join("\n")
    }

    /// Sends `signal` to the running child.
    pub fn signal(&self, signal: Signal) -> bool {
        match self.pid().and_then(|p| i32::try_from(p).ok()) {
            Some(pid) => kill(Pid::from_raw(pid), signal).is_ok(),
            None => false,
        }
    }

    /// Polls `path` until `done` holds, the child exits, or time runs out.
    pub async fn wait_until(
        &mut self,
        what: &str,
        path: &str,
        done: impl Fn(u16, &[u8]) -> bool,
    ) -> Result<(), CoreError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.reap().is_some() {
                return Err(CoreError::Failed(format!(
                    "service {} exited ({}) before it was {what}: {}",
                    self.id,
                    self.state_text(),
                    self.last_words().trim()
                )));
            }
            if let Ok(response) = client::get(&self.http, path, PROBE_TIMEOUT).await
                && done(response.status, &response.body)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CoreError::Failed(format!(
                    "service {} at http://{} was not {what} within {} s",
                    self.id,
                    self.http,
                    READY_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What the service is doing, for the `status` command.
    pub fn state_text(&self) -> String {
        match &self.state {
            State::Running => format!("running, pid {}", self.pid().unwrap_or(0)),
            State::Exited(how) => format!("stopped: {how}"),
            State::Removed => "removed from the cluster".into(),
        }
    }
}

/// Every service started; stopped on drop too, so an error midway leaves nothing behind.
pub(super) struct Children(pub Vec<DemoNode>);

impl Children {
    /// SIGTERM to all, then wait; whoever is still running after the timeout is killed.
    pub async fn stop(&mut self) {
        for node in self.0.iter().rev() {
            node.signal(Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for node in self.0.iter_mut().rev() {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
            node.child = None;
        }
        self.0.clear();
    }

    pub fn running(&self) -> impl Iterator<Item = &DemoNode> {
        self.0.iter().filter(|n| n.state == State::Running)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for node in &mut self.0 {
            if let Some(child) = node.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn describe(exit: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (exit.code(), exit.signal()) {
        (_, Some(signal)) => match Signal::try_from(signal) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {signal}"),
        },
        (Some(code), None) => format!("exit status {code}"),
        (None, None) => exit.to_string(),
    }
}
