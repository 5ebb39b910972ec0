//! `raftq consume`: print a queue's events once each, in seq order, and
//! keep a checkpoint so that a restart resumes where the output stopped
//! (docs/consumers.md).
//!
//! Output and checkpoint: stdout is flushed first, then the checkpoint is
//! replaced atomically (temporary file, fsync, rename, fsync of the
//! directory). This happens whenever the consumer has nothing more buffered
//! (so after every burst), at least every [`CHECKPOINT_EVERY`] events, after
//! a loss report and on SIGINT/SIGTERM. A crash between the two repeats at
//! most the events printed since the last checkpoint; a clean stop repeats
//! nothing.

use std::io::{BufWriter, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use raftq::cli::ConsumeArgs;
use raftq::client::Client;
use raftq::consumer::checkpoint;
use raftq::consumer::line::{format_json, format_line};
use raftq::consumer::{Consumer, Item, Timing};
use tokio::signal::unix::{signal, SignalKind};

/// Most events printed between two checkpoints while events keep coming.
const CHECKPOINT_EVERY: u64 = 1000;

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let after = match checkpoint::read(&args.checkpoint)? {
        Some(last) => last,
        None => args.from.saturating_sub(1),
    };
    if !(args.stall_secs > 0.0 && args.stall_secs < 3600.0) {
        bail!("--stall-secs must be between 0 and 3600");
    }
    let timing = Timing { stall: Duration::from_secs_f64(args.stall_secs), ..Timing::default() };
    let client = Client::new(&args.client.config())?;
    let mut consumer =
        Consumer::new(client, &args.queue, after)?.with_timing(timing).with_watch(!args.poll);
    tracing::info!(queue = args.queue, after, "consuming");

    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut checkpointed = after;
    loop {
        let position = consumer.position();
        if position != checkpointed
            && (!consumer.has_buffered() || position - checkpointed >= CHECKPOINT_EVERY)
        {
            out.flush().context("write stdout")?;
            checkpoint::write(&args.checkpoint, position)?;
            checkpointed = position;
        }
        let item = tokio::select! {
            item = consumer.next() => item?,
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        };
        match item {
            Item::Event(e) => {
                let line = if args.json {
                    format_json(e.seq, &e.event)
                } else {
                    format_line(e.seq, &e.event)
                };
                writeln!(out, "{line}").context("write stdout")?;
            }
            Item::Lost(lost) => {
                out.flush().context("write stdout")?;
                eprintln!(
                    "raftq consume: LOST events {}..={} of queue {:?}: retention dropped them \
                     before they were read; continuing at {}",
                    lost.from,
                    lost.to,
                    args.queue,
                    lost.to + 1
                );
            }
        }
    }
    out.flush().context("write stdout")?;
    let position = consumer.position();
    if position != checkpointed {
        checkpoint::write(&args.checkpoint, position)?;
    }
    let s = consumer.stats();
    tracing::info!(
        position,
        from_stream = s.from_stream,
        from_pages = s.from_pages,
        streams_opened = s.streams_opened,
        stream_failures = s.stream_failures,
        page_requests = s.page_requests,
        page_failures = s.page_failures,
        gaps = s.gaps,
        lost = s.lost,
        "consumer stopped"
    );
    // Machine-readable summary (tests and scripts read it).
    eprintln!(
        "raftq consume: stopped at {position}: from_stream={} from_pages={} streams_opened={} \
         stream_failures={} page_failures={} gaps={} lost={}",
        s.from_stream,
        s.from_pages,
        s.streams_opened,
        s.stream_failures,
        s.page_failures,
        s.gaps,
        s.lost
    );
    Ok(())
}
