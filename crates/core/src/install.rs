//! `sqlraft-core run ... --install [--dry-run]`: keep one core service running on this
//! host.
//!
//! Where systemd runs (`/run/systemd/system` exists), the service becomes the unit
//! `sqlraft-core-<id>.service` in `/etc/systemd/system`, enabled and started. Elsewhere
//! (containers, CI) it runs as a **supervised background process**: a detached
//! `sqlraft-core run ... --supervise` process (its own session, stdin closed, stdout and
//! stderr appended to `<dir>/log/supervisor`) starts `sqlraft-core run ...` with the same
//! flags and restarts it when it fails, as `Restart=on-failure` would. It holds an
//! exclusive lock on `<dir>/run/supervisor.lock` for its whole life and writes
//! `<dir>/run/supervisor.pid` and `<dir>/run/core.pid`. SIGTERM to the supervisor stops
//! the service and then the supervisor.
//!
//! Both ways are idempotent: an unchanged, active unit or a running supervisor is left
//! alone and the command says `nothing changed`.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{Uid, User};

use crate::cli::{RunArgs, RunConfig, service_args};
use crate::error::{CoreError, io_err};
use crate::supervisor::{
    SupervisedPaths, USAGE_EXIT_STATUS, cmdline_mentions, describe, log_tail, read_live_pid,
    supervisor_running,
};

pub use crate::supervisor::{process_alive, supervise};

/// Present when systemd is the running init system (what `sd_booted()` checks).
pub const SYSTEMD_MARKER: &str = "/run/systemd/system";
/// Where units are written.
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// Said on stdout when an installed service was already in place.
pub const NOTHING_CHANGED: &str = "nothing changed";

/// How long `--install` waits for the supervised service to start.
const START_WAIT_MS: u64 = 10_000;
/// The service must stay up this long for `--install` to call it started.
const START_SETTLE_MS: u64 = 1_000;
/// The unit name of a service: `sqlraft-core-<id>.service`.
pub fn unit_name(id: &str) -> String {
    format!("sqlraft-core-{id}.service")
}

/// What a systemd unit is made of.
#[derive(Clone, Debug)]
pub struct UnitSpec {
    /// Service id.
    pub id: String,
    /// Absolute path of the binary.
    pub exe: PathBuf,
    /// Arguments after the binary.
    pub args: Vec<String>,
    /// The service directory, `<root>/core/<id>` (working directory, writable).
    pub dir: PathBuf,
    /// The root directory (`--root`), for the uninstall step of a removed service.
    pub root: PathBuf,
    /// The user it runs as; `None`: root.
    pub user: Option<String>,
}

/// Renders the unit file. Fails on paths or arguments that a unit cannot hold
/// (control characters).
pub fn render_unit(spec: &UnitSpec) -> Result<String, CoreError> {
    let mut exec = systemd_word(&spec.exe.display().to_string())?;
    for arg in &spec.args {
        exec.push(' ');
        exec.push_str(&systemd_word(arg)?);
    }
    let dir = systemd_path(&spec.dir)?;
    // When the service stops, a removed one's unit is disabled; `+`: as root, whatever
    // `User=` says (systemctl needs it).
    let stop_post = [
        spec.exe.display().to_string(),
        "uninstall".into(),
        "--id".into(),
        spec.id.clone(),
        "--root".into(),
        spec.root.display().to_string(),
        "--if-removed".into(),
    ]
    .iter()
    .map(|w| systemd_word(w))
    .collect::<Result<Vec<_>, _>>()?
    .join(" ");
    let mut unit = String::new();
    // Infallible: writing to a String.
    let _ = write!(
        unit,
        "# Written by `sqlraft-core run ... --install`; run that command again to change it.\n\
         [Unit]\n\
         Description=sqlraft core service {id}\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         StartLimitIntervalSec=0\n\
         \n\
         [Service]\n\
         Type=simple\n",
        id = spec.id
    );
    if let Some(user) = &spec.user {
        let user = systemd_word(user)?;
        let _ = writeln!(unit, "User={user}");
    }
    let _ = write!(
        unit,
        "WorkingDirectory={dir}\n\
         ExecStart={exec}\n\
         ExecStopPost=+{stop_post}\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         RestartPreventExitStatus={USAGE_EXIT_STATUS}\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=30\n\
         LimitNOFILE=65536\n\
         NoNewPrivileges=true\n\
         PrivateTmp=true\n\
         ProtectSystem=strict\n\
         ProtectHome=read-only\n\
         ReadWritePaths={dir}\n\
         ProtectKernelTunables=true\n\
         ProtectKernelModules=true\n\
         ProtectControlGroups=true\n\
         RestrictSUIDSGID=true\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    );
    Ok(unit)
}

/// The command line of a unit's text (its `ExecStart=`), split by [`unit_words`];
/// `None` when it has none.
pub(crate) fn unit_command(unit_text: &str) -> Option<Result<Vec<String>, CoreError>> {
    unit_text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .map(unit_words)
}

/// Splits an `ExecStart=` line as [`crate::install`] writes it: bare words, or double
/// quoted with `\\` and `\"` escapes; `%%` and `$$` stand for `%` and `$`.
pub(crate) fn unit_words(line: &str) -> Result<Vec<String>, CoreError> {
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

/// One word of a unit's command line: bare when it is plain, else double-quoted;
/// `%` and `$` are escaped so systemd takes them literally.
fn systemd_word(text: &str) -> Result<String, CoreError> {
    if text.chars().any(char::is_control) {
        return Err(CoreError::Usage(format!(
            "{text:?} cannot go into a systemd unit: it holds a control character"
        )));
    }
    let escaped = text.replace('%', "%%").replace('$', "$$");
    let plain = !escaped.is_empty()
        && escaped
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%$[]".contains(c));
    if plain {
        return Ok(escaped);
    }
    Ok(format!(
        "\"{}\"",
        escaped.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// A path setting (`WorkingDirectory=`, `ReadWritePaths=`): specifiers escaped; spaces
/// are fine in `WorkingDirectory` but split `ReadWritePaths`, so refuse them.
fn systemd_path(path: &Path) -> Result<String, CoreError> {
    let text = path.display().to_string();
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(CoreError::Usage(format!(
            "--root {text:?}: a systemd-managed service directory must not contain spaces or control characters"
        )));
    }
    Ok(text.replace('%', "%%"))
}

/// Everything `--install` needs, worked out before anything changes.
struct Installation {
    id: String,
    dir: PathBuf,
    exe: PathBuf,
    args: Vec<String>,
    user: Option<ServiceUser>,
    unit: String,
}

#[derive(Clone, Debug)]
struct ServiceUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl Installation {
    fn new(args: &RunArgs, config: &RunConfig) -> Result<Self, CoreError> {
        let root = std::path::absolute(&config.root)
            .map_err(|e| CoreError::Usage(format!("--root {}: {e}", config.root.display())))?;
        let config = RunConfig {
            root,
            ..config.clone()
        };
        let exe = std::env::current_exe()
            .map_err(|e| CoreError::Io(format!("cannot find this program's path: {e}")))?;
        let user = args.user.as_deref().map(lookup_user).transpose()?;
        let dir = config.dir();
        let args = service_args(&config);
        let unit = render_unit(&UnitSpec {
            id: config.id.clone(),
            exe: exe.clone(),
            args: args.clone(),
            dir: dir.clone(),
            root: config.root.clone(),
            user: user.as_ref().map(|u| u.name.clone()),
        })?;
        Ok(Self {
            id: config.id,
            dir,
            exe,
            args,
            user,
            unit,
        })
    }

    fn unit_path(&self) -> PathBuf {
        Path::new(UNIT_DIR).join(unit_name(&self.id))
    }

    fn command_line(&self) -> String {
        std::iter::once(self.exe.display().to_string())
            .chain(self.args.iter().cloned())
            .map(|w| shell_word(&w))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The text `--dry-run` prints.
    fn dry_run(&self, systemd: bool) -> String {
        let unit_name = unit_name(&self.id);
        let mut out = String::new();
        let _ = writeln!(out, "# {}", self.unit_path().display());
        out.push_str(&self.unit);
        out.push('\n');
        if systemd {
            let _ = writeln!(
                out,
                "would: create {dir}, write {unit}, systemctl daemon-reload, \
                 systemctl enable --now {unit_name} (restart it if the unit changed); \
                 nothing done (--dry-run)",
                dir = self.dir.display(),
                unit = self.unit_path().display()
            );
        } else {
            let paths = SupervisedPaths::new(&self.dir);
            let _ = writeln!(
                out,
                "systemd is not running here ({SYSTEMD_MARKER} is missing): no unit is written.\n\
                 would: start a supervised background process unless one already runs \
                 (lock {lock}):\n  {cmd} --supervise\n\
                 which runs and restarts on failure:\n  {cmd}\n\
                 pid files {sup} and {core}; stdout/stderr to {log}; service log {dir}/log/core\n\
                 nothing done (--dry-run)",
                lock = paths.lock.display(),
                cmd = self.command_line(),
                sup = paths.supervisor_pid.display(),
                core = paths.core_pid.display(),
                log = paths.log.display(),
                dir = self.dir.display()
            );
        }
        out
    }
}

/// `sqlraft-core run ... --install [--dry-run]`.
pub fn install(args: &RunArgs, config: &RunConfig) -> Result<(), CoreError> {
    crate::run::check_first_start(config)?;
    if let Some(removed) = crate::removal::removed_note(&config.dir()) {
        return Err(CoreError::Usage(format!(
            "service {} {removed}: its id can never join again; create a new service for \
             this host, and take this one away with `sqlraft-core uninstall --id {} --root {}`",
            config.id,
            config.id,
            config.root.display()
        )));
    }
    let installation = Installation::new(args, config)?;
    let systemd = Path::new(SYSTEMD_MARKER).is_dir();
    if args.dry_run {
        print!("{}", installation.dry_run(systemd));
        return Ok(());
    }
    if let Some(user) = &installation.user
        && user.uid != Uid::effective().as_raw()
        && !Uid::effective().is_root()
    {
        return Err(CoreError::Usage(format!(
            "--user {}: only root can install a service that runs as another user",
            user.name
        )));
    }
    if systemd {
        install_systemd(&installation)
    } else {
        install_supervised(&installation)
    }
}

fn lookup_user(name: &str) -> Result<ServiceUser, CoreError> {
    match User::from_name(name) {
        Ok(Some(u)) => Ok(ServiceUser {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }),
        Ok(None) => Err(CoreError::Usage(format!("--user {name}: no such user"))),
        Err(e) => Err(CoreError::Io(format!(
            "--user {name}: cannot look it up: {e}"
        ))),
    }
}

/// Creates `path` (and parents) and, when the service runs as another user, hands it over.
fn ensure_dir(path: &Path, user: Option<&ServiceUser>) -> Result<(), CoreError> {
    std::fs::create_dir_all(path).map_err(|e| io_err("create", path, e))?;
    hand_over(path, user)
}

fn hand_over(path: &Path, user: Option<&ServiceUser>) -> Result<(), CoreError> {
    if let Some(user) = user
        && user.uid != Uid::effective().as_raw()
    {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
            .map_err(|e| io_err("change the owner of", path, e))?;
    }
    Ok(())
}

fn install_systemd(inst: &Installation) -> Result<(), CoreError> {
    let unit_name = unit_name(&inst.id);
    let unit_path = inst.unit_path();
    ensure_dir(&inst.dir, inst.user.as_ref())?;
    let unchanged = std::fs::read_to_string(&unit_path).is_ok_and(|old| old == inst.unit);
    if unchanged && systemctl_ok(&["is-active", "--quiet", &unit_name]) {
        println!("{unit_name}: unit unchanged and active; {NOTHING_CHANGED}");
        return Ok(());
    }
    if !unchanged {
        write_atomically(&unit_path, &inst.unit)?;
    }
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", "--quiet", &unit_name])?;
    // A changed unit takes effect only on restart; an unchanged inactive one just starts.
    systemctl(&[if unchanged { "start" } else { "restart" }, &unit_name])?;
    println!(
        "{unit_name}: unit {} {}, enabled and started; log {}/log/core",
        if unchanged { "kept at" } else { "written to" },
        unit_path.display(),
        inst.dir.display()
    );
    Ok(())
}

fn write_atomically(path: &Path, text: &str) -> Result<(), CoreError> {
    let tmp = path.with_extension("service.tmp");
    std::fs::write(&tmp, text).map_err(|e| io_err("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err("write", path, e))
}

pub(crate) fn systemctl_ok(args: &[&str]) -> bool {
    Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub(crate) fn systemctl(args: &[&str]) -> Result<(), CoreError> {
    let out = Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CoreError::Io(format!("cannot run systemctl: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(CoreError::Failed(format!(
        "systemctl {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

fn install_supervised(inst: &Installation) -> Result<(), CoreError> {
    let name = unit_name(&inst.id);
    let paths = SupervisedPaths::new(&inst.dir);
    if supervisor_running(&paths)? {
        let sup = read_live_pid(&paths.supervisor_pid).map_or("?".into(), |p| p.to_string());
        let core = read_live_pid(&paths.core_pid).map_or("none".into(), |p| p.to_string());
        let running = crate::supervisor::supervisor_flags(&paths);
        if running.as_deref() == Some(&inst.args[..]) {
            println!(
                "{name}: already running under its supervisor (pid {sup}, service pid {core}); {NOTHING_CHANGED}"
            );
            return Ok(());
        }
        // Other flags: restarted with these, as a changed unit is.
        println!(
            "{name}: running with other flags (supervisor pid {sup}); restarting it with these"
        );
        crate::supervisor::stop_supervisor(&inst.id, &inst.dir)?;
    }
    // A stale pid file may name a recycled pid: only a process serving this id counts.
    if let Some(pid) = read_live_pid(&paths.core_pid).filter(|pid| cmdline_mentions(*pid, &inst.id))
    {
        return Err(CoreError::Failed(format!(
            "{name}: the service runs without its supervisor (pid {pid} in {}); stop it first",
            paths.core_pid.display()
        )));
    }
    let user = inst.user.as_ref();
    ensure_dir(&inst.dir, user)?;
    ensure_dir(&paths.run_dir, user)?;
    ensure_dir(&paths.log_dir, user)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .map_err(|e| io_err("open", &paths.log, e))?;
    hand_over(&paths.log, user)?;
    let start_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let log_err = log.try_clone().map_err(|e| io_err("open", &paths.log, e))?;

    let mut command = Command::new(&inst.exe);
    command
        // Its stdout and stderr are log/supervisor, not this command's journal stream.
        .env_remove("JOURNAL_STREAM")
        .args(&inst.args)
        .arg("--supervise")
        .current_dir(&inst.dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own process group: a terminal's Ctrl-C or the installer's exit does not reach it.
        .process_group(0);
    if let Some(user) = user
        && user.uid != Uid::effective().as_raw()
    {
        command.uid(user.uid).gid(user.gid);
    }
    let mut supervisor = command.spawn().map_err(|e| io_err("start", &inst.exe, e))?;

    // Started means: the service process exists and is still alive a moment later.
    let deadline = Instant::now() + Duration::from_millis(START_WAIT_MS);
    let mut seen_since: Option<(i32, Instant)> = None;
    loop {
        if let Ok(Some(status)) = supervisor.try_wait() {
            return Err(CoreError::Failed(format!(
                "{name}: the supervisor stopped ({}): {}",
                describe(status),
                log_tail(&paths.log, start_offset)
            )));
        }
        match (read_live_pid(&paths.core_pid), seen_since) {
            (Some(pid), Some((seen, since))) if pid == seen => {
                if since.elapsed() >= Duration::from_millis(START_SETTLE_MS) {
                    println!(
                        "{name}: started as a supervised background process (supervisor pid {}, service pid {pid}); \
                         systemd is not running here; log {}/log/core, supervisor log {}",
                        supervisor.id(),
                        inst.dir.display(),
                        paths.log.display()
                    );
                    return Ok(());
                }
            }
            (Some(pid), _) => seen_since = Some((pid, Instant::now())),
            (None, _) => seen_since = None,
        }
        if Instant::now() >= deadline {
            return Err(CoreError::Failed(format!(
                "{name}: the service did not stay up within {START_WAIT_MS} ms (the supervisor keeps trying); see {}",
                paths.log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Quotes a word for a POSIX shell when it needs it (for messages the operator copies).
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::DEFAULT_JOIN_TIMEOUT_MS;

    fn spec(user: Option<&str>) -> UnitSpec {
        UnitSpec {
            id: sqlraft::naming::FIRST_SERVICE_ID.into(),
            exe: "/opt/sqlraft/bin/sqlraft-core".into(),
            args: vec![
                "run".into(),
                "--id".into(),
                sqlraft::naming::FIRST_SERVICE_ID.into(),
                "--root".into(),
                "/opt/sqlraft".into(),
                "--raft.node.addr".into(),
                "core-1.example.com:7209".into(),
            ],
            dir: "/opt/sqlraft/core/00000000-0000-0000-0000-000000000000".into(),
            root: "/opt/sqlraft".into(),
            user: user.map(str::to_string),
        }
    }

    #[test]
    fn unit_runs_the_binary_with_the_run_flags_in_the_service_directory() {
        let unit = render_unit(&spec(Some("sqlraft"))).expect("renders");
        let line = |key: &str| {
            unit.lines()
                .find(|l| l.starts_with(&format!("{key}=")))
                .unwrap_or_else(|| panic!("no {key}= in\n{unit}"))
                .to_string()
        };
        assert_eq!(
            line("ExecStart"),
            "ExecStart=/opt/sqlraft/bin/sqlraft-core run --id 00000000-0000-0000-0000-000000000000 \
             --root /opt/sqlraft --raft.node.addr core-1.example.com:7209"
        );
        assert_eq!(
            line("WorkingDirectory"),
            "WorkingDirectory=/opt/sqlraft/core/00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(
            line("ExecStopPost"),
            "ExecStopPost=+/opt/sqlraft/bin/sqlraft-core uninstall --id \
             00000000-0000-0000-0000-000000000000 --root /opt/sqlraft --if-removed",
            "a removed service's unit disables itself, as root"
        );
        assert_eq!(line("User"), "User=sqlraft");
        assert_eq!(line("Restart"), "Restart=on-failure");
        assert_eq!(
            line("RestartPreventExitStatus"),
            "RestartPreventExitStatus=2"
        );
        assert_eq!(line("After"), "After=network-online.target");
        assert_eq!(line("LimitNOFILE"), "LimitNOFILE=65536");
        assert_eq!(
            line("ReadWritePaths"),
            "ReadWritePaths=/opt/sqlraft/core/00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(line("WantedBy"), "WantedBy=multi-user.target");
        for section in ["[Unit]", "[Service]", "[Install]"] {
            assert!(unit.contains(section), "{section} missing");
        }
        let exec = line("ExecStart");
        assert!(!exec.contains("--install") && !exec.contains("--dry-run"));
    }

    #[test]
    fn unit_without_user_runs_as_root() {
        let unit = render_unit(&spec(None)).expect("renders");
        assert!(!unit.contains("User="), "{unit}");
    }

    #[test]
    fn unit_words_are_quoted_and_escaped_for_systemd() {
        assert_eq!(systemd_word("/opt/x").expect("ok"), "/opt/x");
        assert_eq!(systemd_word("a b").expect("ok"), "\"a b\"");
        assert_eq!(systemd_word("50%").expect("ok"), "50%%");
        assert_eq!(systemd_word("$HOME").expect("ok"), "$$HOME");
        assert_eq!(
            systemd_word("say \"hi\"").expect("ok"),
            "\"say \\\"hi\\\"\""
        );
        assert!(systemd_word("a\nb").is_err());
        let mut bad = spec(None);
        bad.dir = "/opt/my root/core/x".into();
        assert!(render_unit(&bad).is_err());
    }

    #[test]
    fn service_args_drop_install_flags_and_pin_the_address() {
        let config = RunConfig {
            id: sqlraft::naming::FIRST_SERVICE_ID.into(),
            root: "/opt/sqlraft".into(),
            listen: "0.0.0.0:7209".parse().expect("addr"),
            advertise: "core-1.example.com:7209".into(),
            join: Some("core-2.example.com:7209".into()),
            http: "0.0.0.0:7220".parse().expect("addr"),
            join_timeout_ms: DEFAULT_JOIN_TIMEOUT_MS,
            snapshot: sqlraft::SnapshotOptions::default(),
            restore_max_bytes: crate::cli::DEFAULT_RESTORE_MAX_BYTES,
            raft_tls: None,
            auth: None,
            http_tls: None,
            allowed_hosts: Vec::new(),
            http_max_connections: None,
            log: crate::cli::LogOptions::default(),
        };
        assert_eq!(
            service_args(&config).join(" "),
            "run --id 00000000-0000-0000-0000-000000000000 --root /opt/sqlraft \
             --raft.node.listen 0.0.0.0:7209 --raft.node.addr core-1.example.com:7209 \
             --raft.join core-2.example.com:7209 --http 0.0.0.0:7220 --raft.insecure"
        );
        let slow = RunConfig {
            join_timeout_ms: 5,
            join: None,
            ..config
        };
        assert!(
            service_args(&slow)
                .join(" ")
                .ends_with("--http 0.0.0.0:7220 --raft.insecure --raft.join.timeout-ms 5")
        );
        let snapshots = RunConfig {
            snapshot: sqlraft::SnapshotOptions {
                entries: 500,
                ..Default::default()
            },
            ..slow
        };
        assert!(
            service_args(&snapshots)
                .join(" ")
                .ends_with("--raft.join.timeout-ms 5 --raft.snapshot.entries 500"),
            "a changed snapshot interval stays on the installed command line"
        );
        let logs = RunConfig {
            log: crate::cli::LogOptions {
                max_bytes: 1 << 20,
                files: 3,
            },
            ..snapshots
        };
        assert!(
            service_args(&logs)
                .join(" ")
                .ends_with("--raft.snapshot.entries 500 --log.max-bytes 1048576 --log.files 3"),
            "the log rotation settings stay on the installed command line"
        );
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("--id"), "--id");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }

    #[test]
    fn cmdline_is_matched_word_by_word() {
        let me = std::process::id() as i32;
        let arg0 = std::env::args().next().expect("argv[0]");
        assert!(cmdline_mentions(me, &arg0));
        assert!(!cmdline_mentions(me, "no-such-argument-sqlraft"));
    }

    #[test]
    fn a_pid_that_does_not_exist_is_not_alive() {
        assert!(process_alive(std::process::id() as i32));
        assert!(!process_alive(0));
        assert!(!process_alive(-1));
    }
}
