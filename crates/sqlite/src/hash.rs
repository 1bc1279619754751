//! A hash of the replicated content, to compare nodes the way etcd's `hashkv` does:
//! two nodes at the same applied index must give the same hash.

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

use crate::error::{Result, SqliteError};

/// The content hash of a state database and the applied index it is taken at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentHash {
    /// Index of the last entry whose effects are in the hashed content.
    pub applied_index: u64,
    /// SHA-256 (hex) over the user schema (tables, indexes, views, triggers) and every
    /// user table's rows in key order; sqlraft's own tables are left out.
    pub sha256: String,
}

/// A read-only connection of its own on the state database at `path`, for reads of
/// the whole database beside the node's (a content hash, a backup).
pub(crate) fn open_whole_database_reader(path: &Path) -> Result<Connection> {
    let open_err = |source| SqliteError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    Ok(conn)
}

/// The applied index recorded in a state database (0 before the first entry).
pub(crate) fn recorded_applied_index(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT coalesce((SELECT value FROM _sqlraft_meta WHERE key = 'applied_index'), 0)",
        [],
        |r| r.get(0),
    )
}

/// Hashes the state database at `path`. The index and the content are read in one
/// read transaction, so they belong together even while entries are being applied.
pub fn content_hash(path: &Path) -> Result<ContentHash> {
    let failed = |e: rusqlite::Error| SqliteError::Query(format!("cannot hash the content: {e}"));
    let conn = open_whole_database_reader(path)?;
    conn.execute_batch("BEGIN").map_err(failed)?;
    let applied = recorded_applied_index(&conn).map_err(failed)?;
    let mut hasher = Sha256::new();
    let user =
        "name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_sqlraft\\_%' ESCAPE '\\'";
    let schema: Vec<(String, String, Option<String>)> = conn
        .prepare(&format!(
            "SELECT type, name, sql FROM sqlite_schema WHERE {user} ORDER BY type, name"
        ))
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(failed)?;
    for (kind, name, sql) in &schema {
        feed(&mut hasher, ValueRef::Text(kind.as_bytes()));
        feed(&mut hasher, ValueRef::Text(name.as_bytes()));
        feed(
            &mut hasher,
            sql.as_deref()
                .map_or(ValueRef::Null, |s| ValueRef::Text(s.as_bytes())),
        );
    }
    // Tables and the shadow tables that hold virtual tables' content (FTS), in name
    // order; rows by rowid, or by primary key for WITHOUT ROWID tables.
    let tables: Vec<(String, bool)> = conn
        .prepare(&format!(
            "SELECT name, wr FROM pragma_table_list WHERE schema = 'main' \
             AND type IN ('table', 'shadow') AND {user} ORDER BY name"
        ))
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(failed)?;
    for (table, without_rowid) in &tables {
        let quoted = crate::schema::quote_ident(table);
        let rowid = crate::schema::rowid_name(&conn, table).map_err(failed)?;
        let sql = match rowid {
            Some(rowid) if !*without_rowid => {
                format!("SELECT {rowid}, * FROM {quoted} ORDER BY {rowid}")
            }
            _ => format!("SELECT * FROM {quoted}"),
        };
        feed(&mut hasher, ValueRef::Text(table.as_bytes()));
        let mut stmt = conn.prepare(&sql).map_err(failed)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).map_err(failed)?;
        while let Some(row) = rows.next().map_err(failed)? {
            hasher.update(b"r");
            for i in 0..columns {
                feed(&mut hasher, row.get_ref(i).map_err(failed)?);
            }
        }
    }
    conn.execute_batch("COMMIT").map_err(failed)?;
    let digest = hasher.finalize();
    Ok(ContentHash {
        applied_index: u64::try_from(applied).unwrap_or(0),
        sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// One value, typed and length-prefixed so that no two different sequences of values
/// feed the same bytes.
pub(crate) fn feed(hasher: &mut Sha256, value: ValueRef<'_>) {
    match value {
        ValueRef::Null => hasher.update(b"n"),
        ValueRef::Integer(i) => {
            hasher.update(b"i");
            hasher.update(i.to_le_bytes());
        }
        ValueRef::Real(f) => {
            hasher.update(b"f");
            hasher.update(f.to_bits().to_le_bytes());
        }
        ValueRef::Text(t) => {
            hasher.update(b"t");
            hasher.update((t.len() as u64).to_le_bytes());
            hasher.update(t);
        }
        ValueRef::Blob(b) => {
            hasher.update(b"b");
            hasher.update((b.len() as u64).to_le_bytes());
            hasher.update(b);
        }
    }
}
