//! A minimal HTTP/1.0 client for talking to other core services (`/status` probes,
//! the demo's readiness checks, tests). HTTP/1.0 with `Connection: close` keeps the
//! answer unchunked and delimited by the end of the stream, so no HTTP library is needed.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response read; `/status` and `/nodes` answers are a few kilobytes.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Errors of [`request`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, sending or receiving failed.
    #[error("{addr}: {source}")]
    Io {
        /// The address asked.
        addr: String,
        /// What failed.
        source: std::io::Error,
    },
    /// No complete answer within the timeout.
    #[error("{addr}: no answer within {timeout_ms} ms")]
    Timeout {
        /// The address asked.
        addr: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The answer is not HTTP or too large.
    #[error("{addr}: bad answer: {reason}")]
    BadResponse {
        /// The address asked.
        addr: String,
        /// Why it was rejected.
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
    let io = |source| ClientError::Io {
        addr: addr.to_string(),
        source,
    };
    let mut stream = TcpStream::connect(addr).await.map_err(io)?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.map_err(io)?;
    if let Some(body) = body {
        stream.write_all(body).await.map_err(io)?;
    }
    stream.flush().await.map_err(io)?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .await
        .map_err(io)?;
    parse(addr, raw)
}

fn parse(addr: &str, raw: Vec<u8>) -> Result<Response, ClientError> {
    let bad = |reason: &str| ClientError::BadResponse {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    if raw.len() > MAX_RESPONSE_BYTES {
        return Err(bad("too large"));
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("no status code"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}
