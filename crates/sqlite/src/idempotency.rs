//! Idempotent writes: a request with an id is applied once; a repeat within the window
//! gets the first attempt's results. The table `_sqlraft_requests` is replicated state,
//! written in the same transaction as the write (`ApplyTxn::write_request` calls in
//! here), so every node remembers and forgets the same ids.

use rusqlite::types::ValueRef;
use rusqlite::{OptionalExtension, Transaction};

use crate::error::{Result, SqliteError};
use crate::types::{Params, StatementResult, WriteRequest};

/// How long a request id is remembered, in log entries: a retry within this many
/// entries of the first attempt is answered from the first one's results; the id is
/// forgotten after that, the same way on every node.
pub const IDEMPOTENCY_WINDOW_ENTRIES: u64 = 100_000;

/// What an earlier request with the same id left.
pub(crate) enum Earlier {
    /// The same request, applied at `first_index` with these results.
    Same {
        first_index: u64,
        results: Vec<StatementResult>,
    },
    /// Another request used the id at `first_index`.
    Different { first_index: u64 },
}

/// Forgets the ids first seen more than the window before entry `index`.
pub(crate) fn forget_expired(tx: &Transaction<'_>, index: u64) -> Result<()> {
    let oldest_kept = index.saturating_sub(IDEMPOTENCY_WINDOW_ENTRIES) as i64;
    tx.prepare_cached("DELETE FROM _sqlraft_requests WHERE entry_index <= ?1")
        .and_then(|mut stmt| stmt.execute([oldest_kept]))
        .map(|_| ())
        .map_err(SqliteError::Apply)
}

/// What request id `id` was used for, if it was within the window.
pub(crate) fn earlier(tx: &Transaction<'_>, id: &str, digest: &[u8]) -> Result<Option<Earlier>> {
    let seen: Option<(i64, Vec<u8>, Vec<u8>)> = tx
        .prepare_cached("SELECT entry_index, digest, results FROM _sqlraft_requests WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
        .optional()
        .map_err(SqliteError::Apply)?;
    let Some((first, first_digest, results)) = seen else {
        return Ok(None);
    };
    let first_index = u64::try_from(first)
        .map_err(|_| SqliteError::Inconsistent(format!("request {id:?} at index {first}")))?;
    if first_digest != digest {
        return Ok(Some(Earlier::Different { first_index }));
    }
    let results = decode_results(&results).ok_or_else(|| {
        SqliteError::Inconsistent(format!("stored results of request {id:?} are damaged"))
    })?;
    Ok(Some(Earlier::Same {
        first_index,
        results,
    }))
}

/// Bytes of a request's results kept for its id: below what SQLite takes as one value
/// (`MAX_VALUE_BYTES`), with room for the row around it.
pub(crate) const MAX_KEPT_RESULTS_BYTES: usize = crate::types::MAX_VALUE_BYTES - (64 << 10);

/// Remembers that request `id` was applied at `index` with `results`. Results too
/// large to keep as one value (many statements with long errors and `RETURNING` rows)
/// are kept as a single result saying so: a repeat learns that the request was
/// applied, not what it returned. Whatever the results, this never fails the entry
/// (found by a review: results over SQLite's limit stopped every node, at every
/// start).
pub(crate) fn remember(
    tx: &Transaction<'_>,
    id: &str,
    index: u64,
    digest: &[u8],
    results: &[StatementResult],
) -> Result<()> {
    let mut encoded = encode_results(results);
    if encoded.len() > MAX_KEPT_RESULTS_BYTES {
        encoded = encode_results(&[StatementResult {
            error: Some(format!(
                "this request was applied at raft index {index}; its results ({} bytes) \
                 were too large to keep for a repeat",
                encoded.len()
            )),
            ..Default::default()
        }]);
    }
    tx.prepare_cached(
        "INSERT INTO _sqlraft_requests (id, entry_index, digest, results) \
         VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut stmt| stmt.execute(rusqlite::params![id, index as i64, digest, encoded]))
    .map(|_| ())
    .map_err(SqliteError::Apply)
}

/// What identifies a request's content for idempotency: its mode, statements and
/// parameters, hashed where they lie (no copy of a request that may be megabytes).
pub(crate) fn request_digest(request: &WriteRequest) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update([u8::from(request.transaction)]);
    // (Only when there are parts: ids remembered before parts existed keep their
    // digests.)
    if !request.parts.is_empty() {
        hasher.update(b"parts");
        hasher.update((request.parts.len() as u64).to_le_bytes());
        for part in &request.parts {
            hasher.update(part.to_le_bytes());
        }
    }
    for statement in &request.statements {
        crate::hash::feed(&mut hasher, ValueRef::Text(statement.sql.as_bytes()));
        match &statement.params {
            Params::None => hasher.update(b"-"),
            Params::Positional(values) => {
                hasher.update((values.len() as u64).to_le_bytes());
                for value in values {
                    crate::hash::feed(&mut hasher, value.as_value_ref());
                }
            }
            Params::Named(values) => {
                hasher.update(b"=");
                hasher.update((values.len() as u64).to_le_bytes());
                for (name, value) in values {
                    crate::hash::feed(&mut hasher, ValueRef::Text(name.as_bytes()));
                    crate::hash::feed(&mut hasher, value.as_value_ref());
                }
            }
        }
    }
    hasher.finalize().to_vec()
}

fn encode_results(results: &[StatementResult]) -> Vec<u8> {
    use prost::Message as _;
    sqlraft_proto::v1::WriteResults {
        results: results.iter().map(Into::into).collect(),
    }
    .encode_to_vec()
}

fn decode_results(bytes: &[u8]) -> Option<Vec<StatementResult>> {
    use prost::Message as _;
    let decoded = sqlraft_proto::v1::WriteResults::decode(bytes).ok()?;
    Some(decoded.results.into_iter().map(Into::into).collect())
}
