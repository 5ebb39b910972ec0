//! Cluster membership: gossip advises, Raft decides.
//!
//! - [`gossip`]: chitchat; each node publishes its Raft id and addresses.
//! - [`gossip_auth`]: with `--gossip-key`, every datagram is signed and
//!   unsigned or forged ones are dropped.
//! - [`reconcile`]: pure decisions (add learner, promote, update address,
//!   remove the long dead, never below three voters).
//! - [`driver`]: the leader-only loop that carries the decisions out.
//! - [`bootstrap`]: pure decision of whether and when a node on an empty
//!   data dir makes a new cluster (never where gossip shows one already).
//!
//! Exactly one node bootstraps a cluster: with `--bootstrap-expect N`, the
//! smallest id of the first N fresh nodes that see each other; without it,
//! a node started with no seeds (other than itself) on an empty data dir,
//! once it has listened to gossip for `--bootstrap-wait` and heard of no
//! cluster. Everyone else waits to be added by the leader once gossip has
//! introduced them.

pub mod bootstrap;
pub mod driver;
pub mod gossip;
pub mod gossip_auth;
pub mod reconcile;
