//! What one node is told at start: a plain, validated struct.
//!
//! `raftq serve` builds it from its flags (`cmd/serve.rs`); a test or an
//! embedding program builds it directly ([`Config::new`] has the documented
//! defaults of SPEC §1 and docs/operations.md) and passes it to
//! [`crate::node::start`]. No clap type reaches the library: the command line
//! is one way to fill this struct, not the only one.
//!
//! Addresses may name port 0: [`crate::node::start`] binds every TCP listener
//! first and advertises the ports it got (see `NodeHandle::api_addr`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::maze::MazeLimits;
use crate::node::disk::MinFree;
use crate::queue::Limits;

/// Upper bound of `--max-event-bytes`: an event travels whole in one Raft
/// entry, one AppendEntries message (which must finish within its RPC
/// timeout) and one snapshot record, so it must stay far below those limits.
pub const MAX_EVENT_BYTES_LIMIT: usize = 16 << 20;

/// Largest `--bootstrap-expect`: more voters than this slow every commit for
/// no gain in safety.
pub const BOOTSTRAP_EXPECT_MAX: u64 = 15;

/// The PEM files of a node (all three or none: without them the node makes
/// a self-signed development CA in its data dir).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate (chain) of this node, for the API and Raft ports.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that signed every node certificate (Raft mTLS trust root).
    pub ca: PathBuf,
}

/// Everything `node::start` needs. Field meanings and defaults are those of
/// the `raftq serve` flag of the same name (docs/operations.md).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    /// `None`: a random id, persisted in the data dir.
    pub node_id: Option<u64>,
    pub api_addr: SocketAddr,
    pub raft_addr: SocketAddr,
    /// UDP; chitchat binds it itself, so it needs a real port (not 0).
    pub gossip_addr: SocketAddr,
    pub advertise_host: Option<String>,
    pub bind_interface: Option<String>,
    pub seeds: Vec<String>,
    pub cluster_id: String,
    pub bootstrap_expect: Option<u64>,
    pub bootstrap_wait: Duration,
    /// `None`: a self-signed development CA in the data dir.
    pub tls: Option<TlsFiles>,
    pub maze_source_addr: SocketAddr,
    pub maze_client_addr: SocketAddr,
    pub no_maze: bool,
    pub maze_gap_timeout_ms: u64,
    pub maze_coalesce_ms: u64,
    pub max_maze_clients: usize,
    pub maze_client_buffer: usize,
    /// Bounds of the replicated maze state, stamped into each entry.
    pub maze_limits: MazeLimits,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub api_token: Option<String>,
    pub api_token_file: Option<PathBuf>,
    pub admin_token: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    pub transfer_min_interval: Duration,
    pub api_client_ca: Option<PathBuf>,
    pub gossip_key: Option<PathBuf>,
    pub max_event_bytes: usize,
    /// Bounds of the replicated queue state, stamped into each entry.
    pub limits: Limits,
    pub snapshot_logs: u64,
    pub dead_node_grace_secs: u64,
    pub retention_bytes: u64,
    pub retention_age: Duration,
    pub min_free_disk: MinFree,
    pub max_api_connections: usize,
    pub max_raft_connections: usize,
    /// How append and vote travel between nodes (`--raft-transport`).
    pub raft_transport: RaftTransport,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_http2_streams: u32,
    pub max_watches: usize,
    /// Concurrent long polls (`?wait=`) this node holds; more get 503.
    pub max_waiters: usize,
    /// Most events in one batch `POST /events`.
    pub max_batch_events: usize,
    /// Queues that get their own `queue` label in `/metrics`; the rest are
    /// summed under one (see `crate::metrics`).
    pub metrics_queues_max: usize,
}

/// How a node carries append, vote, pre-vote and transfer-leader
/// (`--raft-transport`). Snapshots and the other internal requests are
/// HTTPS either way. `node::start` turns it into the Raft port's ALPN and
/// the sender's stream config (`raft::network::Network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RaftTransport {
    /// The Raft stream, offered and used; HTTPS to a peer that lacks it.
    #[default]
    Stream,
    /// Neither offered nor used: one HTTPS request per RPC, as builds before
    /// the stream did. A way back should the stream misbehave, and the way
    /// tests check that a mixed cluster still replicates.
    Https,
}

impl RaftTransport {
    /// Parses `stream` or `https` (the flag's values).
    pub fn parse(input: &str) -> Result<Self, String> {
        match input.trim() {
            "stream" => Ok(RaftTransport::Stream),
            "https" => Ok(RaftTransport::Https),
            other => Err(format!("{other:?}: the raft transport is `stream` or `https`")),
        }
    }
}

/// Why a [`Config`] cannot start a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("max event bytes must be between 1 and {MAX_EVENT_BYTES_LIMIT} (16 MiB), not {0}")]
    MaxEventBytes(usize),
    #[error("bootstrap expect must be between 1 and {BOOTSTRAP_EXPECT_MAX}, not {0}")]
    BootstrapExpect(u64),
    #[error("the cluster id must not be empty")]
    EmptyClusterId,
    #[error(
        "the election timeout ({election_timeout_ms} ms) must be longer than the heartbeat \
         ({heartbeat_ms} ms), which must be at least 1 ms"
    )]
    Timing { heartbeat_ms: u64, election_timeout_ms: u64 },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("the gossip address {0} needs a port: chitchat binds it itself and cannot report one")]
    GossipPortZero(SocketAddr),
}

impl Config {
    /// The defaults of `raftq serve` (SPEC §1), with the given data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let any = |port: u16| SocketAddr::from(([0, 0, 0, 0], port));
        Config {
            data_dir: data_dir.into(),
            node_id: None,
            api_addr: any(8080),
            raft_addr: any(1112),
            gossip_addr: any(1111),
            advertise_host: None,
            bind_interface: None,
            seeds: Vec::new(),
            cluster_id: "raftq".into(),
            bootstrap_expect: None,
            bootstrap_wait: Duration::from_secs(2),
            tls: None,
            maze_source_addr: any(9090),
            maze_client_addr: any(9099),
            no_maze: false,
            maze_gap_timeout_ms: 2000,
            maze_coalesce_ms: 2,
            max_maze_clients: 10_000,
            maze_client_buffer: 100_000,
            maze_limits: MazeLimits::default(),
            heartbeat_ms: 50,
            election_timeout_ms: 100,
            api_token: None,
            api_token_file: None,
            admin_token: None,
            admin_token_file: None,
            transfer_min_interval: Duration::from_secs(5),
            api_client_ca: None,
            gossip_key: None,
            max_event_bytes: 1 << 20,
            limits: Limits::default(),
            snapshot_logs: 20_000,
            dead_node_grace_secs: 300,
            retention_bytes: 1 << 30,
            retention_age: Duration::from_secs(7 * 86_400),
            min_free_disk: MinFree::Bytes(256 << 20),
            max_api_connections: 4096,
            max_raft_connections: 256,
            raft_transport: RaftTransport::Stream,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_http2_streams: 64,
            max_watches: 1000,
            max_waiters: 10_000,
            max_batch_events: 1000,
            metrics_queues_max: 100,
        }
    }

    /// Refuses settings no node can run with. The command line checks most
    /// of these too; a config built in code gets the same checks here.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_event_bytes == 0 || self.max_event_bytes > MAX_EVENT_BYTES_LIMIT {
            return Err(ConfigError::MaxEventBytes(self.max_event_bytes));
        }
        if let Some(n) = self.bootstrap_expect {
            if n == 0 || n > BOOTSTRAP_EXPECT_MAX {
                return Err(ConfigError::BootstrapExpect(n));
            }
        }
        if self.cluster_id.is_empty() {
            return Err(ConfigError::EmptyClusterId);
        }
        if self.heartbeat_ms == 0 || self.election_timeout_ms <= self.heartbeat_ms {
            return Err(ConfigError::Timing {
                heartbeat_ms: self.heartbeat_ms,
                election_timeout_ms: self.election_timeout_ms,
            });
        }
        let at_least_one = [
            ("max api connections", self.max_api_connections),
            ("max raft connections", self.max_raft_connections),
            ("max http2 streams", self.max_http2_streams as usize),
            ("maze client buffer", self.maze_client_buffer),
            ("max batch events", self.max_batch_events),
        ];
        if let Some((what, _)) = at_least_one.iter().find(|(_, n)| *n == 0) {
            return Err(ConfigError::Zero(what));
        }
        if self.gossip_addr.port() == 0 {
            return Err(ConfigError::GossipPortZero(self.gossip_addr));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::new("d").validate(), Ok(()));
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let base = Config::new("d");
        let cases: Vec<(Config, ConfigError)> = vec![
            (Config { max_event_bytes: 0, ..base.clone() }, ConfigError::MaxEventBytes(0)),
            (
                Config { max_event_bytes: MAX_EVENT_BYTES_LIMIT + 1, ..base.clone() },
                ConfigError::MaxEventBytes(MAX_EVENT_BYTES_LIMIT + 1),
            ),
            (Config { bootstrap_expect: Some(0), ..base.clone() }, ConfigError::BootstrapExpect(0)),
            (
                Config { bootstrap_expect: Some(16), ..base.clone() },
                ConfigError::BootstrapExpect(16),
            ),
            (Config { cluster_id: String::new(), ..base.clone() }, ConfigError::EmptyClusterId),
            (
                Config { heartbeat_ms: 300, election_timeout_ms: 300, ..base.clone() },
                ConfigError::Timing { heartbeat_ms: 300, election_timeout_ms: 300 },
            ),
            (
                Config { heartbeat_ms: 0, ..base.clone() },
                ConfigError::Timing {
                    heartbeat_ms: 0,
                    election_timeout_ms: base.election_timeout_ms,
                },
            ),
            (
                Config { max_api_connections: 0, ..base.clone() },
                ConfigError::Zero("max api connections"),
            ),
            (
                Config { maze_client_buffer: 0, ..base.clone() },
                ConfigError::Zero("maze client buffer"),
            ),
            (
                Config { gossip_addr: "127.0.0.1:0".parse().expect("addr"), ..base.clone() },
                ConfigError::GossipPortZero("127.0.0.1:0".parse().expect("addr")),
            ),
        ];
        for (config, want) in cases {
            assert_eq!(config.validate(), Err(want.clone()), "{want}");
        }
    }

    #[test]
    fn edges_of_the_ranges_are_accepted() {
        let base = Config::new("d");
        for config in [
            Config { max_event_bytes: 1, ..base.clone() },
            Config { max_event_bytes: MAX_EVENT_BYTES_LIMIT, ..base.clone() },
            Config { bootstrap_expect: Some(1), ..base.clone() },
            Config { bootstrap_expect: Some(BOOTSTRAP_EXPECT_MAX), ..base.clone() },
            Config { heartbeat_ms: 1, election_timeout_ms: 2, ..base.clone() },
        ] {
            assert_eq!(config.validate(), Ok(()), "{config:?}");
        }
    }
}
