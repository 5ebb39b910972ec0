//! NATS JetStream as the peer of the work-queue benchmarks (feature
//! `bench-nats`).
//!
//! The stream is what a NATS user would pick for a job queue: `retention:
//! workqueue` (a message is removed once acked), file storage, 3 replicas.
//! Each client has its own connection. What one unit of work is, so the
//! comparison with raftq stays honest:
//!
//! - `writes`: one publish, awaiting the stream's ack (stored on a quorum).
//! - `batch`: `batch_events` publishes sent back to back, then all their
//!   acks awaited: pipelined like raftq's one-request batch, but each
//!   message is its own JetStream entry (NATS 2.9 has no atomic batch).
//! - `lease-ack`: `fetch` of 1 message from a durable pull consumer shared
//!   by all workers (a work-queue stream allows one consumer per subject,
//!   so workers share it, as NATS documents), then `double_ack`: an ack the
//!   server confirms, like raftq's `204` for an ack.
//! - `put-delete`: writers publish to the work subject, removers do the
//!   `lease-ack` step on the same (prefilled) stream: a removal is a fetch
//!   plus an ack, the closest JetStream has to raftq's `DELETE /event`.

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use async_nats::jetstream::{self, consumer, stream, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use raftq::cli::BenchWorkload;

use super::{Outcome, Payloads};

const STREAM: &str = "BENCH";
/// The workers' shared durable consumer (on [`WORK_SUBJECT`]).
const CONSUMER: &str = "workers";
const WORK_SUBJECT: &str = "bench.work";

/// Empties the benchmark stream (deleting and creating it again) and, for
/// `lease-ack`, creates the workers' consumer. Returns the URL among `urls`
/// of the stream's leader, so that clients talk to it as raftq's talk to
/// raftq's leader (NATS would forward from any server, at a cost).
pub async fn setup(urls: &[String], workload: BenchWorkload) -> anyhow::Result<String> {
    let first = urls.first().context("--url is required")?;
    let js = jetstream::new(async_nats::connect(first.as_str()).await?);
    // Absent on the first run: nothing to delete then.
    let _ = js.delete_stream(STREAM).await;
    let mut stream = js
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["bench.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .context("creating the JetStream stream")?;
    if matches!(workload, BenchWorkload::LeaseAck | BenchWorkload::PutDelete) {
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(CONSUMER.into()),
                filter_subject: WORK_SUBJECT.into(),
                ack_policy: consumer::AckPolicy::Explicit,
                // Longer than any run: nothing is redelivered.
                ack_wait: Duration::from_secs(300),
                ..Default::default()
            })
            .await
            .context("creating the JetStream consumer")?;
    }
    let leader = stream.info().await?.cluster.as_ref().and_then(|c| c.leader.clone());
    for url in urls {
        let client = async_nats::connect(url.as_str()).await?;
        if leader.as_deref() == Some(client.server_info().server_name.as_str()) {
            return Ok(url.clone());
        }
    }
    eprintln!("bench: stream leader {leader:?} is none of --url; using {first}");
    Ok(first.clone())
}

/// One client: its own connection, and the workers' consumer for
/// `lease-ack`.
pub struct Worker {
    js: Context,
    consumer: Option<consumer::PullConsumer>,
    subject: &'static str,
}

impl Worker {
    pub async fn connect(url: &str, workload: BenchWorkload) -> anyhow::Result<Self> {
        let js = jetstream::new(async_nats::connect(url).await?);
        let (consumer, subject) = match workload {
            BenchWorkload::Writes => (None, "bench.writes"),
            BenchWorkload::Batch => (None, "bench.batch"),
            BenchWorkload::LeaseAck | BenchWorkload::PutDelete => {
                let consumer = js
                    .get_stream(STREAM)
                    .await?
                    .get_consumer(CONSUMER)
                    .await
                    .map_err(|e| anyhow!(e))?;
                (Some(consumer), WORK_SUBJECT)
            }
        };
        Ok(Self { js, consumer, subject })
    }

    /// One unit of `workload`; `removes`: this client is a remover of
    /// `put-delete`.
    pub async fn step(
        &self,
        workload: BenchWorkload,
        payload: &Payloads,
        removes: bool,
    ) -> anyhow::Result<Outcome> {
        match workload {
            BenchWorkload::Writes => self.publish(payload, 1).await,
            BenchWorkload::Batch => self.publish(payload, payload.batch_events).await,
            BenchWorkload::LeaseAck => self.lease_ack().await,
            BenchWorkload::PutDelete if removes => self.lease_ack().await,
            BenchWorkload::PutDelete => self.publish(payload, 1).await,
        }
    }

    /// A batch of the work subject, for the queue filled before a run.
    pub async fn fill_batch(&self, payload: &Payloads) -> anyhow::Result<Outcome> {
        self.publish(payload, payload.batch_events).await
    }

    /// `n` publishes in flight at once, done when the stream acked them all.
    async fn publish(&self, payload: &Payloads, n: usize) -> anyhow::Result<Outcome> {
        let event = Bytes::copy_from_slice(payload.event.as_bytes());
        let mut acks = Vec::with_capacity(n);
        for _ in 0..n {
            acks.push(self.js.publish(self.subject, event.clone()).await?);
        }
        for ack in acks {
            ack.await?;
        }
        Ok(Outcome::Done)
    }

    async fn lease_ack(&self) -> anyhow::Result<Outcome> {
        let consumer = self.consumer.as_ref().context("no consumer for lease-ack")?;
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            // Without an expiry a fetch that the server never answers
            // would wait forever (seen with 16 workers on nats-server 2.9).
            .expires(Duration::from_secs(1))
            .messages()
            .await?;
        let Some(message) = batch.next().await else {
            return Ok(Outcome::Empty);
        };
        message.map_err(|e| anyhow!(e))?.double_ack().await.map_err(|e| anyhow!(e))?;
        Ok(Outcome::Done)
    }
}
