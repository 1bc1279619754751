//! Snapshots of the state database: the SQLite file at an applied index is the
//! snapshot, as in rqlite. One is taken with `VACUUM INTO` in one read transaction
//! beside the apply connection (readers never block the writer in WAL mode), made
//! durable, and named by the index and term it stands for. Installing one copies it into
//! the live database with SQLite's backup API in one write transaction.
//!
//! Why `VACUUM INTO` to take one: the online backup API restarts from the first page
//! whenever another connection writes to the source, so under steady writes it may
//! never finish; a file copy needs the WAL checkpointed and writers held off for the
//! whole copy. `VACUUM INTO` reads one consistent snapshot, holds no lock a writer
//! waits for, and writes a compact file (free pages dropped), which is also what is
//! sent over the network.
//!
//! Why the backup API to install one, rather than renaming the file over the database:
//! other connections (the read pool, an embedder's sqlx pool) have the old file open,
//! and when the last of them closes, SQLite checkpoints and deletes `<db>-wal` *by
//! name*: after a rename that is the new database's WAL, and committed transactions
//! would vanish with it. Copying the pages into the open database in one transaction is
//! atomic for every connection, needs no reopening, and a crash leaves either the old
//! content or the new.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::error::{Result, SqliteError};
use crate::hash::open_whole_database_reader;

/// A snapshot file and what it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Where it is.
    pub path: PathBuf,
    /// The applied index its content is at.
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
    /// The raft configuration at `index` (encoded `eraftpb::ConfState`).
    pub conf_state: Vec<u8>,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: [u8; 32],
}

/// What a state database records about the entries applied to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMeta {
    /// Index of the last entry applied.
    pub index: u64,
    /// Its term; `None` in a database last written before terms were recorded.
    pub term: Option<u64>,
    /// The configuration at `index` (encoded `eraftpb::ConfState`), if any.
    pub conf_state: Option<Vec<u8>>,
}

/// The file name of the snapshot at `index` in `term`.
pub fn snapshot_file_name(index: u64, term: u64) -> String {
    format!("snap-{index:020}-{term:020}.sqlite")
}

/// The index and term a snapshot file name stands for.
pub fn parse_snapshot_file_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".sqlite")?;
    let (index, term) = rest.split_once('-')?;
    if index.len() != 20 || term.len() != 20 {
        return None;
    }
    Some((index.parse().ok()?, term.parse().ok()?))
}

/// The complete snapshot files in `dir`, oldest (lowest index) first.
pub fn list_snapshots(dir: &Path) -> std::io::Result<Vec<(u64, u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if let Some((index, term)) = entry
            .file_name()
            .to_str()
            .and_then(parse_snapshot_file_name)
        {
            found.push((index, term, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

fn snapshot_error(what: impl std::fmt::Display) -> SqliteError {
    SqliteError::Snapshot(what.to_string())
}

/// Reads what a state database (or a snapshot of one) records about its applied
/// entries.
pub fn applied_meta(path: &Path) -> Result<AppliedMeta> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| snapshot_error(format!("cannot open {}: {e}", path.display())))?;
    read_applied_meta(&conn).map_err(|e| {
        snapshot_error(format!(
            "{} is not a sqlraft state database: {e}",
            path.display()
        ))
    })
}

pub(crate) fn read_applied_meta(conn: &Connection) -> rusqlite::Result<AppliedMeta> {
    let value = |key: &str| -> rusqlite::Result<Option<rusqlite::types::Value>> {
        conn.query_row(
            "SELECT value FROM _sqlraft_meta WHERE key = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()
    };
    use rusqlite::types::Value as V;
    let index = match value("applied_index")? {
        Some(V::Integer(i)) if i >= 0 => i as u64,
        None => 0,
        Some(other) => {
            return Err(rusqlite::Error::InvalidColumnType(
                0,
                format!("applied_index {other:?}"),
                rusqlite::types::Type::Integer,
            ));
        }
    };
    let term = match value("applied_term")? {
        Some(V::Integer(t)) if t >= 0 => Some(t as u64),
        _ => None,
    };
    let conf_state = match value("conf_state")? {
        Some(V::Blob(b)) => Some(b),
        _ => None,
    };
    Ok(AppliedMeta {
        index,
        term,
        conf_state,
    })
}

/// Takes a snapshot of the state database at `db` into `dir`: a consistent copy (one
/// read transaction) made durable and named by its applied index and term. `term_of`
/// gives the term of an index for a database that does not record it. An existing
/// snapshot of the same index and term is replaced by the new copy (the same content;
/// a transfer reading the old file keeps reading it).
pub fn take_snapshot(
    db: &Path,
    dir: &Path,
    term_of: impl FnOnce(u64) -> Option<u64>,
) -> Result<SnapshotFile> {
    std::fs::create_dir_all(dir)
        .map_err(|e| snapshot_error(format!("cannot create {}: {e}", dir.display())))?;
    let tmp = dir.join(format!(
        "tmp-{}-{}.sqlite",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let outcome = (|| {
        let source = open_whole_database_reader(db)?;
        let tmp_text = tmp
            .to_str()
            .ok_or_else(|| snapshot_error(format!("{} is not a UTF-8 path", tmp.display())))?;
        // The copy's pages are written back as it grows, a little at a time, rather
        // than all at once by the final sync: a sync of a large file holds up every
        // other sync on the disk, the raft log's among them.
        let copying = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flusher = {
            let (copying, tmp) = (std::sync::Arc::clone(&copying), tmp.clone());
            std::thread::spawn(move || {
                while copying.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::park_timeout(std::time::Duration::from_millis(50));
                    if let Ok(file) = File::open(&tmp) {
                        let _ = file.sync_data();
                    }
                }
            })
        };
        let copied = source
            .execute("VACUUM INTO ?1", [tmp_text])
            .map_err(|e| snapshot_error(format!("cannot copy the database: {e}")));
        copying.store(false, std::sync::atomic::Ordering::Relaxed);
        flusher.thread().unpark();
        let _ = flusher.join();
        copied?;
        drop(source);
        let meta = applied_meta(&tmp)?;
        let term = match meta.term {
            Some(term) => term,
            None => term_of(meta.index).ok_or_else(|| {
                snapshot_error(format!("the term of entry {} is not known", meta.index))
            })?,
        };
        let conf_state = meta.conf_state.ok_or_else(|| {
            snapshot_error("the database records no configuration: nothing applied yet")
        })?;
        let (size, sha256) = sync_and_hash(&tmp)?;
        let path = dir.join(snapshot_file_name(meta.index, term));
        std::fs::rename(&tmp, &path)
            .map_err(|e| snapshot_error(format!("cannot rename {}: {e}", tmp.display())))?;
        sync_dir(dir)?;
        Ok(SnapshotFile {
            path,
            index: meta.index,
            term,
            conf_state,
            size,
            sha256,
        })
    })();
    if outcome.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    outcome
}

/// Describes an existing snapshot file (its name gives index and term; its content
/// must agree, and pass `quick_check`).
pub fn open_snapshot(path: &Path) -> Result<SnapshotFile> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let (index, term) = parse_snapshot_file_name(name)
        .ok_or_else(|| snapshot_error(format!("{} is not a snapshot file name", path.display())))?;
    let meta = applied_meta(path)?;
    if meta.index != index || meta.term.is_some_and(|t| t != term) {
        return Err(snapshot_error(format!(
            "{} holds entry {} (term {:?}), not what its name says",
            path.display(),
            meta.index,
            meta.term
        )));
    }
    let conf_state = meta
        .conf_state
        .ok_or_else(|| snapshot_error(format!("{} records no configuration", path.display())))?;
    check_integrity(path)?;
    let (size, sha256) = hash_file(path)?;
    Ok(SnapshotFile {
        path: path.to_path_buf(),
        index,
        term,
        conf_state,
        size,
        sha256,
    })
}

/// Checks that a snapshot file is a sound SQLite database (`PRAGMA quick_check`): a
/// file damaged on disk is never installed or offered.
pub fn check_integrity(path: &Path) -> Result<()> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| snapshot_error(format!("cannot open {}: {e}", path.display())))?;
    let verdict: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(|e| snapshot_error(format!("{} cannot be checked: {e}", path.display())))?;
    if verdict != "ok" {
        return Err(snapshot_error(format!(
            "{} is damaged: {verdict}",
            path.display()
        )));
    }
    Ok(())
}

/// Size and SHA-256 of a file.
pub fn hash_file(path: &Path) -> Result<(u64, [u8; 32])> {
    let mut file = File::open(path)
        .map_err(|e| snapshot_error(format!("cannot open {}: {e}", path.display())))?;
    hash_reader(&mut file, path)
}

fn hash_reader(file: &mut File, path: &Path) -> Result<(u64, [u8; 32])> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| snapshot_error(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hasher.finalize().into()))
}

fn sync_and_hash(path: &Path) -> Result<(u64, [u8; 32])> {
    let mut file = File::open(path)
        .map_err(|e| snapshot_error(format!("cannot open {}: {e}", path.display())))?;
    file.sync_all()
        .map_err(|e| snapshot_error(format!("cannot sync {}: {e}", path.display())))?;
    hash_reader(&mut file, path)
}

/// Makes the directory entries of `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| snapshot_error(format!("cannot sync {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_file_names_round_trip_and_refuse_others() {
        let name = snapshot_file_name(42, 7);
        assert_eq!(parse_snapshot_file_name(&name), Some((42, 7)));
        for bad in [
            "snap-42-7.sqlite",
            "snap-00000000000000000042-00000000000000000007.db",
            "tmp-1-2.sqlite",
            "snap-0000000000000000004x-00000000000000000007.sqlite",
        ] {
            assert_eq!(parse_snapshot_file_name(bad), None, "{bad}");
        }
    }
}
