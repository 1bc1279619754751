//! Mutual TLS between nodes: only a peer holding a certificate from the cluster CA is
//! heard, and only for the service its certificate names; certificates are replaced
//! without a restart.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use raft::eraftpb::{Message, MessageType};
use sha2::Digest as _;
use sqlraft::{PeerTls, TlsFiles};
use sqlraft_core::certs::{Ca, service_files, write_service_files};
use sqlraft_proto::v1 as pb;
use sqlraft_transport::{Transport, TransportError, TransportOptions};

/// An outsider's transport: TLS with `tls`, or plaintext.
fn outsider(tls: Option<PeerTls>) -> Transport {
    Transport::new(TransportOptions {
        tls,
        backoff_max_ms: 100,
        ..Default::default()
    })
    .0
}

fn tls_for(dir: &Path, ca: &Ca, id: &str) -> PeerTls {
    PeerTls::load(write_service_files(ca, id, "127.0.0.1", 30, dir).expect("issue")).expect("load")
}

/// A heartbeat from raft id `from` at a term far ahead: a node that hears it steps
/// down and adopts that term.
fn term_bomb(to: &sqlraft::Node, from: u64) -> Message {
    Message {
        msg_type: MessageType::MsgHeartbeat as i32,
        to: to.raft_id(),
        from,
        term: to.status().term + 100,
        ..Default::default()
    }
}

/// Sends `message` from `transport` to `target` and checks, for a while, that the
/// target's term does not move.
async fn not_heard(transport: &Transport, target: &sqlraft::Node, message: Message, who: &str) {
    let term = target.status().term;
    transport
        .set_peer(target.raft_id(), target.raft_addr())
        .expect("peer");
    for _ in 0..5 {
        transport.send(vec![message.clone()]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(target.status().term, term, "{who} was heard");
    }
}

fn join_request(id: &str) -> pb::JoinRequest {
    pb::JoinRequest {
        service_id: id.into(),
        raft_addr: "127.0.0.1:9".into(),
        http_addr: String::new(),
    }
}

const STRANGER: &str = "00000000-0000-0000-0000-0000000000ee";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_member_with_its_own_cluster_certificate_is_heard() {
    let cluster = Cluster::with_tls(3).await;
    let leader = cluster.leader().await;
    let target = cluster.node(leader);
    let follower = cluster.followers(leader)[0];
    let forged_from = cluster.node(follower).raft_id();
    let ca = Ca::read(&cluster.tls_dir()).expect("cluster CA");
    let scratch = tempfile::tempdir().expect("tempdir");

    // The cluster works over TLS.
    let outcome = write_ok(target, "CREATE TABLE t (v)").await;
    cluster.wait_applied(outcome.raft_index).await;

    // Plaintext to the TLS port.
    let plain = outsider(None);
    not_heard(
        &plain,
        target,
        term_bomb(target, forged_from),
        "a plaintext peer",
    )
    .await;
    // (The server ends the connection at the first bytes, which are not TLS.)
    plain
        .join(target.raft_addr(), join_request(STRANGER))
        .await
        .expect_err("a plaintext join");

    // A certificate from another CA, even for a member's id.
    let other_ca = Ca::new(30).expect("other CA");
    let member_id = cluster.nodes[follower].service_id.clone();
    let foreign = outsider(Some(tls_for(
        &scratch.path().join("other"),
        &other_ca,
        &member_id,
    )));
    not_heard(
        &foreign,
        target,
        term_bomb(target, forged_from),
        "another CA's certificate",
    )
    .await;
    let refused = foreign
        .join(target.raft_addr(), join_request(&member_id))
        .await
        .expect_err("a join with another CA's certificate");
    assert!(
        matches!(refused, TransportError::Unreachable { .. }),
        "{refused}"
    );

    // An expired certificate from the cluster CA.
    let now = time::OffsetDateTime::now_utc();
    let expired = ca
        .issue_between(
            &member_id,
            "127.0.0.1",
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        )
        .expect("expired certificate");
    let dir = scratch.path().join("expired");
    std::fs::create_dir_all(&dir).expect("dir");
    let files = TlsFiles {
        ca: cluster.tls_dir().join("ca.crt"),
        cert: dir.join("expired.crt"),
        key: dir.join("expired.key"),
    };
    std::fs::write(&files.cert, &expired.cert_pem).expect("cert");
    std::fs::write(&files.key, &expired.key_pem).expect("key");
    assert!(
        PeerTls::load(files.clone()).is_err(),
        "an expired certificate is refused at load too"
    );
    // ... and by the node, whose HTTP/2 server never answers such a client.
    let valid = ca
        .issue(&member_id, "127.0.0.1", 30)
        .expect("valid certificate");
    assert!(
        server_answers(target.raft_addr(), ca.cert_pem(), &valid).await,
        "the control: a valid certificate gets an answer"
    );
    assert!(!server_answers(target.raft_addr(), ca.cert_pem(), &expired).await);

    // A valid cluster certificate for another service speaks only for that service:
    // messages claiming a member's raft id are dropped, a batch or a join that names
    // another service is refused.
    let stranger = outsider(Some(tls_for(
        &scratch.path().join("stranger"),
        &ca,
        STRANGER,
    )));
    not_heard(
        &stranger,
        target,
        term_bomb(target, forged_from),
        "another service's certificate",
    )
    .await;
    let refused = stranger
        .join(target.raft_addr(), join_request(&member_id))
        .await
        .expect_err("a join as another service");
    assert!(
        matches!(&refused, TransportError::Refused { code: tonic::Code::PermissionDenied, message, .. }
            if message.contains(STRANGER)),
        "{refused}"
    );

    // ... and forwards no write: only members forward.
    let forged = pb::ForwardRequest {
        request: Some(pb::WriteRequest {
            statements: vec![pb::Statement {
                sql: "CREATE TABLE forged (v)".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        admin: None,
    };
    let answer = stranger
        .forward(target.raft_addr(), target.raft_id(), forged.clone())
        .await
        .expect("answered");
    assert!(
        matches!(&answer.outcome, Some(pb::forward_response::Outcome::Error(e)) if e.message.contains("not a member")),
        "{answer:?}"
    );
    // A node that does not lead does not judge who may forward: it says it does not
    // lead, which the forwarding node retries elsewhere. (One just restarted knew no
    // members yet, and refused a member's write as a bad request: found by a review.)
    let follower = cluster
        .live()
        .find(|n| n.raft_id() != target.raft_id())
        .expect("a follower");
    let answer = stranger
        .forward(follower.raft_addr(), follower.raft_id(), forged.clone())
        .await
        .expect("answered");
    assert!(
        matches!(&answer.outcome, Some(pb::forward_response::Outcome::Error(e))
            if e.kind == pb::forward_error::Kind::NotLeader as i32),
        "{answer:?}"
    );

    for node in cluster.live() {
        assert!(node.failure().is_none(), "node {}", node.raft_id());
    }

    // The control: the member's own certificate is heard (the checks above are not
    // refusing everything). The bomb moves the target's term.
    let own_tls = PeerTls::load(service_files(&cluster.tls_dir(), &member_id)).expect("member TLS");
    let answer = outsider(Some(own_tls))
        .forward(target.raft_addr(), target.raft_id(), forged)
        .await
        .expect("answered");
    assert!(
        matches!(
            &answer.outcome,
            Some(pb::forward_response::Outcome::Response(_))
        ),
        "a member forwards: {answer:?}"
    );
    let term = target.status().term;
    let own = outsider(Some(
        PeerTls::load(service_files(&cluster.tls_dir(), &member_id)).expect("member TLS"),
    ));
    own.set_peer(target.raft_id(), target.raft_addr())
        .expect("peer");
    let deadline = Instant::now() + Duration::from_secs(10);
    while target.status().term == term {
        assert!(
            Instant::now() < deadline,
            "the member's own certificate was not heard"
        );
        own.send(vec![term_bomb(target, forged_from)]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_the_ca_are_replaced_without_a_restart() {
    let cluster = Cluster::with_tls(3).await;
    let dir = cluster.tls_dir();
    let old_ca = Ca::read(&dir).expect("cluster CA");
    let scratch = tempfile::tempdir().expect("tempdir");
    let leader = cluster.leader().await;
    let target_addr = cluster.node(leader).raft_addr().to_string();

    // An outsider holding a valid certificate of the old CA connects before the
    // rotation (its join is refused by the claim check, after the handshake).
    let old = outsider(Some(tls_for(
        &scratch.path().join("old"),
        &old_ca,
        STRANGER,
    )));
    let refused = old
        .join(&target_addr, join_request(&cluster.nodes[0].service_id))
        .await
        .expect_err("claims another service");
    assert!(
        matches!(refused, TransportError::Refused { .. }),
        "{refused}"
    );

    // Rotation: a new CA; first every node trusts both and gets a certificate of the
    // new one, then the old CA is dropped.
    let new_ca = Ca::new(30).expect("new CA");
    let both = format!("{}{}", old_ca.cert_pem(), new_ca.cert_pem());
    replace(&dir.join("ca.crt"), &both);
    for node in &cluster.nodes {
        let issued = new_ca
            .issue(&node.service_id, "127.0.0.1", 30)
            .expect("new certificate");
        let files = service_files(&dir, &node.service_id);
        replace(&files.key, &issued.key_pem);
        replace(&files.cert, &issued.cert_pem);
    }
    let written = write_through(&cluster, "CREATE TABLE during (v)").await;
    cluster.wait_applied(written.raft_index).await;
    replace(&dir.join("ca.crt"), new_ca.cert_pem());

    // Every node took the new material (the watcher checks every 200 ms) and the
    // cluster still replicates with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let refused = old
            .join(&target_addr, join_request(&cluster.nodes[0].service_id))
            .await
            .expect_err("refused either way");
        // Refused by the handshake now, not by the claim check after it: the old
        // connection was closed and a new one is not trusted.
        if matches!(refused, TransportError::Unreachable { .. }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old CA is still trusted: {refused}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = write_through(&cluster, "CREATE TABLE after_rotation (v)").await;
    cluster.wait_applied(after.raft_index).await;
    for node in cluster.live() {
        assert!(node.failure().is_none(), "node {}", node.raft_id());
    }
    cluster.shutdown().await;
}

/// Opens TLS to `addr` with `client` as the client certificate, sends the HTTP/2
/// preface and says whether the server answered (its SETTINGS frame). With TLS 1.3 a
/// client's handshake ends before the server has judged its certificate: a refused one
/// learns it on its first read.
async fn server_answers(addr: &str, ca_pem: &str, client: &sqlraft_core::certs::Issued) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA pem")).expect("root");
    }
    let chain: Vec<_> = CertificateDer::pem_slice_iter(client.cert_pem.as_bytes())
        .map(|c| c.expect("cert pem"))
        .collect();
    let key = PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).expect("key pem");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client config");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let Ok(mut tls) = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
    else {
        return false;
    };
    if tls
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Writes through whichever node leads, as a client does: closing every connection on
/// a reload may cost an election with the tests' short timeouts, and a write caught in
/// one is reported not applied and tried again.
async fn write_through(cluster: &Cluster, sql: &str) -> sqlraft::WriteOutcome {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leader = cluster.leader().await;
        match write(cluster.node(leader), sql).await {
            Ok(outcome) => return outcome,
            Err(e) if e.kind() == sqlraft::ErrorKind::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_never_joined_is_heard_under_no_raft_id() {
    let cluster = Cluster::with_tls(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.node(cluster.followers(leader)[0]);
    // Created (its certificate issued), never joined: it has no raft id.
    let created = cluster
        .node(leader)
        .create_service("127.0.0.9", "127.0.0.9:9")
        .await
        .expect("create");
    let ca = Ca::read(&cluster.tls_dir()).expect("cluster CA");
    let scratch = tempfile::tempdir().expect("tempdir");
    let attacker = outsider(Some(tls_for(scratch.path(), &ca, &created.id)));
    // Its batches name it, truthfully, with a raft id of its choosing (found by a
    // review: a follower took such a stranger for a member, learned its address and
    // applied the entries it sent).
    attacker.set_local(pb::Member {
        raft_id: 99,
        service_id: created.id.clone(),
        raft_addr: "127.0.0.9:9".into(),
        http_addr: String::new(),
    });
    not_heard(
        &attacker,
        follower,
        term_bomb(follower, 99),
        "a service that never joined",
    )
    .await;
    assert!(
        follower.transport().peer_addr(99).is_none(),
        "its address was learned"
    );
    for node in cluster.live() {
        assert!(node.failure().is_none(), "node {}", node.raft_id());
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_sent_under_another_members_raft_id_is_refused_before_it_is_written() {
    use prost::Message as _;
    use sqlraft_proto::v1::raft_transport_client::RaftTransportClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    let cluster = Cluster::with_tls(3).await;
    let leader = cluster.leader().await;
    let target = cluster.node(leader);
    let member = cluster.node(cluster.followers(leader)[0]);
    let ca = Ca::read(&cluster.tls_dir()).expect("cluster CA");
    let issued = ca.issue(STRANGER, "127.0.0.1", 1).expect("certificate");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.cert_pem()))
        .identity(Identity::from_pem(&issued.cert_pem, &issued.key_pem))
        .domain_name("127.0.0.1");
    let channel = Endpoint::from_shared(format!("https://{}", target.raft_addr()))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("the handshake succeeds: the certificate is the cluster's");
    let mut client = RaftTransportClient::new(channel);

    let data = b"not a database".to_vec();
    let descriptor = pb::SnapshotDescriptor {
        index: 5,
        term: 1,
        size: data.len() as u64,
        sha256: sha2::Sha256::digest(&data).to_vec(),
    };
    let mut message = Message {
        msg_type: MessageType::MsgSnapshot as i32,
        to: target.raft_id(),
        from: member.raft_id(),
        term: target.status().term,
        ..Default::default()
    };
    let snapshot = message.mut_snapshot();
    snapshot.mut_metadata().index = 5;
    snapshot.mut_metadata().term = 1;
    snapshot.data = descriptor.encode_to_vec();
    let encoded = prost_011::Message::encode_to_vec(&message);
    for sender in [
        None,
        Some(pb::Member {
            raft_id: member.raft_id(),
            service_id: STRANGER.into(),
            ..Default::default()
        }),
        Some(pb::Member {
            raft_id: member.raft_id(),
            service_id: cluster.nodes[cluster.followers(leader)[0]]
                .service_id
                .clone(),
            ..Default::default()
        }),
    ] {
        let chunk = pb::SnapshotChunk {
            message: encoded.clone(),
            sender: sender.clone(),
            offset: 0,
            data: data.clone(),
            crc32: crc32fast::hash(&data),
            last: true,
        };
        let refused = client
            .install_snapshot(futures::stream::iter(vec![chunk]))
            .await
            .expect_err("refused");
        assert_eq!(
            refused.code(),
            tonic::Code::PermissionDenied,
            "{sender:?}: {refused}"
        );
    }
    let dir = cluster.nodes[leader].dir.join("raft").join("snapshots");
    let written: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !written
            .iter()
            .any(|n| n.to_string_lossy().contains("0000000005")),
        "{written:?}"
    );
    assert!(target.failure().is_none());
    cluster.shutdown().await;
}

/// A node that was down while a member joined knows nothing of it; it must still
/// follow it once it leads (found by a review: with sender records no longer trusted it
/// dropped the new leader's messages for ever). It asks the members it knows who the
/// stranger is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_was_down_while_a_member_joined_follows_it_as_leader() {
    let mut cluster = Cluster::with_tls(3).await;
    write_through(&cluster, "CREATE TABLE before (v)").await;
    cluster.stop(2).await;
    cluster.add_node().await;
    cluster.add_node().await;
    cluster.wait_voters(5).await;
    // Leadership to a member that joined while node 2 was down.
    let newcomer = cluster.node(3).raft_id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.node(3).status().leader_id != newcomer {
        assert!(Instant::now() < deadline, "no leadership transfer");
        let leader = cluster.leader().await;
        let answer = cluster
            .node(0)
            .transport()
            .forward(
                cluster.node(leader).raft_addr(),
                cluster.node(leader).raft_id(),
                pb::ForwardRequest {
                    request: None,
                    admin: Some(pb::AdminRequest {
                        kind: Some(pb::admin_request::Kind::TransferLeader(newcomer)),
                    }),
                },
            )
            .await;
        tracing::info!(?answer, "transfer asked");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let written = write_through(&cluster, "CREATE TABLE after (v)").await;
    cluster.restart(2).await;
    let lagging = cluster.node(2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lagging.status().applied_index < written.raft_index {
        assert!(
            Instant::now() < deadline,
            "the node that was down does not follow the new leader: {:?}",
            lagging.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lagging.status().leader_id, newcomer);
    cluster.shutdown().await;
}

/// A follower passes a join on to the leader over its own connection, with its own
/// certificate: the leader takes it from a member (found by the fault campaign: every
/// join through a follower was refused as "speaking for another service").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_joins_through_a_follower() {
    let mut cluster = Cluster::with_tls(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.followers(leader)[0];
    let joined = cluster.add_node_via(Some(follower)).await.raft_id();
    cluster
        .wait("the new member known everywhere", |c| {
            c.live()
                .all(|n| n.status().members.iter().any(|m| m.raft_id == joined))
        })
        .await;
    cluster.shutdown().await;
}

/// Replaces a file whole (write, then rename), as an operator's tooling should.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}
