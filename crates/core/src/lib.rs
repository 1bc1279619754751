//! The sqlraft core service: the `sqlraft-core` binary's parts.
//!
//! - [`api`]: the HTTP API, rqlite's data API (`/db/execute`, `/db/query`,
//!   `/db/request`) plus `/status`, `/nodes`, `/readyz` and `/metrics`, over a running
//!   [`sqlraft::Node`]. `docs/API.md` describes it.
//! - [`cli`]: the flags of `run`, `demo` and `inventory` and their validation.
//! - [`results`]: the data API's `results`, serialized straight from the rows.
//! - [`run`]: one service with its directory `<root>/core/<id>/` and its rotated log.
//! - [`demo`]: a local cluster of child processes.
//! - [`install`]: `run ... --install`: a systemd unit, or a supervised background process.
//! - [`services`]: core services over REST (create, list, remove) and backup.
//! - [`web`]: the web interface at `/`.
//! - [`client`]: a minimal HTTP client for probing other services.
//!
//! Serve the API of a node in process:
//!
//! ```no_run
//! # async fn demo(node: sqlraft::Node) -> std::io::Result<()> {
//! let router = sqlraft_core::api::router(node, sqlraft_core::api::ApiOptions::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7220").await?;
//! axum::serve(listener, router).await
//! # }
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod cli;
pub mod client;
pub mod demo;
pub mod error;
pub mod install;
pub mod inventory;
pub mod logfile;
pub mod results;
pub mod run;
pub mod services;
pub mod statements;
pub mod web;

pub use error::CoreError;
