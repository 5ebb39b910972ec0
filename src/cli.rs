//! Command-line surface: every subcommand and flag of SPEC §1.
//!
//! Each `serve` flag also reads `RAFTQ_<FLAG>` (upper case, dashes to
//! underscores) through clap's `env`; a flag on the command line wins.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "raftq", version, about = "A Raft-replicated HTTPS event queue")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Serve(Box<ServeArgs>),
    /// Write a CA, a node certificate (PEM) and a gossip key for a cluster.
    Certs(CertsArgs),
    /// Print a node's /status in human form.
    Status(StatusArgs),
    /// Small client for the queue: post, get or delete one event.
    Event(EventArgs),
    /// Load generator used by `make bench` (raftq, or etcd for comparison).
    Bench(BenchArgs),
    /// Follower-maze verification: the reference test program's behaviour.
    MazeVerify(MazeVerifyArgs),
    /// Seed a new cluster's first node from a backup (`GET /cluster/backup`).
    Restore(RestoreArgs),
    /// Follow a queue's log: every event once, in seq order, resumable.
    Consume(ConsumeArgs),
    /// Named gapless sequences: lease blocks of ids and print them.
    Seq(SeqArgs),
    /// Print a stopped node's replicated state (queues, sequences, maze) as JSON.
    Dump(DumpArgs),
    /// Work-queue worker: lease events one at a time and run a command on each.
    Work(WorkArgs),
}

/// `raftq work`: see docs/consumers.md and `cmd/work.rs` for exit codes.
#[derive(Debug, Args)]
pub struct WorkArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Queue name.
    #[arg(long, default_value = "default")]
    pub queue: String,
    /// Lease time; the lease is extended every third of it while CMD runs.
    #[arg(long, default_value = "30s", value_parser = crate::units::parse_duration)]
    pub ttl: std::time::Duration,
    /// Long-poll wait per lease request (at most 60s).
    #[arg(long, default_value = "20s", value_parser = crate::units::parse_duration)]
    pub wait: std::time::Duration,
    /// Nack a failed job with this delay before it is offered again.
    #[arg(long, value_parser = crate::units::parse_duration)]
    pub nack_delay: Option<std::time::Duration>,
    /// Stop after this many jobs (default: run until signalled).
    #[arg(long)]
    pub max_jobs: Option<u64>,
    /// The command to run for each event; it gets the event on stdin.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The data dir of a stopped node.
    #[arg(long, env = "RAFTQ_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Also print every stored event body (pending and retained).
    #[arg(long)]
    pub events: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file.
    pub file: PathBuf,
    /// The data dir to create (must not hold a node yet). Then run
    /// `raftq serve --data-dir` on it without --seeds: it bootstraps a new
    /// cluster holding the backup's data.
    #[arg(long, env = "RAFTQ_DATA_DIR")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// RocksDB and node identity live here.
    #[arg(long, env = "RAFTQ_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Node id; default: a random u64 persisted in the data dir.
    #[arg(long, env = "RAFTQ_NODE_ID")]
    pub node_id: Option<u64>,
    /// HTTPS public API.
    #[arg(long, env = "RAFTQ_API_ADDR", default_value = "0.0.0.0:8080")]
    pub api_addr: SocketAddr,
    /// Node-to-node Raft RPC (TLS with client certificates).
    #[arg(long, env = "RAFTQ_RAFT_ADDR", default_value = "0.0.0.0:1112")]
    pub raft_addr: SocketAddr,
    /// Chitchat gossip (UDP).
    #[arg(long, env = "RAFTQ_GOSSIP_ADDR", default_value = "0.0.0.0:1111")]
    pub gossip_addr: SocketAddr,
    /// Host other nodes and redirects use to reach this one.
    #[arg(long, env = "RAFTQ_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// Take the advertise address from this interface (e.g. eth0).
    #[arg(long, env = "RAFTQ_BIND_INTERFACE")]
    pub bind_interface: Option<String>,
    /// Gossip addresses host:port of existing members, comma-separated.
    #[arg(long, env = "RAFTQ_SEEDS", alias = "serf-member-addrs", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// Nodes of another cluster id are ignored.
    #[arg(long, env = "RAFTQ_CLUSTER_ID", default_value = "raftq")]
    pub cluster_id: String,
    /// Bootstrap only once this many fresh nodes see each other in gossip
    /// (then the smallest node id bootstraps them all as voters). Give every
    /// node of a new cluster the same value.
    #[arg(long, env = "RAFTQ_BOOTSTRAP_EXPECT", value_parser = clap::value_parser!(u64).range(1..=15))]
    pub bootstrap_expect: Option<u64>,
    /// How long a seedless node on an empty data dir listens to gossip for an
    /// existing cluster before it bootstraps a new one (e.g. 2s).
    #[arg(long, env = "RAFTQ_BOOTSTRAP_WAIT", default_value = "2s", value_parser = crate::units::parse_duration)]
    pub bootstrap_wait: std::time::Duration,
    /// PEM certificate (chain) of this node, used for the API and Raft ports.
    #[arg(long, env = "RAFTQ_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "RAFTQ_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// PEM CA that signed every node certificate (Raft mTLS trust root).
    #[arg(long, env = "RAFTQ_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// Follower-maze event source (TCP).
    #[arg(long, env = "RAFTQ_MAZE_SOURCE_ADDR", default_value = "0.0.0.0:9090")]
    pub maze_source_addr: SocketAddr,
    /// Follower-maze user clients (TCP).
    #[arg(long, env = "RAFTQ_MAZE_CLIENT_ADDR", default_value = "0.0.0.0:9099")]
    pub maze_client_addr: SocketAddr,
    /// Disable the follower-maze listeners.
    #[arg(long, env = "RAFTQ_NO_MAZE")]
    pub no_maze: bool,
    /// How long the leader waits for a missing maze seq before skipping it.
    #[arg(long, env = "RAFTQ_MAZE_GAP_TIMEOUT_MS", default_value_t = 2000)]
    pub maze_gap_timeout_ms: u64,
    /// Longest a maze source line waits to share a Raft entry with later
    /// lines while earlier batches are in flight; 0: one entry per read burst.
    #[arg(long, env = "RAFTQ_MAZE_COALESCE_MS", default_value_t = 2)]
    pub maze_coalesce_ms: u64,
    /// Maze user clients connected at once; more are closed at once. Each
    /// holds up to --maze-client-buffer queued lines.
    #[arg(long, env = "RAFTQ_MAX_MAZE_CLIENTS", default_value_t = 10_000)]
    pub max_maze_clients: usize,
    /// Notifications buffered per maze user; a user that falls further behind is disconnected.
    #[arg(long, env = "RAFTQ_MAZE_CLIENT_BUFFER", default_value_t = 100_000)]
    pub maze_client_buffer: usize,
    /// Raft heartbeat interval. Heartbeats are sent apart from replication,
    /// and every RPC gets at least a second, so a short heartbeat does not
    /// time out large batches on a loaded node.
    #[arg(long, env = "RAFTQ_HEARTBEAT_MS", default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Raft minimum election timeout; the maximum (and the leader lease)
    /// is twice this. A follower campaigns once the lease and then an
    /// election timeout have passed without a heartbeat: a killed leader is
    /// replaced 3-4 times this after its last heartbeat.
    #[arg(long, env = "RAFTQ_ELECTION_TIMEOUT_MS", default_value_t = 100)]
    pub election_timeout_ms: u64,
    /// When set, every public request except /healthz needs `Authorization: Bearer <token>`.
    #[arg(long, env = "RAFTQ_API_TOKEN", conflicts_with = "api_token_file")]
    pub api_token: Option<String>,
    /// `--api-token` read from a file (first line), so it stays out of `ps`.
    #[arg(long, env = "RAFTQ_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Bearer token of the admin routes (remove a node, transfer leadership,
    /// backups). Without it they answer only loopback clients.
    #[arg(long, env = "RAFTQ_ADMIN_TOKEN", conflicts_with = "admin_token_file")]
    pub admin_token: Option<String>,
    /// `--admin-token` read from a file (first line).
    #[arg(long, env = "RAFTQ_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Least time between two leadership transfers (a transfer pauses writes).
    #[arg(long, env = "RAFTQ_TRANSFER_MIN_INTERVAL", default_value = "5s", value_parser = crate::units::parse_duration)]
    pub transfer_min_interval: std::time::Duration,
    /// When set, public API clients must present a certificate signed by this CA.
    #[arg(long, env = "RAFTQ_API_CLIENT_CA")]
    pub api_client_ca: Option<PathBuf>,
    /// Shared key (hex, as `raftq certs` writes to gossip.key): every gossip
    /// datagram is signed with it, and unsigned or forged ones are dropped.
    #[arg(long, env = "RAFTQ_GOSSIP_KEY")]
    pub gossip_key: Option<PathBuf>,
    /// Largest accepted event (bytes, at most 16 MiB); larger bodies get 413.
    #[arg(long, env = "RAFTQ_MAX_EVENT_BYTES", default_value_t = 1024 * 1024,
          value_parser = parse_max_event_bytes)]
    pub max_event_bytes: usize,
    /// Dequeued events kept per queue for /events and watches.
    #[arg(long, env = "RAFTQ_RETENTION_EVENTS", default_value_t = 100_000)]
    pub retention_events: u64,
    /// Most pending (not yet dequeued) events per queue; POSTs beyond get 507.
    #[arg(long, env = "RAFTQ_QUEUE_EVENTS_MAX", default_value_t = 10_000_000)]
    pub queue_events_max: u64,
    /// Take a Raft snapshot (and purge the log behind it) every this many log entries.
    #[arg(long, env = "RAFTQ_SNAPSHOT_LOGS", default_value_t = 20_000)]
    pub snapshot_logs: u64,
    /// Seconds a voter may stay dead in gossip before it is removed (never below 3 voters).
    #[arg(long, env = "RAFTQ_DEAD_NODE_GRACE_SECS", default_value_t = 300)]
    pub dead_node_grace_secs: u64,
    /// Body bytes of dequeued events kept per queue (e.g. 1GiB, 500MB, 4096).
    #[arg(long, env = "RAFTQ_RETENTION_BYTES", default_value = "1GiB", value_parser = crate::units::parse_bytes)]
    pub retention_bytes: u64,
    /// Dequeued events enqueued longer ago than this are dropped (e.g. 30s, 10m, 24h, 7d).
    #[arg(long, env = "RAFTQ_RETENTION_AGE", default_value = "7d", value_parser = crate::units::parse_duration)]
    pub retention_age: std::time::Duration,
    /// Below this much free space in the data dir's filesystem (e.g. 256MiB
    /// or 5%), writes answer 507 disk_full until space returns.
    #[arg(long, env = "RAFTQ_MIN_FREE_DISK", default_value = "256MiB", value_parser = crate::node::disk::parse_min_free)]
    pub min_free_disk: crate::node::disk::MinFree,
    /// Open connections the public API port accepts; more are closed at once.
    #[arg(long, env = "RAFTQ_MAX_API_CONNECTIONS", default_value_t = 4096)]
    pub max_api_connections: usize,
    /// Open connections the Raft port accepts (each peer holds a few: its
    /// Raft stream for replication and one for heartbeats, up to 4 idle
    /// ones for elections, one HTTPS connection).
    #[arg(long, env = "RAFTQ_MAX_RAFT_CONNECTIONS", default_value_t = 256)]
    pub max_raft_connections: usize,
    /// How append, vote and pre-vote travel to peers: `stream` (frames on
    /// one TLS connection per peer, HTTPS to a peer that lacks it) or
    /// `https` (one request each, as builds before the stream did; neither
    /// offered nor used). A way back, not a tuning: see docs/operations.md.
    #[arg(long, env = "RAFTQ_RAFT_TRANSPORT", default_value = "stream", value_parser = crate::node::config::RaftTransport::parse)]
    pub raft_transport: crate::node::config::RaftTransport,
    /// Async worker threads of the node (default: one per core). Members
    /// that share a machine, like three on two cores, do more with fewer:
    /// each write wakes fewer threads (docs/benchmarks.md, run 5).
    #[arg(long, env = "RAFTQ_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
    /// A TLS handshake, and an HTTP/1 request header, must complete within this.
    #[arg(long, env = "RAFTQ_HEADER_TIMEOUT", default_value = "10s", value_parser = crate::units::parse_duration)]
    pub header_timeout: std::time::Duration,
    /// A connection with no byte read or written for this long is closed.
    #[arg(long, env = "RAFTQ_IDLE_TIMEOUT", default_value = "120s", value_parser = crate::units::parse_duration)]
    pub idle_timeout: std::time::Duration,
    /// Concurrent HTTP/2 streams per connection on the API port.
    #[arg(long, env = "RAFTQ_MAX_HTTP2_STREAMS", default_value_t = 64)]
    pub max_http2_streams: u32,
    /// Concurrent `/events/watch` streams this node serves; more get 503.
    #[arg(long, env = "RAFTQ_MAX_WATCHES", default_value_t = 1000)]
    pub max_watches: usize,
    /// Concurrent long polls (`?wait=` on GET/DELETE /event and POST /lease)
    /// this node holds; more get 503 too_many_waiters.
    #[arg(long, env = "RAFTQ_MAX_WAITERS", default_value_t = 10_000)]
    pub max_waiters: usize,
    /// Most events in one batch `POST /events` (the body is also bounded by
    /// --max-event-bytes); larger batches get 400 invalid_batch.
    #[arg(long, env = "RAFTQ_MAX_BATCH_EVENTS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_batch_events: u64,
    /// Live (unexpired) leases per queue; a lease beyond gets 507.
    #[arg(long, env = "RAFTQ_LEASES_MAX", default_value_t = 100_000)]
    pub leases_max: u64,
    /// Delayed events per queue; a delayed POST beyond gets 507.
    #[arg(long, env = "RAFTQ_DELAYED_MAX", default_value_t = 100_000)]
    pub delayed_max: u64,
    /// Distinct queues, and distinct named sequences, the cluster holds; a
    /// POST that would create one more gets 507.
    #[arg(long, env = "RAFTQ_QUEUES_MAX", default_value_t = 10_000)]
    pub queues_max: u64,
    /// Idempotency keys the cluster remembers (oldest forgotten first).
    #[arg(long, env = "RAFTQ_IDEMPOTENCY_KEYS_MAX", default_value_t = 100_000)]
    pub idempotency_keys_max: u64,
    /// Maze lines buffered out of order; beyond it the missing seqs are skipped.
    #[arg(long, env = "RAFTQ_MAZE_PENDING_MAX", default_value_t = 100_000)]
    pub maze_pending_max: u64,
    /// Longest maze source line (bytes, line ending included); longer ones are malformed.
    #[arg(long, env = "RAFTQ_MAZE_LINE_BYTES_MAX", default_value_t = 1024)]
    pub maze_line_bytes_max: usize,
    /// Follow edges the maze remembers; beyond it a follow is notified but not recorded.
    #[arg(long, env = "RAFTQ_MAZE_FOLLOW_EDGES_MAX", default_value_t = 1_000_000)]
    pub maze_follow_edges_max: u64,
    /// Queues that get their own `queue` label in /metrics (the first seen);
    /// the others are summed under `queue="(other)"`.
    #[arg(long, env = "RAFTQ_METRICS_QUEUES_MAX", default_value_t = 100)]
    pub metrics_queues_max: usize,
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.pem, ca-key.pem, node.pem, node-key.pem and
    /// gossip.key into (an existing CA and gossip.key are kept).
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Hosts (names or IPs) the node certificate covers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    pub hosts: Vec<String>,
    /// Write a node certificate NAME.pem and NAME-key.pem signed by the CA
    /// already in `--out`.
    #[arg(long, conflicts_with = "client")]
    pub name: Option<String>,
    /// Write an API client certificate NAME.pem and NAME-key.pem signed by
    /// the CA already in `--out`: accepted by the public API under
    /// `--api-client-ca`, refused by the Raft port.
    #[arg(long, value_name = "NAME", conflicts_with = "hosts")]
    pub client: Option<String>,
}

/// TLS and endpoint options shared by every client subcommand.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Node API URL(s), comma-separated; tried in order.
    #[arg(
        long,
        env = "RAFTQ_URL",
        value_delimiter = ',',
        default_value = "https://127.0.0.1:8080"
    )]
    pub url: Vec<String>,
    /// CA certificate to verify the node with.
    #[arg(long, env = "RAFTQ_CA")]
    pub ca: Option<PathBuf>,
    /// Do not verify the node's certificate (like curl -k).
    #[arg(long, short = 'k')]
    pub insecure: bool,
    /// Bearer token for a node started with --api-token.
    #[arg(long, env = "RAFTQ_TOKEN")]
    pub token: Option<String>,
}

impl ClientArgs {
    /// The library's plain form of these flags.
    pub fn config(&self) -> crate::client::ClientConfig {
        crate::client::ClientConfig {
            urls: self.url.clone(),
            ca: self.ca.clone(),
            insecure: self.insecure,
            token: self.token.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print the raw JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EventArgs {
    #[command(subcommand)]
    pub action: EventAction,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Queue name.
    #[arg(long, global = true, default_value = "default")]
    pub queue: String,
}

#[derive(Debug, Subcommand)]
pub enum EventAction {
    /// Enqueue one event; prints its seq.
    Post {
        event: String,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Print the event at the front of the queue.
    Get,
    /// Remove and print the event at the front of the queue.
    Delete {
        /// Only remove if the front event has this seq.
        #[arg(long)]
        seq: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to load: `raftq` (HTTPS API), `etcd` (v3 JSON gateway, PUT;
    /// `writes` and `put-delete` only) or `nats` (JetStream; needs the
    /// `bench-nats` feature).
    #[arg(long, default_value = "raftq")]
    pub target: String,
    /// What each client repeats: `writes` (one event per request), `batch`
    /// (`--batch-events` per request), `lease-ack` (lease one, then ack it)
    /// or `put-delete` (even clients write, odd clients dequeue).
    #[arg(long, value_enum, default_value_t = BenchWorkload::Writes)]
    pub workload: BenchWorkload,
    /// Events per batch of the `batch` workload.
    #[arg(long, default_value_t = 100)]
    pub batch_events: usize,
    /// Events put in the queue before each `lease-ack` or `put-delete` run (default: 20 000
    /// per second of the run, several times what either system drains here;
    /// a run that finds the queue empty reports it in `empty`).
    #[arg(long)]
    pub prefill: Option<u64>,
    /// Concurrent clients per run (one keep-alive connection each), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Size of each event / value.
    #[arg(long, default_value_t = 100)]
    pub event_bytes: usize,
    /// Failover mode: writes through every --url (following redirects) and
    /// reports the longest time without an acknowledged write.
    #[arg(long)]
    pub failover: bool,
    /// Failover mode: also write the wall-clock time of every acknowledged
    /// write to this file (Unix microseconds, one per line), so that a
    /// script that kills nodes can measure from each kill to the next ack.
    #[arg(long)]
    pub acks_out: Option<PathBuf>,
}

/// One unit of work of `raftq bench`, timed as one latency sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchWorkload {
    /// One event per request (`POST /event`; etcd: one `PUT`).
    Writes,
    /// `--batch-events` events per request (`POST /events`, NDJSON).
    Batch,
    /// Lease one event, then acknowledge it (`POST /lease` + `ack`).
    LeaseAck,
    /// Half the clients write one event per request, the other half remove
    /// one (`DELETE /event`; etcd: a delete-range over the written keys;
    /// NATS: fetch + ack from a work-queue stream).
    PutDelete,
}

impl BenchWorkload {
    /// The name in the JSON lines and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Writes => "writes",
            Self::Batch => "batch",
            Self::LeaseAck => "lease-ack",
            Self::PutDelete => "put-delete",
        }
    }
}

/// Settings of the follower-maze verification program. Like the reference
/// program, every setting is an environment variable with the reference's
/// name; flags add where the source and clients connect.
#[derive(Debug, Args)]
pub struct MazeVerifyArgs {
    /// Address of the event source port.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub source: String,
    /// Addresses of client ports, comma-separated; clients are spread over them round-robin.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:9099")]
    pub clients: Vec<String>,
    #[arg(long, env = "totalEvents", default_value_t = 10_000_000)]
    pub total_events: u64,
    #[arg(long, env = "concurrencyLevel", default_value_t = 100)]
    pub concurrency_level: usize,
    /// Default: 10 x concurrencyLevel.
    #[arg(long, env = "numberOfUsers")]
    pub number_of_users: Option<u64>,
    #[arg(long, env = "randomSeed", default_value_t = 666)]
    pub random_seed: u64,
    /// Read timeout per client, in milliseconds.
    #[arg(long, env = "timeout", default_value_t = 20_000)]
    pub timeout: u64,
    #[arg(long, env = "maxEventSourceBatchSize", default_value_t = 100)]
    pub max_event_source_batch_size: usize,
    /// Progress line every this many events.
    #[arg(long, env = "logInterval", default_value_t = 1_000_000)]
    pub log_interval: u64,
    /// How the events are written and the notifications checked.
    #[arg(long, value_enum, default_value_t = MazePacing::Bulk)]
    pub pacing: MazePacing,
}

/// `raftq maze-verify --pacing`: see docs/benchmarks.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MazePacing {
    /// As fast as this machine allows: one write per batch with Nagle off,
    /// clients checked byte for byte on every core. Measures the server.
    Bulk,
    /// Like the reference program: one blocking write (Nagle on) per random
    /// batch, every notification parsed and its order checked, all 100
    /// clients on one thread. Predicts the reference program's wall time.
    Reference,
}

/// `raftq consume`: see docs/consumers.md.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Queue name.
    #[arg(long, default_value = "default")]
    pub queue: String,
    /// File holding the last printed seq; read at start (when it exists),
    /// rewritten atomically after the output is flushed.
    #[arg(long, required_unless_present = "group", conflicts_with = "group")]
    pub checkpoint: Option<PathBuf>,
    /// Consumer group: resume from the cluster's cursor of this group
    /// (`/queues/{queue}/cursors/{group}`) and advance it by compare-and-set
    /// instead of a checkpoint file.
    #[arg(long)]
    pub group: Option<String>,
    /// First seq to print when the checkpoint file or group cursor does not exist yet.
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// Print `{"seq":N,"event":"..."}` lines instead of `SEQ<TAB>ESCAPED-EVENT`.
    #[arg(long)]
    pub json: bool,
    /// Never open an SSE stream; only poll `GET /events`.
    #[arg(long)]
    pub poll: bool,
    /// Seconds without any SSE frame (heartbeats included) before the stream
    /// is abandoned for another node.
    #[arg(long, default_value_t = 3.0)]
    pub stall_secs: f64,
}

/// `raftq seq`: named sequences.
#[derive(Debug, Args)]
pub struct SeqArgs {
    #[command(subcommand)]
    pub action: SeqAction,
}

#[derive(Debug, Subcommand)]
pub enum SeqAction {
    /// Print the next ids of sequence NAME, one per line.
    Next {
        /// Sequence name.
        name: String,
        /// Ids leased from the cluster per request.
        #[arg(long, default_value_t = 1)]
        batch: u64,
        /// Ids to print.
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Report each leased block and each lease request whose outcome is
        /// unknown on stderr.
        #[arg(long, short = 'v')]
        verbose: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub use crate::node::config::MAX_EVENT_BYTES_LIMIT;

fn parse_max_event_bytes(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|_| format!("{s:?} is not a byte count"))?;
    if n == 0 || n > MAX_EVENT_BYTES_LIMIT {
        return Err(format!("must be between 1 and {MAX_EVENT_BYTES_LIMIT} (16 MiB)"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_takes_the_command_after_the_double_dash() {
        let cli = Cli::try_parse_from(["raftq", "work", "--ttl", "3s", "--", "sh", "-c", "exit 1"])
            .expect("parses");
        let Command::Work(args) = cli.command else { panic!("not work: {cli:?}") };
        assert_eq!(args.command, ["sh", "-c", "exit 1"]);
        assert_eq!(args.ttl, std::time::Duration::from_secs(3));
        assert_eq!(args.queue, "default");
        assert!(Cli::try_parse_from(["raftq", "work", "--queue", "q"]).is_err(), "CMD required");
    }

    #[test]
    fn consume_takes_a_checkpoint_file_or_a_group() {
        let parse = |extra: &[&str]| {
            Cli::try_parse_from(["raftq", "consume"].iter().chain(extra)).map(|cli| cli.command)
        };
        assert!(parse(&[]).is_err(), "one of the two is required");
        assert!(parse(&["--checkpoint", "f", "--group", "g"]).is_err(), "not both");
        let Ok(Command::Consume(args)) = parse(&["--group", "g"]) else { panic!("--group alone") };
        assert_eq!((args.group.as_deref(), args.checkpoint), (Some("g"), None));
        assert!(matches!(parse(&["--checkpoint", "f"]), Ok(Command::Consume(_))));
    }

    #[test]
    fn worker_threads_is_one_or_more() {
        let parse = |extra: &[&str]| {
            Cli::try_parse_from(["raftq", "serve"].iter().chain(extra)).map(|cli| cli.command)
        };
        let Ok(Command::Serve(args)) = parse(&[]) else { panic!("serve parses") };
        assert_eq!(args.worker_threads, None, "the runtime's default unless asked");
        let Ok(Command::Serve(args)) = parse(&["--worker-threads", "1"]) else { panic!("1") };
        assert_eq!(args.worker_threads, Some(1));
        for bad in ["0", "-1", "1025", "many"] {
            assert!(parse(&["--worker-threads", bad]).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn raft_transport_is_stream_unless_asked() {
        use crate::node::config::RaftTransport;
        let parse = |extra: &[&str]| {
            Cli::try_parse_from(["raftq", "serve"].iter().chain(extra)).map(|cli| cli.command)
        };
        let Ok(Command::Serve(args)) = parse(&[]) else { panic!("serve parses") };
        assert_eq!(args.raft_transport, RaftTransport::Stream);
        let Ok(Command::Serve(args)) = parse(&["--raft-transport", "https"]) else {
            panic!("https")
        };
        assert_eq!(args.raft_transport, RaftTransport::Https);
        for bad in ["", "http", "HTTPS", "grpc"] {
            assert!(parse(&["--raft-transport", bad]).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn max_event_bytes_is_bounded() {
        assert_eq!(parse_max_event_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_max_event_bytes("16777216"), Ok(MAX_EVENT_BYTES_LIMIT));
        for bad in ["0", "16777217", "-1", "1MiB", ""] {
            assert!(parse_max_event_bytes(bad).is_err(), "{bad:?} accepted");
        }
    }
}
