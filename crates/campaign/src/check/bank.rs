//! The bank workload's invariant: transfers move money between a fixed set of accounts
//! in transactions, so every read, at every level and on every node, sees every account
//! and the same total, with no balance below zero.

use serde::Serialize;

use crate::history::{Answer, Call, Op, Outcome};

/// A read that saw money created or destroyed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BankAnomaly {
    /// The read's operation id.
    pub read: usize,
    /// What it saw.
    pub balances: Vec<i64>,
    pub total: i64,
    pub why: String,
}

/// Every read of `history` that does not show `accounts` accounts holding `total`.
pub fn check(history: &[Op], accounts: usize, total: i64) -> Vec<BankAnomaly> {
    let mut anomalies = Vec::new();
    for op in history {
        let (Call::Balances { .. }, Answer::Balances { balances }, Outcome::Ok) =
            (&op.call, &op.answer, op.outcome)
        else {
            continue;
        };
        let sum: i64 = balances.iter().sum();
        let why = if balances.len() != accounts {
            format!("{} accounts, not {accounts}", balances.len())
        } else if sum != total {
            format!("total {sum}, not {total}")
        } else if balances.iter().any(|&b| b < 0) {
            "a negative balance".to_string()
        } else {
            continue;
        };
        anomalies.push(BankAnomaly {
            read: op.id,
            balances: balances.clone(),
            total: sum,
            why,
        });
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(id: usize, balances: &[i64]) -> Op {
        Op {
            id,
            client: 0,
            node: "n".into(),
            call: Call::Balances {
                level: "none".into(),
            },
            answer: Answer::Balances {
                balances: balances.to_vec(),
            },
            outcome: Outcome::Ok,
            start: 0,
            end: 1,
            error: None,
        }
    }

    #[test]
    fn reads_that_create_or_lose_money_are_caught() {
        let h = [
            read(0, &[50, 150, 100]),
            read(1, &[50, 100, 100]),
            read(2, &[-10, 210, 100]),
            read(3, &[300]),
        ];
        let found: Vec<usize> = check(&h, 3, 300).iter().map(|a| a.read).collect();
        assert_eq!(found, vec![1, 2, 3]);
    }
}
