//! SPEC §2: the seed transcript with the real `curl` binary, byte for byte,
//! plus the headers and status codes behind it.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::{curl, Cluster, FORM};

/// Run one transcript line and compare curl's stdout byte for byte, and the
/// final HTTP status.
pub(crate) async fn step(args: &[&str], want_stdout: &str, want_code: &str) {
    let out = curl(args).await;
    assert_eq!(
        out.exit,
        Some(0),
        "curl {args:?} failed (exit {:?}, http {})",
        out.exit,
        out.http_code
    );
    assert_eq!(
        out.stdout,
        want_stdout.as_bytes(),
        "curl -k {}: stdout {:?}, want {want_stdout:?}",
        args.join(" "),
        out.stdout_text()
    );
    assert_eq!(out.http_code, want_code, "curl -k {}: final HTTP status", args.join(" "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_transcript_with_curl() {
    let c = Cluster::start(3).await;
    let l = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let f = c.followers().await[0];
    let n1 = c.nodes[l].api_url(); // the leader plays the seed's N1
    let n2 = c.nodes[f].api_url(); // a follower plays N2
    let ev = |base: &str| format!("{base}/event");

    // The transcript of SPEC §2, line by line.
    step(&["-X", "POST", "-d", "event=event1", &ev(&n1)], "", "201").await;
    step(&[&ev(&n2)], "event1", "200").await;
    step(&["-L", "-X", "POST", "-d", "event=event2", &ev(&n2)], "", "201").await;
    step(&["-X", "DELETE", &ev(&n1)], "event1", "200").await;
    step(&[&ev(&n2)], "event2", "200").await;
    // Drain, then the empty queue prints nothing.
    step(&["-X", "DELETE", &ev(&n1)], "event2", "200").await;
    step(&[&ev(&n2)], "", "204").await;
    step(&[&ev(&n1)], "", "204").await;

    // POST: 201, empty body, `Seq` and `Location: /events/N`. Two events were
    // enqueued above, so this one is seq 3.
    let r = c.post(l, "event3").await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.seq(), Some(3), "{r:?}");
    assert_eq!(r.header("location").as_deref(), Some("/events/3"), "{r:?}");
    assert!(r.body.is_empty(), "POST body must be empty: {r:?}");

    // GET on a follower (linearizable): body is the event exactly, `Seq`.
    let r = c.get_event(f).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body, b"event3", "{r:?}");
    assert_eq!(r.seq(), Some(3), "{r:?}");

    // DELETE pops it and returns it with its `Seq`.
    let r = c.delete_event(l, false).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body, b"event3", "{r:?}");
    assert_eq!(r.seq(), Some(3), "{r:?}");

    // Empty queue: 204 with an empty body, on every node; DELETE too.
    for i in [l, f] {
        let r = c.get_event(i).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
        assert!(r.body.is_empty(), "{r:?}");
    }
    let r = c.delete_event(l, false).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");

    // A write on a follower without -L: 307 to the same path and query on
    // the leader's advertised API URL, and nothing is enqueued.
    let r = c
        .request(
            f,
            Method::POST,
            "/event?x=1",
            Some((FORM, b"event=redirected".to_vec())),
            &[],
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("{n1}/event?x=1")),
        "Location must be the leader's advertised API URL + same path and query: {r:?}"
    );
    let r = c.delete_event(f, false).await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT, "{r:?}");
    assert_eq!(r.header("location"), Some(format!("{n1}/event")), "{r:?}");
    let r = c.get_event(l).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "an unfollowed 307 must not enqueue: {r:?}");

    // The other body encodings of SPEC §2: text/plain is the event verbatim;
    // JSON `{"event": ...}`; `Accept: application/json` gets `{"seq":N}`.
    let plain = "plain text: a=b&c=d %41 +";
    let r = c
        .request(
            l,
            Method::POST,
            "/event",
            Some(("text/plain", plain.as_bytes().to_vec())),
            &[],
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.seq(), Some(4), "{r:?}");
    let r = c
        .request(
            l,
            Method::POST,
            "/event",
            Some(("application/json", br#"{"event": "json \"body\""}"#.to_vec())),
            &[("accept", "application/json")],
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.json()["seq"].as_u64(), Some(5), "{r:?}");
    let r = c.delete_event(l, false).await;
    assert_eq!((r.status, r.text(), r.seq()), (StatusCode::OK, plain.to_string(), Some(4)));
    let r = c.delete_event(l, false).await;
    assert_eq!(
        (r.status, r.text(), r.seq()),
        (StatusCode::OK, "json \"body\"".to_string(), Some(5))
    );

    // Everything acknowledged is in the retained log, in order, everywhere.
    let acked: Vec<(u64, String)> = ["event1", "event2", "event3", plain, "json \"body\""]
        .iter()
        .enumerate()
        .map(|(k, e)| (k as u64 + 1, e.to_string()))
        .collect();
    c.check_acked_everywhere(&acked).await;
}
