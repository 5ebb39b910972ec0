//! Several [`TestNode`]s that form one cluster the way `raftq serve` nodes
//! do: the first bootstraps alone, every other one seeds its gossip address
//! and is added (then promoted to voter) by the leader. One CA, written here,
//! signs a single node certificate that all of them use, so the Raft port's
//! mTLS trusts every peer.

use std::time::{Duration, Instant};

use raftq::node::config::TlsFiles;
use raftq::node::Config;
use reqwest::StatusCode;

use crate::node::TestNode;

/// Raft timing of the cluster suite's harness: short enough for a transfer
/// in about a second, long enough for two debug-built nodes on 2 busy cores.
const HEARTBEAT_MS: u64 = 100;
const ELECTION_TIMEOUT_MS: u64 = 800;

pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    // Last: the certificates outlive the nodes (fields drop in order).
    _certs: tempfile::TempDir,
}

impl TestCluster {
    /// `n` nodes started one after the other (each ready: it knows a
    /// leader), with the default test config changed by `tweak`. The
    /// cluster may not have all of them as voters yet: see
    /// [`TestCluster::wait_for_voters`].
    pub async fn start(n: usize, tweak: impl Fn(&mut Config)) -> TestCluster {
        let certs = tempfile::tempdir().expect("tempdir");
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
        raftq::tls::certs::write_cluster_certs(certs.path(), &hosts).expect("cluster certs");
        let tls = TlsFiles {
            cert: certs.path().join("node.pem"),
            key: certs.path().join("node-key.pem"),
            ca: certs.path().join("ca.pem"),
        };
        let mut nodes: Vec<TestNode> = Vec::with_capacity(n);
        for _ in 0..n {
            let seeds: Vec<String> =
                nodes.first().map(|n| n.gossip.to_string()).into_iter().collect();
            let node = TestNode::start(|c| {
                c.tls = Some(tls.clone());
                c.heartbeat_ms = HEARTBEAT_MS;
                c.election_timeout_ms = ELECTION_TIMEOUT_MS;
                // A node with seeds never bootstraps: it waits to be added.
                c.seeds = seeds;
                tweak(c);
            })
            .await;
            nodes.push(node);
        }
        TestCluster { nodes, _certs: certs }
    }

    /// The node with this id.
    pub fn node(&self, id: u64) -> &TestNode {
        self.nodes
            .iter()
            .find(|n| n.node_id == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// Waits until every node's `/status` names the same leader and has
    /// every node as a voter; returns that leader's id.
    pub async fn wait_for_voters(&self, within: Duration) -> u64 {
        let mut want: Vec<u64> = self.nodes.iter().map(|n| n.node_id).collect();
        want.sort_unstable();
        self.wait_until(within, "all voters and one leader", |leader, voters| {
            leader.is_some() && voters == want
        })
        .await
    }

    /// Waits until every node's `/status` names `id` as the leader.
    pub async fn wait_for_leader(&self, id: u64, within: Duration) {
        self.wait_until(within, &format!("leader {id}"), |leader, _| leader == Some(id)).await;
    }

    /// Polls every node's `/status` until `agreed(leader_id, sorted voters)`
    /// holds on each with the same leader; returns it.
    async fn wait_until(
        &self,
        within: Duration,
        what: &str,
        agreed: impl Fn(Option<u64>, Vec<u64>) -> bool,
    ) -> u64 {
        let started = Instant::now();
        loop {
            let mut seen = Vec::with_capacity(self.nodes.len());
            for node in &self.nodes {
                let r = node.get("/status").await;
                if r.status != StatusCode::OK {
                    seen.push(None);
                    continue;
                }
                let status = r.json();
                let leader = status["leader_id"].as_u64();
                let mut voters: Vec<u64> = status["voters"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
                    .unwrap_or_default();
                voters.sort_unstable();
                seen.push(agreed(leader, voters.clone()).then_some(leader).flatten());
            }
            if let Some(Some(leader)) = seen.first() {
                if seen.iter().all(|s| *s == Some(*leader)) {
                    return *leader;
                }
            }
            assert!(started.elapsed() < within, "no {what} within {within:?}: {seen:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}
