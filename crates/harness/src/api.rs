//! A node serving the HTTP API in process (one-node clusters, or services created and
//! joined through the API), child processes that are killed on drop, free ports.

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use sqlraft::naming::FIRST_SERVICE_ID;
use sqlraft::{Node, NodeConfig};
use sqlraft_core::app::{self, ApiOptions};
use sqlraft_core::client;

pub const TIMEOUT: Duration = Duration::from_secs(15);

/// A one-node cluster on loopback, its API served on 127.0.0.1:0.
pub struct Harness {
    pub node: Node,
    pub http: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    /// What the node was started with, to start it again from its directory.
    config: NodeConfig,
    options: ApiOptions,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start() -> Harness {
        Self::with_options(ApiOptions::default()).await
    }

    pub async fn with_options(options: ApiOptions) -> Harness {
        Self::node(FIRST_SERVICE_ID, None, options).await
    }

    /// Another service on loopback address `host` (one service per host): created
    /// through `POST /api/v1/services` on `member`, then started joining it.
    pub async fn join(host: &str, member: &Harness) -> Harness {
        let raft = format!("{host}:{}", free_port_on(host));
        let body = serde_json::json!({"fqdn": host, "raft_addr": raft}).to_string();
        let created = member.post("/api/v1/services", &body).await;
        assert_eq!(created.status, 201, "{}", created.text());
        let id = created.json().expect("JSON")["id"]
            .as_str()
            .expect("id")
            .to_string();
        let join = Some(member.node.raft_addr().to_string());
        Self::node_at(&id, host, Some(raft), join, ApiOptions::default()).await
    }

    async fn node(service_id: &str, join: Option<String>, options: ApiOptions) -> Harness {
        Self::node_at(service_id, "127.0.0.1", None, join, options).await
    }

    async fn node_at(
        service_id: &str,
        host: &str,
        raft: Option<String>,
        join: Option<String>,
        options: ApiOptions,
    ) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = tokio::net::TcpListener::bind((host, 0))
            .await
            .expect("bind http");
        let http: SocketAddr = listener.local_addr().expect("http addr");
        let listen = raft
            .clone()
            .unwrap_or_else(|| format!("{host}:0"))
            .parse()
            .expect("addr");
        let mut config =
            NodeConfig::new(service_id, dir.path().join("core").join(service_id), listen);
        config.advertise_addr = raft;
        config.admission = sqlraft::Admission::Registered;
        config.join = join;
        config.http_addr = Some(http.to_string());
        config.raft.tick_ms = 20;
        config.limits.read_timeout_ms = 500;
        config.limits.write_timeout_ms = 2_000;
        let node = Node::start(config.clone()).await.expect("node starts");
        let mut harness = Harness {
            node,
            http: http.to_string(),
            stop: None,
            server: None,
            config,
            options,
            _dir: dir,
        };
        harness.serve(listener);
        harness.wait_ready().await;
        harness
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = app::router(self.node.clone(), self.options.clone());
        self.stop = Some(stop);
        self.server = Some(tokio::spawn(sqlraft_core::server::serve(
            listener,
            router,
            sqlraft_core::server::HttpLimits::default(),
            None,
            async {
                let _ = stopped.await;
            },
        )));
    }

    /// Stops the node and its API, keeping its directory: [`Harness::resume`] starts it
    /// again, as a service restarting.
    pub async fn pause(&mut self) {
        self.stop_serving().await;
        self.node.shutdown().await;
    }

    /// Starts a paused node again from its directory, on the same addresses (the
    /// raft address must have been fixed: a joined node's is). Does not wait for it to
    /// be ready.
    pub async fn resume(&mut self) {
        let listener = tokio::net::TcpListener::bind(&self.http)
            .await
            .expect("bind the same http address");
        self.node = Node::start(self.config.clone())
            .await
            .expect("node restarts");
        self.serve(listener);
    }

    async fn stop_serving(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(r) = client::get(&self.http, "/readyz", Duration::from_secs(1)).await
                && r.status == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "node not ready in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn get(&self, path: &str) -> client::Response {
        client::get(&self.http, path, TIMEOUT)
            .await
            .expect("GET answered")
    }

    pub async fn post(&self, path: &str, body: &str) -> client::Response {
        client::post(&self.http, path, body.as_bytes(), TIMEOUT)
            .await
            .expect("POST answered")
    }

    /// POST expecting 200 and a JSON body.
    pub async fn post_json(&self, path: &str, body: &str) -> Json {
        let r = self.post(path, body).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json().expect("JSON body")
    }

    pub async fn get_json(&self, path: &str) -> Json {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json().expect("JSON body")
    }

    pub async fn stop(mut self) {
        self.pause().await;
    }
}

/// A child process that is killed (and reaped) when dropped.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child running")
    }

    pub fn sigterm(&mut self) {
        let pid = i32::try_from(self.child().id()).expect("pid");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM sent");
    }

    /// Waits for the exit within `timeout`; panics (and kills) otherwise.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child().try_wait().expect("try_wait") {
                self.0 = None;
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit in time");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port that was free a moment ago (bound on 127.0.0.1:0, then released).
pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A port of loopback address `host` that was free a moment ago, and that this process
/// was not given before: the OS may give a port it just released again at once, and
/// a test that asked for two (raft and HTTP) got the same one twice (seen in CI).
pub fn free_port_on(host: &str) -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = std::net::TcpListener::bind((host, 0))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}
