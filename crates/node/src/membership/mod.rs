//! Membership decisions, apart from the raft loop that carries them out (as openraft's
//! `engine` is apart from its IO): whom to admit ([`admission`]), how to remove a
//! service ([`removal`]), when to promote learners (here: only so that the number of
//! voters stays odd), and the conf changes that do it. Pure functions of what the
//! leader knows, tested without a cluster.

pub(crate) mod admission;
pub(crate) mod removal;

use crate::error::{NodeError, Result};
use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};

/// What the leader knows when it considers a promotion.
pub(crate) struct PromotionInput<'a> {
    pub voters: &'a [u64],
    pub learners: &'a [u64],
    /// `(id, matched index)` of every learner.
    pub matched: &'a [(u64, u64)],
    pub commit_index: u64,
    pub catch_up_entries: u64,
}

/// The learners to promote now, if any. Voters stay odd: with an odd count, two
/// caught-up learners are promoted together (one joint-consensus change); an even count
/// (only after a manual change) is fixed by promoting one.
pub(crate) fn learners_to_promote(input: &PromotionInput<'_>) -> Vec<u64> {
    let mut caught_up: Vec<u64> = input
        .learners
        .iter()
        .copied()
        .filter(|id| {
            input.matched.iter().any(|&(learner, matched)| {
                learner == *id && matched + input.catch_up_entries >= input.commit_index
            })
        })
        .collect();
    caught_up.sort_unstable();
    let wanted = if input.voters.len().is_multiple_of(2) {
        1
    } else {
        2
    };
    if caught_up.len() < wanted {
        return Vec::new();
    }
    caught_up.truncate(wanted);
    caught_up
}

/// A conf change that makes `ids` voters; several at once go through joint consensus
/// and leave it automatically.
pub(crate) fn promote(ids: &[u64]) -> ConfChangeV2 {
    let changes = ids
        .iter()
        .map(|&id| ConfChangeSingle {
            change_type: ConfChangeType::AddNode as i32,
            node_id: id,
        })
        .collect();
    ConfChangeV2 {
        transition: ConfChangeTransition::Auto as i32,
        changes,
        context: Vec::new(),
    }
}

/// A conf change that removes `id` and, when given, demotes `demote` to learner in the
/// same (joint) change so that the number of voters stays odd.
pub(crate) fn remove(id: u64, demote: Option<u64>) -> ConfChangeV2 {
    let mut changes = vec![ConfChangeSingle {
        change_type: ConfChangeType::RemoveNode as i32,
        node_id: id,
    }];
    if let Some(other) = demote {
        changes.push(ConfChangeSingle {
            change_type: ConfChangeType::AddLearnerNode as i32,
            node_id: other,
        });
    }
    ConfChangeV2 {
        transition: ConfChangeTransition::Auto as i32,
        changes,
        context: Vec::new(),
    }
}

/// A conf change that adds `id` as a learner.
pub(crate) fn add_learner(id: u64, context: Vec<u8>) -> ConfChangeV2 {
    ConfChangeV2 {
        transition: ConfChangeTransition::Auto as i32,
        changes: vec![ConfChangeSingle {
            change_type: ConfChangeType::AddLearnerNode as i32,
            node_id: id,
        }],
        context,
    }
}

/// A service's address must be `host:port`, its host the service's FQDN (or an IP
/// address given as both).
pub(crate) fn check_service_address(fqdn: &str, raft_addr: &str) -> Result<()> {
    let invalid = |m: String| NodeError::Invalid(m);
    if fqdn.is_empty()
        || fqdn.len() > 253
        || fqdn
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
    {
        return Err(invalid(format!("{fqdn:?} is not a host name")));
    }
    let Some((host, port)) = raft_addr.rsplit_once(':') else {
        return Err(invalid(format!("raft address {raft_addr:?} has no port")));
    };
    // Written as the node will write it: a join is admitted only with the address the
    // service was created with, byte for byte.
    match port.parse::<u16>() {
        Ok(p) if p > 0 && p.to_string() == port => {}
        _ => {
            return Err(invalid(format!(
                "raft address {raft_addr:?}: port must be 1-65535, without leading zeros"
            )));
        }
    }
    if fqdn
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified() || ip.is_multicast())
    {
        return Err(invalid(format!(
            "{fqdn} is not an address other services can reach"
        )));
    }
    if host != fqdn {
        return Err(invalid(format!(
            "raft address {raft_addr:?} does not name host {fqdn}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by a hostile tester: `127.0.0.5:017209` was created, and the service
    /// started with `127.0.0.5:17209` could never join; `0.0.0.0` was accepted.
    #[test]
    fn service_addresses_are_written_one_way_and_reachable() {
        assert!(check_service_address("core-2.example.com", "core-2.example.com:7209").is_ok());
        assert!(check_service_address("127.0.0.5", "127.0.0.5:17209").is_ok());
        for (fqdn, addr) in [
            ("127.0.0.5", "127.0.0.5:017209"),
            ("127.0.0.5", "127.0.0.5:+7209"),
            ("0.0.0.0", "0.0.0.0:1"),
            ("224.0.0.1", "224.0.0.1:7209"),
            ("127.0.0.5", "127.0.0.5:0"),
        ] {
            let e = check_service_address(fqdn, addr).expect_err(addr);
            assert!(matches!(e, NodeError::Invalid(_)), "{addr}: {e}");
        }
    }

    fn promote_now(voters: &[u64], learners: &[u64], matched: &[(u64, u64)]) -> Vec<u64> {
        learners_to_promote(&PromotionInput {
            voters,
            learners,
            matched,
            commit_index: 1000,
            catch_up_entries: 10,
        })
    }

    #[test]
    fn one_learner_waits_for_a_second() {
        assert!(promote_now(&[1], &[2], &[(2, 1000)]).is_empty());
        assert!(promote_now(&[1, 2, 3], &[4], &[(4, 1000)]).is_empty());
    }

    #[test]
    fn two_caught_up_learners_are_promoted_together() {
        assert_eq!(
            promote_now(&[1], &[2, 3], &[(2, 995), (3, 1000)]),
            vec![2, 3]
        );
        assert_eq!(
            promote_now(&[1, 2, 3], &[6, 4, 5], &[(4, 1000), (5, 1000), (6, 1000)]),
            vec![4, 5]
        );
    }

    #[test]
    fn lagging_learners_are_not_promoted() {
        assert!(promote_now(&[1], &[2, 3], &[(2, 1000), (3, 500)]).is_empty());
        assert!(promote_now(&[1], &[2, 3], &[(2, 1000)]).is_empty());
    }

    #[test]
    fn an_even_voter_count_is_fixed_with_one_learner() {
        assert_eq!(promote_now(&[1, 2], &[3], &[(3, 1000)]), vec![3]);
    }

    #[test]
    fn promotion_change_is_joint_for_two() {
        let cc = promote(&[2, 3]);
        assert_eq!(cc.changes.len(), 2);
        assert_eq!(cc.transition, ConfChangeTransition::Auto as i32);
    }
}
