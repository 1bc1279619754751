//! Conformance suite for durable raft log storages.
//!
//! Every log storage of the project implements [`DurableLog`] and runs the whole suite
//! through [`conformance_tests!`](crate::conformance_tests), which expands to one
//! `#[test]` per property:
//!
//! ```ignore
//! sqlraft_log::conformance_tests!(sqlraft_log::LogStore);
//! ```
//!
//! Each check takes a fresh, empty directory and panics (it is test code) when the
//! storage breaks the property.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};
use raft::{GetEntriesContext, Storage, StorageError};

/// A raft log storage that keeps its state in files under one directory.
pub trait DurableLog: Storage + Sized {
    /// Error of open and append.
    type Error: std::fmt::Debug + std::fmt::Display;
    /// Opens (or creates) the storage kept in `dir`.
    fn open_dir(dir: &Path) -> Result<Self, Self::Error>;
    /// Makes entries and state durable together, replacing any conflicting suffix.
    fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        conf_state: Option<&ConfState>,
    ) -> Result<(), Self::Error>;
    /// The file a crash in the middle of a write can leave with a torn end.
    fn tail_file(dir: &Path) -> PathBuf;
    /// Where the written part of the tail file ends: the next write goes there. The
    /// file may be longer (space allocated ahead, zeros).
    fn tail_end(&self) -> u64;
    /// Opens the storage with files of a few KiB, so that a few hundred entries spread
    /// over many of them.
    fn open_small(dir: &Path) -> Result<Self, Self::Error>;
    /// Drops the entries up to `index` (committed, covered by a snapshot).
    fn compact(&mut self, index: u64) -> Result<(), Self::Error>;
    /// Replaces the whole log by a snapshot's position.
    fn install_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<(), Self::Error>;
}

impl DurableLog for crate::LogStore {
    type Error = crate::LogError;
    fn open_dir(dir: &Path) -> Result<Self, Self::Error> {
        crate::LogStore::open(dir, crate::LogOptions::default())
    }
    fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        conf_state: Option<&ConfState>,
    ) -> Result<(), Self::Error> {
        self.write(entries, hard_state, conf_state)
    }
    fn tail_file(dir: &Path) -> PathBuf {
        crate::segment_files(dir)
            .ok()
            .and_then(|files| files.last().cloned())
            .unwrap_or_else(|| dir.join("missing-segment"))
    }
    fn tail_end(&self) -> u64 {
        crate::LogStore::tail_end(self)
    }
    fn open_small(dir: &Path) -> Result<Self, Self::Error> {
        let options = crate::LogOptions {
            segment_bytes: 4096,
            ..Default::default()
        };
        crate::LogStore::open(dir, options)
    }
    fn compact(&mut self, index: u64) -> Result<(), Self::Error> {
        crate::LogStore::compact(self, index)
    }
    fn install_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<(), Self::Error> {
        crate::LogStore::install_snapshot(self, meta)
    }
}

/// Expands to one `#[test]` per conformance check for the given [`DurableLog`] type.
#[macro_export]
macro_rules! conformance_tests {
    ($store:ty) => {
        $crate::conformance_tests!(@tests $store;
            new_log_is_empty, append_then_read_back, entries_respect_max_size,
            conflicting_suffix_is_replaced, state_survives_reopen, torn_final_write_loads_prefix,
            zero_filled_tail_is_ignored, unwritten_header_of_the_last_write_is_torn,
            damaged_header_before_an_intact_record_is_an_error, damage_before_the_tail_is_an_error,
            gaps_are_refused_without_change, committed_entries_are_never_replaced,
            out_of_range_reads_are_errors, long_log_reads_back_from_disk,
            compaction_drops_the_prefix_and_survives_reopen, compaction_needs_commit,
            appends_after_compaction_follow_the_rules, compaction_bounds_the_disk,
            snapshot_install_replaces_the_log, snapshot_behind_the_commit_is_refused,
            torn_write_after_a_new_segment_loads_prefix,
            a_conflicting_suffix_across_segments_survives_compaction);
    };
    (@tests $store:ty; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let dir = ::tempfile::tempdir().expect("temp dir");
                $crate::conformance::$name::<$store>(dir.path());
            }
        )*
    };
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("entry {index} of term {term}").into_bytes(),
        ..Default::default()
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| entry(i, term)).collect()
}

fn open<L: DurableLog>(dir: &Path) -> L {
    L::open_dir(dir).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

fn append<L: DurableLog>(log: &mut L, ents: &[Entry], hs: Option<&HardState>) {
    log.append(ents, hs, None)
        .unwrap_or_else(|e| panic!("append: {e}"));
}

fn read<L: DurableLog>(log: &L, low: u64, high: u64) -> Vec<Entry> {
    log.entries(low, high, None, GetEntriesContext::empty(false))
        .unwrap_or_else(|e| panic!("entries({low}, {high}): {e}"))
}

fn bounds<L: DurableLog>(log: &L) -> (u64, u64) {
    (
        log.first_index().expect("first_index"),
        log.last_index().expect("last_index"),
    )
}

/// A new storage has no entries, first index 1, last index 0 and term(0) = 0.
pub fn new_log_is_empty<L: DurableLog>(dir: &Path) {
    let log: L = open(dir);
    assert_eq!(bounds(&log), (1, 0));
    assert_eq!(log.term(0).expect("term(0)"), 0);
    let state = log.initial_state().expect("initial_state");
    assert_eq!(state.hard_state, HardState::default());
    assert!(!state.initialized());
}

/// Entries appended in several writes read back whole, in ranges and by term.
pub fn append_then_read_back<L: DurableLog>(dir: &Path) {
    let mut log: L = open(dir);
    append(&mut log, &entries(1..=4, 1), None);
    append(&mut log, &entries(5..=9, 2), None);
    assert_eq!(bounds(&log), (1, 9));
    let mut all = entries(1..=4, 1);
    all.extend(entries(5..=9, 2));
    assert_eq!(read(&log, 1, 10), all);
    assert_eq!(read(&log, 3, 6), all[2..5].to_vec());
    for e in &all {
        assert_eq!(
            log.term(e.index).expect("term"),
            e.term,
            "term of {}",
            e.index
        );
    }
}

/// `max_size` cuts the result, but at least one entry comes back.
pub fn entries_respect_max_size<L: DurableLog>(dir: &Path) {
    let mut log: L = open(dir);
    append(&mut log, &entries(1..=10, 1), None);
    let one = log
        .entries(1, 11, Some(1), GetEntriesContext::empty(false))
        .expect("entries");
    assert_eq!(one.len(), 1);
    let size_of_three: u64 = read(&log, 1, 4)
        .iter()
        .map(|e| u64::from(prost_011::Message::encoded_len(e) as u32))
        .sum();
    let three = log
        .entries(1, 11, Some(size_of_three), GetEntriesContext::empty(false))
        .expect("entries");
    assert_eq!(three.len(), 3);
}

/// Appending at an index already present replaces it and everything after it, also
/// after a reopen.
pub fn conflicting_suffix_is_replaced<L: DurableLog>(dir: &Path) {
    let mut log: L = open(dir);
    append(&mut log, &entries(1..=10, 1), None);
    append(&mut log, &entries(6..=8, 2), None);
    let check = |log: &L| {
        assert_eq!(bounds(log), (1, 8));
        assert_eq!(log.term(5).expect("term"), 1);
        assert_eq!(log.term(6).expect("term"), 2);
        assert_eq!(read(log, 6, 9), entries(6..=8, 2));
        assert!(log.term(9).is_err(), "entry 9 was replaced away");
    };
    check(&log);
    drop(log);
    check(&open::<L>(dir));
}

/// Entries, hard state and conf state come back after a reopen.
pub fn state_survives_reopen<L: DurableLog>(dir: &Path) {
    let hs = HardState {
        term: 3,
        vote: 2,
        commit: 4,
    };
    let cs = ConfState {
        voters: vec![1, 2, 3],
        learners: vec![4],
        ..Default::default()
    };
    {
        let mut log: L = open(dir);
        append(&mut log, &entries(1..=5, 3), None);
        log.append(&[], Some(&hs), Some(&cs))
            .unwrap_or_else(|e| panic!("append state: {e}"));
    }
    let log: L = open(dir);
    let state = log.initial_state().expect("initial_state");
    assert_eq!(state.hard_state, hs);
    assert_eq!(state.conf_state, cs);
    assert_eq!(read(&log, 1, 6), entries(1..=5, 3));
}

/// A crash in the middle of the last write loads to the log as it was before that
/// write, and the log takes writes again. The write may stop anywhere: the file then
/// ends there, or (written into space allocated ahead) keeps its length with zeros
/// after that point.
pub fn torn_final_write_loads_prefix<L: DurableLog>(dir: &Path) {
    drop(open::<L>(dir));
    let file = L::tail_file(dir);
    let before_last;
    let full;
    {
        let mut log: L = open(dir);
        append(&mut log, &entries(1..=3, 1), None);
        before_last = log.tail_end();
        append(&mut log, &entries(4..=6, 1), None);
        full = log.tail_end();
    }
    assert!(full > before_last);
    let pristine = std::fs::read(&file).expect("read log");
    let file_len = pristine.len() as u64;
    for cut in before_last..full {
        for zeros_after in [false, true] {
            let shape = if zeros_after {
                "zeros after it"
            } else {
                "the file cut there"
            };
            std::fs::write(&file, &pristine[..cut as usize]).expect("write cut log");
            if zeros_after {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&file)
                    .expect("open log");
                f.set_len(file_len).expect("zeros to the allocated length");
            }
            let mut log: L = open(dir);
            assert_eq!(
                bounds(&log),
                (1, 3),
                "write stopped at byte {cut} of {full}, {shape}"
            );
            append(&mut log, &entries(4..=4, 2), None);
            drop(log);
            let log: L = open(dir);
            assert_eq!(
                bounds(&log),
                (1, 4),
                "rewrite after a stop at {cut}, {shape}"
            );
            assert_eq!(log.term(4).expect("term"), 2);
        }
    }
}

/// Zeroed blocks after the last record (allocated but never written) are not an error.
pub fn zero_filled_tail_is_ignored<L: DurableLog>(dir: &Path) {
    {
        let mut log: L = open(dir);
        append(&mut log, &entries(1..=3, 1), None);
    }
    let mut f = OpenOptions::new()
        .append(true)
        .open(L::tail_file(dir))
        .expect("open log");
    f.write_all(&[0u8; 4096]).expect("append zeros");
    drop(f);
    let log: L = open(dir);
    assert_eq!(bounds(&log), (1, 3));
}

/// Damage to a record that is not the last one is reported, not silently dropped.
pub fn damage_before_the_tail_is_an_error<L: DurableLog>(dir: &Path) {
    drop(open::<L>(dir));
    let file = L::tail_file(dir);
    let first_end;
    {
        let mut log: L = open(dir);
        append(&mut log, &entries(1..=3, 1), None);
        first_end = log.tail_end();
        append(&mut log, &entries(4..=6, 1), None);
    }
    let mut bytes = std::fs::read(&file).expect("read log");
    let victim = (first_end - 3) as usize;
    bytes[victim] ^= 0x5a;
    std::fs::write(&file, &bytes).expect("write damaged log");
    match L::open_dir(dir) {
        Ok(_) => panic!("a log damaged at byte {victim} opened without error"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    // Opening did not "repair" the file by cutting it.
    assert_eq!(std::fs::read(&file).expect("read log"), bytes);
}

/// A write that would leave a gap is refused and changes nothing.
pub fn gaps_are_refused_without_change<L: DurableLog>(dir: &Path) {
    let mut log: L = open(dir);
    append(&mut log, &entries(1..=3, 1), None);
    assert!(log.append(&entries(5..=5, 1), None, None).is_err());
    assert!(log.append(&[entry(4, 1), entry(6, 1)], None, None).is_err());
    assert_eq!(bounds(&log), (1, 3));
    drop(log);
    assert_eq!(bounds(&open::<L>(dir)), (1, 3));
}

/// Entries at or below the commit index cannot be replaced.
pub fn committed_entries_are_never_replaced<L: DurableLog>(dir: &Path) {
    let mut log: L = open(dir);
    let hs = HardState {
        term: 1,
        vote: 1,
        commit: 5,
    };
    append(&mut log, &entries(1..=8, 1), Some(&hs));
    assert!(log.append(&entries(4..=4, 2), None, None).is_err());
    assert_eq!(log.term(4).expect("term"), 1);
    append(&mut log, &entries(6..=6, 2), None);
    assert_eq!(bounds(&log), (1, 6));
}

/// Reads outside the log are errors of the kinds raft expects, never panics.
pub fn out_of_range_reads_are_errors<L: DurableLog>(dir: &Path) {
    let mut log: L = open(dir);
    append(&mut log, &entries(1..=3, 1), None);
    assert!(matches!(
        log.term(4),
        Err(raft::Error::Store(StorageError::Unavailable))
    ));
    assert!(
        log.entries(2, 9, None, GetEntriesContext::empty(false))
            .is_err()
    );
}

/// A log much larger than any cache reads back correctly from the file.
pub fn long_log_reads_back_from_disk<L: DurableLog>(dir: &Path) {
    let mut log: L = open(dir);
    let big = vec![7u8; 64 << 10];
    for chunk in 0..40u64 {
        let ents: Vec<Entry> = (chunk * 10 + 1..=chunk * 10 + 10)
            .map(|i| Entry {
                index: i,
                term: 1,
                data: big.clone(),
                context: i.to_le_bytes().to_vec(),
                ..Default::default()
            })
            .collect();
        append(&mut log, &ents, None);
    }
    drop(log);
    let log: L = open(dir);
    assert_eq!(bounds(&log), (1, 400));
    for i in [1u64, 2, 150, 399, 400] {
        let e = read(&log, i, i + 1);
        assert_eq!(e[0].index, i);
        assert_eq!(e[0].context, i.to_le_bytes().to_vec());
        assert_eq!(e[0].data.len(), big.len());
    }
}

/// The last write's first block never reached the disk but a later one did: its header
/// reads as zeros with data after it. That is still a torn write, not corruption.
pub fn unwritten_header_of_the_last_write_is_torn<L: DurableLog>(dir: &Path) {
    drop(open::<L>(dir));
    let file = L::tail_file(dir);
    let before_last;
    {
        let mut log: L = open(dir);
        append(&mut log, &entries(1..=3, 1), None);
        before_last = log.tail_end() as usize;
        append(&mut log, &entries(4..=6, 1), None);
    }
    let mut bytes = std::fs::read(&file).expect("read log");
    for b in &mut bytes[before_last..before_last + 16] {
        *b = 0;
    }
    std::fs::write(&file, &bytes).expect("write log");
    let log: L = open(dir);
    assert_eq!(bounds(&log), (1, 3));
}

/// A damaged record header with an intact record after it is corruption in the middle
/// of the log, never mistaken for a torn tail.
pub fn damaged_header_before_an_intact_record_is_an_error<L: DurableLog>(dir: &Path) {
    drop(open::<L>(dir));
    let file = L::tail_file(dir);
    let (first_end, second_end);
    {
        let mut log: L = open(dir);
        append(&mut log, &entries(1..=3, 1), None);
        first_end = log.tail_end() as usize;
        append(&mut log, &entries(4..=6, 1), None);
        second_end = log.tail_end() as usize;
        append(&mut log, &entries(7..=9, 1), None);
    }
    let mut bytes = std::fs::read(&file).expect("read log");
    assert!(second_end > first_end);
    for b in &mut bytes[first_end..first_end + 4] {
        *b ^= 0xff;
    }
    std::fs::write(&file, &bytes).expect("write log");
    assert!(
        L::open_dir(dir).is_err(),
        "damage in the middle was not reported"
    );
}

fn commit_hs(commit: u64) -> HardState {
    HardState {
        term: 1,
        vote: 1,
        commit,
    }
}

/// Appends entries `range` in writes of ten, committing all of them.
fn fill<L: DurableLog>(log: &mut L, range: std::ops::RangeInclusive<u64>, term: u64) {
    let all = entries(range, term);
    for chunk in all.chunks(10) {
        let last = chunk.last().map_or(0, |e| e.index);
        let hs = HardState {
            term,
            vote: 1,
            commit: last,
        };
        append(log, chunk, Some(&hs));
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// After compaction the entries before the compaction point are gone (raft's
/// `Compacted`), the term of the point itself is kept, the rest reads back, also after
/// a reopen.
pub fn compaction_drops_the_prefix_and_survives_reopen<L: DurableLog>(dir: &Path) {
    let mut log = L::open_small(dir).expect("open");
    fill(&mut log, 1..=300, 2);
    log.compact(200).expect("compact");
    let check = |log: &L| {
        assert_eq!(bounds(log), (201, 300));
        assert_eq!(log.term(200).expect("term of the compaction point"), 2);
        assert!(matches!(
            log.term(150),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            log.entries(150, 210, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(read(log, 201, 301), entries(201..=300, 2));
        assert_eq!(log.initial_state().expect("state").hard_state.commit, 300);
    };
    check(&log);
    // Compacting to a point already compacted changes nothing.
    log.compact(150).expect("compact behind the first index");
    check(&log);
    drop(log);
    check(&L::open_small(dir).expect("reopen"));
}

/// Entries not committed cannot be compacted; the refusal changes nothing.
pub fn compaction_needs_commit<L: DurableLog>(dir: &Path) {
    let mut log = L::open_small(dir).expect("open");
    append(&mut log, &entries(1..=20, 1), Some(&commit_hs(10)));
    assert!(log.compact(11).is_err(), "compacted an uncommitted entry");
    assert!(log.compact(21).is_err(), "compacted beyond the log");
    assert_eq!(bounds(&log), (1, 20));
    log.compact(10).expect("compact the committed prefix");
    assert_eq!(bounds(&log), (11, 20));
}

/// After compaction, appends follow the usual rules: a conflicting suffix above the
/// commit index is replaced, an entry below the first index is refused.
pub fn appends_after_compaction_follow_the_rules<L: DurableLog>(dir: &Path) {
    let mut log = L::open_small(dir).expect("open");
    fill(&mut log, 1..=100, 1);
    append(&mut log, &entries(101..=120, 1), None);
    log.compact(90).expect("compact");
    append(&mut log, &entries(111..=115, 2), None);
    assert_eq!(bounds(&log), (91, 115));
    assert_eq!(log.term(111).expect("term"), 2);
    assert!(log.append(&entries(50..=50, 2), None, None).is_err());
    drop(log);
    let log = L::open_small(dir).expect("reopen");
    assert_eq!(bounds(&log), (91, 115));
    assert_eq!(read(&log, 91, 116).len(), 25);
    assert_eq!(log.term(115).expect("term"), 2);
}

/// With regular compaction behind a trailing window the files stay bounded, however
/// long the history.
pub fn compaction_bounds_the_disk<L: DurableLog>(dir: &Path) {
    let mut log = L::open_small(dir).expect("open");
    let mut largest = 0;
    for round in 0..40u64 {
        let start = round * 100 + 1;
        fill(&mut log, start..=start + 99, 1);
        log.compact((start + 99).saturating_sub(50))
            .expect("compact");
        if round >= 5 {
            largest = largest.max(dir_bytes(dir));
        }
    }
    // 4,000 entries of about 40 bytes each (200 KB) were written; what is kept is the
    // window of 50 entries, and at most two segments of 4 KiB around it.
    assert!(
        largest < 16 << 10,
        "the log directory grew to {largest} bytes"
    );
    assert_eq!(bounds(&log), (3951, 4000));
}

/// Installing a snapshot replaces the log by the snapshot's position: nothing before
/// it can be read, the term at it is the snapshot's, the conf state too; entries
/// follow it. All of that survives a reopen.
pub fn snapshot_install_replaces_the_log<L: DurableLog>(dir: &Path) {
    let mut log = L::open_small(dir).expect("open");
    fill(&mut log, 1..=40, 1);
    append(&mut log, &entries(41..=60, 1), None);
    let cs = ConfState {
        voters: vec![1, 2, 3],
        learners: vec![7],
        ..Default::default()
    };
    let meta = SnapshotMetadata {
        conf_state: Some(cs.clone()),
        index: 500,
        term: 4,
    };
    log.install_snapshot(&meta).expect("install");
    let check = |log: &L| {
        assert_eq!(bounds(log), (501, 500));
        assert_eq!(log.term(500).expect("term at the snapshot"), 4);
        assert!(log.term(45).is_err());
        let state = log.initial_state().expect("state");
        assert_eq!(state.conf_state, cs);
        assert!(state.hard_state.commit >= 500);
    };
    check(&log);
    append(&mut log, &entries(501..=505, 5), None);
    drop(log);
    let log = L::open_small(dir).expect("reopen");
    assert_eq!(bounds(&log), (501, 505));
    assert_eq!(log.term(500).expect("term at the snapshot"), 4);
    assert_eq!(read(&log, 501, 506), entries(501..=505, 5));
}

/// A snapshot behind the commit index would lose committed entries: refused, nothing
/// changes.
pub fn snapshot_behind_the_commit_is_refused<L: DurableLog>(dir: &Path) {
    let mut log = L::open_small(dir).expect("open");
    fill(&mut log, 1..=50, 1);
    let meta = SnapshotMetadata {
        conf_state: Some(ConfState::default()),
        index: 30,
        term: 1,
    };
    assert!(log.install_snapshot(&meta).is_err());
    assert_eq!(bounds(&log), (1, 50));
    drop(log);
    assert_eq!(bounds(&L::open_small(dir).expect("reopen")), (1, 50));
}

/// A crash in the middle of the first write into a new segment loads to the log
/// before that write, across segments.
pub fn torn_write_after_a_new_segment_loads_prefix<L: DurableLog>(dir: &Path) {
    let mut log = L::open_small(dir).expect("open");
    let mut index = 0;
    let first_tail = L::tail_file(dir);
    while L::tail_file(dir) == first_tail {
        index += 1;
        append(&mut log, &entries(index..=index, 1), None);
    }
    // The last write went into a new segment.
    let end = log.tail_end() as usize;
    drop(log);
    drop(open::<L>(dir));
    let file = L::tail_file(dir);
    let bytes = std::fs::read(&file).expect("read");
    std::fs::write(&file, &bytes[..end - 3]).expect("tear");
    let log = L::open_small(dir).expect("reopen");
    assert_eq!(bounds(&log), (1, index - 1));
    assert_eq!(read(&log, 1, index), entries(1..=index - 1, 1));
}

/// A new segment starts at the log's end; a new leader's entries may then replace
/// entries below that start, written into the new segment. Once compaction deletes the
/// segment before it, the log still opens and reads back.
pub fn a_conflicting_suffix_across_segments_survives_compaction<L: DurableLog>(dir: &Path) {
    let mut log = L::open_small(dir).expect("open");
    fill(&mut log, 1..=10, 1);
    let big = |index: u64, term: u64| Entry {
        index,
        term,
        data: vec![7u8; 1024],
        ..Default::default()
    };
    // Uncommitted entries of term 1, until one of them starts a new segment.
    append(&mut log, &[big(11, 1)], None);
    let first_tail = L::tail_file(dir);
    let mut last = 11;
    while L::tail_file(dir) == first_tail {
        last += 1;
        append(&mut log, &[big(last, 1)], None);
    }
    assert!(
        last >= 12,
        "the new segment starts above the entries to be replaced"
    );
    // A new leader's entries replace everything after 10, in the new segment.
    append(&mut log, &[big(11, 2)], None);
    append(&mut log, &[big(12, 2), big(13, 2)], Some(&commit_hs(13)));
    assert_eq!(bounds(&log), (1, 13));
    log.compact(12).expect("compact");
    drop(log);
    let log = L::open_small(dir).expect("reopen after compaction");
    assert_eq!(bounds(&log), (13, 13));
    assert_eq!(log.term(12).expect("term"), 2);
    assert_eq!(read(&log, 13, 14)[0].term, 2);
}
