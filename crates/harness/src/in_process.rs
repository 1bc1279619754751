//! In-process clusters over real gRPC on loopback: every node a [`Node`] in this
//! process, every link cut, slowed or made lossy on demand ([`Cluster::set_link`],
//! [`Cluster::partition`], [`Cluster::isolate`]).

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sqlraft::naming::FIRST_SERVICE_ID;
use sqlraft::{
    Admission, Consistency, Node, NodeConfig, NodeError, Role, Statement, Value, WriteOutcome,
    WriteRequest,
};
use sqlraft_transport::LinkFault;

pub const WAIT: Duration = Duration::from_secs(20);

/// Logs go to the test's output when `RUST_LOG` is set.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub struct TestNode {
    pub node: Option<Node>,
    pub service_id: String,
    pub dir: PathBuf,
    pub raft_addr: String,
}

/// A cluster whose nodes live in one temporary directory, removed on drop.
pub struct Cluster {
    pub nodes: Vec<TestNode>,
    root: tempfile::TempDir,
    /// Applied to every node's configuration after `fast_config`.
    tweak: fn(&mut NodeConfig),
    /// Nodes talk mutual TLS, with certificates from a CA in [`Cluster::tls_dir`].
    tls: bool,
}

pub fn fast_config(service_id: &str, dir: PathBuf, listen: &str) -> NodeConfig {
    let mut config = NodeConfig::new(service_id, dir, listen.parse().expect("listen address"));
    config.raft.tick_ms = 25;
    config.raft.election_ticks = 10;
    config.raft.heartbeat_ticks = 2;
    config.limits.write_timeout_ms = 5_000;
    config.limits.read_timeout_ms = 3_000;
    config.limits.join_timeout_ms = 20_000;
    config.transport.backoff_max_ms = 200;
    // Most tests form clusters without registering services first; the registry's
    // own tests switch this back.
    config.admission = Admission::Open;
    config
}

impl Cluster {
    /// Bootstraps one node, then joins `size - 1` more one by one and waits for the
    /// voters to settle ([`Cluster::wait_voters`]).
    pub async fn new(size: usize) -> Cluster {
        Cluster::with_config(size, |_| {}).await
    }

    /// Like [`Cluster::new`], each node's configuration changed by `tweak`.
    pub async fn with_config(size: usize, tweak: fn(&mut NodeConfig)) -> Cluster {
        Cluster::build(size, tweak, false).await
    }

    /// Like [`Cluster::new`], the nodes talking mutual TLS: a cluster CA in
    /// [`Cluster::tls_dir`] and a certificate per node for 127.0.0.1.
    pub async fn with_tls(size: usize) -> Cluster {
        Cluster::build(size, |_| {}, true).await
    }

    async fn build(size: usize, tweak: fn(&mut NodeConfig), tls: bool) -> Cluster {
        init_logging();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            root: tempfile::tempdir().expect("temp dir"),
            tweak,
            tls,
        };
        cluster.add_node().await;
        for _ in 1..size {
            cluster.add_node().await;
        }
        let expected_voters = if size.is_multiple_of(2) {
            size - 1
        } else {
            size
        };
        cluster.wait_voters(expected_voters).await;
        cluster
    }

    /// Waits until every live node knows a leader and `voters` voters, outside a joint
    /// configuration: until a node has left it, its elections still need the voters
    /// before the change (growing from one voter, the first node).
    pub async fn wait_voters(&self, voters: usize) {
        self.wait(&format!("{voters} voters settle"), |c| {
            c.live().all(|n| {
                let s = n.status();
                s.voters.len() == voters && s.voters_outgoing.is_empty() && s.leader_id != 0
            })
        })
        .await;
    }

    /// Starts a new node: the first one bootstraps, the others join node 0 (or any
    /// live node).
    pub async fn add_node(&mut self) -> &Node {
        self.add_node_via(None).await
    }

    /// [`Cluster::add_node`] joining through node `via` (whatever its role), or the
    /// first live node.
    pub async fn add_node_via(&mut self, via: Option<usize>) -> &Node {
        let i = self.nodes.len();
        let service_id = if i == 0 {
            FIRST_SERVICE_ID.to_string()
        } else {
            format!("00000000-0000-0000-0000-{:012}", i + 1)
        };
        let dir = self.root.path().join(format!("node-{i}"));
        let mut config = fast_config(&service_id, dir.clone(), "127.0.0.1:0");
        (self.tweak)(&mut config);
        self.secure(&mut config);
        if i > 0 {
            let via = match via {
                Some(via) => self.node(via),
                None => self.live().next().expect("a live node to join"),
            };
            config.join = Some(via.raft_addr().to_string());
        }
        let node = Node::start(config).await.expect("start node");
        self.nodes.push(TestNode {
            raft_addr: node.raft_addr().to_string(),
            node: Some(node),
            service_id,
            dir,
        });
        self.nodes[i].node.as_ref().expect("just started")
    }

    /// Where the cluster CA (`ca.crt`, `ca.key`) and the nodes' certificates are, for
    /// a cluster made by [`Cluster::with_tls`].
    pub fn tls_dir(&self) -> PathBuf {
        self.root.path().join("tls")
    }

    /// Gives `config` its certificate (issued once per service) when the cluster runs TLS.
    fn secure(&self, config: &mut NodeConfig) {
        if !self.tls {
            return;
        }
        let files = sqlraft_core::certs::ensure_service_files(
            &self.tls_dir(),
            &config.service_id,
            "127.0.0.1",
            30,
        )
        .expect("node certificate");
        let tls = sqlraft::PeerTls::load(files).expect("node TLS");
        // Rotation tests replace the files; the node notices within a moment.
        tls.watch(Duration::from_millis(200));
        config.transport.tls = Some(tls);
    }

    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].node.as_ref().expect("node is running")
    }

    pub fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter_map(|n| n.node.as_ref())
    }

    pub fn index_of(&self, raft_id: u64) -> usize {
        self.nodes
            .iter()
            .position(|n| {
                n.node
                    .as_ref()
                    .is_some_and(|node| node.raft_id() == raft_id)
            })
            .expect("a node with that raft id")
    }

    /// Index of the node that all live nodes agree is the leader.
    pub async fn leader(&self) -> usize {
        let mut found = None;
        self.wait("a leader", |c| {
            found = c
                .live()
                .find(|n| n.status().role == Role::Leader)
                .map(|n| n.raft_id());
            found.is_some()
        })
        .await;
        self.index_of(found.expect("leader"))
    }

    pub fn followers(&self, leader: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| i != leader && self.nodes[i].node.is_some())
            .collect()
    }

    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].node.take() {
            node.shutdown().await;
        }
    }

    /// Restarts a stopped node from its directory on its old address.
    pub async fn restart(&mut self, i: usize) {
        let n = &self.nodes[i];
        let mut config = fast_config(&n.service_id, n.dir.clone(), &n.raft_addr);
        (self.tweak)(&mut config);
        self.secure(&mut config);
        let node = Node::start(config).await.expect("restart node");
        self.nodes[i].node = Some(node);
    }

    /// Cuts every link between node `i` and the others, both ways.
    pub fn isolate(&self, i: usize) {
        let me = self.node(i);
        for other in self.live().filter(|n| n.raft_id() != me.raft_id()) {
            me.transport().block(other.raft_id());
            other.transport().block(me.raft_id());
        }
    }

    /// Sets the fault on the link between nodes `a` and `b`, both directions.
    pub fn set_link(&self, a: usize, b: usize, fault: LinkFault) {
        let (na, nb) = (self.node(a), self.node(b));
        na.transport().set_link_fault(nb.raft_id(), fault);
        nb.transport().set_link_fault(na.raft_id(), fault);
    }

    /// Splits the live nodes into `groups`: links inside a group work, links between
    /// groups are cut. A node in no group is cut from every other.
    pub fn partition(&self, groups: &[&[usize]]) {
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].node.is_some())
            .collect();
        for &a in &live {
            for &b in &live {
                if a < b {
                    let together = group_of(a).is_some() && group_of(a) == group_of(b);
                    let fault = if together {
                        LinkFault::default()
                    } else {
                        LinkFault::partition()
                    };
                    self.set_link(a, b, fault);
                }
            }
        }
    }

    /// Heals every link between live nodes.
    pub fn heal(&self) {
        for a in self.live() {
            for b in self.live() {
                a.transport().unblock(b.raft_id());
            }
        }
    }

    /// Polls `condition` until it holds; panics after `WAIT`.
    pub async fn wait(&self, what: &str, mut condition: impl FnMut(&Cluster) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !condition(self) {
            if Instant::now() > deadline {
                let statuses: Vec<_> = self.live().map(|n| n.status()).collect();
                panic!("timed out waiting for {what}; statuses: {statuses:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every live node has applied what the leader has applied.
    pub async fn converge(&self) {
        let leader = self.leader().await;
        let target = self.node(leader).status().applied_index;
        self.wait("all nodes apply the leader's log", |c| {
            c.live().all(|n| n.status().applied_index >= target)
        })
        .await;
    }

    /// Waits until every live node reports the same content hash at the same applied
    /// index. Entries the cluster appends on its own (a member's admission recorded
    /// after its promotion) may land between two nodes' hashes: those are taken again.
    pub async fn same_content(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.converge().await;
            let mut hashes = Vec::new();
            for node in self.live() {
                hashes.push(node.content_hash().await.expect("content hash"));
            }
            if hashes.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "content differs between nodes: {hashes:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every live node has applied `index`.
    pub async fn wait_applied(&self, index: u64) {
        self.wait(&format!("all nodes apply index {index}"), |c| {
            c.live().all(|n| n.status().applied_index >= index)
        })
        .await;
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}

pub async fn write(node: &Node, sql: &str) -> Result<WriteOutcome, NodeError> {
    node.execute(WriteRequest::transaction(vec![Statement::new(sql)]))
        .await
}

pub async fn write_ok(node: &Node, sql: &str) -> WriteOutcome {
    let outcome = write(node, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert!(
        outcome.results.iter().all(|r| r.error.is_none()),
        "{sql}: {:?}",
        outcome.results
    );
    outcome
}

/// All rows of a query on one node's own file, as a comparable value.
pub async fn dump(node: &Node, sql: &str) -> Vec<Vec<Value>> {
    node.query(&Statement::new(sql), Consistency::Local { min_index: None })
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .values
}

/// Retries `f` until it succeeds or `WAIT` passes.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, NodeError>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(%e, what, "retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}
