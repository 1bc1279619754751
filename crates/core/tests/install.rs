//! `sqlraft-core run ... --install [--dry-run]` through the real binary: what the dry
//! run prints, refusals that change nothing, and (where systemd is not running) the
//! supervised background process: start, idempotent re-install, restart on failure, stop.

mod install_support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use install_support::{BIN, FIRST_ID, SupervisedGuard, free_port, wait_for, wait_ready};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlraft_core::install::{NOTHING_CHANGED, SYSTEMD_MARKER, process_alive};

const OTHER_ID: &str = "6f1c0a3e-1234-4abc-9def-0123456789ab";

fn sqlraft_core(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that a command's output (stdout or stderr) says `needle`.
fn assert_says(output: &[u8], needle: &str) {
    let said = text(output);
    assert!(said.contains(needle), "expected {needle:?} in:\n{said}");
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
}

fn systemd_running() -> bool {
    Path::new(SYSTEMD_MARKER).is_dir()
}

#[test]
fn dry_run_prints_the_unit_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // A relative root becomes absolute in the unit.
    let out = sqlraft_core(
        &[
            "run",
            "--id",
            FIRST_ID,
            "--root",
            "srv",
            "--raft.node.addr",
            "core-1.example.test:7209",
            "--http",
            "127.0.0.1:7220",
            "--raft.insecure",
            "--install",
            "--dry-run",
        ],
        tmp.path(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let root = tmp.path().join("srv");
    let dir = root.join("core").join(FIRST_ID);
    let exec = format!(
        "ExecStart={BIN} run --id {FIRST_ID} --root {} --raft.node.listen 0.0.0.0:7209 \
         --raft.node.addr core-1.example.test:7209 --http 127.0.0.1:7220 --raft.insecure",
        root.display()
    );
    for line in [
        format!("# /etc/systemd/system/sqlraft-core-{FIRST_ID}.service"),
        "[Unit]".to_string(),
        "After=network-online.target".to_string(),
        exec,
        format!("WorkingDirectory={}", dir.display()),
        "Restart=on-failure".to_string(),
        "LimitNOFILE=65536".to_string(),
        "WantedBy=multi-user.target".to_string(),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing line {line:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("User="), "no --user, no User=: {stdout}");
    assert!(stdout.contains("nothing done (--dry-run)"), "{stdout}");
    if systemd_running() {
        assert!(stdout.contains("systemctl enable --now"), "{stdout}");
    } else {
        assert!(stdout.contains("systemd is not running here"), "{stdout}");
        assert!(stdout.contains("run/supervisor.pid"), "{stdout}");
    }
    assert!(is_empty_dir(tmp.path()), "--dry-run created files");
}

#[test]
fn dry_run_with_a_user_names_it_in_the_unit() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = sqlraft_core(
        &[
            "run",
            "--id",
            FIRST_ID,
            "--root",
            "/opt/sqlraft",
            "--user",
            "root",
            "--raft.insecure",
            "--install",
            "--dry-run",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).lines().any(|l| l == "User=root"));
}

/// Exit status 2, one line on stderr, nothing created.
fn assert_refused(args: &[&str], expect: &str) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().join("root");
    let root = root.to_str().expect("utf-8");
    let mut argv = vec!["run", "--root", root];
    argv.extend_from_slice(args);
    let out = sqlraft_core(&argv, tmp.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{argv:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("sqlraft-core: error: "), "{stderr}");
    assert!(stderr.contains(expect), "{stderr:?} lacks {expect:?}");
    assert!(is_empty_dir(tmp.path()), "{argv:?} created files");
}

#[test]
fn install_refusals_change_nothing() {
    assert_refused(&["--id", FIRST_ID, "--dry-run"], "--install");
    assert_refused(&["--id", FIRST_ID, "--user", "root"], "--install");
    assert_refused(
        &[
            "--id",
            FIRST_ID,
            "--install",
            "--raft.insecure",
            "--user",
            "no-such-user-sqlraft",
        ],
        "no such user",
    );
    // Neither TLS nor an explicit --raft.insecure.
    assert_refused(&["--id", FIRST_ID, "--install"], "needs TLS");
    // A new peer without --raft.join would found a second cluster.
    assert_refused(
        &["--id", OTHER_ID, "--install", "--raft.insecure"],
        "--raft.join",
    );
    assert_refused(
        &[
            "--id",
            OTHER_ID,
            "--install",
            "--dry-run",
            "--raft.insecure",
        ],
        "--raft.join",
    );
    assert_refused(&["--id", "core-1", "--install"], "not a service id");
    // Files `run` would refuse at its start (found by a review: the dry run said
    // nothing was wrong, and a real install enabled a service that never started).
    assert_refused(
        &[
            "--id",
            FIRST_ID,
            "--install",
            "--dry-run",
            "--raft.insecure",
            "--auth",
            "/nonexistent/auth.json",
        ],
        "--auth",
    );
    assert_refused(
        &[
            "--id",
            FIRST_ID,
            "--install",
            "--dry-run",
            "--raft.tls.ca",
            "/nonexistent/ca.crt",
            "--raft.tls.cert",
            "/nonexistent/svc.crt",
            "--raft.tls.key",
            "/nonexistent/svc.key",
        ],
        "--raft.tls",
    );
}

#[test]
fn supervised_install_starts_once_restarts_on_failure_and_stops_on_sigterm() {
    if systemd_running() {
        eprintln!("systemd runs here: --install would write a real unit; skipped");
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().join("root");
    let raft = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let raft_addr = format!(
        "core-1.example.test:{}",
        raft.rsplit(':').next().expect("port")
    );
    let args = [
        "run",
        "--id",
        FIRST_ID,
        "--root",
        root.to_str().expect("utf-8"),
        "--raft.node.listen",
        &raft,
        "--raft.node.addr",
        &raft_addr,
        "--http",
        &http,
        "--raft.insecure",
        "--install",
    ];
    let dir = root.join("core").join(FIRST_ID);
    let guard = SupervisedGuard::new(&dir);

    let first = sqlraft_core(&args, tmp.path());
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_says(&first.stdout, "started as a supervised background process");
    assert!(wait_ready(&http, Duration::from_secs(30)), "not ready");
    let supervisor = guard.supervisor_pid().expect("supervisor pid file");
    let core = guard.core_pid().expect("core pid file");
    assert!(dir.join("log").join("core").is_file());
    assert!(dir.join("log").join("supervisor").is_file());

    // Again: nothing changes.
    let again = sqlraft_core(&args, tmp.path());
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_says(&again.stdout, NOTHING_CHANGED);
    assert_eq!(guard.supervisor_pid(), Some(supervisor));
    assert_eq!(guard.core_pid(), Some(core));

    // The service dies: the supervisor starts it again.
    kill(Pid::from_raw(core), Signal::SIGKILL).expect("kill the service");
    assert!(
        wait_for(Duration::from_secs(20), || guard
            .core_pid()
            .is_some_and(|p| p != core)),
        "not restarted"
    );
    assert!(
        wait_ready(&http, Duration::from_secs(30)),
        "not ready again"
    );
    assert_eq!(guard.supervisor_pid(), Some(supervisor));

    // SIGTERM to the supervisor stops both and removes the pid files.
    let restarted = guard.core_pid().expect("restarted service");
    assert!(guard.stop(), "supervisor did not stop cleanly");
    assert!(!process_alive(supervisor) && !process_alive(restarted));
    let paths = guard.paths();
    assert!(!paths.supervisor_pid.exists() && !paths.core_pid.exists());
    let log = std::fs::read_to_string(&paths.log).expect("supervisor log");
    assert!(log.contains("restarting"), "{log}");
    assert!(log.contains("supervisor stopped"), "{log}");
}

/// A temporary directory with a root in it for supervised installs (its path also as
/// text); `None`, said on stderr, where systemd runs (`--install` would write a real
/// unit).
fn supervised_root() -> Option<(tempfile::TempDir, std::path::PathBuf, String)> {
    if systemd_running() {
        eprintln!("systemd runs here: --install would write a real unit; skipped");
        return None;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().join("root");
    let root_s = root.to_str().expect("utf-8").to_string();
    Some((tmp, root, root_s))
}

/// One request to a service, in a runtime of its own.
fn http_req(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let r = rt
        .block_on(sqlraft_core::client::request(
            addr,
            method,
            path,
            body.map(str::as_bytes),
            Duration::from_secs(20),
        ))
        .expect("an answer");
    (r.status, r.json().unwrap_or(serde_json::Value::Null))
}

#[test]
fn a_removed_supervised_service_stops_for_good_and_is_uninstalled() {
    let Some((tmp, root, root_s)) = supervised_root() else {
        return;
    };
    let install_args = |id: &str, raft: &str, http: &str, join: Option<&str>| {
        let mut args: Vec<String> = [
            "run",
            "--id",
            id,
            "--root",
            &root_s,
            "--raft.node.listen",
            raft,
            "--raft.node.addr",
            raft,
            "--http",
            http,
            "--raft.insecure",
            "--install",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(join) = join {
            args.extend(["--raft.join".to_string(), join.to_string()]);
        }
        args
    };
    let (raft1, http1) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let first_guard = SupervisedGuard::new(&root.join("core").join(FIRST_ID));
    let args1 = install_args(FIRST_ID, &raft1, &http1, None);
    let args1: Vec<&str> = args1.iter().map(String::as_str).collect();
    let out = sqlraft_core(&args1, tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        wait_ready(&http1, Duration::from_secs(30)),
        "first not ready"
    );

    // A second service, created in the registry, installed, then removed.
    // One service per host: the second is 127.0.0.2.
    let raft2 = format!("127.0.0.2:{}", free_port());
    let http2 = format!("127.0.0.2:{}", free_port());
    let (status, created) = http_req(
        &http1,
        "POST",
        "/api/v1/services",
        Some(&format!(
            r#"{{"fqdn": "127.0.0.2", "raft_addr": "{raft2}"}}"#
        )),
    );
    assert_eq!(status, 201, "{created}");
    let id2 = created["id"].as_str().expect("id").to_string();
    let dir2 = root.join("core").join(&id2);
    let second_guard = SupervisedGuard::new(&dir2);
    let args2 = install_args(&id2, &raft2, &http2, Some(&raft1));
    let args2: Vec<&str> = args2.iter().map(String::as_str).collect();
    let out = sqlraft_core(&args2, tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        wait_ready(&http2, Duration::from_secs(30)),
        "second not ready"
    );
    let (status, removed) = http_req(&http1, "DELETE", &format!("/api/v1/services/{id2}"), None);
    assert_eq!(status, 200, "{removed}");
    assert!(
        wait_for(Duration::from_secs(30), || second_guard
            .supervisor_pid()
            .is_none()
            && second_guard.core_pid().is_none()),
        "the removed service and its supervisor did not stop"
    );
    assert!(dir2.join("removed").is_file(), "no removal note");
    let log = std::fs::read_to_string(second_guard.paths().log).expect("supervisor log");
    assert!(
        log.contains("stopped cleanly; not restarting")
            && !log
                .lines()
                .any(|l| l.contains("restarting") && !l.contains("not restarting")),
        "a removed service is not restarted: {log}"
    );

    // It never comes back: --install and a plain run refuse, without changing anything.
    let again = sqlraft_core(&args2, tmp.path());
    assert!(!again.status.success());
    assert_says(&again.stderr, "was removed from the cluster");
    assert!(second_guard.supervisor_pid().is_none());
    let run_args: Vec<&str> = args2
        .iter()
        .copied()
        .filter(|a| *a != "--install")
        .collect();
    let plain = sqlraft_core(&run_args, tmp.path());
    assert!(
        plain.status.success(),
        "a clean exit: {}",
        text(&plain.stderr)
    );
    assert_says(&plain.stderr, "not starting");

    // uninstall keeps the data; --purge deletes it.
    let out = sqlraft_core(&["uninstall", "--id", &id2, "--root", &root_s], tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_says(&out.stdout, "data kept");
    assert!(dir2.join("raft").is_dir());
    let out = sqlraft_core(
        &["uninstall", "--id", &id2, "--root", &root_s, "--purge"],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!dir2.exists(), "--purge deletes the data");

    // A member is not uninstalled without --force; with it, its supervisor is stopped.
    let supervisor = first_guard.supervisor_pid().expect("first supervisor");
    let refused = sqlraft_core(
        &["uninstall", "--id", FIRST_ID, "--root", &root_s],
        tmp.path(),
    );
    assert!(!refused.status.success());
    assert_says(&refused.stderr, "--force");
    assert_eq!(
        first_guard.supervisor_pid(),
        Some(supervisor),
        "left running"
    );
    let forced = sqlraft_core(
        &["uninstall", "--id", FIRST_ID, "--root", &root_s, "--force"],
        tmp.path(),
    );
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert!(!process_alive(supervisor), "the supervisor was stopped");
    assert!(first_guard.core_pid().is_none());
    assert!(
        root.join("core").join(FIRST_ID).join("raft").is_dir(),
        "data kept"
    );
}

#[test]
fn upgrade_replaces_the_binary_and_restarts_a_supervised_service() {
    let Some((tmp, root, root_s)) = supervised_root() else {
        return;
    };
    // The "old" installed binary: this one with a byte more (it runs the same; the
    // upgrade sees another file).
    let bin_dir = root.join("bin");
    std::fs::create_dir_all(&bin_dir).expect("mkdir");
    let installed = bin_dir.join("sqlraft-core");
    let mut old = std::fs::read(BIN).expect("read the binary");
    old.push(0);
    std::fs::write(&installed, &old).expect("write");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let raft = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let dir = root.join("core").join(FIRST_ID);
    let guard = SupervisedGuard::new(&dir);
    let out = Command::new(&installed)
        .args(["run", "--id", FIRST_ID, "--root", &root_s])
        .args([
            "--raft.node.listen",
            &raft,
            "--raft.node.addr",
            &raft,
            "--http",
            &http,
        ])
        .args(["--raft.insecure", "--install"])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(wait_ready(&http, Duration::from_secs(30)), "not ready");
    let (status, _) = http_req(
        &http,
        "POST",
        "/db/execute",
        Some(r#"["CREATE TABLE t (x)", "INSERT INTO t VALUES (7)"]"#),
    );
    assert_eq!(status, 200);
    let supervisor = guard.supervisor_pid().expect("supervisor");

    let check = sqlraft_core(&["upgrade", "--root", &root_s, "--check"], tmp.path());
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert_says(&check.stdout, "would replace");
    assert_eq!(
        guard.supervisor_pid(),
        Some(supervisor),
        "--check changes nothing"
    );
    assert_eq!(std::fs::read(&installed).expect("read"), old);

    // As if an upgrade had stopped after replacing the file: the service still runs the
    // old binary, which `upgrade` sees from the running process.
    let staged = bin_dir.join("staged");
    std::fs::copy(BIN, &staged).expect("copy");
    std::fs::rename(&staged, &installed).expect("rename");
    let up = sqlraft_core(&["upgrade", "--root", &root_s], tmp.path());
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert_says(&up.stdout, "already this binary");
    assert_says(&up.stdout, " (was ");
    let new_supervisor = guard.supervisor_pid().expect("a new supervisor");
    assert_ne!(
        new_supervisor, supervisor,
        "the stale service was restarted"
    );
    assert!(!process_alive(supervisor));
    let (status, body) = http_req(
        &http,
        "GET",
        "/db/query?level=none&q=SELECT%20x%20FROM%20t",
        None,
    );
    assert_eq!(
        (status, body["results"][0]["values"].clone()),
        (200, serde_json::json!([[7]]))
    );

    // Again: the same binary, nothing restarts.
    let again = sqlraft_core(&["upgrade", "--root", &root_s], tmp.path());
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_says(&again.stdout, NOTHING_CHANGED);
    assert_eq!(guard.supervisor_pid(), Some(new_supervisor));

    // Back to the old binary with --binary: it replaces the installed one, which is kept
    // as .previous, and the service runs the old one again.
    let old_file = tmp.path().join("old-sqlraft-core");
    std::fs::write(&old_file, &old).expect("write");
    std::fs::set_permissions(&old_file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let back = sqlraft_core(
        &[
            "upgrade",
            "--root",
            &root_s,
            "--binary",
            old_file.to_str().expect("utf-8"),
        ],
        tmp.path(),
    );
    assert!(back.status.success(), "{}", text(&back.stderr));
    assert_eq!(std::fs::read(&installed).expect("read"), old);
    assert_eq!(
        std::fs::read(bin_dir.join("sqlraft-core.previous")).expect("previous"),
        std::fs::read(BIN).expect("read")
    );
    let third = guard.supervisor_pid().expect("a supervisor");
    assert_ne!(third, new_supervisor, "restarted on the old binary");
    let core = guard.core_pid().expect("service pid");
    assert_eq!(
        std::fs::read(format!("/proc/{core}/exe")).expect("running binary"),
        old
    );
    assert!(wait_ready(&http, Duration::from_secs(30)), "ready again");
}

/// A stand-in for an older release: says its version, knows no `upgrade --formats`, and
/// refuses `--log.max-bytes` as 0.1.0 does; otherwise runs this binary.
fn older_release(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("older-sqlraft-core");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n\
             [ \"$1\" = --version ] && {{ echo 'sqlraft-core 0.0.9'; exit 0; }}\n\
             [ \"$1\" = upgrade ] && {{ echo 'unrecognized subcommand' >&2; exit 2; }}\n\
             for a in \"$@\"; do [ \"$a\" = --log.max-bytes ] && {{ echo \"error: unexpected argument '--log.max-bytes' found\" >&2; exit 2; }}; done\n\
             exec {BIN} \"$@\"\n"
        ),
    )
    .expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn upgrade_refuses_a_binary_that_cannot_take_the_flags_and_replaces_only_the_binary_of_a_stopped_service()
 {
    let Some((tmp, root, root_s)) = supervised_root() else {
        return;
    };
    let bin_dir = root.join("bin");
    std::fs::create_dir_all(&bin_dir).expect("mkdir");
    let installed = bin_dir.join("sqlraft-core");
    std::fs::copy(BIN, &installed).expect("copy");
    let raft = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let dir = root.join("core").join(FIRST_ID);
    let guard = SupervisedGuard::new(&dir);
    let out = Command::new(&installed)
        .args(["run", "--id", FIRST_ID, "--root", &root_s])
        .args(["--raft.node.listen", &raft, "--raft.node.addr", &raft])
        .args([
            "--http",
            &http,
            "--raft.insecure",
            "--log.max-bytes",
            "1048576",
        ])
        .arg("--install")
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(wait_ready(&http, Duration::from_secs(30)), "not ready");
    let supervisor = guard.supervisor_pid().expect("supervisor");

    // Going back to a release that does not know --log.max-bytes: refused before
    // anything changes, --check included.
    let older = older_release(tmp.path());
    let older_s = older.to_str().expect("utf-8");
    for extra in [&["--check"][..], &[][..]] {
        let mut args = vec!["upgrade", "--root", &root_s, "--binary", older_s];
        args.extend(extra);
        let refused = sqlraft_core(&args, tmp.path());
        assert!(!refused.status.success(), "{}", text(&refused.stdout));
        assert!(
            text(&refused.stderr).contains("does not take this service's flags")
                && text(&refused.stderr).contains("--log.max-bytes"),
            "{}",
            text(&refused.stderr)
        );
        assert_eq!(guard.supervisor_pid(), Some(supervisor), "still running");
        assert_eq!(
            std::fs::read(&installed).expect("read"),
            std::fs::read(BIN).expect("read"),
            "the binary is untouched"
        );
    }

    // Stopped (its supervisor ended): upgrade replaces only the binary.
    assert!(guard.stop(), "stopped");
    let up = sqlraft_core(
        &["upgrade", "--root", &root_s, "--binary", older_s],
        tmp.path(),
    );
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert_says(&up.stdout, "not running; not started");
    assert_eq!(
        std::fs::read(&installed).expect("read"),
        std::fs::read(&older).expect("read")
    );
    assert!(guard.supervisor_pid().is_none(), "nothing started");

    // An id that is not installed here: nothing changes, the binary stays.
    let typo = sqlraft_core(
        &[
            "uninstall",
            "--id",
            "11111111-1111-4111-8111-111111111111",
            "--root",
            &root_s,
        ],
        tmp.path(),
    );
    assert!(typo.status.success(), "{}", text(&typo.stderr));
    assert_says(&typo.stdout, "nothing installed under");
    assert!(installed.exists() && bin_dir.join("sqlraft-core.previous").exists());
}

#[test]
fn install_again_with_other_flags_restarts_the_supervised_service_with_them() {
    let Some((tmp, root, root_s)) = supervised_root() else {
        return;
    };
    let raft = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let dir = root.join("core").join(FIRST_ID);
    let guard = SupervisedGuard::new(&dir);
    let base = [
        "run",
        "--id",
        FIRST_ID,
        "--root",
        &root_s,
        "--raft.node.listen",
        &raft,
        "--raft.node.addr",
        &raft,
        "--http",
        &http,
        "--raft.insecure",
        "--install",
    ];
    let first = sqlraft_core(&base, tmp.path());
    assert!(first.status.success(), "{}", text(&first.stderr));
    let supervisor = guard.supervisor_pid().expect("supervisor");
    let mut changed = base.to_vec();
    changed.extend(["--log.files", "2"]);
    let again = sqlraft_core(&changed, tmp.path());
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_says(&again.stdout, "running with other flags");
    let new = guard.supervisor_pid().expect("a new supervisor");
    assert_ne!(new, supervisor);
    let cmdline = std::fs::read(format!("/proc/{new}/cmdline")).expect("cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains("--log.files\u{0}2"),
        "the new flags are in use"
    );
    assert!(wait_ready(&http, Duration::from_secs(30)), "ready");
    // The same flags again: nothing changes.
    let same = sqlraft_core(&changed, tmp.path());
    assert_says(&same.stdout, NOTHING_CHANGED);
    assert_eq!(guard.supervisor_pid(), Some(new));
}
