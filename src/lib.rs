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
//! maze_net          follower-maze TCP ports and the leader's gap timer
//! membership        gossip (chitchat), ★ reconcile decisions, leader driver
//! replica           the facade over Raft: proposals, leader routing, read
//!                   index, transfer, membership changes, ★ RaftView
//! raft              openraft wiring: RocksDB log + state machine, network,
//!                   proposer (group commit with the write gates)
//! sm ★              the replicated core: applies committed entries
//! queue ★, maze ★   the queue and follower-maze state machines' logic
//! wire ★            the HTTP contract: bodies, error codes, SSE frames, headers
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
pub mod maze_net;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod queue;
pub mod raft;
pub mod replica;
pub mod sequence;
pub mod sm;
pub mod tls;
pub mod units;
pub mod wire;
