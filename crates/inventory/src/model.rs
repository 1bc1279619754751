//! The inventory model: groups, host listings and the settings they resolve to.

use std::collections::{BTreeSet, HashMap};

use crate::Vars;

/// The implicit group every group and host belongs to.
pub const ALL_GROUP: &str = "all";
/// The group holding the one host that gets the first core service.
pub const CORE_GROUP: &str = "kuma_core";
/// The group holding the hosts prepared for further core services.
pub const PEERS_GROUP: &str = "kuma_core_peers";

/// The whole inventory as written, including groups this crate does not act on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// The file name used in diagnostics.
    pub file: String,
    /// Every group once, in order of first appearance; `all` is always first.
    pub groups: Vec<Group>,
    /// Every host listing in file order; a host listed in two groups appears twice.
    pub hosts: Vec<HostEntry>,
}

/// A group. A name written in several places is one group (as in Ansible).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    /// The group name.
    pub name: String,
    /// The 1-based line of its first appearance; `None` for an implicit `all`.
    pub line: Option<usize>,
    /// Groups it is a child of (`all` for top-level groups; empty for `all`).
    pub parents: Vec<String>,
    /// Its child groups, in file order.
    pub children: Vec<String>,
    /// Its own variables (`vars:`), all appearances merged in file order.
    pub vars: Vars,
}

/// One listing of a host under a group's `hosts:`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostEntry {
    /// The host name as written.
    pub name: String,
    /// The 1-based line of the listing.
    pub line: usize,
    /// The group it is listed in.
    pub group: String,
    /// Variables set on this listing.
    pub vars: Vars,
}

/// How Ansible reaches a host (`ansible_connection`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Connection {
    /// Over SSH (the default).
    #[default]
    Ssh,
    /// On the machine running the installer.
    Local,
}

/// The settings of one host after variable precedence
/// (host > nested group > parent group > `all.vars`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// `ansible_connection`.
    pub connection: Connection,
    /// `ansible_user`.
    pub user: Option<String>,
    /// `ansible_host`, else `ip`: where to connect if not the name itself.
    pub address: Option<String>,
    /// `ansible_become`.
    pub become_root: bool,
    /// `no_firewall_actions`: leave the firewall alone.
    pub no_firewall_actions: bool,
    /// `generate_etc_hosts`: write the inventory hosts into `/etc/hosts`.
    pub generate_etc_hosts: bool,
    /// `sqlraft_root`: where the service lives; `None`: `/opt/sqlraft`.
    pub root: Option<String>,
    /// `sqlraft_http_listen`: the HTTP address (`ip:port`); `None`: `0.0.0.0:7220`.
    pub http_listen: Option<String>,
    /// `sqlraft_raft_listen`: the raft listen address (`ip:port`); `None`:
    /// `0.0.0.0:<port of the raft address>`.
    pub raft_listen: Option<String>,
    /// `sqlraft_user`: the service's user; `None`: `sqlraft`.
    pub service_user: Option<String>,
}

/// Variable names with a fixed meaning to the installer.
pub(crate) mod var {
    pub const CONNECTION: &str = "ansible_connection";
    pub const USER: &str = "ansible_user";
    pub const HOST: &str = "ansible_host";
    pub const IP: &str = "ip";
    pub const BECOME: &str = "ansible_become";
    pub const NO_FIREWALL: &str = "no_firewall_actions";
    pub const ETC_HOSTS: &str = "generate_etc_hosts";
    pub const RAFT_NODE_ADDR: &str = "raft_node_addr";
    pub const ROOT: &str = "sqlraft_root";
    pub const HTTP_LISTEN: &str = "sqlraft_http_listen";
    pub const RAFT_LISTEN: &str = "sqlraft_raft_listen";
    pub const SERVICE_USER: &str = "sqlraft_user";
    pub const BOOLEANS: [&str; 3] = [BECOME, NO_FIREWALL, ETC_HOSTS];
}

impl HostSettings {
    /// Reads settings from resolved variables; an unreadable value keeps the default
    /// (validation reports it, so a valid inventory never takes that path).
    pub fn from_vars(vars: &Vars) -> Self {
        let flag = |name| {
            vars.get(name)
                .and_then(|v| v.value.as_bool())
                .unwrap_or(false)
        };
        let text = |name| vars.text(name).map(str::to_string);
        Self {
            connection: match vars.text(var::CONNECTION) {
                Some("local") => Connection::Local,
                _ => Connection::Ssh,
            },
            user: text(var::USER),
            address: text(var::HOST).or_else(|| text(var::IP)),
            become_root: flag(var::BECOME),
            no_firewall_actions: flag(var::NO_FIREWALL),
            generate_etc_hosts: flag(var::ETC_HOSTS),
            root: text(var::ROOT),
            http_listen: text(var::HTTP_LISTEN),
            raft_listen: text(var::RAFT_LISTEN),
            service_user: text(var::SERVICE_USER),
        }
    }
}

impl Inventory {
    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The listings under `group`'s own `hosts:` (not its children's), in file order.
    pub fn listed_in<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a HostEntry> + 'a {
        self.hosts.iter().filter(move |h| h.group == group)
    }

    /// Distinct host names under `group`'s own `hosts:`, in file order.
    pub fn host_names(&self, group: &str) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.hosts
            .iter()
            .filter(|h| h.group == group)
            .map(|h| h.name.as_str())
            .filter(|n| seen.insert(*n))
            .collect()
    }

    /// Distinct host names in `group` and the groups nested in it, in file order.
    pub fn hosts_under(&self, group: &str) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.hosts
            .iter()
            .filter(|h| h.group == group || self.ancestors(&h.group).contains(group))
            .map(|h| h.name.as_str())
            .filter(|n| seen.insert(*n))
            .collect()
    }

    /// Whether sqlraft acts on `group`: `all`, the core groups and the groups holding them.
    pub fn is_known_group(&self, group: &str) -> bool {
        [ALL_GROUP, CORE_GROUP, PEERS_GROUP].contains(&group)
            || [CORE_GROUP, PEERS_GROUP]
                .iter()
                .any(|g| self.ancestors(g).contains(group))
    }

    /// Groups sqlraft keeps but does not act on (`kuma_collector`, `kuma_storage`, ...).
    pub fn other_groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.iter().filter(|g| !self.is_known_group(&g.name))
    }

    /// Every group `group` is nested in, directly or not (`all` included).
    pub fn ancestors(&self, group: &str) -> BTreeSet<&str> {
        let mut found = BTreeSet::new();
        let mut todo = vec![group];
        while let Some(g) = todo.pop() {
            for p in self
                .group(g)
                .map(|g| g.parents.as_slice())
                .unwrap_or_default()
            {
                if found.insert(p.as_str()) {
                    todo.push(p);
                }
            }
        }
        found
    }

    /// Depth of each group below `all` (longest path), and whether it is well defined
    /// (false when groups contain each other in a cycle).
    pub(crate) fn depths(&self) -> (HashMap<&str, usize>, bool) {
        // Acyclic longest paths are shorter than the group count; a cycle climbs to the cap.
        let cap = self.groups.len();
        let mut depth: HashMap<&str, usize> =
            self.groups.iter().map(|g| (g.name.as_str(), 0)).collect();
        for _ in 0..=cap {
            let mut changed = false;
            for g in &self.groups {
                let d = g
                    .parents
                    .iter()
                    .map(|p| depth.get(p.as_str()).copied().unwrap_or(0) + 1)
                    .max()
                    .unwrap_or(0)
                    .min(cap);
                if depth.get(g.name.as_str()) != Some(&d) {
                    depth.insert(&g.name, d);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let acyclic = depth.values().all(|d| *d < cap);
        (depth, acyclic)
    }

    /// The variables that apply to `host`, lowest precedence first: `all.vars`, then the
    /// groups it is in and their ancestors by depth (ties by name, as Ansible does), then
    /// the host's own variables from every listing in file order.
    pub fn effective_vars(&self, host: &str) -> Vars {
        let mut groups: BTreeSet<&str> = BTreeSet::new();
        for entry in self.hosts.iter().filter(|h| h.name == host) {
            groups.insert(&entry.group);
            groups.extend(self.ancestors(&entry.group));
        }
        groups.insert(ALL_GROUP);
        let (depth, _) = self.depths();
        let mut ordered: Vec<&str> = groups.into_iter().collect();
        ordered.sort_by_key(|g| (depth.get(g).copied().unwrap_or(0), *g));
        let mut vars = Vars::default();
        for g in ordered {
            if let Some(group) = self.group(g) {
                vars.extend_from(&group.vars);
            }
        }
        for entry in self.hosts.iter().filter(|h| h.name == host) {
            vars.extend_from(&entry.vars);
        }
        vars
    }

    /// The connection and installer settings of `host`.
    pub fn settings(&self, host: &str) -> HostSettings {
        HostSettings::from_vars(&self.effective_vars(host))
    }
}
