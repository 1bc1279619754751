//! The `results` of the data API, serialized straight from the rows a read returned:
//! no JSON tree is built in between, so a read's answer costs about its own size once
//! more, not several times over.

use base64::Engine;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use sqlraft::{Rows, StatementResult, Value};

use crate::value_form::{Form, Written, convert};

/// How a read's rows are shaped (rqlite's `associative` and `blob_array`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    /// Rows as objects keyed by column name, types as an object.
    pub associative: bool,
    /// Blobs as arrays of byte values instead of base64 text.
    pub blob_array: bool,
}

/// One element of `results`.
#[derive(Debug)]
pub enum ResultItem {
    /// A write statement's outcome, with its `RETURNING` rows if it has any.
    Write {
        /// What the statement did.
        result: StatementResult,
        /// How to write its rows.
        shape: Shape,
        /// Seconds the statement took on the leader (`timings`).
        time: Option<f64>,
    },
    /// A read's rows, with the time it took when asked for.
    Rows {
        /// What the read returned.
        rows: Rows,
        /// How to write them.
        shape: Shape,
        /// Seconds the read took (`timings`).
        time: Option<f64>,
    },
    /// A statement that failed.
    Error(String),
}

impl Serialize for ResultItem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ResultItem::Error(error)
            | ResultItem::Write {
                result:
                    StatementResult {
                        error: Some(error), ..
                    },
                ..
            } => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("error", error)?;
                map.end()
            }
            ResultItem::Write {
                result,
                shape,
                time,
            } => {
                let mut map = s.serialize_map(None)?;
                // A statement with RETURNING gives its rows instead, as in rqlite.
                if let Some(rows) = &result.rows {
                    serialize_rows(&mut map, rows, *shape)?;
                } else {
                    map.serialize_entry("last_insert_id", &result.last_insert_id)?;
                    map.serialize_entry("rows_affected", &result.rows_affected)?;
                }
                // sqlraft's: RETURNING rows over the request's budget, left out.
                if result.rows_omitted > 0 {
                    map.serialize_entry("rows_omitted", &result.rows_omitted)?;
                }
                if let Some(time) = time {
                    map.serialize_entry("time", time)?;
                }
                map.end()
            }
            ResultItem::Rows { rows, shape, time } => {
                let mut map = s.serialize_map(None)?;
                serialize_rows(&mut map, rows, *shape)?;
                if let Some(time) = time {
                    map.serialize_entry("time", time)?;
                }
                map.end()
            }
        }
    }
}

/// `columns`, `types` and `values`; or, `associative`, `types` by column and `rows`.
fn serialize_rows<M: SerializeMap>(map: &mut M, rows: &Rows, shape: Shape) -> Result<(), M::Error> {
    if shape.associative {
        map.serialize_entry("types", &Columns(&rows.columns, &rows.types))?;
        map.serialize_entry("rows", &RowObjects(rows, shape))
    } else {
        map.serialize_entry("columns", &rows.columns)?;
        map.serialize_entry("types", &rows.types)?;
        // rqlite leaves `values` out when there are no rows; clients tell an empty
        // result by it (rqlite-js).
        if rows.values.is_empty() {
            return Ok(());
        }
        map.serialize_entry("values", &RowArrays(rows, shape))
    }
}

/// `{"column": "type", ...}`.
struct Columns<'a>(&'a [String], &'a [String]);

impl Serialize for Columns<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().zip(self.1))
    }
}

/// How each column's values are written ([`crate::value_form`]).
fn forms(rows: &Rows) -> Vec<Form> {
    rows.types.iter().map(|t| Form::of(t)).collect()
}

/// `[[v, ...], ...]`.
struct RowArrays<'a>(&'a Rows, Shape);

impl Serialize for RowArrays<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let forms = forms(self.0);
        let mut seq = s.serialize_seq(Some(self.0.values.len()))?;
        for row in &self.0.values {
            seq.serialize_element(&Row(row, &forms, self.1))?;
        }
        seq.end()
    }
}

struct Row<'a>(&'a [Value], &'a [Form], Shape);

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let blob_array = self.2.blob_array;
        s.collect_seq(
            self.0
                .iter()
                .zip(self.1)
                .map(|(v, form)| Cell(v, *form, blob_array)),
        )
    }
}

/// `[{"column": v, ...}, ...]`.
struct RowObjects<'a>(&'a Rows, Shape);

impl Serialize for RowObjects<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let rows = self.0;
        let forms = forms(rows);
        let mut seq = s.serialize_seq(Some(rows.values.len()))?;
        for row in &rows.values {
            seq.serialize_element(&RowObject(&rows.columns, row, &forms, self.1.blob_array))?;
        }
        seq.end()
    }
}

struct RowObject<'a>(&'a [String], &'a [Value], &'a [Form], bool);

impl Serialize for RowObject<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let blob_array = self.3;
        s.collect_map(
            self.0.iter().zip(
                self.1
                    .iter()
                    .zip(self.2)
                    .map(|(v, form)| Cell(v, *form, blob_array)),
            ),
        )
    }
}

/// One value as rqlite writes it: blobs as base64 text (or byte arrays), non-finite
/// reals as null, and some values as their column's declared type says
/// ([`crate::value_form`]).
struct Cell<'a>(&'a Value, Form, bool);

impl Serialize for Cell<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match convert(self.0, self.1) {
            Some(Written::Bool(b)) => return s.serialize_bool(b),
            Some(Written::Text(t)) => return s.serialize_str(&t),
            None => {}
        }
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Integer(i) => s.serialize_i64(*i),
            Value::Real(r) if r.is_finite() => s.serialize_f64(*r),
            Value::Real(_) => s.serialize_unit(),
            Value::Text(t) => s.serialize_str(t),
            Value::Blob(b) if self.2 => s.collect_seq(b.iter()),
            Value::Blob(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
        }
    }
}
