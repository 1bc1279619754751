//! Helpers shared by the state machine's tests.

use sqlraft_sqlite::{StateMachine, Statement, WriteRequest};

/// Applies `sqls` as one transaction request at the next index, commits it, checks
/// every statement succeeded, and returns the index.
pub fn write_ok(sm: &mut StateMachine, sqls: &[&str]) -> u64 {
    let index = sm.applied_index() + 1;
    let mut txn = sm.begin().expect("begin");
    let results = txn
        .write(
            index,
            &WriteRequest::transaction(sqls.iter().map(|s| Statement::new(*s)).collect()),
        )
        .expect("write");
    assert!(results.iter().all(|r| r.error.is_none()), "{results:?}");
    txn.commit().expect("commit");
    index
}
