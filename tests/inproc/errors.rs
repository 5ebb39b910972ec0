//! The documented errors of docs/api.md (the admin routes' 403 and 429 are
//! in `admin.rs`; `documented.rs` checks that none is left out): the
//! status, the JSON `{"error","code"}` body, and that nothing changed.
//! Moved here from the cluster suite's `bad_input.rs`, which keeps what
//! needs a process (the Raft port's mTLS, the node surviving).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::node::{free_udp_port, TestNode, FORM, JSON, TEXT};

/// One request that must be refused.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    body: Option<(&'static str, Vec<u8>)>,
    headers: Vec<(&'static str, String)>,
    status: StatusCode,
    code: &'static str,
}

fn case(
    what: &'static str,
    method: Method,
    path: impl Into<String>,
    status: StatusCode,
    code: &'static str,
) -> Case {
    Case { what, method, path: path.into(), body: None, headers: Vec::new(), status, code }
}

impl Case {
    fn body(mut self, content_type: &'static str, bytes: &[u8]) -> Self {
        self.body = Some((content_type, bytes.to_vec()));
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

async fn refuse_all(node: &TestNode, cases: Vec<Case>) {
    for c in cases {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = node.send(c.method, &c.path, c.body, &headers).await;
        assert_eq!(r.status, c.status, "{}: {r:?}", c.what);
        r.assert_error(c.status, c.code);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_rejected_without_side_effects() {
    let node = TestNode::start(|_| {}).await;
    // Some state that a bad request must not touch.
    assert_eq!(node.post("keep").await, 1);
    let r = node.send(Method::POST, "/sequences/ids", None, &[]).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({"first": 1, "last": 1})), "{r:?}");
    let before = node.queue_state("/events").await;
    assert_eq!(before["queue_len"], 1, "{before}");

    let bad = StatusCode::BAD_REQUEST;
    let other_id = node.node_id.wrapping_add(1);
    #[rustfmt::skip]
    let cases = vec![
        // The matrix the cluster suite had (status only), now with codes.
        case("form without an event field", Method::POST, "/event", bad, "missing_event").body(FORM, b"foo=bar"),
        case("form with an empty event", Method::POST, "/event", bad, "empty_event").body(FORM, b"event="),
        case("empty text/plain body", Method::POST, "/event", bad, "empty_event").body(TEXT, b""),
        case("JSON without an event field", Method::POST, "/event", bad, "invalid_json").body(JSON, b"{}"),
        case("JSON with an empty event", Method::POST, "/event", bad, "empty_event").body(JSON, br#"{"event": ""}"#),
        case("JSON event that is not a string", Method::POST, "/event", bad, "invalid_json").body(JSON, br#"{"event": 5}"#),
        case("broken JSON", Method::POST, "/event", bad, "invalid_json").body(JSON, br#"{"event": "x""#),
        case("invalid UTF-8 text/plain", Method::POST, "/event", bad, "invalid_utf8").body(TEXT, b"\xff\xfeA"),
        case("invalid UTF-8 after form decoding", Method::POST, "/event", bad, "invalid_utf8").body(FORM, b"event=%FF%FEA"),
        case("unsupported content type", Method::POST, "/event", StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").body("image/png", b"\x89PNG"),
        case("wrong method", Method::PUT, "/event", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").body(FORM, b"event=put"),
        case("unknown path", Method::GET, "/no/such/path", StatusCode::NOT_FOUND, "not_found"),
        // The rest of the documented 400 codes.
        case("two event fields", Method::POST, "/event", bad, "duplicate_event").body(FORM, b"event=a&event=b"),
        case("after that is not a seq", Method::GET, "/events?after=x", bad, "invalid_parameter"),
        case("limit that is not a number", Method::GET, "/events?limit=-1", bad, "invalid_parameter"),
        case("unknown consistency", Method::GET, "/event?consistency=eventual", bad, "invalid_parameter"),
        case("seq that is not a seq", Method::DELETE, "/event?seq=first", bad, "invalid_parameter"),
        case("min_seq that is not a seq", Method::GET, "/event?min_seq=soon", bad, "invalid_parameter"),
        case("watch after that is not a seq", Method::GET, "/events/watch?after=x", bad, "invalid_parameter"),
        case("Last-Event-ID that is not a seq", Method::GET, "/events/watch", bad, "invalid_parameter")
            .header("last-event-id", "x"),
        case("queue name with a star", Method::POST, "/queues/a*b/event", bad, "invalid_name").body(TEXT, b"x"),
        case("queue name too long", Method::GET, format!("/queues/{}/event", "q".repeat(129)), bad, "invalid_name"),
        case("sequence name with a space", Method::POST, "/sequences/a%20b", bad, "invalid_name"),
        case("queue name that is not UTF-8", Method::GET, "/queues/%FF/event", bad, "invalid_path"),
        case("sequence count 0", Method::POST, "/sequences/ids?count=0", bad, "invalid_count"),
        case("sequence count not a number", Method::POST, "/sequences/ids?count=many", bad, "invalid_parameter"),
        case("empty Idempotency-Key", Method::POST, "/event", bad, "invalid_idempotency_key").body(TEXT, b"x")
            .header("idempotency-key", ""),
        case("Idempotency-Key too long", Method::POST, "/event", bad, "invalid_idempotency_key").body(TEXT, b"x")
            .header("idempotency-key", "k".repeat(257)),
        // 404 and 405 beyond the matrix.
        case("event seq not written yet", Method::GET, "/events/99", StatusCode::NOT_FOUND, "not_found"),
        case("event seq that is not a number", Method::GET, "/events/abc", StatusCode::NOT_FOUND, "not_found"),
        case("DELETE /events", Method::DELETE, "/events", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        case("GET /sequences/x", Method::GET, "/sequences/ids", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        // 409: a conditional delete of something that is not the front.
        case("DELETE ?seq= of another seq", Method::DELETE, "/event?seq=99", StatusCode::CONFLICT, "seq_mismatch"),
        // Admin routes (this client is on loopback, so they answer).
        case("node id that is not a u64", Method::DELETE, "/cluster/nodes/abc", bad, "invalid_node_id"),
        case("node nobody knows", Method::DELETE, format!("/cluster/nodes/{other_id}"), StatusCode::NOT_FOUND, "unknown_node"),
        case("removing the only voter", Method::DELETE, format!("/cluster/nodes/{}", node.node_id), StatusCode::CONFLICT, "too_few_voters"),
        case("transfer with one voter", Method::POST, "/cluster/leader/transfer", StatusCode::CONFLICT, "no_target"),
        case("transfer to a non-voter", Method::POST, format!("/cluster/leader/transfer?to={other_id}"), StatusCode::CONFLICT, "not_a_voter"),
        case("transfer to a bad id", Method::POST, "/cluster/leader/transfer?to=me", bad, "invalid_parameter"),
    ];
    refuse_all(&node, cases).await;

    // The 409 says where the front is; the DELETE retried correctly works
    // only later (nothing was removed by the refusal).
    let r = node.send(Method::DELETE, "/event?seq=99", None, &[]).await;
    assert_eq!(r.assert_error(StatusCode::CONFLICT, "seq_mismatch")["front"], 1, "{r:?}");
    // 401 carries a challenge only with a token; here none is needed.
    assert!(r.header("www-authenticate").is_none(), "{r:?}");

    // 413: a 2 MiB body (limit 1 MiB), sent with the real curl, which reads
    // an early error response while still uploading.
    let big = node.dir().join("big.txt");
    std::fs::write(&big, vec![b'a'; 2 * 1024 * 1024]).expect("write big body");
    let (code, body) = curl_post_file(&node, "/event", &big).await;
    assert_eq!(code, "413", "2 MiB body: {body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("413 body is JSON");
    assert_eq!(body["code"], "too_large", "{body}");

    // Nothing changed: the queue, and the sequence (its next id is 2).
    assert_eq!(node.queue_state("/events").await, before);
    let r = node.send(Method::POST, "/sequences/ids", None, &[]).await;
    assert_eq!(r.json(), json!({"first": 2, "last": 2}), "{r:?}");
    let r = node.get("/event").await;
    assert_eq!((r.status, r.body.as_slice(), r.seq()), (StatusCode::OK, &b"keep"[..], 1));
    node.shutdown().await;
}

/// `curl -X POST --data-binary @file` against the node; (http code, body).
async fn curl_post_file(node: &TestNode, path: &str, file: &std::path::Path) -> (String, String) {
    let out_file = node.dir().join("curl-response");
    let ca = node.dir().join("data").join("tls").join("ca.pem");
    let out = tokio::process::Command::new("curl")
        .args(["-s", "--max-time", "15", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", "Content-Type: text/plain", "--cacert"])
        .arg(&ca)
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg("-o")
        .arg(&out_file)
        .arg(node.url(path))
        .output()
        .await
        .expect("run curl (make deps installs it)");
    let body = std::fs::read_to_string(&out_file).unwrap_or_default();
    (String::from_utf8_lossy(&out.stdout).trim().to_string(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_over_max_event_bytes_get_413() {
    let node = TestNode::start(|c| c.max_event_bytes = 16).await;
    let at_limit = "x".repeat(16);
    let over = "x".repeat(17);
    assert_eq!(node.post(&at_limit).await, 1);
    let before = node.queue_state("/events").await;
    let form = format!("event={over}");
    let json_body = format!(r#"{{"event":"{over}"}}"#);
    let too_large = StatusCode::PAYLOAD_TOO_LARGE;
    refuse_all(
        &node,
        vec![
            case("text", Method::POST, "/event", too_large, "too_large")
                .body(TEXT, over.as_bytes()),
            case("form", Method::POST, "/event", too_large, "too_large")
                .body(FORM, form.as_bytes()),
            case("JSON", Method::POST, "/event", too_large, "too_large")
                .body(JSON, json_body.as_bytes()),
            case("named queue", Method::POST, "/queues/q/event", too_large, "too_large")
                .body(TEXT, over.as_bytes()),
        ],
    )
    .await;
    assert_eq!(node.queue_state("/events").await, before);
    // The refused POST did not create its queue.
    let r = node.get("/queues/q/events").await;
    assert_eq!(r.json()["head"], 0, "{r:?}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_behind_retention_get_410() {
    let node = TestNode::start(|c| c.limits.retention_events = 1).await;
    for event in ["a", "b", "c"] {
        node.post(event).await;
    }
    for _ in 0..3 {
        let r = node.send(Method::DELETE, "/event", None, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
    }
    // Only seq 3 is retained now.
    let before = node.queue_state("/events").await;
    assert_eq!(before["page"]["oldest"], 3, "{before}");
    let gone = StatusCode::GONE;
    let cases = vec![
        case("page from before oldest", Method::GET, "/events?after=0", gone, "compacted"),
        case("one dropped event", Method::GET, "/events/1", gone, "compacted"),
        case("watch from before oldest", Method::GET, "/events/watch?after=1", gone, "compacted"),
        case("resume from before oldest", Method::GET, "/events/watch", gone, "compacted")
            .header("last-event-id", "0"),
    ];
    refuse_all(&node, cases).await;
    let r = node.get("/events?after=1").await;
    let body = r.assert_error(gone, "compacted");
    assert_eq!((body["oldest"].as_u64(), body["head"].as_u64()), (Some(3), Some(3)), "{r:?}");
    assert_eq!(node.queue_state("/events").await, before);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_beyond_the_limits_get_507() {
    let node = TestNode::start(|c| {
        c.limits.queue_events_max = 2;
        c.limits.queues_max = 1;
    })
    .await;
    node.post("1").await;
    node.post("2").await;
    let r = node.send(Method::POST, "/sequences/first", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let before = node.queue_state("/events").await;
    let full = StatusCode::INSUFFICIENT_STORAGE;
    refuse_all(
        &node,
        vec![
            case("third event", Method::POST, "/event", full, "full").body(TEXT, b"3"),
            case("second queue", Method::POST, "/queues/other/event", full, "full")
                .body(TEXT, b"x"),
            case("second sequence", Method::POST, "/sequences/second", full, "full"),
        ],
    )
    .await;
    assert_eq!(node.queue_state("/events").await, before);
    let r = node.get("/queues/other/events").await;
    assert_eq!(r.json()["head"], 0, "{r:?}");
    // Room again after a dequeue.
    let r = node.send(Method::DELETE, "/event", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(node.post("3").await, 3);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_a_full_disk_get_507_and_reads_go_on() {
    // A watermark no filesystem meets: the disk counts as full from the start.
    let node =
        TestNode::start(|c| c.min_free_disk = raftq::node::disk::MinFree::Bytes(u64::MAX)).await;
    let before = node.queue_state("/events").await;
    let full = StatusCode::INSUFFICIENT_STORAGE;
    let cases = vec![
        case("event", Method::POST, "/event", full, "disk_full").body(TEXT, b"x"),
        case("sequence", Method::POST, "/sequences/s", full, "disk_full"),
    ];
    refuse_all(&node, cases).await;
    let r = node.send(Method::POST, "/event", Some((TEXT, b"x".to_vec())), &[]).await;
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    assert_eq!(node.queue_state("/events").await, before);
    assert_eq!(node.get("/event").await.status, StatusCode::NO_CONTENT);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_route_but_healthz() {
    let node = TestNode::start(|c| {
        c.api_token = Some("api-secret".into());
        c.admin_token = Some("admin-secret".into());
    })
    .await;
    let api = ("authorization", "Bearer api-secret");
    let r = node.send(Method::POST, "/event", Some((TEXT, b"kept".to_vec())), &[api]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let unauthorized = StatusCode::UNAUTHORIZED;
    let cases = vec![
        case("GET without a token", Method::GET, "/event", unauthorized, "unauthorized"),
        case("POST without a token", Method::POST, "/event", unauthorized, "unauthorized")
            .body(TEXT, b"x"),
        case("DELETE with a wrong token", Method::DELETE, "/event", unauthorized, "unauthorized")
            .header("authorization", "Bearer api-secreT"),
        case("status without a token", Method::GET, "/status", unauthorized, "unauthorized"),
        case("metrics without a token", Method::GET, "/metrics", unauthorized, "unauthorized"),
        case(
            "sequence without a token",
            Method::POST,
            "/sequences/s",
            unauthorized,
            "unauthorized",
        ),
        case("not Bearer", Method::GET, "/event", unauthorized, "unauthorized")
            .header("authorization", "Basic YXBpLXNlY3JldA=="),
        // The API token never grants admin rights.
        case(
            "admin route with the API token",
            Method::DELETE,
            "/cluster/nodes/1",
            unauthorized,
            "unauthorized",
        )
        .header("authorization", "Bearer api-secret"),
        case(
            "backup with the API token",
            Method::GET,
            "/cluster/backup",
            unauthorized,
            "unauthorized",
        )
        .header("authorization", "Bearer api-secret"),
    ];
    refuse_all(&node, cases).await;
    let r = node.get("/event").await;
    assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{r:?}");
    assert_eq!(node.get("/healthz").await.status, StatusCode::OK);
    // Nothing was written or removed: the one event is still the front.
    let r = node.send(Method::GET, "/events?after=0", None, &[api]).await;
    assert_eq!(r.json()["events"], json!([{"seq": 1, "event": "kept"}]), "{r:?}");
    // The admin token opens the admin routes (here: a 404 for a stranger).
    let admin = ("authorization", "Bearer admin-secret");
    let r = node.send(Method::DELETE, "/cluster/nodes/1", None, &[admin]).await;
    r.assert_error(StatusCode::NOT_FOUND, "unknown_node");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_beyond_max_watches_get_503() {
    let node = TestNode::start(|c| c.max_watches = 0).await;
    let r = node.get("/events/watch").await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "too_many_watches");
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    // Reads and writes are not affected.
    assert_eq!(node.post("x").await, 1);
    tokio::time::timeout(Duration::from_secs(10), node.shutdown()).await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_leader_gets_503() {
    // Seeds where nobody gossips: the node never bootstraps (it waits to
    // be added to a cluster), so it never learns of a leader.
    let node = TestNode::launch(|c| c.seeds = vec![free_udp_port().to_string()]).await;
    let r = node.get("/readyz").await;
    let body = r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert_eq!(body["ready"], false, "{r:?}");
    let no_leader = StatusCode::SERVICE_UNAVAILABLE;
    let cases = vec![
        case("write", Method::POST, "/event", no_leader, "no_leader").body(TEXT, b"x"),
        case("dequeue", Method::DELETE, "/event", no_leader, "no_leader"),
        case("linearizable read", Method::GET, "/event", no_leader, "no_leader"),
        case("sequence", Method::POST, "/sequences/s", no_leader, "no_leader"),
        case("transfer", Method::POST, "/cluster/leader/transfer", no_leader, "no_leader"),
    ];
    refuse_all(&node, cases).await;
    let r = node.send(Method::POST, "/event", Some((TEXT, b"x".to_vec())), &[]).await;
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    // Nothing was written: the local state is still empty.
    let r = node.get("/event?consistency=local").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    tokio::time::timeout(Duration::from_secs(10), node.shutdown()).await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_backup_at_once_gets_503() {
    let node = TestNode::start(|_| {}).await;
    // A state larger than the flow-control windows and socket buffers
    // between the node and an unread response: the first backup's stream
    // (and with it the node's one backup slot) stays open while it waits.
    let event = "b".repeat((1 << 20) - 64);
    for _ in 0..16 {
        node.post(&event).await;
    }
    let first = node.open("/cluster/backup").await;
    assert_eq!(first.status(), StatusCode::OK, "{first:?}");
    // Another connection: the first one's window is full.
    let other = node.caller_from(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let r = other.get("/cluster/backup").await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(r.header("raftq-applied-index").is_none(), "{r:?}");
    // Abandoning the first backup frees the slot.
    drop(first);
    let started = Instant::now();
    loop {
        let r = other.get("/cluster/backup").await;
        if r.status == StatusCode::OK {
            assert!(r.body.len() > 15 << 20, "{} bytes", r.body.len());
            break;
        }
        r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        assert!(started.elapsed() < Duration::from_secs(10), "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_error_gets_500() {
    let node = TestNode::start(|_| {}).await;
    node.post("keep").await;
    // A backup stages its copy in `DATA_DIR/tmp`; a file there instead of a
    // directory is a storage error of this node.
    let staging = node.dir().join("data").join("tmp");
    std::fs::write(&staging, b"in the way").expect("block the staging dir");
    let r = node.get("/cluster/backup").await;
    r.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert!(r.header("raftq-applied-index").is_none(), "{r:?}");
    // Only that request failed: the node still serves, and the backup works
    // once the path is free again.
    assert_eq!(node.get("/event").await.body, b"keep");
    std::fs::remove_file(&staging).expect("unblock the staging dir");
    let r = node.get("/cluster/backup").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    node.shutdown().await;
}
