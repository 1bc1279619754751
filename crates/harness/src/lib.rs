//! The test harness of sqlraft, used by every crate's tests and by the fault campaign
//! (dev-only, never a dependency of a shipped crate). One harness, three scales:
//!
//! - [`in_process`]: clusters of [`sqlraft::Node`]s in one test process over real gRPC
//!   on loopback, with per-link faults (partition, loss, delay) through the transport's
//!   `testing` feature, as raft-rs's `harness/src/network.rs` cuts links in memory;
//! - [`api`]: a node serving the HTTP API in process, for the API's tests;
//! - [`processes`]: clusters of real `sqlraft-core run` processes, killed, stopped,
//!   frozen and restarted with signals;
//! - [`http`]: the blocking HTTP client of the multi-process tests (`reqwest`); the
//!   async one is `sqlraft_core::client`.

pub mod api;
pub mod http;
pub mod in_process;
pub mod processes;

pub use sqlraft_transport::LinkFault;
