//! The node's TCP listeners: bound before anything starts, then served
//! until a shutdown token fires (mini-redis' `run(listener, shutdown)`).
//!
//! Binding first has two uses. A port conflict fails the start before any
//! task runs, and a caller may ask for port 0 and learn the port the kernel
//! chose ([`Listeners::local_addrs`]): the node advertises that port, and an
//! in-process test talks to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::accept::{Accept, NoDelayAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use futures_util::future::BoxFuture;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::config::Config;
use super::NodeError;
use crate::listener::{Limited, LimitedAcceptor, ListenerStats};

/// Listening sockets of one node, already bound (non-blocking, for tokio).
pub struct Listeners {
    pub api: std::net::TcpListener,
    pub raft: std::net::TcpListener,
    /// Maze event source and user clients; `None` with `no_maze`.
    pub maze: Option<MazeListeners>,
}

pub struct MazeListeners {
    pub source: std::net::TcpListener,
    pub clients: std::net::TcpListener,
}

/// Where a node's listeners are bound (the real ports, also for port 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundAddrs {
    pub api: SocketAddr,
    pub raft: SocketAddr,
    /// Maze source and client ports, unless `no_maze`.
    pub maze: Option<(SocketAddr, SocketAddr)>,
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub fn bind(config: &Config) -> Result<Self, NodeError> {
        let maze = if config.no_maze {
            None
        } else {
            Some(MazeListeners {
                source: bind("maze source port", config.maze_source_addr)?,
                clients: bind("maze client port", config.maze_client_addr)?,
            })
        };
        Ok(Listeners {
            api: bind("api port", config.api_addr)?,
            raft: bind("raft port", config.raft_addr)?,
            maze,
        })
    }

    pub fn local_addrs(&self) -> Result<BoundAddrs, NodeError> {
        let addr = |what: &'static str, l: &std::net::TcpListener| {
            l.local_addr().map_err(|source| NodeError::Bind {
                what,
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })
        };
        let maze = match &self.maze {
            None => None,
            Some(m) => {
                Some((addr("maze source port", &m.source)?, addr("maze client port", &m.clients)?))
            }
        };
        Ok(BoundAddrs {
            api: addr("api port", &self.api)?,
            raft: addr("raft port", &self.raft)?,
            maze,
        })
    }
}

/// Connections the kernel queues for a port until the node accepts them.
/// std's `bind` asks for 128: a burst of new clients (a restart of every
/// client at once, or a flood) then overflows the queue, and the kernel
/// drops SYNs that clients resend only after 1 s, 3 s, 7 s. The node accepts
/// (and refuses beyond its connection caps) far faster than that, so a
/// deeper queue costs nothing. Linux caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: i32 = 4096;

fn bind(what: &'static str, addr: SocketAddr) -> Result<std::net::TcpListener, NodeError> {
    use socket2::{Domain, Socket, Type};
    let err = |source| NodeError::Bind { what, addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(err)?;
    // As std's bind does: a restarted node can take its port back at once.
    socket.set_reuse_address(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(LISTEN_BACKLOG).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    Ok(socket.into())
}

/// How an HTTPS listener bounds what a client can hold (see `listener`).
pub(super) struct ServerLimits {
    pub stats: Arc<ListenerStats>,
    pub handshake_and_header: Duration,
    pub idle: Duration,
    pub http2_streams: u32,
    /// What one HTTP/2 stream, and one connection, may send before the
    /// server reads it: bounds buffered request bodies per connection.
    pub stream_window: u32,
    pub connection_window: u32,
    /// How long open requests may finish once shutdown starts.
    pub shutdown_grace: Duration,
}

type Acceptor = RustlsAcceptor<LimitedAcceptor<NoDelayAcceptor>>;

/// A TLS connection on one of our listeners, after the handshake.
pub(super) type TlsConn = tokio_rustls::server::TlsStream<Limited<TcpStream>>;

/// Serves a connection that negotiated a protocol other than HTTP.
pub(super) type Divert = Arc<dyn Fn(TlsConn) -> BoxFuture<'static, ()> + Send + Sync>;

/// The TLS acceptor, plus: a connection whose ALPN is `protocol` is handed
/// to `divert` (the Raft stream on the Raft port) instead of to HTTP. It
/// holds the same connection permit and idle limit as an HTTP connection.
#[derive(Clone)]
struct AlpnAcceptor {
    tls: Acceptor,
    divert: Option<(&'static [u8], Divert)>,
}

impl<S: Send + 'static> Accept<TcpStream, S> for AlpnAcceptor {
    type Stream = TlsConn;
    type Service = S;
    type Future = BoxFuture<'static, std::io::Result<(TlsConn, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let handshake = self.tls.accept(stream, service);
        let divert = self.divert.clone();
        Box::pin(async move {
            let (conn, service) = handshake.await?;
            match divert {
                Some((protocol, serve)) if conn.get_ref().1.alpn_protocol() == Some(protocol) => {
                    serve(conn).await;
                    // Served: tell the HTTP server there is nothing for it
                    // (it drops the connection without a word).
                    Err(std::io::Error::other("served outside HTTP"))
                }
                _ => Ok((conn, service)),
            }
        })
    }
}

/// HTTP/1 read buffer (headers must fit).
const HTTP1_BUFFER_MAX: usize = 64 << 10;
const HEADER_LIST_MAX: u32 = 16 << 10;

/// An HTTPS server on an already bound listener, bounded: a connection cap,
/// TLS handshake and HTTP/1 header timeouts, an idle timeout, HTTP/2 streams
/// per connection and the bytes a client may send ahead (flow-control
/// windows). TCP_NODELAY matters: a response written in several TLS records
/// would otherwise wait for the peer's delayed ACK (~40 ms on Linux) behind
/// Nagle's algorithm.
fn tls_server(
    listener: std::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: &ServerLimits,
    divert: Option<(&'static [u8], Divert)>,
) -> std::io::Result<axum_server::Server<SocketAddr, AlpnAcceptor>> {
    let limited = LimitedAcceptor::new(NoDelayAcceptor::new(), limits.stats.clone(), limits.idle);
    let tls = RustlsAcceptor::new(RustlsConfig::from_config(config))
        .handshake_timeout(limits.handshake_and_header)
        .acceptor(limited);
    let acceptor = AlpnAcceptor { tls, divert };
    let mut server = axum_server::from_tcp(listener)?.acceptor(acceptor);
    let builder = server.http_builder();
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        // Also the idle limit between requests on a keep-alive connection.
        .header_read_timeout(limits.handshake_and_header)
        .max_buf_size(HTTP1_BUFFER_MAX);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(limits.http2_streams)
        .max_header_list_size(HEADER_LIST_MAX)
        .initial_stream_window_size(limits.stream_window)
        .initial_connection_window_size(limits.connection_window)
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(64));
    Ok(server)
}

/// Serves `router` over HTTPS on `listener` until `shutdown` fires, then
/// lets open requests finish for up to `limits.shutdown_grace`.
/// `connect_info` hands each handler the peer address (the public API's
/// admin routes need it); `divert` takes the connections that negotiate its
/// ALPN protocol (the diverted server must watch `shutdown` itself). The
/// returned future is the server; spawn it.
#[allow(clippy::too_many_arguments)]
pub(super) fn serve_https(
    what: &'static str,
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: &ServerLimits,
    router: axum::Router,
    connect_info: bool,
    divert: Option<(&'static [u8], Divert)>,
    shutdown: CancellationToken,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, NodeError> {
    let addr = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let grace = limits.shutdown_grace;
    let handle = axum_server::Handle::new();
    let server = tls_server(listener, tls, limits, divert)
        .map_err(|source| NodeError::Bind { what, addr, source })?
        .handle(handle.clone());
    Ok(async move {
        let stop = async move {
            shutdown.cancelled().await;
            handle.graceful_shutdown(Some(grace));
        };
        tokio::spawn(stop);
        let served = if connect_info {
            server.serve(router.into_make_service_with_connect_info::<SocketAddr>()).await
        } else {
            server.serve(router.into_make_service()).await
        };
        if let Err(e) = served {
            tracing::error!(error = %e, listener = what, "server stopped");
        }
    })
}
