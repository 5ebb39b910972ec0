//! The leader's membership loop: observe gossip and Raft, let
//! [`reconcile::decide`] choose one change, carry it out, repeat.
//!
//! Only the leader acts; followers run the loop idle so that a new leader
//! takes over within one tick. A node is confirmed over the Raft port (mTLS:
//! it holds a certificate of our CA, and it reports the node id gossip
//! claimed) before it is added.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{ChangeMembers, ServerState};
use tokio_util::sync::CancellationToken;

use super::gossip::Gossip;
use super::reconcile::{self, Action, View};
use crate::raft::peer::PeerClient;
use crate::raft::types::{Node, NodeId, Raft};

pub const PATH_RETIRED: &str = "/internal/retired";

const TICK: Duration = Duration::from_millis(500);
const QUARANTINE: Duration = Duration::from_secs(5);
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Driver {
    pub raft: Raft,
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
    /// Shared with operator removals (`api::admin`): one membership change
    /// at a time, each decided on the membership it changes.
    pub membership_lock: Arc<tokio::sync::Mutex<()>>,
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
            let metrics = self.raft.metrics().borrow().clone();
            if metrics.state == ServerState::Leader {
                self.ensure_cluster_uuid();
            }
            if let Some(uuid) = self.peer_client.identity().uuid() {
                self.gossip.publish_cluster_uuid(&uuid).await;
            }
            if metrics.state != ServerState::Leader {
                down_since_ms.clear();
                continue;
            }
            let _one_change_at_a_time = self.membership_lock.lock().await;
            let metrics = self.raft.metrics().borrow().clone();
            let now_ms = started.elapsed().as_millis() as u64;
            let live = self.gossip.live().await;
            let membership = metrics.membership_config.membership();
            let nodes: BTreeMap<NodeId, Node> =
                membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
            reconcile::track_down(&mut down_since_ms, nodes.keys().copied(), &live, now_ms);
            quarantined.retain(|_, until| *until > Instant::now());
            let matched = metrics
                .replication
                .as_ref()
                .map(|r| {
                    r.iter().map(|(id, log_id)| (*id, log_id.map_or(0, |l| l.index))).collect()
                })
                .unwrap_or_default();
            let view = View {
                self_id: self.peer_client.identity().node_id(),
                live,
                voters: membership.voter_ids().collect(),
                learners: membership.learner_ids().collect(),
                nodes,
                matched,
                last_log_index: metrics.last_log_index.unwrap_or(0),
                down_since_ms: down_since_ms.clone(),
                now_ms,
                dead_grace_ms: self.dead_grace.as_millis() as u64,
                catchup_lag_max: 64,
                quarantined: quarantined.keys().copied().collect(),
                retired: self.reader.retired(),
            };
            let Some(action) = reconcile::decide(&view) else { continue };
            tracing::info!(?action, "membership change");
            let outcome = self.execute(&action).await;
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
            self.raft.runtime_config().elect(false);
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

    async fn execute(&self, action: &Action) -> Result<(), String> {
        let change = match action {
            Action::AddLearner { id, node } => {
                self.confirm(*id, node).await?;
                let add = self.raft.add_learner(*id, node.clone(), false);
                return match tokio::time::timeout(CHANGE_TIMEOUT, add).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".into()),
                };
            }
            Action::Promote { id } => ChangeMembers::AddVoterIds(BTreeSet::from([*id])),
            Action::UpdateNode { id, node } => {
                // Gossip is forgeable: the node must answer at the new
                // address, over mTLS, as itself, before Raft sends there.
                self.confirm(*id, node).await?;
                ChangeMembers::SetNodes(BTreeMap::from([(*id, node.clone())]))
            }
            Action::ReplaceVoter { old, new } => {
                let mut voters = self
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect::<BTreeSet<_>>();
                voters.remove(old);
                voters.insert(*new);
                ChangeMembers::ReplaceAllVoters(voters)
            }
            Action::RemoveVoter { id } => ChangeMembers::RemoveVoters(BTreeSet::from([*id])),
            Action::RemoveLearner { id } => ChangeMembers::RemoveNodes(BTreeSet::from([*id])),
        };
        match tokio::time::timeout(CHANGE_TIMEOUT, self.raft.change_membership(change, false)).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
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
