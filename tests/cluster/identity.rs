//! Cluster identity (issue 9, SPEC §6): a node whose volume was lost comes
//! back under a new id, joins the cluster that lives at its address instead
//! of bootstrapping a second one, takes the old voter's seat, and nothing
//! acknowledged is lost or forked; a node that kept its identity but lost
//! its database refuses to start.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;

use crate::harness::{id_set, post_event, wait_until, Cluster};

/// Writes `{prefix}-{k}` to `base` (following redirects) until `stop`;
/// returns every acknowledged `(seq, event)`. Transport errors and 503s
/// are expected while the target is down or not yet a member.
fn spawn_writer(
    client: reqwest::Client,
    base: String,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u64, String)>>>,
    failed: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut k = 0u64;
        while !stop.load(Ordering::Relaxed) {
            k += 1;
            let event = format!("{prefix}-{k}");
            match post_event(&client, &base, &event).await {
                Ok(r) if r.status == StatusCode::CREATED => {
                    acked.lock().unwrap().push((r.expect_seq(), event));
                }
                Ok(r) => {
                    assert!(
                        r.status.is_server_error() || r.status.is_redirection(),
                        "unexpected answer to a POST to {base}: {r:?}"
                    );
                    failed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// Node `wipe` is SIGKILLed, its data dir deleted, and it is started again
/// with the same flags while clients write to it and to another node.
async fn wiped_node_rejoins_without_losing_or_forking(wipe: usize) {
    let mut c = Cluster::start(3).await;
    c.wait_for_voters(3, Duration::from_secs(30)).await;
    let old_id = c.node_id(wipe).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let first = c.post_follow(0, "before").await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    acked.lock().unwrap().push((first.expect_seq(), "before".to_string()));

    c.nodes[wipe].kill_and_wipe();
    let other = (wipe + 1) % 3;
    let stop = Arc::new(AtomicBool::new(false));
    let failed_on_wiped = Arc::new(AtomicUsize::new(0));
    // Writing to the wiped node from before it starts: whatever it
    // acknowledges must survive.
    let to_wiped = spawn_writer(
        c.follow.clone(),
        c.nodes[wipe].api_url(),
        "via-wiped",
        stop.clone(),
        acked.clone(),
        failed_on_wiped.clone(),
    );
    let to_other = spawn_writer(
        c.follow.clone(),
        c.nodes[other].api_url(),
        "via-other",
        stop.clone(),
        acked.clone(),
        Arc::new(AtomicUsize::new(0)),
    );
    wait_until(
        Duration::from_secs(10),
        "a write refused by the wiped node while down",
        async || match failed_on_wiped.load(Ordering::Relaxed) {
            0 => Err("none yet".to_string()),
            _ => Ok(()),
        },
    )
    .await;
    c.nodes[wipe].spawn();
    c.wait_healthy(wipe).await;

    // Back to 3 voters, the old id gone and the new one among them.
    let new_id =
        wait_until(Duration::from_secs(40), "the new node to replace the old voter", async || {
            let me = c.try_status(wipe).await?;
            let new_id = crate::harness::id_of(&me["node_id"]).ok_or("no node_id")?;
            if new_id == old_id {
                return Err(format!("the wiped node came back as {old_id} again"));
            }
            for i in c.live() {
                let s = c.try_status(i).await?;
                let voters = id_set(&s, "voters");
                if voters.len() != 3 || voters.contains(&old_id) || !voters.contains(&new_id) {
                    return Err(format!(
                        "{}: voters {voters:?} (old {old_id}, new {new_id})",
                        c.nodes[i].name
                    ));
                }
            }
            Ok(new_id)
        })
        .await;
    // Keep writing a little through the new member, then stop.
    wait_until(
        Duration::from_secs(20),
        "a write acknowledged through the rejoined node",
        async || {
            let through_wiped =
                acked.lock().unwrap().iter().filter(|(_, e)| e.starts_with("via-wiped")).count();
            if through_wiped >= 3 {
                Ok(())
            } else {
                Err(format!("{through_wiped} so far"))
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    to_wiped.await.unwrap();
    to_other.await.unwrap();
    let mut acked = acked.lock().unwrap().clone();
    acked.sort();

    // Every acknowledged event is on every node, once, in order; the three
    // logs are identical (no fork).
    c.check_acked_everywhere(&acked).await;
    let listings: Vec<_> = futures_listings(&c).await;
    assert_eq!(listings[0], listings[1], "n1 and n2 differ");
    assert_eq!(listings[0], listings[2], "n1 and n3 differ");

    // The new member reports the same cluster UUID as the others.
    let uuids: std::collections::BTreeSet<String> = {
        let mut set = std::collections::BTreeSet::new();
        for i in c.live() {
            let s = c.status(i).await;
            set.insert(
                s["cluster_uuid"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no cluster_uuid: {s}"))
                    .to_string(),
            );
        }
        set
    };
    assert_eq!(uuids.len(), 1, "nodes disagree on the cluster uuid: {uuids:?}");
    assert_ne!(new_id, old_id);
}

async fn futures_listings(c: &Cluster) -> Vec<Vec<(u64, String)>> {
    let mut out = Vec::new();
    for i in 0..3 {
        out.push(c.all_events(i, "").await.0);
    }
    out
}

/// The seedless bootstrapper (node 1, as in the seed demo and the compose
/// file) loses its volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_bootstrap_node_joins_instead_of_forking() {
    wiped_node_rejoins_without_losing_or_forking(0).await;
}

/// A seeded node loses its volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_seeded_node_takes_its_old_seat() {
    wiped_node_rejoins_without_losing_or_forking(1).await;
}

/// A data dir that kept `node_id` but lost `db/` (or the reverse) is
/// refused with a message naming the fix; the cluster carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_database_refuses_to_start() {
    let mut c = Cluster::start(3).await;
    let l = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let followers = c.followers().await;
    let (amnesiac, nameless) = (followers[0], followers[1]);

    let status = c.nodes[amnesiac].stop();
    assert!(status.success(), "{status}");
    std::fs::remove_dir_all(c.nodes[amnesiac].data_dir.join("db")).unwrap();
    let log = exit_log(&mut c, amnesiac).await;
    assert!(
        log.contains("no Raft database") && log.contains("delete") && log.contains("raftq restore"),
        "the refusal must say what happened and name the fixes:\n{log}"
    );
    assert!(!c.nodes[amnesiac].data_dir.join("db").join("CURRENT").exists(), "it created a new db");

    let status = c.nodes[nameless].stop();
    assert!(status.success(), "{status}");
    std::fs::remove_file(c.nodes[nameless].data_dir.join("node_id")).unwrap();
    let log = exit_log(&mut c, nameless).await;
    assert!(log.contains("node_id is missing"), "{log}");

    // The leader alone has no quorum now: the refusals changed nothing in
    // the membership.
    let s = c.status(l).await;
    assert_eq!(id_set(&s, "voters").len(), 3, "{s}");
}

/// Spawns node `i`, which must exit non-zero within 20 s; returns its log.
async fn exit_log(c: &mut Cluster, i: usize) -> String {
    c.nodes[i].spawn();
    let status = wait_until(Duration::from_secs(20), "the node to refuse to start", async || {
        c.nodes[i].exited().ok_or_else(|| "still running".to_string())
    })
    .await;
    assert!(!status.success(), "{} started on a damaged data dir", c.nodes[i].name);
    std::fs::read_to_string(&c.nodes[i].log_path).unwrap()
}

/// `--bootstrap-expect 3`: two fresh nodes wait (no leader, no cluster
/// UUID, however long); the third one's arrival makes one cluster of three
/// voters from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_expect_waits_for_every_expected_node() {
    let mut c = Cluster::builder().nodes(2).args(["--bootstrap-expect", "3"]).start().await;
    // Well past --bootstrap-wait (2 s): the seedless node 1 must still wait.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for i in 0..2 {
        let s = c.status(i).await;
        assert!(s["leader_id"].is_null(), "{}: a cluster formed with 2 of 3: {s}", c.nodes[i].name);
        assert!(s["cluster_uuid"].is_null(), "{}: {s}", c.nodes[i].name);
    }
    c.add_node(&[]).await;
    c.wait_for_voters(3, Duration::from_secs(30)).await;
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..3 {
        ids.insert(c.node_id(i).await);
    }
    let s = c.status(0).await;
    assert_eq!(id_set(&s, "voters"), ids, "all three are voters: {s}");
    assert!(id_set(&s, "learners").is_empty(), "{s}");
    let r = c.post_follow(2, "formed").await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
}

/// An operator pinned a node id (`--node-id`) and the volume was lost: the
/// node comes back with the same id and no state. It must not take part
/// (it could vote twice in a term); gossip tells it the id was in use, and
/// it says what to do. A pinned id that the cluster never knew joins as
/// usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_node_id_on_a_lost_volume_stays_out() {
    let mut c = Cluster::start(3).await;
    c.wait_for_voters(3, Duration::from_secs(30)).await;
    let pinned = c.add_node(&["--node-id", "4242"]).await;
    c.wait_for_voters(4, Duration::from_secs(40)).await;
    let r = c.post_follow(0, "before-loss").await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");

    c.nodes[pinned].kill_and_wipe();
    c.nodes[pinned].spawn();
    c.wait_healthy(pinned).await;
    wait_until(Duration::from_secs(20), "the amnesiac to refuse to take part", async || {
        let log = std::fs::read_to_string(&c.nodes[pinned].log_path).unwrap_or_default();
        if log.contains("was known to the cluster") {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    // It never adopted the cluster, never applied anything, and the others
    // keep going with it counted as a (silent) voter.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = c.status(pinned).await;
    assert!(s["cluster_uuid"].is_null(), "the amnesiac joined: {s}");
    assert!(s["applied_index"].is_null() || s["applied_index"] == 0, "{s}");
    let mut l = None;
    for i in 0..3 {
        if c.status(i).await["role"] == "leader" {
            l = Some(i);
        }
    }
    let l = l.expect("one of the three others leads");
    let r = c.post_follow(l, "after-loss").await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let metrics = c.get(l, "/metrics").await.text();
    assert!(
        metrics.lines().any(|m| m.starts_with("raftq_peer_refusals_total{direction=\"sent\",reason=\"held\"}")),
        "the leader's requests to the amnesiac are refused and counted:\n{metrics}"
    );
}
