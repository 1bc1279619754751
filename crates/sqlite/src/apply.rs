//! Applying committed entries: one SQLite transaction per batch ([`ApplyTxn`]), each
//! request in a savepoint, statement errors as deterministic results.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::types::ToSqlOutput;
use rusqlite::{ErrorCode, StatementStatus, ToSql};

use crate::clock::EntryClock;
use crate::error::{Result, SqliteError};
use crate::guard::{Budget, Guard, Keeping, MAX_KEPT_SQL_BYTES, MAX_KEPT_STATEMENT_BYTES};
use crate::idempotency::{self, Earlier};
use crate::types::{Member, Params, Rows, Statement, StatementResult, Value, WriteRequest};

/// The outcome of a write entry.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteApplied {
    /// One result per statement run.
    pub results: Vec<StatementResult>,
    /// The entry that applied the write: this one, or for a repeated request id the
    /// first entry that carried it (this one then changed nothing).
    pub raft_index: u64,
    /// Seconds each statement took on this node (rqlite's `timings`), empty for a
    /// repeated request. A measurement, not replicated state: it differs between
    /// nodes and is never stored.
    pub seconds: Vec<f64>,
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
    changes: &'a crate::Changes,
    pub(crate) last_index: Option<u64>,
    /// Term of the last entry of the batch, stored with the applied index.
    last_term: Option<u64>,
    /// A client statement of this transaction wrote rows of a virtual table (see
    /// [`ApplyTxn::must_commit`]).
    wrote_virtual_table: std::cell::Cell<bool>,
    /// The last client statement run was prepared to write rows of a virtual table.
    statement_wrote_virtual_table: std::cell::Cell<bool>,
    /// The schema version the known shadow tables were confirmed for when the last
    /// client statement began, if they were: undoing that statement alone brings the
    /// schema back to it, and the shadow tables stay known (see [`ApplyTxn::undo`]).
    shadow_at_start: std::cell::Cell<Option<i64>>,
    /// Objects named as sqlraft's own that are not (strays an older version let a
    /// rename make) before the last client statement ran, if it asked for a schema
    /// action: what it may keep (see [`crate::guard::unknown_internal`]).
    strays_before: std::cell::RefCell<Vec<String>>,
    /// A client statement kept prepared was compiled again by SQLite as it ran.
    prepared_again: std::cell::Cell<bool>,
    /// A client ANALYZE ran in this transaction (see [`ApplyTxn::undo`]).
    analyzed: std::cell::Cell<bool>,
    /// A client statement of this transaction changed the schema (undone or not):
    /// SQLite then resets its schema at every rollback to a savepoint until the
    /// transaction ends, and the virtual tables must be connected again.
    schema_changed: std::cell::Cell<bool>,
    /// Of the last entry, a batch of requests ([`WriteRequest::parts`]): the
    /// statements of each request that wrote a virtual table. A failed commit fails
    /// those requests, not the batch ([`ApplyTxn::commit`]).
    virtual_table_parts: Vec<usize>,
}

impl<'a> ApplyTxn<'a> {
    // The state machine's parts, borrowed for one batch: one argument each.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        tx: rusqlite::Transaction<'a>,
        guard: &'a Guard,
        rng: &'a Arc<Mutex<u64>>,
        clock: &'a EntryClock,
        time_ms: &'a mut i64,
        at_last_rowid: &'a Mutex<HashSet<String>>,
        applied: &'a mut u64,
        changes: &'a crate::Changes,
    ) -> Self {
        ApplyTxn {
            tx,
            guard,
            rng,
            clock,
            time_ms,
            new_time_ms: None,
            at_last_rowid,
            applied,
            changes,
            last_index: None,
            last_term: None,
            wrote_virtual_table: std::cell::Cell::new(false),
            statement_wrote_virtual_table: std::cell::Cell::new(false),
            shadow_at_start: std::cell::Cell::new(None),
            strays_before: std::cell::RefCell::new(Vec::new()),
            schema_changed: std::cell::Cell::new(false),
            prepared_again: std::cell::Cell::new(false),
            analyzed: std::cell::Cell::new(false),
            virtual_table_parts: Vec::new(),
        }
    }
}

impl ApplyTxn<'_> {
    /// The index the next entry of this batch must have.
    pub fn next_index(&self) -> u64 {
        self.last_index.unwrap_or(*self.applied) + 1
    }

    /// Whether the transaction must be committed before another entry joins it: an
    /// entry wrote rows of a virtual table (in a trigger too, and even if the
    /// statement then failed).
    ///
    /// A virtual table's module may do work when the transaction commits whose
    /// outcome depends on everything the transaction wrote to it: FTS3 and FTS4 run
    /// their `automerge` then, sized by the leaves the whole transaction added. Which
    /// entries share a transaction differs between nodes (a node catching up applies
    /// many at once), so without this boundary their index tables, and `/db/hash`,
    /// differed (found by a review). With it, every transaction that writes a virtual
    /// table ends with that entry on every node, and the module's commit-time work
    /// sees the same writes everywhere: the transaction's other entries wrote no
    /// virtual table. Writes of ordinary tables keep sharing transactions.
    pub fn must_commit(&self) -> bool {
        self.wrote_virtual_table.get()
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
    /// [`IDEMPOTENCY_WINDOW_ENTRIES`](crate::IDEMPOTENCY_WINDOW_ENTRIES) is not applied
    /// again and gets the first results and raft index; the same id with different
    /// statements is refused.
    pub fn write_request(
        &mut self,
        index: u64,
        at_unix_ms: i64,
        request: &WriteRequest,
    ) -> Result<WriteApplied> {
        self.write_request_failing(index, at_unix_ms, request, &[])
    }

    /// Like [`ApplyTxn::write_request`], with the statements at the positions in
    /// `failed` answered by their messages without running: what an entry that gave
    /// [`SqliteError::StatementsAborted`] is applied with again, on every node.
    pub fn write_request_failing(
        &mut self,
        index: u64,
        at_unix_ms: i64,
        request: &WriteRequest,
        failed: &[(usize, String)],
    ) -> Result<WriteApplied> {
        let Some(id) = request.request_id.as_deref() else {
            let (results, seconds) = self.run_request(index, at_unix_ms, request, failed)?;
            return Ok(WriteApplied {
                results,
                raft_index: index,
                seconds,
            });
        };
        idempotency::forget_expired(&self.tx, index)?;
        let digest = idempotency::request_digest(request);
        match idempotency::earlier(&self.tx, id, &digest)? {
            Some(Earlier::Same {
                first_index,
                results,
            }) => {
                self.entry(index)?;
                Ok(WriteApplied {
                    results,
                    raft_index: first_index,
                    seconds: Vec::new(),
                })
            }
            Some(Earlier::Different { first_index }) => {
                self.entry(index)?;
                Ok(WriteApplied {
                    results: vec![StatementResult {
                        error: Some(format!(
                            "request id {id:?} was already used for a different request \
                             (at raft index {first_index}); use a new id for a new request"
                        )),
                        ..Default::default()
                    }],
                    raft_index: index,
                    seconds: Vec::new(),
                })
            }
            None => {
                let (results, seconds) = self.run_request(index, at_unix_ms, request, failed)?;
                idempotency::remember(&self.tx, id, index, &digest, &results)?;
                Ok(WriteApplied {
                    results,
                    raft_index: index,
                    seconds,
                })
            }
        }
    }

    fn run_request(
        &mut self,
        index: u64,
        at_unix_ms: i64,
        request: &WriteRequest,
        failed: &[(usize, String)],
    ) -> Result<(Vec<StatementResult>, Vec<f64>)> {
        self.entry(index)?;
        *self.rng.lock().unwrap_or_else(PoisonError::into_inner) = index;
        let now = at_unix_ms.max(self.new_time_ms.unwrap_or(*self.time_ms));
        if now != *self.time_ms {
            self.new_time_ms = Some(now);
        }
        self.clock.set(now);
        self.control("SAVEPOINT sqlraft_request")?;
        // A request of one statement needs no savepoint of its own for it: undoing the
        // request's undoes exactly that statement, with the same result.
        let one_scope = request.transaction || request.statements.len() == 1;
        let mut results = Vec::with_capacity(request.statements.len());
        let mut seconds = Vec::with_capacity(request.statements.len());
        // What the request's RETURNING rows may still cost: results are kept in the
        // replicated state for request ids, as one SQLite value.
        let returning_left = std::cell::Cell::new(MAX_RETURNING_BYTES);
        // A statement of this request so far wrote a virtual table.
        let mut request_wrote_virtual_table = false;
        // Statements among others that failed after writing a virtual table: the
        // entry is applied again without them (`SqliteError::StatementsAborted`).
        let mut aborted = Vec::new();
        // Where each batched request ends (`WriteRequest::parts`): the step budget of
        // a request starts again at the next.
        self.guard.start_entry();
        self.virtual_table_parts.clear();
        let (mut part_start, mut part_end) = (0, 0);
        for (n, statement) in request.statements.iter().enumerate() {
            if n >= part_end {
                self.guard.start_request();
                (part_start, part_end) = part_bounds(&request.parts, n);
            }
            // Failed the first time, after writing a virtual table: not run again.
            let skipped = failed.iter().find(|(at, _)| *at == n).map(|(_, m)| m);
            let outcome = match skipped {
                Some(message) => {
                    seconds.push(0.0);
                    Err(message.clone())
                }
                None => {
                    if !one_scope {
                        self.control("SAVEPOINT sqlraft_statement")?;
                    }
                    let started = std::time::Instant::now();
                    let outcome = match self.run(statement, &returning_left) {
                        // Of a batch of requests, a failure that rolls the batch back
                        // (a budget; a schema reset a virtual table's module failed)
                        // fails that request alone, every statement of it answered by
                        // the error without running, and the others run again (found
                        // by a review: one client's request failed every other
                        // client's in the batch).
                        Err(SqliteError::BatchAborted(message)) if !request.parts.is_empty() => {
                            let message = clip(&message, MAX_ERROR_BYTES);
                            // Past the batch's own budget, the requests after it are
                            // not run either.
                            let end = if self.guard.over_budget() == Some(Budget::Entry) {
                                request.statements.len()
                            } else {
                                part_end.min(request.statements.len())
                            };
                            aborted.extend(
                                (part_start..end)
                                    .filter(|at| !failed.iter().any(|(f, _)| f == at))
                                    .filter(|at| !aborted.iter().any(|(a, _)| a == at))
                                    .map(|at| (at, message.clone()))
                                    .collect::<Vec<_>>(),
                            );
                            aborted.sort_by_key(|(at, _)| *at);
                            return Err(SqliteError::StatementsAborted { failed: aborted });
                        }
                        other => other?,
                    };
                    seconds.push(started.elapsed().as_secs_f64());
                    request_wrote_virtual_table |= self.statement_wrote_virtual_table.get();
                    if self.statement_wrote_virtual_table.get()
                        && !request.parts.is_empty()
                        && !self.virtual_table_parts.contains(&part_start)
                    {
                        let end = part_end.min(request.statements.len());
                        self.virtual_table_parts.extend(part_start..end);
                    }
                    // A statement among others (found by a review): its savepoint
                    // undoes its rows but not its module's memory (see below). The
                    // rest of the request still runs, so that one more run finds
                    // every such statement, not one run per statement (found by a
                    // review: time grew with their number times the work before).
                    if let Err(message) = &outcome
                        && !one_scope
                        && self.statement_wrote_virtual_table.get()
                    {
                        aborted.push((n, clip(message, MAX_ERROR_BYTES)));
                    }
                    outcome
                }
            };
            // A virtual table's module keeps in memory what a rollback to a savepoint
            // does not undo (FTS3/FTS4's automerge setting and the leaves the
            // transaction added, FTS5's secure-delete and rank): a node that restarts
            // later would not have it, and with FTS3/FTS4 automerge the commit itself
            // could fail (found by a review). So when a failure undoes the whole
            // request (one statement, or `?transaction`) after a write of a virtual
            // table, the entry fails instead: the batch is rolled back, the
            // connection reopened (its modules forget everything, as on a restart),
            // and the batch applied again with this entry failed, the same result.
            // A statement among others without `?transaction` (a queued batch of
            // many clients' writes is one) fails alone: the entry is applied again,
            // on a reopened connection, with that statement answered by its error
            // without running (`SqliteError::StatementsAborted`, above).
            if let Err(message) = &outcome
                && one_scope
                && request_wrote_virtual_table
            {
                return Err(SqliteError::BatchAborted(format!(
                    "statement {} failed: {}; the request wrote a virtual table \
                     (full-text, R-tree): nothing of it was applied",
                    n + 1,
                    clip(message, MAX_ERROR_BYTES)
                )));
            }
            match outcome {
                Ok(result) => {
                    if !one_scope {
                        self.control("RELEASE sqlraft_statement")?;
                    }
                    results.push(result);
                }
                Err(message) => {
                    if one_scope {
                        // A request of several statements may have confirmed its shadow
                        // tables after its first statement changed the schema.
                        self.undo("sqlraft_request", request.statements.len() == 1)?;
                    } else if skipped.is_none() {
                        self.undo("sqlraft_statement", true)?;
                    }
                    results.push(StatementResult {
                        error: Some(clip(&message, MAX_ERROR_BYTES)),
                        ..Default::default()
                    });
                    if one_scope {
                        return Ok((results, seconds));
                    }
                }
            }
        }
        if !aborted.is_empty() {
            return Err(SqliteError::StatementsAborted { failed: aborted });
        }
        self.control("RELEASE sqlraft_request")?;
        Ok((results, seconds))
    }

    /// Runs one client statement. The outer `Err` is a failure of the database; the
    /// inner one a deterministic statement error.
    fn run(
        &self,
        statement: &Statement,
        returning_left: &std::cell::Cell<usize>,
    ) -> Result<Result<StatementResult, String>> {
        self.statement_wrote_virtual_table.set(false);
        self.shadow_at_start
            .set(self.guard.current_shadow_version());
        if let Some(refusal) = crate::guard::static_refusal(&statement.sql) {
            return Ok(Err(refusal));
        }
        let outcome = self
            .guard
            .client(|| self.run_client(statement, returning_left));
        if self.prepared_again.take() {
            return Err(SqliteError::PreparedAgain);
        }
        // A statement that may have changed the schema: the statements kept prepared
        // were compiled for the schema before it.
        if self.guard.schema_action() {
            self.guard.touch_schema();
            self.forget_kept();
        }
        if self.guard.wrote_virtual_table() {
            self.wrote_virtual_table.set(true);
            self.statement_wrote_virtual_table.set(true);
        }
        // A row at the largest rowid: SQLite would go on with random rowids (different
        // on every node) or fail AUTOINCREMENT with SQLITE_FULL, which looks like a
        // full disk. Whatever happened after it, the statement fails, the same way on
        // every node (its savepoint undoes it).
        let exhausted = self.guard.wrote_last_rowid() && !self.tx.is_autocommit();
        let e = match outcome {
            Ok(_) if exhausted => return Ok(Err(last_rowid_refusal("a table"))),
            Ok(result) => {
                // A name the authorizer could not judge (a rename's new name): the
                // statement fails, the same way on every node (its savepoint undoes it).
                if self.guard.schema_action() {
                    let now = self
                        .guard
                        .own(|| crate::guard::unknown_internal(&self.tx))
                        .map_err(SqliteError::Apply)?;
                    let before = self.strays_before.borrow();
                    if let Some(name) = now.iter().find(|n| !before.contains(n)) {
                        return Ok(Err(crate::guard::reserved_name(name)));
                    }
                }
                match self.guard.own(|| self.settle_schema()) {
                    Ok(()) => return Ok(Ok(result)),
                    // A virtual table's module, written in this entry (an earlier
                    // entry that wrote one ended its transaction), can fail the reset
                    // with what it kept in memory: renamed in the request that filled
                    // it, FTS4 with automerge on failed it (found by a review). The
                    // same on every node: the entry fails, on a reopened connection.
                    Err(e) if !is_environmental(&e) && self.wrote_virtual_table.get() => {
                        return Err(SqliteError::BatchAborted(format!(
                            "the schema could not be reset after a statement that \
                             changed it, in a request that writes a virtual table: {e}; \
                             nothing of the request was applied"
                        )));
                    }
                    Err(e) => return Err(SqliteError::Apply(e)),
                }
            }
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
        // A statement stopped past its step budget or its request's: SQLite
        // interrupted it and, for a write, rolled back the whole batch. Either way its
        // request fails whole, the same way on every node (a read-only statement, not
        // rolled back, would otherwise leave the rest of the request running: found
        // by a review): the caller applies the batch again with this entry (of a
        // batch of requests, this request) failed.
        if let Some(budget) = self.guard.over_budget() {
            return Err(SqliteError::BatchAborted(budget.message()));
        }
        if self.tx.is_autocommit() {
            // SQLite rolled back the whole batch for another cause, not known to be
            // deterministic: it stops the node.
            return Err(SqliteError::Apply(e));
        }
        // The guard's reason only for its own refusal: a refusal it gave a module's
        // statement (answered by the module some other way) is not this error's cause.
        let refusal = self.guard.take_refusal();
        let denied = e.sqlite_error_code() == Some(ErrorCode::AuthorizationForStatementDenied)
            || e.to_string().starts_with("not authorized");
        let message = match (refusal.filter(|_| denied), e) {
            (Some(reason), _) => reason,
            (None, rusqlite::Error::MultipleStatement) => {
                "one statement per item: split the SQL into several statements".into()
            }
            (None, e) => statement_error_message(e),
        };
        Ok(Err(message))
    }

    fn run_client(
        &self,
        statement: &Statement,
        returning_left: &std::cell::Cell<usize>,
    ) -> rusqlite::Result<StatementResult> {
        if statement.sql.trim().is_empty() {
            return Err(rusqlite::Error::InvalidQuery);
        }
        self.guard.own(|| self.know_shadow_tables())?;
        self.shadow_at_start.set(self.guard.shadow_version());
        // SQLite keeps the statistics tables itself: ANALYZE writes them, dropping or
        // renaming a table or index updates them.
        let analyze = crate::lex::starts_with_keyword(&statement.sql, "ANALYZE");
        self.analyzed.set(self.analyzed.get() || analyze);
        self.guard.preparing_statistics_upkeep(
            analyze
                || ["DROP", "ALTER"]
                    .iter()
                    .any(|word| crate::lex::starts_with_keyword(&statement.sql, word)),
        );
        let (mut stmt, origin) = self.prepare_client(&statement.sql)?;
        let prepared_again = stmt.get_status(StatementStatus::RePrepare);
        // Everything from here to the end of the run in one place, so that a statement
        // that fails on the way (a wrong count of parameters) is never kept.
        let ran = (|| -> rusqlite::Result<(Option<Rows>, u64, u64)> {
            // The authorizer judged it as it was prepared (or its judgement was put
            // back): a schema action is known now.
            *self.strays_before.borrow_mut() = if self.guard.schema_action() {
                self.guard
                    .own(|| crate::guard::unknown_internal(&self.tx))?
            } else {
                Vec::new()
            };
            bind(&mut stmt, &statement.params)?;
            self.guard.own(|| self.check_last_rowid_before())?;
            let before = self.tx.total_changes();
            // A write that returns columns has a RETURNING clause: its rows are the
            // result, as rqlite gives them. (A read sent as a write returns none, as
            // in rqlite.)
            let returning = (stmt.column_count() > 0 && !stmt.readonly()).then(|| Rows {
                columns: stmt.column_names().iter().map(|c| c.to_string()).collect(),
                types: stmt
                    .columns()
                    .iter()
                    .map(|c| {
                        clip(
                            &c.decl_type().unwrap_or("").to_ascii_lowercase(),
                            MAX_TYPE_BYTES,
                        )
                    })
                    .collect(),
                values: Vec::new(),
            });
            let (returning, rows_omitted) = match returning {
                Some(mut rows) => {
                    let (kept, omitted) = collect_returning(&mut stmt, &mut rows, returning_left)?;
                    rows.fill_expression_types();
                    (kept.then_some(rows), omitted)
                }
                None => {
                    let mut rows = stmt.raw_query();
                    while rows.next()?.is_some() {}
                    (None, 0)
                }
            };
            Ok((returning, rows_omitted, before))
        })();
        // A statement kept prepared that SQLite compiled again as it ran (its schema
        // changed under it, which keeping rules out) was not judged by the authorizer
        // then: whatever it did is thrown away with the batch (`PreparedAgain`).
        let compiled_again = stmt.get_status(StatementStatus::RePrepare) != prepared_again;
        if origin == Origin::Kept && compiled_again {
            self.prepared_again.set(true);
            return Err(rusqlite::Error::InvalidQuery);
        }
        // A statement new to the cache is kept, with its judgement, only after a first
        // run that went to its end, if SQLite did not compile it again as it ran (a
        // plan that depends on a bound value, as `LIKE ?` has: SQLite compiles it
        // again at every use, for the same schema), it is not large (a prepared
        // statement takes many times its text's size, and a short text can name a
        // view that holds a long `IN` list; SQLite measures it by walking all of it,
        // so only now), and it is not an `EXPLAIN`, whose program never checks the
        // schema.
        if let (Prepared::Kept(kept), Origin::New(version)) = (stmt, origin) {
            let keeps = ran.is_ok()
                && !compiled_again
                && kept.is_explain() == 0
                && usize::try_from(kept.get_status(StatementStatus::MemUsed))
                    .is_ok_and(|bytes| bytes <= MAX_KEPT_STATEMENT_BYTES);
            match keeps.then(|| self.guard.keep(statement.sql.trim(), version)) {
                Some(Keeping::Yes) => {}
                // This one is out of the cache while it is used: it goes back alone.
                Some(Keeping::AfterForgettingAll) => self.tx.flush_prepared_statement_cache(),
                Some(Keeping::No) | None => kept.discard(),
            }
        }
        let (returning, rows_omitted, before) = ran?;
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
                self.guard
                    .last_insert()
                    .or_else(|| {
                        self.guard
                            .inserts_into_virtual_table()
                            .then(|| self.tx.last_insert_rowid())
                    })
                    .unwrap_or(0)
            } else {
                0
            },
            error: None,
            rows: returning,
            rows_omitted,
        })
    }

    /// The client statement `sql`, prepared, and where it came from: kept prepared
    /// from an earlier use on this connection, with what the authorizer found of it
    /// then put back ([`Guard::restore_kept`]); new to the connection's cache, to be
    /// kept after its first run ([`Guard::keep`], in `run_client`); or prepared for
    /// this use only. Preparing a small write again for every use was about a tenth
    /// of what applying it cost (SQLite's parser 8%, by `perf`). A statement is kept
    /// only when the schema version is known (it is after `know_shadow_tables`) and
    /// it asked for no schema action, and used again only at that same version:
    /// every statement that may change the schema drops them all
    /// ([`ApplyTxn::forget_kept`]), and a reopened connection keeps none. So SQLite
    /// never compiles a kept statement again as it runs, unjudged (checked:
    /// `SqliteError::PreparedAgain`).
    fn prepare_client(&self, sql: &str) -> rusqlite::Result<(Prepared<'_>, Origin)> {
        let key = sql.trim();
        if key.len() > MAX_KEPT_SQL_BYTES {
            let stmt = self.guard.preparing(|| self.tx.prepare(sql))?;
            return Ok((Prepared::Once(stmt), Origin::Once));
        }
        let version = self.guard.current_shadow_version();
        let mut stmt = self.guard.preparing(|| self.tx.prepare_cached(key))?;
        if !self.guard.judged() {
            if self.guard.restore_kept(key, version) {
                return Ok((Prepared::Kept(stmt), Origin::Kept));
            }
            // Kept at another schema version, one of sqlraft's own statements with
            // the same text, or one that never finished its first run: compiled
            // again, and judged, on an emptied cache.
            stmt.discard();
            self.forget_kept();
            stmt = self.guard.preparing(|| self.tx.prepare_cached(key))?;
        }
        match version.filter(|_| self.guard.may_keep()) {
            Some(version) => Ok((Prepared::Kept(stmt), Origin::New(version))),
            None => {
                stmt.discard();
                let stmt = self.guard.preparing(|| self.tx.prepare(key))?;
                Ok((Prepared::Once(stmt), Origin::Once))
            }
        }
    }

    /// Drops the client statements kept prepared, and their judgements.
    fn forget_kept(&self) {
        self.guard.forget_kept();
        self.tx.flush_prepared_statement_cache();
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

    /// Runs a savepoint statement of the apply path (`SAVEPOINT`, `RELEASE`).
    fn control(&self, sql: &str) -> Result<()> {
        own_statement(&self.tx, sql).map_err(SqliteError::Apply)
    }

    /// Undoes what was done since savepoint `scope` and ends it. A rollback may take
    /// the schema's version back to a number it had with other content, so the known
    /// shadow tables are forgotten.
    ///
    /// The shadow tables known stay known when `scope` held only the last client
    /// statement, they were known for the schema as it was when that statement began
    /// (the rollback brings it back to exactly that), and no statement of this
    /// transaction changed the schema (else SQLite resets its schema at the rollback,
    /// and the virtual tables must be connected again, outside any client
    /// statement). Otherwise they are forgotten, and the next statement works them out
    /// again, which reads every table's name and connects every virtual table (found
    /// by a review: forgetting them at each failed statement made a request of 2,000
    /// failing inserts into a schema of 3,500 tables take 7 s on every node).
    fn undo(&self, scope: &str, scope_is_last_statement: bool) -> Result<()> {
        let start = self
            .shadow_at_start
            .get()
            .filter(|_| scope_is_last_statement);
        if self.guard.schema_action()
            && start != Some(schema_version(&self.tx).map_err(SqliteError::Apply)?)
        {
            self.schema_changed.set(true);
        }
        self.tx
            .execute_batch(&format!("ROLLBACK TO {scope}; RELEASE {scope}"))
            .map_err(SqliteError::Apply)?;
        // SQLite expired every prepared statement if this transaction's schema changed.
        // And an ANALYZE undone left what it measured in memory (the statistics, and
        // each table's row count, which `ANALYZE sqlite_schema` does not reset), where
        // a node that restarts reads the schema from disk: the plans of the two would
        // differ, and with them the rowids of an `INSERT ... SELECT` (found by
        // reviews). So SQLite's schema is reset, to be read again from the database
        // as it now is: a table made and rolled back marks the schema changed, and
        // SQLite resets it at the rollback.
        if self.guard.schema_touched() {
            self.forget_kept();
        }
        // Only after an ANALYZE of this transaction: reading the schema again is a
        // price a request of many failing statements would pay at each (and then
        // every virtual table is connected again).
        if self.analyzed.get() {
            self.guard
                .own(|| {
                    self.tx.execute_batch(
                        "SAVEPOINT sqlraft_reload; CREATE TABLE _sqlraft_reload (x); \
                         ROLLBACK TO sqlraft_reload; RELEASE sqlraft_reload",
                    )
                })
                .map_err(SqliteError::Apply)?;
            self.schema_changed.set(true);
            self.guard.forget_shadow();
        }
        let start = start.filter(|_| !self.schema_changed.get());
        let kept = match start {
            Some(version) if self.guard.shadow_version() == Some(version) => {
                schema_version(&self.tx).map_err(SqliteError::Apply)? == version
            }
            _ => false,
        };
        if kept {
            self.guard.confirm_shadow();
        } else {
            self.guard.forget_shadow();
        }
        Ok(())
    }

    /// After a client statement that changed the schema, resets SQLite's in-memory
    /// schema as a restart would: the virtual tables disconnect, and which tables are
    /// shadow tables is worked out again from the schema as it now is. Otherwise a
    /// running node keeps what it connected and flagged under an older schema (a
    /// full-text table whose content table was dropped, a shadow flag left on a table
    /// after its virtual table was dropped) and a restarted node does not: found by a
    /// review. An empty savepoint rolled back does it: SQLite resets the schema on a
    /// rollback in a transaction that changed it.
    ///
    /// A statement that asked for no schema action cannot have changed the schema:
    /// the version (a query of its own) is looked at only after one that did.
    fn settle_schema(&self) -> rusqlite::Result<()> {
        if !self.guard.schema_action() {
            return Ok(());
        }
        let version = schema_version(&self.tx)?;
        if self.guard.shadow_version() == Some(version) {
            return Ok(());
        }
        self.schema_changed.set(true);
        self.tx.execute_batch(
            "SAVEPOINT sqlraft_schema; ROLLBACK TO sqlraft_schema; RELEASE sqlraft_schema",
        )?;
        self.guard.forget_shadow();
        Ok(())
    }

    /// Connects every virtual table and tells the guard which tables are their shadow
    /// tables, unless it knows them for this schema version already. Both under
    /// sqlraft's own statements: a module connecting while the client's statement is
    /// prepared would have its own statements (writes to its shadow tables, `PRAGMA
    /// page_size`) judged as the client's and refused, on a node whose schema was
    /// reset (a rollback, a schema change) and not on one that connected it before.
    /// Each virtual table is connected on its own, so that one that cannot connect
    /// (its content table dropped) keeps no other from connecting; its failure is
    /// the same on every node.
    ///
    /// The schema's version is looked at once in a batch, and again only after a
    /// statement that may have changed the schema ([`ApplyTxn::settle_schema`]) or a
    /// rollback: looking at it is a query of its own, and listing the shadow tables
    /// several, which were most of what applying a small write cost (by perf).
    fn know_shadow_tables(&self) -> rusqlite::Result<()> {
        if self.guard.shadow_current() {
            return Ok(());
        }
        let version = schema_version(&self.tx)?;
        if self.guard.shadow_version() == Some(version) {
            self.guard.confirm_shadow();
            return Ok(());
        }
        let vtabs = {
            let mut stmt = self.tx.prepare_cached(
                "SELECT name, sql FROM sqlite_schema \
                 WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%'",
            )?;
            stmt.query_map([], |r| {
                let sql: String = r.get(1)?;
                Ok((
                    r.get::<_, String>(0)?,
                    crate::lex::virtual_table_module(&sql),
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        for (vtab, _) in &vtabs {
            let sql = format!(
                "SELECT * FROM main.\"{}\" LIMIT 0",
                vtab.replace('"', "\"\"")
            );
            match self.tx.prepare(&sql) {
                Err(e) if is_environmental(&e) => return Err(e),
                _ => {}
            }
        }
        let mut stmt = self
            .tx
            .prepare_cached("SELECT name, type FROM pragma_table_list WHERE schema = 'main'")?;
        let shadow = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .filter_map(|row| match row {
                Ok((name, kind)) if kind == "shadow" => Some(Ok(name)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        self.guard
            .set_shadow(version, crate::guard::shadow_tables(&shadow), vtabs);
        Ok(())
    }

    /// Records an entry that changes nothing in the database (a no-op or a
    /// configuration change) so that it counts as applied.
    pub fn skip(&mut self, index: u64) -> Result<()> {
        self.entry(index)
    }

    /// Records entry `index`, a write request that rolled its batch back
    /// ([`SqliteError::BatchAborted`]), as failed with `message`: nothing of it is
    /// applied. Its request id, if it has one, is remembered with that result, as for
    /// any other answered request: a retry gets the same answer and is not run again.
    pub fn fail_request(
        &mut self,
        index: u64,
        request: &WriteRequest,
        message: &str,
    ) -> Result<WriteApplied> {
        self.entry(index)?;
        let results = vec![StatementResult {
            error: Some(message.to_string()),
            ..Default::default()
        }];
        if let Some(id) = request.request_id.as_deref() {
            idempotency::forget_expired(&self.tx, index)?;
            let digest = idempotency::request_digest(request);
            // A request whose id was known is answered without running, so it cannot
            // have aborted; the check keeps a second row for the id out all the same.
            if idempotency::earlier(&self.tx, id, &digest)?.is_none() {
                idempotency::remember(&self.tx, id, index, &digest, &results)?;
            }
        }
        Ok(WriteApplied {
            results,
            raft_index: index,
            seconds: Vec::new(),
        })
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

    /// Stages chunk `seq` of restore `id` (entry `index`): kept in `_sqlraft_restore`
    /// until the restore's commit entry uses it. The first chunk of a restore drops
    /// whatever an abandoned one left.
    pub fn stage_restore_chunk(
        &mut self,
        index: u64,
        id: &str,
        seq: u32,
        data: &[u8],
    ) -> Result<()> {
        self.entry(index)?;
        if seq == 0 {
            self.tx
                .execute("DELETE FROM _sqlraft_restore WHERE id != ?1", [id])
                .map_err(SqliteError::Apply)?;
        }
        self.tx
            .execute(
                "INSERT OR REPLACE INTO _sqlraft_restore (id, seq, data) VALUES (?1, ?2, ?3)",
                rusqlite::params![id, seq, data],
            )
            .map_err(SqliteError::Apply)?;
        Ok(())
    }

    /// Records the term of the last entry of the batch: stored with the applied index,
    /// it makes a copy of the database a self-describing snapshot.
    pub fn set_term(&mut self, term: u64) {
        self.last_term = Some(term);
    }

    /// Commits the batch together with its applied index. [`SqliteError::BatchAborted`]:
    /// the commit failed because of the last entry, which wrote a virtual table;
    /// nothing was committed (apply the batch again with that entry failed).
    pub fn commit(self) -> Result<u64> {
        let Some(last) = self.last_index else {
            return Ok(*self.applied);
        };
        let mut meta = self
            .tx
            .prepare_cached("INSERT OR REPLACE INTO _sqlraft_meta (key, value) VALUES (?1, ?2)")
            .map_err(SqliteError::Apply)?;
        if let Some(term) = self.last_term {
            meta.execute(rusqlite::params!["applied_term", term as i64])
                .map_err(SqliteError::Apply)?;
        }
        meta.execute(rusqlite::params!["applied_index", last as i64])
            .map_err(SqliteError::Apply)?;
        if let Some(time_ms) = self.new_time_ms {
            meta.execute(rusqlite::params!["entry_time_ms", time_ms])
                .map_err(SqliteError::Apply)?;
        }
        drop(meta);
        let changes = self.changes;
        let committed = self.tx.commit();
        // Counted even if the commit failed: what it did is unknown.
        changes.count();
        match committed {
            Ok(()) => {}
            // A virtual table's module does work at commit with what it kept in
            // memory (FTS4 merging its index under the name it had before a rename in
            // the same request: found by a review). Only the last entry of this
            // transaction wrote one (an entry that does ends it): it fails, the same
            // way on every node, and the others are applied again without it.
            Err(e) if !is_environmental(&e) && self.wrote_virtual_table.get() => {
                let message = format!(
                    "committing the request's write to a virtual table failed: {e}; \
                     nothing of the request was applied"
                );
                // Of a batch of requests, those that wrote a virtual table fail: the
                // others, which wrote none, cannot fail the commit this way.
                if !self.virtual_table_parts.is_empty() {
                    let message = clip(&message, MAX_ERROR_BYTES);
                    return Err(SqliteError::StatementsAborted {
                        failed: self
                            .virtual_table_parts
                            .iter()
                            .map(|&at| (at, message.clone()))
                            .collect(),
                    });
                }
                return Err(SqliteError::BatchAborted(message));
            }
            Err(e) => return Err(SqliteError::Apply(e)),
        }
        self.guard.batch_committed();
        *self.applied = last;
        if let Some(time_ms) = self.new_time_ms {
            *self.time_ms = time_ms;
        }
        Ok(last)
    }
}

/// Runs one of sqlraft's own statements (no parameters, no rows) from the connection's
/// statement cache: a write pays for parsing its own SQL only, not for the savepoints
/// and bookkeeping around it (those were most of the apply thread's parsing, by perf).
fn own_statement(conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The schema's version number, from the statement cache: as a table-valued pragma,
/// since a `PRAGMA` statement expires itself after each run and would be prepared
/// again every time.
fn schema_version(conn: &rusqlite::Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT schema_version FROM pragma_schema_version")?
        .query_row([], |r| r.get(0))
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

/// Bytes the rows of the `RETURNING` clauses of one request may take together, with
/// their column names and types, counted as they are kept (text after repair to UTF-8,
/// blobs, 24 bytes for a number or NULL, a little for each row and name; the same on
/// every platform). Rows beyond are left out of the result and counted
/// ([`StatementResult::rows_omitted`]); the statement runs whole either way, so what
/// it writes never depends on this limit. It bounds the memory and the answer of a
/// request; results kept for a request id are bounded on their own (a repeat of a
/// request whose results were too large learns only that it was applied).
pub const MAX_RETURNING_BYTES: usize = 8 << 20;

/// Bytes of a statement's error message kept in its result (a trigger's `RAISE` can
/// make one as long as the request); longer ones are cut, on a character boundary,
/// with `…`.
pub const MAX_ERROR_BYTES: usize = 512;

/// Bytes of a declared column type kept in a `RETURNING` result.
const MAX_TYPE_BYTES: usize = 256;

/// Where [`ApplyTxn::prepare_client`] took a client statement from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Kept prepared from an earlier use, its judgement put back.
    Kept,
    /// Compiled now into the connection's cache at this schema version: kept after
    /// its first run, or discarded.
    New(i64),
    /// Compiled for this use only.
    Once,
}

/// A client statement as [`ApplyTxn::prepare_client`] gives it: one the connection
/// keeps prepared (it goes back to the connection's cache when dropped), or one
/// prepared for this use only.
enum Prepared<'c> {
    Kept(rusqlite::CachedStatement<'c>),
    Once(rusqlite::Statement<'c>),
}

impl<'c> std::ops::Deref for Prepared<'c> {
    type Target = rusqlite::Statement<'c>;

    fn deref(&self) -> &Self::Target {
        match self {
            Prepared::Kept(stmt) => stmt,
            Prepared::Once(stmt) => stmt,
        }
    }
}

impl std::ops::DerefMut for Prepared<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Prepared::Kept(stmt) => stmt,
            Prepared::Once(stmt) => stmt,
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary, `…` marking the cut.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Runs of an entry that may end in [`SqliteError::StatementsAborted`] before it fails
/// whole: see [`leave_out`].
pub const MAX_ABORTED_RUNS: u8 = 4;

/// Runs a batch of requests gets past [`MAX_ABORTED_RUNS`], each without the request
/// of the first failure the last run found and every request after it: see
/// [`leave_out`].
pub const MAX_TAIL_RUNS: u8 = 2;

/// Which statements an entry that ended in [`SqliteError::StatementsAborted`] leaves
/// out on its next run: `failed`, those it left out so far after `runs` runs that ended
/// so, and `more`, what the last one reported. False when the entry must not run again
/// and fails whole. The same on every node:
///
/// * The first run finds every such statement of the request; the second leaves them
///   out, and usually ends the matter.
/// * A later run finds more only where a statement fails without what a failed one
///   left in its module's memory (an FTS5 rank it set); each run leaves out what the
///   last one found, the request's other statements standing (a queued batch holds
///   many clients' writes: found by a review).
/// * After [`MAX_ABORTED_RUNS`] such runs (a chain of statements each failing only
///   without the one before, built on purpose), the entry fails whole: a request costs
///   at most that many runs.
///
/// A batch of requests ([`WriteRequest::parts`]) gets [`MAX_TAIL_RUNS`] runs more:
///
/// * in the first, the request holding the first statement the last run found and
///   every request after it fail without running, the requests before it stand (found
///   by a review: four clients' runaway requests in one queued batch made every other
///   client's write in it fail). Those found nothing new in that run, so they find
///   nothing while they run again;
/// * only the commit, which a run that stopped early never reached, may still fail,
///   for the requests that wrote a virtual table (found by a review): the second runs
///   without the first of those and every request after it. The requests before it
///   ran as they did in the first and wrote no virtual table, so they end the matter.
///   (Leaving out only the requests that wrote a virtual table changes what the
///   requests after them see, which may then fail again: found by a review.)
pub fn leave_out(
    failed: &mut Vec<(usize, String)>,
    runs: u8,
    more: Vec<(usize, String)>,
    request: &WriteRequest,
) -> bool {
    let Some((first, message)) = more.iter().min_by_key(|(at, _)| *at).cloned() else {
        return false;
    };
    if runs + 1 < MAX_ABORTED_RUNS {
        failed.extend(more);
        return true;
    }
    if runs + 1 >= MAX_ABORTED_RUNS + MAX_TAIL_RUNS || request.parts.is_empty() {
        return false;
    }
    failed.extend(more);
    let tail = clip(
        &format!(
            "not applied: the queued batch this request was in was applied {} times, \
             each time without statements that failed in a way a savepoint cannot undo, \
             the last found at statement {} ({message}); it and the requests after it in \
             the batch were not applied: send them again",
            runs + 1,
            first + 1
        ),
        MAX_ERROR_BYTES,
    );
    let (from, _) = part_bounds(&request.parts, first);
    for at in from..request.statements.len() {
        if !failed.iter().any(|(f, _)| *f == at) {
            failed.push((at, tail.clone()));
        }
    }
    true
}

/// Where the request of a batch ([`WriteRequest::parts`]) that holds statement `at`
/// begins and ends (its first statement, and one past its last): every part as far as
/// it goes, parts of no statements skipped, and the statements after the last part one
/// part more, which ends at `usize::MAX`. Any list of parts reads the same on every
/// node.
pub fn part_bounds(parts: &[u32], at: usize) -> (usize, usize) {
    let mut start = 0usize;
    for &len in parts {
        let end = start.saturating_add(len as usize);
        if end > at {
            return (start, end);
        }
        start = end;
    }
    (start, usize::MAX)
}

/// Runs a statement with a `RETURNING` clause to its end, keeping its rows while the
/// request's rows may still cost something (`left`, reduced by what these cost).
/// Whether the rows are kept at all (not when even their column names and types do
/// not fit: the result is then a plain write's), and how many were left out.
fn collect_returning(
    stmt: &mut rusqlite::Statement<'_>,
    out: &mut Rows,
    left: &std::cell::Cell<usize>,
) -> rusqlite::Result<(bool, u64)> {
    let width = out.columns.len();
    let header: usize = out
        .columns
        .iter()
        .chain(&out.types)
        .map(|name| name.len() + 8)
        .sum();
    // `None`: not even the names and types fit; the rows are only counted.
    let mut budget = left.get().checked_sub(header);
    let kept = budget.is_some();
    let mut omitted = 0u64;
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next()? {
        let Some(room) = budget.filter(|_| omitted == 0) else {
            omitted += 1;
            continue;
        };
        let mut values = Vec::with_capacity(width);
        let mut cost = 8;
        for i in 0..width {
            let value = Value::from_ref(row.get_ref(i)?);
            cost += match &value {
                Value::Text(t) => t.len() + 16,
                Value::Blob(b) => b.len() + 16,
                Value::Null | Value::Integer(_) | Value::Real(_) => 24,
            };
            values.push(value);
        }
        match room.checked_sub(cost) {
            Some(rest) => {
                budget = Some(rest);
                out.values.push(values);
            }
            None => omitted = 1,
        }
    }
    if let Some(rest) = budget {
        left.set(rest);
    }
    Ok((kept, omitted))
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
///
/// Two codes are left out, because a statement causes them the same way on every node:
///
/// * SQLITE_CORRUPT_VTAB: a full-text or R-tree module finds its index inconsistent.
///   Client SQL cannot write the shadow tables the index is kept in (the guard refuses
///   it), but FTS5's `'delete'` command with values other than those indexed (the
///   documented way to keep an external-content index) damages it on every node
///   alike. Stopping for it would stop every node at every start. (Damage to the file
///   that leaves the b-tree intact can show as this code too, on one node; so can it
///   as wrong rows from any table. SQLite has no checksums; `/db/hash` compares nodes.)
/// * SQLITE_LOCKED: the apply connection is the only one writing and shares no cache,
///   so a table is locked only by the statement itself (an R-tree written by a trigger
///   while the statement reads it, a table dropped while a statement reads it).
pub(crate) fn is_environmental(e: &rusqlite::Error) -> bool {
    if let rusqlite::Error::SqliteFailure(failure, _) = e
        && failure.extended_code == rusqlite::ffi::SQLITE_CORRUPT_VTAB
    {
        return false;
    }
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
        // SQLite's own message without the statement and offset rusqlite appends, as
        // rqlite gives it: clients classify errors by it.
        rusqlite::Error::SqlInputError { msg, .. } => msg,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StateMachine;

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
                    parts: Vec::new(),
                },
            );
            match outcome {
                Err(e) => assert!(e.is_fatal(), "{e:?}"),
                Ok(results) => panic!("a full database became a result: {results:?}"),
            }
        }
    }
}
