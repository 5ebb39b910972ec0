//! `raftq dump --data-dir D [--events]`: a stopped node's replicated state
//! as pretty JSON on stdout (see `raft::dump`).

use std::io::Write;

use anyhow::Context;
use raftq::cli::DumpArgs;

pub fn run(args: DumpArgs) -> anyhow::Result<()> {
    let dump = raftq::raft::dump::data_dir(&args.data_dir, args.events)
        .with_context(|| format!("reading {}", args.data_dir.display()))?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &dump)?;
    writeln!(out)?;
    Ok(())
}
