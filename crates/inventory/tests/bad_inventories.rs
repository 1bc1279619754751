//! Inventories that fail: every problem is reported at once, with file, line and host.

mod common;

use common::{codes, errors, fixture, rendered};
use sqlraft_inventory::{Code, InventoryError, check};

#[track_caller]
fn assert_errors(name: &str, expected: &[&str]) {
    let checked = fixture(name);
    assert_eq!(
        errors(&checked),
        expected,
        "{name}:\n{}",
        checked.diagnostics
    );
    assert!(!checked.is_valid());
    assert!(
        matches!(checked.valid(), Err(InventoryError::Invalid { errors, .. }) if errors == expected.len())
    );
}

#[test]
fn even_total_spells_out_the_fix() {
    assert_errors(
        "bad_even_total.yml",
        &[
            "bad_even_total.yml:8: error: 3 hosts in `kuma_core_peers` make 4 core services; add one peer or remove one so the total is odd",
        ],
    );
}

#[test]
fn several_core_hosts() {
    assert_errors(
        "bad_two_core_hosts.yml",
        &[
            "bad_two_core_hosts.yml:6: error: `kuma_core` has 2 hosts (core-a.example.com, core-b.example.com); it must have exactly one: keep one and move the others to `kuma_core_peers`, keeping the total odd",
        ],
    );
}

#[test]
fn empty_core_group_and_other_groups_as_info() {
    let checked = fixture("bad_empty_core.yml");
    assert_eq!(
        rendered(&checked),
        [
            "bad_empty_core.yml:5: error: `kuma_core` has no host; list exactly one (it gets the first core service)",
            "bad_empty_core.yml:6: info: group `kuma_collector` (1 host) is kept as is; the core install does not act on it",
        ]
    );
}

#[test]
fn missing_core_group() {
    assert_errors(
        "bad_no_core.yml",
        &[
            "bad_no_core.yml: error: no `kuma_core` group; add it with exactly one host for the first core service",
        ],
    );
}

#[test]
fn host_twice_and_host_in_both_groups() {
    assert_errors(
        "bad_duplicates.yml",
        &[
            "bad_duplicates.yml:6: error: 3 hosts in `kuma_core_peers` make 4 core services; add one peer or remove one so the total is odd",
            "bad_duplicates.yml:9: error: host core.example.com: in both `kuma_core` (line 5) and `kuma_core_peers`; a host runs one core service: remove it from `kuma_core_peers`",
            "bad_duplicates.yml:10: error: host peer1.example.com: listed twice in `kuma_core_peers` (first at line 8); remove one",
        ],
    );
}

#[test]
fn host_names_must_be_fqdns() {
    assert_errors(
        "bad_not_fqdn.yml",
        &[
            "bad_not_fqdn.yml:5: error: host core: `core` is not an FQDN: write it as <host>.<domain>, e.g. core.example.com",
            "bad_not_fqdn.yml:8: error: host Peer1.example.com: `Peer1.example.com`: label `Peer1` has `P`; only a-z, 0-9 and '-' are allowed",
            "bad_not_fqdn.yml:9: error: host peer_2.example.com: `peer_2.example.com`: label `peer_2` has `_`; only a-z, 0-9 and '-' are allowed",
            "bad_not_fqdn.yml:10: error: host 10.0.0.5: `10.0.0.5`: domain label `0` starts with a digit",
            "bad_not_fqdn.yml:11: error: host -peer4.example.com: `-peer4.example.com`: label `-peer4` starts or ends with '-'",
        ],
    );
    // Hosts of groups sqlraft does not act on are not held to its naming rule.
    assert_eq!(fixture("bad_not_fqdn.yml").diagnostics.infos().count(), 1);
}

#[test]
fn raft_node_addr_without_port() {
    assert_errors(
        "bad_raft_addr_no_port.yml",
        &[
            "bad_raft_addr_no_port.yml:6: error: host core.example.com: `raft_node_addr` `core.example.com` has no port; write it as <fqdn>:<port>, e.g. core.example.com:7209",
        ],
    );
}

#[test]
fn raft_node_addr_bad_ports_and_peer_addresses() {
    assert_errors(
        "bad_raft_addr_port.yml",
        &[
            "bad_raft_addr_port.yml:5: error: host core.example.com: `raft_node_addr` `core.example.com:70000`: port 70000 is out of range 1-65535",
            "bad_raft_addr_port.yml:10: error: `raft_node_addr` in the vars of `kuma_core_peers` would give every peer the same address; set it per host",
            "bad_raft_addr_port.yml:13: error: host peer1.example.com: `raft_node_addr` `peer1.example.com:72o9`: port `72o9` is not a number",
            "bad_raft_addr_port.yml:15: error: host peer2.example.com: `raft_node_addr` `peer1.example.com:7209` names peer1.example.com, not the `kuma_core_peers` host peer2.example.com; use peer2.example.com:7209",
        ],
    );
}

#[test]
fn raft_node_addr_naming_another_host_points_at_all_vars() {
    assert_errors(
        "bad_raft_addr_other_host.yml",
        &[
            "bad_raft_addr_other_host.yml:3: error: host core.example.com: `raft_node_addr` `old-core.example.com:7209` names old-core.example.com, not the `kuma_core` host core.example.com; use core.example.com:7209",
        ],
    );
}

#[test]
fn malformed_yaml_gives_line_and_column() {
    assert_errors(
        "bad_yaml.yml",
        &[
            "bad_yaml.yml:6: error: malformed YAML at line 6, column 21: while parsing a block mapping, did not find expected key",
        ],
    );
    assert_eq!(codes(&fixture("bad_yaml.yml")), [(Code::Yaml, Some(6))]);
}

#[test]
fn wrong_shapes_are_all_reported() {
    assert_errors(
        "bad_shapes.yml",
        &[
            "bad_shapes.yml:3: error: `vars` of group `all` is a list; expected a mapping",
            "bad_shapes.yml:7: error: host core.example.com: the host's variables are a single value; write them as a mapping (`name: value`) or leave the host empty",
            "bad_shapes.yml:9: error: group `kuma_core_peers` is a list; expected `hosts`, `vars` or `children`; list its hosts under `hosts:` as a mapping (`host.example.com:`)",
            "bad_shapes.yml:13: error: `hosts` of group `kuma_collector` is a list; write each host as a key (`host.example.com:`) with its variables under it",
            "bad_shapes.yml:15: error: unknown key `storage.example.com` in group `kuma_storage` (a host? list hosts under `hosts:`); expected `hosts`, `vars` or `children`",
            "bad_shapes.yml:16: error: group `kuma_correlator` is a single value; expected `hosts`, `vars` or `children`",
        ],
    );
    assert!(
        codes(&fixture("bad_shapes.yml"))
            .iter()
            .all(|(c, _)| *c == Code::Shape)
    );
}

#[test]
fn connection_and_boolean_variables() {
    assert_errors(
        "bad_variables.yml",
        &[
            "bad_variables.yml:3: error: `ansible_connection` is `winrm`; use ssh or local",
            "bad_variables.yml:4: error: `no_firewall_actions` is `maybe`; use true or false (yes/no, on/off, 1/0 also work)",
            "bad_variables.yml:8: error: `generate_etc_hosts` is a list; use true or false (yes/no, on/off, 1/0 also work)",
            "bad_variables.yml:11: error: host core.example.com: `ansible_user` is empty; it must be a single non-empty value",
            "bad_variables.yml:12: error: host core.example.com: `ansible_become` is `sometimes`; use true or false (yes/no, on/off, 1/0 also work)",
        ],
    );
}

#[test]
fn root_and_http_address_variables() {
    assert_errors(
        "bad_install_vars.yml",
        &[
            "bad_install_vars.yml:3: error: `sqlraft_root` is `opt/sqlraft`; use an absolute path without spaces, such as /opt/sqlraft",
            "bad_install_vars.yml:4: error: `sqlraft_http_listen` is `7220`; use an IP address and a port, such as 0.0.0.0:7220",
            "bad_install_vars.yml:9: error: host core-1.example.com: `sqlraft_root` is `/opt/my dir`; use an absolute path without spaces, such as /opt/sqlraft",
            "bad_install_vars.yml:10: error: host core-1.example.com: `sqlraft_http_listen` is `core-1.example.com:7220`; use an IP address and a port, such as 0.0.0.0:7220",
        ],
    );
}

#[test]
fn every_problem_at_once_not_only_the_first() {
    let checked = fixture("bad_many.yml");
    assert_eq!(
        rendered(&checked),
        [
            "bad_many.yml:9: error: host kuma-core: `kuma-core` is not an FQDN: write it as <host>.<domain>, e.g. kuma-core.example.com",
            "bad_many.yml:10: error: host kuma-core: `raft_node_addr` `kuma-core.example.com:http`: port `http` is not a number",
            "bad_many.yml:14: error: host peer1.example.com: listed twice in `kuma_core_peers` (first at line 13); remove one",
            "bad_many.yml:16: info: group `kuma_collector` (1 host) is kept as is; the core install does not act on it",
            "bad_many.yml:19: info: group `kuma_storage` (1 host) is kept as is; the core install does not act on it",
        ]
    );
    assert!(
        checked
            .diagnostics
            .to_string()
            .ends_with("3 errors, 2 infos\n")
    );
}

#[test]
fn empty_file() {
    assert_errors(
        "bad_empty.yml",
        &[
            "bad_empty.yml: error: the inventory is empty; it needs `all:` with `children:` holding `kuma_core`",
        ],
    );
}

#[test]
fn top_level_list() {
    assert_errors(
        "bad_top_level_list.yml",
        &["bad_top_level_list.yml:1: error: the inventory is a list; expected a mapping"],
    );
}

#[test]
fn duplicate_keys() {
    assert_errors(
        "bad_duplicate_keys.yml",
        &[
            "bad_duplicate_keys.yml:4: error: `ansible_user` appears twice in `vars` of group `all` (first at line 3); keep one",
            "bad_duplicate_keys.yml:9: error: `kuma_core` appears twice in `children` of `all` (first at line 6); keep one",
        ],
    );
}

#[test]
fn an_even_total_of_two_uses_the_singular() {
    let text = "all:\n  children:\n    kuma_core:\n      hosts:\n        a.example.com:\n    kuma_core_peers:\n      hosts:\n        b.example.com:\n";
    let checked = check("inv.yml", text);
    assert_eq!(
        errors(&checked),
        [
            "inv.yml:6: error: 1 host in `kuma_core_peers` makes 2 core services; add one peer or remove one so the total is odd"
        ]
    );
}

#[test]
fn group_cycles_are_reported_not_followed() {
    let text = "all:\n  children:\n    a:\n      children:\n        b:\n          children:\n            a:\n    kuma_core:\n      hosts:\n        core.example.com:\n";
    let checked = check("cycle.yml", text);
    assert_eq!(
        errors(&checked),
        ["cycle.yml:7: error: group `a` is nested in itself"]
    );
    let text = "a:\n  children:\n    b:\nb:\n  children:\n    a:\nkuma_core:\n  hosts:\n    core.example.com:\n";
    let checked = check("cycle2.yml", text);
    assert_eq!(
        codes(&checked),
        [(Code::GroupCycle, None)],
        "{}",
        checked.diagnostics
    );
    let _ = checked.inventory.effective_vars("core.example.com");
}

#[test]
fn check_file_reports_unreadable_files() {
    let err = sqlraft_inventory::check_file(std::path::Path::new("/nonexistent/inventory.yml"))
        .unwrap_err();
    assert!(matches!(err, InventoryError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with("cannot read /nonexistent/inventory.yml: "),
        "{err}"
    );
}

#[test]
fn all_cannot_be_nested() {
    let text =
        "kuma:\n  children:\n    all:\n    kuma_core:\n      hosts:\n        core.example.com:\n";
    let checked = check("nested_all.yml", text);
    assert_eq!(
        errors(&checked),
        ["nested_all.yml:3: error: `all` holds every group; it cannot be nested in `kuma`"]
    );
}
