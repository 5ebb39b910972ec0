//! `raftq restore FILE --data-dir D`: seed a new cluster from a backup.

use anyhow::Context;
use raftq::cli::RestoreArgs;

pub fn run(args: RestoreArgs) -> anyhow::Result<()> {
    let restored = raftq::raft::backup::restore(&args.file, &args.data_dir)
        .with_context(|| format!("restoring {}", args.file.display()))?;
    let applied = restored.meta.last_log_id.map_or(0, |l| l.index);
    println!(
        "restored {} records (backup taken at log index {applied}) into {}",
        restored.records,
        args.data_dir.display()
    );
    println!(
        "next: raftq serve --data-dir {} (no --seeds: it bootstraps a new cluster with this data)",
        args.data_dir.display()
    );
    Ok(())
}
