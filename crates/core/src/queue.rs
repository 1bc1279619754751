//! Queued writes (rqlite's `/db/execute?queue`): a request is answered as soon as it
//! is queued, with a sequence number; queued requests are written in large batches,
//! each batch one request to the log.
//!
//! What a client gives up: an answer that only says "accepted". The queue is in this
//! node's memory, so a crash or restart of this node loses what it holds, and a
//! statement's error is not returned (it is logged and counted). `&wait` answers
//! once the request's batch is applied, and `/status` shows the sequence number up
//! to which every queued request has been dealt with (`queue.applied_sequence_number`).
//!
//! A batch that fails for want of a leader or of time is sent again, every second
//! until the node stops (as rqlite), under the same request id, so it is applied at
//! most once (the log's idempotency window). A request the node would refuse on its
//! own (too many statements or bytes) is refused when it is queued; batches are cut
//! so that each stays within the node's limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use sqlraft::{ErrorKind, Node, Statement, WriteRequest};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

/// Requests the queue holds before new ones wait for room (rqlite's default).
pub const CAPACITY: usize = 1024;
/// Requests a batch takes at most (rqlite's default).
pub const BATCH_REQUESTS: usize = 128;
/// How long a batch waits for more requests after its first (rqlite's default).
pub const BATCH_TIMEOUT: Duration = Duration::from_millis(50);
/// How long a queued request waits for room in a full queue before it is refused.
pub const ROOM_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes the queued requests may hold together, counted as they are held in memory
/// (at least their size in the log).
pub const MAX_QUEUED_BYTES: usize = 64 << 20;
/// Room kept in a batch for its request id and framing.
const BATCH_OVERHEAD_BYTES: usize = 1024;
/// Pause before a batch is sent again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Why a queued request was not accepted or not written.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum QueueError {
    /// The queue stayed full.
    #[error(
        "the write queue is full ({CAPACITY} requests or {} MiB): try again later",
        MAX_QUEUED_BYTES >> 20
    )]
    Full,
    /// The request would be refused on its own.
    #[error("{0}")]
    Invalid(String),
    /// The node is shutting down.
    #[error("the write queue is closed: the node is stopping")]
    Closed,
    /// Writing the batch failed.
    #[error("the queued batch was not written: {0}")]
    Failed(String),
}

/// One queued request.
struct Queued {
    sequence_number: u64,
    statements: Vec<Statement>,
    /// Its size in the log.
    bytes: usize,
    /// Its share of [`MAX_QUEUED_BYTES`], given back once it is written.
    _room: OwnedSemaphorePermit,
    /// Told when the request's batch has been written (`&wait`).
    done: Option<oneshot::Sender<Result<u64, QueueError>>>,
}

/// Counters shown in `/status`.
#[derive(Debug, Default)]
pub(crate) struct QueueCounters {
    pub(crate) pending: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) failed_batches: AtomicU64,
    pub(crate) failed_statements: AtomicU64,
}

/// The queue of one node's HTTP API; its writer task starts with the first request.
pub(crate) struct WriteQueue {
    node: Node,
    sender: OnceLock<mpsc::Sender<Queued>>,
    /// Held while a number is taken and its request sent, so that requests enter the
    /// channel in the order of their numbers.
    numbering: Mutex<()>,
    next: AtomicU64,
    bytes: Arc<Semaphore>,
    /// Part of every batch's request id: numbers start from the clock, which may step
    /// back over a restart.
    nonce: u64,
    /// Every request with a sequence number up to this one has been written (or, for
    /// a batch given up, counted as failed).
    applied: watch::Sender<u64>,
    pub(crate) counters: Arc<QueueCounters>,
}

impl WriteQueue {
    pub(crate) fn new(node: Node) -> Self {
        // As rqlite: numbers start at the time in nanoseconds, so that they keep
        // growing over a restart.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        WriteQueue {
            node,
            sender: OnceLock::new(),
            numbering: Mutex::new(()),
            next: AtomicU64::new(start),
            bytes: Arc::new(Semaphore::new(MAX_QUEUED_BYTES)),
            nonce: u64::from_le_bytes(
                uuid::Uuid::new_v4().as_bytes()[..8]
                    .try_into()
                    .unwrap_or_default(),
            ),
            applied: watch::Sender::new(start),
            counters: Arc::default(),
        }
    }

    /// The highest sequence number given out.
    pub(crate) fn last_sequence_number(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// The sequence number up to which every request has been dealt with.
    pub(crate) fn applied_sequence_number(&self) -> u64 {
        *self.applied.borrow()
    }

    fn sender(&self) -> &mpsc::Sender<Queued> {
        self.sender.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(CAPACITY);
            tokio::spawn(write_batches(
                self.node.clone(),
                receiver,
                self.applied.clone(),
                Arc::clone(&self.counters),
                self.nonce,
            ));
            sender
        })
    }

    /// Queues `statements`; the answer is the request's sequence number and, when
    /// `wait` is set, a receiver told once its batch is written.
    pub(crate) async fn push(
        &self,
        statements: Vec<Statement>,
        wait: bool,
    ) -> Result<(u64, Option<oneshot::Receiver<Result<u64, QueueError>>>), QueueError> {
        // Refused now if the node would refuse it alone: a batch of such requests
        // could never be written.
        // Checked with the longest id a batch carries: the first request of a batch
        // is taken whole.
        let request = WriteRequest {
            statements,
            transaction: false,
            request_id: Some(batch_id(self.node.service_id(), u64::MAX, u64::MAX)),
            parts: Vec::new(),
        };
        let bytes = self
            .node
            .write_size(&request)
            .map_err(|e| QueueError::Invalid(e.to_string()))?;
        let statements = request.statements;
        let held = held_bytes(&statements).max(bytes);
        let sender = self.sender();
        let deadline = tokio::time::Instant::now() + ROOM_TIMEOUT;
        let room_for = u32::try_from(held.min(MAX_QUEUED_BYTES)).unwrap_or(u32::MAX);
        let room = tokio::time::timeout_at(
            deadline,
            Arc::clone(&self.bytes).acquire_many_owned(room_for),
        )
        .await
        .map_err(|_| QueueError::Full)?
        .map_err(|_| QueueError::Closed)?;
        let permit = tokio::time::timeout_at(deadline, sender.reserve())
            .await
            .map_err(|_| QueueError::Full)?
            .map_err(|_| QueueError::Closed)?;
        let (done, receiver) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.counters.pending.fetch_add(1, Ordering::Relaxed);
        let numbering = self
            .numbering
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let sequence_number = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        permit.send(Queued {
            sequence_number,
            statements,
            bytes,
            _room: room,
            done,
        });
        drop(numbering);
        Ok((sequence_number, receiver))
    }
}

/// The request id of the batch whose first request has number `first`.
fn batch_id(service_id: &str, nonce: u64, first: u64) -> String {
    format!("queue-{service_id}-{nonce:016x}-{first:020}")
}

/// What `statements` hold in memory, about: their text, and their values as reads
/// count them (a `Value` and what it owns).
fn held_bytes(statements: &[Statement]) -> usize {
    let shape = sqlraft::JsonShape::default();
    statements
        .iter()
        .map(|s| {
            let params: usize = match &s.params {
                sqlraft::Params::None => 0,
                sqlraft::Params::Positional(values) => {
                    values.iter().map(|v| v.json_cost(shape)).sum()
                }
                sqlraft::Params::Named(values) => values
                    .iter()
                    .map(|(name, v)| name.len() + v.json_cost(shape))
                    .sum(),
            };
            std::mem::size_of::<Statement>() + s.sql.len() + params
        })
        .sum()
}

/// The writer: takes a batch (up to [`BATCH_REQUESTS`] requests, or what came within
/// [`BATCH_TIMEOUT`] of its first request, and never more statements or bytes than the
/// node takes in one request), writes it, and goes on until every sender is gone.
async fn write_batches(
    node: Node,
    mut receiver: mpsc::Receiver<Queued>,
    applied: watch::Sender<u64>,
    counters: Arc<QueueCounters>,
    nonce: u64,
) {
    let limits = node.config().limits.clone();
    let max_bytes = limits
        .max_request_bytes
        .saturating_sub(BATCH_OVERHEAD_BYTES);
    // A request that did not fit the batch before: the first of the next.
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match receiver.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let (mut statements, mut bytes) = (first.statements.len(), first.bytes);
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_TIMEOUT;
        while batch.len() < BATCH_REQUESTS {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(next)) => {
                    if statements + next.statements.len() > limits.max_statements
                        || bytes + next.bytes > max_bytes
                    {
                        carried = Some(next);
                        break;
                    }
                    statements += next.statements.len();
                    bytes += next.bytes;
                    batch.push(next);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let last = batch.last().map_or(0, |q| q.sequence_number);
        let outcome = write_batch(&node, &mut batch, &counters, nonce).await;
        counters
            .pending
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        applied.send_replace(last);
        for queued in batch {
            if let Some(done) = queued.done {
                let _ = done.send(outcome.clone());
            }
        }
    }
}

/// Writes one batch as one request, again under the same request id while the
/// failure is not the request's own and the node runs; the raft index, or why it was
/// given up. An empty batch (`[]` with `&wait`: a checkpoint) writes nothing.
async fn write_batch(
    node: &Node,
    batch: &mut [Queued],
    counters: &QueueCounters,
    nonce: u64,
) -> Result<u64, QueueError> {
    let first = batch.first().map_or(0, |q| q.sequence_number);
    // Each queued request keeps a step budget of its own (`WriteRequest::parts`).
    let parts = batch
        .iter()
        .map(|q| u32::try_from(q.statements.len()).unwrap_or(u32::MAX))
        .filter(|&n| n > 0)
        .collect();
    let statements: Vec<Statement> = batch
        .iter_mut()
        .flat_map(|q| std::mem::take(&mut q.statements))
        .collect();
    if statements.is_empty() {
        return Ok(node.status().applied_index);
    }
    let request = WriteRequest {
        statements,
        transaction: false,
        request_id: Some(batch_id(node.service_id(), nonce, first)),
        parts,
    };
    counters.batches.fetch_add(1, Ordering::Relaxed);
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        match node.execute(request.clone()).await {
            Ok(outcome) => {
                let failed: Vec<&str> = outcome
                    .results
                    .iter()
                    .filter_map(|r| r.error.as_deref())
                    .collect();
                if !failed.is_empty() {
                    let count = failed_statements(&outcome.results, request.statements.len());
                    counters
                        .failed_statements
                        .fetch_add(count as u64, Ordering::Relaxed);
                    tracing::warn!(
                        first_sequence_number = first,
                        raft_index = outcome.raft_index,
                        errors = count,
                        first_error = failed[0],
                        "queued statements failed"
                    );
                }
                return Ok(outcome.raft_index);
            }
            Err(e) if e.kind() != ErrorKind::Invalid && node.is_running() => {
                tracing::info!(attempt, error = %e, "queued batch not written yet; trying again");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => {
                counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    first_sequence_number = first,
                    requests = batch.len(),
                    error = %e,
                    "queued batch given up"
                );
                return Err(QueueError::Failed(e.to_string()));
            }
        }
    }
}

/// How many of a batch's `statements` failed, by its results: every one when the batch
/// failed whole, which answers one error result for all of them (found by a review:
/// counted as one).
fn failed_statements(results: &[sqlraft::StatementResult], statements: usize) -> usize {
    let errors = results.iter().filter(|r| r.error.is_some()).count();
    if errors > 0 && results.len() < statements {
        statements
    } else {
        errors
    }
}

#[cfg(test)]
mod tests {
    use sqlraft::StatementResult;

    use super::failed_statements;

    #[test]
    fn a_batch_that_failed_whole_counts_every_statement() {
        let ok = StatementResult::default();
        let error = StatementResult {
            error: Some("failed".into()),
            ..Default::default()
        };
        assert_eq!(failed_statements(&[ok.clone(), ok.clone()], 2), 0);
        assert_eq!(
            failed_statements(&[ok.clone(), error.clone(), error.clone()], 3),
            2
        );
        let one = [error];
        assert_eq!(failed_statements(&one, 5), 5);
        assert_eq!(failed_statements(&one, 1), 1);
    }
}
