//! Raft messages between two transports: streamed batches, a peer that restarts, a peer
//! that says this node was removed, a peer of a version without streamed batches, a
//! server that stops while peers hold streams open, and a stream that stops taking.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft::eraftpb::{Message, MessageType};
use sqlraft_proto::v1 as pb;
use sqlraft_proto::v1::raft_transport_server::{RaftTransport, RaftTransportServer};
use sqlraft_transport::{Handler, PeerEvent, Transport, TransportOptions};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

/// Collects what arrives; refuses every sender once `removed` is set.
#[derive(Default)]
struct Collector {
    got: Mutex<Vec<Message>>,
    removed: std::sync::atomic::AtomicBool,
}

impl Collector {
    fn commits(&self) -> Vec<u64> {
        self.got.lock().unwrap().iter().map(|m| m.commit).collect()
    }
}

impl Handler for Collector {
    fn raft_messages(
        &self,
        _: Option<Arc<str>>,
        _: Option<pb::Member>,
        messages: Vec<Message>,
    ) -> Result<(), u64> {
        if self.removed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(messages[0].from);
        }
        self.got.lock().unwrap().extend(messages);
        Ok(())
    }

    async fn forward(&self, _: Option<Arc<str>>, _: pb::ForwardRequest) -> pb::ForwardResponse {
        pb::ForwardResponse::default()
    }

    async fn join(
        &self,
        _: Option<Arc<str>>,
        _: pb::JoinRequest,
    ) -> Result<pb::JoinResponse, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }

    fn snapshot_dir(&self) -> Option<PathBuf> {
        None
    }

    fn speaks_for(&self, _: &str, _: u64) -> bool {
        false
    }

    fn node_status(&self) -> Option<pb::NodeStatusResponse> {
        None
    }

    fn identify(&self, _: Option<&str>, _: u64) -> Option<pb::Member> {
        None
    }

    fn snapshot_received(
        &self,
        _: Option<Arc<str>>,
        _: Option<pb::Member>,
        _: Message,
        _: &Path,
    ) -> Result<(), String> {
        Err("not in this test".into())
    }
}

/// A peer transport server, stopped by `stop`.
struct Server {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(addr: SocketAddr, handler: Arc<Collector>) -> Server {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let (transport, _events) = Transport::new(TransportOptions::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            sqlraft_transport::serve(listener, handler, &transport, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        Server {
            stop: Some(stop),
            task,
        }
    }

    /// Stops it gracefully.
    async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the server stops")
            .expect("server task");
    }
}

type Handled = Result<(), Status>;
type HandledLater = Pin<Box<dyn Future<Output = Handled> + Send>>;

/// A peer service for these tests: `Send` and `Stream` as a test makes them, nothing
/// else served.
struct FakePeer {
    send: Box<dyn Fn(pb::RaftBatch) -> Handled + Send + Sync>,
    stream: Box<dyn Fn(Streaming<pb::RaftBatch>) -> HandledLater + Send + Sync>,
}

/// A running [`FakePeer`], stopped by `stop`.
struct FakePeerServer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl FakePeer {
    async fn serve(self) -> (SocketAddr, FakePeerServer) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftTransportServer::new(self))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        (addr, FakePeerServer { stop, task })
    }
}

impl FakePeerServer {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The commit index of each message in `batch`.
fn commits_of(batch: pb::RaftBatch) -> Result<Vec<u64>, Status> {
    use prost_011::Message as _;
    batch
        .messages
        .into_iter()
        .map(|bytes| {
            Message::decode(bytes)
                .map(|m| m.commit)
                .map_err(|e| Status::invalid_argument(e.to_string()))
        })
        .collect()
}

#[tonic::async_trait]
impl RaftTransport for FakePeer {
    async fn send(&self, request: Request<pb::RaftBatch>) -> Result<Response<pb::RaftAck>, Status> {
        (self.send)(request.into_inner()).map(|()| Response::new(pb::RaftAck {}))
    }
    async fn stream(
        &self,
        request: Request<Streaming<pb::RaftBatch>>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        (self.stream)(request.into_inner())
            .await
            .map(|()| Response::new(pb::RaftAck {}))
    }
    async fn snapshot_offset(
        &self,
        _: Request<pb::SnapshotOffer>,
    ) -> Result<Response<pb::SnapshotResume>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn install_snapshot(
        &self,
        _: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotAck>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn forward(
        &self,
        _: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn join(
        &self,
        _: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn identify(
        &self,
        _: Request<pb::IdentifyRequest>,
    ) -> Result<Response<pb::IdentifyResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn node_status(
        &self,
        _: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

fn heartbeat(commit: u64) -> Message {
    Message {
        msg_type: MessageType::MsgHeartbeat as i32,
        from: 1,
        to: 2,
        term: 1,
        commit,
        ..Default::default()
    }
}

/// Waits until `done` holds, for at most 10 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn sender() -> (Transport, mpsc::Receiver<PeerEvent>) {
    Transport::new(TransportOptions {
        backoff_min_ms: 10,
        backoff_max_ms: 50,
        ..TransportOptions::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_arrive_in_order_and_again_after_the_peer_restarts() {
    let addr = free_addr();
    let collector = Arc::new(Collector::default());
    let server = Server::start(addr, Arc::clone(&collector)).await;
    let (transport, mut events) = sender();
    transport.set_peer(2, &addr.to_string()).expect("peer");
    for commit in 1..=200 {
        transport.send(vec![heartbeat(commit)]);
        if commit % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eventually("200 heartbeats", || collector.commits().len() == 200).await;
    assert_eq!(collector.commits(), (1..=200).collect::<Vec<_>>());

    // The peer stops (its streams end) and comes back on the same address.
    server.stop().await;
    let collector = Arc::new(Collector::default());
    let mut sent = 1000;
    let mut unreachable = false;
    // While it is away, sending reports it unreachable.
    while !unreachable {
        sent += 1;
        transport.send(vec![heartbeat(sent)]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Ok(event) = events.try_recv() {
            unreachable |= event == PeerEvent::Unreachable(2);
        }
        assert!(sent < 1500, "never reported unreachable");
    }
    let server = Server::start(addr, Arc::clone(&collector)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while collector.commits().is_empty() {
        assert!(
            Instant::now() < deadline,
            "nothing arrived after the restart"
        );
        sent += 1;
        transport.send(vec![heartbeat(sent)]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = collector.commits();
    assert!(after.windows(2).all(|w| w[0] < w[1]), "{after:?}");
    drop(transport);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_says_this_node_was_removed_is_reported() {
    let addr = free_addr();
    let collector = Arc::new(Collector::default());
    collector
        .removed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let server = Server::start(addr, Arc::clone(&collector)).await;
    let (transport, mut events) = sender();
    transport.set_peer(2, &addr.to_string()).expect("peer");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut commit = 0;
    'wait: loop {
        assert!(Instant::now() < deadline, "never told it was removed");
        commit += 1;
        transport.send(vec![heartbeat(commit)]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Ok(event) = events.try_recv() {
            if event == (PeerEvent::Removed { by: 2 }) {
                break 'wait;
            }
        }
    }
    assert!(collector.commits().is_empty());
    drop(transport);
    server.stop().await;
}

/// A server that stops while a peer holds a stream open ends that stream, so its
/// graceful stop does not wait for the peer (a node would take seconds to stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_ends_the_streams_peers_hold_open() {
    let addr = free_addr();
    let collector = Arc::new(Collector::default());
    let server = Server::start(addr, Arc::clone(&collector)).await;
    let (transport, _events) = sender();
    transport.set_peer(2, &addr.to_string()).expect("peer");
    transport.send(vec![heartbeat(1)]);
    eventually("the first heartbeat", || collector.commits() == vec![1]).await;
    // Without ending the stream, the graceful stop would wait for the peer for ever
    // (`stop` gives up after 30 s).
    server.stop().await;
    drop(transport);
}

/// A peer of an older version, which answers `Stream` with "unimplemented": batches go
/// to it one `Send` call each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_streamed_batches_gets_one_call_per_batch() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let collected = Arc::clone(&got);
    let (addr, peer) = FakePeer::serve(FakePeer {
        send: Box::new(move |batch| {
            collected.lock().unwrap().extend(commits_of(batch)?);
            Ok(())
        }),
        stream: Box::new(|_| {
            Box::pin(async { Err(Status::unimplemented("unknown method Stream")) })
        }),
    })
    .await;
    let (transport, _events) = sender();
    transport.set_peer(2, &addr.to_string()).expect("peer");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut commit = 0;
    while got.lock().unwrap().len() < 20 {
        assert!(
            Instant::now() < deadline,
            "batches never arrived: {:?}",
            got.lock().unwrap()
        );
        commit += 1;
        transport.send(vec![heartbeat(commit)]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = got.lock().unwrap().clone();
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    drop(transport);
    peer.stop().await;
}

/// A peer whose first `Stream` call stops taking batches (its connection stuck, flow
/// control closed): once nothing is taken for the send timeout while batches wait, the
/// peer is reported unreachable and the next batch opens a new call, which delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_takes_nothing_is_replaced() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let (release, released) = tokio::sync::watch::channel(false);
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let collected = Arc::clone(&got);
    let (addr, peer) = FakePeer::serve(FakePeer {
        send: Box::new(|_| Err(Status::unimplemented("not in this test"))),
        stream: Box::new(move |mut batches| {
            let first = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            let (got, mut release) = (Arc::clone(&collected), released.clone());
            Box::pin(async move {
                if first {
                    // Hold the stream without reading it until the test ends.
                    let _ = release.wait_for(|r| *r).await;
                    return Ok(());
                }
                while let Some(batch) = batches.message().await? {
                    got.lock().unwrap().extend(commits_of(batch)?);
                }
                Ok(())
            })
        }),
    })
    .await;
    let (transport, mut events) = Transport::new(TransportOptions {
        send_timeout_ms: 300,
        backoff_min_ms: 10,
        backoff_max_ms: 50,
        ..TransportOptions::default()
    });
    transport.set_peer(2, &addr.to_string()).expect("peer");
    // Appends of 16 KiB each: more than the stuck stream's flow-control window.
    let append = |commit: u64| Message {
        msg_type: MessageType::MsgAppend as i32,
        from: 1,
        to: 2,
        term: 1,
        commit,
        entries: vec![raft::eraftpb::Entry {
            index: commit,
            term: 1,
            data: vec![7; 16 << 10],
            ..Default::default()
        }],
        ..Default::default()
    };
    let started = Instant::now();
    let mut commit = 0;
    let mut unreachable = false;
    while !unreachable || got.lock().unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no new stream delivered (unreachable reported: {unreachable})"
        );
        commit += 1;
        transport.send(vec![append(commit)]);
        tokio::time::sleep(Duration::from_millis(5)).await;
        while let Ok(event) = events.try_recv() {
            unreachable |= event == PeerEvent::Unreachable(2);
        }
    }
    let got = got.lock().unwrap().clone();
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    drop(transport);
    let _ = release.send(true);
    peer.stop().await;
}

/// Sends heartbeats every 10 ms until `collector` has one, for at most `limit`;
/// returns how long that took.
async fn time_to_deliver(
    transport: &Transport,
    collector: &Collector,
    sent: &mut u64,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    while collector.commits().is_empty() {
        assert!(
            started.elapsed() < limit,
            "nothing arrived within {limit:?}"
        );
        *sent += 1;
        transport.send(vec![heartbeat(*sent)]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// After a long outage the backoff has grown; once the peer is back and batches flow,
/// the next failure starts backing off from the shortest wait again, not from the
/// longest (which would hold a lane's heartbeats past an election timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_worked_backs_off_from_the_start_after_its_next_failure() {
    let addr = free_addr();
    let (transport, _events) = Transport::new(TransportOptions {
        backoff_min_ms: 10,
        backoff_max_ms: 4_000,
        ..TransportOptions::default()
    });
    transport.set_peer(2, &addr.to_string()).expect("peer");
    let mut sent = 0;
    // Nobody listens for 3 s: the waits between attempts grow past 2.5 s.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(3) {
        sent += 1;
        transport.send(vec![heartbeat(sent)]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let collector = Arc::new(Collector::default());
    let server = Server::start(addr, Arc::clone(&collector)).await;
    time_to_deliver(&transport, &collector, &mut sent, Duration::from_secs(10)).await;
    // Batches flow for a while on the stream.
    for _ in 0..20 {
        sent += 1;
        transport.send(vec![heartbeat(sent)]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The peer restarts at once: the stream ends, and the next one opens after the
    // shortest wait.
    server.stop().await;
    let collector = Arc::new(Collector::default());
    let server = Server::start(addr, Arc::clone(&collector)).await;
    let again = time_to_deliver(&transport, &collector, &mut sent, Duration::from_secs(10)).await;
    assert!(
        again < Duration::from_millis(2_000),
        "the first batch after a restart took {again:?}: the backoff kept its old length"
    );
    drop(transport);
    server.stop().await;
}
