//! A minimal blocking HTTP/1.0 client. `Connection: close` makes the end of the stream
//! the end of the body, so no chunked decoding is needed.
//!
//! Errors say whether the request may have reached the server: a write whose
//! connection could not be opened certainly did not run; one that failed later may have.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
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

/// One request; `timeout` bounds the connect and every read and write.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let socket: SocketAddr = addr
        .parse()
        .unwrap_or_else(|_| panic!("{addr} is not an ip:port address"));
    let mut stream = TcpStream::connect_timeout(&socket, timeout).map_err(HttpError::NotSent)?;
    let unknown = |e: std::io::Error| HttpError::Unknown(format!("{method} {addr}{path}: {e}"));
    stream.set_read_timeout(Some(timeout)).map_err(unknown)?;
    stream.set_write_timeout(Some(timeout)).map_err(unknown)?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&message).map_err(unknown)?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(unknown)?;
    parse(&raw).map_err(|reason| HttpError::Unknown(format!("{method} {addr}{path}: {reason}")))
}

fn parse(raw: &[u8]) -> Result<Response, String> {
    if raw.len() as u64 > MAX_RESPONSE_BYTES {
        return Err("answer too large".into());
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("no status line: {head:?}"))?;
    Ok(Response {
        status,
        body: raw[end + 4..].to_vec(),
    })
}
