//! The follower-maze's network side: the TCP adapters around the pure core
//! in [`crate::maze`], on top of the Raft facade ([`crate::replica`]).
//!
//! - [`source`]: the event source port; batches of raw lines go to the
//!   leader through [`Replica::submit`](crate::replica::Replica::submit).
//! - [`clients`]: the user client port, and the [`clients::Registry`] that
//!   the state machine hands each applied notification to.
//! - [`gap`]: the leader's gap timer, which proposes a `Skip` when a seq
//!   never arrives (time stays out of the state machine).
//!
//! Nothing here decides what is delivered: that is the replicated
//! `MazeState`, identical on every node.

pub mod clients;
pub mod gap;
pub mod source;

/// Accepts the next connection, or `None` once `shutdown` fires. Accept
/// errors (e.g. out of file descriptors) are logged and retried after a
/// pause rather than ending the listener.
pub(crate) async fn accept(
    listener: &tokio::net::TcpListener,
    shutdown: &tokio_util::sync::CancellationToken,
    what: &'static str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => {
                    tracing::warn!(error = %e, listener = what, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}
