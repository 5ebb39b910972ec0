//! Issue 13: the Raft stream (`raft::frame`). The cluster replicates over
//! it, and it keeps the Raft port's trust rules: only node certificates of
//! the cluster CA get a connection, every frame names its node and cluster
//! and is refused otherwise, and a broken or oversized frame gets an answer
//! that says why, changes nothing, and never takes the node down.
//!
//! The stranger here is this test process, talking real TLS to real
//! `raftq serve` processes with the crate's own stream client and with raw
//! frames written by hand.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::raft::{VoteRequest, VoteResponse};
use raftq::raft::frame::{self, Kind, Status};
use raftq::raft::stream::{read_frame, write_frame, Dialer, Pool, StreamError};
use raftq::raft::types::{TypeConfig, Vote};
use raftq::tls::TlsMaterial;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::harness::{id_of, post_event, tls_client_config, wait_until, Cluster};
use crate::ops::{sample, scrape};
use crate::trust::raftq_certs;

const TIMEOUT: Duration = Duration::from_secs(5);

type VoteResult = Result<VoteResponse<TypeConfig>, Value>;

/// One request frame through `dialer`: the answer's status and body.
async fn ask(
    dialer: &mut Dialer,
    kind: Kind,
    target: u64,
    cluster: &str,
    body: &[u8],
) -> Result<(Status, Vec<u8>), StreamError> {
    let mut buf = frame::begin_request(kind, target, cluster).expect("frame head");
    buf.extend_from_slice(body);
    let answer = dialer.exchange(&frame::finish(buf).expect("frame"), TIMEOUT).await?;
    let (status, body) = frame::decode_response(&answer).expect("a well-formed answer");
    Ok((status, body.to_vec()))
}

/// A Raft stream client config that trusts `ca` and presents `cert`/`key`
/// (PEM paths), whatever their issuer and role.
fn stream_client(ca: &Path, cert: &Path, key: &Path) -> Arc<rustls::ClientConfig> {
    let mut config = tls_client_config(ca, Some((cert, key)));
    config.alpn_protocols = vec![frame::ALPN.to_vec()];
    Arc::new(config)
}

/// The stream client a node of `c` uses: its node certificate, the
/// stream's ALPN first.
fn node_stream_client(c: &Cluster) -> Arc<rustls::ClientConfig> {
    let certs = &c.certs;
    let node = TlsMaterial::load(
        &certs.join("node.pem"),
        &certs.join("node-key.pem"),
        &certs.join("ca.pem"),
    )
    .expect("node certificate");
    node.raft_stream_client_config().expect("stream client config")
}

/// A sample's value in node `i`'s `/metrics` (0 when absent).
async fn metric(c: &Cluster, i: usize, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(&scrape(c, i).await, name, labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_stream_carries_replication_and_refuses_what_the_raft_port_refuses() {
    let c = Cluster::builder().nodes(3).start().await;
    let leader = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let follower = c.live().into_iter().find(|&i| i != leader).expect("a follower");
    for i in 0..5 {
        let r = post_event(&c.client, &c.nodes[leader].api_url(), &format!("s{i}")).await;
        r.expect("write").expect_seq();
    }
    // Positive control for "the cluster uses the stream": every follower
    // served its leader's replication as Raft stream connections.
    for i in c.live().into_iter().filter(|&i| i != leader) {
        let served = metric(&c, i, "raftq_raft_stream_connections_total", &[]).await;
        assert!(served >= 1.0, "node {i} served no raft stream connection");
    }

    let st = c.status(follower).await;
    let node_id: u64 = id_of(&st["node_id"]).expect("node_id").parse().expect("numeric id");
    let uuid = st["cluster_uuid"].as_str().expect("cluster_uuid").to_string();
    let term_before = st["term"].as_u64().expect("term");
    let leader_id = id_of(&st["leader_id"]).expect("leader_id");

    let certs = &c.certs;
    let stream_tls = node_stream_client(&c);
    let addr = c.nodes[follower].raft_addr().to_string();
    let mut dialer = Dialer::new(stream_tls.clone(), addr.clone(), Pool::default());

    // A pre-vote at term 0, for the right node and cluster: answered by
    // Raft, and not granted (the cluster is past term 0).
    let pre_vote = VoteRequest::<TypeConfig>::new(Vote::new(0, node_id), None);
    let body = serde_json::to_vec(&pre_vote).expect("json");
    let (status, answer) =
        ask(&mut dialer, Kind::PreVote, node_id, &uuid, &body).await.expect("pre-vote answered");
    assert_eq!(status, Status::Answer, "{}", String::from_utf8_lossy(&answer));
    let answer: VoteResult = serde_json::from_slice(&answer).expect("a vote answer");
    let answer = answer.expect("Raft answered the pre-vote");
    assert!(!answer.vote_granted, "a term-0 pre-vote was granted: {answer:?}");

    // Misdirected: another node id, another cluster, no cluster at all. The
    // vote is for a term far ahead: served by mistake, it would move the
    // follower's term, which the end of the test checks did not happen.
    let leader_num: u64 = leader_id.parse().expect("numeric leader id");
    let ahead = VoteRequest::<TypeConfig>::new(Vote::new(term_before + 10, leader_num), None);
    let ahead = serde_json::to_vec(&ahead).expect("json");
    for (target, cluster, code) in [
        (node_id.wrapping_add(1), uuid.as_str(), "wrong_node"),
        (node_id, "0b7e9c52-6a51-4f0e-8f6b-9d0c1e2f3a4b", "wrong_cluster"),
        (node_id, "", "wrong_cluster"),
    ] {
        let (status, answer) =
            ask(&mut dialer, Kind::Vote, target, cluster, &ahead).await.expect("answered");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert_eq!(status, Status::Refused, "{target} {cluster:?}: {answer}");
        assert!(answer.starts_with(&format!("{code}\n")), "{target} {cluster:?}: {answer}");
    }

    // A body that is not an RPC: malformed, and the connection stays usable.
    let (status, answer) =
        ask(&mut dialer, Kind::Append, node_id, &uuid, b"{not json").await.expect("answered");
    assert_eq!(status, Status::Malformed, "{}", String::from_utf8_lossy(&answer));
    let (status, _) = ask(&mut dialer, Kind::PreVote, node_id, &uuid, &body).await.expect("again");
    assert_eq!(status, Status::Answer, "the connection did not survive a malformed body");

    // Raw frames: an unknown kind is answered; a length over the limit is
    // answered from the prefix alone, then the connection is closed.
    let connector = tokio_rustls::TlsConnector::from(stream_tls.clone());
    let tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut raw = connector.connect(name, tcp).await.expect("handshake");
    write_frame(&mut raw, &[0, 0, 0, 2, 99, 0]).await.expect("write");
    let answer = read_frame(&mut raw, 1 << 20).await.expect("read").expect("an answer");
    assert_eq!(frame::decode_response(&answer).expect("decodes").0, Status::Malformed);
    raw.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
    raw.flush().await.expect("flush");
    let answer = read_frame(&mut raw, 1 << 20).await.expect("read").expect("an answer");
    let (status, why) = frame::decode_response(&answer).expect("decodes");
    assert_eq!(status, Status::Malformed);
    assert!(String::from_utf8_lossy(why).contains("over the limit"), "{why:?}");
    let closed = tokio::time::timeout(TIMEOUT, read_frame(&mut raw, 1 << 20)).await;
    assert!(
        matches!(closed, Ok(Ok(None)) | Ok(Err(_))),
        "the connection stayed open after an oversized frame: {closed:?}"
    );

    // An API client certificate, and a node certificate of another CA: no
    // answer at all (the TLS layer refuses them before any frame).
    raftq_certs(&["--out", &certs.display().to_string(), "--client", "app"]);
    let other = tempfile::tempdir().expect("tempdir");
    raftq_certs(&["--out", &other.path().display().to_string(), "--hosts", "127.0.0.1"]);
    let strangers = [
        ("api client", certs.join("app.pem"), certs.join("app-key.pem")),
        ("foreign node", other.path().join("node.pem"), other.path().join("node-key.pem")),
    ];
    for (who, cert, key) in strangers {
        let mut dialer = Dialer::new(
            stream_client(&certs.join("ca.pem"), &cert, &key),
            addr.clone(),
            Pool::default(),
        );
        let result = ask(&mut dialer, Kind::PreVote, node_id, &uuid, &body).await;
        // Refused after the handshake (TLS 1.3): reported as unreachable,
        // so that openraft backs off.
        assert!(
            matches!(&result, Err(StreamError::Connect(e)) if e.kind() != std::io::ErrorKind::TimedOut),
            "{who} certificate: expected a refusal, got {result:?}"
        );
    }

    // Nothing changed: same leader and term, the refusals are counted, and
    // the cluster still takes writes, on every node.
    let st = c.status(follower).await;
    assert_eq!(id_of(&st["leader_id"]).as_deref(), Some(leader_id.as_str()));
    assert_eq!(st["term"].as_u64(), Some(term_before), "the term moved");
    for reason in ["wrong_node", "wrong_cluster"] {
        let labels = [("direction", "received"), ("reason", reason)];
        let counted = metric(&c, follower, "raftq_peer_refusals_total", &labels).await;
        assert!(counted >= 1.0, "{reason} not counted");
    }
    let r = post_event(&c.client, &c.nodes[leader].api_url(), "after").await;
    let seq = r.expect("write").expect_seq();
    wait_applied_everywhere(&c, seq).await;
}

/// Applied up to `seq` on every live node, within 10 s.
async fn wait_applied_everywhere(c: &Cluster, seq: u64) {
    for i in c.live() {
        wait_until(Duration::from_secs(10), &format!("node {i} to apply seq {seq}"), async || {
            let st = c.status(i).await;
            match st["head_seq"].as_u64() {
                Some(head) if head >= seq => Ok(()),
                head => Err(format!("head_seq {head:?}")),
            }
        })
        .await;
    }
}

/// The HTTPS fallback, with real processes: one member restarted with
/// `--raft-transport https` neither offers the stream (a peer's dialer is
/// told so by ALPN, as by a build that predates it) nor dials it. Its
/// leader replicates to it over HTTPS, and once it leads it replicates to
/// the others over HTTPS: a cluster of mixed transports, as in a rolling
/// upgrade or a rollback, loses and stalls nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_the_stream_is_replicated_to_and_replicates_over_https() {
    let mut c = Cluster::builder().nodes(3).start().await;
    let leader = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let plain = c.live().into_iter().find(|&i| i != leader).expect("a follower");
    c.nodes[plain].push_args(&["--raft-transport", "https"]);
    c.restart(plain).await;
    let mut leader = c.wait_for_voters(3, Duration::from_secs(30)).await;
    if leader == plain {
        // Elected meanwhile: hand leadership to a streaming member, so that
        // both halves below run.
        leader =
            transfer(&c, plain, c.live().into_iter().find(|&i| i != plain).expect("other")).await;
    }

    // The Raft port of that member does not agree to the stream: the
    // crate's own dialer learns it from ALPN, as a peer's would.
    let addr = c.nodes[plain].raft_addr().to_string();
    let mut dialer = Dialer::new(node_stream_client(&c), addr, Pool::default());
    let asked = ask(&mut dialer, Kind::PreVote, 0, "", b"{}").await;
    assert!(matches!(asked, Err(StreamError::NotSpoken)), "the stream was offered: {asked:?}");

    // Replicated to it while a streaming member leads.
    let mut seq = 0;
    for i in 0..5 {
        let r = post_event(&c.client, &c.nodes[leader].api_url(), &format!("a{i}")).await;
        seq = r.expect("write").expect_seq();
    }
    wait_applied_everywhere(&c, seq).await;
    let https = [("transport", "https")];
    let sent = metric(&c, leader, "raftq_raft_rpcs_sent_total", &https).await;
    assert!(sent >= 1.0, "the leader sent nothing over HTTPS to the member without the stream");

    // It leads: everything it sends is HTTPS, and the others apply it.
    assert_eq!(transfer(&c, leader, plain).await, plain);
    for i in 0..5 {
        let r = post_event(&c.client, &c.nodes[plain].api_url(), &format!("b{i}")).await;
        seq = r.expect("write").expect_seq();
    }
    wait_applied_everywhere(&c, seq).await;
    let stream = [("transport", "stream")];
    assert_eq!(metric(&c, plain, "raftq_raft_rpcs_sent_total", &stream).await, 0.0);
    let sent = metric(&c, plain, "raftq_raft_rpcs_sent_total", &https).await;
    assert!(sent >= 5.0, "the plain leader sent {sent} HTTPS RPCs");
    assert_eq!(
        metric(&c, plain, "raftq_raft_stream_connections_total", &[]).await,
        0.0,
        "the plain member served a stream connection"
    );
    // And nothing was lost or doubled on the way: every node holds the ten
    // writes, in order.
    let want: Vec<String> =
        (0..5).map(|i| format!("a{i}")).chain((0..5).map(|i| format!("b{i}"))).collect();
    for i in c.live() {
        let (events, _) = c.all_events(i, "").await;
        let events: Vec<String> = events.into_iter().map(|(_, event)| event).collect();
        assert_eq!(events, want, "node {i}");
    }
}

/// Asks `from` (the leader) to hand leadership to `to`; returns the leader
/// every node then agrees on.
async fn transfer(c: &Cluster, from: usize, to: usize) -> usize {
    let id = c.node_id(to).await;
    let path = format!("/cluster/leader/transfer?to={id}");
    let r = c.request(from, reqwest::Method::POST, &path, None, &[], false).await;
    assert_eq!(r.status, reqwest::StatusCode::OK, "{r:?} {}", r.text());
    let now = c.leader().await;
    assert_eq!(now, to, "every node agrees on the new leader");
    now
}
