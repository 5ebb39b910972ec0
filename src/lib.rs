//! raftq: a Raft-replicated HTTPS event queue.
//!
//! Layout (dependencies point down; ★ = pure, no I/O):
//!
//! ```text
//! main / cmd        CLI subcommands (anyhow lives only here)
//! consumer          client: resumable gap-detecting queue consumer (SSE + polling)
//! sequence          client: named sequences, ids leased in blocks
//! node              wires one node together; startup and shutdown order
//! api               public HTTPS API and the internal Raft-port API
//! membership        gossip (chitchat), ★ reconcile decisions, leader driver
//! raft              openraft wiring: RocksDB log + state machine, network,
//!                   proposer (group commit), read barrier
//! sm ★              the replicated core: applies committed entries
//! queue ★           the queue state machine's logic
//! tls               certificates and rustls configs
//! listener          connection caps and idle limits of every port
//! units             humane sizes and durations for flags
//! log_throttle      rate-limited warnings for events outsiders can cause
//! ```
//!
//! See `docs/ARCHITECTURE.md` for the data flow.

pub mod api;
pub mod cli;
pub mod client;
pub mod consumer;
pub mod listener;
pub mod log_throttle;
pub mod maze;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod queue;
pub mod raft;
pub mod sequence;
pub mod sm;
pub mod tls;
pub mod units;
