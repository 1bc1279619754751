//! The cluster endpoints: `/status`, `/nodes`, `/readyz`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use sqlraft::Node;
use sqlraft::naming::{host_of, service_name};

use crate::auth::Perm;
use crate::cluster_view::{live_members, readiness, role_name};
use crate::http_error::json_response;
use crate::routes::{Access, Routes, Verb};
use crate::state::AppState;

pub(crate) fn routes() -> Routes<AppState> {
    Routes::new()
        .add(Verb::Get, "/status", Access::Api(&[Perm::Status]), status)
        .add(Verb::Get, "/nodes", Access::Api(&[Perm::Status]), nodes)
        // Load balancers and health checks ask without credentials.
        .add(Verb::Get, "/readyz", Access::Public, readyz)
}

fn status_json(node: &Node) -> Json {
    let s = node.status();
    let leader = s.leader();
    let own = s.members.iter().find(|m| m.raft_id == s.raft_id);
    json!({
        "id": s.service_id,
        "raft_id": s.raft_id,
        "name": service_name(&s.service_id, host_of(node.raft_addr())),
        "role": role_name(s.role),
        "leader_id": leader.map_or("", |l| l.service_id.as_str()),
        "leader_raft_id": s.leader_id,
        "term": s.term,
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "last_index": s.last_index,
        "raft_addr": node.raft_addr(),
        "http_addr": own.map_or("", |m| m.http_addr.as_str()),
        "voters": s.voters,
        "learners": s.learners,
        "ready": readiness(&s).is_ok(),
        "log": {
            "first_index": s.first_index,
            "last_index": s.last_index,
            "bytes": s.log_bytes,
        },
        "snapshot": s.snapshot,
        "snapshots_installed": s.snapshots_installed,
        "snapshot_transfers": node.snapshot_transfers(),
    })
}

async fn status(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &status_json(&state.node), false)
}

/// Ready: a leader is known, and this node has applied the leader's commit index as a
/// quorum confirms it now (ReadIndex). What heartbeats carry is not enough: the leader
/// caps it at what it knows the follower holds, so a follower back from a restart
/// would look caught up while thousands of entries behind.
async fn readyz(State(state): State<AppState>) -> Response {
    let not_ready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response()
    };
    if let Err(reason) = readiness(&state.node.status()) {
        return not_ready(reason);
    }
    match state.node.read_index().await {
        Ok(commit) => {
            let applied = state.node.status().applied_index;
            if applied >= commit {
                (StatusCode::OK, "ready\n").into_response()
            } else {
                not_ready(format!(
                    "applied index {applied} is behind the leader's commit index {commit}"
                ))
            }
        }
        Err(e) => not_ready(e.to_string()),
    }
}

async fn nodes(State(state): State<AppState>) -> Response {
    let timeout = Duration::from_millis(state.options.probe_timeout_ms);
    let (_, members) = live_members(&state.node, timeout).await;
    let nodes: Vec<Json> = members
        .iter()
        .map(|m| {
            json!({
                "id": m.service_id,
                "raft_id": m.raft_id,
                "name": service_name(&m.service_id, host_of(&m.raft_addr)),
                "raft_addr": m.raft_addr,
                "http_addr": m.http_addr,
                "role": m.role,
                "voter": m.voter,
                "reachable": m.reachable,
                "applied_index": m.applied_index,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "nodes": nodes }), false)
}
