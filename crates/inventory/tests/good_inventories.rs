//! Inventories that pass: the model they produce and the plan computed from them.

mod common;

use common::{fixture, infos};
use sqlraft_inventory::{
    Code, Connection, FIRST_SERVICE_ID, HostAction, InstallPlan, Mode, OperatorStep, Severity,
    ValidInventory,
};

fn valid(name: &str) -> ValidInventory {
    let checked = fixture(name);
    assert!(checked.is_valid(), "{name}:\n{}", checked.diagnostics);
    checked.valid().expect("valid")
}

#[test]
fn single_host_with_local_connection_in_all_vars() {
    let inv = valid("good_single_core.yml");
    assert_eq!(inv.core().host, "kuma.example.com");
    assert_eq!(inv.core().raft_addr.to_string(), "kuma.example.com:7209");
    assert!(inv.peers().is_empty());
    assert_eq!(inv.core_services(), 1);
    let s = &inv.core().settings;
    assert_eq!(s.connection, Connection::Local);
    assert_eq!(s.user.as_deref(), Some("root"));
    assert!(!s.generate_etc_hosts && !s.no_firewall_actions && !s.become_root);
    let plan = InstallPlan::new(&inv, Mode::Distributed);
    assert_eq!(plan.host_steps.len(), 1);
    assert!(plan.operator_steps.is_empty());
    assert!(plan.to_string().contains("Nothing is left to do by hand"));
}

#[test]
fn other_groups_are_kept_and_reported_as_information() {
    let checked = fixture("good_distributed.yml");
    assert!(checked.is_valid());
    assert_eq!(
        infos(&checked),
        vec![
            ("group `kuma_collector` (2 hosts) is kept as is; the core install does not act on it".to_string(), Some(25)),
            ("group `kuma_correlator` (1 host) is kept as is; the core install does not act on it".to_string(), Some(31)),
            ("group `kuma_storage` (3 hosts) is kept as is; the core install does not act on it".to_string(), Some(34)),
        ]
    );
    assert!(
        checked
            .diagnostics
            .all()
            .iter()
            .all(|d| d.code == Code::OtherGroup && d.severity == Severity::Info)
    );
    let model = &checked.inventory;
    let storage = model.group("kuma_storage").expect("kept");
    assert_eq!(storage.parents, ["kuma"]);
    assert_eq!(model.host_names("kuma_storage").len(), 3);
    let replica = model
        .listed_in("kuma_storage")
        .nth(1)
        .and_then(|h| h.vars.text("replica"));
    assert_eq!(replica, Some("2"));
    assert_eq!(model.group("kuma").map(|g| g.children.len()), Some(5));
    assert!(
        model.is_known_group("kuma"),
        "a block holding kuma_core is not 'other'"
    );
    assert_eq!(
        model
            .settings("kuma-collector-1.siem.example.com")
            .address
            .as_deref(),
        Some("10.0.0.21"),
        "ip is the address when ansible_host is absent"
    );
}

#[test]
fn distributed_plan_installs_core_1_and_prepares_peers_in_file_order() {
    let inv = valid("good_distributed.yml");
    let plan = InstallPlan::new(&inv, Mode::Distributed);
    assert_eq!(plan.core_services, 3);
    let hosts: Vec<_> = plan.host_steps.iter().map(|s| s.host.as_str()).collect();
    assert_eq!(
        hosts,
        [
            "kuma-core-1.siem.example.com",
            "kuma-core-2.siem.example.com",
            "kuma-core-3.siem.example.com"
        ]
    );
    match &plan.host_steps[0].action {
        HostAction::InstallFirstService {
            id,
            name,
            raft_addr,
            command,
        } => {
            assert_eq!(id, FIRST_SERVICE_ID);
            assert_eq!(name, "core-1");
            assert_eq!(raft_addr.to_string(), "kuma-core-1.siem.example.com:7209");
            assert_eq!(
                command,
                "sqlraft-core run --id 00000000-0000-0000-0000-000000000000 --root /opt/sqlraft \
                 --raft.node.addr kuma-core-1.siem.example.com:7209 \
                 --raft.tls.ca /opt/sqlraft/tls/ca.crt \
                 --raft.tls.cert /opt/sqlraft/tls/00000000-0000-0000-0000-000000000000.crt \
                 --raft.tls.key /opt/sqlraft/tls/00000000-0000-0000-0000-000000000000.key \
                 --auth /opt/sqlraft/auth.json --install"
            );
        }
        other => panic!("first step: {other:?}"),
    }
    assert!(
        plan.host_steps[1..]
            .iter()
            .all(|s| s.action == HostAction::Prepare)
    );
    assert_eq!(
        plan.host_steps[1].settings.address.as_deref(),
        Some("10.0.0.12")
    );
    assert_eq!(
        plan.operator_steps.len(),
        3,
        "create, then install each peer"
    );
    let OperatorStep::CreateServices { web_url, services } = &plan.operator_steps[0] else {
        panic!("creation comes first")
    };
    assert_eq!(web_url, "http://kuma-core-1.siem.example.com:7220/");
    assert_eq!(services.len(), 2);
    let OperatorStep::InstallPeer { command, .. } = &plan.operator_steps[2] else {
        panic!()
    };
    assert_eq!(
        command,
        "sqlraft-core run --id <id of core-kuma-core-3.siem.example.com> --root /opt/sqlraft \
         --raft.node.addr kuma-core-3.siem.example.com:7209 \
         --raft.join kuma-core-1.siem.example.com:7209 \
         --raft.tls.ca /opt/sqlraft/tls/ca.crt \
         --raft.tls.cert /opt/sqlraft/tls/<id of core-kuma-core-3.siem.example.com>.crt \
         --raft.tls.key /opt/sqlraft/tls/<id of core-kuma-core-3.siem.example.com>.key \
         --auth /opt/sqlraft/auth.json --install"
    );
    let text = plan.to_string();
    assert!(
        text.contains("Plan for good_distributed.yml (distributed installation, install.sh)"),
        "{text}"
    );
    assert!(
        text.contains(
            "  2. kuma-core-2.siem.example.com (ssh as root, via 10.0.0.12): prepared only (the cluster CA's certificate and the users file copied from the kuma_core host)"
        ),
        "{text}"
    );
    assert!(
        text.contains("create 2 core services, one per peer"),
        "{text}"
    );
}

#[test]
fn groups_under_another_top_level_block() {
    let inv = valid("good_other_block.yml");
    assert_eq!(inv.core().host, "core.corp.example");
    let peers: Vec<_> = inv.peers().iter().map(|p| p.host.as_str()).collect();
    assert_eq!(peers, ["peer-a.corp.example", "peer-b.corp.example"]);
    assert_eq!(
        inv.inventory().group("kuma").map(|g| g.parents.clone()),
        Some(vec!["all".to_string()])
    );
    // all.vars reach groups of the other block; group vars and host vars override them.
    let core = &inv.core().settings;
    assert_eq!(core.user.as_deref(), Some("kuma-admin"));
    assert!(core.become_root && core.generate_etc_hosts && !core.no_firewall_actions);
    assert_eq!(inv.peers()[0].settings.user.as_deref(), Some("kuma-peer"));
    assert_eq!(inv.peers()[1].settings.user.as_deref(), Some("special"));
}

#[test]
fn precedence_host_over_nested_group_over_parent_over_all() {
    let inv = valid("good_precedence.yml");
    let core = inv.core();
    assert_eq!(core.settings.user.as_deref(), Some("from-host"));
    assert_eq!(core.settings.address.as_deref(), Some("192.0.2.10"));
    assert!(core.settings.become_root, "site (parent) beats all.vars");
    assert!(core.settings.generate_etc_hosts, "\"ON\" is truthy");
    assert_eq!(
        core.raft_addr.to_string(),
        "core.dc1.example.org:7300",
        "group var"
    );
    let model = inv.inventory();
    let user = model.effective_vars("peer1.dc1.example.org");
    assert_eq!(user.text("ansible_user"), Some("from-site"));
    assert_eq!(user.get("ansible_user").map(|v| v.line), Some(11));
    let peer1 = &inv.peers()[0].settings;
    assert!(peer1.no_firewall_actions, "host's True beats all's \"off\"");
    assert_eq!(
        inv.peers()[0].raft_addr.to_string(),
        "peer1.dc1.example.org:7209",
        "core's group var does not leak to peers"
    );
    let peer2 = &inv.peers()[1];
    assert_eq!(peer2.settings.connection, Connection::Local);
    assert_eq!(peer2.raft_addr.to_string(), "peer2.dc1.example.org:7301");

    let plan = InstallPlan::new(&inv, Mode::Distributed);
    let OperatorStep::InstallPeer { command, .. } = &plan.operator_steps[2] else {
        panic!()
    };
    assert_eq!(
        command,
        "sqlraft-core run --id <id of core-peer2.dc1.example.org> --root /opt/sqlraft \
         --raft.node.addr peer2.dc1.example.org:7301 --raft.node.listen 0.0.0.0:7301 \
         --raft.join core.dc1.example.org:7300 \
         --raft.tls.ca /opt/sqlraft/tls/ca.crt \
         --raft.tls.cert /opt/sqlraft/tls/<id of core-peer2.dc1.example.org>.crt \
         --raft.tls.key /opt/sqlraft/tls/<id of core-peer2.dc1.example.org>.key \
         --auth /opt/sqlraft/auth.json --install"
    );
}

#[test]
fn expand_plan_leaves_the_running_cluster_alone() {
    let inv = valid("good_expand.yml");
    assert_eq!(inv.core_services(), 5);
    let plan = InstallPlan::new(&inv, Mode::Expand);
    assert_eq!(
        plan.host_steps[0].action,
        HostAction::LeaveRunning {
            raft_addr: inv.core().raft_addr.clone()
        }
    );
    assert_eq!(plan.host_steps.len(), 5);
    assert!(
        plan.host_steps[1..]
            .iter()
            .all(|s| s.action == HostAction::Prepare)
    );
    let text = plan.to_string();
    assert!(
        text.contains("(expansion of a running cluster, expand.sh)"),
        "{text}"
    );
    assert!(text.contains("left alone: the running cluster (raft address kuma-core.example.net:7209) is not touched"), "{text}");
    assert!(
        !text.contains(FIRST_SERVICE_ID),
        "expand installs no first service: {text}"
    );
    assert!(text.contains("create 4 core services"), "{text}");
    assert!(
        text.contains("--raft.join kuma-core.example.net:7209"),
        "{text}"
    );
}

#[test]
fn nested_other_groups_count_hosts_of_their_children() {
    let checked = fixture("good_expand.yml");
    assert_eq!(
        infos(&checked)[1],
        (
            "group `kuma_storage` (1 host) is kept as is; the core install does not act on it"
                .to_string(),
            Some(20)
        )
    );
    assert_eq!(
        checked
            .inventory
            .group("kuma_storage_shard_2")
            .map(|g| g.parents.clone()),
        Some(vec!["kuma_storage".to_string()])
    );
}

#[test]
fn empty_groups_and_empty_hosts_are_fine() {
    let checked = fixture("good_minimal_empty_groups.yml");
    assert!(checked.is_valid(), "{}", checked.diagnostics);
    let inv = checked.valid().expect("valid");
    assert_eq!(inv.core_services(), 1);
    assert_eq!(checked.inventory.groups.len(), 6, "all + 5 groups");
    assert!(checked.inventory.group("kuma_core_peers").is_some());
}

#[test]
fn diagnostics_summary_is_printed_last() {
    let checked = fixture("good_distributed.yml");
    let text = checked.diagnostics.to_string();
    assert!(
        text.starts_with("good_distributed.yml:25: info: group `kuma_collector`"),
        "{text}"
    );
    assert!(text.ends_with("0 errors, 3 infos\n"), "{text}");
}

#[test]
fn windows_line_endings_keep_line_numbers() {
    let text = common::fixture_text("bad_even_total.yml").replace('\n', "\r\n");
    let checked = sqlraft_inventory::check("crlf.yml", &text);
    assert_eq!(
        common::errors(&checked),
        [
            "crlf.yml:8: error: 3 hosts in `kuma_core_peers` make 4 core services; add one peer or remove one so the total is odd"
        ]
    );
}

/// The plan uses every setting it shows: the root and the HTTP address of each host
/// (`sqlraft_root`, `sqlraft_http_listen`) in its commands, certificate paths and the
/// web interface's address.
#[test]
fn the_plan_uses_each_hosts_root_and_http_address() {
    let inv = valid("good_root_http.yml");
    let plan = InstallPlan::new(&inv, Mode::Distributed);
    let HostAction::InstallFirstService { command, .. } = &plan.host_steps[0].action else {
        panic!("{plan:?}");
    };
    assert!(command.contains("--root /srv/sqlraft "), "{command}");
    assert!(command.contains("--http 0.0.0.0:8220"), "{command}");
    assert!(
        command.contains("--raft.tls.ca /srv/sqlraft/tls/ca.crt"),
        "{command}"
    );
    assert!(
        command.contains("--auth /srv/sqlraft/auth.json"),
        "{command}"
    );
    assert!(!command.contains("/opt/sqlraft"), "{command}");
    let OperatorStep::CreateServices { web_url, .. } = &plan.operator_steps[0] else {
        panic!("{plan:?}");
    };
    assert_eq!(web_url, "http://core-1.example.com:8220/");
    let peers: Vec<&String> = plan
        .operator_steps
        .iter()
        .filter_map(|s| match s {
            OperatorStep::InstallPeer { command, .. } => Some(command),
            _ => None,
        })
        .collect();
    assert!(
        peers[0].contains("--root /srv/sqlraft ") && peers[0].contains("--http 0.0.0.0:8220"),
        "{}",
        peers[0]
    );
    assert!(
        peers[1].contains("--root /data/sqlraft ") && peers[1].contains("--http 10.0.0.3:9220"),
        "{}",
        peers[1]
    );
    assert!(
        peers[1].contains("--raft.tls.key /data/sqlraft/tls/"),
        "{}",
        peers[1]
    );
    let text = plan.to_string();
    assert!(
        text.contains("root /data/sqlraft, HTTP on 10.0.0.3:9220"),
        "{text}"
    );
}
