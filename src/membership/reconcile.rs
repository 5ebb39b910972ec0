//! Membership decisions: what the leader should change next, given what
//! gossip sees and what Raft has. Pure: no I/O, time passed in.
//!
//! Lifecycle of a node, as decided here:
//!
//! ```text
//!  gossip: live, unknown ──AddLearner──▶ learner ──caught up──▶ Promote ──▶ voter
//!  voter/learner address changed in gossip ──UpdateNode──▶ same id, new address
//!                                   (confirmed over mTLS at the new address first)
//!  caught-up learner at a dead voter's address ──ReplaceVoter──▶ takes its seat
//!                                   (a wiped node back with a new id: 3 voters, not 4)
//!  voter down longer than grace, > 3 voters ──RemoveVoter──▶ gone
//!  learner down longer than grace ──RemoveLearner──▶ gone
//!  retired by an operator (any role) ──RemoveVoter/RemoveLearner──▶ gone, never re-added
//! ```
//!
//! One action per call: openraft accepts one membership change at a time, and
//! deciding again from fresh state after each change keeps the rules simple
//! and restart-safe (the decision depends only on the inputs, not on what
//! was decided before).

use std::collections::{BTreeMap, BTreeSet};

use crate::raft::types::{Node, NodeId};

/// Voters are never removed below this count (Consul autopilot's floor).
pub const MIN_VOTERS: usize = 3;

/// What the leader knows when it decides.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// This node (the leader); never removed by itself.
    pub self_id: NodeId,
    /// Nodes gossip reports live, with the addresses they advertise.
    pub live: BTreeMap<NodeId, Node>,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// Addresses stored in the Raft membership.
    pub nodes: BTreeMap<NodeId, Node>,
    /// Highest log index known replicated to each follower.
    pub matched: BTreeMap<NodeId, u64>,
    /// The leader's last log index.
    pub last_log_index: u64,
    /// Since when (ms, caller's clock) each member has been not live.
    pub down_since_ms: BTreeMap<NodeId, u64>,
    pub now_ms: u64,
    pub dead_grace_ms: u64,
    /// A learner within this many entries of the leader counts as caught up.
    pub catchup_lag_max: u64,
    /// Nodes not to add, nor move to a new address, for now (their identity
    /// check failed recently).
    pub quarantined: BTreeSet<NodeId>,
    /// Nodes an operator removed (replicated tombstones): out for good.
    pub retired: BTreeSet<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Confirm the node over mTLS, then add it as a learner.
    AddLearner {
        id: NodeId,
        node: Node,
    },
    /// Make a caught-up learner a voter.
    Promote {
        id: NodeId,
    },
    /// A member now advertises other addresses (e.g. a container restarted
    /// with a new IP): same id, new addresses.
    UpdateNode {
        id: NodeId,
        node: Node,
    },
    RemoveVoter {
        id: NodeId,
    },
    /// `new` (a caught-up learner) answers at `old`'s address, so `old` (a
    /// voter) is gone for good: one joint change swaps them, keeping the
    /// voter count.
    ReplaceVoter {
        old: NodeId,
        new: NodeId,
    },
    RemoveLearner {
        id: NodeId,
    },
}

impl View {
    /// The voter (other than `id` and the leader) stored at `id`'s address.
    fn voter_at_same_address(&self, id: NodeId) -> Option<NodeId> {
        let node = self.nodes.get(&id)?;
        self.voters.iter().copied().find(|&v| {
            v != id
                && v != self.self_id
                && self.nodes.get(&v).is_some_and(|other| {
                    other.raft_addr == node.raft_addr || other.api_addr == node.api_addr
                })
        })
    }

    fn down_past_grace(&self, id: NodeId) -> bool {
        self.down_since_ms
            .get(&id)
            .is_some_and(|&since| self.now_ms.saturating_sub(since) >= self.dead_grace_ms)
    }
}

/// The next membership change, most urgent first, or `None` when the
/// membership already matches what gossip sees.
pub fn decide(view: &View) -> Option<Action> {
    // An operator's removal finishes first (it may have been cut short by a
    // leader change between the tombstone and the membership change). The
    // voter floor does not apply: the operator asked for it.
    for &id in &view.retired {
        if id == view.self_id {
            continue;
        }
        if view.voters.contains(&id) {
            return Some(Action::RemoveVoter { id });
        }
        if view.learners.contains(&id) {
            return Some(Action::RemoveLearner { id });
        }
    }
    // Wrong addresses make a member unreachable: fix them first.
    for (&id, node) in &view.live {
        if view.quarantined.contains(&id) {
            continue;
        }
        if let Some(stored) = view.nodes.get(&id) {
            if stored != node && !node.raft_addr.is_empty() && !node.api_addr.is_empty() {
                return Some(Action::UpdateNode { id, node: node.clone() });
            }
        }
    }
    for &id in &view.learners {
        if id != view.self_id && !view.live.contains_key(&id) && view.down_past_grace(id) {
            return Some(Action::RemoveLearner { id });
        }
    }
    for &id in &view.learners {
        if view.live.contains_key(&id) {
            let matched = view.matched.get(&id).copied().unwrap_or(0);
            if matched + view.catchup_lag_max >= view.last_log_index {
                // The learner was confirmed over mTLS at this address when it
                // was added, so a voter stored there is a previous
                // incarnation. Wait until gossip, too, has given that one up
                // (promoting meanwhile would make 4 voters, 3 of them live).
                match view.voter_at_same_address(id) {
                    Some(old) if view.live.contains_key(&old) => continue,
                    Some(old) => return Some(Action::ReplaceVoter { old, new: id }),
                    None => {}
                }
                return Some(Action::Promote { id });
            }
        }
    }
    for (&id, node) in &view.live {
        if id != view.self_id
            && !view.nodes.contains_key(&id)
            && !view.quarantined.contains(&id)
            && !view.retired.contains(&id)
        {
            return Some(Action::AddLearner { id, node: node.clone() });
        }
    }
    if view.voters.len() > MIN_VOTERS {
        for &id in &view.voters {
            if id != view.self_id && !view.live.contains_key(&id) && view.down_past_grace(id) {
                return Some(Action::RemoveVoter { id });
            }
        }
    }
    None
}

/// Updates `down_since_ms` for the members of `view`: a member that is live
/// is forgotten, one that is not gets `now_ms` unless already recorded.
pub fn track_down(
    down_since_ms: &mut BTreeMap<NodeId, u64>,
    members: impl IntoIterator<Item = NodeId>,
    live: &BTreeMap<NodeId, Node>,
    now_ms: u64,
) {
    let members: BTreeSet<NodeId> = members.into_iter().collect();
    down_since_ms.retain(|id, _| members.contains(id) && !live.contains_key(id));
    for id in members {
        if !live.contains_key(&id) {
            down_since_ms.entry(id).or_insert(now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u64) -> Node {
        Node { raft_addr: format!("10.0.0.{n}:1112"), api_addr: format!("10.0.0.{n}:8080") }
    }

    /// A leader (1) with the given voters and learners, all live and caught up.
    fn view(voters: &[u64], learners: &[u64]) -> View {
        let members: Vec<u64> = voters.iter().chain(learners).copied().collect();
        View {
            self_id: 1,
            live: members.iter().map(|&n| (n, node(n))).collect(),
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
            nodes: members.iter().map(|&n| (n, node(n))).collect(),
            matched: members.iter().map(|&n| (n, 100)).collect(),
            last_log_index: 100,
            down_since_ms: BTreeMap::new(),
            now_ms: 1_000_000,
            dead_grace_ms: 60_000,
            catchup_lag_max: 10,
            quarantined: BTreeSet::new(),
            retired: BTreeSet::new(),
        }
    }

    #[test]
    fn a_retired_voter_is_removed_even_at_the_floor_and_first() {
        let mut v = view(&[1, 2, 3], &[4]);
        v.matched.insert(4, 0);
        v.live.insert(
            2,
            Node { raft_addr: "10.9.9.9:1112".into(), api_addr: "10.9.9.9:8080".into() },
        );
        v.retired.insert(2);
        assert_eq!(decide(&v), Some(Action::RemoveVoter { id: 2 }));
        v.voters.remove(&2);
        v.nodes.remove(&2);
        assert_eq!(decide(&v), None, "live but retired: never added back");
    }

    #[test]
    fn a_retired_learner_is_removed_and_a_retired_leader_is_left_alone() {
        let mut v = view(&[1, 2, 3], &[4]);
        v.retired.insert(4);
        assert_eq!(decide(&v), Some(Action::RemoveLearner { id: 4 }));
        let mut v = view(&[1, 2, 3], &[]);
        v.retired.insert(1);
        assert_eq!(decide(&v), None, "the leader hands over leadership first");
    }

    #[test]
    fn a_retired_stranger_is_never_added() {
        let mut v = view(&[1], &[]);
        v.live.insert(2, node(2));
        v.retired.insert(2);
        assert_eq!(decide(&v), None);
    }

    #[test]
    fn steady_state_decides_nothing() {
        assert_eq!(decide(&view(&[1, 2, 3], &[])), None);
    }

    #[test]
    fn a_new_live_node_becomes_a_learner() {
        let mut v = view(&[1], &[]);
        v.live.insert(2, node(2));
        assert_eq!(decide(&v), Some(Action::AddLearner { id: 2, node: node(2) }));
    }

    #[test]
    fn a_quarantined_node_is_not_added_but_others_are() {
        let mut v = view(&[1], &[]);
        v.live.insert(2, node(2));
        v.live.insert(3, node(3));
        v.quarantined.insert(2);
        assert_eq!(decide(&v), Some(Action::AddLearner { id: 3, node: node(3) }));
    }

    #[test]
    fn a_learner_is_promoted_only_once_caught_up() {
        let mut v = view(&[1], &[2]);
        v.matched.insert(2, 50);
        assert_eq!(decide(&v), None);
        v.matched.insert(2, 90);
        assert_eq!(decide(&v), Some(Action::Promote { id: 2 }));
        v.matched.remove(&2);
        v.last_log_index = 5;
        assert_eq!(decide(&v), Some(Action::Promote { id: 2 }), "unknown progress counts as 0");
    }

    #[test]
    fn a_learner_that_is_down_is_not_promoted() {
        let mut v = view(&[1], &[2]);
        v.live.remove(&2);
        assert_eq!(decide(&v), None);
    }

    #[test]
    fn changed_addresses_are_updated_first() {
        let mut v = view(&[1, 2, 3], &[]);
        v.live.insert(4, node(4));
        v.live.insert(
            3,
            Node { raft_addr: "10.9.9.9:1112".into(), api_addr: "10.9.9.9:8080".into() },
        );
        assert!(matches!(decide(&v), Some(Action::UpdateNode { id: 3, .. })));
    }

    #[test]
    fn a_refused_address_change_does_not_block_other_changes() {
        let mut v = view(&[1, 2, 3], &[4]);
        v.matched.insert(4, 100);
        v.live.insert(
            3,
            Node { raft_addr: "10.9.9.9:1112".into(), api_addr: "10.9.9.9:8080".into() },
        );
        assert!(matches!(decide(&v), Some(Action::UpdateNode { id: 3, .. })));
        v.quarantined.insert(3);
        assert_eq!(decide(&v), Some(Action::Promote { id: 4 }));
    }

    #[test]
    fn dead_voters_are_removed_after_grace_but_never_below_three() {
        let mut v = view(&[1, 2, 3, 4], &[]);
        v.live.remove(&4);
        v.down_since_ms.insert(4, v.now_ms - 59_999);
        assert_eq!(decide(&v), None, "within grace");
        v.down_since_ms.insert(4, v.now_ms - 60_000);
        assert_eq!(decide(&v), Some(Action::RemoveVoter { id: 4 }));

        let mut v = view(&[1, 2, 3], &[]);
        v.live.remove(&3);
        v.down_since_ms.insert(3, 0);
        assert_eq!(decide(&v), None, "floor of three voters");
    }

    #[test]
    fn the_leader_never_removes_itself() {
        let mut v = view(&[1, 2, 3, 4], &[]);
        v.live.remove(&1);
        v.down_since_ms.insert(1, 0);
        assert_eq!(decide(&v), None);
    }

    #[test]
    fn a_new_id_at_a_dead_voters_address_takes_its_seat_once_caught_up() {
        // Voter 2 was wiped; it came back as 7 at the same address.
        let mut v = view(&[1, 2, 3], &[7]);
        v.nodes.insert(7, node(2));
        v.live.remove(&2);
        v.live.insert(7, node(2));
        v.down_since_ms.insert(2, v.now_ms);
        v.matched.insert(7, 10);
        assert_eq!(decide(&v), None, "not caught up yet: the old voter keeps its seat");
        v.matched.insert(7, 100);
        assert_eq!(decide(&v), Some(Action::ReplaceVoter { old: 2, new: 7 }));
        // While gossip still reports the old one live: wait, never 4 voters.
        v.live.insert(2, node(2));
        assert_eq!(decide(&v), None);
        // Another address: an ordinary promotion.
        let mut v = view(&[1, 2, 3], &[7]);
        v.live.remove(&2);
        assert_eq!(decide(&v), Some(Action::Promote { id: 7 }));
    }

    #[test]
    fn the_leader_is_never_replaced_by_a_learner_claiming_its_address() {
        let mut v = view(&[1, 2, 3], &[7]);
        v.nodes.insert(7, node(1));
        v.live.insert(7, node(1));
        assert_eq!(decide(&v), Some(Action::Promote { id: 7 }));
    }

    #[test]
    fn dead_learners_are_removed_after_grace_whatever_the_voter_count() {
        let mut v = view(&[1], &[2]);
        v.live.remove(&2);
        v.down_since_ms.insert(2, 0);
        assert_eq!(decide(&v), Some(Action::RemoveLearner { id: 2 }));
    }

    #[test]
    fn track_down_records_first_seen_down_and_forgets_recovered() {
        let mut down = BTreeMap::new();
        let live: BTreeMap<_, _> = [(1, node(1))].into();
        track_down(&mut down, [1, 2, 3], &live, 10);
        assert_eq!(down, [(2, 10), (3, 10)].into());
        track_down(&mut down, [1, 2, 3], &live, 20);
        assert_eq!(down, [(2, 10), (3, 10)].into(), "first time down is kept");
        let live: BTreeMap<_, _> = [(1, node(1)), (2, node(2))].into();
        track_down(&mut down, [1, 2], &live, 30);
        assert_eq!(down, BTreeMap::new(), "recovered and removed members are forgotten");
    }

    /// Applying the decisions of a growing cluster until quiet ends with
    /// every live node a voter.
    #[test]
    fn repeated_decisions_converge_to_all_live_voters() {
        let mut v = view(&[1], &[]);
        for n in 2..=5 {
            v.live.insert(n, node(n));
        }
        for _ in 0..20 {
            match decide(&v) {
                None => break,
                Some(Action::AddLearner { id, node }) => {
                    v.learners.insert(id);
                    v.nodes.insert(id, node);
                    v.matched.insert(id, v.last_log_index);
                }
                Some(Action::Promote { id }) => {
                    v.learners.remove(&id);
                    v.voters.insert(id);
                }
                Some(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(v.voters, (1..=5).collect());
        assert!(v.learners.is_empty());
    }
}
