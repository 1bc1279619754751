//! Snapshots in the raft loop: deciding when to take one, taking it off the loop's
//! thread, offering it to followers and compacting the log behind it; installing one a
//! leader sent.
//!
//! Order of the durable steps, each safe to crash after:
//!
//! * taking: the copy is written, synced and renamed to its final name
//!   (`raft/snapshots/snap-<index>-<term>.sqlite`) by the job; then the log is compacted
//!   to at most that index (the compaction mark is durable before any segment goes);
//!   then older snapshot files are deleted. The log never starts after the newest
//!   snapshot file, so a state database that lost its last commits in a power failure
//!   can always be brought back to where the log starts (see `startup`).
//! * installing: the received file is already durable under its final name; the log is
//!   reset to the snapshot's position first; then the file's pages are copied into the
//!   state database in one transaction. A crash in between leaves a state database
//!   behind the log's start, and the next start installs the file again.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use prost::Message as _;
use raft::Storage;
use raft::eraftpb::{ConfState, Snapshot, SnapshotMetadata};
use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::snapshot::{SnapshotFile, list_snapshots, snapshot_file_name};
use tokio::sync::oneshot;

use super::RaftLoop;
use crate::config::SnapshotOptions;
use crate::error::{Fatal, NodeError, Result};
pub(crate) use crate::status::SnapshotInfo;

/// The loop's snapshot state.
pub(crate) struct Snapshots {
    /// `raft/snapshots`.
    pub dir: PathBuf,
    /// The state database.
    pub db: PathBuf,
    pub options: SnapshotOptions,
    job: Option<Job>,
    /// Callers of [`crate::Node::snapshot`] waiting for the next snapshot, each with
    /// the trailing window it asked for.
    waiting: Vec<(oneshot::Sender<Result<SnapshotInfo>>, Option<u64>)>,
    /// The newest snapshot this node holds.
    pub latest: Option<SnapshotInfo>,
    /// Size of the log when it was last compacted.
    log_bytes_at_compaction: u64,
    /// Snapshots installed from the leader since start.
    pub installed: u64,
    /// After a failed snapshot: no automatic one before this, and the next wait.
    retry: Option<(Instant, Duration)>,
}

/// The first wait after a failed snapshot, doubled after each further failure up to
/// [`RETRY_MAX`]: a full disk or a read-only directory is not fixed in a turn, and
/// each try copies the whole database again.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

struct Job {
    done: Receiver<sqlraft_sqlite::Result<SnapshotFile>>,
    started: Instant,
}

/// Whether an automatic snapshot is due, `entries` applied and `grown` bytes of log
/// written since the last one, which was `latest_size` bytes.
///
/// A snapshot copies the whole database, so its cost is the database's size however
/// few entries it covers: every `options.entries` entries, a 1 GiB database written at
/// 7,000 small writes a second would be copied every 1.4 s, each copy taking seconds.
/// So the log must also have grown by an eighth of the last snapshot's size (the copy
/// costs at most eight times the log it replaces), and the size trigger is at least
/// half of it. For databases up to a few hundred MiB this changes nothing: an eighth
/// of them is less than `options.entries` entries of log.
fn snapshot_due(options: &SnapshotOptions, entries: u64, grown: u64, latest_size: u64) -> bool {
    if entries == 0 {
        return false;
    }
    (entries >= options.entries && grown >= latest_size / 8)
        || grown >= options.log_bytes.max(latest_size / 2)
}

impl Snapshots {
    /// `latest`: the newest snapshot found at start; `log_bytes`: the log's size then.
    pub fn new(
        dir: PathBuf,
        db: PathBuf,
        options: SnapshotOptions,
        latest: Option<SnapshotInfo>,
        log_bytes: u64,
    ) -> Self {
        Snapshots {
            dir,
            db,
            options,
            job: None,
            waiting: Vec::new(),
            latest,
            log_bytes_at_compaction: log_bytes,
            installed: 0,
            retry: None,
        }
    }

    /// Where the file of the snapshot at (`index`, `term`) is.
    pub fn path(dir: &Path, index: u64, term: u64) -> PathBuf {
        dir.join(snapshot_file_name(index, term))
    }
}

/// The raft snapshot that offers `file` to followers: its position and configuration,
/// and as data the descriptor the transport sends the file by.
pub(crate) fn raft_snapshot(
    index: u64,
    term: u64,
    conf_state: ConfState,
    size: u64,
    sha256: &[u8],
) -> Snapshot {
    let descriptor = pb::SnapshotDescriptor {
        index,
        term,
        size,
        sha256: sha256.to_vec(),
    };
    Snapshot {
        data: descriptor.encode_to_vec(),
        metadata: Some(SnapshotMetadata {
            conf_state: Some(conf_state),
            index,
            term,
        }),
    }
}

/// Deletes the snapshot files older than `keep` and leftovers of copies that never
/// finished. Failures are only logged: a stale file costs disk, nothing else.
pub(crate) fn delete_older_snapshots(dir: &Path, keep: u64) {
    delete_snapshots_below(dir, keep, &[]);
}

/// Deletes the snapshot files below index `keep`; those at an index in `sending`
/// (a transfer reads them) are unlinked at once, not cut down first: a transfer
/// reading a file keeps it whole through its open handle only if it is not truncated.
fn delete_snapshots_below(dir: &Path, keep: u64, sending: &[u64]) {
    match list_snapshots(dir) {
        Ok(found) => {
            for (index, _, path) in found {
                if index >= keep {
                    continue;
                }
                let removed = if sending.contains(&index) {
                    std::fs::remove_file(&path)
                } else {
                    remove_gradually(&path)
                };
                match removed {
                    Ok(()) => {}
                    // Another deletion got there first.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot delete an old snapshot")
                    }
                }
            }
        }
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot list snapshots"),
    }
}

/// Deletes `path`, a large file first cut down a slice at a time: freeing the blocks of
/// a whole large file at once holds up the disk's other writers, the raft log's fsync
/// among them (RocksDB's deletion scheduler does the same). Measured with
/// `sqlraft-snapshot-bench --mib 400` (a 535 MiB snapshot replacing another): the
/// slowest write while the old file went was 77 ms deleted at once on this thread,
/// 23 ms cut down first (and 110-145 ms when the raft thread deleted it).
fn remove_gradually(path: &Path) -> std::io::Result<()> {
    const SLICE: u64 = 32 << 20;
    if let Ok(file) = std::fs::OpenOptions::new().write(true).open(path) {
        let mut len = file.metadata().map(|m| m.len()).unwrap_or(0);
        while len > SLICE {
            len -= SLICE;
            if file.set_len(len).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    std::fs::remove_file(path)
}

/// [`delete_older_snapshots`] on a thread of its own: deleting a large file frees its
/// blocks and takes time (90 ms for 405 MB on ext4, measured by a hostile review: on
/// the raft thread it held every write and read up for that long after each
/// snapshot). A transfer still reading an old file keeps its open handle.
fn delete_older_snapshots_later(dir: &Path, keep: u64, sending: Vec<u64>) {
    let owned = dir.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("snapshot-delete".into())
        .spawn(move || delete_snapshots_below(&owned, keep, &sending));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a thread to delete old snapshots");
    }
}

impl RaftLoop {
    /// Indexes of the snapshots being sent to followers now.
    fn snapshots_sending(&self) -> Vec<u64> {
        self.transport
            .snapshot_transfers()
            .into_iter()
            .filter(|t| t.direction == sqlraft_transport::Direction::Sending)
            .map(|t| t.index)
            .collect()
    }

    /// Asks for a snapshot now; `reply` gets it once it is taken. `trailing`: entries
    /// to keep behind it this time instead of the configured window.
    pub(super) fn request_snapshot(
        &mut self,
        reply: oneshot::Sender<Result<SnapshotInfo>>,
        trailing: Option<u64>,
    ) {
        self.snapshots.waiting.push((reply, trailing));
    }

    /// Once a turn: collects a finished snapshot job, and starts one when it is due.
    pub(super) fn maybe_snapshot(&mut self) -> Result<()> {
        if let Some(job) = &self.snapshots.job {
            match job.done.try_recv() {
                Ok(outcome) => {
                    let took_ms = job.started.elapsed().as_millis() as u64;
                    self.snapshots.job = None;
                    self.snapshot_taken(outcome, took_ms)?;
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => {
                    self.snapshots.job = None;
                    self.fail_snapshot_waiters("the snapshot job ended without an answer");
                }
            }
        }
        let applied = self.sm.applied_index();
        let since = self.snapshots.latest.as_ref().map_or(0, |s| s.index);
        let store = self.raw.store();
        let asked_by_raft = store.take_snapshot_request();
        let grown = store
            .size_bytes()
            .saturating_sub(self.snapshots.log_bytes_at_compaction);
        let latest_size = self.snapshots.latest.as_ref().map_or(0, |s| s.size_bytes);
        let due = snapshot_due(
            &self.snapshots.options,
            applied.saturating_sub(since),
            grown,
            latest_size,
        );
        // Raft asks again while a copy is being made: a copy of the same index would be
        // the same snapshot.
        // After a failure, automatic snapshots (and raft's asking) wait; one asked for
        // by a caller is tried at once.
        let backing_off = self
            .snapshots
            .retry
            .is_some_and(|(until, _)| Instant::now() < until);
        let due = due && !backing_off;
        let asked = !self.snapshots.waiting.is_empty()
            || (asked_by_raft && applied > since && !backing_off);
        if self.snapshots.job.is_none() && applied > 0 && (due || asked) {
            self.start_snapshot_job(applied)?;
        }
        Ok(())
    }

    fn start_snapshot_job(&mut self, applied: u64) -> Result<()> {
        // A database last written before terms were recorded gets its term from the
        // log, for the index applied now.
        let term_now = self.raw.store().term(applied).ok();
        let (db, dir) = (self.snapshots.db.clone(), self.snapshots.dir.clone());
        let (done, job) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                let outcome = sqlraft_sqlite::snapshot::take_snapshot(&db, &dir, |index| {
                    (index == applied).then_some(term_now).flatten()
                });
                let _ = done.send(outcome);
            })
            .map_err(|e| Fatal::io("cannot start the snapshot thread", e))?;
        self.snapshots.job = Some(Job {
            done: job,
            started: Instant::now(),
        });
        Ok(())
    }

    fn fail_snapshot_waiters(&mut self, reason: &str) {
        for (reply, _) in self.snapshots.waiting.drain(..) {
            let _ = reply.send(Err(NodeError::Unavailable(format!(
                "snapshot failed: {reason}"
            ))));
        }
    }

    fn snapshot_taken(
        &mut self,
        outcome: sqlraft_sqlite::Result<SnapshotFile>,
        took_ms: u64,
    ) -> Result<()> {
        let file = match outcome {
            Ok(file) => file,
            Err(e) => {
                let wait = self
                    .snapshots
                    .retry
                    .map_or(RETRY_FIRST, |(_, last)| (last * 2).min(RETRY_MAX));
                tracing::error!(error = %e, retry_in_s = wait.as_secs(), "taking a snapshot failed");
                self.snapshots.retry = Some((Instant::now() + wait, wait));
                self.metrics.snapshot_failures.inc();
                self.fail_snapshot_waiters(&e.to_string());
                return Ok(());
            }
        };
        self.snapshots.retry = None;
        if self
            .snapshots
            .latest
            .as_ref()
            .is_some_and(|latest| latest.index >= file.index)
        {
            // A snapshot from the leader was installed while this one was copied: it is
            // newer, and stays the one offered.
            tracing::info!(
                index = file.index,
                "dropping a snapshot older than the one installed meanwhile"
            );
            if let Some(latest) = &self.snapshots.latest
                && latest.index > file.index
            {
                let keep = latest.index;
                delete_older_snapshots_later(&self.snapshots.dir, keep, self.snapshots_sending());
            }
            let info = self.snapshots.latest.clone();
            for (reply, _) in self.snapshots.waiting.drain(..) {
                let _ = reply.send(
                    info.clone()
                        .ok_or(NodeError::Unavailable("no snapshot".into())),
                );
            }
            return Ok(());
        }
        self.crash_point("snapshot:taken")?;
        let conf_state = <ConfState as prost_011::Message>::decode(file.conf_state.as_slice())
            .map_err(|e| Fatal::corrupt(format!("undecodable configuration in a snapshot: {e}")))?;
        let info = SnapshotInfo {
            index: file.index,
            term: file.term,
            size_bytes: file.size,
            took_ms,
        };
        tracing::info!(
            index = file.index,
            term = file.term,
            bytes = file.size,
            took_ms,
            "snapshot taken"
        );
        let store = self.raw.mut_store();
        store.set_snapshot(raft_snapshot(
            file.index,
            file.term,
            conf_state,
            file.size,
            &file.sha256,
        ));
        // Compact behind the snapshot, keeping a window for followers that lag a little
        // (smaller when a caller asked for less); never past what is committed here (the
        // snapshot is applied, so committed).
        let trailing = self
            .snapshots
            .waiting
            .iter()
            .filter_map(|(_, t)| *t)
            .fold(self.snapshots.options.trailing_entries, u64::min);
        // The window is also bounded in bytes (a quarter of the log growth that triggers
        // a snapshot), so that large entries cannot make it unbounded.
        let by_bytes = store.index_keeping_bytes(file.index, self.snapshots.options.log_bytes / 4);
        let point = file
            .index
            .saturating_sub(trailing)
            .max(by_bytes)
            .min(file.index)
            .min(store.hard_state().commit);
        if point >= store.first_index().unwrap_or(1) {
            store.compact(point).map_err(NodeError::from)?;
            tracing::info!(
                to = point,
                first_index = point + 1,
                log_bytes = store.size_bytes(),
                segments = store.segment_count(),
                "log compacted"
            );
        }
        self.snapshots.log_bytes_at_compaction = store.size_bytes();
        self.crash_point("snapshot:compacted")?;
        delete_older_snapshots_later(&self.snapshots.dir, file.index, self.snapshots_sending());
        self.snapshots.latest = Some(info.clone());
        // Whoever is told it was taken sees it in the status.
        self.publish();
        for (reply, _) in self.snapshots.waiting.drain(..) {
            let _ = reply.send(Ok(info.clone()));
        }
        Ok(())
    }

    /// Installs the snapshot raft restored from a leader's message: its file was
    /// received and checked before the message was stepped.
    pub(super) fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<()> {
        let meta = snapshot.get_metadata();
        let (index, term) = (meta.index, meta.term);
        let path = Snapshots::path(&self.snapshots.dir, index, term);
        if !path.is_file() {
            return Err(Fatal::Invariant(format!(
                "raft restored the snapshot at {index} but its file {} is not here",
                path.display()
            ))
            .into());
        }
        let started = Instant::now();
        self.raw
            .mut_store()
            .install_snapshot(meta)
            .map_err(NodeError::from)?;
        self.crash_point("install:log")?;
        self.sm
            .install_snapshot(&path, index)
            .map_err(|e| Fatal::corrupt(format!("cannot install the snapshot at {index}: {e}")))?;
        self.crash_point("install:db")?;
        // The file is now this node's newest snapshot; it offers it in turn.
        let store = self.raw.mut_store();
        store.set_snapshot(snapshot.clone());
        self.snapshots.log_bytes_at_compaction = store.size_bytes();
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        self.snapshots.latest = Some(SnapshotInfo {
            index,
            term,
            size_bytes: size,
            took_ms: 0,
        });
        self.snapshots.installed += 1;
        delete_older_snapshots_later(&self.snapshots.dir, index, self.snapshots_sending());
        tracing::info!(
            index,
            term,
            bytes = size,
            took_ms = started.elapsed().as_millis() as u64,
            "installed a snapshot from the leader"
        );
        self.outbox.applied(index);
        self.reload_members()?;
        self.waiters.applied_by_snapshot(index);
        Ok(())
    }

    /// Test hook: stops the loop as if the process were killed here.
    #[cfg_attr(not(feature = "testing"), allow(clippy::unused_self))]
    pub(super) fn crash_point(&self, name: &'static str) -> Result<()> {
        #[cfg(feature = "testing")]
        if self.crash_at == Some(name) {
            tracing::warn!(point = name, "simulated crash (test hook)");
            return Err(Fatal::Invariant(format!("simulated crash at {name}")).into());
        }
        let _ = name;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_databases_are_copied_in_proportion_to_the_log_they_replace() {
        let options = SnapshotOptions {
            entries: 10_000,
            log_bytes: 64 << 20,
            trailing_entries: 5_000,
        };
        // Nothing applied since the last snapshot: never due.
        assert!(!snapshot_due(&options, 0, 1 << 30, 0));
        // A small database: the entry count decides, as configured.
        assert!(!snapshot_due(&options, 9_999, 1 << 20, 4 << 20));
        assert!(snapshot_due(&options, 10_000, 1 << 20, 4 << 20));
        assert!(snapshot_due(&options, 10, 64 << 20, 4 << 20));
        // A 1 GiB database: 10,000 small entries are not worth a copy of it...
        let gib = 1u64 << 30;
        assert!(!snapshot_due(&options, 10_000, 2 << 20, gib));
        assert!(!snapshot_due(&options, 1_000_000, (gib / 8) - 1, gib));
        // ...an eighth of it in log is.
        assert!(snapshot_due(&options, 1_000_000, gib / 8, gib));
        // Few but large entries: the size trigger, at least half the database.
        assert!(!snapshot_due(&options, 100, 64 << 20, gib));
        assert!(snapshot_due(&options, 100, gib / 2, gib));
    }
}
