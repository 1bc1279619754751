//! The system endpoints: `GET /api/v1/system/backup` (a consistent copy of this node's
//! database), `POST /api/v1/system/restore` (replace the content on every node through
//! the log), `POST /api/v1/system/snapshot` (take a snapshot and compact the log now).

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::auth::Perm;
use crate::http_error::{ApiError, json_response};
use crate::routes::{Access, Routes, Verb};
use crate::services::overview;
use crate::state::AppState;

pub(crate) fn routes() -> Routes<AppState> {
    Routes::new()
        .add(
            Verb::Get,
            "/api/v1/system/backup",
            Access::Api(&[Perm::Backup]),
            backup,
        )
        .add(
            Verb::Post,
            "/api/v1/system/restore",
            Access::Api(&[Perm::Load]),
            restore,
        )
        .add(
            Verb::Post,
            "/api/v1/system/snapshot",
            Access::Api(&[Perm::Snapshot]),
            snapshot,
        )
}

fn internal(message: String) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message,
    }
}

/// A consistent copy of this node's state database ([`sqlraft::Node::backup`]: content
/// and index read in one transaction), written to a temporary file, then streamed back.
async fn backup(State(state): State<AppState>) -> Result<Response, ApiError> {
    let dir = tempfile::Builder::new()
        .prefix("sqlraft-backup-")
        .tempdir()
        .map_err(|e| internal(format!("cannot create a temporary directory: {e}")))?;
    let path = dir.path().join("backup.sqlite3");
    let applied = state.node.backup(&path).await?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| internal(format!("cannot open the backup: {e}")))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| internal(format!("cannot read the backup: {e}")))?
        .len();
    // The open file outlives its name: the directory can go now.
    drop(dir);
    let stream = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let filename = format!(
        "sqlraft-{}-{applied}.sqlite3",
        state.node.service_id().get(..8).unwrap_or("backup")
    );
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (
                header::HeaderName::from_static("x-sqlraft-applied-index"),
                applied.to_string(),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Restores a backup (the request body: a SQLite file, as `GET /api/v1/system/backup`
/// gives it) on every node ([`sqlraft::Node::restore`]). The body is streamed to a file
/// beside the node's database, up to the node's restore limit (413 beyond). Answers
/// once this node applied the restore, after waiting (up to 10 s) for every other
/// member to apply it too; the answer says which did.
/// How long a restore upload may send nothing before it is given up.
const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

async fn restore(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let node = &state.node;
    // One restore per node at a time, from the first byte of its upload to its answer:
    // a second is refused before its body is read, not after it was stored.
    let Ok(_slot) = state.restore_slot.try_lock() else {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "a restore is already running on this node".into(),
        });
    };
    if node.is_restoring() {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "a restore is already running on this node".into(),
        });
    }
    let limit = node.config().limits.max_restore_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("a restore takes at most {limit} bytes"),
        });
    }
    let parent = node.config().dir.join("db");
    let dir = tempfile::Builder::new()
        .prefix("upload-")
        .tempdir_in(&parent)
        .map_err(|e| internal(format!("cannot create a temporary directory: {e}")))?;
    let path = dir.path().join("upload.sqlite3");
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| internal(format!("cannot store the upload: {e}")))?;
    let mut stream = body.into_data_stream();
    let mut received = 0u64;
    loop {
        // A client that stops sending does not hold the restore slot for ever.
        let next = tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, stream.next())
            .await
            .map_err(|_| ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                message: format!(
                    "the upload stalled: nothing received for {} s",
                    UPLOAD_IDLE_TIMEOUT.as_secs()
                ),
            })?;
        let Some(chunk) = next else {
            break;
        };
        let chunk: Bytes = chunk
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        received += chunk.len() as u64;
        if received > limit {
            return Err(ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("a restore takes at most {limit} bytes"),
            });
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| internal(format!("cannot store the upload: {e}")))?;
    }
    file.flush()
        .await
        .map_err(|e| internal(format!("cannot store the upload: {e}")))?;
    drop(file);
    let outcome = node.restore(&path).await?;
    drop(dir);
    let nodes = wait_for_members(&state, outcome.raft_index, Duration::from_secs(10)).await;
    let everywhere = nodes.iter().all(|n| n["restored"] == json!(true));
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "restored": true,
            "raft_index": outcome.raft_index,
            "bytes": outcome.bytes,
            "tables": outcome.tables,
            "applied_everywhere": everywhere,
            "nodes": nodes,
        }),
        false,
    ))
}

/// Polls the members' status until each has applied `index` or `limit` passes; one
/// entry per member: its id, applied index, and whether it has the restore.
async fn wait_for_members(state: &AppState, index: u64, limit: Duration) -> Vec<serde_json::Value> {
    let probe = Duration::from_millis(state.options.probe_timeout_ms);
    let deadline = Instant::now() + limit;
    loop {
        let members: Vec<(String, Option<u64>)> = match overview(&state.node, probe).await {
            Ok(o) => o
                .services
                .iter()
                .filter_map(|s| {
                    s.live
                        .as_ref()
                        .map(|live| (s.service.id.clone(), live.applied_index))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let done =
            !members.is_empty() && members.iter().all(|(_, a)| a.is_some_and(|a| a >= index));
        if done || Instant::now() >= deadline {
            return members
                .into_iter()
                .map(|(id, applied)| {
                    json!({
                        "id": id,
                        "applied_index": applied,
                        "restored": applied.is_some_and(|a| a >= index),
                    })
                })
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotParams {
    /// Entries to keep in the log behind the snapshot this time.
    trailing: Option<u64>,
}

/// Takes a snapshot now and compacts the log behind it (`?trailing=N`: keep only N
/// entries behind it this time; 0 compacts everything the snapshot covers).
async fn snapshot(
    State(state): State<AppState>,
    params: Result<Query<SnapshotParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| {
        ApiError::bad_request(format!("expected ?trailing=<entries>: {}", e.body_text()))
    })?;
    let info = state.node.snapshot_keeping(params.trailing).await?;
    let status = state.node.status();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "index": info.index,
            "term": info.term,
            "size_bytes": info.size_bytes,
            "took_ms": info.took_ms,
            "log_first_index": status.first_index,
            "log_bytes": status.log_bytes,
        }),
        false,
    ))
}
