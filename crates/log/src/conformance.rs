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

use raft::eraftpb::{ConfState, Entry, HardState};
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
        dir.join(crate::LOG_FILE_NAME)
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
            out_of_range_reads_are_errors, long_log_reads_back_from_disk);
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

/// A crash in the middle of the last write (the file cut anywhere inside it) loads to
/// the log as it was before that write, and the log takes writes again.
pub fn torn_final_write_loads_prefix<L: DurableLog>(dir: &Path) {
    let file = L::tail_file(dir);
    let before_last;
    let full;
    {
        let mut log: L = open(dir);
        append(&mut log, &entries(1..=3, 1), None);
        before_last = std::fs::metadata(&file).expect("stat").len();
        append(&mut log, &entries(4..=6, 1), None);
        full = std::fs::metadata(&file).expect("stat").len();
    }
    let pristine = std::fs::read(&file).expect("read log");
    for cut in before_last..full {
        std::fs::write(&file, &pristine[..cut as usize]).expect("write cut log");
        let mut log: L = open(dir);
        assert_eq!(bounds(&log), (1, 3), "file cut at byte {cut} of {full}");
        append(&mut log, &entries(4..=4, 2), None);
        drop(log);
        let log: L = open(dir);
        assert_eq!(bounds(&log), (1, 4), "rewrite after cut at {cut}");
        assert_eq!(log.term(4).expect("term"), 2);
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
    let file = L::tail_file(dir);
    let first_end;
    {
        let mut log: L = open(dir);
        append(&mut log, &entries(1..=3, 1), None);
        first_end = std::fs::metadata(&file).expect("stat").len();
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
    let file = L::tail_file(dir);
    let before_last;
    {
        let mut log: L = open(dir);
        append(&mut log, &entries(1..=3, 1), None);
        before_last = std::fs::metadata(&file).expect("stat").len() as usize;
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
    let file = L::tail_file(dir);
    let (first_end, second_end);
    {
        let mut log: L = open(dir);
        append(&mut log, &entries(1..=3, 1), None);
        first_end = std::fs::metadata(&file).expect("stat").len() as usize;
        append(&mut log, &entries(4..=6, 1), None);
        second_end = std::fs::metadata(&file).expect("stat").len() as usize;
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
