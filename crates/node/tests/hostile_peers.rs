//! Malformed raft messages from the network are dropped; they never stop a node.

mod common;

use common::*;
use raft::eraftpb::{Entry, Message, MessageType};
use sqlraft_transport::{Transport, TransportOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_raft_messages_do_not_stop_a_node() {
    let cluster = Cluster::new(3).await;
    let leader = cluster.leader().await;
    let target = cluster.node(leader);
    let forged_from = cluster.node(cluster.followers(leader)[0]).raft_id();
    let (attacker, _events) = Transport::new(TransportOptions::default());
    attacker
        .set_peer(target.raft_id(), target.raft_addr())
        .expect("peer");

    let message = |kind: MessageType| Message {
        msg_type: kind as i32,
        to: target.raft_id(),
        from: forged_from,
        term: target.status().term,
        ..Default::default()
    };
    let mut hostile = vec![
        // raft-rs indexes the context entry of a read index request.
        message(MessageType::MsgReadIndex),
        message(MessageType::MsgReadIndexResp),
        // raft-rs treats an empty proposal as fatal.
        message(MessageType::MsgPropose),
        // Snapshots are not supported: installing one would stop the node.
        message(MessageType::MsgSnapshot),
        message(MessageType::MsgHup),
    ];
    let mut heartbeat = message(MessageType::MsgHeartbeat);
    heartbeat.commit = u64::MAX / 2;
    hostile.push(heartbeat);
    let mut append = message(MessageType::MsgAppend);
    append.index = 5;
    append.entries = vec![Entry {
        index: 1000,
        term: 1,
        ..Default::default()
    }];
    hostile.push(append);
    let mut stranger = message(MessageType::MsgHeartbeat);
    stranger.from = 4242;
    hostile.push(stranger);
    attacker.send(hostile);

    // Give the batch time to arrive, then check the node is alive and still leads.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(target.failure().is_none());
    let outcome = write_ok(target, "CREATE TABLE survived (v)").await;
    cluster.wait_applied(outcome.raft_index).await;
    for node in cluster.live() {
        assert!(node.failure().is_none(), "node {}", node.raft_id());
    }
    cluster.shutdown().await;
}

/// A peer connection that never finishes its request (a peer cut off by a partition,
/// or one stopping at the same moment) must not keep a node from stopping. Found by the
/// fault campaign: two nodes told to stop together while their link was down waited for
/// each other's connections for as long as TCP kept them (minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_peer_connection_does_not_keep_a_node_from_stopping() {
    use tokio::io::AsyncWriteExt;

    let mut cluster = Cluster::new(1).await;
    let addr = cluster.node(0).raft_addr().to_string();
    let mut stalled = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    // HTTP/2: the preface, empty settings, and the headers of a raft batch whose body
    // never comes (no DATA frame, no END_STREAM).
    let path = b"/sqlraft.v1.RaftTransport/Send";
    let mut block = vec![0x83, 0x86, 0x44, path.len() as u8];
    block.extend_from_slice(path);
    block.extend_from_slice(&[0x41, 0x01, b'x']);
    block.extend_from_slice(&[0x5f, 0x10]);
    block.extend_from_slice(b"application/grpc");
    block.extend_from_slice(&[0x40, 0x02]);
    block.extend_from_slice(b"te");
    block.push(0x08);
    block.extend_from_slice(b"trailers");
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 0x04, 0, 0, 0, 0, 0]);
    let len = block.len();
    bytes.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 0x01, 0x04]);
    bytes.extend_from_slice(&1u32.to_be_bytes());
    bytes.extend_from_slice(&block);
    stalled.write_all(&bytes).await.expect("send");
    // Let the server take the request in.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let stopped = tokio::time::timeout(std::time::Duration::from_secs(30), cluster.stop(0)).await;
    assert!(
        stopped.is_ok(),
        "the node did not stop while a peer connection stalled"
    );
    drop(stalled);
}
