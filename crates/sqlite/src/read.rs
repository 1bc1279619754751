//! The read side: client reads on a pool of read-only rusqlite connections, each under
//! an authorizer that lets through nothing but reading; and a read-only sqlx pool for
//! an embedding service's own typed queries.
//!
//! A read connection must come back to the pool exactly as it left: in the
//! transaction state the pool gave it (autocommit, or the snapshot it keeps while the
//! database is still: see [`ReadConnection::snapshot`]), with no settings changed. So
//! a client read may only read: the authorizer allows `SELECT`, reading columns,
//! functions and a few introspection pragmas, and refuses everything else (transaction
//! control above all: a `BEGIN` left open on a pooled connection would pin its
//! snapshot for every later read). A statement SQLite itself reports as not read-only
//! (`VACUUM INTO`, which the authorizer never sees) is refused too, and a connection
//! whose transaction state a read changed anyway is closed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::{Connection, OpenFlags, OptionalExtension, StatementStatus};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Result, SqliteError};
use crate::state_machine::Changes;
use crate::types::{Params, Rows, Statement, Value};

/// How long a read on the blocking path waits for a lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits of a [`ReadPool`].
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Reads that run at once (each on its own connection).
    pub max_connections: u32,
    /// Rows one read may return; more is an error rather than unbounded memory.
    pub max_rows: usize,
    /// Bytes one read's result may cost, held in memory and written out as JSON
    /// ([`crate::Rows::json_cost`]: about twice the text and blob lengths, plus a
    /// few dozen bytes per value); more is an error. A read builds no single value
    /// larger than this, nor than [`crate::MAX_VALUE_BYTES`].
    pub max_result_bytes: usize,
    /// How long a read waits for a free connection.
    pub acquire_timeout_ms: u64,
    /// How long one read may run; it is interrupted after that, and also as soon as
    /// its caller stops waiting.
    pub max_query_ms: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_connections: 8,
            max_rows: 1_000_000,
            max_result_bytes: 64 << 20,
            acquire_timeout_ms: 5_000,
            max_query_ms: 30_000,
        }
    }
}

/// Read-only connections to the state database.
#[derive(Clone)]
pub struct ReadPool {
    shared: Arc<PoolShared>,
    sqlx: SqlitePool,
}

struct PoolShared {
    path: PathBuf,
    options: ReadOptions,
    /// The read running on an async thread, if any (at most one at a time).
    inline: Arc<InlineWatch>,
    /// One permit per read running; the permit goes with the blocking task, so a read
    /// whose caller left still counts until it has stopped.
    running: Arc<Semaphore>,
    idle: Mutex<Vec<ReadConnection>>,
    /// The state machine's commit count, when the pool follows one: a connection that
    /// reads on an async thread then keeps its read transaction from one read to the
    /// next while nothing was committed (see [`ReadConnection::snapshot_began`]).
    changes: Option<Changes>,
    /// The last commit count a read saw, and when it first saw it: snapshots are kept
    /// only once the database has been still for [`SETTLE`].
    settled: Mutex<(u64, Instant)>,
}

/// How long nothing must have been committed before read connections keep their
/// snapshots. A kept snapshot holds a WAL read mark, and the writer can only start the
/// WAL over when no reader holds one: under a steady stream of writes, kept snapshots
/// (each renewed after every commit) would always hold one and the WAL would grow
/// without end. Kept only while the database is still, they cost at most one missed
/// restart when writing starts again, and save the locking of every read meanwhile.
const SETTLE: Duration = Duration::from_millis(50);

/// Watches the one read that may run on an async thread: a thread of its own stops it
/// through SQLite's interrupt once it passed its budget. The progress handler alone
/// is not enough: some single steps run long without calling it (`count(*)` walks a
/// whole table in one step), and an async thread held for seconds would hold up the
/// HTTP server and the raft transport sharing the runtime (found by a hostile review).
///
/// The watcher checks every millisecond while reads come in and sleeps once none came
/// for a while, so a read costs no thread wake-up (that was what running in place
/// saves), except the first after a quiet spell. On each check it also ends the kept
/// snapshots of idle connections that are older than the last commit, and every kept
/// snapshot before it sleeps ([`PoolShared::watch`]).
struct InlineWatch {
    /// Reads running inline; one that finds [`INLINE_READS`] running goes to a
    /// blocking thread.
    busy: std::sync::atomic::AtomicUsize,
    /// Each inline read's deadline and its connection's interrupt.
    slots: Mutex<Vec<Option<(Instant, rusqlite::InterruptHandle)>>>,
    /// When the last inline read started (for the watcher's sleep).
    last: Mutex<Instant>,
    /// The watcher is asleep until woken.
    asleep: AtomicBool,
    wake: std::sync::Condvar,
    stop: AtomicBool,
}

impl InlineWatch {
    fn new() -> Arc<InlineWatch> {
        Arc::new(InlineWatch {
            busy: std::sync::atomic::AtomicUsize::new(0),
            slots: Mutex::new((0..INLINE_READS).map(|_| None).collect()),
            last: Mutex::new(Instant::now()),
            asleep: AtomicBool::new(false),
            wake: std::sync::Condvar::new(),
            stop: AtomicBool::new(false),
        })
    }

    /// One look at the running reads, then a nap: a millisecond while reads come in,
    /// up to a second (or until woken) when none came for a while. `false` once the
    /// pool is closed.
    /// `tidy` is called on every look with `false` (snapshots older than the last
    /// commit go), and with `true` before a long nap (every snapshot goes: nothing
    /// would let them go while the watcher sleeps).
    fn watch_once(&self, tidy: &dyn Fn(bool)) -> bool {
        const QUIET: Duration = Duration::from_millis(200);
        {
            let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            for (deadline, handle) in slots.iter().flatten() {
                if now >= *deadline {
                    handle.interrupt();
                }
            }
        }
        tidy(false);
        let last = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.elapsed() < QUIET || self.busy.load(Ordering::Relaxed) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        } else {
            let guard = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            // Checked again under the lock an inline read takes to start: one that
            // started since sees the watcher asleep and wakes it.
            if guard.elapsed() >= QUIET && self.busy.load(Ordering::Relaxed) == 0 {
                tidy(true);
                self.asleep.store(true, Ordering::SeqCst);
                // Woken by the next inline read or by close; a spurious wake just loops.
                let _ = self.wake.wait_timeout(guard, Duration::from_secs(1));
                self.asleep.store(false, Ordering::SeqCst);
            }
        }
        !self.stop.load(Ordering::Relaxed)
    }

    /// Claims an inline slot for a read on `conn` until `deadline`; `None` when
    /// [`INLINE_READS`] reads hold them all.
    fn claim(&self, conn: &Connection, deadline: Instant) -> Option<usize> {
        if self.busy.fetch_add(1, Ordering::AcqRel) >= INLINE_READS {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let free = slots.iter().position(Option::is_none);
            if let Some(i) = free {
                slots[i] = Some((deadline, conn.get_interrupt_handle()));
            }
            free
        };
        if slot.is_none() {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if self.asleep.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
        slot
    }

    /// Ends a read's claim on its connection; after this the watcher no longer
    /// touches it (a late interrupt is cleared by SQLite when the next statement is
    /// prepared or stepped). The read still counts as running until [`InlineWatch::done`]:
    /// the watcher does not nap (and so does not miss a snapshot to end) before its
    /// connection is back in the pool.
    fn release(&self, slot: usize) {
        if let Some(s) = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(slot)
        {
            *s = None;
        }
    }

    /// Ends a read's claim.
    fn done(&self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One client read connection and the state its hooks look at.
struct ReadConnection {
    conn: Connection,
    /// The commit count when this connection's open read transaction began; `None`
    /// in autocommit. Starting a read transaction costs SQLite file locks (a few
    /// system calls and a shared mutex); a connection that keeps one while nothing
    /// was committed reads exactly what a new one would, without them.
    snapshot_began: Option<u64>,
    limits: Arc<Mutex<RunLimits>>,
    refusal: Arc<Mutex<Option<SqliteError>>>,
    judging: Arc<Judging>,
}

/// What the authorizer judges. Only the client's statement as it is prepared:
/// statements SQLite's own modules prepare while it runs (FTS5 reads its shadow
/// tables and `PRAGMA data_version`) are theirs.
#[derive(Default)]
struct Judging {
    /// The client's statement is being prepared.
    preparing: AtomicBool,
    /// It starts with EXPLAIN: it will describe, not run, what follows, so a write
    /// there may be prepared.
    explain: AtomicBool,
}

/// What the progress handler checks while a read runs.
struct RunLimits {
    deadline: Instant,
    cancelled: Arc<AtomicBool>,
    /// Set by the progress handler when it stopped the read.
    interrupted: bool,
}

impl RunLimits {
    fn new(budget: Duration, cancelled: Arc<AtomicBool>) -> Self {
        RunLimits {
            deadline: Instant::now() + budget,
            cancelled,
            interrupted: false,
        }
    }
}

/// How long a read may run on the calling (async) thread before it is stopped and run
/// again from the start on a blocking thread.
const INLINE_BUDGET: Duration = Duration::from_millis(1);

/// Statements each read connection keeps prepared, by their SQL text (most reads are
/// a few statements with parameters, whose parsing cost more than running them).
const STATEMENT_CACHE: usize = 32;

/// Longest SQL text a read connection keeps prepared (see [`keeps`]).
const MAX_KEPT_SQL_BYTES: usize = 2048;

/// Largest prepared statement (SQLite's own account of its memory) a read connection
/// keeps: with [`STATEMENT_CACHE`] of them per connection, at most 8 MiB a connection.
const MAX_KEPT_STATEMENT_BYTES: usize = 256 << 10;

/// Times a read is run again because the schema changed while it ran.
const READ_ATTEMPTS: usize = 4;

/// Reads that may run on async threads at once; more go to blocking threads.
const INLINE_READS: usize = 2;

impl ReadPool {
    /// Opens a pool on the state database at `path`, which must exist (the
    /// [`crate::StateMachine`] creates it).
    pub async fn open(path: &Path, options: &ReadOptions) -> Result<Self> {
        Self::open_with(path, options, None).await
    }

    /// Like [`ReadPool::open`], following the state machine that writes the database
    /// ([`crate::StateMachine::changes`]): once it has committed nothing for a while,
    /// a connection keeps its read transaction from one read to the next, which saves
    /// SQLite's file locking per read. Every read still sees every commit counted
    /// before it began.
    pub async fn open_following(
        path: &Path,
        options: &ReadOptions,
        changes: Changes,
    ) -> Result<Self> {
        Self::open_with(path, options, Some(changes)).await
    }

    async fn open_with(
        path: &Path,
        options: &ReadOptions,
        changes: Option<Changes>,
    ) -> Result<Self> {
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .create_if_missing(false)
            .pragma("foreign_keys", "OFF")
            .busy_timeout(Duration::from_secs(5));
        let sqlx = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(Duration::from_millis(options.acquire_timeout_ms))
            .connect_with(connect)
            .await
            .map_err(|source| SqliteError::Pool {
                path: path.to_path_buf(),
                source,
            })?;
        let shared = Arc::new(PoolShared {
            path: path.to_path_buf(),
            options: options.clone(),
            running: Arc::new(Semaphore::new(options.max_connections.max(1) as usize)),
            idle: Mutex::new(Vec::new()),
            inline: InlineWatch::new(),
            changes,
            settled: Mutex::new((0, Instant::now())),
        });
        PoolShared::watch(&shared);
        // Fail now, not on the first read, if the file cannot be read.
        let first = ReadConnection::open(&shared.path, &shared.options)?;
        shared.give_back(first);
        Ok(ReadPool { shared, sqlx })
    }

    /// The sqlx pool, for typed queries of an embedding service. It is read-only but
    /// runs whatever it is given: it is for the service's own SQL, not its clients'.
    pub fn pool(&self) -> &SqlitePool {
        &self.sqlx
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.shared.inline.stop.store(true, Ordering::Relaxed);
        self.shared.inline.wake.notify_one();
        self.shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.sqlx.close().await;
    }

    /// Runs one client read statement. It may only read; it is interrupted after
    /// `max_query_ms` or as soon as this future is dropped (the client went away).
    pub async fn query(&self, statement: &Statement) -> Result<Rows> {
        if crate::lex::has_second_statement(&statement.sql) {
            return Err(SqliteError::Query(
                "one statement per query: split the SQL into several statements".into(),
            ));
        }
        let options = &self.shared.options;
        let permit = tokio::time::timeout(
            Duration::from_millis(options.acquire_timeout_ms),
            Arc::clone(&self.shared.running).acquire_owned(),
        )
        .await
        .map_err(|_| {
            SqliteError::PoolUnavailable(format!(
                "all {} read connections stayed busy for {} ms",
                options.max_connections, options.acquire_timeout_ms
            ))
        })?
        .map_err(|_| SqliteError::PoolUnavailable("read pool closed".into()))?;
        if let Some(outcome) = self.shared.run_inline(statement) {
            return outcome;
        }
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(Arc::clone(&cancelled));
        let shared = Arc::clone(&self.shared);
        let statement = statement.clone();
        let task = tokio::task::spawn_blocking(move || shared.run(&statement, cancelled, permit));
        task.await
            .map_err(|e| SqliteError::PoolUnavailable(format!("read task failed: {e}")))?
    }
}

/// Tells a running read that its caller went away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl PoolShared {
    /// Starts the thread that watches the inline reads and lets old snapshots go. It
    /// holds no strong reference: it ends once the pool is gone. Without it, no read
    /// runs inline (and so none keeps a snapshot).
    fn watch(shared: &Arc<PoolShared>) {
        let pool = Arc::downgrade(shared);
        let spawned = std::thread::Builder::new()
            .name("read-watch".into())
            .spawn(move || {
                while let Some(pool) = pool.upgrade() {
                    let tidy = |all: bool| match (&pool.changes, all) {
                        (_, true) => pool.end_idle_snapshots(|_| true),
                        (Some(changes), false) => {
                            let now = changes.current();
                            pool.end_idle_snapshots(|began| began != now);
                        }
                        (None, false) => {}
                    };
                    if !pool.inline.watch_once(&tidy) {
                        break;
                    }
                }
            });
        if spawned.is_err() {
            shared.inline.busy.store(usize::MAX / 2, Ordering::Relaxed);
        }
    }

    /// Runs `statement` on this thread if it finishes within [`INLINE_BUDGET`]; `None`
    /// when it must run on a blocking thread instead: no idle connection, the read was
    /// stopped at the budget, or it found the database busy (it does not wait here).
    ///
    /// Most reads are point queries that take tens of microseconds; handing each to a
    /// blocking thread and back costs two thread wake-ups, which cost more than the read
    /// (most of a follower's CPU under a read load, measured with perf). A read stopped
    /// here has changed nothing (reads only read), so running it again from the start is
    /// safe; its partial result is dropped.
    fn run_inline(&self, statement: &Statement) -> Option<Result<Rows>> {
        let mut read = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()?;
        // A connection whose transaction cannot be ended or begun is not kept.
        read.snapshot(self.changes.as_ref(), &self.settled).ok()?;
        let deadline = Instant::now() + INLINE_BUDGET;
        let Some(slot) = self.inline.claim(&read.conn, deadline) else {
            self.give_back(read);
            return None;
        };
        *read.limits.lock().unwrap_or_else(PoisonError::into_inner) =
            RunLimits::new(INLINE_BUDGET, Arc::new(AtomicBool::new(false)));
        if read.conn.busy_timeout(Duration::ZERO).is_err() {
            self.inline.release(slot);
            self.inline.done();
            return None;
        }
        let outcome = read.query(statement, &self.options);
        self.inline.release(slot);
        // Stopped by the progress handler, or by the watcher's interrupt.
        let interrupted = read
            .limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .interrupted
            || Instant::now() >= deadline;
        // Back to waiting for locks, as the blocking path expects; a connection that
        // cannot be restored, or is outside autocommit, is not pooled again.
        if read.conn.busy_timeout(BUSY_TIMEOUT).is_ok() && read.unchanged() {
            self.give_back(read);
        }
        self.inline.done();
        match outcome {
            Err(_) if interrupted => None,
            Err(SqliteError::Query(m)) if m.contains("locked") || m.contains("busy") => None,
            other => Some(other),
        }
    }

    /// Runs on a blocking thread, holding `_permit` until the read has stopped.
    fn run(
        &self,
        statement: &Statement,
        cancelled: Arc<AtomicBool>,
        _permit: OwnedSemaphorePermit,
    ) -> Result<Rows> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut read = match idle {
            Some(read) => read,
            None => ReadConnection::open(&self.path, &self.options)?,
        };
        // A long read keeps no snapshot: it is its own transaction, whose locking
        // costs nothing next to it, and no snapshot outlives the watcher's checks.
        read.end_snapshot()?;
        *read.limits.lock().unwrap_or_else(PoisonError::into_inner) =
            RunLimits::new(Duration::from_millis(self.options.max_query_ms), cancelled);
        let outcome = read.query(statement, &self.options);
        // Never pooled in a transaction it did not begin itself: that would pin an old
        // snapshot for every later read on it. (The authorizer makes that impossible;
        // this makes sure.)
        if read.unchanged() {
            self.give_back(read);
        } else {
            tracing::error!(sql = %statement.sql, "a read left its connection in a transaction; closing it");
        }
        outcome.map_err(|e| match e {
            SqliteError::Query(m) if m.contains("interrupted") => SqliteError::Query(format!(
                "read stopped after {} ms: it runs too long",
                self.options.max_query_ms
            )),
            other => other,
        })
    }

    fn give_back(&self, read: ReadConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.options.max_connections as usize {
            idle.push(read);
        }
        // Idle snapshots older than the last commit go now, not at their next read:
        // an old snapshot keeps a checkpoint from copying the newer pages.
        if let Some(changes) = &self.changes {
            let now = changes.current();
            end_snapshots(&mut idle, |began| began != now);
        }
    }

    /// Ends the read transaction of each idle connection whose transaction began at a
    /// commit count `which` picks.
    fn end_idle_snapshots(&self, which: impl Fn(u64) -> bool) {
        end_snapshots(
            &mut self.idle.lock().unwrap_or_else(PoisonError::into_inner),
            which,
        );
    }
}

/// Ends the read transaction of each connection in `idle` whose transaction began at a
/// commit count `which` picks; one that cannot end it is closed.
fn end_snapshots(idle: &mut Vec<ReadConnection>, which: impl Fn(u64) -> bool) {
    idle.retain_mut(|read| match read.snapshot_began {
        Some(began) if which(began) => read.end_snapshot().is_ok(),
        _ => true,
    });
}

impl ReadConnection {
    fn open(path: &Path, options: &ReadOptions) -> Result<Self> {
        let open_err = |source| SqliteError::Open {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Bound parameters never change the plan (the query planner stability
        // guarantee): otherwise SQLite prepares a statement again whenever a value
        // bound to `LIMIT ?`, `LIKE ?` or an indexed column after `ANALYZE` might
        // change its plan, which would look like a schema change to the read below.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(open_err)?;
        // No single string or blob larger than a whole result, or than any value a
        // write may store, is built.
        let longest =
            i32::try_from(options.max_result_bytes.min(crate::MAX_VALUE_BYTES)).unwrap_or(i32::MAX);
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, longest.max(1024))
            .map_err(open_err)?;
        let refusal = Arc::new(Mutex::new(None));
        let said = Arc::clone(&refusal);
        let judging = Arc::new(Judging::default());
        let judge = Arc::clone(&judging);
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            if !judge.preparing.load(Ordering::Relaxed) || r_tree_own_statement(&ctx) {
                return Authorization::Allow;
            }
            match read_refusal(&ctx.action) {
                Some(SqliteError::WriteInRead(_)) if judge.explain.load(Ordering::Relaxed) => {
                    Authorization::Allow
                }
                None => Authorization::Allow,
                Some(refusal) => {
                    *said.lock().unwrap_or_else(PoisonError::into_inner) = Some(refusal);
                    Authorization::Deny
                }
            }
        }))
        .map_err(open_err)?;
        let limits = Arc::new(Mutex::new(RunLimits::new(
            Duration::ZERO,
            Arc::new(AtomicBool::new(true)),
        )));
        let seen = Arc::clone(&limits);
        conn.progress_handler(
            1000,
            Some(move || {
                let mut limits = seen.lock().unwrap_or_else(PoisonError::into_inner);
                let stop =
                    limits.cancelled.load(Ordering::Relaxed) || Instant::now() >= limits.deadline;
                limits.interrupted |= stop;
                stop
            }),
        )
        .map_err(open_err)?;
        Ok(ReadConnection {
            conn,
            snapshot_began: None,
            limits,
            refusal,
            judging,
        })
    }

    /// Makes the connection read the database as it is now. Following a state machine,
    /// it keeps its read transaction if nothing was committed since it began, and
    /// otherwise ends it, and begins another if nothing was committed for [`SETTLE`]:
    /// deferred, its snapshot is taken by the read that follows, after the commit
    /// count was read, so the read sees every commit counted by then. Otherwise each
    /// read is its own transaction.
    ///
    /// Its own `BEGIN` and `COMMIT` are prepared afresh each time, never from the
    /// statement cache: client statements are cached by their text, and a client's
    /// `COMMIT` must still be judged (and refused).
    fn snapshot(
        &mut self,
        changes: Option<&Changes>,
        settled: &Mutex<(u64, Instant)>,
    ) -> Result<()> {
        let Some(changes) = changes else {
            return Ok(());
        };
        let now = changes.current();
        if self.snapshot_began == Some(now) && !self.conn.is_autocommit() {
            return Ok(());
        }
        self.end_snapshot()?;
        let still = {
            let mut settled = settled.lock().unwrap_or_else(PoisonError::into_inner);
            if settled.0 != now {
                *settled = (now, Instant::now());
            }
            settled.1.elapsed() >= SETTLE
        };
        if still {
            self.conn
                .execute_batch("BEGIN DEFERRED")
                .map_err(read_error)?;
            self.snapshot_began = Some(now);
        }
        Ok(())
    }

    /// Ends the read transaction the connection holds, if any.
    fn end_snapshot(&mut self) -> Result<()> {
        if self.snapshot_began.take().is_some() && !self.conn.is_autocommit() {
            self.conn.execute_batch("COMMIT").map_err(read_error)?;
        }
        Ok(())
    }

    /// Whether the connection's transaction is still the one it began itself (or
    /// none): a read may not begin or end one.
    fn unchanged(&mut self) -> bool {
        if self.snapshot_began.is_some() && self.conn.is_autocommit() {
            // SQLite ended it (an error can roll a transaction back): none is held.
            self.snapshot_began = None;
        }
        self.conn.is_autocommit() == self.snapshot_began.is_none()
    }

    fn query(&self, statement: &Statement, options: &ReadOptions) -> Result<Rows> {
        if statement.sql.trim().is_empty() {
            return Err(SqliteError::Query("empty statement".into()));
        }
        for _ in 0..READ_ATTEMPTS {
            let mut stmt = self.prepare(statement)?;
            let reprepared = stmt.get_status(StatementStatus::RePrepare);
            let rows = collect_rows(&mut stmt, options);
            if stmt.get_status(StatementStatus::RePrepare) == reprepared {
                if !keeps(statement, &stmt) {
                    stmt.discard();
                }
                return rows;
            }
            // The schema changed since the statement was prepared (kept from an
            // earlier read, or a write came in between), and SQLite prepared it again
            // by itself while it ran: unjudged by the authorizer, and perhaps with
            // other columns than those taken before it ran. Its result is dropped (a
            // read changes nothing) and the read runs again on a statement prepared
            // and judged here.
            stmt.discard();
        }
        Err(SqliteError::Query(format!(
            "the schema changed under the read {READ_ATTEMPTS} times in a row; try again"
        )))
    }

    /// Prepares `statement` under the authorizer's judgement, or takes it from the
    /// statement cache.
    fn judged_prepare(
        &self,
        statement: &Statement,
        explain: bool,
    ) -> Result<rusqlite::CachedStatement<'_>> {
        *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.judging.explain.store(explain, Ordering::Relaxed);
        self.judging.preparing.store(true, Ordering::Relaxed);
        let prepared = self.conn.prepare_cached(&statement.sql);
        self.judging.preparing.store(false, Ordering::Relaxed);
        prepared.map_err(|e| {
            let refused = self
                .refusal
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            refused.unwrap_or_else(|| read_error(e))
        })
    }

    /// Makes the connection load the schema as it is now (in its snapshot, if it
    /// keeps one): a statement that begins a read checks the schema's version.
    fn load_schema(&self) -> Result<()> {
        self.conn
            .query_row("SELECT 1 FROM sqlite_schema LIMIT 1", [], |_| Ok(()))
            .optional()
            .map_err(read_error)?;
        Ok(())
    }

    /// Prepares a client read (judged by the authorizer), or takes it from the
    /// connection's statement cache, where it was judged when first prepared; checks
    /// that it only reads and binds its parameters.
    fn prepare(&self, statement: &Statement) -> Result<rusqlite::CachedStatement<'_>> {
        let explain = crate::lex::starts_with_keyword(&statement.sql, "EXPLAIN");
        if explain {
            // EXPLAIN begins no read, so nothing makes the connection notice a schema
            // change before it describes a statement.
            self.load_schema()?;
        }
        let mut stmt = match self.judged_prepare(statement, explain) {
            Ok(stmt) => stmt,
            // The connection learns of a schema change only when a statement begins a
            // read: a statement that fails to prepare (or is refused) against the
            // schema it knew is prepared again against the schema as it is.
            Err(_) => {
                self.load_schema()?;
                self.judged_prepare(statement, explain)?
            }
        };
        // EXPLAIN describes its statement and runs none of it; anything else must be
        // read-only by SQLite's own account.
        let explained = stmt.is_explain() > 0;
        let checked = if explain && !explained {
            Err(SqliteError::WriteInRead("a read may only read".into()))
        } else if !explained && !stmt.readonly() {
            Err(SqliteError::WriteInRead(
                "the statement writes to a file".into(),
            ))
        } else {
            bind(&mut stmt, &statement.params)
        };
        match checked {
            Ok(()) => Ok(stmt),
            Err(e) => {
                if !keeps(statement, &stmt) {
                    stmt.discard();
                }
                Err(e)
            }
        }
    }
}

/// Whether a prepared client read stays in its connection's statement cache: not a
/// long one nor a large one (a prepared statement takes many times its text's size: a
/// 1.3 MB `IN` list took 23 MB, and a short text can name a view that holds one; a
/// client could fill every cache slot of every connection with them), and not an
/// `EXPLAIN`, whose program never checks the schema and so would go on describing a
/// plan, or a table, that is gone.
fn keeps(statement: &Statement, stmt: &rusqlite::Statement<'_>) -> bool {
    statement.sql.len() <= MAX_KEPT_SQL_BYTES
        && stmt.is_explain() == 0
        // SQLite measures a statement's memory by walking all of it: only once, after
        // its first run (a kept statement's size does not change).
        && (stmt.get_status(StatementStatus::Run) > 1
            || usize::try_from(stmt.get_status(StatementStatus::MemUsed))
                .is_ok_and(|bytes| bytes <= MAX_KEPT_STATEMENT_BYTES))
}

/// Runs a prepared read and collects its rows, within the options' bounds. Its columns
/// are those the statement had before it ran: the caller checks that SQLite did not
/// prepare it again meanwhile.
fn collect_rows(stmt: &mut rusqlite::Statement<'_>, options: &ReadOptions) -> Result<Rows> {
    let mut shape = Shape::of(stmt, options)?;
    let mut rows = stmt.raw_query();
    let mut values = Vec::new();
    while let Some(row) = rows.next().map_err(read_error)? {
        if values.len() == options.max_rows {
            return Err(SqliteError::TooManyRows {
                limit: options.max_rows,
            });
        }
        shape.spend(shape.row_cost, options)?;
        let mut out = Vec::with_capacity(shape.columns.len());
        for i in 0..shape.columns.len() {
            let value = row.get_ref(i).map_err(read_error)?;
            shape.spend(
                crate::types::value_ref_cost(value, Default::default()),
                options,
            )?;
            out.push(Value::from_ref(value));
        }
        values.push(out);
    }
    let mut rows = Rows {
        columns: shape.columns,
        types: shape.types,
        values,
    };
    rows.fill_expression_types();
    Ok(rows)
}

/// A read's columns, and what its result may still cost.
struct Shape {
    columns: Vec<String>,
    types: Vec<String>,
    /// What each row costs besides its values: written as objects, every row repeats
    /// the column names.
    row_cost: usize,
    budget: usize,
}

impl Shape {
    fn of(stmt: &rusqlite::Statement<'_>, options: &ReadOptions) -> Result<Shape> {
        let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let types = stmt
            .columns()
            .iter()
            .map(|c| c.decl_type().unwrap_or("").to_ascii_lowercase())
            .collect();
        let names = crate::types::names_cost(&columns);
        let mut shape = Shape {
            columns,
            types,
            row_cost: crate::types::ROW_COST + names,
            budget: options.max_result_bytes,
        };
        shape.spend(names, options)?;
        Ok(shape)
    }

    fn spend(&mut self, cost: usize, options: &ReadOptions) -> Result<()> {
        self.budget = self
            .budget
            .checked_sub(cost)
            .ok_or(SqliteError::TooManyBytes {
                limit: options.max_result_bytes,
            })?;
        Ok(())
    }
}

/// Why a read may not do `action`; `None` allows it. A list of what reading needs,
/// everything else refused: as a write ([`SqliteError::WriteInRead`], which
/// `/db/request` runs as a write instead) or as not allowed at all.
fn read_refusal(action: &AuthAction<'_>) -> Option<SqliteError> {
    use AuthAction::*;
    let not_allowed = |reason: String| Some(SqliteError::NotAllowedInRead(reason));
    match *action {
        // A pragma's table-valued form runs its PRAGMA only while the statement runs,
        // unjudged, with whatever arguments it was given: only the introspection ones.
        Read { table_name, .. }
            if table_name.len() > 7 && table_name[..7].eq_ignore_ascii_case("pragma_") =>
        {
            let name = table_name[7..].to_ascii_lowercase();
            if INTROSPECTION_PRAGMAS.contains(&name.as_str()) {
                None
            } else {
                not_allowed(format!(
                    "{table_name} is not allowed in a read: reads may only read"
                ))
            }
        }
        Select | Read { .. } | Recursive => None,
        Function { function_name } => {
            if function_name.eq_ignore_ascii_case("load_extension") {
                not_allowed("load_extension is not allowed".into())
            } else {
                None
            }
        }
        Pragma {
            pragma_name,
            pragma_value,
        } => {
            let name = pragma_name.to_ascii_lowercase();
            let introspection = INTROSPECTION_PRAGMAS.contains(&name.as_str());
            let value_free = VALUE_FREE_PRAGMAS.contains(&name.as_str()) && pragma_value.is_none();
            if introspection || value_free {
                None
            } else {
                not_allowed(format!(
                    "PRAGMA {pragma_name} is not allowed in a read: reads may only read"
                ))
            }
        }
        Transaction { .. } | Savepoint { .. } => not_allowed(
            "transaction control is not allowed in a read: each read runs on its own".into(),
        ),
        Attach { .. } | Detach { .. } => not_allowed("ATTACH and DETACH are not allowed".into()),
        CreateTempIndex { .. }
        | CreateTempTable { .. }
        | CreateTempTrigger { .. }
        | CreateTempView { .. }
        | DropTempIndex { .. }
        | DropTempTable { .. }
        | DropTempTrigger { .. }
        | DropTempView { .. } => not_allowed(
            "temporary objects are not allowed: they would exist on one node only".into(),
        ),
        _ => Some(SqliteError::WriteInRead("a read may only read".into())),
    }
}

/// The R-tree module prepares its statements, writes to its shadow tables among them,
/// when a statement first uses an R-tree on a connection, that is while the client's
/// statement is being prepared (FTS5 prepares its own later, while it runs). They are
/// the module's, not the client's: the client's statement must still be read-only by
/// SQLite's own account, and the connection is opened read-only.
fn r_tree_own_statement(ctx: &AuthContext<'_>) -> bool {
    use AuthAction::*;
    let table = match ctx.action {
        Insert { table_name } | Update { table_name, .. } | Delete { table_name } => table_name,
        _ => return false,
    };
    let in_main = ctx
        .database_name
        .is_some_and(|db| db.eq_ignore_ascii_case("main"));
    let lower = table.to_ascii_lowercase();
    in_main
        && ["_node", "_parent", "_rowid"]
            .iter()
            .any(|s| lower.ends_with(s))
}

/// Pragmas that describe one schema object, named by their argument.
const INTROSPECTION_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
];

/// Pragmas that only report a value when given no argument.
const VALUE_FREE_PRAGMAS: &[&str] = &[
    "user_version",
    "application_id",
    "schema_version",
    "compile_options",
    "function_list",
    "collation_list",
    "module_list",
    "pragma_list",
    "encoding",
    "foreign_keys",
    "page_size",
    "page_count",
    "freelist_count",
    // Settings read back as values (ORMs ask for some when they connect, SQLAlchemy
    // for read_uncommitted): without an argument they change nothing.
    "read_uncommitted",
    "journal_mode",
    "synchronous",
    "auto_vacuum",
    "cache_size",
    "busy_timeout",
    "recursive_triggers",
    "legacy_alter_table",
    "defer_foreign_keys",
    "query_only",
    "automatic_index",
    "secure_delete",
    "temp_store",
    "max_page_count",
    "journal_size_limit",
    "locking_mode",
    "data_version",
    "cell_size_check",
    "ignore_check_constraints",
    "reverse_unordered_selects",
    "trusted_schema",
];

fn bind(stmt: &mut rusqlite::Statement<'_>, params: &Params) -> Result<()> {
    crate::apply::bind(stmt, params).map_err(|e| match e {
        rusqlite::Error::InvalidParameterCount(given, expected) => SqliteError::Query(format!(
            "statement takes {expected} parameters, {given} given"
        )),
        rusqlite::Error::InvalidParameterName(name) => {
            SqliteError::Query(format!("no value for parameter {name}"))
        }
        other => read_error(other),
    })
}

fn read_error(e: rusqlite::Error) -> SqliteError {
    match e {
        rusqlite::Error::SqliteFailure(f, message) => {
            let message = message.unwrap_or_else(|| f.to_string());
            match f.code {
                rusqlite::ErrorCode::ReadOnly => SqliteError::WriteInRead(message),
                rusqlite::ErrorCode::TooBig => SqliteError::Query(format!(
                    "{message}: a read may build values of at most the result budget"
                )),
                _ => SqliteError::Query(message),
            }
        }
        // SQLite's own message, as rqlite gives it: clients classify errors by it.
        rusqlite::Error::SqlInputError { msg, .. } => SqliteError::Query(msg),
        rusqlite::Error::InvalidQuery => SqliteError::Query("empty statement".into()),
        rusqlite::Error::MultipleStatement => SqliteError::Query(
            "one statement per query: split the SQL into several statements".into(),
        ),
        other => SqliteError::Query(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long texts and `EXPLAIN` are never kept prepared (found by a review: a client
    /// could fill every cache slot with 23 MB statements, and a kept `EXPLAIN` went on
    /// describing a table that was gone).
    #[test]
    fn only_short_reads_that_check_the_schema_are_kept() {
        let conn = Connection::open_in_memory().expect("open");
        let in_list = |n: usize| {
            format!(
                "SELECT 1 WHERE -1 IN ({})",
                (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
            )
        };
        let long = in_list(1000);
        assert!(long.len() > MAX_KEPT_SQL_BYTES);
        for (sql, kept) in [
            ("SELECT 1", true),
            (long.as_str(), false),
            ("EXPLAIN SELECT 1", false),
            ("EXPLAIN QUERY PLAN SELECT 1", false),
        ] {
            let stmt = conn.prepare(sql).expect("prepare");
            assert_eq!(keeps(&Statement::new(sql), &stmt), kept, "{sql}");
        }
        // A short text naming a view that holds a large statement (found by the second
        // review: 20-byte reads of such a view kept 22 MB each).
        let huge = in_list(20_000);
        conn.execute_batch(&format!("CREATE VIEW big AS {huge}"))
            .expect("view");
        let sql = "SELECT * FROM big";
        let stmt = conn.prepare(sql).expect("prepare");
        assert!(!keeps(&Statement::new(sql), &stmt), "{sql}");
    }
}
