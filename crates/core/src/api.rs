//! The HTTP API: rqlite's data API (`/db/execute`, `/db/query`, `/db/request`) and the
//! cluster endpoints (`/status`, `/nodes`, `/readyz`, `/metrics`). `docs/API.md`
//! describes every endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value as Json, json};
use sqlraft::SqliteError;
use sqlraft::{Consistency, Node, NodeError, Role, Statement, Status, WriteRequest};

use crate::client;
use crate::results::{ResultItem, Shape};
use crate::statements::{self, BodyError};

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
struct Counters {
    write_requests: AtomicU64,
    write_statements: AtomicU64,
    read_requests: AtomicU64,
    read_statements: AtomicU64,
    statement_errors: AtomicU64,
    http_errors: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) node: Node,
    pub(crate) options: ApiOptions,
    counters: Counters,
}

pub(crate) type AppState = Arc<Shared>;

/// The router for a running node.
pub fn router(node: Node, options: ApiOptions) -> Router {
    let limit = options.max_body_bytes;
    let state = Arc::new(Shared {
        node,
        options,
        counters: Counters::default(),
    });
    Router::new()
        .route("/db/execute", post(execute))
        .route("/db/query", get(query_get).post(query_post))
        .route("/db/request", post(request))
        // Counts errors of the data API only: the routes above.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_errors,
        ))
        .route("/status", get(status))
        .route("/nodes", get(nodes))
        .route("/readyz", get(readyz))
        .route("/db/hash", get(content_hash))
        .route("/metrics", get(metrics))
        .merge(crate::services::routes())
        .merge(crate::web::routes())
        .layer(middleware::from_fn(refuse_cross_site))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// A browser on another site must not change anything through a browser that can
/// reach this node (a `text/plain` POST needs no CORS preflight). Requests without an
/// `Origin` header, as rqlite clients and curl send them, are not affected.
async fn refuse_cross_site(request: Request, next: Next) -> Response {
    let changes = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if changes && !crate::web::same_origin(request.headers()) {
        return json_response(
            StatusCode::FORBIDDEN,
            &json!({ "error": "cross-site request refused: send it from this node's own pages or without an Origin header" }),
            false,
        );
    }
    next.run(request).await
}

async fn count_errors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status().is_client_error() || response.status().is_server_error() {
        state.counters.http_errors.fetch_add(1, Ordering::Relaxed);
    }
    response
}

/// An answer other than 200, with `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &json!({ "error": self.message }), false)
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        let status = e.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is too large".to_string()
        } else {
            format!("cannot read the request body: {}", e.body_text())
        };
        ApiError { status, message }
    }
}

/// Node errors that fail a whole request. Retrying is safe after a 503; after a 500 the
/// write may or may not have been applied.
fn node_error(e: NodeError) -> ApiError {
    let status = match &e {
        NodeError::NoLeader
        | NodeError::Dropped
        | NodeError::Busy(_)
        | NodeError::Stopped
        | NodeError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        NodeError::Invalid(_) | NodeError::Query(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError {
        status,
        message: e.to_string(),
    }
}

pub(crate) fn json_response<T: serde::Serialize + ?Sized>(
    status: StatusCode,
    body: &T,
    pretty: bool,
) -> Response {
    let text = if pretty {
        serde_json::to_string_pretty(body)
    } else {
        serde_json::to_string(body)
    }
    .unwrap_or_else(|_| "{}".into());
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// Read consistency, rqlite's `level=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    None,
    Weak,
    Linearizable,
    Strong,
}

/// Query-string options shared by the data endpoints.
#[derive(Debug, Default)]
struct Flags {
    transaction: bool,
    timings: bool,
    pretty: bool,
    associative: bool,
    blob_array: bool,
    level: Option<Level>,
    min_index: Option<u64>,
    q: Option<String>,
}

impl Flags {
    /// rqlite's flags are switched on by their presence (`?pretty`); `=false` or `=0`
    /// switches them off.
    fn parse(pairs: &[(String, String)]) -> Result<Flags, ApiError> {
        let mut flags = Flags::default();
        for (key, value) in pairs {
            let on = !matches!(value.as_str(), "false" | "0");
            match key.as_str() {
                "transaction" => flags.transaction = on,
                "timings" => flags.timings = on,
                "pretty" => flags.pretty = on,
                "associative" => flags.associative = on,
                "blob_array" => flags.blob_array = on,
                "level" => {
                    flags.level = Some(match value.to_ascii_lowercase().as_str() {
                        "none" => Level::None,
                        "weak" => Level::Weak,
                        "linearizable" => Level::Linearizable,
                        "strong" => Level::Strong,
                        // rqlite serves `auto` and any level it does not know as weak,
                        // which is linearizable here: never staler than asked for.
                        _ => Level::Weak,
                    })
                }
                "min_index" => {
                    flags.min_index = Some(value.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "min_index {value:?} is not a non-negative integer"
                        ))
                    })?)
                }
                "q" => flags.q = Some(value.clone()),
                // Accepted for compatibility with rqlite clients, without effect here.
                _ => {}
            }
        }
        Ok(flags)
    }

    /// How results are written, for what they cost.
    fn json_shape(&self) -> sqlraft::JsonShape {
        sqlraft::JsonShape {
            blob_array: self.blob_array,
            pretty: self.pretty,
        }
    }

    /// The consistency of the first read; `weak` is served like `linearizable`
    /// (ReadIndex) since this node may be a follower.
    fn consistency(&self) -> Consistency {
        match self.level.unwrap_or(Level::None) {
            Level::None => Consistency::Local {
                min_index: self.min_index,
            },
            Level::Weak | Level::Linearizable => Consistency::Linearizable,
            Level::Strong => Consistency::Strong,
        }
    }
}

/// The outcome of the writes of one request.
struct Written {
    results: Vec<ResultItem>,
    index: u64,
    applied_here: bool,
}

/// Header on every write's answer: `true` when the node that answered had applied the
/// write, so that every later read there sees it (read-your-writes); `false` when it
/// answered before that (it waited up to the read timeout): read with
/// `min_index=<raft_index>` to be sure.
pub const APPLIED_HEADER: &str = "x-sqlraft-applied-locally";

fn applied_header(mut response: Response, applied_here: bool) -> Response {
    response.headers_mut().insert(
        APPLIED_HEADER,
        header::HeaderValue::from_static(if applied_here { "true" } else { "false" }),
    );
    response
}

/// Builds `{"results": [...], "raft_index"?, "time"?}`.
fn finish(
    flags: &Flags,
    results: Vec<ResultItem>,
    raft_index: Option<u64>,
    started: Instant,
) -> Response {
    #[derive(serde::Serialize)]
    struct Body {
        results: Vec<ResultItem>,
        #[serde(skip_serializing_if = "Option::is_none")]
        raft_index: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        time: Option<f64>,
    }
    let body = Body {
        results,
        raft_index,
        time: flags.timings.then(|| started.elapsed().as_secs_f64()),
    };
    json_response(StatusCode::OK, &body, flags.pretty)
}

/// Header that makes a write idempotent: a repeat within the window gets the first
/// answer and changes nothing.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Room kept in a request id for the run suffix of `/db/request` (` #10000`).
const RUN_SUFFIX_BYTES: usize = 8;

/// The request's `Idempotency-Key`, checked: printable ASCII, at most `max_bytes`.
fn idempotency_key(headers: &HeaderMap, max_bytes: usize) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= max_bytes)
        .filter(|k| k.bytes().all(|b| (0x21..0x7f).contains(&b)))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Idempotency-Key must be 1 to {max_bytes} printable ASCII characters without spaces"
            ))
        })?;
    Ok(Some(key.to_string()))
}

async fn execute(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let flags = Flags::parse(&pairs)?;
    let key = idempotency_key(&headers, sqlraft::MAX_REQUEST_ID_BYTES)?;
    let statements = statements::parse_body(&body?, state.options.max_statements)?;
    if statements.is_empty() {
        return Ok(finish(&flags, Vec::new(), None, started));
    }
    let written = state.write(statements, flags.transaction, key).await?;
    Ok(applied_header(
        finish(&flags, written.results, Some(written.index), started),
        written.applied_here,
    ))
}

async fn query_get(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let flags = Flags::parse(&pairs)?;
    let Some(q) = flags.q.clone() else {
        return Err(ApiError::bad_request("missing query parameter q"));
    };
    let results = state.read(vec![Statement::new(q)], &flags).await?;
    Ok(finish(&flags, results, None, started))
}

async fn query_post(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let flags = Flags::parse(&pairs)?;
    let body = body?;
    let statements = match (&flags.q, body.iter().all(u8::is_ascii_whitespace)) {
        (Some(q), true) => vec![Statement::new(q.clone())],
        _ => statements::parse_body(&body, state.options.max_statements)?,
    };
    let results = state.read(statements, &flags).await?;
    Ok(finish(&flags, results, None, started))
}

async fn request(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let flags = Flags::parse(&pairs)?;
    let key = idempotency_key(&headers, sqlraft::MAX_REQUEST_ID_BYTES - RUN_SUFFIX_BYTES)?;
    let statements = statements::parse_body(&body?, state.options.max_statements)?;
    let (results, written) = state.mixed(statements, &flags, key).await?;
    let response = finish(&flags, results, written.map(|(index, _)| index), started);
    Ok(match written {
        Some((_, applied_here)) => applied_header(response, applied_here),
        None => response,
    })
}

impl Shared {
    async fn write(
        &self,
        statements: Vec<Statement>,
        transaction: bool,
        request_id: Option<String>,
    ) -> Result<Written, ApiError> {
        let c = &self.counters;
        c.write_requests.fetch_add(1, Ordering::Relaxed);
        c.write_statements
            .fetch_add(statements.len() as u64, Ordering::Relaxed);
        let outcome = self
            .node
            .execute(WriteRequest {
                statements,
                transaction,
                request_id,
            })
            .await
            .map_err(node_error)?;
        let failed = outcome.results.iter().filter(|r| r.error.is_some()).count();
        c.statement_errors
            .fetch_add(failed as u64, Ordering::Relaxed);
        Ok(Written {
            results: outcome.results.into_iter().map(ResultItem::Write).collect(),
            index: outcome.raft_index,
            applied_here: outcome.applied_here,
        })
    }

    /// Runs reads in order. The first one carries the requested consistency; once it
    /// has passed, the rest read the same node's file, which is at least as fresh.
    async fn read(
        &self,
        statements: Vec<Statement>,
        flags: &Flags,
    ) -> Result<Vec<ResultItem>, ApiError> {
        self.counters.read_requests.fetch_add(1, Ordering::Relaxed);
        let mut consistency = self.first_consistency(flags).await?;
        let mut results = Vec::with_capacity(statements.len());
        let mut spent = 0;
        for statement in &statements {
            let (result, _) = self
                .read_one(statement, consistency, flags, &mut spent)
                .await?;
            results.push(result);
            consistency = Consistency::Local { min_index: None };
        }
        Ok(results)
    }

    async fn first_consistency(&self, flags: &Flags) -> Result<Consistency, ApiError> {
        let consistency = flags.consistency();
        if let (Some(index), false) = (
            flags.min_index,
            matches!(consistency, Consistency::Local { .. }),
        ) {
            self.node.wait_applied(index).await.map_err(node_error)?;
        }
        Ok(consistency)
    }

    /// One read; a statement error is a result. The flag says the read was refused
    /// because the statement writes.
    async fn read_one(
        &self,
        statement: &Statement,
        consistency: Consistency,
        flags: &Flags,
        spent: &mut usize,
    ) -> Result<(ResultItem, bool), ApiError> {
        self.counters
            .read_statements
            .fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        match self.node.query(statement, consistency).await {
            Ok(rows) => {
                let cost = rows.json_cost(flags.json_shape());
                if *spent + cost > self.options.max_result_bytes {
                    let message = format!(
                        "the results of this request are larger than {} bytes: split it, or select fewer rows",
                        self.options.max_result_bytes
                    );
                    return Ok((ResultItem::Error(message), false));
                }
                *spent += cost;
                let shape = Shape {
                    associative: flags.associative,
                    blob_array: flags.blob_array,
                };
                let time = flags.timings.then(|| started.elapsed().as_secs_f64());
                Ok((ResultItem::Rows { rows, shape, time }, false))
            }
            // Every read connection is busy: the node is overloaded, retry later.
            Err(NodeError::Query(e @ SqliteError::PoolUnavailable(_))) => Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
            }),
            Err(NodeError::Query(e)) => {
                self.counters
                    .statement_errors
                    .fetch_add(1, Ordering::Relaxed);
                let writes = matches!(e, SqliteError::WriteInRead(_));
                Ok((ResultItem::Error(e.to_string()), writes))
            }
            Err(e) => Err(node_error(e)),
        }
    }

    /// `/db/request`: runs of consecutive writes go to the log as one request each;
    /// reads run here at the requested level, and after a write they wait for it.
    async fn mixed(
        &self,
        statements: Vec<Statement>,
        flags: &Flags,
        key: Option<String>,
    ) -> Result<(Vec<ResultItem>, Option<(u64, bool)>), ApiError> {
        // Each run of writes is its own request with its own id: the key itself for
        // the first (so a request with one run of writes matches the same key sent to
        // /db/execute), `<key> #N` for the next (a space never appears in a key).
        let mut runs = 0;
        let mut run_id = || {
            runs += 1;
            key.as_ref().map(|k| match runs {
                1 => k.clone(),
                n => format!("{k} #{n}"),
            })
        };
        let mut results = Vec::with_capacity(statements.len());
        let mut spent = 0;
        let mut raft_index = None;
        let mut applied_here = true;
        let mut consistency = None;
        let mut pending: Vec<Statement> = Vec::new();
        for statement in statements {
            if !statements::is_read(&statement.sql) {
                pending.push(statement);
                continue;
            }
            if !pending.is_empty() {
                let written = self
                    .write(std::mem::take(&mut pending), flags.transaction, run_id())
                    .await?;
                results.extend(written.results);
                let index = written.index;
                raft_index = Some(index);
                applied_here &= written.applied_here;
                consistency = Some(Consistency::Local {
                    min_index: Some(index),
                });
            }
            let level = match consistency {
                Some(c) => c,
                None => {
                    self.counters.read_requests.fetch_add(1, Ordering::Relaxed);
                    self.first_consistency(flags).await?
                }
            };
            let (result, writes) = self.read_one(&statement, level, flags, &mut spent).await?;
            consistency = Some(Consistency::Local {
                min_index: raft_index,
            });
            if writes {
                // Classified as a read but it writes (e.g. WITH ... INSERT): run it as a write.
                let written = self
                    .write(vec![statement], flags.transaction, run_id())
                    .await?;
                results.extend(written.results);
                let index = written.index;
                raft_index = Some(index);
                applied_here &= written.applied_here;
                consistency = Some(Consistency::Local {
                    min_index: Some(index),
                });
            } else {
                results.push(result);
            }
        }
        if !pending.is_empty() {
            let written = self.write(pending, flags.transaction, run_id()).await?;
            results.extend(written.results);
            raft_index = Some(written.index);
            applied_here &= written.applied_here;
        }
        Ok((results, raft_index.map(|index| (index, applied_here))))
    }
}

/// The role name shown by the API. A node not yet in the configuration it knows of
/// (just admitted, catching up) is shown as a learner.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Joining => "learner",
        other => other.as_str(),
    }
}

/// Ready: a leader is known and this node has applied what it knows to be committed.
pub fn readiness(status: &Status) -> Result<(), String> {
    if status.leader_id == 0 {
        return Err("no leader known".into());
    }
    if status.applied_index < status.leader_commit_index {
        return Err(format!(
            "applied index {} is behind the leader's commit index {}",
            status.applied_index, status.leader_commit_index
        ));
    }
    Ok(())
}

/// The display name of a service: `core-1` for the first, `core-<fqdn>` for the others.
pub fn service_name(service_id: &str, raft_addr: &str) -> String {
    if service_id == sqlraft::FIRST_SERVICE_ID {
        return "core-1".into();
    }
    let host = raft_addr.rsplit_once(':').map_or(raft_addr, |(h, _)| h);
    format!(
        "core-{}",
        host.trim_start_matches('[').trim_end_matches(']')
    )
}

fn status_json(node: &Node) -> Json {
    let s = node.status();
    let leader = s.leader();
    let own = s.members.iter().find(|m| m.raft_id == s.raft_id);
    json!({
        "id": s.service_id,
        "raft_id": s.raft_id,
        "name": service_name(&s.service_id, node.raft_addr()),
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
    })
}

async fn status(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &status_json(&state.node), false)
}

/// `GET /db/hash`: `{"id", "applied_index", "sha256"}` of this node's content.
async fn content_hash(State(state): State<AppState>) -> Result<Response, ApiError> {
    let hash = state.node.content_hash().await.map_err(node_error)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": state.node.service_id(),
            "applied_index": hash.applied_index,
            "sha256": hash.sha256,
        }),
        false,
    ))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match readiness(&state.node.status()) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

/// What a probe of another member's `/status` found.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub(crate) role: Option<String>,
    pub(crate) applied_index: Option<u64>,
    pub(crate) term: Option<u64>,
}

async fn probe(http_addr: String, timeout: Duration) -> Option<Probe> {
    let response = client::get(&http_addr, "/status", timeout).await.ok()?;
    if response.status != 200 {
        return None;
    }
    let body = response.json().ok()?;
    Some(Probe {
        role: body["role"].as_str().map(str::to_string),
        applied_index: body["applied_index"].as_u64(),
        term: body["term"].as_u64(),
    })
}

/// One member of the configuration with what is known of it right now.
#[derive(Debug, Clone)]
pub(crate) struct LiveMember {
    pub(crate) raft_id: u64,
    pub(crate) service_id: String,
    pub(crate) raft_addr: String,
    pub(crate) http_addr: String,
    pub(crate) voter: bool,
    pub(crate) role: String,
    pub(crate) reachable: bool,
    pub(crate) applied_index: Option<u64>,
    pub(crate) term: Option<u64>,
}

/// This node's status and every member it knows, with each other member's `/status`
/// asked in parallel (bounded by `timeout`). Reachability comes from raft on the
/// leader, from the probe elsewhere.
pub(crate) async fn live_members(node: &Node, timeout: Duration) -> (Status, Vec<LiveMember>) {
    let s = node.status();
    let mut probes = tokio::task::JoinSet::new();
    for m in &s.members {
        if m.raft_id != s.raft_id && !m.http_addr.is_empty() {
            let (id, addr) = (m.raft_id, m.http_addr.clone());
            probes.spawn(async move { (id, probe(addr, timeout).await) });
        }
    }
    let mut found = std::collections::HashMap::new();
    while let Some(joined) = probes.join_next().await {
        if let Ok((id, Some(p))) = joined {
            found.insert(id, p);
        }
    }
    let leader = s.role == Role::Leader;
    let members = s
        .members
        .iter()
        .map(|m| {
            let me = m.raft_id == s.raft_id;
            let probed = found.get(&m.raft_id);
            let configured = if m.raft_id == s.leader_id {
                "leader"
            } else if m.voter {
                "follower"
            } else {
                "learner"
            };
            let role = if me {
                role_name(s.role).to_string()
            } else {
                probed
                    .and_then(|p| p.role.clone())
                    .unwrap_or_else(|| configured.into())
            };
            let reachable = if me {
                true
            } else if leader {
                m.reachable.unwrap_or(false)
            } else {
                probed.is_some()
            };
            let (applied_index, term) = if me {
                (Some(s.applied_index), Some(s.term))
            } else {
                (
                    probed.and_then(|p| p.applied_index),
                    probed.and_then(|p| p.term),
                )
            };
            LiveMember {
                raft_id: m.raft_id,
                service_id: m.service_id.clone(),
                raft_addr: m.raft_addr.clone(),
                http_addr: m.http_addr.clone(),
                voter: m.voter,
                role,
                reachable,
                applied_index,
                term,
            }
        })
        .collect();
    (s, members)
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
                "name": service_name(&m.service_id, &m.raft_addr),
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
    let single: [(&str, &str, &str, u64); 13] = [
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

#[cfg(test)]
mod readiness_tests {
    use super::*;

    fn status(applied: u64, commit: u64, leader_commit: u64, leader_id: u64) -> Status {
        Status {
            raft_id: 2,
            service_id: "s".into(),
            role: Role::Follower,
            leader_id,
            term: 3,
            commit_index: commit,
            leader_commit_index: leader_commit,
            applied_index: applied,
            last_index: commit,
            voters: vec![1, 2, 3],
            learners: Vec::new(),
            members: Vec::new(),
        }
    }

    #[test]
    fn ready_means_caught_up_with_the_leader_not_with_the_own_log() {
        assert!(readiness(&status(10, 10, 10, 1)).is_ok());
        // Its own log ends at 10, but the leader said 50 is committed.
        let behind = readiness(&status(10, 10, 50, 1)).unwrap_err();
        assert!(behind.contains("leader's commit index 50"), "{behind}");
        assert!(readiness(&status(10, 10, 10, 0)).is_err(), "no leader");
    }
}
