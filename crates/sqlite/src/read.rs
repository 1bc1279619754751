//! The read side: a pool of read-only sqlx connections to the state database.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Column, Executor, Row, SqlSafeStr, Statement as _, TypeInfo, ValueRef};

use crate::error::{Result, SqliteError};
use crate::types::{Params, Rows, Statement, Value};

/// Limits of a [`ReadPool`].
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Connections in the pool.
    pub max_connections: u32,
    /// Rows one read may return; more is an error rather than unbounded memory.
    pub max_rows: usize,
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
            acquire_timeout_ms: 5_000,
            max_query_ms: 30_000,
        }
    }
}

/// Read-only connections to the state database. Connections are opened with
/// `SQLITE_OPEN_READONLY`, so no statement sent through them can change the database.
#[derive(Clone)]
pub struct ReadPool {
    pool: SqlitePool,
    max_rows: usize,
    max_query: Duration,
}

impl ReadPool {
    /// Opens a pool on the state database at `path`, which must exist (the
    /// [`crate::StateMachine`] creates it).
    pub async fn open(path: &Path, options: &ReadOptions) -> Result<Self> {
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .create_if_missing(false)
            .pragma("foreign_keys", "OFF")
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .min_connections(1)
            .acquire_timeout(Duration::from_millis(options.acquire_timeout_ms))
            .connect_with(connect)
            .await
            .map_err(|source| SqliteError::Pool {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(ReadPool {
            pool,
            max_rows: options.max_rows,
            max_query: Duration::from_millis(options.max_query_ms),
        })
    }

    /// The sqlx pool itself, for typed queries of an embedding service.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Runs one read statement.
    pub async fn query(&self, statement: &Statement) -> Result<Rows> {
        if crate::lex::has_second_statement(&statement.sql) {
            return Err(SqliteError::Query(
                "one statement per query: split the SQL into several statements".into(),
            ));
        }
        let (sql, values) = positional(statement)?;
        let conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| SqliteError::PoolUnavailable(e.to_string()))?;
        // SQLite runs the statement on sqlx's worker thread whether or not anyone still
        // waits for it: interrupt it at the deadline, or when this future is dropped
        // (the client went away).
        let mut read = ActiveRead {
            conn,
            cancelled: Arc::new(AtomicBool::new(false)),
            finished: false,
        };
        let (cancelled, deadline) = (Arc::clone(&read.cancelled), Instant::now() + self.max_query);
        read.conn
            .lock_handle()
            .await
            .map_err(|e| SqliteError::PoolUnavailable(e.to_string()))?
            .set_progress_handler(1000, move || {
                !cancelled.load(Ordering::Relaxed) && Instant::now() < deadline
            });
        let outcome = self.run(&mut read.conn, sql, values).await;
        read.finish().await;
        outcome.map_err(|e| match e {
            SqliteError::Query(m) if m.contains("interrupted") => SqliteError::Query(format!(
                "read stopped after {} ms: it runs too long",
                self.max_query.as_millis()
            )),
            other => other,
        })
    }

    async fn run(
        &self,
        conn: &mut sqlx::SqliteConnection,
        sql: String,
        values: Vec<Value>,
    ) -> Result<Rows> {
        // Running client SQL is the point of this API; the connection is read-only.
        let sql = sqlx::AssertSqlSafe(sql).into_sql_str();
        let prepared = conn.prepare(sql).await.map_err(read_error)?;
        let expected = match prepared.parameters() {
            Some(sqlx::Either::Left(types)) => types.len(),
            Some(sqlx::Either::Right(n)) => n,
            None => 0,
        };
        if expected != values.len() {
            return Err(SqliteError::Query(format!(
                "statement takes {expected} parameters, {} given",
                values.len()
            )));
        }
        let columns: Vec<String> = prepared
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let types = prepared
            .columns()
            .iter()
            .map(|c| declared_type(c.type_info().name()))
            .collect();

        let mut query = prepared.query();
        for value in values {
            query = match value {
                Value::Null => query.bind(None::<i64>),
                Value::Integer(i) => query.bind(i),
                Value::Real(r) => query.bind(r),
                Value::Text(t) => query.bind(t),
                Value::Blob(b) => query.bind(b),
            };
        }
        let mut stream = query.fetch(conn);
        let mut rows = Vec::new();
        while let Some(row) = stream.try_next().await.map_err(read_error)? {
            if rows.len() == self.max_rows {
                return Err(SqliteError::TooManyRows {
                    limit: self.max_rows,
                });
            }
            rows.push(row_values(&row)?);
        }
        Ok(Rows {
            columns,
            types,
            values: rows,
        })
    }
}

/// A pooled connection running one read. If the read's future is dropped before it
/// finishes, the running statement is interrupted and the connection is closed rather
/// than returned to the pool with this read's progress handler still set.
struct ActiveRead {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    cancelled: Arc<AtomicBool>,
    finished: bool,
}

impl ActiveRead {
    async fn finish(&mut self) {
        self.finished = true;
        let removed = match self.conn.lock_handle().await {
            Ok(mut handle) => {
                handle.remove_progress_handler();
                true
            }
            Err(_) => false,
        };
        if !removed {
            self.conn.close_on_drop();
        }
    }
}

impl Drop for ActiveRead {
    fn drop(&mut self) {
        if !self.finished {
            self.cancelled.store(true, Ordering::Relaxed);
            self.conn.close_on_drop();
        }
    }
}

fn declared_type(name: &str) -> String {
    if name.eq_ignore_ascii_case("NULL") {
        String::new()
    } else {
        name.to_ascii_lowercase()
    }
}

fn row_values(row: &SqliteRow) -> Result<Vec<Value>> {
    let decode_err = |e: sqlx::Error| SqliteError::Query(format!("cannot decode value: {e}"));
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i).map_err(decode_err)?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let kind = raw.type_info().name().to_string();
            Ok(match kind.as_str() {
                "INTEGER" => Value::Integer(row.try_get_unchecked(i).map_err(decode_err)?),
                "REAL" => Value::Real(row.try_get_unchecked(i).map_err(decode_err)?),
                "BLOB" => Value::Blob(row.try_get_unchecked(i).map_err(decode_err)?),
                _ => Value::Text(row.try_get_unchecked(i).map_err(decode_err)?),
            })
        })
        .collect()
}

fn read_error(e: sqlx::Error) -> SqliteError {
    if let sqlx::Error::Database(db) = &e {
        // SQLITE_READONLY (8) and its extended codes: the statement tried to write.
        let readonly = db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| c & 0xff == 8);
        if readonly {
            return SqliteError::WriteInRead(db.message().to_string());
        }
        return SqliteError::Query(db.message().to_string());
    }
    SqliteError::Query(e.to_string())
}

/// sqlx binds SQLite parameters by position only; named parameters are rewritten to
/// `?N` here, outside string literals, quoted identifiers and comments.
fn positional(statement: &Statement) -> Result<(String, Vec<Value>)> {
    let named = match &statement.params {
        Params::None => return Ok((statement.sql.clone(), Vec::new())),
        Params::Positional(values) => return Ok((statement.sql.clone(), values.clone())),
        Params::Named(named) => named,
    };
    let sql = &statement.sql;
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut used: Vec<Option<usize>> = vec![None; named.len()];
    let mut values = Vec::new();
    let mut copied = 0;
    for (span_start, span_end) in crate::lex::code_spans(sql) {
        let mut i = span_start;
        while i < span_end {
            if !matches!(bytes[i], b':' | b'@' | b'$') {
                i += 1;
                continue;
            }
            let start = i + 1;
            let end = start
                + bytes[start..span_end]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
            if end == start {
                i += 1;
                continue;
            }
            let (name, full) = (&sql[start..end], &sql[i..end]);
            let slot = named
                .iter()
                .position(|(n, _)| n == full || n == name)
                .ok_or_else(|| SqliteError::Query(format!("no value for parameter {full}")))?;
            let position = *used[slot].get_or_insert_with(|| {
                values.push(named[slot].1.clone());
                values.len()
            });
            out.push_str(&sql[copied..i]);
            out.push_str(&format!("?{position}"));
            copied = end;
            i = end;
        }
    }
    out.push_str(&sql[copied..]);
    if let Some(slot) = used.iter().position(Option::is_none) {
        return Err(SqliteError::Query(format!(
            "no parameter named {} in the statement",
            named[slot].0
        )));
    }
    Ok((out, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(sql: &str, params: &[(&str, i64)]) -> Result<(String, Vec<Value>)> {
        positional(&Statement {
            sql: sql.into(),
            params: Params::Named(
                params
                    .iter()
                    .map(|(n, v)| (n.to_string(), Value::Integer(*v)))
                    .collect(),
            ),
        })
    }

    #[test]
    fn named_parameters_become_positional() {
        let (sql, values) = named(
            "SELECT * FROM t WHERE a = :a AND b = @b OR a = :a AND c = ':a' -- :a\n",
            &[("b", 2), (":a", 1)],
        )
        .expect("rewrite");
        assert_eq!(
            sql,
            "SELECT * FROM t WHERE a = ?1 AND b = ?2 OR a = ?1 AND c = ':a' -- :a\n"
        );
        assert_eq!(values, vec![Value::Integer(1), Value::Integer(2)]);
    }

    #[test]
    fn missing_and_unused_names_are_errors() {
        assert!(named("SELECT :x", &[]).is_err());
        assert!(named("SELECT :x", &[("x", 1), ("y", 2)]).is_err());
        assert!(named("SELECT [:x], \":y\", 'it''s :z'", &[]).is_ok());
    }
}
