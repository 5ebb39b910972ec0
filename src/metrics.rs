//! Every metric a node exports on `GET /metrics`, in one place.
//!
//! Two kinds:
//! - event metrics, updated where the event happens: HTTP requests (counted
//!   and timed per route template, so label cardinality is bounded by the
//!   router, not by clients), log fsyncs, leader changes;
//! - state gauges (Raft indexes, queue length, maze counters), copied from
//!   their owners when the endpoint is scraped, so nothing has to keep them
//!   up to date on the hot path.
//!
//! Names follow Prometheus conventions: `raftq_` prefix, `_total` counters,
//! `_seconds` histograms.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets for HTTP requests and fsyncs: 0.5 ms .. 10 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
    #[error("metrics text is not UTF-8")]
    Encoding(#[from] std::string::FromUtf8Error),
}

/// The node's registry and the handles of its metrics. Cheap to share
/// (every handle is an `Arc` inside).
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
    pub leader_changes: IntCounter,
    pub raft: RaftGauges,
    /// Per-queue gauges, labelled by queue name (bounded by `queues_max`).
    pub queue_pending: IntGaugeVec,
    pub queue_head: IntGaugeVec,
    pub queue_retained: IntGaugeVec,
    /// Maze counters, labelled by counter name (a fixed set).
    pub maze: IntGaugeVec,
    /// Node-to-node requests refused for naming another node or cluster
    /// (`direction`: sent = a peer refused ours, received = we refused one).
    pub peer_refusals: IntCounterVec,
    /// Per listener (api, raft, maze_source, maze_client): open connections,
    /// the cap, and connections refused at the cap.
    pub listener_open: IntGaugeVec,
    pub listener_max: IntGaugeVec,
    pub listener_refused: IntCounterVec,
    /// Free bytes in the data dir's filesystem, and whether writes are
    /// refused for disk space (here or on a member).
    pub disk_available: IntGauge,
    pub disk_low: IntGauge,
    /// Gossip datagrams dropped for want of a valid `--gossip-key` tag,
    /// labelled by reason (`unsigned`, `bad_mac`); updated by the transport.
    pub gossip_dropped: IntCounterVec,
}

/// Raft state copied from openraft's metrics at scrape time.
pub struct RaftGauges {
    pub term: IntGauge,
    pub is_leader: IntGauge,
    pub last_log_index: IntGauge,
    pub commit_index: IntGauge,
    pub applied_index: IntGauge,
    pub snapshot_index: IntGauge,
    pub purged_index: IntGauge,
    pub voters: IntGauge,
    pub learners: IntGauge,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    let g = IntGauge::new(name, help)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    /// A fresh registry with every metric registered. `fsync` is the log
    /// store's histogram (created by the store so it can time itself).
    pub fn new(fsync: Histogram) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        registry.register(Box::new(fsync))?;
        let http_requests = IntCounterVec::new(
            Opts::new("raftq_http_requests_total", "Public API requests by route and status"),
            &["route", "method", "status"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "raftq_http_request_duration_seconds",
                "Public API request latency until the response head",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        registry.register(Box::new(http_seconds.clone()))?;
        let leader_changes = IntCounter::new(
            "raftq_raft_leader_changes_total",
            "Times this node saw the cluster's leader change (including to none)",
        )?;
        registry.register(Box::new(leader_changes.clone()))?;
        let raft = RaftGauges {
            term: gauge(&registry, "raftq_raft_term", "Current Raft term")?,
            is_leader: gauge(&registry, "raftq_raft_is_leader", "1 if this node is the leader")?,
            last_log_index: gauge(&registry, "raftq_raft_last_log_index", "Last log index")?,
            commit_index: gauge(&registry, "raftq_raft_commit_index", "Committed log index")?,
            applied_index: gauge(&registry, "raftq_raft_applied_index", "Applied log index")?,
            snapshot_index: gauge(
                &registry,
                "raftq_raft_snapshot_index",
                "Log index of the last snapshot",
            )?,
            purged_index: gauge(&registry, "raftq_raft_purged_index", "Log purged up to")?,
            voters: gauge(&registry, "raftq_raft_voters", "Voters in the membership")?,
            learners: gauge(&registry, "raftq_raft_learners", "Learners in the membership")?,
        };
        let queue_vec = |name: &str, help: &str| -> Result<IntGaugeVec, MetricsError> {
            let v = IntGaugeVec::new(Opts::new(name, help), &["queue"])?;
            registry.register(Box::new(v.clone()))?;
            Ok(v)
        };
        let queue_pending = queue_vec("raftq_queue_length", "Pending events per queue")?;
        let queue_head = queue_vec("raftq_queue_head_seq", "Latest assigned seq per queue")?;
        let queue_retained =
            queue_vec("raftq_queue_retained_events", "Dequeued events still stored per queue")?;
        let maze = IntGaugeVec::new(
            Opts::new("raftq_maze", "Follower-maze counters (see docs/maze.md)"),
            &["counter"],
        )?;
        registry.register(Box::new(maze.clone()))?;
        let peer_refusals = IntCounterVec::new(
            Opts::new(
                "raftq_peer_refusals_total",
                "Node-to-node requests refused for naming another node id or cluster",
            ),
            &["direction", "reason"],
        )?;
        registry.register(Box::new(peer_refusals.clone()))?;
        let listener_open = IntGaugeVec::new(
            Opts::new("raftq_listener_connections", "Open connections per listener"),
            &["listener"],
        )?;
        registry.register(Box::new(listener_open.clone()))?;
        let listener_max = IntGaugeVec::new(
            Opts::new("raftq_listener_connections_max", "Connection cap per listener"),
            &["listener"],
        )?;
        registry.register(Box::new(listener_max.clone()))?;
        let listener_refused = IntCounterVec::new(
            Opts::new(
                "raftq_listener_connections_refused_total",
                "Connections closed at once because the listener was at its cap",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(listener_refused.clone()))?;
        let disk_available = gauge(
            &registry,
            "raftq_disk_available_bytes",
            "Free bytes in the data dir's filesystem",
        )?;
        let disk_low = gauge(
            &registry,
            "raftq_disk_writes_refused",
            "1 while writes answer 507 disk_full (free space below --min-free-disk here or on a member)",
        )?;
        let gossip_dropped = IntCounterVec::new(
            Opts::new(
                "raftq_gossip_datagrams_dropped_total",
                "Gossip datagrams dropped because they were unsigned or their tag did not verify",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(gossip_dropped.clone()))?;
        // Both series exist from the start, so a scrape shows 0 rather than
        // nothing before the first drop.
        for reason in [
            crate::membership::gossip_auth::REASON_UNSIGNED,
            crate::membership::gossip_auth::REASON_BAD_MAC,
        ] {
            gossip_dropped.get_metric_with_label_values(&[reason])?;
        }
        Ok(Metrics {
            registry,
            http_requests,
            http_seconds,
            leader_changes,
            raft,
            queue_pending,
            queue_head,
            queue_retained,
            maze,
            peer_refusals,
            listener_open,
            listener_max,
            listener_refused,
            disk_available,
            disk_low,
            gossip_dropped,
        })
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8(buf)?)
    }
}

/// The log store's fsync histogram, handed to the store and then to
/// [`Metrics::new`] for registration.
pub fn fsync_histogram() -> Result<Histogram, MetricsError> {
    Ok(Histogram::with_opts(
        HistogramOpts::new(
            "raftq_log_fsync_seconds",
            "Duration of synced Raft log writes (appends and votes)",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_renders_every_family() {
        let m = Metrics::new(fsync_histogram().expect("histogram")).expect("metrics");
        m.http_requests.with_label_values(&["/event", "POST", "201"]).inc();
        m.http_seconds.with_label_values(&["/event", "POST"]).observe(0.002);
        m.queue_pending.with_label_values(&["default"]).set(3);
        m.maze.with_label_values(&["clients_connected"]).set(1);
        m.raft.term.set(7);
        let text = m.render().expect("render");
        for needle in [
            "raftq_http_requests_total{method=\"POST\",route=\"/event\",status=\"201\"} 1",
            "raftq_http_request_duration_seconds_bucket{method=\"POST\",route=\"/event\",le=\"0.0025\"} 1",
            "raftq_queue_length{queue=\"default\"} 3",
            "raftq_maze{counter=\"clients_connected\"} 1",
            "raftq_raft_term 7",
            "# TYPE raftq_log_fsync_seconds histogram",
            "raftq_raft_leader_changes_total 0",
            "raftq_gossip_datagrams_dropped_total{reason=\"unsigned\"} 0",
            "raftq_gossip_datagrams_dropped_total{reason=\"bad_mac\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
