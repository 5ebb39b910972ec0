//! SPEC §2: concurrent writers on every node get gapless, unique seqs, and
//! concurrent poppers drain the queue exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::{http_client, post_many, send, status_brief, u64_field, Cluster};

const CLIENTS: usize = 16;
const PER_CLIENT: usize = 300;
const TOTAL: u64 = (CLIENTS * PER_CLIENT) as u64;
const POPPERS: usize = 8;
/// Bound on each phase, so a wedged cluster fails instead of hanging.
const PHASE_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_and_deletes() {
    let c = Cluster::start(3).await;
    c.wait_for_voters(3, Duration::from_secs(30)).await;
    // Follows redirects; a longer timeout than the default client, since a
    // debug build under this load may be slow but must not fail.
    let client = http_client(&c.ca_pem, true, Duration::from_secs(30));
    let bases = c.api_urls();

    // 16 clients x 300 POSTs spread over all nodes.
    let per_client =
        tokio::time::timeout(PHASE_TIMEOUT, post_many(&client, &bases, "c", CLIENTS, PER_CLIENT))
            .await
            .expect("POST phase timed out");
    for (t, acks) in per_client.iter().enumerate() {
        assert_eq!(acks.len(), PER_CLIENT);
        for w in acks.windows(2) {
            assert!(w[0].0 < w[1].0, "client {t}: sequential POSTs got non-increasing seqs {w:?}");
        }
    }
    let mut acked: Vec<(u64, String)> = per_client.into_iter().flatten().collect();
    acked.sort();
    let seqs: Vec<u64> = acked.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=TOTAL).collect::<Vec<u64>>(),
        "acknowledged seqs must be exactly 1..={TOTAL}, each once"
    );
    let by_seq: BTreeMap<u64, String> = acked.iter().cloned().collect();

    // The log agrees, on every node.
    c.check_acked_everywhere(&acked).await;
    for i in c.live() {
        let st = c.status(i).await;
        assert_eq!(u64_field(&st, "queue_len"), TOTAL, "{}", status_brief(&st));
        assert_eq!(u64_field(&st, "head_seq"), TOTAL, "{}", status_brief(&st));
    }

    // 8 concurrent DELETE loops, spread over the nodes, drain the queue.
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..POPPERS {
        let client = client.clone();
        let url = format!("{}/event", bases[p % bases.len()]);
        tasks.spawn(async move {
            let mut popped: Vec<(u64, String)> = Vec::new();
            loop {
                let r = send(&client, Method::DELETE, &url, None, &[]).await?;
                match r.status {
                    StatusCode::OK => {
                        let seq = r.seq().ok_or_else(|| format!("DELETE without Seq: {r:?}"))?;
                        popped.push((seq, r.text()));
                    }
                    StatusCode::NO_CONTENT if r.body.is_empty() => return Ok((p, popped)),
                    _ => return Err(format!("popper {p}: unexpected {r:?}")),
                }
            }
        });
    }
    let drained = tokio::time::timeout(PHASE_TIMEOUT, async {
        let mut all = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            all.push(
                joined.expect("popper panicked").unwrap_or_else(|e| panic!("DELETE failed: {e}")),
            );
        }
        all
    })
    .await
    .expect("DELETE phase timed out");

    let mut seen: BTreeSet<u64> = BTreeSet::new();
    for (p, popped) in &drained {
        for w in popped.windows(2) {
            assert!(w[0].0 < w[1].0, "popper {p}: FIFO violated, popped {w:?} in this order");
        }
        for (seq, event) in popped {
            assert!(seen.insert(*seq), "seq {seq} was returned by two DELETEs");
            assert_eq!(
                by_seq.get(seq),
                Some(event),
                "DELETE returned seq {seq} with the wrong event"
            );
        }
    }
    assert_eq!(
        seen.len() as u64,
        TOTAL,
        "every event must be popped once; missing: {:?}",
        (1..=TOTAL).filter(|s| !seen.contains(s)).take(20).collect::<Vec<_>>()
    );

    // Empty everywhere.
    for i in c.live() {
        let r = c.get_event(i).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
        assert!(r.body.is_empty(), "{r:?}");
        let st = c.status(i).await;
        assert_eq!(u64_field(&st, "queue_len"), 0, "{}", status_brief(&st));
    }
}
