//! `raftq serve`: run a node until SIGINT or SIGTERM.

use anyhow::Context;
use raftq::cli::ServeArgs;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let node = raftq::node::start(args).await.context("starting the node")?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the node");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
