//! The write side: one connection that applies committed entries.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::functions::FunctionFlags;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, ToSql, TransactionBehavior};

use crate::clock::EntryClock;
use crate::error::{Result, SqliteError};
use crate::guard::Guard;
use crate::types::{Member, Params, Statement, StatementResult, Value, WriteRequest};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _sqlraft_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _sqlraft_members (
    raft_id INTEGER PRIMARY KEY,
    service_id TEXT NOT NULL UNIQUE,
    raft_addr TEXT NOT NULL,
    http_addr TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS _sqlraft_services (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    fqdn TEXT NOT NULL,
    raft_addr TEXT NOT NULL,
    state TEXT NOT NULL,
    raft_id INTEGER,
    created_at_ms INTEGER NOT NULL,
    updated_index INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _sqlraft_requests (
    id TEXT PRIMARY KEY,
    entry_index INTEGER NOT NULL,
    digest BLOB NOT NULL,
    results BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS _sqlraft_requests_by_index ON _sqlraft_requests (entry_index);
";

/// Largest string, blob or row a write may store (SQLite's `SQLITE_LIMIT_LENGTH` on the
/// apply connection). A value of this size reads back within a read's default byte
/// budget unless its JSON form is much larger than itself (text made mostly of
/// characters JSON escapes).
pub const MAX_VALUE_BYTES: usize = 16 << 20;

/// How long a request id is remembered, in log entries: a retry within this many
/// entries of the first attempt is answered from the first one's results; the id is
/// forgotten after that, the same way on every node.
pub const IDEMPOTENCY_WINDOW_ENTRIES: u64 = 100_000;

/// The outcome of a write entry.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteApplied {
    /// One result per statement run.
    pub results: Vec<StatementResult>,
    /// The entry that applied the write: this one, or for a repeated request id the
    /// first entry that carried it (this one then changed nothing).
    pub raft_index: u64,
}

/// The SQLite state machine: applies committed raft entries to the state database.
///
/// The effects of a batch of entries and the index of the last one (`applied_index`)
/// commit in one SQLite transaction ([`ApplyTxn::commit`]), so after a crash the
/// database is exactly at some applied index and replay resumes right after it. The
/// database does not fsync per commit (WAL, `synchronous=NORMAL`): the raft log is the
/// durable record, and a commit lost in a crash is applied again from the log.
pub struct StateMachine {
    path: PathBuf,
    pub(crate) conn: Connection,
    guard: Guard,
    /// State of the deterministic `random()`, reseeded for every request.
    rng: Arc<Mutex<u64>>,
    /// The entry time the date and time functions see.
    clock: EntryClock,
    /// Latest entry time applied (Unix ms); entry times never go below it.
    time_ms: i64,
    /// Tables holding a row at the largest rowid (data from before that was refused).
    at_last_rowid: Mutex<HashSet<String>>,
    applied: u64,
}

impl StateMachine {
    /// Opens (or creates) the state database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let open_err = |source| SqliteError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(open_err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SqliteError::Inconsistent(format!(
                "{} cannot use WAL mode (got {mode})",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous=NORMAL;")
            .map_err(open_err)?;
        // The same on every node: a larger value is refused alike everywhere.
        conn.set_limit(
            rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH,
            MAX_VALUE_BYTES as i32,
        )
        .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;

        let guard = Guard::default();
        guard.install(&conn).map_err(open_err)?;
        let rng = Arc::new(Mutex::new(0u64));
        install_deterministic_random(&conn, &rng).map_err(open_err)?;
        let clock = EntryClock::default();
        crate::clock::install(&conn, &clock).map_err(open_err)?;

        let applied: Option<i64> = conn
            .query_row(
                "SELECT value FROM _sqlraft_meta WHERE key = 'applied_index'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(open_err)?;
        let applied = u64::try_from(applied.unwrap_or(0))
            .map_err(|_| SqliteError::Inconsistent("negative applied_index".into()))?;
        let time_ms: Option<i64> = conn
            .query_row(
                "SELECT value FROM _sqlraft_meta WHERE key = 'entry_time_ms'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(open_err)?;
        let at_last_rowid = crate::schema::tables_at_last_rowid(&conn)
            .map_err(open_err)?
            .into_iter()
            .collect();
        Ok(StateMachine {
            path: path.to_path_buf(),
            conn,
            guard,
            rng,
            clock,
            time_ms: time_ms.unwrap_or(0),
            at_last_rowid: Mutex::new(at_last_rowid),
            applied,
        })
    }

    /// Path of the state database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Index of the last entry whose effects are in the database.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// The conf state stored with the applied index (opaque bytes), if any.
    pub fn conf_state(&self) -> Result<Option<Vec<u8>>> {
        self.conn
            .query_row(
                "SELECT value FROM _sqlraft_meta WHERE key = 'conf_state'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(SqliteError::Apply)
    }

    /// Members recorded in the replicated state, by raft id.
    pub fn members(&self) -> Result<Vec<Member>> {
        let mut stmt = self
            .conn
            .prepare("SELECT raft_id, service_id, raft_addr, http_addr FROM _sqlraft_members ORDER BY raft_id")
            .map_err(SqliteError::Apply)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Member {
                    raft_id: r.get::<_, i64>(0)? as u64,
                    service_id: r.get(1)?,
                    raft_addr: r.get(2)?,
                    http_addr: r.get(3)?,
                })
            })
            .map_err(SqliteError::Apply)?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(SqliteError::Apply)
    }

    /// Starts applying a batch of committed entries.
    pub fn begin(&mut self) -> Result<ApplyTxn<'_>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(SqliteError::Apply)?;
        Ok(ApplyTxn {
            tx,
            guard: &self.guard,
            rng: &self.rng,
            clock: &self.clock,
            time_ms: &mut self.time_ms,
            new_time_ms: None,
            at_last_rowid: &self.at_last_rowid,
            applied: &mut self.applied,
            last_index: None,
        })
    }
}

/// One SQLite transaction applying consecutive committed entries.
///
/// Dropping it without [`ApplyTxn::commit`] rolls everything back.
pub struct ApplyTxn<'a> {
    pub(crate) tx: rusqlite::Transaction<'a>,
    guard: &'a Guard,
    rng: &'a Arc<Mutex<u64>>,
    clock: &'a EntryClock,
    time_ms: &'a mut i64,
    /// The latest entry time of this batch, stored at commit.
    new_time_ms: Option<i64>,
    at_last_rowid: &'a Mutex<HashSet<String>>,
    applied: &'a mut u64,
    pub(crate) last_index: Option<u64>,
}

impl ApplyTxn<'_> {
    /// The index the next entry of this batch must have.
    pub fn next_index(&self) -> u64 {
        self.last_index.unwrap_or(*self.applied) + 1
    }

    /// Records that entry `index` is part of this batch; indexes must follow
    /// `applied_index` without gaps.
    pub fn entry(&mut self, index: u64) -> Result<()> {
        let expected = self.last_index.unwrap_or(*self.applied) + 1;
        if index != expected {
            return Err(SqliteError::Inconsistent(format!(
                "entry {index} applied out of order: expected {expected}"
            )));
        }
        self.last_index = Some(index);
        Ok(())
    }

    /// Runs the statements of a write request (entry `index`) and returns one result
    /// per statement run. Statement errors are results, not errors; `Err` means the
    /// database itself failed. Its date and time functions see the latest entry time
    /// applied so far (see [`ApplyTxn::write_at`]).
    pub fn write(&mut self, index: u64, request: &WriteRequest) -> Result<Vec<StatementResult>> {
        self.write_at(index, 0, request)
    }

    /// Like [`ApplyTxn::write`], for an entry the leader proposed at `at_unix_ms`: `'now'`
    /// and `CURRENT_TIMESTAMP` in its statements are that time (or the latest entry
    /// time already applied, if later), on every node.
    pub fn write_at(
        &mut self,
        index: u64,
        at_unix_ms: i64,
        request: &WriteRequest,
    ) -> Result<Vec<StatementResult>> {
        Ok(self.write_request(index, at_unix_ms, request)?.results)
    }

    /// Like [`ApplyTxn::write_at`], honouring the request's id: a request id seen within
    /// [`IDEMPOTENCY_WINDOW_ENTRIES`] is not applied again and gets the first results
    /// and raft index; the same id with different statements is refused.
    pub fn write_request(
        &mut self,
        index: u64,
        at_unix_ms: i64,
        request: &WriteRequest,
    ) -> Result<WriteApplied> {
        let Some(id) = request.request_id.as_deref() else {
            let results = self.run_request(index, at_unix_ms, request)?;
            return Ok(WriteApplied {
                results,
                raft_index: index,
            });
        };
        self.control_params(
            "DELETE FROM _sqlraft_requests WHERE entry_index <= ?1",
            &[&(index.saturating_sub(IDEMPOTENCY_WINDOW_ENTRIES) as i64)],
        )?;
        let digest = request_digest(request);
        let seen: Option<(i64, Vec<u8>, Vec<u8>)> = self
            .tx
            .query_row(
                "SELECT entry_index, digest, results FROM _sqlraft_requests WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(SqliteError::Apply)?;
        if let Some((first, first_digest, results)) = seen {
            self.entry(index)?;
            if first_digest != digest {
                return Ok(WriteApplied {
                    results: vec![StatementResult {
                        error: Some(format!(
                            "request id {id:?} was already used for a different request \
                             (at raft index {first}); use a new id for a new request"
                        )),
                        ..Default::default()
                    }],
                    raft_index: index,
                });
            }
            let results = decode_results(&results).ok_or_else(|| {
                SqliteError::Inconsistent(format!("stored results of request {id:?} are damaged"))
            })?;
            return Ok(WriteApplied {
                results,
                raft_index: first as u64,
            });
        }
        let results = self.run_request(index, at_unix_ms, request)?;
        self.control_params(
            "INSERT INTO _sqlraft_requests (id, entry_index, digest, results) \
             VALUES (?1, ?2, ?3, ?4)",
            &[&id, &(index as i64), &digest, &encode_results(&results)],
        )?;
        Ok(WriteApplied {
            results,
            raft_index: index,
        })
    }

    fn run_request(
        &mut self,
        index: u64,
        at_unix_ms: i64,
        request: &WriteRequest,
    ) -> Result<Vec<StatementResult>> {
        self.entry(index)?;
        *self.rng.lock().unwrap_or_else(PoisonError::into_inner) = index;
        let now = at_unix_ms.max(self.new_time_ms.unwrap_or(*self.time_ms));
        if now != *self.time_ms {
            self.new_time_ms = Some(now);
        }
        self.clock.set(now);
        self.control("SAVEPOINT sqlraft_request")?;
        let mut results = Vec::with_capacity(request.statements.len());
        for statement in &request.statements {
            if !request.transaction {
                self.control("SAVEPOINT sqlraft_statement")?;
            }
            match self.run(statement)? {
                Ok(result) => {
                    if !request.transaction {
                        self.control("RELEASE sqlraft_statement")?;
                    }
                    results.push(result);
                }
                Err(message) => {
                    let scope = if request.transaction {
                        "sqlraft_request"
                    } else {
                        "sqlraft_statement"
                    };
                    self.control(&format!("ROLLBACK TO {scope}; RELEASE {scope}"))?;
                    results.push(StatementResult {
                        error: Some(message),
                        ..Default::default()
                    });
                    if request.transaction {
                        return Ok(results);
                    }
                }
            }
        }
        self.control("RELEASE sqlraft_request")?;
        Ok(results)
    }

    /// Runs one client statement. The outer `Err` is a failure of the database; the
    /// inner one a deterministic statement error.
    fn run(&self, statement: &Statement) -> Result<Result<StatementResult, String>> {
        if let Some(refusal) = crate::guard::static_refusal(&statement.sql) {
            return Ok(Err(refusal));
        }
        let outcome = self.guard.client(|| self.run_client(statement));
        // A row at the largest rowid: SQLite would go on with random rowids (different
        // on every node) or fail AUTOINCREMENT with SQLITE_FULL, which looks like a
        // full disk. Whatever happened after it, the statement fails, the same way on
        // every node (its savepoint undoes it).
        let exhausted = self.guard.wrote_last_rowid() && !self.tx.is_autocommit();
        let e = match outcome {
            Ok(_) if exhausted => return Ok(Err(last_rowid_refusal("a table"))),
            Ok(result) => return Ok(Ok(result)),
            Err(e) if exhausted && e.sqlite_error_code() == Some(ErrorCode::DiskFull) => {
                return Ok(Err(last_rowid_refusal("a table")));
            }
            Err(e) => e,
        };
        // This node's disk or memory failed: another node would not see it, so it can
        // never become a statement's result. Checked first, whatever else happened.
        if is_environmental(&e) {
            return Err(SqliteError::Apply(e));
        }
        if self.tx.is_autocommit() {
            // SQLite rolled back the whole batch. An interrupt for running past the
            // step budget does that the same way on every node: the caller applies
            // the batch again with this entry failed. Any other cause is not known to
            // be deterministic, so it stops the node.
            if self.guard.over_budget() {
                return Err(SqliteError::BatchAborted(format!(
                    "statement stopped after {} million steps: it runs too long to be \
                     applied on every node",
                    crate::guard::MAX_STATEMENT_CALLS / 1000
                )));
            }
            return Err(SqliteError::Apply(e));
        }
        let message = match (self.guard.take_refusal(), e) {
            (Some(reason), _) => reason,
            (None, rusqlite::Error::MultipleStatement) => {
                "one statement per item: split the SQL into several statements".into()
            }
            (None, e) => statement_error_message(e),
        };
        Ok(Err(message))
    }

    fn run_client(&self, statement: &Statement) -> rusqlite::Result<StatementResult> {
        if statement.sql.trim().is_empty() {
            return Err(rusqlite::Error::InvalidQuery);
        }
        let mut stmt = self.guard.preparing(|| self.tx.prepare(&statement.sql))?;
        bind(&mut stmt, &statement.params)?;
        self.guard.own(|| self.check_last_rowid_before())?;
        let before = self.tx.total_changes();
        let mut rows = stmt.raw_query();
        while rows.next()?.is_some() {}
        drop(rows);
        if self.guard.altered() {
            self.guard.own(|| self.note_tables_at_last_rowid())?;
        }
        // SQLite's changes() and last_insert_rowid() keep their values across
        // statements that change nothing (DDL, a SELECT) and over a connection's
        // lifetime; report them only for what this statement did, so that the result
        // is the same on every node and after restarts.
        let changed = self.tx.total_changes() > before;
        Ok(StatementResult {
            rows_affected: if changed { self.tx.changes() } else { 0 },
            last_insert_id: if changed {
                self.guard.last_insert().unwrap_or(0)
            } else {
                0
            },
            error: None,
        })
    }

    /// Refuses an insert into a table that already holds the largest rowid: data
    /// written before that was refused ([`StateMachine::open`] finds those tables).
    /// New rows at the largest rowid are refused while they are written (the update
    /// hook), so no other table can come to hold one, and an insert pays no query.
    fn check_last_rowid_before(&self) -> rusqlite::Result<()> {
        let suspects: Vec<String> = {
            let full = self
                .at_last_rowid
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if full.is_empty() {
                return Ok(());
            }
            self.guard
                .inserted_tables()
                .into_iter()
                .filter(|t| full.contains(t))
                .collect()
        };
        for table in suspects {
            if crate::schema::holds_last_rowid(&self.tx, &table)? {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
                    Some(last_rowid_refusal(&format!("table {table}"))),
                ));
            }
        }
        Ok(())
    }

    /// After an `ALTER TABLE` (a rename moves such a table under a new name): looks for
    /// tables at the largest rowid again. Names are only ever added, so a rename that
    /// is rolled back leaves the old name watched too.
    fn note_tables_at_last_rowid(&self) -> rusqlite::Result<()> {
        let found = crate::schema::tables_at_last_rowid(&self.tx)?;
        self.at_last_rowid
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(found);
        Ok(())
    }

    fn control_params(&self, sql: &str, params: &[&dyn ToSql]) -> Result<()> {
        self.tx
            .execute(sql, params)
            .map(|_| ())
            .map_err(SqliteError::Apply)
    }

    fn control(&self, sql: &str) -> Result<()> {
        self.tx.execute_batch(sql).map_err(SqliteError::Apply)
    }

    /// Records an entry that changes nothing in the database (a no-op or a
    /// configuration change) so that it counts as applied.
    pub fn skip(&mut self, index: u64) -> Result<()> {
        self.entry(index)
    }

    /// Adds or updates a member.
    pub fn put_member(&mut self, member: &Member) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO _sqlraft_members (raft_id, service_id, raft_addr, http_addr)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (raft_id) DO UPDATE SET service_id = excluded.service_id,
                    raft_addr = excluded.raft_addr, http_addr = excluded.http_addr",
                rusqlite::params![
                    member.raft_id as i64,
                    member.service_id,
                    member.raft_addr,
                    member.http_addr
                ],
            )
            .map_err(SqliteError::Apply)?;
        self.service_joined(member)
    }

    /// Raft ids of the members recorded so far in this transaction.
    pub fn member_ids(&self) -> Result<Vec<u64>> {
        let mut stmt = self
            .tx
            .prepare("SELECT raft_id FROM _sqlraft_members")
            .map_err(SqliteError::Apply)?;
        let ids = stmt
            .query_map([], |r| r.get::<_, i64>(0))
            .map_err(SqliteError::Apply)?;
        ids.map(|id| id.map(|v| v as u64))
            .collect::<rusqlite::Result<_>>()
            .map_err(SqliteError::Apply)
    }

    /// Removes a member.
    pub fn remove_member(&mut self, raft_id: u64) -> Result<()> {
        self.tx
            .execute(
                "DELETE FROM _sqlraft_members WHERE raft_id = ?1",
                [raft_id as i64],
            )
            .map_err(SqliteError::Apply)?;
        self.service_left(raft_id)
    }

    /// Stores the conf state (opaque bytes) that holds once this batch is applied.
    pub fn set_conf_state(&mut self, conf_state: &[u8]) -> Result<()> {
        self.tx
            .execute(
                "INSERT OR REPLACE INTO _sqlraft_meta (key, value) VALUES ('conf_state', ?1)",
                [conf_state],
            )
            .map_err(SqliteError::Apply)?;
        Ok(())
    }

    /// Commits the batch together with its applied index.
    pub fn commit(self) -> Result<u64> {
        let Some(last) = self.last_index else {
            return Ok(*self.applied);
        };
        self.tx
            .execute(
                "INSERT OR REPLACE INTO _sqlraft_meta (key, value) VALUES ('applied_index', ?1)",
                [last as i64],
            )
            .map_err(SqliteError::Apply)?;
        if let Some(time_ms) = self.new_time_ms {
            self.tx
                .execute(
                    "INSERT OR REPLACE INTO _sqlraft_meta (key, value) VALUES ('entry_time_ms', ?1)",
                    [time_ms],
                )
                .map_err(SqliteError::Apply)?;
        }
        self.tx.commit().map_err(SqliteError::Apply)?;
        *self.applied = last;
        if let Some(time_ms) = self.new_time_ms {
            *self.time_ms = time_ms;
        }
        Ok(last)
    }
}

pub(crate) fn bind(stmt: &mut rusqlite::Statement<'_>, params: &Params) -> rusqlite::Result<()> {
    let expected = stmt.parameter_count();
    let count_error = |given: usize| rusqlite::Error::InvalidParameterCount(given, expected);
    match params {
        Params::None if expected > 0 => return Err(count_error(0)),
        Params::None => {}
        Params::Positional(values) => {
            if values.len() != expected {
                return Err(count_error(values.len()));
            }
            for (i, value) in values.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, value)?;
            }
        }
        Params::Named(values) => {
            if values.len() != expected {
                return Err(count_error(values.len()));
            }
            for (name, value) in values {
                let index = named_index(stmt, name)?
                    .ok_or_else(|| rusqlite::Error::InvalidParameterName(name.clone()))?;
                stmt.raw_bind_parameter(index, value)?;
            }
        }
    }
    Ok(())
}

fn named_index(stmt: &rusqlite::Statement<'_>, name: &str) -> rusqlite::Result<Option<usize>> {
    if name.starts_with([':', '@', '$']) {
        return stmt.parameter_index(name);
    }
    for prefix in [':', '@', '$'] {
        if let Some(i) = stmt.parameter_index(&format!("{prefix}{name}"))? {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(self.as_value_ref()))
    }
}

/// What identifies a request's content for idempotency: its mode, statements and
/// parameters, hashed where they lie (no copy of a request that may be megabytes).
fn request_digest(request: &WriteRequest) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update([u8::from(request.transaction)]);
    for statement in &request.statements {
        crate::hash::feed(&mut hasher, ValueRef::Text(statement.sql.as_bytes()));
        match &statement.params {
            Params::None => hasher.update(b"-"),
            Params::Positional(values) => {
                hasher.update((values.len() as u64).to_le_bytes());
                for value in values {
                    crate::hash::feed(&mut hasher, value.as_value_ref());
                }
            }
            Params::Named(values) => {
                hasher.update(b"=");
                hasher.update((values.len() as u64).to_le_bytes());
                for (name, value) in values {
                    crate::hash::feed(&mut hasher, ValueRef::Text(name.as_bytes()));
                    crate::hash::feed(&mut hasher, value.as_value_ref());
                }
            }
        }
    }
    hasher.finalize().to_vec()
}

fn encode_results(results: &[StatementResult]) -> Vec<u8> {
    use prost::Message as _;
    sqlraft_proto::v1::WriteResults {
        results: results.iter().map(Into::into).collect(),
    }
    .encode_to_vec()
}

fn decode_results(bytes: &[u8]) -> Option<Vec<StatementResult>> {
    use prost::Message as _;
    let decoded = sqlraft_proto::v1::WriteResults::decode(bytes).ok()?;
    Some(decoded.results.into_iter().map(Into::into).collect())
}

fn last_rowid_refusal(what: &str) -> String {
    format!(
        "{what} would hold the largest rowid ({}): SQLite would choose further rowids at \
         random, differently on every node; give rowids explicitly below it",
        i64::MAX
    )
}

/// Errors that depend on this node's disk or memory rather than on the statement and
/// the replicated state: another node would not see them, so they cannot become a
/// statement's result.
fn is_environmental(e: &rusqlite::Error) -> bool {
    match e.sqlite_error_code() {
        Some(code) => matches!(
            code,
            ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
                | ErrorCode::ReadOnly
                | ErrorCode::PermissionDenied
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
        ),
        None => false,
    }
}

fn statement_error_message(e: rusqlite::Error) -> String {
    match e {
        rusqlite::Error::InvalidParameterCount(given, expected) => {
            format!("statement takes {expected} parameters, {given} given")
        }
        rusqlite::Error::InvalidParameterName(name) => format!("no parameter named {name}"),
        rusqlite::Error::InvalidQuery => "empty statement".into(),
        rusqlite::Error::SqliteFailure(_, Some(message)) => message,
        other => other.to_string(),
    }
}

/// `random()` and `randomblob(n)` seeded from the entry index, so that a request that
/// uses them writes the same values on every node.
fn install_deterministic_random(conn: &Connection, rng: &Arc<Mutex<u64>>) -> rusqlite::Result<()> {
    let state = Arc::clone(rng);
    conn.create_scalar_function("random", 0, FunctionFlags::SQLITE_UTF8, move |_| {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(splitmix64(&mut s) as i64)
    })?;
    let state = Arc::clone(rng);
    conn.create_scalar_function("randomblob", 1, FunctionFlags::SQLITE_UTF8, move |ctx| {
        let n = ctx.get::<i64>(0)?.max(1) as usize;
        if n > MAX_VALUE_BYTES {
            return Err(rusqlite::Error::UserFunctionError(
                format!("randomblob({n}): string or blob too big").into(),
            ));
        }
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&splitmix64(&mut s).to_le_bytes());
        }
        out.truncate(n);
        Ok(out)
    })
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLITE_FULL from `max_page_count` (set on the apply connection, as an operator
    /// limit would be) in the middle of a batch stops the node: it is never a result.
    #[test]
    fn hitting_max_page_count_is_fatal_not_a_result() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sm = StateMachine::open(&dir.path().join("state.db")).expect("open");
        let mut txn = sm.begin().expect("begin");
        txn.write(
            1,
            &WriteRequest::transaction(vec![Statement::new("CREATE TABLE t (v)")]),
        )
        .expect("create");
        txn.commit().expect("commit");
        let pages: i64 = sm
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .expect("page count");
        sm.conn
            .pragma_update(None, "max_page_count", pages + 4)
            .expect("limit pages");
        for transaction in [true, false] {
            let mut txn = sm.begin().expect("begin");
            let next = txn.next_index();
            let outcome = txn.write(
                next,
                &WriteRequest {
                    statements: vec![
                        Statement::new("INSERT INTO t VALUES (1)"),
                        Statement::new("INSERT INTO t VALUES (zeroblob(1000000))"),
                    ],
                    transaction,
                    request_id: None,
                },
            );
            match outcome {
                Err(e) => assert!(e.is_fatal(), "{e:?}"),
                Ok(results) => panic!("a full database became a result: {results:?}"),
            }
        }
    }
}
