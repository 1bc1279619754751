//! SQLite's random functions, made deterministic: `random()` and `randomblob(n)` draw
//! from a generator seeded from the entry index, so a request that uses them writes
//! the same values on every node.

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;

use crate::types::MAX_VALUE_BYTES;

/// `random()` and `randomblob(n)` seeded from the entry index, so that a request that
/// uses them writes the same values on every node.
pub(crate) fn install_deterministic_random(
    conn: &Connection,
    rng: &Arc<Mutex<u64>>,
) -> rusqlite::Result<()> {
    let state = Arc::clone(rng);
    conn.create_scalar_function("random", 0, FunctionFlags::SQLITE_UTF8, move |_| {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(splitmix64(&mut s) as i64)
    })?;
    let state = Arc::clone(rng);
    conn.create_scalar_function("randomblob", 1, FunctionFlags::SQLITE_UTF8, move |ctx| {
        let n = ctx.get::<i64>(0)?.max(1) as usize;
        if n > MAX_VALUE_BYTES {
            return Err(rusqlite::Error::UserFunctionError(
                format!("randomblob({n}): string or blob too big").into(),
            ));
        }
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&splitmix64(&mut s).to_le_bytes());
        }
        out.truncate(n);
        Ok(out)
    })
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
