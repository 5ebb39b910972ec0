//! The Raft stream's connections: reading and writing frames (see
//! `raft::frame`), and the sender's end, one TLS connection per peer that
//! the replication task drives itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::frame::{self, FrameError, PREFIX};

/// How long a sender waits for a TCP connect and TLS handshake to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Idle connections kept per peer address, and for how long: openraft makes
/// a new client for every election round, and a pooled connection spares
/// each a TLS handshake.
const POOL_IDLE_MAX: usize = 4;
const POOL_IDLE_AGE: Duration = Duration::from_secs(30);
/// TCP keepalive on a sender's connections: first probe after 2 s idle,
/// then every second, given up after 3 unanswered.
const KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(2))
    .with_interval(Duration::from_secs(1))
    .with_retries(3);

/// Reads one frame (without its prefix). `Ok(None)`: the peer closed the
/// connection cleanly between frames. A frame over `max` is refused from its
/// prefix alone; the body is read as it arrives, never allocated ahead from
/// a length the peer claims.
pub async fn read_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, StreamError> {
    let mut prefix = [0u8; PREFIX];
    let first = io.read(&mut prefix).await?;
    if first == 0 {
        return Ok(None);
    }
    io.read_exact(&mut prefix[first..]).await?;
    let len = frame::frame_len(prefix, max)?;
    // Sized for the common frame at once; a larger claim grows as its bytes
    // arrive (the peer holds a node certificate, but a claim is not bytes).
    let mut body = Vec::with_capacity(len.min(1 << 20));
    let read = io.take(len as u64).read_to_end(&mut body).await?;
    if read < len {
        return Err(StreamError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(Some(body))
}

/// Writes one whole frame (prefix included) and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, frame: &[u8]) -> std::io::Result<()> {
    io.write_all(frame).await?;
    io.flush().await
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// No connection: the peer is down or unreachable.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The peer does not speak the Raft stream (an older build, or one under
    /// `--raft-transport https`): use HTTPS.
    #[error("the peer did not negotiate the raft stream")]
    NotSpoken,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Idle Raft stream connections of one node, by peer address. A connection
/// enters only between frames (never one whose exchange was cancelled), so
/// whoever takes it may write a new frame at once.
#[derive(Clone, Default)]
pub struct Pool {
    idle: Arc<Mutex<HashMap<String, Vec<(Instant, TlsStream<TcpStream>)>>>>,
}

impl Pool {
    fn take(&self, addr: &str) -> Option<TlsStream<TcpStream>> {
        let mut idle = self.idle.lock().ok()?;
        let conns = idle.get_mut(addr)?;
        conns.retain(|(since, _)| since.elapsed() < POOL_IDLE_AGE);
        let conn = conns.pop().map(|(_, conn)| conn);
        if conns.is_empty() {
            idle.remove(addr);
        }
        conn
    }

    fn put(&self, addr: &str, conn: TlsStream<TcpStream>) {
        let Ok(mut idle) = self.idle.lock() else { return };
        // Every address, not just this one: a removed peer's connections
        // would otherwise stay open for the life of the node.
        idle.retain(|_, conns| {
            conns.retain(|(since, _)| since.elapsed() < POOL_IDLE_AGE);
            !conns.is_empty()
        });
        let conns = idle.entry(addr.to_string()).or_default();
        if conns.len() < POOL_IDLE_MAX {
            conns.push((Instant::now(), conn));
        }
    }
}

/// The sender's end of the Raft stream to one peer: takes a pooled
/// connection or connects on first use, keeps it while it works, drops it on
/// any error or timeout (a half-written frame must never be followed by
/// another), and gives it back to the pool when dropped between frames.
pub struct Dialer {
    connector: TlsConnector,
    /// `host:port` of the peer's Raft port.
    addr: String,
    conn: Option<TlsStream<TcpStream>>,
    /// An exchange started and has not finished: if its future was dropped
    /// (cancelled), `conn` may hold half a frame.
    busy: bool,
    pool: Pool,
}

impl Drop for Dialer {
    fn drop(&mut self) {
        if let (Some(conn), false) = (self.conn.take(), self.busy) {
            self.pool.put(&self.addr, conn);
        }
    }
}

impl Dialer {
    /// `config` must offer [`frame::ALPN`] (see `tls`).
    pub fn new(config: Arc<rustls::ClientConfig>, addr: String, pool: Pool) -> Self {
        Dialer { connector: TlsConnector::from(config), addr, conn: None, busy: false, pool }
    }

    /// Sends one request frame and returns the response frame (without its
    /// prefix), all within `timeout`. A reused connection that fails (the
    /// peer closed it while idle, or restarted) is replaced once: every Raft
    /// RPC may be repeated, as openraft itself does.
    pub async fn exchange(
        &mut self,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, StreamError> {
        if self.busy {
            self.conn = None;
        }
        self.busy = true;
        let result = tokio::time::timeout(timeout, self.exchange_inner(request)).await;
        self.busy = false;
        match result {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            // Still connecting: the peer is as good as unreachable (a
            // dropped SYN), which openraft backs off from; a timeout on a
            // connection is a slow peer, which it retries.
            Err(_) if self.conn.is_none() => {
                Err(StreamError::Connect(std::io::ErrorKind::TimedOut.into()))
            }
            Err(_) => {
                self.conn = None;
                Err(StreamError::Timeout(timeout))
            }
        }
    }

    async fn exchange_inner(&mut self, request: &[u8]) -> Result<Vec<u8>, StreamError> {
        if self.conn.is_none() {
            self.conn = self.pool.take(&self.addr);
        }
        if let Some(conn) = self.conn.as_mut() {
            match round_trip(conn, request).await {
                Ok(answer) => return Ok(answer),
                Err(e) => tracing::debug!(peer = %self.addr, error = %e, "raft stream reconnects"),
            }
        }
        self.conn = None;
        let fresh = self.connect().await?;
        let conn = self.conn.insert(fresh);
        // A fresh connection that fails its first exchange was refused: with
        // TLS 1.3 a server rejects our certificate only after the handshake
        // (an alert on the first read). Unreachable, so openraft backs off
        // instead of handshaking again at every heartbeat.
        round_trip(conn, request).await.map_err(|e| match e {
            StreamError::Io(e) => StreamError::Connect(e),
            e => e,
        })
    }

    async fn connect(&self) -> Result<TlsStream<TcpStream>, StreamError> {
        let (host, _) = self.addr.rsplit_once(':').ok_or_else(|| {
            StreamError::Connect(std::io::Error::other(format!("no port in {}", self.addr)))
        })?;
        // `[::1]` in an address is `::1` as a TLS server name.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| StreamError::Connect(std::io::Error::other(e)))?;
        let connect = async {
            let tcp = TcpStream::connect(&self.addr).await?;
            // One request frame is written in a few TLS records; Nagle would
            // hold the tail behind the peer's delayed ACK.
            tcp.set_nodelay(true)?;
            // A connection held idle (pooled, or replication with nothing to
            // send) that a partition or a middlebox dropped is found by the
            // kernel within a few seconds instead of by the next RPC's
            // timeout (the HTTPS client sends HTTP/2 pings for this).
            socket2::SockRef::from(&tcp).set_tcp_keepalive(&KEEPALIVE)?;
            self.connector.connect(name, tcp).await
        };
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| StreamError::Connect(std::io::ErrorKind::TimedOut.into()))?
            .map_err(StreamError::Connect)?;
        if conn.get_ref().1.alpn_protocol() != Some(frame::ALPN) {
            return Err(StreamError::NotSpoken);
        }
        Ok(conn)
    }
}

async fn round_trip(
    conn: &mut TlsStream<TcpStream>,
    request: &[u8],
) -> Result<Vec<u8>, StreamError> {
    write_frame(conn, request).await?;
    match read_frame(conn, frame::FRAME_MAX).await? {
        Some(answer) => Ok(answer),
        None => Err(StreamError::Io(std::io::ErrorKind::UnexpectedEof.into())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::tls::certs::{write_cluster_certs, CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE};
    use crate::tls::TlsMaterial;

    /// `body` as a whole frame, prefix included (what `exchange` sends).
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// A peer's Raft port on 127.0.0.1 with real TLS and client
    /// certificates: answers each frame with its own body, except `stall`
    /// (answered 10 s late) and `close` (answered, then the connection is
    /// closed, as an idle timeout would). Offers the stream's ALPN only when
    /// `stream`. Returns the address, the count of connections accepted, a
    /// client config for it, and the dir that holds the certificates.
    async fn peer(
        stream: bool,
    ) -> (String, Arc<AtomicUsize>, Arc<rustls::ClientConfig>, tempfile::TempDir) {
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        write_cluster_certs(dir.path(), &["127.0.0.1".to_string()]).expect("certs");
        let material = TlsMaterial::load(
            &dir.path().join(NODE_CERT_FILE),
            &dir.path().join(NODE_KEY_FILE),
            &dir.path().join(CA_CERT_FILE),
        )
        .expect("material");
        let acceptor = tokio_rustls::TlsAcceptor::from(
            material.raft_server_config(stream).expect("server config"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = acceptor.accept(tcp).await else { return };
                    while let Ok(Some(body)) = read_frame(&mut conn, 1 << 20).await {
                        if body == b"stall" {
                            // Never answered within a test: the dialer must
                            // not be waiting for it.
                            tokio::time::sleep(Duration::from_secs(10)).await;
                        }
                        if write_frame(&mut conn, &framed(&body)).await.is_err() || body == b"close"
                        {
                            return;
                        }
                    }
                });
            }
        });
        let client = material.raft_stream_client_config().expect("client config");
        (addr, accepted, client, dir)
    }

    const LONG: Duration = Duration::from_secs(5);

    /// One exchange that must succeed: the answer's body.
    async fn ask(dialer: &mut Dialer, body: &[u8]) -> Vec<u8> {
        dialer.exchange(&framed(body), LONG).await.expect("an answer")
    }

    /// Starts a `stall` exchange and drops its future after its request went
    /// out, as openraft does to an RPC it gives up on.
    async fn cancel_stalled(dialer: &mut Dialer) {
        let request = framed(b"stall");
        let stalled = dialer.exchange(&request, LONG);
        let cancelled = tokio::time::timeout(Duration::from_millis(50), stalled).await;
        assert!(cancelled.is_err(), "the stalled exchange was answered early");
    }

    /// The hazard `busy` guards: an exchange whose future is dropped after
    /// its request went out leaves that request's answer on the wire. The
    /// next exchange must not read it as its own: it gets a new connection.
    #[tokio::test]
    async fn a_cancelled_exchange_never_leaves_its_answer_to_the_next() {
        let (addr, accepted, client, _dir) = peer(true).await;
        let mut dialer = Dialer::new(client, addr, Pool::default());
        assert_eq!(ask(&mut dialer, b"a").await, b"a");
        cancel_stalled(&mut dialer).await;
        assert_eq!(ask(&mut dialer, b"b").await, b"b");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the cancelled connection was reused");
    }

    #[tokio::test]
    async fn a_timed_out_exchange_drops_its_connection() {
        let (addr, accepted, client, _dir) = peer(true).await;
        let mut dialer = Dialer::new(client, addr, Pool::default());
        // Connected first: the short deadline below must hit the exchange,
        // not the handshake (which would be a `Connect` timeout).
        assert_eq!(ask(&mut dialer, b"w").await, b"w");
        let late = dialer.exchange(&framed(b"stall"), Duration::from_millis(50)).await;
        assert!(matches!(late, Err(StreamError::Timeout(_))), "{late:?}");
        assert_eq!(ask(&mut dialer, b"c").await, b"c");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the timed-out connection was reused");
    }

    /// A pooled or held connection that the peer closed while idle fails
    /// at once; the same call goes on over a new one, with no error.
    #[tokio::test]
    async fn a_connection_the_peer_closed_is_replaced_within_the_call() {
        let (addr, accepted, client, _dir) = peer(true).await;
        let mut dialer = Dialer::new(client, addr, Pool::default());
        assert_eq!(ask(&mut dialer, b"close").await, b"close");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(ask(&mut dialer, b"d").await, b"d");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// Dialers of one node share idle connections (openraft makes a new
    /// client per election round), but a connection whose exchange was
    /// cancelled never enters the pool.
    #[tokio::test]
    async fn idle_connections_pass_between_dialers_but_never_a_cancelled_one() {
        let (addr, accepted, client, _dir) = peer(true).await;
        let pool = Pool::default();
        let mut first = Dialer::new(client.clone(), addr.clone(), pool.clone());
        assert_eq!(ask(&mut first, b"1").await, b"1");
        drop(first);
        let mut second = Dialer::new(client.clone(), addr.clone(), pool.clone());
        assert_eq!(ask(&mut second, b"2").await, b"2");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "the idle connection was not reused");
        cancel_stalled(&mut second).await;
        drop(second);
        let mut third = Dialer::new(client, addr, pool);
        assert_eq!(ask(&mut third, b"3").await, b"3");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a cancelled connection was pooled");
    }

    /// A peer that does not offer the stream (an older build, or
    /// `--raft-transport https`) is told apart from a broken one.
    #[tokio::test]
    async fn a_peer_without_the_stream_is_not_spoken_not_unreachable() {
        let (addr, _accepted, client, _dir) = peer(false).await;
        let mut dialer = Dialer::new(client, addr, Pool::default());
        let result = dialer.exchange(&framed(b"x"), LONG).await;
        assert!(matches!(result, Err(StreamError::NotSpoken)), "{result:?}");
    }

    #[tokio::test]
    async fn frames_round_trip_through_a_pipe_and_eof_between_frames_is_clean() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let frame = frame::response(frame::Status::Answer, &[7u8; 1000]).unwrap();
        let writer = async {
            write_frame(&mut a, &frame).await.unwrap();
            drop(a);
        };
        let reader = async {
            let got = read_frame(&mut b, frame::FRAME_MAX).await.unwrap().unwrap();
            assert_eq!(got, &frame[PREFIX..]);
            assert!(read_frame(&mut b, frame::FRAME_MAX).await.unwrap().is_none());
        };
        tokio::join!(writer, reader);
    }

    #[tokio::test]
    async fn an_oversized_or_truncated_frame_is_an_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&1000u32.to_be_bytes()).await.unwrap();
        let err = read_frame(&mut b, 999).await.unwrap_err();
        assert!(matches!(err, StreamError::Frame(FrameError::TooLarge { len: 1000, max: 999 })));

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(b"abc").await.unwrap();
        drop(a);
        let err = read_frame(&mut b, 999).await.unwrap_err();
        assert!(matches!(err, StreamError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof));

        // A prefix cut short is not a clean close either.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0]).await.unwrap();
        drop(a);
        assert!(read_frame(&mut b, 999).await.is_err());
    }
}
