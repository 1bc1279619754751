//! Requests and results as the library's callers see them.

use serde::{Deserialize, Serialize};

/// Largest string, blob or row a write may store (SQLite's `SQLITE_LIMIT_LENGTH` on the
/// apply connection). A value of this size reads back within a read's default byte
/// budget unless its JSON form is much larger than itself (text made mostly of
/// characters JSON escapes).
pub const MAX_VALUE_BYTES: usize = 16 << 20;

/// One SQLite value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Blob(v.to_vec())
    }
}
impl<const N: usize> From<[u8; N]> for Value {
    fn from(v: [u8; N]) -> Self {
        Value::Blob(v.to_vec())
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<bool> for Value {
    /// SQLite has no boolean type: `true` is 1, `false` is 0.
    fn from(v: bool) -> Self {
        Value::Integer(i64::from(v))
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Real(f64::from(v))
    }
}
macro_rules! integer_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::Integer(i64::from(v))
            }
        }
    )*};
}
integer_from!(i8, i16, i32, u8, u16, u32);

impl TryFrom<u64> for Value {
    type Error = std::num::TryFromIntError;
    /// SQLite integers are signed 64-bit: values above `i64::MAX` do not fit.
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        i64::try_from(v).map(Value::Integer)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Parameters of a statement: positional (`?`, `?NNN`) or named (`:name`, `@name`,
/// `$name`; a name given without its prefix matches any of them).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub enum Params {
    /// No parameters.
    #[default]
    None,
    /// Bound to `?1`, `?2`, ... in order.
    Positional(Vec<Value>),
    /// Bound by name.
    Named(Vec<(String, Value)>),
}

/// One SQL statement with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// Exactly one SQL statement.
    pub sql: String,
    /// Its parameters.
    pub params: Params,
}

impl Statement {
    /// A statement without parameters.
    pub fn new(sql: impl Into<String>) -> Self {
        Statement {
            sql: sql.into(),
            params: Params::None,
        }
    }

    /// A statement with positional parameters.
    pub fn with_params(sql: impl Into<String>, params: Vec<Value>) -> Self {
        Statement {
            sql: sql.into(),
            params: Params::Positional(params),
        }
    }

    /// A statement with named parameters (`:name`, `@name`, `$name`; a name given
    /// without its prefix matches any of them).
    pub fn with_named(sql: impl Into<String>, params: Vec<(String, Value)>) -> Self {
        Statement {
            sql: sql.into(),
            params: Params::Named(params),
        }
    }
}

impl From<&str> for Statement {
    fn from(sql: &str) -> Self {
        Statement::new(sql)
    }
}

/// A batch of statements applied as one raft entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteRequest {
    /// Run in order.
    pub statements: Vec<Statement>,
    /// `true`: the first failing statement rolls back the whole request and the rest
    /// are not run. `false`: a failing statement is rolled back alone and the rest run.
    pub transaction: bool,
    /// Makes the write idempotent: a request carrying an id that the replicated state
    /// has seen within the idempotency window is not applied again; it gets the first
    /// one's results and raft index. At most [`MAX_REQUEST_ID_BYTES`] bytes.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Requests batched into this one (a queue's batch: rqlite's `?queue`), by their
    /// number of statements, in order; empty for one request. Each is its own request
    /// for the step budget ([`crate::MAX_REQUEST_CALLS`]). Only without `transaction`;
    /// the numbers add up to the statements'.
    #[serde(default)]
    pub parts: Vec<u32>,
}

/// Longest request id ([`WriteRequest::request_id`]).
pub const MAX_REQUEST_ID_BYTES: usize = 256;

impl WriteRequest {
    /// A request run as one transaction.
    pub fn transaction(statements: Vec<Statement>) -> Self {
        WriteRequest {
            statements,
            transaction: true,
            request_id: None,
            parts: Vec::new(),
        }
    }
}

/// The outcome of one statement of a write. The same on every node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StatementResult {
    /// Rows changed by the statement.
    pub rows_affected: u64,
    /// Rowid of the last inserted row on the connection.
    pub last_insert_id: i64,
    /// Set when the statement failed; it was rolled back.
    pub error: Option<String>,
    /// The rows of a `RETURNING` clause; `None` for a statement without one.
    pub rows: Option<Rows>,
    /// `RETURNING` rows left out of `rows`: they went over what the rows of one
    /// request may cost ([`crate::MAX_RETURNING_BYTES`]). The statement wrote them
    /// all.
    pub rows_omitted: u64,
}

/// Rows returned by a read.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Rows {
    /// Column names.
    pub columns: Vec<String>,
    /// Declared column types, lower case; for an expression (no declared type), the
    /// type of its value in the first row, as rqlite does (`integer`, `real`, `text`,
    /// `blob`), and empty when that is NULL or there are no rows.
    pub types: Vec<String>,
    /// The rows, each with one value per column.
    pub values: Vec<Vec<Value>>,
}

impl Rows {
    /// Fills the type of each column without a declared type from its value in the
    /// first row (rqlite's rule: clients decode blobs by it).
    pub(crate) fn fill_expression_types(&mut self) {
        let Some(first) = self.values.first() else {
            return;
        };
        for (ty, value) in self.types.iter_mut().zip(first) {
            if ty.is_empty() {
                *ty = match value {
                    Value::Null => "",
                    Value::Integer(_) => "integer",
                    Value::Real(_) => "real",
                    Value::Text(_) => "text",
                    Value::Blob(_) => "blob",
                }
                .to_string();
            }
        }
    }

    /// What the rows cost held in memory and written out as JSON in `shape`, as the
    /// read byte budget ([`crate::ReadOptions::max_result_bytes`]) counts it: the
    /// values, base64 (or arrays) for blobs, escapes for text, and each row's column
    /// names (as `associative` writes them).
    pub fn json_cost(&self, shape: JsonShape) -> usize {
        let names = names_cost(&self.columns);
        let header: usize = names + self.types.iter().map(|t| t.len() + 4).sum::<usize>();
        header
            + self
                .values
                .iter()
                .map(|row| ROW_COST + names + row.iter().map(|v| v.json_cost(shape)).sum::<usize>())
                .sum::<usize>()
    }
}

/// How a result is written, for what it costs.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonShape {
    /// Blobs as arrays of byte values (up to 4 bytes of JSON a byte).
    pub blob_array: bool,
    /// Indented (a line of its own for each value).
    pub pretty: bool,
}

/// What one row costs beyond its values.
pub(crate) const ROW_COST: usize = 24;

/// What a row's column names cost (once per row when written as objects).
pub(crate) fn names_cost(columns: &[String]) -> usize {
    columns.iter().map(|c| text_cost(c.as_bytes())).sum()
}

impl Value {
    /// What the value costs held in memory (a `Value` and what it owns) and as JSON
    /// text in `shape` (escapes, base64 or arrays, indentation).
    pub fn json_cost(&self, shape: JsonShape) -> usize {
        value_ref_cost(self.as_value_ref(), shape)
    }

    /// A value SQLite holds, owned (text that is not UTF-8 is repaired).
    pub(crate) fn from_ref(value: rusqlite::types::ValueRef<'_>) -> Value {
        use rusqlite::types::ValueRef;
        match value {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(r) => Value::Real(r),
            ValueRef::Text(t) => Value::Text(
                String::from_utf8(t.to_vec())
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }

    /// The value as SQLite's borrowed form.
    pub(crate) fn as_value_ref(&self) -> rusqlite::types::ValueRef<'_> {
        use rusqlite::types::ValueRef;
        match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }
}

/// [`Value::json_cost`] of the value `value` is or becomes (reads count it before
/// they build it).
pub(crate) fn value_ref_cost(value: rusqlite::types::ValueRef<'_>, shape: JsonShape) -> usize {
    use rusqlite::types::ValueRef;
    const HELD: usize = std::mem::size_of::<Value>();
    let indent = if shape.pretty { 16 } else { 0 };
    HELD + indent
        + match value {
            ValueRef::Null | ValueRef::Integer(_) | ValueRef::Real(_) => 24,
            ValueRef::Text(t) => text_cost(t),
            ValueRef::Blob(b) if shape.blob_array => b.len() * (4 + indent) + 2,
            ValueRef::Blob(b) => blob_cost(b),
        }
}

fn text_cost(t: &[u8]) -> usize {
    let escaped = t
        .iter()
        .filter(|b| **b < 0x20 || **b == b'"' || **b == b'\\')
        .count();
    2 * t.len() + 5 * escaped + 2
}

fn blob_cost(b: &[u8]) -> usize {
    b.len() + b.len().div_ceil(3) * 4 + 2
}

/// A member of the cluster as kept in the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Raft's numeric id.
    pub raft_id: u64,
    /// The service id (UUID text).
    pub service_id: String,
    /// Address other nodes reach its raft transport at.
    pub raft_addr: String,
    /// Address its HTTP API answers at; empty when it has none.
    pub http_addr: String,
}
