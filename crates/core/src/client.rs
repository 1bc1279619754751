//! A small HTTP client for talking to other core services (`/status` probes, the
//! demo's readiness checks, tests), over `reqwest`: one shared connection pool, no
//! proxies from the environment (the peers are on the cluster's own network), no
//! redirects followed, answers bounded in size.

use std::sync::OnceLock;
use std::time::Duration;

/// Largest response read; `/status` and `/nodes` answers are a few kilobytes.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Errors of [`request`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, sending or receiving failed.
    #[error("{addr}: {source}")]
    Http {
        /// The address asked.
        addr: String,
        /// What failed.
        source: reqwest::Error,
    },
    /// No complete answer within the timeout.
    #[error("{addr}: no answer within {timeout_ms} ms")]
    Timeout {
        /// The address asked.
        addr: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The request or the answer is not acceptable (a bad method or header, an answer
    /// that is too large).
    #[error("{addr}: {reason}")]
    Bad {
        /// The address asked.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header lines as (lower-case name, value).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET http://{addr}{path}`.
pub async fn get(addr: &str, path: &str, timeout: Duration) -> Result<Response, ClientError> {
    request(addr, "GET", path, None, timeout).await
}

/// `POST http://{addr}{path}` with a JSON body.
pub async fn post(
    addr: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, ClientError> {
    request(addr, "POST", path, Some(body), timeout).await
}

/// Sends one request and reads the whole answer, all within `timeout`.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let headers: &[(&str, &str)] = match body {
        Some(_) => &[("Content-Type", "application/json")],
        None => &[],
    };
    request_with_headers(addr, method, path, headers, body, timeout).await
}

/// The client every request shares (its connection pool), or why there is none.
fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // Answers are returned as they are: a redirect is the caller's to follow.
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| format!("no HTTP client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Like [`request`], with the given extra header lines (no `Content-Type` is added).
pub async fn request_with_headers(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    match tokio::time::timeout(timeout, exchange(addr, method, path, headers, body)).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout {
            addr: addr.to_string(),
            timeout_ms,
        }),
    }
}

async fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, ClientError> {
    let bad = |reason: String| ClientError::Bad {
        addr: addr.to_string(),
        reason,
    };
    let http = |source| ClientError::Http {
        addr: addr.to_string(),
        source,
    };
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|e| bad(format!("method {method:?}: {e}")))?;
    let mut builder = client()
        .map_err(bad)?
        .request(method, format!("http://{addr}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if let Some(body) = body {
        builder = builder.body(body.to_vec());
    }
    let mut answer = builder.send().await.map_err(http)?;
    let status = answer.status().as_u16();
    let headers = answer
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(http)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(bad(format!(
                "answer larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}
