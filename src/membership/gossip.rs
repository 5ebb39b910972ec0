//! Gossip with chitchat: every node publishes who it is and where to reach
//! it; every node learns the same about the others.
//!
//! Gossip is unauthenticated UDP, so what it says is a hint: the leader
//! confirms a node over the mTLS Raft port before it touches the membership
//! (see `driver`). A restarted node gossips under a new chitchat generation;
//! it is recognised by its stable Raft node id ([`RAFT_ID_KEY`]), never by
//! the chitchat id.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState,
};
use serde::Serialize;

use crate::raft::types::{Node, NodeId};

pub const RAFT_ID_KEY: &str = "raft_id";
pub const RAFT_ADDR_KEY: &str = "raft_addr";
pub const API_ADDR_KEY: &str = "api_addr";
/// The cluster UUID this node belongs to, once it has one (see `raft::peer`):
/// a node on an empty data dir that hears of a cluster at its address joins
/// it instead of bootstrapping a second one.
pub const CLUSTER_UUID_KEY: &str = "cluster_uuid";
/// Node ids an operator removed, as this node's applied state knows them
/// (comma-separated). A removed node cut off from the log learns of its
/// removal from here (see `driver`).
pub const RETIRED_KEY: &str = "retired";
/// At most this many removed ids are published (see `publish_retired`).
pub const RETIRED_PUBLISHED_MAX: usize = 32;
/// "1" while the node's free disk is below `--min-free-disk` (see
/// `node::disk`): the leader then refuses writes that add data.
pub const DISK_LOW_KEY: &str = "disk_low";

const GOSSIP_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("starting gossip on {addr}: {source}")]
    Start { addr: SocketAddr, source: anyhow::Error },
}

/// One node as gossip sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GossipMember {
    pub node_id: NodeId,
    pub raft_addr: String,
    pub api_addr: String,
    pub gossip_addr: SocketAddr,
    pub live: bool,
    /// The cluster it says it belongs to (a hint, like everything here).
    pub cluster_uuid: Option<String>,
    /// It says its disk is below its `--min-free-disk` (see `node::disk`).
    pub disk_low: bool,
}

impl GossipMember {
    pub fn node(&self) -> Node {
        Node { raft_addr: self.raft_addr.clone(), api_addr: self.api_addr.clone() }
    }
}

pub struct GossipSettings {
    pub node_id: NodeId,
    pub node: Node,
    pub cluster_id: String,
    pub listen_addr: SocketAddr,
    pub advertise_addr: SocketAddr,
    pub seeds: Vec<String>,
    /// `--gossip-key`: sign and verify every datagram (see `gossip_auth`).
    pub auth: Option<super::gossip_auth::GossipAuth>,
}

pub struct Gossip {
    handle: ChitchatHandle,
}

fn member(id: &ChitchatId, state: &NodeState, live: bool) -> Option<GossipMember> {
    Some(GossipMember {
        node_id: state.get(RAFT_ID_KEY)?.parse().ok()?,
        raft_addr: state.get(RAFT_ADDR_KEY)?.to_string(),
        api_addr: state.get(API_ADDR_KEY)?.to_string(),
        gossip_addr: id.gossip_advertise_addr,
        live,
        cluster_uuid: state.get(CLUSTER_UUID_KEY).filter(|v| !v.is_empty()).map(str::to_string),
        disk_low: state.get(DISK_LOW_KEY) == Some("1"),
    })
}

impl Gossip {
    pub async fn spawn(settings: GossipSettings) -> Result<Self, GossipError> {
        // The start time as generation: a restart is a new incarnation.
        let generation =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(
                format!("raftq-{}", settings.node_id),
                generation,
                settings.advertise_addr,
            ),
            cluster_id: settings.cluster_id,
            gossip_interval: GOSSIP_INTERVAL,
            listen_addr: settings.listen_addr,
            seed_nodes: settings.seeds,
            failure_detector_config: FailureDetectorConfig {
                initial_interval: GOSSIP_INTERVAL * 2,
                max_interval: Duration::from_secs(5),
                dead_node_grace_period: Duration::from_secs(3600),
                ..Default::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V1,
        };
        let keys = vec![
            (RAFT_ID_KEY.to_string(), settings.node_id.to_string()),
            (RAFT_ADDR_KEY.to_string(), settings.node.raft_addr.clone()),
            (API_ADDR_KEY.to_string(), settings.node.api_addr.clone()),
        ];
        let transport = super::gossip_auth::transport(settings.auth);
        let handle = spawn_chitchat(config, keys, transport.as_ref())
            .await
            .map_err(|source| GossipError::Start { addr: settings.listen_addr, source })?;
        Ok(Gossip { handle })
    }

    /// Every node gossip knows, one entry per Raft node id: a live
    /// incarnation wins over dead ones.
    pub async fn members(&self) -> Vec<GossipMember> {
        let chitchat = self.handle.chitchat();
        let chitchat = chitchat.lock().await;
        let live: std::collections::HashSet<&ChitchatId> = chitchat.live_nodes().collect();
        let mut by_id: BTreeMap<NodeId, GossipMember> = BTreeMap::new();
        for (id, state) in chitchat.node_states() {
            let Some(m) = member(id, state, live.contains(id)) else { continue };
            match by_id.get(&m.node_id) {
                Some(existing) if existing.live || !m.live => {}
                _ => {
                    by_id.insert(m.node_id, m);
                }
            }
        }
        by_id.into_values().collect()
    }

    /// The live nodes and the addresses they advertise.
    pub async fn live(&self) -> BTreeMap<NodeId, Node> {
        self.members().await.into_iter().filter(|m| m.live).map(|m| (m.node_id, m.node())).collect()
    }

    /// Publishes the removed node ids this node knows of: the most recent
    /// [`RETIRED_PUBLISHED_MAX`] (a removed node learns of its removal within
    /// seconds; the value must stay far below a gossip packet).
    pub async fn publish_retired(&self, ids: &std::collections::BTreeSet<NodeId>) {
        let value = ids
            .iter()
            .rev()
            .take(RETIRED_PUBLISHED_MAX)
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        self.publish(RETIRED_KEY, &value).await;
    }

    /// Publishes the cluster UUID this node belongs to.
    pub async fn publish_cluster_uuid(&self, uuid: &str) {
        self.publish(CLUSTER_UUID_KEY, uuid).await;
    }

    /// Sets one of this node's gossip keys (a no-op when unchanged, so that
    /// calling it every tick costs no gossip traffic).
    pub async fn publish(&self, key: &str, value: &str) {
        let chitchat = self.handle.chitchat();
        let mut chitchat = chitchat.lock().await;
        let state = chitchat.self_node_state();
        if state.get(key) != Some(value) {
            state.set(key, value.to_string());
        }
    }

    /// Other gossip incarnations (earlier chitchat generations, live or dead)
    /// of Raft node `id`, with the cluster UUID each published if it has
    /// reached us yet: how a fresh node learns that its id was in use before
    /// its data dir existed.
    pub async fn earlier_incarnations(&self, id: NodeId) -> Vec<Option<String>> {
        let chitchat = self.handle.chitchat();
        let chitchat = chitchat.lock().await;
        let me = chitchat.self_chitchat_id().clone();
        chitchat
            .node_states()
            .iter()
            .filter(|(chitchat_id, _)| **chitchat_id != me)
            .filter(|(_, state)| state.get(RAFT_ID_KEY).and_then(|v| v.parse().ok()) == Some(id))
            .map(|(_, state)| {
                state.get(CLUSTER_UUID_KEY).filter(|v| !v.is_empty()).map(str::to_string)
            })
            .collect()
    }

    /// The live nodes whose published removed ids include `id`, with their
    /// node ids and Raft addresses (a hint only: confirm over mTLS before
    /// acting).
    pub async fn peers_claiming_retired(&self, id: NodeId) -> Vec<(NodeId, String)> {
        let chitchat = self.handle.chitchat();
        let chitchat = chitchat.lock().await;
        let live: std::collections::HashSet<&ChitchatId> = chitchat.live_nodes().collect();
        chitchat
            .node_states()
            .iter()
            .filter(|(chitchat_id, _)| live.contains(chitchat_id))
            .filter(|(_, state)| {
                state.get(RETIRED_KEY).is_some_and(|v| v.split(',').any(|x| x.parse() == Ok(id)))
            })
            .filter_map(|(_, state)| {
                let peer = state.get(RAFT_ID_KEY)?.parse().ok()?;
                Some((peer, state.get(RAFT_ADDR_KEY)?.to_string()))
            })
            .collect()
    }

    pub async fn shutdown(self) {
        if let Err(e) = self.handle.shutdown().await {
            tracing::warn!(error = %e, "gossip shutdown");
        }
    }
}
