//! The sqlraft core service: the `sqlraft-core` binary's parts.
//!
//! HTTP, over a running [`sqlraft::Node`] (`docs/API.md` describes every endpoint):
//! - [`app`]: builds the router, with the checks every route shares;
//! - `data_api`: rqlite's data API (`/db/execute`, `/db/query`, `/db/request`,
//!   `/db/hash`); `cluster_api`: `/status`, `/nodes`, `/readyz`; `metrics`;
//!   `services_api`: core services over REST; `system_api`: backup, restore and
//!   snapshots; [`web`]: the web interface;
//! - `http_error`: the one mapping from a node error to an HTTP status;
//! - `cluster_view`, [`services`]: the cluster and its services as this node sees
//!   them, without HTTP.
//!
//! The binary's commands:
//! - [`cli`]: the flags of `run`, `demo` and `inventory` and their validation;
//! - [`certs`]: the cluster CA and the services' certificates (`certs init|issue`);
//! - [`run`]: one service with its directory `<root>/core/<id>/` and its rotated log;
//! - [`demo`]: a local cluster of child processes;
//! - [`mod@bench`]: named workloads against a local cluster or given nodes, with a table,
//!   results files and plots;
//! - [`install`]: `run ... --install` as a systemd unit; [`supervisor`]: the same as a
//!   supervised background process where systemd is not running;
//! - [`client`]: a small HTTP client for probing other services.
//!
//! Serve the API of a node in process:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let config = sqlraft::NodeConfig::new("node-1", dir.path(), "127.0.0.1:0".parse()?);
//! let node = sqlraft::Node::start(config).await?;
//! let router = sqlraft_core::app::router(node.clone(), sqlraft_core::app::ApiOptions::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let limits = sqlraft_core::server::HttpLimits::default();
//! let server = tokio::spawn(sqlraft_core::server::serve(listener, router, limits, None, std::future::pending()));
//! // ... requests to /db/execute, /db/query ...
//! server.abort();
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod access;
pub mod app;
pub mod auth;
pub mod bench;
pub mod certs;
pub mod cli;
pub mod client;
mod cluster_api;
mod cluster_view;
mod console;
mod data_api;
pub mod demo;
mod duration;
pub mod error;
mod http_error;
pub mod https;
pub mod install;
pub mod inventory;
pub mod logfile;
mod metrics;
pub mod probe;
mod queue;
pub mod removal;
pub mod results;
mod routes;
pub mod run;
pub mod server;
pub mod services;
mod services_api;
mod sessions;
mod state;
pub mod statements;
pub mod supervisor;
mod system_api;
pub mod uninstall;
pub mod upgrade;
mod value_form;
pub mod web;

pub use error::CoreError;
