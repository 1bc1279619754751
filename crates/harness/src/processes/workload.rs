//! A stream of writes with unique keys, each outcome classified the way a careful client
//! must classify it, and the check that the cluster kept exactly what it acknowledged.
//!
//! Outcomes of one `INSERT INTO t(k) VALUES (k)`:
//! - **acknowledged**: 200 with a `raft_index`: `k` must be on every node exactly once;
//! - **not executed**: 503, or the connection could not be opened: retried (same `k`,
//!   maybe through another node); a `k` that was never sent again after one must be
//!   absent;
//! - **unknown**: 500, or the connection broke after the request was sent: `k` may be
//!   present or not, but at most once. Never retried.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use serde_json::{Value as Json, json};

use super::cluster::{Cluster, raft_index, statement};
use super::{POLL, WAIT};
use crate::http::{self, HttpError};

/// The table the workload writes: no key constraint, so a write applied twice shows.
pub const CREATE_TABLE: &str = "CREATE TABLE t (k INTEGER NOT NULL)";

/// What the writers saw.
#[derive(Debug, Default, Clone)]
pub struct Outcomes {
    /// Acknowledged writes: key and raft index.
    pub acknowledged: Vec<(i64, u64)>,
    /// Writes whose outcome is unknown, with why.
    pub unknown: Vec<(i64, String)>,
    /// Keys given up after answers that said they did not run.
    pub not_executed: Vec<i64>,
    /// How many answers said "not executed" (503 or no connection); retried.
    pub retries: usize,
    /// Answers no correct node gives to these writes (SQL errors, other statuses).
    pub unexpected: Vec<String>,
}

/// Writer threads, each sending one write at a time with its own keys.
pub struct Workload {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Outcomes>>,
    writers: Vec<JoinHandle<()>>,
}

impl Workload {
    /// `writers` threads; writer `w` starts on `targets[w % len]` and moves to the next
    /// target whenever its current one does not take the write.
    pub fn start(targets: Vec<String>, writers: usize) -> Workload {
        assert!(!targets.is_empty());
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Outcomes::default()));
        let writers = (0..writers)
            .map(|w| {
                let (stop, outcomes, targets) = (stop.clone(), outcomes.clone(), targets.clone());
                std::thread::Builder::new()
                    .name(format!("writer-{w}"))
                    .spawn(move || write_loop(w, &targets, &stop, &outcomes))
                    .expect("writer thread")
            })
            .collect();
        Workload {
            stop,
            outcomes,
            writers,
        }
    }

    /// How many writes were acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        lock(&self.outcomes).acknowledged.len()
    }

    /// Waits (up to [`WAIT`]) until `more` writes beyond the current count are
    /// acknowledged.
    pub fn wait_for_more(&self, more: usize, during: &str) {
        let target = self.acknowledged() + more;
        let deadline = Instant::now() + WAIT;
        while self.acknowledged() < target {
            let o = lock(&self.outcomes).clone();
            assert!(
                Instant::now() < deadline,
                "{during}: only {} of {target} writes acknowledged within {WAIT:?} ({} unknown, {} retries, unexpected {:?})",
                o.acknowledged.len(),
                o.unknown.len(),
                o.retries,
                o.unexpected
            );
            std::thread::sleep(POLL);
        }
    }

    /// Stops the writers (each finishes its current write) and returns what they saw.
    pub fn stop(mut self) -> Outcomes {
        self.stop.store(true, Ordering::SeqCst);
        for writer in self.writers.drain(..) {
            writer.join().expect("writer thread panicked");
        }
        lock(&self.outcomes).clone()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn lock(outcomes: &Mutex<Outcomes>) -> MutexGuard<'_, Outcomes> {
    outcomes.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keys of writer `w`: `w * KEYS_PER_WRITER + n`.
const KEYS_PER_WRITER: i64 = 1_000_000_000;

fn write_loop(w: usize, targets: &[String], stop: &AtomicBool, outcomes: &Mutex<Outcomes>) {
    let mut target = w % targets.len();
    let first = i64::try_from(w).expect("writer number") * KEYS_PER_WRITER;
    for k in first.. {
        // Whether an answer said this k did not run: then it must be absent unless a
        // later attempt runs it.
        let mut refused = false;
        loop {
            if stop.load(Ordering::SeqCst) {
                if refused {
                    lock(outcomes).not_executed.push(k);
                }
                return;
            }
            let body = statement("INSERT INTO t(k) VALUES (?)", &[json!(k)]);
            let addr = &targets[target];
            match http::post(addr, "/db/execute", &body, WAIT) {
                Ok(r) if r.status == 200 => {
                    let answer = r.json();
                    let result = &answer["results"][0];
                    match answer["raft_index"].as_u64() {
                        Some(index)
                            if result.get("error").is_none() && result["rows_affected"] == 1 =>
                        {
                            lock(outcomes).acknowledged.push((k, index));
                        }
                        _ => lock(outcomes)
                            .unexpected
                            .push(format!("{addr}: k={k}: 200 {answer}")),
                    }
                    break;
                }
                Ok(r) if r.status == 503 => {}
                Err(HttpError::NotSent(_)) => {}
                Ok(r) if r.status == 500 => {
                    lock(outcomes)
                        .unknown
                        .push((k, format!("{addr}: 500 {}", r.text())));
                    target = (target + 1) % targets.len();
                    break;
                }
                Ok(r) => {
                    lock(outcomes).unexpected.push(format!(
                        "{addr}: k={k}: {} {}",
                        r.status,
                        r.text()
                    ));
                    break;
                }
                Err(e @ HttpError::Unknown(_)) => {
                    lock(outcomes).unknown.push((k, format!("{addr}: {e}")));
                    target = (target + 1) % targets.len();
                    break;
                }
            }
            // Not executed: retry, through the next node, after a short pause.
            refused = true;
            lock(outcomes).retries += 1;
            target = (target + 1) % targets.len();
            std::thread::sleep(POLL);
        }
    }
}

/// The dump compared across nodes: the schema and every row in storage order.
pub fn dump_statements() -> Json {
    json!([
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name",
        "SELECT rowid, k FROM t ORDER BY rowid"
    ])
}

/// What [`verify`] found, for the test's output.
#[derive(Debug)]
pub struct Verified {
    /// Acknowledged writes (all present once on every node).
    pub acknowledged: usize,
    /// Unknown-outcome writes that are present (once).
    pub unknown_present: usize,
    /// Unknown-outcome writes that are absent.
    pub unknown_absent: usize,
    /// Retried answers.
    pub retries: usize,
    /// The index every node had applied when dumped.
    pub applied_index: u64,
}

/// Checks, after the writers stopped and every node runs again: one more write through
/// node `via` (so nothing older is still uncommitted anywhere), then all nodes converge
/// on one applied index; their dumps are identical; every acknowledged key is present
/// exactly once; no key is present twice; no key that only got "not executed" answers
/// is present; no key that was never sent is present.
pub fn verify(cluster: &Cluster, via: usize, outcomes: &Outcomes) -> Verified {
    assert!(
        outcomes.unexpected.is_empty(),
        "answers no correct node gives: {:?}",
        outcomes.unexpected
    );
    let highest_ack = outcomes.acknowledged.iter().map(|a| a.1).max().unwrap_or(0);
    let barrier = raft_index(&cluster.execute(via, &json!(["DELETE FROM t WHERE k < 0"])));
    assert!(barrier > highest_ack);
    let (applied_index, dumps) = cluster.converged_dumps(barrier, &dump_statements());
    for (i, dump) in dumps.iter().enumerate().skip(1) {
        if dump != &dumps[0] {
            panic!(
                "{} and {} differ at applied index {applied_index}:
{}",
                cluster.nodes[cluster.running()[0]].name,
                cluster.nodes[cluster.running()[i]].name,
                describe_difference(&dumps[0], dump)
            );
        }
    }
    let rows = dumps[0][1]["values"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows in {}", dumps[0][1]))
        .clone();
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for row in &rows {
        let k = row[1].as_i64().unwrap_or_else(|| panic!("bad row {row}"));
        *counts.entry(k).or_default() += 1;
    }
    let twice: Vec<(&i64, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "keys present more than once (key, count): {twice:?}"
    );
    let lost: Vec<&(i64, u64)> = outcomes
        .acknowledged
        .iter()
        .filter(|(k, _)| !counts.contains_key(k))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost (key, raft_index): {lost:?}",
        lost.len()
    );
    let ran_anyway: Vec<&i64> = outcomes
        .not_executed
        .iter()
        .filter(|k| counts.contains_key(k))
        .collect();
    assert!(
        ran_anyway.is_empty(),
        "writes answered \"not executed\" (503) are present: {ran_anyway:?}"
    );
    let sent: BTreeSet<i64> = outcomes
        .acknowledged
        .iter()
        .map(|a| a.0)
        .chain(outcomes.unknown.iter().map(|u| u.0))
        .collect();
    let invented: Vec<&i64> = counts.keys().filter(|k| !sent.contains(k)).collect();
    assert!(
        invented.is_empty(),
        "keys nobody wrote (or only got 503 for): {invented:?}"
    );
    let unknown_present = outcomes
        .unknown
        .iter()
        .filter(|u| counts.contains_key(&u.0))
        .count();
    Verified {
        acknowledged: outcomes.acknowledged.len(),
        unknown_present,
        unknown_absent: outcomes.unknown.len() - unknown_present,
        retries: outcomes.retries,
        applied_index,
    }
}

fn describe_difference(a: &Json, b: &Json) -> String {
    if a[0] != b[0] {
        return format!("schemas differ:\n{}\n{}", a[0], b[0]);
    }
    let (ra, rb) = (
        a[1]["values"].as_array().cloned().unwrap_or_default(),
        b[1]["values"].as_array().cloned().unwrap_or_default(),
    );
    let at = ra
        .iter()
        .zip(&rb)
        .position(|(x, y)| x != y)
        .unwrap_or(ra.len().min(rb.len()));
    format!(
        "{} vs {} rows; first difference at row {at}: {:?} vs {:?}",
        ra.len(),
        rb.len(),
        ra.get(at),
        rb.get(at)
    )
}
