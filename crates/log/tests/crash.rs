//! A crash (kill -9) between any two file operations of writing, compacting, rolling
//! to a new segment and installing a snapshot: the log opens again, holds every entry
//! that was durable before the crash, and nothing it should not.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use raft::Storage;
use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};
use sqlraft_log::{LogOptions, LogStore};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("entry {index} of term {term}").into_bytes(),
        ..Default::default()
    }
}

fn options(budget: Option<Arc<AtomicI64>>) -> LogOptions {
    LogOptions {
        segment_bytes: 2048,
        crash_after_file_ops: budget,
        ..Default::default()
    }
}

/// One step of the scenario, and what the log must at least hold once it is done.
enum Step {
    Append(std::ops::RangeInclusive<u64>, u64),
    Compact(u64),
    Install(u64, u64),
}

const SNAPSHOT_INDEX: u64 = 1000;

/// The term every entry of the scenario has (the snapshot is at term 3).
fn term_of(index: u64) -> u64 {
    if index >= SNAPSHOT_INDEX { 3 } else { 1 }
}

fn scenario() -> Vec<Step> {
    let mut steps = Vec::new();
    for k in 0..20 {
        steps.push(Step::Append(k * 10 + 1..=k * 10 + 10, 1));
    }
    steps.push(Step::Compact(120));
    steps.push(Step::Append(201..=230, 1));
    steps.push(Step::Compact(200));
    steps.push(Step::Install(SNAPSHOT_INDEX, 3));
    steps.push(Step::Append(1001..=1020, 3));
    steps.push(Step::Compact(1010));
    steps.push(Step::Append(1021..=1030, 3));
    steps
}

fn run(log: &mut LogStore, step: &Step) -> Result<(), sqlraft_log::LogError> {
    match step {
        Step::Append(range, term) => {
            let entries: Vec<Entry> = range.clone().map(|i| entry(i, *term)).collect();
            let hs = HardState {
                term: *term,
                vote: 1,
                commit: *range.end(),
            };
            log.write(&entries, Some(&hs), None)
        }
        Step::Compact(index) => log.compact(*index),
        Step::Install(index, term) => log.install_snapshot(&SnapshotMetadata {
            conf_state: Some(ConfState {
                voters: vec![1],
                ..Default::default()
            }),
            index: *index,
            term: *term,
        }),
    }
}

#[test]
fn a_crash_between_any_two_file_operations_loses_nothing_durable() {
    let steps = scenario();
    let mut crash_points = 0;
    for budget in 0.. {
        let dir = tempfile::tempdir().expect("temp dir");
        let counter = Arc::new(AtomicI64::new(budget));
        // What the log must hold after a reopen: the state after the last step that
        // finished; the step that crashed may or may not have taken effect.
        let mut durable_last = 0;
        let mut durable_first = 1;
        let mut crashed_in = None;
        // Creating the first segment is a step too.
        let Ok(mut log) = LogStore::open(dir.path(), options(Some(Arc::clone(&counter)))) else {
            let log = LogStore::open(dir.path(), options(None))
                .unwrap_or_else(|e| panic!("budget {budget}, crash while creating: {e}"));
            assert_eq!(log.last_index().expect("last"), 0);
            crash_points += 1;
            continue;
        };
        for (k, step) in steps.iter().enumerate() {
            if run(&mut log, step).is_err() {
                crashed_in = Some(k);
                break;
            }
            match step {
                Step::Append(range, _) => durable_last = *range.end(),
                Step::Compact(index) => durable_first = durable_first.max(index + 1),
                Step::Install(index, _) => {
                    durable_first = index + 1;
                    durable_last = *index;
                }
            }
        }
        drop(log);
        let log = LogStore::open(dir.path(), options(None))
            .unwrap_or_else(|e| panic!("budget {budget} (crash in step {crashed_in:?}): {e}"));
        let first = log.first_index().expect("first");
        let last = log.last_index().expect("last");
        let context = format!(
            "budget {budget}, crash in step {crashed_in:?}: log [{first}, {last}], \
             durable [{durable_first}, {durable_last}]"
        );
        // Nothing durable is lost: every entry after the compaction point that was
        // written before the crash is there.
        let allowed_first = match crashed_in.map(|k| &steps[k]) {
            Some(Step::Compact(index)) => durable_first.max(index + 1),
            Some(Step::Install(index, _)) => index + 1,
            _ => durable_first,
        };
        assert!(first <= allowed_first, "{context}");
        assert!(last >= durable_last, "{context}");
        // Nothing is made up: what is there reads back as written, with the term the
        // scenario gave it, and the entry before the first one has its term too.
        let entries = log
            .entries(first, last + 1, None, raft::GetEntriesContext::empty(false))
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        assert_eq!(entries.len() as u64, last + 1 - first, "{context}");
        for e in &entries {
            assert_eq!(*e, entry(e.index, term_of(e.index)), "{context}");
        }
        if first > 1 {
            assert_eq!(
                log.term(first - 1).expect("term"),
                term_of(first - 1),
                "{context}"
            );
        }
        // The log takes writes again.
        let mut log = log;
        log.write(&[entry(last + 1, 9)], None, None)
            .unwrap_or_else(|e| panic!("{context}: write after reopen: {e}"));
        if crashed_in.is_none() {
            break;
        }
        crash_points += 1;
    }
    // Every write, segment, deletion and sync of the scenario was a crash point.
    println!("{crash_points} crash points");
    assert!(crash_points > 40, "only {crash_points} crash points");
}
