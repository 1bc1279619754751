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
use crate::logfile::{DEFAULT_KEEP_FILES, DEFAULT_MAX_BYTES, RotatingFile};

/// How often the node's health is checked.
const FAILURE_POLL_MS: u64 = 500;
/// How long open HTTP requests get to finish at shutdown.
const HTTP_DRAIN_MS: u64 = 5_000;

/// Creates `<root>/core/<id>/log` and sends the log to `log/core` (and to stderr when
/// it is a terminal). Call once per process.
pub fn init_logging(config: &RunConfig) -> Result<(), CoreError> {
    let log_dir = config.dir().join("log");
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| CoreError::Io(format!("cannot create {}: {e}", log_dir.display())))?;
    let path = log_dir.join("core");
    let file = RotatingFile::open(&path, DEFAULT_MAX_BYTES, DEFAULT_KEEP_FILES)
        .map_err(|e| CoreError::Io(format!("cannot open log file {}: {e}", path.display())))?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let installed = if std::io::stderr().is_terminal() {
        builder.with_writer(file.and(std::io::stderr)).try_init()
    } else {
        builder.with_writer(file).try_init()
    };
    // Already installed (a test harness): keep the existing subscriber.
    let _ = installed;
    Ok(())
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

/// Runs the service until a signal (Ok) or a fatal error (Err).
pub async fn run(config: RunConfig) -> Result<(), CoreError> {
    check_first_start(&config)?;
    let dir = config.dir();
    init_logging(&config)?;
    let mut sigterm = watch_signal(SignalKind::terminate(), "SIGTERM")?;
    let mut sigint = watch_signal(SignalKind::interrupt(), "SIGINT")?;

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
    tracing::info!(service_id = %config.id, dir = %dir.display(), raft_addr = %config.advertise,
        http = %config.http, join = ?config.join, "starting core service");

    let node = tokio::select! {
        started = Node::start(node_config) => started?,
        _ = sigterm.recv() => return Ok(()),
        _ = sigint.recv() => return Ok(()),
    };

    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let router = app::router(node.clone(), ApiOptions::default());
    let mut server = tokio::spawn(crate::server::serve(
        http,
        router,
        crate::server::HttpLimits::for_this_process(),
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
    let _ = stop_http.send(());
    if !server_done {
        let _ = tokio::time::timeout(Duration::from_millis(HTTP_DRAIN_MS), server).await;
    }
    node.shutdown().await;
    tracing::info!("core service stopped");
    match stop {
        Stop::Signal(_) => Ok(()),
        Stop::Removed => {
            eprintln!(
                "sqlraft-core: service {} was removed from the cluster; it stopped and its id can never join again. Remove its unit and delete {}",
                config.id,
                dir.display()
            );
            Ok(())
        }
        Stop::Failed(reason) => Err(CoreError::Failed(reason)),
    }
}
