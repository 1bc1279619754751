use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use prost_011::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::error::{LogError, Result};
use crate::format::{self, Item, RECORD_HEADER_LEN, RecordBuilder};

/// Name of the log file inside the directory given to [`LogStore::open`].
pub const LOG_FILE_NAME: &str = "wal";

/// Limits of a [`LogStore`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Bytes of recent entries kept in memory to serve appends to followers without
    /// reading the file. Older entries are read back from the file.
    pub cache_bytes: usize,
    /// Largest single write accepted, in bytes.
    pub max_write_bytes: usize,
    /// Test hook: told after every write is durable (fsynced).
    #[cfg(feature = "testing")]
    pub on_durable: Option<DurableObserver>,
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
            cache_bytes: 16 << 20,
            max_write_bytes: 256 << 20,
            #[cfg(feature = "testing")]
            on_durable: None,
        }
    }
}

/// Where an entry lives in the file; the entry itself is read back on demand.
#[derive(Debug, Clone, Copy)]
struct EntryLoc {
    pos: u64,
    len: u32,
    term: u64,
}

/// What loading the file found, for logging and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Records read back intact.
    pub records: u64,
    /// Bytes of a torn final record that were cut off the end of the file.
    pub torn_bytes: u64,
}

/// Durable raft log: entries, hard state and conf state in one append-only file.
///
/// Every [`LogStore::write`] appends one checksummed record and calls `fdatasync` once,
/// so the entries and hard state of one raft `Ready` become durable together. An entry
/// whose index is already in the log replaces it and everything after it (raft's
/// conflicting suffix); replay applies the same rule, so any prefix of the file loads
/// to a valid log. Memory holds a small position index per entry and a bounded cache of
/// recent entries, not the log.
pub struct LogStore {
    path: PathBuf,
    file: File,
    /// Where the next record goes; bytes beyond it are never read.
    end: u64,
    /// Index of `locs[0]`. There are no snapshots yet, so this is 1.
    first_index: u64,
    locs: Vec<EntryLoc>,
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
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, replaying the file. A torn final record,
    /// left by a crash in the middle of a write, is cut off; damage anywhere else is
    /// reported as [`LogError::Corrupt`] and nothing is changed.
    pub fn open(dir: &Path, options: LogOptions) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let path = dir.join(LOG_FILE_NAME);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(LogError::Locked { path }),
            Err(fs::TryLockError::Error(e)) => return Err(LogError::io(&path, e)),
        }
        let mut store = LogStore {
            path,
            file,
            end: format::FILE_HEADER_LEN,
            first_index: 1,
            locs: Vec::new(),
            cache: VecDeque::new(),
            cached_bytes: 0,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            commit_dirty: false,
            poisoned: false,
            options,
            report: LoadReport::default(),
        };
        let len = store.file_len()?;
        if len < format::FILE_HEADER_LEN {
            store.create_header(existed, len)?;
        } else {
            store.replay(len)?;
        }
        Ok(store)
    }

    fn file_len(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(|e| LogError::io(&self.path, e))?
            .len())
    }

    /// Writes the file header of a new log. A shorter file can only be a crash during
    /// creation, and then it holds nothing but a piece of the header.
    fn create_header(&mut self, existed: bool, len: u64) -> Result<()> {
        let header = format::file_header();
        if len > 0 {
            let mut start = vec![0u8; len as usize];
            self.file
                .read_exact_at(&mut start, 0)
                .map_err(|e| LogError::io(&self.path, e))?;
            if start.iter().zip(header.iter()).any(|(a, b)| a != b) {
                return Err(self.corrupt(0, "file is too short to be a sqlraft log"));
            }
        }
        self.file
            .set_len(0)
            .and_then(|()| self.file.write_all_at(&header, 0))
            .and_then(|()| self.file.sync_all())
            .map_err(|e| LogError::io(&self.path, e))?;
        if !existed && let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| LogError::io(dir, e))?;
        }
        Ok(())
    }

    fn replay(&mut self, len: u64) -> Result<()> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| LogError::io(&self.path, e))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut header = [0u8; format::FILE_HEADER_LEN as usize];
        reader
            .read_exact(&mut header)
            .map_err(|e| LogError::io(&self.path, e))?;
        if &header[..8] != format::MAGIC {
            return Err(self.corrupt(0, "not a sqlraft log (bad magic)"));
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if version != format::VERSION {
            return Err(self.corrupt(0, &format!("unsupported log format version {version}")));
        }

        let mut offset = format::FILE_HEADER_LEN;
        let mut payload = Vec::new();
        let torn_at = loop {
            if offset == len {
                break None;
            }
            if len - offset < RECORD_HEADER_LEN as u64 {
                break Some(offset);
            }
            let mut head = [0u8; RECORD_HEADER_LEN];
            reader
                .read_exact(&mut head)
                .map_err(|e| LogError::io(&self.path, e))?;
            let Some(record) = format::parse_record_header(&head) else {
                // A crash may leave allocated but unwritten (zero) blocks at the end, or
                // an unwritten first block of the last record with later blocks of it on
                // disk. Either way nothing valid follows, and it is no more than one
                // write: a torn tail. A valid record after it means damage in the middle.
                if self.is_torn_tail(offset, len)? {
                    break Some(offset);
                }
                return Err(self.corrupt(offset, "record header checksum mismatch"));
            };
            if record.len > format::MAX_RECORD_BYTES {
                return Err(self.corrupt(offset, "record length out of range"));
            }
            let record_end = offset + RECORD_HEADER_LEN as u64 + u64::from(record.len);
            if record_end > len {
                break Some(offset);
            }
            payload.resize(record.len as usize, 0);
            reader
                .read_exact(&mut payload)
                .map_err(|e| LogError::io(&self.path, e))?;
            if crc32fast::hash(&payload) != record.payload_crc {
                if record_end == len {
                    break Some(offset);
                }
                return Err(self.corrupt(offset, "record checksum mismatch"));
            }
            let items = format::decode_items(&payload, offset + RECORD_HEADER_LEN as u64)
                .map_err(|reason| self.corrupt(offset, &reason))?;
            for item in items {
                self.replay_item(item)
                    .map_err(|reason| self.corrupt(offset, &reason))?;
            }
            self.report.records += 1;
            offset = record_end;
        };
        drop(reader);

        if let Some(at) = torn_at {
            tracing::warn!(path = %self.path.display(), offset = at, bytes = len - at,
                "cutting off a torn final record left by a crash");
            self.file
                .set_len(at)
                .and_then(|()| self.file.sync_all())
                .map_err(|e| LogError::io(&self.path, e))?;
            self.report.torn_bytes = len - at;
            offset = at;
        }
        self.end = offset;
        Ok(())
    }

    /// Whether the bytes from `offset` (where a record header is damaged) to `len` can
    /// be what is left of one interrupted write: at most one write long, and holding
    /// no intact record.
    fn is_torn_tail(&self, offset: u64, len: u64) -> Result<bool> {
        let rest = len - offset;
        if rest > (self.options.max_write_bytes + RECORD_HEADER_LEN) as u64 {
            return Ok(false);
        }
        let mut bytes = vec![0u8; rest as usize];
        self.file
            .read_exact_at(&mut bytes, offset)
            .map_err(|e| LogError::io(&self.path, e))?;
        Ok(!(1..bytes.len()).any(|at| format::intact_record_at(&bytes[at..])))
    }

    fn replay_item(&mut self, item: Item) -> std::result::Result<(), String> {
        match item {
            Item::Entry { entry, pos, len } => {
                let last = self.last();
                if entry.index < self.first_index || entry.index > last + 1 {
                    return Err(format!(
                        "entry {} does not follow the log [{}, {}]",
                        entry.index, self.first_index, last
                    ));
                }
                self.locs
                    .truncate((entry.index - self.first_index) as usize);
                self.locs.push(EntryLoc {
                    pos,
                    len,
                    term: entry.term,
                });
            }
            Item::HardState(hs) => self.hard_state = hs,
            Item::ConfState(cs) => self.conf_state = cs,
        }
        Ok(())
    }

    fn corrupt(&self, offset: u64, reason: &str) -> LogError {
        LogError::Corrupt {
            path: self.path.clone(),
            offset,
            reason: reason.to_string(),
        }
    }

    fn last(&self) -> u64 {
        self.first_index + self.locs.len() as u64 - 1
    }

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
        let written = self
            .file
            .write_all_at(&bytes, self.end)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            self.poisoned = true;
            // Best effort: keep a half-written record from sitting before later data.
            let _ = self.file.set_len(self.end);
            return Err(LogError::io(&self.path, e));
        }

        let base = self.end;
        self.end += bytes.len() as u64;
        if let Some(first) = entries.first() {
            self.truncate_from(first.index);
            for (entry, (at, len)) in entries.iter().zip(spans) {
                self.locs.push(EntryLoc {
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
                self.cached_bytes -= e.data.len() + e.context.len();
            }
        }
    }

    fn cache_push(&mut self, entry: Entry) {
        self.cached_bytes += entry.data.len() + entry.context.len();
        self.cache.push_back(entry);
        while self.cached_bytes > self.options.cache_bytes && self.cache.len() > 1 {
            if let Some(e) = self.cache.pop_front() {
                self.cached_bytes -= e.data.len() + e.context.len();
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

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What opening the file found.
    pub fn load_report(&self) -> &LoadReport {
        &self.report
    }

    /// Bytes of the log file that hold records.
    pub fn size_bytes(&self) -> u64 {
        self.end
    }

    fn read_entry(&self, index: u64) -> raft::Result<Entry> {
        let cache_first = self.last() + 1 - self.cache.len() as u64;
        if index >= cache_first {
            return Ok(self.cache[(index - cache_first) as usize].clone());
        }
        let loc = self.locs[(index - self.first_index) as usize];
        let mut buf = vec![0u8; loc.len as usize];
        self.file
            .read_exact_at(&mut buf, loc.pos)
            .map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))?;
        let entry = format::decode_entry(&buf)
            .map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))?;
        if entry.index != index {
            let err = self.corrupt(
                loc.pos,
                &format!("expected entry {index}, found {}", entry.index),
            );
            return Err(raft::Error::Store(StorageError::Other(Box::new(err))));
        }
        Ok(entry)
    }
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
        if idx + 1 == self.first_index {
            // No snapshots yet: the entry before the first one is the empty index 0.
            return Ok(0);
        }
        if idx < self.first_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.locs.get((idx - self.first_index) as usize) {
            Some(loc) => Ok(loc.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // The log is never compacted yet, so a follower can always be sent entries.
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}
