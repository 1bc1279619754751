//! rqlite's request shapes: a JSON array whose items are a SQL string, `[sql, p1, p2,
//! ...]` (positional parameters) or `[sql, {"name": value}]` (named parameters); and
//! the mapping between JSON and SQLite values.

use serde_json::Value as Json;
use sqlraft::{Params, Statement, Value};

/// Why a request body was refused (answered with 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// JSON, but not an array of statements.
    #[error("{0}")]
    Shape(String),
    /// More statements than allowed.
    #[error("{count} statements in one request; at most {max}")]
    TooMany {
        /// Statements sent.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// Parses a request body into statements.
pub fn parse_body(body: &[u8], max_statements: usize) -> Result<Vec<Statement>, BodyError> {
    let json: Json = serde_json::from_slice(body).map_err(|e| BodyError::Json(e.to_string()))?;
    let Json::Array(items) = json else {
        return Err(BodyError::Shape(
            "the body must be a JSON array of statements, e.g. [\"SELECT 1\"]".into(),
        ));
    };
    if items.len() > max_statements {
        return Err(BodyError::TooMany {
            count: items.len(),
            max: max_statements,
        });
    }
    if let Some(integer) = wide_integer(body) {
        return Err(BodyError::Shape(format!(
            "integer {integer} does not fit in 64 signed bits"
        )));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            statement(item).map_err(|m| BodyError::Shape(format!("statement {i}: {m}")))
        })
        .collect()
}

/// The first integer written in a JSON text (no fraction, no exponent) that does not
/// fit in 64 signed bits. serde_json reads one beyond 64 unsigned bits as a real, which
/// would bind a rounded number where the client wrote an integer; only the text tells
/// it from a real written as one (`1e20`). `body` is JSON already parsed.
fn wide_integer(body: &[u8]) -> Option<&str> {
    let mut i = 0;
    let mut in_string = false;
    while let Some(&b) = body.get(i) {
        i += 1;
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'-' | b'0'..=b'9' => {
                let start = i - 1;
                while body
                    .get(i)
                    .is_some_and(|c| matches!(c, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
                {
                    i += 1;
                }
                let token = &body[start..i];
                if !token.iter().any(|c| matches!(c, b'.' | b'e' | b'E')) {
                    let text = std::str::from_utf8(token).ok()?;
                    if text.parse::<i64>().is_err() {
                        return Some(text);
                    }
                }
            }
            _ => {}
        }
    }
    None
}

fn statement(item: Json) -> Result<Statement, String> {
    match item {
        Json::String(sql) => Ok(Statement::new(sql)),
        Json::Array(parts) => {
            let mut parts = parts.into_iter();
            let Some(Json::String(sql)) = parts.next() else {
                return Err(
                    "a parameterized statement is [\"SQL\", params...] with the SQL first".into(),
                );
            };
            let rest: Vec<Json> = parts.collect();
            let params = match rest.as_slice() {
                [] => Params::None,
                [Json::Object(named)] => Params::Named(
                    named
                        .iter()
                        .map(|(name, v)| Ok((name.clone(), value(v)?)))
                        .collect::<Result<_, String>>()?,
                ),
                _ => Params::Positional(rest.iter().map(value).collect::<Result<_, String>>()?),
            };
            Ok(Statement { sql, params })
        }
        other => Err(format!(
            "expected a SQL string or an array, got {}",
            kind(&other)
        )),
    }
}

/// A string `x'<hex>'` (or `X'...'`) with an even number of hex digits: a BLOB
/// parameter, as rqlite binds it (its clients send blobs so).
fn hex_blob(text: &str) -> Option<Vec<u8>> {
    let hex = text
        .strip_prefix("x'")
        .or_else(|| text.strip_prefix("X'"))?
        .strip_suffix('\'')?;
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// JSON to SQLite: integers stay integers, other numbers are reals, `true`/`false` are
/// 1/0, an array of bytes (0..=255) or a string `x'<hex>'` is a BLOB.
pub fn value(json: &Json) -> Result<Value, String> {
    match json {
        Json::Null => Ok(Value::Null),
        Json::Bool(b) => Ok(Value::Integer(i64::from(*b))),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Value::Integer(i))
            } else if n.is_u64() {
                Err(format!("integer {n} does not fit in 64 signed bits"))
            } else {
                n.as_f64()
                    .map(Value::Real)
                    .ok_or_else(|| format!("number {n} is not representable"))
            }
        }
        Json::String(s) => Ok(hex_blob(s).map_or_else(|| Value::Text(s.clone()), Value::Blob)),
        Json::Array(items) => items
            .iter()
            .map(|b| {
                b.as_u64()
                    .and_then(|b| u8::try_from(b).ok())
                    .ok_or_else(|| {
                        "an array parameter is a BLOB and holds bytes 0..=255".to_string()
                    })
            })
            .collect::<Result<Vec<u8>, String>>()
            .map(Value::Blob),
        Json::Object(_) => {
            Err("an object is only allowed as the single named-parameter set".into())
        }
    }
}

fn kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Whether `/db/request` sends a statement to the read path: its first keyword (after
/// whitespace, comments and opening parentheses) is `SELECT`, `EXPLAIN`, `PRAGMA` or
/// `VALUES`, or `WITH` when the statement after its common table expressions is a
/// `SELECT` or `VALUES` (`WITH … INSERT` is a write: classed as a read, it split a
/// `?transaction` request's writes into several entries; found by a review). A
/// statement classified as a read that turns out to write is refused by the read-only
/// connection and re-sent as a write.
pub fn is_read(sql: &str) -> bool {
    const READS: [&str; 4] = ["SELECT", "EXPLAIN", "PRAGMA", "VALUES"];
    let word = first_keyword(sql);
    if word.eq_ignore_ascii_case("WITH") {
        return matches!(
            sqlraft::sql_text::with_statement_keyword(sql),
            Some("SELECT" | "VALUES")
        );
    }
    READS.iter().any(|r| r.eq_ignore_ascii_case(word))
}

fn first_keyword(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(after) = trimmed.strip_prefix("--") {
            rest = after.find('\n').map_or("", |p| &after[p + 1..]);
        } else if let Some(after) = trimmed.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |p| &after[p + 2..]);
        } else {
            let end = trimmed
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(trimmed.len());
            return &trimmed[..end];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_recognised_after_comments_and_parentheses() {
        assert!(is_read("select 1"));
        assert!(is_read("  -- c\n /* x */ (SELECT 1)"));
        assert!(is_read("WITH t AS (SELECT 1) SELECT * FROM t"));
        assert!(is_read(
            "with recursive c(n) as (select 1 union all select n + 1 from c where n < 3) \
             /* insert */ select n from c -- delete"
        ));
        assert!(is_read(
            "WITH t AS MATERIALIZED (SELECT 'insert') VALUES (1)"
        ));
        assert!(is_read("WITH replace AS (SELECT 1) SELECT * FROM replace"));
        assert!(is_read(
            "WITH \"insert\" AS (SELECT 1) SELECT * FROM \"insert\""
        ));
        assert!(!is_read(
            "WITH x AS (SELECT 1 AS v) INSERT INTO t SELECT v FROM x"
        ));
        assert!(!is_read(
            "with x(v) as (values (1)) update t set a = (select v from x)"
        ));
        assert!(!is_read("WITH x AS (SELECT 1) DELETE FROM t WHERE a IN x"));
        assert!(!is_read(
            "WITH x AS (SELECT 1) REPLACE INTO t SELECT * FROM x"
        ));
        assert!(!is_read(
            "WITH replace(a) AS (SELECT 1) REPLACE INTO t SELECT a FROM replace"
        ));
        assert!(!is_read("WITH"));
        // Names as SQLite reads them (found by a review): one word each.
        assert!(!is_read(
            "WITH éselect AS (SELECT 1 AS v) INSERT INTO u SELECT v FROM éselect"
        ));
        assert!(is_read(
            "WITH éinsert AS (SELECT 1 AS v) SELECT v FROM éinsert"
        ));
        assert!(is_read(
            "WITH x1insert AS (SELECT 1) SELECT * FROM x1insert"
        ));
        assert!(is_read(
            "WITH a$insert AS (SELECT 1) SELECT * FROM a$insert"
        ));
        // A parameter token is one token, quotes in it included.
        assert!(!is_read(
            "WITH x AS (SELECT $a(') AS v) INSERT INTO t SELECT v FROM x --'"
        ));
        assert!(is_read("WITH x AS (SELECT :insert AS v) SELECT v FROM x"));
        assert!(is_read("pragma table_info(foo)"));
        assert!(!is_read("INSERT INTO t VALUES (1)"));
        assert!(!is_read("CREATE TABLE selected (x)"));
        assert!(!is_read(""));
    }

    #[test]
    fn hex_strings_are_blobs_as_in_rqlite() {
        let s = parse_body(
            br#"[["INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", "x'00fF'", "X''", "x'abc'", "x'zz'", "y'00'", "x'+f+1'"]]"#,
            10,
        )
        .expect("valid");
        assert_eq!(
            s[0].params,
            Params::Positional(vec![
                Value::Blob(vec![0, 255]),
                Value::Blob(vec![]),
                Value::Text("x'abc'".into()),
                Value::Text("x'zz'".into()),
                Value::Text("y'00'".into()),
                Value::Text("x'+f+1'".into()),
            ])
        );
    }

    #[test]
    fn body_shapes() {
        let s = parse_body(
            br#"["SELECT 1", ["SELECT ?", 1, 2.5, "x", null, [1, 2]], ["SELECT :a", {"a": true}]]"#,
            10,
        )
        .expect("valid");
        assert_eq!(s[0], Statement::new("SELECT 1"));
        assert_eq!(
            s[1].params,
            Params::Positional(vec![
                Value::Integer(1),
                Value::Real(2.5),
                Value::Text("x".into()),
                Value::Null,
                Value::Blob(vec![1, 2])
            ])
        );
        assert_eq!(
            s[2].params,
            Params::Named(vec![("a".into(), Value::Integer(1))])
        );
        assert!(matches!(parse_body(b"[1]", 10), Err(BodyError::Shape(_))));
        assert!(matches!(parse_body(b"{", 10), Err(BodyError::Json(_))));
        assert!(matches!(
            parse_body(b"[\"a\",\"b\"]", 1),
            Err(BodyError::TooMany { .. })
        ));
        assert!(matches!(
            parse_body(b"[[\"a\", [300]]]", 10),
            Err(BodyError::Shape(_))
        ));
    }

    /// serde_json reads an integer beyond 64 unsigned bits as a real: only the text
    /// tells it from a real (found by a review: such integers were stored rounded).
    #[test]
    fn integers_beyond_64_bits_are_refused_and_reals_are_not() {
        for wide in [
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "-9223372036854775809",
            "-100000000000000000000000",
        ] {
            let positional = format!(r#"[["SELECT ?", {wide}]]"#);
            let named = format!(r#"[["SELECT :a", {{"a": {wide}}}]]"#);
            for body in [positional, named] {
                match parse_body(body.as_bytes(), 10) {
                    Err(BodyError::Shape(m)) => {
                        assert!(m.contains("does not fit in 64 signed bits"), "{body}: {m}")
                    }
                    other => panic!("{body}: {other:?}"),
                }
            }
        }
        let s = parse_body(
            br#"[["SELECT ?, ?, ?, ?, ?", 9223372036854775807, -9223372036854775808, 1e20, 1.5E+300, -7], ["SELECT '99999999999999999999', ?", "\"99999999999999999999"]]"#,
            10,
        )
        .expect("valid");
        assert_eq!(
            s[0].params,
            Params::Positional(vec![
                Value::Integer(i64::MAX),
                Value::Integer(i64::MIN),
                Value::Real(1e20),
                Value::Real(1.5e300),
                Value::Integer(-7),
            ])
        );
        assert_eq!(
            s[1].params,
            Params::Positional(vec![Value::Text("\"99999999999999999999".into())])
        );
    }
}
