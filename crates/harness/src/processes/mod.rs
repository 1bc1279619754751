//! Multi-process clusters: real `sqlraft-core run` processes on loopback addresses,
//! killed with SIGKILL, stopped with SIGTERM, frozen with SIGSTOP, restarted from their
//! directories. `tests/README.md` says what each test proves.
//!
//! - [`binary`]: where the `sqlraft-core` binary under test is;
//! - [`http`]: the blocking HTTP client (re-exported from the crate root);
//! - [`process`]: one service process, killed when dropped;
//! - [`cluster`]: a cluster formed by joins in a temporary root, removed when dropped;
//! - [`workload`]: a stream of writes with classified outcomes, and the final check.
pub mod binary;
pub mod cluster;
pub mod process;
pub mod workload;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub use crate::http;
pub use binary::sqlraft_core_bin;

/// The first service of a cluster.
pub const FIRST_SERVICE_ID: &str = "00000000-0000-0000-0000-000000000000";

/// The longest any single wait in these tests may take (polled, never slept through).
pub const WAIT: Duration = Duration::from_secs(60);

/// Pause between two polls.
pub const POLL: Duration = Duration::from_millis(50);

static SERIAL: Mutex<()> = Mutex::new(());

/// Held by each test for its whole run: three processes per test are plenty for a
/// two-core machine, and elections under CPU starvation would only add noise.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
