//! Tier-3 acceptance tests: real `raftq serve` processes on loopback, driven
//! through the public HTTPS API (reqwest and the real `curl` binary).
//! `netns.rs` runs its nodes in network namespaces instead (multi-host).
//!
//! One test binary (`cargo test --test cluster`) to save link time; the
//! harness lets one scenario run at a time (see `harness.rs`). Each scenario
//! lives in its own module.

mod harness;

mod bad_input;
mod concurrency;
mod console;
mod consumer;
mod demo;
mod disk_full;
mod dump;
mod failover;
mod flush_fault;
mod formation;
mod hostile;
mod identity;
mod load;
mod lost_response;
mod maze;
mod netns;
mod ops;
mod partition;
mod raft_stream;
mod resilience;
mod sequences;
mod snapshot_join;
mod transcript;
mod transfer_load;
mod trust;
mod upgrade;
mod watch;
mod work;
mod work_faults;
