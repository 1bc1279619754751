//! SQL text in and out: a dump of a database's user content as SQL statements (what
//! `sqlite3 .dump` and rqlite's `/db/backup?fmt=sql` give), and the splitting of such
//! text into statements again (`/db/load`).

use std::io::Write;
use std::path::Path;

use rusqlite::types::ValueRef;

use crate::error::{Result, SqliteError};

/// Writes the user schema and rows of the SQLite database at `path` (a backup copy,
/// not a live state database) to `out` as SQL: a `PRAGMA foreign_keys=OFF;`, then
/// `BEGIN TRANSACTION;`, each table's `CREATE` and one `INSERT` per row, the indexes,
/// triggers and views in the order they were made, and `COMMIT;`. sqlraft's own tables,
/// SQLite's internal ones (`sqlite_sequence` too) and the shadow tables of virtual
/// tables are left out; a virtual table's rows are inserted into it, which indexes
/// them again. Returns the number of rows written.
pub fn dump_sql(path: &Path, out: &mut impl Write) -> Result<u64> {
    let failed = |e: rusqlite::Error| SqliteError::Query(format!("cannot dump the database: {e}"));
    let io = |e: std::io::Error| SqliteError::Query(format!("cannot write the dump: {e}"));
    let conn = crate::hash::open_whole_database_reader(path)?;
    conn.execute_batch("BEGIN").map_err(failed)?;
    let user =
        "name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_sqlraft\\_%' ESCAPE '\\'";
    let tables: Vec<(String, String)> = conn
        .prepare(&format!(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'table' AND sql IS NOT NULL \
             AND name IN (SELECT name FROM pragma_table_list \
                          WHERE schema = 'main' AND type IN ('table', 'virtual')) \
             AND {user} ORDER BY rowid"
        ))
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(failed)?;
    let others: Vec<String> = conn
        .prepare(&format!(
            "SELECT sql FROM sqlite_schema WHERE type IN ('index', 'trigger', 'view') \
             AND sql IS NOT NULL AND {user} AND tbl_name NOT LIKE '\\_sqlraft\\_%' ESCAPE '\\' \
             ORDER BY rowid"
        ))
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(failed)?;
    out.write_all(b"PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n")
        .map_err(io)?;
    let mut rows_written = 0u64;
    for (table, sql) in &tables {
        writeln!(out, "{sql};").map_err(io)?;
        let quoted = crate::schema::quote_ident(table);
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {quoted}"))
            .map_err(failed)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).map_err(failed)?;
        let mut line = String::new();
        while let Some(row) = rows.next().map_err(failed)? {
            line.clear();
            line.push_str("INSERT INTO ");
            line.push_str(&quoted);
            line.push_str(" VALUES(");
            for i in 0..columns {
                if i > 0 {
                    line.push(',');
                }
                push_literal(&mut line, row.get_ref(i).map_err(failed)?);
            }
            line.push_str(");\n");
            out.write_all(line.as_bytes()).map_err(io)?;
            rows_written += 1;
        }
    }
    for sql in &others {
        writeln!(out, "{sql};").map_err(io)?;
    }
    out.write_all(b"COMMIT;\n").map_err(io)?;
    conn.execute_batch("COMMIT").map_err(failed)?;
    Ok(rows_written)
}

/// Appends `value` as an SQL literal that reads back as the same value and type.
fn push_literal(out: &mut String, value: ValueRef<'_>) {
    use std::fmt::Write as _;
    match value {
        ValueRef::Null => out.push_str("NULL"),
        ValueRef::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        ValueRef::Real(r) if r.is_infinite() => {
            out.push_str(if r > 0.0 { "1e999" } else { "-1e999" });
        }
        ValueRef::Real(r) => {
            // Rust's shortest form reads back as the same double; a point keeps it a
            // real (`1` would read back as an integer).
            let text = format!("{r:?}");
            out.push_str(&text);
            if !text.contains(['.', 'e', 'E']) {
                out.push_str(".0");
            }
        }
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(text) if !text.contains('\0') => {
                out.push('\'');
                out.push_str(&text.replace('\'', "''"));
                out.push('\'');
            }
            // Text SQLite holds that is not UTF-8, or has NUL characters: its bytes.
            _ => {
                out.push_str("CAST(");
                push_hex(out, t);
                out.push_str(" AS TEXT)");
            }
        },
        ValueRef::Blob(b) => push_hex(out, b),
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    use std::fmt::Write as _;
    out.reserve(bytes.len() * 2 + 3);
    out.push_str("X'");
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
    out.push('\'');
}

/// Splits SQL text into its statements, each without its final `;`: a `;` ends a
/// statement where SQLite would (not inside a literal, a comment or a trigger's
/// body). Text after the last `;` is a statement when it holds code; empty
/// statements are dropped.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut start = 0;
    for (span_start, span_end) in crate::lex::code_spans(sql) {
        for (offset, c) in sql[span_start..span_end].char_indices() {
            if c != ';' {
                continue;
            }
            let end = span_start + offset;
            let candidate = &sql[start..=end];
            if is_complete(candidate) {
                push_statement(&mut statements, &sql[start..end]);
                start = end + 1;
            }
        }
    }
    push_statement(&mut statements, &sql[start..]);
    statements
}

fn push_statement(statements: &mut Vec<String>, text: &str) {
    let has_code = crate::lex::code_spans(text)
        .iter()
        .any(|&(s, e)| text[s..e].chars().any(|c| !c.is_whitespace() && c != ';'));
    if has_code {
        statements.push(text.trim().to_string());
    }
}

/// SQLite's rule for the end of a statement (as `sqlite3_complete` applies it): a `;`
/// ends any statement but `CREATE [TEMP] TRIGGER`, which only a `;` right after `END`
/// ends (a `;` in the trigger's body does not).
fn is_complete(candidate: &str) -> bool {
    let words = code_words(candidate);
    let trigger = match words.as_slice() {
        [create, temp, trigger, ..]
            if create.eq_ignore_ascii_case("create")
                && (temp.eq_ignore_ascii_case("temp")
                    || temp.eq_ignore_ascii_case("temporary")) =>
        {
            trigger.eq_ignore_ascii_case("trigger")
        }
        [create, trigger, ..] if create.eq_ignore_ascii_case("create") => {
            trigger.eq_ignore_ascii_case("trigger")
        }
        _ => false,
    };
    !trigger || words.last().is_some_and(|w| w.eq_ignore_ascii_case("end"))
}

/// The words of code in `sql` (outside literals and comments), with `;` as a word.
fn code_words(sql: &str) -> Vec<&str> {
    let mut words = Vec::new();
    for (start, end) in crate::lex::code_spans(sql) {
        let code = &sql[start..end];
        let mut word_start = None;
        for (i, c) in code.char_indices() {
            let in_word = c.is_alphanumeric() || c == '_' || c == '$';
            match (in_word, word_start) {
                (true, None) => word_start = Some(i),
                (false, Some(w)) => {
                    words.push(&code[w..i]);
                    word_start = None;
                }
                _ => {}
            }
            if c == ';' {
                words.push(";");
            }
        }
        if let Some(w) = word_start {
            words.push(&code[w..]);
        }
    }
    // The candidate ends with its own `;`: what matters is the word before it.
    while words.last() == Some(&";") {
        words.pop();
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_where_sqlite_ends_them() {
        let sql = "CREATE TABLE t (a TEXT); INSERT INTO t VALUES ('x;y'); -- c;\n\
                   CREATE TRIGGER r AFTER INSERT ON t BEGIN UPDATE t SET a = 'z'; END;\n\
                   /* ; */ ;; SELECT 1";
        assert_eq!(
            split_statements(sql),
            vec![
                "CREATE TABLE t (a TEXT)",
                "INSERT INTO t VALUES ('x;y')",
                "-- c;\nCREATE TRIGGER r AFTER INSERT ON t BEGIN UPDATE t SET a = 'z'; END",
                "SELECT 1",
            ]
        );
        assert!(split_statements(" ; -- nothing\n").is_empty());
    }

    #[test]
    fn a_dump_reads_back_as_the_same_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, i, r, s, b);
             INSERT INTO t VALUES (1, 1152921504606846977, 1.0, 'it''s', x'00ff');
             INSERT INTO t VALUES (2, NULL, 0.1, 'déjà', x'');
             INSERT INTO t VALUES (3, -5, 1e300, CAST(x'610062' AS TEXT), NULL);
             INSERT INTO t VALUES (4, 0, 9e999, '', -0.5);
             CREATE INDEX ti ON t (s);
             CREATE VIEW v AS SELECT id FROM t;
             CREATE TABLE _sqlraft_meta (key, value);",
        )
        .expect("fill");
        drop(conn);
        let mut dump = Vec::new();
        assert_eq!(dump_sql(&path, &mut dump).expect("dump"), 4);
        let text = String::from_utf8(dump).expect("utf-8");
        assert!(!text.contains("_sqlraft_"), "{text}");
        let copy = rusqlite::Connection::open_in_memory().expect("open");
        copy.execute_batch(&text).expect("load");
        let rows = |c: &rusqlite::Connection| -> Vec<Vec<String>> {
            let mut s = c
                .prepare("SELECT id, quote(i), quote(r), quote(s), quote(b), typeof(r) FROM t ORDER BY id")
                .expect("prepare");
            s.query_map([], |r| {
                (0..6)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect()
            })
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
        };
        let original = rusqlite::Connection::open(&path).expect("open");
        assert_eq!(rows(&copy), rows(&original));
        let views: i64 = copy
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name IN ('ti', 'v')",
                [],
                |r| r.get(0),
            )
            .expect("schema");
        assert_eq!(views, 2);
    }
}
