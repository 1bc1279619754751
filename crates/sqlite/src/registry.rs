//! The services registry: core services that were created (and may join), are members,
//! or were removed. Kept in the replicated state, changed only by applied entries.

use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use crate::apply::ApplyTxn;
use crate::error::{Result, SqliteError};
use crate::state_machine::StateMachine;
use crate::types::Member;

/// The service id of the first core service of a cluster.
pub const FIRST_SERVICE_ID: &str = "00000000-0000-0000-0000-000000000000";

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Created; may join with its id and raft address.
    Created,
    /// In the configuration as a learner.
    Learner,
    /// In the configuration as a voter.
    Voter,
    /// Removed; its id can never join again.
    Removed,
}

impl ServiceState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Created => "created",
            ServiceState::Learner => "learner",
            ServiceState::Voter => "voter",
            ServiceState::Removed => "removed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => ServiceState::Created,
            "learner" => ServiceState::Learner,
            "voter" => ServiceState::Voter,
            "removed" => ServiceState::Removed,
            _ => return None,
        })
    }
}

/// A registered core service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Service id (UUID text).
    pub id: String,
    /// Display name: `core-1` for the first service, `core-<fqdn>` for the others.
    pub name: String,
    /// Host name of its server.
    pub fqdn: String,
    /// Raft address it must join with.
    pub raft_addr: String,
    /// Where it is in its life.
    pub state: ServiceState,
    /// Raft id, once it joined.
    pub raft_id: Option<u64>,
    /// When it was created (proposer's clock, Unix milliseconds).
    pub created_at_ms: i64,
    /// Raft index of the entry that last changed it.
    pub updated_index: u64,
}

/// Why a registry change was refused. Deterministic: the same on every node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Another live service already uses the address or host name, or the id.
    #[error("{0}")]
    Conflict(String),
    /// No service with that id.
    #[error("no service with id {0}")]
    NotFound(String),
    /// The change does not fit the service's state.
    #[error("{0}")]
    InvalidState(String),
}

/// The name a service is shown with.
pub fn service_name(id: &str, fqdn: &str) -> String {
    if id == FIRST_SERVICE_ID {
        "core-1".to_string()
    } else {
        format!("core-{fqdn}")
    }
}

/// Host part of a `host:port` address (brackets of an IPv6 literal removed).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

const COLUMNS: &str = "id, name, fqdn, raft_addr, state, raft_id, created_at_ms, updated_index FROM _sqlraft_services";

fn row_to_service(r: &rusqlite::Row<'_>) -> rusqlite::Result<Service> {
    let state: String = r.get(4)?;
    Ok(Service {
        id: r.get(0)?,
        name: r.get(1)?,
        fqdn: r.get(2)?,
        raft_addr: r.get(3)?,
        state: ServiceState::parse(&state).unwrap_or(ServiceState::Removed),
        raft_id: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        created_at_ms: r.get(6)?,
        updated_index: r.get::<_, i64>(7)? as u64,
    })
}

fn find_service(conn: &rusqlite::Connection, id: &str) -> Result<Option<Service>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} WHERE id = ?1"),
        [id],
        row_to_service,
    )
    .optional()
    .map_err(SqliteError::Apply)
}

impl StateMachine {
    /// Every registered service, oldest first.
    pub fn services(&self) -> Result<Vec<Service>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} ORDER BY created_at_ms, id"))
            .map_err(SqliteError::Apply)?;
        let rows = stmt
            .query_map([], row_to_service)
            .map_err(SqliteError::Apply)?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(SqliteError::Apply)
    }

    /// One service by id.
    pub fn service(&self, id: &str) -> Result<Option<Service>> {
        find_service(&self.conn, id)
    }
}

impl ApplyTxn<'_> {
    fn current_index(&self) -> i64 {
        self.last_index.unwrap_or(0) as i64
    }

    fn find(&self, id: &str) -> Result<Option<Service>> {
        find_service(&self.tx, id)
    }

    /// Registers a service (entry `index`). A live service with the same id, raft
    /// address or host name is a conflict; nothing changes then.
    pub fn create_service(
        &mut self,
        index: u64,
        id: &str,
        fqdn: &str,
        raft_addr: &str,
        at_unix_ms: i64,
    ) -> Result<Result<Service, RegistryError>> {
        self.entry(index)?;
        if self.find(id)?.is_some() {
            return Ok(Err(RegistryError::Conflict(format!(
                "service id {id} already exists"
            ))));
        }
        let clash: Option<(String, String, String)> = self
            .tx
            .query_row(
                "SELECT id, fqdn, raft_addr FROM _sqlraft_services
                 WHERE state <> 'removed' AND (raft_addr = ?1 OR fqdn = ?2) LIMIT 1",
                [raft_addr, fqdn],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(SqliteError::Apply)?;
        if let Some((other, other_fqdn, other_addr)) = clash {
            let what = if other_addr == raft_addr {
                format!("raft address {raft_addr}")
            } else {
                format!("host {other_fqdn}")
            };
            return Ok(Err(RegistryError::Conflict(format!(
                "{what} is already used by service {other}"
            ))));
        }
        let service = Service {
            id: id.to_string(),
            name: service_name(id, fqdn),
            fqdn: fqdn.to_string(),
            raft_addr: raft_addr.to_string(),
            state: ServiceState::Created,
            raft_id: None,
            created_at_ms: at_unix_ms,
            updated_index: index,
        };
        self.insert(&service)?;
        Ok(Ok(service))
    }

    /// Marks a service that never joined as removed (entry `index`). A member is
    /// removed through a configuration change instead.
    pub fn remove_created_service(
        &mut self,
        index: u64,
        id: &str,
    ) -> Result<Result<(), RegistryError>> {
        self.entry(index)?;
        let Some(service) = self.find(id)? else {
            return Ok(Err(RegistryError::NotFound(id.to_string())));
        };
        match service.state {
            ServiceState::Created => {}
            ServiceState::Removed => {
                return Ok(Err(RegistryError::InvalidState(format!(
                    "service {id} is already removed"
                ))));
            }
            ServiceState::Learner | ServiceState::Voter => {
                return Ok(Err(RegistryError::InvalidState(format!(
                    "service {id} is a member: it is removed through a configuration change"
                ))));
            }
        }
        self.set_state(id, ServiceState::Removed)?;
        Ok(Ok(()))
    }

    /// Records the roles of members after a configuration change.
    pub fn set_member_roles(&mut self, voters: &[u64], learners: &[u64]) -> Result<()> {
        let index = self.current_index();
        for (ids, state) in [
            (voters, ServiceState::Voter),
            (learners, ServiceState::Learner),
        ] {
            for id in ids {
                self.tx
                    .execute(
                        "UPDATE _sqlraft_services SET state = ?1, updated_index = ?2
                         WHERE raft_id = ?3 AND state <> ?1 AND state <> 'removed'",
                        rusqlite::params![state.as_str(), index, *id as i64],
                    )
                    .map_err(SqliteError::Apply)?;
            }
        }
        Ok(())
    }

    /// A member was added: its service becomes a learner with its raft id. Services
    /// admitted without registration (open admission, the bootstrap node) are
    /// registered here.
    pub(crate) fn service_joined(&mut self, member: &Member) -> Result<()> {
        let index = self.current_index();
        if self.find(&member.service_id)?.is_some() {
            self.tx
                .execute(
                    "UPDATE _sqlraft_services SET raft_id = ?1, state = 'learner', updated_index = ?2
                     WHERE id = ?3 AND state = 'created'",
                    rusqlite::params![member.raft_id as i64, index, member.service_id],
                )
                .map_err(SqliteError::Apply)?;
            return Ok(());
        }
        let fqdn = host_of(&member.raft_addr).to_string();
        self.insert(&Service {
            id: member.service_id.clone(),
            name: service_name(&member.service_id, &fqdn),
            fqdn,
            raft_addr: member.raft_addr.clone(),
            state: ServiceState::Learner,
            raft_id: Some(member.raft_id),
            created_at_ms: 0,
            updated_index: index as u64,
        })
    }

    pub(crate) fn service_left(&mut self, raft_id: u64) -> Result<()> {
        let index = self.current_index();
        self.tx
            .execute(
                "UPDATE _sqlraft_services SET state = 'removed', updated_index = ?1 WHERE raft_id = ?2",
                rusqlite::params![index, raft_id as i64],
            )
            .map_err(SqliteError::Apply)?;
        Ok(())
    }

    fn set_state(&mut self, id: &str, state: ServiceState) -> Result<()> {
        let index = self.current_index();
        self.tx
            .execute(
                "UPDATE _sqlraft_services SET state = ?1, updated_index = ?2 WHERE id = ?3",
                rusqlite::params![state.as_str(), index, id],
            )
            .map_err(SqliteError::Apply)?;
        Ok(())
    }

    fn insert(&mut self, s: &Service) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO _sqlraft_services
                 (id, name, fqdn, raft_addr, state, raft_id, created_at_ms, updated_index)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                rusqlite::params![
                    s.id,
                    s.name,
                    s.fqdn,
                    s.raft_addr,
                    s.state.as_str(),
                    s.raft_id.map(|v| v as i64),
                    s.created_at_ms,
                    s.updated_index as i64
                ],
            )
            .map_err(SqliteError::Apply)?;
        Ok(())
    }
}
