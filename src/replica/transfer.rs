//! Leadership transfer, made from what openraft 0.9 has (it has no
//! transfer RPC).
//!
//! The leader holds new writes (every proposer waits at the proposer's
//! gate), waits until the target has its whole log, stops heartbeats until
//! the followers' leader lease expires (a follower refuses votes while it
//! holds a lease), then asks the target to campaign (`/internal/elect`). The
//! target has the longest log and its timer is the only one running early,
//! so it wins; the other followers' election timers are a lease plus a
//! random timeout away. Heartbeats come back on in every outcome.
//!
//! Transfers pause writes for a lease, so there is at most one per
//! `--transfer-min-interval`: a script in a loop cannot keep the cluster
//! from writing.

use std::time::{Duration, Instant};

use super::{NotLeader, Replica};
use crate::raft::types::{NodeId, Raft};

/// The internal route a transfer target is asked to campaign on.
pub const PATH_ELECT: &str = "/internal/elect";

/// How long a transfer waits for the target to have the leader's whole log.
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);
/// How long a transfer waits for the target to win after it campaigned.
const ELECTION_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
    #[error("this leader is the only voter")]
    NoTarget,
    #[error("node {0} is not a voter")]
    NotAVoter(NodeId),
    #[error(
        "a leadership transfer started {since_ms} ms ago; at most one per {min_interval:?} \
         (--transfer-min-interval)"
    )]
    TooSoon { since_ms: u128, min_interval: Duration, retry_after_secs: u64 },
    #[error("transfer rate limiter poisoned")]
    Poisoned,
    #[error("lost leadership during the transfer")]
    LostLeadership,
    #[error("node {0} did not catch up with the log; transfer abandoned")]
    NotCaughtUp(NodeId),
    #[error("asking node {target} to campaign: {why}")]
    Campaign { target: NodeId, why: String },
    #[error("node {0} did not win its election in time; the cluster elects a leader as usual")]
    NotElected(NodeId),
}

impl Replica {
    /// Hands leadership from this node (the leader) to `to`, or by default
    /// to the voter with the most of the log. `Ok(None)` when `to` is this
    /// node (nothing to do), else the new leader.
    pub async fn transfer_leadership(
        &self,
        to: Option<NodeId>,
    ) -> Result<Option<NodeId>, TransferError> {
        self.route_write()?;
        self.hand_over(to).await
    }

    pub(super) async fn hand_over(
        &self,
        to: Option<NodeId>,
    ) -> Result<Option<NodeId>, TransferError> {
        let me = self.inner.node_id;
        let view = self.view();
        let target = match to {
            Some(to) => to,
            None => view
                .voters
                .iter()
                .copied()
                .filter(|&v| v != me)
                .max_by_key(|&v| view.matched_index(v))
                .ok_or(TransferError::NoTarget)?,
        };
        if target == me {
            return Ok(None);
        }
        if !view.voters.contains(&target) {
            return Err(TransferError::NotAVoter(target));
        }
        let target_node =
            view.nodes.get(&target).cloned().ok_or(TransferError::NotAVoter(target))?;
        self.claim_transfer_slot()?;

        // No new writes while the lease runs out (each would refresh it).
        let _writes_held = self.inner.proposer.hold_writes().await;
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
        loop {
            let now = self.view();
            if now.leader_id != Some(me) {
                return Err(TransferError::LostLeadership);
            }
            if now.matched_index(target) >= now.last_log_index {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TransferError::NotCaughtUp(target));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let heartbeats = HeartbeatsOff::new(&self.inner.raft);
        tokio::time::sleep(self.inner.leader_lease + Duration::from_millis(50)).await;
        let url = format!("{}{}", target_node.raft_url(), PATH_ELECT);
        let peer = &self.inner.peer_client;
        let request = peer.post(target, &url).timeout(Duration::from_secs(2));
        let asked = peer.send(target, request).await;
        if let Err(e) = asked.and_then(|r| r.error_for_status()) {
            drop(heartbeats);
            return Err(TransferError::Campaign { target, why: e.to_string() });
        }
        let mut watch = self.inner.raft.metrics();
        let won = tokio::time::timeout(ELECTION_WAIT, async {
            loop {
                if watch.borrow().current_leader == Some(target) {
                    return true;
                }
                if watch.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await
        .unwrap_or(false);
        drop(heartbeats);
        if !won {
            return Err(TransferError::NotElected(target));
        }
        tracing::info!(from = me, to = target, "leadership transferred");
        Ok(Some(target))
    }

    /// At most one transfer per `--transfer-min-interval`.
    fn claim_transfer_slot(&self) -> Result<(), TransferError> {
        let now = Instant::now();
        let min_interval = self.inner.transfer_min_interval;
        let mut last = self.inner.last_transfer.lock().map_err(|_| TransferError::Poisoned)?;
        if let Some(at) = *last {
            let since = now.duration_since(at);
            if since < min_interval {
                let wait = min_interval - since;
                return Err(TransferError::TooSoon {
                    since_ms: since.as_millis(),
                    min_interval,
                    retry_after_secs: wait.as_secs() + 1,
                });
            }
        }
        *last = Some(now);
        Ok(())
    }

    /// A transfer's last step, on its target: campaign now. openraft
    /// ignores it on a leader or a learner.
    pub async fn elect(&self) -> Result<(), String> {
        self.inner.raft.trigger().elect().await.map_err(|e| e.to_string())
    }
}

/// Heartbeats are off while this lives.
struct HeartbeatsOff<'a>(&'a Raft);

impl<'a> HeartbeatsOff<'a> {
    fn new(raft: &'a Raft) -> Self {
        raft.runtime_config().heartbeat(false);
        HeartbeatsOff(raft)
    }
}

impl Drop for HeartbeatsOff<'_> {
    fn drop(&mut self) {
        self.0.runtime_config().heartbeat(true);
    }
}
