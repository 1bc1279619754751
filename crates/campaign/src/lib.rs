//! The fault campaign of sqlraft: a Jepsen-style test of real `sqlraft-core` processes.
//!
//! Clients ([`workload`]) run random reads, writes, compare-and-sets, bank transfers and
//! list appends against random nodes while a [`nemesis`] kills, pauses and partitions
//! them (partitions are nftables rules in per-node network namespaces, [`net`]). Every
//! operation is recorded ([`history`]) with its call and return times and whether it
//! took effect (ok), certainly did not (fail) or may have (unknown). After the faults
//! are healed the nodes must converge to one content hash, and the [`check`]er decides
//! whether the history is linearizable per key and keeps the bank and list invariants.
//! [`run`] puts one run together; `docs/TESTING.md` says how to run and reproduce it.
//! [`measure`] serves the measuring tools (`sqlraft-history`, `sqlraft-snapshot-bench`).

pub mod check;
pub mod cluster;
pub mod history;
pub mod measure;
pub mod nemesis;
pub mod net;
pub mod run;
pub mod timeline;
pub mod workload;
