//! A cluster of `sqlraft-core run` processes in one temporary root, formed the way an
//! operator forms one: the first service bootstraps, the others join one after another.

use std::time::Instant;

use serde_json::{Value as Json, json};

use super::process::CoreProcess;
use super::{FIRST_SERVICE_ID, POLL, WAIT};
use crate::http::{self, HttpError};

/// Processes and their root. Dropping it kills every process (SIGCONT first), prints
/// the logs' tails when the test is failing, and removes the root.
pub struct Cluster {
    /// The nodes, in the order they were started.
    pub nodes: Vec<CoreProcess>,
    // After `nodes`: the processes are gone before their directories are removed.
    root: tempfile::TempDir,
}

impl Cluster {
    /// `size` (odd) nodes: `node-0` with the first service id bootstraps, each other
    /// joins `node-0` with a fresh UUID once the previous one is ready. Returns once
    /// every node sees `size` voters and the same leader.
    pub fn start(size: usize) -> Cluster {
        Cluster::start_with(size, |_| Vec::new())
    }

    /// Like [`Cluster::start`], each node run with the flags `args` gives for the
    /// cluster's root directory (e.g. `--auth <root>/auth.json`, written by `args`).
    /// Other nodes create services anonymously: with `--auth`, `*` needs `join`, and
    /// `status` for the readiness checks.
    pub fn start_with(size: usize, args: impl FnOnce(&std::path::Path) -> Vec<String>) -> Cluster {
        assert!(size % 2 == 1, "voter counts are odd");
        let root = tempfile::Builder::new()
            .prefix("sqlraft-tests-")
            .tempdir()
            .expect("temp dir");
        let args = args(root.path());
        let mut cluster = Cluster {
            nodes: Vec::new(),
            root,
        };
        let first = CoreProcess::start_new_with(
            cluster.root.path(),
            "node-0",
            &loopback_host(0),
            |_| FIRST_SERVICE_ID.to_string(),
            None,
            &args,
        );
        let (join, admin) = (first.raft.clone(), first.http.clone());
        cluster.nodes.push(first);
        for i in 1..size {
            let node = CoreProcess::start_new_with(
                cluster.root.path(),
                &format!("node-{i}"),
                &loopback_host(i),
                |raft| create_service(&admin, raft),
                Some(&join),
                &args,
            );
            cluster.nodes.push(node);
        }
        cluster.wait_voters(size);
        cluster
    }

    /// The indexes of the running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    /// Waits until every running node reports `voters` voters, outside a joint
    /// configuration (`voters_outgoing` empty; a binary without the field counts as
    /// outside), and the same leader.
    pub fn wait_voters(&self, voters: usize) {
        self.wait_until(
            &format!("{voters} voters and one leader on every node"),
            |c| {
                let statuses: Option<Vec<Json>> =
                    c.running().iter().map(|&i| c.nodes[i].status()).collect();
                let Some(statuses) = statuses else {
                    return false;
                };
                let leader = statuses[0]["leader_id"].as_str().unwrap_or_default();
                !leader.is_empty()
                    && statuses.iter().all(|s| {
                        settled_voters(s, voters) && s["leader_id"].as_str() == Some(leader)
                    })
            },
        );
    }

    /// The index of the leader all running nodes agree on (waits for one). `excluding`:
    /// a service id that must not be the answer (a leader that was just killed).
    pub fn leader(&self, excluding: Option<&str>) -> usize {
        let mut found = None;
        self.wait_until("a leader all running nodes agree on", |c| {
            let statuses: Option<Vec<Json>> =
                c.running().iter().map(|&i| c.nodes[i].status()).collect();
            let Some(statuses) = statuses else {
                return false;
            };
            let leader = statuses[0]["leader_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if leader.is_empty()
                || Some(leader.as_str()) == excluding
                || !statuses
                    .iter()
                    .all(|s| s["leader_id"].as_str() == Some(leader.as_str()))
            {
                return false;
            }
            found = c
                .nodes
                .iter()
                .position(|n| n.id == leader && n.is_running());
            found.is_some_and(|i| c.nodes[i].status().is_some_and(|s| s["role"] == "leader"))
        });
        found.expect("leader found")
    }

    /// Polls `done` every [`POLL`] for up to [`WAIT`]; panics naming `what` otherwise.
    pub fn wait_until(&self, what: &str, mut done: impl FnMut(&Cluster) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(POLL);
        }
    }

    /// A write through node `i`, retried while the answer says it did not run (503, or
    /// no connection); panics on any other outcome. Returns the answer (200).
    pub fn execute(&self, i: usize, statements: &Json) -> Json {
        let deadline = Instant::now() + WAIT;
        loop {
            match http::post(&self.nodes[i].http, "/db/execute", statements, WAIT) {
                Ok(r) if r.status == 200 => {
                    let body = r.json();
                    let errors: Vec<&Json> = body["results"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|r| r.get("error").is_some())
                        .collect();
                    assert!(errors.is_empty(), "{statements} failed: {body}");
                    return body;
                }
                Ok(r) if r.status == 503 => {}
                Err(HttpError::NotSent(_)) => {}
                Ok(r) => panic!(
                    "{statements} on {}: {} {}",
                    self.nodes[i].name,
                    r.status,
                    r.text()
                ),
                Err(e) => panic!("{statements} on {}: {e}", self.nodes[i].name),
            }
            assert!(
                Instant::now() < deadline,
                "{statements} on {}: not executed within {WAIT:?}",
                self.nodes[i].name
            );
            std::thread::sleep(POLL);
        }
    }

    /// Reads on node `i` at `params` (`level=…&min_index=…`); the raw answer.
    pub fn query(
        &self,
        i: usize,
        params: &str,
        statements: &Json,
    ) -> Result<http::Response, HttpError> {
        http::post(
            &self.nodes[i].http,
            &format!("/db/query?{params}"),
            statements,
            WAIT,
        )
    }

    /// Waits until every running node has applied the same index, at least `min_index`,
    /// and returns each node's `dump` at that index (read at `level=none`), checked to
    /// be taken while nothing more was applied.
    pub fn converged_dumps(&self, min_index: u64, dump: &Json) -> (u64, Vec<Json>) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(applied) = self.common_applied_index().filter(|&a| a >= min_index) {
                let dumps: Vec<Option<Json>> = self
                    .running()
                    .iter()
                    .map(|&i| {
                        match self.query(i, &format!("level=none&min_index={applied}"), dump) {
                            Ok(r) if r.status == 200 => Some(r.json()["results"].clone()),
                            _ => None,
                        }
                    })
                    .collect();
                if self.common_applied_index() == Some(applied)
                    && let Some(dumps) = dumps.into_iter().collect::<Option<Vec<Json>>>()
                {
                    for result in dumps
                        .iter()
                        .flat_map(|d| d.as_array().into_iter().flatten())
                    {
                        assert!(result.get("values").is_some(), "dump failed: {result}");
                    }
                    return (applied, dumps);
                }
            }
            assert!(
                Instant::now() < deadline,
                "nodes did not converge on one applied index >= {min_index}: {:?}",
                self.running()
                    .iter()
                    .map(|&i| self.nodes[i].status().map(|s| s["applied_index"].clone()))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(POLL);
        }
    }

    /// The applied index when all running nodes report the same one.
    fn common_applied_index(&self) -> Option<u64> {
        let indexes: Option<Vec<u64>> = self
            .running()
            .iter()
            .map(|&i| {
                self.nodes[i]
                    .status()
                    .and_then(|s| s["applied_index"].as_u64())
            })
            .collect();
        let indexes = indexes?;
        indexes.windows(2).all(|w| w[0] == w[1]).then(|| indexes[0])
    }

    /// The temporary root.
    pub fn root(&self) -> &std::path::Path {
        self.root.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!("{}", node.log_tail(60));
            }
        }
    }
}

/// True when a node's `/status` names `voters` voters outside a joint configuration
/// (`voters_outgoing` empty: until then its elections still need the voters before the
/// change). A binary from before the field cannot tell, and counts as settled.
pub fn settled_voters(status: &Json, voters: usize) -> bool {
    status["voters"].as_array().map(Vec::len) == Some(voters)
        && status["voters_outgoing"]
            .as_array()
            .is_none_or(Vec::is_empty)
}

/// The host of node `i`: `127.0.0.<i + 1>`. Every node is on the loopback interface,
/// each with an address of its own, because the services registry admits one service
/// per host name (a second service on 127.0.0.1 would be refused).
pub fn loopback_host(i: usize) -> String {
    assert!(i < 254, "at most 254 nodes on 127.0.0.0/24");
    format!("127.0.0.{}", i + 1)
}

/// Creates a service with raft address `raft` through `POST /api/v1/services` on the
/// member at `http` and returns its id (a fresh UUID chosen by the cluster). A binary
/// without the services registry (404) admits any id: a fresh UUID of our own then.
pub fn create_service(http: &str, raft: &str) -> String {
    let host = raft.rsplit_once(':').map_or(raft, |(host, _)| host);
    let body = json!({"fqdn": host, "raft_addr": raft});
    let deadline = Instant::now() + WAIT;
    loop {
        match http::post(http, "/api/v1/services", &body, WAIT) {
            Ok(r) if r.status == 201 => {
                let created = r.json();
                return created["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no id in {created}"))
                    .to_string();
            }
            Ok(r) if r.status == 404 => return uuid::Uuid::new_v4().to_string(),
            Ok(r) if r.status == 503 => {}
            Err(HttpError::NotSent(_)) => {}
            Ok(r) => panic!("POST /api/v1/services {body}: {} {}", r.status, r.text()),
            Err(e) => panic!("POST /api/v1/services {body}: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "service not created within {WAIT:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// `[[sql, params...]]`.
pub fn statement(sql: &str, params: &[Json]) -> Json {
    let mut item = vec![json!(sql)];
    item.extend_from_slice(params);
    json!([item])
}

/// The `raft_index` of a write's answer.
pub fn raft_index(answer: &Json) -> u64 {
    answer["raft_index"]
        .as_u64()
        .unwrap_or_else(|| panic!("no raft_index in {answer}"))
}
