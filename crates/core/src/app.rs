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
use crate::routes::{Access, Routes};
use crate::state::{AppState, Counters, Shared};

pub use crate::data_api::{APPLIED_HEADER, IDEMPOTENCY_HEADER};
pub use crate::services_api::MAX_SERVICES_BODY_BYTES;
pub use crate::state::ApiOptions;
use crate::{cluster_api, data_api, metrics, services_api, system_api, web};

/// The router for a running node.
pub fn router(node: Node, options: ApiOptions) -> Router {
    let limit = options.max_body_bytes;
    let (data, data_table) = data_api::routes().into_parts();
    let (rest, rest_table) = routes().into_parts();
    let state = Arc::new(Shared {
        queue: crate::queue::WriteQueue::new(node.clone()),
        node,
        options,
        counters: Counters::default(),
        http_seconds: crate::state::http_seconds(),
        restore_slot: tokio::sync::Mutex::new(()),
        routes: data_table.into_iter().chain(rest_table).collect(),
        sessions: crate::sessions::Sessions::default(),
        issued: Default::default(),
        started: std::time::Instant::now(),
        started_at: time::OffsetDateTime::now_utc(),
    });
    data
        // Counts errors of the data API only: the routes above.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_errors,
        ))
        .merge(rest)
        // Runs after routing (each route is wrapped), so it knows the matched route.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            crate::access::authorize,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            refuse_cross_site,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(close_after_refused_body))
        .layer(middleware::map_response(rqlite_version))
        .with_state(state)
}

/// `X-Rqlite-Version`, on every answer as rqlite sends it. rqlite's tools look for the
/// header to recognise the API (its shell requires exactly one); the value names this
/// server and its version rather than an rqlite release it is not.
pub const RQLITE_VERSION: &str = concat!("sqlraft-", env!("CARGO_PKG_VERSION"));

async fn rqlite_version(mut response: Response) -> Response {
    response.headers_mut().insert(
        "x-rqlite-version",
        axum::http::HeaderValue::from_static(RQLITE_VERSION),
    );
    response
}

/// Every route but the data API's, with the access each needs.
fn routes() -> Routes<AppState> {
    data_api::hash_routes()
        .merge(cluster_api::routes())
        .merge(metrics::routes())
        .merge(services_api::routes())
        .merge(system_api::routes())
        .merge(web::routes())
        .merge(crate::console::routes())
}

/// Every route of the router, with the access it needs: the table of permissions
/// (`docs/SECURITY.md`), for its tests.
pub fn route_table() -> Vec<(&'static str, &'static str, String)> {
    let (_, data) = data_api::routes().into_parts();
    let (_, rest) = routes().into_parts();
    data.into_iter()
        .chain(rest)
        .map(|d| {
            let access = match d.access {
                Access::Public => "public".to_string(),
                Access::Api(perms) => format!("api:{}", names(perms)),
                Access::Web(perms) => format!("web:{}", names(perms)),
            };
            (d.verb.name(), d.path, access)
        })
        .collect()
}

fn names(perms: &[crate::auth::Perm]) -> String {
    perms.iter().map(|p| p.name()).collect::<Vec<_>>().join("+")
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
///
/// With allowed hosts (`--http.allowed-hosts`, or the defaults `sqlraft-core run`
/// gives), every request's `Host` must be one of them or an IP address: a page on a
/// name an attacker controls and points at this node (DNS rebinding) is then refused,
/// even though its `Origin` and `Host` agree. Every request, not only those that look
/// like a browser's: a same-origin `fetch` GET over plain HTTP carries neither `Origin`
/// nor `Sec-Fetch-*` (found by a review).
async fn refuse_cross_site(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = &state.options.allowed_hosts;
    if !allowed.is_empty() {
        let host = request
            .headers()
            .get(header::HOST)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"))
            .unwrap_or_default();
        if !host.is_empty() && !is_ip_host(host) && !host_allowed(host, allowed) {
            let message = format!(
                "this node does not answer under the name {host:?}: use an IP address or one of {} (--http.allowed-hosts)",
                allowed.join(", ")
            );
            if request.uri().path() == "/" || request.uri().path().starts_with("/ui/") {
                return web::refusal_page(StatusCode::FORBIDDEN, &message);
            }
            return json_response(StatusCode::FORBIDDEN, &json!({ "error": message }), false);
        }
    }
    let changes = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if changes && !same_origin(request.headers(), allowed) {
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
/// cross-site`, or an `Origin` that is not one of `allowed` hosts (without allowed
/// hosts: not this node's own `Host`). A header that is there but cannot be read
/// counts as another site's.
pub(crate) fn same_origin(headers: &HeaderMap, allowed: &[String]) -> bool {
    if let Some(Ok("cross-site") | Err(_)) = headers.get("sec-fetch-site").map(|v| v.to_str()) {
        return false;
    }
    let origin = match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => return true,
        Some(Err(_)) => return false,
        Some(Ok(origin)) => origin,
    };
    let Some(origin_host) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    if !allowed.is_empty() {
        return host_allowed(origin_host, allowed);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin_host == host
}

/// True when `host` (as `Host` carries it, with or without a port) is an IP address:
/// a browser sends the name it resolved, so an address cannot be a rebound name.
fn is_ip_host(host: &str) -> bool {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').is_some_and(|(ip, port)| {
            ip.parse::<std::net::Ipv6Addr>().is_ok()
                && (port.is_empty()
                    || port
                        .strip_prefix(':')
                        .is_some_and(|p| p.parse::<u16>().is_ok()))
        });
    }
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    name.parse::<std::net::Ipv4Addr>().is_ok()
        && host
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_ok())
}

/// True when `host` (`name` or `name:port`, as `Host` and `Origin` carry it) is one of
/// `allowed`: an entry with a port must match with it, one without matches any port.
/// Names compare without regard to case.
pub(crate) fn host_allowed(host: &str, allowed: &[String]) -> bool {
    // `name.` is `name` (a fully qualified name with its root).
    let host = host.strip_suffix('.').unwrap_or(host);
    let name = match host.rsplit_once(':') {
        // `[::1]:7220`, `name:7220`; a bare IPv6 address has no brackets here.
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    allowed
        .iter()
        .any(|entry| entry.eq_ignore_ascii_case(host) || entry.eq_ignore_ascii_case(name))
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
        assert!(same_origin(&h, &[]));
        h.insert(header::ORIGIN, "http://127.0.0.1:7220".parse().unwrap());
        assert!(same_origin(&h, &[]));
        h.insert(header::ORIGIN, "http://evil.example.com".parse().unwrap());
        assert!(!same_origin(&h, &[]));
        // Found by a hostile tester: an Origin with a byte that is not UTF-8 passed.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:7220".parse().unwrap());
        h.insert(
            header::ORIGIN,
            axum::http::HeaderValue::from_bytes(b"http://evil.example\xff").unwrap(),
        );
        assert!(!same_origin(&h, &[]));
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&h, &[]));
    }

    #[test]
    fn with_allowed_hosts_the_origin_is_compared_with_them_not_with_host() {
        let allowed = vec![
            "core-1.example.com".to_string(),
            "10.0.0.5:7220".to_string(),
        ];
        let mut h = HeaderMap::new();
        // DNS rebinding: the attacker's name in both Host and Origin.
        h.insert(header::HOST, "evil.example:7220".parse().unwrap());
        h.insert(header::ORIGIN, "http://evil.example:7220".parse().unwrap());
        assert!(same_origin(&h, &[]), "without allowed hosts they agree");
        assert!(!same_origin(&h, &allowed));
        h.insert(
            header::ORIGIN,
            "https://CORE-1.example.com:7220".parse().unwrap(),
        );
        assert!(same_origin(&h, &allowed));
        assert!(host_allowed("10.0.0.5:7220", &allowed));
        assert!(!host_allowed("10.0.0.5:7221", &allowed));
        assert!(!host_allowed("10.0.0.5", &allowed));
        assert!(host_allowed("core-1.example.com", &allowed));
        assert!(host_allowed("[::1]:7220", &["[::1]".to_string()]));
        assert!(is_ip_host("10.1.2.3:7220") && is_ip_host("10.1.2.3") && is_ip_host("[::1]:7220"));
        assert!(!is_ip_host("evil.example:7220") && !is_ip_host("10.1.2.3.evil.example"));
        assert!(!is_ip_host("10.1.2.3:x") && !is_ip_host("[::1]x"));
        assert!(!host_allowed("core-1.example.com.evil.example", &allowed));
        assert!(host_allowed("core-1.example.com.:7220", &allowed));
        assert!(host_allowed("core-1.example.com.", &allowed));
    }
}
