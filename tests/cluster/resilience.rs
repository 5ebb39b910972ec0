//! Fault scenarios beyond the seed demo: an idempotent retry across a leader
//! change, a stalled (SIGSTOPped) follower, and autopilot removal of dead
//! voters with its floor of three.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::{form_event, id_set, index_field, wait_until, Cluster, FORM};

/// A client retries a POST whose response it never saw, after the leader
/// died: the retry with the same Idempotency-Key gets the original seq and
/// enqueues nothing (the key window is replicated state).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retry_after_leader_change() {
    let mut c = Cluster::start(3).await;
    let l = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let key = [("idempotency-key", "order-42")];
    let body = || Some((FORM, form_event("charge order 42")));
    let first = c.request(l, Method::POST, "/event", body(), &key, false).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let seq = first.expect_seq();
    assert!(first.header("idempotent-replayed").is_none());
    let other = c.post(l, "unrelated").await;
    assert_eq!(other.expect_seq(), seq + 1);

    c.nodes[l].kill9();
    let survivor = c.followers().await[0];
    let retry = c.request(survivor, Method::POST, "/event", body(), &key, true).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert_eq!(retry.expect_seq(), seq, "a retry must return the original seq");
    assert_eq!(retry.header("idempotent-replayed").as_deref(), Some("true"));

    // Nothing new was enqueued; a new key still enqueues.
    let status = c.status(survivor).await;
    assert_eq!(index_field(&status, "head_seq"), seq + 1, "the retry enqueued a duplicate");
    let fresh = c
        .request(survivor, Method::POST, "/event", body(), &[("idempotency-key", "order-43")], true)
        .await;
    assert_eq!(fresh.expect_seq(), seq + 2);
}

/// A follower that stops answering (SIGSTOP: its sockets stay open) must not
/// hold up acknowledgements, which need only a quorum; once resumed it
/// catches up with everything it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_follower_does_not_block_writes() {
    let mut c = Cluster::start(3).await;
    let l = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let stalled = c.followers().await[0];
    c.nodes[stalled].pause();
    for i in 0..30 {
        let r = c.post(l, &format!("while-stalled-{i}")).await;
        assert_eq!(r.status, StatusCode::CREATED, "write {i} with a stalled follower: {r:?}");
        assert_eq!(r.expect_seq(), i + 1);
    }
    c.nodes[stalled].resume();
    let target = index_field(&c.status(l).await, "applied_index");
    wait_until(Duration::from_secs(20), "the resumed follower to catch up", async || {
        let s = c.try_status(stalled).await?;
        if index_field(&s, "applied_index") >= target && index_field(&s, "head_seq") == 30 {
            Ok(())
        } else {
            Err(format!("applied {} of {target}", index_field(&s, "applied_index")))
        }
    })
    .await;
}

/// Autopilot: with a short grace period, a dead voter of a 4-voter cluster
/// is removed; a second dead voter is not, because that would leave fewer
/// than three voters. The cluster keeps taking writes throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_voters_are_removed_but_never_below_three() {
    let mut c = Cluster::builder().nodes(4).args(["--dead-node-grace-secs", "2"]).start().await;
    let l = c.wait_for_voters(4, Duration::from_secs(40)).await;
    let followers = c.followers().await;
    let (first, second) = (followers[0], followers[1]);
    let first_id = c.node_id(first).await;

    c.nodes[first].kill9();
    wait_until(Duration::from_secs(40), "the dead voter to be removed", async || {
        let li = c.try_leader(None).await?;
        let s = c.try_status(li).await?;
        let voters = id_set(&s, "voters");
        if voters.len() == 3 && !voters.contains(&first_id) {
            Ok(())
        } else {
            Err(format!("voters {voters:?}"))
        }
    })
    .await;

    c.nodes[second].kill9();
    // Well past the grace period, the floor holds: still three voters, and
    // two of them (a quorum) still acknowledge writes.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let li = c.leader().await;
    let voters = id_set(&c.status(li).await, "voters");
    assert_eq!(voters.len(), 3, "voters fell below three: {voters:?}");
    let r = c.post_follow(li, "after-two-deaths").await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let _ = l;
}
