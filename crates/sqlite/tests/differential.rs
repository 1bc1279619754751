//! Differential determinism: random workloads applied to two fresh state machines, in
//! different batchings and with a restart in the middle of one, must leave identical
//! content (the same content hash) at every common applied index.

mod common;

use sqlraft_sqlite::{
    Params, StateMachine, Statement, StatementResult, Value, WriteRequest, content_hash,
};

/// A small deterministic generator (splitmix64), so that a seed names a workload.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE kv (k TEXT PRIMARY KEY, v, n INTEGER NOT NULL DEFAULT 0, \
     at TEXT DEFAULT CURRENT_TIMESTAMP, r INTEGER DEFAULT (random()), \
     CHECK (length(k) < 10))",
    "CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT, at REAL DEFAULT (julianday('now')))",
    "CREATE TABLE plain (v, w)",
    "CREATE TABLE wr (a INTEGER, b TEXT, PRIMARY KEY (a, b)) WITHOUT ROWID",
    "CREATE UNIQUE INDEX plain_w ON plain (w)",
    "CREATE TRIGGER kv_log AFTER UPDATE ON kv BEGIN \
     INSERT INTO log (what) VALUES ('update ' || new.k || ' at ' || datetime('now')); END",
];

/// One random statement of the grammar.
fn statement(g: &mut Gen) -> Statement {
    let key = format!("k{}", g.below(20));
    let int = |g: &mut Gen| -> Value {
        match g.below(6) {
            0 => Value::Integer(i64::MAX - g.below(3) as i64),
            1 => Value::Integer(i64::MIN),
            _ => Value::Integer(g.below(1000) as i64),
        }
    };
    match g.below(14) {
        0 => Statement::with_params(
            "INSERT INTO kv (k, v) VALUES (?, ?)",
            vec![key.into(), int(g)],
        ),
        1 => Statement::with_params(
            "INSERT OR REPLACE INTO kv (k, v, n) VALUES (?, randomblob(16), ?)",
            vec![key.into(), int(g)],
        ),
        2 => Statement::with_params(
            "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET n = n + 1, v = excluded.v",
            vec![key.into(), Value::Text("x".repeat(g.below(3000) as usize))],
        ),
        3 => Statement::with_params(
            "UPDATE kv SET v = ?, n = n + 1 WHERE k = ?",
            vec![int(g), key.into()],
        ),
        4 => Statement::with_params("DELETE FROM kv WHERE k = ?", vec![key.into()]),
        // Constraint failures: NOT NULL, CHECK, UNIQUE.
        5 => Statement::new(g.pick(&[
            "INSERT INTO kv (k, n) VALUES ('nn', NULL)",
            "INSERT INTO kv (k) VALUES ('much too long a key')",
            "INSERT INTO plain (v, w) VALUES (1, 'same'), (2, 'same')",
        ])),
        6 => Statement::with_params(
            "INSERT INTO plain (rowid, v, w) VALUES (?, random(), NULL)",
            vec![int(g)],
        ),
        7 => Statement::new("INSERT INTO plain (v, w) VALUES (strftime('%s', 'now'), NULL)"),
        8 => Statement::new(g.pick(&[
            "INSERT INTO plain (v) VALUES (zeroblob(200000))",
            "INSERT INTO plain (v) SELECT randomblob(50000) FROM plain LIMIT 3",
            "DELETE FROM plain WHERE rowid IN (SELECT rowid FROM plain ORDER BY random() LIMIT 2)",
        ])),
        9 => Statement::with_params(
            "INSERT INTO log (what) VALUES (?)",
            vec![Value::Text(format!("note {}", g.below(100)))],
        ),
        10 => Statement::new(g.pick(&[
            "DELETE FROM log WHERE id % 3 = 0",
            "DELETE FROM sqlite_sequence",
            "INSERT INTO log (id, what) VALUES (9223372036854775806, 'edge')",
        ])),
        11 => Statement::with_params(
            "INSERT OR IGNORE INTO wr (a, b) VALUES (?, ?)",
            vec![int(g), Value::Text(key)],
        ),
        12 => Statement {
            sql: "UPDATE wr SET b = b || :s WHERE a % 2 = :p".into(),
            params: Params::Named(vec![
                ("s".into(), Value::Text("+".into())),
                ("p".into(), Value::Integer(g.below(2) as i64)),
            ]),
        },
        _ => Statement::new(g.pick(&[
            "INSERT INTO kv (k, v) VALUES ('t', unixepoch('now', 'subsec'))",
            "UPDATE kv SET at = datetime('now', '+' || n || ' minutes') WHERE n > 0",
            "INSERT INTO plain (v) VALUES (date())",
        ])),
    }
}

/// A workload: (entry time, request) per entry.
fn workload(seed: u64, entries: usize) -> Vec<(i64, WriteRequest)> {
    let mut g = Gen(seed);
    let mut out = vec![(
        1_700_000_000_000,
        WriteRequest::transaction(SCHEMA.iter().map(|s| Statement::new(*s)).collect()),
    )];
    let mut at = 1_700_000_000_000_i64;
    for _ in 0..entries {
        // Leaders' clocks jump around, backwards too.
        at += g.below(5_000) as i64 - 1_000;
        let count = 1 + g.below(4) as usize;
        out.push((
            at,
            WriteRequest {
                statements: (0..count).map(|_| statement(&mut g)).collect(),
                transaction: g.below(2) == 0,
                request_id: None,
                parts: Vec::new(),
            },
        ));
    }
    out
}

/// Applies `entries` in batches of `batch` entries per SQLite transaction; returns the
/// results of every entry.
fn apply(
    sm: &mut StateMachine,
    entries: &[(i64, WriteRequest)],
    batch: usize,
) -> Vec<Vec<StatementResult>> {
    let mut all = Vec::new();
    for chunk in entries.chunks(batch) {
        let mut txn = sm.begin().expect("begin");
        for (at, request) in chunk {
            let index = txn.next_index();
            all.push(txn.write_at(index, *at, request).expect("apply"));
        }
        txn.commit().expect("commit");
    }
    all
}

#[test]
fn random_workloads_leave_identical_content_however_they_are_batched() {
    for seed in [1_u64, 2, 3, 42, 2026] {
        let entries = workload(seed, 150);
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));

        let mut one = StateMachine::open(&a).expect("open a");
        let results_a = apply(&mut one, &entries, 1);

        // The other: big batches, and a restart in the middle.
        let half = entries.len() / 2;
        let mut two = StateMachine::open(&b).expect("open b");
        let mut results_b = apply(&mut two, &entries[..half], 7);
        drop(two);
        let mut two = StateMachine::open(&b).expect("reopen b");
        assert_eq!(two.applied_index(), half as u64);
        results_b.extend(apply(&mut two, &entries[half..], 32));

        if let Some(i) = (0..results_a.len()).find(|&i| results_a[i] != results_b[i]) {
            panic!(
                "seed {seed}: entry {} gives {:?} one way and {:?} the other; request {:?}",
                i + 1,
                results_a[i],
                results_b[i],
                entries[i].1
            );
        }
        let (hash_a, hash_b) = (
            content_hash(&a).expect("hash a"),
            content_hash(&b).expect("hash b"),
        );
        assert_eq!(hash_a.applied_index, entries.len() as u64);
        assert_eq!(hash_a, hash_b, "seed {seed}: content differs");
        // The workload did something: failures and successes both.
        let statements: Vec<&StatementResult> = results_a.iter().flatten().collect();
        assert!(statements.iter().any(|r| r.error.is_some()), "seed {seed}");
        assert!(
            statements.iter().filter(|r| r.error.is_none()).count() > statements.len() / 3,
            "seed {seed}"
        );
    }
}

#[test]
fn the_content_hash_sees_every_difference_in_user_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.db");
    let mut sm = StateMachine::open(&path).expect("open");
    let empty = content_hash(&path).expect("hash");
    let mut seen = vec![empty.sha256.clone()];
    for sqls in [
        &["CREATE TABLE t (v)"][..],
        &["INSERT INTO t VALUES (1)"],
        &["UPDATE t SET v = '1'"],
        &["UPDATE t SET v = 1.0"],
        &["UPDATE t SET v = x'01'"],
        &["CREATE INDEX t_v ON t (v)"],
        &["UPDATE t SET rowid = 2"],
        // Content kept in shadow tables (FTS), and rowids behind a column's name.
        &["CREATE VIRTUAL TABLE docs USING fts5 (body)"],
        &["INSERT INTO docs (body) VALUES ('brute force from 10.0.0.1')"],
        &["CREATE TABLE sh (_rowid_ TEXT, v)"],
        &["INSERT INTO sh VALUES ('a', 'b')"],
        &["UPDATE sh SET rowid = rowid + 100"],
    ] {
        let index = common::write_ok(&mut sm, sqls);
        let hash = content_hash(&path).expect("hash");
        assert_eq!(hash.applied_index, index);
        assert!(
            !seen.contains(&hash.sha256),
            "{sqls:?} left the hash unchanged"
        );
        seen.push(hash.sha256);
    }
}
