//! What a client's SQL may do to the state database, enforced with SQLite's authorizer
//! while a statement is prepared.
//!
//! Transactions belong to the state machine (one per batch of entries, a savepoint per
//! request), so client transaction control is refused; so are `ATTACH` (other files),
//! `PRAGMA` (connection and file settings outside the replicated state), temporary
//! objects (they would live on one node's connection only) and any change to sqlraft's
//! own `_sqlraft_*` tables. Every refusal is deterministic: the same on every node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

/// Prefix of the tables sqlraft keeps in the state database.
pub const INTERNAL_PREFIX: &str = "_sqlraft_";

/// sqlraft's own objects: any other object named with [`INTERNAL_PREFIX`] is refused,
/// in a write and in a backup to restore.
const INTERNAL_OBJECTS: &[&str] = &[
    "_sqlraft_meta",
    "_sqlraft_members",
    "_sqlraft_services",
    "_sqlraft_requests",
    "_sqlraft_requests_by_index",
    "_sqlraft_restore",
];

/// The objects of `conn`'s main schema named as sqlraft's own that are not, in name
/// order. The authorizer cannot see every name a statement gives: `ALTER TABLE ...
/// RENAME TO` shows only the old one (found by a review: a table renamed so could no
/// longer be changed or dropped, was left out of dumps, and made every backup
/// unrestorable), so a statement that asked for a schema action is checked after it
/// ran for names it added. One made so by an older version (a stray) can be changed,
/// renamed and dropped like any table of the user's.
pub(crate) fn unknown_internal(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name FROM main.sqlite_schema WHERE name LIKE '\\_sqlraft\\_%' ESCAPE '\\' \
         ORDER BY name",
    )?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut unknown = Vec::new();
    for name in names {
        let name = name?;
        if !own(&name) {
            unknown.push(name);
        }
    }
    Ok(unknown)
}

/// One of sqlraft's own objects (SQLite's names are case-insensitive).
fn own(name: &str) -> bool {
    INTERNAL_OBJECTS
        .iter()
        .any(|o| o.eq_ignore_ascii_case(name))
}

/// The refusal of an object named as sqlraft's own.
pub(crate) fn reserved_name(name: &str) -> String {
    format!("the name {name} is reserved: names starting with _sqlraft_ are sqlraft's own")
}

/// Shared between the authorizer callback and the code preparing statements.
#[derive(Clone, Default)]
pub(crate) struct Guard {
    inner: Arc<Mutex<GuardState>>,
}

#[derive(Default)]
struct GuardState {
    /// While false (sqlraft's own statements) everything is allowed.
    client_sql: bool,
    /// The client statement itself is being prepared (triggers and views included).
    /// The authorizer judges only that: statements SQLite's own modules prepare while
    /// it runs (FTS5 reads `PRAGMA data_version`, writes its shadow tables) are theirs.
    preparing: bool,
    /// Why the last refused action was refused.
    refusal: Option<String>,
    /// The table the client statement itself inserts into: set when its first
    /// write action (in prepare order, before any trigger's) is an insert.
    insert_target: Option<String>,
    /// Whether a write action was seen yet while preparing.
    wrote: bool,
    /// Rowid of the last row inserted into `insert_target` while running.
    last_insert: Option<i64>,
    /// Tables it inserts into, triggers included.
    inserted: Vec<String>,
    /// It renames a table or adds a column (`ALTER TABLE`).
    altered: bool,
    /// Its preparation asked for an action other than reading and writing rows (and
    /// calling functions), or to read or write a virtual table (whose module may
    /// create tables as it runs: FTS3 makes its `_stat` table at the first
    /// `automerge`): only such a statement can change the schema.
    schema_action: bool,
    /// Its preparation asked to write rows of a virtual table (triggers included).
    wrote_virtual_table: bool,
    /// The client statement running now wrote a row with the largest rowid.
    wrote_last_rowid: bool,
    /// Progress-handler calls (one per `STEPS_PER_CALL` VM instructions) of the client
    /// statement running now.
    calls: u64,
    /// Progress-handler calls of the client statements of the request running now.
    request_calls: u64,
    /// Progress-handler calls of the client statements of the entry running now (a
    /// batch of requests: see [`MAX_ENTRY_CALLS`]).
    entry_calls: u64,
    /// The statement used up its budget, or the request its own, and was interrupted.
    over_budget: Option<Budget>,
    /// Shadow tables (lowercase name -> their virtual table) at a schema version;
    /// forgotten at each rollback, when the schema version may come back to a number
    /// it had with other content.
    shadow: Option<(i64, HashMap<String, String>)>,
    /// The virtual tables at that schema version.
    virtual_tables: Vec<String>,
    /// Those of them whose module describes this node rather than the replicated
    /// content (`dbstat`; made by a build before such modules were refused).
    node_local_tables: Vec<String>,
    /// `shadow` was found to belong to the schema as it is, in this batch, and no
    /// statement since could have changed the schema (none asked for a schema action,
    /// or the version was looked at after it): the next statement need not look.
    shadow_current: bool,
    /// The authorizer was asked about the statement being prepared: SQLite compiled
    /// it now rather than handing out one kept prepared.
    judged: bool,
    /// A client statement of the open batch asked for a schema action
    /// ([`Guard::touch_schema`]).
    schema_touched: bool,
    /// No client statement is kept prepared on this connection
    /// ([`Guard::keep_nothing`]).
    keep_nothing: bool,
    /// The client statement being prepared is one whose upkeep of the statistics
    /// tables SQLite does itself ([`Guard::preparing_statistics_upkeep`]).
    statistics_upkeep: bool,
    /// What the authorizer found of each client statement kept prepared on the
    /// connection (by its trimmed SQL), and the schema version it was prepared at.
    kept: HashMap<String, (i64, Judgement)>,
}

/// What the authorizer finds of a client statement as it is prepared, and the rest
/// of the apply acts on: kept with a statement kept prepared, and put back when it is
/// used again, since SQLite asks the authorizer nothing then.
#[derive(Clone)]
struct Judgement {
    insert_target: Option<String>,
    wrote: bool,
    inserted: Vec<String>,
    altered: bool,
    schema_action: bool,
    wrote_virtual_table: bool,
}

/// Client statements whose judgement is kept at most: past it, every kept statement
/// is forgotten (and the connection's prepared statements dropped) and the count
/// starts again. The connection keeps the most recently used of them prepared
/// ([`KEPT_STATEMENTS`]).
const MAX_KEPT_JUDGEMENTS: usize = 1024;

/// Prepared statements the apply connection keeps, sqlraft's own and clients'
/// (about 20 of sqlraft's own): with [`MAX_KEPT_STATEMENT_BYTES`] at most 8 MiB.
pub(crate) const KEPT_STATEMENTS: usize = 128;

/// Client statements longer than this are prepared for each use, not kept.
pub(crate) const MAX_KEPT_SQL_BYTES: usize = 4096;

/// Client statements that take more memory than this, prepared, are not kept (a
/// small insert takes a few KiB).
pub(crate) const MAX_KEPT_STATEMENT_BYTES: usize = 64 << 10;

/// Whether [`Guard::keep`] kept a statement's judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keeping {
    /// Not kept: the statement must not be kept prepared.
    No,
    Yes,
    /// Kept, after every other was forgotten: drop the connection's kept statements
    /// (this one is not among them yet).
    AfterForgettingAll,
}

/// VM instructions between two calls of the progress handler.
const STEPS_PER_CALL: i32 = 1000;
/// Progress-handler calls one client statement may take: 100 million VM instructions.
/// Counting instructions, not time, gives every node the same outcome.
pub const MAX_STATEMENT_CALLS: u64 = 100_000;
/// Progress-handler calls the client statements of one request may take together:
/// 300 million VM instructions. Every node applies a request on its raft thread, which
/// sends no heartbeat meanwhile: without a total, a request of many statements each
/// under [`MAX_STATEMENT_CALLS`] would hold every node for as long as its sender likes
/// (10,000 statements near their budget: hours).
pub const MAX_REQUEST_CALLS: u64 = 300_000;
/// Progress-handler calls the client statements of one entry may take together: 600
/// million VM instructions. An entry carries one request, within
/// [`MAX_REQUEST_CALLS`], or a queue's batch of many
/// ([`WriteRequest::parts`](crate::WriteRequest::parts)), each with a request's
/// budget: without a total, one batch of 128 requests could hold every node's raft
/// thread for 128 requests' worth (found by a review).
pub const MAX_ENTRY_CALLS: u64 = 600_000;

/// Which budget a client statement ran past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    /// Its own, [`MAX_STATEMENT_CALLS`].
    Statement,
    /// Its request's, [`MAX_REQUEST_CALLS`].
    Request,
    /// Its entry's, [`MAX_ENTRY_CALLS`] (a batch of requests).
    Entry,
}

impl Budget {
    /// The result of a request stopped for it.
    pub(crate) fn message(self) -> String {
        match self {
            Budget::Statement => format!(
                "statement stopped after {} million steps: it runs too long to be applied \
                 on every node; nothing of the request was applied",
                MAX_STATEMENT_CALLS / 1000
            ),
            Budget::Request => format!(
                "request stopped after {} million steps of its statements in all: it runs \
                 too long to be applied on every node; nothing of it was applied: split it \
                 into smaller requests",
                MAX_REQUEST_CALLS / 1000
            ),
            Budget::Entry => format!(
                "not applied: the queued batch this request was in ran past its step \
                 budget ({} million steps in all) before this request ended; it and the \
                 requests after it in the batch were not applied: send them again",
                MAX_ENTRY_CALLS / 1000
            ),
        }
    }
}

impl Guard {
    pub(crate) fn install(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        let guard = self.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| guard.authorize(ctx)))?;
        let guard = self.clone();
        conn.update_hook(Some(move |action, _: &str, table: &str, rowid: i64| {
            use rusqlite::hooks::Action;
            guard.with(|s| {
                if !s.client_sql {
                    return;
                }
                if rowid == i64::MAX && action != Action::SQLITE_DELETE {
                    s.wrote_last_rowid = true;
                }
                if action == Action::SQLITE_INSERT
                    && s.insert_target
                        .as_deref()
                        .is_some_and(|t| t.eq_ignore_ascii_case(table))
                {
                    s.last_insert = Some(rowid);
                }
            })
        }))?;
        let guard = self.clone();
        conn.progress_handler(STEPS_PER_CALL, Some(move || guard.progress()))
    }

    /// Whether the last client statement wrote a row with the largest rowid (after
    /// which SQLite chooses rowids at random, or fails AUTOINCREMENT with SQLITE_FULL).
    pub(crate) fn wrote_last_rowid(&self) -> bool {
        self.with(|s| s.wrote_last_rowid)
    }

    /// Called by SQLite every `STEPS_PER_CALL` instructions; `true` interrupts.
    fn progress(&self) -> bool {
        self.with(|s| {
            if !s.client_sql {
                return false;
            }
            s.calls += 1;
            s.request_calls += 1;
            s.entry_calls += 1;
            if s.over_budget.is_none() {
                if s.calls > MAX_STATEMENT_CALLS {
                    s.over_budget = Some(Budget::Statement);
                } else if s.request_calls > MAX_REQUEST_CALLS {
                    s.over_budget = Some(Budget::Request);
                } else if s.entry_calls > MAX_ENTRY_CALLS {
                    s.over_budget = Some(Budget::Entry);
                }
            }
            s.over_budget.is_some()
        })
    }

    /// Which budget the last client statement ran past, if it was stopped for that.
    pub(crate) fn over_budget(&self) -> Option<Budget> {
        self.with(|s| s.over_budget)
    }

    /// A request starts: its statements' steps are counted from zero.
    pub(crate) fn start_request(&self) {
        self.with(|s| s.request_calls = 0);
    }

    /// An entry starts: its statements' steps are counted from zero.
    pub(crate) fn start_entry(&self) {
        self.with(|s| {
            s.entry_calls = 0;
            s.request_calls = 0;
        });
    }

    /// Runs `f` with client SQL restrictions on.
    pub(crate) fn client<T>(&self, f: impl FnOnce() -> T) -> T {
        self.with(|s| {
            s.client_sql = true;
            s.refusal = None;
            s.insert_target = None;
            s.wrote = false;
            s.last_insert = None;
            s.inserted.clear();
            s.altered = false;
            s.schema_action = false;
            s.wrote_virtual_table = false;
            s.wrote_last_rowid = false;
            s.calls = 0;
            s.over_budget = None;
        });
        let out = f();
        self.with(|s| s.client_sql = false);
        out
    }

    /// Prepares the client statement: `f` runs with the authorizer judging it.
    pub(crate) fn preparing<T>(&self, f: impl FnOnce() -> T) -> T {
        self.with(|s| {
            s.preparing = true;
            s.judged = false;
        });
        let out = f();
        self.with(|s| s.preparing = false);
        out
    }

    /// Says whether the client statement about to be prepared is one whose upkeep of
    /// the statistics tables SQLite does itself (by its first word: ANALYZE, DROP,
    /// ALTER): only such a statement may write them.
    pub(crate) fn preparing_statistics_upkeep(&self, upkeep: bool) {
        self.with(|s| s.statistics_upkeep = upkeep);
    }

    /// Whether the authorizer judged the statement last prepared: SQLite compiled it
    /// then, rather than handing out one kept prepared.
    pub(crate) fn judged(&self) -> bool {
        self.with(|s| s.judged)
    }

    /// Keeps what the authorizer found of the client statement just prepared and run,
    /// `sql`, at schema version `version`, for when it is used again without being
    /// compiled ([`Guard::restore_kept`]). [`Keeping::No`] when it cannot be kept:
    /// one that asked for a schema action or that the authorizer was not asked about,
    /// and on a connection that keeps nothing; past [`MAX_KEPT_JUDGEMENTS`] all the
    /// others are forgotten first ([`Keeping::AfterForgettingAll`]).
    pub(crate) fn keep(&self, sql: &str, version: i64) -> Keeping {
        self.with(|s| {
            if s.keep_nothing || s.schema_action || !s.judged || s.refusal.is_some() {
                return Keeping::No;
            }
            let judgement = Judgement {
                insert_target: s.insert_target.clone(),
                wrote: s.wrote,
                inserted: s.inserted.clone(),
                altered: s.altered,
                schema_action: s.schema_action,
                wrote_virtual_table: s.wrote_virtual_table,
            };
            let forgot = s.kept.len() >= MAX_KEPT_JUDGEMENTS && !s.kept.contains_key(sql);
            if forgot {
                s.kept.clear();
            }
            s.kept.insert(sql.to_string(), (version, judgement));
            if forgot {
                Keeping::AfterForgettingAll
            } else {
                Keeping::Yes
            }
        })
    }

    /// Whether the client statement just prepared may be kept ([`Guard::keep`]): the
    /// authorizer judged it, it asked for no schema action, and this connection keeps
    /// statements.
    pub(crate) fn may_keep(&self) -> bool {
        self.with(|s| !s.keep_nothing && !s.schema_action && s.judged && s.refusal.is_none())
    }

    /// Puts back what the authorizer found of `sql` when it was prepared, for a
    /// statement SQLite handed out kept prepared: true only when it was judged at
    /// schema version `version`, the schema's version now (known: see
    /// [`Guard::current_shadow_version`]).
    pub(crate) fn restore_kept(&self, sql: &str, version: Option<i64>) -> bool {
        self.with(|s| {
            let Some((at, judgement)) = s.kept.get(sql) else {
                return false;
            };
            if Some(*at) != version {
                return false;
            }
            let judgement = judgement.clone();
            s.insert_target = judgement.insert_target;
            s.wrote = judgement.wrote;
            s.inserted = judgement.inserted;
            s.altered = judgement.altered;
            s.schema_action = judgement.schema_action;
            s.wrote_virtual_table = judgement.wrote_virtual_table;
            true
        })
    }

    /// Keeps no client statement prepared from now on, on this connection.
    pub(crate) fn keep_nothing(&self) {
        self.with(|s| {
            s.keep_nothing = true;
            s.kept.clear();
        });
    }

    /// Forgets every kept statement's judgement (the connection's kept statements
    /// must be dropped with them).
    pub(crate) fn forget_kept(&self) {
        self.with(|s| s.kept.clear());
    }

    /// Rowid of the last row the last client statement itself inserted (not its
    /// triggers), from the rows written: unlike SQLite's `last_insert_rowid()`, it
    /// does not carry a value over from earlier statements, batches or restarts.
    pub(crate) fn last_insert(&self) -> Option<i64> {
        self.with(|s| s.last_insert)
    }

    /// Runs sqlraft's own statements `f` in the middle of a client statement, without
    /// the client restrictions (and without touching what is recorded of the client
    /// statement).
    pub(crate) fn own<T>(&self, f: impl FnOnce() -> T) -> T {
        let was = self.with(|s| std::mem::replace(&mut s.client_sql, false));
        let out = f();
        self.with(|s| s.client_sql = was);
        out
    }

    /// Whether the last client statement alters a table (a rename moves a table's
    /// name, an added column may shadow `rowid`).
    pub(crate) fn altered(&self) -> bool {
        self.with(|s| s.altered)
    }

    /// Whether the table the last client statement itself inserts into is a virtual
    /// table: the update hook sees only its module's own tables, so the row's id is
    /// SQLite's `last_insert_rowid()`, which SQLite sets from the module's answer for
    /// each row the statement inserts (the same on every node).
    pub(crate) fn inserts_into_virtual_table(&self) -> bool {
        self.with(|s| {
            s.insert_target.as_deref().is_some_and(|target| {
                s.virtual_tables
                    .iter()
                    .any(|v| v.eq_ignore_ascii_case(target))
            })
        })
    }

    /// Tables the last client statement inserts into.
    pub(crate) fn inserted_tables(&self) -> Vec<String> {
        self.with(|s| s.inserted.clone())
    }

    /// Whether the last client statement asked, while it was prepared, for an action
    /// that may change the schema: anything but reading and writing rows of ordinary
    /// tables and calling functions. One that did not cannot have changed it: SQLite
    /// asks the authorizer for every schema change a statement makes (`CREATE`,
    /// `DROP`, `ALTER`, `ANALYZE`, `REINDEX`, a virtual table's creation) when it is
    /// prepared, except what a virtual table's module does as it runs (found by a
    /// review: FTS3 creates its `_stat` table at the first `automerge` or `merge`
    /// command, an insert), hence the virtual tables' rows count too.
    pub(crate) fn schema_action(&self) -> bool {
        self.with(|s| s.schema_action)
    }

    /// Whether the last client statement asked, while it was prepared, to insert,
    /// update or delete rows of a virtual table (in a trigger too).
    pub(crate) fn wrote_virtual_table(&self) -> bool {
        self.with(|s| s.wrote_virtual_table)
    }

    /// The schema version the known shadow tables belong to.
    pub(crate) fn shadow_version(&self) -> Option<i64> {
        self.with(|s| s.shadow.as_ref().map(|(version, _)| *version))
    }

    /// Whether the known shadow tables are known to belong to the schema as it is
    /// (see [`Guard::confirm_shadow`]).
    pub(crate) fn shadow_current(&self) -> bool {
        self.with(|s| s.shadow.is_some() && s.shadow_current)
    }

    /// The schema version the known shadow tables are known to belong to as the
    /// schema is now ([`Guard::shadow_current`]), if they are.
    pub(crate) fn current_shadow_version(&self) -> Option<i64> {
        self.with(|s| {
            s.shadow
                .as_ref()
                .filter(|_| s.shadow_current)
                .map(|(version, _)| *version)
        })
    }

    /// The shadow tables and the virtual tables (each with its module's name, when it
    /// could be read from its SQL) at schema version `version`, the schema's version
    /// now.
    pub(crate) fn set_shadow(
        &self,
        version: i64,
        tables: HashMap<String, String>,
        virtual_tables: Vec<(String, Option<String>)>,
    ) {
        self.with(|s| {
            s.shadow = Some((version, tables));
            s.node_local_tables = virtual_tables
                .iter()
                .filter(|(_, module)| !module.as_deref().is_some_and(replicated_module))
                .map(|(name, _)| name.clone())
                .collect();
            s.virtual_tables = virtual_tables.into_iter().map(|(name, _)| name).collect();
            s.shadow_current = true;
        });
    }

    /// The schema's version was just found to be the known shadow tables' version.
    /// Until a statement asks for a schema action, a rollback or the next batch, the
    /// next client statements need not look again.
    pub(crate) fn confirm_shadow(&self) {
        self.with(|s| s.shadow_current = s.shadow.is_some());
    }

    /// A new batch (a transaction) begins: the first client statement looks at the
    /// schema's version again before it trusts the known shadow tables. True when
    /// the batch before was rolled back after a client statement asked for a schema
    /// action ([`Guard::touch_schema`]): SQLite expired every prepared statement then,
    /// so the kept judgements are forgotten, and the caller must drop the
    /// connection's kept statements.
    pub(crate) fn new_batch(&self) -> bool {
        self.with(|s| {
            s.shadow_current = false;
            let rolled_back = std::mem::take(&mut s.schema_touched);
            if rolled_back {
                s.kept.clear();
            }
            rolled_back
        })
    }

    /// A client statement of this batch asked for a schema action. While the batch
    /// lasts, SQLite expires every prepared statement at each rollback, to a
    /// savepoint or whole (it resets its schema then), and would compile a kept one
    /// again as it runs, without the authorizer judging it: kept statements are
    /// dropped at each such rollback ([`Guard::schema_touched`]).
    pub(crate) fn touch_schema(&self) {
        self.with(|s| s.schema_touched = true);
    }

    /// Whether a client statement of this batch asked for a schema action.
    pub(crate) fn schema_touched(&self) -> bool {
        self.with(|s| s.schema_touched)
    }

    /// The batch committed: its schema changes are the schema now.
    pub(crate) fn batch_committed(&self) {
        self.with(|s| s.schema_touched = false);
    }

    /// Forgets the shadow tables (a rollback).
    pub(crate) fn forget_shadow(&self) {
        self.with(|s| {
            s.shadow = None;
            s.virtual_tables.clear();
            s.node_local_tables.clear();
            s.shadow_current = false;
        });
    }

    /// Why the last statement was refused, if it was.
    pub(crate) fn take_refusal(&self) -> Option<String> {
        self.with(|s| s.refusal.take())
    }

    fn with<T>(&self, f: impl FnOnce(&mut GuardState) -> T) -> T {
        let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }

    fn authorize(&self, ctx: AuthContext<'_>) -> Authorization {
        self.with(|state| {
            if !state.client_sql || !state.preparing {
                return Authorization::Allow;
            }
            state.judged = true;
            if let AuthAction::Insert { table_name } = ctx.action {
                if !state.wrote {
                    state.insert_target = Some(table_name.to_string());
                }
                if !state.inserted.iter().any(|t| t == table_name) {
                    state.inserted.push(table_name.to_string());
                }
            }
            state.altered |= matches!(ctx.action, AuthAction::AlterTable { .. });
            let rows_of = match ctx.action {
                AuthAction::Read { table_name, .. }
                | AuthAction::Insert { table_name }
                | AuthAction::Update { table_name, .. }
                | AuthAction::Delete { table_name } => Some(table_name),
                _ => None,
            };
            let of_virtual_table = rows_of.is_some_and(|table| {
                state
                    .virtual_tables
                    .iter()
                    .any(|v| v.eq_ignore_ascii_case(table))
            });
            let data_only = match rows_of {
                Some(_) => !of_virtual_table,
                None => matches!(
                    ctx.action,
                    AuthAction::Select | AuthAction::Function { .. } | AuthAction::Recursive
                ),
            };
            state.schema_action |= !data_only;
            let writes = matches!(
                ctx.action,
                AuthAction::Insert { .. } | AuthAction::Update { .. } | AuthAction::Delete { .. }
            );
            state.wrote |= writes;
            state.wrote_virtual_table |= writes && of_virtual_table;
            let in_temp = ctx
                .database_name
                .is_some_and(|db| db.eq_ignore_ascii_case("temp"));
            let shadow = state.shadow.as_ref().map(|(_, tables)| tables);
            // Not its deletes: dropping the table asks for one (SQLite refuses deleting
            // rows of such a table itself, alike everywhere).
            let node_local = rows_of
                .filter(|_| !matches!(ctx.action, AuthAction::Delete { .. }))
                .filter(|table| {
                    state
                        .node_local_tables
                        .iter()
                        .any(|t| t.eq_ignore_ascii_case(table))
                });
            let refused = temp_refusal(&ctx.action, in_temp)
                .or_else(|| refusal(&ctx.action))
                .or_else(|| {
                    (!state.statistics_upkeep)
                        .then(|| statistics_refusal(&ctx.action))
                        .flatten()
                })
                .or_else(|| node_local.map(node_local_refusal))
                .or_else(|| shadow.and_then(|tables| shadow_refusal(&ctx.action, tables)));
            match refused {
                None => Authorization::Allow,
                Some(reason) => {
                    state.refusal = Some(reason);
                    Authorization::Deny
                }
            }
        })
    }
}

/// Objects in the `temp` schema live on one node's connection only, however they are
/// named (`CREATE TEMP TABLE`, or `CREATE TABLE temp.x`, which SQLite reports as an
/// ordinary create in database `temp`): a temporary trigger on a replicated table
/// would make the nodes diverge after a restart.
fn temp_refusal(action: &AuthAction<'_>, in_temp: bool) -> Option<String> {
    use AuthAction::*;
    let temporary = matches!(
        action,
        CreateTempIndex { .. }
            | CreateTempTable { .. }
            | CreateTempTrigger { .. }
            | CreateTempView { .. }
    );
    let reads = matches!(action, Read { .. } | Select | Function { .. } | Recursive);
    // ALTER TABLE ... RENAME rewrites references in the temp schema too (there are
    // none: no temporary object can be made), with a nested update of its table;
    // client SQL cannot write that table itself.
    let rename = matches!(action, Update { table_name, .. }
        if table_name.eq_ignore_ascii_case("sqlite_temp_master")
            || table_name.eq_ignore_ascii_case("sqlite_temp_schema"));
    (temporary || (in_temp && !reads && !rename))
        .then(|| "temporary objects are not allowed: they would exist on one node only".into())
}

/// Rows of the query planner's statistics written by a statement other than ANALYZE,
/// DROP or ALTER (SQLite's own upkeep of them).
/// A node reads them when it loads its schema (at start, after ANALYZE or a schema
/// change), so rows a client wrote there would plan statements one way on a node that
/// restarted and another on one that did not, and `INSERT ... SELECT` without ORDER BY
/// gives rows other rowids by plan: the nodes' content would differ (found by a
/// review).
fn statistics_refusal(action: &AuthAction<'_>) -> Option<String> {
    use AuthAction::*;
    match *action {
        Insert { table_name } | Update { table_name, .. } | Delete { table_name }
            if is_statistics_table(table_name) =>
        {
            Some(format!(
                "{table_name} holds the query planner's statistics: it is written by \
                 ANALYZE only (rows written otherwise would make nodes plan statements \
                 differently)"
            ))
        }
        _ => None,
    }
}

/// SQLite's statistics tables (`sqlite_stat1`, and `sqlite_stat2` to `sqlite_stat4`
/// as other builds make them).
fn is_statistics_table(name: &str) -> bool {
    name.len() == 12
        && name[..11].eq_ignore_ascii_case("sqlite_stat")
        && matches!(name.as_bytes()[11], b'1'..=b'4')
}

fn internal(name: &str) -> bool {
    name.len() >= INTERNAL_PREFIX.len()
        && name[..INTERNAL_PREFIX.len()].eq_ignore_ascii_case(INTERNAL_PREFIX)
}

/// Virtual tables that describe this node's file or connection, not the replicated
/// content: page layout, free space, prepared statements. They differ between nodes.
const NODE_LOCAL_TABLES: &[&str] = &["dbstat", "sqlite_dbpage", "sqlite_stmt"];

/// The virtual table modules a client may create tables of: those whose rows come
/// from the replicated content alone (full-text and R-tree indexes, and their
/// vocabulary and tokenizer tables). Any other module built into SQLite describes
/// this node (`dbstat`: its file's pages, which differ between nodes: a write reading
/// such a table would apply differently on each; found by a review), and one added
/// later is refused until it is known not to.
const REPLICATED_MODULES: &[&str] = &[
    "fts3",
    "fts4",
    "fts4aux",
    "fts3tokenize",
    "fts5",
    "fts5vocab",
    "rtree",
    "rtree_i32",
];

/// Whether virtual tables of `module` hold only what the replicated content makes.
fn replicated_module(module: &str) -> bool {
    REPLICATED_MODULES
        .iter()
        .any(|m| module.eq_ignore_ascii_case(m))
}

/// Why virtual tables of `module` may not be created (or restored).
fn module_refusal(module: &str) -> String {
    format!(
        "virtual tables of module {module} are not allowed: it would describe this node, \
         not the replicated data; allowed modules: {}",
        REPLICATED_MODULES.join(", ")
    )
}

/// Why a write may not use `table`, a virtual table of a module that describes this
/// node.
fn node_local_refusal(table: &str) -> String {
    format!(
        "{table} is a virtual table that describes this node, not the replicated data \
         (its rows differ between nodes): it cannot be used in writes (read it with a \
         query, or drop it)"
    )
}

fn refusal(action: &AuthAction<'_>) -> Option<String> {
    use AuthAction::*;
    match *action {
        // A pragma's table-valued form (`pragma_data_version`, ...): it runs its PRAGMA
        // only while the statement runs, when the authorizer no longer judges (that is
        // for SQLite's own modules), so it is refused here, when it is read.
        Read { table_name, .. }
            if table_name.len() > 7 && table_name[..7].eq_ignore_ascii_case("pragma_") =>
        {
            Some(format!(
                "{table_name} is not allowed: PRAGMA is not allowed"
            ))
        }
        Read { table_name, .. }
            if NODE_LOCAL_TABLES
                .iter()
                .any(|t| table_name.eq_ignore_ascii_case(t)) =>
        {
            Some(format!(
                "{table_name} describes this node's database file, which differs between \
                 nodes: it cannot be used in writes (read it with a query)"
            ))
        }
        Transaction { .. } | Savepoint { .. } => Some(
            "transaction control is not allowed: each request already runs as one transaction"
                .into(),
        ),
        Attach { .. } | Detach { .. } => Some("ATTACH and DETACH are not allowed".into()),
        Pragma { pragma_name, .. } => Some(format!("PRAGMA {pragma_name} is not allowed")),
        Function { function_name } if function_name.eq_ignore_ascii_case("load_extension") => {
            Some("load_extension is not allowed".into())
        }
        // They read the applying connection's own counters, which depend on how
        // entries were batched and when the node last restarted: not replicated state.
        Function { function_name }
            if ["changes", "total_changes", "last_insert_rowid"]
                .iter()
                .any(|f| function_name.eq_ignore_ascii_case(f)) =>
        {
            Some(format!(
                "{function_name}() is not allowed in writes: its value differs between nodes"
            ))
        }
        // FTS3/FTS4's optimize() merges a full-text table's index from inside a SELECT:
        // a write of a virtual table the guard would not see (`wrote_virtual_table`),
        // so the transaction would not end after it, and a commit it made fail would
        // stop every node (found by a review). The same merge as an insert is seen.
        Function { function_name } if function_name.eq_ignore_ascii_case("optimize") => Some(
            "optimize() is not allowed in writes: merge a full-text table's index with \
             INSERT INTO t (t) VALUES ('optimize')"
                .into(),
        ),
        // AUTOINCREMENT's counters: at its largest value an insert fails with
        // SQLITE_FULL, which cannot be told apart from a full disk. Resetting a counter
        // (DELETE) is allowed.
        Insert { table_name } | Update { table_name, .. }
            if table_name.eq_ignore_ascii_case("sqlite_sequence") =>
        {
            Some("sqlite_sequence can only be cleared (DELETE), not set".into())
        }
        // Names of sqlraft's own objects: a user's view, index or trigger named so
        // could not be dropped, and a backup holding it would not restore.
        CreateView { view_name: name }
        | CreateIndex {
            index_name: name, ..
        }
        | CreateTrigger {
            trigger_name: name, ..
        } if internal(name) => Some(reserved_name(name)),
        CreateVtable { module_name, .. } if !replicated_module(module_name) => {
            Some(module_refusal(module_name))
        }
        // A virtual table's module names its shadow tables `<table>_<suffix>`: a table
        // named `_sqlraft` would make `_sqlraft_data` and the like.
        CreateVtable { table_name, .. }
            if internal(table_name) || internal(&format!("{table_name}_")) =>
        {
            Some(reserved_name(table_name))
        }
        CreateTable { table_name } if internal(table_name) => Some(format!(
            "table {table_name} belongs to sqlraft and cannot be changed"
        )),
        // sqlraft's own tables. A stray an older version let a rename make
        // (`_sqlraft_x`) is the user's: it can be renamed out or dropped.
        CreateIndex { table_name, .. }
        | CreateTrigger { table_name, .. }
        | Insert { table_name }
        | Update { table_name, .. }
        | Delete { table_name }
        | DropTable { table_name }
        | DropIndex { table_name, .. }
        | DropTrigger { table_name, .. }
        | AlterTable { table_name, .. }
            if own(table_name) =>
        {
            Some(format!(
                "table {table_name} belongs to sqlraft and cannot be changed"
            ))
        }
        _ => None,
    }
}

/// The shadow tables of the main schema, lowercase, each with its virtual table, from
/// SQLite's own account (`pragma_table_list`, type `shadow`: the modules' own
/// `xShadowName`), given as (name) rows; the virtual table is the name up to its last
/// `_`.
pub(crate) fn shadow_tables(names: &[String]) -> HashMap<String, String> {
    names
        .iter()
        .map(|name| {
            let vtab = name.rsplit_once('_').map_or(name.as_str(), |(v, _)| v);
            (name.to_ascii_lowercase(), vtab.to_string())
        })
        .collect()
}

/// Client SQL may read a virtual table's shadow tables but not change, drop, rename,
/// index or trigger on them: the module caches what they hold per connection, so a
/// change made behind its back is seen by a node whose connection reopened (a restart,
/// a snapshot) and not by one that kept its cache; the nodes would diverge.
fn shadow_refusal(action: &AuthAction<'_>, shadow: &HashMap<String, String>) -> Option<String> {
    use AuthAction::*;
    let table = match *action {
        Insert { table_name }
        | Update { table_name, .. }
        | Delete { table_name }
        | DropTable { table_name }
        | AlterTable { table_name, .. }
        | CreateIndex { table_name, .. }
        | CreateTrigger { table_name, .. } => table_name,
        _ => return None,
    };
    let vtab = shadow.get(&table.to_ascii_lowercase())?;
    Some(format!(
        "table {table} is where the virtual table {vtab} keeps its index: it can be read, \
         but only {vtab} itself can change it"
    ))
}

/// Why a schema object `sql` (a row of `sqlite_schema`, as a restore brings in) is
/// refused when it is a virtual table whose module is not one of
/// [`REPLICATED_MODULES`]: the authorizer refuses creating one, and a restore must not
/// bring one in.
pub(crate) fn node_local_virtual_table(sql: &str) -> Option<String> {
    if !(crate::lex::has_keywords_in_a_row(sql, "VIRTUAL", "TABLE")
        && crate::lex::starts_with_keyword(sql, "CREATE"))
    {
        return None;
    }
    let module = crate::lex::virtual_table_module(sql);
    (!module.as_deref().is_some_and(replicated_module))
        .then(|| module_refusal(module.as_deref().unwrap_or("(unknown)")))
}

/// Refusals that SQLite's authorizer cannot see.
///
/// * A ROLLBACK conflict resolution (`INSERT OR ROLLBACK`, `ON CONFLICT ROLLBACK`,
///   `RAISE(ROLLBACK, ...)`) ends the whole transaction that applies a batch of
///   entries, not just the request's savepoint.
/// * A foreign key `DEFERRABLE INITIALLY DEFERRED` is checked only when the whole
///   transaction commits: a violation then failed the commit of a batch of entries,
///   which stops the node, on every node, again at each restart (found by a review);
///   and whether it fails depends on which entries share the transaction.
pub(crate) fn static_refusal(sql: &str) -> Option<String> {
    if crate::lex::has_keyword(sql, "ROLLBACK") {
        return Some(
            "ROLLBACK is not allowed (also as a conflict resolution or in RAISE): \
             use ABORT or FAIL; a failing request is rolled back anyway"
                .to_string(),
        );
    }
    if crate::lex::has_keywords_in_a_row(sql, "INITIALLY", "DEFERRED") {
        return Some(
            "deferred foreign keys (INITIALLY DEFERRED) are not supported: a request \
             is applied on its own, so its foreign keys are checked as it runs; use \
             immediate ones (the default) and order the statements of a request"
                .to_string(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::shadow_tables;

    #[test]
    fn a_shadow_table_names_its_virtual_table() {
        let map = shadow_tables(&["Docs_data".to_string(), "my_rt_node".to_string()]);
        assert_eq!(map.get("docs_data").map(String::as_str), Some("Docs"));
        assert_eq!(map.get("my_rt_node").map(String::as_str), Some("my_rt"));
    }
}
