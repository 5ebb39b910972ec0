//! Bounds on every TCP listener: how many connections, and how long one may
//! sit idle. An unauthenticated peer can open connections and send nothing;
//! what it costs us must not grow with how many it opens or how long it
//! waits.
//!
//! - [`LimitedAcceptor`] admits a connection only while the listener's
//!   connection cap has room (a semaphore permit travels with the stream and
//!   is returned when it closes); beyond the cap, the connection is closed at
//!   once, counted, and logged at most every 10 s.
//! - [`Limited`] closes a connection on which nothing was read or written
//!   for the idle timeout (HTTP/2 clients that hold a connection open
//!   without a request; a long poll or a watch stream writes, so it stays).
//! - The TLS handshake and the HTTP/1 header read have their own, shorter
//!   timeouts (set where the servers are built, see `node`), so a client that
//!   trickles a header is cut off long before the idle timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

/// One listener's connection accounting, shared with `/metrics`.
#[derive(Debug)]
pub struct ListenerStats {
    pub name: &'static str,
    pub max_connections: usize,
    permits: Arc<Semaphore>,
    pub refused: AtomicU64,
    /// Connections admitted since start (a counter: with `refused`, every
    /// accepted connection is accounted for).
    pub admitted: AtomicU64,
    /// Most connections open at once since start: the cap held throughout,
    /// not just when `/metrics` was read.
    pub peak: AtomicUsize,
    last_logged: std::sync::Mutex<Option<std::time::Instant>>,
}

impl ListenerStats {
    pub fn new(name: &'static str, max_connections: usize) -> Arc<Self> {
        Arc::new(ListenerStats {
            name,
            max_connections,
            permits: Arc::new(Semaphore::new(max_connections)),
            refused: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            peak: AtomicUsize::new(0),
            last_logged: std::sync::Mutex::new(None),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max_connections - self.permits.available_permits()
    }

    /// A permit for one more connection, or `None` at the cap (counted and,
    /// at most every 10 s, logged).
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.admitted.fetch_add(1, Ordering::Relaxed);
                self.peak.fetch_max(self.open(), Ordering::Relaxed);
                Some(permit)
            }
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                let now = std::time::Instant::now();
                if let Ok(mut last) = self.last_logged.lock() {
                    if last.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10)) {
                        *last = Some(now);
                        tracing::warn!(
                            listener = self.name,
                            max = self.max_connections,
                            refused_total = self.refused.load(Ordering::Relaxed),
                            "connection cap reached: refusing new connections (raise the \
                             listener's --max-*-connections if this is legitimate load)"
                        );
                    }
                }
                None
            }
        }
    }
}

/// Wraps an acceptor: admits within the cap, then bounds idleness.
#[derive(Clone)]
pub struct LimitedAcceptor<A> {
    inner: A,
    stats: Arc<ListenerStats>,
    idle_timeout: Duration,
}

impl<A> LimitedAcceptor<A> {
    pub fn new(inner: A, stats: Arc<ListenerStats>, idle_timeout: Duration) -> Self {
        LimitedAcceptor { inner, stats, idle_timeout }
    }
}

impl<A, I, S> Accept<I, S> for LimitedAcceptor<A>
where
    A: Accept<I, S> + Clone + Send + 'static,
    A::Future: Send,
    A::Stream: Send,
    A::Service: Send,
    I: Send + 'static,
    S: Send + 'static,
{
    type Stream = Limited<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let Some(permit) = self.stats.admit() else {
            // Dropping the stream closes the connection.
            drop(stream);
            return Box::pin(std::future::ready(Err(io::Error::other("connection cap reached"))));
        };
        let inner = self.inner.accept(stream, service);
        let idle = self.idle_timeout;
        Box::pin(async move {
            let (stream, service) = inner.await?;
            Ok((Limited::new(stream, permit, idle), service))
        })
    }
}

/// A connection that holds its cap permit and ends when idle too long.
pub struct Limited<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
    idle_timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Limited<S> {
    pub fn new(inner: S, permit: OwnedSemaphorePermit, idle_timeout: Duration) -> Self {
        Limited {
            inner,
            _permit: permit,
            idle_timeout,
            deadline: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    fn touch(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle_timeout);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle past the idle timeout")
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.touch();
                }
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.touch();
                }
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Descriptors kept back for everything but client connections: RocksDB's
/// files, peers, gossip, logs.
const FD_RESERVE: u64 = 1024;

/// Raises the open-file soft limit to the hard limit (as Go's runtime does):
/// the connection caps are meaningless if the process runs out of
/// descriptors first, and then RocksDB, not a client, gets EMFILE. Warns
/// when the caps plus a reserve still do not fit.
pub fn raise_fd_limit(connection_caps: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let mut current = limit.current;
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum) {
        if soft < hard {
            let raised = rustix::process::Rlimit { current: Some(hard), maximum: Some(hard) };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => current = Some(hard),
                Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
            }
        }
    }
    if let Some(current) = current {
        let needed = connection_caps.saturating_add(FD_RESERVE);
        if current < needed {
            tracing::warn!(
                open_file_limit = current,
                connection_caps,
                "the connection caps plus {FD_RESERVE} reserved descriptors exceed the open-file \
                 limit: raise `ulimit -n` (LimitNOFILE=, --ulimit nofile=) or lower the \
                 --max-*-connections flags, or clients can exhaust descriptors before the caps"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_cap_admits_up_to_max_and_counts_refusals() {
        let stats = ListenerStats::new("test", 2);
        let a = stats.admit().expect("first");
        let _b = stats.admit().expect("second");
        assert_eq!(stats.open(), 2);
        assert!(stats.admit().is_none());
        assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
        drop(a);
        assert_eq!(stats.open(), 1);
        assert!(stats.admit().is_some(), "a closed connection frees its slot");
        assert_eq!(stats.admitted.load(Ordering::Relaxed), 3);
        assert_eq!(stats.peak.load(Ordering::Relaxed), 2, "the most open at once");
    }

    #[tokio::test]
    async fn an_idle_connection_ends_and_an_active_one_does_not() {
        let stats = ListenerStats::new("test", 4);
        let (client, server) = tokio::io::duplex(64);
        let mut limited = Limited::new(server, stats.admit().unwrap(), Duration::from_millis(200));
        let mut client = client;
        // Activity keeps it alive past the timeout.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            limited.read_exact(&mut byte).await.unwrap();
        }
        // Silence ends it.
        let mut byte = [0u8; 1];
        let started = std::time::Instant::now();
        let err = limited.read(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(150), "{:?}", started.elapsed());
        drop(limited);
        assert_eq!(stats.open(), 0, "the permit is returned with the connection");
    }
}
