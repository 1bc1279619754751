//! `sqlraft-core uninstall`: take an installed core service off this host.
//!
//! A service that the cluster removed writes `<root>/core/<id>/removed` before it exits
//! (status 0), and refuses to start again while the file is there. Its unit then runs
//! `uninstall --if-removed` (`ExecStopPost=`, as root), which disables the unit, so
//! nothing starts it at the next boot either.
//!
//! A plain `uninstall` stops the service (`systemctl disable --now`, or SIGTERM to its
//! supervisor), deletes its unit, and deletes the binary `<root>/bin/sqlraft-core` when
//! no other service is installed on this host. The data, `<root>/core/<id>`, is kept
//! unless `--purge`. A service this host still counts as a member is refused without
//! `--force`: remove it from the cluster first.

use crate::error::{CoreError, io_err};
use crate::install::{SYSTEMD_MARKER, UNIT_DIR, systemctl, systemctl_ok, unit_name};
use crate::removal::removed_note;
use crate::supervisor::{SupervisedPaths, supervisor_running};
use std::path::{Path, PathBuf};

/// What `sqlraft-core uninstall` was asked.
#[derive(Clone, Debug)]
pub struct Uninstall {
    /// The service id (checked).
    pub id: String,
    /// The root directory.
    pub root: PathBuf,
    /// Also delete `<root>/core/<id>`.
    pub purge: bool,
    /// Keep `<root>/bin/sqlraft-core` whatever else is installed.
    pub keep_binary: bool,
    /// Uninstall a service that has not been removed from the cluster.
    pub force: bool,
    /// Only disable the unit, and only when the service was removed (the unit's
    /// `ExecStopPost=`).
    pub if_removed: bool,
}

/// Runs `sqlraft-core uninstall`; prints what it did, one line per step.
pub fn uninstall(req: &Uninstall) -> Result<(), CoreError> {
    let dir = req.root.join("core").join(&req.id);
    let unit = unit_name(&req.id);
    let unit_path = Path::new(UNIT_DIR).join(&unit);
    let systemd = Path::new(SYSTEMD_MARKER).is_dir();
    let removed = removed_note(&dir);

    if req.if_removed {
        if removed.is_some() && systemd && unit_path.exists() {
            // The unit is stopping: disable only (no reload, no stop job of its own).
            systemctl(&["disable", "--no-reload", "--quiet", &unit])?;
            println!("{unit}: the service was removed from the cluster; unit disabled");
        }
        return Ok(());
    }

    // Nothing of this id here (a typo, another root): change nothing, the binary
    // included.
    let supervised = supervisor_running(&SupervisedPaths::new(&dir))?;
    if !dir.exists() && !unit_path.exists() && !supervised {
        println!(
            "service {}: nothing installed under {} (no {}, no unit {unit}); nothing changed",
            req.id,
            req.root.display(),
            dir.display()
        );
        return Ok(());
    }
    let member = dir.join("raft").join("identity").exists() && removed.is_none();
    if member && !req.force {
        return Err(CoreError::Usage(format!(
            "service {} is a member of the cluster as far as this host knows: remove it \
             first (web interface, or DELETE /api/v1/services/{}), or pass --force to take \
             it off this host anyway (the cluster then counts it as down until it is removed)",
            req.id, req.id
        )));
    }

    let mut did_something = false;
    if systemd && unit_path.exists() {
        systemctl(&["disable", "--now", "--quiet", &unit])?;
        std::fs::remove_file(&unit_path).map_err(|e| io_err("delete", &unit_path, e))?;
        systemctl(&["daemon-reload"])?;
        // Forget a failed state, if any; nothing to do otherwise.
        let _ = systemctl_ok(&["reset-failed", &unit]);
        println!("{unit}: stopped, disabled, {} deleted", unit_path.display());
        did_something = true;
    } else if !systemd && unit_path.exists() {
        println!(
            "{unit}: systemd is not running here; {} left in place",
            unit_path.display()
        );
    }
    if crate::supervisor::stop_supervisor(&req.id, &dir)? {
        did_something = true;
    }

    let binary = req.root.join("bin").join("sqlraft-core");
    if req.keep_binary {
        if binary.exists() {
            println!("{}: kept (--keep-binary)", binary.display());
        }
    } else if binary.exists() {
        let others = other_services(&req.root, &req.id);
        if others.is_empty() {
            std::fs::remove_file(&binary).map_err(|e| io_err("delete", &binary, e))?;
            println!("{}: deleted", binary.display());
            // The binary of the last upgrade goes with it.
            let previous = req.root.join("bin").join("sqlraft-core.previous");
            if previous.exists() {
                std::fs::remove_file(&previous).map_err(|e| io_err("delete", &previous, e))?;
                println!("{}: deleted", previous.display());
            }
            did_something = true;
        } else {
            println!(
                "{}: kept, still used by {}",
                binary.display(),
                others.join(", ")
            );
        }
    }

    if req.purge {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io_err("delete", &dir, e))?;
            println!("{}: deleted (--purge)", dir.display());
            did_something = true;
        }
    } else if dir.exists() {
        println!("{}: data kept (--purge deletes it)", dir.display());
    }
    if !did_something {
        println!("service {}: nothing installed here to take away", req.id);
    }
    Ok(())
}

/// The other services of this host that run `<root>/bin/sqlraft-core`: units whose
/// `ExecStart=` runs it, and service directories under `<root>/core` that hold a service
/// not removed from the cluster (running or not: after a reboot a supervised service is
/// started again with that binary).
fn other_services(root: &Path, id: &str) -> Vec<String> {
    let mut others = Vec::new();
    let binary = root.join("bin").join("sqlraft-core");
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let this_unit = unit_name(id);
    if let Ok(entries) = std::fs::read_dir(UNIT_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("sqlraft-core-")
                || !name.ends_with(".service")
                || name == this_unit
            {
                continue;
            }
            let runs = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|text| crate::install::unit_command(&text)?.ok())
                .and_then(|words| words.into_iter().next())
                .is_some_and(|exe| canonical(Path::new(&exe)) == canonical(&binary));
            if runs {
                others.push(name);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(root.join("core")) {
        for entry in entries.flatten() {
            let other = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            if other == id || others.iter().any(|u| *u == unit_name(&other)) {
                continue;
            }
            let holds_service = dir.join("raft").join("identity").exists()
                && crate::removal::removed_note(&dir).is_none();
            let running = supervisor_running(&SupervisedPaths::new(&dir)).unwrap_or(false);
            if holds_service || running {
                others.push(format!("the service {other} in {}", dir.display()));
            }
        }
    }
    others.sort();
    others
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::removal::mark_removed;

    /// A root with service `id` (its identity) and the binary; the request to
    /// uninstall it, without --purge.
    fn installed(id: &str) -> (tempfile::TempDir, PathBuf, PathBuf, Uninstall) {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("core").join(id);
        std::fs::create_dir_all(dir.join("raft")).expect("mkdir");
        std::fs::write(dir.join("raft").join("identity"), "x").expect("identity");
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::fs::write(bin.join("sqlraft-core"), "binary").expect("binary");
        let req = Uninstall {
            id: id.into(),
            root: root.path().to_path_buf(),
            purge: false,
            keep_binary: false,
            force: false,
            if_removed: false,
        };
        (root, dir, bin, req)
    }

    #[test]
    fn a_member_is_not_uninstalled_without_force() {
        let (_root, dir, bin, req) = installed("6f1c0a3e-0000-4000-8000-000000000001");
        let raft = dir.join("raft");
        let req = Uninstall { purge: true, ..req };
        let err = uninstall(&req).expect_err("refused");
        assert!(err.to_string().contains("--force"), "{err}");
        assert!(raft.join("identity").exists(), "nothing deleted");
        assert!(bin.join("sqlraft-core").exists(), "nothing deleted");

        // --if-removed does nothing for a member.
        uninstall(&Uninstall {
            if_removed: true,
            ..req.clone()
        })
        .expect("no-op");
        assert!(raft.join("identity").exists());
    }

    #[test]
    fn a_removed_service_is_uninstalled_and_its_data_kept_unless_purged() {
        let (_root, dir, bin, req) = installed("6f1c0a3e-0000-4000-8000-000000000002");
        mark_removed(&dir).expect("mark");
        uninstall(&req).expect("uninstalled");
        assert!(!bin.join("sqlraft-core").exists(), "binary deleted");
        assert!(dir.join("raft").join("identity").exists(), "data kept");
        uninstall(&Uninstall {
            purge: true,
            ..req.clone()
        })
        .expect("purged");
        assert!(!dir.exists(), "--purge deletes the data");
        // Again: nothing left, still fine.
        uninstall(&req).expect("idempotent");
    }

    #[test]
    fn the_binary_stays_while_another_supervised_service_runs_here() {
        let root = tempfile::tempdir().expect("tempdir");
        let other = root.path().join("core").join("other");
        let paths = SupervisedPaths::new(&other);
        std::fs::create_dir_all(&paths.run_dir).expect("mkdir");
        let lock = std::fs::File::create(&paths.lock).expect("lock file");
        lock.lock().expect("locked");
        let found = other_services(root.path(), "6f1c0a3e-0000-4000-8000-000000000003");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("the service other "), "{found:?}");
    }

    #[test]
    fn the_binary_stays_while_another_service_is_installed_here_even_stopped() {
        let root = tempfile::tempdir().expect("tempdir");
        let stopped = root.path().join("core").join("stopped");
        std::fs::create_dir_all(stopped.join("raft")).expect("mkdir");
        std::fs::write(stopped.join("raft").join("identity"), "x").expect("identity");
        let gone = root.path().join("core").join("gone");
        std::fs::create_dir_all(gone.join("raft")).expect("mkdir");
        std::fs::write(gone.join("raft").join("identity"), "x").expect("identity");
        crate::removal::mark_removed(&gone).expect("mark");
        let found = other_services(root.path(), "6f1c0a3e-0000-4000-8000-000000000004");
        assert_eq!(
            found.len(),
            1,
            "a removed service does not count: {found:?}"
        );
        assert!(found[0].starts_with("the service stopped "), "{found:?}");
    }
}
