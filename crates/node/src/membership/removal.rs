//! How a service leaves: what the leader proposes for a removal.

use raft::eraftpb::ConfState;
use sqlraft_sqlite::{Service, ServiceState};

use crate::error::{NodeError, Result};

/// What the leader knows when it is asked to remove a service.
pub(crate) struct RemovalInput<'a> {
    /// The service's registry entry.
    pub service: Option<&'a Service>,
    /// The configuration now.
    pub conf: &'a ConfState,
    /// The leader's raft id.
    pub me: u64,
    /// A conf change is proposed and not applied yet.
    pub pending_conf: bool,
    /// `(raft id, matched index)` of every member the leader tracks.
    pub matched: &'a [(u64, u64)],
}

/// What to propose.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Removal {
    /// The service never joined: mark it removed in the registry.
    Registry,
    /// It is the leader: hand leadership to this voter first; the caller retries.
    HandOver { to: u64 },
    /// Leave the configuration; a voter whose removal would leave an even number of
    /// voters takes `demote` down to learner in the same joint change.
    Conf { raft_id: u64, demote: Option<u64> },
}

/// The plan for removing service `id`.
pub(crate) fn plan(id: &str, input: &RemovalInput<'_>) -> Result<Removal> {
    let service = input
        .service
        .ok_or_else(|| NodeError::NotFound(format!("no service with id {id}")))?;
    let raft_id = match (service.state, service.raft_id) {
        (ServiceState::Removed, _) => {
            return Err(NodeError::Conflict(format!(
                "service {id} is already removed"
            )));
        }
        (ServiceState::Created, _) | (_, None) => return Ok(Removal::Registry),
        (_, Some(raft_id)) => raft_id,
    };
    if input.pending_conf {
        return Err(NodeError::Busy("another membership change is in progress"));
    }
    let conf = input.conf;
    if !conf.voters_outgoing.is_empty() {
        return Err(NodeError::Busy(
            "the cluster is leaving a joint configuration",
        ));
    }
    let matched = |v: u64| {
        input
            .matched
            .iter()
            .find(|(id, _)| *id == v)
            .map_or(0, |(_, m)| *m)
    };
    let others = || conf.voters.iter().copied().filter(|v| *v != input.me);
    if raft_id == input.me {
        // The most caught-up other voter takes over.
        return match others().max_by_key(|v| matched(*v)) {
            Some(to) => Ok(Removal::HandOver { to }),
            None => Err(NodeError::Invalid(
                "the only voter cannot be removed; add services first or use raft/.reset".into(),
            )),
        };
    }
    let demote = if conf.voters.contains(&raft_id) {
        let remaining: Vec<u64> = conf
            .voters
            .iter()
            .copied()
            .filter(|v| *v != raft_id)
            .collect();
        if remaining.is_empty() {
            return Err(NodeError::Invalid(
                "the only voter cannot be removed".into(),
            ));
        }
        if remaining.len().is_multiple_of(2) {
            // Keep voters odd: the least caught-up other voter, never the leader.
            remaining
                .into_iter()
                .filter(|v| *v != input.me)
                .min_by_key(|v| matched(*v))
        } else {
            None
        }
    } else {
        None
    };
    Ok(Removal::Conf { raft_id, demote })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member_service(raft_id: Option<u64>, state: ServiceState) -> Service {
        Service {
            id: "s".into(),
            name: String::new(),
            fqdn: "h".into(),
            raft_addr: "h:1".into(),
            state,
            raft_id,
            created_at_ms: 0,
            updated_index: 1,
        }
    }

    fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            ..Default::default()
        }
    }

    fn plan_for(service: &Service, conf: &ConfState, matched: &[(u64, u64)]) -> Result<Removal> {
        plan(
            "s",
            &RemovalInput {
                service: Some(service),
                conf,
                me: 1,
                pending_conf: false,
                matched,
            },
        )
    }

    #[test]
    fn removing_a_voter_of_five_demotes_the_least_caught_up_other_voter() {
        let c = conf(&[1, 2, 3, 4, 5], &[]);
        let s = member_service(Some(3), ServiceState::Voter);
        let matched = [(1, 100), (2, 90), (3, 80), (4, 10), (5, 95)];
        assert_eq!(
            plan_for(&s, &c, &matched).expect("plan"),
            Removal::Conf {
                raft_id: 3,
                demote: Some(4)
            }
        );
    }

    #[test]
    fn removing_a_learner_or_a_voter_of_an_even_rest_demotes_nobody() {
        let learner = member_service(Some(4), ServiceState::Learner);
        let c = conf(&[1, 2, 3], &[4]);
        assert_eq!(
            plan_for(&learner, &c, &[]).expect("plan"),
            Removal::Conf {
                raft_id: 4,
                demote: None
            }
        );
        // Four voters (after a manual change): removing one leaves three.
        let voter = member_service(Some(2), ServiceState::Voter);
        let c = conf(&[1, 2, 3, 4], &[]);
        assert_eq!(
            plan_for(&voter, &c, &[]).expect("plan"),
            Removal::Conf {
                raft_id: 2,
                demote: None
            }
        );
    }

    #[test]
    fn the_leader_hands_over_to_the_most_caught_up_voter_first() {
        let leader = member_service(Some(1), ServiceState::Voter);
        let c = conf(&[1, 2, 3], &[]);
        let matched = [(1, 100), (2, 50), (3, 99)];
        assert_eq!(
            plan_for(&leader, &c, &matched).expect("plan"),
            Removal::HandOver { to: 3 }
        );
        let alone = conf(&[1], &[]);
        assert!(matches!(
            plan_for(&leader, &alone, &[]),
            Err(NodeError::Invalid(_))
        ));
    }

    #[test]
    fn never_joined_removed_unknown_and_busy() {
        let c = conf(&[1, 2, 3], &[]);
        let created = member_service(None, ServiceState::Created);
        assert_eq!(
            plan_for(&created, &c, &[]).expect("plan"),
            Removal::Registry
        );
        let removed = member_service(Some(2), ServiceState::Removed);
        assert!(matches!(
            plan_for(&removed, &c, &[]),
            Err(NodeError::Conflict(_))
        ));
        let unknown = plan(
            "x",
            &RemovalInput {
                service: None,
                conf: &c,
                me: 1,
                pending_conf: false,
                matched: &[],
            },
        );
        assert!(matches!(unknown, Err(NodeError::NotFound(_))));
        let voter = member_service(Some(2), ServiceState::Voter);
        let joint = ConfState {
            voters_outgoing: vec![1, 2, 3],
            ..conf(&[1, 3], &[])
        };
        assert!(matches!(
            plan_for(&voter, &joint, &[]),
            Err(NodeError::Busy(_))
        ));
        let pending = plan(
            "s",
            &RemovalInput {
                service: Some(&voter),
                conf: &c,
                me: 1,
                pending_conf: true,
                matched: &[],
            },
        );
        assert!(matches!(pending, Err(NodeError::Busy(_))));
    }
}
