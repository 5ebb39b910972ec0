//! `raftq serve`: run a node until SIGINT or SIGTERM.
//!
//! The flags become a plain [`Config`] here; the library never sees clap.

use anyhow::Context;
use raftq::cli::ServeArgs;
use raftq::maze::MazeLimits;
use raftq::node::config::TlsFiles;
use raftq::node::Config;
use raftq::queue::Limits;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let node = raftq::node::start(config(args)).await.context("starting the node")?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

/// The node's settings from its flags (clap already checked each value).
fn config(args: ServeArgs) -> Config {
    // clap's `requires_all` makes these all or none.
    let tls = match (args.tls_cert, args.tls_key, args.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => Some(TlsFiles { cert, key, ca }),
        _ => None,
    };
    Config {
        data_dir: args.data_dir,
        node_id: args.node_id,
        api_addr: args.api_addr,
        raft_addr: args.raft_addr,
        gossip_addr: args.gossip_addr,
        advertise_host: args.advertise_host,
        bind_interface: args.bind_interface,
        seeds: args.seeds,
        cluster_id: args.cluster_id,
        bootstrap_expect: args.bootstrap_expect,
        bootstrap_wait: args.bootstrap_wait,
        tls,
        maze_source_addr: args.maze_source_addr,
        maze_client_addr: args.maze_client_addr,
        no_maze: args.no_maze,
        maze_gap_timeout_ms: args.maze_gap_timeout_ms,
        maze_coalesce_ms: args.maze_coalesce_ms,
        max_maze_clients: args.max_maze_clients,
        maze_client_buffer: args.maze_client_buffer,
        maze_limits: MazeLimits {
            pending_max: args.maze_pending_max,
            line_bytes_max: args.maze_line_bytes_max,
            follow_edges_max: args.maze_follow_edges_max,
        },
        heartbeat_ms: args.heartbeat_ms,
        election_timeout_ms: args.election_timeout_ms,
        api_token: args.api_token,
        api_token_file: args.api_token_file,
        admin_token: args.admin_token,
        admin_token_file: args.admin_token_file,
        transfer_min_interval: args.transfer_min_interval,
        api_client_ca: args.api_client_ca,
        gossip_key: args.gossip_key,
        max_event_bytes: args.max_event_bytes,
        limits: Limits {
            retention_events: args.retention_events,
            queue_events_max: args.queue_events_max,
            idempotency_keys_max: args.idempotency_keys_max,
            queues_max: args.queues_max,
            leases_max: args.leases_max,
            delayed_max: args.delayed_max,
        },
        snapshot_logs: args.snapshot_logs,
        dead_node_grace_secs: args.dead_node_grace_secs,
        retention_bytes: args.retention_bytes,
        retention_age: args.retention_age,
        min_free_disk: args.min_free_disk,
        max_api_connections: args.max_api_connections,
        max_raft_connections: args.max_raft_connections,
        raft_transport: args.raft_transport,
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        max_http2_streams: args.max_http2_streams,
        max_watches: args.max_watches,
        max_waiters: args.max_waiters,
        max_batch_events: usize::try_from(args.max_batch_events).unwrap_or(usize::MAX),
        metrics_queues_max: args.metrics_queues_max,
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the node");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use raftq::cli::{Cli, Command};

    fn parse(argv: &[&str]) -> super::Config {
        let cli = Cli::try_parse_from(argv).expect("parse");
        match cli.command {
            Command::Serve(args) => super::config(*args),
            other => panic!("not serve: {other:?}"),
        }
    }

    /// The flags' defaults and `Config::new` are written twice (clap wants
    /// literals for `--help`): they must agree.
    #[test]
    fn flag_defaults_are_the_config_defaults() {
        assert_eq!(parse(&["raftq", "serve", "--data-dir", "d"]), super::Config::new("d"));
    }

    #[test]
    fn limit_flags_reach_the_config() {
        let config = parse(&[
            "raftq",
            "serve",
            "--queues-max",
            "7",
            "--idempotency-keys-max",
            "8",
            "--maze-pending-max",
            "9",
            "--maze-line-bytes-max",
            "10",
            "--maze-follow-edges-max",
            "11",
            "--metrics-queues-max",
            "12",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-ca",
            "ca.pem",
        ]);
        assert_eq!((config.limits.queues_max, config.limits.idempotency_keys_max), (7, 8));
        let maze = config.maze_limits;
        assert_eq!((maze.pending_max, maze.line_bytes_max, maze.follow_edges_max), (9, 10, 11));
        assert_eq!(config.metrics_queues_max, 12);
        let tls = config.tls.clone().expect("tls files");
        assert_eq!(tls.ca, std::path::PathBuf::from("ca.pem"));
        assert_eq!(config.validate(), Ok(()));
    }
}
