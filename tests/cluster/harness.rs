//! Tier-3 harness: real `raftq serve` processes on loopback.
//!
//! A [`Cluster`] owns a temporary directory holding the certificates (made by
//! `raftq certs`), one data dir and one log file per node. Every node gets
//! free ports found by binding `127.0.0.1:0` (TCP: api, raft, maze source,
//! maze client; UDP: gossip); the sockets are held until right before the node
//! is spawned, and a restarted node keeps its ports. Node 1 bootstraps
//! (no `--seeds`); every other node seeds node 1's gossip address, so the
//! cluster forms by gossip alone.
//!
//! Faults: [`NodeProc::kill9`] (SIGKILL), [`NodeProc::stop`] (SIGTERM with a
//! deadline), [`NodeProc::pause`]/[`NodeProc::resume`] (SIGSTOP/SIGCONT),
//! [`Cluster::restart`] (same args, data dir and ports).
//!
//! Hygiene: every process is SIGKILLed on drop; when the test is panicking the
//! drop prints the last lines of every node's log to stderr (set
//! `RAFTQ_TEST_KEEP=1` to keep the whole directory). At most
//! `RAFTQ_CLUSTER_TESTS_PARALLEL` (default 1) clusters run at once in this
//! test binary: CI has two cores and debug builds, and two clusters competing
//! for them would turn timing assumptions into flakes.
//!
//! Multi-host: [`ClusterBuilder::netns_hosts`] places each node in its own
//! network namespace instead (`ip netns exec NS raftq serve ...`, default
//! ports, `--bind-interface`); the namespaces themselves are made by the
//! test (see `netns.rs`).
//!
//! Invariant oracle: [`Cluster::check_acked`] reads the whole retained log of
//! a node through `GET /events` and checks that every acknowledged seq is
//! present exactly once, with its event, in order, and that seqs are gapless.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::ops::AsyncFnMut;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The binary under test, built by cargo for this test target.
pub const BIN: &str = env!("CARGO_BIN_EXE_raftq");

/// Raft timing for every test node: generous, because CI has 2 cores and
/// runs debug builds.
pub const HEARTBEAT_MS: u64 = 100;
pub const ELECTION_TIMEOUT_MS: u64 = 800;

/// Timeout of every HTTP request made by the default clients.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node gets from spawn to answering `GET /healthz` with 200.
pub const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node gets from SIGTERM to exiting.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of each node's log printed when a test fails.
pub const LOG_TAIL_LINES: usize = 80;

const POLL_INTERVAL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------
// Process-wide setup
// ---------------------------------------------------------------------------

/// Install ring as rustls' process-wide crypto provider (reqwest is built
/// with `rustls-no-provider`). Idempotent.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

static SLOTS_USED: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

/// A permit to run one multi-process scenario; see the module docs.
pub struct SlotGuard(());

/// Block until a scenario slot is free.
pub fn acquire_slot() -> SlotGuard {
    let max = std::env::var("RAFTQ_CLUSTER_TESTS_PARALLEL")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1);
    let mut used = SLOTS_USED.lock().unwrap_or_else(|e| e.into_inner());
    while *used >= max {
        used = SLOT_FREED.wait(used).unwrap_or_else(|e| e.into_inner());
    }
    *used += 1;
    SlotGuard(())
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut used = SLOTS_USED.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        SLOT_FREED.notify_one();
    }
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// The five listening ports of one node.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub api: u16,
    pub raft: u16,
    pub gossip: u16,
    pub maze_source: u16,
    pub maze_client: u16,
}

/// Sockets bound to a node's ports until it is spawned, so that nothing else
/// in this process (or another test) is handed the same ports meanwhile.
struct Reservation {
    _tcp: Vec<TcpListener>,
    _udp: UdpSocket,
}

fn reserve_ports() -> (Ports, Reservation) {
    let tcp: Vec<TcpListener> =
        (0..4).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free TCP port")).collect();
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a free UDP port");
    let port = |l: &TcpListener| l.local_addr().unwrap().port();
    let ports = Ports {
        api: port(&tcp[0]),
        raft: port(&tcp[1]),
        maze_source: port(&tcp[2]),
        maze_client: port(&tcp[3]),
        gossip: udp.local_addr().unwrap().port(),
    };
    (ports, Reservation { _tcp: tcp, _udp: udp })
}

// ---------------------------------------------------------------------------
// One node process
// ---------------------------------------------------------------------------

/// One `raftq serve` process (or the memory of one, while it is down).
pub struct NodeProc {
    /// `n1`, `n2`, ... in start order.
    pub name: String,
    pub ports: Ports,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
    spawns: u32,
    reservation: Option<Reservation>,
    /// The node id reported by `/status`, cached on first sight. A restarted
    /// node must report the same id (tests assert that).
    node_id: OnceLock<String>,
    /// `Some`: the node runs in this network namespace, not on loopback.
    pub host: Option<NetnsHost>,
    /// Environment variables set for this node's next spawns (after the
    /// caller's `RAFTQ_*` ones are removed), e.g. a fault hook.
    env: Vec<(String, String)>,
}

/// Where a multi-host node runs: inside network namespace `netns`, on its
/// interface `interface` whose address is `ip`.
#[derive(Debug, Clone)]
pub struct NetnsHost {
    pub netns: String,
    pub ip: IpAddr,
    pub interface: String,
}

/// The SPEC §1 default ports, used by nodes in their own namespaces.
pub const DEFAULT_PORTS: Ports =
    Ports { api: 8080, raft: 1112, gossip: 1111, maze_source: 9090, maze_client: 9099 };

impl NodeProc {
    /// `https://<ip>:<api port>`: also the advertised API URL, since nodes
    /// run with `--advertise-host 127.0.0.1` (or, in a namespace, advertise
    /// their interface's address).
    pub fn api_url(&self) -> String {
        format!("https://{}", self.api_addr())
    }

    /// 127.0.0.1, or the node's address in its namespace.
    pub fn ip(&self) -> IpAddr {
        self.host.as_ref().map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |h| h.ip)
    }

    pub fn api_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.ports.api)
    }

    pub fn raft_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.ports.raft)
    }

    pub fn gossip_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.ports.gossip)
    }

    pub fn maze_source_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.ports.maze_source)
    }

    pub fn maze_client_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.ports.maze_client)
    }

    /// The exact `serve` arguments this node is (re)started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Believed up and not SIGSTOPped: the nodes whose HTTP API we poll.
    pub fn is_live(&self) -> bool {
        self.child.is_some() && !self.paused
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// `Some(status)` when the process has exited (it is reaped then).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                self.paused = false;
                Some(status)
            }
            _ => None,
        }
    }

    /// Start the process with this node's arguments, data dir and ports.
    /// Panics if it is already running.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{}: spawn while running", self.name);
        self.spawns += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open node log");
        writeln!(
            log,
            "===== harness: start #{} of {}: {} {} =====",
            self.spawns,
            self.name,
            BIN,
            self.args.join(" ")
        )
        .expect("write node log");
        let stderr = log.try_clone().expect("clone node log handle");
        // `ip netns exec` execs the program: the child's pid is raftq's.
        let mut cmd = match &self.host {
            Some(h) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &h.netns, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "1");
        // Every serve flag also reads RAFTQ_<FLAG>: keep the caller's
        // environment from changing what the test configured.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RAFTQ_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        // Free the ports only now, as late as possible.
        self.reservation = None;
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{}: spawn {BIN}: {e}", self.name));
        self.child = Some(child);
        self.paused = false;
    }

    /// Sets (or, with `None`, unsets) an environment variable of this
    /// node's next spawns.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.env.push((key.to_string(), value.to_string()));
        }
    }

    /// Adds `serve` arguments for this node's next spawns.
    pub fn push_args(&mut self, args: &[&str]) {
        self.args.extend(args.iter().map(|a| a.to_string()));
    }

    /// SIGKILL, then delete the whole data dir (a lost volume): the next
    /// spawn starts from nothing, under a new node id.
    pub fn kill_and_wipe(&mut self) {
        self.kill9();
        if self.data_dir.exists() {
            fs::remove_dir_all(&self.data_dir).expect("remove data dir");
        }
        fs::create_dir_all(&self.data_dir).expect("recreate data dir");
        self.node_id = OnceLock::new();
    }

    /// SIGKILL and reap. No-op when not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGTERM, then wait up to [`STOP_TIMEOUT`] for the process to exit.
    /// Returns its exit status; panics (after SIGKILL) when it does not exit
    /// in time.
    pub fn stop(&mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("{}: stop while not running", self.name);
        };
        let pid = child.id().to_string();
        if self.paused {
            // A stopped process would keep SIGTERM pending forever.
            send_signal("-CONT", &pid);
            self.paused = false;
        }
        send_signal("-TERM", &pid);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{}: still running {:?} after SIGTERM; killed it",
                        self.name, STOP_TIMEOUT
                    );
                }
                Err(e) => panic!("{}: wait: {e}", self.name),
            }
        }
    }

    /// SIGSTOP: the process freezes, sockets stay open.
    pub fn pause(&mut self) {
        let pid = self.pid().expect("pause a running node").to_string();
        send_signal("-STOP", &pid);
        self.paused = true;
    }

    /// SIGCONT after [`NodeProc::pause`].
    pub fn resume(&mut self) {
        let pid = self.pid().expect("resume a running node").to_string();
        send_signal("-CONT", &pid);
        self.paused = false;
    }

    /// The last `n` lines of this node's log (all its starts).
    pub fn log_tail(&self, n: usize) -> String {
        tail_lines(&self.log_path, n)
    }

    /// Node id cached from an earlier `/status`, if any.
    pub fn cached_node_id(&self) -> Option<&str> {
        self.node_id.get().map(String::as_str)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn send_signal(sig: &str, pid: &str) {
    let status = Command::new("kill")
        .args([sig, pid])
        .status()
        .unwrap_or_else(|e| panic!("run kill {sig} {pid}: {e}"));
    assert!(status.success(), "kill {sig} {pid} failed: {status}");
}

fn tail_lines(path: &Path, n: usize) -> String {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            let _ = f.read_to_end(&mut bytes);
        }
        Err(e) => return format!("(cannot read {}: {e})", path.display()),
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// A reqwest client that trusts only the cluster CA. `follow_redirects`:
/// follow up to 5 redirects (307 re-sends method and body); otherwise
/// redirects are returned to the caller.
pub fn http_client(ca_pem: &[u8], follow_redirects: bool, timeout: Duration) -> reqwest::Client {
    http_client_auth(ca_pem, follow_redirects, timeout, &ClientAuth::default())
}

/// Credentials the harness clients present (see [`ClusterBuilder::api_token`]).
#[derive(Default, Clone)]
pub struct ClientAuth {
    pub token: Option<String>,
    /// Client certificate and key, PEM, concatenated.
    pub identity_pem: Option<Vec<u8>>,
}

pub fn http_client_auth(
    ca_pem: &[u8],
    follow_redirects: bool,
    timeout: Duration,
    auth: &ClientAuth,
) -> reqwest::Client {
    install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(ca_pem).expect("parse the cluster ca.pem");
    let policy = if follow_redirects {
        reqwest::redirect::Policy::limited(5)
    } else {
        reqwest::redirect::Policy::none()
    };
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .redirect(policy)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(3));
    if let Some(token) = &auth.token {
        let mut headers = HeaderMap::new();
        let value = format!("Bearer {token}").parse().expect("token is a valid header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
        builder = builder.default_headers(headers);
    }
    if let Some(pem) = &auth.identity_pem {
        builder = builder.identity(reqwest::Identity::from_pem(pem).expect("client identity"));
    }
    builder.build().expect("build reqwest client")
}

/// One HTTP response, fully read.
#[derive(Clone)]
pub struct Resp {
    pub method: Method,
    pub url: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// The `Seq` header as a number; panics when present but not a number.
    pub fn seq(&self) -> Option<u64> {
        self.header(raftq::wire::header::SEQ).map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("Seq header is not a u64: {s:?} in {self:?}"))
        })
    }

    /// The `Seq` header; panics when missing.
    pub fn expect_seq(&self) -> u64 {
        self.seq().unwrap_or_else(|| panic!("response has no Seq header: {self:?}"))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    /// Assert `status` and the SPEC §2 error shape: a JSON object with
    /// non-empty string fields `error` and `code`, served as JSON.
    pub fn assert_json_error(&self, status: StatusCode) {
        assert_eq!(self.status, status, "unexpected status: {self:?}");
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/json"),
            "error response is not served as JSON (content-type {ct:?}): {self:?}"
        );
        assert_json_error_body(&self.body, &format!("{self:?}"));
    }
}

/// Check that `body` is `{"error": "<non-empty>", "code": "<non-empty>", ...}`,
/// and that it reads as the typed contract (`raftq::wire::ErrorBody`).
pub fn assert_json_error_body(body: &[u8], context: &str) {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {context}"));
    for field in ["error", "code"] {
        let s = v.get(field).and_then(Value::as_str);
        assert!(
            s.is_some_and(|s| !s.is_empty()),
            "error body lacks a non-empty string {field:?}: {v} ({context})"
        );
    }
    if let Err(e) = serde_json::from_value::<raftq::wire::ErrorBody>(v.clone()) {
        panic!("error body does not read as wire::ErrorBody ({e}): {v} ({context})");
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut body = self.text();
        if body.len() > 400 {
            let mut cut = 400;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            body.push_str("...");
        }
        write!(
            f,
            "{} {} -> {} headers={:?} body={:?}",
            self.method, self.url, self.status, self.headers, body
        )
    }
}

/// Format an error with its whole source chain (reqwest's Display hides the
/// interesting part).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// Send one request and read the whole response.
pub async fn send(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<(&str, Vec<u8>)>,
    headers: &[(&str, &str)],
) -> Result<Resp, String> {
    let mut rb = client.request(method.clone(), url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some((content_type, bytes)) = body {
        rb = rb.header(reqwest::header::CONTENT_TYPE, content_type).body(bytes);
    }
    let r = rb.send().await.map_err(|e| format!("{method} {url}: {}", error_chain(&e)))?;
    let status = r.status();
    let headers = r.headers().clone();
    let body = r
        .bytes()
        .await
        .map_err(|e| format!("{method} {url}: reading body: {}", error_chain(&e)))?
        .to_vec();
    Ok(Resp { method, url: url.to_string(), status, headers, body })
}

pub const FORM: &str = "application/x-www-form-urlencoded";

/// Percent-encode everything but RFC 3986 unreserved characters.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The form body `event=<event>`, as `curl -d event=...` sends it.
pub fn form_event(event: &str) -> Vec<u8> {
    format!("event={}", urlencode(event)).into_bytes()
}

/// POST `event` (form-encoded) to `<base>/event`; `Err` on transport errors.
pub async fn post_event(client: &reqwest::Client, base: &str, event: &str) -> Result<Resp, String> {
    send(client, Method::POST, &format!("{base}/event"), Some((FORM, form_event(event))), &[]).await
}

/// `n_tasks` concurrent clients each POST `per_task` events named
/// `{prefix}{task}-{i}`, task `t` sending its `i`th request to
/// `bases[(t + i) % bases.len()]` with `client` (normally one that follows
/// redirects). Every POST must answer 201 with a `Seq` header. Returns each
/// task's acknowledged `(seq, event)` pairs in the order it sent them.
pub async fn post_many(
    client: &reqwest::Client,
    bases: &[String],
    prefix: &str,
    n_tasks: usize,
    per_task: usize,
) -> Vec<Vec<(u64, String)>> {
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..n_tasks {
        let client = client.clone();
        let bases = bases.to_vec();
        let prefix = prefix.to_string();
        tasks.spawn(async move {
            let mut acked = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let event = format!("{prefix}{t}-{i}");
                let base = &bases[(t + i) % bases.len()];
                let r = post_event(&client, base, &event).await?;
                if r.status != StatusCode::CREATED {
                    return Err(format!("POST {event:?}: expected 201, got {r:?}"));
                }
                let seq = r.seq().ok_or_else(|| format!("POST {event:?}: no Seq header: {r:?}"))?;
                acked.push((seq, event));
            }
            Ok::<_, String>((t, acked))
        });
    }
    let mut out = vec![Vec::new(); n_tasks];
    while let Some(joined) = tasks.join_next().await {
        let (t, acked) = joined
            .expect("post task panicked")
            .unwrap_or_else(|e| panic!("concurrent POST failed: {e}"));
        out[t] = acked;
    }
    out
}

// ---------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------

/// What one run of the real `curl` binary produced.
#[derive(Debug)]
pub struct CurlOut {
    /// Exactly what curl printed on stdout (the response body).
    pub stdout: Vec<u8>,
    /// `%{http_code}` of the last response (`000` when none).
    pub http_code: String,
    /// curl's exit code.
    pub exit: Option<i32>,
}

impl CurlOut {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Run `curl -s -k -w '%{stderr}%{http_code}' --max-time 15 <args>`.
/// stdout is left byte-exact (the write-out goes to stderr, and `-s` keeps
/// everything else off stderr).
pub async fn curl(args: &[&str]) -> CurlOut {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-k", "-w", "%{stderr}%{http_code}", "--max-time", "15"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run curl (is it installed?)");
    CurlOut {
        stdout: out.stdout,
        http_code: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        exit: out.status.code(),
    }
}

// ---------------------------------------------------------------------------
// /status helpers
// ---------------------------------------------------------------------------

/// A node id as a string: ids are u64 and may be served as JSON numbers or
/// strings; `null` (no leader) gives `None`.
pub fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("node_id").or_else(|| o.get("id")).and_then(id_of),
        _ => None,
    }
}

/// `voters` / `learners` as a sorted set of ids; panics when not an array.
pub fn id_set(status: &Value, field: &str) -> BTreeSet<String> {
    let arr = status
        .get(field)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("/status field {field:?} is not an array: {status}"));
    arr.iter()
        .map(|v| id_of(v).unwrap_or_else(|| panic!("bad id {v} in /status {field}: {status}")))
        .collect()
}

/// A u64 field of `/status`; panics when missing or not a number.
pub fn u64_field(status: &Value, field: &str) -> u64 {
    status
        .get(field)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("/status field {field:?} is not a u64: {status}"))
}

/// A Raft log index field of `/status` (`last_log_index`, `commit_index`,
/// `applied_index`, ...): a u64, or `null` before the node has any such entry,
/// which counts as 0 here. Panics on anything else.
pub fn index_field(status: &Value, field: &str) -> u64 {
    opt_index(status, field).unwrap_or(0)
}

/// Like [`index_field`] but keeps `null` as `None`.
pub fn opt_index(status: &Value, field: &str) -> Option<u64> {
    match status.get(field) {
        Some(Value::Null) => None,
        Some(v) if v.is_u64() => v.as_u64(),
        _ => panic!("/status field {field:?} is not a u64 or null: {status}"),
    }
}

pub fn str_field<'a>(status: &'a Value, field: &str) -> &'a str {
    status
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("/status field {field:?} is not a string: {status}"))
}

/// One line per status for failure messages.
pub fn status_brief(v: &Value) -> String {
    let f = |k: &str| v.get(k).map(|x| x.to_string()).unwrap_or_else(|| "-".into());
    format!(
        "node_id={} role={} leader_id={} term={} voters={} learners={} last_log={} commit={} applied={} snapshot={} purged={} queue_len={} head_seq={}",
        f("node_id"),
        f("role"),
        f("leader_id"),
        f("term"),
        f("voters"),
        f("learners"),
        f("last_log_index"),
        f("commit_index"),
        f("applied_index"),
        f("snapshot_index"),
        f("purged_index"),
        f("queue_len"),
        f("head_seq")
    )
}

/// Poll `f` every 100 ms until it returns `Ok`; panic after `timeout` with
/// `what` and the last `Err` reason.
pub async fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut f: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let reason = match f().await {
            Ok(v) => return v,
            Err(reason) => reason,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last state: {reason}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

// ---------------------------------------------------------------------------
// TLS probe of the Raft port
// ---------------------------------------------------------------------------

/// A rustls client config trusting `ca_pem` and presenting `identity`
/// (cert chain PEM, key PEM) if given, whatever their issuer and role.
pub fn tls_client_config(ca_pem: &Path, identity: Option<(&Path, &Path)>) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).expect("read ca.pem") {
        roots.add(cert.expect("parse ca.pem")).expect("add CA root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("rustls protocol versions")
    .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .expect("read client cert")
                .collect::<Result<_, _>>()
                .expect("parse client cert");
            let key = PrivateKeyDer::from_pem_file(key).expect("read client key");
            builder.with_client_auth_cert(chain, key).expect("client cert and key match")
        }
    }
}

/// Open a TLS session to `addr` trusting `ca_pem`, optionally presenting
/// `identity` (cert chain PEM, key PEM), and see whether the server keeps it.
///
/// `Ok(detail)`: the handshake completed and the server then sent data or
/// kept the session open for `settle`. `Err(reason)`: the handshake failed,
/// or the server sent an alert / closed the session right after it (TLS 1.3
/// rejects a missing client certificate only after the client's Finished).
/// Blocking: call from `spawn_blocking`.
pub fn tls_probe(
    addr: SocketAddr,
    ca_pem: &Path,
    identity: Option<(&Path, &Path)>,
    settle: Duration,
) -> Result<String, String> {
    use rustls::pki_types::ServerName;

    let config = tls_client_config(ca_pem, identity);
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("TCP connect to {addr}: {e}"))?;
    sock.set_read_timeout(Some(settle)).expect("set read timeout");
    sock.set_write_timeout(Some(Duration::from_secs(5))).expect("set write timeout");
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| format!("TLS handshake failed: {e}"))?;
    }
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut buf = [0u8; 512];
    match tls.read(&mut buf) {
        Ok(0) => Err("server closed the TLS session right after the handshake".into()),
        Ok(n) => Ok(format!("server sent {n} bytes after the handshake")),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(format!("session stayed open for {settle:?}"))
        }
        Err(e) => Err(format!("read after handshake failed: {e}")),
    }
}

// ---------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------

/// Configures a [`Cluster`]: node count and extra `serve` arguments that
/// every node (including ones added later) gets.
pub struct ClusterBuilder {
    nodes: usize,
    extra_args: Vec<String>,
    /// `--api-token` for every node; the harness clients send it.
    token: Option<String>,
    /// `--api-client-ca ca.pem` for every node; the harness clients present
    /// the node certificate.
    client_certs: bool,
    /// A backup file that `raftq restore` writes into node 1's data dir
    /// before it first starts.
    restore_from: Option<PathBuf>,
    hosts: Vec<NetnsHost>,
    /// Where the nodes' data dirs go (default: inside the cluster's temp dir).
    data_base: Option<PathBuf>,
    /// Node `i` listens on `ports[i]` instead of free ports (a data dir made
    /// elsewhere names its members' addresses).
    ports: Vec<Ports>,
    /// Node `nX` starts on a copy of `seed_data/nX` (see [`ClusterBuilder::seed_data`]).
    seed_data: Option<PathBuf>,
}

impl ClusterBuilder {
    /// Put node `nX`'s data dir at `base/nX` (e.g. on a small filesystem).
    pub fn data_base(mut self, base: &Path) -> Self {
        self.data_base = Some(base.to_path_buf());
        self
    }

    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Node `i` listens on `ports[i]` (loopback) instead of free ports: for
    /// data dirs made by another run, whose membership names these
    /// addresses. The caller picks ports outside the ephemeral range.
    pub fn ports(mut self, ports: Vec<Ports>) -> Self {
        self.nodes = ports.len();
        self.ports = ports;
        self
    }

    /// Node `nX` starts on a copy of the directory `base/nX` (a data dir
    /// written by another build, say) instead of an empty data dir.
    pub fn seed_data(mut self, base: &Path) -> Self {
        self.seed_data = Some(base.to_path_buf());
        self
    }

    /// Extra `serve` arguments for every node, e.g. `["--snapshot-logs", "50"]`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Node 1 starts on a data dir made by `raftq restore <backup>`.
    pub fn restore_from(mut self, backup: &Path) -> Self {
        self.restore_from = Some(backup.to_path_buf());
        self
    }

    /// Every node requires this bearer token (`--api-token`); the harness's
    /// own clients send it, so tests probe the refusals with curl.
    pub fn api_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// Every node requires a client certificate of the cluster CA
    /// (`--api-client-ca`); the harness's own clients present node.pem.
    pub fn api_client_certs(mut self) -> Self {
        self.client_certs = true;
        self
    }

    /// One node per host, each in its network namespace: default ports,
    /// `--bind-interface` (so it advertises the interface's address), and
    /// certificates that also cover every host's address.
    pub fn netns_hosts(mut self, hosts: Vec<NetnsHost>) -> Self {
        self.nodes = hosts.len();
        self.hosts = hosts;
        self
    }

    /// Make certs, spawn every node and wait until each answers `/healthz`.
    /// Does not wait for the cluster to form (see [`Cluster::wait_for_voters`]).
    pub async fn start(self) -> Cluster {
        assert!(self.nodes >= 1);
        let slot = acquire_slot();
        install_crypto_provider();
        let dir =
            tempfile::Builder::new().prefix("raftq-cluster-").tempdir().expect("create temp dir");
        let certs = dir.path().join("certs");
        let mut cert_hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        cert_hosts.extend(self.hosts.iter().map(|h| h.ip.to_string()));
        make_certs_for(&certs, &cert_hosts.join(","));
        let ca_pem = fs::read(certs.join("ca.pem")).expect("read ca.pem");
        let mut extra_args = self.extra_args;
        let mut auth = ClientAuth::default();
        if let Some(token) = &self.token {
            extra_args.extend(["--api-token".to_string(), token.clone()]);
            auth.token = Some(token.clone());
        }
        if self.client_certs {
            extra_args.extend([
                "--api-client-ca".to_string(),
                certs.join("ca.pem").display().to_string(),
            ]);
            let mut identity = fs::read(certs.join("node.pem")).expect("read node.pem");
            identity.extend(fs::read(certs.join("node-key.pem")).expect("read node-key.pem"));
            auth.identity_pem = Some(identity);
        }
        let mut cluster = Cluster {
            nodes: Vec::new(),
            client: http_client_auth(&ca_pem, false, REQUEST_TIMEOUT, &auth),
            follow: http_client_auth(&ca_pem, true, REQUEST_TIMEOUT, &auth),
            ca_pem,
            certs,
            extra_args,
            hosts: self.hosts,
            data_base: self.data_base,
            fixed_ports: self.ports,
            dir: Some(dir),
            _slot: slot,
        };
        // Reserve every node's ports first: later nodes need node 1's gossip
        // port, and nobody should be handed a port we are about to use.
        for _ in 0..self.nodes {
            cluster.prepare_node(&[]);
        }
        if let Some(base) = &self.seed_data {
            for node in &cluster.nodes {
                copy_dir(&base.join(&node.name), &node.data_dir);
            }
        }
        if let Some(backup) = &self.restore_from {
            let output = Command::new(BIN)
                .arg("restore")
                .arg(backup)
                .arg("--data-dir")
                .arg(&cluster.nodes[0].data_dir)
                .output()
                .expect("run raftq restore");
            assert!(
                output.status.success(),
                "raftq restore failed ({}):\nstdout: {}\nstderr: {}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        for i in 0..self.nodes {
            cluster.nodes[i].spawn();
        }
        for i in 0..self.nodes {
            cluster.wait_healthy(i).await;
        }
        cluster
    }
}

/// Copies the directory tree `from` into `to` (created if missing).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create copy target");
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("read dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}

fn make_certs(out: &Path) {
    make_certs_for(out, "127.0.0.1,localhost");
}

/// `raftq certs --out OUT --hosts HOSTS` (comma-separated).
fn make_certs_for(out: &Path, hosts: &str) {
    let output = Command::new(BIN)
        .args(["certs", "--out"])
        .arg(out)
        .args(["--hosts", hosts])
        .env("RUST_LOG", "info")
        .output()
        .expect("run raftq certs");
    assert!(
        output.status.success(),
        "raftq certs failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for f in ["ca.pem", "ca-key.pem", "node.pem", "node-key.pem"] {
        assert!(out.join(f).is_file(), "raftq certs did not write {}", out.join(f).display());
    }
}

/// A running set of `raftq serve` processes; see the module docs.
pub struct Cluster {
    // Field order is drop order: processes die before the directory goes.
    pub nodes: Vec<NodeProc>,
    /// Trusts the cluster CA; does NOT follow redirects.
    pub client: reqwest::Client,
    /// Trusts the cluster CA; follows redirects (re-sending method and body).
    pub follow: reqwest::Client,
    pub ca_pem: Vec<u8>,
    /// Holds ca.pem, ca-key.pem, node.pem, node-key.pem.
    pub certs: PathBuf,
    extra_args: Vec<String>,
    /// Node `i` runs in `hosts[i]` when present (see [`ClusterBuilder::netns_hosts`]).
    hosts: Vec<NetnsHost>,
    data_base: Option<PathBuf>,
    /// Node `i` listens on `fixed_ports[i]` when present (see [`ClusterBuilder::ports`]).
    fixed_ports: Vec<Ports>,
    dir: Option<tempfile::TempDir>,
    _slot: SlotGuard,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            nodes: 3,
            extra_args: Vec::new(),
            token: None,
            client_certs: false,
            restore_from: None,
            hosts: Vec::new(),
            data_base: None,
            ports: Vec::new(),
            seed_data: None,
        }
    }

    /// `n` nodes with the default arguments; see [`ClusterBuilder::start`].
    pub async fn start(n: usize) -> Cluster {
        Cluster::builder().nodes(n).start().await
    }

    /// The temporary directory of this cluster (certs, data dirs, logs).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("cluster dir").path()
    }

    pub fn url(&self, i: usize, path_and_query: &str) -> String {
        format!("{}{}", self.nodes[i].api_url(), path_and_query)
    }

    /// API base URLs of all nodes, in index order.
    pub fn api_urls(&self) -> Vec<String> {
        self.nodes.iter().map(NodeProc::api_url).collect()
    }

    /// Indexes of the nodes believed up and not paused.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_live()).collect()
    }

    /// Create the next node (ports reserved, not spawned). Node 1 bootstraps;
    /// every other node seeds node 1's gossip address.
    ///
    /// A node with a [`NetnsHost`] instead keeps every listener on its SPEC
    /// default (0.0.0.0 and the default port, as in a container) and takes
    /// its advertise host from `--bind-interface`.
    fn prepare_node(&mut self, extra: &[&str]) -> usize {
        let index = self.nodes.len();
        let name = format!("n{}", index + 1);
        let host = self.hosts.get(index).cloned();
        let data_dir = match &self.data_base {
            Some(base) => base.join(&name),
            None => self.dir().join(&name).join("data"),
        };
        fs::create_dir_all(&data_dir).expect("create data dir");
        let log_path = self.dir().join(format!("{name}.log"));
        let certs = &self.certs;
        let mut args: Vec<String> =
            vec!["serve".into(), "--data-dir".into(), data_dir.display().to_string()];
        let (ports, reservation) = match &host {
            None => {
                let (ports, reservation) = match self.fixed_ports.get(index) {
                    Some(ports) => (*ports, None),
                    None => {
                        let (ports, reservation) = reserve_ports();
                        (ports, Some(reservation))
                    }
                };
                let p = |port: u16| format!("127.0.0.1:{port}");
                args.extend([
                    "--api-addr".into(),
                    p(ports.api),
                    "--raft-addr".into(),
                    p(ports.raft),
                    "--gossip-addr".into(),
                    p(ports.gossip),
                    "--advertise-host".into(),
                    "127.0.0.1".into(),
                    "--maze-source-addr".into(),
                    p(ports.maze_source),
                    "--maze-client-addr".into(),
                    p(ports.maze_client),
                ]);
                (ports, reservation)
            }
            Some(host) => {
                args.extend(["--bind-interface".into(), host.interface.clone()]);
                (DEFAULT_PORTS, None)
            }
        };
        args.extend([
            "--tls-cert".into(),
            certs.join("node.pem").display().to_string(),
            "--tls-key".into(),
            certs.join("node-key.pem").display().to_string(),
            "--tls-ca".into(),
            certs.join("ca.pem").display().to_string(),
            "--heartbeat-ms".into(),
            HEARTBEAT_MS.to_string(),
            "--election-timeout-ms".into(),
            ELECTION_TIMEOUT_MS.to_string(),
        ]);
        if index > 0 {
            args.push("--seeds".into());
            args.push(self.nodes[0].gossip_addr().to_string());
        }
        args.extend(self.extra_args.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        self.nodes.push(NodeProc {
            name,
            ports,
            data_dir,
            log_path,
            args,
            child: None,
            paused: false,
            spawns: 0,
            reservation,
            node_id: OnceLock::new(),
            host,
            env: Vec::new(),
        });
        index
    }

    /// Start one more node that joins through node 1's gossip address, with
    /// the cluster's extra args plus `extra`; waits for `/healthz`.
    pub async fn add_node(&mut self, extra: &[&str]) -> usize {
        let i = self.prepare_node(extra);
        self.nodes[i].spawn();
        self.wait_healthy(i).await;
        i
    }

    /// Start node `i` again (stopping it gracefully first if it runs) with
    /// the same arguments, data dir and ports; waits for `/healthz`.
    pub async fn restart(&mut self, i: usize) {
        if self.nodes[i].pid().is_some() {
            let status = self.nodes[i].stop();
            assert!(status.success(), "{} exited with {status} on SIGTERM", self.nodes[i].name);
        }
        self.nodes[i].spawn();
        self.wait_healthy(i).await;
    }

    /// Wait until node `i` answers `GET /healthz` with 200; panics early if
    /// the process exits.
    pub async fn wait_healthy(&mut self, i: usize) {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        let url = self.url(i, "/healthz");
        loop {
            if let Some(status) = self.nodes[i].exited() {
                panic!("{} exited with {status} before answering /healthz", self.nodes[i].name);
            }
            let last = match send(&self.client, Method::GET, &url, None, &[]).await {
                Ok(r) if r.status == StatusCode::OK => return,
                Ok(r) => format!("{r:?}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!("{} not healthy after {HEALTHY_TIMEOUT:?}: {last}", self.nodes[i].name);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Wait until node `i` answers `GET /readyz` with 200.
    pub async fn wait_ready(&self, i: usize, timeout: Duration) {
        let url = self.url(i, "/readyz");
        let client = &self.client;
        let name = &self.nodes[i].name;
        wait_until(timeout, &format!("{name} /readyz 200"), async || {
            match send(client, Method::GET, &url, None, &[]).await {
                Ok(r) if r.status == StatusCode::OK => Ok(()),
                Ok(r) => Err(format!("{r:?}")),
                Err(e) => Err(e),
            }
        })
        .await
    }

    // -- requests ---------------------------------------------------------

    /// Any request to node `i`; panics on transport errors.
    pub async fn request(
        &self,
        i: usize,
        method: Method,
        path_and_query: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
        follow_redirects: bool,
    ) -> Resp {
        let client = if follow_redirects { &self.follow } else { &self.client };
        send(client, method, &self.url(i, path_and_query), body, headers)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", self.nodes[i].name))
    }

    pub async fn get(&self, i: usize, path_and_query: &str) -> Resp {
        self.request(i, Method::GET, path_and_query, None, &[], false).await
    }

    /// `POST /event` with a form body `event=...`, redirects not followed.
    pub async fn post(&self, i: usize, event: &str) -> Resp {
        self.request(i, Method::POST, "/event", Some((FORM, form_event(event))), &[], false).await
    }

    /// `POST /event` following redirects to the leader.
    pub async fn post_follow(&self, i: usize, event: &str) -> Resp {
        self.request(i, Method::POST, "/event", Some((FORM, form_event(event))), &[], true).await
    }

    /// `GET /event` (a read: served by any node, never redirected).
    pub async fn get_event(&self, i: usize) -> Resp {
        self.get(i, "/event").await
    }

    /// `DELETE /event`, optionally following redirects to the leader.
    pub async fn delete_event(&self, i: usize, follow_redirects: bool) -> Resp {
        self.request(i, Method::DELETE, "/event", None, &[], follow_redirects).await
    }

    // -- /status ----------------------------------------------------------

    pub async fn try_status(&self, i: usize) -> Result<Value, String> {
        let r = send(&self.client, Method::GET, &self.url(i, "/status"), None, &[]).await?;
        if r.status != StatusCode::OK {
            return Err(format!("{}: {r:?}", self.nodes[i].name));
        }
        let v: Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("/status not JSON ({e}): {r:?}"))?;
        // The typed contract the CLI reads must accept what the server says
        // (a mismatch is a bug, not a transient state: no retry).
        if let Err(e) = serde_json::from_value::<raftq::wire::Status>(v.clone()) {
            panic!("/status does not read as wire::Status ({e}): {v}");
        }
        if let Some(id) = v.get("node_id").and_then(id_of) {
            let _ = self.nodes[i].node_id.set(id);
        }
        Ok(v)
    }

    /// `GET /status` of node `i`; panics unless 200 with a JSON body.
    pub async fn status(&self, i: usize) -> Value {
        self.try_status(i).await.unwrap_or_else(|e| panic!("GET /status: {e}"))
    }

    /// Node `i`'s id (from `/status`, cached).
    pub async fn node_id(&self, i: usize) -> String {
        if let Some(id) = self.nodes[i].node_id.get() {
            return id.clone();
        }
        let v = self.status(i).await;
        id_of(&v["node_id"]).unwrap_or_else(|| panic!("/status has no node_id: {v}"))
    }

    /// The index of the node whose id is `id` (among ids seen so far).
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.node_id.get().is_some_and(|x| x == id))
    }

    /// One line per live node, for failure messages.
    pub async fn describe(&self) -> String {
        let mut s = String::new();
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            let line = if !n.is_live() {
                if n.is_paused() {
                    "paused".to_string()
                } else {
                    "down".to_string()
                }
            } else {
                match self.try_status(i).await {
                    Ok(v) => status_brief(&v),
                    Err(e) => format!("/status failed: {e}"),
                }
            };
            s.push_str(&format!("\n  {} ({}): {line}", n.name, n.api_url()));
        }
        s
    }

    /// One poll, no waiting: do all live nodes agree on a live leader (and,
    /// with `voters`, each see exactly that many voters)? `Ok(leader index)`,
    /// else `Err(why not)`.
    pub async fn try_leader(&self, voters: Option<usize>) -> Result<usize, String> {
        let live = self.live();
        if live.is_empty() {
            return Err("no live node".into());
        }
        let mut statuses = HashMap::new();
        let mut leader: Option<String> = None;
        for &i in &live {
            let v = self.try_status(i).await?;
            let name = &self.nodes[i].name;
            let Some(l) = v.get("leader_id").and_then(id_of) else {
                return Err(format!("{name} knows no leader: {}", status_brief(&v)));
            };
            if let Some(n) = voters {
                let have = id_set(&v, "voters").len();
                if have != n {
                    return Err(format!(
                        "{name} sees {have} voters, want {n}: {}",
                        status_brief(&v)
                    ));
                }
            }
            match &leader {
                None => leader = Some(l),
                Some(prev) if *prev != l => {
                    return Err(format!("leaders disagree: {prev} vs {l} ({name})"));
                }
                Some(_) => {}
            }
            statuses.insert(i, v);
        }
        let leader = leader.expect("at least one live node");
        let Some(li) = self.index_of(&leader) else {
            return Err(format!("leader {leader} is not a live node"));
        };
        let Some(lv) = statuses.get(&li) else {
            return Err(format!("leader {leader} is {} which is not live", self.nodes[li].name));
        };
        if lv.get("role").and_then(Value::as_str) != Some("leader") {
            return Err(format!(
                "{} is named leader but says {}",
                self.nodes[li].name,
                status_brief(lv)
            ));
        }
        Ok(li)
    }

    /// Wait until every live node's `/status` shows `n` voters and the same
    /// `leader_id`, and that leader (a live node) has role `leader`. Returns
    /// the leader's index.
    pub async fn wait_for_voters(&self, n: usize, timeout: Duration) -> usize {
        self.wait_agreement(Some(n), timeout).await
    }

    async fn wait_agreement(&self, voters: Option<usize>, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let reason = match self.try_leader(voters).await {
                Ok(i) => return i,
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for the live nodes to agree on a leader{}: {reason}{}",
                    voters.map(|n| format!(" with {n} voters")).unwrap_or_default(),
                    self.describe().await
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The index of the leader all live nodes agree on (waits up to 20 s).
    pub async fn leader(&self) -> usize {
        self.wait_agreement(None, Duration::from_secs(20)).await
    }

    /// Live nodes other than the leader.
    pub async fn followers(&self) -> Vec<usize> {
        let l = self.leader().await;
        self.live().into_iter().filter(|&i| i != l).collect()
    }

    // -- the log oracle -----------------------------------------------------

    /// Every retained event of node `i`'s default queue, through
    /// `GET /events?after=..&limit=500<extra_query>` pages (`extra_query`
    /// e.g. `&consistency=local`). Returns the events and the last `head`.
    /// Checks the page shape and that seqs strictly increase.
    pub async fn all_events(&self, i: usize, extra_query: &str) -> (Vec<(u64, String)>, u64) {
        let mut out: Vec<(u64, String)> = Vec::new();
        let mut after = 0u64;
        for _page in 0..10_000 {
            let path = format!("/events?after={after}&limit=500{extra_query}");
            let r = self.get(i, &path).await;
            assert_eq!(r.status, StatusCode::OK, "GET {path}: {r:?}");
            let v = r.json();
            let head = v
                .get("head")
                .and_then(Value::as_u64)
                .unwrap_or_else(|| panic!("GET {path}: no u64 \"head\": {v}"));
            let events = v
                .get("events")
                .and_then(Value::as_array)
                .unwrap_or_else(|| panic!("GET {path}: no \"events\" array: {v}"));
            for e in events {
                let seq = e
                    .get("seq")
                    .and_then(Value::as_u64)
                    .unwrap_or_else(|| panic!("GET {path}: event without u64 seq: {e}"));
                let event = e
                    .get("event")
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("GET {path}: event without string body: {e}"))
                    .to_string();
                assert!(
                    seq > after,
                    "GET {path}: seq {seq} not after {after} (order or paging broken)"
                );
                after = seq;
                out.push((seq, event));
            }
            if events.is_empty() || after >= head {
                assert!(
                    after >= head,
                    "GET {path}: empty page but head is {head} and the last listed seq is {after}"
                );
                return (out, head);
            }
        }
        panic!("GET /events on {}: too many pages", self.nodes[i].name);
    }

    /// The invariant oracle (linearizable reads on node `i`): the retained
    /// log starts at seq 1 and is gapless up to `head`; every acknowledged
    /// `(seq, event)` is present exactly once, with its event, in order; an
    /// acknowledged event body (when bodies are unique) appears at no other
    /// seq. Returns the whole listing.
    pub async fn check_acked(&self, i: usize, acked: &[(u64, String)]) -> Vec<(u64, String)> {
        let name = &self.nodes[i].name;
        let (events, head) = self.all_events(i, "").await;
        for (k, (seq, _)) in events.iter().enumerate() {
            assert_eq!(
                *seq,
                k as u64 + 1,
                "{name}: /events is not gapless from 1 (position {k} has seq {seq})"
            );
        }
        assert_eq!(
            events.len() as u64,
            head,
            "{name}: /events lists {} events but head is {head}",
            events.len()
        );
        let mut want: BTreeMap<u64, &str> = BTreeMap::new();
        for (seq, event) in acked {
            if let Some(prev) = want.insert(*seq, event) {
                panic!("seq {seq} was acknowledged twice: {prev:?} and {event:?}");
            }
        }
        for (&seq, &event) in &want {
            let got = events.get((seq as usize).wrapping_sub(1)).map(|(_, e)| e.as_str());
            assert_eq!(
                got,
                Some(event),
                "{name}: acknowledged seq {seq} ({event:?}) is missing or different (head {head})"
            );
        }
        let mut by_body: HashMap<&str, u64> = HashMap::new();
        let unique = acked.iter().all(|(s, e)| by_body.insert(e.as_str(), *s).is_none());
        if unique {
            for (seq, event) in &events {
                if let Some(&acked_seq) = by_body.get(event.as_str()) {
                    assert_eq!(
                        *seq, acked_seq,
                        "{name}: event {event:?} acknowledged as seq {acked_seq} also appears at seq {seq} (applied twice?)"
                    );
                }
            }
        }
        events
    }

    /// Run [`Cluster::check_acked`] on every live node.
    pub async fn check_acked_everywhere(&self, acked: &[(u64, String)]) {
        for i in self.live() {
            self.check_acked(i, acked).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut report = String::from("\n===== raftq cluster test failed: node logs =====\n");
        for node in &mut self.nodes {
            let state = match node.exited() {
                Some(status) => format!("exited: {status}"),
                None if node.pid().is_some() => {
                    if node.is_paused() {
                        "paused".to_string()
                    } else {
                        "running".to_string()
                    }
                }
                None => "down (stopped or killed by the test)".to_string(),
            };
            report.push_str(&format!(
                "----- {} ({}, api {}, {}) last {LOG_TAIL_LINES} lines of {} -----\n{}\n",
                node.name,
                node.cached_node_id().unwrap_or("id unknown"),
                node.api_url(),
                state,
                node.log_path.display(),
                node.log_tail(LOG_TAIL_LINES)
            ));
        }
        if std::env::var_os("RAFTQ_TEST_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                report.push_str(&format!("kept test directory {}\n", dir.keep().display()));
            }
        }
        eprintln!("{report}");
    }
}
