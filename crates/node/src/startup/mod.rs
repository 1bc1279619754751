//! Starting a node: open its storage, learn who it is (restart, join or bootstrap),
//! rebuild raft, and start the raft thread. Recovery with `raft/.reset` is in
//! [`reset`].

mod cluster;
mod reset;
mod restore;
mod snapshots;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use raft::Storage;
use sqlraft_log::LogStore;
use sqlraft_proto::v1 as pb;
use sqlraft_sqlite::{Member, ReadPool, ServiceState, StateMachine};
use sqlraft_transport::Transport;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::NodeConfig;
use crate::error::{Fatal, NodeError, Result};
use crate::format;
use crate::handle::Handle;
use crate::identity::{self, Identity};
use crate::known_peers;
use crate::raft_loop::{LoopParts, Outbox, RaftLoop, Shared, Snapshots};
use crate::status::Leadership;

use cluster::{bootstrap, join_cluster};
use reset::reset_membership;
use restore::{initial_status, restore_raft};

/// A node whose raft thread runs, before its peer service is started.
pub(crate) struct Launched {
    pub handle: Arc<Handle>,
    pub listener: TcpListener,
    pub raft_thread: std::thread::JoinHandle<()>,
}

/// Starts a node from `config.dir`: restarts it when the directory holds one,
/// otherwise joins the cluster at `config.join`, or bootstraps a one-node cluster.
pub(crate) async fn launch(config: NodeConfig) -> Result<Launched> {
    validate(&config)?;
    // Before anything in the directory is opened or created: a format this version
    // cannot read is refused untouched.
    std::fs::create_dir_all(&config.dir)
        .map_err(|e| NodeError::Config(format!("cannot create {}: {e}", config.dir.display())))?;
    format::check(&config.dir)?;
    let raft_dir = config.dir.join("raft");
    let db_dir = config.dir.join("db");
    for dir in [&raft_dir, &db_dir] {
        std::fs::create_dir_all(dir)
            .map_err(|e| NodeError::Config(format!("cannot create {}: {e}", dir.display())))?;
    }
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|e| NodeError::Config(format!("cannot listen on {}: {e}", config.listen_addr)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| NodeError::Config(format!("listener has no address: {e}")))?;
    let raft_addr = config
        .advertise_addr
        .clone()
        .unwrap_or_else(|| bound.to_string());

    let mut log = LogStore::open(&raft_dir, config.log.clone())?;
    let mut sm = StateMachine::open(&db_dir.join("state.db"))?;
    let snapshot_dir = raft_dir.join("snapshots");
    snapshots::remove_restore_leftovers(&db_dir);
    let latest_snapshot = snapshots::recover(&snapshot_dir, &mut log, &mut sm)?;
    let (transport, peer_events) = Transport::new(config.transport.clone());
    let identity = identify(&config, &raft_addr, &transport, &mut log, &sm).await?;
    format::record(&config.dir)?;

    let reset_file = raft_dir.join(reset::RESET_FILE);
    if reset_file.exists() {
        reset_membership(&mut log, &sm, identity.raft_id, &reset_file)?;
    }
    // Members the log tail names and those remembered in raft/peers, for what the
    // applied state does not know yet (it wins where it does).
    let mut hinted = known_peers::load(&raft_dir);
    hinted.extend(known_peers::from_log_tail(&log, sm.applied_index())?);
    let log_bytes = log.size_bytes();
    let raw = restore_raft(&config, identity.raft_id, log, &sm)?;
    let members: BTreeMap<u64, Member> =
        sm.members()?.into_iter().map(|m| (m.raft_id, m)).collect();
    let mut known = BTreeMap::new();
    for m in hinted {
        if m.raft_id != identity.raft_id && !members.contains_key(&m.raft_id) {
            known.insert(m.raft_id, m);
        }
    }
    for m in members.values().chain(known.values()) {
        if m.raft_id != identity.raft_id {
            transport.set_peer(m.raft_id, &m.raft_addr)?;
        }
    }
    let files_dir = snapshot_dir.clone();
    transport.set_snapshot_files(Arc::new(move |index, term| {
        let path = files_dir.join(sqlraft_sqlite::snapshot::snapshot_file_name(index, term));
        path.is_file().then_some(path)
    }));
    transport.set_local(pb::Member {
        raft_id: identity.raft_id,
        service_id: identity.service_id.clone(),
        raft_addr: raft_addr.clone(),
        http_addr: config.http_addr.clone().unwrap_or_default(),
    });
    let reads =
        ReadPool::open_following(&db_dir.join("state.db"), &config.read, sm.changes()).await?;

    let (applied_tx, applied) = watch::channel(sm.applied_index());
    let (status_tx, status) = watch::channel(initial_status(&identity, sm.applied_index()));
    let (leadership_tx, leadership) = watch::channel(Leadership {
        leader_id: None,
        term: 0,
    });
    let removed: HashSet<u64> = sm
        .services()?
        .iter()
        .filter(|s| s.state == ServiceState::Removed)
        .filter_map(|s| s.raft_id)
        .collect();
    let shared = Arc::new(Shared {
        status,
        leadership,
        stop: Mutex::new(None),
        removed: RwLock::new(removed),
        identities: RwLock::default(),
        leader_contact: Mutex::new(Instant::now()),
    });
    let (requests, queue) = std::sync::mpsc::sync_channel(config.limits.loop_queue_len);
    let metrics = crate::Metrics::new();
    let raft_loop = RaftLoop::new(LoopParts {
        metrics: metrics.clone(),
        raw,
        sm,
        transport: transport.clone(),
        requests: queue,
        to_self: requests.clone(),
        peer_events,
        shared: Arc::clone(&shared),
        outbox: Outbox {
            status: status_tx,
            leadership: leadership_tx,
            applied: applied_tx,
        },
        service_id: identity.service_id.clone(),
        members,
        known,
        raft_dir,
        timings: config.raft.clone(),
        limits: config.limits.clone(),
        admission: config.admission,
        snapshots: Snapshots::new(
            snapshot_dir,
            db_dir.join("state.db"),
            config.snapshot.clone(),
            latest_snapshot,
            log_bytes,
        ),
        #[cfg(feature = "testing")]
        crash_at: config.crash_at,
    });
    let raft_thread = std::thread::Builder::new()
        .name(format!("raft-{}", identity.raft_id))
        .spawn(move || raft_loop.run())
        .map_err(|e| Fatal::io("cannot start the raft thread", e))?;
    let handle = Arc::new(Handle {
        metrics,
        raft_id: identity.raft_id,
        service_id: identity.service_id,
        raft_addr,
        config,
        requests,
        shared,
        applied,
        transport,
        reads,
    });
    Ok(Launched {
        handle,
        listener,
        raft_thread,
    })
}

/// Who this node is: read back on a restart, otherwise given by the cluster it joins
/// or by the cluster it bootstraps; stored before anything else happens.
async fn identify(
    config: &NodeConfig,
    raft_addr: &str,
    transport: &Transport,
    log: &mut LogStore,
    sm: &StateMachine,
) -> Result<Identity> {
    let raft_dir = config.dir.join("raft");
    if let Some(identity) = identity::load(&raft_dir)? {
        if identity.service_id != config.service_id {
            return Err(NodeError::Config(format!(
                "{} belongs to service {}, not {}",
                config.dir.display(),
                identity.service_id,
                config.service_id
            )));
        }
        return Ok(identity);
    }
    if log.last_index().unwrap_or(0) > 0 || sm.applied_index() > 0 {
        return Err(Fatal::corrupt(format!(
            "{} holds raft data but no identity file: refusing to guess",
            raft_dir.display()
        )));
    }
    let raft_id = match &config.join {
        Some(addr) => {
            let (raft_id, members) = join_cluster(transport, addr, config, raft_addr).await?;
            // Kept: until this node has applied its own admission, the join answer is
            // all it knows of the members, restarts included.
            known_peers::store(&raft_dir, &members)?;
            raft_id
        }
        None => {
            let http_addr = config.http_addr.clone().unwrap_or_default();
            bootstrap(log, &config.service_id, raft_addr, &http_addr)?;
            1
        }
    };
    let identity = Identity {
        service_id: config.service_id.clone(),
        raft_id,
    };
    identity::store(&raft_dir, &identity)?;
    Ok(identity)
}

pub(crate) fn validate(config: &NodeConfig) -> Result<()> {
    let id = &config.service_id;
    if id.trim().is_empty() {
        return Err(NodeError::Config("service id is empty".into()));
    }
    // The identity file is line-based and read back trimmed.
    if id.trim() != id || id.chars().any(char::is_control) || id.len() > 255 {
        return Err(NodeError::Config(format!(
            "service id {id:?}: at most 255 bytes, without control characters or surrounding spaces"
        )));
    }
    let t = &config.raft;
    if t.tick_ms == 0 || t.heartbeat_ticks == 0 || t.election_ticks <= t.heartbeat_ticks {
        return Err(NodeError::Config(
            "raft timings: tick_ms > 0 and election_ticks > heartbeat_ticks > 0".into(),
        ));
    }
    // One turn's log write holds at most a turn's budget plus the one item that
    // crossed it (a request, or a transport message of entries).
    let l = &config.limits;
    let largest_item = l.max_request_bytes.max(config.transport.max_message_bytes);
    let turn_write = l
        .max_turn_bytes
        .saturating_add(largest_item)
        .saturating_add(1 << 20);
    if turn_write > config.log.max_write_bytes {
        return Err(NodeError::Config(format!(
            "limits: max_turn_bytes ({}) plus the largest request or peer message ({largest_item}) \
             must fit in one log write (max_write_bytes {})",
            l.max_turn_bytes, config.log.max_write_bytes
        )));
    }
    Ok(())
}
