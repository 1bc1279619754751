//! The state database: opened once per node, with the one connection that applies
//! committed entries ([`crate::ApplyTxn`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::apply::ApplyTxn;
use crate::clock::EntryClock;
use crate::error::{Result, SqliteError};
use crate::guard::Guard;
use crate::random::install_deterministic_random;
use crate::types::{MAX_VALUE_BYTES, Member};

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
CREATE TABLE IF NOT EXISTS _sqlraft_restore (
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (id, seq)
) WITHOUT ROWID;
";

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
    changes: Changes,
    /// Batches begun since the WAL's size was last looked at.
    batches: u32,
    /// Batches between two looks, and the size past which it is truncated.
    wal_bounds: (u32, u64),
    /// Truncations in a row that readers kept from finishing.
    wal_failures: u32,
}

/// How long the apply connection waits for a lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// WAL pages past which a commit copies the WAL into the database (SQLite's automatic
/// checkpoint; its default is 1000). A checkpoint fsyncs the WAL and then the database,
/// and the nodes of a cluster may share a disk (they do on a test machine) or at least
/// share it with the raft log: the more a checkpoint has to sync, the longer the log's
/// fsyncs behind it wait. At 1000 pages one client's p99 write latency on a local
/// 3-node cluster was 2.4-12 ms, at 250 pages 1.6-2.1 ms, and 2500 pages made it 4-44 ms
/// (docs/PERFORMANCE.md).
const CHECKPOINT_PAGES: u32 = 250;

/// Batches between two looks at the WAL's size.
const WAL_LOOK_EVERY: u32 = 64;

/// A WAL larger than this has not started over for a long while: readers that never
/// all pause at once can keep SQLite's own (passive) checkpoints from ever letting it
/// start over, and it grows as long as the writes go on (a test measured 50 MB after
/// 3,000 small commits under four steady readers).
const WAL_STARVED_BYTES: u64 = 16 << 20;

/// Batches until the next try after a truncation the readers kept from finishing.
const WAL_RETRY_AFTER: u32 = 4;

/// How long the writer first waits for the readers of the old WAL to finish when it
/// starts the WAL over (readers that begin meanwhile read the database file); longer
/// after each try they kept from finishing.
const WAL_RESTART_WAIT: Duration = Duration::from_millis(20);

/// Counts the commits a [`StateMachine`] made to its database, counted once each is
/// visible to other connections. A [`ReadPool`](crate::ReadPool) that follows it lets
/// a read connection keep its read transaction (its snapshot) from one read to the
/// next while the count stays the same: nothing was committed meanwhile, so the
/// snapshot is the database as it is now.
#[derive(Clone, Debug, Default)]
pub struct Changes(Arc<AtomicU64>);

impl Changes {
    /// The number of commits so far.
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Counts a commit; called after it is visible, before the applied index that
    /// goes with it is published.
    pub(crate) fn count(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

impl StateMachine {
    /// Opens (or creates) the state database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let open_err = |source| SqliteError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SqliteError::Inconsistent(format!(
                "{} cannot use WAL mode (got {mode})",
                path.display()
            )));
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES};"
        ))
        .map_err(open_err)?;
        // The apply path's own statements (savepoints, bookkeeping), the clock's
        // function calls and clients' statements (`ApplyTxn::prepare_client`) are
        // prepared once and kept.
        conn.set_prepared_statement_cache_capacity(crate::guard::KEPT_STATEMENTS);
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
            changes: Changes::default(),
            batches: 0,
            wal_bounds: (WAL_LOOK_EVERY, WAL_STARVED_BYTES),
            wal_failures: 0,
        })
    }

    /// The count of this state machine's commits, for a [`ReadPool`](crate::ReadPool)
    /// on the same database to follow ([`crate::ReadPool::open_following`]).
    pub fn changes(&self) -> Changes {
        self.changes.clone()
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

    /// Replaces the whole content by the snapshot file at `snapshot`, which must be at
    /// applied index `index`: its pages are copied in with SQLite's backup API in one
    /// write transaction, so every connection on the database sees the old content or
    /// the new, and a crash leaves one of the two. The file is left in place.
    pub fn install_snapshot(&mut self, snapshot: &Path, index: u64) -> Result<()> {
        let meta = crate::snapshot::applied_meta(snapshot)?;
        if meta.index != index {
            return Err(SqliteError::Snapshot(format!(
                "{} holds entry {}, not {index}",
                snapshot.display(),
                meta.index
            )));
        }
        let source = Connection::open_with_flags(
            snapshot,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| SqliteError::Open {
            path: snapshot.to_path_buf(),
            source,
        })?;
        {
            let backup = rusqlite::backup::Backup::new(&source, &mut self.conn)
                .map_err(SqliteError::Apply)?;
            match backup.step(-1).map_err(SqliteError::Apply)? {
                rusqlite::backup::StepResult::Done => {}
                other => {
                    return Err(SqliteError::Snapshot(format!(
                        "copying the snapshot into the database stopped: {other:?}"
                    )));
                }
            }
        }
        drop(source);
        self.changes.count();
        // Everything cached about the old content goes with the old connection.
        let mut fresh = StateMachine::open(&self.path)?;
        fresh.changes = self.changes.clone();
        fresh.wal_bounds = self.wal_bounds;
        if fresh.applied != index {
            return Err(SqliteError::Inconsistent(format!(
                "after installing the snapshot at {index} the database is at {}",
                fresh.applied
            )));
        }
        *self = fresh;
        Ok(())
    }

    /// Applies the commit of a staged restore (entry `index` of `term`): reassembles
    /// the file from its chunks, checks its size and SHA-256, and replaces the user
    /// content with the file's in one transaction together with the applied index (see
    /// [`crate::restore`]). `Ok(Err(reason))`: the restore failed the same way on
    /// every node and changed nothing but the applied index; `Err`: this node's
    /// database failed.
    pub fn restore_content(
        &mut self,
        index: u64,
        term: u64,
        commit: &crate::restore::RestoreCommit,
    ) -> Result<std::result::Result<usize, crate::restore::RestoreRefusal>> {
        if index != self.applied + 1 {
            return Err(SqliteError::Inconsistent(format!(
                "restore at entry {index} applied out of order: expected {}",
                self.applied + 1
            )));
        }
        let file = self.path.with_file_name(format!("restore-{index}.sqlite"));
        let assembled = crate::restore::assemble(
            &self.conn,
            &commit.id,
            commit.chunks,
            commit.size,
            &commit.sha256,
            &file,
        )?;
        let finish = |conn: &Connection| -> rusqlite::Result<()> {
            conn.execute("DELETE FROM _sqlraft_restore WHERE id = ?1", [&commit.id])?;
            conn.execute(
                "INSERT OR REPLACE INTO _sqlraft_meta (key, value) VALUES ('applied_index', ?1)",
                [index as i64],
            )?;
            conn.execute(
                "INSERT OR REPLACE INTO _sqlraft_meta (key, value) VALUES ('applied_term', ?1)",
                [term as i64],
            )?;
            Ok(())
        };
        let checked = match assembled {
            Err(reason) => Err(reason),
            Ok(()) => match crate::restore::check_schema(&file) {
                Ok(()) => Ok(()),
                Err(e) if crate::restore::says_about_the_file(&e) => {
                    Err(crate::restore::RestoreRefusal::Invalid(format!(
                        "the database cannot be restored: {e}"
                    )))
                }
                // This node failed, not the file: stop, as apply does.
                Err(e) => {
                    let _ = std::fs::remove_file(&file);
                    return Err(SqliteError::Apply(e));
                }
            },
        };
        let outcome = match checked {
            Err(reason) => Err(reason),
            Ok(()) => {
                match crate::restore::replace_user_content_then(&mut self.conn, &file, &finish) {
                    Ok(tables) => Ok(tables),
                    Err(e) if crate::apply::is_environmental(&e) => {
                        let _ = std::fs::remove_file(&file);
                        return Err(SqliteError::Apply(e));
                    }
                    Err(e) => Err(crate::restore::RestoreRefusal::Invalid(format!(
                        "the restore failed: {e}"
                    ))),
                }
            }
        };
        let _ = std::fs::remove_file(&file);
        // Whatever happened, the database may have changed (the applied index at least).
        let changes = self.changes.clone();
        if outcome.is_err() {
            // Counted as applied, and the staged chunks go, like on every other node.
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(SqliteError::Apply)?;
            let committed = finish(&tx).and_then(|()| tx.commit());
            changes.count();
            committed.map_err(SqliteError::Apply)?;
        }
        changes.count();
        // Everything cached about the old content goes with the old connection.
        self.reopen()?;
        Ok(outcome)
    }

    /// Closes the apply connection and opens it again: everything it held in memory
    /// goes, above all what virtual tables' modules keep and a rollback does not undo,
    /// as on a restart. Called after a batch was rolled back
    /// ([`SqliteError::BatchAborted`]), before it is applied again.
    pub fn reopen(&mut self) -> Result<()> {
        let changes = self.changes.clone();
        let wal_bounds = self.wal_bounds;
        *self = StateMachine::open(&self.path)?;
        self.changes = changes;
        self.wal_bounds = wal_bounds;
        Ok(())
    }

    /// Like [`StateMachine::reopen`], and the new connection keeps no client statement
    /// prepared: for applying again a batch that ended in [`SqliteError::PreparedAgain`],
    /// which then cannot end so again.
    pub fn reopen_keeping_nothing(&mut self) -> Result<()> {
        self.reopen()?;
        self.guard.keep_nothing();
        Ok(())
    }

    /// For tests: looks at the WAL's size every `batches` batches, and truncates it
    /// past `bytes` (by default every 64 batches, past 16 MiB).
    #[doc(hidden)]
    pub fn set_wal_bounds(&mut self, batches: u32, bytes: u64) {
        self.wal_bounds = (batches.max(1), bytes);
    }

    /// Every [`WAL_LOOK_EVERY`] batches, looks at the WAL's size; one past
    /// [`WAL_STARVED_BYTES`] is copied into the database and truncated, waiting for the
    /// readers of the old WAL at most [`WAL_RESTART_WAIT`], twice as long after each
    /// try they kept from finishing (a try that cannot finish is made again
    /// [`WAL_RETRY_AFTER`] batches later).
    fn keep_the_wal_bounded(&mut self) -> Result<()> {
        let (every, limit) = self.wal_bounds;
        self.batches += 1;
        if self.batches < every {
            return Ok(());
        }
        self.batches = 0;
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if size <= limit {
            return Ok(());
        }
        // Read connections keep their snapshots while the count of commits stays the
        // same, and a kept snapshot holds the old WAL: counting now lets them go
        // (their readers' next read, or the read pool's watcher within a millisecond,
        // ends them) while the checkpoint waits.
        self.changes.count();
        // Readers that began before the checkpoint must finish first; each try that
        // they keep from finishing waits twice as long as the last, up to 16 times
        // the first (320 ms, well within an election timeout).
        let wait = WAL_RESTART_WAIT * (1 << self.wal_failures.min(4));
        self.conn.busy_timeout(wait).map_err(SqliteError::Apply)?;
        let checkpoint: rusqlite::Result<(i64, i64, i64)> =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                });
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(SqliteError::Apply)?;
        match checkpoint {
            Ok((0, _, _)) => {
                self.wal_failures = 0;
                tracing::debug!(bytes = size, "the WAL was truncated")
            }
            Ok(_) => {
                self.wal_failures = self.wal_failures.saturating_add(1);
                // Readers of the old WAL still read: tried again a few batches later,
                // not a full period later (the batches between give the readers time
                // to finish).
                self.batches = every.saturating_sub(WAL_RETRY_AFTER);
                tracing::debug!(
                    bytes = size,
                    "readers kept the WAL from being truncated; trying again soon"
                )
            }
            Err(e) if crate::apply::is_environmental(&e) => return Err(SqliteError::Apply(e)),
            Err(e) => tracing::warn!(error = %e, bytes = size, "cannot truncate the WAL"),
        }
        Ok(())
    }

    /// Starts applying a batch of committed entries.
    pub fn begin(&mut self) -> Result<ApplyTxn<'_>> {
        self.keep_the_wal_bounded()?;
        // The last batch may have been rolled back, to a schema version it had with
        // other content: its first statement looks at the version before it trusts
        // what is known of the schema.
        if self.guard.new_batch() {
            self.conn.flush_prepared_statement_cache();
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(SqliteError::Apply)?;
        Ok(ApplyTxn::new(
            tx,
            &self.guard,
            &self.rng,
            &self.clock,
            &mut self.time_ms,
            &self.at_last_rowid,
            &mut self.applied,
            &self.changes,
        ))
    }
}
