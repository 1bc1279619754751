//! Shared helpers: fixtures are checked under their bare file name.
#![allow(dead_code)]

use sqlraft_inventory::{Checked, Code, Severity, check};

pub fn fixture_text(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn fixture(name: &str) -> Checked {
    check(name, &fixture_text(name))
}

/// Every diagnostic as the CLI prints it.
pub fn rendered(checked: &Checked) -> Vec<String> {
    checked
        .diagnostics
        .all()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Only the errors, as printed.
pub fn errors(checked: &Checked) -> Vec<String> {
    checked
        .diagnostics
        .errors()
        .map(ToString::to_string)
        .collect()
}

pub fn codes(checked: &Checked) -> Vec<(Code, Option<usize>)> {
    checked
        .diagnostics
        .errors()
        .map(|d| (d.code, d.line))
        .collect()
}

pub fn infos(checked: &Checked) -> Vec<(String, Option<usize>)> {
    checked
        .diagnostics
        .all()
        .iter()
        .filter(|d| d.severity == Severity::Info)
        .map(|d| (d.message.clone(), d.line))
        .collect()
}
