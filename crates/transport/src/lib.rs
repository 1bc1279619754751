//! gRPC peer transport of sqlraft.
//!
//! * [`Transport`] sends raft messages to peers: one long-lived HTTP/2 channel and one
//!   sender task per peer, a bounded queue in front of each (when it is full, messages
//!   are dropped and raft resends them), batching of queued messages into one RPC,
//!   reconnection with exponential backoff, and reports of unreachable peers so raft
//!   can slow down probing.
//! * [`serve`] runs the receiving side on a listener and hands what arrives to a
//!   [`Handler`]: raft messages, writes forwarded by followers, join requests.
//! * Snapshots travel beside the raft message that announces them: the file is streamed
//!   in checksummed chunks, resumed after a broken stream, and verified whole before the
//!   receiver sees the message (see the `snapshot` module).
//!
//! Raft messages travel as opaque bytes: they are `eraftpb::Message`s encoded with the
//! prost version raft-rs is built against (0.11), while tonic uses prost 0.14.
//!
//! For tests, the `testing` feature adds per-link faults (`Transport::set_link_fault`
//! with a `LinkFault`: partition, loss, delay) and hooks that observe or break
//! messages; none of it is in the API without the feature.
#![deny(missing_docs)]

mod client;
mod error;
mod server;
mod snapshot;
mod tls;

#[cfg(feature = "testing")]
mod faults;

#[cfg(feature = "testing")]
pub use client::{ForwardFault, SendObserver, SnapshotStreamFault};
pub use client::{PeerEvent, Transport, TransportOptions};
pub use error::TransportError;
#[cfg(feature = "testing")]
pub use faults::LinkFault;
pub use server::{Handler, REMOVED, serve};
pub use snapshot::{
    ATTEMPTS as SNAPSHOT_ATTEMPTS, CHUNK_BYTES as SNAPSHOT_CHUNK_BYTES, Direction, SnapshotFiles,
    SnapshotTransfer,
};
pub use tls::{PeerTls, SERVICE_URI_PREFIX, TlsError, TlsFiles, service_id_of, service_uri};
