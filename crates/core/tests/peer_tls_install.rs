//! A core service created through the REST API of a TLS cluster gets its certificate
//! in the answer, issued by the cluster CA, and joins with it; a service without one
//! cannot join.

use std::time::Duration;

use serde_json::json;
use sqlraft_harness::http;
use sqlraft_harness::processes::cluster::{Cluster, loopback_host};
use sqlraft_harness::processes::process::{CoreProcess, free_port};
use sqlraft_harness::processes::serial;

#[test]
fn a_created_service_joins_with_the_certificate_the_api_issued() {
    let _serial = serial();
    let mut cluster = Cluster::start(1);
    let admin = cluster.nodes[0].http.clone();
    let join = cluster.nodes[0].raft.clone();
    let host = loopback_host(1);
    let raft = format!("{host}:{}", free_port(&host));
    let created = http::post(
        &admin,
        "/api/v1/services",
        &json!({"fqdn": host, "raft_addr": raft}),
        Duration::from_secs(15),
    )
    .expect("create");
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    let id = created["id"].as_str().expect("id").to_string();
    let command = created["install_command"].as_str().expect("command");
    assert!(
        command.contains(&format!(
            "--raft.tls.cert {}/tls/{id}.crt",
            cluster.nodes[0].root.display()
        )),
        "{command}"
    );
    let certificate = &created["certificate"];
    let dir = cluster.root().join("issued");
    std::fs::create_dir_all(&dir).expect("dir");
    let files = [
        ("ca.crt", &certificate["ca"]),
        ("node.crt", &certificate["cert"]),
        ("node.key", &certificate["key"]),
    ];
    for (name, pem) in files {
        let pem = pem
            .as_str()
            .unwrap_or_else(|| panic!("{name} missing: {created}"));
        assert!(pem.starts_with("-----BEGIN "), "{name}: {pem}");
        std::fs::write(dir.join(name), pem).expect("write");
    }
    let parsed = sqlraft::PeerTls::load(sqlraft::TlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("node.crt"),
        key: dir.join("node.key"),
    })
    .expect("the issued certificate loads");
    assert_eq!(parsed.service_id(), id);

    // Without a certificate it cannot join the TLS cluster.
    let http_addr = format!("{host}:{}", free_port(&host));
    let mut plain = CoreProcess::at(cluster.root(), "plain", &id, &raft, &http_addr, None);
    plain.add_args(&["--raft.insecure", "--raft.join.timeout-ms", "3000"]);
    assert!(
        plain.try_start(Some(&join)).is_err(),
        "a plaintext service joined"
    );
    let _ = std::fs::remove_dir_all(plain.dir());

    // With the issued one it joins.
    let mut node = CoreProcess::at(cluster.root(), "node-1", &id, &raft, &http_addr, None);
    let flags = [
        "--raft.tls.ca",
        dir.join("ca.crt").to_str().expect("utf-8"),
        "--raft.tls.cert",
        dir.join("node.crt").to_str().expect("utf-8"),
        "--raft.tls.key",
        dir.join("node.key").to_str().expect("utf-8"),
    ]
    .map(str::to_string);
    node.add_args(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    node.try_start(Some(&join))
        .expect("joins with the issued certificate");
    cluster.nodes.push(node);
    let first = cluster.nodes[0].id.clone();
    cluster.wait_until("the new service follows the leader", |c| {
        c.nodes[1].status().is_some_and(|s| {
            s["leader_id"].as_str() == Some(first.as_str())
                && s["role"] != "candidate"
                && s["applied_index"].as_u64().unwrap_or(0) > 0
        })
    });
}
