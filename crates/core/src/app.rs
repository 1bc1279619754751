//! The HTTP application: the one place that puts the routers together, with the limits
//! and checks every route shares (body size, cross-site requests, error counting).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use serde_json::json;
use sqlraft::Node;

use crate::http_error::json_response;
use crate::state::{AppState, Counters, Shared};

pub use crate::data_api::{APPLIED_HEADER, IDEMPOTENCY_HEADER};
pub use crate::services_api::MAX_SERVICES_BODY_BYTES;
pub use crate::state::ApiOptions;
use crate::{cluster_api, data_api, metrics, services_api, system_api, web};

/// The router for a running node.
pub fn router(node: Node, options: ApiOptions) -> Router {
    let limit = options.max_body_bytes;
    let state = Arc::new(Shared {
        node,
        options,
        counters: Counters::default(),
        http_seconds: crate::state::http_seconds(),
        restore_slot: tokio::sync::Mutex::new(()),
    });
    data_api::routes()
        // Counts errors of the data API only: the routes above.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_errors,
        ))
        .merge(data_api::hash_routes())
        .merge(cluster_api::routes())
        .merge(metrics::routes())
        .merge(services_api::routes())
        .merge(system_api::routes())
        .merge(web::routes())
        .layer(middleware::from_fn(refuse_cross_site))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(close_after_refused_body))
        .with_state(state)
}

/// A body refused for its size was not read, so the connection cannot carry another
/// request: the server closes it after the 413. Saying so (`Connection: close`) keeps a
/// client from putting the connection back in its pool and sending its next request
/// into a socket that is about to close (it then fails with a broken pipe).
async fn close_after_refused_body(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// A browser on another site must not change anything through a browser that can
/// reach this node (a `text/plain` POST needs no CORS preflight, and a form post from
/// another site could remove a service). Requests without an `Origin` header, as
/// rqlite clients and curl send them, are not affected.
async fn refuse_cross_site(request: Request, next: Next) -> Response {
    let changes = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if changes && !same_origin(request.headers()) {
        if request.uri().path().starts_with("/ui/") {
            return web::cross_site_page();
        }
        return json_response(
            StatusCode::FORBIDDEN,
            &json!({ "error": "cross-site request refused: send it from this node's own pages or without an Origin header" }),
            false,
        );
    }
    next.run(request).await
}

/// True unless the request says it comes from another site: `Sec-Fetch-Site:
/// cross-site`, or an `Origin` that is not this node's own `Host`. A header that is
/// there but cannot be read counts as another site's.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(Ok("cross-site") | Err(_)) = headers.get("sec-fetch-site").map(|v| v.to_str()) {
        return false;
    }
    let origin = match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => return true,
        Some(Err(_)) => return false,
        Some(Ok(origin)) => origin,
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin == format!("http://{host}") || origin == format!("https://{host}")
}

async fn count_errors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    // The data API's own paths only (this layer wraps nothing else): a bounded label.
    let path = match request.uri().path() {
        "/db/execute" => "/db/execute",
        "/db/query" => "/db/query",
        "/db/request" => "/db/request",
        _ => "other",
    };
    let response = next.run(request).await;
    state
        .http_seconds
        .with_label_values(&[path])
        .observe(started.elapsed().as_secs_f64());
    if response.status().is_client_error() || response.status().is_server_error() {
        state.counters.http_errors.fetch_add(1, Ordering::Relaxed);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_from_other_sites_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:7220".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:7220".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example.com".parse().unwrap());
        assert!(!same_origin(&h));
        // Found by a hostile tester: an Origin with a byte that is not UTF-8 passed.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:7220".parse().unwrap());
        h.insert(
            header::ORIGIN,
            axum::http::HeaderValue::from_bytes(b"http://evil.example\xff").unwrap(),
        );
        assert!(!same_origin(&h));
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&h));
    }
}
