//! Work queues (SPEC §5, docs/api.md "Work queues") on one real node:
//! leases with expiry and redelivery, ack/nack/extend, batches, delays,
//! long polls, policies with dead letters, group cursors, the work state in
//! `/status` and `/metrics`; and every new 4xx/503 (status, code, nothing
//! changed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::node::{Resp, TestNode, JSON, TEXT};

const NDJSON: &str = "application/x-ndjson";

async fn post(node: &TestNode, path: &str, body: Option<(&str, &[u8])>) -> Resp {
    node.send(Method::POST, path, body.map(|(t, b)| (t, b.to_vec())), &[]).await
}

async fn put_json(node: &TestNode, path: &str, body: serde_json::Value) -> Resp {
    node.send(Method::PUT, path, Some((JSON, body.to_string().into_bytes())), &[]).await
}

/// A `max=1` lease's (seq, token, deliveries, body).
fn leased(r: &Resp) -> (u64, String, u64, String) {
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let token = r.header("lease").unwrap_or_else(|| panic!("{r:?}: no Lease header")).to_owned();
    let deliveries = r.header("deliveries").and_then(|d| d.parse().ok()).expect("Deliveries");
    (r.seq(), token, deliveries, String::from_utf8(r.body.clone()).expect("UTF-8 body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_redeliver_and_refuse_stale_tokens() {
    let node = TestNode::start(|_| {}).await;
    assert_eq!(node.post("a").await, 1);
    assert_eq!(node.post("b").await, 2);

    let first = post(&node, "/lease?ttl=1s", None).await;
    let (seq, token, deliveries, body) = leased(&first);
    assert_eq!((seq, deliveries, body.as_str()), (1, 1, "a"), "{first:?}");
    // GET and DELETE skip the leased event.
    let r = node.get("/event").await;
    assert_eq!((r.status, r.seq(), r.body.as_slice()), (StatusCode::OK, 2, &b"b"[..]), "{r:?}");
    // A token that is not the lease is refused; nothing changes.
    let r = post(&node, "/events/1/ack?lease=forged", None).await;
    r.assert_error(StatusCode::CONFLICT, "lease_lost");

    // Expiry, then redelivery with a delivery count.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = post(&node, "/lease?ttl=30s", None).await;
    let (seq, new_token, deliveries, _) = leased(&second);
    assert_eq!((seq, deliveries), (1, 2), "{second:?}");
    assert_ne!(new_token, token);
    let r = post(&node, &format!("/events/1/ack?lease={token}"), None).await;
    r.assert_error(StatusCode::CONFLICT, "lease_lost");
    let r = post(&node, &format!("/events/1/extend?lease={new_token}&ttl=1m"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let r = post(&node, &format!("/events/1/ack?lease={new_token}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    // An acked event's lease is gone for good.
    let r = post(&node, &format!("/events/1/ack?lease={new_token}"), None).await;
    r.assert_error(StatusCode::CONFLICT, "lease_lost");

    // JSON answer (max>1), then a nack gives it back at once.
    let r = post(&node, "/lease?max=5", None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let body = r.json();
    let leased_all = body["leased"].as_array().expect("leased array");
    assert_eq!(leased_all.len(), 1, "{body}");
    assert_eq!(
        (leased_all[0]["seq"].clone(), leased_all[0]["event"].clone()),
        (json!(2), json!("b"))
    );
    assert_eq!(leased_all[0]["deliveries"], 1, "{body}");
    let token = leased_all[0]["lease"].as_str().expect("token").to_owned();
    let r = post(&node, "/lease", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "nothing else is available: {r:?}");
    let r = post(&node, &format!("/events/2/nack?lease={token}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let r = node.send(Method::POST, "/lease", None, &[("accept", JSON)]).await;
    assert_eq!(r.json()["leased"][0]["deliveries"], 2, "{r:?}");

    let status = node.get("/status").await.json();
    assert_eq!(status["work"]["default"]["leased"], 1, "{status}");
    assert_eq!(status["work"]["default"]["redelivered"], 2, "{status}");
    let metrics = node.get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("raftq_queue_work{queue=\"default\",state=\"redelivered\"} 2"), "{text}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_delays_and_long_polls() {
    let node = Arc::new(TestNode::start(|_| {}).await);
    let nd = b"{\"event\":\"j1\"}\n{\"event\":\"j2\"}\n\n{\"event\":\"j3\"}\n";
    let r = post(&node, "/queues/jobs/events", Some((NDJSON, nd))).await;
    assert_eq!((r.status, r.json()), (StatusCode::CREATED, json!({"first": 1, "last": 3})));
    let array = br#"[{"event":"j4"},{"event":"j5"}]"#;
    let key = [("idempotency-key", "batch-1")];
    let send =
        || node.send(Method::POST, "/queues/jobs/events", Some((JSON, array.to_vec())), &key);
    let r = send().await;
    assert_eq!((r.status, r.json()), (StatusCode::CREATED, json!({"first": 4, "last": 5})));
    let r = send().await;
    assert_eq!(r.json(), json!({"first": 4, "last": 5}), "a retried batch enqueues nothing");
    assert_eq!(r.header("idempotent-replayed"), Some("true"), "{r:?}");
    let page = node.get("/queues/jobs/events?after=0").await.json();
    assert_eq!(page["head"], 5, "{page}");

    // A delayed event has its seq at once and shows up after the delay; a
    // long poll wakes for it at its due time (no apply happens then).
    let r = post(&node, "/queues/later/event?delay=1s", Some((TEXT, b"soon"))).await;
    assert_eq!((r.status, r.seq()), (StatusCode::CREATED, 1), "{r:?}");
    assert_eq!(node.get("/queues/later/event").await.status, StatusCode::NO_CONTENT);
    let started = Instant::now();
    let r = node.get("/queues/later/event?wait=10s").await;
    assert_eq!((r.status, r.body.as_slice()), (StatusCode::OK, &b"soon"[..]), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // Long polls woken by a POST: GET, DELETE and lease.
    for (method, path) in [
        (Method::GET, "/queues/lp1/event?wait=20s"),
        (Method::DELETE, "/queues/lp2/event?wait=20s"),
        (Method::POST, "/queues/lp3/lease?wait=20s&ttl=30s"),
    ] {
        let queue = path.split('/').nth(2).expect("queue").to_owned();
        let waiter = {
            let node = node.clone();
            let (method, path) = (method.clone(), path.to_owned());
            tokio::spawn(async move { node.send(method, &path, None, &[]).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "{method} {path} answered before the POST");
        let started = Instant::now();
        let r = post(&node, &format!("/queues/{queue}/event"), Some((TEXT, b"wake"))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        let r = waiter.await.expect("waiter");
        assert_eq!((r.status, r.body.as_slice()), (StatusCode::OK, &b"wake"[..]), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{method}: {:?}", started.elapsed());
    }
    // A long poll on nothing answers 204 after its wait.
    let started = Instant::now();
    let r = node.get("/queues/none/event?wait=300ms").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    match Arc::try_unwrap(node) {
        Ok(node) => node.shutdown().await,
        Err(_) => panic!("a waiter still holds the node"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_dead_letter_and_cursors_compare_and_set() {
    let node = TestNode::start(|_| {}).await;
    let policy = json!({"max_deliveries": 1, "dead_letter": "p-dlq", "lease_ttl": "1s"});
    let r = put_json(&node, "/queues/p/policy", policy.clone()).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, policy.clone()), "{r:?}");
    let r = node.get("/queues/p/policy").await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, policy), "{r:?}");
    assert_eq!(node.get("/queues/other/policy").await.json(), json!({}));

    let r = post(&node, "/queues/p/event", Some((TEXT, b"poison"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let (seq, _, deliveries, _) = leased(&post(&node, "/queues/p/lease", None).await);
    assert_eq!((seq, deliveries), (1, 1));
    // The lease (the policy's 1 s) expires at max_deliveries: the sweeper
    // moves it to the dead-letter queue although nobody asks.
    let r = node.get("/queues/p-dlq/event?wait=10s").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let dead: serde_json::Value = serde_json::from_slice(&r.body).expect("dead letter is JSON");
    assert_eq!(dead, json!({"queue": "p", "seq": 1, "deliveries": 1, "event": "poison"}), "{r:?}");
    assert_eq!(node.get("/queues/p/event").await.status, StatusCode::NO_CONTENT);
    let status = node.get("/status").await.json();
    assert_eq!(status["work"]["p"]["dead_lettered"], 1, "{status}");

    let cursor = "/queues/p/cursors/g1";
    assert_eq!(node.get(cursor).await.json(), json!({"seq": 0}));
    let r = put_json(&node, cursor, json!({"seq": 5})).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({"seq": 5})), "{r:?}");
    let r = put_json(&node, &format!("{cursor}?if=3"), json!({"seq": 7})).await;
    assert_eq!(r.assert_error(StatusCode::CONFLICT, "cursor_conflict")["current"], 5, "{r:?}");
    assert_eq!(node.get(cursor).await.json(), json!({"seq": 5}), "a failed CAS changes nothing");
    let r = put_json(&node, &format!("{cursor}?if=5"), json!({"seq": 7})).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({"seq": 7})), "{r:?}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_work_requests_are_refused_without_side_effects() {
    let node = Arc::new(
        TestNode::start(|c| {
            c.max_batch_events = 3;
            c.max_waiters = 1;
        })
        .await,
    );
    assert_eq!(node.post("keep").await, 1);
    let r = put_json(&node, "/queues/default/cursors/g", json!({"seq": 2})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let before = node.queue_state("/events").await;
    let bad = StatusCode::BAD_REQUEST;
    let nd = |s: &str| Some((NDJSON, s.as_bytes().to_vec()));
    let json_body = |v: &str| Some((JSON, v.as_bytes().to_vec()));
    #[rustfmt::skip]
    let cases: Vec<(&str, Method, &str, Option<(&str, Vec<u8>)>, StatusCode, &str)> = vec![
        ("lease max 0", Method::POST, "/lease?max=0", None, bad, "invalid_count"),
        ("lease max beyond 100", Method::POST, "/lease?max=101", None, bad, "invalid_count"),
        ("lease ttl without unit", Method::POST, "/lease?ttl=30", None, bad, "invalid_parameter"),
        ("lease ttl 0", Method::POST, "/lease?ttl=0s", None, bad, "invalid_parameter"),
        ("wait beyond 60 s", Method::POST, "/lease?wait=61s", None, bad, "invalid_parameter"),
        ("GET wait beyond 60 s", Method::GET, "/event?wait=2m", None, bad, "invalid_parameter"),
        ("DELETE wait not a duration", Method::DELETE, "/event?wait=x", None, bad, "invalid_parameter"),
        ("ack without lease", Method::POST, "/events/1/ack", None, bad, "invalid_parameter"),
        ("ack of an event never leased", Method::POST, "/events/1/ack?lease=x", None, StatusCode::CONFLICT, "lease_lost"),
        ("ack of a seq not written", Method::POST, "/events/99/ack?lease=x", None, StatusCode::CONFLICT, "lease_lost"),
        ("ack of a seq that is not a number", Method::POST, "/events/x/ack?lease=x", None, StatusCode::NOT_FOUND, "not_found"),
        ("nack delay not a duration", Method::POST, "/events/1/nack?lease=x&delay=soon", None, bad, "invalid_parameter"),
        ("extend with ttl 0", Method::POST, "/events/1/extend?lease=x&ttl=0ms", None, bad, "invalid_parameter"),
        ("delay not a duration", Method::POST, "/event?delay=10", Some((TEXT, b"x".to_vec())), bad, "invalid_parameter"),
        ("batch with a bad line", Method::POST, "/events", nd("{\"event\":\"a\"}\nnot json\n"), bad, "invalid_batch"),
        ("batch with an empty event", Method::POST, "/events", nd("{\"event\":\"\"}"), bad, "invalid_batch"),
        ("empty batch", Method::POST, "/events", nd("\n"), bad, "invalid_batch"),
        ("batch over --max-batch-events", Method::POST, "/events", json_body(r#"[{"event":"1"},{"event":"2"},{"event":"3"},{"event":"4"}]"#), bad, "invalid_batch"),
        ("batch that is not an array", Method::POST, "/events", json_body(r#"{"event":"1"}"#), bad, "invalid_batch"),
        ("batch as text", Method::POST, "/events", Some((TEXT, b"x".to_vec())), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ("policy that is not JSON", Method::PUT, "/queues/default/policy", json_body("{"), bad, "invalid_json"),
        ("policy with an unknown field", Method::PUT, "/queues/default/policy", json_body(r#"{"retries":3}"#), bad, "invalid_json"),
        ("policy max_deliveries 0", Method::PUT, "/queues/default/policy", json_body(r#"{"max_deliveries":0,"dead_letter":"d"}"#), bad, "invalid_policy"),
        ("policy without a dead-letter queue", Method::PUT, "/queues/default/policy", json_body(r#"{"max_deliveries":3}"#), bad, "invalid_policy"),
        ("policy dead-lettering into itself", Method::PUT, "/queues/default/policy", json_body(r#"{"max_deliveries":3,"dead_letter":"default"}"#), bad, "invalid_policy"),
        ("policy lease_ttl not a duration", Method::PUT, "/queues/default/policy", json_body(r#"{"lease_ttl":"long"}"#), bad, "invalid_policy"),
        ("policy dead_letter not a name", Method::PUT, "/queues/default/policy", json_body(r#"{"max_deliveries":1,"dead_letter":"a b"}"#), bad, "invalid_name"),
        ("cursor that is not JSON", Method::PUT, "/queues/default/cursors/g", json_body("seq=1"), bad, "invalid_json"),
        ("cursor if not a number", Method::PUT, "/queues/default/cursors/g?if=x", json_body(r#"{"seq":1}"#), bad, "invalid_parameter"),
        ("cursor compare-and-set mismatch", Method::PUT, "/queues/default/cursors/g?if=1", json_body(r#"{"seq":3}"#), StatusCode::CONFLICT, "cursor_conflict"),
        ("group not a name", Method::GET, "/queues/default/cursors/a*b", None, bad, "invalid_name"),
        ("cursor with a wrong method", Method::POST, "/queues/default/cursors/g", None, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ];
    for (what, method, path, body, status, code) in cases {
        let r = node.send(method, path, body, &[]).await;
        assert_eq!(r.status, status, "{what}: {r:?}");
        r.assert_error(status, code);
    }
    assert_eq!(node.get("/queues/default/cursors/g").await.json(), json!({"seq": 2}));
    assert_eq!(node.get("/queues/default/policy").await.json(), json!({}));
    assert_eq!(node.queue_state("/events").await, before);

    // --max-waiters 1: a second long poll is refused while one waits.
    let waiter = {
        let node = node.clone();
        tokio::spawn(async move { node.get("/queues/idle/event?wait=20s").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(node.get("/status").await.json()["waiters"], 1);
    let r = node.get("/queues/idle2/event?wait=1s").await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "too_many_waiters");
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    // A request that finds something at once needs no slot.
    assert_eq!(node.get("/event?wait=1s").await.status, StatusCode::OK);
    let r = post(&node, "/queues/idle/event", Some((TEXT, b"go"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(waiter.await.expect("waiter").status, StatusCode::OK);
    match Arc::try_unwrap(node) {
        Ok(node) => node.shutdown().await,
        Err(_) => panic!("a waiter still holds the node"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_long_polls_each_get_one_event() {
    let node = Arc::new(TestNode::start(|_| {}).await);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move {
                node.send(Method::POST, "/queues/pool/lease?wait=20s&ttl=1m", None, &[]).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    // Two events at a time: two workers win, two lose the race and must
    // look again (not wait for the next apply, which here comes only with
    // the second batch).
    for batch in [
        &b"[{\"event\":\"w1\"},{\"event\":\"w2\"}]"[..],
        b"[{\"event\":\"w3\"},{\"event\":\"w4\"}]",
    ] {
        let r = post(&node, "/queues/pool/events", Some((JSON, batch))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut seqs = Vec::new();
    for worker in workers {
        let r = worker.await.expect("worker");
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        seqs.push(r.seq());
    }
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3, 4], "each event leased once");
    match Arc::try_unwrap(node) {
        Ok(node) => node.shutdown().await,
        Err(_) => panic!("a worker still holds the node"),
    }
}
