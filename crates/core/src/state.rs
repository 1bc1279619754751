//! What every HTTP handler shares: the node, the API's limits, the counters.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use sqlraft::Node;

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
    /// Users and permissions (`--auth`); `None`: every route is open, as in rqlite.
    pub auth: Option<std::sync::Arc<crate::auth::Users>>,
    /// The API is served over HTTPS (the session cookie is then `Secure`).
    pub https: bool,
    /// The names browsers may reach this node under (`Host`, `Origin`); empty: no
    /// check of `Host`, and an `Origin` must match the request's own `Host`.
    pub allowed_hosts: Vec<String>,
}

impl ApiOptions {
    /// The scheme of this API's URLs (`api_addr`, redirects).
    pub(crate) fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }
}

/// An rqlite flag given a value: on unless `false` or `0`.
pub(crate) fn flag_on(value: &str) -> bool {
    !matches!(value, "false" | "0")
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            max_body_bytes: 16 << 20,
            max_statements: 10_000,
            probe_timeout_ms: 1_000,
            max_result_bytes: 64 << 20,
            auth: None,
            https: false,
            allowed_hosts: Vec::new(),
        }
    }
}

/// Counters shown by `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) write_requests: AtomicU64,
    pub(crate) write_statements: AtomicU64,
    pub(crate) read_requests: AtomicU64,
    pub(crate) read_statements: AtomicU64,
    pub(crate) statement_errors: AtomicU64,
    pub(crate) http_errors: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) node: Node,
    pub(crate) options: ApiOptions,
    pub(crate) counters: Counters,
    /// Seconds of each data API request, by path.
    pub(crate) http_seconds: prometheus::HistogramVec,
    /// Held by the restore being uploaded or applied on this node.
    pub(crate) restore_slot: tokio::sync::Mutex<()>,
    /// Every route and the access it needs.
    pub(crate) routes: Vec<crate::routes::Declared>,
    /// Signed-in browsers.
    pub(crate) sessions: crate::sessions::Sessions,
    /// Certificates issued to services created in the web interface.
    pub(crate) issued: IssuedStore,
    /// When the API started (`/status` shows it and the uptime).
    pub(crate) started: std::time::Instant,
    pub(crate) started_at: time::OffsetDateTime,
    /// Queued writes (`/db/execute?queue`).
    pub(crate) queue: crate::queue::WriteQueue,
}

impl Shared {
    /// When the API started, as RFC 3339 text.
    pub(crate) fn started_at_rfc3339(&self) -> String {
        self.started_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    }
}

/// How long a certificate issued in the web interface waits to be shown.
pub(crate) const ISSUED_KEPT: std::time::Duration = std::time::Duration::from_secs(600);

/// Certificates issued in the web interface, each kept for the session that created
/// its service until the page that shows it (once) is rendered, at most
/// [`ISSUED_KEPT`]. Another session, or anonymous, never gets it (found by a review:
/// an anonymous request for the page took the key first).
#[derive(Default)]
pub(crate) struct IssuedStore {
    map: std::sync::Mutex<
        std::collections::HashMap<String, (crate::certs::Issued, std::time::Instant)>,
    >,
}

impl IssuedStore {
    /// Keeps `issued` for service `id`'s page in `session` (a session id; empty
    /// without `--auth`, where everything is open anyway).
    pub(crate) fn keep(&self, session: &str, id: &str, issued: crate::certs::Issued) {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, (_, at)| at.elapsed() < ISSUED_KEPT);
        map.insert(
            format!("{session}/{id}"),
            (issued, std::time::Instant::now()),
        );
    }

    /// Takes service `id`'s certificate for `session`: it is shown once.
    pub(crate) fn take(&self, session: &str, id: &str) -> Option<crate::certs::Issued> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(&format!("{session}/{id}"))
            .filter(|(_, at)| at.elapsed() < ISSUED_KEPT)
            .map(|(issued, _)| issued)
    }
}

/// The data API's latency histogram, in the node's latency buckets (100 µs to 10 s).
pub(crate) fn http_seconds() -> prometheus::HistogramVec {
    let opts = prometheus::HistogramOpts::new(
        "sqlraft_http_request_seconds",
        "Seconds from a data API request's arrival to its answer, by path.",
    )
    .buckets(sqlraft::LATENCY_BUCKETS.to_vec());
    prometheus::HistogramVec::new(opts, &["path"]).expect("metric options are constants")
}

pub(crate) type AppState = Arc<Shared>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_certificate_goes_once_to_the_session_that_created_its_service() {
        let store = IssuedStore::default();
        let issued = crate::certs::Issued {
            ca_pem: "ca".into(),
            cert_pem: "cert".into(),
            key_pem: "key".into(),
        };
        store.keep("session-a", "svc", issued);
        assert!(store.take("", "svc").is_none(), "anonymous");
        assert!(store.take("session-b", "svc").is_none(), "another session");
        assert_eq!(
            store.take("session-a", "svc").map(|i| i.key_pem).as_deref(),
            Some("key")
        );
        assert!(store.take("session-a", "svc").is_none(), "shown once");
    }
}
