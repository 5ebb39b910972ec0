//! Linearizable reads on every node (the Raft "read index" protocol).
//!
//! On the leader, openraft confirms leadership with a quorum heartbeat and
//! waits until the state machine has applied the commit index it saw. On a
//! follower, the same index is obtained from the leader over the Raft port
//! (`/internal/read-index`) and the follower waits until it has applied it
//! locally; then its own state is at least as new as any write acknowledged
//! before the read began.

use std::time::Duration;

use openraft::error::{LinearizableReadError, RaftError};
use openraft::ReadPolicy;
use serde::{Deserialize, Serialize};

use super::Replica;
use crate::raft::types::{Node, NodeId};

pub const PATH_READ_INDEX: &str = "/internal/read-index";

/// How long a read may wait for the local state machine to catch up.
const APPLY_WAIT: Duration = Duration::from_secs(5);
/// How long the leader has to answer a read-index request.
const LEADER_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("no leader is known")]
    NoLeader,
    #[error("timed out waiting to catch up with the leader")]
    Timeout,
    #[error("read barrier failed: {0}")]
    Unavailable(String),
}

/// The leader's answer to a read-index request.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReadIndexResponse {
    /// `Ok(index)`: wait until applied >= index; `Err`: not (or no longer) leader.
    pub result: Result<Option<u64>, String>,
}

impl Replica {
    /// Returns once this node's state machine reflects every write that was
    /// acknowledged before the call.
    pub async fn linearizable(&self) -> Result<(), ReadError> {
        match tokio::time::timeout(
            APPLY_WAIT,
            self.inner.raft.ensure_linearizable(ReadPolicy::ReadIndex),
        )
        .await
        {
            Err(_) => Err(ReadError::Timeout),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward)))) => {
                let (Some(leader_id), Some(leader)) = (forward.leader_id, forward.leader_node)
                else {
                    return Err(ReadError::NoLeader);
                };
                let index = self.ask_leader(leader_id, &leader).await?;
                if let Some(index) = index {
                    self.inner
                        .raft
                        .wait(Some(APPLY_WAIT))
                        .applied_index_at_least(Some(index), "read index")
                        .await
                        .map_err(|_| ReadError::Timeout)?;
                }
                Ok(())
            }
            Ok(Err(e)) => Err(ReadError::Unavailable(e.to_string())),
        }
    }

    async fn ask_leader(&self, id: NodeId, leader: &Node) -> Result<Option<u64>, ReadError> {
        let url = format!("{}{}", leader.raft_url(), PATH_READ_INDEX);
        let peer = &self.inner.peer_client;
        let response = peer
            .send(id, peer.post(id, &url).timeout(LEADER_WAIT))
            .await
            .map_err(|e| ReadError::Unavailable(format!("leader unreachable: {e}")))?;
        let body: ReadIndexResponse = response
            .json()
            .await
            .map_err(|e| ReadError::Unavailable(format!("bad read-index answer: {e}")))?;
        body.result.map_err(ReadError::Unavailable)
    }

    /// Leader side of a follower's read: confirm leadership with a quorum and
    /// return the index the follower must have applied.
    pub async fn read_index(&self) -> ReadIndexResponse {
        let result = match tokio::time::timeout(
            LEADER_WAIT,
            self.inner.raft.get_read_log_id(ReadPolicy::ReadIndex),
        )
        .await
        {
            Err(_) => Err("timed out confirming leadership".to_string()),
            Ok(Ok((read_log_id, _))) => Ok(Some(read_log_id.index())),
            Ok(Err(e)) => Err(e.to_string()),
        };
        ReadIndexResponse { result }
    }
}
