//! Command-line flags (the outside contract in DESIGN.md) and their validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::error::CoreError;

/// The sqlraft core service.
#[derive(Debug, Parser)]
#[command(
    name = "sqlraft-core",
    version,
    about = "Raft-replicated SQLite core service"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one core service.
    Run(Box<RunArgs>),
    /// Start a local cluster on 127.0.0.1 (child processes) until Ctrl-C.
    Demo(DemoArgs),
    /// Check an inventory or print its install plan.
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// Make the certificates of mutual TLS between core services.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Make the users file of `--auth` (rqlite's format).
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Measure a cluster: named workloads at given client counts, a table of ops/s and
    /// latency percentiles, JSON and CSV results and SVG plots.
    Bench(BenchArgs),
    /// Take an installed core service off this host: stop it, delete its systemd unit
    /// (or stop its supervisor) and, when no other service is installed here, the binary
    /// `<root>/bin/sqlraft-core`. Its data `<root>/core/<id>` is kept unless --purge.
    Uninstall(UninstallArgs),
    /// Put this binary in place of `<root>/bin/sqlraft-core` and restart this host's core
    /// service with it (run as the new binary; deploy/upgrade.sh runs it host by host,
    /// the leader last). Refuses a downgrade across a data format change.
    Upgrade(UpgradeArgs),
}

/// `sqlraft-core upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The root directory the service is installed under.
    #[arg(long = "root", value_name = "DIR", default_value = "/opt/sqlraft")]
    pub root: PathBuf,
    /// The service, when several are installed under the root.
    #[arg(long = "id", value_name = "SERVICE-ID")]
    pub id: Option<String>,
    /// The binary to put in place [default: this one]; to go back, the one the last
    /// upgrade kept: `<root>/bin/sqlraft-core.previous`.
    #[arg(long = "binary", value_name = "FILE")]
    pub binary: Option<PathBuf>,
    /// Check and say what would be done; change nothing.
    #[arg(long = "check")]
    pub check: bool,
    /// Print the oldest and the newest data format this binary opens, and exit.
    #[arg(long = "formats", hide = true)]
    pub formats: bool,
}

/// `sqlraft-core uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The service id.
    #[arg(long = "id", value_name = "SERVICE-ID")]
    pub id: String,
    /// The root directory it was installed under.
    #[arg(long = "root", value_name = "DIR", default_value = "/opt/sqlraft")]
    pub root: PathBuf,
    /// Also delete the service's data, `<root>/core/<id>`.
    #[arg(long = "purge")]
    pub purge: bool,
    /// Keep `<root>/bin/sqlraft-core` (a new service will be installed on this host).
    #[arg(long = "keep-binary")]
    pub keep_binary: bool,
    /// Uninstall a service that is still a member of the cluster (remove it in the web
    /// interface first, so the cluster does not count it as down).
    #[arg(long = "force")]
    pub force: bool,
    /// Only when the cluster removed the service: disable its unit (what the unit runs
    /// when the service stops).
    #[arg(long = "if-removed", conflicts_with_all = ["purge", "force", "keep_binary"])]
    pub if_removed: bool,
}

/// `sqlraft-core auth`.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Write an auth file with one administrator (every permission) and a random
    /// password, and the password into a file of its own (both mode 0600).
    Init {
        /// The auth file to write (never overwritten).
        #[arg(
            long = "file",
            value_name = "FILE",
            default_value = "/opt/sqlraft/auth.json"
        )]
        file: PathBuf,
        /// The administrator's user name.
        #[arg(long = "user", value_name = "NAME", default_value = "admin")]
        user: String,
        /// Where the password is written [default: admin.password beside --file].
        #[arg(long = "password-file", value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Read a password (one line) on standard input and print its bcrypt hash, for an
    /// auth file's `password`.
    Hash,
}

/// `sqlraft-core certs`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make a cluster CA: `ca.crt` and `ca.key` (mode 0600) in --dir.
    Init {
        /// Where the CA is written; an existing CA there is never overwritten.
        #[arg(long = "dir", value_name = "DIR", default_value = "/opt/sqlraft/tls")]
        dir: PathBuf,
        /// How long the CA is valid, in days.
        #[arg(long = "days", value_name = "DAYS", default_value_t = crate::certs::CA_DAYS)]
        days: u32,
    },
    /// Issue a service's certificate: `<id>.crt`, `<id>.key` (mode 0600) and a copy of
    /// `ca.crt` in --out. Issuing again for the same id renews it.
    Issue {
        /// The service id the certificate names.
        #[arg(long = "id", value_name = "SERVICE-ID")]
        id: String,
        /// The host other services reach it at (the host of its `--raft.node.addr`):
        /// an FQDN or an IP address.
        #[arg(long = "fqdn", value_name = "FQDN")]
        fqdn: String,
        /// Where the CA is (`certs init --dir`).
        #[arg(
            long = "ca-dir",
            value_name = "DIR",
            default_value = "/opt/sqlraft/tls"
        )]
        ca_dir: PathBuf,
        /// Where the files are written [default: --ca-dir].
        #[arg(long = "out", value_name = "DIR")]
        out: Option<PathBuf>,
        /// How long the certificate is valid, in days.
        #[arg(long = "days", value_name = "DAYS", default_value_t = crate::certs::SERVICE_DAYS)]
        days: u32,
    },
}

/// `sqlraft-core bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Nodes of the local cluster started for the run (odd; ignored with --urls).
    #[arg(long = "nodes", value_name = "N", default_value_t = 3)]
    pub nodes: usize,
    /// Measure running nodes instead of starting a cluster: their HTTP addresses
    /// (`host:port` or `http://host:port`), comma separated.
    #[arg(long = "urls", value_name = "URL,...", value_delimiter = ',')]
    pub urls: Vec<String>,
    /// Workloads to run, comma separated (`--list` describes them).
    #[arg(
        long = "workloads",
        value_name = "NAME,...",
        value_delimiter = ',',
        default_value = "write,write-batch,read-none-follower,read-linearizable-follower,mixed"
    )]
    pub workloads: Vec<String>,
    /// Concurrent clients, comma separated: each workload runs once per count.
    #[arg(
        long = "clients",
        value_name = "N,...",
        value_delimiter = ',',
        default_value = "1,8,32"
    )]
    pub clients: Vec<usize>,
    /// How long each run measures, in seconds.
    #[arg(long = "duration", value_name = "SECONDS", default_value_t = 10.0)]
    pub duration: f64,
    /// How long each run warms up first (not measured), in seconds.
    #[arg(long = "warmup", value_name = "SECONDS", default_value_t = 2.0)]
    pub warmup: f64,
    /// Rows the read workloads choose from (written before the first run).
    #[arg(long = "rows", value_name = "N", default_value_t = 1000)]
    pub rows: u64,
    /// Size of a row written by `write-large`, in bytes.
    #[arg(long = "large-bytes", value_name = "BYTES", default_value_t = 65536)]
    pub large_bytes: usize,
    /// Where results.json, results.csv and the plots are written.
    #[arg(long = "out", value_name = "DIR", default_value = "bench-results")]
    pub out: PathBuf,
    /// Root directory of the local cluster [default: a temporary directory, removed
    /// at exit].
    #[arg(long = "root", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Describe the workloads and exit.
    #[arg(long = "list")]
    pub list: bool,
}

/// `sqlraft-core run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Service id (UUID text, 8-4-4-4-12 hex digits).
    #[arg(long = "id", value_name = "SERVICE-ID")]
    pub id: String,
    /// Root directory; the service lives in `<root>/core/<id>/`.
    #[arg(
        long = "root",
        value_name = "DIR",
        default_value = "/opt/sqlraft",
        help = "Root directory; the service lives in <root>/core/<id>/"
    )]
    pub root: PathBuf,
    /// Where the raft transport listens.
    #[arg(
        long = "raft.node.listen",
        value_name = "IP:PORT",
        default_value = "0.0.0.0:7209"
    )]
    pub listen: String,
    /// The address other nodes reach this one at (default: `<hostname -f>:<listen port>`).
    #[arg(
        long = "raft.node.addr",
        value_name = "FQDN:PORT",
        help = "The address other nodes reach this one at [default: <hostname -f>:<listen port>]"
    )]
    pub addr: Option<String>,
    /// Any member's raft address, to join an existing cluster (first start only).
    #[arg(long = "raft.join", value_name = "FQDN:PORT")]
    pub join: Option<String>,
    /// Where the HTTP API listens.
    #[arg(long = "http", value_name = "IP:PORT", default_value = "0.0.0.0:7220")]
    pub http: String,
    /// How long joining may take before giving up, in milliseconds.
    #[arg(
        long = "raft.join.timeout-ms",
        value_name = "MS",
        default_value_t = 60_000,
        hide = true
    )]
    pub join_timeout_ms: u64,
    /// Take a snapshot (and compact the log) every this many applied entries.
    #[arg(long = "raft.snapshot.entries", value_name = "N", default_value_t = DEFAULT_SNAPSHOT_ENTRIES)]
    pub snapshot_entries: u64,
    /// ... or once the log has grown by this many bytes, whichever comes first.
    #[arg(long = "raft.snapshot.log-bytes", value_name = "BYTES", default_value_t = DEFAULT_SNAPSHOT_LOG_BYTES)]
    pub snapshot_log_bytes: u64,
    /// Entries kept in the log behind a snapshot, for followers that lag a little.
    #[arg(long = "raft.snapshot.trailing", value_name = "N", default_value_t = DEFAULT_SNAPSHOT_TRAILING)]
    pub snapshot_trailing: u64,
    /// Largest backup `POST /api/v1/system/restore` takes, in bytes.
    #[arg(long = "restore.max-bytes", value_name = "BYTES", default_value_t = DEFAULT_RESTORE_MAX_BYTES)]
    pub restore_max_bytes: u64,
    /// The cluster CA's certificate (PEM), for mutual TLS with the other core services.
    #[arg(long = "raft.tls.ca", value_name = "FILE")]
    pub raft_tls_ca: Option<PathBuf>,
    /// This service's certificate (PEM), issued by the cluster CA
    /// (`sqlraft-core certs issue`).
    #[arg(long = "raft.tls.cert", value_name = "FILE")]
    pub raft_tls_cert: Option<PathBuf>,
    /// This service's private key (PEM).
    #[arg(long = "raft.tls.key", value_name = "FILE")]
    pub raft_tls_key: Option<PathBuf>,
    /// Users and permissions of the HTTP API: rqlite's JSON auth file. Without it the
    /// API is open to anyone who reaches it.
    #[arg(long = "auth", value_name = "FILE")]
    pub auth: Option<PathBuf>,
    /// Serve the API and the web interface over HTTPS with this certificate (PEM).
    #[arg(long = "http.tls.cert", value_name = "FILE", requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,
    /// The HTTPS certificate's private key (PEM).
    #[arg(long = "http.tls.key", value_name = "FILE", requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,
    /// HTTP connections open at once [default: 4096, at most half the open-file limit];
    /// at the limit the connection idle the longest is closed for a new one.
    #[arg(long = "http.max-connections", value_name = "N")]
    pub http_max_connections: Option<usize>,
    /// Names browsers may open this node under (`Host`), comma separated; requests from
    /// browser pages under other names are refused (DNS rebinding) [default: the host of
    /// --raft.node.addr, the --http address, localhost].
    #[arg(
        long = "http.allowed-hosts",
        value_name = "HOST,...",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// The service log `<root>/core/<id>/log/core` is rotated when it would grow past
    /// this many bytes (at least 4096).
    #[arg(long = "log.max-bytes", value_name = "BYTES", default_value_t = crate::logfile::DEFAULT_MAX_BYTES)]
    pub log_max_bytes: u64,
    /// Log files kept, the current one included: `core`, `core.1` … `core.<N-1>` (1-100).
    #[arg(long = "log.files", value_name = "N", default_value_t = crate::logfile::DEFAULT_KEEP_FILES)]
    pub log_files: usize,
    /// Run the raft transport in plaintext, without TLS: anyone who can reach the raft
    /// port can then join, vote and replicate. For tests and isolated networks only.
    #[arg(long = "raft.insecure")]
    pub raft_insecure: bool,
    /// Install the service instead of running it: a systemd unit, enabled and started, or
    /// where systemd is not running a supervised background process (docs/OPERATIONS.md).
    #[arg(long = "install")]
    pub install: bool,
    /// With --install: print the unit and what would be done; change nothing.
    #[arg(long = "dry-run", requires = "install")]
    pub dry_run: bool,
    /// With --install: the user the service runs as [default: the installing user].
    #[arg(long = "user", value_name = "USER", requires = "install")]
    pub user: Option<String>,
    /// Run as the supervisor of an installed service (started by --install).
    #[arg(long = "supervise", hide = true, conflicts_with = "install")]
    pub supervise: bool,
    /// Stop (SIGTERM) when the parent process ends, however it ends: the demo's
    /// services never outlive the demo.
    #[arg(long = "exit-with-parent", hide = true, conflicts_with = "install")]
    pub exit_with_parent: bool,
}

/// `sqlraft-core demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of core services (odd, at least 1).
    #[arg(long = "nodes", value_name = "N", default_value_t = 3)]
    pub nodes: usize,
    /// Root directory for the services [default: a temporary directory, removed at exit].
    #[arg(long = "root", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Plaintext raft transport between the services, no TLS (each is started with
    /// `--raft.insecure`): to measure against a system whose nodes talk in plaintext.
    #[arg(long = "raft.insecure")]
    pub raft_insecure: bool,
}

/// `sqlraft-core inventory`.
#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// Validate an inventory: exit 0 when valid, 1 with the problems on stderr.
    Check {
        /// The inventory file.
        file: PathBuf,
    },
    /// Print the install plan of a valid inventory.
    Plan {
        /// The inventory file.
        file: PathBuf,
        /// Plan an expansion (expand.sh) instead of a new installation (install.sh).
        #[arg(long)]
        expand: bool,
    },
}

/// Validated `run` flags.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Service id, lower case.
    pub id: String,
    /// Root directory.
    pub root: PathBuf,
    /// Raft listen address.
    pub listen: SocketAddr,
    /// Advertised raft address (`host:port`).
    pub advertise: String,
    /// A member to join.
    pub join: Option<String>,
    /// HTTP listen address.
    pub http: SocketAddr,
    /// Join timeout.
    pub join_timeout_ms: u64,
    /// When snapshots are taken and how much log they leave.
    pub snapshot: sqlraft::SnapshotOptions,
    /// Largest backup a restore takes.
    pub restore_max_bytes: u64,
    /// Mutual TLS between services (absolute paths); `None` with `--raft.insecure`.
    pub raft_tls: Option<sqlraft::TlsFiles>,
    /// The auth file (absolute), if any.
    pub auth: Option<PathBuf>,
    /// HTTPS certificate and key (absolute), if any.
    pub http_tls: Option<(PathBuf, PathBuf)>,
    /// `--http.allowed-hosts` as given (empty: the defaults).
    pub allowed_hosts: Vec<String>,
    /// `--http.max-connections`, if given.
    pub http_max_connections: Option<usize>,
    /// How the service log is rotated.
    pub log: LogOptions,
}

/// Rotation of the service log (`--log.max-bytes`, `--log.files`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// Size of one log file.
    pub max_bytes: u64,
    /// Files kept, the current one included.
    pub files: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            max_bytes: crate::logfile::DEFAULT_MAX_BYTES,
            files: crate::logfile::DEFAULT_KEEP_FILES,
        }
    }
}

/// Defaults of the snapshot flags (those of [`sqlraft::SnapshotOptions`]).
pub const DEFAULT_SNAPSHOT_ENTRIES: u64 = 100_000;
/// See [`DEFAULT_SNAPSHOT_ENTRIES`].
pub const DEFAULT_SNAPSHOT_LOG_BYTES: u64 = 64 << 20;
/// See [`DEFAULT_SNAPSHOT_ENTRIES`].
pub const DEFAULT_SNAPSHOT_TRAILING: u64 = 5_000;
/// Default of `--restore.max-bytes`.
pub const DEFAULT_RESTORE_MAX_BYTES: u64 = 1 << 30;

impl RunConfig {
    /// The service directory `<root>/core/<id>`.
    pub fn dir(&self) -> PathBuf {
        self.root.join("core").join(&self.id)
    }

    /// The names this node answers under: `--http.allowed-hosts`, or the host of the
    /// advertised raft address, the HTTP listen address when it is not a wildcard, the
    /// machine's host name (short and full), and localhost. (IP addresses are always
    /// answered.)
    pub fn allowed_hosts(&self) -> Vec<String> {
        if !self.allowed_hosts.is_empty() {
            return self.allowed_hosts.clone();
        }
        let (host, _) = split_host_port(&self.advertise).unwrap_or((self.advertise.as_str(), 0));
        let mut hosts = vec![host.to_string()];
        if !self.http.ip().is_unspecified() {
            hosts.push(match self.http.ip() {
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            });
        }
        let fqdn = local_fqdn();
        let short = fqdn.split('.').next().unwrap_or_default().to_string();
        for local in [
            fqdn,
            short,
            "localhost".into(),
            "127.0.0.1".into(),
            "[::1]".into(),
        ] {
            if !local.is_empty() && !hosts.iter().any(|h| h.eq_ignore_ascii_case(&local)) {
                hosts.push(local);
            }
        }
        hosts
    }

    /// The advertised HTTP address: the advertised raft host with the HTTP port.
    pub fn http_addr(&self, http_port: u16) -> String {
        let (host, _) = split_host_port(&self.advertise).unwrap_or((self.advertise.as_str(), 0));
        format!("{host}:{http_port}")
    }
}

/// Checks the flags of `run` against each other.
pub fn validate_run(args: &RunArgs) -> Result<RunConfig, CoreError> {
    let id = parse_service_id(&args.id)?;
    if args.root.as_os_str().is_empty() {
        return Err(CoreError::Usage("--root must not be empty".into()));
    }
    let listen = parse_socket(&args.listen, "--raft.node.listen")?;
    let http = parse_socket(&args.http, "--http")?;
    let advertise = match &args.addr {
        Some(addr) => {
            check_host_port(addr, "--raft.node.addr")?;
            addr.clone()
        }
        None if listen.port() == 0 => listen.to_string(),
        None => format!("{}:{}", local_fqdn(), listen.port()),
    };
    if listen.port() != 0 && listen.port() == http.port() && overlaps(listen, http) {
        return Err(CoreError::Usage(format!(
            "--raft.node.listen and --http both use {}: give them different ports",
            listen
        )));
    }
    if let Some(join) = &args.join {
        check_host_port(join, "--raft.join")?;
        if join.eq_ignore_ascii_case(&advertise) {
            return Err(CoreError::Usage(format!(
                "--raft.join {join} is this node's own address: join another member"
            )));
        }
    }
    if args.snapshot_entries == 0 {
        return Err(CoreError::Usage(
            "--raft.snapshot.entries must be at least 1".into(),
        ));
    }
    if args.snapshot_log_bytes < 1 << 20 {
        return Err(CoreError::Usage(
            "--raft.snapshot.log-bytes must be at least 1048576 (1 MiB)".into(),
        ));
    }
    if args.restore_max_bytes == 0 {
        return Err(CoreError::Usage(
            "--restore.max-bytes must be at least 1".into(),
        ));
    }
    if args.log_max_bytes < 4096 {
        return Err(CoreError::Usage(
            "--log.max-bytes must be at least 4096".into(),
        ));
    }
    if !(1..=100).contains(&args.log_files) {
        return Err(CoreError::Usage(
            "--log.files must be between 1 and 100".into(),
        ));
    }
    let raft_tls = raft_tls(args)?;
    let auth = args.auth.as_deref().map(absolute).transpose()?;
    let http_tls = match (&args.http_tls_cert, &args.http_tls_key) {
        (Some(cert), Some(key)) => Some((absolute(cert)?, absolute(key)?)),
        (None, None) => None,
        _ => {
            return Err(CoreError::Usage(
                "--http.tls.cert and --http.tls.key go together".into(),
            ));
        }
    };
    let mut allowed_hosts = Vec::new();
    for host in &args.allowed_hosts {
        let host = host.trim();
        if host.is_empty() || host.contains('/') || host.chars().any(char::is_whitespace) {
            return Err(CoreError::Usage(format!(
                "--http.allowed-hosts: {host:?} is not a host name or host:port"
            )));
        }
        allowed_hosts.push(host.to_string());
    }
    Ok(RunConfig {
        id,
        root: args.root.clone(),
        listen,
        advertise,
        join: args.join.clone(),
        http,
        join_timeout_ms: args.join_timeout_ms,
        snapshot: sqlraft::SnapshotOptions {
            entries: args.snapshot_entries,
            log_bytes: args.snapshot_log_bytes,
            trailing_entries: args.snapshot_trailing,
        },
        restore_max_bytes: args.restore_max_bytes,
        raft_tls,
        auth,
        http_tls,
        allowed_hosts,
        log: LogOptions {
            max_bytes: args.log_max_bytes,
            files: args.log_files,
        },
        http_max_connections: match args.http_max_connections {
            Some(0) => {
                return Err(CoreError::Usage(
                    "--http.max-connections must be at least 1".into(),
                ));
            }
            other => other,
        },
    })
}

/// `path` made absolute (an installed unit runs in another directory).
fn absolute(path: &std::path::Path) -> Result<PathBuf, CoreError> {
    std::path::absolute(path)
        .map_err(|e| CoreError::Usage(format!("{}: not a usable path: {e}", path.display())))
}

/// The `--raft.tls.*` files, all three or none; none only with `--raft.insecure`.
fn raft_tls(args: &RunArgs) -> Result<Option<sqlraft::TlsFiles>, CoreError> {
    let given = [
        ("--raft.tls.ca", &args.raft_tls_ca),
        ("--raft.tls.cert", &args.raft_tls_cert),
        ("--raft.tls.key", &args.raft_tls_key),
    ];
    let missing: Vec<&str> = given
        .iter()
        .filter(|(_, path)| path.is_none())
        .map(|(flag, _)| *flag)
        .collect();
    match (missing.len(), args.raft_insecure) {
        (0, true) => Err(CoreError::Usage(
            "--raft.insecure and --raft.tls.* contradict each other: give one or the other".into(),
        )),
        (0, false) => {
            let file = |path: &Option<PathBuf>| absolute(path.as_deref().unwrap_or(Path::new("")));
            Ok(Some(sqlraft::TlsFiles {
                ca: file(&args.raft_tls_ca)?,
                cert: file(&args.raft_tls_cert)?,
                key: file(&args.raft_tls_key)?,
            }))
        }
        (3, true) => Ok(None),
        (3, false) => Err(CoreError::Usage(
            "the raft transport needs TLS: give --raft.tls.ca, --raft.tls.cert and --raft.tls.key \
             (`sqlraft-core certs init` and `certs issue` make them), or --raft.insecure to run \
             it in plaintext"
                .into(),
        )),
        _ => Err(CoreError::Usage(format!(
            "--raft.tls.ca, --raft.tls.cert and --raft.tls.key go together: {} missing",
            missing.join(", ")
        ))),
    }
}

fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
}

/// A service id is UUID text: 8-4-4-4-12 hex digits. Returned in lower case so that one
/// service never gets two directories.
pub fn parse_service_id(text: &str) -> Result<String, CoreError> {
    let valid = text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if valid {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(CoreError::Usage(format!(
            "--id {text:?} is not a service id: expected UUID text like 00000000-0000-0000-0000-000000000000"
        )))
    }
}

fn parse_socket(text: &str, flag: &str) -> Result<SocketAddr, CoreError> {
    text.parse()
        .map_err(|_| CoreError::Usage(format!("{flag} {text:?} is not an ip:port address")))
}

/// Splits `host:port` (`[v6]:port` too).
pub fn split_host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse().ok()?;
    Some((host, port))
}

fn check_host_port(text: &str, flag: &str) -> Result<(), CoreError> {
    let bad = || CoreError::Usage(format!("{flag} {text:?} is not a host:port address"));
    let (host, port) = split_host_port(text).ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'));
    if !host_ok || port == 0 {
        return Err(bad());
    }
    Ok(())
}

/// `hostname -f`, else the plain host name, else `localhost`.
pub fn local_fqdn() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("hostname")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
    };
    run(&["-f"])
        .or_else(|| run(&[]))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "localhost".into())
}

/// Default join timeout of `run`, left out of the service's command line.
pub(crate) const DEFAULT_JOIN_TIMEOUT_MS: u64 = 60_000;
/// The installed command: the absolute binary and the `run` flags, without `--install`,
/// `--dry-run` and `--user`. The advertised address is pinned (resolved once here), so a
/// later change of `hostname -f` cannot give the service another address.
pub fn service_args(config: &RunConfig) -> Vec<String> {
    let mut args = vec![
        "run".to_string(),
        "--id".into(),
        config.id.clone(),
        "--root".into(),
        config.root.display().to_string(),
        "--raft.node.listen".into(),
        config.listen.to_string(),
        "--raft.node.addr".into(),
        config.advertise.clone(),
    ];
    if let Some(join) = &config.join {
        args.extend(["--raft.join".into(), join.clone()]);
    }
    args.extend(["--http".into(), config.http.to_string()]);
    match &config.raft_tls {
        Some(files) => {
            for (flag, path) in [
                ("--raft.tls.ca", &files.ca),
                ("--raft.tls.cert", &files.cert),
                ("--raft.tls.key", &files.key),
            ] {
                args.extend([flag.to_string(), path.display().to_string()]);
            }
        }
        None => args.push("--raft.insecure".into()),
    }
    if let Some(auth) = &config.auth {
        args.extend(["--auth".into(), auth.display().to_string()]);
    }
    if let Some((cert, key)) = &config.http_tls {
        args.extend([
            "--http.tls.cert".into(),
            cert.display().to_string(),
            "--http.tls.key".into(),
            key.display().to_string(),
        ]);
    }
    if let Some(n) = config.http_max_connections {
        args.extend(["--http.max-connections".into(), n.to_string()]);
    }
    if !config.allowed_hosts.is_empty() {
        args.extend([
            "--http.allowed-hosts".into(),
            config.allowed_hosts.join(","),
        ]);
    }
    if config.join_timeout_ms != DEFAULT_JOIN_TIMEOUT_MS {
        args.extend([
            "--raft.join.timeout-ms".into(),
            config.join_timeout_ms.to_string(),
        ]);
    }
    let snapshot = &config.snapshot;
    for (flag, value, default) in [
        (
            "--raft.snapshot.entries",
            snapshot.entries,
            DEFAULT_SNAPSHOT_ENTRIES,
        ),
        (
            "--raft.snapshot.log-bytes",
            snapshot.log_bytes,
            DEFAULT_SNAPSHOT_LOG_BYTES,
        ),
        (
            "--raft.snapshot.trailing",
            snapshot.trailing_entries,
            DEFAULT_SNAPSHOT_TRAILING,
        ),
        (
            "--restore.max-bytes",
            config.restore_max_bytes,
            DEFAULT_RESTORE_MAX_BYTES,
        ),
    ] {
        if value != default {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    let log = LogOptions::default();
    if config.log.max_bytes != log.max_bytes {
        args.extend(["--log.max-bytes".into(), config.log.max_bytes.to_string()]);
    }
    if config.log.files != log.files {
        args.extend(["--log.files".into(), config.log.files.to_string()]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<RunConfig, CoreError> {
        let tls_given = extra.iter().any(|a| a.starts_with("--raft.tls"));
        let mut argv = vec![
            "sqlraft-core",
            "run",
            "--id",
            sqlraft::naming::FIRST_SERVICE_ID,
            "--root",
            "/tmp/x",
        ];
        if !tls_given && !extra.contains(&"--no-insecure") {
            argv.push("--raft.insecure");
        }
        argv.extend(extra.iter().filter(|a| **a != "--no-insecure"));
        let Command::Run(run) = Cli::try_parse_from(argv).expect("parse").command else {
            panic!("not run");
        };
        validate_run(&run)
    }

    #[test]
    fn service_ids_must_be_uuid_text() {
        assert!(parse_service_id("00000000-0000-0000-0000-000000000000").is_ok());
        assert_eq!(
            parse_service_id("6F1C0A3E-1234-4ABC-9DEF-0123456789AB").expect("valid"),
            "6f1c0a3e-1234-4abc-9def-0123456789ab"
        );
        for bad in [
            "",
            "1",
            "6f1c0a3e12344abc9def0123456789ab",
            "6f1c0a3e-1234-4abc-9def-0123456789ag",
            "../etc/passwd",
        ] {
            assert!(parse_service_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_are_checked_against_each_other() {
        let ok = args(&["--raft.node.addr", "core-1.example.com:7209"]).expect("valid");
        assert_eq!(ok.http_addr(7220), "core-1.example.com:7220");
        assert!(args(&["--http", "0.0.0.0:7209"]).is_err());
        assert!(args(&["--http", "nonsense"]).is_err());
        assert!(args(&["--raft.node.addr", "nohost"]).is_err());
        assert!(args(&["--raft.node.addr", "a:1", "--raft.join", "a:1"]).is_err());
        assert!(args(&["--raft.join", "b:0"]).is_err());
        let default = args(&[]).expect("valid");
        assert!(
            default.advertise.ends_with(":7209"),
            "{}",
            default.advertise
        );
    }

    #[test]
    fn the_raft_transport_is_tls_unless_insecure_is_asked_for() {
        let message = |extra: &[&str]| match args(extra) {
            Err(CoreError::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        };
        assert!(message(&["--no-insecure"]).contains("needs TLS"));
        assert!(
            message(&["--raft.tls.ca", "ca.crt"])
                .contains("--raft.tls.cert, --raft.tls.key missing")
        );
        let all = [
            "--raft.tls.ca",
            "ca.crt",
            "--raft.tls.cert",
            "a.crt",
            "--raft.tls.key",
            "a.key",
        ];
        let with_insecure: Vec<&str> = all.iter().copied().chain(["--raft.insecure"]).collect();
        assert!(message(&with_insecure).contains("contradict"));
        let tls = args(&all).expect("valid").raft_tls.expect("TLS");
        assert!(tls.ca.is_absolute() && tls.cert.ends_with("a.crt") && tls.key.ends_with("a.key"));
        let insecure = args(&[]).expect("valid");
        assert!(insecure.raft_tls.is_none());
        assert!(service_args(&insecure).contains(&"--raft.insecure".to_string()));
        let installed = service_args(&args(&all).expect("valid"));
        let at = installed
            .iter()
            .position(|a| a == "--raft.tls.key")
            .expect("key flag");
        assert!(Path::new(&installed[at + 1]).is_absolute(), "{installed:?}");
    }
}
