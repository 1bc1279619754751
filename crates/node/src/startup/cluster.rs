//! A node's first start: joining an existing cluster or bootstrapping a new one.

use std::time::{Duration, Instant};

use prost::Message as _;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState,
};
use sqlraft_log::LogStore;
use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::Member;
use sqlraft_transport::{Transport, TransportError};

use crate::config::NodeConfig;
use crate::error::{NodeError, Result};

/// Asks the cluster to admit this service, retrying while the cluster is busy or
/// unreachable; a refusal is final.
pub(crate) async fn join_cluster(
    transport: &Transport,
    addr: &str,
    config: &NodeConfig,
    raft_addr: &str,
) -> Result<(u64, Vec<Member>)> {
    let deadline = Instant::now() + Duration::from_millis(config.limits.join_timeout_ms);
    let request = pb::JoinRequest {
        service_id: config.service_id.clone(),
        raft_addr: raft_addr.to_string(),
        http_addr: config.http_addr.clone().unwrap_or_default(),
    };
    let mut pause = Duration::from_millis(100);
    loop {
        let error = match transport.join(addr, request.clone()).await {
            Ok(response) if response.raft_id > 0 => {
                tracing::info!(
                    raft_id = response.raft_id,
                    via = addr,
                    "admitted to the cluster"
                );
                for m in &response.members {
                    if m.raft_id != response.raft_id {
                        transport.set_peer(m.raft_id, &m.raft_addr)?;
                    }
                }
                return Ok((
                    response.raft_id,
                    response.members.into_iter().map(Into::into).collect(),
                ));
            }
            Ok(_) => "the cluster answered without a raft id".to_string(),
            Err(TransportError::Refused {
                code: tonic::Code::FailedPrecondition,
                message,
                ..
            }) => return Err(NodeError::Join(message)),
            Err(TransportError::Refused { message, .. })
                if message.starts_with(sqlraft_transport::REMOVED) =>
            {
                return Err(NodeError::Join(message));
            }
            Err(e @ TransportError::InvalidAddress { .. }) => {
                return Err(NodeError::Join(e.to_string()));
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() + pause > deadline {
            return Err(NodeError::Join(format!(
                "gave up after {} ms: {error}",
                config.limits.join_timeout_ms
            )));
        }
        tracing::info!(via = addr, %error, "join not possible yet, retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// A new cluster's first entry adds the first node as a voter and records who it is,
/// so every node that replays the log learns the first member like any other.
pub(crate) fn bootstrap(
    log: &mut LogStore,
    service_id: &str,
    raft_addr: &str,
    http_addr: &str,
) -> Result<()> {
    let member = pb::Member {
        raft_id: 1,
        service_id: service_id.to_string(),
        raft_addr: raft_addr.to_string(),
        http_addr: http_addr.to_string(),
    };
    let cc = ConfChangeV2 {
        changes: vec![ConfChangeSingle {
            change_type: ConfChangeType::AddNode as i32,
            node_id: 1,
        }],
        context: member.encode_to_vec(),
        ..Default::default()
    };
    let entry = Entry {
        entry_type: EntryType::EntryConfChangeV2 as i32,
        term: 1,
        index: 1,
        data: prost_011::Message::encode_to_vec(&cc),
        ..Default::default()
    };
    let hs = HardState {
        term: 1,
        vote: 0,
        commit: 1,
    };
    let cs = ConfState {
        voters: vec![1],
        ..Default::default()
    };
    log.write(&[entry], Some(&hs), Some(&cs))?;
    tracing::info!(service_id, raft_addr, "bootstrapped a new cluster");
    Ok(())
}
