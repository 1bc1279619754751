//! `/metrics` in the Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::cluster_view::role_name;
use crate::state::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let s = state.node.status();
    let c = &state.counters;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let roles = ["leader", "follower", "candidate", "learner"];
    let role = role_name(s.role);
    let role_samples: Vec<(String, u64)> = roles
        .iter()
        .map(|r| (format!("{{role=\"{r}\"}}"), u64::from(*r == role)))
        .collect();
    metric(
        "sqlraft_role",
        "gauge",
        "1 for the node's current role.",
        &role_samples,
    );
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let single: [(&str, &str, &str, u64); 17] = [
        (
            "sqlraft_log_first_index",
            "gauge",
            "First index in the local raft log (entries before it are in a snapshot).",
            s.first_index,
        ),
        (
            "sqlraft_log_bytes",
            "gauge",
            "Bytes of the local raft log's segment files.",
            s.log_bytes,
        ),
        (
            "sqlraft_snapshot_index",
            "gauge",
            "Index of the newest local snapshot (0: none).",
            s.snapshot.as_ref().map_or(0, |x| x.index),
        ),
        (
            "sqlraft_snapshots_installed_total",
            "counter",
            "Snapshots installed from the leader since start.",
            s.snapshots_installed,
        ),
        ("sqlraft_term", "gauge", "Current raft term.", s.term),
        (
            "sqlraft_commit_index",
            "gauge",
            "Highest log index known to be committed.",
            s.commit_index,
        ),
        (
            "sqlraft_applied_index",
            "gauge",
            "Highest log index applied to the local SQLite file.",
            s.applied_index,
        ),
        (
            "sqlraft_last_index",
            "gauge",
            "Last index in the local raft log.",
            s.last_index,
        ),
        (
            "sqlraft_leader_known",
            "gauge",
            "1 when a leader is known.",
            u64::from(s.leader_id != 0),
        ),
        (
            "sqlraft_voters",
            "gauge",
            "Voting members.",
            s.voters.len() as u64,
        ),
        (
            "sqlraft_learners",
            "gauge",
            "Learners.",
            s.learners.len() as u64,
        ),
        (
            "sqlraft_write_requests_total",
            "counter",
            "Write requests received over HTTP.",
            load(&c.write_requests),
        ),
        (
            "sqlraft_write_statements_total",
            "counter",
            "Statements in write requests.",
            load(&c.write_statements),
        ),
        (
            "sqlraft_read_requests_total",
            "counter",
            "Read requests received over HTTP.",
            load(&c.read_requests),
        ),
        (
            "sqlraft_read_statements_total",
            "counter",
            "Read statements run.",
            load(&c.read_statements),
        ),
        (
            "sqlraft_statement_errors_total",
            "counter",
            "Statements answered with an error result.",
            load(&c.statement_errors),
        ),
        (
            "sqlraft_http_errors_total",
            "counter",
            "Data API answers with a 4xx or 5xx status.",
            load(&c.http_errors),
        ),
    ];
    for (name, kind, help, value) in single {
        metric(name, kind, help, &[(String::new(), value)]);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}
