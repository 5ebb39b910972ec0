//! Who may call the admin routes, and how often: `403 admin_forbidden` for
//! a client that is not on loopback when no `--admin-token` is set (`401`
//! with one, unless it sends it; also `403` for a browser page of another
//! site on loopback), and `429 rate_limited` for a second
//! leadership transfer within `--transfer-min-interval` on one node.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::cluster::TestCluster;
use crate::node::{Caller, Resp, TestNode};

/// A non-loopback IPv4 address of this host, if it has one.
fn non_loopback_ipv4() -> Option<IpAddr> {
    let interfaces = if_addrs::get_if_addrs().expect("list the network interfaces");
    interfaces.iter().map(|i| i.ip()).find(|ip| ip.is_ipv4() && !ip.is_loopback())
}

/// A node whose API listens on every address (the other listeners stay on
/// loopback), changed by `tweak`.
async fn node_on_every_address(tweak: impl FnOnce(&mut raftq::node::Config)) -> TestNode {
    TestNode::start(|c| {
        c.api_addr = SocketAddr::from(([0, 0, 0, 0], 0));
        tweak(c);
    })
    .await
}

/// The admin routes, each as a request that would change something (or
/// hand out the state) if it were let through.
fn admin_requests(node: &TestNode) -> Vec<(Method, String)> {
    vec![
        (Method::DELETE, format!("/cluster/nodes/{}", node.node_id)),
        (Method::DELETE, format!("/cluster/nodes/{}?force=true", node.node_id)),
        (Method::POST, "/cluster/leader/transfer".into()),
        (Method::POST, format!("/cluster/leader/transfer?to={}", node.node_id)),
        (Method::GET, "/cluster/backup".into()),
        (Method::HEAD, "/cluster/backup".into()),
        (Method::GET, "/debug/raft".into()),
    ]
}

/// The refusal of an admin request: the documented error (a HEAD answer has
/// the status and no body), and never a backup.
fn assert_refused(r: &Resp, status: StatusCode, code: &str) {
    assert!(r.header("raftq-applied-index").is_none(), "{r:?}: a backup was served");
    if r.what.starts_with("HEAD ") {
        assert_eq!(r.status, status, "{r:?}");
        assert!(r.body.is_empty(), "{r:?}");
    } else {
        r.assert_error(status, code);
    }
}

/// What an admin request could change: membership, leadership, the queue.
async fn admin_state(node: &TestNode) -> Value {
    let status = node.get("/status").await.json();
    serde_json::json!({
        "voters": status["voters"],
        "learners": status["learners"],
        "leader_id": status["leader_id"],
        "term": status["term"],
        "queue": node.queue_state("/events").await,
    })
}

/// The ordinary answers of a single voter to [`admin_requests`], when the
/// request is let through.
async fn assert_let_through(node: &TestNode, caller: &Caller, headers: &[(&str, &str)]) {
    let mut answers = Vec::new();
    for (method, path) in admin_requests(node) {
        answers.push(caller.send(method, &path, None, headers).await);
    }
    answers[0].assert_error(StatusCode::CONFLICT, "too_few_voters");
    // Forced, a leader removing itself first hands leadership over: to no one.
    answers[1].assert_error(StatusCode::CONFLICT, "no_target");
    answers[2].assert_error(StatusCode::CONFLICT, "no_target");
    // To itself: nothing to do.
    assert_eq!(answers[3].status, StatusCode::OK, "{:?}", answers[3]);
    assert_eq!(answers[3].json()["transferred"], false, "{:?}", answers[3]);
    for backup in &answers[4..6] {
        assert_eq!(backup.status, StatusCode::OK, "{backup:?}");
        assert!(backup.header("raftq-applied-index").is_some(), "{backup:?}");
    }
    assert!(!answers[4].body.is_empty(), "{:?}", answers[4]);
    let stats = &answers[6];
    assert_eq!(stats.status, StatusCode::OK, "{stats:?}");
    assert!(String::from_utf8_lossy(&stats.body).contains("Batch Sizes:"), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_answer_only_loopback_without_an_admin_token() {
    let Some(ip) = non_loopback_ipv4() else {
        println!("SKIPPED: this host has no non-loopback IPv4 address (the cluster suite's netns test covers 403 admin_forbidden)");
        return;
    };
    let node = node_on_every_address(|_| {}).await;
    node.post("keep").await;
    let remote = node.caller_from(ip);
    // The other routes answer it: only the admin routes are guarded.
    let r = remote.get("/event").await;
    assert_eq!((r.status, r.body.as_slice()), (StatusCode::OK, &b"keep"[..]), "{r:?}");
    let before = admin_state(&node).await;
    for (method, path) in admin_requests(&node) {
        let r = remote.send(method, &path, None, &[]).await;
        assert_refused(&r, StatusCode::FORBIDDEN, "admin_forbidden");
    }
    assert_eq!(admin_state(&node).await, before, "a refused admin request changed something");
    // The same requests from loopback get their ordinary answers.
    assert_let_through(&node, &node, &[]).await;
    assert_eq!(admin_state(&node).await, before);
    node.shutdown().await;
}

/// Without `--admin-token`, a loopback request that a browser marks as coming
/// from another site's page (`Sec-Fetch-Site`) is refused: such a page could
/// send a no-CORS POST or GET through a browser on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_refuse_another_sites_page_on_loopback() {
    let node = TestNode::start(|_| {}).await;
    node.post("keep").await;
    let before = admin_state(&node).await;
    for site in ["cross-site", "same-site"] {
        for (method, path) in admin_requests(&node) {
            let r = node.send(method, &path, None, &[("sec-fetch-site", site)]).await;
            assert_refused(&r, StatusCode::FORBIDDEN, "admin_forbidden");
        }
    }
    assert_eq!(admin_state(&node).await, before, "a refused admin request changed something");
    // The node's own console (same origin) and direct navigation get through.
    assert_let_through(&node, &node, &[("sec-fetch-site", "same-origin")]).await;
    assert_let_through(&node, &node, &[("sec-fetch-site", "none")]).await;
    assert_eq!(admin_state(&node).await, before);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_opens_the_admin_routes_from_anywhere() {
    let Some(ip) = non_loopback_ipv4() else {
        println!("SKIPPED: this host has no non-loopback IPv4 address");
        return;
    };
    let node = node_on_every_address(|c| c.admin_token = Some("admin-secret".into())).await;
    node.post("keep").await;
    let remote = node.caller_from(ip);
    let before = admin_state(&node).await;
    // Without the token (or with another), from anywhere: 401.
    let wrong = [("authorization", "Bearer admin-secreT")];
    for (caller, headers) in [(&remote, &[][..]), (&remote, &wrong[..]), (&node, &[][..])] {
        for (method, path) in admin_requests(&node) {
            let r = caller.send(method, &path, None, headers).await;
            assert_refused(&r, StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    assert_eq!(admin_state(&node).await, before, "a refused admin request changed something");
    // With it, not on loopback: the ordinary answers.
    assert_let_through(&node, &remote, &[("authorization", "Bearer admin-secret")]).await;
    assert_eq!(admin_state(&node).await, before);
    node.shutdown().await;
}

/// How long a transfer may take to be seen by every node.
const TRANSFER_WITHIN: Duration = Duration::from_secs(15);

/// Leadership from `from` (the leader) to `to`, which every node then sees.
async fn transfer(cluster: &TestCluster, from: &TestNode, to: u64) {
    let path = format!("/cluster/leader/transfer?to={to}");
    let r = from.send(Method::POST, &path, None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        (r.json()["transferred"].as_bool(), r.json()["leader_id"].as_u64()),
        (Some(true), Some(to)),
        "{r:?}"
    );
    cluster.wait_for_leader(to, TRANSFER_WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_transfer_within_the_interval_gets_429() {
    let cluster =
        TestCluster::start(2, |c| c.transfer_min_interval = Duration::from_secs(60)).await;
    let a_id = cluster.wait_for_voters(Duration::from_secs(30)).await;
    let a = cluster.node(a_id);
    let b = cluster.nodes.iter().find(|n| n.node_id != a_id).expect("a second node");
    let b_id = b.node_id;

    // On the follower: a redirect to the leader (307 not_leader).
    let path = format!("/cluster/leader/transfer?to={b_id}");
    let r = b.send(Method::POST, &path, None, &[]).await;
    let body = r.assert_error(StatusCode::TEMPORARY_REDIRECT, "not_leader");
    let location = format!("https://127.0.0.1:{}{path}", a.api.port());
    assert_eq!(
        (r.header("location"), body["location"].as_str()),
        (Some(location.as_str()), Some(location.as_str())),
        "{r:?}"
    );

    // A to B, then B to A: each node's first transfer, both let through.
    transfer(&cluster, a, b_id).await;
    transfer(&cluster, b, a_id).await;

    // A again, well within its minute: refused, and nothing moves.
    let term = a.get("/status").await.json()["term"].clone();
    for path in [path.as_str(), "/cluster/leader/transfer"] {
        let r = a.send(Method::POST, path, None, &[]).await;
        r.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        let retry_after: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{r:?}: no Retry-After in seconds"));
        assert!((1..=60).contains(&retry_after), "{r:?}");
    }
    cluster.wait_for_leader(a_id, TRANSFER_WITHIN).await;
    assert_eq!(a.get("/status").await.json()["term"], term, "no election happened");
    cluster.shutdown().await;
}

/// `GET /debug/raft` shows where a write's time went, stage by stage, once
/// writes have gone through (loopback, no admin token: let through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_raft_shows_the_stage_latencies_of_writes() {
    let node = TestNode::start(|_| {}).await;
    for i in 0..3 {
        node.post(&format!("e{i}")).await;
    }
    let r = node.get("/debug/raft").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.header("content-type").unwrap_or_default().starts_with("text/plain"), "{r:?}");
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("Log Stage Latencies (us):"), "{r:?}");
    let row = text.lines().find(|l| l.contains("proposed→applied")).unwrap_or_else(|| {
        panic!("{r:?}: no proposed→applied row");
    });
    // The row's sample count: every write took at least one entry.
    let samples: u64 = row
        .split('│')
        .nth(2)
        .and_then(|cell| cell.trim().replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("no sample count in {row:?}"));
    assert!(samples >= 3, "{samples} samples for 3 writes: {row:?}");
    node.shutdown().await;
}
