//! One real node inside the test process: `raftq::node::start` with a plain
//! `Config`, RocksDB in a tempdir, its development TLS certificates, and
//! every TCP listener bound here on `127.0.0.1:0` and handed to
//! `raftq::node::start_on` (the node reports and advertises those ports).
//! Requests go through reqwest over real HTTPS, verified against the node's
//! own CA: from loopback by default (a [`TestNode`] is its own loopback
//! [`Caller`]), or from another address of this host
//! ([`TestNode::caller_from`]). A [`TestCluster`] is several such nodes that
//! form one cluster through gossip.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raftq::node::{Config, Listeners, NodeHandle};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// How long a fresh single node may take to elect itself and be ready.
const READY_WITHIN: Duration = Duration::from_secs(20);

pub const FORM: &str = "application/x-www-form-urlencoded";
pub const TEXT: &str = "text/plain";
pub const JSON: &str = "application/json";

pub struct TestNode {
    handle: Option<NodeHandle>,
    /// Where this process reaches the API (loopback for a wildcard bind).
    pub api: SocketAddr,
    pub node_id: u64,
    /// Gossip's UDP address: what another node names in `seeds`.
    pub gossip: SocketAddr,
    /// The node's API from loopback.
    caller: Caller,
    /// The CA the API certificate is checked against.
    ca: PathBuf,
    /// `--api-token`, for the readiness probe only: tests send their own.
    token: Option<String>,
    // Last: the data dir outlives the node (fields drop in order).
    dir: tempfile::TempDir,
}

/// A port no one listens on right now, for gossip (UDP): chitchat binds its
/// address itself, so it cannot take port 0 and report back.
pub fn free_udp_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    socket.local_addr().expect("local addr")
}

impl TestNode {
    /// A ready single-voter node with the default config, changed by `tweak`.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestNode {
        Self::start_in(tempfile::tempdir().expect("tempdir"), tweak).await
    }

    /// [`TestNode::start`] on the data dir under `dir` (a restart when a
    /// node ran there before).
    pub async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> TestNode {
        let node = Self::launch_in(dir, tweak).await;
        node.wait_ready().await;
        node
    }

    /// A started node that may not be ready (no leader yet, or ever).
    pub async fn launch(tweak: impl FnOnce(&mut Config)) -> TestNode {
        Self::launch_in(tempfile::tempdir().expect("tempdir"), tweak).await
    }

    async fn launch_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> TestNode {
        raftq::tls::install_crypto_provider();
        let loopback_any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = Config::new(dir.path().join("data"));
        config.api_addr = loopback_any;
        config.raft_addr = loopback_any;
        config.maze_source_addr = loopback_any;
        config.maze_client_addr = loopback_any;
        config.gossip_addr = free_udp_port();
        config.advertise_host = Some("127.0.0.1".into());
        // Nothing to wait for: no other node will ever gossip here.
        config.bootstrap_wait = Duration::ZERO;
        // The tests must not depend on the free space of the machine.
        config.min_free_disk = raftq::node::disk::MinFree::Bytes(0);
        tweak(&mut config);
        let ca = match &config.tls {
            Some(files) => files.ca.clone(),
            None => config.data_dir.join("tls").join("ca.pem"),
        };
        let gossip = config.gossip_addr;
        let token = config.api_token.clone();
        // Bound here, as an embedding program may: the node serves these.
        let listeners = Listeners::bind(&config).expect("bind the listeners");
        let bound = listeners.local_addrs().expect("bound addresses");
        let handle = raftq::node::start_on(config, listeners).await.expect("start the node");
        assert_eq!(handle.addrs(), bound, "the node reports the ports it was given");
        assert_ne!(bound.api.port(), 0, "port 0 was replaced by the kernel's choice");
        let api = match bound.api.ip().is_unspecified() {
            true => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), bound.api.port()),
            false => bound.api,
        };
        let http = client_builder(&ca).build().expect("reqwest client");
        let caller = Caller { http, base: format!("https://{api}") };
        let node_id = handle.node_id;
        let handle = Some(handle);
        TestNode { node_id, handle, api, gossip, caller, ca, token, dir }
    }

    /// A client whose connections leave from `local` (an address of this
    /// host) for the API on that same address: the node sees a client that
    /// is not on loopback, and the traffic never leaves the host. The API
    /// must listen there (e.g. bound to `0.0.0.0:0`).
    pub fn caller_from(&self, local: IpAddr) -> Caller {
        // The URL names `localhost`, which the development certificate
        // covers; `resolve` sends it to `local` instead of 127.0.0.1.
        let http = client_builder(&self.ca)
            .local_address(local)
            .resolve("localhost", SocketAddr::new(local, self.api.port()))
            .build()
            .expect("reqwest client");
        Caller { http, base: format!("https://localhost:{}", self.api.port()) }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn handle(&self) -> &NodeHandle {
        self.handle.as_ref().expect("the node runs")
    }

    async fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            let mut probe = self.caller.http.get(self.url("/readyz"));
            if let Some(token) = &self.token {
                probe = probe.bearer_auth(token);
            }
            let last = match probe.send().await {
                Ok(r) if r.status() == StatusCode::OK => return,
                Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            assert!(started.elapsed() < READY_WITHIN, "node not ready in time: {last}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn shutdown(self) {
        self.stop().await;
    }

    /// Shuts the node down and hands back its directory, for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
        self.dir
    }
}

/// A node is also its own loopback client: `node.get(..)`, `node.post(..)`.
impl std::ops::Deref for TestNode {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.caller
    }
}

/// Requests to one node's API through one client: the node's own (from
/// loopback) or one from [`TestNode::caller_from`].
pub struct Caller {
    http: reqwest::Client,
    /// `https://host:port`, without a path.
    base: String,
}

/// Trusts `ca`, follows no redirect (tests check the 307s themselves).
fn client_builder(ca: &Path) -> reqwest::ClientBuilder {
    raftq::tls::api_client_builder(Some(ca), false, None)
        .expect("client with the node's CA")
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
}

impl Caller {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// One request; `headers` are added as given.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut request = self.http.request(method.clone(), self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type).body(bytes);
        }
        let response =
            request.send().await.unwrap_or_else(|e| panic!("{method} {path}: no response: {e:?}"));
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("response body").to_vec();
        Resp { what: format!("{method} {path}"), status, headers, body }
    }

    /// A GET answered up to its headers: the body is left unread (the
    /// server is still sending it) until the response is dropped.
    pub async fn open(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: no response: {e:?}"))
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, &[]).await
    }

    /// POSTs `event` as text to `/event` and returns its seq.
    pub async fn post(&self, event: &str) -> u64 {
        let r = self.send(Method::POST, "/event", Some((TEXT, event.into())), &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        r.seq()
    }

    /// Everything a rejected request must leave as it was: a queue's
    /// retained events (`queue_path` is its `/events` route), and the
    /// default queue's head, front and length.
    pub async fn queue_state(&self, queue_path: &str) -> Value {
        let mut r = self.get(&format!("{queue_path}?after=0&limit=1000")).await;
        if r.status == StatusCode::GONE {
            let oldest = r.json()["oldest"].as_u64().expect("410 names the oldest seq");
            let after = oldest.saturating_sub(1);
            r = self.get(&format!("{queue_path}?after={after}&limit=1000")).await;
        }
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let status = self.get("/status").await.json();
        serde_json::json!({
            "page": r.json(),
            "queue_len": status["queue_len"],
            "head_seq": status["head_seq"],
            "front_seq": status["front_seq"],
        })
    }
}

/// A response read whole.
pub struct Resp {
    pub what: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {} {}", self.what, self.status, String::from_utf8_lossy(&self.body))
    }
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{self:?}: not JSON: {e}"))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn seq(&self) -> u64 {
        self.header("seq")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{self:?}: no Seq header"))
    }

    /// The documented error shape: `status`, a JSON body `{"error","code"}`
    /// with a readable message and this `code`. Returns the body.
    pub fn assert_error(&self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with("application/json"), "{self:?}: {content_type}");
        let body = self.json();
        assert_eq!(body["code"], code, "{self:?}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{self:?}: no error message");
        body
    }
}
