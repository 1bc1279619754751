//! What every HTTP handler shares: the node, the API's limits, the counters.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use sqlraft::Node;

/// Limits of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Statements in one request; more get 400.
    pub max_statements: usize,
    /// How long `/nodes` waits for another member's `/status`.
    pub probe_timeout_ms: u64,
    /// Bytes the read results of one request may cost together (as
    /// [`sqlraft::Rows::json_cost`] counts them); each read is bounded on its own by
    /// the node's `ReadOptions::max_result_bytes`.
    pub max_result_bytes: usize,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            max_body_bytes: 16 << 20,
            max_statements: 10_000,
            probe_timeout_ms: 1_000,
            max_result_bytes: 64 << 20,
        }
    }
}

/// Counters shown by `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) write_requests: AtomicU64,
    pub(crate) write_statements: AtomicU64,
    pub(crate) read_requests: AtomicU64,
    pub(crate) read_statements: AtomicU64,
    pub(crate) statement_errors: AtomicU64,
    pub(crate) http_errors: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) node: Node,
    pub(crate) options: ApiOptions,
    pub(crate) counters: Counters,
}

pub(crate) type AppState = Arc<Shared>;
