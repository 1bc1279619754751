use serde::Serialize;

/// The role of a node in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts writes and replicates them.
    Leader,
    /// A voter following a leader (or waiting for one).
    Follower,
    /// A voter asking for votes.
    Candidate,
    /// Receives the log and serves local reads, but does not vote.
    Learner,
    /// Not (yet) part of the configuration it knows of.
    Joining,
}

impl Role {
    /// Lower-case name, as in `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Joining => "joining",
        }
    }
}

/// A member of the cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// Raft id.
    pub raft_id: u64,
    /// Service id.
    pub service_id: String,
    /// Raft address.
    pub raft_addr: String,
    /// HTTP address; empty when unknown.
    pub http_addr: String,
    /// Voter or learner.
    pub voter: bool,
    /// On the leader: the highest log index known to be on that member.
    pub matched: Option<u64>,
    /// On the leader: whether the member answered within the last election timeout.
    pub reachable: Option<bool>,
}

/// A snapshot of a node's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// This node's raft id.
    pub raft_id: u64,
    /// This node's service id.
    pub service_id: String,
    /// Its role.
    pub role: Role,
    /// Raft id of the leader it knows of; 0 for none.
    pub leader_id: u64,
    /// Current term.
    pub term: u64,
    /// Highest index known to be committed.
    pub commit_index: u64,
    /// The leader's commit index as this node last heard it (its own on the leader):
    /// a node is caught up when it has applied this far.
    pub leader_commit_index: u64,
    /// Highest index applied to the local SQLite database.
    pub applied_index: u64,
    /// Last index in the local log.
    pub last_index: u64,
    /// First index in the local log: entries before it were compacted into a snapshot.
    pub first_index: u64,
    /// Bytes of the local log's files.
    pub log_bytes: u64,
    /// The newest snapshot this node holds.
    pub snapshot: Option<SnapshotInfo>,
    /// Snapshots installed from the leader since this node started.
    pub snapshots_installed: u64,
    /// Voting members, in raft id order.
    pub voters: Vec<u64>,
    /// While a change of voters is under way (raft's joint configuration), the voters
    /// of the configuration before it, those that stay included; empty otherwise.
    /// Until it is empty, an election or a commit needs a majority of these as well as
    /// of [`Status::voters`].
    pub voters_outgoing: Vec<u64>,
    /// Learners, in raft id order.
    pub learners: Vec<u64>,
    /// Every member with its address.
    pub members: Vec<MemberStatus>,
}

impl Status {
    /// The member entry of the leader, if a leader is known.
    pub fn leader(&self) -> Option<&MemberStatus> {
        self.members.iter().find(|m| m.raft_id == self.leader_id)
    }
}

/// What another member says of itself ([`crate::Node::member_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberReport {
    /// Its role, as [`Role::as_str`] names it.
    pub role: String,
    /// Its term.
    pub term: u64,
    /// Its applied index.
    pub applied_index: u64,
    /// The version of sqlraft it runs.
    pub version: String,
}

/// Who leads, as this node knows it: published on every change of leader or term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// The leader's raft id; `None` while there is none (an election).
    pub leader_id: Option<u64>,
    /// The term this node is in.
    pub term: u64,
}

/// A snapshot this node holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// The applied index its content is at.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// Size of the file in bytes.
    pub size_bytes: u64,
    /// How long taking it took (0 for one received from the leader or found at start).
    pub took_ms: u64,
}

/// A snapshot transfer in progress on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotTransfer {
    /// The other node's raft id.
    pub peer_raft_id: u64,
    /// `"sending"` or `"receiving"`.
    pub direction: &'static str,
    /// The snapshot's index.
    pub index: u64,
    /// The snapshot's term.
    pub term: u64,
    /// Bytes sent (or received and checked) so far.
    pub bytes_done: u64,
    /// Bytes of the whole snapshot.
    pub bytes_total: u64,
    /// Which attempt this is (a broken stream resumes in a new one).
    pub attempt: u32,
}

impl From<sqlraft_transport::SnapshotTransfer> for SnapshotTransfer {
    fn from(t: sqlraft_transport::SnapshotTransfer) -> Self {
        SnapshotTransfer {
            peer_raft_id: t.peer,
            direction: match t.direction {
                sqlraft_transport::Direction::Sending => "sending",
                sqlraft_transport::Direction::Receiving => "receiving",
            },
            index: t.index,
            term: t.term,
            bytes_done: t.bytes_done,
            bytes_total: t.bytes_total,
            attempt: t.attempt,
        }
    }
}

/// What [`crate::Node::restore`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreOutcome {
    /// The entry that replaced the content: every node serves the restored content
    /// once it has applied this index.
    pub raft_index: u64,
    /// Bytes of the restored database (after normalizing).
    pub bytes: u64,
    /// User tables it holds.
    pub tables: usize,
}
