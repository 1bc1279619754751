//! The checker: everything a history must satisfy, each part proven by unit tests
//! with hand-made histories to catch the anomalies it claims to.
//!
//! - [`register`]: linearizability of each register (reads, writes, compare-and-set);
//! - [`append`]: lists are prefixes of one order, nothing lost, doubled or invented;
//! - [`bank`]: every read sees the same total;
//! - hostile statements sent as reads were all refused.

pub mod append;
pub mod bank;
pub mod register;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::history::{Answer, Call, Op, Outcome};
use append::AppendAnomaly;
use bank::BankAnomaly;
use register::KeyVerdict;

/// What the bank workload starts with: [`BANK_ACCOUNTS`] accounts of
/// [`BANK_BALANCE`] each.
pub const BANK_ACCOUNTS: usize = 5;
pub const BANK_BALANCE: i64 = 100;

/// The checker's findings for one history.
#[derive(Debug, Clone, Serialize)]
pub struct Findings {
    /// Each register key's verdict.
    pub registers: BTreeMap<u32, KeyVerdict>,
    pub append: Vec<AppendAnomaly>,
    pub bank: Vec<BankAnomaly>,
    /// Hostile statements that a node ran instead of refusing (operation ids).
    pub hostile_accepted: Vec<usize>,
    /// Register and list keys that no read ever saw: nothing about them was checked.
    pub unchecked: Vec<String>,
    /// Reads of the stamps in which SQLite's `'now'` went backwards from one write to
    /// the next (operation ids).
    pub time_went_back: Vec<usize>,
}

impl Findings {
    /// Whether nothing is wrong (an undecided key counts as wrong: nothing was shown).
    pub fn valid(&self) -> bool {
        self.registers
            .values()
            .all(|v| *v == KeyVerdict::Linearizable)
            && self.append.is_empty()
            && self.bank.is_empty()
            && self.hostile_accepted.is_empty()
            && self.time_went_back.is_empty()
            && self.unchecked.is_empty()
    }

    /// The register keys that failed or could not be decided.
    pub fn bad_keys(&self) -> Vec<u32> {
        self.registers
            .iter()
            .filter(|(_, v)| **v != KeyVerdict::Linearizable)
            .map(|(k, _)| *k)
            .collect()
    }
}

/// Checks a whole history.
pub fn check(history: &[Op], budget: u64) -> Findings {
    let registers = register::by_key(history)
        .into_iter()
        .map(|(key, ops)| (key, register::check_register(&ops, budget)))
        .collect();
    let hostile_accepted = history
        .iter()
        .filter(|op| matches!(op.call, Call::Hostile { .. }) && op.outcome == Outcome::Ok)
        .map(|op| op.id)
        .collect();
    Findings {
        registers,
        append: append::check(history),
        bank: bank::check(history, BANK_ACCOUNTS, BANK_BALANCE * BANK_ACCOUNTS as i64),
        hostile_accepted,
        time_went_back: time_went_back(history),
        unchecked: unchecked(history),
    }
}

/// The register and list keys written to but never read successfully.
pub fn unchecked(history: &[Op]) -> Vec<String> {
    use std::collections::BTreeSet;
    let (mut written, mut read) = (BTreeSet::new(), BTreeSet::new());
    for op in history {
        match (&op.call, op.outcome) {
            (Call::Write { key, .. } | Call::Cas { key, .. }, _) => {
                written.insert(format!("register {key}"));
            }
            (Call::Append { key, .. }, _) => {
                written.insert(format!("list {key}"));
            }
            (Call::Read { key, .. }, Outcome::Ok) => {
                read.insert(format!("register {key}"));
            }
            (Call::List { key, .. }, Outcome::Ok) => {
                read.insert(format!("list {key}"));
            }
            _ => {}
        }
    }
    written.difference(&read).cloned().collect()
}

/// The stamp reads whose times are not in the order the stamps were written: the
/// replicated clock never goes backwards, whatever a leader's own clock does.
pub fn time_went_back(history: &[Op]) -> Vec<usize> {
    history
        .iter()
        .filter(|op| match (&op.call, &op.answer, op.outcome) {
            (Call::Stamps { .. }, Answer::List { elements }, Outcome::Ok) => {
                elements.windows(2).any(|w| w[1] < w[0])
            }
            _ => false,
        })
        .map(|op| op.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_that_go_back_are_caught() {
        let read = |id, elements: &[i64]| Op {
            id,
            client: 0,
            node: "n".into(),
            call: Call::Stamps {
                level: "none".into(),
            },
            answer: Answer::List {
                elements: elements.to_vec(),
            },
            outcome: Outcome::Ok,
            start: 0,
            end: 1,
            error: None,
        };
        let history = [read(0, &[1, 2, 2, 5]), read(1, &[1, 7, 3]), read(2, &[])];
        assert_eq!(time_went_back(&history), vec![1]);
    }
}
