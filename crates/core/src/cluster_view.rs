//! The cluster as this node sees it, for the cluster API, the services API and the web
//! interface: roles, readiness, every member with what it says of itself (asked over
//! the raft transport).

use std::time::Duration;

use sqlraft::{Node, Role, Status};

/// The role name shown by the API. A node not yet in the configuration it knows of
/// (just admitted, catching up) is shown as a learner.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Joining => "learner",
        other => other.as_str(),
    }
}

/// Ready: a leader is known and this node has applied what it knows to be committed.
pub fn readiness(status: &Status) -> Result<(), String> {
    if status.leader_id == 0 {
        return Err("no leader known".into());
    }
    if status.applied_index < status.leader_commit_index {
        return Err(format!(
            "applied index {} is behind the leader's commit index {}",
            status.applied_index, status.leader_commit_index
        ));
    }
    Ok(())
}

/// What a probe of another member found.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub(crate) role: Option<String>,
    pub(crate) applied_index: Option<u64>,
    pub(crate) term: Option<u64>,
    /// The version it runs.
    pub(crate) version: Option<String>,
    /// Seconds the answer took.
    pub(crate) seconds: f64,
}

/// Asks a member about itself over the raft transport (mutual TLS), not its HTTP API:
/// that may need HTTPS or credentials this node does not have.
async fn probe(node: Node, raft_addr: String, timeout: Duration) -> Result<Probe, String> {
    let started = std::time::Instant::now();
    let report = node
        .member_status(&raft_addr, timeout)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Probe {
        role: Some(role_name_of(&report.role).to_string()),
        applied_index: Some(report.applied_index),
        term: Some(report.term),
        version: Some(report.version),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The API's name for a role another member reports (`joining` shows as `learner`).
fn role_name_of(role: &str) -> &str {
    match role {
        "joining" => "learner",
        other => other,
    }
}

/// One member of the configuration with what is known of it right now.
#[derive(Debug, Clone)]
pub(crate) struct LiveMember {
    pub(crate) raft_id: u64,
    pub(crate) service_id: String,
    pub(crate) raft_addr: String,
    pub(crate) http_addr: String,
    pub(crate) voter: bool,
    pub(crate) role: String,
    pub(crate) reachable: bool,
    pub(crate) applied_index: Option<u64>,
    pub(crate) term: Option<u64>,
    /// Seconds its `/status` took to answer (0 for this node).
    pub(crate) seconds: f64,
    /// The version it runs, as its `/status` says; `None` when not known.
    pub(crate) version: Option<String>,
    /// Why its `/status` could not be read, when it could not.
    pub(crate) error: Option<String>,
}

/// This node's status and every member it knows, each other member asked about itself
/// in parallel (bounded by `timeout`). Reachability comes from raft on the
/// leader, from the probe elsewhere.
pub(crate) async fn live_members(node: &Node, timeout: Duration) -> (Status, Vec<LiveMember>) {
    let s = node.status();
    let mut probes = tokio::task::JoinSet::new();
    for m in &s.members {
        if m.raft_id != s.raft_id {
            let (id, addr, node) = (m.raft_id, m.raft_addr.clone(), node.clone());
            probes.spawn(async move { (id, probe(node, addr, timeout).await) });
        }
    }
    let mut found = std::collections::HashMap::new();
    let mut failed = std::collections::HashMap::new();
    while let Some(joined) = probes.join_next().await {
        match joined {
            Ok((id, Ok(p))) => {
                found.insert(id, p);
            }
            Ok((id, Err(e))) => {
                failed.insert(id, e);
            }
            Err(_) => {}
        }
    }
    let leader = s.role == Role::Leader;
    let members = s
        .members
        .iter()
        .map(|m| {
            let me = m.raft_id == s.raft_id;
            let probed = found.get(&m.raft_id);
            let configured = if m.raft_id == s.leader_id {
                "leader"
            } else if m.voter {
                "follower"
            } else {
                "learner"
            };
            let role = if me {
                role_name(s.role).to_string()
            } else {
                probed
                    .and_then(|p| p.role.clone())
                    .unwrap_or_else(|| configured.into())
            };
            let reachable = if me {
                true
            } else if leader {
                m.reachable.unwrap_or(false)
            } else {
                probed.is_some()
            };
            let (applied_index, term) = if me {
                (Some(s.applied_index), Some(s.term))
            } else {
                (
                    probed.and_then(|p| p.applied_index),
                    probed.and_then(|p| p.term),
                )
            };
            let error = if me {
                None
            } else {
                failed.get(&m.raft_id).cloned()
            };
            LiveMember {
                raft_id: m.raft_id,
                service_id: m.service_id.clone(),
                raft_addr: m.raft_addr.clone(),
                http_addr: m.http_addr.clone(),
                voter: m.voter,
                role,
                reachable,
                applied_index,
                term,
                seconds: probed.map_or(0.0, |p| p.seconds),
                version: if me {
                    Some(env!("CARGO_PKG_VERSION").to_string())
                } else {
                    probed.and_then(|p| p.version.clone())
                },
                error,
            }
        })
        .collect();
    (s, members)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn status(applied: u64, commit: u64, leader_commit: u64, leader_id: u64) -> Status {
        Status {
            raft_id: 2,
            service_id: "s".into(),
            role: Role::Follower,
            leader_id,
            term: 3,
            commit_index: commit,
            leader_commit_index: leader_commit,
            applied_index: applied,
            last_index: commit,
            first_index: 1,
            log_bytes: 0,
            snapshot: None,
            snapshots_installed: 0,
            voters: vec![1, 2, 3],
            voters_outgoing: Vec::new(),
            learners: Vec::new(),
            members: Vec::new(),
        }
    }

    #[test]
    fn ready_means_caught_up_with_the_leader_not_with_the_own_log() {
        assert!(readiness(&status(10, 10, 10, 1)).is_ok());
        // Its own log ends at 10, but the leader said 50 is committed.
        let behind = readiness(&status(10, 10, 50, 1)).unwrap_err();
        assert!(behind.contains("leader's commit index 50"), "{behind}");
        assert!(readiness(&status(10, 10, 10, 0)).is_err(), "no leader");
    }
}
