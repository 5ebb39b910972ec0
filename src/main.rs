//! The `raftq` binary: parse the command line, run a subcommand.

use clap::Parser;
use raftq::cli::{Cli, Command};

mod cmd;

/// mimalloc instead of glibc's malloc: a write allocates and frees many
/// small buffers across tokio's worker threads (HTTP, TLS records, JSON,
/// RocksDB batches), and glibc's arenas spent about a tenth of the leader's
/// CPU at 64 clients in malloc, free and chunk consolidation
/// (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAFTQ_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,openraft=error,chitchat=warn")
        });
    // Colour only on a terminal: in a log file or a pipe (systemd, docker
    // logs, the test harness) escape codes are noise in every grep.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    raftq::tls::install_crypto_provider();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(args) = &cli.command {
        if let Some(n) = args.worker_threads {
            builder.worker_threads(usize::from(n));
        }
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => cmd::serve::run(*args).await,
            Command::Certs(args) => cmd::certs::run(args),
            Command::Status(args) => cmd::status::run(args).await,
            Command::Event(args) => cmd::event::run(args).await,
            Command::Bench(args) => cmd::bench::run(args).await,
            Command::MazeVerify(args) => cmd::maze_verify::run(args).await,
            Command::Restore(args) => cmd::restore::run(args),
            Command::Consume(args) => cmd::consume::run(args).await,
            Command::Seq(args) => cmd::seq::run(args).await,
            Command::Dump(args) => cmd::dump::run(args),
            Command::Work(args) => cmd::work::run(args).await,
        }
    })
}
