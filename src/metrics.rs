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
//!
//! Label values never come unbounded from clients: routes are templates,
//! methods outside the standard set are `other`, and queue names (chosen by
//! clients) get their own `queue` label only for the first
//! `--metrics-queues-max` queues a scrape sees; the rest are summed under
//! [`OTHER_QUEUES`] (see [`Metrics::set_queues`]).

use std::collections::BTreeSet;
use std::sync::Mutex;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets for HTTP requests and fsyncs: 0.5 ms .. 10 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The `queue` label of the queues beyond `--metrics-queues-max`. Not a
/// valid queue name (those are `A-Z a-z 0-9 . _ -`), so it never collides.
pub const OTHER_QUEUES: &str = "(other)";

/// Default of `--metrics-queues-max`.
pub const QUEUE_LABELS_MAX: usize = 100;

/// One queue's gauges, as [`Metrics::set_queues`] takes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueGauges {
    pub pending: u64,
    pub head: u64,
    pub retained: u64,
}

/// One queue's work-queue gauges, as [`Metrics::set_work`] takes them: the
/// leased and delayed events now, and the replicated totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkGauges {
    pub leased: u64,
    pub delayed: u64,
    pub redelivered: u64,
    pub expired: u64,
    pub dead_lettered: u64,
}

impl WorkGauges {
    /// The `state` label values, a fixed set.
    fn values(&self) -> [(&'static str, u64); 5] {
        [
            ("leased", self.leased),
            ("delayed", self.delayed),
            ("redelivered", self.redelivered),
            ("expired", self.expired),
            ("dead_lettered", self.dead_lettered),
        ]
    }

    fn add(&mut self, other: &WorkGauges) {
        self.leased = self.leased.saturating_add(other.leased);
        self.delayed = self.delayed.saturating_add(other.delayed);
        self.redelivered = self.redelivered.saturating_add(other.redelivered);
        self.expired = self.expired.saturating_add(other.expired);
        self.dead_lettered = self.dead_lettered.saturating_add(other.dead_lettered);
    }
}

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
    /// Per-queue gauges, labelled by queue name for the first
    /// `queue_labels_max` queues (see [`Metrics::set_queues`]).
    pub queue_pending: IntGaugeVec,
    pub queue_head: IntGaugeVec,
    pub queue_retained: IntGaugeVec,
    /// Work-queue state per queue (same labelling) and `state` (leased,
    /// delayed, redelivered, expired, dead_lettered; see [`WorkGauges`]).
    pub queue_work: IntGaugeVec,
    /// Maze counters, labelled by counter name (a fixed set).
    pub maze: IntGaugeVec,
    /// Node-to-node requests refused for naming another node or cluster
    /// (`direction`: sent = a peer refused ours, received = we refused one).
    pub peer_refusals: IntCounterVec,
    /// Connections on the Raft port that negotiated the Raft stream (see
    /// `raft::frame`); the others speak HTTPS.
    pub raft_stream_connections: IntCounter,
    /// Append, vote, pre-vote and transfer-leader RPCs this node sent, by
    /// `transport` (`stream`, `https`): how much still goes over HTTPS to
    /// peers without the stream, or under `--raft-transport https`.
    pub raft_rpcs_sent: IntCounterVec,
    /// The async runtime's worker threads (`--worker-threads`).
    pub runtime_workers: IntGauge,
    /// Per listener (api, raft, maze_source, maze_client): open connections,
    /// the cap, and connections refused at the cap.
    pub listener_open: IntGaugeVec,
    pub listener_max: IntGaugeVec,
    pub listener_refused: IntCounterVec,
    pub listener_admitted: IntCounterVec,
    pub listener_peak: IntGaugeVec,
    /// Free bytes in the data dir's filesystem, and whether writes are
    /// refused for disk space (here or on a member).
    pub disk_available: IntGauge,
    pub disk_low: IntGauge,
    /// Gossip datagrams dropped for want of a valid `--gossip-key` tag,
    /// labelled by reason (`unsigned`, `bad_mac`); updated by the transport.
    pub gossip_dropped: IntCounterVec,
    /// How many queue names get a label of their own, and which ones have
    /// (kept for the process's life, so a queue's series never moves).
    queue_labels_max: usize,
    labelled_queues: Mutex<BTreeSet<String>>,
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

fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// A fresh registry with every metric registered. `fsync` is the log
    /// store's histogram (created by the store so it can time itself).
    pub fn new(fsync: Histogram) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        registry.register(Box::new(fsync))?;
        let http_requests = counter_vec(
            &registry,
            "raftq_http_requests_total",
            "Public API requests by route and status",
            &["route", "method", "status"],
        )?;
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "raftq_http_request_duration_seconds",
                "Public API request latency until the response head",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        registry.register(Box::new(http_seconds.clone()))?;
        let leader_changes = counter(
            &registry,
            "raftq_raft_leader_changes_total",
            "Times this node saw the cluster's leader change (including to none)",
        )?;
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
        let queue_work = IntGaugeVec::new(
            Opts::new(
                "raftq_queue_work",
                "Work-queue events per queue and state: leased and delayed now; redelivered, \
                 expired and dead_lettered since the queue existed (replicated totals)",
            ),
            &["queue", "state"],
        )?;
        registry.register(Box::new(queue_work.clone()))?;
        let maze = IntGaugeVec::new(
            Opts::new("raftq_maze", "Follower-maze counters (see docs/maze.md)"),
            &["counter"],
        )?;
        registry.register(Box::new(maze.clone()))?;
        let peer_refusals = counter_vec(
            &registry,
            "raftq_peer_refusals_total",
            "Node-to-node requests refused for naming another node id or cluster",
            &["direction", "reason"],
        )?;
        let raft_stream_connections = counter(
            &registry,
            "raftq_raft_stream_connections_total",
            "Connections on the Raft port served as the Raft stream (the rest speak HTTPS)",
        )?;
        let raft_rpcs_sent = counter_vec(
            &registry,
            "raftq_raft_rpcs_sent_total",
            "Append, vote, pre-vote and transfer-leader RPCs sent, by transport",
            &["transport"],
        )?;
        let runtime_workers = gauge(
            &registry,
            "raftq_runtime_worker_threads",
            "Worker threads of the node's async runtime (--worker-threads)",
        )?;
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
        let listener_refused = counter_vec(
            &registry,
            "raftq_listener_connections_refused_total",
            "Connections closed at once because the listener was at its cap",
            &["listener"],
        )?;
        let listener_admitted = counter_vec(
            &registry,
            "raftq_listener_connections_admitted_total",
            "Connections admitted within the listener's cap",
            &["listener"],
        )?;
        let listener_peak = IntGaugeVec::new(
            Opts::new(
                "raftq_listener_connections_peak",
                "Most connections open at once on the listener since the node started",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(listener_peak.clone()))?;
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
        let gossip_dropped = counter_vec(
            &registry,
            "raftq_gossip_datagrams_dropped_total",
            "Gossip datagrams dropped because they were unsigned or their tag did not verify",
            &["reason"],
        )?;
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
            queue_work,
            maze,
            peer_refusals,
            raft_stream_connections,
            raft_rpcs_sent,
            runtime_workers,
            listener_open,
            listener_max,
            listener_refused,
            listener_admitted,
            listener_peak,
            disk_available,
            disk_low,
            gossip_dropped,
            queue_labels_max: QUEUE_LABELS_MAX,
            labelled_queues: Mutex::new(BTreeSet::new()),
        })
    }

    /// At most `max` queues get a `queue` label of their own.
    pub fn with_queue_labels_max(mut self, max: usize) -> Self {
        self.queue_labels_max = max;
        self
    }

    /// Sets the per-queue gauges. The first `queue_labels_max` queue names
    /// seen (over the process's life, in the order given) are labelled by
    /// name; the others are summed under [`OTHER_QUEUES`] (pending and
    /// retained added up, head the largest), which exists only once there
    /// are such queues.
    pub fn set_queues(&self, queues: impl IntoIterator<Item = (String, QueueGauges)>) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut other: Option<QueueGauges> = None;
        // A poisoned lock only means a panic elsewhere mid-insert; the set
        // is still a set.
        let mut labelled = self.labelled_queues.lock().unwrap_or_else(|p| p.into_inner());
        for (name, q) in queues {
            if !self.own_label(&mut labelled, &name) {
                let sum = other.get_or_insert_with(QueueGauges::default);
                sum.pending = sum.pending.saturating_add(q.pending);
                sum.retained = sum.retained.saturating_add(q.retained);
                sum.head = sum.head.max(q.head);
                continue;
            }
            self.queue_pending.with_label_values(&[&name]).set(gauge(q.pending));
            self.queue_head.with_label_values(&[&name]).set(gauge(q.head));
            self.queue_retained.with_label_values(&[&name]).set(gauge(q.retained));
        }
        if let Some(sum) = other {
            self.queue_pending.with_label_values(&[OTHER_QUEUES]).set(gauge(sum.pending));
            self.queue_head.with_label_values(&[OTHER_QUEUES]).set(gauge(sum.head));
            self.queue_retained.with_label_values(&[OTHER_QUEUES]).set(gauge(sum.retained));
        }
    }

    /// Whether `name` has (or now gets) a `queue` label of its own.
    fn own_label(&self, labelled: &mut BTreeSet<String>, name: &str) -> bool {
        labelled.contains(name)
            || (labelled.len() < self.queue_labels_max && labelled.insert(name.to_owned()))
    }

    /// Sets the work-queue gauges, labelled like [`Metrics::set_queues`]
    /// (the queues beyond the label budget summed under [`OTHER_QUEUES`]).
    pub fn set_work(&self, queues: impl IntoIterator<Item = (String, WorkGauges)>) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut other: Option<WorkGauges> = None;
        let mut labelled = self.labelled_queues.lock().unwrap_or_else(|p| p.into_inner());
        let set = |name: &str, w: &WorkGauges| {
            for (state, value) in w.values() {
                self.queue_work.with_label_values(&[name, state]).set(gauge(value));
            }
        };
        for (name, w) in queues {
            if self.own_label(&mut labelled, &name) {
                set(&name, &w);
            } else {
                other.get_or_insert_with(WorkGauges::default).add(&w);
            }
        }
        if let Some(sum) = other {
            set(OTHER_QUEUES, &sum);
        }
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

    fn queue(pending: u64, head: u64, retained: u64) -> QueueGauges {
        QueueGauges { pending, head, retained }
    }

    /// Series of one metric family in the rendered text.
    fn series<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(&format!("{family}{{"))).collect()
    }

    #[test]
    fn work_gauges_share_the_queue_label_budget() {
        let m = Metrics::new(fsync_histogram().expect("histogram"))
            .expect("metrics")
            .with_queue_labels_max(1);
        let w = |leased| WorkGauges { leased, dead_lettered: 1, ..WorkGauges::default() };
        m.set_work([("a".to_string(), w(2)), ("b".to_string(), w(3)), ("c".to_string(), w(4))]);
        let text = m.render().expect("render");
        for needle in [
            "raftq_queue_work{queue=\"a\",state=\"leased\"} 2",
            "raftq_queue_work{queue=\"(other)\",state=\"leased\"} 7",
            "raftq_queue_work{queue=\"(other)\",state=\"dead_lettered\"} 2",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("queue=\"b\""), "{text}");
    }

    #[test]
    fn queue_labels_are_bounded_and_the_rest_summed() {
        let m = Metrics::new(fsync_histogram().expect("histogram"))
            .expect("metrics")
            .with_queue_labels_max(2);
        m.set_queues([
            ("a".to_string(), queue(1, 10, 100)),
            ("b".to_string(), queue(2, 20, 200)),
            ("c".to_string(), queue(3, 30, 300)),
            ("d".to_string(), queue(4, 5, 400)),
        ]);
        let text = m.render().expect("render");
        assert_eq!(
            series(&text, "raftq_queue_length"),
            [
                "raftq_queue_length{queue=\"(other)\"} 7",
                "raftq_queue_length{queue=\"a\"} 1",
                "raftq_queue_length{queue=\"b\"} 2",
            ],
            "{text}"
        );
        assert!(text.contains("raftq_queue_head_seq{queue=\"(other)\"} 30"), "{text}");
        assert!(text.contains("raftq_queue_retained_events{queue=\"(other)\"} 700"), "{text}");

        // A queue that had a label keeps it, even when it comes later in a
        // scrape than the newcomers; newcomers never get one.
        m.set_queues([
            ("0".to_string(), queue(9, 9, 9)),
            ("b".to_string(), queue(5, 21, 0)),
            ("c".to_string(), queue(0, 30, 0)),
        ]);
        let text = m.render().expect("render");
        assert!(text.contains("raftq_queue_length{queue=\"b\"} 5"), "{text}");
        assert!(text.contains("raftq_queue_length{queue=\"(other)\"} 9"), "{text}");
        assert_eq!(series(&text, "raftq_queue_length").len(), 3, "{text}");
    }

    #[test]
    fn no_other_series_while_every_queue_has_a_label() {
        let m = Metrics::new(fsync_histogram().expect("histogram")).expect("metrics");
        m.set_queues([("default".to_string(), queue(1, 1, 0))]);
        let text = m.render().expect("render");
        assert!(!text.contains(OTHER_QUEUES), "{text}");
        assert!(text.contains("raftq_queue_length{queue=\"default\"} 1"), "{text}");
    }

    #[test]
    fn zero_labels_sums_everything() {
        let m = Metrics::new(fsync_histogram().expect("histogram"))
            .expect("metrics")
            .with_queue_labels_max(0);
        m.set_queues([("x".to_string(), queue(1, 4, 0)), ("y".to_string(), queue(2, 3, 0))]);
        let text = m.render().expect("render");
        assert_eq!(
            series(&text, "raftq_queue_length"),
            ["raftq_queue_length{queue=\"(other)\"} 3"],
            "{text}"
        );
    }
}
