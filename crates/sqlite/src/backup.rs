//! A consistent copy of the state database.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Result, SqliteError};
use crate::hash::{open_whole_database_reader, recorded_applied_index};

/// Copies the state database at `src` to `dst` (which must not exist) with
/// `VACUUM INTO`, one read transaction, and returns the applied index the copy holds:
/// it is read from the copy, so content and index belong together even while entries
/// are being applied. The copy is a plain SQLite file (sqlraft's own tables included).
pub fn backup(src: &Path, dst: &Path) -> Result<u64> {
    let failed = |what: &str, e: rusqlite::Error| SqliteError::Backup(format!("{what}: {e}"));
    if dst.exists() {
        return Err(SqliteError::Backup(format!(
            "{} already exists; a backup never overwrites",
            dst.display()
        )));
    }
    let dst_text = dst
        .to_str()
        .ok_or_else(|| SqliteError::Backup(format!("{} is not a UTF-8 path", dst.display())))?;
    let source = open_whole_database_reader(src)?;
    source
        .execute("VACUUM INTO ?1", [dst_text])
        .map_err(|e| failed(&format!("cannot copy to {}", dst.display()), e))?;
    drop(source);
    let copy = Connection::open_with_flags(dst, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| failed("cannot open the copy", e))?;
    let applied = recorded_applied_index(&copy)
        .map_err(|e| failed("cannot read the copy's applied index", e))?;
    u64::try_from(applied)
        .map_err(|_| SqliteError::Backup(format!("the copy holds applied index {applied}")))
}
