//! Who may bootstrap a cluster, and when (pure: time passed in).
//!
//! Bootstrapping makes a new cluster with a new UUID. Doing it where a
//! cluster already lives forks it: before cluster UUIDs, a seedless node
//! restarted on a lost volume bootstrapped at once, took writes for a moment
//! and then had them overwritten by the old cluster's leader. So a node on
//! an empty data dir first listens to gossip:
//!
//! - any live member that belongs to a cluster (publishes a cluster UUID)
//!   means there is one here: join it (the leader adds this node, and this
//!   node adopts the UUID with its first append), never bootstrap;
//! - with `--bootstrap-expect N` (Consul's model), nobody bootstraps until N
//!   fresh nodes see each other; then the one with the smallest node id
//!   bootstraps with all N as voters, and the others wait for its appends.
//!   More than N fresh nodes at once stops everyone (with a log line): two
//!   nodes whose gossip views differ could each pick a different N and make
//!   two clusters, so waiting for the operator is the safe side;
//! - without it, a node with no seeds bootstraps alone once it has listened
//!   for `--bootstrap-wait` without hearing of a cluster; a node with seeds
//!   never bootstraps (it was told where the cluster is).

use std::collections::BTreeMap;

use crate::raft::types::{Node, NodeId};

/// What a fresh node knows when it decides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Situation {
    pub self_id: NodeId,
    pub self_node: Node,
    /// `--bootstrap-expect`.
    pub expect: Option<usize>,
    /// The node was given seeds other than itself.
    pub has_seeds: bool,
    pub listened_ms: u64,
    /// `--bootstrap-wait`.
    pub wait_ms: u64,
    /// Live gossip members other than this node: address and cluster UUID.
    pub live: BTreeMap<NodeId, (Node, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Keep listening.
    Wait,
    /// More fresh nodes than `--bootstrap-expect` see each other: nobody
    /// bootstraps (the count is in the variant, for the log).
    Overfull(usize),
    /// A cluster is here (or another node will make it): wait to be added.
    Join,
    /// Bootstrap a new cluster with these voters (this node among them).
    Bootstrap(BTreeMap<NodeId, Node>),
}

pub fn decide(s: &Situation) -> Step {
    if s.live.values().any(|(_, uuid)| uuid.is_some()) {
        return Step::Join;
    }
    match s.expect {
        Some(expect) => {
            let mut fresh: BTreeMap<NodeId, Node> =
                s.live.iter().map(|(id, (node, _))| (*id, node.clone())).collect();
            fresh.insert(s.self_id, s.self_node.clone());
            if fresh.len() < expect.max(1) {
                return Step::Wait;
            }
            if fresh.len() > expect.max(1) {
                return Step::Overfull(fresh.len());
            }
            // The same rule on every node picks one bootstrapper: the
            // smallest id among the first `expect` ids.
            let voters: BTreeMap<NodeId, Node> = fresh.into_iter().take(expect.max(1)).collect();
            if voters.keys().next() == Some(&s.self_id) {
                Step::Bootstrap(voters)
            } else {
                Step::Wait
            }
        }
        None if s.has_seeds => Step::Join,
        None if s.listened_ms >= s.wait_ms => {
            Step::Bootstrap(BTreeMap::from([(s.self_id, s.self_node.clone())]))
        }
        None => Step::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u64) -> Node {
        Node { raft_addr: format!("10.0.0.{n}:1112"), api_addr: format!("10.0.0.{n}:8080") }
    }

    fn situation(self_id: NodeId) -> Situation {
        Situation { self_id, self_node: node(self_id), wait_ms: 2_000, ..Default::default() }
    }

    #[test]
    fn a_seedless_node_bootstraps_alone_after_listening() {
        let mut s = situation(5);
        s.listened_ms = 1_999;
        assert_eq!(decide(&s), Step::Wait);
        s.listened_ms = 2_000;
        assert_eq!(decide(&s), Step::Bootstrap(BTreeMap::from([(5, node(5))])));
        // Fresh nodes (no cluster yet, e.g. seeded joiners) do not stop it.
        s.live.insert(6, (node(6), None));
        assert!(matches!(decide(&s), Step::Bootstrap(_)));
    }

    #[test]
    fn a_cluster_heard_of_means_join_whatever_the_flags() {
        for (expect, seeds, listened) in
            [(None, false, 10_000), (Some(1), false, 0), (None, true, 0)]
        {
            let mut s = situation(5);
            s.expect = expect;
            s.has_seeds = seeds;
            s.listened_ms = listened;
            s.live.insert(9, (node(9), Some("u".into())));
            assert_eq!(decide(&s), Step::Join, "{expect:?} {seeds} {listened}");
        }
    }

    #[test]
    fn a_seeded_node_never_bootstraps_without_expect() {
        let mut s = situation(5);
        s.has_seeds = true;
        s.listened_ms = u64::MAX;
        assert_eq!(decide(&s), Step::Join);
    }

    #[test]
    fn expect_waits_for_n_then_only_the_smallest_id_bootstraps_with_all() {
        let mut nodes: Vec<Situation> = [30, 10, 20].iter().map(|&id| situation(id)).collect();
        for s in &mut nodes {
            s.expect = Some(3);
            s.has_seeds = true;
            s.listened_ms = u64::MAX;
        }
        for s in &mut nodes {
            s.live.insert(if s.self_id == 10 { 20 } else { 10 }, (node(10), None));
            assert_eq!(decide(s), Step::Wait, "two of three seen");
        }
        let all: BTreeMap<NodeId, Node> = [10, 20, 30].iter().map(|&n| (n, node(n))).collect();
        let steps: Vec<Step> = nodes
            .iter_mut()
            .map(|s| {
                s.live = all
                    .iter()
                    .filter(|(id, _)| **id != s.self_id)
                    .map(|(id, n)| (*id, (n.clone(), None)))
                    .collect();
                decide(s)
            })
            .collect();
        assert_eq!(steps, vec![Step::Wait, Step::Bootstrap(all.clone()), Step::Wait]);
        // A fourth fresh node at the same time stops everyone: views that
        // differ by one node could otherwise pick two different trios.
        let mut late = situation(40);
        late.expect = Some(3);
        late.live = all.iter().map(|(id, n)| (*id, (n.clone(), None))).collect();
        assert_eq!(decide(&late), Step::Overfull(4));
        let mut first = nodes[1].clone();
        first.live.insert(40, (node(40), None));
        assert_eq!(decide(&first), Step::Overfull(4), "not even the smallest id bootstraps");
    }
}
