//! The receiver's decision on a node-to-node request (pure: see
//! `raft::peer` for the I/O around it): is it meant for this node, and for
//! this node's cluster?

use serde::{Deserialize, Serialize};

use super::types::NodeId;

/// The cluster UUID of the sender (empty when it has none yet).
pub const HEADER_CLUSTER: &str = crate::wire::header::CLUSTER;
/// The node id the request is meant for.
pub const HEADER_NODE: &str = crate::wire::header::NODE;
/// Set on a refusal: `wrong_node` or `wrong_cluster`.
pub const HEADER_REFUSED: &str = crate::wire::header::REFUSED;

/// What a node reports about itself on the Raft port (`/internal/identity`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    pub node_id: NodeId,
    /// `--cluster-id`: the name of the cluster (gossip ignores other names).
    pub cluster_id: String,
    /// The UUID of the cluster this node belongs to; `None` before it has
    /// bootstrapped or joined one.
    #[serde(default)]
    pub cluster_uuid: Option<String>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this is node {me}, not node {asked}")]
    WrongNode { asked: String, me: NodeId },
    #[error("this node belongs to cluster {mine}, the request to cluster {asked:?}")]
    WrongCluster { asked: String, mine: String },
    /// A fresh node with an operator-chosen id does not take part yet (or
    /// ever: the cluster knew that id before this data dir existed).
    #[error("{0}")]
    Held(String),
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::WrongNode { .. } => "wrong_node",
            Refusal::WrongCluster { .. } => "wrong_cluster",
            Refusal::Held(_) => "held",
        }
    }
}

/// What to do with a request, given its headers and what this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Accept, after persisting this cluster UUID as ours.
    Adopt(String),
    Refuse(Refusal),
}

/// The receiver's decision (pure). `may_adopt`: the request is one only a
/// leader sends to a member it added (append, snapshot).
pub fn verdict(
    me: NodeId,
    own_uuid: Option<&str>,
    target: Option<&str>,
    cluster: Option<&str>,
    may_adopt: bool,
) -> Verdict {
    let target = target.unwrap_or("").trim();
    if target.parse::<NodeId>().ok() != Some(me) {
        return Verdict::Refuse(Refusal::WrongNode { asked: target.to_string(), me });
    }
    let cluster = cluster.unwrap_or("").trim();
    match own_uuid {
        Some(mine) if mine == cluster => Verdict::Accept,
        Some(mine) => Verdict::Refuse(Refusal::WrongCluster {
            asked: cluster.to_string(),
            mine: mine.to_string(),
        }),
        None if may_adopt && valid_uuid(cluster) => Verdict::Adopt(cluster.to_string()),
        None => Verdict::Accept,
    }
}

pub(crate) fn valid_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "6f1c1e4e-2b8a-4c1e-9a3e-1d2f3a4b5c6d";
    const V: &str = "0b7e9c52-6a51-4f0e-8f6b-9d0c1e2f3a4b";

    #[test]
    fn a_request_for_another_node_id_is_refused() {
        for target in [None, Some(""), Some("8"), Some("x"), Some("7 7")] {
            assert!(
                matches!(
                    verdict(7, Some(U), target, Some(U), false),
                    Verdict::Refuse(Refusal::WrongNode { .. })
                ),
                "{target:?}"
            );
        }
        assert_eq!(verdict(7, Some(U), Some("7"), Some(U), false), Verdict::Accept);
    }

    #[test]
    fn a_request_of_another_cluster_is_refused_even_an_append() {
        for cluster in [None, Some(""), Some(V), Some("garbage")] {
            assert!(matches!(
                verdict(7, Some(U), Some("7"), cluster, true),
                Verdict::Refuse(Refusal::WrongCluster { .. })
            ));
        }
    }

    #[test]
    fn a_node_without_a_cluster_adopts_only_from_a_leader_message() {
        assert_eq!(verdict(7, None, Some("7"), Some(U), true), Verdict::Adopt(U.into()));
        assert_eq!(verdict(7, None, Some("7"), Some(U), false), Verdict::Accept);
        assert_eq!(verdict(7, None, Some("7"), Some("not-a-uuid"), true), Verdict::Accept);
        assert_eq!(verdict(7, None, Some("7"), None, true), Verdict::Accept);
        assert!(matches!(verdict(7, None, Some("8"), Some(U), true), Verdict::Refuse(_)));
    }
}
