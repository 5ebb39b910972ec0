//! Tier-2 tests: a real node started in this process with
//! `raftq::node::start(Config)` (real RocksDB in a tempdir, real TLS on
//! `127.0.0.1:0`, no child process), driven over HTTPS with reqwest. Fast
//! enough for every error case of docs/api.md; what needs several nodes or
//! a real process (kill, restart of the binary, netns) stays in
//! `tests/cluster`.
//!
//! One test binary (`cargo test --test inproc`); each test starts its own
//! node on its own ports, so they run in parallel.

mod node;

mod errors;
mod lifecycle;
mod work;
