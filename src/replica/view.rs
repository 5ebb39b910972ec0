//! What this node knows of Raft at one instant, as plain raftq types.
//!
//! Callers read a [`RaftView`] instead of openraft's metrics: one snapshot
//! per decision (so its fields agree with each other), and no openraft type
//! outside `raft/` and `replica/`. Pure: built from the metrics value alone.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{RaftMetrics, ServerState};

use crate::raft::types::{Node, NodeId, TypeConfig};

/// A node's Raft role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

impl Role {
    /// As `/status` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

impl From<ServerState> for Role {
    fn from(state: ServerState) -> Self {
        match state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        }
    }
}

/// A snapshot of this node's Raft metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftView {
    /// This node.
    pub id: NodeId,
    pub role: Role,
    pub term: u64,
    /// The leader this node knows of (itself included).
    pub leader_id: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// Every member (voters and learners) and its addresses.
    pub nodes: BTreeMap<NodeId, Node>,
    /// On the leader: the last log index each member is known to hold
    /// (`None`: nothing yet). Empty on other nodes.
    pub matched: BTreeMap<NodeId, Option<u64>>,
    /// On the leader: milliseconds since a quorum of voters last
    /// acknowledged it, at the time of this view (`None` elsewhere, or
    /// before the first acknowledgement). Set by whoever built the view
    /// with a clock at hand.
    pub quorum_acked_ms: Option<u64>,
}

impl RaftView {
    pub fn from_metrics(m: &RaftMetrics<TypeConfig>) -> Self {
        let membership = m.membership_config.membership();
        RaftView {
            id: m.id,
            role: m.state.into(),
            term: m.current_term,
            leader_id: m.current_leader,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            nodes: membership.nodes().map(|(id, n)| (*id, n.clone())).collect(),
            matched: m
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
                .unwrap_or_default(),
            // Needs the clock: `Replica::view` fills it in.
            quorum_acked_ms: None,
        }
    }

    /// This node knows itself to be the leader.
    pub fn is_leader(&self) -> bool {
        self.leader_id == Some(self.id)
    }

    /// The leader's id and addresses, when known and a member.
    pub fn leader(&self) -> Option<(NodeId, &Node)> {
        let id = self.leader_id?;
        self.nodes.get(&id).map(|node| (id, node))
    }

    /// The leader's public API URL, as far as this node knows.
    pub fn leader_api_url(&self) -> Option<String> {
        self.leader().map(|(_, node)| node.api_url())
    }

    /// A leader with other voters that no quorum has acknowledged for
    /// longer than `limit`: cut off (its writes fail; a new leader is
    /// probably elected on the other side).
    pub fn leader_cut_off(&self, limit: std::time::Duration) -> bool {
        let others = self.voters.iter().any(|&v| v != self.id);
        self.is_leader()
            && others
            && self.quorum_acked_ms.is_some_and(|ms| u128::from(ms) > limit.as_millis())
    }

    /// The last log index `id` is known to hold (leader only).
    pub fn matched_index(&self, id: NodeId) -> Option<u64> {
        self.matched.get(&id).copied().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_spelled_as_status_shows_them() {
        let all = [
            (ServerState::Leader, "leader"),
            (ServerState::Follower, "follower"),
            (ServerState::Candidate, "candidate"),
            (ServerState::Learner, "learner"),
            (ServerState::Shutdown, "shutdown"),
        ];
        for (state, name) in all {
            assert_eq!(Role::from(state).as_str(), name);
        }
    }

    fn node(port: u16) -> Node {
        Node { raft_addr: format!("h:{port}"), api_addr: format!("h:{}", port + 1) }
    }

    #[test]
    fn a_leaders_metrics_become_plain_membership_and_progress() {
        use std::sync::Arc;

        use crate::raft::types::{LeaderId, LogId, Membership, StoredMembership};

        let nodes = BTreeMap::from([(1, node(10)), (2, node(20)), (3, node(30)), (4, node(40))]);
        let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes).unwrap();
        let log_id = |index| LogId::new(LeaderId { term: 5, node_id: 1 }, index);
        let mut m = RaftMetrics::new_initial(1);
        m.state = ServerState::Leader;
        m.current_term = 5;
        m.current_leader = Some(1);
        m.last_log_index = Some(9);
        m.last_applied = Some(log_id(8));
        m.membership_config = Arc::new(StoredMembership::new(Some(log_id(2)), membership));
        m.replication =
            Some(BTreeMap::from([(1, Some(log_id(9))), (2, Some(log_id(7))), (4, None)]));

        let view = RaftView::from_metrics(&m);
        assert!(view.is_leader());
        assert_eq!((view.role, view.term, view.applied_index), (Role::Leader, 5, Some(8)));
        assert_eq!(view.voters, BTreeSet::from([1, 2, 3]));
        assert_eq!(view.learners, BTreeSet::from([4]));
        assert_eq!(view.leader(), Some((1, &node(10))));
        assert_eq!(view.leader_api_url().as_deref(), Some("https://h:11"));
        assert_eq!([1, 2, 3, 4].map(|id| view.matched_index(id)), [Some(9), Some(7), None, None]);
        assert!(!view.leader_cut_off(std::time::Duration::ZERO), "no quorum ack known");
    }

    #[test]
    fn a_leader_is_cut_off_once_its_quorum_is_silent_past_the_limit() {
        let limit = std::time::Duration::from_millis(300);
        let mut view = RaftView::from_metrics(&RaftMetrics::new_initial(1));
        view.leader_id = Some(1);
        view.role = Role::Leader;
        view.voters = BTreeSet::from([1, 2, 3]);
        view.quorum_acked_ms = Some(300);
        assert!(!view.leader_cut_off(limit));
        view.quorum_acked_ms = Some(301);
        assert!(view.leader_cut_off(limit));
        // A single voter is its own quorum; a follower is never cut off.
        view.voters = BTreeSet::from([1]);
        assert!(!view.leader_cut_off(limit));
        view.voters = BTreeSet::from([1, 2, 3]);
        view.leader_id = Some(2);
        view.role = Role::Follower;
        assert!(!view.leader_cut_off(limit));
    }

    #[test]
    fn a_fresh_node_knows_no_leader_and_no_members() {
        let view = RaftView::from_metrics(&RaftMetrics::new_initial(7));
        assert_eq!(view.id, 7);
        assert!(!view.is_leader());
        assert_eq!(view.leader(), None);
        assert_eq!(view.leader_api_url(), None);
        assert!(view.voters.is_empty() && view.nodes.is_empty() && view.matched.is_empty());
        assert_eq!(view.matched_index(1), None);
    }
}
