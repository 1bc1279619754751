//! Where the `sqlraft-core` binary under test is.
//!
//! Cargo sets `CARGO_BIN_EXE_<name>` only for a package's own binaries, and it cannot
//! build another package's binary as a dependency (artifact dependencies are unstable).
//! `cargo test --workspace` builds every binary of every member before it runs any
//! test, so the binary sits next to this package's test executables:
//! `target/<profile>/sqlraft-core`, the parent of the test executable's `deps/` (or the
//! directory of a binary such as the campaign's).
//! After `cargo test -p sqlraft-tests` alone, build it first with
//! `cargo build -p sqlraft-core`. `SQLRAFT_CORE_BIN` overrides the path.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

/// The environment variable that names the binary explicitly.
pub const BIN_ENV: &str = "SQLRAFT_CORE_BIN";

/// The path of the `sqlraft-core` binary; panics with what to do when it is missing.
/// Looked up (and checked for staleness) once per test executable.
pub fn sqlraft_core_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(locate).clone()
}

fn locate() -> PathBuf {
    if let Some(path) = std::env::var_os(BIN_ENV) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{BIN_ENV}={} is not a file", path.display());
        return path;
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test>-<hash>  ->  target/<profile>/sqlraft-core, and a
    // binary (the campaign) in target/<profile>/ finds it beside itself.
    let dir = exe.parent().unwrap_or_else(|| {
        panic!(
            "{} is not in a target/<profile>/ directory: set {BIN_ENV}",
            exe.display()
        )
    });
    let profile_dir = match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().unwrap_or(dir),
        _ => dir,
    };
    let bin = profile_dir.join(format!("sqlraft-core{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p sqlraft-core` (or run `cargo test --workspace`, \
         which builds it), or set {BIN_ENV}",
        bin.display()
    );
    warn_if_stale(&bin);
    bin
}

/// A binary older than the sources it is built from tests old code: say so (other
/// engineers edit the crates while these tests run, so this is a warning, not a failure).
fn warn_if_stale(bin: &Path) {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return;
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..");
    let newest = [workspace.join("crates"), workspace.join("proto")]
        .iter()
        .filter_map(|dir| newest_source(dir))
        .max();
    if let Some(newer) = newest.filter(|(t, _)| *t > built) {
        eprintln!(
            "warning: {} is older than {}: run `cargo build -p sqlraft-core` to test the current code",
            bin.display(),
            newer.1.display()
        );
    }
}

fn newest_source(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                if name != "tests" && name != "target" {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs" || e == "proto")
                && let Ok(modified) = entry.metadata().and_then(|m| m.modified())
                && newest.as_ref().is_none_or(|(t, _)| modified > *t)
            {
                newest = Some((modified, path));
            }
        }
    }
    newest
}
