//! Core services over REST: `GET|POST /api/v1/services`, `DELETE /api/v1/services/{id}`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::auth::Perm;
use crate::http_error::{ApiError, json_response};
use crate::routes::{Access, Routes, Verb};
use crate::services::{ServiceView, create, overview, remove, rfc3339};
use crate::state::AppState;

/// Largest body of a services request (a few hundred bytes are enough).
pub const MAX_SERVICES_BODY_BYTES: usize = 16 << 10;

pub(crate) fn routes() -> Routes<AppState> {
    Routes::new()
        .add(
            Verb::Get,
            "/api/v1/services",
            Access::Api(&[Perm::Status]),
            list,
        )
        // A created service may then join.
        .add(
            Verb::Post,
            "/api/v1/services",
            Access::Api(&[Perm::Join]),
            create_handler,
        )
        .add(
            Verb::Delete,
            "/api/v1/services/{id}",
            Access::Api(&[Perm::Remove]),
            delete_handler,
        )
        .map(|router| router.layer(DefaultBodyLimit::max(MAX_SERVICES_BODY_BYTES)))
}

fn service_json(view: &ServiceView) -> Json {
    let s = &view.service;
    let live = view.live.as_ref();
    json!({
        "id": s.id,
        "name": s.name,
        "fqdn": s.fqdn,
        "raft_addr": s.raft_addr,
        "state": s.state.as_str(),
        "raft_id": s.raft_id,
        "created_at": rfc3339(s.created_at_ms),
        "created_at_ms": s.created_at_ms,
        "http_addr": live.map(|m| m.http_addr.clone()),
        "role": live.map(|m| m.role.clone()),
        "leader": view.is_leader,
        "reachable": live.map(|m| m.reachable),
        "term": live.and_then(|m| m.term),
        "applied_index": live.and_then(|m| m.applied_index),
        "lag": view.lag,
    })
}

async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let timeout = Duration::from_millis(state.options.probe_timeout_ms);
    let o = overview(&state.node, timeout).await?;
    let body = json!({
        "services": o.services.iter().map(service_json).collect::<Vec<_>>(),
        "leader_id": o.leader_id,
        "term": o.term,
        "commit_index": o.commit_index,
        "voters": o.voters,
        "learners": o.learners,
    });
    Ok(json_response(StatusCode::OK, &body, false))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewService {
    fqdn: String,
    raft_addr: String,
}

async fn create_handler(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let new: NewService = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"fqdn\": \"<fqdn>\", \"raft_addr\": \"<fqdn>:<port>\"}}: {e}"
        ))
    })?;
    let created = create(
        &state.node,
        &new.fqdn,
        &new.raft_addr,
        state.options.auth.is_some(),
    )
    .await?;
    let s = &created.service;
    let mut body = json!({
        "id": s.id,
        "name": s.name,
        "fqdn": s.fqdn,
        "raft_addr": s.raft_addr,
        "state": s.state.as_str(),
        "install_command": created.install_command,
    });
    // Its mutual-TLS material, issued now and kept nowhere: the files the install
    // command names (ca.crt, <id>.crt, <id>.key in /opt/sqlraft/tls).
    if let (Some(issued), Some(map)) = (&created.certificate, body.as_object_mut()) {
        map.insert(
            "certificate".into(),
            json!({"ca": issued.ca_pem, "cert": issued.cert_pem, "key": issued.key_pem}),
        );
    }
    Ok(json_response(StatusCode::CREATED, &body, false))
}

async fn delete_handler(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = crate::services::stored_id(&id);
    let index = remove(&state.node, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "id": id, "removed": true, "raft_index": index }),
        false,
    ))
}
