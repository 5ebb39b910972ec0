//! SPEC §1: a node that joins after the log was compacted (`--snapshot-logs
//! 50`, ~300 writes) is brought up to date (by snapshot, since the entries it
//! lacks were purged) and ends with the leader's exact queue.

use std::time::Duration;

use reqwest::StatusCode;

use crate::harness::{
    id_of, id_set, index_field, opt_index, post_many, status_brief, u64_field, wait_until, Cluster,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_catches_up_from_snapshot() {
    let mut c = Cluster::builder().nodes(3).args(["--snapshot-logs", "50"]).start().await;
    let l = c.wait_for_voters(3, Duration::from_secs(30)).await;

    // 300 events from 4 concurrent clients spread over the nodes.
    let per_task = post_many(&c.follow, &c.api_urls(), "s", 4, 75).await;
    let mut acked: Vec<(u64, String)> = per_task.into_iter().flatten().collect();
    acked.sort();
    assert_eq!(acked.len(), 300);
    let seqs: Vec<u64> = acked.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<u64>>(), "acked seqs must be 1..=300");
    // Dequeue a few so the snapshot must carry the front pointer too.
    for k in 1..=10u64 {
        let r = c.delete_event(l, true).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.seq(), Some(k), "{r:?}");
    }
    c.check_acked(l, &acked).await;
    let leader_status = c.status(l).await;
    let target_applied = index_field(&leader_status, "applied_index");
    // The leader compacted: its log no longer starts at index 1, so a new
    // node can only be brought up to date with a snapshot. (`purged_index`
    // is a /status field beyond SPEC §2: the last purged log index.)
    let purged = wait_until(
        Duration::from_secs(15),
        "the leader to purge its log behind a snapshot",
        async || {
            let ls = c.try_status(l).await?;
            match opt_index(&ls, "purged_index") {
                Some(p) if p > 0 => Ok(p),
                _ => Err(status_brief(&ls)),
            }
        },
    )
    .await;

    // A fourth node joins through gossip (it seeds node 1).
    let n4 = c.add_node(&[]).await;
    let joined = wait_until(
        Duration::from_secs(45),
        "the new node to become a member and catch up",
        async || {
            let li = c.try_leader(None).await?;
            let ls = c.try_status(li).await?;
            let ns = c.try_status(n4).await?;
            let id4 = id_of(&ns["node_id"]).ok_or("n4 has no node_id")?;
            let member =
                id_set(&ls, "voters").contains(&id4) || id_set(&ls, "learners").contains(&id4);
            let role = matches!(ns["role"].as_str(), Some("follower" | "learner"));
            let caught_up = index_field(&ns, "applied_index") >= target_applied;
            if member && role && caught_up {
                Ok(li)
            } else {
                Err(format!("n4: {} | leader: {}", status_brief(&ns), status_brief(&ls)))
            }
        },
    )
    .await;

    // It holds a snapshot covering the entries the leader had purged: the
    // only way to get them was InstallSnapshot.
    let ns = c.status(n4).await;
    assert!(
        opt_index(&ns, "snapshot_index").is_some_and(|s| s >= purged),
        "the new node has no snapshot covering the leader's purged index {purged}: {}",
        status_brief(&ns)
    );

    // Its own state (no read-index round trip) equals the leader's.
    let (mine, my_head) = c.all_events(n4, "&consistency=local").await;
    let (theirs, their_head) = c.all_events(joined, "&consistency=local").await;
    assert_eq!(my_head, their_head, "head on the new node vs the leader");
    assert_eq!(mine, theirs, "the new node's retained log differs from the leader's");
    let ns = c.status(n4).await;
    let ls = c.status(joined).await;
    for field in ["queue_len", "head_seq"] {
        assert_eq!(
            u64_field(&ns, field),
            u64_field(&ls, field),
            "{field}: n4 {} | leader {}",
            status_brief(&ns),
            status_brief(&ls)
        );
    }
    assert_eq!(u64_field(&ns, "queue_len"), 290);
    assert_eq!(u64_field(&ns, "head_seq"), 300);

    // It is a working member: a write through it, then linearizable reads of
    // the whole log on every node, including it.
    let r = c.post_follow(n4, "after-join").await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.seq(), Some(301), "{r:?}");
    acked.push((301, "after-join".into()));
    c.check_acked_everywhere(&acked).await;
    let r = c.get_event(n4).await;
    assert_eq!((r.status, r.seq()), (StatusCode::OK, Some(11)), "{r:?}");
}
