//! Snapshots at start: bring a state database that is behind the log's first index
//! up to it from a snapshot file, and find the snapshot to offer followers.

use std::path::Path;

use raft::Storage;
use raft::eraftpb::ConfState;
use sqlraft_log::LogStore;
use sqlraft_sqlite::StateMachine;
use sqlraft_sqlite::snapshot::{list_snapshots, open_snapshot};

use crate::error::{Fatal, Result};
use crate::raft_loop::{SnapshotInfo, delete_older_snapshots, raft_snapshot};

/// Prepares the snapshot directory and the state database at start:
///
/// * leftovers of copies and transfers that never finished are deleted;
/// * a state database behind the log's first index (a crash while a snapshot from the
///   leader was being installed, or a power failure that cost the database its last
///   commits after the log was compacted) gets the newest snapshot file that the log
///   continues from;
/// * the newest snapshot at or below the applied index is offered to followers.
///
/// Returns that snapshot.
pub(crate) fn recover(
    dir: &Path,
    log: &mut LogStore,
    sm: &mut StateMachine,
) -> Result<Option<SnapshotInfo>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Fatal::io(format!("cannot create {}", dir.display()), e))?;
    remove_leftovers(dir);
    let found =
        list_snapshots(dir).map_err(|e| Fatal::io(format!("cannot list {}", dir.display()), e))?;
    let first = log.first_index().unwrap_or(1);
    let last = log.last_index().unwrap_or(0);
    let needed = first - 1;
    if sm.applied_index() < needed {
        let Some((index, _, path)) = found
            .iter()
            .rev()
            .find(|(index, _, _)| *index >= needed && *index <= last)
        else {
            return Err(Fatal::corrupt(format!(
                "the state database has applied entry {} but the raft log starts at {first}, \
                 and no snapshot in {} covers the gap",
                sm.applied_index(),
                dir.display()
            )));
        };
        tracing::warn!(
            applied = sm.applied_index(),
            log_first = first,
            snapshot = index,
            "the state database is behind the log's start; installing the snapshot"
        );
        sm.install_snapshot(path, *index)
            .map_err(|e| Fatal::corrupt(format!("cannot install {}: {e}", path.display())))?;
    }
    let applied = sm.applied_index();
    let usable = found
        .iter()
        .rev()
        .find(|(index, _, _)| *index >= needed && *index <= applied);
    let Some((index, _, path)) = usable else {
        return Ok(None);
    };
    let file = match open_snapshot(path) {
        Ok(file) => file,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e,
                "ignoring a snapshot file that cannot be read");
            return Ok(None);
        }
    };
    let conf_state = <ConfState as prost_011::Message>::decode(file.conf_state.as_slice())
        .map_err(|e| {
            Fatal::corrupt(format!(
                "undecodable configuration in {}: {e}",
                path.display()
            ))
        })?;
    log.set_snapshot(raft_snapshot(
        file.index,
        file.term,
        conf_state,
        file.size,
        &file.sha256,
    ));
    delete_older_snapshots(dir, *index);
    Ok(Some(SnapshotInfo {
        index: file.index,
        term: file.term,
        size_bytes: file.size,
        took_ms: 0,
    }))
}

/// What a restore that was cut short (the process killed) leaves beside the state
/// database: the upload, the checked copy, the reassembled file. Nothing refers to them
/// after a restart.
pub(crate) fn remove_restore_leftovers(db_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(db_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        let removed = if name.starts_with("upload-") || name.starts_with("restore-work-") {
            std::fs::remove_dir_all(&path)
        } else if name.starts_with("restore-") && name.ends_with(".sqlite") {
            std::fs::remove_file(&path)
        } else {
            continue;
        };
        if let Err(e) = removed {
            tracing::warn!(file = %name, error = %e, "cannot delete what a restore left");
        }
    }
}

/// Copies cut short (`tmp-*`) and partial transfers (`recv-*.part`): nothing refers to
/// them after a restart.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if (name.starts_with("tmp-") || name.starts_with("recv-"))
            && let Err(e) = std::fs::remove_file(entry.path())
        {
            tracing::warn!(file = %name, error = %e, "cannot delete a leftover snapshot file");
        }
    }
}
