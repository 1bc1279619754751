//! gRPC peer transport of sqlraft.
//!
//! * [`Transport`] sends raft messages to peers: one long-lived HTTP/2 channel and one
//!   sender task per peer, a bounded queue in front of each (when it is full, messages
//!   are dropped and raft resends them), batching of queued messages into one RPC,
//!   reconnection with exponential backoff, and reports of unreachable peers so raft
//!   can slow down probing.
//! * [`serve`] runs the receiving side on a listener and hands what arrives to a
//!   [`Handler`]: raft messages, writes forwarded by followers, join requests.
//!
//! Raft messages travel as opaque bytes: they are `eraftpb::Message`s encoded with the
//! prost version raft-rs is built against (0.11), while tonic uses prost 0.14.
//!
//! For tests, [`Transport::block`] drops all traffic to and from a peer on this node,
//! which is how partitions are made.
#![deny(missing_docs)]

mod client;
mod error;
mod server;

#[cfg(feature = "testing")]
pub use client::{ForwardFault, SendObserver};
pub use client::{PeerEvent, Transport, TransportOptions};
pub use error::TransportError;
pub use server::{Handler, REMOVED, serve};
