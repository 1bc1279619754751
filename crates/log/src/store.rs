use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use prost_011::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::error::{LogError, Result};
use crate::format::{self, Base, Compact, Item, RECORD_HEADER_LEN, RecordBuilder};

/// Name of a log file before segments (version 1 wrote one file); it is taken over as
/// the first segment.
const LEGACY_FILE_NAME: &str = "wal";
/// Segments are `wal-<sequence number, 16 hex digits>`.
const SEGMENT_PREFIX: &str = "wal-";
/// Held (flock) while a store has the directory open.
const LOCK_FILE_NAME: &str = "wal.lock";

/// The segment files of the log in `dir`, oldest first (for tests and tools).
pub fn segment_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(list_segments(dir)?
        .into_iter()
        .map(|seq| segment_path(dir, seq))
        .collect())
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{seq:016x}"))
}

fn list_segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(hex) = name.strip_prefix(SEGMENT_PREFIX)
            && hex.len() == 16
            && let Ok(seq) = u64::from_str_radix(hex, 16)
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Limits of a [`LogStore`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Bytes of memory the newest entries may take, kept to serve appends to followers
    /// and the apply without reading the file (each entry counted with its own
    /// structure, not only its data: a small write's entry takes about twice its
    /// data). Older entries are read back from the file.
    pub cache_bytes: usize,
    /// Largest single write accepted, in bytes.
    pub max_write_bytes: usize,
    /// A segment that has grown to this size is closed and the next write starts a new
    /// one; the segment written to is allocated this size ahead. Disk use is the
    /// entries not yet compacted plus at most one segment.
    pub segment_bytes: u64,
    /// Test hook: told after every write is durable (fsynced).
    #[cfg(feature = "testing")]
    pub on_durable: Option<DurableObserver>,
    /// Test hook: the number of file operations (a write and its sync, a file created,
    /// a directory synced, a file deleted) that succeed; the next one fails as if the
    /// process had been killed just before it, and the store does nothing more.
    #[cfg(feature = "testing")]
    pub crash_after_file_ops: Option<std::sync::Arc<std::sync::atomic::AtomicI64>>,
}

/// Test hook: called after a write is durable with the log's last index and the hard
/// state now on disk.
#[cfg(feature = "testing")]
#[derive(Clone)]
pub struct DurableObserver(pub std::sync::Arc<DurableFn>);

/// What a [`DurableObserver`] calls.
#[cfg(feature = "testing")]
pub type DurableFn = dyn Fn(u64, &HardState) + Send + Sync;

#[cfg(feature = "testing")]
impl std::fmt::Debug for DurableObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DurableObserver")
    }
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            cache_bytes: 4 << 20,
            max_write_bytes: 256 << 20,
            segment_bytes: 16 << 20,
            #[cfg(feature = "testing")]
            on_durable: None,
            #[cfg(feature = "testing")]
            crash_after_file_ops: None,
        }
    }
}

/// Where an entry lives on disk; the entry itself is read back on demand.
#[derive(Debug, Clone, Copy)]
struct EntryLoc {
    seq: u64,
    pos: u64,
    len: u32,
    term: u64,
}

/// One file of the log.
struct Segment {
    seq: u64,
    path: PathBuf,
    file: File,
    /// Bytes that hold records; the next record of the active segment goes here.
    len: u64,
    /// Where this process's zeros written ahead of the records end ([`ZERO_AHEAD`]).
    zeroed: u64,
}

/// Bytes of zeros written after the active segment's last record, ahead of the next
/// ones, a chunk at a time. The segment is allocated ahead (`fallocate`), but as
/// space never written: ext4 then converts the extent holding each record from
/// unwritten to written once the record is on disk, a change of the file's block map
/// that the record's `fdatasync` must also write (the inode's own block, a request of
/// its own to the disk) after waiting for the conversion on a kernel thread. Zeros
/// written ahead are synced with the next record, so that one conversion covers a
/// chunk of records rather than each one. Under 32 writers (`perf record -e
/// block:block_rq_issue`) the inode went to the disk with 40% of the log's syncs
/// before; docs/PERFORMANCE.md has the effect on writes.
const ZERO_AHEAD: u64 = 1 << 20;

/// What loading the files found, for logging and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Records read back intact.
    pub records: u64,
    /// Bytes of a torn final record that were cut off the end of the last segment.
    pub torn_bytes: u64,
    /// Segments found.
    pub segments: u64,
}

/// Durable raft log: entries, hard state and conf state in append-only, checksummed
/// segment files, compacted from the front once a snapshot covers the entries.
///
/// Every [`LogStore::write`] appends one record and calls `fdatasync` once, so the
/// entries and hard state of one raft `Ready` become durable together. An entry whose
/// index is already in the log replaces it and everything after it (raft's conflicting
/// suffix); replay applies the same rule, so any prefix of the files loads to a valid
/// log. [`LogStore::compact`] drops a prefix and deletes the segments that hold nothing
/// else; [`LogStore::install_snapshot`] replaces the whole log by a snapshot's position.
/// Memory holds a small position index per entry not compacted and a bounded cache of
/// recent entries, not the log.
pub struct LogStore {
    dir: PathBuf,
    _lock: File,
    /// Oldest first; the last one is written to.
    segments: VecDeque<Segment>,
    /// Index of `locs[0]`.
    first_index: u64,
    /// Term of the entry at `first_index - 1` (compacted, or 0 before the first entry).
    prev_term: u64,
    /// Only while replaying: the first segment held an entry below its base (a write
    /// that replaced a conflicting suffix), so the log was restarted there and the
    /// term before it is not known until a compaction mark covers it.
    prev_term_unknown: bool,
    locs: VecDeque<EntryLoc>,
    /// The newest entries: `cache[k]` has index `last_index() + 1 - cache.len() + k`.
    cache: VecDeque<Entry>,
    cached_bytes: usize,
    hard_state: HardState,
    conf_state: ConfState,
    /// The commit index moved since the hard state was last written.
    commit_dirty: bool,
    poisoned: bool,
    options: LogOptions,
    report: LoadReport,
    /// The snapshot offered to followers behind the first index ([`Storage::snapshot`]).
    snapshot: Option<Snapshot>,
    /// Raft asked for a snapshot this store could not offer.
    snapshot_wanted: AtomicBool,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, replaying its segments. A torn final record,
    /// left by a crash in the middle of a write, is cut off; damage anywhere else, or a
    /// missing segment, is reported as [`LogError::Corrupt`] and nothing is changed.
    /// Segments a crash left behind after a compaction are deleted.
    pub fn open(dir: &Path, options: LogOptions) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let lock_path = dir.join(LOCK_FILE_NAME);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| LogError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(LogError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(LogError::io(&lock_path, e)),
        }
        let mut store = LogStore {
            dir: dir.to_path_buf(),
            _lock: lock,
            segments: VecDeque::new(),
            first_index: 1,
            prev_term: 0,
            prev_term_unknown: false,
            locs: VecDeque::new(),
            cache: VecDeque::new(),
            cached_bytes: 0,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            commit_dirty: false,
            poisoned: false,
            options,
            report: LoadReport::default(),
            snapshot: None,
            snapshot_wanted: AtomicBool::new(false),
        };
        let mut seqs = list_segments(dir).map_err(|e| LogError::io(dir, e))?;
        let legacy = dir.join(LEGACY_FILE_NAME);
        if seqs.is_empty() && legacy.is_file() {
            // A log written before segments: the same records, taken over as segment 1.
            let first = segment_path(dir, 1);
            fs::rename(&legacy, &first).map_err(|e| LogError::io(&legacy, e))?;
            store.sync_dir()?;
            seqs.push(1);
        }
        if let Some(pair) = seqs.windows(2).find(|w| w[1] != w[0] + 1) {
            return Err(store.corrupt(
                &segment_path(dir, pair[1]),
                0,
                &format!(
                    "segment {:x} follows segment {:x}: the segments between are missing",
                    pair[1], pair[0]
                ),
            ));
        }
        if seqs.is_empty() {
            store.create_segment(
                1,
                Base {
                    next_index: 1,
                    prev_term: 0,
                    reset: false,
                },
            )?;
        } else {
            store.replay_all(&seqs)?;
            if store.prev_term_unknown {
                return Err(store.corrupt(
                    dir,
                    0,
                    &format!(
                        "the log starts at entry {} but the term before it is not recorded: \
                         a segment is missing",
                        store.first_index
                    ),
                ));
            }
        }
        store.delete_obsolete_segments()?;
        store.allocate_ahead()?;
        Ok(store)
    }

    fn replay_all(&mut self, seqs: &[u64]) -> Result<()> {
        for (k, &seq) in seqs.iter().enumerate() {
            let last = k + 1 == seqs.len();
            let path = segment_path(&self.dir, seq);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| LogError::io(&path, e))?;
            let file_len = file.metadata().map_err(|e| LogError::io(&path, e))?.len();
            if file_len < format::FILE_HEADER_LEN {
                if !last {
                    return Err(self.corrupt(&path, 0, "segment is shorter than its header"));
                }
                check_header_prefix(&file, &path, file_len)?;
                if k == 0 {
                    // The very first segment was being created: start it again.
                    drop(file);
                    fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
                    return self.create_segment(
                        seq,
                        Base {
                            next_index: 1,
                            prev_term: 0,
                            reset: false,
                        },
                    );
                }
                // A new segment was being created when the process stopped; the one
                // before it is still complete.
                drop(file);
                self.remove_segment_file(&path)?;
                break;
            }
            let (len, records) = self.replay_segment(seq, &path, &file, file_len, k == 0, last)?;
            if records == 0 && !(k == 0 && seq == 1) {
                // The header alone: a segment whose creation was cut short (its first
                // record holds its base). Nothing was ever written after it.
                if !last || k == 0 {
                    return Err(self.corrupt(&path, len, "segment holds no records"));
                }
                drop(file);
                self.remove_segment_file(&path)?;
                break;
            }
            self.report.segments += 1;
            self.segments.push_back(Segment {
                seq,
                path,
                file,
                len,
                zeroed: len,
            });
        }
        Ok(())
    }

    /// Replays one segment and returns the length of its valid part and the number of
    /// records in it.
    fn replay_segment(
        &mut self,
        seq: u64,
        path: &Path,
        file: &File,
        len: u64,
        first_segment: bool,
        last_segment: bool,
    ) -> Result<(u64, u64)> {
        let reader_file = file.try_clone().map_err(|e| LogError::io(path, e))?;
        let mut reader = BufReader::with_capacity(1 << 20, reader_file);
        let mut header = [0u8; format::FILE_HEADER_LEN as usize];
        reader
            .read_exact(&mut header)
            .map_err(|e| LogError::io(path, e))?;
        if &header[..8] != format::MAGIC {
            return Err(self.corrupt(path, 0, "not a sqlraft log (bad magic)"));
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if version != format::VERSION {
            return Err(self.corrupt(
                path,
                0,
                &format!("unsupported log format version {version}"),
            ));
        }

        let mut offset = format::FILE_HEADER_LEN;
        let mut payload = Vec::new();
        let one_write = (self.options.max_write_bytes + RECORD_HEADER_LEN) as u64;
        let mut first_item = true;
        let mut records = 0u64;
        // Where the records end, and the torn write that follows them (to where its
        // bytes end), if any.
        let torn_at = loop {
            if offset == len {
                break None;
            }
            // What follows a record that does not read back: the space allocated ahead
            // (zeros), or what a crash left of the last write, or damage.
            // `reach`: how far the write that began here could have gone, and whether
            // all of that is one record's own (its header is intact).
            let tail =
                move |store: &Self, reach: Reach, damage: &str| -> Result<Option<(u64, u64)>> {
                    match store.tail_after(path, offset, len, reach)? {
                        Tail::Unwritten => Ok(None),
                        Tail::Torn { written_end } => Ok(Some((offset, written_end))),
                        Tail::Damaged => Err(store.corrupt(path, offset, damage)),
                    }
                };
            if len - offset < RECORD_HEADER_LEN as u64 {
                break tail(
                    self,
                    Reach::OneWrite(offset + one_write),
                    "damaged record header",
                )?;
            }
            let mut head = [0u8; RECORD_HEADER_LEN];
            reader
                .read_exact(&mut head)
                .map_err(|e| LogError::io(path, e))?;
            let Some(record) = format::parse_record_header(&head) else {
                break tail(
                    self,
                    Reach::OneWrite(offset + one_write),
                    "record header checksum mismatch",
                )?;
            };
            if record.len > format::MAX_RECORD_BYTES {
                return Err(self.corrupt(path, offset, "record length out of range"));
            }
            let record_end = offset + RECORD_HEADER_LEN as u64 + u64::from(record.len);
            if record_end > len {
                break Some((offset, len));
            }
            payload.resize(record.len as usize, 0);
            reader
                .read_exact(&mut payload)
                .map_err(|e| LogError::io(path, e))?;
            if crc32fast::hash(&payload) != record.payload_crc {
                // The header is intact: the write that began here ended at its end,
                // and everything up to there is this record's, whatever it holds.
                break tail(self, Reach::Record(record_end), "record checksum mismatch")?;
            }
            let items = format::decode_items(&payload, offset + RECORD_HEADER_LEN as u64)
                .map_err(|reason| self.corrupt(path, offset, &reason))?;
            for item in items {
                let is_base = matches!(item, Item::Base(_));
                if is_base && !first_item {
                    return Err(self.corrupt(path, offset, "a segment base inside a segment"));
                }
                if first_item && !is_base && !(first_segment && seq == 1) {
                    // Only a log from before segments (taken over as segment 1) starts
                    // without a base.
                    return Err(self.corrupt(path, offset, "segment does not start with its base"));
                }
                first_item = false;
                self.replay_item(item, seq, first_segment)
                    .map_err(|reason| self.corrupt(path, offset, &reason))?;
            }
            self.report.records += 1;
            records += 1;
            offset = record_end;
        };
        drop(reader);

        if let Some((at, torn_end)) = torn_at {
            if !last_segment {
                return Err(self.corrupt(
                    path,
                    at,
                    "damaged record at the end of a closed segment",
                ));
            }
            tracing::warn!(path = %path.display(), offset = at, bytes = torn_end - at,
                "cutting off a torn final record left by a crash");
            // Cut to the last record (the space ahead is allocated again once open).
            file.set_len(at)
                .and_then(|()| file.sync_all())
                .map_err(|e| LogError::io(path, e))?;
            self.report.torn_bytes = torn_end - at;
            offset = at;
        }
        Ok((offset, records))
    }

    /// What the bytes from `offset` (where no intact record starts) to `len` are.
    ///
    /// Zeros only: space allocated ahead of the records (or by the file system) and
    /// never written, the normal end of a segment. Otherwise the bytes up to the last
    /// one that is not zero must be what is left of one interrupted write: within
    /// `reach` (as far as that write could have gone) and, unless all of it is one
    /// record whose header is intact, holding no intact record. A crash may leave any
    /// of the write's blocks unwritten (zero), its first included.
    fn tail_after(&self, path: &Path, offset: u64, len: u64, reach: Reach) -> Result<Tail> {
        let (reach, own_record) = match reach {
            Reach::Record(end) => (end, true),
            Reach::OneWrite(end) => (end, false),
        };
        let mut written_end = offset;
        let mut chunk = vec![0u8; TAIL_SCAN_CHUNK.min((len - offset) as usize)];
        // Its own handle: seeking must not move the replay's reader.
        let scan = File::open(path).map_err(|e| LogError::io(path, e))?;
        let mut at = offset;
        loop {
            at = next_data(&scan, at, len);
            if at >= len {
                break;
            }
            let n = chunk.len().min((len - at) as usize);
            scan.read_exact_at(&mut chunk[..n], at)
                .map_err(|e| LogError::io(path, e))?;
            if let Some(last) = last_non_zero(&chunk[..n]) {
                written_end = at + last as u64 + 1;
                if written_end > reach {
                    return Ok(Tail::Damaged);
                }
            }
            at += n as u64;
        }
        if written_end == offset {
            return Ok(Tail::Unwritten);
        }
        if own_record {
            // What looks like a record inside it is the torn record's own data (a
            // client's value may hold such bytes): a header that its checksum
            // vouches for cannot overlap a real record.
            return Ok(Tail::Torn { written_end });
        }
        // Any record starting before `written_end` may end in zero bytes after it (a
        // compaction mark ends with a term's high zero bytes): look at it whole.
        let seen_end = len.min(written_end + RECORD_HEADER_LEN as u64);
        let mut bytes = vec![0u8; (seen_end - offset) as usize];
        scan.read_exact_at(&mut bytes, offset)
            .map_err(|e| LogError::io(path, e))?;
        for at in 1..written_end - offset {
            if intact_record_in(
                &scan,
                path,
                &bytes,
                offset,
                at,
                len,
                self.options.max_write_bytes,
            )? {
                return Ok(Tail::Damaged);
            }
        }
        Ok(Tail::Torn { written_end })
    }

    fn replay_item(
        &mut self,
        item: Item,
        seq: u64,
        first_segment: bool,
    ) -> std::result::Result<(), String> {
        match item {
            Item::Entry { entry, pos, len } => {
                if entry.index < self.first_index && first_segment {
                    // The oldest segment left began at the log's end then; this write
                    // replaced a conflicting suffix below it. What came before was
                    // compacted away, and the compaction mark that allowed deleting
                    // it follows (checked at the end of the replay).
                    self.locs.clear();
                    self.first_index = entry.index;
                    self.prev_term_unknown = true;
                }
                let last = self.last();
                if entry.index < self.first_index || entry.index > last + 1 {
                    return Err(format!(
                        "entry {} does not follow the log [{}, {}]",
                        entry.index, self.first_index, last
                    ));
                }
                self.locs
                    .truncate((entry.index - self.first_index) as usize);
                self.locs.push_back(EntryLoc {
                    seq,
                    pos,
                    len,
                    term: entry.term,
                });
            }
            Item::HardState(hs) => self.hard_state = hs,
            Item::ConfState(cs) => self.conf_state = cs,
            Item::Base(base) => {
                if first_segment || base.reset {
                    self.locs.clear();
                    self.first_index = base.next_index;
                    self.prev_term = base.prev_term;
                } else if base.next_index > self.last() + 1 || base.next_index < self.first_index {
                    return Err(format!(
                        "segment starts at entry {} but the log before it holds [{}, {}]: \
                         a segment is missing or was replaced",
                        base.next_index,
                        self.first_index,
                        self.last()
                    ));
                } else {
                    // A segment started by a write that replaced a conflicting suffix
                    // begins below the end of the one before: what follows replaces it.
                    let known = self.term_of(base.next_index - 1);
                    if known.is_some_and(|t| t != base.prev_term) {
                        return Err(format!(
                            "segment starts after entry {} of term {}, but that entry has \
                             term {known:?}",
                            base.next_index - 1,
                            base.prev_term
                        ));
                    }
                    self.locs
                        .truncate((base.next_index - self.first_index) as usize);
                }
            }
            Item::Compact(Compact { index, term }) => {
                if index + 1 < self.first_index {
                    return Ok(());
                }
                if index > self.last() {
                    return Err(format!(
                        "compaction to {index} beyond the log's last entry {}",
                        self.last()
                    ));
                }
                let known = if self.prev_term_unknown && index + 1 == self.first_index {
                    term
                } else {
                    self.term_of(index).unwrap_or(term)
                };
                if known != term {
                    return Err(format!(
                        "compaction to {index} in term {term}, but that entry has term {known}"
                    ));
                }
                self.drop_front_to(index, term);
            }
        }
        Ok(())
    }

    fn corrupt(&self, path: &Path, offset: u64, reason: &str) -> LogError {
        LogError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason: reason.to_string(),
        }
    }

    fn last(&self) -> u64 {
        self.first_index + self.locs.len() as u64 - 1
    }

    fn term_of(&self, index: u64) -> Option<u64> {
        if index + 1 == self.first_index {
            return Some(self.prev_term);
        }
        index
            .checked_sub(self.first_index)
            .and_then(|k| self.locs.get(k as usize))
            .map(|l| l.term)
    }

    /// Forgets entries up to `index` (term `term`) in memory.
    fn drop_front_to(&mut self, index: u64, term: u64) {
        self.prev_term_unknown = false;
        let drop = ((index + 1).saturating_sub(self.first_index) as usize).min(self.locs.len());
        self.locs.drain(..drop);
        self.first_index = index + 1;
        self.prev_term = term;
        // The cache holds the newest entries, never more than the log.
        while self.cache.len() > self.locs.len() {
            if let Some(e) = self.cache.pop_front() {
                self.cached_bytes -= cached_size(&e);
            }
        }
    }

    // ---- file operations -------------------------------------------------------

    /// Counts a file operation for the crash test hook; `Err` means "the process died
    /// before this operation".
    fn file_op(&mut self) -> Result<()> {
        #[cfg(feature = "testing")]
        if let Some(budget) = &self.options.crash_after_file_ops
            && budget.fetch_sub(1, Ordering::SeqCst) <= 0
        {
            self.poisoned = true;
            return Err(LogError::io(
                &self.dir,
                std::io::Error::other("simulated crash (test hook)"),
            ));
        }
        Ok(())
    }

    fn sync_dir(&mut self) -> Result<()> {
        self.file_op()?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| LogError::io(&self.dir, e))
    }

    fn remove_segment_file(&mut self, path: &Path) -> Result<()> {
        self.file_op()?;
        fs::remove_file(path).map_err(|e| LogError::io(path, e))?;
        self.sync_dir()
    }

    /// Creates segment `seq`, starting with `base`, the hard state and the conf state,
    /// makes it and its directory entry durable, and makes it the active segment.
    fn create_segment(&mut self, seq: u64, base: Base) -> Result<()> {
        let path = segment_path(&self.dir, seq);
        self.file_op()?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        let mut record = RecordBuilder::new();
        record.base(base);
        record.hard_state(&self.hard_state);
        record.conf_state(&self.conf_state);
        let mut bytes = format::file_header().to_vec();
        bytes.extend_from_slice(&record.finish());
        self.file_op()?;
        file.write_all_at(&bytes, 0)
            .and_then(|()| file.sync_all())
            .map_err(|e| LogError::io(&path, e))?;
        self.sync_dir()?;
        self.commit_dirty = false;
        self.segments.push_back(Segment {
            seq,
            path,
            file,
            len: bytes.len() as u64,
            zeroed: bytes.len() as u64,
        });
        self.allocate_ahead()
    }

    /// Allocates the active segment's file up to `segment_bytes`, so that a write and
    /// its `fdatasync` land in space the file already has: the file's size does not
    /// change, so the sync has no size to record (etcd preallocates its WAL files for
    /// the same reason). Replay reads the zeros after the last record as the end.
    ///
    /// Only a speed-up: where the file system cannot allocate ahead (no `fallocate`,
    /// or no space left now), writes extend the file as they go, as without it.
    fn allocate_ahead(&mut self) -> Result<()> {
        let Some(segment) = self.segments.back() else {
            return Ok(());
        };
        let Ok(size) = segment.file.metadata().map(|m| m.len()) else {
            return Ok(());
        };
        if size >= self.options.segment_bytes {
            return Ok(());
        }
        self.file_op()?;
        let Some(segment) = self.segments.back() else {
            return Ok(());
        };
        if let Err(e) = allocate(&segment.file, self.options.segment_bytes) {
            tracing::debug!(path = %segment.path.display(), error = %e,
                "cannot allocate the log segment ahead; it grows as it is written");
        }
        Ok(())
    }

    /// Closes the active segment and starts the next one.
    fn roll(&mut self, base: Base) -> Result<()> {
        let seq = self.segments.back().map_or(1, |s| s.seq + 1);
        self.trim_active()
            .and_then(|()| self.create_segment(seq, base))
            .inspect_err(|_| self.poisoned = true)
    }

    /// Gives back the space allocated ahead and never written when the active segment
    /// is closed before it filled (a snapshot installed): a closed segment then ends
    /// with its last record, as versions before allocation ahead expect.
    fn trim_active(&mut self) -> Result<()> {
        let Some(segment) = self.segments.back() else {
            return Ok(());
        };
        let size = segment
            .file
            .metadata()
            .map_err(|e| LogError::io(&segment.path, e))?
            .len();
        if size <= segment.len {
            return Ok(());
        }
        self.file_op()?;
        let segment = self.segments.back().ok_or(LogError::Poisoned)?;
        segment
            .file
            .set_len(segment.len)
            .and_then(|()| segment.file.sync_all())
            .map_err(|e| LogError::io(&segment.path, e))
    }

    /// Deletes the segments before the one holding the oldest entry not compacted (all
    /// but the active one when every entry is compacted), oldest first, so that a crash
    /// in between leaves a contiguous run of segments.
    fn delete_obsolete_segments(&mut self) -> Result<()> {
        let Some(active) = self.segments.back().map(|s| s.seq) else {
            return Ok(());
        };
        let keep_from = self.locs.front().map_or(active, |l| l.seq.min(active));
        let mut deleted = false;
        while self.segments.front().is_some_and(|s| s.seq < keep_from) {
            self.file_op()?;
            let Some(Segment { path, file, .. }) = self.segments.pop_front() else {
                break;
            };
            drop(file);
            fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
            deleted = true;
        }
        if deleted {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn active(&self) -> Result<&Segment> {
        self.segments
            .back()
            .ok_or_else(|| LogError::InvalidWrite("the log has no segment".into()))
    }

    /// Appends one record to the active segment and syncs it; on failure the store is
    /// poisoned. `next_index` is the index of the record's first entry (or of the next
    /// entry when it holds none): a new segment started for it begins there, which is
    /// below the log's end when the record replaces a conflicting suffix. Returns the
    /// segment and offset the record was written at.
    fn append_record(&mut self, bytes: &[u8], next_index: u64) -> Result<(u64, u64)> {
        if self.active()?.len >= self.options.segment_bytes {
            let base = Base {
                next_index,
                prev_term: self.term_of(next_index - 1).unwrap_or(0),
                reset: false,
            };
            self.roll(base)?;
        }
        self.file_op()?;
        let segment = self.segments.back_mut().ok_or(LogError::Poisoned)?;
        let at = segment.len;
        let end = at + bytes.len() as u64;
        let written = segment
            .file
            .write_all_at(bytes, at)
            .and_then(|()| zero_ahead(segment, end, self.options.segment_bytes))
            .and_then(|()| segment.file.sync_data());
        if let Err(e) = written {
            self.poisoned = true;
            // Best effort: keep a half-written record from sitting before later data.
            let _ = segment.file.set_len(at);
            return Err(LogError::io(&segment.path, e));
        }
        segment.len += bytes.len() as u64;
        Ok((segment.seq, at))
    }

    // ---- the public write side --------------------------------------------------

    /// Makes `entries`, `hard_state` and `conf_state` durable together: one record, one
    /// `fdatasync`. Entries must be contiguous and start within `[first_index,
    /// last_index + 1]`; an entry at an index already present replaces that entry and
    /// every later one. Committed entries are never replaced.
    ///
    /// A failed write or sync poisons the store: every later write fails with
    /// [`LogError::Poisoned`].
    pub fn write(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        conf_state: Option<&ConfState>,
    ) -> Result<()> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        if entries.is_empty() && hard_state.is_none() && conf_state.is_none() {
            return Ok(());
        }
        self.check_entries(entries, hard_state)?;
        // A commit index noted since the last write rides along with this one.
        let lazy_hs = (hard_state.is_none() && self.commit_dirty).then(|| self.hard_state.clone());
        let hard_state = hard_state.or(lazy_hs.as_ref());

        let mut record = RecordBuilder::new();
        let spans: Vec<(u64, u32)> = entries.iter().map(|e| record.entry(e)).collect();
        if let Some(hs) = hard_state {
            record.hard_state(hs);
        }
        if let Some(cs) = conf_state {
            record.conf_state(cs);
        }
        if record.payload_len() > self.options.max_write_bytes {
            return Err(LogError::InvalidWrite(format!(
                "write of {} bytes exceeds the limit of {} bytes",
                record.payload_len(),
                self.options.max_write_bytes
            )));
        }
        let bytes = record.finish();
        let next_index = entries.first().map_or(self.last() + 1, |e| e.index);
        let (seq, base) = self.append_record(&bytes, next_index)?;

        if let Some(first) = entries.first() {
            self.truncate_from(first.index);
            for (entry, (at, len)) in entries.iter().zip(spans) {
                self.locs.push_back(EntryLoc {
                    seq,
                    pos: base + at,
                    len,
                    term: entry.term,
                });
                self.cache_push(entry.clone());
            }
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs.clone();
            self.commit_dirty = false;
        }
        if let Some(cs) = conf_state {
            self.conf_state = cs.clone();
        }
        #[cfg(feature = "testing")]
        if let Some(observer) = &self.options.on_durable {
            (observer.0)(self.last(), &self.hard_state);
        }
        Ok(())
    }

    /// Compacts the log up to `index`: entries at or below it are dropped, and the
    /// segments that hold nothing else are deleted. `index` must be committed (a
    /// snapshot covering it must exist: the caller's business). Compacting to an index
    /// already compacted does nothing.
    ///
    /// The compaction mark is durable before any segment is deleted; a crash between
    /// the deletions leaves segments that the next [`LogStore::open`] deletes.
    pub fn compact(&mut self, index: u64) -> Result<()> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        if index < self.first_index {
            return Ok(());
        }
        if index > self.last() || index > self.hard_state.commit {
            return Err(LogError::InvalidWrite(format!(
                "cannot compact to {index}: the log ends at {} and commits {}",
                self.last(),
                self.hard_state.commit
            )));
        }
        let term = self.term_of(index).unwrap_or(0);
        let mut record = RecordBuilder::new();
        record.compact(Compact { index, term });
        if self.commit_dirty {
            record.hard_state(&self.hard_state.clone());
        }
        let bytes = record.finish();
        self.append_record(&bytes, self.last() + 1)?;
        self.commit_dirty = false;
        self.drop_front_to(index, term);
        self.delete_obsolete_segments()
            .inspect_err(|_| self.poisoned = true)
    }

    /// Replaces the whole log by a snapshot's position: afterwards the log is empty,
    /// its first index is `meta.index + 1`, the term before it `meta.term`, the conf
    /// state the snapshot's, and the commit index at least `meta.index`. A new segment
    /// starts there (durable before anything is deleted); every older one is deleted.
    pub fn install_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<()> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        if meta.index < self.hard_state.commit {
            return Err(LogError::InvalidWrite(format!(
                "snapshot at {} is behind the commit index {}",
                meta.index, self.hard_state.commit
            )));
        }
        let previous = (self.hard_state.clone(), self.conf_state.clone());
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.get_conf_state().clone();
        let base = Base {
            next_index: meta.index + 1,
            prev_term: meta.term,
            reset: true,
        };
        if let Err(e) = self.roll(base) {
            (self.hard_state, self.conf_state) = previous;
            return Err(e);
        }
        self.locs.clear();
        self.cache.clear();
        self.cached_bytes = 0;
        self.first_index = meta.index + 1;
        self.prev_term = meta.term;
        self.delete_obsolete_segments()
            .inspect_err(|_| self.poisoned = true)
    }

    /// The compaction point that keeps at most `max_bytes` of entries up to `upto`: the
    /// entries after it, to `upto`, add up to no more than that (at least the entry at
    /// `upto` itself is dropped from the count). Never below the current compaction
    /// point.
    pub fn index_keeping_bytes(&self, upto: u64, max_bytes: u64) -> u64 {
        let upto = upto.min(self.last());
        let mut kept = 0u64;
        let mut index = upto;
        while index >= self.first_index {
            let len = u64::from(self.locs[(index - self.first_index) as usize].len);
            if kept + len > max_bytes {
                return index;
            }
            kept += len;
            index -= 1;
        }
        self.first_index - 1
    }

    /// Offers `snapshot` to followers that are behind the first index (see
    /// [`Storage::snapshot`]). Its data is the caller's description of the snapshot;
    /// the store only hands it to raft.
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        self.snapshot = Some(snapshot);
    }

    /// True (once) when raft asked for a snapshot that was not there, or did not cover
    /// what it needed: a newer one should be made.
    pub fn take_snapshot_request(&self) -> bool {
        self.snapshot_wanted.swap(false, Ordering::Relaxed)
    }

    /// Notes a new commit index without a write of its own: it is written with the
    /// next [`LogStore::write`]. Losing it in a crash is harmless: raft learns the
    /// commit index again from the leader, and the state machine's applied index is
    /// used as a floor at start ([`LogStore::raise_commit_unpersisted`]).
    pub fn note_commit(&mut self, commit: u64) {
        if commit > self.hard_state.commit {
            self.hard_state.commit = commit;
            self.commit_dirty = true;
        }
    }

    fn check_entries(&self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let last = self.last();
        if first.index < self.first_index || first.index > last + 1 {
            return Err(LogError::InvalidWrite(format!(
                "entry {} does not follow the log [{}, {}]",
                first.index, self.first_index, last
            )));
        }
        if let Some(pair) = entries.windows(2).find(|w| w[1].index != w[0].index + 1) {
            return Err(LogError::InvalidWrite(format!(
                "entries are not contiguous: {} then {}",
                pair[0].index, pair[1].index
            )));
        }
        let commit = hard_state.map_or(self.hard_state.commit, |hs| hs.commit);
        if first.index <= last && first.index <= self.hard_state.commit.min(commit) {
            return Err(LogError::InvalidWrite(format!(
                "entry {} would replace a committed entry (commit index {})",
                first.index, self.hard_state.commit
            )));
        }
        Ok(())
    }

    /// Drops entries with index >= `index` from the index and the cache.
    fn truncate_from(&mut self, index: u64) {
        let keep = (index - self.first_index) as usize;
        if keep >= self.locs.len() {
            return;
        }
        let dropped = self.locs.len() - keep;
        self.locs.truncate(keep);
        for _ in 0..dropped.min(self.cache.len()) {
            if let Some(e) = self.cache.pop_back() {
                self.cached_bytes -= cached_size(&e);
            }
        }
    }

    fn cache_push(&mut self, entry: Entry) {
        self.cached_bytes += cached_size(&entry);
        self.cache.push_back(entry);
        while self.cached_bytes > self.options.cache_bytes && self.cache.len() > 1 {
            if let Some(e) = self.cache.pop_front() {
                self.cached_bytes -= cached_size(&e);
            }
        }
    }

    /// Current hard state (as last written).
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Current conf state (as last written).
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Replaces the conf state returned by `initial_state` without writing it. A node
    /// whose state machine keeps the conf state of its applied index uses this at start.
    pub fn set_conf_state_unpersisted(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Replaces the commit index returned by `initial_state` without writing it. Used
    /// at start when the state machine has applied further than the persisted commit
    /// index (commit indexes are persisted lazily; applied entries were committed).
    pub fn raise_commit_unpersisted(&mut self, commit: u64) {
        if commit > self.hard_state.commit && commit <= self.last() {
            self.hard_state.commit = commit;
        }
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the segment written to.
    pub fn path(&self) -> &Path {
        self.segments
            .back()
            .map_or(self.dir.as_path(), |s| s.path.as_path())
    }

    /// What opening the files found.
    pub fn load_report(&self) -> &LoadReport {
        &self.report
    }

    /// Bytes of the segment files that hold records.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Where the next record of the active segment goes: the end of its written part.
    /// The file itself is longer while space allocated ahead is left.
    pub fn tail_end(&self) -> u64 {
        self.segments.back().map_or(0, |s| s.len)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn read_entry(&self, index: u64) -> raft::Result<Entry> {
        let store_err = |e: Box<dyn std::error::Error + Send + Sync>| {
            raft::Error::Store(StorageError::Other(e))
        };
        let cache_first = self.last() + 1 - self.cache.len() as u64;
        if index >= cache_first {
            return Ok(self.cache[(index - cache_first) as usize].clone());
        }
        let loc = self.locs[(index - self.first_index) as usize];
        let first_seq = self.segments.front().map_or(0, |s| s.seq);
        let Some(segment) = loc
            .seq
            .checked_sub(first_seq)
            .and_then(|k| self.segments.get(k as usize))
        else {
            let err = self.corrupt(
                &self.dir,
                loc.pos,
                &format!("segment {:x} is gone", loc.seq),
            );
            return Err(store_err(Box::new(err)));
        };
        let mut buf = vec![0u8; loc.len as usize];
        segment
            .file
            .read_exact_at(&mut buf, loc.pos)
            .map_err(|e| store_err(Box::new(e)))?;
        let entry = format::decode_entry(&buf).map_err(|e| store_err(Box::new(e)))?;
        if entry.index != index {
            let err = self.corrupt(
                &segment.path,
                loc.pos,
                &format!("expected entry {index}, found {}", entry.index),
            );
            return Err(store_err(Box::new(err)));
        }
        Ok(entry)
    }
}

/// How far a write that began where a record does not read back could have gone.
#[derive(Clone, Copy)]
enum Reach {
    /// To the end of the record its intact header announces: all of it that record's.
    Record(u64),
    /// One write's length: the header is damaged or was never written.
    OneWrite(u64),
}

/// What replay finds after the last record of a segment that reads back.
enum Tail {
    /// Zeros only: allocated, never written.
    Unwritten,
    /// What a crash left of the last write, which ends at `written_end` (zeros after).
    Torn { written_end: u64 },
    /// Damage: more than one write, or an intact record after a damaged one.
    Damaged,
}

/// Bytes read at a time while looking for the end of a segment's written part.
const TAIL_SCAN_CHUNK: usize = 1 << 20;

/// The first offset from `at` on where `file` may hold data (not a hole, nor space
/// allocated and never written), or `len` when there is none before it. File systems
/// that cannot tell answer `at` itself, and the bytes are read.
fn next_data(file: &File, at: u64, len: u64) -> u64 {
    #[cfg(target_os = "linux")]
    {
        let Ok(from) = i64::try_from(at) else {
            return at;
        };
        match nix::unistd::lseek(file, from, nix::unistd::Whence::SeekData) {
            Ok(data) => u64::try_from(data).map_or(at, |data| data.clamp(at, len)),
            Err(nix::errno::Errno::ENXIO) => len,
            Err(_) => at,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, len);
        at
    }
}

/// Whether a record this store could have written starts `at` bytes into `bytes`
/// (which hold the file from `start`; the file is `len` long): its checksums match,
/// it is no longer than one write, and it holds items. Its header comes from `bytes`,
/// its payload from `bytes` or, where it runs past them, from the file.
fn intact_record_in(
    file: &File,
    path: &Path,
    bytes: &[u8],
    start: u64,
    at: u64,
    len: u64,
    max_write_bytes: usize,
) -> Result<bool> {
    let at = at as usize;
    let Some(head) = bytes
        .get(at..at + RECORD_HEADER_LEN)
        .and_then(|h| <&[u8; RECORD_HEADER_LEN]>::try_from(h).ok())
    else {
        return Ok(false);
    };
    let Some(record) = format::parse_record_header(head) else {
        return Ok(false);
    };
    if record.len == 0 || record.len as usize > max_write_bytes {
        return Ok(false);
    }
    let payload_at = at + RECORD_HEADER_LEN;
    let payload_end = payload_at as u64 + u64::from(record.len);
    if start + payload_end > len {
        return Ok(false);
    }
    let intact = |payload: &[u8]| {
        crc32fast::hash(payload) == record.payload_crc
            && format::decode_items(payload, 0).is_ok_and(|items| !items.is_empty())
    };
    if let Some(payload) = bytes.get(payload_at..payload_end as usize) {
        return Ok(intact(payload));
    }
    let mut payload = vec![0u8; record.len as usize];
    file.read_exact_at(&mut payload, start + payload_at as u64)
        .map_err(|e| LogError::io(path, e))?;
    Ok(intact(&payload))
}

/// The position of the last byte of `bytes` that is not zero.
fn last_non_zero(bytes: &[u8]) -> Option<usize> {
    let words = bytes.chunks_exact(8);
    let rest_start = bytes.len() - words.remainder().len();
    if let Some(k) = bytes[rest_start..].iter().rposition(|&b| b != 0) {
        return Some(rest_start + k);
    }
    let word = words.rev().position(|w| {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        u64::from_ne_bytes(word) != 0
    })?;
    let start = rest_start - (word + 1) * 8;
    bytes[start..start + 8]
        .iter()
        .rposition(|&b| b != 0)
        .map(|k| start + k)
}

/// Writes zeros after `end`, the end of the record just written, up to [`ZERO_AHEAD`]
/// bytes past it (not past `segment_bytes`), when fewer than half of those are zeros
/// written already. Never over a record: only from `end` on.
fn zero_ahead(segment: &mut Segment, end: u64, segment_bytes: u64) -> std::io::Result<()> {
    if segment.zeroed >= end + ZERO_AHEAD / 2 || segment.zeroed >= segment_bytes {
        return Ok(());
    }
    let from = segment.zeroed.max(end);
    let to = (end + ZERO_AHEAD).min(segment_bytes);
    if to > from {
        let zeros = vec![0u8; (to - from) as usize];
        segment.file.write_all_at(&zeros, from)?;
    }
    segment.zeroed = to.max(end);
    Ok(())
}

/// What a cached entry takes in memory, as the cache counts it.
fn cached_size(entry: &Entry) -> usize {
    std::mem::size_of::<Entry>() + entry.data.len() + entry.context.len()
}

/// Allocates `file`'s blocks up to `size` bytes, zero to read (`fallocate`, mode 0:
/// the file's size becomes `size` when it was smaller).
#[cfg(target_os = "linux")]
fn allocate(file: &File, size: u64) -> std::io::Result<()> {
    let size = i64::try_from(size).map_err(std::io::Error::other)?;
    nix::fcntl::fallocate(file, nix::fcntl::FallocateFlags::empty(), 0, size)
        .map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn allocate(_file: &File, _size: u64) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// A segment shorter than its header must hold the start of one.
fn check_header_prefix(file: &File, path: &Path, len: u64) -> Result<()> {
    let header = format::file_header();
    let mut start = vec![0u8; len as usize];
    file.read_exact_at(&mut start, 0)
        .map_err(|e| LogError::io(path, e))?;
    if start.iter().zip(header.iter()).any(|(a, b)| a != b) {
        return Err(LogError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: "file is too short to be a sqlraft log".into(),
        });
    }
    Ok(())
}

fn in_conf_state(cs: &ConfState, id: u64) -> bool {
    cs.voters.contains(&id)
        || cs.learners.contains(&id)
        || cs.voters_outgoing.contains(&id)
        || cs.learners_next.contains(&id)
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        for index in low..high {
            let entry = self.read_entry(index)?;
            size += u64::from(entry.encoded_len() as u32);
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx + 1 < self.first_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    /// The snapshot set with [`LogStore::set_snapshot`] when it covers what raft needs:
    /// at least `request_index`, at least the compaction point, and a configuration
    /// that includes `to` (a follower refuses a snapshot it is not part of). Otherwise
    /// it is temporarily unavailable and [`LogStore::take_snapshot_request`] says so.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        match &self.snapshot {
            Some(s)
                if s.get_metadata().index >= request_index
                    && s.get_metadata().index + 1 >= self.first_index
                    && in_conf_state(s.get_metadata().get_conf_state(), to) =>
            {
                Ok(s.clone())
            }
            _ => {
                self.snapshot_wanted.store(true, Ordering::Relaxed);
                Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(dir: &Path) -> Segment {
        let path = dir.join("segment");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create");
        Segment {
            seq: 1,
            path,
            file,
            len: 0,
            zeroed: 0,
        }
    }

    fn read(segment: &Segment, at: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0xffu8; len];
        segment.file.read_exact_at(&mut bytes, at).expect("read");
        bytes
    }

    #[test]
    fn zeros_go_ahead_of_the_records_never_over_them_nor_past_the_segment() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = segment(dir.path());
        let segment_bytes = 3 * ZERO_AHEAD;
        // A record of 100 bytes: zeros follow it for ZERO_AHEAD bytes.
        s.file.write_all_at(&[7u8; 100], 0).expect("record");
        zero_ahead(&mut s, 100, segment_bytes).expect("zero ahead");
        assert_eq!(s.zeroed, 100 + ZERO_AHEAD);
        assert_eq!(
            s.file.metadata().expect("stat").len(),
            100 + ZERO_AHEAD,
            "zeros written, not a hole"
        );
        assert_eq!(read(&s, 0, 100), vec![7u8; 100], "the record is intact");
        assert!(read(&s, 100, ZERO_AHEAD as usize).iter().all(|&b| b == 0));

        // The next records fall in the zeros: nothing is written until fewer than
        // half of ZERO_AHEAD are left ahead of them.
        let end = 100 + ZERO_AHEAD / 2;
        s.file.write_all_at(&[8u8; 64], end - 64).expect("record");
        zero_ahead(&mut s, end, segment_bytes).expect("zero ahead");
        assert_eq!(
            s.zeroed,
            100 + ZERO_AHEAD,
            "half still ahead: nothing written"
        );
        let end = end + 1;
        s.file.write_all_at(&[9u8; 1], end - 1).expect("record");
        zero_ahead(&mut s, end, segment_bytes).expect("zero ahead");
        assert_eq!(s.zeroed, end + ZERO_AHEAD);
        assert_eq!(read(&s, end - 65, 65), [vec![8u8; 64], vec![9u8]].concat());

        // Near the segment's end the zeros stop at segment_bytes; a record past it
        // (larger than what was left) gets none.
        let end = segment_bytes - 10;
        zero_ahead(&mut s, end, segment_bytes).expect("zero ahead");
        assert_eq!(s.zeroed, segment_bytes);
        assert_eq!(s.file.metadata().expect("stat").len(), segment_bytes);
        let end = segment_bytes + 500;
        s.file
            .write_all_at(&[5u8; 510], segment_bytes - 10)
            .expect("record");
        zero_ahead(&mut s, end, segment_bytes).expect("zero ahead");
        assert_eq!(
            s.file.metadata().expect("stat").len(),
            end,
            "nothing past it"
        );
        assert_eq!(read(&s, segment_bytes - 10, 510), vec![5u8; 510]);
    }

    #[test]
    fn a_record_longer_than_the_zeros_ahead_is_not_zeroed_over() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = segment(dir.path());
        zero_ahead(&mut s, 0, 8 * ZERO_AHEAD).expect("zero ahead");
        assert_eq!(s.zeroed, ZERO_AHEAD);
        // One record from 10 to past the zeros written.
        let end = ZERO_AHEAD + 300;
        s.file
            .write_all_at(&vec![3u8; (end - 10) as usize], 10)
            .expect("record");
        zero_ahead(&mut s, end, 8 * ZERO_AHEAD).expect("zero ahead");
        assert_eq!(s.zeroed, end + ZERO_AHEAD);
        assert!(read(&s, 10, (end - 10) as usize).iter().all(|&b| b == 3));
        assert!(read(&s, end, ZERO_AHEAD as usize).iter().all(|&b| b == 0));
    }
}
