use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost_011::Message as _;
use raft::eraftpb::Message;
use sqlraft_proto::v1 as pb;
use sqlraft_proto::v1::raft_transport_client::RaftTransportClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::TransportError;

/// Limits and timings of the transport.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Messages queued per peer; beyond it messages are dropped (raft resends).
    pub queue_len: usize,
    /// Bytes of raft messages sent in one RPC.
    pub max_batch_bytes: usize,
    /// Largest message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Time to establish a connection.
    pub connect_timeout_ms: u64,
    /// Time for one raft batch RPC.
    pub send_timeout_ms: u64,
    /// Time for a forwarded write or a join to be answered.
    pub request_timeout_ms: u64,
    /// First and largest pause before retrying an unreachable peer.
    pub backoff_min_ms: u64,
    /// See `backoff_min_ms`.
    pub backoff_max_ms: u64,
    /// Largest snapshot file this node accepts from a leader.
    pub max_snapshot_bytes: u64,
    /// Mutual TLS with every peer, both ways; `None`: plaintext (insecure).
    pub tls: Option<crate::PeerTls>,
    /// Test hook: told of every raft message handed to [`Transport::send`], before it
    /// is queued.
    #[cfg(feature = "testing")]
    pub on_send: Option<SendObserver>,
    /// Test hook: asked after each forwarded request was answered; `true` loses the
    /// answer, as a connection cut after the leader applied the request would.
    #[cfg(feature = "testing")]
    pub lose_forward_answer: Option<ForwardFault>,
    /// Test hook: asked with the file offset of each snapshot chunk before it is sent;
    /// `true` breaks the stream there, as a lost connection would.
    #[cfg(feature = "testing")]
    pub break_snapshot_stream: Option<SnapshotStreamFault>,
}

/// Test hook: decides where a snapshot stream breaks.
#[cfg(feature = "testing")]
#[derive(Clone)]
pub struct SnapshotStreamFault(pub Arc<dyn Fn(u64) -> bool + Send + Sync>);

#[cfg(feature = "testing")]
impl std::fmt::Debug for SnapshotStreamFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotStreamFault")
    }
}

/// Test hook: decides whether the answer to a forwarded request is lost.
#[cfg(feature = "testing")]
#[derive(Clone)]
pub struct ForwardFault(pub Arc<dyn Fn(&pb::ForwardRequest) -> bool + Send + Sync>);

#[cfg(feature = "testing")]
impl std::fmt::Debug for ForwardFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForwardFault")
    }
}

/// Test hook: sees each raft message as the node hands it to the transport.
#[cfg(feature = "testing")]
#[derive(Clone)]
pub struct SendObserver(pub Arc<dyn Fn(&Message) + Send + Sync>);

#[cfg(feature = "testing")]
impl std::fmt::Debug for SendObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendObserver")
    }
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            queue_len: 4096,
            max_batch_bytes: 4 << 20,
            max_message_bytes: 64 << 20,
            connect_timeout_ms: 1_000,
            send_timeout_ms: 5_000,
            request_timeout_ms: 10_000,
            backoff_min_ms: 50,
            backoff_max_ms: 2_000,
            max_snapshot_bytes: 64 << 30,
            tls: None,
            #[cfg(feature = "testing")]
            on_send: None,
            #[cfg(feature = "testing")]
            lose_forward_answer: None,
            #[cfg(feature = "testing")]
            break_snapshot_stream: None,
        }
    }
}

/// A peer's two lanes, each a queue and a stream over the same connection: appends
/// that carry entries on one, everything else (heartbeats, votes, responses, read
/// index) on the other, so that a heartbeat never waits behind queued megabytes of
/// entries long enough for the followers to call an election. Raft tolerates the
/// reordering.
struct Peer {
    addr: String,
    entries: Lane,
    control: Lane,
}

struct Lane {
    queue: mpsc::Sender<Bytes>,
    task: JoinHandle<()>,
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the transport observed on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// Messages to this peer could not be delivered.
    Unreachable(u64),
    /// This peer refused our messages because this node was removed from the cluster.
    Removed {
        /// The peer that said so.
        by: u64,
    },
    /// A snapshot transfer to this peer ended (feed it to `RawNode::report_snapshot`).
    SnapshotSent {
        /// The receiver.
        to: u64,
        /// It received the whole file and took it.
        ok: bool,
    },
}

/// Sends raft messages to peers and makes request RPCs to them. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    options: TransportOptions,
    peers: Mutex<HashMap<u64, Peer>>,
    channels: Mutex<HashMap<String, Channel>>,
    blocked: Arc<RwLock<HashSet<u64>>>,
    /// Test faults per peer (loss, delay); partitions are in `blocked`.
    #[cfg(feature = "testing")]
    faults: RwLock<HashMap<u64, crate::LinkFault>>,
    #[cfg(feature = "testing")]
    dice: std::sync::atomic::AtomicU64,
    events: mpsc::Sender<PeerEvent>,
    /// This node, named in every batch sent.
    local: Arc<RwLock<Option<pb::Member>>>,
    /// Snapshot transfers in progress, both ways.
    transfers: Arc<crate::snapshot::Transfers>,
    /// Where this node's snapshot files are.
    snapshot_files: RwLock<Option<crate::SnapshotFiles>>,
    /// Sender tasks run here, whichever thread adds a peer (the raft loop has no runtime).
    runtime: tokio::runtime::Handle,
}

impl Transport {
    /// A transport with no peers. What happens on the links is reported on the
    /// returned receiver: unreachable peers (feed them to `RawNode::report_unreachable`)
    /// and a peer's word that this node was removed from the cluster.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn new(options: TransportOptions) -> (Transport, mpsc::Receiver<PeerEvent>) {
        let (events, reports) = mpsc::channel(1024);
        let transport = Transport {
            inner: Arc::new(Inner {
                options,
                peers: Mutex::new(HashMap::new()),
                channels: Mutex::new(HashMap::new()),
                blocked: Arc::new(RwLock::new(HashSet::new())),
                #[cfg(feature = "testing")]
                faults: RwLock::new(HashMap::new()),
                #[cfg(feature = "testing")]
                dice: std::sync::atomic::AtomicU64::new(0x9E37_79B9_7F4A_7C15),
                events,
                local: Arc::new(RwLock::new(None)),
                transfers: Arc::default(),
                snapshot_files: RwLock::new(None),
                runtime: tokio::runtime::Handle::current(),
            }),
        };
        (transport, reports)
    }

    /// Names this node in every batch of raft messages it sends, so that a peer that
    /// does not know it yet can answer.
    pub fn set_local(&self, member: pb::Member) {
        *self
            .inner
            .local
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(member);
    }

    /// The transport's options.
    pub fn options(&self) -> &TransportOptions {
        &self.inner.options
    }

    /// Tells the transport where the files of this node's snapshots are, so that a
    /// raft snapshot message can be sent with its file.
    pub fn set_snapshot_files(&self, files: crate::SnapshotFiles) {
        *self
            .inner
            .snapshot_files
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(files);
    }

    /// Snapshot transfers in progress, sending and receiving.
    pub fn snapshot_transfers(&self) -> Vec<crate::SnapshotTransfer> {
        self.inner.transfers.list()
    }

    pub(crate) fn transfers(&self) -> Arc<crate::snapshot::Transfers> {
        Arc::clone(&self.inner.transfers)
    }

    /// Starts streaming the snapshot a `MsgSnapshot` announces, with its file.
    fn send_snapshot(&self, message: Message, addr: &str) {
        use prost::Message as _;
        let to = message.to;
        // Raft sends a snapshot again only after it hears how this one ended: the
        // report must not be lost to a full channel.
        let report_failure = || {
            let events = self.inner.events.clone();
            self.inner.runtime.spawn(async move {
                let _ = events.send(PeerEvent::SnapshotSent { to, ok: false }).await;
            });
        };
        let snapshot = message.get_snapshot();
        let descriptor = match pb::SnapshotDescriptor::decode(snapshot.data.as_slice()) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(to, error = %e, "snapshot message without a descriptor");
                return report_failure();
            }
        };
        let files = self
            .inner
            .snapshot_files
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(path) = files.and_then(|f| f(descriptor.index, descriptor.term)) else {
            tracing::warn!(to, index = descriptor.index, "the snapshot's file is gone");
            return report_failure();
        };
        let client = match self.client(addr) {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(to, error = %e, "cannot send a snapshot");
                return report_failure();
            }
        };
        let outgoing = crate::snapshot::Outgoing {
            client,
            to,
            addr: addr.to_string(),
            message,
            descriptor,
            path,
            sender: self
                .inner
                .local
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            transfers: self.transfers(),
            events: self.inner.events.clone(),
            request_timeout: Duration::from_millis(self.inner.options.request_timeout_ms),
            backoff: Duration::from_millis(self.inner.options.backoff_max_ms),
            #[cfg(feature = "testing")]
            fault: self.inner.options.break_snapshot_stream.clone(),
        };
        if let Some(outgoing) = outgoing.register() {
            self.inner.runtime.spawn(outgoing.run());
        }
    }

    /// Adds a peer or changes its address.
    pub fn set_peer(&self, id: u64, addr: &str) -> Result<(), TransportError> {
        let mut peers = self
            .inner
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if peers.get(&id).is_some_and(|p| p.addr == addr) {
            return Ok(());
        }
        let channel = self.channel(addr)?;
        let lane = || {
            let (queue, rx) = mpsc::channel(self.inner.options.queue_len);
            let lane_queue = Arc::new(LaneQueue {
                rx: Mutex::new(rx),
                generation: AtomicU64::new(0),
                taken: AtomicU64::new(0),
                max_batch_bytes: self.inner.options.max_batch_bytes,
                local: Arc::clone(&self.inner.local),
            });
            let task = self.inner.runtime.spawn(send_loop(
                id,
                addr.to_string(),
                channel.clone(),
                lane_queue,
                self.inner.options.clone(),
                self.inner.events.clone(),
            ));
            Lane { queue, task }
        };
        peers.insert(
            id,
            Peer {
                addr: addr.to_string(),
                entries: lane(),
                control: lane(),
            },
        );
        Ok(())
    }

    /// Forgets a peer and stops its sender.
    pub fn remove_peer(&self, id: u64) {
        self.inner
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// Address of a known peer.
    pub fn peer_addr(&self, id: u64) -> Option<String> {
        self.inner
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .map(|p| p.addr.clone())
    }

    /// Queues raft messages for their peers without waiting. A message to an unknown
    /// or blocked peer, or to one whose queue is full, is dropped: raft tolerates lost
    /// messages and resends.
    pub fn send(&self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        #[cfg(feature = "testing")]
        if let Some(observer) = &self.inner.options.on_send {
            messages.iter().for_each(|m| (observer.0)(m));
        }
        let blocked = self
            .inner
            .blocked
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let peers = self
            .inner
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for message in messages {
            let is_snapshot = message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot;
            let peer = peers
                .get(&message.to)
                .filter(|_| !blocked.contains(&message.to));
            let Some(peer) = peer else {
                tracing::debug!(
                    to = message.to,
                    "dropping message to an unknown or cut-off peer"
                );
                if is_snapshot {
                    let (events, to) = (self.inner.events.clone(), message.to);
                    self.inner.runtime.spawn(async move {
                        let _ = events.send(PeerEvent::SnapshotSent { to, ok: false }).await;
                    });
                }
                continue;
            };
            if is_snapshot {
                let addr = peer.addr.clone();
                self.send_snapshot(message, &addr);
                continue;
            }
            let bytes = Bytes::from(message.encode_to_vec());
            if bytes.len() > self.inner.options.max_message_bytes {
                tracing::warn!(
                    to = message.to,
                    bytes = bytes.len(),
                    "dropping oversized raft message"
                );
                continue;
            }
            // Only appends that carry entries take the entries lane: a read-index
            // request and its answer carry their context as an entry, but belong with
            // the heartbeats that confirm them, not behind megabytes of appends.
            let lane = if carries_log_entries(&message) {
                &peer.entries
            } else {
                &peer.control
            };
            #[cfg(feature = "testing")]
            let Some(bytes) = self.inject_fault(
                message.to,
                carries_log_entries(&message),
                &lane.queue,
                bytes,
            ) else {
                continue;
            };
            if lane.queue.try_send(bytes).is_err() {
                tracing::debug!(to = message.to, "peer queue full, dropping message");
                let _ = self
                    .inner
                    .events
                    .try_send(PeerEvent::Unreachable(message.to));
            }
        }
    }

    /// Sends a write to the leader at `addr` and waits for its outcome, at most the
    /// request timeout.
    pub async fn forward(
        &self,
        addr: &str,
        leader_id: u64,
        request: pb::ForwardRequest,
    ) -> Result<pb::ForwardResponse, TransportError> {
        let timeout = Duration::from_millis(self.inner.options.request_timeout_ms);
        self.forward_within(addr, leader_id, request, timeout).await
    }

    /// Like [`Transport::forward`], waiting at most `timeout` (at least the request
    /// timeout) for a request the leader takes long to answer (a large restore).
    pub async fn forward_within(
        &self,
        addr: &str,
        leader_id: u64,
        request: pb::ForwardRequest,
        timeout: Duration,
    ) -> Result<pb::ForwardResponse, TransportError> {
        if self.is_blocked(leader_id) {
            return Err(TransportError::Blocked(addr.to_string()));
        }
        let mut client = self.client(addr)?;
        #[cfg(feature = "testing")]
        let lose = self
            .inner
            .options
            .lose_forward_answer
            .as_ref()
            .is_some_and(|fault| (fault.0)(&request));
        let mut rpc = tonic::Request::new(request);
        rpc.set_timeout(timeout.max(Duration::from_millis(self.inner.options.request_timeout_ms)));
        let answer = client
            .forward(rpc)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| status_error(addr, status));
        #[cfg(feature = "testing")]
        if lose && answer.is_ok() {
            return Err(TransportError::Unreachable {
                addr: addr.to_string(),
                message: "answer lost (test fault)".into(),
                never_sent: false,
            });
        }
        answer
    }

    /// Asks the member at `addr` who raft id `raft_id` is (`None`: it knows none).
    pub async fn identify(
        &self,
        addr: &str,
        raft_id: u64,
    ) -> Result<Option<pb::Member>, TransportError> {
        let mut client = self.client(addr)?;
        let mut rpc = tonic::Request::new(pb::IdentifyRequest { raft_id });
        rpc.set_timeout(Duration::from_millis(self.inner.options.request_timeout_ms));
        client
            .identify(rpc)
            .await
            .map(|r| r.into_inner().member)
            .map_err(|status| status_error(addr, status))
    }

    /// What the member at `addr` says of itself, within `timeout`.
    pub async fn node_status(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<pb::NodeStatusResponse, TransportError> {
        let mut client = self.client(addr)?;
        let mut rpc = tonic::Request::new(pb::NodeStatusRequest {});
        rpc.set_timeout(timeout);
        client
            .node_status(rpc)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| status_error(addr, status))
    }

    /// Runs `task` on the transport's runtime (for a thread that has none, as the raft
    /// loop's).
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.runtime.spawn(task);
    }

    /// Asks the member at `addr` to admit a service.
    pub async fn join(
        &self,
        addr: &str,
        request: pb::JoinRequest,
    ) -> Result<pb::JoinResponse, TransportError> {
        let mut client = self.client(addr)?;
        let mut rpc = tonic::Request::new(request);
        rpc.set_timeout(Duration::from_millis(self.inner.options.request_timeout_ms));
        client
            .join(rpc)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| status_error(addr, status))
    }

    /// The peers cut off from this node, shared with [`crate::serve`] so that messages
    /// from them are dropped on arrival too. Always empty unless the `testing`
    /// feature's [`Transport::set_link_fault`] partitions a link.
    pub fn blocked_set(&self) -> Arc<RwLock<HashSet<u64>>> {
        Arc::clone(&self.inner.blocked)
    }

    /// Test hook: sets the fault on the link to `peer` as this node sees it
    /// ([`crate::LinkFault::default`] heals it). A partition also drops what arrives from
    /// the peer.
    #[cfg(feature = "testing")]
    pub fn set_link_fault(&self, peer: u64, fault: crate::LinkFault) {
        if let Ok(mut b) = self.inner.blocked.write() {
            if fault.partitioned {
                b.insert(peer);
            } else {
                b.remove(&peer);
            }
        }
        let mut faults = self
            .inner
            .faults
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if fault == crate::LinkFault::default() {
            faults.remove(&peer);
        } else {
            faults.insert(peer, fault);
        }
    }

    /// Test hook: drops all traffic to and from `peer` on this node (a partition).
    #[cfg(feature = "testing")]
    pub fn block(&self, peer: u64) {
        self.set_link_fault(peer, crate::LinkFault::partition());
    }

    /// Test hook: heals every fault on the link to `peer`.
    #[cfg(feature = "testing")]
    pub fn unblock(&self, peer: u64) {
        self.set_link_fault(peer, crate::LinkFault::default());
    }

    /// Applies the test fault of the link to `to`: the message is lost, held back (and
    /// queued later, out of order with what follows), or handed back to be queued now.
    #[cfg(feature = "testing")]
    fn inject_fault(
        &self,
        to: u64,
        carries_entries: bool,
        queue: &mpsc::Sender<Bytes>,
        bytes: Bytes,
    ) -> Option<Bytes> {
        let Some(fault) = self
            .inner
            .faults
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&to)
            .copied()
        else {
            return Some(bytes);
        };
        if (fault.drop_entries && carries_entries)
            || (fault.drop_rate > 0.0 && self.roll() < fault.drop_rate)
        {
            return None;
        }
        if fault.delay_ms > 0 {
            let queue = queue.clone();
            let delay = Duration::from_millis(fault.delay_ms);
            self.inner.runtime.spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = queue.try_send(bytes);
            });
            return None;
        }
        Some(bytes)
    }

    /// A number in [0, 1) from a shared xorshift generator (test faults only).
    #[cfg(feature = "testing")]
    fn roll(&self) -> f64 {
        let mut x = self.inner.dice.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.inner.dice.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn is_blocked(&self, peer: u64) -> bool {
        self.inner
            .blocked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&peer)
    }

    fn client(&self, addr: &str) -> Result<RaftTransportClient<Channel>, TransportError> {
        let limit = self.inner.options.max_message_bytes;
        Ok(RaftTransportClient::new(self.channel(addr)?)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit))
    }

    /// One HTTP/2 channel per address, connected lazily and reconnected by tonic.
    fn channel(&self, addr: &str) -> Result<Channel, TransportError> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let invalid = |reason: String| TransportError::InvalidAddress {
            addr: addr.to_string(),
            reason,
        };
        if addr.contains("://") || !addr.contains(':') {
            return Err(invalid("expected host:port".into()));
        }
        let options = &self.inner.options;
        let _runtime = self.inner.runtime.enter();
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(Duration::from_millis(options.connect_timeout_ms))
            .tcp_nodelay(true)
            // Raft batches go on streams that stay open: a peer that stopped answering
            // (paused, cut off) is noticed by a ping not answered, within 5 s, and its
            // streams end; with a call per batch that was each call's timeout.
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(3));
        let channel = match &options.tls {
            // The URI stays `http://`: TLS is the connector's, not tonic's.
            Some(tls) => endpoint.connect_with_connector_lazy(crate::tls::Connector(tls.clone())),
            None => endpoint.connect_lazy(),
        };
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

fn status_error(addr: &str, status: tonic::Status) -> TransportError {
    let never_sent = connection_never_opened(&status);
    match status.code() {
        _ if never_sent => TransportError::Unreachable {
            addr: addr.to_string(),
            message: status.message().to_string(),
            never_sent,
        },
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            TransportError::Unreachable {
                addr: addr.to_string(),
                message: status.message().to_string(),
                never_sent,
            }
        }
        code => TransportError::Refused {
            addr: addr.to_string(),
            code,
            message: status.message().to_string(),
        },
    }
}

/// True when the connection to the peer could not be opened, so the request certainly
/// did not reach it (and retrying cannot apply it twice). tonic reports this with
/// varying codes; the cause chain says what happened.
fn connection_never_opened(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = status.source();
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
            )
        {
            return true;
        }
        let text = error.to_string();
        if text.contains("tcp connect error") || text.contains("error trying to connect") {
            return true;
        }
        cause = error.source();
    }
    false
}

/// A lane's queue, taken from by the body of the lane's open `Stream` call itself: a
/// message the raft thread queues wakes the task that writes it to the connection,
/// with no task in between. The send loop takes from it only to open a call, or for
/// a peer that gets one `Send` call per batch.
struct LaneQueue {
    rx: Mutex<mpsc::Receiver<Bytes>>,
    /// Raised when a call ends: the body of an older call ends when next polled, so
    /// that only the current call takes from the queue.
    generation: AtomicU64,
    /// Batches taken so far, for telling a stream that takes nothing.
    taken: AtomicU64,
    max_batch_bytes: usize,
    local: Arc<RwLock<Option<pb::Member>>>,
}

impl LaneQueue {
    /// The next batch: everything queued, up to `max_batch_bytes`; `None` once the
    /// transport is gone, or (for the body of a call, `generation` given) once that
    /// call is over. The generation is checked under the lock it is raised under: the
    /// body of a call that is over never polls the queue again, so it cannot take the
    /// queue's one wake-up from whoever polls it next.
    fn poll_batch(
        &self,
        generation: Option<u64>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<pb::RaftBatch>> {
        let mut rx = self.rx.lock().unwrap_or_else(PoisonError::into_inner);
        if generation.is_some_and(|g| g != self.generation.load(Ordering::Acquire)) {
            return Poll::Ready(None);
        }
        let Some(first) = std::task::ready!(rx.poll_recv(cx)) else {
            return Poll::Ready(None);
        };
        let mut size = first.len();
        let mut messages = vec![first];
        while size < self.max_batch_bytes {
            match rx.try_recv() {
                Ok(bytes) => {
                    size += bytes.len();
                    messages.push(bytes);
                }
                Err(_) => break,
            }
        }
        drop(rx);
        self.taken.fetch_add(1, Ordering::Relaxed);
        let sender = self
            .local
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Poll::Ready(Some(pb::RaftBatch { messages, sender }))
    }

    async fn next_batch(&self) -> Option<pb::RaftBatch> {
        std::future::poll_fn(|cx| self.poll_batch(None, cx)).await
    }

    /// Ends the bodies of the calls so far.
    fn end_calls(&self) {
        let _rx = self.rx.lock().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn is_empty(&self) -> bool {
        self.rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Drops what is queued: after a failure it is stale, and raft resends what
    /// matters.
    fn clear(&self) {
        let mut rx = self.rx.lock().unwrap_or_else(PoisonError::into_inner);
        while rx.try_recv().is_ok() {}
    }
}

/// The request body of a `Stream` call: the batch that opened it, then batches taken
/// straight from the lane's queue, until the transport is gone or the call is over.
struct LaneBody {
    queue: Arc<LaneQueue>,
    generation: u64,
    first: Option<pb::RaftBatch>,
}

impl tokio_stream::Stream for LaneBody {
    type Item = pb::RaftBatch;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        self.queue.poll_batch(Some(self.generation), cx)
    }
}

/// Sends one lane's batches: everything queued goes out as one batch, up to
/// `max_batch_bytes`, on a long-lived `Stream` call (one per lane, opened by the first
/// batch after it ended). A peer that does not know `Stream` (an older version) gets
/// one `Send` call per batch instead. A failure drops what is queued, reports the peer
/// unreachable and backs off before the next attempt; raft resends what matters.
async fn send_loop(
    id: u64,
    addr: String,
    channel: Channel,
    queue: Arc<LaneQueue>,
    options: TransportOptions,
    events: mpsc::Sender<PeerEvent>,
) {
    let client = RaftTransportClient::new(channel)
        .max_encoding_message_size(options.max_message_bytes)
        .max_decoding_message_size(options.max_message_bytes);
    let send_timeout = Duration::from_millis(options.send_timeout_ms);
    let mut streaming = true;
    let mut backoff = Duration::from_millis(options.backoff_min_ms);
    let max_backoff = Duration::from_millis(options.backoff_max_ms);
    while let Some(batch) = queue.next_batch().await {
        let sent = if streaming {
            let opened = Instant::now();
            let ended = stream_batches(client.clone(), &queue, batch, send_timeout).await;
            // The link worked until now: back off from the start again.
            if ended.delivered || opened.elapsed() >= max_backoff {
                backoff = Duration::from_millis(options.backoff_min_ms);
            }
            Err(ended.status)
        } else {
            let mut rpc = tonic::Request::new(batch);
            rpc.set_timeout(send_timeout);
            let sent = client.clone().send(rpc).await.map(drop);
            // The peer may come back upgraded: try a stream again after a failure.
            streaming = sent.is_err();
            sent
        };
        match sent {
            Ok(()) => backoff = Duration::from_millis(options.backoff_min_ms),
            Err(status) if streaming && status.code() == tonic::Code::Unimplemented => {
                tracing::info!(peer = id, %addr,
                    "peer does not know streamed raft batches; sending one batch per call");
                streaming = false;
            }
            Err(status)
                if status.code() == tonic::Code::PermissionDenied
                    && status.message().starts_with(crate::server::REMOVED) =>
            {
                tracing::warn!(peer = id, %addr, "peer says this node was removed from the cluster");
                let _ = events.try_send(PeerEvent::Removed { by: id });
                queue.clear();
            }
            Err(status) => {
                tracing::debug!(peer = id, %addr, error = %status.message(), "raft send failed");
                let _ = events.try_send(PeerEvent::Unreachable(id));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
                queue.clear();
            }
        }
    }
}

/// Runs one `Stream` call, opened with `first`, until it ends, and says why it ended
/// (a stream ends only on a failure, or when the peer stops: never well). A stream that takes no
/// batch for `send_timeout` while batches wait (the connection is stuck) is dropped.
async fn stream_batches(
    mut client: RaftTransportClient<Channel>,
    queue: &Arc<LaneQueue>,
    first: pb::RaftBatch,
    send_timeout: Duration,
) -> Ended {
    let generation = queue.generation.load(Ordering::Acquire);
    let taken_first = queue.taken.load(Ordering::Relaxed);
    let body = LaneBody {
        queue: Arc::clone(queue),
        generation,
        first: Some(first),
    };
    let call = client.stream(body);
    tokio::pin!(call);
    let mut check = tokio::time::interval(send_timeout);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Batches taken when the queue was last seen waiting.
    let mut waiting_since: Option<u64> = None;
    let ended = loop {
        tokio::select! {
            ended = &mut call => break match ended {
                Ok(_) => tonic::Status::unavailable("the peer ended the stream"),
                Err(status) => status,
            },
            _ = check.tick() => {
                let taken = queue.taken.load(Ordering::Relaxed);
                if queue.is_empty() {
                    waiting_since = None;
                } else if waiting_since == Some(taken) {
                    break tonic::Status::deadline_exceeded(format!(
                        "the peer took no batch for {} ms",
                        send_timeout.as_millis()
                    ));
                } else {
                    waiting_since = Some(taken);
                }
            }
        }
    };
    // A body the ended call still holds takes nothing more.
    queue.end_calls();
    Ended {
        status: ended,
        delivered: queue.taken.load(Ordering::Relaxed) > taken_first,
    }
}

/// Why a `Stream` call ended, and whether it delivered: it took batches after the one
/// that opened it, so the link worked until then.
struct Ended {
    status: tonic::Status,
    delivered: bool,
}

/// An append with entries (read-index messages carry their context as an entry too, but
/// no log).
fn carries_log_entries(message: &Message) -> bool {
    message.get_msg_type() == raft::eraftpb::MessageType::MsgAppend && !message.entries.is_empty()
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::{Entry, Message, MessageType};

    /// Only appends with entries take the entries lane; a read-index request and its
    /// answer carry an entry (their context) but go with the heartbeats.
    #[test]
    fn only_appends_with_entries_take_the_entries_lane() {
        let with_entry = |kind: MessageType| Message {
            msg_type: kind as i32,
            entries: vec![Entry::default()],
            ..Default::default()
        };
        assert!(super::carries_log_entries(&with_entry(
            MessageType::MsgAppend
        )));
        for kind in [MessageType::MsgReadIndex, MessageType::MsgReadIndexResp] {
            assert!(!super::carries_log_entries(&with_entry(kind)), "{kind:?}");
        }
        let empty_append = Message {
            msg_type: MessageType::MsgAppend as i32,
            ..Default::default()
        };
        assert!(!super::carries_log_entries(&empty_append));
    }
}
