//! Issue 10, acceptance 3: bounded ports. A client that trickles half a
//! request header is cut off after the header timeout; thousands of idle
//! connections cost a bounded number of slots and do not stop writes,
//! reads or replication; the caps show in `/metrics`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::harness::{http_client, Cluster};

const HEADER_TIMEOUT_SECS: u64 = 3;
const API_CAP: usize = 1000;

/// TLS to `addr` (trusting `ca_pem`), then half a request header; returns how
/// long the server took to close the connection.
fn stall_half_a_header(addr: std::net::SocketAddr, ca_pem: &std::path::Path) -> Duration {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").unwrap();
    tls.flush().unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return started.elapsed(),
            // hyper may answer 408 before it closes; keep reading to the end.
            Ok(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_and_idle_floods_are_bounded() {
    let c = Cluster::builder()
        .nodes(3)
        .args([
            "--header-timeout",
            &format!("{HEADER_TIMEOUT_SECS}s"),
            "--max-api-connections",
            &API_CAP.to_string(),
        ])
        .start()
        .await;
    let l = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let addr = c.nodes[l].api_addr();
    let mut acked = vec![];
    let r = c.post(l, "before-flood").await;
    acked.push((r.expect_seq(), "before-flood".to_string()));

    // Half a header, then silence: closed after the header timeout.
    let ca = c.certs.join("ca.pem");
    let took = tokio::task::spawn_blocking(move || stall_half_a_header(addr, &ca)).await.unwrap();
    assert!(
        took >= Duration::from_millis(HEADER_TIMEOUT_SECS * 1000 - 500)
            && took < Duration::from_secs(HEADER_TIMEOUT_SECS + 8),
        "a stalled header must be cut off after about {HEADER_TIMEOUT_SECS} s, took {took:?}"
    );

    // 5 000 connections that never say a word. The test's own client keeps
    // its pooled connection, made before the flood.
    let metric = |metrics: &str, name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{listener=\"api\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{metrics}"))
    };
    let before = c.get(l, "/metrics").await.text();
    let (admitted_before, refused_before) = (
        metric(&before, "raftq_listener_connections_admitted_total"),
        metric(&before, "raftq_listener_connections_refused_total"),
    );
    let flood: usize = 5000;
    let flood_started = Instant::now();
    let sockets = tokio::task::spawn_blocking(move || {
        let mut held = Vec::with_capacity(flood);
        for _ in 0..flood {
            match TcpStream::connect(addr) {
                Ok(s) => held.push(s),
                Err(e) => panic!("connect #{}: {e} (raise `ulimit -n`?)", held.len()),
            }
        }
        held
    })
    .await
    .unwrap();

    // Writes, linearizable reads and replication go on.
    for i in 0..20 {
        let event = format!("during-flood-{i}");
        let r = c.post(l, &event).await;
        assert_eq!(r.status, StatusCode::CREATED, "write during the flood: {r:?}");
        acked.push((r.expect_seq(), event));
    }

    // Every flood connection is accounted for once the node has accepted
    // them all (a loaded machine drains its accept backlog slowly, so wait
    // for that rather than read the counters at a fixed moment).
    let deadline = Instant::now() + Duration::from_secs(90);
    let (metrics, admitted, refused) = loop {
        let metrics = c.get(l, "/metrics").await.text();
        let admitted =
            metric(&metrics, "raftq_listener_connections_admitted_total") - admitted_before;
        let refused = metric(&metrics, "raftq_listener_connections_refused_total") - refused_before;
        if admitted + refused >= flood as f64 || Instant::now() > deadline {
            break (metrics, admitted, refused);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = flood_started.elapsed();
    eprintln!("flood of {flood}: {admitted} admitted, {refused} refused, accounted in {took:?}");
    assert!(
        admitted + refused >= flood as f64,
        "the node accounts for every connection of the flood within 90 s: \
         {admitted} admitted + {refused} refused of {flood}"
    );
    assert_eq!(metric(&metrics, "raftq_listener_connections_max"), API_CAP as f64);
    assert!(metric(&metrics, "raftq_listener_connections") <= API_CAP as f64);
    assert!(
        metric(&metrics, "raftq_listener_connections_peak") <= API_CAP as f64,
        "never more than the cap open at once"
    );
    // What the flood costs is bounded by the cap and the header timeout, not
    // by its size: a slot is held for at most one header timeout, so over
    // `took` at most `cap` connections per timeout (plus the first round)
    // get in, and everything beyond is refused.
    let rounds = (took.as_secs_f64() / HEADER_TIMEOUT_SECS as f64).ceil() + 1.0;
    assert!(
        admitted <= API_CAP as f64 * rounds,
        "at most {API_CAP} connections per {HEADER_TIMEOUT_SECS} s get a slot: {admitted} \
         admitted in {took:?}"
    );
    assert!(
        refused >= flood as f64 - API_CAP as f64 * rounds,
        "connections beyond the cap are refused: {refused} of {flood} in {took:?}"
    );
    assert!(refused >= 1.0, "a flood of {flood} over a cap of {API_CAP} meets refusals");
    for f in c.live().into_iter().filter(|&i| i != l) {
        c.check_acked(f, &acked).await;
    }

    // The idle ones are dropped after the handshake timeout: a new client
    // on a new connection gets in again.
    tokio::time::sleep(Duration::from_secs(HEADER_TIMEOUT_SECS + 2)).await;
    let fresh = http_client(&c.ca_pem, false, Duration::from_secs(5));
    let r = crate::harness::post_event(&fresh, &c.nodes[l].api_url(), "after-flood").await;
    let r = r.unwrap_or_else(|e| panic!("a new connection after the flood: {e}"));
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    drop(sockets);
}
