//! deploy/install.sh and deploy/expand.sh end to end, on this machine: every inventory
//! host is `*.example.test` with `ansible_connection: local` and its own `sqlraft_root`
//! under a temporary directory; no firewall actions, no /etc/hosts, loopback ports from
//! the OS. The scripts install ansible-core from PyPI into deploy/.venv when it is
//! missing (python3 with venv needed; scripts/setup.sh makes sure of it).
//!
//! install.sh must leave the first core service answering /readyz and the peers prepared
//! but not running; expand.sh prepares two more peers and leaves the core host alone; a
//! second install.sh changes nothing.

mod install_support;

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use install_support::{
    BIN, FIRST_ID, SupervisedGuard, free_port, http_get, http_get_as, wait_ready,
};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, Uid, User};

/// The whole of one script run may take this long (first run: the virtualenv too).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

struct ScriptRun {
    ok: bool,
    output: String,
}

/// Runs `deploy/<script> <inventory>` in its own process group, output to a file, killed
/// with its group after [`SCRIPT_TIMEOUT`].
fn run_script(tmp: &Path, script: &str, inventory: &Path) -> ScriptRun {
    let log_path = tmp.join(format!("{script}.{}.log", std::process::id()));
    let log = File::create(&log_path).expect("log file");
    let mut child = Command::new("bash")
        .arg(deploy_dir().join(script))
        .arg(inventory)
        .env("SQLRAFT_BIN", BIN)
        .env("ANSIBLE_LOCAL_TEMP", tmp.join("ansible-local"))
        .env("ANSIBLE_REMOTE_TEMP", tmp.join("ansible-remote"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .current_dir(tmp)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("bash runs");
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);
    let ok = status.is_some_and(|s| s.success());
    if status.is_none() {
        eprintln!("{script} timed out after {SCRIPT_TIMEOUT:?}");
    }
    ScriptRun { ok, output }
}

/// The `PLAY RECAP` line of `host`.
fn recap<'a>(output: &'a str, host: &str) -> Option<&'a str> {
    let recap = output.rsplit_once("PLAY RECAP")?.1;
    recap
        .lines()
        .find(|l| l.split_whitespace().next() == Some(host))
}

fn current_user() -> String {
    User::from_uid(Uid::current())
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("current user has a name")
}

struct Host {
    name: &'static str,
    root: PathBuf,
}

fn inventory(core: &Host, raft_port: u16, http_port: u16, peers: &[&Host], user: &str) -> String {
    let mut text = format!(
        "# written by deploy_e2e.rs\n\
         all:\n\
         \x20 vars:\n\
         \x20   ansible_connection: local\n\
         \x20   no_firewall_actions: true\n\
         \x20   generate_etc_hosts: false\n\
         \x20   sqlraft_user: {user}\n\
         \x20 children:\n\
         \x20   kuma_core:\n\
         \x20     hosts:\n\
         \x20       {core}:\n\
         \x20         raft_node_addr: {core}:{raft_port}\n\
         \x20         sqlraft_root: {root}\n\
         \x20         sqlraft_raft_listen: 127.0.0.1:{raft_port}\n\
         \x20         sqlraft_http_listen: 127.0.0.1:{http_port}\n\
         \x20   kuma_core_peers:\n\
         \x20     hosts:\n",
        core = core.name,
        root = core.root.display()
    );
    for p in peers {
        text.push_str(&format!(
            "        {}:\n          sqlraft_root: {}\n",
            p.name,
            p.root.display()
        ));
    }
    text.push_str("    kuma_collector:\n      hosts:\n        collector-1.example.test:\n");
    text
}

/// Prepared: the binary in `<root>/bin`, an empty `<root>/core`, nothing running.
fn assert_prepared_only(host: &Host) {
    // What every core service shares came from the kuma_core host.
    for file in ["tls/ca.crt", "auth.json"] {
        assert!(
            host.root.join(file).is_file(),
            "{}: {file} missing",
            host.name
        );
    }
    assert!(
        !host.root.join("tls/ca.key").exists(),
        "the CA key stays on the core host"
    );
    let bin = host.root.join("bin").join("sqlraft-core");
    let meta = std::fs::metadata(&bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(meta.len() > 0, "{} is empty", bin.display());
    let core = host.root.join("core");
    let entries: Vec<_> = std::fs::read_dir(&core)
        .unwrap_or_else(|e| panic!("{}: {e}", core.display()))
        .collect();
    assert!(
        entries.is_empty(),
        "{} holds a service: {entries:?}",
        host.name
    );
}

#[test]
fn inventory_templates_are_valid() {
    for template in [
        "distributed.inventory.yml.template",
        "expand.inventory.yml.template",
    ] {
        let out = Command::new(BIN)
            .args(["inventory", "check"])
            .arg(deploy_dir().join(template))
            .output()
            .expect("binary runs");
        assert!(
            out.status.success(),
            "{template}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn install_sh_stops_on_an_invalid_inventory_and_has_help() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let bad = tmp.path().join("bad.yml");
    std::fs::write(
        &bad,
        "all:\n  children:\n    kuma_core:\n      hosts:\n        core.example.test:\n    kuma_core_peers:\n      hosts:\n        peer1.example.test:\n",
    )
    .expect("write inventory");
    for script in ["install.sh", "expand.sh"] {
        let run = run_script(tmp.path(), script, &bad);
        assert!(!run.ok, "{script} accepted an even total:\n{}", run.output);
        assert!(
            run.output.contains("makes 2 core services"),
            "{}",
            run.output
        );
        assert!(run.output.contains("nothing was changed"), "{}", run.output);
        assert!(!run.output.contains("PLAY"), "{}", run.output);

        let help = Command::new("bash")
            .arg(deploy_dir().join(script))
            .arg("--help")
            .output()
            .expect("bash runs");
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success(), "{text}");
        assert!(text.contains("SQLRAFT_BIN"), "{text}");
        assert!(
            text.contains("cargo build --release -p sqlraft-core"),
            "{text}"
        );
    }
}

#[test]
fn install_then_expand_then_install_again_changes_nothing() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("temp dir");
    let host = |name: &'static str| Host {
        name,
        root: tmp.path().join("hosts").join(name),
    };
    let core = host("core.example.test");
    let (peer1, peer2, peer3, peer4) = (
        host("peer1.example.test"),
        host("peer2.example.test"),
        host("peer3.example.test"),
        host("peer4.example.test"),
    );
    let (raft_port, http_port) = (free_port(), free_port());
    let http = format!("127.0.0.1:{http_port}");
    let user = current_user();
    let guard = SupervisedGuard::new(&core.root.join("core").join(FIRST_ID));

    // install.sh: the first core service, two prepared peers.
    let install_inv = tmp.path().join("distributed.inventory.yml");
    std::fs::write(
        &install_inv,
        inventory(&core, raft_port, http_port, &[&peer1, &peer2], &user),
    )
    .expect("write inventory");
    let run = run_script(tmp.path(), "install.sh", &install_inv);
    assert!(run.ok, "install.sh failed:\n{}", run.output);
    assert!(run.output.contains("Then, by hand:"), "{}", run.output);
    assert!(
        run.output.contains("create 2 core services"),
        "{}",
        run.output
    );
    assert!(
        recap(&run.output, "collector-1.example.test").is_none(),
        "other groups are not touched:\n{}",
        run.output
    );
    assert!(
        wait_ready(&http, Duration::from_secs(30)),
        "first core service not ready"
    );
    // Secure by default: mutual TLS certificates and an administrator made by the
    // installer; the API answers only with credentials.
    for file in [
        "tls/ca.crt",
        "tls/ca.key",
        &format!("tls/{FIRST_ID}.crt"),
        "auth.json",
    ] {
        assert!(core.root.join(file).is_file(), "{file} missing");
    }
    let (code, _) = http_get(&http, "/status").expect("status");
    assert_eq!(code, 401, "the API asks for credentials");
    let password = std::fs::read_to_string(core.root.join("admin.password")).expect("password");
    let (code, status) =
        http_get_as(&http, "/status", Some(("admin", password.trim()))).expect("status");
    assert_eq!(code, 200, "{status}");
    assert!(status.contains(FIRST_ID), "{status}");
    assert!(status.contains("\"leader\""), "{status}");
    let supervisor = guard.supervisor_pid().expect("supervisor runs");
    let service = guard.core_pid().expect("service runs");
    assert!(core.root.join("bin/sqlraft-core").is_file());
    assert!(
        guard.dir.join("log").join("core").is_file(),
        "log in <root>/core/<id>/log/core"
    );
    assert_prepared_only(&peer1);
    assert_prepared_only(&peer2);
    eprintln!("install.sh done after {:?}", started.elapsed());

    // expand.sh: two more peers; the core host is left alone.
    let expand_inv = tmp.path().join("expand.inventory.yml");
    std::fs::write(
        &expand_inv,
        inventory(&core, raft_port, http_port, &[&peer3, &peer4], &user),
    )
    .expect("write inventory");
    let run = run_script(tmp.path(), "expand.sh", &expand_inv);
    assert!(run.ok, "expand.sh failed:\n{}", run.output);
    assert!(
        recap(&run.output, core.name).is_none(),
        "expand.sh touched the core host:\n{}",
        run.output
    );
    assert!(run.output.contains("Then, by hand:"), "{}", run.output);
    assert_prepared_only(&peer3);
    assert_prepared_only(&peer4);
    assert_eq!(guard.supervisor_pid(), Some(supervisor));
    assert_eq!(guard.core_pid(), Some(service));
    eprintln!("expand.sh done after {:?}", started.elapsed());

    // install.sh again: nothing changes anywhere.
    let run = run_script(tmp.path(), "install.sh", &install_inv);
    assert!(run.ok, "second install.sh failed:\n{}", run.output);
    for h in [&core, &peer1, &peer2] {
        let line = recap(&run.output, h.name)
            .unwrap_or_else(|| panic!("no recap for {}:\n{}", h.name, run.output));
        assert!(line.contains("changed=0"), "{line}\n{}", run.output);
        assert!(line.contains("failed=0"), "{line}");
    }
    assert!(run.output.contains("nothing changed"), "{}", run.output);
    assert_eq!(guard.supervisor_pid(), Some(supervisor));
    assert_eq!(guard.core_pid(), Some(service));
    assert!(wait_ready(&http, Duration::from_secs(10)));
    assert_prepared_only(&peer1);
    assert_prepared_only(&peer2);

    assert!(guard.stop(), "the supervised service did not stop cleanly");
    eprintln!("deploy e2e took {:?}", started.elapsed());
}
