use std::path::PathBuf;

/// Errors of the SQLite state machine and read pool.
///
/// Statement errors of a write are not errors here: they are deterministic outcomes,
/// recorded in [`crate::StatementResult::error`] the same way on every node. What is
/// here is either the caller's fault on a read ([`SqliteError::is_fatal`] false) or a
/// broken database, which must stop the node.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// The state database could not be opened or prepared.
    #[error("cannot open state database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// SQLite failed on sqlraft's own statements or with a disk-level error while
    /// applying: the state on this node can no longer be trusted.
    #[error("state database failure while applying: {0}")]
    Apply(#[source] rusqlite::Error),
    /// A statement made SQLite roll back the whole batch transaction (an interrupted
    /// statement does), or a failure would have undone a write to a virtual table
    /// (whose module keeps in memory what a rollback does not undo). Nothing of the
    /// batch is kept: drop it, [`StateMachine::reopen`](crate::StateMachine::reopen),
    /// and apply it again with this entry recorded as failed with the message.
    #[error("batch rolled back by a failing statement: {0}")]
    BatchAborted(String),
    /// A client statement the apply connection kept prepared was compiled again by
    /// SQLite as it ran, without the authorizer judging it (its schema changed under
    /// it, which keeping it rules out: a bug if it happens). Nothing of the batch is
    /// kept: drop it, [`StateMachine::reopen_keeping_nothing`](crate::StateMachine::reopen_keeping_nothing)
    /// and apply it again as it was.
    #[error("a statement kept prepared was compiled again as it ran; the batch is applied again")]
    PreparedAgain,
    /// Statements of a request without `?transaction` must fail without running:
    ///
    /// * statements that failed after they were prepared to write a virtual table:
    ///   their savepoints undid their rows, but not what the modules keep in memory.
    ///   The request's other statements ran to the end, so every such statement of
    ///   the request is there;
    /// * every statement of one of the requests batched in the entry
    ///   ([`WriteRequest::parts`](crate::WriteRequest::parts)) that rolled back the
    ///   whole batch (a step budget, a schema reset a module failed): that request
    ///   fails alone; and, from [`ApplyTxn::commit`](crate::ApplyTxn::commit), every
    ///   statement of the batched requests that wrote a virtual table, when the
    ///   commit failed for one of them.
    ///
    /// `failed` holds each one's position in the entry's statements (counted from 0)
    /// and its result, the error it fails with. Drop the batch,
    /// [`StateMachine::reopen`](crate::StateMachine::reopen), and apply the entry
    /// again with these statements answered by their errors without running
    /// ([`ApplyTxn::write_request_failing`](crate::ApplyTxn::write_request_failing)).
    #[error("{} statement(s) must fail without running, the first: {}",
        failed.len(), failed.first().map_or("", |(_, m)| m.as_str()))]
    StatementsAborted {
        /// Position and error of each such statement, in request order.
        failed: Vec<(usize, String)>,
    },
    /// The state database holds something sqlraft did not write.
    #[error("state database is inconsistent: {0}")]
    Inconsistent(String),
    /// The read pool could not be created.
    #[error("cannot open read pool on {path}: {source}")]
    Pool {
        /// The database file.
        path: PathBuf,
        /// What sqlx said.
        source: sqlx::Error,
    },
    /// A read failed: bad SQL, bad parameters, unknown table.
    #[error("{0}")]
    Query(String),
    /// A statement that writes was sent as a read.
    #[error("a read cannot change the database: send writes to execute ({0})")]
    WriteInRead(String),
    /// A read tried something reads may not do (transaction control, a pragma that
    /// sets something, ATTACH); it is not a write either.
    #[error("{0}")]
    NotAllowedInRead(String),
    /// The read returned more rows than allowed.
    #[error("result has more than {limit} rows")]
    TooManyRows {
        /// The limit.
        limit: usize,
    },
    /// The read's values add up to more bytes than allowed.
    #[error(
        "result is larger than {limit} bytes: select fewer rows or columns, or page with LIMIT"
    )]
    TooManyBytes {
        /// The limit.
        limit: usize,
    },
    /// A backup could not be written.
    #[error("backup failed: {0}")]
    Backup(String),
    /// A restore was refused: the file is not a usable backup.
    #[error("{0}")]
    Restore(String),
    /// A snapshot could not be taken, read or installed.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// A connection from the read pool could not be had.
    #[error("read pool unavailable: {0}")]
    PoolUnavailable(String),
}

impl SqliteError {
    /// True when the node must stop: its state database is broken.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            SqliteError::Open { .. } | SqliteError::Apply(_) | SqliteError::Inconsistent(_)
        )
    }
}

/// Result type of this crate.
pub type Result<T, E = SqliteError> = std::result::Result<T, E>;
