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
//!
//! With `--group G` the checkpoint is the cluster's cursor of group G
//! (SPEC §5) instead of a file: read at start, advanced by compare-and-set
//! from the value this consumer last saw. A compare-and-set conflict means
//! another consumer of the group moved the cursor: this one stops with an
//! error (exit 1) naming both positions, after flushing what it printed,
//! rather than printing events twice or skipping some. A group has one
//! consumer at a time; split the work with `raftq work` instead.

use std::io::{BufWriter, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use raftq::cli::ConsumeArgs;
use raftq::client::{Client, ClientError};
use raftq::consumer::checkpoint;
use raftq::consumer::line::{format_json, format_line};
use raftq::consumer::{Consumer, Item, Timing};
use raftq::queue::Seq;
use tokio::signal::unix::{signal, SignalKind};

/// Most events printed between two checkpoints while events keep coming.
const CHECKPOINT_EVERY: u64 = 1000;

/// Where the position is kept.
enum Checkpoint {
    File(std::path::PathBuf),
    /// The cluster's cursor of a group, with the value this consumer last
    /// read or wrote (the compare-and-set's `if=`; 0: never set).
    Group {
        client: Client,
        queue: String,
        group: String,
        at: Seq,
        /// A position written with an unknown outcome.
        tried: Option<Seq>,
    },
}

impl Checkpoint {
    async fn open(args: &ConsumeArgs) -> anyhow::Result<(Checkpoint, Option<Seq>)> {
        if let Some(group) = &args.group {
            let client = Client::new(&args.client.config())?;
            let at = client
                .cursor(&args.queue, group)
                .await
                .with_context(|| format!("read the cursor of group {group:?}"))?
                .unwrap_or(0);
            let found = (at > 0).then_some(at);
            let queue = args.queue.clone();
            return Ok((
                Checkpoint::Group { client, queue, group: group.clone(), at, tried: None },
                found,
            ));
        }
        let path = args.checkpoint.clone().context("--checkpoint or --group is required")?;
        let found = checkpoint::read(&path)?;
        Ok((Checkpoint::File(path), found))
    }

    async fn save(&mut self, position: Seq) -> anyhow::Result<()> {
        let (client, queue, group, at, tried) = match self {
            Checkpoint::File(path) => return Ok(checkpoint::write(path, position)?),
            Checkpoint::Group { client, queue, group, at, tried } => {
                (client, queue, group, at, tried)
            }
        };
        let mut result = client.set_cursor(queue, group, position, *at).await;
        // Our own earlier attempt, whose answer was lost, moved it.
        if let Err(ClientError::CursorMoved { current: Some(now) }) = result {
            if *tried == Some(now) {
                *at = now;
                result = client.set_cursor(queue, group, position, *at).await;
            }
        }
        match result {
            Ok(()) => {
                *at = position;
                *tried = None;
                Ok(())
            }
            Err(ClientError::CursorMoved { current }) => bail!(
                "the cursor of group {group:?} was moved to {} by another consumer (this one \
                 left it at {at} and has printed up to {position}); stopping: a group has one \
                 consumer at a time",
                current.map_or_else(|| "an unknown seq".to_string(), |c| c.to_string())
            ),
            // The cluster is unreachable for now (say during a failover):
            // the next save tries again; a crash before then repeats events,
            // as with a file checkpoint that was not written.
            Err(e @ (ClientError::Unreachable(_) | ClientError::Unknown(_))) => {
                tracing::warn!(group, position, error = %e, "cursor not advanced; trying again later");
                *tried = Some(position);
                Ok(())
            }
            Err(e) => Err(e).context(format!("advance the cursor of group {group:?}")),
        }
    }
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let (mut saved, found) = Checkpoint::open(&args).await?;
    let after = match found {
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
            saved.save(position).await?;
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
        saved.save(position).await?;
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
