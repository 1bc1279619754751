//! The SQLite state machine of sqlraft.
//!
//! * [`StateMachine`] applies committed raft entries through one rusqlite connection.
//!   A write request is a batch of parameterized statements run in one savepoint; a
//!   statement error rolls the request (or, outside a transaction, the statement) back
//!   and becomes its result, identical on every node. The effects of a batch of entries
//!   and their `applied_index` commit in the same SQLite transaction.
//! * [`ReadPool`] serves client reads through read-only rusqlite connections under an
//!   allow-list authorizer (a statement that writes is refused), and offers a read-only
//!   sqlx pool for an embedding service's own typed queries.
//!
//! Why rusqlite on the apply path: sqlx sends every statement to a worker thread. With
//! 500 transactions of 50 upserts that cost about 9x on this project's machine
//! (DESIGN.md), and the apply path is on the critical path of every write.
//!
//! ```
//! use sqlraft_sqlite::{StateMachine, Statement, WriteRequest};
//!
//! let dir = tempfile::tempdir()?;
//! let mut sm = StateMachine::open(&dir.path().join("state.db"))?;
//! let mut txn = sm.begin()?;
//! let results = txn.write(1, &WriteRequest::transaction(vec![
//!     Statement::new("CREATE TABLE t (v TEXT)"),
//!     Statement::with_params("INSERT INTO t (v) VALUES (?)", vec!["hello".into()]),
//! ]))?;
//! assert!(results.iter().all(|r| r.error.is_none()));
//! assert_eq!(txn.commit()?, 1);
//! assert_eq!(sm.applied_index(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod apply;
mod backup;
mod clock;
pub mod codec;
mod dump;
mod error;
mod guard;
mod hash;
mod idempotency;
mod lex;
pub use lex::{creates_an_index, with_statement_keyword};
mod random;
mod read;
mod registry;
pub mod restore;
mod schema;
pub mod snapshot;
mod state_machine;
mod types;

pub use apply::{
    ApplyTxn, MAX_ABORTED_RUNS, MAX_ERROR_BYTES, MAX_RETURNING_BYTES, MAX_TAIL_RUNS, WriteApplied,
    leave_out, part_bounds,
};
pub use backup::backup;
pub use clock::UtcTime;
pub use dump::{dump_sql, skip_leading_comments, split_statements};
pub use error::{Result, SqliteError};
pub use guard::{INTERNAL_PREFIX, MAX_ENTRY_CALLS, MAX_REQUEST_CALLS, MAX_STATEMENT_CALLS};
pub use hash::{ContentHash, content_hash};
pub use idempotency::IDEMPOTENCY_WINDOW_ENTRIES;
pub use read::{ReadOptions, ReadPool};
pub use registry::{FIRST_SERVICE_ID, RegistryError, Service, ServiceState, host_of, service_name};
pub use state_machine::{Changes, StateMachine};
pub use types::{
    JsonShape, MAX_REQUEST_ID_BYTES, MAX_VALUE_BYTES, Member, Params, Rows, Statement,
    StatementResult, Value, WriteRequest,
};
