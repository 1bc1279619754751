//! rqlite's data API: `/db/execute`, `/db/query`, `/db/request`, and `/db/hash`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sqlraft::{Consistency, ErrorKind, NodeError, SqliteError, Statement, WriteRequest};

use crate::auth::Perm;
use crate::http_error::{ApiError, json_response};
use crate::results::{ResultItem, Shape};
use crate::routes::{Access, Routes, Verb};
use crate::state::{AppState, Shared};
use crate::statements;

/// The data routes; `/db/hash` is not counted as a data request.
pub(crate) fn routes() -> Routes<AppState> {
    Routes::new()
        .add(
            Verb::Post,
            "/db/execute",
            Access::Api(&[Perm::Execute]),
            execute,
        )
        .add(
            Verb::Get,
            "/db/query",
            Access::Api(&[Perm::Query]),
            query_get,
        )
        .add(
            Verb::Post,
            "/db/query",
            Access::Api(&[Perm::Query]),
            query_post,
        )
        // rqlite asks for both: the request may read and write.
        .add(
            Verb::Post,
            "/db/request",
            Access::Api(&[Perm::Execute, Perm::Query]),
            request,
        )
}

/// `GET /db/hash`.
pub(crate) fn hash_routes() -> Routes<AppState> {
    Routes::new().add(
        Verb::Get,
        "/db/hash",
        Access::Api(&[Perm::Query]),
        content_hash,
    )
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
    redirect: bool,
    queue: bool,
    wait: bool,
    timeout: Option<std::time::Duration>,
}

impl Flags {
    /// rqlite's flags are switched on by their presence (`?pretty`); `=false` or `=0`
    /// switches them off.
    fn parse(pairs: &[(String, String)], uri: &Uri) -> Result<Flags, ApiError> {
        // The query's parser replaces escapes that are not UTF-8 (`q=%ff`): a
        // statement's text would change behind its sender's back, where a JSON body
        // holding them is refused.
        if let Some(raw) = uri.query()
            && percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .is_err()
        {
            return Err(ApiError::bad_request(
                "the query string's escapes do not decode to UTF-8",
            ));
        }
        let mut flags = Flags::default();
        for (key, value) in pairs {
            let on = crate::state::flag_on(value);
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
                "redirect" => flags.redirect = on,
                "queue" => flags.queue = on,
                "wait" => flags.wait = on,
                "timeout" => {
                    flags.timeout = Some(
                        crate::duration::parse(value)
                            .map_err(|e| ApiError::bad_request(format!("timeout: {e}")))?,
                    )
                }
                // Accepted for compatibility with rqlite clients, without effect here.
                _ => {}
            }
        }
        Ok(flags)
    }

    /// How rows are written.
    fn shape(&self) -> Shape {
        Shape {
            associative: self.associative,
            blob_array: self.blob_array,
        }
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

/// With `?redirect`, a request that needs the leader and reached another node is
/// answered 301 with the same path and query on the leader's API, as rqlite does
/// (clients find the leader this way); 503 while no leader is known. `None`: serve it
/// here (this node leads, or no redirect was asked for).
fn redirect_to_leader(state: &Shared, flags: &Flags, uri: &Uri) -> Option<Response> {
    if !flags.redirect {
        return None;
    }
    let status = state.node.status();
    if status.role == sqlraft::Role::Leader {
        return None;
    }
    let leader = status.leader().filter(|l| !l.http_addr.is_empty());
    let Some(leader) = leader else {
        return Some(
            ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "leader not found".into(),
            }
            .into_response(),
        );
    };
    let scheme = state.options.scheme();
    let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let location = format!("{scheme}://{}{target}", leader.http_addr);
    let Ok(value) = header::HeaderValue::from_str(&location) else {
        return Some(
            ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!("the leader's address {:?} is not a URL", leader.http_addr),
            }
            .into_response(),
        );
    };
    let mut response = (StatusCode::MOVED_PERMANENTLY, "").into_response();
    response.headers_mut().insert(header::LOCATION, value);
    Some(response)
}

/// rqlite serves `weak` and `strong` reads on the leader and redirects them there;
/// `none` and `linearizable` reads are served by any node, here too.
fn query_redirect(state: &Shared, flags: &Flags, uri: &Uri) -> Option<Response> {
    match flags.level {
        Some(Level::Weak | Level::Strong) => redirect_to_leader(state, flags, uri),
        _ => None,
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
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let flags = Flags::parse(&pairs, &uri)?;
    // A queued write is taken by any node (rqlite ignores `redirect` for it).
    if !flags.queue
        && let Some(redirect) = redirect_to_leader(&state, &flags, &uri)
    {
        return Ok(redirect);
    }
    let key = idempotency_key(&headers, sqlraft::MAX_REQUEST_ID_BYTES)?;
    let statements = statements::parse_body(&body?, state.options.max_statements)?;
    if flags.queue {
        if key.is_some() {
            return Err(ApiError::bad_request(
                "a queued write cannot carry an Idempotency-Key: queued batches are \
                 already applied at most once; send it without ?queue",
            ));
        }
        if statements.is_empty() && !flags.wait {
            return Err(ApiError::bad_request("no statements"));
        }
        return queued(&state, statements, &flags, started).await;
    }
    if statements.is_empty() {
        return Ok(finish(&flags, Vec::new(), None, started));
    }
    let written = state.write(statements, &flags, key).await?;
    Ok(applied_header(
        finish(&flags, written.results, Some(written.index), started),
        written.applied_here,
    ))
}

/// How long `&wait` waits for a queued request's batch without `&timeout`.
const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `/db/execute?queue`: `{"results": [], "sequence_number": N}` once queued, or with
/// `&wait` once its batch is written.
async fn queued(
    state: &Shared,
    statements: Vec<Statement>,
    flags: &Flags,
    started: Instant,
) -> Result<Response, ApiError> {
    let unavailable = |e: crate::queue::QueueError| ApiError {
        status: match e {
            crate::queue::QueueError::Invalid(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        },
        message: e.to_string(),
    };
    let c = &state.counters;
    c.write_requests.fetch_add(1, Ordering::Relaxed);
    c.write_statements
        .fetch_add(statements.len() as u64, Ordering::Relaxed);
    let (sequence_number, done) = state
        .queue
        .push(statements, flags.wait)
        .await
        .map_err(unavailable)?;
    if let Some(done) = done {
        let limit = flags.timeout.unwrap_or(QUEUE_WAIT);
        match tokio::time::timeout(limit, done).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => return Err(unavailable(e)),
            Ok(Err(_)) => return Err(unavailable(crate::queue::QueueError::Closed)),
            Err(_) => {
                return Err(ApiError {
                    status: StatusCode::REQUEST_TIMEOUT,
                    message: format!(
                        "queued request {sequence_number} was not written within {} ms; it \
                         stays queued",
                        limit.as_millis()
                    ),
                });
            }
        }
    }
    let mut body = json!({ "results": [], "sequence_number": sequence_number });
    if flags.timings {
        body["time"] = json!(started.elapsed().as_secs_f64());
    }
    Ok(json_response(StatusCode::OK, &body, flags.pretty))
}

async fn query_get(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let flags = Flags::parse(&pairs, &uri)?;
    if let Some(redirect) = query_redirect(&state, &flags, &uri) {
        return Ok(redirect);
    }
    // As rqlite: no `q` is no statement; an empty one is refused.
    let Some(q) = flags.q.clone() else {
        return Ok(finish(&flags, Vec::new(), None, started));
    };
    if q.trim().is_empty() {
        return Err(ApiError::bad_request("query parameter not set"));
    }
    let results = state.read(vec![Statement::new(q)], &flags).await?;
    Ok(finish(&flags, results, None, started))
}

async fn query_post(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let flags = Flags::parse(&pairs, &uri)?;
    if let Some(redirect) = query_redirect(&state, &flags, &uri) {
        return Ok(redirect);
    }
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
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let flags = Flags::parse(&pairs, &uri)?;
    let key = idempotency_key(&headers, sqlraft::MAX_REQUEST_ID_BYTES - RUN_SUFFIX_BYTES)?;
    let statements = statements::parse_body(&body?, state.options.max_statements)?;
    if flags.transaction {
        refuse_split_transaction(&statements)?;
    }
    // Writes need the leader; so do reads at the levels rqlite serves there.
    let needs_leader = statements.iter().any(|s| !statements::is_read(&s.sql))
        || matches!(flags.level, Some(Level::Weak | Level::Strong));
    if needs_leader && let Some(redirect) = redirect_to_leader(&state, &flags, &uri) {
        return Ok(redirect);
    }
    let (results, written) = state.mixed(statements, &flags, key).await?;
    let response = finish(&flags, results, written.map(|(index, _)| index), started);
    Ok(match written {
        Some((_, applied_here)) => applied_header(response, applied_here),
        None => response,
    })
}

/// With `?transaction`, the writes of a `/db/request` must come together: reads run
/// here, outside the raft log, so writes on both sides of a read would be two
/// transactions, and a failure in the second would leave the first applied (rqlite runs
/// the whole request as one; found by a review). Refused before anything runs.
fn refuse_split_transaction(statements: &[Statement]) -> Result<(), ApiError> {
    let mut runs = 0;
    let mut in_run = false;
    for statement in statements {
        let write = !statements::is_read(&statement.sql);
        if write && !in_run {
            runs += 1;
        }
        in_run = write;
    }
    if runs > 1 {
        return Err(ApiError::bad_request(
            "with ?transaction the writes of a request must come one after the other (reads \
             may come before or after them): sqlraft runs reads outside the raft log, so \
             writes with a read between them would not be one transaction; nothing was done"
                .to_string(),
        ));
    }
    Ok(())
}

impl Shared {
    async fn write(
        &self,
        statements: Vec<Statement>,
        flags: &Flags,
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
                transaction: flags.transaction,
                request_id,
                parts: Vec::new(),
            })
            .await?;
        let failed = outcome.results.iter().filter(|r| r.error.is_some()).count();
        c.statement_errors
            .fetch_add(failed as u64, Ordering::Relaxed);
        let shape = flags.shape();
        // A repeated request applied nothing and took no time.
        let mut seconds = outcome.seconds.into_iter();
        let results = outcome
            .results
            .into_iter()
            .map(|result| ResultItem::Write {
                result,
                shape,
                time: flags.timings.then(|| seconds.next().unwrap_or(0.0)),
            })
            .collect();
        Ok(Written {
            results,
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
            self.node.wait_applied(index).await?;
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
                let shape = flags.shape();
                let time = flags.timings.then(|| started.elapsed().as_secs_f64());
                Ok((ResultItem::Rows { rows, shape, time }, false))
            }
            // Not the statement's fault (overloaded, no leader, a timeout): the whole
            // request fails with the status the error's kind says.
            Err(e) if e.kind() != ErrorKind::Invalid => Err(e.into()),
            // The statement's own fault: its result, as rqlite reports it.
            Err(NodeError::Query(e)) => {
                self.counters
                    .statement_errors
                    .fetch_add(1, Ordering::Relaxed);
                let writes = matches!(e, SqliteError::WriteInRead(_));
                Ok((ResultItem::Error(e.to_string()), writes))
            }
            Err(e) => Err(e.into()),
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
        let mut raft_index = None;
        self.mixed_runs(statements, flags, key, &mut raft_index)
            .await
            .map_err(|e| match raft_index {
                // Writes of this request are applied: whatever the error, the answer
                // must not say that nothing was.
                Some(index) => ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: format!(
                        "the writes of this request up to raft index {index} were applied; \
                         then it failed: {}",
                        e.message
                    ),
                },
                None => e,
            })
    }

    async fn mixed_runs(
        &self,
        statements: Vec<Statement>,
        flags: &Flags,
        key: Option<String>,
        raft_index: &mut Option<u64>,
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
        let mut applied_here = true;
        let mut consistency = None;
        let mut pending: Vec<Statement> = Vec::new();
        for statement in statements {
            if !statements::is_read(&statement.sql) {
                pending.push(statement);
                continue;
            }
            if !pending.is_empty() {
                let run = pending.len();
                let written = self
                    .write(std::mem::take(&mut pending), flags, run_id())
                    .await?;
                let run_failed = written.results.len() < run || written.results.iter().any(failed);
                results.extend(written.results);
                let index = written.index;
                *raft_index = Some(index);
                applied_here &= written.applied_here;
                // A transaction that failed was rolled back and stopped: so does the
                // request, its results the statements up to the failure, as in rqlite
                // (found by a review: the rest ran, their results one place off).
                if run_failed && flags.transaction {
                    return Ok((results, raft_index.map(|index| (index, applied_here))));
                }
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
                min_index: *raft_index,
            });
            if writes && flags.transaction {
                // Classified as a read but it writes: run on its own it would be a
                // transaction of its own. The request ends here, this statement not run.
                results.push(ResultItem::Error(
                    "this statement writes, but was taken for a read: with ?transaction it is \
                     not run on its own; send it among the request's writes"
                        .to_string(),
                ));
                return Ok((results, raft_index.map(|index| (index, applied_here))));
            }
            if writes {
                // Classified as a read but it writes (e.g. WITH ... INSERT): run it as a write.
                let written = self.write(vec![statement], flags, run_id()).await?;
                results.extend(written.results);
                let index = written.index;
                *raft_index = Some(index);
                applied_here &= written.applied_here;
                consistency = Some(Consistency::Local {
                    min_index: Some(index),
                });
            } else {
                // A failed read ends a transaction's request too (found by a review).
                let stop = flags.transaction && failed(&result);
                results.push(result);
                if stop {
                    return Ok((results, raft_index.map(|index| (index, applied_here))));
                }
            }
        }
        if !pending.is_empty() {
            let written = self.write(pending, flags, run_id()).await?;
            results.extend(written.results);
            *raft_index = Some(written.index);
            applied_here &= written.applied_here;
        }
        Ok((results, raft_index.map(|index| (index, applied_here))))
    }
}

/// Whether a result says its statement failed.
fn failed(item: &ResultItem) -> bool {
    matches!(
        item,
        ResultItem::Error(_)
            | ResultItem::Write {
                result: sqlraft::StatementResult { error: Some(_), .. },
                ..
            }
    )
}

/// `GET /db/hash`: `{"id", "applied_index", "sha256"}` of this node's content.
async fn content_hash(State(state): State<AppState>) -> Result<Response, ApiError> {
    let hash = state.node.content_hash().await?;
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
