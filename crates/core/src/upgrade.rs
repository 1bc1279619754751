//! `sqlraft-core upgrade`: put this binary in place of the installed one and restart
//! this host's core service with it, one host at a time (deploy/upgrade.sh runs it on
//! every core host: followers first, the leader last).
//!
//! Run it as the **new** binary. In order, changing nothing until every check passed:
//!
//! 1. finds the service installed under `--root` (`--id` when there are several);
//! 2. checks that this version opens the service's data ([`sqlraft::format`]): a
//!    directory in a newer data format (a downgrade across a format change) or one too
//!    old is refused;
//! 3. finds how the service runs (its systemd unit, or its supervisor) and which binary
//!    that runs, which must be `<root>/bin/sqlraft-core`;
//! 4. replaces `<root>/bin/sqlraft-core` atomically with this binary, keeping the old
//!    one as `<root>/bin/sqlraft-core.previous` (to go back: the same command run with
//!    that file);
//! 5. installs the service again with the same flags and user, from the new binary
//!    (`run ... --install`: the unit as this version writes it, or a new supervisor),
//!    and restarts it. A stopping leader hands leadership to a caught-up voter first, so
//!    the cluster goes on without an election timeout;
//! 6. waits until the service is ready again (`GET /readyz`: it knows a leader and has
//!    applied everything committed), so the next host may follow.
//!
//! `--check` stops after step 3 and says what it would do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{CoreError, io_err};
use crate::install::{NOTHING_CHANGED, SYSTEMD_MARKER, UNIT_DIR, systemctl, unit_name};
use crate::supervisor::{SupervisedPaths, read_live_pid, supervisor_running};

/// How long the restarted service may take to be ready.
const READY_WAIT: Duration = Duration::from_secs(180);

/// What `sqlraft-core upgrade` was asked.
#[derive(Clone, Debug)]
pub struct Upgrade {
    /// The root directory.
    pub root: PathBuf,
    /// The service, when several are installed under the root.
    pub id: Option<String>,
    /// Only check and say what would be done.
    pub check: bool,
}

/// How the service runs now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Runner {
    /// Its systemd unit, with the unit's command line and `User=`.
    Unit {
        argv: Vec<String>,
        user: Option<String>,
    },
    /// A supervised process, with the supervisor's command line and user id.
    Supervised { argv: Vec<String>, uid: u32 },
    /// Installed but not running: only the binary is replaced.
    Stopped,
}

/// Runs `sqlraft-core upgrade`.
pub fn upgrade(req: &Upgrade) -> Result<(), CoreError> {
    let this = std::env::current_exe()
        .map_err(|e| CoreError::Io(format!("cannot find this program's path: {e}")))?;
    let installed = req.root.join("bin").join("sqlraft-core");
    let id = match &req.id {
        Some(id) => Some(id.clone()),
        None => find_service(&req.root)?,
    };
    let version = env!("CARGO_PKG_VERSION");
    let Some(id) = id else {
        // A prepared host without a service yet: only the binary.
        if req.check {
            println!(
                "no core service under {}: would replace {} with sqlraft {version}",
                req.root.display(),
                installed.display()
            );
            return Ok(());
        }
        replace_binary(&this, &installed)?;
        return Ok(());
    };
    let dir = req.root.join("core").join(&id);
    if !dir.join("raft").is_dir() {
        return Err(CoreError::Usage(format!(
            "{} holds no core service",
            dir.display()
        )));
    }
    let format = sqlraft::format::read(&dir)?;
    sqlraft::format::check(&dir)?;
    let runner = runner(&id, &dir)?;
    if let Some(exe) = runner_exe(&runner)
        && Path::new(exe) != installed
    {
        return Err(CoreError::Usage(format!(
            "service {id} runs {exe}, not {}: install it from there first \
             (`{} run ... --install`)",
            installed.display(),
            installed.display()
        )));
    }
    // The version that runs now: the installed binary's, else what the data says.
    let from = binary_version(&installed)
        .or_else(|| format.map(|f| f.written_by))
        .unwrap_or_else(|| "unknown".into());
    let how = match &runner {
        Runner::Unit { .. } => format!("install {} again from it and restart it", unit_name(&id)),
        Runner::Supervised { .. } => "stop its supervisor and install it again".to_string(),
        Runner::Stopped => "nothing to restart (the service is not running)".to_string(),
    };
    if req.check {
        println!(
            "service {id}: runs sqlraft {from}; sqlraft {version} opens its data; would \
             replace {} and {how}",
            installed.display()
        );
        return Ok(());
    }
    let replaced = replace_binary(&this, &installed)?;
    let http = http_probe_address(runner_args(&runner));
    let unchanged = || {
        println!("service {id}: already sqlraft {version}; {NOTHING_CHANGED}");
    };
    match &runner {
        Runner::Unit { argv, user } => {
            let said = install_again(&id, argv, user.as_deref())?;
            if said.contains(NOTHING_CHANGED) {
                if !replaced {
                    unchanged();
                    return Ok(());
                }
                // The same unit: only the binary behind it changed.
                systemctl(&["restart", &unit_name(&id)])?;
            }
        }
        Runner::Supervised { argv, uid } => {
            if !replaced {
                unchanged();
                return Ok(());
            }
            crate::uninstall::stop_supervisor(&id, &dir)?;
            let user = user_name(*uid)?;
            install_again(&id, argv, user.as_deref())?;
        }
        Runner::Stopped => {
            println!("service {id}: not running; start it when you want");
            return Ok(());
        }
    }
    match http {
        Some((addr, false)) => wait_ready(&id, &addr)?,
        Some((addr, true)) => wait_listening(&id, &addr)?,
        None => {}
    }
    println!("service {id}: upgraded from sqlraft {from} to {version}, ready");
    Ok(())
}

/// The one service under `<root>/core` that holds a node and was not removed.
fn find_service(root: &Path) -> Result<Option<String>, CoreError> {
    let core = root.join("core");
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&core) {
        for entry in entries.flatten() {
            let dir = entry.path();
            if dir.join("raft").join("identity").exists()
                && crate::removal::removed_note(&dir).is_none()
            {
                found.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(CoreError::Usage(format!(
            "several core services under {}: {}; name one with --id",
            core.display(),
            found.join(", ")
        ))),
    }
}

fn runner(id: &str, dir: &Path) -> Result<Runner, CoreError> {
    let unit_path = Path::new(UNIT_DIR).join(unit_name(id));
    if Path::new(SYSTEMD_MARKER).is_dir() && unit_path.exists() {
        let text =
            std::fs::read_to_string(&unit_path).map_err(|e| io_err("read", &unit_path, e))?;
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .ok_or_else(|| {
                CoreError::Failed(format!("{} has no ExecStart=", unit_path.display()))
            })?;
        let user = text
            .lines()
            .find_map(|l| l.strip_prefix("User="))
            .map(|u| u.trim().to_string());
        return Ok(Runner::Unit {
            argv: unit_words(exec)?,
            user,
        });
    }
    let paths = SupervisedPaths::new(dir);
    if supervisor_running(&paths)? {
        let pid = read_live_pid(&paths.supervisor_pid).ok_or_else(|| {
            CoreError::Failed(format!(
                "service {id}: its supervisor holds {} but {} names no living process",
                paths.lock.display(),
                paths.supervisor_pid.display()
            ))
        })?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|e| {
            CoreError::Io(format!("cannot read the supervisor's command line: {e}"))
        })?;
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let uid = std::fs::metadata(format!("/proc/{pid}"))
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .map_err(|e| CoreError::Io(format!("cannot read the supervisor's user: {e}")))?;
        return Ok(Runner::Supervised { argv, uid });
    }
    Ok(Runner::Stopped)
}

fn runner_exe(runner: &Runner) -> Option<&str> {
    match runner {
        Runner::Unit { argv, .. } | Runner::Supervised { argv, .. } => {
            argv.first().map(String::as_str)
        }
        Runner::Stopped => None,
    }
}

fn runner_args(runner: &Runner) -> &[String] {
    match runner {
        Runner::Unit { argv, .. } | Runner::Supervised { argv, .. } => argv.get(1..).unwrap_or(&[]),
        Runner::Stopped => &[],
    }
}

/// Splits an `ExecStart=` line as [`crate::install`] writes it: bare words, or double
/// quoted with `\\` and `\"` escapes; `%%` and `$$` stand for `%` and `$`.
fn unit_words(line: &str) -> Result<Vec<String>, CoreError> {
    let mut words = Vec::new();
    let mut chars = line.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(escaped) => word.push(escaped),
                        None => break,
                    },
                    Some(other) => word.push(other),
                    None => {
                        return Err(CoreError::Failed(format!(
                            "ExecStart= has an unterminated quote: {line}"
                        )));
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word.replace("%%", "%").replace("$$", "$"));
    }
    Ok(words)
}

/// Copies `this` over `installed` atomically, the old one kept as `.previous`; false
/// when `installed` is this binary already.
fn replace_binary(this: &Path, installed: &Path) -> Result<bool, CoreError> {
    if same_content(this, installed)? {
        println!("{}: already this binary", installed.display());
        return Ok(false);
    }
    let dir = installed
        .parent()
        .ok_or_else(|| CoreError::Usage(format!("{} has no directory", installed.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
    let staged = dir.join(".sqlraft-core.upgrade");
    std::fs::copy(this, &staged).map_err(|e| io_err("copy this binary to", &staged, e))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io_err("make executable", &staged, e))?;
    std::fs::File::open(&staged)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err("sync", &staged, e))?;
    if installed.exists() {
        let previous = dir.join("sqlraft-core.previous");
        let _ = std::fs::remove_file(&previous);
        std::fs::hard_link(installed, &previous)
            .or_else(|_| std::fs::copy(installed, &previous).map(|_| ()))
            .map_err(|e| io_err("keep the old binary as", &previous, e))?;
        println!("{}: the old binary, kept", previous.display());
    }
    std::fs::rename(&staged, installed).map_err(|e| io_err("replace", installed, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("sync", dir, e))?;
    println!(
        "{}: now sqlraft {}",
        installed.display(),
        env!("CARGO_PKG_VERSION")
    );
    Ok(true)
}

/// What `<binary> --version` says (`sqlraft-core 0.2.0` gives `0.2.0`).
fn binary_version(binary: &Path) -> Option<String> {
    let out = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status
        .success()
        .then(|| text.split_whitespace().last().map(str::to_string))
        .flatten()
}

/// Whether two files hold the same bytes (false when `b` is missing).
fn same_content(a: &Path, b: &Path) -> Result<bool, CoreError> {
    use std::io::Read as _;
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return Ok(false);
    };
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let mut fa = std::fs::File::open(a).map_err(|e| io_err("read", a, e))?;
    let mut fb = std::fs::File::open(b).map_err(|e| io_err("read", b, e))?;
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = fa.read(&mut ba).map_err(|e| io_err("read", a, e))?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])
            .map_err(|e| io_err("read", b, e))?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// The name of user `uid`, `None` when it is this process's own.
fn user_name(uid: u32) -> Result<Option<String>, CoreError> {
    if uid == nix::unistd::geteuid().as_raw() {
        return Ok(None);
    }
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| Some(u.name))
        .ok_or_else(|| CoreError::Failed(format!("the service's user {uid} has no name")))
}

/// Runs `<binary> <the service's flags> --install [--user]`: the binary (now the new
/// one) installs the service as this version does. Returns what it said.
fn install_again(id: &str, argv: &[String], user: Option<&str>) -> Result<String, CoreError> {
    let (exe, args) = argv
        .split_first()
        .ok_or_else(|| CoreError::Failed("the service's command line is empty".into()))?;
    let mut command = Command::new(exe);
    command
        .args(args.iter().filter(|a| *a != "--supervise"))
        .arg("--install");
    if let Some(user) = user {
        command.args(["--user", user]);
    }
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io_err("run", Path::new(exe), e))?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{said}");
    if !out.status.success() {
        return Err(CoreError::Failed(format!(
            "service {id}: installing it again failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(said)
}

/// Where to ask the service for readiness: its `--http` address (a wildcard becomes
/// loopback), and whether it serves HTTPS.
fn http_probe_address(args: &[String]) -> Option<(String, bool)> {
    let http = args
        .iter()
        .position(|a| a == "--http")
        .and_then(|i| args.get(i + 1))
        .map_or("0.0.0.0:7220", String::as_str);
    let https = args.iter().any(|a| a == "--http.tls.cert");
    let (host, port) = crate::cli::split_host_port(http)?;
    let host = match host {
        "0.0.0.0" => "127.0.0.1",
        "[::]" | "::" => "[::1]",
        other => other,
    };
    Some((format!("{host}:{port}"), https))
}

fn wait_ready(id: &str, addr: &str) -> Result<(), CoreError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CoreError::Io(format!("cannot start a runtime: {e}")))?;
    let deadline = Instant::now() + READY_WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match rt.block_on(crate::client::get(addr, "/readyz", Duration::from_secs(2))) {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => last = r.text().trim().to_string(),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(CoreError::Failed(format!(
        "service {id}: not ready within {}s after the restart (last: {last}); the next host \
         must wait: look at its log",
        READY_WAIT.as_secs()
    )))
}

/// For an HTTPS service: waits until its port takes connections again.
fn wait_listening(id: &str, addr: &str) -> Result<(), CoreError> {
    let deadline = Instant::now() + READY_WAIT;
    while Instant::now() < deadline {
        if let Ok(mut addrs) = std::net::ToSocketAddrs::to_socket_addrs(addr)
            && let Some(sock) = addrs.next()
            && std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(1)).is_ok()
        {
            println!(
                "service {id}: HTTPS: listening again (check GET /readyz before the next host)"
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(CoreError::Failed(format!(
        "service {id}: not listening on {addr} within {}s after the restart",
        READY_WAIT.as_secs()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_command_lines_are_read_back_as_written() {
        let spec = crate::install::UnitSpec {
            id: "x".into(),
            exe: "/opt/sqlraft/bin/sqlraft-core".into(),
            args: vec![
                "run".into(),
                "--http".into(),
                "0.0.0.0:7220".into(),
                "a b".into(),
                "50%".into(),
                "$HOME".into(),
                "say \"hi\"".into(),
            ],
            dir: "/opt/sqlraft/core/x".into(),
            root: "/opt/sqlraft".into(),
            user: None,
        };
        let unit = crate::install::render_unit(&spec).expect("renders");
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart");
        let words = unit_words(exec).expect("parses");
        assert_eq!(words[0], "/opt/sqlraft/bin/sqlraft-core");
        assert_eq!(&words[1..], &spec.args[..]);
        assert_eq!(
            http_probe_address(&words[1..]),
            Some(("127.0.0.1:7220".to_string(), false))
        );
    }

    #[test]
    fn the_probe_address_defaults_and_maps_wildcards() {
        assert_eq!(
            http_probe_address(&[]),
            Some(("127.0.0.1:7220".into(), false))
        );
        let args: Vec<String> = ["--http", "[::]:8000", "--http.tls.cert", "c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(http_probe_address(&args), Some(("[::1]:8000".into(), true)));
    }

    #[test]
    fn a_newer_data_format_is_refused_before_anything_changes() {
        let root = tempfile::tempdir().expect("tempdir");
        let id = "6f1c0a3e-0000-4000-8000-000000000009";
        let dir = root.path().join("core").join(id);
        std::fs::create_dir_all(dir.join("raft")).expect("mkdir");
        std::fs::write(
            dir.join("raft").join("identity"),
            "service_id=x\nraft_id=1\n",
        )
        .expect("identity");
        std::fs::write(
            dir.join("format"),
            format!(
                "format={}\nwritten_by=99.0.0\n",
                sqlraft::format::DATA_FORMAT + 1
            ),
        )
        .expect("format");
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::fs::write(bin.join("sqlraft-core"), "old").expect("binary");
        let err = upgrade(&Upgrade {
            root: root.path().to_path_buf(),
            id: None,
            check: false,
        })
        .expect_err("refused");
        assert!(err.to_string().contains("downgrade"), "{err}");
        assert_eq!(
            std::fs::read_to_string(bin.join("sqlraft-core")).expect("binary"),
            "old",
            "the installed binary is untouched"
        );
    }
}
