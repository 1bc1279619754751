//! Requests that must run on the leader, from wherever they are made: one loop that
//! runs a request here when this node leads, forwards it to the leader otherwise, and
//! retries only what cannot be applied twice. Also the wire form of errors between
//! the forwarding node and the leader.

use std::time::{Duration, Instant};

use sqlraft_proto::v1 as pb;
use sqlraft_transport::{Transport, TransportError};

use crate::error::{ErrorKind, NodeError, Result};
use crate::handle::Handle;
use crate::status::Role;
use crate::write::WriteOutcome;

/// A request for the leader.
pub(crate) enum LeaderRequest {
    /// A client write; a retry carries the same request id.
    Write(pb::WriteRequest),
    /// Administration (create or remove a service); has no request id.
    Admin(pb::admin_request::Kind),
}

/// How much longer a forwarded request waits than the leader does.
const FORWARD_MARGIN: Duration = Duration::from_secs(2);

impl LeaderRequest {
    /// How long the leader may take to answer it.
    fn wait(&self, write_timeout: Duration) -> Duration {
        match self {
            LeaderRequest::Write(_) => write_timeout,
            LeaderRequest::Admin(kind) => crate::handle::admin_wait(write_timeout, Some(kind)),
        }
    }
}

/// The leader's answer.
pub(crate) enum LeaderAnswer {
    Write(WriteOutcome),
    /// The index of the entry that carried the administrative change.
    Admin(u64),
}

impl LeaderRequest {
    /// Whether trying again after `e` is safe. A request that was never proposed can
    /// always be retried; one whose outcome is unknown only with a request id, which
    /// makes the leader answer the retry from the first attempt.
    fn may_retry(&self, e: &NodeError) -> bool {
        let deduplicated = matches!(self, LeaderRequest::Write(w) if !w.request_id.is_empty());
        e.never_proposed()
            || (deduplicated && matches!(e, NodeError::UnknownOutcome(_) | NodeError::Dropped))
    }

    fn to_forward(&self) -> pb::ForwardRequest {
        match self {
            LeaderRequest::Write(w) => pb::ForwardRequest {
                request: Some(w.clone()),
                admin: None,
            },
            LeaderRequest::Admin(kind) => pb::ForwardRequest {
                request: None,
                admin: Some(pb::AdminRequest {
                    kind: Some(kind.clone()),
                }),
            },
        }
    }
}

impl Handle {
    /// Runs `request` on the leader until it is answered, retrying while that is safe
    /// and time is left.
    pub async fn on_leader(&self, mut request: LeaderRequest) -> Result<LeaderAnswer> {
        let wait = request.wait(self.write_timeout());
        let deadline = Instant::now() + wait;
        // Administration waits a whole tick: a removal of the leader retried too soon
        // would restart the leadership transfer it is waiting for.
        let pause = match request {
            LeaderRequest::Write(_) => Duration::from_millis(self.config.raft.tick_ms / 2 + 1),
            LeaderRequest::Admin(_) => Duration::from_millis(self.config.raft.tick_ms),
        };
        // Set once an attempt may have been applied: whatever later attempts say, the
        // request's outcome can no longer be "not applied".
        let mut maybe_applied: Option<NodeError> = None;
        loop {
            let status = self.shared.status();
            let attempt = if let Err(stopped) = self.check_running() {
                Err(stopped)
            } else if status.role == Role::Leader {
                self.run_here(&mut request, deadline).await
            } else if let Some(leader) = status.leader() {
                if let LeaderRequest::Write(w) = &mut request
                    && w.request_id.is_empty()
                {
                    // Forwarded writes carry a request id, so that this node can retry
                    // one whose outcome it did not hear without applying it twice.
                    w.request_id = format!("sqlraft-forward-{}", uuid::Uuid::new_v4());
                }
                let forward = request.to_forward();
                // A write's attempt waits the transport's request timeout, so that a
                // hung old leader leaves time to try the new one; administration
                // waits what is left (a restore's commit takes long on the leader),
                // and a little more than the leader itself waits.
                let attempt_wait = match request {
                    LeaderRequest::Write(_) => Duration::ZERO,
                    LeaderRequest::Admin(_) => {
                        deadline.saturating_duration_since(Instant::now()) + FORWARD_MARGIN
                    }
                };
                send_to_leader(
                    &self.transport,
                    &leader.raft_addr,
                    leader.raft_id,
                    forward,
                    attempt_wait,
                )
                .await
                .and_then(answer_of)
            } else {
                Err(NodeError::NoLeader)
            };
            match attempt {
                Err(e) if request.may_retry(&e) && Instant::now() < deadline => {
                    if matches!(e, NodeError::UnknownOutcome(_)) && maybe_applied.is_none() {
                        maybe_applied = Some(e);
                    }
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(still_unknown(maybe_applied, e)),
                Ok(answer) => return Ok(answer),
            }
        }
    }

    async fn run_here(
        &self,
        request: &mut LeaderRequest,
        deadline: Instant,
    ) -> Result<LeaderAnswer> {
        match request {
            LeaderRequest::Write(w) => self.propose(w, deadline).await.map(LeaderAnswer::Write),
            LeaderRequest::Admin(kind) => {
                let admin = pb::AdminRequest {
                    kind: Some(kind.clone()),
                };
                let outcome = self.admin_local(admin).await?;
                Ok(LeaderAnswer::Admin(outcome.index))
            }
        }
    }
}

/// The error a request ends with after its last attempt failed with `last`: when an
/// earlier attempt may have been applied, an unknown outcome (never "not applied",
/// which a client would retry without its request id), unless the node failed.
fn still_unknown(maybe_applied: Option<NodeError>, last: NodeError) -> NodeError {
    match maybe_applied {
        Some(first) if !matches!(last.kind(), ErrorKind::UnknownOutcome | ErrorKind::Fatal) => {
            NodeError::UnknownOutcome(format!("{first}; retried until the deadline, then: {last}"))
        }
        _ => last,
    }
}

fn answer_of(outcome: pb::forward_response::Outcome) -> Result<LeaderAnswer> {
    match outcome {
        pb::forward_response::Outcome::Response(r) => Ok(LeaderAnswer::Write(WriteOutcome {
            results: r.results.into_iter().map(Into::into).collect(),
            raft_index: r.raft_index,
            applied_here: false,
            seconds: r.seconds,
        })),
        pb::forward_response::Outcome::Admin(a) => Ok(LeaderAnswer::Admin(a.raft_index)),
        pb::forward_response::Outcome::Error(e) => Err(error_from_peer(e)),
    }
}

/// Sends a request to the leader at `addr`; a transport failure that certainly left
/// the request unsent is `NoLeader` (safe to retry), any other is an unknown outcome.
async fn send_to_leader(
    transport: &Transport,
    addr: &str,
    leader_id: u64,
    request: pb::ForwardRequest,
    wait: Duration,
) -> Result<pb::forward_response::Outcome> {
    let response = match transport
        .forward_within(addr, leader_id, request, wait)
        .await
    {
        Ok(response) => response,
        Err(TransportError::Blocked(_) | TransportError::InvalidAddress { .. }) => {
            return Err(NodeError::NoLeader);
        }
        Err(TransportError::Unreachable {
            never_sent: true, ..
        }) => {
            return Err(NodeError::NoLeader);
        }
        Err(e) => return Err(NodeError::UnknownOutcome(e.to_string())),
    };
    response
        .outcome
        .ok_or_else(|| NodeError::UnknownOutcome("empty answer from the leader".into()))
}

/// How an error of a forwarded request travels back to the node that sent it.
pub(crate) fn forward_error(e: &NodeError) -> pb::ForwardResponse {
    use pb::forward_error::Kind;
    let kind = match e {
        NodeError::NoLeader | NodeError::LeaderChanging => Kind::NotLeader,
        NodeError::Dropped => Kind::Dropped,
        NodeError::Invalid(_) => Kind::Invalid,
        NodeError::Busy(_) | NodeError::Stopped => Kind::Unavailable,
        NodeError::Conflict(_) => Kind::Conflict,
        NodeError::NotFound(_) => Kind::NotFound,
        _ => Kind::UnknownOutcome,
    };
    // The variant's own text: the receiving side puts the variant back around it.
    let message = match e {
        NodeError::Invalid(m)
        | NodeError::Conflict(m)
        | NodeError::NotFound(m)
        | NodeError::UnknownOutcome(m) => m.clone(),
        other => other.to_string(),
    };
    pb::ForwardResponse {
        outcome: Some(pb::forward_response::Outcome::Error(pb::ForwardError {
            kind: kind as i32,
            message,
        })),
    }
}

/// The error a forwarded request came back with.
fn error_from_peer(e: pb::ForwardError) -> NodeError {
    use pb::forward_error::Kind;
    match e.kind() {
        Kind::NotLeader => NodeError::NoLeader,
        Kind::Dropped => NodeError::Dropped,
        Kind::Invalid => NodeError::Invalid(e.message),
        Kind::Unavailable => NodeError::Busy("leader unavailable"),
        Kind::Conflict => NodeError::Conflict(e.message),
        Kind::NotFound => NodeError::NotFound(e.message),
        Kind::UnknownOutcome | Kind::Unspecified => NodeError::UnknownOutcome(e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(request_id: &str) -> LeaderRequest {
        LeaderRequest::Write(pb::WriteRequest {
            request_id: request_id.into(),
            ..Default::default()
        })
    }

    #[test]
    fn only_what_cannot_apply_twice_is_retried() {
        let unknown = NodeError::UnknownOutcome("leader lost".into());
        assert!(write("").may_retry(&NodeError::NoLeader));
        assert!(!write("").may_retry(&unknown));
        assert!(!write("").may_retry(&NodeError::Dropped));
        assert!(write("r1").may_retry(&unknown));
        assert!(write("r1").may_retry(&NodeError::Dropped));
        let admin = LeaderRequest::Admin(pb::admin_request::Kind::RemoveService("s".into()));
        assert!(admin.may_retry(&NodeError::LeaderChanging));
        assert!(!admin.may_retry(&unknown));
        assert!(!write("r1").may_retry(&NodeError::Invalid("bad".into())));
    }

    #[test]
    fn errors_survive_the_trip_back_from_the_leader() {
        for e in [
            NodeError::NoLeader,
            NodeError::Dropped,
            NodeError::Invalid("bad".into()),
            NodeError::Conflict("taken".into()),
            NodeError::NotFound("none".into()),
            NodeError::UnknownOutcome("lost".into()),
        ] {
            let Some(pb::forward_response::Outcome::Error(wire)) = forward_error(&e).outcome else {
                panic!("no error on the wire for {e}");
            };
            let back = error_from_peer(wire);
            assert_eq!(back.kind(), e.kind(), "{e}");
            if !matches!(e, NodeError::NoLeader) {
                assert_eq!(
                    back.to_string(),
                    e.to_string(),
                    "said once, as the leader said it"
                );
            }
        }
    }
}

#[cfg(test)]
mod wait_tests {
    use super::*;
    use crate::handle::admin_wait;

    #[test]
    fn a_restore_commit_may_take_a_second_per_4_mib_more_than_a_write() {
        let write = Duration::from_secs(10);
        let commit = |size| {
            pb::admin_request::Kind::RestoreCommit(pb::RestoreCommit {
                id: "x".into(),
                chunks: 1,
                size,
                sha256: Vec::new(),
            })
        };
        assert_eq!(admin_wait(write, None), write);
        assert_eq!(admin_wait(write, Some(&commit(1 << 20))), write);
        assert_eq!(
            admin_wait(write, Some(&commit(406 << 20))),
            write + Duration::from_secs(101)
        );
        let create = pb::admin_request::Kind::RemoveService("s".into());
        assert_eq!(admin_wait(write, Some(&create)), write);
        assert_eq!(
            LeaderRequest::Write(pb::WriteRequest::default()).wait(write),
            write
        );
    }
}
