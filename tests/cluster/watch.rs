//! SSE watch streams (`/events/watch`) checked with the real `curl -N`, and
//! retention by bytes and age across the cluster.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::harness::{
    assert_json_error_body, curl, post_many, u64_field, wait_until, Cluster, Resp, FORM,
};

/// One SSE frame as curl printed it.
#[derive(Debug, Clone, PartialEq)]
struct Frame {
    retry: Option<String>,
    id: Option<u64>,
    event: Option<String>,
    data: Option<Value>,
}

/// Splits a stream into complete frames (a trailing partial one is left out).
fn frames(text: &str) -> Vec<Frame> {
    let complete = match text.rfind("\n\n") {
        Some(end) => &text[..end],
        None => return Vec::new(),
    };
    complete
        .split("\n\n")
        .map(|block| {
            let mut f = Frame { retry: None, id: None, event: None, data: None };
            for line in block.lines() {
                let (field, value) =
                    line.split_once(": ").unwrap_or_else(|| panic!("bad SSE line {line:?}"));
                match field {
                    "retry" => f.retry = Some(value.to_string()),
                    "id" => {
                        f.id = Some(value.parse().unwrap_or_else(|_| panic!("bad id {line:?}")))
                    }
                    "event" => f.event = Some(value.to_string()),
                    "data" => {
                        f.data = Some(
                            serde_json::from_str(value)
                                .unwrap_or_else(|e| panic!("data not JSON ({e}): {line:?}")),
                        )
                    }
                    other => panic!("unexpected SSE field {other:?} in {block:?}"),
                }
            }
            f
        })
        .collect()
}

/// The (seq, event) of every `event` frame, checking id == data.seq.
fn events_of(frames: &[Frame]) -> Vec<(u64, String)> {
    frames
        .iter()
        .filter(|f| f.event.as_deref() == Some("event"))
        .map(|f| {
            let data = f.data.as_ref().expect("event frame without data");
            let seq = data["seq"].as_u64().expect("event data without seq");
            assert_eq!(f.id, Some(seq), "id and data.seq differ: {f:?}");
            (seq, data["event"].as_str().expect("event data without event").to_string())
        })
        .collect()
}

fn heartbeats(frames: &[Frame]) -> Vec<(u64, u64)> {
    frames
        .iter()
        .filter(|f| f.event.as_deref() == Some("heartbeat"))
        .map(|f| {
            let data = f.data.as_ref().expect("heartbeat without data");
            (data["head"].as_u64().expect("head"), data["oldest"].as_u64().expect("oldest"))
        })
        .collect()
}

/// A running `curl -N` on an SSE URL; its stdout is collected as it arrives.
struct Sse {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    reader: tokio::task::JoinHandle<()>,
    what: String,
}

impl Sse {
    fn start(c: &Cluster, i: usize, path: &str, headers: &[&str]) -> Sse {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-N", "--max-time", "60", "-w", "%{stderr}%{http_code} %{content_type}"])
            .arg("--cacert")
            .arg(c.certs.join("ca.pem"));
        for h in headers {
            cmd.args(["-H", h]);
        }
        let url = c.url(i, path);
        cmd.arg(&url).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.kill_on_drop(true).spawn().expect("run curl (is it installed?)");
        let mut stdout = child.stdout.take().expect("curl stdout");
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Sse { child, out, reader, what: format!("curl -N {url} {headers:?}") }
    }

    fn text(&self) -> String {
        String::from_utf8(self.out.lock().unwrap().clone()).expect("SSE stream is not UTF-8")
    }

    fn frames(&self) -> Vec<Frame> {
        frames(&self.text())
    }

    /// Waits until the frames so far satisfy `done`.
    async fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&[Frame]) -> bool) {
        wait_until(timeout, &format!("{}: {what}", self.what), async || {
            let frames = self.frames();
            if done(&frames) {
                Ok(())
            } else {
                Err(format!("{} frames so far; last: {:?}", frames.len(), frames.last()))
            }
        })
        .await
    }

    /// Waits for curl to exit by itself: (exit code, "http_code content_type", stdout).
    async fn exit(mut self, timeout: Duration) -> (Option<i32>, String, String) {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} still running after {timeout:?}", self.what))
            .expect("wait for curl");
        let _ = (&mut self.reader).await;
        let mut write_out = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut write_out).await;
        }
        (status.code(), write_out.trim().to_string(), self.text())
    }

    /// Ends the stream from the client side.
    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The exact frame of one event, as the wire format lays it out.
fn event_frame(seq: u64, event: &str) -> String {
    format!("id: {seq}\nevent: event\ndata: {{\"seq\":{seq},\"event\":{}}}\n\n", Value::from(event))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_sse_frames_to_curl_on_every_node() {
    let mut c = Cluster::builder().nodes(3).args(["--max-watches", "2"]).start().await;
    c.wait_for_voters(3, Duration::from_secs(30)).await;
    let l = c.leader().await;
    let f = c.followers().await[0];
    for (i, e) in ["e1", "e2", "e3"].iter().enumerate() {
        let r = c.post(l, e).await;
        assert_eq!((r.status, r.seq()), (StatusCode::CREATED, Some(i as u64 + 1)), "{r:?}");
    }

    // Exact framing: retry, a heartbeat with the head, then the events.
    let on_leader = Sse::start(&c, l, "/events/watch?after=0", &[]);
    on_leader.wait_for("event 3", Duration::from_secs(10), |fr| events_of(fr).len() == 3).await;
    let expected = format!(
        "retry: 1000\n\nevent: heartbeat\ndata: {{\"head\":3,\"oldest\":1}}\n\n{}{}{}",
        event_frame(1, "e1"),
        event_frame(2, "e2"),
        event_frame(3, "e3")
    );
    let text = on_leader.text();
    assert!(text.starts_with(&expected), "stream {text:?}\ndoes not start with {expected:?}");
    // Heartbeats keep coming, about once a second, with the head.
    on_leader
        .wait_for("two more heartbeats", Duration::from_secs(10), |fr| heartbeats(fr).len() >= 3)
        .await;
    assert!(heartbeats(&on_leader.frames()).iter().all(|hb| *hb == (3, 1)));

    // A follower streams what it applies: the same events, gapless, while
    // three writers post through every node.
    let on_follower = Sse::start(&c, f, "/events/watch?after=0", &[]);
    let acked: Vec<(u64, String)> =
        post_many(&c.follow, &c.api_urls(), "w", 3, 10).await.into_iter().flatten().collect();
    let mut want: BTreeMap<u64, String> =
        [(1, "e1"), (2, "e2"), (3, "e3")].into_iter().map(|(s, e)| (s, e.to_string())).collect();
    want.extend(acked.iter().cloned());
    let head = *want.keys().last().unwrap();
    assert_eq!(want.len() as u64, head, "acknowledged seqs are not gapless: {want:?}");
    for sse in [&on_follower, &on_leader] {
        sse.wait_for("every acknowledged event", Duration::from_secs(20), |fr| {
            events_of(fr).last().is_some_and(|(seq, _)| *seq >= head)
        })
        .await;
        let got = events_of(&sse.frames());
        let want: Vec<(u64, String)> = want.clone().into_iter().collect();
        assert_eq!(got[..want.len()], want[..], "{}", sse.what);
    }
    on_follower
        .wait_for("a heartbeat with the new head", Duration::from_secs(10), |fr| {
            heartbeats(fr).last().is_some_and(|(h, _)| *h == head)
        })
        .await;

    // Resume: Last-Event-ID wins over ?after=.
    let resumed = Sse::start(&c, f, "/events/watch?after=2", &["Last-Event-ID: 25"]);
    resumed
        .wait_for("events after 25", Duration::from_secs(10), |fr| {
            events_of(fr).last().is_some_and(|(seq, _)| *seq >= head)
        })
        .await;
    let seqs: Vec<u64> = events_of(&resumed.frames()).into_iter().map(|(s, _)| s).collect();
    assert_eq!(seqs, (26..=head).collect::<Vec<_>>());

    // Over the cap (2 on this node): 503, JSON, Retry-After.
    let r = c.get(f, "/events/watch").await;
    r.assert_json_error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["code"], "too_many_watches", "{r:?}");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"), "{r:?}");
    assert_eq!(u64_field(&c.status(f).await, "watches"), 2);
    // A client that goes away frees its slot.
    resumed.kill().await;
    let (client, url) = (c.client.clone(), c.url(f, "/events/watch"));
    wait_until(Duration::from_secs(10), "a watch slot to free up", async || {
        let r = client.get(&url).send().await.map_err(|e| e.to_string())?;
        match r.status() {
            StatusCode::OK => Ok(()),
            other => Err(format!("{other}")),
        }
    })
    .await;

    // Garbage: 400 with a JSON error, never a stream.
    let base = c.nodes[f].api_url();
    for (args, what) in [
        (vec![format!("{base}/events/watch?after=abc")], "after=abc"),
        (vec![format!("{base}/events/watch?after=-1")], "after=-1"),
        (
            vec!["-H".into(), "Last-Event-ID: nope".into(), format!("{base}/events/watch")],
            "Last-Event-ID",
        ),
        (vec![format!("{base}/queues/bad%20name/events/watch")], "queue name"),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = curl(&args).await;
        assert_eq!(out.http_code, "400", "{what}: {out:?}");
        assert_json_error_body(&out.stdout, what);
    }

    // Named queues; an unknown queue is an empty one.
    let jobs = Sse::start(&c, l, "/queues/jobs/events/watch", &[]);
    jobs.wait_for("the first heartbeat", Duration::from_secs(10), |fr| !fr.is_empty()).await;
    assert_eq!(heartbeats(&jobs.frames())[0], (0, 1));
    let r = c
        .request(
            l,
            reqwest::Method::POST,
            "/queues/jobs/event",
            Some((FORM, b"event=job1".to_vec())),
            &[],
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    jobs.wait_for("job1", Duration::from_secs(10), |fr| !events_of(fr).is_empty()).await;
    assert_eq!(events_of(&jobs.frames()), vec![(1, "job1".to_string())]);
    jobs.kill().await;

    // A node shutting down ends its streams cleanly: curl sees a complete
    // response (exit 0), not a reset.
    let status = tokio::task::block_in_place(|| c.nodes[f].stop());
    assert!(status.success(), "follower exited with {status}");
    let (code, write_out, _) = on_follower.exit(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "curl exit code after the node shut down");
    assert_eq!(write_out, "200 text/event-stream", "status and content type");
    on_leader.kill().await;
}

/// `GET /events?after=0&consistency=local` on node `i`: the node's own
/// (oldest, head), from the 410 body or the page.
async fn bounds(c: &Cluster, i: usize) -> (u64, u64) {
    let r: Resp = c.get(i, "/events?after=0&limit=1&consistency=local").await;
    let v = r.json();
    match r.status {
        StatusCode::OK | StatusCode::GONE => {
            (v["oldest"].as_u64().expect("oldest"), v["head"].as_u64().expect("head"))
        }
        _ => panic!("unexpected {r:?}"),
    }
}

async fn wait_bounds_everywhere(c: &Cluster, want: (u64, u64), timeout: Duration) {
    for i in c.live() {
        wait_until(timeout, &format!("n{} (oldest, head) = {want:?}", i + 1), async || {
            let got = bounds(c, i).await;
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        })
        .await;
    }
}

/// The seqs node `i` lists after `after` (local reads).
async fn listed(c: &Cluster, i: usize, after: u64) -> Vec<u64> {
    let r = c.get(i, &format!("/events?after={after}&consistency=local")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.json()["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_bytes_and_age_drops_only_dequeued_events_on_every_node() {
    const AGE_SECS: u64 = 15;
    let c = Cluster::builder()
        .nodes(3)
        .args(["--retention-bytes", "300", "--retention-age", &format!("{AGE_SECS}s")])
        .start()
        .await;
    c.wait_for_voters(3, Duration::from_secs(30)).await;
    let l = c.leader().await;
    // Ten events of exactly 100 bytes. Events 4..=6 are stamped no earlier
    // than `before_4` (the leader's clock, on this same machine).
    let mut before_4 = std::time::Instant::now();
    for i in 1..=10u64 {
        if i == 4 {
            before_4 = std::time::Instant::now();
        }
        let r = c.post(l, &format!("{i:0>100}")).await;
        assert_eq!((r.status, r.seq()), (StatusCode::CREATED, Some(i)), "{r:?}");
    }
    // 1000 pending bytes, far over the limit: pending events are never dropped.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    wait_bounds_everywhere(&c, (1, 10), Duration::from_secs(5)).await;

    // Dequeue six: 600 dequeued bytes, so 1..=3 go and 4..=6 (300) stay.
    for seq in 1..=6 {
        let r = c
            .request(l, reqwest::Method::DELETE, &format!("/event?seq={seq}"), None, &[], false)
            .await;
        assert_eq!((r.status, r.seq()), (StatusCode::OK, Some(seq)), "{r:?}");
    }
    wait_bounds_everywhere(&c, (4, 10), Duration::from_secs(10)).await;
    assert!(
        before_4.elapsed() < Duration::from_secs(AGE_SECS),
        "too slow to tell the byte limit from the age limit"
    );
    for i in c.live() {
        assert_eq!(listed(&c, i, 3).await, (4..=10).collect::<Vec<_>>(), "n{}", i + 1);
        let r = c.get(i, "/events?after=2&consistency=local").await;
        r.assert_json_error(StatusCode::GONE);
        assert_eq!(
            (r.json()["code"].as_str(), r.json()["oldest"].as_u64()),
            (Some("compacted"), Some(4))
        );
    }

    // A watch from before the horizon is refused with the same 410, by
    // ?after= and by Last-Event-ID, on any node.
    for i in c.live() {
        let base = c.nodes[i].api_url();
        for args in [
            vec![format!("{base}/events/watch?after=0")],
            vec!["-H".to_string(), "Last-Event-ID: 2".to_string(), format!("{base}/events/watch")],
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = curl(&args).await;
            assert_eq!(out.http_code, "410", "{args:?}: {out:?}");
            let v: Value = serde_json::from_slice(&out.stdout).expect("410 body is JSON");
            assert_eq!(
                (v["code"].as_str(), v["oldest"].as_u64(), v["head"].as_u64()),
                (Some("compacted"), Some(4), Some(10)),
                "{v}"
            );
        }
        // From the horizon on, the watch streams.
        let sse = Sse::start(&c, i, "/events/watch?after=3", &[]);
        sse.wait_for("events 4..=10", Duration::from_secs(10), |fr| events_of(fr).len() == 7).await;
        sse.kill().await;
    }

    // Age: once 4..=6 are older than the limit they go too, but the pending
    // 7..=10, just as old, stay.
    wait_bounds_everywhere(&c, (7, 10), Duration::from_secs(AGE_SECS + 10)).await;
    // (200 ms for the leader's wall clock against this monotonic one.)
    assert!(
        before_4.elapsed() + Duration::from_millis(200) >= Duration::from_secs(AGE_SECS),
        "dropped before their age"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in c.live() {
        assert_eq!(bounds(&c, i).await, (7, 10), "n{}", i + 1);
        assert_eq!(listed(&c, i, 6).await, vec![7, 8, 9, 10], "n{}", i + 1);
    }
    let r = c.get(l, "/event").await;
    assert_eq!((r.status, r.seq()), (StatusCode::OK, Some(7)), "{r:?}");
}
