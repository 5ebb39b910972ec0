//! Starting, serving and stopping a node in-process: bound listeners on
//! port 0, the ports the node reports and advertises, a shutdown that
//! releases the ports and the data dir, and a restart on the same data.

use std::net::TcpStream;
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::node::{TestNode, TEXT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_port_zero_reports_and_advertises_its_ports() {
    let node = TestNode::start(|_| {}).await;
    let addrs = node.handle().addrs();
    let (source, clients) = addrs.maze.expect("maze listeners");
    let ports = [addrs.api.port(), addrs.raft.port(), source.port(), clients.port()];
    assert!(ports.iter().all(|&p| p != 0), "{addrs:?}");
    let mut distinct = ports.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "{addrs:?}");
    // Every reported port accepts connections.
    for addr in [addrs.raft, source, clients] {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{addr} does not accept: {e}"));
    }
    // Redirects and peers use the advertised URL: it has the real port.
    let status = node.get("/status").await.json();
    assert_eq!(status["leader_api_url"], format!("https://127.0.0.1:{}", addrs.api.port()));
    assert_eq!(status["node_id"], node.node_id);
    node.shutdown().await;
}

/// Every port listens with a deep accept queue (`LISTEN_BACKLOG`, capped by
/// `net.core.somaxconn`), not std's 128: with 128, a burst of new clients
/// overflows it and the kernel drops SYNs that clients resend only after
/// seconds. `ss` reports a listener's queue size as its Send-Q.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_port_listens_with_a_deep_accept_queue() {
    let Ok(somaxconn) = std::fs::read_to_string("/proc/sys/net/core/somaxconn") else {
        println!("SKIPPED: no /proc/sys/net/core/somaxconn");
        return;
    };
    let expected = raftq::node::listeners::LISTEN_BACKLOG
        .min(somaxconn.trim().parse().expect("somaxconn is a number"));
    let node = TestNode::start(|_| {}).await;
    let addrs = node.handle().addrs();
    let (source, clients) = addrs.maze.expect("maze listeners");
    for addr in [addrs.api, addrs.raft, source, clients] {
        let out = match std::process::Command::new("ss")
            .args(["-Hltn", &format!("sport = :{}", addr.port())])
            .output()
        {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            _ => {
                println!("SKIPPED: `ss` (iproute2) is not available");
                node.shutdown().await;
                return;
            }
        };
        // State Recv-Q Send-Q Local Peer
        let backlog: i32 = out
            .split_whitespace()
            .nth(2)
            .and_then(|q| q.parse().ok())
            .unwrap_or_else(|| panic!("no listener line for {addr} in `ss` output: {out:?}"));
        assert!(backlog > 128, "{addr} listens with a backlog of {backlog}");
        assert_eq!(backlog, expected, "{addr}");
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_ports_and_a_restart_keeps_the_data() {
    let node = TestNode::start(|_| {}).await;
    let (node_id, api) = (node.node_id, node.api);
    assert_eq!(node.post("survives").await, 1);
    let dir = tokio::time::timeout(Duration::from_secs(15), node.stop())
        .await
        .expect("shutdown within 15 s");
    assert!(
        TcpStream::connect_timeout(&api, Duration::from_secs(2)).is_err(),
        "the API port {api} still accepts after shutdown"
    );
    // Same data dir: same node id, same queue (RocksDB was closed, or it
    // could not be opened again).
    let node = TestNode::start_in(dir, |_| {}).await;
    assert_eq!(node.node_id, node_id);
    let r = node.get("/event").await;
    assert_eq!((r.status, r.body.as_slice(), r.seq()), (StatusCode::OK, &b"survives"[..], 1));
    assert_eq!(node.post("after").await, 2);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_label_only_the_first_queues() {
    let node = TestNode::start(|c| c.metrics_queues_max = 2).await;
    for queue in ["a", "b", "c", "d"] {
        let path = format!("/queues/{queue}/event");
        let r = node.send(Method::POST, &path, Some((TEXT, b"x".to_vec())), &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    }
    let r = node.get("/metrics").await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let lengths: Vec<&str> =
        text.lines().filter(|l| l.starts_with("raftq_queue_length{")).collect();
    assert_eq!(
        lengths,
        [
            "raftq_queue_length{queue=\"(other)\"} 2",
            "raftq_queue_length{queue=\"a\"} 1",
            "raftq_queue_length{queue=\"b\"} 1",
        ],
        "{text}"
    );
    node.shutdown().await;
}
