//! Core services: the registry's entries with what is known of them live, creating
//! and removing them, and the command that installs a created one. The services API
//! (`services_api`) and the web interface ([`crate::web`]) both use these.
//!
//! A service is created in the registry first (it gets its id), then started on its
//! host with the install command; the cluster admits only created ids with the raft
//! address they were created with.

use std::net::Ipv4Addr;
use std::time::Duration;

use sqlraft::{Node, NodeError, Role, Service, ServiceState};
use sqlraft_inventory::{DEFAULT_HTTP_PORT, DEFAULT_RAFT_PORT, RaftAddr, parse_fqdn};

use crate::cluster_view::{LiveMember, live_members, role_name};

/// Why a service could not be created or removed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The host name or raft address is not acceptable; nothing was sent.
    #[error("{0}")]
    Invalid(String),
    /// The node refused or failed.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Where an installed service keeps its directory (the install command's `--root`)
/// when this node cannot tell its own.
pub const INSTALL_ROOT: &str = "/opt/sqlraft";

/// How a new service is installed, as this one is: the root it lives under and the
/// port its HTTP API listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallTarget {
    /// `--root`.
    pub root: String,
    /// The port of `--http 0.0.0.0:<port>`.
    pub http_port: u16,
    /// `--user`: the user this service runs as; `None`: root (no `--user`).
    pub user: Option<String>,
}

impl Default for InstallTarget {
    fn default() -> Self {
        InstallTarget {
            root: INSTALL_ROOT.to_string(),
            http_port: DEFAULT_HTTP_PORT,
            user: None,
        }
    }
}

/// This node's root (its directory is `<root>/core/<id>`), HTTP port and user, for the
/// install commands of new services: the cluster's, not the defaults (a cluster
/// installed under another root, port or user prints commands for it).
pub(crate) fn install_target(node: &Node) -> InstallTarget {
    let dir = &node.config().dir;
    let root = (dir.file_name().and_then(|n| n.to_str()) == Some(node.service_id())
        && dir.parent().and_then(|p| p.file_name()) == Some(std::ffi::OsStr::new("core")))
    .then(|| dir.parent().and_then(std::path::Path::parent))
    .flatten()
    .and_then(|p| p.to_str())
    .filter(|p| p.starts_with('/') && !p.contains(char::is_whitespace))
    .map(str::to_string);
    let status = node.status();
    let http_port = status
        .members
        .iter()
        .find(|m| m.raft_id == status.raft_id)
        .and_then(|m| m.http_addr.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok());
    let uid = nix::unistd::geteuid();
    let user = (!uid.is_root())
        .then(|| nix::unistd::User::from_uid(uid).ok().flatten())
        .flatten()
        .map(|u| u.name)
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
    let default = InstallTarget::default();
    InstallTarget {
        root: root.unwrap_or(default.root),
        http_port: http_port.unwrap_or(default.http_port),
        user,
    }
}

/// Checks a new service's host name and raft address: the host must be an FQDN
/// (`<host>.<domain>`, lower case) or an IPv4 address (local and test clusters), the
/// address `<that host>:<port 1-65535>`.
pub fn check_new_service(fqdn: &str, raft_addr: &str) -> Result<(), String> {
    let is_ip = fqdn.parse::<Ipv4Addr>().is_ok();
    if !is_ip {
        parse_fqdn(fqdn).map_err(|e| format!("fqdn: {e}"))?;
    }
    let host = if is_ip || raft_addr.parse::<std::net::SocketAddrV4>().is_ok() {
        let Some((host, port)) = raft_addr.rsplit_once(':') else {
            return Err(format!(
                "raft_addr: `{raft_addr}` has no port; write it as <fqdn>:<port>, e.g. {fqdn}:{DEFAULT_RAFT_PORT}"
            ));
        };
        match port.parse::<u16>() {
            Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => {
                return Err(format!(
                    "raft_addr: `{raft_addr}`: port {port:?} is not a number in 1-65535"
                ));
            }
        }
        host.to_string()
    } else {
        RaftAddr::parse(raft_addr)
            .map_err(|e| format!("raft_addr: {e}"))?
            .host()
            .to_string()
    };
    if host != fqdn {
        return Err(format!(
            "raft_addr: `{raft_addr}` names host `{host}`, not the service's fqdn `{fqdn}`; write it as {fqdn}:<port>"
        ));
    }
    Ok(())
}

/// The command to run on the new service's host: `sqlraft-core run ... --install`,
/// joining the cluster at `join` (a current member's raft address). The flags are the
/// ones of the install plan (`sqlraft-core inventory plan`), with the HTTP address
/// spelled out. With `tls` (the cluster runs mutual TLS) it names the service's
/// certificate files where `sqlraft-core certs issue --out /opt/sqlraft/tls` writes
/// them; without, it says `--raft.insecure` as the cluster does. With `auth` (the API
/// takes users) it names the users file, which every core service must be given.
pub fn install_command(
    id: &str,
    raft_addr: &str,
    join: &str,
    tls: bool,
    auth: bool,
    target: &InstallTarget,
) -> String {
    let port = raft_addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(DEFAULT_RAFT_PORT);
    let root = &target.root;
    let mut cmd =
        format!("{root}/bin/sqlraft-core run --id {id} --root {root} --raft.node.addr {raft_addr}");
    if port != DEFAULT_RAFT_PORT {
        cmd.push_str(&format!(" --raft.node.listen 0.0.0.0:{port}"));
    }
    cmd.push_str(&format!(
        " --raft.join {join} --http 0.0.0.0:{}",
        target.http_port
    ));
    if tls {
        let dir = format!("{root}/tls");
        cmd.push_str(&format!(
            " --raft.tls.ca {dir}/ca.crt --raft.tls.cert {dir}/{id}.crt --raft.tls.key {dir}/{id}.key"
        ));
    } else {
        cmd.push_str(" --raft.insecure");
    }
    if auth {
        cmd.push_str(&format!(" --auth {root}/auth.json"));
    }
    if let Some(user) = &target.user {
        cmd.push_str(&format!(" --user {user}"));
    }
    cmd.push_str(" --install");
    cmd
}

/// The cluster CA, when this node can issue certificates with it: its `ca.key` beside
/// the `--raft.tls.ca` file, readable (the installer keeps it so on the first core
/// service's host).
fn cluster_ca(node: &Node) -> Option<crate::certs::Ca> {
    let tls = node.config().transport.tls.as_ref()?;
    let dir = tls.files().ca.parent()?;
    crate::certs::Ca::read(dir).ok()
}

/// True when this node's raft transport runs mutual TLS.
pub(crate) fn runs_tls(node: &Node) -> bool {
    node.config().transport.tls.is_some()
}

/// The member address a new service is told to join: this node's own.
pub(crate) fn join_address(node: &Node) -> String {
    node.raft_addr().to_string()
}

/// A created service and the command that installs it.
#[derive(Debug, Clone)]
pub(crate) struct Created {
    pub(crate) service: Service,
    pub(crate) install_command: String,
    /// Its certificate and key for mutual TLS, when this node holds the cluster CA.
    pub(crate) certificate: Option<crate::certs::Issued>,
}

/// Validates and creates a service (on the leader, wherever it is).
pub(crate) async fn create(
    node: &Node,
    fqdn: &str,
    raft_addr: &str,
    auth: bool,
) -> Result<Created, ServiceError> {
    check_new_service(fqdn, raft_addr).map_err(ServiceError::Invalid)?;
    let service = node.create_service(fqdn, raft_addr).await?;
    let install_command = install_command(
        &service.id,
        &service.raft_addr,
        &join_address(node),
        runs_tls(node),
        auth,
        &install_target(node),
    );
    let certificate = match cluster_ca(node) {
        Some(ca) => match ca.issue(&service.id, &service.fqdn, crate::certs::SERVICE_DAYS) {
            Ok(issued) => Some(issued),
            Err(e) => {
                tracing::error!(id = %service.id, error = %e, "cannot issue the new service's certificate");
                None
            }
        },
        None => None,
    };
    tracing::info!(id = %service.id, fqdn, raft_addr, "core service created");
    Ok(Created {
        certificate,
        service,
        install_command,
    })
}

/// A service id as it is kept: UUID text in lower case, as `run --id` takes it (found
/// by a review: an id in upper case was not found). Anything else is left as it is,
/// to be reported unknown.
pub(crate) fn stored_id(id: &str) -> String {
    crate::cli::parse_service_id(id).unwrap_or_else(|_| id.to_string())
}

/// Removes a service; removing this very node succeeds once it learns of it.
pub(crate) async fn remove(node: &Node, id: &str) -> Result<Option<u64>, NodeError> {
    match node.remove_service(id).await {
        Ok(index) => {
            tracing::info!(id, index, "core service removed");
            Ok(Some(index))
        }
        Err(NodeError::Removed) if id == node.service_id() => Ok(None),
        Err(e) => Err(e),
    }
}

/// A registered service with what is known of it right now.
#[derive(Debug, Clone)]
pub(crate) struct ServiceView {
    pub(crate) service: Service,
    /// Live information when the service is a member this node knows.
    pub(crate) live: Option<LiveMember>,
    pub(crate) is_leader: bool,
    pub(crate) is_self: bool,
    /// Entries behind the leader (leader's applied index minus this one's).
    pub(crate) lag: Option<u64>,
}

/// The cluster as this node sees it.
#[derive(Debug, Clone)]
pub(crate) struct Overview {
    pub(crate) this_id: String,
    pub(crate) this_role: Role,
    pub(crate) leader_id: Option<String>,
    pub(crate) term: u64,
    pub(crate) commit_index: u64,
    pub(crate) voters: usize,
    pub(crate) learners: usize,
    pub(crate) services: Vec<ServiceView>,
    /// This node's newest snapshot, its log, and the snapshot transfers it runs.
    pub(crate) snapshot: Option<sqlraft::SnapshotInfo>,
    pub(crate) log_first_index: u64,
    pub(crate) log_bytes: u64,
    pub(crate) transfers: Vec<sqlraft::SnapshotTransfer>,
    /// The raft transport runs mutual TLS (install commands name certificates).
    pub(crate) raft_tls: bool,
    /// How new services are installed (root, HTTP port).
    pub(crate) install: InstallTarget,
}

/// Every registered service, oldest first, with live information.
pub(crate) async fn overview(node: &Node, probe_timeout: Duration) -> Result<Overview, NodeError> {
    let registry = node.services().await?;
    let (status, members) = live_members(node, probe_timeout).await;
    let leader = status.leader().map(|l| l.service_id.clone());
    let leader_applied = members
        .iter()
        .find(|m| Some(&m.service_id) == leader.as_ref())
        .and_then(|m| m.applied_index);
    let reference = leader_applied.unwrap_or(0).max(status.commit_index);
    let services = registry
        .into_iter()
        .map(|service| {
            let live = members
                .iter()
                .find(|m| m.service_id == service.id && service.state != ServiceState::Removed)
                .cloned();
            let lag = live
                .as_ref()
                .and_then(|m| m.applied_index)
                .map(|a| reference.saturating_sub(a));
            ServiceView {
                is_leader: leader.as_deref() == Some(service.id.as_str()),
                is_self: service.id == status.service_id,
                live,
                lag,
                service,
            }
        })
        .collect();
    Ok(Overview {
        this_id: status.service_id.clone(),
        this_role: status.role,
        leader_id: leader,
        term: status.term,
        commit_index: status.commit_index,
        voters: status.voters.len(),
        learners: status.learners.len(),
        services,
        snapshot: status.snapshot.clone(),
        log_first_index: status.first_index,
        log_bytes: status.log_bytes,
        transfers: node.snapshot_transfers(),
        raft_tls: runs_tls(node),
        install: install_target(node),
    })
}

/// `created_at_ms` as RFC 3339 UTC; `None` when unknown (0: the first service, or one
/// registered when it joined).
pub(crate) fn rfc3339(ms: i64) -> Option<String> {
    if ms <= 0 {
        return None;
    }
    let t = sqlraft::UtcTime::from_unix_ms(ms);
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    ))
}

/// The role name for display; `None` for a service that is not a member.
pub(crate) fn display_role(view: &ServiceView) -> Option<&str> {
    view.live.as_ref().map(|m| m.role.as_str())
}

/// The role of this node for display.
pub(crate) fn this_role_name(o: &Overview) -> &'static str {
    role_name(o.this_role)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_services_need_an_fqdn_and_a_matching_address() {
        assert!(check_new_service("core-2.example.com", "core-2.example.com:7209").is_ok());
        assert!(check_new_service("127.0.0.2", "127.0.0.2:7300").is_ok());
        for (fqdn, addr, says) in [
            ("core", "core:7209", "fqdn"),
            ("Core.example.com", "Core.example.com:7209", "fqdn"),
            ("core-2.example.com", "core-2.example.com", "no port"),
            ("core-2.example.com", "core-2.example.com:0", "out of range"),
            (
                "core-2.example.com",
                "core-2.example.com:70000",
                "out of range",
            ),
            (
                "core-2.example.com",
                "core-3.example.com:7209",
                "not the service's fqdn",
            ),
            ("127.0.0.2", "127.0.0.3:7209", "not the service's fqdn"),
            ("127.0.0.2", "127.0.0.2:0", "1-65535"),
            ("127.0.0.2", "127.0.0.2", "no port"),
            ("<b>x</b>.example.com", "<b>x</b>.example.com:1", "fqdn"),
            ("", ":7209", "fqdn"),
        ] {
            let e = check_new_service(fqdn, addr).expect_err(addr);
            assert!(e.contains(says), "{fqdn} {addr}: {e}");
        }
    }

    #[test]
    fn the_install_command_has_the_contract_flags() {
        assert_eq!(
            install_command(
                "abc",
                "core-2.example.com:7209",
                "core-1.example.com:7209",
                false,
                false,
                &InstallTarget::default(),
            ),
            "/opt/sqlraft/bin/sqlraft-core run --id abc --root /opt/sqlraft --raft.node.addr core-2.example.com:7209 --raft.join core-1.example.com:7209 --http 0.0.0.0:7220 --raft.insecure --install"
        );
        assert_eq!(
            install_command(
                "abc",
                "core-2.example.com:7300",
                "core-1.example.com:7209",
                true,
                true,
                &InstallTarget::default(),
            ),
            "/opt/sqlraft/bin/sqlraft-core run --id abc --root /opt/sqlraft --raft.node.addr core-2.example.com:7300 --raft.node.listen 0.0.0.0:7300 --raft.join core-1.example.com:7209 --http 0.0.0.0:7220 --raft.tls.ca /opt/sqlraft/tls/ca.crt --raft.tls.cert /opt/sqlraft/tls/abc.crt --raft.tls.key /opt/sqlraft/tls/abc.key --auth /opt/sqlraft/auth.json --install"
        );
        // A cluster installed elsewhere prints its own root, HTTP port and user.
        let elsewhere = InstallTarget {
            root: "/srv/sqlraft".into(),
            http_port: 8220,
            user: Some("sqlraft".into()),
        };
        assert_eq!(
            install_command(
                "abc",
                "core-2.example.com:7209",
                "core-1.example.com:7209",
                true,
                true,
                &elsewhere
            ),
            "/srv/sqlraft/bin/sqlraft-core run --id abc --root /srv/sqlraft --raft.node.addr core-2.example.com:7209 --raft.join core-1.example.com:7209 --http 0.0.0.0:8220 --raft.tls.ca /srv/sqlraft/tls/ca.crt --raft.tls.cert /srv/sqlraft/tls/abc.crt --raft.tls.key /srv/sqlraft/tls/abc.key --auth /srv/sqlraft/auth.json --user sqlraft --install"
        );
    }

    #[test]
    fn creation_times_are_rfc3339() {
        assert_eq!(rfc3339(0), None);
        assert_eq!(rfc3339(1_000).as_deref(), Some("1970-01-01T00:00:01Z"));
        assert_eq!(
            rfc3339(1_709_210_096_789).as_deref(),
            Some("2024-02-29T12:34:56Z")
        );
    }
}
