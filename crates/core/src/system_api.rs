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
        // rqlite's paths.
        .add(
            Verb::Get,
            "/db/backup",
            Access::Api(&[Perm::Backup]),
            db_backup,
        )
        .add(Verb::Post, "/db/load", Access::Api(&[Perm::Load]), db_load)
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
    let (dir, path, applied) = backup_file(&state).await?;
    let filename = format!(
        "sqlraft-{}-{applied}.sqlite3",
        state.node.service_id().get(..8).unwrap_or("backup")
    );
    stream_file(dir, &path, "application/octet-stream", &filename, applied).await
}

/// A consistent copy of this node's database in a temporary directory, and the
/// applied index it is at.
async fn backup_file(
    state: &AppState,
) -> Result<(tempfile::TempDir, std::path::PathBuf, u64), ApiError> {
    let dir = tempfile::Builder::new()
        .prefix("sqlraft-backup-")
        .tempdir()
        .map_err(|e| internal(format!("cannot create a temporary directory: {e}")))?;
    let path = dir.path().join("backup.sqlite3");
    let applied = state.node.backup(&path).await?;
    Ok((dir, path, applied))
}

#[derive(Debug, Default, serde::Deserialize)]
struct BackupParams {
    fmt: Option<String>,
    // Accepted as rqlite takes them; see docs/API.md.
    #[allow(dead_code)]
    vacuum: Option<String>,
    #[allow(dead_code)]
    noleader: Option<String>,
    #[allow(dead_code)]
    redirect: Option<String>,
    compress: Option<String>,
}

/// `GET /db/backup` (rqlite): the database file, or with `?fmt=sql` its content as
/// SQL text (`sqlite3 .dump`'s form). Served by this node from its own copy, as any
/// node's backup is consistent at its applied index (`X-Sqlraft-Applied-Index`).
async fn db_backup(
    State(state): State<AppState>,
    params: Result<Query<BackupParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::bad_request(format!("backup: {}", e.body_text())))?;
    if params
        .compress
        .as_deref()
        .is_some_and(crate::state::flag_on)
    {
        return Err(ApiError::bad_request(
            "compress is not supported: ask without it (and compress on the client)",
        ));
    }
    let (dir, path, applied) = backup_file(&state).await?;
    let prefix = format!(
        "sqlraft-{}-{applied}",
        state.node.service_id().get(..8).unwrap_or("backup")
    );
    match params
        .fmt
        .as_deref()
        .unwrap_or("binary")
        .to_ascii_lowercase()
        .as_str()
    {
        "binary" => {
            let name = format!("{prefix}.sqlite3");
            stream_file(dir, &path, "application/octet-stream", &name, applied).await
        }
        "sql" => {
            let sql_path = dir.path().join("backup.sql");
            let (from, to) = (path.clone(), sql_path.clone());
            tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
                let file = std::fs::File::create(&to)
                    .map_err(|e| internal(format!("cannot write the dump: {e}")))?;
                let mut out = std::io::BufWriter::new(file);
                sqlraft::sql_text::dump_sql(&from, &mut out)
                    .map_err(|e| internal(e.to_string()))?;
                std::io::Write::flush(&mut out)
                    .map_err(|e| internal(format!("cannot write the dump: {e}")))
            })
            .await
            .map_err(|e| internal(format!("the dump failed: {e}")))??;
            let name = format!("{prefix}.sql");
            stream_file(dir, &sql_path, "application/sql", &name, applied).await
        }
        other => Err(ApiError::bad_request(format!(
            "fmt {other:?}: expected binary or sql"
        ))),
    }
}

/// Streams the file at `path` (in `dir`, removed once the file is open) as the answer.
async fn stream_file(
    dir: tempfile::TempDir,
    path: &std::path::Path,
    content_type: &str,
    filename: &str,
    applied: u64,
) -> Result<Response, ApiError> {
    let file = tokio::fs::File::open(path)
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
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type.to_string()),
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

/// How long a restore upload may send nothing before it is given up.
const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Restores a backup (the request body: a SQLite file, as `GET /api/v1/system/backup`
/// gives it) on every node ([`sqlraft::Node::restore`]). The body is streamed to a file
/// beside the node's database, up to the node's restore limit (413 beyond). Answers
/// once this node applied the restore, after waiting (up to 10 s) for every other
/// member to apply it too; the answer says which did.
async fn restore(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (_slot, dir, path) = take_upload(&state, &headers, body).await?;
    let answer = restore_file(&state, dir, &path).await?;
    Ok(json_response(StatusCode::OK, &answer, false))
}

fn restore_running() -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "a restore is already running on this node".into(),
    }
}

/// The restore slot (one restore or load per node at a time, from the first byte of
/// its upload to its answer) and the stored upload.
async fn take_upload<'a>(
    state: &'a AppState,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Result<
    (
        tokio::sync::MutexGuard<'a, ()>,
        tempfile::TempDir,
        std::path::PathBuf,
    ),
    ApiError,
> {
    let Ok(slot) = state.restore_slot.try_lock() else {
        return Err(restore_running());
    };
    let (dir, path) = receive_upload(state, headers, body).await?;
    Ok((slot, dir, path))
}

/// Stores the request body in a temporary directory beside the node's database, up
/// to the node's restore limit (413 beyond). The caller holds the restore slot.
async fn receive_upload(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Result<(tempfile::TempDir, std::path::PathBuf), ApiError> {
    let node = &state.node;
    // One restore per node at a time, from the first byte of its upload to its answer
    // (the caller holds the slot): a second is refused before its body is read, not
    // after it was stored.
    if node.is_restoring() {
        return Err(restore_running());
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
    Ok((dir, path))
}

/// Restores the SQLite file at `path` on every node; what `/api/v1/system/restore`
/// answers.
async fn restore_file(
    state: &AppState,
    dir: tempfile::TempDir,
    path: &std::path::Path,
) -> Result<serde_json::Value, ApiError> {
    let outcome = state.node.restore(path).await?;
    drop(dir);
    let nodes = wait_for_members(state, outcome.raft_index, Duration::from_secs(10)).await;
    let everywhere = nodes.iter().all(|n| n["restored"] == json!(true));
    Ok(json!({
        "restored": true,
        "raft_index": outcome.raft_index,
        "bytes": outcome.bytes,
        "tables": outcome.tables,
        "applied_everywhere": everywhere,
        "nodes": nodes,
    }))
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

/// The first bytes of every SQLite database file.
const SQLITE_HEADER: &[u8] = b"SQLite format 3\0";

/// `POST /db/load` (rqlite): a SQLite database file replaces the content on every node
/// (as `/api/v1/system/restore`); SQL text (a dump, as `/db/backup?fmt=sql` gives)
/// is run as writes, in transactions within a request's limits (statements, bytes),
/// without the dump's framing ([`is_dump_framing`]).
async fn db_load(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (_slot, dir, path) = take_upload(&state, &headers, body).await?;
    let mut head = [0u8; SQLITE_HEADER.len()];
    let head_len = {
        use tokio::io::AsyncReadExt;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| internal(format!("cannot read the upload: {e}")))?;
        let mut filled = 0;
        while filled < head.len() {
            match file.read(&mut head[filled..]).await {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => return Err(internal(format!("cannot read the upload: {e}"))),
            }
        }
        filled
    };
    if head[..head_len] == *SQLITE_HEADER {
        // rqlite answers `{"results": []}`; what the restore did comes beside it.
        let mut answer = restore_file(&state, dir, &path).await?;
        answer["results"] = json!([]);
        return Ok(json_response(StatusCode::OK, &answer, false));
    }
    let content = tokio::fs::read(&path)
        .await
        .map_err(|e| internal(format!("cannot read the upload: {e}")))?;
    drop(dir);
    let text = String::from_utf8(content).map_err(|_| {
        ApiError::bad_request("the body is neither a SQLite database file nor UTF-8 SQL text")
    })?;
    let statements: Vec<sqlraft::Statement> = sqlraft::sql_text::split_statements(&text)
        .into_iter()
        .filter(|sql| !is_dump_framing(sql))
        .map(sqlraft::Statement::new)
        .collect();
    if statements.is_empty() {
        // Found by a review: an empty body was answered 200, as if something loaded.
        return Err(ApiError::bad_request(
            "nothing to load: the body is empty (or only a dump's framing); send a SQLite \
             database file or SQL text",
        ));
    }
    // Each transaction within the node's limits on a request: statements, and bytes
    // (half of them, for the encoding's own).
    let limits = &state.node.config().limits;
    let max_statements = state
        .options
        .max_statements
        .min(limits.max_statements)
        .max(1);
    let max_bytes = limits.max_request_bytes / 2;
    let chunks = load_chunks(statements, max_statements, max_bytes)?;
    let mut results = Vec::new();
    let mut raft_index = None;
    for chunk in chunks {
        let len = chunk.len();
        let outcome = state
            .node
            .execute(sqlraft::WriteRequest::transaction(chunk))
            .await
            .map_err(|e| match raft_index {
                None => ApiError::from(e),
                Some(index) => internal(format!(
                    "the load was applied up to raft index {index}, then failed: {e}"
                )),
            })?;
        let failed = outcome.results.iter().position(|r| r.error.is_some());
        raft_index = Some(outcome.raft_index);
        let done = results.len();
        results.extend(outcome.results);
        if let Some(i) = failed {
            let message = results[done + i].error.clone().unwrap_or_default();
            // A transaction that failed whole answers one result for all its
            // statements, as does one whose first statement failed: which one is not
            // known here (found by a review: the first statement was blamed).
            let which = if i == 0 && len > 1 {
                format!(
                    "the transaction of its statements {} to {} failed, at its first \
                     statement or as a whole (statement numbers in the message count from \
                     statement {} of the load: {message})",
                    done + 1,
                    done + len,
                    done + 1
                )
            } else {
                format!("statement {} of the load failed ({message})", done + i + 1)
            };
            return Err(ApiError::bad_request(format!(
                "{which}; {}",
                if done == 0 {
                    "nothing was loaded".to_string()
                } else {
                    format!("its first {done} statements were loaded")
                }
            )));
        }
    }
    let results: Vec<_> = results
        .into_iter()
        .map(|r| json!({"last_insert_id": r.last_insert_id, "rows_affected": r.rows_affected}))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "results": results, "raft_index": raft_index }),
        false,
    ))
}

/// A load's statements in transactions, each within a request's limits: at most
/// `max_statements` statements and `max_bytes` bytes. A load that fits one transaction
/// is one (it loads whole or not at all). A larger one builds each index in a
/// transaction of its own: a dump creates its indexes after its rows, and building
/// them is where a load's work is; one request's statements share a step budget
/// (`sqlraft::MAX_REQUEST_CALLS`), each statement keeps its own.
fn load_chunks(
    statements: Vec<sqlraft::Statement>,
    max_statements: usize,
    max_bytes: usize,
) -> Result<Vec<Vec<sqlraft::Statement>>, ApiError> {
    let chunks = chunked(statements, max_statements, max_bytes, false)?;
    if chunks.len() <= 1 {
        return Ok(chunks);
    }
    chunked(chunks.concat(), max_statements, max_bytes, true)
}

/// `statements` in transactions within the limits; with `split_indexes`, each `CREATE
/// INDEX` alone.
fn chunked(
    statements: Vec<sqlraft::Statement>,
    max_statements: usize,
    max_bytes: usize,
    split_indexes: bool,
) -> Result<Vec<Vec<sqlraft::Statement>>, ApiError> {
    let mut chunks: Vec<Vec<sqlraft::Statement>> = Vec::new();
    let mut chunk_bytes = 0;
    // The last chunk takes no more statements.
    let mut closed = false;
    for (i, statement) in statements.into_iter().enumerate() {
        let bytes = statement.sql.len();
        // Checked before anything is written: a statement no request can carry.
        if bytes > max_bytes {
            return Err(ApiError::bad_request(format!(
                "statement {} of the load has {bytes} bytes, more than one write may carry \
                 ({max_bytes}); nothing was loaded (load large values as a database file)",
                i + 1
            )));
        }
        let alone = split_indexes && sqlraft::sql_text::creates_an_index(&statement.sql);
        match chunks.last_mut() {
            Some(chunk)
                if !closed
                    && !alone
                    && chunk.len() < max_statements
                    && chunk_bytes + bytes <= max_bytes =>
            {
                chunk_bytes += bytes;
                chunk.push(statement);
            }
            _ => {
                chunk_bytes = bytes;
                chunks.push(vec![statement]);
            }
        }
        closed = alone;
    }
    Ok(chunks)
}

/// A dump's own framing, which a load leaves out: it runs in transactions of its own
/// (`BEGIN`, `COMMIT`, `PRAGMA foreign_keys`), AUTOINCREMENT counters cannot be set
/// (`sqlite_sequence`; loaded rows move them as far as their own rowids), and the query
/// planner's statistics are written by ANALYZE only (`sqlite_stat1`, `sqlite_stat4`:
/// run ANALYZE after the load to have them).
fn is_dump_framing(sql: &str) -> bool {
    let sql = sqlraft::sql_text::skip_leading_comments(sql);
    let lower = sql.to_ascii_lowercase();
    let internal = [
        ("insert into ", "sqlite_sequence"),
        ("delete from ", "sqlite_sequence"),
        ("insert into ", "sqlite_stat1"),
        ("insert into ", "sqlite_stat4"),
    ]
    .iter()
    .any(|(verb, table)| {
        lower
            .strip_prefix(verb)
            .and_then(|rest| {
                rest.strip_prefix(table)
                    .or_else(|| rest.strip_prefix(&format!("\"{table}\"")))
            })
            .is_some_and(|after| {
                !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            })
    });
    if internal {
        return true;
    }
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == '=')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    matches!(
        words.as_slice(),
        ["begin"]
            | ["begin", "transaction"]
            | ["begin", "deferred" | "immediate" | "exclusive"]
            | [
                "begin",
                "deferred" | "immediate" | "exclusive",
                "transaction"
            ]
            | ["commit"]
            | ["commit", "transaction"]
            | ["end"]
            | ["end", "transaction"]
            | ["pragma", "foreign_keys", _]
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dumps_framing_is_recognised_behind_comments() {
        for framing in [
            "BEGIN TRANSACTION",
            "-- made by sqlite3\n/* x */ begin",
            "COMMIT",
            "END TRANSACTION",
            "PRAGMA foreign_keys=OFF",
            "PRAGMA foreign_keys = off",
            "INSERT INTO sqlite_sequence VALUES('t',5)",
            "DELETE FROM \"sqlite_sequence\"",
            "INSERT INTO sqlite_stat1 VALUES('p','px','2 1')",
            "insert into \"sqlite_stat4\" values('p','px','1 1','0 0','0 0',x'0201')",
        ] {
            assert!(is_dump_framing(framing), "{framing}");
        }
        for statement in [
            "CREATE TABLE t (x)",
            "INSERT INTO t VALUES (1)",
            "-- BEGIN\nINSERT INTO t VALUES (1)",
            "PRAGMA user_version = 3",
            "INSERT INTO sqlite_stat1x VALUES (1)",
            "ANALYZE sqlite_schema",
        ] {
            assert!(!is_dump_framing(statement), "{statement}");
        }
    }

    #[test]
    fn a_large_load_builds_each_index_in_a_request_of_its_own() {
        let statements = [
            "CREATE TABLE t (x, y)",
            "INSERT INTO t VALUES (1, 2)",
            "INSERT INTO t VALUES (3, 4)",
            "CREATE INDEX tx ON t (x)",
            "-- the second\ncreate unique index ty ON t (y)",
            "CREATE INDEX IF NOT EXISTS txy ON t (x, y)",
            "CREATE TABLE indexed (v)",
            "INSERT INTO indexed VALUES (5)",
        ]
        .map(sqlraft::Statement::new)
        .to_vec();
        // A load that fits one transaction stays one: it loads whole or not at all.
        let one = load_chunks(statements.clone(), 100, 1 << 20).expect("chunks");
        assert_eq!(one.len(), 1, "{one:?}");
        let chunks = load_chunks(statements, 4, 1 << 20).expect("chunks");
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 1, 1, 1, 2], "{chunks:?}");
        // The limits still cut chunks.
        let inserts = vec![sqlraft::Statement::new("INSERT INTO t VALUES (1, 2)"); 5];
        let sizes: Vec<usize> = load_chunks(inserts, 2, 1 << 20)
            .expect("chunks")
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [2, 2, 1]);
        use sqlraft::sql_text::creates_an_index;
        assert!(!creates_an_index("CREATE TABLE index_of (v)"));
        assert!(!creates_an_index("CREATE UNIQUE"));
        assert!(!creates_an_index("SELECT 'CREATE INDEX'"));
        assert!(creates_an_index("CREATE/**/INDEX bi ON b (x)"));
        assert!(creates_an_index("CREATE INDEX\"bi\"ON b (x)"));
        assert!(creates_an_index(
            "-- c\ncreate Unique /* d */ index u ON b (x)"
        ));
    }
}
