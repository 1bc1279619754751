//! The nodes of one run: `sqlraft-core run` processes, each in its own network
//! namespace (or on its own loopback address when namespaces are not available), formed
//! as an operator forms a cluster: the first service bootstraps, each other is created
//! over REST and joins. Nodes live in slots (an address each); a slot is empty before a
//! service joins there and after its service was removed, and a removed service's slot
//! can take a new one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use sqlraft_harness::http::{self, HttpError};
use sqlraft_harness::processes::FIRST_SERVICE_ID;
use sqlraft_harness::processes::cluster::loopback_host;
use sqlraft_harness::processes::process::{CoreProcess, StartError, free_port};

use crate::net::Topology;

/// Ports every node uses inside its own namespace.
const HTTP_PORT: u16 = 4001;
const RAFT_PORT: u16 = 4002;

/// How long forming, joining, removing and converging may take.
pub const WAIT: Duration = Duration::from_secs(60);

/// Why the cluster could not be formed, changed or healed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{node} did not start: {detail}")]
    Start { node: String, detail: String },
    #[error("{0}")]
    Membership(String),
    #[error("the cluster did not converge within {0:?}: {1}")]
    Diverged(Duration, String),
}

/// A place for one node: its addresses, namespace, and the service there, if any.
pub struct Slot {
    pub raft: String,
    pub http: String,
    netns: Option<String>,
    pub process: Option<CoreProcess>,
    /// Services that have lived here (for names).
    generation: usize,
}

/// The HTTP addresses of the current members, which clients pick from.
pub type Targets = Arc<RwLock<Vec<String>>>;

/// How nodes are set up for the faults they will meet.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Each service's directory is a tmpfs of this many MiB (for the disk fault).
    pub tmpfs_mib: Option<u64>,
    /// Each service runs with this libfaketime library preloaded, its wall clock
    /// offset by what its slot's clock file says (for the clock fault).
    pub fake_clock: Option<PathBuf>,
}

/// Where Debian's `libfaketime` package puts the library for threaded programs.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// The slots of a run.
pub struct Nodes {
    pub slots: Vec<Slot>,
    root: PathBuf,
    targets: Targets,
    options: NodeOptions,
    /// The tmpfs mounted, unmounted when the nodes are dropped.
    mounts: Vec<PathBuf>,
    /// Processes started with libfaketime, whose shared-memory files it leaves in
    /// `/dev/shm` when they are killed.
    faked: Vec<i32>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            drop(slot.process.take());
        }
        for mount in &self.mounts {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(mount)
                .status();
        }
        for pid in &self.faked {
            let _ = std::fs::remove_file(format!("/dev/shm/faketime_shm_{pid}"));
            let _ = std::fs::remove_file(format!("/dev/shm/sem.faketime_sem_{pid}"));
        }
    }
}

impl Nodes {
    /// `slots` slots under `root` (in `topology`'s namespaces when given), and `count`
    /// services started in the first ones.
    pub fn start(
        root: &Path,
        slots: usize,
        count: usize,
        topology: Option<&Topology>,
        options: NodeOptions,
    ) -> Result<Nodes, ClusterError> {
        let slots = (0..slots)
            .map(|i| {
                let (host, netns) = match topology {
                    Some(_) => (Topology::address(i), topology.map(|t| t.node(i))),
                    None => (loopback_host(i), None),
                };
                let (raft, web) = match netns {
                    Some(_) => (format!("{host}:{RAFT_PORT}"), format!("{host}:{HTTP_PORT}")),
                    None => (
                        format!("{host}:{}", free_port(&host)),
                        format!("{host}:{}", free_port(&host)),
                    ),
                };
                Slot {
                    raft,
                    http: web,
                    netns,
                    process: None,
                    generation: 0,
                }
            })
            .collect();
        let mut nodes = Nodes {
            slots,
            root: root.to_path_buf(),
            targets: Arc::new(RwLock::new(Vec::new())),
            options,
            mounts: Vec::new(),
            faked: Vec::new(),
        };
        for i in 0..count {
            nodes.join(i, if i == 0 { None } else { Some(0) })?;
        }
        Ok(nodes)
    }

    /// The addresses clients send to; kept current as services join and leave.
    pub fn targets(&self) -> Targets {
        Arc::clone(&self.targets)
    }

    fn update_targets(&self) {
        let members = self
            .members()
            .iter()
            .map(|&i| self.slots[i].http.clone())
            .collect();
        *self.targets.write().unwrap_or_else(|e| e.into_inner()) = members;
    }

    /// Slots with a service (running or not).
    pub fn members(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].process.is_some())
            .collect()
    }

    /// Notices services that exited by themselves: (slot, service name, how).
    pub fn reap(&mut self) -> Vec<(usize, String, String)> {
        let mut exits = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(process) = slot.process.as_mut()
                && let Some(status) = process.try_reap()
            {
                exits.push((i, process.name.clone(), status.to_string()));
            }
        }
        exits
    }

    /// Copies every service's directory (its log and database) to `to`, for the
    /// evidence of a failed run: a tmpfs goes when the nodes do.
    pub fn preserve(&self, to: &Path) {
        if self.mounts.is_empty() {
            return;
        }
        let _ = std::fs::create_dir_all(to);
        for mount in &self.mounts {
            let _ = std::process::Command::new("cp")
                .arg("-a")
                .arg(mount)
                .arg(to)
                .status();
        }
    }

    /// Slots with a running service.
    pub fn running(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| {
                self.slots[i]
                    .process
                    .as_ref()
                    .is_some_and(CoreProcess::is_running)
            })
            .collect()
    }

    /// Empty slots.
    pub fn free(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].process.is_none())
            .collect()
    }

    /// The service in slot `i`; `None` for an empty slot.
    pub fn process(&mut self, i: usize) -> Option<&mut CoreProcess> {
        self.slots[i].process.as_mut()
    }

    /// The slot of the node that says it leads, if one does.
    pub fn leader(&self) -> Option<usize> {
        self.running().into_iter().find(|&i| {
            self.slots[i]
                .process
                .as_ref()
                .and_then(CoreProcess::status)
                .is_some_and(|s| s["role"] == "leader")
        })
    }

    /// A new service in empty slot `i`: the first service when `via` is `None`,
    /// otherwise created through the member in slot `via` and joined to it.
    pub fn join(&mut self, i: usize, via: Option<usize>) -> Result<(), ClusterError> {
        let slot = &self.slots[i];
        let (id, join) = match via {
            None => (FIRST_SERVICE_ID.to_string(), None),
            Some(via) => {
                let member = &self.slots[via];
                (
                    create_service(&member.http, &slot.raft)?,
                    Some(member.raft.clone()),
                )
            }
        };
        let dir = self.root.join("core").join(&id);
        if let Some(mib) = self.options.tmpfs_mib {
            mount_tmpfs(&dir, mib)?;
            self.mounts.push(dir);
        }
        let clock = self.clock_path(i);
        let slot = &mut self.slots[i];
        slot.generation += 1;
        let name = format!("node-{i}.{}", slot.generation);
        let mut process = CoreProcess::at(
            &self.root,
            &name,
            &id,
            &slot.raft,
            &slot.http,
            slot.netns.as_deref(),
        );
        // Snapshots every few hundred entries: every run takes them, compacts the log
        // behind them and sends them to nodes that come back after a fault.
        process.add_args(&[
            "--raft.snapshot.entries",
            SNAPSHOT_ENTRIES,
            "--raft.snapshot.trailing",
            SNAPSHOT_TRAILING,
        ]);
        if let Some(lib) = &self.options.fake_clock {
            std::fs::write(&clock, "+0").map_err(|e| io_error(&clock, &e))?;
            process.set_env("LD_PRELOAD", &lib.to_string_lossy());
            process.set_env("FAKETIME_TIMESTAMP_FILE", &clock.to_string_lossy());
            process.set_env("FAKETIME_CACHE_DURATION", "1");
            process.set_env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let started = process.try_start(join.as_deref());
        if self.options.fake_clock.is_some() && process.is_running() {
            self.faked.push(process.pid().as_raw());
        }
        // Kept even when it did not start: its log says why.
        slot.process = Some(process);
        self.update_targets();
        started.map_err(|e| self.start_error(i, e))
    }

    /// Removes the service in slot `i` through the member in slot `via`, and waits
    /// for it to stop by itself (as a removed service must).
    pub fn remove(&mut self, i: usize, via: usize) -> Result<(), ClusterError> {
        let id = match &self.slots[i].process {
            Some(p) => p.id.clone(),
            None => return Err(ClusterError::Membership(format!("slot {i} is empty"))),
        };
        let path = format!("/api/v1/services/{id}");
        let deadline = Instant::now() + WAIT;
        loop {
            match http::request(&self.slots[via].http, "DELETE", &path, None, WAIT) {
                Ok(r) if r.status == 200 => break,
                // Not applied: try again (an election, a leader handing over).
                Ok(r) if r.status == 503 => {}
                Err(HttpError::NotSent(_)) => {}
                Ok(r) => {
                    return Err(ClusterError::Membership(format!(
                        "DELETE {path} via slot {via}: {} {}",
                        r.status,
                        r.text()
                    )));
                }
                // Unknown: asking again says whether it was removed (409 once it is).
                Err(HttpError::Unknown(e)) => {
                    if self.removed(via, &id) {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(ClusterError::Membership(format!("DELETE {path}: {e}")));
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Membership(format!(
                    "DELETE {path}: not applied within {WAIT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let process = self.slots[i]
            .process
            .as_mut()
            .ok_or_else(|| ClusterError::Membership("gone".into()))?;
        let stopped = process.wait_exit(WAIT);
        let log = process.log_tail(20);
        // The slot is free again either way; a service that did not stop is killed.
        self.slots[i].process = None;
        self.update_targets();
        match stopped {
            Ok(_) => Ok(()),
            Err(e) => Err(ClusterError::Membership(format!(
                "removed service {id} did not stop: {e}\n{log}"
            ))),
        }
    }

    fn removed(&self, via: usize, id: &str) -> bool {
        services(&self.slots[via].http)
            .iter()
            .any(|s| s["id"] == id && s["state"] == "removed")
    }

    fn clock_path(&self, i: usize) -> PathBuf {
        self.root.join(format!("clock-slot-{i}"))
    }

    /// Sets slot `i`'s wall clock offset (`+2h`, `-2h`, `+0`); its file.
    pub fn set_clock(&self, i: usize, offset: &str) -> Result<PathBuf, ClusterError> {
        let file = self.clock_path(i);
        if self.options.fake_clock.is_none() {
            if offset == "+0" {
                return Ok(file);
            }
            return Err(ClusterError::Membership(format!(
                "the clock fault needs {LIBFAKETIME} (Debian: libfaketime)"
            )));
        }
        std::fs::write(&file, offset).map_err(|e| io_error(&file, &e))?;
        Ok(file)
    }

    /// Fills slot `i`'s file system with a ballast file; the file.
    pub fn fill_disk(&self, i: usize) -> Result<PathBuf, ClusterError> {
        use std::io::Write as _;
        let Some(process) = &self.slots[i].process else {
            return Err(ClusterError::Membership(format!("slot {i} is empty")));
        };
        if self.options.tmpfs_mib.is_none() {
            return Err(ClusterError::Membership(
                "the disk fault needs a tmpfs per service".into(),
            ));
        }
        let ballast = process.dir().join("ballast");
        let mut file = std::fs::File::create(&ballast).map_err(|e| io_error(&ballast, &e))?;
        let chunk = vec![0u8; 1 << 20];
        // Until the file system is full (its size bounds the loop).
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        Ok(ballast)
    }

    /// Restarts the stopped service in slot `i`.
    pub fn restart(&mut self, i: usize) -> Result<(), ClusterError> {
        let Some(process) = self.slots[i].process.as_mut() else {
            return Ok(());
        };
        let restarted = process.try_restart();
        if self.options.fake_clock.is_some() && process.is_running() {
            self.faked.push(process.pid().as_raw());
        }
        restarted.map_err(|e| self.start_error(i, e))
    }

    fn start_error(&self, i: usize, e: StartError) -> ClusterError {
        let (node, log) = match &self.slots[i].process {
            Some(p) => (p.name.clone(), p.log_tail(30)),
            None => (format!("slot {i}"), String::new()),
        };
        ClusterError::Start {
            node,
            detail: format!("{e:?}\n{log}"),
        }
    }

    /// Waits until every member reports the same applied index and content hash;
    /// returns them.
    pub fn converged(&self, within: Duration) -> Result<(u64, String), ClusterError> {
        let deadline = Instant::now() + within;
        let members = self.members();
        loop {
            let hashes: Vec<Option<(u64, String)>> =
                members.iter().map(|&i| hash(&self.slots[i].http)).collect();
            if let Some(Some(first)) = hashes.first()
                && hashes.iter().all(|h| h.as_ref() == Some(first))
            {
                return Ok(first.clone());
            }
            if Instant::now() > deadline {
                let seen = members
                    .iter()
                    .zip(&hashes)
                    .map(|(i, h)| format!("slot {i}: {h:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ClusterError::Diverged(within, seen));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every service's log tail, for a report.
    pub fn logs(&self, lines: usize) -> String {
        self.slots
            .iter()
            .filter_map(|s| s.process.as_ref().map(|p| p.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Creates a service with raft address `raft` through `POST /api/v1/services` on the
/// member at `http`; its id.
fn create_service(http: &str, raft: &str) -> Result<String, ClusterError> {
    let host = raft.rsplit_once(':').map_or(raft, |(host, _)| host);
    let body = json!({"fqdn": host, "raft_addr": raft});
    let deadline = Instant::now() + WAIT;
    loop {
        match http::post(http, "/api/v1/services", &body, WAIT) {
            Ok(r) if r.status == 201 => {
                let created: Json = serde_json::from_slice(&r.body).unwrap_or_default();
                return created["id"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ClusterError::Membership(format!("no id in {created}")));
            }
            Ok(r) if r.status == 503 || r.status == 500 => {}
            // An earlier attempt whose answer was lost may have created it.
            Ok(r) if r.status == 409 => {
                if let Some(id) = service_with(http, raft, "created") {
                    return Ok(id);
                }
                return Err(ClusterError::Membership(format!(
                    "POST /api/v1/services {body}: 409 {}",
                    r.text()
                )));
            }
            Err(_) => {}
            Ok(r) => {
                return Err(ClusterError::Membership(format!(
                    "POST /api/v1/services {body}: {} {}",
                    r.status,
                    r.text()
                )));
            }
        }
        if Instant::now() > deadline {
            return Err(ClusterError::Membership(format!(
                "service {raft} not created within {WAIT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `GET /api/v1/services`: the registered services (none when it does not answer).
fn services(http: &str) -> Vec<Json> {
    http::get(http, "/api/v1/services", Duration::from_secs(5))
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| serde_json::from_slice::<Json>(&r.body).ok())
        .and_then(|list| list["services"].as_array().cloned())
        .unwrap_or_default()
}

/// The id of the service with raft address `raft` in `state`.
fn service_with(http: &str, raft: &str, state: &str) -> Option<String> {
    services(http)
        .iter()
        .find(|s| s["raft_addr"] == raft && s["state"] == state)
        .and_then(|s| s["id"].as_str().map(str::to_string))
}

fn io_error(path: &Path, e: &std::io::Error) -> ClusterError {
    ClusterError::Membership(format!("{}: {e}", path.display()))
}

/// Mounts a tmpfs of `mib` MiB at `dir` (made if missing).
fn mount_tmpfs(dir: &Path, mib: u64) -> Result<(), ClusterError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, &e))?;
    let out = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={mib}m,mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .output()
        .map_err(|e| io_error(dir, &e))?;
    if !out.status.success() {
        return Err(ClusterError::Membership(format!(
            "mount tmpfs at {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Entries between the services' automatic snapshots in a campaign.
pub const SNAPSHOT_ENTRIES: &str = "400";
/// Entries they keep in the log behind a snapshot.
pub const SNAPSHOT_TRAILING: &str = "100";

impl Nodes {
    /// `POST /api/v1/system/snapshot?trailing=0` on the member in slot `i`: a snapshot
    /// and the whole log behind it compacted. `Err` says why it did not happen.
    pub fn compact(&self, i: usize) -> Result<u64, String> {
        let slot = &self.slots[i];
        let r = http::post(
            &slot.http,
            "/api/v1/system/snapshot?trailing=0",
            &json!({}),
            Duration::from_secs(30),
        )
        .map_err(|e| format!("{e:?}"))?;
        if r.status != 200 {
            return Err(format!("{}: {}", r.status, r.text()));
        }
        serde_json::from_slice::<Json>(&r.body)
            .ok()
            .and_then(|j| j["index"].as_u64())
            .ok_or_else(|| format!("no index in {}", r.text()))
    }
}

/// `GET /db/hash`: (applied index, sha256).
fn hash(addr: &str) -> Option<(u64, String)> {
    let r = http::get(addr, "/db/hash", Duration::from_secs(5)).ok()?;
    if r.status != 200 {
        return None;
    }
    let json: Json = serde_json::from_slice(&r.body).ok()?;
    Some((
        json["applied_index"].as_u64()?,
        json["sha256"].as_str()?.to_string(),
    ))
}
