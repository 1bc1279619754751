//! The note a removed service leaves in its directory, `<root>/core/<id>/removed`:
//! written when the cluster removes the service, before it exits; read at every start
//! (a removed service does not start again), by `--install` (which refuses it) and by
//! `uninstall` (which then needs no `--force`).

use std::path::Path;

use crate::error::{CoreError, io_err};

/// The file a removed service leaves in its directory.
pub const REMOVED_FILE: &str = "removed";

/// `Some(note)` when the service directory `dir` holds a removed service; the note says
/// when (`was removed from the cluster at …`).
pub fn removed_note(dir: &Path) -> Option<String> {
    let path = dir.join(REMOVED_FILE);
    // Its presence is what counts; only a small regular file is read (the unit's stop
    // step reads it as root).
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > 4096 {
        return Some("was removed from the cluster".to_string());
    }
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let when = text.lines().next().unwrap_or("").trim();
    Some(if when.is_empty() {
        "was removed from the cluster".to_string()
    } else {
        format!("was removed from the cluster ({when})")
    })
}

/// Leaves the mark of a removed service in its directory, written and synced before
/// the service exits.
pub fn mark_removed(dir: &Path) -> Result<(), CoreError> {
    let path = dir.join(REMOVED_FILE);
    let text = format!(
        "at unix time {}; this service's id can never join again\n",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    );
    let tmp = dir.join(format!("{REMOVED_FILE}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| io_err("write", &tmp, e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err("sync", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io_err("write", &path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("sync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_service_leaves_a_note_that_is_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(removed_note(dir.path()), None);
        mark_removed(dir.path()).expect("mark");
        let note = removed_note(dir.path()).expect("noted");
        assert!(
            note.starts_with("was removed from the cluster (at unix time "),
            "{note}"
        );
        assert!(!dir.path().join("removed.tmp").exists());
    }
}
