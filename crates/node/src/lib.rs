#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod config;
mod error;
mod identity;
mod known_peers;
mod logger;
mod membership;
mod node;
mod peer;
mod raft_loop;
mod startup;
mod status;

pub use config::{Admission, Limits, NodeConfig, RaftTimings};
pub use error::{NodeError, Result};
pub use node::{Consistency, FIRST_SERVICE_ID, Node, WriteOutcome};
pub use sqlraft_log::LogOptions;
pub use sqlraft_sqlite::{
    ContentHash, IDEMPOTENCY_WINDOW_ENTRIES, JsonShape, MAX_REQUEST_ID_BYTES, Member, Params,
    ReadOptions, Rows, Service, ServiceState, SqliteError, Statement, StatementResult, UtcTime,
    Value, WriteRequest,
};
pub use sqlraft_transport::TransportOptions;
pub use status::{MemberStatus, Role, Status};
