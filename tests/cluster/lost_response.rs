//! Issue 10, acceptance 5: the CLI is honest when a response is lost.
//!
//! A proxy between `raftq event` and the leader forwards the first POST and
//! the first DELETE, lets the leader apply them, and closes the client's
//! connection instead of passing the answer on (a crash of a middlebox, a
//! cut cable after the commit). The CLI's retries must not enqueue or remove
//! a second event: a POST carries one `Idempotency-Key` on every retry, a
//! DELETE names the seq it read at the front; and a result the CLI cannot
//! know is reported as unknown (exit 3), never as a failure or a success.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

use crate::harness::{Cluster, BIN};

/// A TLS-terminating HTTP/1.1 proxy to one upstream that swallows the
/// answer of the first request of each listed method.
struct LossyProxy {
    addr: SocketAddr,
    swallowed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

struct ProxyConfig {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    upstream: SocketAddr,
    /// Methods whose first answer is swallowed; each flips to `true` once done.
    swallow: Vec<(String, AtomicBool)>,
}

impl LossyProxy {
    fn start(certs: &Path, upstream: SocketAddr, swallow: &[&str]) -> LossyProxy {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(certs.join("node.pem"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(certs.join("node-key.pem")).unwrap();
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(certs.join("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(ProxyConfig {
            server: Arc::new(server),
            client: Arc::new(client),
            upstream,
            swallow: swallow.iter().map(|m| (m.to_string(), AtomicBool::new(false))).collect(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let swallowed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (swallowed2, stop2) = (swallowed.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let (config, swallowed) = (config.clone(), swallowed2.clone());
                        std::thread::spawn(move || {
                            let _ = serve(sock, &config, &swallowed);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        LossyProxy { addr, swallowed, stop }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One request head (as bytes, without its blank line) and its body.
fn read_request(tls: &mut impl Read) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte)? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
        if head.len() > 64 << 10 {
            return Err(std::io::Error::other("request head too long"));
        }
    }
    let head = String::from_utf8_lossy(&head[..head.len() - 4]).into_owned();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

fn serve(sock: TcpStream, config: &ProxyConfig, swallowed: &AtomicUsize) -> std::io::Result<()> {
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))?;
    let conn =
        rustls::ServerConnection::new(config.server.clone()).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    // One request per connection: the answer says `Connection: close`.
    let Some((head, body)) = read_request(&mut tls)? else { return Ok(()) };
    let method = head.split(' ').next().unwrap_or("").to_string();
    // Forward with `Connection: close` so the answer ends at EOF.
    let mut forwarded: Vec<u8> = head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .flat_map(|l| [l.as_bytes(), b"\r\n"].concat())
        .collect();
    forwarded.extend_from_slice(b"Connection: close\r\n\r\n");
    forwarded.extend_from_slice(&body);
    let upstream = TcpStream::connect(config.upstream)?;
    upstream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let client = rustls::ClientConnection::new(config.client.clone(), name)
        .map_err(std::io::Error::other)?;
    let mut up = rustls::StreamOwned::new(client, upstream);
    up.write_all(&forwarded)?;
    let mut answer = Vec::new();
    match up.read_to_end(&mut answer) {
        Ok(_) => {}
        // The server may end TLS without close_notify after the answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e),
    }
    let swallow = config
        .swallow
        .iter()
        .find(|(m, done)| *m == method && !done.swap(true, Ordering::SeqCst))
        .is_some();
    if swallow {
        swallowed.fetch_add(1, Ordering::SeqCst);
        // Drop the client's connection without a word (no close_notify).
        let (_, sock) = tls.into_parts();
        let _ = sock.shutdown(std::net::Shutdown::Both);
        return Ok(());
    }
    // Relay as is, but tell the client this connection ends here.
    let relayed = match answer.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => {
            let head: String = String::from_utf8_lossy(&answer[..end])
                .lines()
                .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                .map(|l| format!("{l}\r\n"))
                .collect();
            let mut out = format!("{head}Connection: close\r\n\r\n").into_bytes();
            out.extend_from_slice(&answer[end + 4..]);
            out
        }
        None => answer,
    };
    tls.write_all(&relayed)?;
    tls.flush()?;
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(())
}

struct Cli {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn raftq_event(url: &str, ca: &Path, args: &[&str]) -> Cli {
    let out = tokio::process::Command::new(BIN)
        .arg("event")
        .args(["--url", url, "--ca"])
        .arg(ca)
        .args(args)
        .env("RAFTQ_LOG", "warn")
        .output()
        .await
        .expect("run raftq event");
    Cli {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn listing(c: &Cluster, i: usize) -> (Vec<(u64, String)>, Value) {
    let events = c.all_events(i, "").await.0;
    let status = c.status(i).await;
    (events, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_retries_after_lost_responses_write_exactly_once() {
    let c = Cluster::start(3).await;
    let l = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let ca: PathBuf = c.certs.join("ca.pem");
    let proxy = LossyProxy::start(&c.certs, c.nodes[l].api_addr(), &["POST", "DELETE"]);

    // POST: the first answer is lost; the retry (same key) gets the same seq.
    let out = raftq_event(&proxy.url(), &ca, &["post", "only-once"]).await;
    assert_eq!(out.code, Some(0), "post through a lossy proxy: {}", out.stderr);
    assert_eq!(out.stdout.trim(), "1", "{}", out.stderr);
    assert_eq!(proxy.swallowed.load(Ordering::SeqCst), 1, "the proxy swallowed no POST answer");
    let (events, status) = listing(&c, l).await;
    assert_eq!(events, vec![(1, "only-once".to_string())], "exactly one event enqueued");
    assert_eq!(status["queue_len"].as_u64(), Some(1), "{status}");

    // DELETE: the first answer is lost after the leader removed seq 1; the
    // retry must not remove seq 2, and the CLI says it cannot know.
    let r = c.post(l, "must-stay").await;
    assert_eq!(r.expect_seq(), 2);
    let out = raftq_event(&proxy.url(), &ca, &["delete"]).await;
    assert_eq!(proxy.swallowed.load(Ordering::SeqCst), 2, "the proxy swallowed no DELETE answer");
    assert_eq!(out.code, Some(3), "a lost DELETE answer is an unknown outcome: {}", out.stderr);
    assert!(
        out.stderr.contains("outcome unknown") && out.stderr.contains("event 1"),
        "{}",
        out.stderr
    );
    let (events, status) = listing(&c, l).await;
    assert_eq!(status["queue_len"].as_u64(), Some(1), "exactly one event dequeued: {status}");
    assert_eq!(status["front_seq"].as_u64(), Some(2), "{status}");
    assert_eq!(events.len(), 2, "{events:?}");

    // With nothing lost, the CLI removes the front and prints it.
    let out = raftq_event(&proxy.url(), &ca, &["delete"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "must-stay");
    let out = raftq_event(&proxy.url(), &ca, &["delete"]).await;
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""), "empty queue: {}", out.stderr);
}
