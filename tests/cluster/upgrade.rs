//! Upgrade: a cluster whose data dirs were written by the openraft 0.9
//! build (main at 401a137, the last commit before the port to 0.10) starts
//! on the current build and carries on: same cluster, same members, every
//! acknowledged event, dequeue front, idempotency key, named sequence, work
//! queue policy, lease, cursor and maze stream (and the next stream), and a new node catches up
//! from the log the old build wrote.
//!
//! The fixture `tests/data/openraft09-cluster.tar.gz` holds the three data
//! dirs (RocksDB, `node_id`, the snapshot file); `tests/data/README.md` says
//! how it was made. Its membership names 127.0.0.1 and the ports below, so
//! the nodes must listen there again; they are below Linux's ephemeral range
//! (32768+), where the other tests' free ports come from.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::{
    form_event, index_field, str_field, u64_field, wait_until, Cluster, Ports, BIN, FORM,
};
use crate::maze::{connect_user, read_line};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/openraft09-cluster.tar.gz");
/// The cluster the fixture's nodes formed.
const CLUSTER_UUID: &str = "33fc4bd9-1b34-41a0-a5e7-464bb0a637d9";
/// The last log index the old build wrote (and applied on every node).
const LAST_INDEX: u64 = 81;

fn fixture_ports(n: u16) -> Ports {
    Ports {
        api: 38080 + n,
        raft: 31210 + n,
        gossip: 31310 + n,
        maze_source: 31410 + n,
        maze_client: 31510 + n,
    }
}

fn unpack_fixture(dir: &Path) {
    let out =
        Command::new("tar").arg("xzf").arg(FIXTURE).arg("-C").arg(dir).output().expect("run tar");
    assert!(out.status.success(), "tar xzf {FIXTURE}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dirs_written_by_the_openraft_0_9_build_open_and_carry_on() {
    let fixture = tempfile::tempdir().expect("temp dir");
    unpack_fixture(fixture.path());
    let ids: Vec<String> = (1..=3)
        .map(|n| {
            let path = fixture.path().join(format!("n{n}/node_id"));
            std::fs::read_to_string(&path).expect("fixture node_id").trim().to_string()
        })
        .collect();

    // `raftq dump` reads a stopped old node's state.
    let dump = Command::new(BIN)
        .args(["dump", "--data-dir"])
        .arg(fixture.path().join("n1"))
        .output()
        .expect("run raftq dump");
    assert!(dump.status.success(), "dump: {}", String::from_utf8_lossy(&dump.stderr));
    let dumped: serde_json::Value = serde_json::from_slice(&dump.stdout).expect("dump is JSON");
    assert_eq!(dumped["last_applied"]["index"], LAST_INDEX, "dump: {}", dumped["last_applied"]);

    let mut c = Cluster::builder()
        .ports((1..=3).map(fixture_ports).collect())
        .seed_data(fixture.path())
        .start()
        .await;
    let l = c.wait_for_voters(3, Duration::from_secs(60)).await;
    for (i, id) in ids.iter().enumerate() {
        let s = c.status(i).await;
        assert_eq!(str_field(&s, "cluster_uuid"), CLUSTER_UUID, "the same cluster: {s}");
        assert_eq!(&c.node_id(i).await, id, "{} keeps its id", c.nodes[i].name);
        assert!(index_field(&s, "applied_index") >= LAST_INDEX, "{s}");
        assert!(u64_field(&s, "term") >= 1, "{s}");
    }
    let f = (l + 1) % 3;

    // The default queue: e1..e60 retained, ten dequeued, on every node.
    let expected: Vec<(u64, String)> = (1..=60).map(|k| (k, format!("e{k}"))).collect();
    for i in 0..3 {
        let (events, head) = c.all_events(i, "").await;
        assert_eq!(head, 60, "{}", c.nodes[i].name);
        assert_eq!(events, expected, "{}", c.nodes[i].name);
    }
    assert_eq!(c.get_event(f).await.text(), "e11", "the front after ten dequeues");

    // The idempotency key answers with the seq it answered before.
    let once = c
        .request(
            f,
            Method::POST,
            "/queues/idem/event",
            Some((FORM, form_event("once"))),
            &[("Idempotency-Key", "k1")],
            true,
        )
        .await;
    assert_eq!(once.status, StatusCode::CREATED, "{once:?}");
    assert_eq!(once.seq(), Some(1), "a duplicate of the old build's write: {once:?}");
    let idem = c.get(l, "/queues/idem/events?after=0&limit=10").await.json();
    assert_eq!(idem["events"].as_array().map(Vec::len), Some(1), "still one event: {idem}");

    // The named sequence continues after the block the old build handed out.
    let r = c.request(f, Method::POST, "/sequences/ids?count=5", None, &[], true).await;
    assert_eq!((r.json()["first"].as_u64(), r.json()["last"].as_u64()), (Some(6), Some(10)));

    // Work queue: policy and cursor kept; the old build's lease of job1
    // (1 s, long expired) counted one delivery, so job1 comes back with 2.
    let policy = c.get(f, "/queues/jobs/policy").await.json();
    assert_eq!(policy["max_deliveries"], 5, "{policy}");
    assert_eq!(policy["dead_letter"], "jobs-dlq", "{policy}");
    assert_eq!(c.get(f, "/queues/jobs/cursors/billing").await.json()["seq"], 42);
    let lease = c.request(f, Method::POST, "/queues/jobs/lease?ttl=30s", None, &[], true).await;
    assert_eq!(lease.status, StatusCode::OK, "{lease:?}");
    assert_eq!(lease.text(), "job1", "{lease:?}");
    assert_eq!(lease.header("deliveries").as_deref(), Some("2"), "{lease:?}");

    // The maze stream: epoch 1 at seq 4, 60 and 61 follow 50.
    for i in 0..3 {
        let stream = &c.status(i).await["maze"]["stream"];
        let got = ["epoch", "next_seq", "follow_edges"].map(|k| stream[k].as_u64());
        assert_eq!(got, [Some(1), Some(4), Some(2)], "{stream}");
    }
    // A new source connection starts stream 2 (the epoch survived) and is
    // served: 60 follows 50 again, and hears 50's status update.
    let (user_addr, source_addr) = (c.nodes[f].maze_client_addr(), c.nodes[l].maze_source_addr());
    let got = tokio::task::spawn_blocking(move || {
        let mut user = connect_user(user_addr, "60\n");
        std::thread::sleep(Duration::from_millis(300));
        let mut source = TcpStream::connect(source_addr).expect("connect maze source");
        source.write_all(b"1|F|60|50\n2|S|50\n").unwrap();
        read_line(&mut user)
    })
    .await
    .unwrap();
    assert_eq!(got, "2|S|50\n", "50's status update reaches its follower 60");
    let stream = &c.status(f).await["maze"]["stream"];
    assert_eq!(stream["epoch"].as_u64(), Some(2), "{stream}");

    // New writes continue the old seqs and reach every node.
    let r = c.post_follow(f, "after-upgrade").await;
    assert_eq!(r.seq(), Some(61), "{r:?}");
    let mut all = expected;
    all.push((61, "after-upgrade".to_string()));
    c.check_acked_everywhere(&all).await;

    // A new node catches up from the log the old build wrote.
    let joiner = c.add_node(&[]).await;
    wait_until(Duration::from_secs(60), "the new node to hold the old log", async || {
        let (events, _) = c.all_events(joiner, "&consistency=local").await;
        if events == all {
            Ok(())
        } else {
            Err(format!("the joiner has {} events", events.len()))
        }
    })
    .await;
}
