//! `/metrics` in the Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Perm;
use crate::cluster_view::role_name;
use crate::routes::{Access, Routes, Verb};
use crate::state::AppState;

pub(crate) fn routes() -> Routes<AppState> {
    Routes::new().add(Verb::Get, "/metrics", Access::Api(&[Perm::Status]), metrics)
}

async fn metrics(State(state): State<AppState>) -> Response {
    match render(&state) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        )
            .into_response(),
    }
}

/// Every metric in the Prometheus text format: the node's status as gauges, the HTTP
/// API's counters and latencies, and the node's own metrics (write stages, log writes,
/// apply batches, reads, ReadIndex rounds, replication lag: [`sqlraft::Metrics`]).
fn render(state: &AppState) -> prometheus::Result<String> {
    let s = state.node.status();
    let c = &state.counters;
    let registry = prometheus::Registry::new();
    let role = prometheus::IntGaugeVec::new(
        prometheus::Opts::new("sqlraft_role", "1 for the node's current role."),
        &["role"],
    )?;
    let current = role_name(s.role);
    for r in ["leader", "follower", "candidate", "learner"] {
        role.with_label_values(&[r]).set(i64::from(r == current));
    }
    registry.register(Box::new(role))?;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let gauges: [(&str, &str, u64); 10] = [
        (
            "sqlraft_log_first_index",
            "First index in the local raft log (entries before it are in a snapshot).",
            s.first_index,
        ),
        (
            "sqlraft_log_bytes",
            "Bytes of the local raft log's segment files.",
            s.log_bytes,
        ),
        (
            "sqlraft_snapshot_index",
            "Index of the newest local snapshot (0: none).",
            s.snapshot.as_ref().map_or(0, |x| x.index),
        ),
        ("sqlraft_term", "Current raft term.", s.term),
        (
            "sqlraft_commit_index",
            "Highest log index known to be committed.",
            s.commit_index,
        ),
        (
            "sqlraft_applied_index",
            "Highest log index applied to the local SQLite file.",
            s.applied_index,
        ),
        (
            "sqlraft_last_index",
            "Last index in the local raft log.",
            s.last_index,
        ),
        (
            "sqlraft_leader_known",
            "1 when a leader is known.",
            u64::from(s.leader_id != 0),
        ),
        ("sqlraft_voters", "Voting members.", s.voters.len() as u64),
        ("sqlraft_learners", "Learners.", s.learners.len() as u64),
    ];
    for (name, help, value) in gauges {
        let gauge = prometheus::IntGauge::new(name, help)?;
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        registry.register(Box::new(gauge))?;
    }
    let counters: [(&str, &str, u64); 7] = [
        (
            "sqlraft_snapshots_installed_total",
            "Snapshots installed from the leader since start.",
            s.snapshots_installed,
        ),
        (
            "sqlraft_write_requests_total",
            "Write requests received over HTTP.",
            load(&c.write_requests),
        ),
        (
            "sqlraft_write_statements_total",
            "Statements in write requests.",
            load(&c.write_statements),
        ),
        (
            "sqlraft_read_requests_total",
            "Read requests received over HTTP.",
            load(&c.read_requests),
        ),
        (
            "sqlraft_read_statements_total",
            "Read statements run.",
            load(&c.read_statements),
        ),
        (
            "sqlraft_statement_errors_total",
            "Statements answered with an error result.",
            load(&c.statement_errors),
        ),
        (
            "sqlraft_http_errors_total",
            "Data API answers with a 4xx or 5xx status.",
            load(&c.http_errors),
        ),
    ];
    for (name, help, value) in counters {
        let counter = prometheus::IntCounter::new(name, help)?;
        counter.inc_by(value);
        registry.register(Box::new(counter))?;
    }
    let mut families = registry.gather();
    families.extend(prometheus::core::Collector::collect(&state.http_seconds));
    families.extend(state.node.metrics().registry().gather());
    // A labelled metric nothing was observed in yet has no samples, and the encoder
    // refuses an empty family (a node that served no data API request had no /metrics).
    families.retain(|f| !f.get_metric().is_empty());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    prometheus::TextEncoder::new().encode_to_string(&families)
}
