//! Shared by the install tests: free ports, a blocking HTTP probe, and a guard that stops
//! a supervised service (supervisor and service) by its pid files.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlraft_core::supervisor::{SupervisedPaths, process_alive, read_live_pid};

pub const BIN: &str = env!("CARGO_BIN_EXE_sqlraft-core");
pub const FIRST_ID: &str = "00000000-0000-0000-0000-000000000000";

/// A port nobody listens on right now, never the same twice in this test process.
pub fn free_port() -> u16 {
    sqlraft_harness::api::free_port()
}

/// `GET path` on `addr`: the status code and the body, or `None` when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_get_as(addr, path, None)
}

/// [`http_get`] with HTTP basic auth as `(user, password)`.
pub fn http_get_as(addr: &str, path: &str, user: Option<(&str, &str)>) -> Option<(u16, String)> {
    use base64::Engine as _;
    let mut stream =
        TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let auth = user.map_or_else(String::new, |(u, p)| {
        format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    });
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Waits until `GET /readyz` answers 200.
pub fn wait_ready(addr: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if http_get(addr, "/readyz").is_some_and(|(s, _)| s == 200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Waits until `check` holds.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// Stops the supervised service of a service directory when dropped: SIGTERM to the
/// supervisor (which stops the service), then SIGKILL to whatever is left.
pub struct SupervisedGuard {
    pub dir: PathBuf,
}

impl SupervisedGuard {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn paths(&self) -> SupervisedPaths {
        SupervisedPaths::new(&self.dir)
    }

    pub fn supervisor_pid(&self) -> Option<i32> {
        read_live_pid(&self.paths().supervisor_pid)
    }

    pub fn core_pid(&self) -> Option<i32> {
        read_live_pid(&self.paths().core_pid)
    }

    /// Stops both processes; true when both are gone.
    pub fn stop(&self) -> bool {
        let sup = self.supervisor_pid();
        let core = self.core_pid();
        if let Some(pid) = sup {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let gone = |p: Option<i32>| p.is_none_or(|p| !process_alive(p));
        if wait_for(Duration::from_secs(15), || gone(sup) && gone(core)) {
            return true;
        }
        for pid in [sup, core].into_iter().flatten() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        wait_for(Duration::from_secs(5), || gone(sup) && gone(core));
        false
    }
}

impl Drop for SupervisedGuard {
    fn drop(&mut self) {
        self.stop();
    }
}
