//! Linearizability of register histories: the Wing & Gong search with Lowe's cache of
//! visited configurations, as Porcupine does it, one key at a time (a history of
//! independent registers is linearizable exactly when each key's is: P-compositionality).
//!
//! The model is a register that starts empty (`None`). A write sets it; a
//! compare-and-set whose answer is known must agree with it (swapped only when it held
//! `from`); one whose outcome is unknown swaps exactly when it held `from`. An operation
//! that certainly failed had no effect and is left out. One whose outcome is unknown may
//! take effect at any time after its call, or never: its return is at infinity, and the
//! search ends once every operation with a known outcome is placed (whatever is left
//! can be placed at the end, where nothing observes it).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::history::{Answer, Call, Op, Outcome};

/// Configurations tried before a key is declared too large to decide.
pub const DEFAULT_STEP_BUDGET: u64 = 20_000_000;

/// The most 64-bit words the cache of visited configurations may hold (2 GiB) before
/// a key is declared too large to decide.
const MAX_CACHE_WORDS: usize = 1 << 28;

/// One operation of a register's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOp {
    /// A read that returned this value.
    Read(Option<i64>),
    /// A write of this value.
    Write(i64),
    /// Compare-and-set; `swapped` is `None` when the outcome is unknown.
    Cas {
        from: i64,
        to: i64,
        swapped: Option<bool>,
    },
}

impl RegisterOp {
    /// The register after this operation, or `None` when it cannot happen in `state`.
    fn step(self, state: Option<i64>) -> Option<Option<i64>> {
        match self {
            RegisterOp::Read(value) => (value == state).then_some(state),
            RegisterOp::Write(value) => Some(Some(value)),
            RegisterOp::Cas { from, to, swapped } => {
                let holds = state == Some(from);
                match swapped {
                    Some(swapped) if swapped != holds => None,
                    _ => Some(if holds { Some(to) } else { state }),
                }
            }
        }
    }
}

/// A register operation with its interval; `end: None` for an unknown outcome.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    /// The history's operation id.
    pub id: usize,
    pub op: RegisterOp,
    pub start: u64,
    pub end: Option<u64>,
}

/// What the search found for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum KeyVerdict {
    Linearizable,
    /// No order exists. `longest`: the longest order of operations found that is
    /// consistent (history ids); `stuck`: the operation that could not be placed after
    /// it (it returned before anything else could be).
    NotLinearizable {
        longest: Vec<usize>,
        stuck: usize,
    },
    /// The search tried `steps` configurations without deciding.
    TooLarge {
        steps: u64,
    },
}

/// The register operations of a history, by key. Reads that did not return and
/// operations that certainly failed are left out. Every read counts as linearizable:
/// the workload reads registers only at levels the API promises are (unless told
/// otherwise, to show that the checker catches stale reads).
pub fn by_key(history: &[Op]) -> BTreeMap<u32, Vec<Timed>> {
    let mut keys: BTreeMap<u32, Vec<Timed>> = BTreeMap::new();
    for op in history {
        let end = match op.outcome {
            Outcome::Ok => Some(op.end),
            Outcome::Unknown => None,
            Outcome::Fail => continue,
        };
        let (key, register_op) = match (&op.call, &op.answer) {
            (Call::Read { key, .. }, Answer::Value { value }) if end.is_some() => {
                (*key, RegisterOp::Read(*value))
            }
            (Call::Write { key, value }, _) => (*key, RegisterOp::Write(*value)),
            (Call::Cas { key, from, to }, answer) => {
                let swapped = match (op.outcome, answer) {
                    (Outcome::Ok, Answer::Swapped { swapped }) => Some(*swapped),
                    _ => None,
                };
                let end = if swapped.is_some() { end } else { None };
                keys.entry(*key).or_default().push(Timed {
                    id: op.id,
                    op: RegisterOp::Cas {
                        from: *from,
                        to: *to,
                        swapped,
                    },
                    start: op.start,
                    end,
                });
                continue;
            }
            _ => continue,
        };
        keys.entry(key).or_default().push(Timed {
            id: op.id,
            op: register_op,
            start: op.start,
            end,
        });
    }
    keys
}

/// Call and return events in time order, linked so that a placed operation can be
/// taken out and put back in O(1).
struct Events {
    /// (operation index, is_call), by position; position 0 is the list's head.
    events: Vec<(usize, bool)>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Each operation's call and return positions (return `None`: at infinity).
    positions: Vec<(usize, Option<usize>)>,
}

const NONE: usize = usize::MAX;

impl Events {
    fn new(ops: &[Timed]) -> Events {
        // (time, 0 for calls and 1 for returns: a call at the same instant as a return
        // counts as concurrent with it, which never invents a violation).
        let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            order.push((op.start, 0, i));
            if let Some(end) = op.end {
                order.push((end, 1, i));
            }
        }
        order.sort_unstable();
        let mut events = vec![(NONE, false)];
        let mut positions = vec![(NONE, None); ops.len()];
        for (_, kind, i) in order {
            let at = events.len();
            events.push((i, kind == 0));
            if kind == 0 {
                positions[i].0 = at;
            } else {
                positions[i].1 = Some(at);
            }
        }
        let n = events.len();
        let next = (0..n)
            .map(|p| if p + 1 < n { p + 1 } else { NONE })
            .collect();
        let prev = (0..n).map(|p| if p == 0 { NONE } else { p - 1 }).collect();
        Events {
            events,
            next,
            prev,
            positions,
        }
    }

    fn unlink(&mut self, p: usize) {
        let (before, after) = (self.prev[p], self.next[p]);
        self.next[before] = after;
        if after != NONE {
            self.prev[after] = before;
        }
    }

    fn relink(&mut self, p: usize) {
        let (before, after) = (self.prev[p], self.next[p]);
        self.next[before] = p;
        if after != NONE {
            self.prev[after] = p;
        }
    }

    /// Takes operation `i`'s events out of the list.
    fn lift(&mut self, i: usize) {
        let (call, ret) = self.positions[i];
        self.unlink(call);
        if let Some(ret) = ret {
            self.unlink(ret);
        }
    }

    /// Puts operation `i`'s events back (the reverse of the last `lift`).
    fn unlift(&mut self, i: usize) {
        let (call, ret) = self.positions[i];
        if let Some(ret) = ret {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// Decides whether one register's operations are linearizable, trying at most
/// `budget` configurations.
pub fn check_register(ops: &[Timed], budget: u64) -> KeyVerdict {
    let mut events = Events::new(ops);
    let mut known_left = ops.iter().filter(|op| op.end.is_some()).count();
    let words = ops.len().div_ceil(64);
    let mut placed = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, Option<i64>)> = HashSet::new();
    // The placed operations in order, each with the state before it.
    let mut stack: Vec<(usize, Option<i64>)> = Vec::new();
    let mut state: Option<i64> = None;
    let mut longest: Vec<usize> = Vec::new();
    let mut stuck = None;
    let mut steps = 0u64;
    let mut at = events.next[0];
    while known_left > 0 {
        steps += 1;
        if steps > budget {
            return KeyVerdict::TooLarge { steps };
        }
        if at == NONE {
            // Only calls of unknown operations are left, none of which could be
            // placed here: back up as at a return.
            at = 0;
        }
        let (i, is_call) = if at == 0 {
            (NONE, false)
        } else {
            events.events[at]
        };
        if is_call {
            let step = ops[i].op.step(state);
            // An operation of unknown outcome that would change nothing here is
            // never worth placing here: leaving it out (it may never have happened)
            // explains the history as well, and placing it would only multiply the
            // configurations to search.
            let no_op = ops[i].end.is_none() && step == Some(state);
            if let Some(after) = step.filter(|_| !no_op) {
                placed[i / 64] |= 1 << (i % 64);
                if seen.len().saturating_mul(words.max(1)) > MAX_CACHE_WORDS {
                    return KeyVerdict::TooLarge { steps };
                }
                if seen.insert((placed.clone(), after)) {
                    stack.push((i, state));
                    state = after;
                    events.lift(i);
                    if ops[i].end.is_some() {
                        known_left -= 1;
                    }
                    at = events.next[0];
                    continue;
                }
                placed[i / 64] &= !(1 << (i % 64));
            }
            at = events.next[at];
        } else {
            // A return (or the end) before its operation could be placed: undo the
            // last placement and try what comes after it.
            if stack.len() > longest.len() || stuck.is_none() {
                longest = stack.iter().map(|&(j, _)| ops[j].id).collect();
                stuck = (i != NONE).then(|| ops[i].id);
            }
            let Some((j, before)) = stack.pop() else {
                return KeyVerdict::NotLinearizable {
                    longest,
                    stuck: stuck.unwrap_or(usize::MAX),
                };
            };
            state = before;
            placed[j / 64] &= !(1 << (j % 64));
            events.unlift(j);
            if ops[j].end.is_some() {
                known_left += 1;
            }
            at = events.next[events.positions[j].0];
        }
    }
    KeyVerdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: usize, op: RegisterOp, start: u64, end: Option<u64>) -> Timed {
        Timed { id, op, start, end }
    }

    fn linearizable(ops: &[Timed]) -> bool {
        match check_register(ops, DEFAULT_STEP_BUDGET) {
            KeyVerdict::Linearizable => true,
            KeyVerdict::NotLinearizable { .. } => false,
            KeyVerdict::TooLarge { steps } => panic!("undecided after {steps}"),
        }
    }

    use RegisterOp::{Cas, Read, Write};

    #[test]
    fn concurrent_writes_and_reads_in_some_order_are_linearizable() {
        // w1 and w2 overlap; reads see 2 then... 2 (w2 after w1).
        let ops = [
            op(0, Write(1), 0, Some(10)),
            op(1, Write(2), 5, Some(15)),
            op(2, Read(Some(2)), 16, Some(20)),
            op(3, Read(Some(2)), 21, Some(25)),
            op(
                4,
                Cas {
                    from: 2,
                    to: 3,
                    swapped: Some(true),
                },
                26,
                Some(30),
            ),
            op(
                5,
                Cas {
                    from: 2,
                    to: 4,
                    swapped: Some(false),
                },
                31,
                Some(35),
            ),
            op(6, Read(Some(3)), 36, Some(40)),
        ];
        assert!(linearizable(&ops));
    }

    #[test]
    fn an_empty_register_reads_none() {
        assert!(linearizable(&[op(0, Read(None), 0, Some(1))]));
        assert!(!linearizable(&[op(0, Read(Some(1)), 0, Some(1))]));
    }

    #[test]
    fn a_stale_read_is_caught() {
        // The write of 2 returned before the read began, yet the read saw 1.
        let ops = [
            op(0, Write(1), 0, Some(10)),
            op(1, Write(2), 11, Some(20)),
            op(2, Read(Some(1)), 21, Some(30)),
        ];
        assert!(!linearizable(&ops));
        // Overlapping the second write, the same read is fine.
        let ops = [
            op(0, Write(1), 0, Some(10)),
            op(1, Write(2), 11, Some(25)),
            op(2, Read(Some(1)), 21, Some(30)),
        ];
        assert!(linearizable(&ops));
    }

    #[test]
    fn a_lost_write_is_caught() {
        // An acknowledged write that a later read does not see (nothing overwrote it).
        let ops = [
            op(0, Write(1), 0, Some(10)),
            op(1, Write(2), 11, Some(20)),
            op(2, Read(Some(2)), 21, Some(30)),
            op(3, Read(Some(1)), 31, Some(40)),
        ];
        let verdict = check_register(&ops, DEFAULT_STEP_BUDGET);
        let KeyVerdict::NotLinearizable { longest, stuck } = verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(longest, vec![0, 1, 2]);
        assert_eq!(stuck, 3);
    }

    #[test]
    fn a_phantom_value_is_caught() {
        // A read of a value nobody wrote (or whose write certainly failed and so is
        // not in the history).
        let ops = [
            op(0, Write(1), 0, Some(10)),
            op(1, Read(Some(7)), 11, Some(20)),
        ];
        assert!(!linearizable(&ops));
    }

    #[test]
    fn a_write_applied_twice_is_caught() {
        // 1 is written once, overwritten by 2, then seen again: applied a second time.
        let ops = [
            op(0, Write(1), 0, Some(10)),
            op(1, Write(2), 11, Some(20)),
            op(2, Read(Some(2)), 21, Some(30)),
            op(3, Read(Some(1)), 31, Some(40)),
            op(4, Read(Some(2)), 41, Some(50)),
        ];
        assert!(!linearizable(&ops));
    }

    #[test]
    fn a_compare_and_set_must_agree_with_the_value() {
        let ops = [
            op(0, Write(1), 0, Some(10)),
            op(
                1,
                Cas {
                    from: 1,
                    to: 2,
                    swapped: Some(false),
                },
                11,
                Some(20),
            ),
        ];
        assert!(!linearizable(&ops));
        let ops = [
            op(0, Write(1), 0, Some(10)),
            op(
                1,
                Cas {
                    from: 3,
                    to: 2,
                    swapped: Some(true),
                },
                11,
                Some(20),
            ),
        ];
        assert!(!linearizable(&ops));
    }

    #[test]
    fn an_unknown_write_may_take_effect_late_or_never() {
        // Never: reads keep seeing 1.
        let ops = [
            op(0, Write(1), 0, Some(10)),
            op(1, Write(2), 11, None),
            op(2, Read(Some(1)), 100, Some(110)),
        ];
        assert!(linearizable(&ops));
        // Late: long after its call, and after a read that did not see it.
        let ops = [
            op(0, Write(1), 0, Some(10)),
            op(1, Write(2), 11, None),
            op(2, Read(Some(1)), 100, Some(110)),
            op(3, Read(Some(2)), 200, Some(210)),
        ];
        assert!(linearizable(&ops));
        // But never before its call.
        let ops = [op(0, Read(Some(2)), 0, Some(10)), op(1, Write(2), 11, None)];
        assert!(!linearizable(&ops));
        // And once seen, it cannot be unseen.
        let ops = [
            op(0, Write(1), 0, Some(10)),
            op(1, Write(2), 11, None),
            op(2, Read(Some(2)), 100, Some(110)),
            op(3, Read(Some(1)), 200, Some(210)),
        ];
        assert!(!linearizable(&ops));
    }

    #[test]
    fn an_unknown_compare_and_set_swaps_exactly_when_it_holds() {
        let ops = [
            op(0, Write(1), 0, Some(10)),
            op(
                1,
                Cas {
                    from: 1,
                    to: 5,
                    swapped: None,
                },
                11,
                None,
            ),
            op(2, Read(Some(5)), 20, Some(30)),
        ];
        assert!(linearizable(&ops));
        let ops = [
            op(0, Write(1), 0, Some(10)),
            op(
                1,
                Cas {
                    from: 9,
                    to: 5,
                    swapped: None,
                },
                11,
                None,
            ),
            op(2, Read(Some(5)), 20, Some(30)),
        ];
        assert!(!linearizable(&ops));
    }

    #[test]
    fn many_concurrent_operations_are_decided_quickly() {
        // 8 clients, 400 operations, each write of a fresh value followed by a read of
        // it, all overlapping in pairs: linearizable, and found without blowing up.
        let mut ops = Vec::new();
        let mut t = 0;
        for round in 0..50 {
            for client in 0..4 {
                let v = round * 10 + client;
                ops.push(op(ops.len(), Write(v), t, Some(t + 7)));
                t += 1;
            }
            t += 10;
            let last = round * 10 + 3;
            for _ in 0..4 {
                ops.push(op(ops.len(), Read(Some(last)), t, Some(t + 3)));
                t += 1;
            }
            t += 5;
        }
        assert!(linearizable(&ops));
    }

    #[test]
    fn unknown_operations_that_change_nothing_do_not_blow_up_a_violation() {
        // Rounds of a write, an unknown compare-and-set from a value that no longer
        // holds (a timed-out request built on a stale read), and a read; then a stale
        // read at the end. Placing the no-op compare-and-sets everywhere would double
        // the search per round.
        let mut ops = Vec::new();
        let mut t = 0;
        for round in 0..40 {
            let v = round + 1;
            ops.push(op(ops.len(), Write(v), t, Some(t + 5)));
            for k in 0..3 {
                ops.push(op(
                    ops.len(),
                    Cas {
                        from: 1000 + k,
                        to: 2000 + round * 10 + k,
                        swapped: None,
                    },
                    t + 1,
                    None,
                ));
            }
            ops.push(op(ops.len(), Read(Some(v)), t + 6, Some(t + 8)));
            t += 10;
        }
        ops.push(op(ops.len(), Read(Some(1)), t, Some(t + 1)));
        let verdict = check_register(&ops, 1_000_000);
        assert!(
            matches!(verdict, KeyVerdict::NotLinearizable { .. }),
            "{verdict:?}"
        );
    }

    #[test]
    fn history_ops_become_register_ops_by_key() {
        let h = vec![
            Op {
                id: 0,
                client: 0,
                node: "n".into(),
                call: Call::Write { key: 1, value: 5 },
                answer: Answer::Nothing,
                outcome: Outcome::Fail,
                start: 0,
                end: 1,
                error: None,
            },
            Op {
                id: 1,
                client: 0,
                node: "n".into(),
                call: Call::Read {
                    key: 1,
                    level: "linearizable".into(),
                },
                answer: Answer::Value { value: Some(5) },
                outcome: Outcome::Ok,
                start: 2,
                end: 3,
                error: None,
            },
        ];
        // The failed write is left out, so the read of 5 is a phantom.
        let keys = by_key(&h);
        assert_eq!(keys[&1].len(), 1);
        assert!(!linearizable(&keys[&1]));
    }
}
