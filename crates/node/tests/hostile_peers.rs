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
