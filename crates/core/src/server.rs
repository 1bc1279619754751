//! The HTTP server under the API: hyper's HTTP/1 with limits that `axum::serve` does not
//! set. A client must send a request's headers within `header_read_timeout` (a
//! slow-loris connection, or one left idle between requests, is closed then) and may
//! not pause its body for longer than `body_idle_timeout`, at most
//! `max_connections` are open at once (more are closed as soon as they are accepted, so
//! a flood of connections cannot use up the file descriptors that the raft transport,
//! the log and SQLite need), and Nagle's algorithm is off on every connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Limits of the HTTP server's connections.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from when the server
    /// starts waiting for them: on a new connection, and on a kept-alive one after
    /// each answer. Past it the connection is closed.
    pub header_read_timeout: Duration,
    /// Longest pause while a request's body is read: a body that stops arriving for
    /// this long fails the request, and its connection is closed.
    pub body_idle_timeout: Duration,
    /// Slowest a request's body may arrive on average, in bytes per second, once
    /// `body_idle_timeout` has passed since the first byte was asked for: a body
    /// trickled a byte at a time, each just within the idle timeout, would hold its
    /// connection for ever.
    pub min_body_bytes_per_sec: u64,
    /// Longest a write to a client may wait for the client to take data (a client
    /// that stops reading its answer, a backup download say, is cut off then).
    pub send_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(30),
            min_body_bytes_per_sec: 1024,
            send_timeout: Duration::from_secs(60),
        }
    }
}

impl HttpLimits {
    /// The defaults, with at most half of this process's open-file limit
    /// (`RLIMIT_NOFILE`) for HTTP connections: the other half stays for the raft
    /// transport, the log, snapshots and SQLite, so that a flood of connections cannot
    /// take the descriptors the node needs.
    pub fn for_this_process() -> HttpLimits {
        let limits = HttpLimits::default();
        match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
            Ok((soft, _)) => HttpLimits {
                max_connections: limits
                    .max_connections
                    .min(usize::try_from(soft / 2).unwrap_or(usize::MAX))
                    .max(16),
                ..limits
            },
            Err(_) => limits,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and
/// waits for the requests in progress to be answered (bound that wait by a timeout on
/// this future). Errors accepting a connection (a full descriptor table, say) are
/// logged and retried after a pause; they never end the server.
///
/// With `tls`, every connection must complete a TLS handshake within
/// `header_read_timeout` first (HTTPS).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    tls: Option<crate::https::HttpTls>,
    shutdown: impl Future<Output = ()>,
) {
    let (grace, rate) = (limits.body_idle_timeout, limits.min_body_bytes_per_sec);
    let router = router.layer(axum::middleware::map_request(
        move |request: axum::extract::Request| async move {
            request.map(|body| axum::body::Body::new(MinRate::new(body, grace, rate)))
        },
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let open = Arc::new(Open::default());
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // (`Builder` is cheap to clone: each connection's task takes a copy.)
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            // At the limit: the connection idle the longest gives way (a flood of idle
            // connections must not lock clients out until the header timeout); with
            // none idle, the new connection is closed.
            Err(_) if open.evict_idlest() => {
                match tokio::time::timeout(EVICTION_WAIT, Arc::clone(&slots).acquire_owned()).await
                {
                    Ok(Ok(slot)) => slot,
                    _ => continue,
                }
            }
            Err(_) => {
                tracing::debug!(
                    max = limits.max_connections,
                    "HTTP connection limit reached, none idle; closing a new connection"
                );
                continue;
            }
        };
        nagle_off(&stream);
        let (id, evicted, busy) = open.add();
        let service = TowerToHyperService::new(tower_http::timeout::RequestBodyTimeout::new(
            Busy {
                inner: router.clone(),
                busy,
                answer_grace: limits.send_timeout,
                answer_rate: limits.min_body_bytes_per_sec,
            },
            limits.body_idle_timeout,
        ));
        let (acceptor, http, watcher) = (
            tls.as_ref().map(crate::https::HttpTls::acceptor),
            http.clone(),
            graceful.watcher(),
        );
        let (open, handshake_timeout) = (Arc::clone(&open), limits.header_read_timeout);
        let stream = SendTimeout::new(stream, limits.send_timeout);
        tokio::spawn(async move {
            let served = async {
                match acceptor {
                    None => {
                        let connection =
                            watcher.watch(http.serve_connection(TokioIo::new(stream), service));
                        if let Err(e) = connection.await {
                            tracing::debug!(error = %e, "HTTP connection ended with an error");
                        }
                    }
                    // The handshake runs here, bounded like the headers.
                    Some(acceptor) => {
                        let accepted =
                            tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await;
                        let stream = match accepted {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "HTTPS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                        let connection =
                            watcher.watch(http.serve_connection(TokioIo::new(stream), service));
                        if let Err(e) = connection.await {
                            tracing::debug!(error = %e, "HTTPS connection ended with an error");
                        }
                    }
                }
            };
            tokio::select! {
                () = served => {}
                // Dropping the connection closes it; it had no request in progress.
                _ = evicted => tracing::debug!("an idle HTTP connection gave way to a new one"),
            }
            open.remove(id);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A connection whose writes fail once one has waited `limit` for the client to take
/// data (nginx's `send_timeout`): a client that stops reading would otherwise hold its
/// connection, and what its answer holds (a backup's copy of the database), for ever.
struct SendTimeout<T> {
    io: T,
    limit: Duration,
    /// Armed while a write waits.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<T> SendTimeout<T> {
    fn new(io: T, limit: Duration) -> Self {
        SendTimeout {
            io,
            limit,
            stalled: None,
        }
    }

    /// A write's outcome, watched: progress disarms the timer; `Pending` arms it (once)
    /// and turns into an error when it has waited `limit`.
    fn watched<R>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        polled: std::task::Poll<std::io::Result<R>>,
    ) -> std::task::Poll<std::io::Result<R>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took no data for the send timeout",
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for SendTimeout<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for SendTimeout<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        self.watched(cx, polled)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watched(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_flush(cx);
        self.watched(cx, polled)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// How long a new connection at the limit waits for the one that gives way.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// The open connections: whether each has a request in progress, and how to close it.
#[derive(Default)]
struct Open {
    next: std::sync::atomic::AtomicU64,
    connections: std::sync::Mutex<std::collections::HashMap<u64, Connection>>,
}

struct Connection {
    /// Requests in progress (until their response body is sent or dropped).
    busy: Arc<std::sync::atomic::AtomicUsize>,
    /// It has carried a whole request: a client's kept-alive connection, which may be
    /// in its pool and about to be used (closing it then fails that request).
    served: Arc<std::sync::atomic::AtomicBool>,
    /// When it last went idle (or opened).
    idle_since: Arc<std::sync::Mutex<std::time::Instant>>,
    evict: Option<tokio::sync::oneshot::Sender<()>>,
}

/// What a connection's service keeps up to date for [`Open`].
#[derive(Clone)]
struct BusyState {
    busy: Arc<std::sync::atomic::AtomicUsize>,
    served: Arc<std::sync::atomic::AtomicBool>,
    idle_since: Arc<std::sync::Mutex<std::time::Instant>>,
}

impl Open {
    fn add(&self) -> (u64, tokio::sync::oneshot::Receiver<()>, BusyState) {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (evict, evicted) = tokio::sync::oneshot::channel();
        let state = BusyState {
            busy: Arc::default(),
            served: Arc::default(),
            idle_since: Arc::new(std::sync::Mutex::new(std::time::Instant::now())),
        };
        self.lock().insert(
            id,
            Connection {
                busy: Arc::clone(&state.busy),
                served: Arc::clone(&state.served),
                idle_since: Arc::clone(&state.idle_since),
                evict: Some(evict),
            },
        );
        (id, evicted, state)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Tells an idle connection to close: one that never carried a whole request (a
    /// flood's, a slow-loris one) before a client's kept-alive one, which may be in
    /// the client's pool and about to be used; of those, the one idle the longest.
    /// False when none is idle.
    fn evict_idlest(&self) -> bool {
        use std::sync::atomic::Ordering;
        let mut connections = self.lock();
        let idlest = connections
            .iter()
            .filter(|(_, c)| c.evict.is_some() && c.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, c)| {
                (
                    c.served.load(Ordering::Acquire),
                    *c.idle_since
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                )
            })
            .map(|(id, _)| *id);
        let Some(sender) = idlest.and_then(|id| connections.get_mut(&id)?.evict.take()) else {
            return false;
        };
        sender.send(()).is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Connection>> {
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The router, counting the requests of one connection in progress: from the request's
/// arrival until its response body is sent (or dropped).
#[derive(Clone)]
struct Busy {
    inner: Router,
    busy: BusyState,
    /// The slowest an answer may be taken, after the send timeout ([`MinRate`]).
    answer_grace: Duration,
    answer_rate: u64,
}

/// Ends a request's "in progress" when dropped (with its response body).
struct Done(BusyState);

impl Drop for Done {
    fn drop(&mut self) {
        if self
            .0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            *self
                .0
                .idle_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = std::time::Instant::now();
        }
    }
}

impl<B> tower::Service<axum::http::Request<B>> for Busy
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<axum::extract::Request>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        self.busy
            .busy
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.busy
            .served
            .store(true, std::sync::atomic::Ordering::Release);
        let (grace, rate) = (self.answer_grace, self.answer_rate);
        let done = Done(self.busy.clone());
        let request = request.map(axum::body::Body::new);
        let future = tower::Service::call(&mut self.inner, request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| {
                axum::body::Body::new(MinRate::answer(WithDone { body, _done: done }, grace, rate))
            }))
        })
    }
}

/// A response body that holds its request's [`Done`] until it is dropped.
struct WithDone {
    body: axum::body::Body,
    _done: Done,
}

impl http_body::Body for WithDone {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A body that fails once it moves slower than `rate` bytes per second on average,
/// counted after `grace` from its first poll: a request body the client trickles, or an
/// answer the client takes a few bytes at a time (each read just within the send
/// timeout, which alone would let it hold its connection for ever).
struct MinRate<B> {
    inner: B,
    started: Option<std::time::Instant>,
    received: u64,
    grace: Duration,
    rate: u64,
    /// What is too slow, for the error.
    what: &'static str,
}

impl<B> MinRate<B> {
    fn new(inner: B, grace: Duration, rate: u64) -> Self {
        MinRate {
            inner,
            started: None,
            received: 0,
            grace,
            rate,
            what: "the request body arrives",
        }
    }

    fn answer(inner: B, grace: Duration, rate: u64) -> Self {
        MinRate {
            what: "the client takes its answer",
            ..MinRate::new(inner, grace, rate)
        }
    }
}

impl<B> http_body::Body for MinRate<B>
where
    B: http_body::Body<Data = axum::body::Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let started = *self.started.get_or_insert_with(std::time::Instant::now);
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        let std::task::Poll::Ready(Some(Ok(frame))) = polled else {
            return polled.map(|f| f.map(|r| r.map_err(Into::into)));
        };
        if let Some(data) = frame.data_ref() {
            self.received += data.len() as u64;
        }
        let late = started.elapsed().saturating_sub(self.grace);
        let due = (late.as_secs_f64() * self.rate as f64) as u64;
        if !late.is_zero() && self.received < due {
            return std::task::Poll::Ready(Some(Err(format!(
                "{} slower than {} bytes per second",
                self.what, self.rate
            )
            .into())));
        }
        std::task::Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Nagle's algorithm off: with it on, an answer written in more than one piece
/// (headers, then a body that took longer to produce) waits for the client's delayed
/// ACK, 40 ms.
fn nagle_off(stream: &tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot turn Nagle's algorithm off on a connection");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(limits: HttpLimits) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        start_with(limits, None).await
    }

    async fn start_with(
        limits: HttpLimits,
        tls: Option<crate::https::HttpTls>,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/",
            axum::routing::get(|| async { "ok" })
                .post(|body: axum::body::Bytes| async move { format!("{}", body.len()) }),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, router, limits, tls, async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    /// Reads until the server closes the connection (or 10 s pass: then `None`).
    async fn closed_by_server(stream: &mut TcpStream) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let read_all = async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read_all)
            .await
            .ok()?;
        Some(got)
    }

    /// Sends `request` on a new connection; what came back before the server closed
    /// it (`None`: not closed within 10 s).
    async fn send(addr: std::net::SocketAddr, request: &[u8]) -> Option<String> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let got = closed_by_server(&mut stream).await?;
        Some(String::from_utf8_lossy(&got).into_owned())
    }

    async fn get(addr: std::net::SocketAddr) -> String {
        send(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("an answer")
    }

    fn limits(max_connections: usize) -> HttpLimits {
        HttpLimits {
            max_connections,
            header_read_timeout: Duration::from_millis(300),
            body_idle_timeout: Duration::from_millis(300),
            min_body_bytes_per_sec: 1024,
            send_timeout: Duration::from_millis(300),
        }
    }

    /// A body trickled a byte at a time, each within the idle timeout, fails once it
    /// falls behind the minimum rate.
    #[tokio::test]
    async fn a_trickled_body_ends_the_request() {
        let (addr, _stop) = start(limits(16)).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
            .await
            .unwrap();
        // A byte every 100 ms: well within the 300 ms idle timeout, far below 1 KiB/s.
        let mut answer = Vec::new();
        let mut cut = false;
        for _ in 0..100 {
            if stream.write_all(b"a").await.is_err() {
                cut = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut buf = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => cut = true,
                Ok(Ok(n)) => {
                    answer.extend_from_slice(&buf[..n]);
                    cut = true;
                }
                Err(_) => {}
            }
            if cut {
                break;
            }
        }
        // Cut off while it still trickled (10 s of it), not after it stopped.
        assert!(cut, "the trickle was never cut off");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(!answer.contains("200 OK"), "{answer}");
    }

    /// A client that sends its headers and then stalls its body is cut off too.
    #[tokio::test]
    async fn a_body_that_stops_arriving_ends_the_request() {
        let (addr, _stop) = start(limits(16)).await;
        let got = send(
            addr,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab",
        )
        .await
        .expect("the server ended it");
        assert!(!got.contains("200 OK"), "{got}");
    }

    /// A client that sends part of its headers and then nothing (slow loris) is cut off.
    #[tokio::test]
    async fn headers_that_never_finish_close_the_connection() {
        let (addr, _stop) = start(limits(16)).await;
        let got = send(addr, b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("the server closed the connection");
        assert!(!got.contains("ok"), "{got:?}");
    }

    /// A kept-alive connection left idle after an answer is closed too.
    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_closed() {
        let (addr, _stop) = start(limits(16)).await;
        let got = send(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("closed after the idle time");
        assert!(
            got.starts_with("HTTP/1.1 200") && got.ends_with("ok"),
            "{got}"
        );
    }

    /// Past the limit a new connection is closed at once; idle ones free their slots
    /// when their header time runs out, and requests are answered again.
    #[tokio::test]
    async fn at_the_limit_the_connection_idle_longest_gives_way() {
        // Headers may take 30 s here: what closes the idle connection is the newcomer.
        let limits = HttpLimits {
            header_read_timeout: Duration::from_secs(30),
            ..limits(4)
        };
        let (addr, _stop) = start(limits).await;
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(TcpStream::connect(addr).await.unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The four are accepted (each holds a slot) before the fifth arrives.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        assert!(get(addr).await.ends_with("ok"), "the fifth is answered");
        let oldest = closed_by_server(&mut idle[0]).await.expect("closed");
        assert!(oldest.is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "closed for the newcomer, not by the header timeout"
        );
    }

    /// With no connection idle (each has a request whose body is on its way), one
    /// more is closed unanswered.
    #[tokio::test]
    async fn at_the_limit_with_none_idle_a_new_connection_is_closed() {
        let limits = HttpLimits {
            body_idle_timeout: Duration::from_secs(30),
            ..limits(2)
        };
        let (addr, _stop) = start(limits).await;
        let mut busy = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
                .await
                .unwrap();
            busy.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let got = closed_by_server(&mut third).await.expect("closed");
        assert!(got.is_empty(), "answered past the limit: {got:?}");
        // The uploads were not the ones to go.
        for stream in &mut busy {
            stream.write_all(b"defghij").await.unwrap();
            let mut answer = vec![0u8; 256];
            let n = stream.read(&mut answer).await.unwrap();
            assert!(String::from_utf8_lossy(&answer[..n]).ends_with("10"));
        }
    }

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(TcpStream::connect(addr));
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(!accepted.nodelay().unwrap());
        nagle_off(&accepted);
        assert!(accepted.nodelay().unwrap());
        drop(client.await.unwrap().unwrap());
    }

    /// `GET /` over TLS trusting `ca_pem`; the answer, or `None` when the handshake or
    /// the request failed.
    async fn https_get(addr: std::net::SocketAddr, ca_pem: &str) -> Option<String> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.ok()?).ok()?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.ok()?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .ok()?;
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await.ok()?;
        Some(String::from_utf8_lossy(&answer).into_owned())
    }

    #[tokio::test]
    async fn https_serves_with_the_certificate_and_takes_a_new_one_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("http.crt"), dir.path().join("http.key"));
        let write = |issued: &crate::certs::Issued| {
            std::fs::write(dir.path().join("new.crt"), &issued.cert_pem).unwrap();
            std::fs::write(dir.path().join("new.key"), &issued.key_pem).unwrap();
            std::fs::rename(dir.path().join("new.key"), &key).unwrap();
            std::fs::rename(dir.path().join("new.crt"), &cert).unwrap();
        };
        let first = crate::certs::Ca::new(1).unwrap();
        write(
            &first
                .issue("00000000-0000-0000-0000-000000000000", "127.0.0.1", 1)
                .unwrap(),
        );
        let tls = crate::https::HttpTls::load(&cert, &key).unwrap();
        let (addr, _stop) = start_with(limits(8), Some(tls.clone())).await;

        let answer = https_get(addr, first.cert_pem())
            .await
            .expect("an HTTPS answer");
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
            "{answer}"
        );
        // Plaintext HTTP on the HTTPS port gets no HTTP answer.
        let plain = send(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(!plain.unwrap_or_default().contains("200 OK"));

        // A certificate from another CA: after the reload it is the one served.
        let second = crate::certs::Ca::new(1).unwrap();
        write(
            &second
                .issue("00000000-0000-0000-0000-000000000000", "127.0.0.1", 1)
                .unwrap(),
        );
        assert!(tls.reload().unwrap(), "the files changed");
        assert!(!tls.reload().unwrap(), "unchanged the second time");
        assert!(
            https_get(addr, first.cert_pem()).await.is_none(),
            "the old one is gone"
        );
        let answer = https_get(addr, second.cert_pem())
            .await
            .expect("the new one");
        assert!(answer.ends_with("ok"), "{answer}");

        // Unusable files leave the certificate in use.
        std::fs::write(&key, "not a key").unwrap();
        assert!(tls.reload().is_err());
        assert!(https_get(addr, second.cert_pem()).await.is_some());
    }

    /// A server with `limits` whose `/big` answer is far larger than the socket
    /// buffers, and a connection that asked for it (the server stops when the test
    /// ends).
    async fn ask_for_a_big_answer(limits: HttpLimits) -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/big",
            axum::routing::get(|| async { vec![b'x'; 64 << 20] }),
        );
        tokio::spawn(serve(
            listener,
            router,
            limits,
            None,
            std::future::pending(),
        ));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        stream
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_its_answer_is_cut_off() {
        let mut stream = ask_for_a_big_answer(limits(8)).await;
        // Read nothing for a while: the server's writes stall, then it gives up.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        let read_all = async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read_all)
            .await
            .expect("the server closed the connection");
        assert!(got < 64 << 20, "the whole answer arrived: {got}");
    }

    #[tokio::test]
    async fn a_clients_kept_alive_connection_outlasts_a_floods() {
        let limits = HttpLimits {
            header_read_timeout: Duration::from_secs(30),
            ..limits(2)
        };
        let (addr, _stop) = start(limits).await;
        // A client's connection: one request answered, kept alive (older than the
        // flood's).
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = client.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("ok"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The flood: more idle connections than the limit, each replacing the last.
        let mut flood = Vec::new();
        for _ in 0..5 {
            flood.push(TcpStream::connect(addr).await.unwrap());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The client's connection still carries its next request.
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("ok"), "{n}");
    }

    /// A client that reads its answer, but slowly (each read within the send timeout),
    /// is cut off once it falls behind the minimum rate.
    #[tokio::test]
    async fn a_client_that_reads_its_answer_too_slowly_is_cut_off() {
        let mut stream = ask_for_a_big_answer(HttpLimits {
            // Reads below come every 50 ms, within the send timeout, but at about
            // 1.3 MB/s, far below this rate.
            min_body_bytes_per_sec: 50 << 20,
            ..limits(8)
        })
        .await;
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 << 10];
        let slow = async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), slow)
            .await
            .expect("the server closed the connection");
        assert!(got < 64 << 20, "the whole answer arrived: {got}");
    }
}
