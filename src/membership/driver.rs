//! The leader's membership loop: observe gossip and Raft, let
//! [`reconcile::decide`] choose one change, carry it out, repeat.
//!
//! Only the leader acts; followers run the loop idle so that a new leader
//! takes over within one tick. A node is confirmed over the Raft port (mTLS:
//! it holds a certificate of our CA, and it reports the node id gossip
//! claimed) before it is added.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::gossip::Gossip;
use super::reconcile::{self, Action, View};
use crate::raft::peer::PeerClient;
use crate::raft::types::{Node, NodeId};
use crate::replica::members::MembershipLock;
use crate::replica::{Replica, Role};

pub const PATH_RETIRED: &str = "/internal/retired";

const TICK: Duration = Duration::from_millis(500);
const QUARANTINE: Duration = Duration::from_secs(5);

pub struct Driver {
    /// Raft, and the membership lock shared with operator removals: one
    /// membership change at a time, each decided on the membership it
    /// changes.
    pub replica: Replica,
    pub gossip: Arc<Gossip>,
    /// Names our cluster and node on every request; knows our identity.
    pub peer_client: PeerClient,
    pub dead_grace: Duration,
    /// Replicated state: which nodes an operator retired.
    pub reader: crate::raft::state_machine::SmReader,
    /// Set once this node learns it was removed (`/status`, `/readyz`).
    pub retired: Arc<std::sync::atomic::AtomicBool>,
    /// Last decision and its outcome, for `/status`.
    pub last_decision: Arc<std::sync::Mutex<Option<String>>>,
}

impl Driver {
    pub async fn run(self, shutdown: CancellationToken) {
        let started = Instant::now();
        let mut down_since_ms = BTreeMap::new();
        let mut quarantined: BTreeMap<NodeId, Instant> = BTreeMap::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            self.notice_removal().await;
            let role = self.replica.view().role;
            if role == Role::Leader {
                self.ensure_cluster_uuid();
            }
            if let Some(uuid) = self.peer_client.identity().uuid() {
                self.gossip.publish_cluster_uuid(&uuid).await;
            }
            if role != Role::Leader {
                down_since_ms.clear();
                continue;
            }
            let held = self.replica.lock_membership().await;
            let raft = self.replica.view();
            let now_ms = started.elapsed().as_millis() as u64;
            let live = self.gossip.live().await;
            let nodes = raft.nodes;
            reconcile::track_down(&mut down_since_ms, nodes.keys().copied(), &live, now_ms);
            quarantined.retain(|_, until| *until > Instant::now());
            let matched =
                raft.matched.iter().map(|(id, index)| (*id, index.unwrap_or(0))).collect();
            let view = View {
                self_id: self.peer_client.identity().node_id(),
                live,
                voters: raft.voters,
                learners: raft.learners,
                nodes,
                matched,
                last_log_index: raft.last_log_index.unwrap_or(0),
                down_since_ms: down_since_ms.clone(),
                now_ms,
                dead_grace_ms: self.dead_grace.as_millis() as u64,
                catchup_lag_max: 64,
                quarantined: quarantined.keys().copied().collect(),
                retired: self.reader.retired(),
            };
            let Some(action) = reconcile::decide(&view) else { continue };
            tracing::info!(?action, "membership change");
            let outcome = self.execute(&held, &action).await;
            let summary = match &outcome {
                Ok(()) => format!("{action:?}: done"),
                Err(e) => format!("{action:?}: {e}"),
            };
            if let Err(e) = outcome {
                tracing::warn!(?action, error = %e, "membership change failed; will retry");
                // A node that failed its identity check (a forged address
                // change, say) is left alone for a while, so that the
                // other changes still happen meanwhile.
                if let Action::AddLearner { id, .. } | Action::UpdateNode { id, .. } = action {
                    quarantined.insert(id, Instant::now() + QUARANTINE);
                }
            }
            if let Ok(mut last) = self.last_decision.lock() {
                *last = Some(summary);
            }
        }
    }

    /// Shares the tombstones this node has applied, and checks whether it
    /// is itself one of the removed. A removed node no longer receives the
    /// log (so it may never apply its own tombstone) and, still listing
    /// itself in its last membership, would campaign forever; the members
    /// ignore it thanks to their leases, but it should stop, and tell its
    /// operator, like a removed etcd member.
    async fn notice_removal(&self) {
        use std::sync::atomic::Ordering;
        let applied = self.reader.retired();
        self.gossip.publish_retired(&applied).await;
        if self.retired.load(Ordering::Relaxed) {
            return;
        }
        let me = self.peer_client.identity().node_id();
        if applied.contains(&me) || self.removal_confirmed(me).await {
            self.retired.store(true, Ordering::Relaxed);
            self.replica.stop_campaigning();
            tracing::error!(
                node_id = me,
                "this node was removed from the cluster (DELETE /cluster/nodes/{me}); it no longer \
                 campaigns. Stop it; to bring the machine back, start it on an empty data dir"
            );
        }
    }

    /// Gossip is unauthenticated: a peer claiming this node was removed is
    /// asked over the mTLS Raft port (only cluster members hold a
    /// certificate) for the tombstones it has actually applied.
    async fn removal_confirmed(&self, me: NodeId) -> bool {
        for (peer, raft_addr) in self.gossip.peers_claiming_retired(me).await {
            let url = format!("https://{raft_addr}{PATH_RETIRED}");
            let request = self.peer_client.get(peer, &url).timeout(Duration::from_secs(2));
            let answer = self.peer_client.send(peer, request).await;
            let Ok(response) = answer else { continue };
            if let Ok(ids) = response.json::<Vec<NodeId>>().await {
                if ids.contains(&me) {
                    return true;
                }
            }
        }
        false
    }

    async fn execute(&self, held: &MembershipLock<'_>, action: &Action) -> Result<(), String> {
        // Gossip is forgeable: a node must answer at its (new) address,
        // over mTLS, as itself, before Raft sends there.
        if let Action::AddLearner { id, node } | Action::UpdateNode { id, node } = action {
            self.confirm(*id, node).await?;
        }
        self.replica.change_members(held, action).await
    }

    /// Gossip is a hint: ask the node itself, over mTLS, who it is.
    async fn confirm(&self, id: NodeId, node: &Node) -> Result<(), String> {
        self.peer_client.confirm(id, node).await.map(|_| ())
    }

    /// A leader whose data dir predates cluster UUIDs makes one: the
    /// followers adopt it with its next append.
    fn ensure_cluster_uuid(&self) {
        let identity = self.peer_client.identity();
        if identity.uuid().is_none() {
            match identity.create() {
                Ok(uuid) => tracing::info!(cluster_uuid = %uuid, "created the cluster uuid"),
                Err(e) => tracing::error!(error = %e, "creating the cluster uuid failed"),
            }
        }
    }
}
