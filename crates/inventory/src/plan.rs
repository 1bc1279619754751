//! The install plan: what `install.sh` / `expand.sh` do on each host, and what is left
//! to the operator.
//!
//! The installer never creates more than one core service: peers are only prepared, and
//! each further service is created in the web interface and installed by hand, one at a
//! time, so the cluster grows through joins it can check.

use std::fmt;

use crate::addr::{DEFAULT_HTTP_PORT, DEFAULT_RAFT_PORT};
use crate::{Connection, HostSettings, Member, RaftAddr, ValidInventory};

/// The id of the first core service, installed by `install.sh`.
pub const FIRST_SERVICE_ID: &str = "00000000-0000-0000-0000-000000000000";
/// The display name of the first core service.
pub const FIRST_SERVICE_NAME: &str = "core-1";
/// Where installed services keep their directories.
pub const DEFAULT_ROOT: &str = "/opt/sqlraft";

/// Which installer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `install.sh` with `distributed.inventory.yml`: a new installation.
    Distributed,
    /// `expand.sh` with `expand.inventory.yml`: new peers for a running cluster.
    Expand,
}

/// What the installer does on one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostAction {
    /// Install and start the first core service (distributed mode, `kuma_core` host).
    InstallFirstService {
        /// Always [`FIRST_SERVICE_ID`].
        id: String,
        /// Always [`FIRST_SERVICE_NAME`].
        name: String,
        /// Its Raft address.
        raft_addr: RaftAddr,
        /// The command the installer runs on the host.
        command: String,
    },
    /// Nothing: the running core service is left alone (expand mode, `kuma_core` host).
    LeaveRunning {
        /// The address the new peers will join.
        raft_addr: RaftAddr,
    },
    /// Prepare the host for a core service but install none.
    Prepare,
}

/// One host's step, in the order the installer takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostStep {
    /// The host's FQDN.
    pub host: String,
    /// How the installer reaches it and what it may change there.
    pub settings: HostSettings,
    /// What happens.
    pub action: HostAction,
}

/// One step left to the operator after the installer finishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperatorStep {
    /// Create these core services in the web interface (each gets its id there).
    CreateServices {
        /// The web interface of the first core service.
        web_url: String,
        /// The services to create: host and Raft address.
        services: Vec<(String, RaftAddr)>,
    },
    /// Install one created service on its host; wait until it has joined before the next.
    InstallPeer {
        /// The host.
        host: String,
        /// Its Raft address.
        raft_addr: RaftAddr,
        /// The command, with `<id of core-HOST>` standing for the id the web interface gave.
        command: String,
    },
}

/// The whole plan for one valid inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallPlan {
    /// Install or expand.
    pub mode: Mode,
    /// The inventory file.
    pub file: String,
    /// How many core services the cluster has when every step is done (odd).
    pub core_services: usize,
    /// The installer's steps: the `kuma_core` host first, then the peers in file order.
    pub host_steps: Vec<HostStep>,
    /// What the operator does afterwards; empty when there are no peers.
    pub operator_steps: Vec<OperatorStep>,
}

impl InstallPlan {
    /// Computes the plan. Infallible: a [`ValidInventory`] already passed every rule.
    pub fn new(inv: &ValidInventory, mode: Mode) -> Self {
        let core = inv.core();
        let action = match mode {
            Mode::Distributed => HostAction::InstallFirstService {
                id: FIRST_SERVICE_ID.to_string(),
                name: FIRST_SERVICE_NAME.to_string(),
                raft_addr: core.raft_addr.clone(),
                command: run_command(FIRST_SERVICE_ID, &core.raft_addr, None, &core.settings),
            },
            Mode::Expand => HostAction::LeaveRunning {
                raft_addr: core.raft_addr.clone(),
            },
        };
        let mut host_steps = vec![step(core, action)];
        host_steps.extend(inv.peers().iter().map(|p| step(p, HostAction::Prepare)));

        let mut operator_steps = Vec::new();
        if !inv.peers().is_empty() {
            operator_steps.push(OperatorStep::CreateServices {
                web_url: format!("http://{}:{}/", core.host, http_port(&core.settings)),
                services: inv
                    .peers()
                    .iter()
                    .map(|p| (p.host.clone(), p.raft_addr.clone()))
                    .collect(),
            });
            operator_steps.extend(inv.peers().iter().map(|p| OperatorStep::InstallPeer {
                host: p.host.clone(),
                raft_addr: p.raft_addr.clone(),
                command: run_command(
                    &format!("<id of core-{}>", p.host),
                    &p.raft_addr,
                    Some(&core.raft_addr),
                    &p.settings,
                ),
            }));
        }
        Self {
            mode,
            file: inv.inventory().file.clone(),
            core_services: inv.core_services(),
            host_steps,
            operator_steps,
        }
    }
}

fn step(member: &Member, action: HostAction) -> HostStep {
    HostStep {
        host: member.host.clone(),
        settings: member.settings.clone(),
        action,
    }
}

/// The HTTP port a host's service listens on (`sqlraft_http_listen`, else 7220).
fn http_port(settings: &HostSettings) -> u16 {
    settings
        .http_listen
        .as_deref()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map_or(DEFAULT_HTTP_PORT, |a| a.port())
}

/// The `sqlraft-core run ... --install` command for one service (see DESIGN.md), with
/// the host's settings (`sqlraft_root`, `sqlraft_http_listen`, `sqlraft_raft_listen`,
/// `sqlraft_user`).
fn run_command(
    id: &str,
    addr: &RaftAddr,
    join: Option<&RaftAddr>,
    settings: &HostSettings,
) -> String {
    let root = settings.root.as_deref().unwrap_or(DEFAULT_ROOT);
    let mut cmd = format!("sqlraft-core run --id {id} --root {root} --raft.node.addr {addr}");
    if let Some(listen) = &settings.raft_listen {
        cmd.push_str(&format!(" --raft.node.listen {listen}"));
    } else if addr.port() != DEFAULT_RAFT_PORT {
        cmd.push_str(&format!(" --raft.node.listen 0.0.0.0:{}", addr.port()));
    }
    if let Some(join) = join {
        cmd.push_str(&format!(" --raft.join {join}"));
    }
    if let Some(http) = &settings.http_listen {
        cmd.push_str(&format!(" --http {http}"));
    }
    // Mutual TLS and users, as the installer sets them up (docs/SECURITY.md).
    cmd.push_str(&format!(
        " --raft.tls.ca {root}/tls/ca.crt --raft.tls.cert {root}/tls/{id}.crt \
         --raft.tls.key {root}/tls/{id}.key --auth {root}/auth.json"
    ));
    if let Some(user) = &settings.service_user {
        cmd.push_str(&format!(" --user {user}"));
    }
    cmd.push_str(" --install");
    cmd
}

impl fmt::Display for HostSettings {
    /// E.g. `ssh as admin, become, via 10.0.0.5, firewall left alone, /etc/hosts generated`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.connection {
            Connection::Local => f.write_str("local connection")?,
            Connection::Ssh => f.write_str("ssh")?,
        }
        if let Some(user) = &self.user {
            write!(f, " as {user}")?;
        }
        if self.become_root {
            f.write_str(", become")?;
        }
        if let Some(addr) = &self.address {
            write!(f, ", via {addr}")?;
        }
        if self.no_firewall_actions {
            f.write_str(", firewall left alone")?;
        }
        if self.generate_etc_hosts {
            f.write_str(", /etc/hosts generated")?;
        }
        if let Some(root) = &self.root {
            write!(f, ", root {root}")?;
        }
        if let Some(http) = &self.http_listen {
            write!(f, ", HTTP on {http}")?;
        }
        if let Some(raft) = &self.raft_listen {
            write!(f, ", raft on {raft}")?;
        }
        if let Some(user) = &self.service_user {
            write!(f, ", user {user}")?;
        }
        Ok(())
    }
}

/// The plan as text for the operator.
impl fmt::Display for InstallPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, script) = match self.mode {
            Mode::Distributed => ("distributed installation", "install.sh"),
            Mode::Expand => ("expansion of a running cluster", "expand.sh"),
        };
        writeln!(f, "Plan for {} ({what}, {script})", self.file)?;
        writeln!(f, "Core services when done: {}", self.core_services)?;
        writeln!(f)?;
        writeln!(f, "{script} does, host by host:")?;
        let mut n = 0;
        for s in &self.host_steps {
            n += 1;
            write!(f, "  {n}. {} ({}): ", s.host, s.settings)?;
            match &s.action {
                HostAction::InstallFirstService {
                    id,
                    name,
                    raft_addr,
                    command,
                } => {
                    writeln!(f, "install the first core service")?;
                    writeln!(f, "       id {id}, name {name}, raft address {raft_addr}")?;
                    writeln!(f, "       {command}")?;
                }
                HostAction::LeaveRunning { raft_addr } => writeln!(
                    f,
                    "left alone: the running cluster (raft address {raft_addr}) is not touched"
                )?,
                HostAction::Prepare => writeln!(
                    f,
                    "prepared only (the cluster CA's certificate and the users file copied from the kuma_core host); no core service is installed"
                )?,
            }
        }
        if self.operator_steps.is_empty() {
            writeln!(f)?;
            return writeln!(
                f,
                "Nothing is left to do by hand: one core service, no peers."
            );
        }
        writeln!(f)?;
        writeln!(f, "Then, by hand:")?;
        for s in &self.operator_steps {
            n += 1;
            match s {
                OperatorStep::CreateServices { web_url, services } => {
                    writeln!(
                        f,
                        "  {n}. In the web interface ({web_url}), create {} core service{}, one per peer:",
                        services.len(),
                        if services.len() == 1 { "" } else { "s" }
                    )?;
                    for (host, addr) in services {
                        writeln!(f, "       core-{host}: fqdn {host}, raft address {addr}")?;
                    }
                }
                OperatorStep::InstallPeer { host, command, .. } => {
                    writeln!(
                        f,
                        "  {n}. On {host}, put its certificate in place and install its core service with the commands the web interface printed:"
                    )?;
                    writeln!(f, "       {command}")?;
                    writeln!(
                        f,
                        "     and wait until it has joined the cluster before the next one."
                    )?;
                }
            }
        }
        Ok(())
    }
}
