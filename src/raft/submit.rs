//! Proposing from any node: locally on the leader, forwarded over the Raft
//! port (`/internal/propose`, mTLS) from a follower.
//!
//! Used by long-lived internal producers (the maze event source, the gap
//! timer) that cannot answer a client with a redirect. HTTP clients are
//! redirected instead (see `api`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::peer::PeerClient;
use super::proposer::{ProposeError, Proposer};
use super::types::{NodeId, Op, Raft, Reply};

pub const PATH_PROPOSE: &str = "/internal/propose";

/// How long a forwarded proposal may take before it counts as failed (its
/// outcome is then unknown; callers only forward idempotent operations or
/// ones whose repetition is harmless).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// A forwarded proposal's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProposeResponse {
    pub result: Result<Reply, String>,
}

#[derive(Clone)]
pub struct Submitter {
    node_id: NodeId,
    raft: Raft,
    proposer: Proposer,
    peer_client: PeerClient,
    maze_limits: crate::maze::MazeLimits,
}

impl Submitter {
    pub fn new(
        node_id: NodeId,
        raft: Raft,
        proposer: Proposer,
        peer_client: PeerClient,
        maze_limits: crate::maze::MazeLimits,
    ) -> Self {
        Submitter { node_id, raft, proposer, peer_client, maze_limits }
    }

    pub async fn submit(&self, op: Op) -> Result<Reply, ProposeError> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader.ok_or(ProposeError::NotLeader { leader: None })?;
        if leader == self.node_id {
            return self.proposer.propose(op).await;
        }
        let node = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()
            .ok_or(ProposeError::NotLeader { leader: None })?;
        let url = format!("{}{}", node.raft_url(), PATH_PROPOSE);
        let request = self.peer_client.post(leader, &url).timeout(FORWARD_TIMEOUT).json(&op);
        let response = self
            .peer_client
            .send(leader, request)
            .await
            .map_err(|e| ProposeError::Unavailable(format!("forwarding to the leader: {e}")))?;
        let answer: ProposeResponse = response
            .json()
            .await
            .map_err(|e| ProposeError::Unavailable(format!("leader's answer: {e}")))?;
        answer.result.map_err(ProposeError::Unavailable)
    }

    /// Leader side of a forwarded proposal.
    pub async fn accept_forwarded(&self, op: Op) -> ProposeResponse {
        if let Err(e) = crate::maze::source::check_forwarded(&op, &self.maze_limits) {
            return ProposeResponse { result: Err(format!("refused: {e}")) };
        }
        let result = match tokio::time::timeout(FORWARD_TIMEOUT, self.proposer.propose(op)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out waiting for commit".to_string()),
        };
        ProposeResponse { result }
    }
}
