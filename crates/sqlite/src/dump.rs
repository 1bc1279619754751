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
    let tables: Vec<(String, String, String, bool)> = conn
        .prepare(
            "SELECT s.name, s.sql, t.type, t.wr FROM sqlite_schema s, pragma_table_list t \
             WHERE s.type = 'table' AND s.sql IS NOT NULL AND t.schema = 'main' \
             AND t.name = s.name AND t.type IN ('table', 'virtual') \
             AND s.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             AND s.name NOT LIKE '\\_sqlraft\\_%' ESCAPE '\\' ORDER BY s.rowid",
        )
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .map_err(failed)?;
    let tables = parents_first(&conn, tables).map_err(failed)?;
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
    // Every table first, then the rows: a foreign key may name a table made later,
    // or two tables each other.
    for (_, sql, ..) in &tables {
        writeln!(out, "{sql};").map_err(io)?;
    }
    let mut rows_written = 0u64;
    for (table, sql, kind, without_rowid) in &tables {
        // A contentless full-text table keeps no rows to read back (its columns read
        // as NULL): there is nothing to insert.
        let lower = sql.to_ascii_lowercase().replace(' ', "");
        if kind == "virtual" && lower.contains("content=''") {
            continue;
        }
        let quoted = crate::schema::quote_ident(table);
        // The stored columns (not generated ones), and the rowid where it is the
        // table's own (so that rows keep it, as /db/hash counts it): every rowid
        // table, and full-text tables (an external-content index refers to its
        // content by rowid).
        let mut columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_xinfo(?1) WHERE hidden = 0")
            .and_then(|mut s| s.query_map([table], |r| r.get(0))?.collect())
            .map_err(failed)?;
        let keeps_rowid = match kind.as_str() {
            "table" => !without_rowid,
            _ => sql.to_ascii_lowercase().contains("using fts"),
        };
        if keeps_rowid
            && let Some(rowid) = crate::schema::rowid_name(&conn, table).map_err(failed)?
        {
            columns.insert(0, rowid.to_string());
        }
        let list = columns
            .iter()
            .map(|c| crate::schema::quote_ident(c))
            .collect::<Vec<_>>()
            .join(",");
        let mut stmt = conn
            .prepare(&format!("SELECT {list} FROM {quoted}"))
            .map_err(failed)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).map_err(failed)?;
        let mut line = String::new();
        while let Some(row) = rows.next().map_err(failed)? {
            line.clear();
            line.push_str("INSERT INTO ");
            line.push_str(&quoted);
            line.push('(');
            line.push_str(&list);
            line.push_str(") VALUES(");
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

/// `tables` with every table after the tables its foreign keys name, where they form
/// no cycle; the tables of a cycle after everything they lead to, otherwise in the
/// order they were made.
fn parents_first(
    conn: &rusqlite::Connection,
    tables: Vec<(String, String, String, bool)>,
) -> rusqlite::Result<Vec<(String, String, String, bool)>> {
    let mut parents = Vec::with_capacity(tables.len());
    for (name, ..) in &tables {
        let named: Vec<String> = conn
            .prepare("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?1)")?
            .query_map([name], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        parents.push(named);
    }
    let position = |name: &str| {
        tables
            .iter()
            .position(|(t, ..)| t.eq_ignore_ascii_case(name))
    };
    let mut order = Vec::with_capacity(tables.len());
    let mut state = vec![0u8; tables.len()]; // 0 new, 1 being placed, 2 placed
    fn place(
        i: usize,
        parents: &[Vec<String>],
        position: &dyn Fn(&str) -> Option<usize>,
        state: &mut [u8],
        order: &mut Vec<usize>,
    ) {
        if state[i] != 0 {
            return;
        }
        state[i] = 1;
        for parent in &parents[i] {
            if let Some(p) = position(parent)
                && state[p] == 0
            {
                place(p, parents, position, state, order);
            }
        }
        state[i] = 2;
        order.push(i);
    }
    for i in 0..tables.len() {
        place(i, &parents, &position, &mut state, &mut order);
    }
    let mut tables: Vec<Option<_>> = tables.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| tables[i].take()).collect())
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
            // Rust's shortest form; a point keeps it a real (`1` would read back as an
            // integer). SQLite reads it back as the same double for every magnitude
            // between about 1e-20 and 1e20; beyond, its conversion of text to a real
            // may differ in the last bit (docs/API.md).
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
/// statement where SQLite would (`sqlite3_complete`'s rule): anywhere but inside a
/// literal, a comment or the body of a `CREATE [TEMP] TRIGGER`, which only `; END ;`
/// ends (a `CASE ... END;` inside the body does not). Text after the last `;` is a statement when it holds code;
/// empty statements are dropped. One pass over the text.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut start = 0;
    let mut statement = Shape::default();
    let mut previous_end = 0;
    for (span_start, span_end) in crate::lex::code_spans(sql) {
        // A literal or quoted name between two pieces of code is a token (a comment
        // is not).
        if holds_literal(&sql[previous_end..span_start]) {
            statement.token("");
        }
        previous_end = span_end;
        let code = &sql[span_start..span_end];
        let mut word_start = None;
        for (offset, c) in code.char_indices() {
            // As SQLite's tokenizer: every character beyond ASCII belongs to a name.
            let in_word = c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii();
            if in_word {
                word_start.get_or_insert(offset);
                continue;
            }
            if let Some(w) = word_start.take() {
                statement.token(&code[w..offset]);
            }
            if c == ';' {
                if statement.ends_at_semicolon() {
                    let end = span_start + offset;
                    push_statement(&mut statements, &sql[start..end]);
                    start = end + 1;
                    statement = Shape::default();
                } else {
                    statement.token(";");
                }
            } else if !c.is_whitespace() {
                statement.token("");
            }
        }
        if let Some(w) = word_start {
            statement.token(&code[w..]);
        }
    }
    push_statement(&mut statements, &sql[start..]);
    statements
}

/// What the splitter knows of the statement it is in.
#[derive(Default)]
struct Shape {
    /// Its first words, up to six (`EXPLAIN QUERY PLAN CREATE TEMP TRIGGER`).
    first: Vec<String>,
    /// Tokens seen.
    tokens: usize,
    /// The last token was `;`.
    after_semicolon: bool,
    /// The last token was the word `END`, right after a `;`.
    after_end: bool,
}

impl Shape {
    /// Takes a token: a word, `;`, or `""` for anything else.
    fn token(&mut self, word: &str) {
        if self.tokens < 6 {
            self.first.push(word.to_ascii_lowercase());
        }
        self.tokens += 1;
        self.after_end = self.after_semicolon && word.eq_ignore_ascii_case("end");
        self.after_semicolon = word == ";";
    }

    fn is_trigger(&self) -> bool {
        let mut words: &[String] = &self.first;
        if words.first().is_some_and(|w| w == "explain") {
            words = &words[1..];
            if words.len() >= 2 && words[0] == "query" && words[1] == "plan" {
                words = &words[2..];
            }
        }
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        matches!(
            words.as_slice(),
            ["create", "trigger", ..] | ["create", "temp" | "temporary", "trigger", ..]
        )
    }

    /// A `;` here ends the statement.
    fn ends_at_semicolon(&self) -> bool {
        !self.is_trigger() || self.after_end
    }
}

/// Whether the text between two pieces of code holds a literal or quoted name, not
/// only comments.
fn holds_literal(gap: &str) -> bool {
    !skip_leading_comments(gap).is_empty()
}

/// `sql` after the white space and comments (`-- …`, `/* … */`) it starts with.
pub fn skip_leading_comments(mut sql: &str) -> &str {
    loop {
        sql = sql.trim_start();
        if let Some(rest) = sql.strip_prefix("--") {
            sql = rest.find('\n').map_or("", |i| &rest[i + 1..]);
        } else if let Some(rest) = sql.strip_prefix("/*") {
            sql = rest.find("*/").map_or("", |i| &rest[i + 2..]);
        } else {
            return sql;
        }
    }
}

fn push_statement(statements: &mut Vec<String>, text: &str) {
    let has_code = crate::lex::code_spans(text)
        .iter()
        .any(|&(s, e)| text[s..e].chars().any(|c| !c.is_whitespace() && c != ';'));
    if has_code {
        statements.push(text.trim().to_string());
    }
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
        // A CASE ... END inside a trigger's body does not end the trigger (even right
        // before a `;`); `; END` with a comment before the `;` does.
        let trigger = "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN \
                       INSERT INTO l VALUES (CASE WHEN new.x > 0 THEN 'pos' ELSE 'neg' END); \
                       UPDATE l SET y = CASE WHEN new.x > 0 THEN 1 ELSE 0 END; \
                       UPDATE l SET z = 'END'; END /* done */; SELECT 2";
        let split = split_statements(trigger);
        assert_eq!(split.len(), 2, "{split:?}");
        assert!(split[0].ends_with("END /* done */"), "{split:?}");
        let explained = "EXPLAIN CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END; SELECT 3";
        assert_eq!(split_statements(explained).len(), 2);
        // Not a trigger (something between its words), as sqlite3_complete sees it:
        // each `;` ends a statement. A literal behind a comment counts.
        for not_trigger in [
            "CREATE 'x' TRIGGER; SELECT 1; SELECT 2",
            "CREATE /**/'x' TRIGGER; SELECT 1; SELECT 2",
            "(CREATE TRIGGER; SELECT 1; SELECT 2",
        ] {
            assert_eq!(split_statements(not_trigger).len(), 3, "{not_trigger}");
        }
        // Characters beyond ASCII are part of a name.
        assert_eq!(split_statements("€ CREATE TRIGGER; SELECT 1").len(), 2);
    }

    #[test]
    fn splitting_takes_one_pass() {
        // Every `;` in an unfinished trigger used to rescan the statement from its
        // start: this took minutes (found by a review), one pass takes milliseconds.
        let sql = format!("CREATE TRIGGER x {}", ";".repeat(200_000));
        let split = split_statements(&sql);
        assert_eq!(split.len(), 1);
        assert!(split[0].starts_with("CREATE TRIGGER x ;;"));
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

    /// What a review found a dump lost: generated columns (the insert named too many
    /// values), rowids of tables without an INTEGER PRIMARY KEY, a child table made
    /// before its parent (foreign keys are on where the dump is loaded), and an
    /// external-content full-text index (it refers to its content by rowid).
    #[test]
    fn generated_columns_rowids_foreign_keys_and_fts_survive_a_dump() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(
            "CREATE TABLE child (id INTEGER PRIMARY KEY, p REFERENCES parent (id));
             CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT);
             CREATE TABLE gen (a INTEGER, b AS (a * 2), c AS (a + 1) STORED);
             CREATE TABLE plain (v TEXT);
             CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT);
             CREATE VIRTUAL TABLE ft USING fts5 (body, content = 'docs', content_rowid = 'id');
             INSERT INTO parent VALUES (7, 'p');
             INSERT INTO child VALUES (1, 7);
             INSERT INTO gen (a) VALUES (3);
             INSERT INTO plain VALUES ('a'), ('b'), ('c');
             DELETE FROM plain WHERE v = 'a';
             INSERT INTO docs VALUES (5, 'apple'), (9, 'banana');
             INSERT INTO ft (rowid, body) SELECT id, body FROM docs;",
        )
        .expect("fill");
        drop(conn);
        let mut dump = Vec::new();
        dump_sql(&path, &mut dump).expect("dump");
        let text = String::from_utf8(dump).expect("utf-8");
        let parent = text.find("CREATE TABLE parent").expect("parent");
        let child = text.find("CREATE TABLE child").expect("child");
        assert!(parent < child, "{text}");
        let copy = rusqlite::Connection::open_in_memory().expect("open");
        copy.execute_batch("PRAGMA foreign_keys = ON").expect("fk");
        for statement in split_statements(&text) {
            copy.execute_batch(&statement)
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        let get = |sql: &str| -> String {
            copy.query_row(sql, [], |r| r.get::<_, String>(0))
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        };
        assert_eq!(get("SELECT group_concat(rowid || v) FROM plain"), "2b,3c");
        assert_eq!(get("SELECT a || b || c FROM gen"), "364");
        assert_eq!(get("SELECT body FROM ft WHERE ft MATCH 'banana'"), "banana");
    }
}
