//! Names in the state database: quoting, the rowid's name, and tables whose rowids
//! have run out.

use rusqlite::Connection;

/// `name` as a quoted SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The name that means `table`'s rowid: a column may take the name `rowid` (or
/// `_rowid_`, `oid`), and then that name means the column. `None` when the table
/// shadows all three (or is not a table).
pub(crate) fn rowid_name(conn: &Connection, table: &str) -> rusqlite::Result<Option<&'static str>> {
    let columns: Vec<String> = conn
        .prepare_cached("SELECT lower(name) FROM pragma_table_xinfo(?1)")?
        .query_map([table], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(["_rowid_", "rowid", "oid"]
        .into_iter()
        .find(|name| !columns.iter().any(|c| c == name)))
}

/// Like [`rowid_name`], for a table of the attached schema `schema`.
pub(crate) fn rowid_name_in(
    conn: &Connection,
    schema: &str,
    table: &str,
) -> rusqlite::Result<Option<&'static str>> {
    let columns: Vec<String> = conn
        .prepare_cached("SELECT lower(name) FROM pragma_table_xinfo(?1, ?2)")?
        .query_map([table, schema], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(["_rowid_", "rowid", "oid"]
        .into_iter()
        .find(|name| !columns.iter().any(|c| c == name)))
}

/// Whether `table` holds a row at the largest rowid (after which SQLite would choose
/// rowids at random). Views, virtual and WITHOUT ROWID tables never do.
pub(crate) fn holds_last_rowid(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    let Some(rowid) = rowid_name(conn, table)? else {
        return Ok(false);
    };
    let sql = format!("SELECT max({rowid}) FROM {}", quote_ident(table));
    let Ok(mut stmt) = conn.prepare_cached(&sql) else {
        return Ok(false);
    };
    let max: Option<i64> = stmt.query_row([], |r| r.get(0)).unwrap_or(None);
    Ok(max == Some(i64::MAX))
}

/// The user tables that hold a row at the largest rowid.
pub(crate) fn tables_at_last_rowid(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' \
             AND wr = 0 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut full = Vec::new();
    for table in tables {
        if holds_last_rowid(conn, &table)? {
            full.push(table);
        }
    }
    Ok(full)
}
