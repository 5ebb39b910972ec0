//! SPEC §5 (issue 12, acceptance 1): the work-queue transcript through a
//! FOLLOWER with the real `curl -L`: lease, expiry and redelivery with a
//! delivery count, a stale-lease ack refused with 409, GET skipping a
//! leased event, long polls woken by a POST, dead-lettering after
//! `max_deliveries` (by the leader's sweeper), an NDJSON batch, a delayed
//! event, and cursors with a failed compare-and-set.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{curl, Cluster};
use crate::transcript::step;

/// The last response of `curl -i` (after any redirects): its lowercased
/// headers and its body.
struct Shown {
    code: String,
    headers: BTreeMap<String, String>,
    body: String,
}

async fn curl_i(args: &[&str]) -> Shown {
    let mut all = vec!["-i"];
    all.extend_from_slice(args);
    let out = curl(&all).await;
    assert_eq!(out.exit, Some(0), "curl {args:?}: exit {:?}", out.exit);
    let text = out.stdout_text();
    // Every response (a 307, then the answer) starts with a status line.
    let last = text.rfind("HTTP/").map_or(text.as_str(), |i| &text[i..]);
    let (head, body) = last.split_once("\r\n\r\n").unwrap_or((last, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Shown { code: out.http_code, headers, body: body.to_owned() }
}

impl Shown {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queue_transcript_through_a_follower_with_curl() {
    let c = Cluster::start(3).await;
    c.wait_for_voters(3, Duration::from_secs(30)).await;
    let f = c.nodes[c.followers().await[0]].api_url();
    let q = |rest: &str| format!("{f}/queues/jobs/{rest}");
    let ct_json = "content-type: application/json";

    // A policy: two deliveries, then the dead-letter queue.
    let policy = r#"{"dead_letter":"jobs-dlq","lease_ttl":"30s","max_deliveries":2}"#;
    step(&["-L", "-X", "PUT", "-H", ct_json, "-d", policy, &q("policy")], policy, "200").await;
    step(&[&q("policy")], policy, "200").await;
    step(&["-L", "-X", "POST", "-d", "event=job1", &q("event")], "", "201").await;
    step(&["-L", "-X", "POST", "-d", "event=job2", &q("event")], "", "201").await;

    // Lease job1 for 1 s: the body is the event, the headers say the rest.
    let first = curl_i(&["-L", "-X", "POST", &q("lease?ttl=1s")]).await;
    assert_eq!((first.code.as_str(), first.body.as_str()), ("200", "job1"));
    assert_eq!((first.header("seq"), first.header("deliveries")), ("1", "1"));
    let stale = first.header("lease").to_owned();
    assert!(!stale.is_empty(), "no Lease header: {:?}", first.headers);
    // GET skips the leased event.
    step(&[&q("event")], "job2", "200").await;

    // The lease expires; the next lease redelivers job1, delivery 2.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second = curl_i(&["-L", "-X", "POST", &q("lease?ttl=1s")]).await;
    assert_eq!((second.code.as_str(), second.body.as_str()), ("200", "job1"));
    assert_eq!((second.header("seq"), second.header("deliveries")), ("1", "2"));
    assert_ne!(second.header("lease"), stale);
    // The stale lease's ack is refused: 409 lease_lost.
    let out = curl(&["-L", "-X", "POST", &q(&format!("events/1/ack?lease={stale}"))]).await;
    assert_eq!(out.http_code, "409", "{}", out.stdout_text());
    assert_eq!(json_of(&out.stdout_text())["code"], "lease_lost");

    // job2: leased (JSON form) and acked.
    let out = curl(&["-L", "-X", "POST", "-H", "accept: application/json", &q("lease")]).await;
    let leased = json_of(&out.stdout_text());
    assert_eq!(leased["leased"][0]["event"], "job2", "{leased}");
    let token = leased["leased"][0]["lease"].as_str().expect("lease token").to_owned();
    step(&["-L", "-X", "POST", &q(&format!("events/2/ack?lease={token}"))], "", "204").await;

    // Nobody leases job1 again: after its second delivery expires, the
    // sweeper moves it to jobs-dlq, with where it came from.
    let dlq = format!("{f}/queues/jobs-dlq/event?wait=15s");
    let out = curl(&[&dlq]).await;
    assert_eq!(out.http_code, "200", "{}", out.stdout_text());
    assert_eq!(
        json_of(&out.stdout_text()),
        json!({"queue": "jobs", "seq": 1, "deliveries": 2, "event": "job1"})
    );
    step(&[&q("event")], "", "204").await;

    // Long polls woken by a POST: a lease (written: 307 to the leader, which
    // waits) and a GET on the follower (read: waits there).
    for (method, path) in
        [("POST", "queues/wake1/lease?wait=20s"), ("GET", "queues/wake2/event?wait=20s")]
    {
        let url = format!("{f}/{path}");
        let waiter = tokio::spawn(async move { curl(&["-L", "-X", method, &url]).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiter.is_finished(), "{method} {path} answered before the POST");
        let queue = path.split('/').nth(1).expect("queue");
        let started = Instant::now();
        let post = format!("{f}/queues/{queue}/event");
        step(&["-L", "-X", "POST", "-d", "event=wake", &post], "", "201").await;
        let out = waiter.await.expect("waiter");
        assert_eq!((out.http_code.as_str(), out.stdout_text().as_str()), ("200", "wake"));
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    // An NDJSON batch: all in one entry, seqs first..last.
    let batch = "{\"event\":\"b1\"}\n{\"event\":\"b2\"}\n{\"event\":\"b3\"}\n";
    let nd = "content-type: application/x-ndjson";
    let url = format!("{f}/queues/batch/events");
    step(
        &["-L", "-X", "POST", "-H", nd, "--data-binary", batch, &url],
        r#"{"first":1,"last":3}"#,
        "201",
    )
    .await;
    let out = curl(&[&format!("{url}?after=0")]).await;
    let page = json_of(&out.stdout_text());
    assert_eq!((page["head"].clone(), page["events"][2]["event"].clone()), (json!(3), json!("b3")));

    // A delayed event: its seq now, visible only after the delay.
    let url = format!("{f}/queues/delayed/event");
    step(&["-L", "-X", "POST", "-d", "event=later", &format!("{url}?delay=2s")], "", "201").await;
    step(&[&url], "", "204").await;
    step(&[&format!("{url}?wait=15s")], "later", "200").await;

    // Cursors: set, a failed compare-and-set (409 with the current seq),
    // then a good one.
    let cursor = q("cursors/g1");
    step(&[&cursor], r#"{"seq":0}"#, "200").await;
    step(&["-L", "-X", "PUT", "-H", ct_json, "-d", r#"{"seq":5}"#, &cursor], r#"{"seq":5}"#, "200")
        .await;
    let out =
        curl(&["-L", "-X", "PUT", "-H", ct_json, "-d", r#"{"seq":7}"#, &format!("{cursor}?if=3")])
            .await;
    assert_eq!(out.http_code, "409", "{}", out.stdout_text());
    let refused = json_of(&out.stdout_text());
    assert_eq!(
        (refused["code"].clone(), refused["current"].clone()),
        (json!("cursor_conflict"), json!(5))
    );
    step(&[&cursor], r#"{"seq":5}"#, "200").await;
    let cas = format!("{cursor}?if=5");
    step(&["-L", "-X", "PUT", "-H", ct_json, "-d", r#"{"seq":7}"#, &cas], r#"{"seq":7}"#, "200")
        .await;

    // Every node counts the same: expiry, redelivery and dead letters were
    // decided by the entries' times, and the totals are replicated.
    let want =
        json!({"dead_lettered": 1, "delayed": 0, "expired": 2, "leased": 0, "redelivered": 1});
    for node in &c.nodes {
        let url = format!("{}/status", node.api_url());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = json_of(&curl(&[&url]).await.stdout_text());
            if status["work"]["jobs"] == want {
                break;
            }
            assert!(Instant::now() < deadline, "{url}: {}", status["work"]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
