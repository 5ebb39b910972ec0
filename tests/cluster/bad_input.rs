//! SPEC §2 errors at the process level: bad requests never crash a node,
//! and the Raft port refuses clients without a certificate (mTLS). The
//! status/code/no-side-effect matrix of every documented 4xx runs in-process
//! (`tests/inproc/errors.rs`), where it needs no child process.

use std::net::TcpStream;
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::{
    curl, error_chain, http_client, install_crypto_provider, status_brief, tls_probe, u64_field,
    Cluster, FORM,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_do_not_crash_the_node_and_raft_needs_mtls() {
    let mut c = Cluster::start(1).await;
    c.wait_for_voters(1, Duration::from_secs(30)).await;
    let r = c.post(0, "keep").await;
    assert_eq!((r.status, r.seq()), (StatusCode::CREATED, Some(1)), "{r:?}");

    // Malformed input of each kind, and a 2 MiB body (limit 1 MiB) sent
    // with the real curl, which reads the early 413 while still uploading.
    let json = "application/json";
    for (method, body, want) in [
        (Method::POST, (FORM, b"event=%FF%FEA".to_vec()), StatusCode::BAD_REQUEST),
        (Method::POST, (json, br#"{"event": "x""#.to_vec()), StatusCode::BAD_REQUEST),
        (Method::PUT, (FORM, b"event=put".to_vec()), StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let r = c.request(0, method, "/event", Some(body), &[], false).await;
        r.assert_json_error(want);
    }
    let big = c.dir().join("big.txt");
    std::fs::write(&big, vec![b'a'; 2 * 1024 * 1024]).expect("write big body");
    let out = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        &format!("@{}", big.display()),
        "-o",
        "/dev/null",
        &c.url(0, "/event"),
    ])
    .await;
    assert_eq!(out.http_code, "413", "2 MiB body: {out:?}");
    let status = c.status(0).await;
    assert_eq!(u64_field(&status, "head_seq"), 1, "{}", status_brief(&status));
    assert!(c.nodes[0].exited().is_none(), "the node exited");

    // Logs written to a file carry no terminal colour codes.
    let log = c.nodes[0].log_tail(usize::MAX);
    assert!(log.contains("node started"), "no start line in the log:\n{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in a log file:\n{log}");

    // The Raft port: open (TCP), but TLS with client certificates.
    let raft = c.nodes[0].raft_addr();
    TcpStream::connect_timeout(&raft, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("the Raft port {raft} does not accept TCP: {e}"));
    // An HTTPS client that trusts the CA but has no certificate gets no
    // HTTP response.
    install_crypto_provider();
    let no_cert = http_client(&c.ca_pem, false, Duration::from_secs(5));
    for path in ["/", "/raft/append", "/status"] {
        let url = format!("https://{raft}{path}");
        match no_cert.get(&url).send().await {
            Ok(r) => panic!(
                "a client without a certificate got an HTTP response from the Raft port: GET {url} -> {}",
                r.status()
            ),
            Err(e) => eprintln!("no-cert GET {url} failed as expected: {}", error_chain(&e)),
        }
    }
    // At the TLS level: without a certificate the session is refused; with
    // the node certificate it is kept (so the refusal is about the missing
    // certificate, not a closed or non-TLS port).
    let ca = c.certs.join("ca.pem");
    let cert = c.certs.join("node.pem");
    let key = c.certs.join("node-key.pem");
    let (without, with) = tokio::task::spawn_blocking(move || {
        (
            tls_probe(raft, &ca, None, Duration::from_secs(5)),
            tls_probe(raft, &ca, Some((&cert, &key)), Duration::from_millis(1500)),
        )
    })
    .await
    .expect("TLS probe panicked");
    assert!(
        without.is_err(),
        "the Raft port kept a TLS session without a client certificate: {without:?}"
    );
    assert!(with.is_ok(), "the Raft port refused the node certificate: {with:?}");

    // Still alive after all that.
    let r = c.get(0, "/healthz").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
}
