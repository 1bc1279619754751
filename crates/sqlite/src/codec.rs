//! Conversions between the library's types and their wire form in `sqlraft-proto`.

use sqlraft_proto::v1 as pb;

use crate::types::{Member, Params, Rows, Statement, StatementResult, Value, WriteRequest};

impl From<Value> for pb::Value {
    fn from(v: Value) -> Self {
        use pb::value::Kind;
        let kind = match v {
            Value::Null => None,
            Value::Integer(i) => Some(Kind::Integer(i)),
            Value::Real(r) => Some(Kind::Real(r)),
            Value::Text(t) => Some(Kind::Text(t)),
            Value::Blob(b) => Some(Kind::Blob(b)),
        };
        pb::Value { kind }
    }
}

impl From<pb::Value> for Value {
    fn from(v: pb::Value) -> Self {
        use pb::value::Kind;
        match v.kind {
            None => Value::Null,
            Some(Kind::Integer(i)) => Value::Integer(i),
            Some(Kind::Real(r)) => Value::Real(r),
            Some(Kind::Text(t)) => Value::Text(t),
            Some(Kind::Blob(b)) => Value::Blob(b),
        }
    }
}

impl From<Statement> for pb::Statement {
    fn from(s: Statement) -> Self {
        let (params, named_params) = match s.params {
            Params::None => (Vec::new(), Vec::new()),
            Params::Positional(values) => {
                (values.into_iter().map(Into::into).collect(), Vec::new())
            }
            Params::Named(named) => (
                Vec::new(),
                named
                    .into_iter()
                    .map(|(name, value)| pb::NamedValue {
                        name,
                        value: Some(value.into()),
                    })
                    .collect(),
            ),
        };
        pb::Statement {
            sql: s.sql,
            params,
            named_params,
        }
    }
}

impl From<pb::Statement> for Statement {
    fn from(s: pb::Statement) -> Self {
        let params = if !s.named_params.is_empty() {
            Params::Named(
                s.named_params
                    .into_iter()
                    .map(|n| (n.name, n.value.map_or(Value::Null, Into::into)))
                    .collect(),
            )
        } else if !s.params.is_empty() {
            Params::Positional(s.params.into_iter().map(Into::into).collect())
        } else {
            Params::None
        };
        Statement { sql: s.sql, params }
    }
}

impl From<WriteRequest> for pb::WriteRequest {
    fn from(r: WriteRequest) -> Self {
        pb::WriteRequest {
            statements: r.statements.into_iter().map(Into::into).collect(),
            transaction: r.transaction,
            at_unix_ms: 0,
            request_id: r.request_id.unwrap_or_default(),
            parts: r.parts,
        }
    }
}

impl From<pb::WriteRequest> for WriteRequest {
    fn from(r: pb::WriteRequest) -> Self {
        WriteRequest {
            statements: r.statements.into_iter().map(Into::into).collect(),
            transaction: r.transaction,
            request_id: (!r.request_id.is_empty()).then_some(r.request_id),
            parts: r.parts,
        }
    }
}

impl From<&StatementResult> for pb::StatementResult {
    fn from(r: &StatementResult) -> Self {
        pb::StatementResult {
            error: r.error.clone().unwrap_or_default(),
            rows_affected: r.rows_affected,
            last_insert_id: r.last_insert_id,
            rows: r.rows.as_ref().map(|rows| pb::Rows {
                columns: rows.columns.clone(),
                types: rows.types.clone(),
                values: rows
                    .values
                    .iter()
                    .map(|row| pb::Row {
                        values: row.iter().cloned().map(Into::into).collect(),
                    })
                    .collect(),
            }),
            rows_omitted: r.rows_omitted,
        }
    }
}

impl From<pb::StatementResult> for StatementResult {
    fn from(r: pb::StatementResult) -> Self {
        StatementResult {
            error: (!r.error.is_empty()).then_some(r.error),
            rows_affected: r.rows_affected,
            last_insert_id: r.last_insert_id,
            rows: r.rows.map(|rows| Rows {
                columns: rows.columns,
                types: rows.types,
                values: rows
                    .values
                    .into_iter()
                    .map(|row| row.values.into_iter().map(Into::into).collect())
                    .collect(),
            }),
            rows_omitted: r.rows_omitted,
        }
    }
}

impl From<&Member> for pb::Member {
    fn from(m: &Member) -> Self {
        pb::Member {
            raft_id: m.raft_id,
            service_id: m.service_id.clone(),
            raft_addr: m.raft_addr.clone(),
            http_addr: m.http_addr.clone(),
        }
    }
}

impl From<pb::Member> for Member {
    fn from(m: pb::Member) -> Self {
        Member {
            raft_id: m.raft_id,
            service_id: m.service_id,
            raft_addr: m.raft_addr,
            http_addr: m.http_addr,
        }
    }
}
