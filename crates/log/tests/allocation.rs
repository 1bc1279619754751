//! Segments are allocated ahead of their records (zeros), so that a write and its sync
//! do not change the file's size. Replay must read those zeros as the end of the
//! records, and still tell damage from them.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raft::Storage;
use raft::eraftpb::Entry;
use sqlraft_log::{LogError, LogOptions, LogStore, segment_files};

fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range
        .map(|index| Entry {
            index,
            term: 1,
            data: format!("entry {index}").into_bytes(),
            ..Default::default()
        })
        .collect()
}

fn options(segment_bytes: u64) -> LogOptions {
    LogOptions {
        segment_bytes,
        max_write_bytes: 1024,
        ..Default::default()
    }
}

fn last_segment(dir: &Path) -> PathBuf {
    segment_files(dir)
        .expect("list segments")
        .pop()
        .expect("a segment")
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

fn bounds(log: &LogStore) -> (u64, u64) {
    (
        log.first_index().expect("first"),
        log.last_index().expect("last"),
    )
}

fn read_all(log: &LogStore) -> Vec<Entry> {
    let (first, last) = bounds(log);
    log.entries(first, last + 1, None, raft::GetEntriesContext::empty(false))
        .expect("entries")
}

#[test]
fn writes_land_in_space_allocated_ahead_and_survive_reopens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let segment_bytes = 1 << 20;
    let mut log = LogStore::open(dir.path(), options(segment_bytes)).expect("open");
    let file = last_segment(dir.path());
    assert_eq!(
        file_len(&file),
        segment_bytes,
        "allocated ahead at creation"
    );
    for k in 0..20 {
        log.write(&entries(k * 5 + 1..=k * 5 + 5), None, None)
            .expect("write");
    }
    let end = log.tail_end();
    assert!(end > 16 && end < segment_bytes, "records end at {end}");
    assert_eq!(
        file_len(&file),
        segment_bytes,
        "writes did not grow the file"
    );
    drop(log);

    let mut log = LogStore::open(dir.path(), options(segment_bytes)).expect("reopen");
    assert_eq!(bounds(&log), (1, 100));
    assert_eq!(
        log.tail_end(),
        end,
        "the zeros after the records are not records"
    );
    assert_eq!(
        log.load_report().torn_bytes,
        0,
        "the zeros are not a torn write"
    );
    log.write(&entries(101..=101), None, None)
        .expect("write after reopen");
    drop(log);
    let log = LogStore::open(dir.path(), options(segment_bytes)).expect("reopen");
    assert_eq!(read_all(&log), entries(1..=101));
    assert_eq!(file_len(&file), segment_bytes);
}

#[test]
fn a_segment_closed_before_it_filled_gives_its_zeros_back_and_opens_with_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = LogStore::open(dir.path(), options(64 << 10)).expect("open");
    log.write(&entries(1..=20), None, None).expect("write");
    let first = last_segment(dir.path());
    drop(log);
    // Smaller segments from now on: the next write closes the first segment with its
    // allocated space unwritten.
    let mut log = LogStore::open(dir.path(), options(256)).expect("reopen");
    let first_end = log.tail_end();
    log.write(&entries(21..=30), None, None).expect("write");
    assert_ne!(last_segment(dir.path()), first, "a new segment was started");
    assert_eq!(
        file_len(&first),
        first_end,
        "the closed segment ends with its last record, as older versions expect"
    );
    drop(log);
    let log = LogStore::open(dir.path(), options(256)).expect("reopen");
    assert_eq!(read_all(&log), entries(1..=30));
    drop(log);
    // A crash before that was durable leaves the zeros: they are still its end.
    let f = OpenOptions::new().write(true).open(&first).expect("open");
    f.set_len(64 << 10).expect("zeros back");
    drop(f);
    let log = LogStore::open(dir.path(), options(256)).expect("reopen");
    assert_eq!(read_all(&log), entries(1..=30));
}

#[test]
fn a_torn_write_inside_the_allocated_space_is_cut_and_zeroed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let segment_bytes = 64 << 10;
    let end = write_records(dir.path(), &[1..=10])[0];
    let file = last_segment(dir.path());
    // Part of a write that never finished: bytes, a gap of zeros, more bytes.
    put(&file, end, b"half a record");
    put(&file, end + 300, b"and a later block");

    let mut log = LogStore::open(dir.path(), options(segment_bytes)).expect("reopen");
    assert_eq!(bounds(&log), (1, 10));
    assert_eq!(log.tail_end(), end);
    assert_eq!(
        log.load_report().torn_bytes,
        300 + b"and a later block".len() as u64,
        "the torn write's bytes, not the zeros after them"
    );
    let bytes = std::fs::read(&file).expect("read");
    assert_eq!(
        bytes.len() as u64,
        segment_bytes,
        "allocated again after the cut"
    );
    assert!(
        bytes[end as usize..].iter().all(|&b| b == 0),
        "nothing of the torn write is left after the records"
    );
    log.write(&entries(11..=12), None, None)
        .expect("write after the cut");
    drop(log);
    let log = LogStore::open(dir.path(), options(segment_bytes)).expect("reopen");
    assert_eq!(read_all(&log), entries(1..=12));
}

/// Writes each range of entries as one record into a log of 64 KiB segments; returns
/// where the records end after each write.
fn write_records(dir: &Path, writes: &[std::ops::RangeInclusive<u64>]) -> Vec<u64> {
    let mut log = LogStore::open(dir, options(64 << 10)).expect("open");
    writes
        .iter()
        .map(|range| {
            log.write(&entries(range.clone()), None, None)
                .expect("write");
            log.tail_end()
        })
        .collect()
}

/// Puts `bytes` at `at` in `file`, as a crash or a failing disk leaves them.
fn put(file: &Path, at: u64, bytes: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(file)
        .and_then(|f| f.write_all_at(bytes, at))
        .expect("write into the log file");
}

/// Opening `dir` fails as corrupt, and changes nothing in `file`.
fn assert_corrupt_and_untouched(dir: &Path, file: &Path, segment_bytes: u64) {
    let before = std::fs::read(file).expect("read");
    match LogStore::open(dir, options(segment_bytes)) {
        Ok(log) => panic!("opened a damaged log as [{:?}]", bounds(&log)),
        Err(e) => assert!(matches!(e, LogError::Corrupt { .. }), "{e}"),
    }
    assert_eq!(
        std::fs::read(file).expect("read"),
        before,
        "the file was changed"
    );
}

#[test]
fn bytes_far_beyond_the_records_are_damage_not_a_torn_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ends = write_records(dir.path(), &[1..=10]);
    let file = last_segment(dir.path());
    // Further from the records' end than one write (1 KiB here) can reach.
    put(&file, ends[0] + 8192, &[0x5a]);
    assert_corrupt_and_untouched(dir.path(), &file, 64 << 10);
}

#[test]
fn zeros_over_a_record_with_an_intact_record_after_them_are_damage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ends = write_records(dir.path(), &[1..=3, 4..=6, 7..=9]);
    let file = last_segment(dir.path());
    // The middle record reads as never written; the one after it is intact: that is
    // a lost acknowledged write, not the end of the log.
    put(&file, ends[0], &vec![0u8; (ends[1] - ends[0]) as usize]);
    assert_corrupt_and_untouched(dir.path(), &file, 64 << 10);
}

#[test]
fn bytes_after_a_record_whose_payload_is_damaged_are_damage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ends = write_records(dir.path(), &[1..=3, 4..=6]);
    let file = last_segment(dir.path());
    // The last record's header is intact, so the write that left it ended at its
    // end: a byte written after that is not part of it, however close.
    let victim = std::fs::read(&file).expect("read")[ends[0] as usize + 20];
    put(&file, ends[0] + 20, &[victim ^ 0x5a]);
    put(&file, ends[1] + 100, &[0x5a]);
    assert_corrupt_and_untouched(dir.path(), &file, 64 << 10);

    // Without that byte, the damaged payload is the torn end of the last write.
    put(&file, ends[1] + 100, &[0]);
    let log = LogStore::open(dir.path(), options(64 << 10)).expect("reopen");
    assert_eq!(bounds(&log), (1, 3));
}

#[test]
fn a_damaged_record_before_an_intact_one_ending_in_zero_bytes_is_damage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let segment_bytes = 64 << 10;
    let hs = |commit| raft::eraftpb::HardState {
        term: 1,
        vote: 1,
        commit,
    };
    let mut log = LogStore::open(dir.path(), options(segment_bytes)).expect("open");
    log.write(&entries(1..=3), Some(&hs(3)), None)
        .expect("write");
    let first_end = log.tail_end();
    log.write(&entries(4..=6), Some(&hs(6)), None)
        .expect("write");
    // A compaction mark alone: its record ends with the term's high bytes, zeros.
    log.compact(2).expect("compact");
    let end = log.tail_end();
    drop(log);
    let file = last_segment(dir.path());
    let bytes = std::fs::read(&file).expect("read");
    assert_eq!(
        bytes[end as usize - 1],
        0,
        "the last record ends in a zero byte"
    );
    // The middle record's header never reached the disk, the record after it did.
    put(&file, first_end, &[0u8; 12]);
    assert_corrupt_and_untouched(dir.path(), &file, segment_bytes);
}

/// Segments of 64 KiB, writes of up to 64 KiB.
fn wide_writes() -> LogOptions {
    LogOptions {
        segment_bytes: 64 << 10,
        max_write_bytes: 64 << 10,
        ..Default::default()
    }
}

/// A record as the store writes it: header (length, payload checksum, header
/// checksum) and `payload`.
fn record_bytes(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&bytes[..8]);
    bytes.extend_from_slice(&header_crc.to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Entry 4 carries `inside` in its data, between paddings, after entries 1 to 3;
/// returns where the records end before and after it.
fn log_with_data_holding(dir: &Path, inside: &[u8]) -> (u64, u64) {
    let mut log = LogStore::open(dir, wide_writes()).expect("open");
    log.write(&entries(1..=3), None, None).expect("write");
    let before = log.tail_end();
    let mut data = vec![b'p'; 100];
    data.extend_from_slice(inside);
    data.extend(std::iter::repeat_n(b'y', 6000));
    let entry = Entry {
        index: 4,
        term: 1,
        data,
        ..Default::default()
    };
    log.write(&[entry], None, None).expect("write");
    (before, log.tail_end())
}

#[test]
fn a_torn_record_whose_data_holds_a_record_is_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A client's value that happens to be a whole record (a compaction mark).
    let mut compact = vec![5u8];
    compact.extend_from_slice(&16u32.to_le_bytes());
    compact.extend_from_slice(&2u64.to_le_bytes());
    compact.extend_from_slice(&1u64.to_le_bytes());
    let (before, end) = log_with_data_holding(dir.path(), &record_bytes(&compact));
    let file = last_segment(dir.path());
    // The write's last blocks never reached the disk; its header and the record
    // inside its data did.
    put(&file, end - 3000, &[0u8; 3000]);
    let log = LogStore::open(dir.path(), wide_writes()).expect("reopen");
    assert_eq!(bounds(&log), (1, 3));
    assert_eq!(log.load_report().torn_bytes, end - 3000 - before);
}

#[test]
fn a_torn_write_without_its_header_whose_data_holds_an_empty_record_is_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Twelve bytes a client may send: a record with nothing in it, which this store
    // never writes.
    let (before, _) = log_with_data_holding(dir.path(), &record_bytes(&[]));
    let file = last_segment(dir.path());
    // The write's first block (its header) never reached the disk.
    put(&file, before, &[0u8; 12]);
    let log = LogStore::open(dir.path(), wide_writes()).expect("reopen");
    assert_eq!(bounds(&log), (1, 3));
}
