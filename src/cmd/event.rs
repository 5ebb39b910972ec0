//! `raftq event post|get|delete`: the queue from the command line.
//!
//! Exit codes: 0 done, 1 failed (nothing was written), 3 outcome unknown
//! (a response was lost and the retries could not tell whether the write
//! took effect; for a post, re-run it with the printed Idempotency-Key).

use raftq::cli::{EventAction, EventArgs};
use raftq::client::{Client, ClientError};

/// Exit code of a write whose outcome is unknown.
pub const EXIT_UNKNOWN: i32 = 3;

pub async fn run(args: EventArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client.config())?;
    let result = match args.action {
        EventAction::Post { event, idempotency_key } => client
            .post(&args.queue, &event, idempotency_key.as_deref())
            .await
            .map(|seq| println!("{seq}")),
        EventAction::Get => client.get(&args.queue).await.map(|e| {
            if let Some(e) = e {
                println!("{}", e.event);
            }
        }),
        EventAction::Delete { seq } => client.delete(&args.queue, seq).await.map(|e| {
            if let Some(e) = e {
                println!("{}", e.event);
            }
        }),
    };
    match result {
        Ok(()) => Ok(()),
        Err(ClientError::Unknown(why)) => {
            eprintln!("raftq: outcome unknown: {why}");
            std::process::exit(EXIT_UNKNOWN);
        }
        Err(e) => Err(e.into()),
    }
}
