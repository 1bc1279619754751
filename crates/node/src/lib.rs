#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod config;
mod consistency;
mod error;
pub mod format;
mod forward;
mod handle;
mod identity;
mod known_peers;
mod logger;
mod membership;
mod metrics;
mod node;
mod params;
mod peer;
mod raft_loop;
mod startup;
mod status;
mod watchdog;
mod write;

pub use config::{Admission, Limits, NodeConfig, RaftTimings, SnapshotOptions};
pub use consistency::Consistency;
pub use error::{ErrorKind, Fatal, NodeError, Result};
pub use metrics::{LATENCY_BUCKETS, Metrics};
pub use node::{MAX_WHOLE_DATABASE_READS, Node};
pub use sqlraft_log::LogOptions;
pub use sqlraft_sqlite::{
    ContentHash, IDEMPOTENCY_WINDOW_ENTRIES, JsonShape, MAX_REQUEST_CALLS, MAX_REQUEST_ID_BYTES,
    MAX_STATEMENT_CALLS, Member, Params, ReadOptions, Rows, Service, ServiceState, SqliteError,
    Statement, StatementResult, UtcTime, Value, WriteRequest,
};
pub use sqlraft_transport::{PeerTls, TlsError, TlsFiles, TransportOptions};

/// Mutual TLS between services: the certificate conventions.
pub mod tls {
    pub use sqlraft_transport::{
        PeerTls, SERVICE_URI_PREFIX, TlsError, TlsFiles, service_id_of, service_uri,
    };
}
pub use status::{
    Leadership, MemberReport, MemberStatus, RestoreOutcome, Role, SnapshotInfo, SnapshotTransfer,
    Status,
};
pub use write::WriteOutcome;

/// The architecture: `docs/ARCHITECTURE.md` of the repository, checked by rustdoc
/// (its links to this crate's types must resolve).
#[doc = include_str!("../../../docs/ARCHITECTURE.md")]
pub mod architecture {}

/// SQL text in and out: dumps (`sqlite3 .dump`'s form) and splitting SQL text into
/// statements.
pub mod sql_text {
    pub use sqlraft_sqlite::{
        creates_an_index, dump_sql, skip_leading_comments, split_statements, with_statement_keyword,
    };
}

/// How the sqlraft core product names its services (`core-1`, `core-<fqdn>`) and the
/// id its first service bootstraps with. The library does not depend on them: any
/// service id works.
pub mod naming {
    pub use sqlraft_sqlite::{FIRST_SERVICE_ID, host_of, service_name};
}

/// The SQL libraries this crate is built with, so that an embedding service uses the
/// same versions (one SQLite links into a binary): `sqlx` for typed queries on
/// [`Node::read_pool`], `rusqlite` for what sqlx does not offer.
pub mod sql {
    pub use rusqlite;
    pub use sqlx;
}
