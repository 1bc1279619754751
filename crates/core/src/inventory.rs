//! `sqlraft-core inventory check|plan`.

use std::path::Path;

use sqlraft_inventory::{InstallPlan, Mode, check_file};

use crate::error::CoreError;

/// Checks the inventory at `path`: findings that are not errors go to stdout; with
/// errors, every finding goes to stderr and the result is an error.
pub fn check(path: &Path) -> Result<(), CoreError> {
    let checked = check_file(path).map_err(|e| CoreError::Failed(e.to_string()))?;
    if !checked.is_valid() {
        eprint!("{}", checked.diagnostics);
        return Err(CoreError::Failed(format!(
            "{}: {} error(s)",
            path.display(),
            checked.diagnostics.error_count()
        )));
    }
    print!("{}", checked.diagnostics);
    let services = checked
        .valid()
        .map(|v| v.core_services())
        .map_err(|e| CoreError::Failed(e.to_string()))?;
    println!("{}: valid, {services} core service(s)", path.display());
    Ok(())
}

/// Prints the install plan of the inventory at `path`.
pub fn plan(path: &Path, expand: bool) -> Result<(), CoreError> {
    let checked = check_file(path).map_err(|e| CoreError::Failed(e.to_string()))?;
    if !checked.is_valid() {
        eprint!("{}", checked.diagnostics);
        return Err(CoreError::Failed(format!(
            "{}: {} error(s); no plan",
            path.display(),
            checked.diagnostics.error_count()
        )));
    }
    let valid = checked
        .valid()
        .map_err(|e| CoreError::Failed(e.to_string()))?;
    let mode = if expand {
        Mode::Expand
    } else {
        Mode::Distributed
    };
    print!("{}", InstallPlan::new(&valid, mode));
    Ok(())
}
