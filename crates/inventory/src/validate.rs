//! The rules an inventory must follow before the installer may touch a host.

use std::collections::HashMap;

use crate::diagnostic::{Code, Sink};
use crate::model::{CORE_GROUP, Inventory, PEERS_GROUP, var};
use crate::vars::Var;
use crate::{RaftAddr, parse_fqdn};

/// Runs every rule and reports every finding; never stops early.
pub(crate) fn validate(inv: &Inventory, sink: &mut Sink) {
    if !inv.depths().1 {
        sink.error(
            Code::GroupCycle,
            None,
            None,
            "groups contain each other in a cycle".into(),
        );
    }
    core_group(inv, sink);
    core_count(inv, sink);
    duplicate_hosts(inv, sink);
    host_names(inv, sink);
    raft_addrs(inv, sink);
    variables(inv, sink);
    other_groups(inv, sink);
}

fn core_group(inv: &Inventory, sink: &mut Sink) {
    for name in [CORE_GROUP, PEERS_GROUP] {
        if let Some(g) = inv.group(name)
            && !g.children.is_empty()
        {
            sink.error(
                Code::Shape,
                g.line,
                None,
                format!("`{name}` has `children`; list its hosts under `hosts:` directly"),
            );
        }
    }
    let Some(group) = inv.group(CORE_GROUP) else {
        sink.error(
            Code::MissingCore,
            None,
            None,
            format!(
                "no `{CORE_GROUP}` group; add it with exactly one host for the first core service"
            ),
        );
        return;
    };
    let hosts = inv.host_names(CORE_GROUP);
    match hosts.len() {
        0 => sink.error(
            Code::CoreHostCount,
            group.line,
            None,
            format!(
                "`{CORE_GROUP}` has no host; list exactly one (it gets the first core service)"
            ),
        ),
        1 => {}
        n => {
            let second = inv
                .listed_in(CORE_GROUP)
                .find(|h| hosts.get(1) == Some(&h.name.as_str()))
                .map(|h| h.line);
            sink.error(
                Code::CoreHostCount,
                second.or(group.line),
                None,
                format!(
                    "`{CORE_GROUP}` has {n} hosts ({}); it must have exactly one: keep one and \
                     move the others to `{PEERS_GROUP}`, keeping the total odd",
                    hosts.join(", ")
                ),
            );
        }
    }
}

fn core_count(inv: &Inventory, sink: &mut Sink) {
    let Some(group) = inv.group(PEERS_GROUP) else {
        return;
    };
    let peers = inv.host_names(PEERS_GROUP).len();
    // The core group always contributes exactly one service (its own rule checks that).
    let total = 1 + peers;
    if total.is_multiple_of(2) {
        let (hosts, make) = if peers == 1 {
            ("host", "makes")
        } else {
            ("hosts", "make")
        };
        sink.error(
            Code::EvenCoreCount,
            group.line,
            None,
            format!(
                "{peers} {hosts} in `{PEERS_GROUP}` {make} {total} core services; add one peer \
                 or remove one so the total is odd"
            ),
        );
    }
}

fn duplicate_hosts(inv: &Inventory, sink: &mut Sink) {
    let mut first: HashMap<(&str, &str), usize> = HashMap::new();
    for h in &inv.hosts {
        if let Some(line) = first.get(&(h.group.as_str(), h.name.as_str())) {
            sink.error(
                Code::DuplicateHost,
                Some(h.line),
                Some(&h.name),
                format!(
                    "listed twice in `{}` (first at line {line}); remove one",
                    h.group
                ),
            );
        } else {
            first.insert((&h.group, &h.name), h.line);
        }
    }
    for peer in inv.listed_in(PEERS_GROUP) {
        if let Some(core) = inv.listed_in(CORE_GROUP).find(|c| c.name == peer.name) {
            sink.error(
                Code::HostInBothGroups,
                Some(peer.line),
                Some(&peer.name),
                format!(
                    "in both `{CORE_GROUP}` (line {}) and `{PEERS_GROUP}`; a host runs one core \
                     service: remove it from `{PEERS_GROUP}`",
                    core.line
                ),
            );
        }
    }
}

fn host_names(inv: &Inventory, sink: &mut Sink) {
    for group in [CORE_GROUP, PEERS_GROUP] {
        for h in inv.listed_in(group) {
            if let Err(e) = parse_fqdn(&h.name) {
                sink.error(Code::NotFqdn, Some(h.line), Some(&h.name), e.to_string());
            }
        }
    }
}

fn raft_addrs(inv: &Inventory, sink: &mut Sink) {
    for core in inv.host_names(CORE_GROUP) {
        if let Some(v) = inv.effective_vars(core).get(var::RAFT_NODE_ADDR) {
            raft_addr(v, core, CORE_GROUP, sink);
        }
    }
    // A group-wide address would give every peer the same one.
    if let Some(v) = inv
        .group(PEERS_GROUP)
        .and_then(|g| g.vars.get(var::RAFT_NODE_ADDR))
    {
        sink.error(
            Code::RaftAddr,
            Some(v.line),
            None,
            format!(
                "`{}` in the vars of `{PEERS_GROUP}` would give every peer the same address; \
                 set it per host",
                var::RAFT_NODE_ADDR
            ),
        );
    }
    // Peers take only their own listing's address; inherited ones belong to the core.
    for peer in inv.listed_in(PEERS_GROUP) {
        if let Some(v) = peer.vars.get(var::RAFT_NODE_ADDR) {
            raft_addr(v, &peer.name, PEERS_GROUP, sink);
        }
    }
}

fn raft_addr(v: &Var, host: &str, group: &str, sink: &mut Sink) {
    let name = var::RAFT_NODE_ADDR;
    let Some(text) = v.value.as_text() else {
        sink.error(
            Code::RaftAddr,
            Some(v.line),
            Some(host),
            format!("`{name}` must be <fqdn>:<port>"),
        );
        return;
    };
    match RaftAddr::parse(text) {
        Err(e) => sink.error(
            Code::RaftAddr,
            Some(v.line),
            Some(host),
            format!("`{name}` {e}"),
        ),
        Ok(addr) if addr.host() != host => sink.error(
            Code::RaftAddr,
            Some(v.line),
            Some(host),
            format!(
                "`{name}` `{addr}` names {}, not the `{group}` host {host}; use {host}:{}",
                addr.host(),
                addr.port()
            ),
        ),
        Ok(_) => {}
    }
}

/// Checks every definition of a variable with a fixed meaning, wherever it is set.
fn variables(inv: &Inventory, sink: &mut Sink) {
    for g in &inv.groups {
        for v in g.vars.iter() {
            variable(v, None, sink);
        }
    }
    for h in &inv.hosts {
        for v in h.vars.iter() {
            variable(v, Some(&h.name), sink);
        }
    }
}

fn variable(v: &Var, host: Option<&str>, sink: &mut Sink) {
    let shown = match &v.value {
        crate::Value::Text(t) => format!("`{t}`"),
        crate::Value::Null => "empty".to_string(),
        crate::Value::List(_) => "a list".to_string(),
        crate::Value::Map(_) => "a mapping".to_string(),
    };
    let name = v.name.as_str();
    let problem = match name {
        var::CONNECTION if !matches!(v.value.as_text(), Some("ssh" | "local")) => {
            Some(format!("`{name}` is {shown}; use ssh or local"))
        }
        _ if var::BOOLEANS.contains(&name) && v.value.as_bool().is_none() => Some(format!(
            "`{name}` is {shown}; use true or false (yes/no, on/off, 1/0 also work)"
        )),
        var::USER | var::HOST | var::IP if v.value.as_text().is_none_or(str::is_empty) => Some(
            format!("`{name}` is {shown}; it must be a single non-empty value"),
        ),
        var::ROOT
            if !v.value.as_text().is_some_and(|t| {
                t.starts_with('/') && !t.contains(char::is_whitespace) && !t.contains("..")
            }) =>
        {
            Some(format!(
                "`{name}` is {shown}; use an absolute path without spaces, such as /opt/sqlraft"
            ))
        }
        var::HTTP_LISTEN | var::RAFT_LISTEN
            if !v.value.as_text().is_some_and(|t| {
                t.parse::<std::net::SocketAddr>()
                    .is_ok_and(|a| a.port() != 0)
            }) =>
        {
            Some(format!(
                "`{name}` is {shown}; use an IP address and a port, such as 0.0.0.0:7220"
            ))
        }
        var::SERVICE_USER
            if !v.value.as_text().is_some_and(|t| {
                !t.is_empty()
                    && t.len() <= 32
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            }) =>
        {
            Some(format!(
                "`{name}` is {shown}; use a user name of letters, digits, `_`, `-` or `.`"
            ))
        }
        _ => None,
    };
    if let Some(message) = problem {
        sink.error(Code::BadVariable, Some(v.line), host, message);
    }
}

fn other_groups(inv: &Inventory, sink: &mut Sink) {
    for g in inv.other_groups() {
        let n = inv.hosts_under(&g.name).len();
        sink.info(
            Code::OtherGroup,
            g.line,
            format!(
                "group `{}` ({n} host{}) is kept as is; the core install does not act on it",
                g.name,
                if n == 1 { "" } else { "s" }
            ),
        );
    }
}
