//! The real `sqlraft-core` binary: flag errors, the service directory and log, SIGTERM,
//! restart, refusals and the inventory commands (the demo: `demo.rs`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, TIMEOUT, free_port};
use sqlraft::naming::FIRST_SERVICE_ID;
use sqlraft_core::client;

const BIN: &str = env!("CARGO_BIN_EXE_sqlraft-core");

const OTHER_ID: &str = "6f1c0a3e-1234-4abc-9def-0123456789ab";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../inventory/tests/fixtures")
}

fn run_to_end(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("binary runs")
}

/// A non-zero exit with exactly one line on stderr.
fn assert_one_line_failure(args: &[&str], expect: &str) {
    let out = run_to_end(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    assert!(
        stderr.starts_with("sqlraft-core: error: "),
        "{args:?}: {stderr}"
    );
    assert!(
        stderr.contains(expect),
        "{args:?}: {stderr:?} lacks {expect:?}"
    );
}

#[test]
fn bad_flags_fail_with_one_line() {
    let root = tempfile::tempdir().expect("temp dir");
    let root = root.path().to_str().expect("utf-8 path");
    assert_one_line_failure(&[], "subcommand");
    assert_one_line_failure(&["run", "--root", root], "--id");
    assert_one_line_failure(
        &["run", "--id", "core-1", "--root", root],
        "not a service id",
    );
    assert_one_line_failure(
        &["run", "--id", FIRST_SERVICE_ID, "--root", root, "--bogus"],
        "--bogus",
    );
    assert_one_line_failure(
        &[
            "run",
            "--id",
            FIRST_SERVICE_ID,
            "--root",
            root,
            "--http",
            "localhost",
        ],
        "--http",
    );
    assert_one_line_failure(
        &[
            "run",
            "--id",
            FIRST_SERVICE_ID,
            "--root",
            root,
            "--raft.node.addr",
            "no-port",
        ],
        "--raft.node.addr",
    );
    assert_one_line_failure(
        &[
            "run",
            "--id",
            FIRST_SERVICE_ID,
            "--root",
            root,
            "--raft.node.listen",
            "127.0.0.1:7300",
            "--http",
            "127.0.0.1:7300",
        ],
        "different ports",
    );
    assert_one_line_failure(
        &[
            "run",
            "--id",
            FIRST_SERVICE_ID,
            "--root",
            root,
            "--raft.node.addr",
            "a.example:7209",
            "--raft.join",
            "a.example:7209",
        ],
        "own address",
    );
    // A new peer without --raft.join would found a second cluster.
    assert_one_line_failure(
        &["run", "--id", OTHER_ID, "--root", root, "--raft.insecure"],
        "--raft.join",
    );
    assert_one_line_failure(&["demo", "--nodes", "2"], "odd");
    let earlier = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(earlier.path().join("core").join(FIRST_SERVICE_ID))
        .expect("old service");
    assert_one_line_failure(
        &["demo", "--root", earlier.path().to_str().expect("utf-8")],
        "earlier demo",
    );
    assert_one_line_failure(&["demo", "--nodes", "0"], "odd");
    for (flag, value, says) in [
        ("--log.max-bytes", "100", "at least 4096"),
        ("--log.files", "0", "between 1 and 100"),
        ("--log.files", "101", "between 1 and 100"),
    ] {
        assert_one_line_failure(
            &[
                "run",
                "--id",
                FIRST_SERVICE_ID,
                "--root",
                root,
                "--raft.insecure",
                flag,
                value,
            ],
            says,
        );
    }
}

#[test]
fn the_service_log_is_rotated_as_the_log_flags_say() {
    let root = tempfile::tempdir().expect("temp dir");
    let log_dir = root.path().join("core").join(FIRST_SERVICE_ID).join("log");
    // Each start and stop logs a few KiB: five of them fill more than 3 files of 4 KiB,
    // and each start appends to the file the one before left.
    for i in 0..5 {
        let mut service = spawn(
            FIRST_SERVICE_ID,
            root.path(),
            None,
            &["--log.max-bytes", "4096", "--log.files", "3"],
        );
        service.wait_ready();
        service.post("/db/execute", &format!(r#"["CREATE TABLE t{i} (x)"]"#));
        service.guard.sigterm();
        let (ok, stderr) = service.finish(TIMEOUT);
        assert!(ok, "{stderr}");
    }
    let mut names: Vec<String> = std::fs::read_dir(&log_dir)
        .expect("log dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["core", "core.1", "core.2"], "three files kept");
    for name in &names {
        let text = std::fs::read_to_string(log_dir.join(name)).expect("log file");
        assert!(
            text.len() <= 4096 || text.lines().count() == 1,
            "{name} is {} bytes",
            text.len()
        );
        assert!(!text.is_empty(), "{name} is empty");
    }
    let newest = std::fs::read_to_string(log_dir.join("core")).expect("log");
    assert!(newest.contains("core service stopped"), "{newest}");
}

/// A `run` child with free ports in `root`.
struct Service {
    guard: ChildGuard,
    http: String,
    raft: String,
    /// Started with `--raft.insecure`: its stderr starts with the warning.
    insecure: bool,
}

fn spawn(id: &str, root: &Path, join: Option<&str>, extra: &[&str]) -> Service {
    let raft = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(BIN);
    command
        .args(["run", "--id", id, "--root"])
        .arg(root)
        .args([
            "--raft.node.listen",
            &raft,
            "--raft.node.addr",
            &raft,
            "--http",
            &http,
        ])
        .args(extra)
        .args(if extra.iter().any(|a| a.starts_with("--raft.tls")) {
            &[][..]
        } else {
            &["--raft.insecure"][..]
        })
        // The allocator's settings are the build's, whatever the caller's shell says.
        .env_remove("_RJEM_MALLOC_CONF")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(join) = join {
        command.args(["--raft.join", join]);
    }
    let child = command.spawn().expect("spawn sqlraft-core run");
    Service {
        guard: ChildGuard(Some(child)),
        http,
        raft,
        insecure: !extra.iter().any(|a| a.starts_with("--raft.tls")),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

impl Service {
    fn wait_ready(&mut self) {
        let rt = runtime();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.guard.child().try_wait().expect("try_wait") {
                panic!("service exited early with {status}: {}", self.stderr());
            }
            let answer = rt.block_on(client::get(&self.http, "/readyz", Duration::from_secs(1)));
            if answer.is_ok_and(|r| r.status == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "service not ready in time");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn post(&self, path: &str, body: &str) -> serde_json::Value {
        let r = runtime()
            .block_on(client::post(&self.http, path, body.as_bytes(), TIMEOUT))
            .expect("answer");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json().expect("JSON")
    }

    fn stderr(&mut self) -> String {
        use std::io::Read;
        let mut text = String::new();
        if let Some(mut err) = self.guard.child().stderr.take() {
            let _ = err.read_to_string(&mut text);
        }
        text
    }

    /// Waits for the exit and returns (success, stderr). A plaintext service's stderr
    /// must start with the `--raft.insecure` warning, which is checked and left out.
    fn finish(mut self, timeout: Duration) -> (bool, String) {
        let status = {
            let deadline = Instant::now() + timeout;
            loop {
                if let Some(status) = self.guard.child().try_wait().expect("try_wait") {
                    break status;
                }
                assert!(Instant::now() < deadline, "process did not exit in time");
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        let mut stderr = self.stderr();
        if self.insecure {
            let (warning, rest) = stderr.split_once('\n').unwrap_or((&stderr, ""));
            assert!(
                warning.starts_with("sqlraft-core: WARNING: --raft.insecure: "),
                "no loud warning of plaintext: {stderr}"
            );
            stderr = rest.to_string();
        }
        self.guard.0 = None;
        (status.success(), stderr)
    }
}

#[test]
fn run_lays_out_its_directory_stops_on_sigterm_and_restarts() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("core").join(FIRST_SERVICE_ID);

    let mut first = spawn(FIRST_SERVICE_ID, root.path(), None, &[]);
    first.wait_ready();
    for sub in ["raft", "db", "log"] {
        assert!(dir.join(sub).is_dir(), "{sub}/ missing");
    }
    let written = first.post(
        "/db/execute",
        r#"["CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)", "INSERT INTO kv VALUES ('a', 'one')"]"#,
    );
    assert!(written["raft_index"].as_u64().is_some());
    first.guard.sigterm();
    let (ok, stderr) = first.finish(TIMEOUT);
    assert!(ok, "SIGTERM exit was not 0: {stderr}");
    let log = std::fs::read_to_string(dir.join("log").join("core")).expect("log file");
    assert!(log.contains("core service stopped"), "{log}");

    // Same directory, no --raft.join: a restart with the data kept.
    let mut again = spawn(FIRST_SERVICE_ID, root.path(), None, &[]);
    again.wait_ready();
    let read = again.post(
        "/db/query?level=linearizable",
        r#"["SELECT v FROM kv WHERE k = 'a'"]"#,
    );
    assert_eq!(read["results"][0]["values"], serde_json::json!([["one"]]));
    again.guard.sigterm();
    let (ok, stderr) = again.finish(TIMEOUT);
    assert!(ok, "{stderr}");

    // The directory now belongs to the first service; another id is refused.
    let moved = root.path().join("core").join(OTHER_ID);
    std::fs::rename(&dir, &moved).expect("rename");
    let refused = spawn(OTHER_ID, root.path(), None, &[]);
    let (ok, stderr) = refused.finish(TIMEOUT);
    assert!(!ok);
    assert_eq!(
        stderr
            .trim_end()
            .lines()
            .last()
            .map(|l| l.starts_with("sqlraft-core: error: ")),
        Some(true),
        "{stderr}"
    );
    assert!(stderr.contains("belongs to service"), "{stderr}");
}

/// The binary's allocator gives memory back after a burst from one background thread
/// (crates/core/Cargo.toml, `.cargo/config.toml`): it runs in a started service.
#[test]
fn a_service_runs_one_jemalloc_background_thread() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut service = spawn(FIRST_SERVICE_ID, root.path(), None, &[]);
    service.wait_ready();
    service.post("/db/execute", r#"["CREATE TABLE t (v TEXT)"]"#);
    let tasks = PathBuf::from(format!("/proc/{}/task", service.guard.child().id()));
    let names = || -> Vec<String> {
        std::fs::read_dir(&tasks)
            .map(|dir| {
                dir.flatten()
                    .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                    .map(|name| name.trim().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = names();
    while !seen.iter().any(|n| n == "jemalloc_bg_thd") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        seen = names();
    }
    assert_eq!(
        seen.iter().filter(|n| *n == "jemalloc_bg_thd").count(),
        1,
        "threads: {seen:?}"
    );
    service.guard.sigterm();
    let (ok, stderr) = service.finish(TIMEOUT);
    assert!(ok, "{stderr}");
}

#[test]
fn joining_fails_cleanly_when_unreachable_or_the_id_is_taken() {
    let root = tempfile::tempdir().expect("temp dir");
    let nobody = format!("127.0.0.1:{}", free_port());
    let lost = spawn(
        OTHER_ID,
        root.path(),
        Some(&nobody),
        &["--raft.join.timeout-ms", "1500"],
    );
    let (ok, stderr) = lost.finish(TIMEOUT);
    assert!(!ok);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("join"), "{stderr}");

    let mut first = spawn(FIRST_SERVICE_ID, &root.path().join("a"), None, &[]);
    first.wait_ready();
    // The first service's id, from another directory and address: already a member.
    let twin = spawn(
        FIRST_SERVICE_ID,
        &root.path().join("b"),
        Some(&first.raft),
        &[],
    );
    let (ok, stderr) = twin.finish(TIMEOUT);
    assert!(!ok);
    assert!(stderr.contains("already a member"), "{stderr}");
    first.guard.sigterm();
    assert!(first.finish(TIMEOUT).0);
}

#[test]
fn inventory_check_and_plan() {
    let good = fixtures().join("good_distributed.yml");
    let bad = fixtures().join("bad_even_total.yml");
    let good = good.to_str().expect("utf-8");
    let bad = bad.to_str().expect("utf-8");

    let out = run_to_end(&["inventory", "check", good]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid, 3 core service(s)"));

    let out = run_to_end(&["inventory", "check", bad]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad_even_total.yml:8: error:"), "{stderr}");

    let out = run_to_end(&["inventory", "plan", good]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("install.sh"));

    let expand = fixtures().join("good_expand.yml");
    let out = run_to_end(&[
        "inventory",
        "plan",
        "--expand",
        expand.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("expand.sh"));

    let out = run_to_end(&["inventory", "plan", bad]);
    assert_eq!(out.status.code(), Some(1));
    let out = run_to_end(&["inventory", "check", "/nonexistent/inventory.yml"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_directory_in_a_newer_data_format_is_refused_untouched() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("core").join(FIRST_SERVICE_ID);
    let mut first = spawn(FIRST_SERVICE_ID, root.path(), None, &[]);
    first.wait_ready();
    first.guard.sigterm();
    let (ok, stderr) = first.finish(TIMEOUT);
    assert!(ok, "{stderr}");
    let recorded = std::fs::read_to_string(dir.join("format")).expect("format file");
    assert!(
        recorded.contains(&format!("format={}\n", sqlraft::format::DATA_FORMAT))
            && recorded.contains(&format!("written_by={}\n", env!("CARGO_PKG_VERSION"))),
        "{recorded}"
    );

    // As if a newer version had opened it: this one must not.
    let newer = format!(
        "format={}\nwritten_by=99.0.0\n",
        sqlraft::format::DATA_FORMAT + 1
    );
    std::fs::write(dir.join("format"), &newer).expect("write");
    let wal_before: Vec<_> = std::fs::read_dir(dir.join("raft"))
        .expect("raft dir")
        .map(|e| {
            let e = e.expect("entry");
            (e.file_name(), e.metadata().expect("metadata").len())
        })
        .collect();
    let refused = spawn(FIRST_SERVICE_ID, root.path(), None, &[]);
    let (ok, stderr) = refused.finish(TIMEOUT);
    assert!(!ok);
    assert!(
        stderr.contains("a downgrade across a data format change is refused")
            && stderr.contains("99.0.0"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("format")).expect("format"),
        newer
    );
    let wal_after: Vec<_> = std::fs::read_dir(dir.join("raft"))
        .expect("raft dir")
        .map(|e| {
            let e = e.expect("entry");
            (e.file_name(), e.metadata().expect("metadata").len())
        })
        .collect();
    assert_eq!(wal_before, wal_after, "the raft directory is untouched");
    let status = first_service(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runs");
    assert_eq!(
        status.code(),
        Some(2),
        "not restarted by systemd or the supervisor"
    );
}

/// Runs the first service until it is ready, then stops it, with `JOURNAL_STREAM` set
/// to `journal` and stderr going to `stderr_file`; returns what went to stderr.
fn stderr_with_journal_stream(root: &Path, journal: &str, stderr_file: &Path) -> String {
    let http = format!("127.0.0.1:{}", free_port());
    let raft = format!("127.0.0.1:{}", free_port());
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(stderr_file)
        .expect("stderr file");
    let child = Command::new(BIN)
        .args(["run", "--id", FIRST_SERVICE_ID, "--root"])
        .arg(root)
        .args([
            "--raft.insecure",
            "--raft.node.listen",
            &raft,
            "--raft.node.addr",
            &raft,
        ])
        .args(["--http", &http])
        .env("JOURNAL_STREAM", journal)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("spawn");
    let mut guard = ChildGuard(Some(child));
    let rt = runtime();
    let deadline = Instant::now() + TIMEOUT;
    while !rt
        .block_on(client::get(&http, "/readyz", Duration::from_secs(1)))
        .is_ok_and(|r| r.status == 200)
    {
        assert!(Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    guard.sigterm();
    let status = guard.child().wait().expect("wait");
    guard.0 = None;
    assert!(status.success());
    std::fs::read_to_string(stderr_file).expect("stderr")
}

#[test]
fn the_log_goes_to_stderr_only_when_stderr_is_the_journal_stream_systemd_names() {
    use std::os::unix::fs::MetadataExt as _;
    let root = tempfile::tempdir().expect("temp dir");
    // Inherited from some other process: names another file; nothing is copied.
    let other = root.path().join("other.stderr");
    std::fs::write(&other, "").expect("create");
    let said = stderr_with_journal_stream(root.path(), "1:1", &other);
    assert!(!said.contains("starting core service"), "{said}");
    // The stream systemd connected: the log is copied there.
    let journal = root.path().join("journal.stderr");
    std::fs::write(&journal, "").expect("create");
    let meta = std::fs::metadata(&journal).expect("metadata");
    let said = stderr_with_journal_stream(
        root.path(),
        &format!("{}:{}", meta.dev(), meta.ino()),
        &journal,
    );
    assert!(said.contains("starting core service"), "{said}");
}

/// A start refused for its flags' files (here an auth file naming a permission that
/// does not exist) exits 2 and makes nothing on disk: no service directory, no log
/// (found by a review: the log directory was made first).
#[test]
fn a_start_refused_for_its_auth_file_leaves_nothing_on_disk() {
    let root = tempfile::tempdir().expect("tempdir");
    let auth = root.path().join("auth.json");
    std::fs::write(
        &auth,
        r#"[{"username": "admin", "password": "secret", "perms": ["fly"]}]"#,
    )
    .expect("auth file");
    let out = first_service(root.path())
        .arg("--auth")
        .arg(&auth)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--auth") && stderr.contains("fly"),
        "{stderr}"
    );
    assert!(
        !root.path().join("core").exists(),
        "{:?}",
        std::fs::read_dir(root.path())
            .expect("root")
            .map(|e| e.expect("entry").file_name())
            .collect::<Vec<_>>()
    );
}

/// `run` of the first service in `root`, on ports the OS picks, without TLS.
fn first_service(root: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["run", "--id", FIRST_SERVICE_ID, "--root"])
        .arg(root)
        .args([
            "--raft.insecure",
            "--raft.node.listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null());
    command
}
