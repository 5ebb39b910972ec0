//! `raftq event post|get|delete`: the queue from the command line.

use raftq::cli::{EventAction, EventArgs};
use raftq::client::Client;

pub async fn run(args: EventArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    match args.action {
        EventAction::Post { event, idempotency_key } => {
            let seq = client.post(&args.queue, &event, idempotency_key.as_deref()).await?;
            println!("{seq}");
        }
        EventAction::Get => {
            if let Some(e) = client.get(&args.queue).await? {
                println!("{}", e.event);
            }
        }
        EventAction::Delete { seq } => {
            if let Some(e) = client.delete(&args.queue, seq).await? {
                println!("{}", e.event);
            }
        }
    }
    Ok(())
}
