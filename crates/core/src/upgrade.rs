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
use crate::install::{
    NOTHING_CHANGED, SYSTEMD_MARKER, UNIT_DIR, systemctl, systemctl_ok, unit_name,
};
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
    /// The binary to put in place; `None`: this one.
    pub binary: Option<PathBuf>,
    /// Only check and say what would be done.
    pub check: bool,
}

/// How the service runs now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Runner {
    /// Its systemd unit: the unit's command line and `User=`, and its main process
    /// when it is active.
    Unit {
        argv: Vec<String>,
        user: Option<String>,
        pid: Option<i32>,
    },
    /// A supervised process: the supervisor's command line and user id, and the
    /// service's process.
    Supervised {
        argv: Vec<String>,
        uid: u32,
        pid: Option<i32>,
    },
    /// Installed but not running (a stopped unit, no supervisor): only the binary is
    /// replaced; nothing is started.
    Stopped { argv: Vec<String> },
}

impl Runner {
    fn argv(&self) -> &[String] {
        match self {
            Runner::Unit { argv, .. }
            | Runner::Supervised { argv, .. }
            | Runner::Stopped { argv } => argv,
        }
    }

    /// The user it runs as, when not the one running this command.
    fn user(&self) -> Option<String> {
        match self {
            Runner::Unit { user, .. } => user.clone(),
            Runner::Supervised { uid, .. } => user_name(*uid).ok().flatten(),
            Runner::Stopped { .. } => None,
        }
    }

    /// The service's running process.
    fn pid(&self) -> Option<i32> {
        match self {
            Runner::Unit { pid, .. } | Runner::Supervised { pid, .. } => *pid,
            Runner::Stopped { .. } => None,
        }
    }
}

/// The data formats a binary opens: its own answer to `upgrade --formats`, or format 1
/// only for a binary from before formats were recorded (0.1.0).
fn formats_of(binary: &Path, this: &Path) -> (u32, u32) {
    if same_content(binary, this).unwrap_or(false) {
        return (
            sqlraft::format::OLDEST_READABLE_FORMAT,
            sqlraft::format::DATA_FORMAT,
        );
    }
    let out = Command::new(binary)
        .args(["upgrade", "--formats"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let parsed = out.ok().filter(|o| o.status.success()).and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let mut words = text.split_whitespace().map(str::parse::<u32>);
        match (words.next(), words.next()) {
            (Some(Ok(oldest)), Some(Ok(newest))) => Some((oldest, newest)),
            _ => None,
        }
    });
    parsed.unwrap_or((1, 1))
}

/// Runs `sqlraft-core upgrade`.
pub fn upgrade(req: &Upgrade) -> Result<(), CoreError> {
    let this = std::env::current_exe()
        .map_err(|e| CoreError::Io(format!("cannot find this program's path: {e}")))?;
    let target = match &req.binary {
        Some(path) => std::path::absolute(path)
            .map_err(|e| CoreError::Usage(format!("--binary {}: {e}", path.display())))?,
        None => this.clone(),
    };
    let version = if target == this {
        env!("CARGO_PKG_VERSION").to_string()
    } else {
        binary_version(&target).ok_or_else(|| {
            CoreError::Usage(format!(
                "--binary {}: not an sqlraft-core binary (`--version` failed)",
                target.display()
            ))
        })?
    };
    let installed = req.root.join("bin").join("sqlraft-core");
    let id = match &req.id {
        Some(id) => Some(id.clone()),
        None => find_service(&req.root)?,
    };
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
        replace_binary(&target, &installed, &version)?;
        return Ok(());
    };
    let dir = req.root.join("core").join(&id);
    if !dir.join("raft").is_dir() {
        return Err(CoreError::Usage(format!(
            "{} holds no core service",
            dir.display()
        )));
    }
    // The target must open the data: a downgrade across a format change is refused
    // here, on every host, before anything changes.
    if target == this {
        sqlraft::format::check(&dir)?;
    }
    let (oldest, newest) = formats_of(&target, &this);
    if let Some(found) = sqlraft::format::read(&dir)?
        && !(oldest..=newest).contains(&found.format)
    {
        return Err(CoreError::Usage(format!(
            "{} holds data format {} (written by sqlraft {}); sqlraft {version} reads formats \
             {oldest} to {newest}: {} refused",
            dir.display(),
            found.format,
            found.written_by,
            if found.format > newest {
                "a downgrade across a data format change is"
            } else {
                "a format this old is"
            }
        )));
    }
    let runner = runner(&id, &dir)?;
    let exe = runner.argv().first().map(String::as_str);
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    // (Nothing runs and no unit names a binary: only the binary is replaced.)
    if let Some(exe) = exe
        && canonical(Path::new(exe)) != canonical(&installed)
    {
        return Err(CoreError::Usage(format!(
            "service {id} runs {exe}, not {} (the binary the installer puts there and \
             this command replaces): take it off with `uninstall` and install it with \
             `{} run ... --install`",
            installed.display(),
            installed.display()
        )));
    }
    // What runs now, read from the running process (its binary may have been replaced
    // on disk already, by an interrupted upgrade).
    let running = runner
        .pid()
        .map(|pid| PathBuf::from(format!("/proc/{pid}/exe")));
    let from = running
        .as_deref()
        .and_then(binary_version)
        .or_else(|| binary_version(&installed))
        .unwrap_or_else(|| "unknown".into());
    let stale = match &running {
        Some(exe) => !same_content(exe, &target)?,
        None => false,
    };
    let how = match &runner {
        Runner::Unit { .. } if stale => {
            format!("install {} again from it and restart it", unit_name(&id))
        }
        Runner::Supervised { .. } if stale => {
            "stop its supervisor and install it again".to_string()
        }
        Runner::Unit { .. } | Runner::Supervised { .. } => {
            format!("leave it running: it runs sqlraft {version} already")
        }
        Runner::Stopped { .. } => "start nothing: the service is not running".to_string(),
    };
    // The target must take the service's flags (an older one may not know a newer
    // flag): asked with a dry run, which changes nothing.
    if let Some((_, args)) = runner.argv().split_first() {
        accepts_flags(&target, &version, args, runner.user().as_deref())?;
    }
    if req.check {
        println!(
            "service {id}: runs sqlraft {from}; sqlraft {version} opens its data and takes \
             its flags; would replace {} and {how}",
            installed.display()
        );
        return Ok(());
    }
    let replaced = replace_binary(&target, &installed, &version)?;
    match &runner {
        Runner::Unit { argv, user, .. } if stale => {
            let said = install_again(&id, argv, user.as_deref())?;
            if said.contains(NOTHING_CHANGED) {
                // The same unit: only the binary behind it changed.
                systemctl(&["restart", &unit_name(&id)])?;
            }
        }
        Runner::Supervised { argv, uid, .. } if stale => {
            crate::supervisor::stop_supervisor(&id, &dir)?;
            let user = user_name(*uid)?;
            install_again(&id, argv, user.as_deref())?;
        }
        Runner::Unit { .. } | Runner::Supervised { .. } => {
            println!(
                "service {id}: runs sqlraft {version} already; {}",
                if replaced {
                    "binary replaced, not restarted"
                } else {
                    NOTHING_CHANGED
                }
            );
            return Ok(());
        }
        Runner::Stopped { .. } => {
            println!(
                "service {id}: not running; not started (start it when you want; it runs \
                 sqlraft {version} then)"
            );
            return Ok(());
        }
    }
    let (addr, https_cert) = http_probe_address(runner.argv().get(1..).unwrap_or(&[]));
    wait_ready(&id, &addr, https_cert.as_deref())?;
    println!("service {id}: now sqlraft {version} (was {from}), ready");
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
    let unit = unit_name(id);
    let unit_path = Path::new(UNIT_DIR).join(&unit);
    if Path::new(SYSTEMD_MARKER).is_dir() && unit_path.exists() {
        let text =
            std::fs::read_to_string(&unit_path).map_err(|e| io_err("read", &unit_path, e))?;
        let argv = crate::install::unit_command(&text).ok_or_else(|| {
            CoreError::Failed(format!("{} has no ExecStart=", unit_path.display()))
        })??;
        if !systemctl_ok(&["is-active", "--quiet", &unit]) {
            return Ok(Runner::Stopped { argv });
        }
        let user = text
            .lines()
            .find_map(|l| l.strip_prefix("User="))
            .map(|u| u.trim().to_string());
        let pid = Command::new("systemctl")
            .args(["show", "--property=MainPID", "--value", &unit])
            .stdin(Stdio::null())
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<i32>()
                    .ok()
            })
            .filter(|pid| *pid > 0);
        return Ok(Runner::Unit { argv, user, pid });
    }
    let paths = SupervisedPaths::new(dir);
    if supervisor_running(&paths)? {
        let sup = read_live_pid(&paths.supervisor_pid).ok_or_else(|| {
            CoreError::Failed(format!(
                "service {id}: its supervisor holds {} but {} names no living process",
                paths.lock.display(),
                paths.supervisor_pid.display()
            ))
        })?;
        let argv = crate::supervisor::process_argv(sup).ok_or_else(|| {
            CoreError::Io(format!(
                "cannot read the command line of the supervisor (pid {sup})"
            ))
        })?;
        let uid = std::fs::metadata(format!("/proc/{sup}"))
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .map_err(|e| CoreError::Io(format!("cannot read the supervisor's user: {e}")))?;
        let pid = read_live_pid(&paths.core_pid);
        return Ok(Runner::Supervised { argv, uid, pid });
    }
    // Not running, and no unit: the binary it would start is the installed one.
    Ok(Runner::Stopped { argv: Vec::new() })
}

/// Copies `this` (sqlraft `version`) over `installed` atomically, the old one kept as
/// `.previous`; false when `installed` is that binary already.
fn replace_binary(this: &Path, installed: &Path, version: &str) -> Result<bool, CoreError> {
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
    println!("{}: now sqlraft {version}", installed.display());
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

/// Refuses when `binary` does not take the service's flags (`run <args> --install
/// --dry-run`, which changes nothing), with what it said.
fn accepts_flags(
    binary: &Path,
    version: &str,
    args: &[String],
    user: Option<&str>,
) -> Result<(), CoreError> {
    let mut command = Command::new(binary);
    command
        .args(args.iter().filter(|a| *a != "--supervise"))
        .args(["--install", "--dry-run"]);
    if let Some(user) = user {
        command.args(["--user", user]);
    }
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io_err("run", binary, e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(CoreError::Usage(format!(
        "sqlraft {version} ({}) does not take this service's flags: {}; nothing changed",
        binary.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
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
/// loopback), and its HTTPS certificate file when it serves HTTPS.
fn http_probe_address(args: &[String]) -> (String, Option<PathBuf>) {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let http = value("--http").unwrap_or("0.0.0.0:7220");
    let cert = value("--http.tls.cert").map(PathBuf::from);
    let (host, port) = crate::cli::split_host_port(http).unwrap_or(("0.0.0.0", 7220));
    let host = match host {
        "0.0.0.0" => "127.0.0.1",
        "[::]" | "::" => "[::1]",
        other => other,
    };
    (format!("{host}:{port}"), cert)
}

/// Waits until `GET /readyz` answers 200 (over HTTPS with the service's own
/// certificate pinned).
fn wait_ready(id: &str, addr: &str, https_cert: Option<&Path>) -> Result<(), CoreError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CoreError::Io(format!("cannot start a runtime: {e}")))?;
    let deadline = Instant::now() + READY_WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match rt.block_on(crate::probe::readyz(
            addr,
            https_cert,
            Duration::from_secs(2),
        )) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(CoreError::Failed(format!(
        "service {id}: not ready within {}s after the restart (last: {last}); the next host \
         must wait: look at its log",
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
        let words = crate::install::unit_words(exec).expect("parses");
        assert_eq!(words[0], "/opt/sqlraft/bin/sqlraft-core");
        assert_eq!(&words[1..], &spec.args[..]);
        assert_eq!(
            http_probe_address(&words[1..]),
            ("127.0.0.1:7220".to_string(), None)
        );
    }

    #[test]
    fn the_probe_address_defaults_and_maps_wildcards() {
        assert_eq!(http_probe_address(&[]), ("127.0.0.1:7220".into(), None));
        let args: Vec<String> = ["--http", "[::]:8000", "--http.tls.cert", "c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            http_probe_address(&args),
            ("[::1]:8000".into(), Some(PathBuf::from("c")))
        );
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
            binary: None,
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
