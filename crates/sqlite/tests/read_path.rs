//! The client read path: reads may only read, leave their connection as they found it,
//! and are bounded in bytes.

mod common;

use sqlraft_sqlite::{ReadOptions, ReadPool, SqliteError, StateMachine, Statement};

fn open_state(dir: &tempfile::TempDir) -> StateMachine {
    StateMachine::open(&dir.path().join("state.db")).expect("open")
}

async fn read_pool(dir: &tempfile::TempDir, options: &ReadOptions) -> ReadPool {
    ReadPool::open(&dir.path().join("state.db"), options)
        .await
        .expect("pool")
}

/// A pool of one connection, so that every read runs on the same one and its
/// statement cache.
async fn one_connection_pool(dir: &tempfile::TempDir) -> ReadPool {
    let options = ReadOptions {
        max_connections: 1,
        ..ReadOptions::default()
    };
    read_pool(dir, &options).await
}

fn write(sm: &mut StateMachine, sqls: &[&str]) {
    common::write_ok(sm, sqls);
}

async fn count(pool: &ReadPool) -> i64 {
    let rows = pool
        .query(&Statement::new("SELECT count(*) FROM t"))
        .await
        .expect("count");
    match rows.values[0][0] {
        sqlraft_sqlite::Value::Integer(n) => n,
        ref other => panic!("count is {other:?}"),
    }
}

/// Every statement that would leave a pooled connection in a transaction, change its
/// settings, or write a file is refused; every connection then sees later writes.
#[tokio::test]
async fn reads_cannot_pin_a_snapshot_or_change_their_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_state(&dir);
    write(&mut sm, &["CREATE TABLE t (v)", "INSERT INTO t VALUES (1)"]);
    let options = ReadOptions {
        max_connections: 3,
        ..ReadOptions::default()
    };
    let pool = read_pool(&dir, &options).await;
    let copy = dir.path().join("copy.db");
    let hostile = [
        "BEGIN".to_string(),
        "BEGIN IMMEDIATE".into(),
        "BEGIN EXCLUSIVE".into(),
        "SAVEPOINT s".into(),
        "COMMIT".into(),
        "PRAGMA query_only = 0".into(),
        "PRAGMA cache_size = 1".into(),
        "PRAGMA journal_mode = DELETE".into(),
        "PRAGMA wal_checkpoint".into(),
        "PRAGMA user_version = 7".into(),
        format!("VACUUM INTO '{}'", copy.display()),
        "VACUUM".into(),
        format!("ATTACH '{}' AS other", copy.display()),
        "CREATE TEMP TABLE x (a)".into(),
        "CREATE TEMP VIEW x AS SELECT 1".into(),
        "ANALYZE".into(),
        "REINDEX".into(),
        "SELECT load_extension('x')".into(),
        "INSERT INTO t VALUES (2)".into(),
    ];
    for _ in 0..4 {
        for sql in &hostile {
            let err = pool
                .query(&Statement::new(sql.as_str()))
                .await
                .expect_err(sql);
            assert!(
                matches!(
                    err,
                    SqliteError::WriteInRead(_)
                        | SqliteError::NotAllowedInRead(_)
                        | SqliteError::Query(_)
                ),
                "{sql}: {err:?}"
            );
            assert!(!err.is_fatal(), "{sql}: {err}");
        }
    }
    assert!(!copy.exists(), "VACUUM INTO wrote {}", copy.display());

    // The writes that follow are visible to every read, on every connection.
    write(
        &mut sm,
        &["INSERT INTO t VALUES (2)", "INSERT INTO t VALUES (3)"],
    );
    let reads = (0..options.max_connections * 3).map(|_| count(&pool));
    for n in futures::future::join_all(reads).await {
        assert_eq!(n, 3);
    }
    // Checkpoints are not held back by a reader: the WAL can be emptied.
    let conn = rusqlite::Connection::open(dir.path().join("state.db")).expect("open");
    let (busy, _, _): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("checkpoint");
    assert_eq!(busy, 0, "a read connection holds a snapshot");
}

#[tokio::test]
async fn reads_may_inspect_the_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_state(&dir);
    write(
        &mut sm,
        &[
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
            "CREATE INDEX t_name ON t (name)",
        ],
    );
    let pool = read_pool(&dir, &ReadOptions::default()).await;
    for sql in [
        "PRAGMA table_info(t)",
        "SELECT name FROM pragma_table_info('t') ORDER BY cid",
        "PRAGMA index_list(t)",
        "PRAGMA user_version",
        "SELECT name FROM sqlite_schema WHERE type = 'table'",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) SELECT sum(x) FROM c",
        "EXPLAIN QUERY PLAN SELECT * FROM t WHERE id = 1",
        // Describing a write runs none of it.
        "EXPLAIN QUERY PLAN DELETE FROM t WHERE name = 'x'",
        "EXPLAIN INSERT INTO t (name) VALUES ('x')",
        "/* plan */ EXPLAIN UPDATE t SET name = 'y'",
    ] {
        let rows = pool
            .query(&Statement::new(sql))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(!rows.values.is_empty(), "{sql}");
    }
    let rows = pool
        .query(&Statement::new("SELECT count(*) FROM t"))
        .await
        .expect("count");
    assert_eq!(rows.values, vec![vec![sqlraft_sqlite::Value::Integer(0)]]);
    for sql in [
        "EXPLAIN BEGIN",
        "EXPLAIN PRAGMA cache_size = 1",
        "EXPLAIN ATTACH 'x' AS y",
    ] {
        let err = pool.query(&Statement::new(sql)).await.expect_err(sql);
        assert!(
            matches!(err, SqliteError::NotAllowedInRead(_)),
            "{sql}: {err:?}"
        );
    }
}

#[tokio::test]
async fn reads_are_bounded_in_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_state(&dir);
    write(&mut sm, &["CREATE TABLE t (v)"]);
    let options = ReadOptions {
        max_result_bytes: 1 << 20,
        ..ReadOptions::default()
    };
    let pool = read_pool(&dir, &options).await;
    // One value larger than the whole budget is never built.
    let err = pool
        .query(&Statement::new("SELECT zeroblob(999999999)"))
        .await
        .expect_err("a huge value");
    assert!(err.to_string().contains("too big"), "{err}");
    let err = pool
        .query(&Statement::new("SELECT length(zeroblob(999999999))"))
        .await
        .expect_err("a huge intermediate value");
    assert!(err.to_string().contains("too big"), "{err}");
    // Many values that add up to more than the budget.
    let err = pool
        .query(&Statement::new(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100) \
             SELECT zeroblob(100000) FROM c",
        ))
        .await
        .expect_err("a large result");
    assert!(matches!(err, SqliteError::TooManyBytes { .. }), "{err:?}");
    assert!(err.to_string().contains("1048576 bytes"), "{err}");
    // Within the budget: answered.
    let rows = pool
        .query(&Statement::new(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10) \
             SELECT zeroblob(10000) FROM c",
        ))
        .await
        .expect("a small result");
    assert_eq!(rows.values.len(), 10);
}

/// SQLite's modules run statements of their own while a read runs (FTS5 reads its
/// shadow tables and `PRAGMA data_version`): a read of an FTS5 table works, while a
/// client's own pragma in its table-valued form is still judged.
#[tokio::test]
async fn full_text_tables_can_be_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_state(&dir);
    write(
        &mut sm,
        &[
            "CREATE VIRTUAL TABLE docs USING fts5 (title, body)",
            "INSERT INTO docs VALUES ('alert', 'ssh brute force from 10.0.0.1')",
        ],
    );
    let pool = read_pool(&dir, &ReadOptions::default()).await;
    for sql in [
        "SELECT title FROM docs WHERE docs MATCH 'brute'",
        "SELECT highlight(docs, 1, '[', ']') FROM docs WHERE docs MATCH 'ssh'",
        "SELECT * FROM docs",
        "SELECT name FROM pragma_table_info('docs')",
    ] {
        let rows = pool
            .query(&Statement::new(sql))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(
            rows.values.len(),
            1 + usize::from(sql.contains("pragma")),
            "{sql}"
        );
    }
    for sql in [
        "SELECT * FROM pragma_data_version",
        "SELECT * FROM pragma_foreign_keys(1)",
    ] {
        let err = pool.query(&Statement::new(sql)).await.expect_err(sql);
        assert!(
            matches!(err, SqliteError::NotAllowedInRead(_)),
            "{sql}: {err:?}"
        );
    }
}

/// R-tree tables can be read (the module prepares its own statements, writes among
/// them, while the client's statement is prepared: they were taken for the client's
/// and the read refused); the client still cannot write through a read.
#[tokio::test]
async fn r_tree_tables_can_be_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_state(&dir);
    write(
        &mut sm,
        &[
            "CREATE VIRTUAL TABLE boxes USING rtree (id, x0, x1, y0, y1)",
            "INSERT INTO boxes VALUES (1, 0, 10, 0, 10), (2, 20, 30, 20, 30)",
        ],
    );
    let pool = read_pool(&dir, &ReadOptions::default()).await;
    for (sql, count) in [
        ("SELECT id FROM boxes WHERE x0 >= 5", 1),
        ("SELECT * FROM boxes", 2),
        ("SELECT count(*) FROM boxes_node", 1),
    ] {
        let rows = pool
            .query(&Statement::new(sql))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(rows.values.len(), count, "{sql}");
    }
    for sql in [
        "DELETE FROM boxes_node",
        "INSERT INTO boxes VALUES (3, 0, 1, 0, 1)",
    ] {
        let err = pool.query(&Statement::new(sql)).await.expect_err(sql);
        assert!(matches!(err, SqliteError::WriteInRead(_)), "{sql}: {err:?}");
    }
}

/// A read builds no value larger than any a write may store, whatever its byte budget:
/// sorting a few dozen 60 MB values held gigabytes.
#[tokio::test]
async fn reads_build_no_value_larger_than_a_stored_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _sm = open_state(&dir);
    let pool = read_pool(&dir, &ReadOptions::default()).await;
    let too_big = format!(
        "SELECT length(randomblob({}))",
        sqlraft_sqlite::MAX_VALUE_BYTES + 1
    );
    let err = pool
        .query(&Statement::new(too_big))
        .await
        .expect_err("a value larger than a write may store");
    assert!(err.to_string().contains("too big"), "{err}");
    let fits = format!(
        "SELECT length(randomblob({}))",
        sqlraft_sqlite::MAX_VALUE_BYTES / 2
    );
    let rows = pool
        .query(&Statement::new(fits))
        .await
        .expect("a value that fits");
    assert_eq!(rows.values.len(), 1);
}

/// Reads first run on the caller's thread within a small budget; one that takes longer
/// is stopped there and run again from the start on a blocking thread: its answer is
/// whole and right, and short reads meanwhile are answered too.
#[tokio::test]
async fn a_read_longer_than_the_inline_budget_is_answered_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_state(&dir);
    write(&mut sm, &["CREATE TABLE t (v)", "INSERT INTO t VALUES (1)"]);
    let pool = read_pool(&dir, &ReadOptions::default()).await;
    let long = Statement::new(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) \
         SELECT sum(x), count(*) FROM c",
    );
    let started = std::time::Instant::now();
    let rows = pool.query(&long).await.expect("long read");
    assert!(
        started.elapsed() > std::time::Duration::from_millis(1),
        "the read is meant to outlast the inline budget"
    );
    assert_eq!(
        rows.values,
        vec![vec![
            sqlraft_sqlite::Value::Integer(2_000_001_000_000),
            sqlraft_sqlite::Value::Integer(2_000_000)
        ]]
    );
    let (long_again, short) = tokio::join!(pool.query(&long), count(&pool));
    assert_eq!(long_again.expect("long read").values, rows.values);
    assert_eq!(short, 1);
    // A step that calls no progress handler (count(*) walks the table in one step) is
    // stopped by the watcher's interrupt and run again: the answer is whole.
    write(
        &mut sm,
        &[
            "CREATE TABLE many (v)",
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) INSERT INTO many SELECT x FROM c",
        ],
    );
    let counted = pool
        .query(&Statement::new("SELECT count(*) FROM many"))
        .await
        .expect("count");
    assert_eq!(
        counted.values,
        vec![vec![sqlraft_sqlite::Value::Integer(300_000)]]
    );
    // The connections went back to the pool in a usable state.
    for _ in 0..20 {
        assert_eq!(count(&pool).await, 1);
    }
}

/// Read connections keep statements prepared by their text: a kept statement gets its
/// new parameters each time, and follows the schema as it changes (new columns, a
/// table dropped, a view in its place), as a freshly prepared one would.
#[tokio::test]
async fn kept_statements_follow_parameters_and_schema_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_state(&dir);
    write(
        &mut sm,
        &[
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
            "INSERT INTO t VALUES (1, 'one'), (2, 'two')",
        ],
    );
    let pool = one_connection_pool(&dir).await;
    let by_id = |id: i64| {
        let mut statement = Statement::new("SELECT v FROM t WHERE id = ?");
        statement.params = sqlraft_sqlite::Params::Positional(vec![id.into()]);
        statement
    };
    let text = |rows: &sqlraft_sqlite::Rows| format!("{:?}", rows.values);
    for (id, want) in [(1, "one"), (2, "two"), (1, "one"), (3, "")] {
        let rows = pool.query(&by_id(id)).await.expect("read by id");
        assert_eq!(
            text(&rows),
            if want.is_empty() {
                "[]".to_string()
            } else {
                format!("[[Text({want:?})]]")
            },
            "id {id}"
        );
    }
    let all = Statement::new("SELECT * FROM t ORDER BY id");
    let rows = pool.query(&all).await.expect("all");
    assert_eq!(rows.columns, ["id", "v"]);

    write(&mut sm, &["ALTER TABLE t ADD COLUMN w TEXT DEFAULT 'x'"]);
    let rows = pool.query(&all).await.expect("all, a column added");
    assert_eq!(rows.columns, ["id", "v", "w"]);

    write(&mut sm, &["DROP TABLE t"]);
    let err = pool.query(&all).await.expect_err("the table is gone");
    assert!(err.to_string().contains("no such table"), "{err}");

    write(
        &mut sm,
        &["CREATE VIEW t AS SELECT 7 AS id, 'seven' AS v, 'y' AS w"],
    );
    let rows = pool.query(&all).await.expect("all, from a view");
    assert_eq!(text(&rows), "[[Integer(7), Text(\"seven\"), Text(\"y\")]]");
    let rows = pool.query(&by_id(7)).await.expect("by id, from a view");
    assert_eq!(text(&rows), "[[Text(\"seven\")]]");
}

/// A pool that follows its state machine, with the database still for long enough
/// that read connections keep their snapshots between reads.
async fn following_pool(dir: &tempfile::TempDir, sm: &StateMachine) -> ReadPool {
    let options = ReadOptions {
        max_connections: 4,
        ..ReadOptions::default()
    };
    let pool = ReadPool::open_following(&dir.path().join("state.db"), &options, sm.changes())
        .await
        .expect("pool");
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    pool
}

/// Reads that overlap (so their connections keep snapshots) once the database has
/// been still for long enough; every one must count `want` rows.
async fn overlapping_counts(pool: &ReadPool, want: i64) {
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    for _ in 0..5 {
        let reads = (0..8).map(|_| count(pool));
        for n in futures::future::join_all(reads).await {
            assert_eq!(n, want);
        }
    }
}

/// Commits `commits` rows of `bytes` random bytes into `t`, `pause_ms` apart, on a
/// blocking thread; the largest the WAL was after a commit.
async fn write_blobs(
    dir: &tempfile::TempDir,
    mut sm: StateMachine,
    commits: usize,
    bytes: usize,
    pause_ms: u64,
) -> u64 {
    let wal = dir.path().join("state.db-wal");
    let insert = format!("INSERT INTO t VALUES (randomblob({bytes}))");
    tokio::task::spawn_blocking(move || {
        let mut largest = 0;
        for _ in 0..commits {
            std::thread::sleep(std::time::Duration::from_millis(pause_ms));
            write(&mut sm, &[insert.as_str()]);
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        largest
    })
    .await
    .expect("writer")
}

/// Tasks that read without a pause until stopped.
struct SteadyReaders {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl SteadyReaders {
    fn start(pool: &ReadPool, readers: usize) -> SteadyReaders {
        Self::reading(pool, readers, "SELECT count(*) FROM t")
    }

    fn reading(pool: &ReadPool, readers: usize, sql: &'static str) -> SteadyReaders {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..readers)
            .map(|_| {
                let (pool, stop) = (pool.clone(), std::sync::Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut reads = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        pool.query(&Statement::new(sql)).await.expect(sql);
                        reads += 1;
                        tokio::task::yield_now().await;
                    }
                    reads
                })
            })
            .collect();
        SteadyReaders { stop, tasks }
    }

    /// Stops them; the reads they made.
    async fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut reads = 0;
        for task in self.tasks {
            reads += task.await.expect("reader");
        }
        reads
    }
}

/// Kept snapshots never hide a commit: each kind of commit of the state machine (an
/// applied batch, an installed snapshot, a restore) is seen by the very next read.
#[tokio::test]
async fn kept_snapshots_see_every_commit_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_state(&dir);
    write(&mut sm, &["CREATE TABLE t (v)", "INSERT INTO t VALUES (1)"]);
    let pool = following_pool(&dir, &sm).await;
    for n in 2..6 {
        overlapping_counts(&pool, n - 1).await;
        write(&mut sm, &["INSERT INTO t VALUES (1)"]);
        assert_eq!(count(&pool).await, n, "the read right after commit {n}");
    }
    overlapping_counts(&pool, 5).await;

    // A snapshot of another database with 2 rows, installed.
    let other = tempfile::tempdir().expect("tempdir");
    let mut source = StateMachine::open(&other.path().join("state.db")).expect("open");
    write(&mut source, &["CREATE TABLE t (v)"]);
    for _ in 0..sm.applied_index() - 3 {
        write(&mut source, &["SELECT 1"]);
    }
    write(&mut source, &["INSERT INTO t VALUES (1), (2)"]);
    // A snapshot records the cluster's configuration (opaque bytes here).
    let mut txn = source.begin().expect("begin");
    let index = txn.next_index();
    txn.skip(index).expect("skip");
    txn.set_conf_state(&[8, 1]).expect("configuration");
    txn.commit().expect("commit");
    let snapshot = sqlraft_sqlite::snapshot::take_snapshot(
        &other.path().join("state.db"),
        &other.path().join("snapshots"),
        |_| Some(1),
    )
    .expect("snapshot");
    let index = source.applied_index();
    sm.install_snapshot(&snapshot.path, index).expect("install");
    assert_eq!(count(&pool).await, 2, "the read right after installing");
    overlapping_counts(&pool, 2).await;
    write(&mut sm, &["DELETE FROM t"]);
    assert_eq!(count(&pool).await, 0, "the read right after a commit");
}

/// Kept snapshots are let go: soon after a commit (the writer's next checkpoint can
/// copy every page and start the WAL over), and when reads stop.
#[tokio::test]
async fn kept_snapshots_do_not_hold_the_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_state(&dir);
    write(&mut sm, &["CREATE TABLE t (v)", "INSERT INTO t VALUES (1)"]);
    let pool = following_pool(&dir, &sm).await;
    let truncate = || {
        let conn = rusqlite::Connection::open(dir.path().join("state.db")).expect("open");
        let (busy, _, _): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .expect("checkpoint");
        busy == 0
    };
    // A commit: the snapshots taken before it go within a few watcher turns.
    overlapping_counts(&pool, 1).await;
    write(&mut sm, &["INSERT INTO t VALUES (1)"]);
    let started = std::time::Instant::now();
    while !truncate() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "old snapshots still held {:?} after a commit",
            started.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Reads stop with the database still: their snapshots go before the watcher naps.
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    overlapping_counts(&pool, 2).await;
    let started = std::time::Instant::now();
    while !truncate() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "snapshots still held {:?} after the reads stopped",
            started.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Under writes and reads that never pause, the WAL still starts over: kept snapshots
/// would hold a read mark at every commit and let it grow without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_steady_reads_and_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_state(&dir);
    write(&mut sm, &["CREATE TABLE t (v)"]);
    let pool = following_pool(&dir, &sm).await;
    let readers = SteadyReaders::start(&pool, 4);
    // A few pages per commit: 3000 commits leave a WAL of about 50 MB if it never
    // starts over (measured); the writer truncates one past 16 MB.
    let largest = write_blobs(&dir, sm, 3000, 3000, 0).await;
    let reads = readers.stop().await;
    assert!(reads > 100, "the readers hardly ran: {reads} reads");
    assert!(
        largest < 24 << 20,
        "the WAL grew to {largest} bytes under steady reads and writes"
    );
}

/// Parameters whose values may change SQLite's plan (`LIMIT ?`, `LIKE ?`, `GLOB ?`, a
/// partial index, indexed columns after `ANALYZE`) make SQLite prepare a statement
/// again when they are bound; that is no schema change, and the read is answered
/// (found by a review: they failed every time).
#[tokio::test]
async fn reads_with_plan_changing_parameters_are_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_state(&dir);
    write(
        &mut sm,
        &[
            "CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT, c INTEGER)",
            "CREATE INDEX t_c ON t (c)",
            "CREATE INDEX t_x ON t (b) WHERE b = 'x'",
            "INSERT INTO t (b, c) VALUES ('x', 1), ('y', 2), ('xy', 3)",
            "ANALYZE",
        ],
    );
    let pool = ReadPool::open_following(
        &dir.path().join("state.db"),
        &ReadOptions::default(),
        sm.changes(),
    )
    .await
    .expect("pool");
    let cases: [(&str, Vec<sqlraft_sqlite::Value>, usize); 6] = [
        ("SELECT * FROM t LIMIT ?", vec![1.into()], 1),
        ("SELECT * FROM t LIMIT ?", vec![2.into()], 2),
        ("SELECT * FROM t WHERE b LIKE ?", vec!["x%".into()], 2),
        ("SELECT * FROM t WHERE b GLOB ?", vec!["x*".into()], 2),
        ("SELECT * FROM t WHERE b = ?", vec!["x".into()], 1),
        ("SELECT * FROM t WHERE c > ?", vec![1.into()], 2),
    ];
    for _ in 0..3 {
        for (sql, params, want) in &cases {
            let statement = Statement::with_params(*sql, params.clone());
            let rows = pool
                .query(&statement)
                .await
                .unwrap_or_else(|e| panic!("{sql} {params:?}: {e}"));
            assert_eq!(rows.values.len(), *want, "{sql} {params:?}");
        }
    }
}

/// `EXPLAIN` is never kept: its program has no schema check, so a kept one would
/// describe a plan, or a table, that is gone (found by a review).
#[tokio::test]
async fn explain_describes_the_schema_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_state(&dir);
    write(&mut sm, &["CREATE TABLE e (a, b)"]);
    let pool = one_connection_pool(&dir).await;
    let plan = Statement::new("EXPLAIN QUERY PLAN SELECT * FROM e WHERE b = 1");
    let rows = pool.query(&plan).await.expect("plan");
    assert!(format!("{:?}", rows.values).contains("SCAN e"), "{rows:?}");
    // No read in between: EXPLAIN begins none, and must still see the new schema
    // (found by the second review).
    write(&mut sm, &["CREATE INDEX e_b ON e (b)"]);
    let rows = pool.query(&plan).await.expect("plan");
    assert!(
        format!("{:?}", rows.values).contains("USING INDEX e_b"),
        "{rows:?}"
    );
    write(&mut sm, &["DROP TABLE e"]);
    let err = pool.query(&plan).await.expect_err("the table is gone");
    assert!(err.to_string().contains("no such table"), "{err}");
}

/// Writes that come just far enough apart that readers keep their snapshots between
/// them, under steady reads: the kept snapshots hold the WAL, and truncating it must
/// let them go (found by a review: it grew past the limit without end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_when_writes_pause_between_steady_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_state(&dir);
    write(&mut sm, &["CREATE TABLE t (v)"]);
    // A small limit, looked at often, so that a short test crosses it many times.
    const LIMIT: u64 = 128 << 10;
    sm.set_wal_bounds(4, LIMIT);
    let pool = following_pool(&dir, &sm).await;
    let readers = SteadyReaders::start(&pool, 2);
    // Each commit adds about 20 KB: 80 of them leave 1.6 MB if the WAL is never
    // truncated (measured: 0.8 MB after 60). 70 ms apart: longer than the read pool
    // waits before it keeps snapshots.
    let largest = write_blobs(&dir, sm, 80, 16000, 70).await;
    let reads = readers.stop().await;
    assert!(reads > 10, "the readers hardly ran: {reads} reads");
    // The limit, plus what the batches between two looks add, and a few tries the
    // readers kept from finishing.
    assert!(
        largest < LIMIT + (512 << 10),
        "the WAL grew to {largest} bytes (limit {LIMIT})"
    );
}

/// A statement that failed to prepare, or was refused, against the schema its
/// connection knew is prepared again against the schema as it is: a connection learns
/// of a schema change only when a statement begins a read (found by the second review:
/// the same read kept failing after the schema change that fixed it).
#[tokio::test]
async fn a_failed_read_is_tried_on_the_schema_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_state(&dir);
    write(
        &mut sm,
        &[
            "CREATE TABLE u1 (a)",
            "CREATE TABLE u2 (a, b)",
            "INSERT INTO u1 VALUES (1)",
            "INSERT INTO u2 VALUES (2, 2)",
            "CREATE VIEW sv AS SELECT * FROM pragma_quick_check",
        ],
    );
    let pool = one_connection_pool(&dir).await;
    let union = Statement::new("SELECT * FROM u1 UNION ALL SELECT * FROM u2");
    let err = pool.query(&union).await.expect_err("columns differ");
    assert!(
        err.to_string().contains("number of result columns"),
        "{err}"
    );
    let view = Statement::new("SELECT * FROM sv");
    let err = pool.query(&view).await.expect_err("a pragma in a view");
    assert!(matches!(err, SqliteError::NotAllowedInRead(_)), "{err:?}");

    write(
        &mut sm,
        &[
            "ALTER TABLE u1 ADD COLUMN b",
            "DROP VIEW sv",
            "CREATE VIEW sv AS SELECT 1 AS x",
        ],
    );
    let rows = pool.query(&union).await.expect("the same columns now");
    assert_eq!(rows.values.len(), 2);
    let rows = pool.query(&view).await.expect("a plain view now");
    assert_eq!(format!("{:?}", rows.values), "[[Integer(1)]]");
}

/// Slow reads that never pause, under writes that never pause either: the writer's
/// truncation waits longer each time the readers keep it from finishing, until it does
/// (found by the second review: two readers of 120 ms kept a 20 ms wait from ever
/// succeeding, and the WAL grew to 105 MB in 40 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_slow_steady_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_state(&dir);
    write(&mut sm, &["CREATE TABLE t (v)"]);
    const LIMIT: u64 = 256 << 10;
    sm.set_wal_bounds(4, LIMIT);
    let pool = following_pool(&dir, &sm).await;
    // Tens of milliseconds a read, in a read of the table (which holds the WAL).
    let readers = SteadyReaders::reading(
        &pool,
        2,
        "SELECT (SELECT count(*) FROM t), count(*) FROM \
         (WITH RECURSIVE x(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM x WHERE i < 300000) \
          SELECT i FROM x)",
    );
    // About 20 KB a commit: 150 of them left 4.4 MB with a fixed 20 ms wait.
    let largest = write_blobs(&dir, sm, 150, 16000, 10).await;
    let reads = readers.stop().await;
    assert!(reads > 10, "the readers hardly ran: {reads} reads");
    assert!(
        largest < LIMIT + (1 << 20),
        "the WAL grew to {largest} bytes (limit {LIMIT})"
    );
}
