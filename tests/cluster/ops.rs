//! Issue 4's operating surface: `--api-token` and `--api-client-ca` refuse
//! the unauthenticated and change nothing, `/metrics` is Prometheus text
//! whose counters move with traffic, `DELETE /cluster/nodes/{id}` and
//! `POST /cluster/leader/transfer` work and show in `/status`, and a backup
//! of a running cluster restored into a fresh single node serves the same
//! queue.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::{
    assert_json_error_body, curl, id_of, id_set, status_brief, wait_until, Cluster, FORM,
};

const TOKEN: &str = "s3cret-token";

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict parser of the Prometheus text format (version 0.0.4) as far as
/// raftq uses it: `# HELP`/`# TYPE` lines, and samples
/// `name{label="value",...} number`. Panics with the offending line.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or_default();
            let name = parts.next().unwrap_or_default();
            assert!(is_name(name), "bad metric name in {line:?}");
            if kind == "TYPE" {
                let t = parts.next().unwrap_or_default();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "bad type in {line:?}"
                );
                assert!(typed.insert(name.to_string(), t.to_string()).is_none(), "dup {line:?}");
            } else {
                assert_eq!(kind, "HELP", "unknown comment {line:?}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("bad labels {line:?}"));
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
                    assert!(is_name(k), "bad label name in {line:?}");
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name, labels)
            }
        };
        assert!(is_name(name), "bad sample name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains_key(*f)))
            .unwrap_or(name);
        assert!(typed.contains_key(family), "sample before its # TYPE: {line:?}");
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    assert!(!samples.is_empty(), "no samples in\n{text}");
    samples
}

pub(crate) fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| s.value)
}

#[test]
fn the_test_parser_rejects_what_prometheus_rejects() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{route=\"/e\",s=\"1\"} 3\n";
    assert_eq!(sample(&parse_prometheus(ok), "a_total", &[("route", "/e")]), Some(3.0));
    for bad in [
        "a_total 3\n",                                   // no TYPE
        "# TYPE a_total counter\na_total{route=/e} 3\n", // unquoted label
        "# TYPE a_total counter\na_total three\n",       // not a number
        "# TYPE 9a counter\n9a 1\n",                     // bad name
    ] {
        assert!(std::panic::catch_unwind(|| parse_prometheus(bad)).is_err(), "accepted {bad:?}");
    }
}

pub(crate) async fn scrape(c: &Cluster, i: usize) -> Vec<Sample> {
    let r = c.get(i, "/metrics").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "content-type {ct:?}");
    parse_prometheus(&r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_and_metrics() {
    let c = Cluster::builder().nodes(3).api_token(TOKEN).start().await;
    let l = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let f = c.live().into_iter().find(|&i| i != l).expect("a follower");
    let base = c.nodes[l].api_url();
    let auth = format!("Authorization: Bearer {TOKEN}");

    // Without the token, or with a wrong one: 401 with a JSON error, for
    // reads, writes and admin routes alike; nothing changes.
    let r = c.post(l, "with-token").await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    for (method, path) in [
        ("POST", "/event"),
        ("GET", "/event"),
        ("DELETE", "/event"),
        ("GET", "/events?after=0"),
        ("GET", "/status"),
        ("GET", "/metrics"),
        ("GET", "/cluster/backup"),
        ("DELETE", "/cluster/nodes/1"),
        ("POST", "/cluster/leader/transfer"),
    ] {
        for header in
            [None, Some("Authorization: Bearer wrong"), Some("Authorization: s3cret-token")]
        {
            let url = format!("{base}{path}");
            let mut args = vec!["-X", method, &url, "-d", "event=intruder"];
            if let Some(h) = header {
                args.extend(["-H", h]);
            }
            let out = curl(&args).await;
            assert_eq!(out.http_code, "401", "{method} {path} with {header:?}: {out:?}");
            assert_json_error_body(&out.stdout, &format!("{method} {path}"));
        }
    }
    // HEAD runs the GET handler in axum: it is an admin route as well.
    let out = curl(&["-I", &format!("{base}/cluster/backup")]).await;
    assert_eq!(out.http_code, "401", "HEAD /cluster/backup without the token: {out:?}");
    let r = c.get(l, "/events?after=0").await;
    let events = r.json()["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 1, "only the authenticated POST got in: {r:?}");
    assert_eq!(c.get_event(l).await.body, b"with-token", "the refused DELETEs removed nothing");

    // /healthz stays open (for load balancers and Docker's HEALTHCHECK).
    let out = curl(&[&format!("{base}/healthz")]).await;
    assert_eq!(out.http_code, "200", "{out:?}");

    // A follower's 307: curl -L drops the token on the other port (so 401);
    // --location-trusted re-sends it (the documented way).
    let furl = c.url(f, "/event");
    let out = curl(&["-L", "-X", "POST", "-H", &auth, "-d", "event=dropped", &furl]).await;
    assert_eq!(out.http_code, "401", "curl -L must not leak the token to another host: {out:?}");
    let out =
        curl(&["--location-trusted", "-X", "POST", "-H", &auth, "-d", "event=trusted", &furl])
            .await;
    assert_eq!(out.http_code, "201", "{out:?}");

    // /metrics: valid text, and counters that move with traffic.
    let before = scrape(&c, l).await;
    let posts = |s: &[Sample]| {
        sample(
            s,
            "raftq_http_requests_total",
            &[("route", "/event"), ("method", "POST"), ("status", "201")],
        )
        .unwrap_or(0.0)
    };
    let unauthorized = |s: &[Sample]| {
        s.iter()
            .filter(|x| x.name == "raftq_http_requests_total" && x.labels["status"] == "401")
            .map(|x| x.value)
            .sum::<f64>()
    };
    assert!(unauthorized(&before) >= 27.0, "401s are counted too");
    for i in 0..5 {
        let r = c.post(l, &format!("metered-{i}")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    }
    let after = scrape(&c, l).await;
    assert_eq!(posts(&after) - posts(&before), 5.0, "POST counter moved by exactly 5");
    let hist_count = |s: &[Sample]| {
        sample(
            s,
            "raftq_http_request_duration_seconds_count",
            &[("route", "/event"), ("method", "POST")],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(hist_count(&after) - hist_count(&before), 5.0, "latency histogram observed 5");
    let g = |s: &[Sample], name: &str| sample(s, name, &[]).unwrap_or_else(|| panic!("no {name}"));
    assert!(g(&after, "raftq_raft_applied_index") > g(&before, "raftq_raft_applied_index"));
    assert!(g(&after, "raftq_raft_commit_index") >= g(&after, "raftq_raft_applied_index"));
    assert_eq!(g(&after, "raftq_raft_is_leader"), 1.0);
    assert!(g(&after, "raftq_raft_term") >= 1.0);
    assert_eq!(g(&after, "raftq_raft_voters"), 3.0);
    assert!(
        g(&after, "raftq_log_fsync_seconds_count") > g(&before, "raftq_log_fsync_seconds_count")
    );
    assert_eq!(sample(&after, "raftq_queue_length", &[("queue", "default")]), Some(7.0));
    assert!(sample(&after, "raftq_maze", &[("counter", "clients_connected")]).is_some());
    assert!(g(&after, "raftq_raft_leader_changes_total") >= 1.0, "saw at least the first leader");
    // Followers export too, with their own view, once they have applied the
    // writes (a follower learns the commit index with the next heartbeat).
    let fs = wait_until(Duration::from_secs(5), "the follower to apply the writes", async || {
        let fs = scrape(&c, f).await;
        match sample(&fs, "raftq_queue_length", &[("queue", "default")]) {
            Some(7.0) => Ok(fs),
            other => Err(format!("follower queue length {other:?}")),
        }
    })
    .await;
    assert_eq!(g(&fs, "raftq_raft_is_leader"), 0.0);
    assert_eq!(sample(&fs, "raftq_queue_length", &[("queue", "default")]), Some(7.0));
    // Route labels are templates, never raw paths chosen by clients.
    let _ = c.get(l, "/events/12345").await;
    let _ = c.get(l, "/no/such/route/abc").await;
    let s = scrape(&c, l).await;
    let routes: BTreeSet<&str> =
        s.iter().filter_map(|x| x.labels.get("route").map(String::as_str)).collect();
    assert!(routes.contains("/events/{seq}"), "{routes:?}");
    assert!(routes.contains("unmatched"), "{routes:?}");
    assert!(!routes.iter().any(|r| r.contains("12345") || r.contains("abc")), "{routes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_with_api_client_ca() {
    let c = Cluster::builder().nodes(1).api_client_certs().start().await;
    c.wait_ready(0, Duration::from_secs(30)).await;
    let url = c.url(0, "/event");
    // No certificate: the TLS handshake fails; nothing reaches HTTP.
    let out = curl(&["-X", "POST", "-d", "event=anonymous", &url]).await;
    assert_ne!(out.exit, Some(0), "a client without a certificate got through: {out:?}");
    assert_eq!(out.http_code, "000", "{out:?}");
    // With one signed by the cluster CA: served.
    let cert = c.certs.join("node.pem").display().to_string();
    let key = c.certs.join("node-key.pem").display().to_string();
    let out =
        curl(&["--cert", &cert, "--key", &key, "-X", "POST", "-d", "event=known", &url]).await;
    assert_eq!(out.http_code, "201", "{out:?}");
    // A certificate from another CA is refused as well.
    let other = tempfile::tempdir().expect("tempdir");
    let made = std::process::Command::new(crate::harness::BIN)
        .args(["certs", "--out"])
        .arg(other.path())
        .args(["--hosts", "127.0.0.1"])
        .output()
        .expect("raftq certs");
    assert!(made.status.success());
    let cert = other.path().join("node.pem").display().to_string();
    let key = other.path().join("node-key.pem").display().to_string();
    let out =
        curl(&["--cert", &cert, "--key", &key, "-X", "POST", "-d", "event=stranger", &url]).await;
    assert_ne!(out.http_code, "201", "{out:?}");
    let r = c.get(0, "/events?after=0").await;
    let events: Vec<String> = r.json()["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["event"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    assert_eq!(events, vec!["known".to_string()], "only the certified client wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_transfer_and_node_removal() {
    let mut c = Cluster::start(3).await;
    let l = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let r = c.post(l, "before").await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");

    // Transfer to a named follower, asked through another follower (307).
    let followers: Vec<usize> = c.live().into_iter().filter(|&i| i != l).collect();
    let (target, via) = (followers[0], followers[1]);
    let target_id = c.node_id(target).await;
    let path = format!("/cluster/leader/transfer?to={target_id}");
    let r = c.request(via, Method::POST, &path, None, &[], false).await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT, "{r:?}");
    let r = c.request(via, Method::POST, &path, None, &[], true).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?} {}", r.text());
    let body = r.json();
    assert_eq!(body["transferred"], Value::Bool(true), "{body}");
    assert_eq!(id_of(&body["leader_id"]).as_deref(), Some(target_id.as_str()), "{body}");
    let now = c.leader().await;
    assert_eq!(now, target, "every node's /status agrees on the new leader");
    let st = c.status(l).await;
    assert_eq!(st["role"], "follower", "the old leader stepped down: {}", status_brief(&st));

    // Writes go on; the old leader's heartbeats came back (no election storm:
    // the term stays put for a while).
    let r = c.post_follow(l, "after-transfer").await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let term = c.status(target).await["term"].as_u64().expect("term");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let st = c.status(target).await;
    assert_eq!(st["term"].as_u64(), Some(term), "leadership is stable: {}", status_brief(&st));
    assert_eq!(st["role"], "leader", "{}", status_brief(&st));

    // Without `to`: the most caught-up other voter.
    let r = c.request(target, Method::POST, "/cluster/leader/transfer", None, &[], false).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?} {}", r.text());
    let l2 = c.leader().await;
    assert_ne!(l2, target);
    // Bad targets.
    let r =
        c.request(l2, Method::POST, "/cluster/leader/transfer?to=12345", None, &[], false).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    let r = c.request(l2, Method::POST, "/cluster/leader/transfer?to=x", None, &[], false).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");

    // Removal: bad id, unknown id.
    let r = c.request(l2, Method::DELETE, "/cluster/nodes/abc", None, &[], false).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    let r = c.request(l2, Method::DELETE, "/cluster/nodes/424242", None, &[], false).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");

    // From loopback without credentials, removing either follower of the
    // 3 voters is refused: it would leave 2.
    for f in c.live().into_iter().filter(|&i| i != l2) {
        let path = format!("/cluster/nodes/{}", c.node_id(f).await);
        let r = c.request(l2, Method::DELETE, &path, None, &[], false).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{r:?} {}", r.text());
    }
    assert_eq!(id_set(&c.status(l2).await, "voters").len(), 3);

    // Remove the leader itself: it hands leadership over, then answers 307
    // to the new leader, which removes it (the client follows the redirect).
    // Two voters would remain: refused (409) unless forced.
    let victim = l2;
    let victim_id = c.node_id(victim).await;
    let path = format!("/cluster/nodes/{victim_id}");
    let r = c.request(victim, Method::DELETE, &path, None, &[], true).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?} {}", r.text());
    assert_eq!(r.json()["code"], "too_few_voters", "{}", r.text());
    assert_eq!(id_set(&c.status(victim).await, "voters").len(), 3, "the refusal changed nothing");
    let path = format!("/cluster/nodes/{victim_id}?force=true");
    let r = c.request(victim, Method::DELETE, &path, None, &[], true).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?} {}", r.text());
    let body = r.json();
    assert_eq!(id_of(&body["removed"]).as_deref(), Some(victim_id.as_str()), "{body}");
    let new_leader = id_of(&body["leader_id"]).expect("a leader");
    assert_ne!(new_leader, victim_id, "{body}");
    let l2 = c.index_of(&new_leader).expect("the new leader is one of ours");
    let members = |st: &Value| {
        let mut s = id_set(st, "voters");
        s.extend(id_set(st, "learners"));
        s
    };
    let st = c.status(l2).await;
    assert!(!members(&st).contains(&victim_id), "{}", status_brief(&st));
    assert_eq!(id_set(&st, "voters").len(), 2, "{}", status_brief(&st));
    // The removed node still runs and gossips, but is never added back.
    let leader_url = c.url(l2, "/status");
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = crate::harness::send(&c.client, Method::GET, &leader_url, None, &[]).await;
        let st = r.expect("status").json();
        assert!(!members(&st).contains(&victim_id), "re-added: {}", status_brief(&st));
    }
    let nodes = c.get(l2, "/cluster/nodes").await.json();
    assert!(
        !nodes["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .any(|n| id_of(&n["node_id"]).as_deref() == Some(victim_id.as_str())),
        "{nodes}"
    );
    // The removed node learns of it (through gossip: it no longer gets the
    // log), stops campaigning and reports it.
    let victim_url = c.url(victim, "/status");
    let client = c.client.clone();
    let term = wait_until(Duration::from_secs(10), "the removed node to know it", async || {
        let st = crate::harness::send(&client, Method::GET, &victim_url, None, &[]).await?.json();
        match st["removed"].as_bool() {
            Some(true) => Ok(st["term"].as_u64().unwrap_or(0)),
            _ => Err(status_brief(&st)),
        }
    })
    .await;
    let r = c.get(victim, "/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    assert!(r.text().contains("removed"), "{r:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = c.status(victim).await;
    assert_eq!(st["term"].as_u64(), Some(term), "a removed node stops campaigning: {st}");
    c.nodes[victim].kill9();
    // Two voters still take writes, and the queue is intact.
    let r = c.post_follow(l2, "after-removal").await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let remaining: Vec<usize> = c.live();
    wait_until(Duration::from_secs(10), "both remaining nodes to apply the write", async || {
        for &i in &remaining {
            let (events, _) = c.all_events(i, "&consistency=local").await;
            let names: Vec<&str> = events.iter().map(|(_, e)| e.as_str()).collect();
            if names != ["before", "after-transfer", "after-removal"] {
                return Err(format!("{}: {names:?}", c.nodes[i].name));
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restores_into_a_fresh_single_node() {
    let backups = tempfile::tempdir().expect("tempdir");
    let file = backups.path().join("cluster.snap");
    let (expected_events, front, next_id) = {
        let c = Cluster::builder().nodes(3).args(["--retention-events", "1000"]).start().await;
        let l = c.wait_for_voters(3, Duration::from_secs(30)).await;
        for i in 0..20 {
            let r = c.post(l, &format!("event-{i}")).await;
            assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        }
        for _ in 0..5 {
            assert_eq!(c.delete_event(l, false).await.status, StatusCode::OK);
        }
        let r = c
            .request(
                l,
                Method::POST,
                "/queues/jobs/event",
                Some((FORM, b"event=job-1".to_vec())),
                &[],
                false,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        let r = c.request(l, Method::POST, "/sequences/orders?count=41", None, &[], false).await;
        assert_eq!(r.json()["last"].as_u64(), Some(41), "{r:?}");
        // Taken from a follower: every node serves backups of what it applied
        // after a linearizable barrier.
        let f = c.live().into_iter().find(|&i| i != l).expect("a follower");
        let url = c.url(f, "/cluster/backup");
        let path = file.display().to_string();
        let out = curl(&["-o", &path, "-D", "-", &url]).await;
        assert_eq!(out.http_code, "200", "{out:?}");
        assert!(file.metadata().expect("backup written").len() > 100);
        let (events, _) = c.all_events(l, "").await;
        (events, "event-5".to_string(), 42)
    };
    // A torn backup is refused and leaves no data dir behind.
    let torn = backups.path().join("torn.snap");
    let bytes = std::fs::read(&file).expect("read backup");
    std::fs::write(&torn, &bytes[..bytes.len() - 7]).expect("write torn");
    let target = backups.path().join("torn-data");
    let out = std::process::Command::new(crate::harness::BIN)
        .arg("restore")
        .arg(&torn)
        .arg("--data-dir")
        .arg(&target)
        .output()
        .expect("raftq restore");
    assert!(!out.status.success(), "a torn backup was restored");
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum"), "{out:?}");
    assert!(!target.join("db").exists());

    // Node 1 starts on the restored data and bootstraps a new cluster; two
    // more join it by gossip and must get the restored data too.
    let mut c = Cluster::builder().nodes(1).restore_from(&file).start().await;
    c.wait_ready(0, Duration::from_secs(30)).await;
    assert!(
        !c.nodes[0].data_dir.join("restored").exists(),
        "the restored data is sealed in a snapshot before the node serves"
    );
    let (events, _) = c.all_events(0, "").await;
    assert_eq!(events, expected_events, "the same retained log");
    let st = c.status(0).await;
    assert_eq!(id_set(&st, "voters").len(), 1, "a new single-voter cluster: {}", status_brief(&st));
    c.add_node(&[]).await;
    c.add_node(&[]).await;
    let l = c.wait_for_voters(3, Duration::from_secs(60)).await;
    assert_eq!(l, 0, "the restored node leads");
    for i in 1..3 {
        wait_until(Duration::from_secs(20), "a joiner to hold the restored data", async || {
            let (events, _) = c.all_events(i, "&consistency=local").await;
            if events == expected_events {
                Ok(())
            } else {
                Err(format!("{} has {} events", c.nodes[i].name, events.len()))
            }
        })
        .await;
        let r = c.request(i, Method::GET, "/queues/jobs/event", None, &[], false).await;
        assert_eq!(r.text(), "job-1", "{r:?}");
    }
    let r = c.get_event(0).await;
    assert_eq!(r.text(), front, "{r:?}");
    let r = c.get(0, "/queues/jobs/event").await;
    assert_eq!(r.text(), "job-1", "{r:?}");
    // Seqs and named sequences continue where the old cluster stopped.
    let r = c.post(0, "after-restore").await;
    assert_eq!(r.seq(), Some(21), "{r:?}");
    let r = c.request(0, Method::POST, "/sequences/orders", None, &[], false).await;
    assert_eq!(r.json()["first"].as_u64(), Some(next_id), "{r:?}");
    // Every node applies later writes onto the same restored state.
    c.check_acked_everywhere(&[(21, "after-restore".to_string())]).await;
    // Restoring over a node's data dir is refused.
    let out = std::process::Command::new(crate::harness::BIN)
        .arg("restore")
        .arg(&file)
        .arg("--data-dir")
        .arg(&c.nodes[0].data_dir)
        .output()
        .expect("raftq restore");
    assert!(!out.status.success(), "restore over live data accepted");
}

/// `--worker-threads` sets the node's async workers, as `/metrics` reports
/// them from the runtime; the node serves with one. The default is one per
/// core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_sets_the_runtime_size() {
    let c = Cluster::builder().nodes(1).args(["--worker-threads", "1"]).start().await;
    c.wait_for_voters(1, Duration::from_secs(30)).await;
    let r = crate::harness::post_event(&c.client, &c.nodes[0].api_url(), "one-worker").await;
    assert_eq!(r.expect("a write").status, StatusCode::CREATED);
    let workers = |samples: Vec<Sample>| sample(&samples, "raftq_runtime_worker_threads", &[]);
    assert_eq!(workers(scrape(&c, 0).await), Some(1.0), "one worker asked for");
    drop(c);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let d = Cluster::builder().nodes(1).start().await;
    d.wait_for_voters(1, Duration::from_secs(30)).await;
    assert_eq!(workers(scrape(&d, 0).await), Some(cores as f64), "the default");
}
