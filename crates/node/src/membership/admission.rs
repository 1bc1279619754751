//! Whom the leader admits when a service asks to join.

use sqlraft_sqlite::{Member, Service, ServiceState};

use crate::config::Admission;
use crate::error::{NodeError, Result};

/// What the leader knows when a service asks to join.
pub(crate) struct AdmissionInput<'a> {
    /// Members of the applied configuration.
    pub members: &'a [Member],
    /// The asking service's registry entry, if it has one.
    pub registered: Option<&'a Service>,
    pub admission: Admission,
    /// A conf change is proposed and not applied, a join is waiting for its entry, or
    /// the configuration is joint.
    pub change_in_progress: bool,
    /// The highest raft id ever given out (members, configuration, registry).
    pub highest_raft_id: u64,
}

/// What to do with a join request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// It is a member already with that address (a retried join): answer it.
    AlreadyMember,
    /// Propose adding it as a learner with this raft id.
    AsLearner { raft_id: u64 },
}

/// The decision for service `id` asking to join at `raft_addr`.
pub(crate) fn admit(id: &str, raft_addr: &str, input: &AdmissionInput<'_>) -> Result<Admit> {
    if let Some(m) = input.members.iter().find(|m| m.service_id == id) {
        if m.raft_addr == raft_addr {
            return Ok(Admit::AlreadyMember);
        }
        return Err(NodeError::Join(format!(
            "service {id} is already a member with raft address {}",
            m.raft_addr
        )));
    }
    if let Some(m) = input.members.iter().find(|m| m.raft_addr == raft_addr) {
        return Err(NodeError::Join(format!(
            "raft address {} is already used by service {}",
            m.raft_addr, m.service_id
        )));
    }
    check_registration(id, raft_addr, input.registered, input.admission)?;
    if input.change_in_progress {
        // In a joint configuration raft-rs would turn the change into an empty entry
        // and still report success.
        return Err(NodeError::Busy("another membership change is in progress"));
    }
    Ok(Admit::AsLearner {
        raft_id: input.highest_raft_id + 1,
    })
}

/// A removed service never joins again; with registered admission, only a created
/// service may join, with the raft address it was created with.
fn check_registration(
    id: &str,
    raft_addr: &str,
    registered: Option<&Service>,
    admission: Admission,
) -> Result<()> {
    match (admission, registered) {
        (_, Some(s)) if s.state == ServiceState::Removed => Err(NodeError::ServiceRemoved(
            format!("service {id} was removed from the cluster and cannot join again"),
        )),
        (Admission::Open, _) => Ok(()),
        (Admission::Registered, None) => Err(NodeError::Join(format!(
            "service {id} was never created: create it in the web interface (or POST /api/v1/services) first"
        ))),
        (Admission::Registered, Some(s)) if s.raft_addr != raft_addr => {
            Err(NodeError::Join(format!(
                "service {id} was created with raft address {}, not {raft_addr}",
                s.raft_addr
            )))
        }
        (Admission::Registered, Some(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(raft_id: u64, id: &str, addr: &str) -> Member {
        Member {
            raft_id,
            service_id: id.into(),
            raft_addr: addr.into(),
            http_addr: String::new(),
        }
    }

    fn service(id: &str, addr: &str, state: ServiceState) -> Service {
        Service {
            id: id.into(),
            name: String::new(),
            fqdn: "h".into(),
            raft_addr: addr.into(),
            state,
            raft_id: None,
            created_at_ms: 0,
            updated_index: 1,
        }
    }

    fn input<'a>(members: &'a [Member], registered: Option<&'a Service>) -> AdmissionInput<'a> {
        AdmissionInput {
            members,
            registered,
            admission: Admission::Registered,
            change_in_progress: false,
            highest_raft_id: 7,
        }
    }

    #[test]
    fn a_created_service_is_admitted_as_a_learner_with_a_fresh_id() {
        let members = [member(1, "a", "h1:1")];
        let created = service("b", "h2:1", ServiceState::Created);
        let decision = admit("b", "h2:1", &input(&members, Some(&created)));
        assert_eq!(decision.expect("admitted"), Admit::AsLearner { raft_id: 8 });
    }

    #[test]
    fn a_retried_join_is_answered_and_address_conflicts_are_refused() {
        let members = [member(1, "a", "h1:1"), member(2, "b", "h2:1")];
        let i = input(&members, None);
        assert_eq!(
            admit("b", "h2:1", &i).expect("member"),
            Admit::AlreadyMember
        );
        let moved = admit("b", "h3:1", &i).expect_err("another address");
        assert!(moved.to_string().contains("already a member"), "{moved}");
        let taken = admit("c", "h2:1", &i).expect_err("address taken");
        assert!(
            taken.to_string().contains("already used by service b"),
            "{taken}"
        );
    }

    #[test]
    fn registration_rules() {
        let members = [member(1, "a", "h1:1")];
        let never = admit("b", "h2:1", &input(&members, None)).expect_err("never created");
        assert!(never.to_string().contains("never created"), "{never}");
        let other_addr = service("b", "h2:1", ServiceState::Created);
        let wrong = admit("b", "h2:2", &input(&members, Some(&other_addr))).expect_err("addr");
        assert!(
            wrong.to_string().contains("created with raft address h2:1"),
            "{wrong}"
        );
        let removed = service("b", "h2:1", ServiceState::Removed);
        for admission in [Admission::Registered, Admission::Open] {
            let mut i = input(&members, Some(&removed));
            i.admission = admission;
            let e = admit("b", "h2:1", &i).expect_err("removed");
            assert!(matches!(e, NodeError::ServiceRemoved(_)), "{e}");
        }
        let mut open = input(&members, None);
        open.admission = Admission::Open;
        assert!(admit("b", "h2:1", &open).is_ok());
    }

    #[test]
    fn one_membership_change_at_a_time() {
        let members = [member(1, "a", "h1:1")];
        let created = service("b", "h2:1", ServiceState::Created);
        let mut i = input(&members, Some(&created));
        i.change_in_progress = true;
        let e = admit("b", "h2:1", &i).expect_err("busy");
        assert!(e.never_proposed(), "{e}");
    }
}
