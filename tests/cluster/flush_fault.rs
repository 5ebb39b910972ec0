//! Issue 13: the leader replicates before its own log flush and counts
//! toward the quorum only after that flush. Shown with the log store's fault
//! hook (debug builds): `RAFTQ_FAULT_LOG_FLUSH_DELAY_MS=N` delays every log
//! fsync of that node, and its "flushed" callback, by N ms after the batch
//! is written; the node says so at startup.
//!
//! Both scenarios form a 3-node cluster, restart n1 with the hook and hand
//! it the leadership (a delayed node forms a cluster slowly: every entry of
//! a one-voter cluster waits for its flush), then:
//! - (a) the followers' flushes make the quorum: a few hundred writes are
//!   acknowledged sooner than the leader's flush could complete, the leader
//!   is SIGKILLed with that flush still pending, and the survivors hold every
//!   acknowledged write; the old leader, restarted, converges to their log.
//! - (b) one follower is stopped, so the quorum needs the leader's own
//!   flush: no write is acknowledged before the delay has passed (acks wait
//!   for durability; this is not a speed figure), and a write acknowledged
//!   right before a SIGKILL of the leader survives its restart with the
//!   stopped follower.
//!
//! Without the hook (a build without it) both tests fail on its startup
//! line: they cannot show anything without it, and must not pass.

use std::fs;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::harness::{
    http_client, index_field, send, status_brief, wait_until, Cluster, REQUEST_TIMEOUT,
};
use crate::load::{all_acked, check_acked_once, Writers};

/// The log store's fault hook (debug builds only).
const FLUSH_DELAY_ENV: &str = "RAFTQ_FAULT_LOG_FLUSH_DELAY_MS";
/// The delayed node: n1, the bootstrap node.
const DELAYED: usize = 0;

/// Form a 3-node cluster, restart n1 with its log flushes delayed by
/// `delay`, check that the hook is active, and make n1 the leader.
async fn delayed_leader(delay: Duration) -> Cluster {
    let mut c = Cluster::start(3).await;
    c.wait_for_voters(3, Duration::from_secs(30)).await;
    let ms = delay.as_millis().to_string();
    c.nodes[DELAYED].set_env(FLUSH_DELAY_ENV, Some(&ms));
    c.restart(DELAYED).await;
    assert_hook_active(&c, &ms);
    c.wait_for_voters(3, Duration::from_secs(30)).await;
    let id = c.node_id(DELAYED).await;
    // A transfer may wait for the target to catch up and then to win.
    let slow = http_client(&c.ca_pem, false, Duration::from_secs(20));
    // The target must have the whole log for a transfer; with no writes
    // running it soon does, delayed flushes and all.
    wait_until(Duration::from_secs(30), "n1 to make leader", async || {
        let l = caught_up(&c, DELAYED).await?;
        if l == DELAYED {
            return Ok(());
        }
        let url = c.url(l, &format!("/cluster/leader/transfer?to={id}"));
        match send(&slow, Method::POST, &url, None, &[]).await {
            Ok(r) => Err(format!("transfer to n1 answered {} {}", r.status, r.text())),
            Err(e) => Err(e),
        }
    })
    .await;
    eprintln!("flush fault: n1 leads with log flushes delayed by {ms} ms");
    c
}

/// One poll: the 3 voters agree on a leader and node `i` has applied as
/// much as it. `Ok(leader)`.
async fn caught_up(c: &Cluster, i: usize) -> Result<usize, String> {
    let l = c.try_leader(Some(3)).await?;
    let (ls, rs) = (c.try_status(l).await?, c.try_status(i).await?);
    if index_field(&rs, "applied_index") < index_field(&ls, "applied_index") {
        let name = &c.nodes[i].name;
        return Err(format!("{name}: {} | leader: {}", status_brief(&rs), status_brief(&ls)));
    }
    Ok(l)
}

/// Fail (not skip) unless n1 logged that the hook is on.
fn assert_hook_active(c: &Cluster, ms: &str) {
    let log = fs::read_to_string(&c.nodes[DELAYED].log_path).unwrap_or_default();
    let line = format!("fault injection: log flush delayed by {ms} ms");
    assert!(
        log.lines().any(|l| l.contains(&line)),
        "n1 was started with {FLUSH_DELAY_ENV}={ms} but its log has no `{line}` line: this build \
         has no log-flush fault hook (issue 13), so the leader-flush safety tests cannot run. \
         Last lines of n1's log:\n{}",
        c.nodes[DELAYED].log_tail(20)
    );
}

/// Wait until node `i` has applied as much as the leader and lists the same
/// log (local reads, so a lagging node shows what it has).
async fn wait_same_log(c: &Cluster, i: usize) {
    wait_until(Duration::from_secs(30), "the restarted node to converge", async || {
        caught_up(c, i).await
    })
    .await;
    let l = c.leader().await;
    let (mine, _) = c.all_events(i, "&consistency=local").await;
    let (theirs, _) = c.all_events(l, "&consistency=local").await;
    assert_eq!(mine, theirs, "{} forked from the leader's log", c.nodes[i].name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_before_its_flush_loses_no_acknowledged_write() {
    const DELAY: Duration = Duration::from_millis(3000);
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 40;
    let mut c = delayed_leader(DELAY).await;
    let client = http_client(&c.ca_pem, false, REQUEST_TIMEOUT);
    let t0 = Instant::now();
    let logs = Writers::start(&client, &c.api_urls(), "ff", WRITERS, Some(PER_WRITER)).join().await;
    let acked = all_acked(&logs);
    let wrote_in = t0.elapsed();
    // The last write's entry was appended after it was first sent, so its
    // flush on the leader cannot complete before `sent + DELAY`.
    let last_sent = logs
        .iter()
        .flat_map(|l| l.acked_at.iter().map(|(at, took)| *at - *took))
        .max()
        .expect("some write acknowledged");
    c.nodes[DELAYED].kill9();
    let killed = Instant::now();
    let latencies: Vec<Duration> =
        logs.iter().flat_map(|l| l.acked_at.iter().map(|(_, d)| *d)).collect();
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "flush fault (a): {} writes acknowledged in {wrote_in:?}, slowest {slowest:?}; \
         leader killed {:?} after the last one was sent",
        acked.len(),
        killed - last_sent
    );
    assert_eq!(acked.len(), WRITERS * PER_WRITER, "every write is acknowledged");
    assert!(
        killed < last_sent + DELAY,
        "the kill came {:?} after the last write was sent, when the leader's flush may have \
         completed: the scenario did not happen",
        killed - last_sent
    );
    // Acknowledged sooner than the leader's flush could complete: the quorum
    // was the two followers.
    assert!(
        slowest < DELAY,
        "a write took {slowest:?} (>= the leader's flush delay {DELAY:?}): acknowledgements \
         waited for the leader's own flush instead of the followers' quorum"
    );

    let l = c.leader().await;
    assert_ne!(l, DELAYED);
    eprintln!("flush fault (a): new leader {} after {:?}", c.nodes[l].name, killed.elapsed());
    check_acked_once(&c, &acked, "ff").await;

    // The old leader comes back (without the hook) and converges: no fork.
    c.nodes[DELAYED].set_env(FLUSH_DELAY_ENV, None);
    c.restart(DELAYED).await;
    wait_same_log(&c, DELAYED).await;
    check_acked_once(&c, &acked, "ff").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_follower_down_acks_wait_for_the_leaders_flush() {
    const DELAY: Duration = Duration::from_millis(2000);
    const WRITES: usize = 2;
    let mut c = delayed_leader(DELAY).await;
    let stopped = 1;
    let status = c.nodes[stopped].stop();
    assert!(status.success(), "n2 exited with {status} on SIGTERM");
    let mut acked = Vec::new();
    for k in 0..WRITES {
        let event = format!("ff-b-{k}");
        let t = Instant::now();
        let r = c.post(DELAYED, &event).await;
        let took = t.elapsed();
        assert_eq!(r.status, StatusCode::CREATED, "{event}: {r:?}");
        eprintln!("flush fault (b): {event} acknowledged after {took:?}");
        assert!(
            took >= DELAY,
            "{event} was acknowledged after {took:?}, before the leader's flush (delayed by \
             {DELAY:?}) could complete, with only one follower up: an ack did not wait for a \
             durable quorum"
        );
        acked.push((r.expect_seq(), event));
    }
    c.nodes[DELAYED].kill9();

    // Both come back; the acknowledged writes survived.
    c.nodes[DELAYED].set_env(FLUSH_DELAY_ENV, None);
    c.restart(DELAYED).await;
    c.restart(stopped).await;
    c.wait_for_voters(3, Duration::from_secs(30)).await;
    check_acked_once(&c, &acked, "ff-b-").await;
    for i in [DELAYED, stopped] {
        wait_same_log(&c, i).await;
    }
}
