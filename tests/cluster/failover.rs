//! SPEC §1–2: a SIGKILLed leader is replaced, the cluster keeps serving
//! through a follower, the dead node rejoins with its identity and catches
//! up, and a full SIGTERM stop/start of every node loses nothing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::harness::{
    id_of, id_set, index_field, status_brief, str_field, u64_field, wait_until, Cluster,
    HEARTBEAT_MS,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_rejoin_and_full_restart() {
    let mut c = Cluster::start(3).await;
    let l0 = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let old_leader_id = c.node_id(l0).await;
    let voters_before = id_set(&c.status(l0).await, "voters");
    let mut acked: Vec<(u64, String)> = Vec::new();

    // One event queued.
    let r = c.post(l0, "before-kill").await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let s1 = r.expect_seq();
    acked.push((s1, "before-kill".into()));

    // Kill -9 the leader; the survivors elect a new one. The dead node is
    // still a voter (its grace period has not passed).
    c.nodes[l0].kill9();
    let killed = Instant::now();
    let l1 = c.wait_for_voters(3, Duration::from_secs(20)).await;
    eprintln!("new leader {} after {:?}", c.nodes[l1].name, killed.elapsed());
    assert_ne!(l1, l0);
    assert_ne!(c.node_id(l1).await, old_leader_id);
    let f = c.live().into_iter().find(|&i| i != l1).expect("a surviving follower");

    // The queued event survived; reads work on the surviving follower.
    let r = c.get_event(f).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body, b"before-kill", "{r:?}");
    assert_eq!(r.seq(), Some(s1), "{r:?}");

    // Writes through the follower, following the redirect to the new leader.
    let r = c.post_follow(f, "after-failover").await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.seq(), Some(s1 + 1), "seqs stay gapless across failover: {r:?}");
    acked.push((s1 + 1, "after-failover".into()));
    let r = c.delete_event(f, true).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body, b"before-kill", "{r:?}");
    assert_eq!(r.seq(), Some(s1), "{r:?}");

    // Restart the killed node: same data dir, same ports, same identity; it
    // catches up with the leader.
    c.restart(l0).await;
    let st = c.status(l0).await;
    assert_eq!(
        id_of(&st["node_id"]).as_deref(),
        Some(old_leader_id.as_str()),
        "a restarted node keeps its node_id: {st}"
    );
    wait_until(
        Duration::from_secs(30),
        "the restarted node to catch up with the leader",
        async || {
            let l = c.try_leader(None).await?;
            let ls = c.try_status(l).await?;
            let rs = c.try_status(l0).await?;
            let caught_up = index_field(&rs, "applied_index") >= index_field(&ls, "applied_index");
            // try_leader already checked that it agrees on the leader.
            let role = matches!(rs["role"].as_str(), Some("follower" | "leader"));
            if caught_up && role {
                Ok(())
            } else {
                Err(format!("restarted: {} | leader: {}", status_brief(&rs), status_brief(&ls)))
            }
        },
    )
    .await;
    let l = c.wait_for_voters(3, Duration::from_secs(20)).await;
    assert_eq!(
        id_set(&c.status(l).await, "voters"),
        voters_before,
        "the rejoined node is the same voter, not a new member"
    );
    let (local, _) = c.all_events(l0, "&consistency=local").await;
    let (on_leader, _) = c.all_events(l, "&consistency=local").await;
    assert_eq!(local, on_leader, "the rejoined node's log matches the leader's");

    // One more write, through the rejoined node.
    let r = c.post_follow(l0, "after-rejoin").await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.seq(), Some(s1 + 2), "{r:?}");
    acked.push((s1 + 2, "after-rejoin".into()));
    c.check_acked_everywhere(&acked).await;

    // SIGTERM every node: each exits cleanly.
    for i in 0..3 {
        let status = c.nodes[i].stop();
        assert!(status.success(), "{} exited with {status} on SIGTERM", c.nodes[i].name);
    }

    // Start all three again: the same cluster comes back with everything.
    for i in 0..3 {
        c.nodes[i].spawn();
    }
    for i in 0..3 {
        c.wait_healthy(i).await;
    }
    let l = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let st = c.status(l).await;
    assert_eq!(id_set(&st, "voters"), voters_before, "{}", status_brief(&st));
    let ids: BTreeSet<String> = {
        let mut s = BTreeSet::new();
        for i in 0..3 {
            s.insert(id_of(&c.status(i).await["node_id"]).expect("node_id"));
        }
        s
    };
    assert_eq!(ids, voters_before, "every node kept its identity");
    c.check_acked_everywhere(&acked).await;
    for i in 0..3 {
        // `before-kill` was dequeued; `after-failover` is the front.
        let r = c.get_event(i).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.body, b"after-failover", "{r:?}");
        assert_eq!(r.seq(), Some(s1 + 1), "{r:?}");
        let st = c.status(i).await;
        assert_eq!(u64_field(&st, "queue_len"), 2, "{}", status_brief(&st));
        assert_eq!(u64_field(&st, "head_seq"), s1 + 2, "{}", status_brief(&st));
        assert!(["leader", "follower"].contains(&str_field(&st, "role")), "{}", status_brief(&st));
    }
}

/// A write that reaches a follower after its leader died, but before a new
/// one is elected, waits for the election and lands on the new leader (with
/// one 307, or none if that follower won): `curl -L` (which never retries)
/// gets its 201. Without the wait
/// the follower would redirect to the dead leader it still names, and curl
/// would fail on the refused connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_an_election_waits_for_the_new_leader() {
    // The test nodes' election timeout (800-1600 ms) leaves a wide window
    // between the leader's death and its replacement.
    let mut c = Cluster::start(3).await;
    let l0 = c.wait_for_voters(3, Duration::from_secs(60)).await;
    let old_leader = c.node_id(l0).await;
    let f = c.live().into_iter().find(|&i| i != l0).expect("a follower");
    let r = c.post(l0, "before").await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let before = r.expect_seq();

    c.nodes[l0].kill9();
    // Well past two heartbeats of silence, well within the election timeout.
    tokio::time::sleep(Duration::from_millis(4 * HEARTBEAT_MS)).await;
    let st = c.status(f).await;
    assert_eq!(
        id_of(&st["leader_id"]).as_deref(),
        Some(old_leader.as_str()),
        "the follower should still name the dead leader: {}",
        status_brief(&st)
    );

    let url = c.url(f, "/event");
    let sent = Instant::now();
    let out =
        crate::harness::curl(&["-L", "-D", "-", "-X", "POST", "-d", "event=during", &url]).await;
    let headers = out.stdout_text();
    eprintln!("a write during the election: {} after {:?}", out.http_code, sent.elapsed());
    assert_eq!(out.http_code, "201", "curl exit {:?}, headers:\n{headers}", out.exit);
    let seq: u64 = headers
        .lines()
        .filter_map(|l| l.strip_prefix("seq: ").or_else(|| l.strip_prefix("Seq: ")))
        .next_back()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Seq header:\n{headers}"));
    assert_eq!(seq, before + 1, "{headers}");
    let l1 = c.wait_for_voters(3, Duration::from_secs(20)).await;
    assert_ne!(c.node_id(l1).await, old_leader);
    // Taken where it was sent if that node won the election, else after
    // exactly one redirect, to the winner.
    let redirects =
        headers.lines().filter(|l| l.starts_with("HTTP/") && l.contains(" 307")).count();
    let expected = usize::from(l1 != f);
    assert_eq!(
        redirects, expected,
        "new leader {}, sent to {}:\n{headers}",
        c.nodes[l1].name, c.nodes[f].name
    );
    c.check_acked_everywhere(&[(before, "before".into()), (seq, "during".into())]).await;
}
