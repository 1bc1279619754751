//! What a write returns, and the checks a write request passes before it is proposed.

use prost::Message as _;
use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::{MAX_REQUEST_ID_BYTES, StatementResult, WriteRequest};

use crate::config::Limits;
use crate::error::{NodeError, Result};

/// The outcome of a write.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    /// One result per statement run.
    pub results: Vec<StatementResult>,
    /// Index of the raft entry that carried the write.
    pub raft_index: u64,
    /// Whether this node had applied the entry when it answered, so that every later
    /// read here sees the write. Always true on the leader; a follower waits for it up
    /// to the read timeout, then answers anyway with `false` (read again with
    /// [`crate::Consistency::Local`] `min_index: Some(raft_index)` to wait longer).
    pub applied_here: bool,
    /// Seconds each statement took on the leader that applied it (rqlite's
    /// `timings`); empty for a repeated request id, which applied nothing.
    pub seconds: Vec<f64>,
}

/// The request in its wire form, once it is within the node's limits.
pub(crate) fn checked(request: WriteRequest, limits: &Limits) -> Result<pb::WriteRequest> {
    if request.statements.len() > limits.max_statements {
        return Err(NodeError::Invalid(format!(
            "{} statements in one request; at most {}",
            request.statements.len(),
            limits.max_statements
        )));
    }
    if !request.parts.is_empty() {
        let statements: u64 = request.parts.iter().map(|&n| u64::from(n)).sum();
        if request.transaction
            || request.parts.contains(&0)
            || statements != request.statements.len() as u64
        {
            return Err(NodeError::Invalid(format!(
                "the parts of a batch of requests ({} numbers adding up to {statements}) \
                 must each be at least 1 and add up to its {} statements, without \
                 `transaction`",
                request.parts.len(),
                request.statements.len()
            )));
        }
    }
    if let Some(id) = &request.request_id
        && (id.is_empty() || id.len() > MAX_REQUEST_ID_BYTES)
    {
        return Err(NodeError::Invalid(format!(
            "a request id has 1 to {MAX_REQUEST_ID_BYTES} bytes"
        )));
    }
    let wire = pb::WriteRequest::from(request);
    if wire.encoded_len() > limits.max_request_bytes {
        return Err(NodeError::Invalid(format!(
            "request of {} bytes; at most {}",
            wire.encoded_len(),
            limits.max_request_bytes
        )));
    }
    Ok(wire)
}

#[cfg(test)]
mod tests {
    use sqlraft_sqlite::Statement;

    use super::*;

    fn batch(n: usize, parts: Vec<u32>, transaction: bool) -> WriteRequest {
        WriteRequest {
            statements: vec![Statement::new("INSERT INTO t VALUES (1)"); n],
            transaction,
            request_id: None,
            parts,
        }
    }

    #[test]
    fn the_parts_of_a_batch_must_add_up_to_its_statements() {
        let limits = Limits::default();
        let wire = checked(batch(3, vec![1, 2], false), &limits).expect("parts adding up");
        assert_eq!(wire.parts, vec![1, 2]);
        assert!(checked(batch(3, Vec::new(), true), &limits).is_ok());
        for (parts, transaction) in [
            (vec![1, 1], false),
            (vec![1, 3], false),
            (vec![0, 3], false),
            (vec![3], true),
            (vec![u32::MAX, u32::MAX, 5], false),
        ] {
            let refused = checked(batch(3, parts.clone(), transaction), &limits);
            assert!(
                matches!(&refused, Err(NodeError::Invalid(m)) if m.contains("parts")),
                "{parts:?} {transaction}: {refused:?}"
            );
        }
    }
}
