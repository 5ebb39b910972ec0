//! Proposing from any node: locally on the leader, forwarded over the Raft
//! port (`/internal/propose`, mTLS) from a follower.
//!
//! Used by long-lived internal producers (the maze event source, the gap
//! timer) that cannot answer a client with a redirect. HTTP clients are
//! redirected instead ([`Replica::propose`]). The leader accepts only what
//! those producers build ([`check_forwarded`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Replica;
use crate::maze::{MazeCommand, MazeLimits, SOURCE_BATCH_BYTES_MAX, SOURCE_BATCH_LINES_MAX};
use crate::raft::types::{Op, Reply};
use crate::raft::ProposeError;

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

impl Replica {
    /// Proposes `op` through the leader, wherever it is: here directly,
    /// else forwarded to it.
    pub async fn submit(&self, op: Op) -> Result<Reply, ProposeError> {
        let view = self.view();
        let leader = view.leader_id.ok_or(ProposeError::NotLeader { leader: None })?;
        if leader == self.inner.node_id {
            return self.inner.proposer.propose(op).await;
        }
        let node = view.nodes.get(&leader).ok_or(ProposeError::NotLeader { leader: None })?;
        let url = format!("{}{}", node.raft_url(), PATH_PROPOSE);
        let peer = &self.inner.peer_client;
        let request = peer.post(leader, &url).timeout(FORWARD_TIMEOUT).json(&op);
        let response = peer
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
        if let Err(e) = check_forwarded(&op, &self.inner.maze_limits) {
            return ProposeResponse { result: Err(format!("refused: {e}")) };
        }
        let proposal = self.inner.proposer.propose(op);
        let result = match tokio::time::timeout(FORWARD_TIMEOUT, proposal).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out waiting for commit".to_string()),
        };
        ProposeResponse { result }
    }
}

/// What the leader accepts on `/internal/propose`: only what a follower's
/// maze source and gap timer forward, within the bounds that source keeps
/// (a peer certificate is not a licence to write anything else, nor
/// batches no source of ours would build).
pub fn check_forwarded(op: &Op, limits: &MazeLimits) -> Result<(), String> {
    match op {
        Op::Maze(MazeCommand::Reset | MazeCommand::Skip { .. }) => Ok(()),
        Op::Maze(MazeCommand::Lines { lines, .. }) => {
            let line_max = limits.line_bytes_max + 1;
            if lines.len() > SOURCE_BATCH_LINES_MAX {
                return Err(format!(
                    "{} lines in one batch (at most {SOURCE_BATCH_LINES_MAX})",
                    lines.len()
                ));
            }
            if let Some(long) = lines.iter().find(|l| l.len() > line_max) {
                return Err(format!("a {}-byte line (at most {line_max})", long.len()));
            }
            let bytes: usize = lines.iter().map(String::len).sum();
            if bytes > SOURCE_BATCH_BYTES_MAX + line_max {
                return Err(format!(
                    "a {bytes}-byte batch (at most {})",
                    SOURCE_BATCH_BYTES_MAX + line_max
                ));
            }
            Ok(())
        }
        other => Err(format!(
            "only follower-maze batches are forwarded between nodes, not {}",
            match other {
                Op::Queue(_) => "queue commands",
                Op::RetireNode { .. } => "node removals",
                Op::Maze(_) => "this",
            }
        )),
    }
}

#[cfg(test)]
mod forwarded_tests {
    use super::*;
    use crate::queue::Command;

    const BATCH_LINES_MAX: usize = SOURCE_BATCH_LINES_MAX;

    #[test]
    fn only_bounded_maze_batches_may_be_forwarded() {
        let limits = MazeLimits::default();
        let lines = |n: usize, len: usize| {
            Op::Maze(MazeCommand::Lines { epoch: 1, lines: vec!["x".repeat(len); n] })
        };
        assert_eq!(check_forwarded(&Op::Maze(MazeCommand::Reset), &limits), Ok(()));
        assert_eq!(
            check_forwarded(&Op::Maze(MazeCommand::Skip { epoch: 1, seq: 3 }), &limits),
            Ok(())
        );
        assert_eq!(check_forwarded(&lines(BATCH_LINES_MAX, 8), &limits), Ok(()));
        assert!(check_forwarded(&lines(BATCH_LINES_MAX + 1, 8), &limits).is_err());
        assert!(check_forwarded(&lines(1, limits.line_bytes_max + 2), &limits).is_err());
        assert!(check_forwarded(&lines(200, limits.line_bytes_max), &limits).is_err());
        assert!(check_forwarded(&Op::RetireNode { id: 2 }, &limits).is_err());
        let enqueue = Op::Queue(Command::Enqueue {
            queue: "default".into(),
            event: "x".into(),
            idempotency_key: None,
        });
        assert!(check_forwarded(&enqueue, &limits).unwrap_err().contains("queue commands"));
    }
}
