//! Wiring one node together, and taking it apart again.
//!
//! Start order: data-dir checks → storage → identity → TLS → Raft → Raft
//! port → gossip → bootstrap task (only a fresh node, see
//! `membership::bootstrap`) → membership driver → proposer and Raft facade
//! (`replica`) → public API.
//! Listeners are bound first ([`listeners`]), so a port conflict fails the
//! start instead of leaving a half-running node, and port 0 works: the node
//! advertises the port it got, and [`NodeHandle::addrs`] tells the caller.
//!
//! [`start`] takes a plain [`Config`] (built from the flags by `cmd/serve.rs`,
//! or in code by a test); [`start_on`] also takes the bound listeners.
//!
//! Shutdown order (reverse of what depends on what): one token stops the
//! listeners and the background loops (open API requests get 2 s to finish,
//! Raft RPCs 0.5 s), then gossip, then Raft, which flushes its storage; the
//! handle then waits for the last task holding RocksDB and closes it.

pub mod advertise;
pub mod config;
pub mod disk;
pub mod identity;
pub mod listeners;

pub use config::{Config, ConfigError};
pub use listeners::{BoundAddrs, Listeners};

use config::RaftTransport;
use listeners::ServerLimits;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{self, internal, raft_stream, AppState, Auth, Health, MazeHandles};
use crate::listener::ListenerStats;
use crate::maze_net::clients::Registry;
use crate::maze_net::source::SourceCounters;
use crate::membership::bootstrap::{self, Situation, Step};
use crate::membership::driver::Driver;
use crate::membership::gossip::{Gossip, GossipSettings};
use crate::queue::RetentionPolicy;
use crate::raft::log_store::LogStore;
use crate::raft::network::{Network, SentCounters};
use crate::raft::peer::{ClusterIdentity, PeerClient};
use crate::raft::state_machine::StateMachine;
use crate::raft::types::{Node, NodeId, Raft};
use crate::raft::{self as raftmod, Proposer, RaftSettings};
use crate::replica::{Replica, ReplicaParts};
use crate::tls::TlsMaterial;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Advertise(#[from] advertise::AdvertiseError),
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("storage: {0}")]
    Store(#[from] crate::raft::db::StoreError),
    #[error("raft config: {0}")]
    RaftConfig(#[from] Box<openraft::ConfigError>),
    #[error("raft: {0}")]
    Raft(String),
    #[error("binding {what} {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Gossip(#[from] crate::membership::gossip::GossipError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(
        "{dir} holds node identity {node_id} (file node_id) but no Raft database (db/): its log \
         and vote are gone, and starting it as node {node_id} could lose or fork acknowledged \
         writes. Either delete {dir}/node_id too, so that it joins as a new node (the cluster \
         replaces the old one once it has caught up), or restore a backup into an empty data dir \
         (raftq restore)"
    )]
    Amnesia { dir: String, node_id: String },
    #[error(
        "{dir}/db holds Raft state but {dir}/node_id is missing: the node id it voted as is \
         unknown. Put the node_id file back, or empty the data dir to start as a new node"
    )]
    LostIdentity { dir: String },
    #[error("token file {path}: {why}")]
    TokenFile { path: String, why: String },
    #[error(transparent)]
    GossipKey(#[from] crate::membership::gossip_auth::GossipKeyError),
}

/// A token from the flag, or the first line of the file flag (so it stays
/// out of `ps`); an empty token is no token.
fn token(flag: Option<&str>, file: Option<&std::path::Path>) -> Result<Option<String>, NodeError> {
    if let Some(path) = file {
        let fail = |why: String| NodeError::TokenFile { path: path.display().to_string(), why };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let first = text.lines().next().unwrap_or("").trim().to_string();
        if first.is_empty() {
            return Err(fail("the first line is empty".into()));
        }
        return Ok(Some(first));
    }
    Ok(flag.map(str::to_string).filter(|t| !t.is_empty()))
}

/// A running node.
pub struct NodeHandle {
    pub node_id: NodeId,
    pub raft: Raft,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    addrs: BoundAddrs,
    gossip: Arc<Gossip>,
    /// The database, to close it: [`NodeHandle::shutdown`] waits until every
    /// task holding it has ended and drops this last reference itself, so
    /// RocksDB is closed (its lock released) when shutdown returns.
    db: Arc<rocksdb::DB>,
}

/// Seeds naming this node itself do not count: the same command line can
/// then start every node of a cluster (the first one bootstraps).
fn other_seeds(seeds: &[String], own: &[String]) -> Vec<String> {
    seeds
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !own.contains(s))
        .collect()
}

/// Refuses a data dir that lost its database but kept its identity: started
/// as that node id with an empty log and no vote, it could vote twice in a
/// term and make the cluster lose acknowledged writes (SPEC §6).
fn check_data_dir(data_dir: &std::path::Path) -> Result<(), NodeError> {
    let id_file = data_dir.join(identity::NODE_ID_FILE);
    if id_file.exists() && !data_dir.join("db").join("CURRENT").exists() {
        let node_id = std::fs::read_to_string(&id_file).unwrap_or_default().trim().to_string();
        return Err(NodeError::Amnesia { dir: data_dir.display().to_string(), node_id });
    }
    Ok(())
}

/// Binds the listeners of `config`, then starts the node on them.
pub async fn start(config: Config) -> Result<NodeHandle, NodeError> {
    config.validate()?;
    let listeners = Listeners::bind(&config)?;
    start_on(config, listeners).await
}

/// Starts a node on listeners the caller bound (their addresses in
/// `config` are then only used for logging). Returns once the node serves.
pub async fn start_on(config: Config, listeners: Listeners) -> Result<NodeHandle, NodeError> {
    config.validate()?;
    let bound = listeners.local_addrs()?;
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|source| NodeError::DataDir { path: data_dir.clone(), source })?;
    check_data_dir(&data_dir)?;
    // The database first, the identity file after it: a crash in between
    // leaves an empty database without identity, which is a fresh node.
    let db = crate::raft::db::open(&data_dir.join("db"))?;
    let db_handle = db.clone();
    let restored = data_dir.join(crate::raft::backup::RESTORED_MARKER).exists();
    if !data_dir.join(identity::NODE_ID_FILE).exists()
        && !restored
        && crate::raft::log_store::has_raft_state(&db)?
    {
        return Err(NodeError::LostIdentity { dir: data_dir.display().to_string() });
    }
    let (node_id, created) = identity::load_or_create(&data_dir, config.node_id)?;
    let host = advertise::resolve(
        config.advertise_host.as_deref(),
        config.bind_interface.as_deref(),
        bound.api,
    )?;
    let node = Node {
        raft_addr: advertise::host_port(&host, bound.raft.port()),
        api_addr: advertise::host_port(&host, bound.api.port()),
    };
    tracing::info!(node_id, new = created, advertise = %host, "starting node");

    let tls = match &config.tls {
        Some(files) => TlsMaterial::load(&files.cert, &files.key, &files.ca)?,
        None => TlsMaterial::dev(&data_dir, std::slice::from_ref(&host))?,
    };
    // Read before Raft starts, so a bad key file fails the start at once.
    let gossip_key = match &config.gossip_key {
        Some(path) => Some(crate::membership::gossip_auth::GossipKey::load(path)?),
        None => None,
    };
    let fsync_seconds = crate::metrics::fsync_histogram()?;
    let metrics = Arc::new(
        crate::metrics::Metrics::new(fsync_seconds.clone())?
            .with_queue_labels_max(config.metrics_queues_max),
    );
    let cluster = ClusterIdentity::load(node_id, &config.cluster_id, db.clone())?;
    let peer_client =
        PeerClient::new(tls.raft_client()?, cluster.clone(), metrics.peer_refusals.clone());

    let log_store =
        LogStore::new(db.clone()).with_fsync_histogram(fsync_seconds).with_node_id(node_id);
    let snapshot_dir = data_dir.join("snapshots");
    let state_machine = StateMachine::open(db, &snapshot_dir)?;
    let reader = state_machine.reader();
    let maze_registry = Registry::new(config.maze_client_buffer);
    state_machine.set_maze_sink(maze_registry.clone());
    let settings = RaftSettings {
        heartbeat_ms: config.heartbeat_ms,
        election_timeout_ms: config.election_timeout_ms,
        snapshot_logs: config.snapshot_logs,
    };
    let raft_config = raftmod::config(&config.cluster_id, &settings)?;
    let raft = Raft::new(
        node_id,
        raft_config,
        Network::new(
            peer_client.clone(),
            match config.raft_transport {
                RaftTransport::Stream => Some(tls.raft_stream_client_config()?),
                RaftTransport::Https => None,
            },
            settings.rpc_timeout_min(),
            SentCounters::new(&metrics.raft_rpcs_sent),
        ),
        log_store,
        state_machine,
    )
    .await
    .map_err(|e| NodeError::Raft(e.to_string()))?;

    // An operator-chosen id on an empty data dir may be an id the cluster
    // already knows (a volume lost under a pinned id): stay out of Raft
    // until gossip has had the chance to say so (see `bootstrap_when_due`).
    let reused_id_check = config.node_id.is_some()
        && !restored
        && cluster.uuid().is_none()
        && !raft.is_initialized().await.map_err(|e| NodeError::Raft(e.to_string()))?;
    if reused_id_check {
        cluster.hold(format!(
            "node {node_id} was started with --node-id on an empty data dir and is checking that \
             the cluster never knew that id"
        ));
    }
    let Listeners { api: api_listener, raft: raft_listener, maze: maze_listeners } = listeners;

    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let limits = config.limits;
    let maze_limits = config.maze_limits;
    let disk = disk::DiskGuard::new(&data_dir, config.min_free_disk);
    let proposer = Proposer::spawn(
        raft.clone(),
        limits,
        maze_limits,
        disk.clone(),
        settings.quorum_timeout(),
        shutdown.clone(),
    );
    let replica = Replica::new(ReplicaParts {
        node_id,
        raft: raft.clone(),
        proposer: proposer.clone(),
        peer_client: peer_client.clone(),
        maze_limits,
        snapshot_dir: snapshot_dir.clone(),
        transfer_min_interval: config.transfer_min_interval,
        leader_wait: settings.leader_wait(),
        leader_silence: settings.leader_silence(),
        contact_limit: settings.contact_limit(),
    });
    tasks.spawn(crate::raft::compactor::run(
        raft.clone(),
        reader.clone(),
        proposer.clone(),
        RetentionPolicy {
            max_bytes: config.retention_bytes,
            max_age_ms: u64::try_from(config.retention_age.as_millis()).unwrap_or(u64::MAX),
        },
        shutdown.clone(),
    ));

    tasks.spawn(crate::raft::sweeper::run(
        raft.clone(),
        reader.clone(),
        proposer.clone(),
        shutdown.clone(),
    ));

    crate::listener::raise_fd_limit(
        (config.max_api_connections + config.max_raft_connections + config.max_maze_clients) as u64,
    );
    let raft_limits = ServerLimits {
        stats: ListenerStats::new("raft", config.max_raft_connections),
        handshake_and_header: config.header_timeout,
        idle: config.idle_timeout,
        // Peers multiplex their RPCs over one connection; entries travel
        // in ~1 MiB messages (hyper's default windows).
        http2_streams: 256,
        stream_window: 1 << 20,
        connection_window: 4 << 20,
        // Peers retry elsewhere; a short grace keeps shutdown quick.
        shutdown_grace: Duration::from_millis(500),
    };
    let api_limits = ServerLimits {
        stats: ListenerStats::new("api", config.max_api_connections),
        handshake_and_header: config.header_timeout,
        idle: config.idle_timeout,
        http2_streams: config.max_http2_streams,
        stream_window: 256 << 10,
        connection_window: 1 << 20,
        shutdown_grace: Duration::from_secs(2),
    };
    {
        let internal_state = internal::InternalState {
            replica: replica.clone(),
            peer: peer_client.clone(),
            reader: reader.clone(),
        };
        let stream_shutdown = shutdown.clone();
        let stream_state = internal_state.clone();
        let stream_connections = metrics.raft_stream_connections.clone();
        let divert: listeners::Divert = Arc::new(move |conn| {
            stream_connections.inc();
            Box::pin(raft_stream::serve(stream_state.clone(), conn, stream_shutdown.clone()))
        });
        let stream = config.raft_transport == RaftTransport::Stream;
        tasks.spawn(listeners::serve_https(
            "raft port",
            raft_listener,
            tls.raft_server_config(stream)?,
            &raft_limits,
            internal::router(internal_state),
            false,
            stream.then_some((crate::raft::frame::ALPN, divert)),
            shutdown.clone(),
        )?);
    }

    let gossip_advertise = advertise::gossip_socket(&host, config.gossip_addr.port()).await?;
    let own = [
        gossip_advertise.to_string(),
        config.gossip_addr.to_string(),
        advertise::host_port(&host, config.gossip_addr.port()),
    ];
    let seeds = other_seeds(&config.seeds, &own);
    let initialized = raft.is_initialized().await.map_err(|e| NodeError::Raft(e.to_string()))?;
    let fresh = !initialized && cluster.uuid().is_none();
    if fresh && restored {
        // A restore seeds a new cluster by definition: no waiting.
        tracing::info!(node_id, "restored data dir: bootstrapping a new single-voter cluster");
        cluster.create()?;
        raft.initialize(BTreeMap::from([(node_id, node.clone())]))
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
    }
    // Before gossip and autopilot start, so that no node can join first.
    seal_restored_data(&raft, &data_dir).await?;

    let gossip = Arc::new(
        Gossip::spawn(GossipSettings {
            node_id,
            node: node.clone(),
            cluster_id: config.cluster_id.clone(),
            listen_addr: config.gossip_addr,
            advertise_addr: gossip_advertise,
            seeds: seeds.clone(),
            auth: match gossip_key {
                Some(key) => Some(crate::membership::gossip_auth::GossipAuth {
                    key,
                    drops: crate::membership::gossip_auth::DropCounters::from_vec(
                        &metrics.gossip_dropped,
                    )
                    .map_err(crate::metrics::MetricsError::from)?,
                }),
                None => None,
            },
        })
        .await?,
    );
    if let Some(uuid) = cluster.uuid() {
        gossip.publish_cluster_uuid(&uuid).await;
    }
    if fresh && !restored {
        tracing::info!(
            ?seeds,
            expect = config.bootstrap_expect,
            "empty data dir: listening to gossip for an existing cluster before anything else"
        );
        tasks.spawn(bootstrap_when_due(
            BootstrapPlan {
                raft: raft.clone(),
                gossip: gossip.clone(),
                peer: peer_client.clone(),
                node: node.clone(),
                expect: config.bootstrap_expect.map(|n| n as usize),
                has_seeds: !seeds.is_empty(),
                wait: config.bootstrap_wait,
                reused_id_check,
            },
            shutdown.clone(),
        ));
    }

    tasks.spawn(disk::run(disk.clone(), gossip.clone(), replica.clone(), shutdown.clone()));
    let last_decision = Arc::new(Mutex::new(None));
    let retired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let driver = Driver {
        replica: replica.clone(),
        gossip: gossip.clone(),
        peer_client: peer_client.clone(),
        dead_grace: Duration::from_secs(config.dead_node_grace_secs),
        reader: reader.clone(),
        retired: retired.clone(),
        last_decision: last_decision.clone(),
    };
    tasks.spawn(driver.run(shutdown.clone()));

    let maze_client_stats = ListenerStats::new("maze_client", config.max_maze_clients);
    let maze = match maze_listeners {
        None => None,
        Some(maze_listeners) => {
            let (source_addr, client_addr) =
                bound.maze.unwrap_or((config.maze_source_addr, config.maze_client_addr));
            let to_tokio =
                |listener: std::net::TcpListener, what: &'static str, addr: SocketAddr| {
                    tokio::net::TcpListener::from_std(listener).map_err(|source| NodeError::Bind {
                        what,
                        addr,
                        source,
                    })
                };
            let source_listener = to_tokio(maze_listeners.source, "maze source port", source_addr)?;
            let client_listener =
                to_tokio(maze_listeners.clients, "maze client port", client_addr)?;
            let source_counters = Arc::new(SourceCounters::default());
            let gap_skips = Arc::new(std::sync::atomic::AtomicU64::new(0));
            tasks.spawn(crate::maze_net::clients::run(
                client_listener,
                maze_registry.clone(),
                maze_client_stats.clone(),
                shutdown.clone(),
            ));
            tasks.spawn(crate::maze_net::source::run(
                source_listener,
                replica.clone(),
                maze_limits,
                Duration::from_millis(config.maze_coalesce_ms),
                source_counters.clone(),
                shutdown.clone(),
            ));
            tasks.spawn(crate::maze_net::gap::run(
                replica.clone(),
                reader.clone(),
                Duration::from_millis(config.maze_gap_timeout_ms),
                gap_skips.clone(),
                shutdown.clone(),
            ));
            tracing::info!(source = %source_addr, clients = %client_addr, "follower-maze listening");
            Some(MazeHandles {
                registry: maze_registry.clone(),
                source: source_counters,
                gap_skips,
            })
        }
    };

    let state = Arc::new(AppState {
        replica,
        reader,
        gossip: gossip.clone(),
        cluster_id: config.cluster_id.clone(),
        max_event_bytes: config.max_event_bytes,
        auth: Auth {
            api_token: token(config.api_token.as_deref(), config.api_token_file.as_deref())?,
            admin_token: token(config.admin_token.as_deref(), config.admin_token_file.as_deref())?,
        },
        health: Health {
            last_membership_decision: last_decision,
            retired,
            maze,
            listeners: vec![
                api_limits.stats.clone(),
                raft_limits.stats.clone(),
                maze_client_stats.clone(),
            ],
            disk,
        },
        metrics: metrics.clone(),
        watches: api::watch::WatchHub::new(config.max_watches, shutdown.clone()),
        waiters: api::work::Waiters::new(config.max_waiters, shutdown.clone()),
        max_batch_events: config.max_batch_events,
        backup: api::admin::Backups {
            dir: data_dir.join("tmp"),
            slot: Arc::new(tokio::sync::Semaphore::new(1)),
        },
    });
    tasks.spawn(count_leader_changes(
        raft.clone(),
        metrics.leader_changes.clone(),
        shutdown.clone(),
    ));
    {
        let tls_config = tls.api_server_config(config.api_client_ca.as_deref())?;
        // The peer address decides who may use the admin routes.
        tasks.spawn(listeners::serve_https(
            "api port",
            api_listener,
            tls_config,
            &api_limits,
            api::public_router(state),
            true,
            None,
            shutdown.clone(),
        )?);
    }
    tracing::info!(node_id, api = %node.api_url(), raft = %node.raft_url(), gossip = %gossip_advertise, gossip_signed = config.gossip_key.is_some(), "node started");
    Ok(NodeHandle { node_id, raft, shutdown, tasks, addrs: bound, gossip, db: db_handle })
}

/// What a fresh node needs to decide whether to bootstrap.
struct BootstrapPlan {
    raft: Raft,
    gossip: Arc<Gossip>,
    peer: PeerClient,
    node: Node,
    expect: Option<usize>,
    has_seeds: bool,
    wait: Duration,
    /// The node id came from `--node-id`: check gossip for an earlier
    /// incarnation before taking part (see `ClusterIdentity::hold`).
    reused_id_check: bool,
}

/// Listens to gossip until [`bootstrap::decide`] says what this fresh node
/// does: join the cluster it heard of (the leader adds it; it adopts the
/// cluster UUID with the first append), or bootstrap a new one. Ends as
/// soon as the node belongs to a cluster either way.
async fn bootstrap_when_due(plan: BootstrapPlan, shutdown: CancellationToken) {
    const LOG_EVERY: Duration = Duration::from_secs(10);
    let started = tokio::time::Instant::now();
    let mut logged = started;
    let me = plan.peer.identity().node_id();
    if plan.reused_id_check && !pinned_id_is_new(&plan, started, &shutdown).await {
        return;
    }
    loop {
        let joined = plan.peer.identity().uuid().is_some()
            || plan.raft.is_initialized().await.unwrap_or(false);
        if joined {
            return;
        }
        let live = plan
            .gossip
            .members()
            .await
            .into_iter()
            .filter(|m| m.live && m.node_id != me)
            .map(|m| (m.node_id, (m.node(), m.cluster_uuid.clone())))
            .collect();
        let situation = Situation {
            self_id: me,
            self_node: plan.node.clone(),
            expect: plan.expect,
            has_seeds: plan.has_seeds,
            listened_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            wait_ms: u64::try_from(plan.wait.as_millis()).unwrap_or(u64::MAX),
            live,
        };
        match bootstrap::decide(&situation) {
            Step::Bootstrap(voters) => match bootstrap_now(&plan, voters).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "bootstrap postponed"),
            },
            Step::Join => {
                tracing::info!(
                    "waiting for a leader to add this node (a cluster lives here, or seeds were \
                     given); this node will not bootstrap"
                );
                return;
            }
            Step::Overfull(fresh) => {
                if logged.elapsed() >= LOG_EVERY {
                    logged = tokio::time::Instant::now();
                    tracing::error!(
                        fresh,
                        expect = plan.expect,
                        "more fresh nodes than --bootstrap-expect see each other: nobody \
                         bootstraps (two clusters could form). Start exactly that many, or give \
                         every node the same, right --bootstrap-expect"
                    );
                }
            }
            Step::Wait => {
                if logged.elapsed() >= LOG_EVERY {
                    logged = tokio::time::Instant::now();
                    tracing::info!(
                        fresh_peers = situation.live.len(),
                        expect = plan.expect,
                        "still waiting: no cluster to join yet and not this node's turn to \
                         bootstrap one"
                    );
                }
            }
        }
        if !tick(&shutdown).await {
            return;
        }
    }
}

/// One listening round of a fresh node; `false` on shutdown.
async fn tick(shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(Duration::from_millis(100)) => true,
    }
}

/// A pinned id (`--node-id`) on an empty data dir: listens to gossip for
/// `--bootstrap-wait`, then releases the node (`true`), unless gossip knows
/// an earlier incarnation of the id, which keeps it out for good (`false`).
/// A crashed first start looks the same; the message says what to do.
async fn pinned_id_is_new(
    plan: &BootstrapPlan,
    started: tokio::time::Instant,
    shutdown: &CancellationToken,
) -> bool {
    let me = plan.peer.identity().node_id();
    while started.elapsed() < plan.wait {
        let earlier = plan.gossip.earlier_incarnations(me).await;
        if !earlier.is_empty() {
            let cluster = earlier.into_iter().flatten().next().unwrap_or_default();
            let why = format!(
                "node {me} was known to the cluster {cluster} before this data dir existed: its \
                 vote and log are lost, and taking part again could lose acknowledged writes. \
                 Remove it (DELETE /cluster/nodes/{me}) and start this data dir without --node-id \
                 or with a new one (it joins as a new node), or restore a backup"
            );
            tracing::error!("{why}");
            plan.peer.identity().hold(why);
            return false;
        }
        if !tick(shutdown).await {
            return false;
        }
    }
    tracing::info!(node_id = me, "gossip knows no earlier node {me}: taking part");
    plan.peer.identity().release();
    true
}

/// Makes the new cluster: checks every other voter over mTLS (gossip is a
/// hint), creates the cluster UUID, then initializes Raft.
async fn bootstrap_now(plan: &BootstrapPlan, voters: BTreeMap<NodeId, Node>) -> Result<(), String> {
    let me = plan.peer.identity().node_id();
    for (id, node) in voters.iter().filter(|(id, _)| **id != me) {
        plan.peer.confirm(*id, node).await?;
    }
    let uuid = plan.peer.identity().create().map_err(|e| e.to_string())?;
    tracing::info!(cluster_uuid = %uuid, voters = ?voters.keys().collect::<Vec<_>>(), "bootstrapping a new cluster");
    plan.gossip.publish_cluster_uuid(&uuid).await;
    plan.raft.initialize(voters).await.map_err(|e| e.to_string())
}

/// A data dir made by `raftq restore` holds data that no log entry carries.
/// Snapshot it and purge the log behind the snapshot, so that every node
/// that joins later starts from the snapshot (with the data) instead of
/// replaying the log from entry 0 onto an empty state.
async fn seal_restored_data(raft: &Raft, data_dir: &std::path::Path) -> Result<(), NodeError> {
    let marker = data_dir.join(crate::raft::backup::RESTORED_MARKER);
    if !marker.exists() {
        return Ok(());
    }
    let fail = |what: &str| NodeError::Raft(format!("sealing the restored data: {what}"));
    tracing::info!("restored data dir: taking the first snapshot before anyone may join");
    let applied = raft
        .wait(Some(Duration::from_secs(30)))
        .metrics(|m| m.current_leader.is_some() && m.last_applied.is_some(), "a leader")
        .await
        .map_err(|e| fail(&e.to_string()))?
        .last_applied
        .map_or(0, |l| l.index);
    raft.trigger().snapshot().await.map_err(|e| fail(&e.to_string()))?;
    raft.wait(Some(Duration::from_secs(60)))
        .metrics(|m| m.snapshot.is_some_and(|s| s.index >= applied), "the snapshot")
        .await
        .map_err(|e| fail(&e.to_string()))?;
    raft.trigger().purge_log(applied).await.map_err(|e| fail(&e.to_string()))?;
    raft.wait(Some(Duration::from_secs(30)))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= applied), "the purge")
        .await
        .map_err(|e| fail(&e.to_string()))?;
    std::fs::remove_file(&marker)
        .map_err(|source| NodeError::DataDir { path: marker.clone(), source })?;
    tracing::info!(snapshot_index = applied, "restored data sealed in a snapshot");
    Ok(())
}

/// Counts changes of the leader this node knows
/// (`raftq_raft_leader_changes_total`); the first leader it learns of counts.
async fn count_leader_changes(
    raft: Raft,
    counter: prometheus::IntCounter,
    shutdown: CancellationToken,
) {
    let mut metrics = raft.metrics();
    let mut leader = None;
    loop {
        let now = metrics.borrow_and_update().current_leader;
        if now != leader {
            counter.inc();
            leader = now;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}

impl NodeHandle {
    /// Where this node's listeners are bound (the ports it got for port 0).
    pub fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// Stops the node in the documented order (see the module docs): the
    /// token stops both HTTPS servers at once (the public API lets requests
    /// finish for 2 s, the Raft port for 0.5 s), the maze listeners and the
    /// background loops; then gossip, then Raft.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), drain).await.is_err() {
            self.tasks.abort_all();
        }
        // The servers and loops that shared the gossip handle are gone now.
        if let Ok(gossip) = Arc::try_unwrap(self.gossip) {
            gossip.shutdown().await;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        drop(self.raft);
        // Tasks outside the set (connections, the proposer) end on the
        // token a moment later. Once this is the last reference, dropping
        // it here closes RocksDB before shutdown returns (dropping it while
        // others hold it would leave the close to whichever ends last).
        let others_gone = async {
            while Arc::strong_count(&self.db) > 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), others_gone).await.is_err() {
            tracing::warn!("the database is still in use 5 s after shutdown; it closes later");
        }
        let db = self.db;
        // Closing flushes and joins RocksDB's threads: not on a runtime worker.
        let _ = tokio::task::spawn_blocking(move || drop(db)).await;
        tracing::info!(node_id = self.node_id, "node stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_address_in_seeds_is_ignored() {
        let own = ["127.0.0.1:1111".to_string()];
        assert!(other_seeds(&["127.0.0.1:1111".into()], &own).is_empty());
        assert_eq!(other_seeds(&[" 10.0.0.1:1111".into(), "".into()], &own), vec!["10.0.0.1:1111"]);
    }
}
