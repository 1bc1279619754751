//! The in-process API node of `sqlraft-harness`.
#![allow(unused_imports)]

pub use sqlraft_harness::api::*;
