//! What the clients did: each operation with what was asked, what came back, and when
//! (monotonic nanoseconds since the run began), one JSON object per line in
//! `history.jsonl`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What an operation asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    /// Read register `key` at a read consistency level.
    Read { key: u32, level: String },
    /// Write a unique value to register `key`.
    Write { key: u32, value: i64 },
    /// Set register `key` to `to` if it holds `from`.
    Cas { key: u32, from: i64, to: i64 },
    /// Move `amount` from one account to another, in one transaction.
    Transfer { from: u32, to: u32, amount: i64 },
    /// Read every account's balance.
    Balances { level: String },
    /// Append a unique element to list `key`.
    Append { key: u32, element: i64 },
    /// Read list `key`.
    List { key: u32, level: String },
    /// Insert a row holding SQLite's `'now'` (milliseconds since the epoch), which
    /// is the leader's clock when it proposed the write.
    Stamp,
    /// Read every stamp in the order written.
    Stamps { level: String },
    /// A statement sent as a read that a read may not run (transaction control, PRAGMA,
    /// ATTACH): it must be refused and change nothing.
    Hostile { sql: String },
}

/// What came back, when something did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum Answer {
    /// Nothing to report (a write, or no answer).
    Nothing,
    /// A register's value; `None` when it was never written.
    Value { value: Option<i64> },
    /// Whether a compare-and-set swapped.
    Swapped { swapped: bool },
    /// Each account's balance, by account id.
    Balances { balances: Vec<i64> },
    /// A list's elements in order.
    List { elements: Vec<i64> },
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It took effect (a write) or returned its answer (a read).
    Ok,
    /// It certainly took no effect (refused before anything was applied).
    Fail,
    /// It may or may not have taken effect (no answer, or the server said it does not
    /// know).
    Unknown,
}

/// One operation, from call to return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history.
    pub id: usize,
    /// The client that ran it (`u32::MAX`: the final reads after healing).
    pub client: u32,
    /// The node it was sent to.
    pub node: String,
    pub call: Call,
    pub answer: Answer,
    pub outcome: Outcome,
    /// Nanoseconds since the run began, before the request was sent.
    pub start: u64,
    /// Nanoseconds since the run began, after the answer (or the error) came back.
    pub end: u64,
    /// What went wrong, for failed and unknown operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The shared, append-only record of a run's operations and its clock.
#[derive(Clone)]
pub struct Recorder {
    began: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder {
            began: Instant::now(),
            ops: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Nanoseconds since the run began (monotonic).
    pub fn now(&self) -> u64 {
        u64::try_from(self.began.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records a finished operation; its id is set here.
    pub fn record(&self, mut op: Op) {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        op.id = ops.len();
        ops.push(op);
    }

    /// Everything recorded so far.
    pub fn history(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}
