//! The in-process cluster of `sqlraft-harness`.
#![allow(unused_imports)]

pub use sqlraft_harness::LinkFault;
pub use sqlraft_harness::in_process::*;
