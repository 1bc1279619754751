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
//! most once (the log's idempotency window).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlraft::{ErrorKind, Node, Statement, WriteRequest};
use tokio::sync::{mpsc, oneshot, watch};

/// Requests the queue holds before new ones wait for room (rqlite's default).
pub const CAPACITY: usize = 1024;
/// Requests a batch takes at most (rqlite's default).
pub const BATCH_REQUESTS: usize = 128;
/// How long a batch waits for more requests after its first (rqlite's default).
pub const BATCH_TIMEOUT: Duration = Duration::from_millis(50);
/// How long a queued request waits for room in a full queue before it is refused.
pub const ROOM_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before a batch is sent again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Why a queued request was not accepted or not written.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum QueueError {
    /// The queue stayed full.
    #[error("the write queue is full ({CAPACITY} requests): try again later")]
    Full,
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
    next: AtomicU64,
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
            next: AtomicU64::new(start),
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
        let sender = self.sender();
        let permit = tokio::time::timeout(ROOM_TIMEOUT, sender.reserve())
            .await
            .map_err(|_| QueueError::Full)?
            .map_err(|_| QueueError::Closed)?;
        // Taken with the permit held: numbers enter the queue in order.
        let sequence_number = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (done, receiver) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.counters.pending.fetch_add(1, Ordering::Relaxed);
        permit.send(Queued {
            sequence_number,
            statements,
            done,
        });
        Ok((sequence_number, receiver))
    }
}

/// The writer: takes a batch (up to [`BATCH_REQUESTS`] requests, or what came within
/// [`BATCH_TIMEOUT`] of its first request), writes it, and goes on until every sender
/// is gone.
async fn write_batches(
    node: Node,
    mut receiver: mpsc::Receiver<Queued>,
    applied: watch::Sender<u64>,
    counters: Arc<QueueCounters>,
) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_TIMEOUT;
        while batch.len() < BATCH_REQUESTS {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(next)) => batch.push(next),
                Ok(None) | Err(_) => break,
            }
        }
        let last = batch.last().map_or(0, |q| q.sequence_number);
        let outcome = write_batch(&node, &mut batch, &counters).await;
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
) -> Result<u64, QueueError> {
    let first = batch.first().map_or(0, |q| q.sequence_number);
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
        request_id: Some(format!("queue-{}-{first}", node.service_id())),
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
                    counters
                        .failed_statements
                        .fetch_add(failed.len() as u64, Ordering::Relaxed);
                    tracing::warn!(
                        first_sequence_number = first,
                        raft_index = outcome.raft_index,
                        errors = failed.len(),
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
                tracing::warn!(
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
