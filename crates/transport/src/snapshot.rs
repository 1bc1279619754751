//! Snapshot transfer: the leader streams a snapshot file to a follower beside the raft
//! message that announces it.
//!
//! * The sender asks how much of the file the receiver holds already
//!   (`SnapshotOffset`), then streams the rest (`InstallSnapshot`) in chunks of
//!   [`CHUNK_BYTES`], each with its CRC-32, at most [`CHUNKS_IN_FLIGHT`] queued ahead of
//!   the network. A broken stream is retried from where the receiver stands, up to
//!   [`ATTEMPTS`] times; then raft is told the snapshot failed and sends it again later.
//! * The receiver appends verified chunks to `recv-<index>-<term>.part` in the node's
//!   snapshot directory; with the last chunk it syncs the file, checks its size and
//!   SHA-256 against the descriptor, and hands file and message to the node
//!   ([`crate::Handler::snapshot_received`]), which checks the content and steps the
//!   message into raft. Only then is the transfer acknowledged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prost::Message as _;
use prost_011::Message as _;
use raft::eraftpb::{Message, MessageType};
use sha2::{Digest, Sha256};
use sqlraft_proto::v1 as pb;
use sqlraft_proto::v1::raft_transport_client::RaftTransportClient;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use crate::PeerEvent;

/// Bytes of file per chunk.
pub const CHUNK_BYTES: usize = 256 << 10;
/// Chunks read ahead of the network per transfer.
pub const CHUNKS_IN_FLIGHT: usize = 4;
/// Streams tried (each resuming where the last one stopped) before raft is told the
/// snapshot failed.
pub const ATTEMPTS: u32 = 5;
/// A receiving stream that brings no chunk for this long is given up (the part file is
/// kept for the next attempt).
pub const CHUNK_IDLE: Duration = Duration::from_secs(30);

/// The next chunk of a stream, within [`CHUNK_IDLE`].
async fn next_chunk(
    stream: &mut Streaming<pb::SnapshotChunk>,
) -> Result<Option<pb::SnapshotChunk>, Status> {
    match tokio::time::timeout(CHUNK_IDLE, stream.message()).await {
        Ok(next) => next,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no snapshot chunk for {} s",
            CHUNK_IDLE.as_secs()
        ))),
    }
}

/// Finds the local file of the snapshot at `(index, term)`.
pub type SnapshotFiles = Arc<dyn Fn(u64, u64) -> Option<PathBuf> + Send + Sync>;

/// Which way a snapshot goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// This node sends it.
    Sending,
    /// This node receives it.
    Receiving,
}

/// A snapshot transfer in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTransfer {
    /// The other node's raft id.
    pub peer: u64,
    /// Which way it goes.
    pub direction: Direction,
    /// The snapshot's index and term.
    pub index: u64,
    /// See `index`.
    pub term: u64,
    /// Bytes sent (or received and verified) so far.
    pub bytes_done: u64,
    /// Bytes of the whole file.
    pub bytes_total: u64,
    /// The stream being tried (1 for the first).
    pub attempt: u32,
}

/// The transfers in progress on one node.
#[derive(Default)]
pub(crate) struct Transfers {
    table: Mutex<HashMap<(u64, Direction), SnapshotTransfer>>,
}

impl Transfers {
    /// Registers a transfer; false when one with the same peer and direction runs.
    fn start(&self, transfer: SnapshotTransfer) -> bool {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (transfer.peer, transfer.direction);
        if table.contains_key(&key) {
            return false;
        }
        table.insert(key, transfer);
        true
    }

    fn update(&self, peer: u64, direction: Direction, change: impl FnOnce(&mut SnapshotTransfer)) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = table.get_mut(&(peer, direction)) {
            change(t);
        }
    }

    fn finish(&self, peer: u64, direction: Direction) {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(peer, direction));
    }

    pub(crate) fn list(&self) -> Vec<SnapshotTransfer> {
        let mut all: Vec<SnapshotTransfer> = self
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|t| (t.peer, t.direction == Direction::Receiving));
        all
    }
}

/// Everything one outgoing transfer needs.
pub(crate) struct Outgoing {
    pub client: RaftTransportClient<Channel>,
    pub to: u64,
    pub addr: String,
    pub message: Message,
    pub descriptor: pb::SnapshotDescriptor,
    pub path: PathBuf,
    pub sender: Option<pb::Member>,
    pub transfers: Arc<Transfers>,
    pub events: mpsc::Sender<PeerEvent>,
    pub request_timeout: Duration,
    pub backoff: Duration,
    #[cfg(feature = "testing")]
    pub fault: Option<crate::SnapshotStreamFault>,
}

impl Outgoing {
    /// Registers the transfer; `None` when one to the same peer is running already
    /// (raft sends a snapshot again only after it was reported).
    pub(crate) fn register(self) -> Option<Self> {
        let started = self.transfers.start(SnapshotTransfer {
            peer: self.to,
            direction: Direction::Sending,
            index: self.descriptor.index,
            term: self.descriptor.term,
            bytes_done: 0,
            bytes_total: self.descriptor.size,
            attempt: 1,
        });
        started.then_some(self)
    }

    /// Streams the snapshot, resuming after broken streams; reports the outcome to
    /// raft through the peer events.
    pub(crate) async fn run(mut self) {
        let (to, index) = (self.to, self.descriptor.index);
        tracing::info!(to, index, bytes = self.descriptor.size, addr = %self.addr,
            "sending snapshot");
        let mut ok = false;
        for attempt in 1..=ATTEMPTS {
            self.transfers
                .update(to, Direction::Sending, |t| t.attempt = attempt);
            match self.send_once().await {
                Ok(received) => {
                    tracing::info!(to, index, bytes = received, attempt, "snapshot sent");
                    ok = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(to, index, attempt, error = %e, "snapshot stream failed");
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(self.backoff * attempt).await;
                    }
                }
            }
        }
        self.transfers.finish(to, Direction::Sending);
        let _ = self.events.send(PeerEvent::SnapshotSent { to, ok }).await;
    }

    async fn send_once(&mut self) -> Result<u64, String> {
        let mut offer = tonic::Request::new(pb::SnapshotOffer {
            descriptor: Some(self.descriptor.clone()),
            sender: self.sender.clone(),
        });
        offer.set_timeout(self.request_timeout);
        let resume = self
            .client
            .snapshot_offset(offer)
            .await
            .map_err(|s| format!("offer refused: {}", s.message()))?
            .into_inner();
        let size = self.descriptor.size;
        let start = if resume.offset <= size {
            resume.offset
        } else {
            0
        };
        if start > 0 {
            tracing::info!(
                to = self.to,
                index = self.descriptor.index,
                offset = start,
                "resuming snapshot transfer"
            );
        }
        let mut file = tokio::fs::File::open(&self.path)
            .await
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| format!("cannot seek {}: {e}", self.path.display()))?;
        let (chunks, stream) = mpsc::channel::<pb::SnapshotChunk>(CHUNKS_IN_FLIGHT);
        let message = self.message.encode_to_vec();
        let sender = self.sender.clone();
        let transfers = Arc::clone(&self.transfers);
        let (to, path) = (self.to, self.path.clone());
        #[cfg(feature = "testing")]
        let fault = self.fault.clone();
        let reader = tokio::spawn(async move {
            let mut offset = start;
            let mut first = true;
            loop {
                #[cfg(feature = "testing")]
                if fault.as_ref().is_some_and(|f| (f.0)(offset)) {
                    return Err(format!("stream broken at {offset} (test fault)"));
                }
                let mut data = vec![0u8; CHUNK_BYTES.min((size - offset) as usize)];
                file.read_exact(&mut data)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let last = offset + data.len() as u64 == size;
                let chunk = pb::SnapshotChunk {
                    message: if first { message.clone() } else { Vec::new() },
                    sender: if first { sender.clone() } else { None },
                    offset,
                    crc32: crc32fast::hash(&data),
                    last,
                    data,
                };
                first = false;
                let len = chunk.data.len() as u64;
                if chunks.send(chunk).await.is_err() {
                    return Ok(());
                }
                offset += len;
                transfers.update(to, Direction::Sending, |t| t.bytes_done = offset);
                if last {
                    return Ok::<(), String>(());
                }
            }
        });
        let request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(stream));
        // The stream as a whole has no deadline (a large file takes its time); a dead
        // connection is found by HTTP/2 keep-alives.
        let answer = self.client.install_snapshot(request).await;
        let read = match reader.await {
            Ok(read) => read,
            Err(e) => Err(format!("snapshot reader failed: {e}")),
        };
        let ack = answer.map_err(|s| s.message().to_string())?.into_inner();
        read?;
        if ack.received != size {
            return Err(format!(
                "receiver holds {} of {size} bytes after the last chunk",
                ack.received
            ));
        }
        Ok(ack.received)
    }
}

/// What the receiving side needs from the node.
pub(crate) struct Incoming<'a> {
    pub dir: PathBuf,
    pub transfers: &'a Transfers,
    pub max_bytes: u64,
}

fn part_path(dir: &Path, index: u64, term: u64) -> PathBuf {
    dir.join(format!("recv-{index:020}-{term:020}.part"))
}

/// The bytes of the snapshot in `offer` this node holds already.
pub(crate) async fn resume_offset(dir: &Path, offer: &pb::SnapshotOffer) -> u64 {
    let Some(d) = &offer.descriptor else {
        return 0;
    };
    match tokio::fs::metadata(part_path(dir, d.index, d.term)).await {
        Ok(meta) if meta.len() <= d.size => meta.len(),
        _ => 0,
    }
}

/// A snapshot received whole and verified against its descriptor.
pub(crate) struct Received {
    pub message: Message,
    pub sender: Option<pb::Member>,
    pub path: PathBuf,
    pub size: u64,
}

impl Incoming<'_> {
    /// Receives one stream of chunks. `Ok(None)`: the stream ended early (the part
    /// file is kept for a resumed transfer).
    pub(crate) async fn receive(
        &self,
        mut stream: Streaming<pb::SnapshotChunk>,
        admit: impl Fn(u64, Option<&pb::Member>) -> Result<(), Status>,
    ) -> Result<Received, Status> {
        let first = next_chunk(&mut stream)
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let message = Message::decode(first.message.as_slice())
            .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))?;
        if message.get_msg_type() != MessageType::MsgSnapshot {
            return Err(Status::invalid_argument(
                "a snapshot stream must start with a snapshot message",
            ));
        }
        admit(message.from, first.sender.as_ref())?;
        let snapshot = message.get_snapshot();
        let meta = snapshot.get_metadata();
        let descriptor = pb::SnapshotDescriptor::decode(snapshot.data.as_slice()).map_err(|e| {
            Status::invalid_argument(format!("undecodable snapshot descriptor: {e}"))
        })?;
        if descriptor.index != meta.index || descriptor.term != meta.term || meta.index == 0 {
            return Err(Status::invalid_argument(
                "the snapshot descriptor does not match the message",
            ));
        }
        if descriptor.size > self.max_bytes {
            return Err(Status::resource_exhausted(format!(
                "snapshot of {} bytes is larger than this node accepts ({} bytes)",
                descriptor.size, self.max_bytes
            )));
        }
        let from = message.from;
        let started = self.transfers.start(SnapshotTransfer {
            peer: from,
            direction: Direction::Receiving,
            index: descriptor.index,
            term: descriptor.term,
            bytes_done: first.offset,
            bytes_total: descriptor.size,
            attempt: 1,
        });
        if !started {
            return Err(Status::already_exists(
                "a snapshot from this peer is being received",
            ));
        }
        let sender = first.sender.clone();
        let outcome = self
            .write_chunks(&descriptor, first, &mut stream, from)
            .await;
        self.transfers.finish(from, Direction::Receiving);
        let (path, size) = outcome?;
        Ok(Received {
            sender,
            message,
            path,
            size,
        })
    }

    async fn write_chunks(
        &self,
        descriptor: &pb::SnapshotDescriptor,
        first: pb::SnapshotChunk,
        stream: &mut Streaming<pb::SnapshotChunk>,
        from: u64,
    ) -> Result<(PathBuf, u64), Status> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| Status::internal(format!("cannot create the snapshot directory: {e}")))?;
        let path = part_path(&self.dir, descriptor.index, descriptor.term);
        let mut written = match tokio::fs::metadata(&path).await {
            Ok(meta) => meta.len(),
            Err(_) => 0,
        };
        if first.offset != written && first.offset != 0 {
            return Err(Status::failed_precondition(format!(
                "this node holds {written} bytes of the snapshot; resume there"
            )));
        }
        let mut file = if first.offset == 0 {
            written = 0;
            tokio::fs::File::create(&path).await
        } else {
            tokio::fs::OpenOptions::new().append(true).open(&path).await
        }
        .map_err(|e| Status::internal(format!("cannot open {}: {e}", path.display())))?;
        let mut next = Some(first);
        loop {
            let chunk = match next.take() {
                Some(chunk) => chunk,
                None => match next_chunk(stream).await? {
                    Some(chunk) => chunk,
                    None => {
                        let _ = file.flush().await;
                        return Err(Status::aborted(format!(
                            "stream ended after {written} of {} bytes",
                            descriptor.size
                        )));
                    }
                },
            };
            if chunk.offset != written {
                return Err(Status::invalid_argument(format!(
                    "chunk at {} but the file holds {written} bytes",
                    chunk.offset
                )));
            }
            if crc32fast::hash(&chunk.data) != chunk.crc32 {
                return Err(Status::data_loss(format!(
                    "chunk at {} failed its checksum",
                    chunk.offset
                )));
            }
            if written + chunk.data.len() as u64 > descriptor.size {
                return Err(Status::invalid_argument(
                    "more bytes than the snapshot holds",
                ));
            }
            file.write_all(&chunk.data)
                .await
                .map_err(|e| Status::internal(format!("cannot write {}: {e}", path.display())))?;
            written += chunk.data.len() as u64;
            self.transfers
                .update(from, Direction::Receiving, |t| t.bytes_done = written);
            // Written back as it arrives, 16 MiB at a time, not all at once by the
            // final sync (which would hold up the raft log's syncs on the same disk).
            if written % (16 << 20) < chunk.data.len() as u64 {
                file.sync_data().await.map_err(|e| {
                    Status::internal(format!("cannot sync {}: {e}", path.display()))
                })?;
            }
            if chunk.last {
                break;
            }
        }
        file.sync_all()
            .await
            .map_err(|e| Status::internal(format!("cannot sync {}: {e}", path.display())))?;
        drop(file);
        let failed = |message: String| {
            let path = path.clone();
            async move {
                let _ = tokio::fs::remove_file(&path).await;
                Status::data_loss(message)
            }
        };
        if written != descriptor.size {
            return Err(failed(format!(
                "the snapshot ended at {written} bytes, not {}",
                descriptor.size
            ))
            .await);
        }
        let hashed = path.clone();
        let digest = tokio::task::spawn_blocking(move || file_sha256(&hashed))
            .await
            .map_err(|e| Status::internal(format!("hashing failed: {e}")))?
            .map_err(|e| Status::internal(format!("cannot read {}: {e}", path.display())))?;
        if digest.as_slice() != descriptor.sha256.as_slice() {
            return Err(failed("the snapshot's SHA-256 does not match".into()).await);
        }
        Ok((path, written))
    }
}

fn file_sha256(path: &Path) -> std::io::Result<[u8; 32]> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}
