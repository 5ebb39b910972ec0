//! `raftq seq next NAME`: ids from a named sequence, leased from the cluster
//! in blocks and printed one per line (docs/consumers.md).

use std::io::{BufWriter, Write};

use anyhow::Context;
use raftq::cli::{SeqAction, SeqArgs};
use raftq::client::Client;
use raftq::sequence::SequenceLeaser;

pub async fn run(args: SeqArgs) -> anyhow::Result<()> {
    let SeqAction::Next { name, batch, count, verbose, client } = args.action;
    let mut leaser = SequenceLeaser::new(Client::new(&client.config())?, &name, batch)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for _ in 0..count {
        if leaser.needs_lease() {
            // Everything handed out so far is visible before the next wait.
            out.flush().context("write stdout")?;
        }
        let unknown_before = leaser.unknown_outcomes();
        let id = leaser
            .next_id(|lease| {
                if verbose {
                    eprintln!("raftq seq: leased {}..={}", lease.first, lease.last);
                }
            })
            .await?;
        if verbose && leaser.unknown_outcomes() > unknown_before {
            eprintln!(
                "raftq seq: unknown-outcome lease attempts: {} (a block they may have \
                 allocated is never handed out)",
                leaser.unknown_outcomes() - unknown_before
            );
        }
        writeln!(out, "{id}").context("write stdout")?;
    }
    out.flush().context("write stdout")?;
    Ok(())
}
