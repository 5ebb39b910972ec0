//! Leadership transfer: openraft's own (`Trigger::transfer_leader`).
//!
//! The leader first holds new writes at the proposer's gate and waits
//! until those in flight are answered, so none is cut off by the hand-over
//! (their outcome would then be unknown). It then asks openraft to transfer:
//! openraft stops taking writes (`ForwardToLeader` to the target), sends
//! every node a transfer-leader RPC (the other followers give up their
//! leader lease, so they vote at once), and the target, once its log holds
//! everything the leader had, campaigns without waiting for a timeout. The
//! transfer returns when this node sees the target lead; held writes then
//! go on and are redirected to it.
//!
//! At most one transfer per `--transfer-min-interval`: a script in a loop
//! cannot keep the cluster from writing.

use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;

use super::{NotLeader, Replica};
use crate::raft::types::NodeId;

/// How long a transfer waits for the target to catch up and win.
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
    #[error("asking raft to transfer to node {target}: {why}")]
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
        self.hand_over(to, true).await
    }

    /// The transfer itself; `rate_limited` for the operator's route. A
    /// leader's own removal hands over without the limit: a node is
    /// removed only once, and a transfer now pauses writes only briefly.
    pub(super) async fn hand_over(
        &self,
        to: Option<NodeId>,
        rate_limited: bool,
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
        if rate_limited {
            self.claim_transfer_slot()?;
        }

        // No new writes, and none left in flight, while leadership moves.
        let _writes_held = self.inner.proposer.hold_writes().await;
        if self.view().leader_id != Some(me) {
            return Err(TransferError::LostLeadership);
        }
        let started = Instant::now();
        let mut watch = self.inner.raft.metrics();
        self.inner
            .raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|e| TransferError::Campaign { target, why: e.to_string() })?;
        let won = tokio::time::timeout(ELECTION_WAIT, async {
            loop {
                if watch.borrow_watched().current_leader == Some(target) {
                    return true;
                }
                if watch.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await
        .unwrap_or(false);
        if !won {
            return Err(TransferError::NotElected(target));
        }
        tracing::info!(from = me, to = target, elapsed = ?started.elapsed(), "leadership transferred");
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
}
