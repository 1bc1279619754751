//! Durable raft log for sqlraft: entries, hard state and conf state in append-only,
//! checksummed segment files, compacted behind snapshots, behind [`raft::Storage`].
//!
//! ```
//! use raft::eraftpb::{Entry, HardState};
//! use raft::Storage;
//! use sqlraft_log::{LogOptions, LogStore};
//!
//! let dir = tempfile::tempdir()?;
//! let mut log = LogStore::open(dir.path(), LogOptions::default())?;
//! let entry = Entry { index: 1, term: 1, data: b"hello".to_vec(), ..Default::default() };
//! let hs = HardState { term: 1, vote: 1, commit: 0 };
//! log.write(&[entry], Some(&hs), None)?; // one record, one fdatasync
//! drop(log);
//!
//! let log = LogStore::open(dir.path(), LogOptions::default())?;
//! assert_eq!(log.last_index()?, 1);
//! assert_eq!(log.initial_state()?.hard_state.vote, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The crash-consistency argument is in `docs/ARCHITECTURE.md`. [`conformance`] holds the
//! test suite every log storage of the project must pass.
#![deny(missing_docs)]

pub mod conformance;
mod error;
mod format;
mod store;

pub use error::{LogError, Result};
#[cfg(feature = "testing")]
pub use store::DurableObserver;
pub use store::{LoadReport, LogOptions, LogStore, segment_files};
