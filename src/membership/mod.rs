//! Cluster membership: gossip advises, Raft decides.
//!
//! - [`gossip`]: chitchat; each node publishes its Raft id and addresses.
//! - [`gossip_auth`]: with `--gossip-key`, every datagram is signed and
//!   unsigned or forged ones are dropped.
//! - [`reconcile`]: pure decisions (add learner, promote, update address,
//!   remove the long dead, never below three voters).
//! - [`driver`]: the leader-only loop that carries the decisions out.
//!
//! Exactly one node bootstraps a cluster: one started with no seeds (other
//! than itself) on an empty data dir (see `node`). Everyone else waits to be
//! added by the leader once gossip has introduced them.

pub mod driver;
pub mod gossip;
pub mod gossip_auth;
pub mod reconcile;
