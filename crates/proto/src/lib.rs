//! Protobuf and gRPC types generated from `proto/sqlraft.proto`.
//!
//! Raft's own `eraftpb` messages are not here: they travel as opaque bytes encoded with
//! the prost version raft-rs is built against.
#![allow(missing_docs, clippy::all)]

/// Version 1 of the wire format.
pub mod v1 {
    tonic::include_proto!("sqlraft.v1");
}
