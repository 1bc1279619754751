//! The append workload's invariants. Each write appends a unique element to a list; a
//! read returns the whole list. For each key:
//!
//! - every read is a prefix of the longest read (one order, seen by everyone);
//! - no element appears twice (nothing applied twice);
//! - every element read was appended by an operation that did not certainly fail, and
//!   that had been called before the read returned (no phantoms);
//! - a linearizable read holds every append acknowledged before it began (no lost or
//!   stale writes), and is no shorter than a linearizable read that ended before it
//!   began.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::history::{Answer, Call, Op, Outcome};

/// One violation, naming the operations involved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "anomaly", rename_all = "snake_case")]
pub enum AppendAnomaly {
    /// Two reads that are not prefixes of one order (`read` does not extend `other`).
    Diverged { key: u32, read: usize, other: usize },
    /// An element seen twice in one read.
    Duplicate { key: u32, read: usize, element: i64 },
    /// An element no operation could have appended (never appended, certainly failed,
    /// or called only after the read returned).
    Phantom { key: u32, read: usize, element: i64 },
    /// An acknowledged append missing from a linearizable read that began after it
    /// returned.
    Lost {
        key: u32,
        read: usize,
        append: usize,
    },
    /// A linearizable read shorter than a read (at any level) that ended before it
    /// began.
    WentBack {
        key: u32,
        read: usize,
        earlier: usize,
    },
}

struct Append {
    id: usize,
    outcome: Outcome,
    start: u64,
    end: u64,
}

struct Read<'a> {
    id: usize,
    linearizable: bool,
    start: u64,
    end: u64,
    elements: &'a [i64],
}

/// Every violation of the append invariants in `history`.
pub fn check(history: &[Op]) -> Vec<AppendAnomaly> {
    let mut appends: BTreeMap<u32, HashMap<i64, Append>> = BTreeMap::new();
    let mut reads: BTreeMap<u32, Vec<Read<'_>>> = BTreeMap::new();
    for op in history {
        match (&op.call, &op.answer) {
            (Call::Append { key, element }, _) => {
                appends.entry(*key).or_default().insert(
                    *element,
                    Append {
                        id: op.id,
                        outcome: op.outcome,
                        start: op.start,
                        end: op.end,
                    },
                );
            }
            (Call::List { key, level }, Answer::List { elements }) if op.outcome == Outcome::Ok => {
                reads.entry(*key).or_default().push(Read {
                    id: op.id,
                    linearizable: is_linearizable(level),
                    start: op.start,
                    end: op.end,
                    elements,
                });
            }
            _ => {}
        }
    }
    let mut anomalies = Vec::new();
    let none = HashMap::new();
    for (&key, reads) in &reads {
        let appends = appends.get(&key).unwrap_or(&none);
        // Shortest first, each read must extend the last one that did (prefix is
        // transitive, so this checks every pair against one order).
        let mut by_length: Vec<&Read<'_>> = reads.iter().collect();
        by_length.sort_by_key(|r| (r.elements.len(), r.id));
        let mut reference: Option<&Read<'_>> = None;
        for read in by_length {
            match reference {
                Some(r) if !read.elements.starts_with(r.elements) => {
                    anomalies.push(AppendAnomaly::Diverged {
                        key,
                        read: read.id,
                        other: r.id,
                    });
                }
                _ => reference = Some(read),
            }
        }
        for read in reads {
            let mut seen = HashSet::new();
            for &element in read.elements {
                if !seen.insert(element) {
                    anomalies.push(AppendAnomaly::Duplicate {
                        key,
                        read: read.id,
                        element,
                    });
                }
                let possible = appends
                    .get(&element)
                    .is_some_and(|a| a.outcome != Outcome::Fail && a.start <= read.end);
                if !possible {
                    anomalies.push(AppendAnomaly::Phantom {
                        key,
                        read: read.id,
                        element,
                    });
                }
            }
            if !read.linearizable {
                continue;
            }
            for (element, append) in appends {
                if append.outcome == Outcome::Ok
                    && append.end < read.start
                    && !seen.contains(element)
                {
                    anomalies.push(AppendAnomaly::Lost {
                        key,
                        read: read.id,
                        append: append.id,
                    });
                }
            }
            for earlier in reads {
                // Whatever any read saw was applied, so committed: a linearizable
                // read that begins after it ended must hold at least as much.
                if earlier.end < read.start && earlier.elements.len() > read.elements.len() {
                    anomalies.push(AppendAnomaly::WentBack {
                        key,
                        read: read.id,
                        earlier: earlier.id,
                    });
                }
            }
        }
    }
    anomalies
}

/// Whether reads at `level` promise to see every write acknowledged before they began:
/// every level but `none` (docs/API.md: `weak`, and levels the API does not know, are
/// served as `linearizable`).
pub fn is_linearizable(level: &str) -> bool {
    !level.eq_ignore_ascii_case("none")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct H(Vec<Op>);

    impl H {
        fn op(&mut self, call: Call, answer: Answer, outcome: Outcome, start: u64, end: u64) {
            let id = self.0.len();
            self.0.push(Op {
                id,
                client: 0,
                node: "n".into(),
                call,
                answer,
                outcome,
                start,
                end,
                error: None,
            });
        }
        fn append(&mut self, element: i64, outcome: Outcome, start: u64, end: u64) {
            self.op(
                Call::Append { key: 0, element },
                Answer::Nothing,
                outcome,
                start,
                end,
            );
        }
        fn read(&mut self, level: &str, elements: &[i64], start: u64, end: u64) {
            self.op(
                Call::List {
                    key: 0,
                    level: level.into(),
                },
                Answer::List {
                    elements: elements.to_vec(),
                },
                Outcome::Ok,
                start,
                end,
            );
        }
    }

    #[test]
    fn prefixes_of_one_order_pass() {
        let mut h = H(Vec::new());
        h.append(1, Outcome::Ok, 0, 10);
        h.append(2, Outcome::Unknown, 5, 15);
        h.append(3, Outcome::Ok, 11, 20);
        h.read("none", &[1], 12, 13);
        h.read("linearizable", &[1, 3], 21, 30);
        h.read("linearizable", &[1, 3, 2], 31, 40);
        assert_eq!(check(&h.0), vec![]);
    }

    #[test]
    fn each_anomaly_is_caught() {
        let mut h = H(Vec::new());
        h.append(1, Outcome::Ok, 0, 10);
        h.append(2, Outcome::Ok, 0, 10);
        h.append(3, Outcome::Fail, 0, 10);
        h.read("linearizable", &[1, 2], 11, 12); // 3: fine
        h.read("weak", &[2, 1], 13, 14); // 4: another order
        h.read("linearizable", &[1, 2, 2], 15, 16); // 5: twice
        h.read("linearizable", &[1, 2, 3], 17, 18); // 6: a failed append
        h.read("linearizable", &[1], 19, 20); // 7: lost 2, and went back
        h.read("none", &[1, 2, 9], 21, 22); // 8: never appended
        let anomalies = check(&h.0);
        for expected in [
            AppendAnomaly::Diverged {
                key: 0,
                read: 4,
                other: 3,
            },
            AppendAnomaly::Duplicate {
                key: 0,
                read: 5,
                element: 2,
            },
            AppendAnomaly::Phantom {
                key: 0,
                read: 6,
                element: 3,
            },
            AppendAnomaly::Lost {
                key: 0,
                read: 7,
                append: 1,
            },
            AppendAnomaly::WentBack {
                key: 0,
                read: 7,
                earlier: 3,
            },
            AppendAnomaly::Phantom {
                key: 0,
                read: 8,
                element: 9,
            },
        ] {
            assert!(
                anomalies.contains(&expected),
                "{expected:?} not in {anomalies:?}"
            );
        }
    }

    #[test]
    fn an_element_read_before_its_append_was_called_is_a_phantom() {
        let mut h = H(Vec::new());
        h.read("none", &[1], 0, 5);
        h.append(1, Outcome::Ok, 6, 10);
        assert_eq!(
            check(&h.0),
            vec![AppendAnomaly::Phantom {
                key: 0,
                read: 0,
                element: 1
            }]
        );
    }

    #[test]
    fn a_local_read_may_lag_but_a_weak_one_may_not() {
        let mut h = H(Vec::new());
        h.append(1, Outcome::Ok, 0, 10);
        h.read("none", &[], 11, 12);
        assert_eq!(check(&h.0), vec![]);
        // `weak` is served as linearizable.
        h.read("weak", &[], 13, 14);
        assert_eq!(
            check(&h.0),
            vec![AppendAnomaly::Lost {
                key: 0,
                read: 2,
                append: 0
            }]
        );
    }

    #[test]
    fn a_linearizable_read_holds_what_an_earlier_local_read_saw() {
        let mut h = H(Vec::new());
        h.append(1, Outcome::Unknown, 0, 100);
        h.read("none", &[1], 10, 20);
        h.read("linearizable", &[], 30, 40);
        assert!(
            check(&h.0).contains(&AppendAnomaly::WentBack {
                key: 0,
                read: 2,
                earlier: 1
            }),
            "{:?}",
            check(&h.0)
        );
    }
}
