//! The removal watchdog. A removed node may never hear of its removal through raft:
//! the leader stops replicating to it as soon as the change is applied, and a learner
//! sends nothing on its own. So a node that has not heard from a leader for a while
//! asks a member to admit it again; "removed" as the answer stops it.

use std::sync::{PoisonError, Weak};
use std::time::Duration;

use sqlraft_proto::v1 as pb;

use crate::handle::Handle;
use crate::raft_loop::Request;
use crate::status::Role;

/// Runs until the node stops or learns that it was removed.
pub(crate) async fn removal_watchdog(node: Weak<Handle>) {
    let mut next_member = 0usize;
    loop {
        let Some(handle) = node.upgrade() else { return };
        let timings = &handle.config.raft;
        let election = Duration::from_millis(timings.tick_ms * timings.election_ticks as u64);
        drop(handle);
        tokio::time::sleep(election).await;
        let Some(handle) = node.upgrade() else { return };
        if handle.shared.stop().is_some() {
            return;
        }
        let silent_for = handle
            .shared
            .leader_contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed();
        let status = handle.shared.status();
        if status.role == Role::Leader || silent_for < election * 3 {
            continue;
        }
        let others: Vec<String> = status
            .members
            .iter()
            .filter(|m| m.raft_id != handle.raft_id)
            .map(|m| m.raft_addr.clone())
            .collect();
        let Some(addr) = others.get(next_member % others.len().max(1)).cloned() else {
            continue;
        };
        next_member += 1;
        let request = pb::JoinRequest {
            service_id: handle.service_id.clone(),
            raft_addr: handle.raft_addr.clone(),
            http_addr: handle.config.http_addr.clone().unwrap_or_default(),
        };
        if let Err(e) = handle.transport.join(&addr, request).await
            && e.says_removed()
        {
            tracing::warn!(via = %addr, "the cluster says this service was removed");
            let _ = handle.submit(Request::Removed);
            return;
        }
    }
}
