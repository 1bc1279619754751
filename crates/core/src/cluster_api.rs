//! The cluster endpoints: `/status`, `/nodes`, `/readyz`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use sqlraft::naming::{host_of, service_name};
use sqlraft::{Role, Status};

use crate::auth::Perm;
use crate::cluster_view::{live_members, readiness, role_name};
use crate::http_error::{ApiError, json_response};
use crate::routes::{Access, Routes, Verb};
use crate::state::AppState;

pub(crate) fn routes() -> Routes<AppState> {
    Routes::new()
        .add(Verb::Get, "/status", Access::Api(&[Perm::Status]), status)
        .add(Verb::Get, "/nodes", Access::Api(&[Perm::Status]), nodes)
        .add(Verb::Get, "/leader", Access::Api(&[Perm::Status]), leader)
        // Load balancers and health checks ask without credentials.
        .add(Verb::Get, "/readyz", Access::Public, readyz)
}

/// rqlite's name for a role, as `store.raft.state` shows it (hashicorp raft's names:
/// a non-voter is a follower there).
fn rqlite_state(role: Role) -> &'static str {
    match role {
        Role::Leader => "Leader",
        Role::Candidate => "Candidate",
        Role::Follower | Role::Learner | Role::Joining => "Follower",
    }
}

/// The raft ids with a vote: a voter being left in a joint configuration still votes
/// (as `/nodes` counts it).
fn voting(s: &Status) -> Vec<u64> {
    let mut voting: Vec<u64> = s.voters.iter().chain(&s.voters_outgoing).copied().collect();
    voting.sort_unstable();
    voting.dedup();
    voting
}

fn status_json(state: &AppState) -> Json {
    let node = &state.node;
    let s = node.status();
    let leader = s.leader();
    let own = s.members.iter().find(|m| m.raft_id == s.raft_id);
    let http_addr = own.map_or("", |m| m.http_addr.as_str());
    let ready = readiness(&s).is_ok();
    let voting = voting(&s);
    let voter = voting.contains(&s.raft_id);
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
        "http_addr": http_addr,
        "voters": s.voters,
        "voters_outgoing": s.voters_outgoing,
        "learners": s.learners,
        "ready": ready,
        "log": {
            "first_index": s.first_index,
            "last_index": s.last_index,
            "bytes": s.log_bytes,
        },
        "snapshot": s.snapshot,
        "snapshots_installed": s.snapshots_installed,
        "snapshot_transfers": node.snapshot_transfers(),
        // rqlite's shape, read by its clients to find the leader (gorqlite reads
        // store.leader.addr and store.leader.node_id): node ids are service ids,
        // addresses raft addresses, as rqlite's are.
        "store": {
            "node_id": s.service_id,
            "addr": node.raft_addr(),
            "leader": {
                "node_id": leader.map_or("", |l| l.service_id.as_str()),
                "addr": leader.map_or("", |l| l.raft_addr.as_str()),
            },
            "ready": ready,
            "raft": {
                "state": rqlite_state(s.role),
                "term": s.term,
                "commit_index": s.commit_index,
                "applied_index": s.applied_index,
                "last_log_index": s.last_index,
                "voter": voter,
                "num_peers": voting.len().saturating_sub(usize::from(voter)),
            },
            "nodes": s.members.iter().map(|m| json!({
                "id": m.service_id,
                "addr": m.raft_addr,
                "suffrage": if m.voter { "Voter" } else { "Nonvoter" },
            })).collect::<Vec<_>>(),
        },
        "http": {
            "bind_addr": http_addr,
            "auth": if state.options.auth.is_some() { "enabled" } else { "disabled" },
            "tls": { "enabled": if state.options.https { "true" } else { "false" } },
            // Queued writes (`/db/execute?queue`), where rqlite shows them: every
            // request numbered up to sequence_number has been written through the log
            // (its statements' errors are only counted).
            "queue": {
                "_default": {
                    "sequence_number": state.queue.applied_sequence_number(),
                    "max_size": crate::queue::CAPACITY,
                    "batch_size": crate::queue::BATCH_REQUESTS,
                    "timeout": format!("{}ms", crate::queue::BATCH_TIMEOUT.as_millis()),
                    "last_sequence_number": state.queue.last_sequence_number(),
                    "pending": state.queue.counters.pending.load(Ordering::Relaxed),
                    "batches": state.queue.counters.batches.load(Ordering::Relaxed),
                    "failed_batches": state.queue.counters.failed_batches.load(Ordering::Relaxed),
                    "failed_statements": state.queue.counters.failed_statements.load(Ordering::Relaxed),
                },
            },
        },
        "build": {
            "version": env!("CARGO_PKG_VERSION"),
            "compiler": "rustc",
        },
        "node": {
            "start_time": state.started_at_rfc3339(),
            "uptime": format!("{}s", state.started.elapsed().as_secs()),
        },
    })
}

/// `?key=a.b.c` (rqlite): that part of the status, `{}` when there is none.
#[derive(Debug, Default, serde::Deserialize)]
struct StatusQuery {
    key: Option<String>,
    pretty: Option<String>,
}

async fn status(State(state): State<AppState>, Query(query): Query<StatusQuery>) -> Response {
    let status = status_json(&state);
    let pretty = query.pretty.as_deref().is_some_and(crate::state::flag_on);
    let Some(key) = query.key.filter(|k| !k.is_empty()) else {
        return json_response(StatusCode::OK, &status, pretty);
    };
    // As rqlite: a value that is not an object ends the walk and is the answer; the
    // part is written compact.
    let mut part = &status;
    for name in key.split('.') {
        if !part.is_object() {
            break;
        }
        match part.get(name) {
            Some(inner) => part = inner,
            None => return json_response(StatusCode::OK, &json!({}), false),
        }
    }
    json_response(StatusCode::OK, part, false)
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

/// `GET /leader` (rqlite): the leader's `/nodes` entry; 503 while no leader is known.
async fn leader(State(state): State<AppState>) -> Response {
    let timeout = Duration::from_millis(state.options.probe_timeout_ms);
    let (status, members) = live_members(&state.node, timeout).await;
    match members.iter().find(|m| m.raft_id == status.leader_id) {
        Some(m) if status.leader_id != 0 => json_response(
            StatusCode::OK,
            &node_entry(&state, m, status.leader_id),
            false,
        ),
        _ => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "leader not found".into(),
        }
        .into_response(),
    }
}

/// A member as `/nodes` and `/leader` show it: rqlite's keys, then sqlraft's.
fn node_entry(state: &AppState, m: &crate::cluster_view::LiveMember, leader_id: u64) -> Json {
    let scheme = state.options.scheme();
    let mut entry = json!({
        "id": m.service_id,
        "api_addr": if m.http_addr.is_empty() {
            String::new()
        } else {
            format!("{scheme}://{}", m.http_addr)
        },
        "addr": m.raft_addr,
        "version": m.version.clone().unwrap_or_default(),
        "voter": m.voter,
        "reachable": m.reachable,
        "leader": m.raft_id == leader_id,
        "time": m.seconds,
        "raft_id": m.raft_id,
        "name": service_name(&m.service_id, host_of(&m.raft_addr)),
        "raft_addr": m.raft_addr,
        "http_addr": m.http_addr,
        "role": m.role,
        "applied_index": m.applied_index,
    });
    if let (Some(error), false) = (&m.error, m.reachable) {
        entry["error"] = json!(error);
    }
    entry
}

/// `/nodes` options: rqlite's `ver`, `nonvoters`, `timeout`.
#[derive(Debug, Default, serde::Deserialize)]
struct NodesQuery {
    ver: Option<String>,
    nonvoters: Option<String>,
    timeout: Option<String>,
    pretty: Option<String>,
}

/// `GET /nodes` in rqlite's shapes: a map keyed by node id, or with `?ver=2` a list
/// under `nodes`. Voters only unless `?nonvoters`, as rqlite; sqlraft's own keys
/// (`raft_id`, `name`, `raft_addr`, `http_addr`, `role`, `applied_index`) are extra.
async fn nodes(State(state): State<AppState>, Query(query): Query<NodesQuery>) -> Response {
    let nonvoters = query
        .nonvoters
        .as_deref()
        .is_some_and(crate::state::flag_on);
    let timeout = match query.timeout.as_deref().map(crate::duration::parse) {
        None => Duration::from_millis(state.options.probe_timeout_ms),
        Some(Ok(t)) => t.min(Duration::from_secs(60)),
        Some(Err(e)) => {
            return ApiError::bad_request(format!("timeout: {e}")).into_response();
        }
    };
    let (status, members) = live_members(&state.node, timeout).await;
    let entries: Vec<(String, Json)> = members
        .iter()
        .filter(|m| m.voter || nonvoters)
        .map(|m| {
            (
                m.service_id.clone(),
                node_entry(&state, m, status.leader_id),
            )
        })
        .collect();
    let body = if query.ver.as_deref() == Some("2") {
        json!({ "nodes": entries.into_iter().map(|(_, e)| e).collect::<Vec<_>>() })
    } else {
        Json::Object(entries.into_iter().collect())
    };
    let pretty = query.pretty.as_deref().is_some_and(crate::state::flag_on);
    json_response(StatusCode::OK, &body, pretty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_voter_being_left_still_votes() {
        let mut s = crate::cluster_view::tests::status(5, 5, 5, 1);
        assert_eq!(voting(&s), vec![1, 2, 3]);
        // 2 is being removed: {1, 3} joint with {1, 2, 3}.
        s.voters = vec![1, 3];
        s.voters_outgoing = vec![1, 2, 3];
        assert_eq!(voting(&s), vec![1, 2, 3]);
    }
}
