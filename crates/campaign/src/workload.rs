//! The clients: each runs random operations against random nodes (followers included)
//! over the HTTP API, and records each with its call and return times and its outcome.
//!
//! Outcomes follow the API's contract (docs/API.md): an answer with a result is `Ok`
//! (or `Fail` when the statement itself failed); 503 and the other 4xx mean nothing was
//! applied (`Fail`); 500, a timeout or a connection lost after sending mean the write
//! may have been applied (`Unknown`); a connection that could not be opened sent
//! nothing (`Fail`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value as Json, json};
use sqlraft_harness::http::{self, HttpError};

use crate::check::{BANK_ACCOUNTS, BANK_BALANCE};
use crate::cluster::Targets;
use crate::history::{Answer, Call, Op, Outcome, Recorder};

/// Register keys, list keys.
pub const REGISTER_KEYS: u32 = 5;
pub const LIST_KEYS: u32 = 3;

/// How long one request may take before its outcome is unknown: longer than an
/// election, shorter than a pause, so that requests to a paused node end unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// Statements a read may not run, sent as reads by the hostile client.
pub const HOSTILE: &[&str] = &[
    "BEGIN",
    "BEGIN IMMEDIATE",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT s",
    "RELEASE s",
    "PRAGMA query_only = 0",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA read_uncommitted = 1",
    "PRAGMA writable_schema = 1",
    "PRAGMA wal_checkpoint(TRUNCATE)",
    "ATTACH DATABASE ':memory:' AS x",
    "DETACH DATABASE x",
    "VACUUM",
    "SELECT 1; BEGIN",
    "INSERT INTO registers (k, v) VALUES (99, 1)",
    "DELETE FROM accounts",
];

/// The schema every run starts with.
pub fn schema() -> Json {
    let mut statements = vec![
        json!("CREATE TABLE registers (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)"),
        json!(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))"
        ),
        json!(
            "CREATE TABLE appends (seq INTEGER PRIMARY KEY, k INTEGER NOT NULL, e INTEGER NOT NULL)"
        ),
        json!("CREATE TABLE stamps (seq INTEGER PRIMARY KEY, t INTEGER NOT NULL)"),
    ];
    for id in 0..BANK_ACCOUNTS {
        statements.push(json!([
            "INSERT INTO accounts (id, balance) VALUES (?, ?)",
            id,
            BANK_BALANCE
        ]));
    }
    Json::Array(statements)
}

/// Running clients.
pub struct Clients {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Clients {
    /// Starts `count` clients against the nodes at `nodes` (HTTP addresses), plus one
    /// hostile client when `hostile`.
    pub fn start(
        count: u32,
        nodes: Targets,
        hostile: bool,
        register_reads: Option<&'static str>,
        seed: u64,
        recorder: &Recorder,
    ) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for id in 0..count {
            let mut client = Client::new(id, seed, Arc::clone(&nodes), recorder);
            client.register_reads = register_reads;
            let stop = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    client.random_op();
                }
            }));
        }
        if hostile {
            let mut client = Client::new(count, seed, Arc::clone(&nodes), recorder);
            let stop = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    client.hostile();
                    std::thread::sleep(Duration::from_millis(20));
                }
            }));
        }
        Clients { stop, threads }
    }

    /// Stops every client after its operation in flight and waits for them; how many
    /// had died (a client that panicked left its last operation unrecorded, so the
    /// history is not complete).
    pub fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(JoinHandle::join)
            .filter(Result::is_err)
            .count()
    }
}

/// One client: its random source, and what it last saw of each register (values to
/// compare-and-set from).
pub struct Client {
    id: u32,
    rng: fastrand::Rng,
    nodes: Targets,
    recorder: Recorder,
    next_unique: i64,
    last_seen: HashMap<u32, i64>,
    /// When the request in flight was sent.
    pending_start: Option<u64>,
    /// The level of every register read, instead of `linearizable` or `strong`.
    register_reads: Option<&'static str>,
}

impl Client {
    /// Client `id`, its random choices drawn from `seed`.
    pub fn new(id: u32, seed: u64, nodes: Targets, recorder: &Recorder) -> Client {
        Client {
            id,
            rng: fastrand::Rng::with_seed(
                seed ^ (u64::from(id) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            nodes,
            recorder: recorder.clone(),
            next_unique: 0,
            last_seen: HashMap::new(),
            pending_start: None,
            register_reads: None,
        }
    }

    /// A client for the final reads after healing.
    pub fn final_reader(nodes: Targets, recorder: &Recorder) -> Client {
        Client::new(u32::MAX, 0, nodes, recorder)
    }

    /// A random current member's address.
    fn pick(&mut self) -> Option<String> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        if nodes.is_empty() {
            return None;
        }
        Some(nodes[self.rng.usize(..nodes.len())].clone())
    }

    fn unique(&mut self) -> i64 {
        self.next_unique += 1;
        (i64::from(self.id) + 1) * 1_000_000_000 + self.next_unique
    }

    fn random_op(&mut self) {
        let Some(node) = self.pick() else {
            std::thread::sleep(Duration::from_millis(50));
            return;
        };
        let node = node.as_str();
        let outcome = match self.rng.u32(..100) {
            0..20 => {
                let key = self.rng.u32(..REGISTER_KEYS);
                let level = match self.register_reads {
                    Some(level) => level,
                    None => ["weak", "linearizable", "strong"][self.rng.usize(..3)],
                };
                self.read(node, key, level)
            }
            20..35 => {
                let key = self.rng.u32(..REGISTER_KEYS);
                let value = self.unique();
                self.write(node, key, value)
            }
            35..45 => {
                let key = self.rng.u32(..REGISTER_KEYS);
                match self.last_seen.get(&key) {
                    Some(&from) => {
                        let to = self.unique();
                        self.cas(node, key, from, to)
                    }
                    None => self.read(node, key, "linearizable"),
                }
            }
            45..60 => {
                let from = self.rng.u32(..BANK_ACCOUNTS as u32);
                let to =
                    (from + 1 + self.rng.u32(..BANK_ACCOUNTS as u32 - 1)) % BANK_ACCOUNTS as u32;
                let amount = self.rng.i64(1..=30);
                self.transfer(node, from, to, amount)
            }
            60..70 => {
                let level = ["none", "weak", "linearizable", "strong"][self.rng.usize(..4)];
                self.balances(node, level)
            }
            85..88 => self.stamp(node),
            88..90 => {
                let level = ["none", "linearizable"][self.rng.usize(..2)];
                self.stamps(node, level)
            }
            70..85 => {
                let key = self.rng.u32(..LIST_KEYS);
                let element = self.unique();
                self.append(node, key, element)
            }
            _ => {
                let key = self.rng.u32(..LIST_KEYS);
                let level = ["none", "weak", "linearizable", "linearizable"][self.rng.usize(..4)];
                self.list(node, key, level)
            }
        };
        if outcome == Outcome::Fail {
            // A node that is down refuses at once: do not spin on it.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reads register `key` at `level` on node index `node`.
    pub fn read(&mut self, node: &str, key: u32, level: &str) -> Outcome {
        let call = Call::Read {
            key,
            level: level.to_string(),
        };
        let body = json!([["SELECT v FROM registers WHERE k = ?", key]]);
        let (outcome, answer, error) =
            match self.send(node, &format!("/db/query?level={level}"), &body, true) {
                Ok(result) => match rows(&result) {
                    Ok(rows) => {
                        let value = rows
                            .first()
                            .and_then(|row| row.first())
                            .and_then(Json::as_i64);
                        if let Some(value) = value {
                            self.last_seen.insert(key, value);
                        }
                        (Outcome::Ok, Answer::Value { value }, None)
                    }
                    Err(e) => (Outcome::Fail, Answer::Nothing, Some(e)),
                },
                Err((outcome, e)) => (outcome, Answer::Nothing, Some(e)),
            };
        self.record(node, call, answer, outcome, error)
    }

    fn write(&mut self, node: &str, key: u32, value: i64) -> Outcome {
        let body = json!([[
            "INSERT INTO registers (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            key,
            value
        ]]);
        let call = Call::Write { key, value };
        self.execute(node, "/db/execute", &body, call, |_| Some(Answer::Nothing))
    }

    fn cas(&mut self, node: &str, key: u32, from: i64, to: i64) -> Outcome {
        let body = json!([[
            "UPDATE registers SET v = ? WHERE k = ? AND v = ?",
            to,
            key,
            from
        ]]);
        let call = Call::Cas { key, from, to };
        let outcome = self.execute(node, "/db/execute", &body, call, |results| {
            let changed = results.first()?.get("rows_affected")?.as_i64()?;
            Some(Answer::Swapped {
                swapped: changed == 1,
            })
        });
        self.last_seen.remove(&key);
        outcome
    }

    fn transfer(&mut self, node: &str, from: u32, to: u32, amount: i64) -> Outcome {
        let body = json!([
            [
                "UPDATE accounts SET balance = balance - ? WHERE id = ?",
                amount,
                from
            ],
            [
                "UPDATE accounts SET balance = balance + ? WHERE id = ?",
                amount,
                to
            ]
        ]);
        let call = Call::Transfer { from, to, amount };
        self.execute(node, "/db/execute?transaction", &body, call, |_| {
            Some(Answer::Nothing)
        })
    }

    /// Reads every balance at `level` on node index `node`.
    pub fn balances(&mut self, node: &str, level: &str) -> Outcome {
        let call = Call::Balances {
            level: level.to_string(),
        };
        let body = json!(["SELECT balance FROM accounts ORDER BY id"]);
        self.read_integers(node, level, &body, call, |balances| Answer::Balances {
            balances,
        })
    }

    fn append(&mut self, node: &str, key: u32, element: i64) -> Outcome {
        let body = json!([["INSERT INTO appends (k, e) VALUES (?, ?)", key, element]]);
        let call = Call::Append { key, element };
        self.execute(node, "/db/execute", &body, call, |_| Some(Answer::Nothing))
    }

    /// Reads list `key` at `level` on node index `node`.
    pub fn list(&mut self, node: &str, key: u32, level: &str) -> Outcome {
        let call = Call::List {
            key,
            level: level.to_string(),
        };
        let body = json!([["SELECT e FROM appends WHERE k = ? ORDER BY seq", key]]);
        self.read_integers(node, level, &body, call, |elements| Answer::List {
            elements,
        })
    }

    fn stamp(&mut self, node: &str) -> Outcome {
        let body = json!([
            "INSERT INTO stamps (t) VALUES (CAST(unixepoch('now', 'subsec') * 1000 AS INTEGER))"
        ]);
        self.execute(node, "/db/execute", &body, Call::Stamp, |_| {
            Some(Answer::Nothing)
        })
    }

    /// Reads every stamp, in the order written, at `level` on `node`.
    pub fn stamps(&mut self, node: &str, level: &str) -> Outcome {
        let call = Call::Stamps {
            level: level.to_string(),
        };
        let body = json!(["SELECT t FROM stamps ORDER BY seq"]);
        self.read_integers(node, level, &body, call, |elements| Answer::List {
            elements,
        })
    }

    /// Runs a read whose rows are one integer each, at `level` on `node`.
    fn read_integers(
        &mut self,
        node: &str,
        level: &str,
        body: &Json,
        call: Call,
        answer: impl FnOnce(Vec<i64>) -> Answer,
    ) -> Outcome {
        let (outcome, answer, error) =
            match self.send(node, &format!("/db/query?level={level}"), body, true) {
                Ok(result) => match rows(&result).and_then(|rows| integers(&rows)) {
                    Ok(values) => (Outcome::Ok, answer(values), None),
                    Err(e) => (Outcome::Fail, Answer::Nothing, Some(e)),
                },
                Err((outcome, e)) => (outcome, Answer::Nothing, Some(e)),
            };
        self.record(node, call, answer, outcome, error)
    }

    fn hostile(&mut self) {
        let Some(node) = self.pick() else {
            return;
        };
        let node = node.as_str();
        let sql = HOSTILE[self.rng.usize(..HOSTILE.len())];
        let call = Call::Hostile {
            sql: sql.to_string(),
        };
        let (outcome, error) = match self.send(node, "/db/query?level=none", &json!([sql]), true) {
            // Refused statements come back as a result with an error.
            Ok(result) => match rows(&result) {
                Ok(_) => (Outcome::Ok, Some("the node ran it".to_string())),
                Err(e) => (Outcome::Fail, Some(e)),
            },
            Err((outcome, e)) => (outcome, Some(e)),
        };
        self.record(node, call, Answer::Nothing, outcome, error);
    }

    /// Runs a write; `answer` reads the results of a write that was applied.
    fn execute(
        &mut self,
        node: &str,
        path: &str,
        body: &Json,
        call: Call,
        answer: impl FnOnce(&[Json]) -> Option<Answer>,
    ) -> Outcome {
        let (outcome, answer, error) = match self.send(node, path, body, false) {
            Ok(results) => match results.iter().find_map(|r| r["error"].as_str()) {
                // A statement that failed rolled back (and, in a transaction, so did
                // the others): nothing of it was applied.
                Some(e) => (Outcome::Fail, Answer::Nothing, Some(e.to_string())),
                None => match answer(&results) {
                    Some(answer) => (Outcome::Ok, answer, None),
                    // Applied, but what it did cannot be read from the answer.
                    None => (
                        Outcome::Unknown,
                        Answer::Nothing,
                        Some(format!("unexpected results: {results:?}")),
                    ),
                },
            },
            Err((outcome, e)) => (outcome, Answer::Nothing, Some(e)),
        };
        self.record(node, call, answer, outcome, error)
    }

    /// Sends one request; `Ok`: the `results` of a 200; `Err`: the outcome and why.
    /// A read without an answer is `Fail` (it had no effect).
    fn send(
        &mut self,
        node: &str,
        path: &str,
        body: &Json,
        read: bool,
    ) -> Result<Vec<Json>, (Outcome, String)> {
        self.pending_start = Some(self.recorder.now());
        let addr = node;
        let unknown = if read {
            Outcome::Fail
        } else {
            Outcome::Unknown
        };
        match http::post(addr, path, body, REQUEST_TIMEOUT) {
            Ok(r) if r.status == 200 => {
                let json: Json = serde_json::from_slice(&r.body)
                    .map_err(|e| (unknown, format!("200 not JSON: {e}")))?;
                match json["results"].as_array() {
                    Some(results) => Ok(results.clone()),
                    None => Err((unknown, format!("200 without results: {json}"))),
                }
            }
            // The contract: after a 503 or a 4xx nothing was applied; after anything
            // else (500, a proxy's 502 or 504, ...) it may have been.
            Ok(r) if r.status == 503 || (400..500).contains(&r.status) => {
                Err((Outcome::Fail, format!("{} {}", r.status, r.text())))
            }
            Ok(r) => Err((unknown, format!("{} {}", r.status, r.text()))),
            Err(HttpError::NotSent(e)) => Err((Outcome::Fail, format!("not sent: {e}"))),
            Err(HttpError::Unknown(e)) => Err((unknown, e)),
        }
    }

    fn record(
        &mut self,
        node: &str,
        call: Call,
        answer: Answer,
        outcome: Outcome,
        error: Option<String>,
    ) -> Outcome {
        let start = self
            .pending_start
            .take()
            .unwrap_or_else(|| self.recorder.now());
        self.recorder.record(Op {
            id: 0,
            client: self.id,
            node: node.to_string(),
            call,
            answer,
            outcome,
            start,
            end: self.recorder.now(),
            error,
        });
        outcome
    }
}

/// The rows of the first result, or its error.
fn rows(results: &[Json]) -> Result<Vec<Vec<Json>>, String> {
    let Some(first) = results.first() else {
        return Err("no result".to_string());
    };
    if let Some(error) = first["error"].as_str() {
        return Err(error.to_string());
    }
    let Some(values) = first.get("values") else {
        return Ok(Vec::new());
    };
    serde_json::from_value(values.clone()).map_err(|e| format!("values: {e}"))
}

/// The first column of each row, as integers.
fn integers(rows: &[Vec<Json>]) -> Result<Vec<i64>, String> {
    rows.iter()
        .map(|row| {
            row.first()
                .and_then(Json::as_i64)
                .ok_or_else(|| format!("not an integer: {row:?}"))
        })
        .collect()
}
