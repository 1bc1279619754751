//! `LogStore` against the storage conformance suite.

sqlraft_log::conformance_tests!(sqlraft_log::LogStore);
