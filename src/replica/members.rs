//! Membership changes: an operator's removal, and the autopilot's changes
//! (`membership::driver`), one at a time under one lock, so that the
//! 3-voter floor is checked against the membership each change applies to.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;

use super::transfer::TransferError;
use super::{NotLeader, Replica};
use crate::membership::reconcile::{Action, MIN_VOTERS};
use crate::raft::types::{NodeId, Op, Reply};
use crate::raft::ProposeError;

const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Proof that the caller holds the membership lock ([`Replica::lock_membership`]).
pub struct MembershipLock<'a> {
    _guard: tokio::sync::MutexGuard<'a, ()>,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
    #[error(
        "removing node {id} would leave {left} voter(s): with fewer than {min}, one more failure \
         stops the cluster; add ?force=true to remove it anyway",
        min = MIN_VOTERS
    )]
    TooFewVoters { id: NodeId, left: usize },
    #[error("node {0} is neither a member nor known to gossip")]
    Unknown(NodeId),
    /// Asked to remove itself, the leader handed leadership over; the new
    /// leader (in `NotLeader`) does the removal.
    #[error("leadership handed over")]
    HandedOver(NotLeader),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error(transparent)]
    Propose(#[from] ProposeError),
    #[error("retire answered {0}")]
    UnexpectedReply(String),
    #[error("node {id} is retired but still a member ({why}); autopilot will finish the removal")]
    StillMember { id: NodeId, why: String },
}

impl Replica {
    /// Waits for the membership lock; hold it across deciding a change and
    /// making it.
    pub async fn lock_membership(&self) -> MembershipLock<'_> {
        MembershipLock { _guard: self.inner.membership_lock.lock().await }
    }

    /// Makes one membership change, waiting for it (bounded). The caller
    /// has confirmed any new address over mTLS (gossip is a hint).
    pub async fn change_members(
        &self,
        _held: &MembershipLock<'_>,
        change: &Action,
    ) -> Result<(), String> {
        let raft = &self.inner.raft;
        let change = match change.clone() {
            Action::AddLearner { id, node } => {
                let add = raft.add_learner(id, node, false);
                return match tokio::time::timeout(CHANGE_TIMEOUT, add).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".into()),
                };
            }
            Action::Promote { id } => ChangeMembers::AddVoterIds(BTreeSet::from([id])),
            Action::UpdateNode { id, node } => {
                ChangeMembers::SetNodes(BTreeMap::from([(id, node)]))
            }
            Action::ReplaceVoter { old, new } => {
                let mut voters = self.view().voters;
                voters.remove(&old);
                voters.insert(new);
                ChangeMembers::ReplaceAllVoters(voters)
            }
            Action::RemoveVoter { id } => ChangeMembers::RemoveVoters(BTreeSet::from([id])),
            Action::RemoveLearner { id } => ChangeMembers::RemoveNodes(BTreeSet::from([id])),
        };
        match tokio::time::timeout(CHANGE_TIMEOUT, raft.change_membership(change, false)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// An operator's `DELETE /cluster/nodes/{id}`: takes a member out of the
    /// cluster for good.
    ///
    /// A replicated tombstone goes first, so that autopilot (on this leader
    /// or any later one) never adds the node back even though it may still
    /// gossip; then the membership change. Asked to remove itself, the
    /// leader hands leadership over first ([`RemoveError::HandedOver`]).
    /// `known` says whether the node is known outside Raft's membership
    /// (gossip, or an earlier tombstone): removing a stranger is refused.
    pub async fn remove_node(
        &self,
        id: NodeId,
        force: bool,
        known: impl std::future::Future<Output = bool>,
    ) -> Result<(), RemoveError> {
        self.route_write()?;
        let held = self.lock_membership().await;
        let voters = self.view().voters;
        if voters.contains(&id) && voters.len() - 1 < MIN_VOTERS && !force {
            return Err(RemoveError::TooFewVoters { id, left: voters.len() - 1 });
        }
        if id == self.inner.node_id {
            // The leader cannot take itself out: it hands leadership over,
            // then the client goes to the new leader (307), which does.
            self.hand_over(None, false).await?;
            let view = self.view();
            let leader = view.leader().map(|(id, node)| (id, node.clone()));
            return Err(RemoveError::HandedOver(NotLeader { leader }));
        }
        let (is_voter, is_member) = {
            let view = self.view();
            (view.voters.contains(&id), view.nodes.contains_key(&id))
        };
        if !is_member && !known.await {
            return Err(RemoveError::Unknown(id));
        }
        match self.propose(Op::RetireNode { id }).await? {
            Reply::Retired => {}
            other => return Err(RemoveError::UnexpectedReply(format!("{other:?}"))),
        }
        if is_member {
            let change =
                if is_voter { Action::RemoveVoter { id } } else { Action::RemoveLearner { id } };
            let outcome = self.change_members(&held, &change).await;
            // The membership driver may have finished the same removal
            // first (it acts on the tombstone too): judge by the result.
            if self.view().nodes.contains_key(&id) {
                let why = match outcome {
                    Err(e) => e,
                    Ok(()) => "membership change did not take".into(),
                };
                return Err(RemoveError::StillMember { id, why });
            }
        }
        tracing::info!(node_id = id, "node removed by an operator");
        Ok(())
    }

    /// This node was removed from the cluster: it stops campaigning (it
    /// would otherwise, still listing itself in its last membership).
    pub fn stop_campaigning(&self) {
        self.inner.raft.runtime_config().elect(false);
    }
}
