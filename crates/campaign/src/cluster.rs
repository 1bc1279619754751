//! The nodes of one run: `sqlraft-core run` processes, each in its own network
//! namespace (or on its own loopback address when namespaces are not available), formed
//! as an operator forms a cluster: the first service bootstraps, each other is created
//! over REST and joins.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use sqlraft_harness::http;
use sqlraft_harness::processes::FIRST_SERVICE_ID;
use sqlraft_harness::processes::cluster::{create_service, loopback_host};
use sqlraft_harness::processes::process::{CoreProcess, StartError, free_port};

use crate::net::Topology;

/// Ports every node uses inside its own namespace.
const HTTP_PORT: u16 = 4001;
const RAFT_PORT: u16 = 4002;

/// Why the cluster could not be formed or healed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{node} did not start: {detail}")]
    Start { node: String, detail: String },
    #[error("the cluster did not converge within {0:?}: {1}")]
    Diverged(Duration, String),
}

/// The processes of a run.
pub struct Nodes {
    pub procs: Vec<CoreProcess>,
    pub root: PathBuf,
}

impl Nodes {
    /// Starts `count` nodes under `root`, in `topology`'s namespaces when given.
    pub fn start(
        root: &Path,
        count: usize,
        topology: Option<&Topology>,
    ) -> Result<Nodes, ClusterError> {
        let mut nodes = Nodes {
            procs: Vec::new(),
            root: root.to_path_buf(),
        };
        for i in 0..count {
            let name = format!("node-{i}");
            let (host, netns) = match topology {
                Some(t) => (Topology::address(i), Some(t.node(i))),
                None => (loopback_host(i), None),
            };
            let (raft, web) = match netns {
                Some(_) => (format!("{host}:{RAFT_PORT}"), format!("{host}:{HTTP_PORT}")),
                None => (
                    format!("{host}:{}", free_port(&host)),
                    format!("{host}:{}", free_port(&host)),
                ),
            };
            let (id, join) = if i == 0 {
                (FIRST_SERVICE_ID.to_string(), None)
            } else {
                let first = &nodes.procs[0];
                (create_service(&first.http, &raft), Some(first.raft.clone()))
            };
            let mut process = CoreProcess::at(root, &name, &id, &raft, &web, netns.as_deref());
            process
                .try_start(join.as_deref())
                .map_err(|e| ClusterError::Start {
                    node: name.clone(),
                    detail: start_error(&process, e),
                })?;
            nodes.procs.push(process);
        }
        Ok(nodes)
    }

    /// The nodes' HTTP addresses.
    pub fn http_addrs(&self) -> Vec<String> {
        self.procs.iter().map(|p| p.http.clone()).collect()
    }

    /// The index of the node that says it leads, if one does.
    pub fn leader(&self) -> Option<usize> {
        self.procs
            .iter()
            .position(|p| p.is_running() && p.status().is_some_and(|s| s["role"] == "leader"))
    }

    /// Restarts node `i` (stopped).
    pub fn restart(&mut self, i: usize) -> Result<(), ClusterError> {
        let process = &mut self.procs[i];
        process.try_restart().map_err(|e| ClusterError::Start {
            node: process.name.clone(),
            detail: start_error(process, e),
        })
    }

    /// Waits until every node reports the same applied index and content hash;
    /// returns them.
    pub fn converged(&self, within: Duration) -> Result<(u64, String), ClusterError> {
        let deadline = Instant::now() + within;
        loop {
            let hashes: Vec<Option<(u64, String)>> =
                self.procs.iter().map(|p| hash(&p.http)).collect();
            let first = hashes[0].clone();
            if let Some(first) = first
                && hashes.iter().all(|h| h.as_ref() == Some(&first))
            {
                return Ok(first);
            }
            if Instant::now() > deadline {
                let seen = self
                    .procs
                    .iter()
                    .zip(&hashes)
                    .map(|(p, h)| format!("{}: {h:?}", p.name))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ClusterError::Diverged(within, seen));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
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

fn start_error(process: &CoreProcess, e: StartError) -> String {
    format!("{e:?}\n{}", process.log_tail(30))
}
