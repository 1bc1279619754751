//! The blocking HTTP client of the multi-process tests, over `reqwest::blocking`.
//!
//! Errors say whether the request may have reached the server: a write whose
//! connection could not be opened certainly did not run; one that failed later may have.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value as Json;

/// Largest answer read (a full dump of a test table is far smaller).
pub const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// Why a request got no answer.
#[derive(Debug)]
pub enum HttpError {
    /// The connection could not be opened: nothing was sent.
    NotSent(std::io::Error),
    /// Sending or receiving failed, or the answer is not HTTP: the request may have run.
    Unknown(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::NotSent(e) => write!(f, "not sent: {e}"),
            HttpError::Unknown(e) => write!(f, "no answer: {e}"),
        }
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }
}

/// `GET http://{addr}{path}`.
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<Response, HttpError> {
    request(addr, "GET", path, None, timeout)
}

/// `POST http://{addr}{path}` with a JSON body.
pub fn post(addr: &str, path: &str, body: &Json, timeout: Duration) -> Result<Response, HttpError> {
    request(
        addr,
        "POST",
        path,
        Some(body.to_string().as_bytes()),
        timeout,
    )
}

/// The client every request shares (its connection pool), without proxies.
fn client() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client")
    })
}

/// One request; `timeout` bounds the whole exchange.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let what = format!("{method} {addr}{path}");
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .unwrap_or_else(|_| panic!("{method} is not an HTTP method"));
    let mut builder = client()
        .request(method, format!("http://{addr}{path}"))
        .timeout(timeout);
    if let Some(body) = body {
        builder = builder
            .header("Content-Type", "application/json")
            .body(body.to_vec());
    }
    let classify = |e: reqwest::Error| {
        if e.is_connect() {
            HttpError::NotSent(std::io::Error::other(e.to_string()))
        } else {
            HttpError::Unknown(format!("{what}: {e}"))
        }
    };
    let answer = builder.send().map_err(classify)?;
    let status = answer.status().as_u16();
    if answer
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES)
    {
        return Err(HttpError::Unknown(format!("{what}: answer too large")));
    }
    let body = answer.bytes().map_err(classify)?;
    if body.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(HttpError::Unknown(format!("{what}: answer too large")));
    }
    Ok(Response {
        status,
        body: body.to_vec(),
    })
}
