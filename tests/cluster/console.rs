//! Issue 14: the web console (`/ui/`) in a real browser. Headless Chromium
//! (Debian's `chromium`; `RAFTQ_CHROMIUM` names another binary) is driven
//! over the DevTools protocol: a small client below, JSON over a websocket.
//! The test cluster's certificates are self-signed by a throw-away CA that
//! Chromium does not know: it runs with `--ignore-certificate-errors` (its
//! own profile in a temp dir, so nothing else is affected).
//!
//! Without the binary each test prints `SKIPPED: chromium not found` and
//! passes (`make deps` installs it as root).

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{http_client, id_of, urlencode, Cluster};

/// How long one DevTools command may take before the test fails.
const CDP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Chromium may take to open its DevTools port.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The events of queue `orders`: two are markup that must stay text.
const ORDERS: [&str; 5] =
    ["<img src=x onerror=alert(1)>", "order 2", "order 3", "order 4", "\"><svg onload=alert(2)>"];

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RAFTQ_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Headless Chromium with one page, attached through a flat DevTools
/// session. Events that arrive while a command waits for its answer are
/// kept in `events`.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
    session: String,
    events: Vec<Value>,
}

impl Browser {
    async fn launch(binary: &Path) -> Browser {
        let profile = tempfile::Builder::new().prefix("raftq-chromium-").tempdir().expect("tmp");
        let mut command = Command::new(binary);
        command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--password-store=basic",
                "--ignore-certificate-errors",
                "--window-size=1280,860",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group: the renderers go with it (see Drop).
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().expect("start chromium");
        // Chromium writes the port it picked and the browser's websocket path.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + LAUNCH_TIMEOUT;
        let endpoint = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            assert!(Instant::now() < deadline, "chromium did not open its DevTools port");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("connect to chromium's DevTools websocket");
        let mut browser = Browser {
            child,
            _profile: profile,
            ws,
            next_id: 0,
            session: String::new(),
            events: vec![],
        };
        let target =
            browser.call_browser("Target.createTarget", json!({"url": "about:blank"})).await;
        let target = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = browser
            .call_browser("Target.attachToTarget", json!({"targetId": target, "flatten": true}))
            .await;
        browser.session = attached["sessionId"].as_str().expect("sessionId").to_owned();
        for domain in ["Page.enable", "Network.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser
    }

    async fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None).await
    }

    /// A command to the page's session; its `result`.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(session)).await
    }

    async fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = Value::String(session);
        }
        self.ws.send(Message::text(message.to_string())).await.expect("send to chromium");
        let answer = tokio::time::timeout(CDP_TIMEOUT, async {
            loop {
                let frame = self.ws.next().await.expect("chromium closed").expect("ws read");
                let Message::Text(text) = frame else { continue };
                let value: Value = serde_json::from_str(&text).expect("DevTools JSON");
                if value["id"].as_u64() == Some(id) {
                    return value;
                }
                if value.get("method").is_some() {
                    self.events.push(value);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method}: no answer from chromium in {CDP_TIMEOUT:?}"));
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    async fn navigate(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({"url": url})).await;
        assert!(result.get("errorText").is_none(), "navigate {url}: {result}");
    }

    /// Evaluates `expression` in the page; its value (JSON-able).
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(result.get("exceptionDetails").is_none(), "{expression}: {result}");
        result["result"]["value"].clone()
    }

    /// Polls [`SNAPSHOT`] until `done` holds; the last snapshot, or a panic
    /// with it after `timeout`.
    async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let snapshot = self.eval(SNAPSHOT).await;
            if done(&snapshot) {
                return snapshot;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}: {snapshot:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The URLs the page requested (`Network.requestWillBeSent`).
    fn requested_urls(&self) -> Vec<String> {
        self.events_named("Network.requestWillBeSent")
            .map(|e| e["params"]["request"]["url"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn events_named<'a>(&'a self, method: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events.iter().filter(move |e| e["method"] == method)
    }

    /// Exceptions, console errors and warnings, CSP reports and browser log
    /// errors, except log entries `allowed` accepts.
    fn problems(&self, allowed: impl Fn(&Value) -> bool) -> Vec<String> {
        let mut problems = Vec::new();
        for e in &self.events {
            let params = &e["params"];
            let bad = match e["method"].as_str().unwrap_or_default() {
                "Runtime.exceptionThrown" | "Page.javascriptDialogOpening" => true,
                "Runtime.consoleAPICalled" => {
                    ["error", "warning", "assert"].contains(&params["type"].as_str().unwrap_or(""))
                }
                "Log.entryAdded" => {
                    ["error", "warning"].contains(&params["entry"]["level"].as_str().unwrap_or(""))
                        && !allowed(&params["entry"])
                }
                _ => false,
            };
            if bad {
                problems.push(e.to_string());
            }
        }
        problems
    }

    /// A PNG of the top `height` pixels of the page (1280 wide).
    async fn screenshot(&mut self, out: &Path, height: u32) {
        let metrics =
            json!({"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": false});
        self.call("Emulation.setDeviceMetricsOverride", metrics).await;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        std::fs::write(out, png).expect("write screenshot");
    }

    /// Clicks the tab of `view` (cluster, queues, maze, admin).
    async fn show(&mut self, view: &str) {
        self.eval(&format!("document.querySelector('.tab[data-view={view}]').click()")).await;
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self
                .ws
                .send(Message::text(json!({"id": 0, "method": "Browser.close"}).to_string()))
                .await;
            let _ = self.ws.next().await;
        })
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group this test created for chromium (browser, zygote, renderers).
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the page shows, read from the DOM (text as rendered); `loading`
/// before the console's document is there.
const SNAPSHOT: &str = r#"(() => {
  // Until the document is parsed, later elements (the confirm dialog) may
  // be missing while earlier ones (the login form) are already there.
  if (document.readyState === 'loading' || !document.getElementById('login')
      || !document.getElementById('confirm')) {
    return { loading: true, rows: [], queues: {}, detail: [] };
  }
  const text = (e) => (e ? e.textContent : null);
  const rows = [...document.querySelectorAll('#members tbody tr')].map((tr) => ({
    id: text(tr.querySelector('td.id')),
    role: text(tr.querySelector('td.role')),
    member: text(tr.querySelector('td.member')),
    gossip: text(tr.querySelector('td.gossip')),
    leader_marked: tr.classList.contains('leader'),
  }));
  const queues = {};
  for (const tr of document.querySelectorAll('#queues tbody tr[data-queue]')) {
    queues[text(tr.querySelector('td.name'))] = text(tr.querySelector('td.depth'));
  }
  const detail = [...document.querySelectorAll('#detail-events tbody tr')].map((tr) =>
    [...tr.cells].map((c) => c.textContent));
  return {
    login_visible: !document.getElementById('login').hidden,
    login_error: text(document.getElementById('login-error')),
    summary: text(document.getElementById('node-summary')),
    rows, queues, detail,
    front: text(document.getElementById('detail-front')),
    confirm_visible: !document.getElementById('confirm').hidden,
    admin_result: text(document.getElementById('admin-result')),
    images: document.querySelectorAll('img').length,
    svgs_outside_sparklines: [...document.querySelectorAll('svg')].filter((s) => !s.classList.contains('spark')).length,
    body_text: document.body.innerText,
  };
})()"#;

fn leader_shown(snapshot: &Value) -> Option<String> {
    let rows = snapshot["rows"].as_array()?;
    let leaders: Vec<&Value> =
        rows.iter().filter(|r| r["role"] == "leader" && r["leader_marked"] == true).collect();
    match leaders.as_slice() {
        [one] => one["id"].as_str().map(str::to_owned),
        _ => None,
    }
}

fn ids_shown(snapshot: &Value) -> Vec<String> {
    snapshot["rows"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn origin(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.split('/').next().unwrap_or_default();
    format!("{}://{host}", url.split_once("://").map_or("", |(s, _)| s))
}

/// `POST path` with the form body `event=...`, following redirects.
async fn post_event(cluster: &Cluster, i: usize, path: &str, event: &str) {
    let body = format!("event={}", urlencode(event)).into_bytes();
    let form = Some(("application/x-www-form-urlencoded", body));
    let r = cluster.request(i, Method::POST, path, form, &[], true).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
}

async fn enqueue_orders(cluster: &Cluster, leader: usize) {
    for event in ORDERS {
        post_event(cluster, leader, "/queues/orders/event", event).await;
    }
}

/// Acceptance 1 and 3 plus the XSS check: a follower's console shows the
/// cluster and `orders`, follows a leader kill without a reload, renders
/// event bodies as text, and never talks to anything but its node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_on_a_follower_follows_a_leader_kill() {
    let Some(binary) = chromium() else {
        println!("SKIPPED: chromium not found");
        return;
    };
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_voters(3, Duration::from_secs(30)).await;
    enqueue_orders(&cluster, leader).await;
    let follower = cluster.followers().await[0];
    let status = cluster.status(follower).await;
    let voters: Vec<String> =
        status["voters"].as_array().expect("voters").iter().filter_map(id_of).collect();
    assert_eq!(voters.len(), 3, "{status}");
    let leader_id = cluster.node_id(leader).await;
    let follower_origin = cluster.nodes[follower].api_url();

    let mut browser = Browser::launch(&binary).await;
    let started = Instant::now();
    browser.navigate(&cluster.url(follower, "/ui")).await;
    let shown = browser
        .wait_for("every voter, the leader and orders with depth 5", Duration::from_secs(15), |s| {
            let ids = ids_shown(s);
            voters.iter().all(|v| ids.contains(v))
                && leader_shown(s).as_deref() == Some(leader_id.as_str())
                && s["queues"]["orders"] == "5"
        })
        .await;
    println!("console: cluster and queue shown {:?} after navigation", started.elapsed());
    assert_eq!(shown["login_visible"], false, "{shown:#}");
    let follower_id = cluster.node_id(follower).await;
    assert!(
        shown["summary"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("node {follower_id} · follower")),
        "{shown:#}"
    );

    // The queue's front and last events, as text.
    browser.show("queues").await;
    browser.eval("document.querySelector('#queues tr[data-queue=orders]').click()").await;
    let peeked = browser
        .wait_for("orders' last events", Duration::from_secs(10), |s| {
            s["detail"].as_array().is_some_and(|d| d.len() == ORDERS.len())
        })
        .await;
    for (i, event) in ORDERS.iter().enumerate() {
        assert_eq!(peeked["detail"][i], json!([(i + 1).to_string(), event]), "{peeked:#}");
    }
    assert_eq!(peeked["front"], format!("#1  {}", ORDERS[0]), "{peeked:#}");
    assert_eq!(peeked["images"], 0, "an event body became an <img>: {peeked:#}");
    assert_eq!(peeked["svgs_outside_sparklines"], 0, "an event body became an <svg>: {peeked:#}");
    browser.show("cluster").await;

    // Kill -9 the leader: the page (on a follower) shows the new one.
    cluster.nodes[leader].kill9();
    let killed = Instant::now();
    let after = browser
        .wait_for("a new leader", Duration::from_secs(5), |s| {
            leader_shown(s).is_some_and(|l| l != leader_id)
        })
        .await;
    let took = killed.elapsed();
    println!("console: new leader shown {took:?} after the kill");
    let new_leader = leader_shown(&after).expect("leader");
    let agreed = cluster.leader().await;
    assert_eq!(
        cluster.node_id(agreed).await,
        new_leader,
        "the page shows another leader than the cluster"
    );

    // Give the page a few more polls, then read everything it did.
    tokio::time::sleep(Duration::from_secs(2)).await;
    browser.eval("1").await;
    let urls = browser.requested_urls();
    assert!(urls.iter().any(|u| u.ends_with("/status")), "no /status request seen: {urls:?}");
    for url in &urls {
        assert_eq!(origin(url), follower_origin, "a request left the node: {url}");
        assert!(!url.ends_with("/x"), "an event body's <img> was loaded: {url}");
    }
    let problems = browser.problems(|_| false);
    assert!(problems.is_empty(), "console errors:\n{}", problems.join("\n"));
    browser.close().await;
}

/// Acceptance 2: with `--api-token` the page asks for the token and shows
/// no data until it has the right one; the console files need no token,
/// the data routes do. Then an admin action: a confirmed backup download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_asks_for_the_api_token() {
    let Some(binary) = chromium() else {
        println!("SKIPPED: chromium not found");
        return;
    };
    const TOKEN: &str = "console-test-token";
    let cluster = Cluster::builder().nodes(1).api_token(TOKEN).start().await;
    let node = cluster.wait_for_voters(1, Duration::from_secs(30)).await;
    let node_id = cluster.node_id(node).await;

    // The files without a token, with the security headers; data refused.
    let anonymous = http_client(&cluster.ca_pem, false, Duration::from_secs(10));
    let page = anonymous.get(cluster.url(node, "/ui/")).send().await.expect("GET /ui/");
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().expect("csp").to_owned();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let redirect = anonymous.get(cluster.url(node, "/ui")).send().await.expect("GET /ui");
    assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirect.headers()["location"], "/ui/");
    let status = anonymous.get(cluster.url(node, "/status")).send().await.expect("GET /status");
    assert_eq!(status.status(), StatusCode::UNAUTHORIZED);

    let mut browser = Browser::launch(&binary).await;
    browser.navigate(&cluster.url(node, "/ui/")).await;
    let login = browser
        .wait_for("the login prompt", Duration::from_secs(10), |s| s["login_visible"] == true)
        .await;
    // Give a poll loop (there must be none) time to fill the tables.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let login_later = browser.eval(SNAPSHOT).await;
    for s in [&login, &login_later] {
        assert_eq!(s["login_visible"], true, "{s:#}");
        assert_eq!(s["rows"], json!([]), "data shown without a token: {s:#}");
        assert_eq!(s["queues"], json!({}), "data shown without a token: {s:#}");
        assert!(!s["body_text"].as_str().unwrap_or_default().contains(&node_id), "{s:#}");
    }

    let sign_in = |token: &str| {
        format!(
            "(() => {{ const i = document.getElementById('token-input'); i.value = {}; \
             document.getElementById('login-form').requestSubmit(); }})()",
            json!(token)
        )
    };
    browser.eval(&sign_in("wrong-token")).await;
    let refused = browser
        .wait_for("the refusal", Duration::from_secs(10), |s| {
            s["login_error"].as_str().is_some_and(|e| e.contains("refused"))
        })
        .await;
    assert_eq!(refused["rows"], json!([]), "{refused:#}");

    browser.eval(&sign_in(TOKEN)).await;
    let shown = browser
        .wait_for("the data after sign-in", Duration::from_secs(10), |s| {
            s["login_visible"] == false && leader_shown(s).as_deref() == Some(node_id.as_str())
        })
        .await;
    assert!(shown["summary"].as_str().unwrap_or_default().contains(&node_id), "{shown:#}");
    let token_in_storage = browser
        .eval("JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie")
        .await;
    assert!(!token_in_storage.as_str().unwrap_or_default().contains(TOKEN), "{token_in_storage}");

    // An admin action: a backup, downloaded only after the confirmation
    // (loopback and no --admin-token: the API token is sent).
    let downloads = tempfile::tempdir().expect("download dir");
    let behavior = json!({"behavior": "allow", "downloadPath": downloads.path()});
    browser.call_browser("Browser.setDownloadBehavior", behavior).await;
    browser.show("admin").await;
    browser.eval("document.getElementById('backup-btn').click()").await;
    let asked = browser.eval(SNAPSHOT).await;
    assert_eq!(asked["confirm_visible"], true, "{asked:#}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    browser.eval("1").await;
    let backups =
        |b: &Browser| b.requested_urls().iter().filter(|u| u.ends_with("/cluster/backup")).count();
    assert_eq!(backups(&browser), 0, "a backup was requested before the confirmation");
    browser.eval("document.getElementById('confirm-yes').click()").await;
    let saved = browser
        .wait_for("the backup", Duration::from_secs(15), |s| {
            s["admin_result"].as_str().is_some_and(|r| r.starts_with("saved raftq-backup-"))
        })
        .await;
    assert_eq!(backups(&browser), 1, "{saved:#}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let file = loop {
        let done =
            std::fs::read_dir(downloads.path()).expect("read downloads").flatten().find(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("raftq-backup-") && name.ends_with(".snap")
            });
        if let Some(entry) = done {
            break entry.path();
        }
        assert!(Instant::now() < deadline, "no backup file downloaded: {saved:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let size = std::fs::metadata(&file).expect("backup file").len();
    assert!(
        size > 0
            && saved["admin_result"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("({size} bytes")),
        "{} has {size} bytes: {saved:#}",
        file.display()
    );

    let origin_ = cluster.nodes[node].api_url();
    for url in browser.requested_urls() {
        assert_eq!(origin(&url), origin_, "a request left the node: {url}");
    }
    // The refused polls are logged by the browser as failed loads (401):
    // expected here; anything else is not.
    let problems = browser.problems(|entry| {
        entry["source"] == "network" && entry["text"].as_str().is_some_and(|t| t.contains("401"))
    });
    assert!(problems.is_empty(), "console errors:\n{}", problems.join("\n"));
    browser.close().await;
}

/// Writes the PNGs of docs/console.md (`RAFTQ_SCREENSHOTS=DIR`, default
/// docs/console): the leader's console of a 3-node cluster with a few
/// queues and some traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the docs' screenshots: scripts/console-screenshots.sh"]
async fn console_screenshots() {
    let Some(binary) = chromium() else {
        println!("SKIPPED: chromium not found");
        return;
    };
    let out = std::env::var_os("RAFTQ_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console"));
    std::fs::create_dir_all(&out).expect("screenshot dir");
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_voters(3, Duration::from_secs(30)).await;
    enqueue_orders(&cluster, leader).await;
    // The leader's console: it knows every member's replication progress.
    let mut browser = Browser::launch(&binary).await;
    browser.navigate(&cluster.url(leader, "/ui/")).await;
    browser.wait_for("the cluster", Duration::from_secs(15), |s| leader_shown(s).is_some()).await;
    // Three maze users (reading what they get) and a source on the leader.
    let node = &cluster.nodes[leader];
    for user in 1..=3 {
        let mut socket = TcpStream::connect(node.maze_client_addr()).expect("maze user");
        socket.write_all(format!("{user}\n").as_bytes()).expect("maze hello");
        std::thread::spawn(move || std::io::copy(&mut socket, &mut std::io::sink()));
    }
    let mut source = TcpStream::connect(node.maze_source_addr()).expect("maze source");
    let mut maze_seq = 0;
    // Some traffic for the sparklines: enqueues everywhere, dequeues on
    // `default`, maze lines, over 30 s.
    for round in 0..30 {
        for _ in 0..(round % 5 + 1) * 4 {
            maze_seq += 1;
            let line = if maze_seq % 2 == 0 {
                format!("{maze_seq}|B\n")
            } else {
                format!("{maze_seq}|F|1|2\n")
            };
            source.write_all(line.as_bytes()).expect("maze source line");
        }
        for i in 0..(round % 7 + 2) {
            let path = if i % 2 == 0 { "/event" } else { "/queues/payments/event" };
            post_event(&cluster, leader, path, &format!("payment {round}-{i}")).await;
        }
        if round % 3 != 0 {
            cluster.request(leader, Method::DELETE, "/event", None, &[], true).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    browser.screenshot(&out.join("cluster.png"), 560).await;
    browser.show("queues").await;
    browser.eval("document.querySelector('#queues tr[data-queue=orders]').click()").await;
    browser
        .wait_for("orders' events", Duration::from_secs(10), |s| {
            s["detail"].as_array().is_some_and(|d| d.len() == 5)
        })
        .await;
    browser.screenshot(&out.join("queues.png"), 760).await;
    browser.show("maze").await;
    browser.screenshot(&out.join("maze.png"), 700).await;
    browser.show("admin").await;
    browser.eval("document.getElementById('transfer-btn').click()").await;
    browser.screenshot(&out.join("admin.png"), 540).await;
    // The login prompt of a node with --api-token is shown in the token test.
    browser.close().await;
    println!("screenshots in {}", out.display());
}
