//! `sqlraft-core run`: one core service with its HTTP API, until SIGTERM/SIGINT or a
//! fatal node error.

use std::io::IsTerminal;
use std::time::Duration;

use sqlraft::naming::FIRST_SERVICE_ID;
use sqlraft::{Node, NodeConfig};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

use crate::app::{self, ApiOptions};
use crate::cli::RunConfig;
use crate::error::CoreError;
use crate::logfile::RotatingFile;

/// How often the node's health is checked.
const FAILURE_POLL_MS: u64 = 500;
/// How long a stopping leader waits for another voter to take over.
const HAND_OVER_WAIT: Duration = Duration::from_secs(3);
/// How long open HTTP requests get to finish at shutdown.
const HTTP_DRAIN_MS: u64 = 5_000;

/// Creates `<root>/core/<id>/log` and sends the log to `log/core`, rotated as
/// `--log.max-bytes` and `--log.files` say, and also to stderr when that is a terminal
/// or systemd's journal (`journalctl -u sqlraft-core-<id>`). Call once per process.
pub fn init_logging(config: &RunConfig) -> Result<(), CoreError> {
    let log_dir = config.dir().join("log");
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| CoreError::Io(format!("cannot create {}: {e}", log_dir.display())))?;
    let path = log_dir.join("core");
    let file = RotatingFile::open(&path, config.log.max_bytes, config.log.files)
        .map_err(|e| CoreError::Io(format!("cannot open log file {}: {e}", path.display())))?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    // The supervised mode's stderr is a file of its own (log/supervisor): no copy there.
    let to_stderr = std::io::stderr().is_terminal() || stderr_is_the_journal();
    let installed = if to_stderr {
        builder.with_writer(file.and(std::io::stderr)).try_init()
    } else {
        builder.with_writer(file).try_init()
    };
    // Already installed (a test harness): keep the existing subscriber.
    let _ = installed;
    Ok(())
}

/// Whether stderr is systemd's journal: systemd sets `JOURNAL_STREAM=<dev>:<inode>` of
/// the stream it connects, and a variable inherited by a process whose stderr went
/// elsewhere names another file (as sd_journal_stream's documentation says to check).
fn stderr_is_the_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    nix::sys::stat::fstat(std::io::stderr()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// Why the service stopped.
enum Stop {
    Signal(&'static str),
    /// The cluster removed this service: a clean end (exit status 0).
    Removed,
    Failed(String),
}

/// Refuses to start a new service other than the first without `--raft.join`: it would
/// found a second cluster.
pub fn check_first_start(config: &RunConfig) -> Result<(), CoreError> {
    let dir = config.dir();
    let fresh = !dir.join("raft").join("identity").exists();
    if fresh && config.join.is_none() && config.id != FIRST_SERVICE_ID {
        return Err(CoreError::Usage(format!(
            "{} holds no service yet: a new service {} needs --raft.join <member>; only {FIRST_SERVICE_ID} bootstraps a new cluster",
            dir.display(),
            config.id
        )));
    }
    Ok(())
}

/// Starts receiving signal `kind` (`name` for the error message).
pub(crate) fn watch_signal(kind: SignalKind, name: &str) -> Result<Signal, CoreError> {
    signal(kind).map_err(|e| CoreError::Io(format!("cannot watch {name}: {e}")))
}

/// How often the TLS files are checked for a change.
const TLS_WATCH: Duration = Duration::from_secs(5);

/// Says in the log (and, for the loud one, on stderr) how the service is secured.
fn announce(config: &RunConfig, peer_tls: Option<&sqlraft::PeerTls>) {
    match (&config.raft_tls, peer_tls) {
        (Some(files), Some(tls)) => {
            tracing::info!(cert = %files.cert.display(), not_after_unix = tls.not_after_unix(),
                "mutual TLS with the other services");
        }
        _ => {
            let warning = format!(
                "--raft.insecure: the raft transport on {} runs WITHOUT TLS; anyone who can \
                 reach it can join, vote, replicate and write. Use it only on a network you \
                 trust completely.",
                config.listen
            );
            tracing::warn!("{warning}");
            eprintln!("sqlraft-core: WARNING: {warning}");
        }
    }
    match &config.auth {
        Some(path) => tracing::info!(file = %path.display(),
            "HTTP API: users and permissions from the auth file"),
        None => tracing::warn!(
            "HTTP API without --auth: anyone who reaches it may read, write and administer"
        ),
    }
}

/// The peer TLS material, checked against this service: its certificate must name this
/// service id and the host its peers reach it at. Watched for changes from now on.
/// `None` with `--raft.insecure` ([`announce`] says so loudly).
fn peer_tls(config: &RunConfig) -> Result<Option<sqlraft::PeerTls>, CoreError> {
    let tls = checked_peer_tls(config)?;
    if let Some(tls) = &tls {
        tls.watch(TLS_WATCH);
    }
    Ok(tls)
}

/// What `run` checks of its flags' files before it starts (the peer certificate names
/// this service and its host, the `--auth` file loads, the HTTPS files load), without
/// starting anything: `run --install` checks them too, so that it does not install a
/// service that would refuse to start (found by a review).
pub fn check_flag_files(config: &RunConfig) -> Result<(), CoreError> {
    checked_peer_tls(config)?;
    load_auth(config)?;
    if let Some((cert, key)) = &config.http_tls {
        crate::https::HttpTls::load(cert, key)?;
    }
    Ok(())
}

/// [`peer_tls`], not yet watched.
fn checked_peer_tls(config: &RunConfig) -> Result<Option<sqlraft::PeerTls>, CoreError> {
    let Some(files) = &config.raft_tls else {
        return Ok(None);
    };
    let tls = sqlraft::PeerTls::load(files.clone())
        .map_err(|e| CoreError::Usage(format!("--raft.tls: {e}")))?;
    if tls.service_id() != config.id {
        return Err(CoreError::Usage(format!(
            "--raft.tls.cert {} is service {}'s certificate, not this service's ({}): issue one \
             with `sqlraft-core certs issue --id {}`",
            files.cert.display(),
            tls.service_id(),
            config.id,
            config.id
        )));
    }
    let (host, _) =
        crate::cli::split_host_port(&config.advertise).unwrap_or((config.advertise.as_str(), 0));
    if !tls.names_host(host) {
        return Err(CoreError::Usage(format!(
            "--raft.tls.cert {} is not valid for {host}, where the other services reach this \
             one (--raft.node.addr {}): issue it with --fqdn {host}",
            files.cert.display(),
            config.advertise
        )));
    }
    tls.pin_host(host);
    Ok(Some(tls))
}

/// The users of `--auth`, if given.
fn load_auth(config: &RunConfig) -> Result<Option<std::sync::Arc<crate::auth::Users>>, CoreError> {
    config
        .auth
        .as_ref()
        .map(|path| {
            crate::auth::Users::load(path)
                .map(std::sync::Arc::new)
                .map_err(|e| CoreError::Usage(format!("--auth: {e}")))
        })
        .transpose()
}

/// The HTTP API's options: users from `--auth`, HTTPS from `--http.tls.*` (watched for
/// changes), the allowed hosts.
fn api_options(
    config: &RunConfig,
) -> Result<(ApiOptions, Option<crate::https::HttpTls>), CoreError> {
    let auth = load_auth(config)?;
    let http_tls = match &config.http_tls {
        Some((cert, key)) => {
            let tls = crate::https::HttpTls::load(cert, key)?;
            tls.watch(TLS_WATCH);
            Some(tls)
        }
        None => None,
    };
    let options = ApiOptions {
        auth,
        https: http_tls.is_some(),
        allowed_hosts: config.allowed_hosts(),
        ..ApiOptions::default()
    };
    Ok((options, http_tls))
}

fn http_limits(config: &RunConfig) -> crate::server::HttpLimits {
    let mut limits = crate::server::HttpLimits::for_this_process();
    if let Some(n) = config.http_max_connections {
        limits.max_connections = n;
    }
    limits
}

/// Runs the service until a signal (Ok) or a fatal error (Err).
pub async fn run(config: RunConfig) -> Result<(), CoreError> {
    check_first_start(&config)?;
    let dir = config.dir();
    if let Some(removed) = crate::removal::removed_note(&dir) {
        // A clean exit: neither systemd nor the supervisor starts it again.
        init_logging(&config)?;
        tracing::warn!(service_id = %config.id, "this service {removed}; not starting");
        eprintln!(
            "sqlraft-core: service {} {removed}; not starting. Take it off this host with \
             `sqlraft-core uninstall --id {} --root {}`",
            config.id,
            config.id,
            config.root.display()
        );
        return Ok(());
    }
    // The flags' files are checked before anything is made on disk: a start refused
    // for them leaves no service directory behind (found by a review).
    let peer_tls = peer_tls(&config)?;
    let (api_options, http_tls) = api_options(&config)?;
    init_logging(&config)?;
    announce(&config, peer_tls.as_ref());
    let mut sigterm = watch_signal(SignalKind::terminate(), "SIGTERM")?;
    let mut sigint = watch_signal(SignalKind::interrupt(), "SIGINT")?;
    let mut sighup = watch_signal(SignalKind::hangup(), "SIGHUP")?;

    let http = TcpListener::bind(config.http)
        .await
        .map_err(|e| CoreError::Io(format!("cannot listen on --http {}: {e}", config.http)))?;
    let http_port = http
        .local_addr()
        .map_err(|e| CoreError::Io(format!("HTTP listener has no address: {e}")))?
        .port();

    let mut node_config = NodeConfig::new(config.id.clone(), dir.clone(), config.listen);
    node_config.advertise_addr = Some(config.advertise.clone());
    node_config.http_addr = Some(config.http_addr(http_port));
    node_config.join = config.join.clone();
    // Only services created in the registry (web interface, POST /api/v1/services) join.
    node_config.admission = sqlraft::Admission::Registered;
    node_config.limits.join_timeout_ms = config.join_timeout_ms;
    node_config.limits.max_restore_bytes = config.restore_max_bytes;
    node_config.snapshot = config.snapshot.clone();
    node_config.transport.tls = peer_tls.clone();
    tracing::info!(service_id = %config.id, dir = %dir.display(), raft_addr = %config.advertise,
        http = %config.http, join = ?config.join, "starting core service");

    let node = tokio::select! {
        started = Node::start(node_config) => started?,
        _ = sigterm.recv() => return Ok(()),
        _ = sigint.recv() => return Ok(()),
    };

    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let router = app::router(node.clone(), api_options.clone());
    let mut server = tokio::spawn(crate::server::serve(
        http,
        router,
        http_limits(&config),
        http_tls.clone(),
        async {
            let _ = http_stopped.await;
        },
    ));

    let mut poll = tokio::time::interval(Duration::from_millis(FAILURE_POLL_MS));
    let mut server_done = false;
    let stop = loop {
        tokio::select! {
            _ = sigterm.recv() => break Stop::Signal("SIGTERM"),
            _ = sigint.recv() => break Stop::Signal("SIGINT"),
            _ = sighup.recv() => {
                if let Some(tls) = &peer_tls {
                    tls.reload_and_log("SIGHUP");
                }
                if let Some(tls) = &http_tls {
                    tls.reload_and_log("SIGHUP");
                }
            }
            served = &mut server => {
                server_done = true;
                break Stop::Failed(match served {
                    Ok(()) => "HTTP server stopped".into(),
                    Err(e) => format!("HTTP server task failed: {e}"),
                });
            }
            _ = poll.tick() => {
                if node.is_removed() {
                    break Stop::Removed;
                }
                if let Some(failure) = node.failure() {
                    break Stop::Failed(format!("node failed: {failure}"));
                }
            }
        }
    };
    match &stop {
        Stop::Signal(name) => tracing::info!(signal = name, "shutting down"),
        Stop::Removed => tracing::warn!(
            service_id = %config.id,
            "this service was removed from the cluster; stopping"
        ),
        Stop::Failed(reason) => tracing::error!(%reason, "stopping"),
    }
    if matches!(stop, Stop::Signal(_)) {
        // A leader that is told to stop hands over first, so that a restart (an
        // upgrade, a reboot) costs no election timeout; the API serves meanwhile.
        match node.hand_over_leadership(HAND_OVER_WAIT).await {
            Ok(Some(to)) => tracing::info!(to, "leadership handed over"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "leadership not handed over; stopping anyway"),
        }
    }
    let _ = stop_http.send(());
    if !server_done {
        let _ = tokio::time::timeout(Duration::from_millis(HTTP_DRAIN_MS), server).await;
    }
    node.shutdown().await;
    tracing::info!("core service stopped");
    match stop {
        Stop::Signal(_) => Ok(()),
        Stop::Removed => {
            // Written after the node stopped, before the exit: the unit's stop step
            // disables a removed service, and it never starts again.
            crate::removal::mark_removed(&dir)?;
            eprintln!(
                "sqlraft-core: service {} was removed from the cluster; it stopped and its id \
                 can never join again. Take it off this host with `sqlraft-core uninstall --id {} \
                 --root {}` (add --purge to delete {})",
                config.id,
                config.id,
                config.root.display(),
                dir.display()
            );
            Ok(())
        }
        Stop::Failed(reason) => Err(CoreError::Failed(reason)),
    }
}
