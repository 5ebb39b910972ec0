//! `raftq bench`: the load generator behind `make bench`.
//!
//! Each client is one task with its own HTTPS connection (keep-alive) that
//! sends writes back to back for the run's duration and records each
//! latency. The same code loads etcd through its v3 JSON gateway, so both
//! systems are measured by one client in one run on one machine.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use raftq::cli::BenchArgs;
use raftq::client::Client;
use serde_json::json;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.failover {
        return failover(&args).await;
    }
    let url =
        args.client.url.first().context("--url is required")?.trim_end_matches('/').to_string();
    let payload = "x".repeat(args.event_bytes);
    for &clients in &args.clients {
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let mut tasks = Vec::new();
        for c in 0..clients {
            let http = http_client(&args)?;
            let (url, payload, target) = (url.clone(), payload.clone(), args.target.clone());
            tasks.push(tokio::spawn(async move {
                load(http, &target, &url, &payload, c, deadline).await
            }));
        }
        let mut latencies_us = Vec::new();
        let mut errors = 0u64;
        for task in tasks {
            let (lat, err) = task.await??;
            latencies_us.extend(lat);
            errors += err;
        }
        latencies_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if latencies_us.is_empty() {
                return f64::NAN;
            }
            let i =
                ((latencies_us.len() as f64 * p).ceil() as usize).clamp(1, latencies_us.len()) - 1;
            latencies_us[i] as f64 / 1000.0
        };
        let line = json!({
            "target": args.target,
            "clients": clients,
            "seconds": args.seconds,
            "writes": latencies_us.len(),
            "errors": errors,
            "writes_per_sec": (latencies_us.len() as f64 / args.seconds as f64).round(),
            "p50_ms": (pct(0.50) * 100.0).round() / 100.0,
            "p99_ms": (pct(0.99) * 100.0).round() / 100.0,
        });
        println!("{line}");
    }
    Ok(())
}

fn http_client(args: &BenchArgs) -> anyhow::Result<reqwest::Client> {
    let builder =
        raftq::tls::api_client_builder(args.client.ca.as_deref(), args.client.insecure, None)?;
    Ok(builder.redirect(reqwest::redirect::Policy::none()).pool_max_idle_per_host(1).build()?)
}

async fn load(
    http: reqwest::Client,
    target: &str,
    url: &str,
    payload: &str,
    client: usize,
    deadline: Instant,
) -> anyhow::Result<(Vec<u32>, u64)> {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut i = 0u64;
    while Instant::now() < deadline {
        i += 1;
        let request = match target {
            "raftq" => http
                .post(format!("{url}/event"))
                .header("content-type", "text/plain")
                .body(payload.to_string()),
            "etcd" => {
                let key = format!("bench/{client}/{i}");
                http.post(format!("{url}/v3/kv/put")).json(&json!({
                    "key": base64(key.as_bytes()),
                    "value": base64(payload.as_bytes()),
                }))
            }
            other => bail!("unknown --target {other}"),
        };
        let start = Instant::now();
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Ok(r) => {
                errors += 1;
                if errors == 1 {
                    eprintln!("bench: {url}: {}", r.status());
                }
            }
            Err(e) => {
                errors += 1;
                if errors == 1 {
                    eprintln!("bench: {url}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Ok((latencies, errors))
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Writes continuously through all URLs for the run; prints the longest
/// stretch without an acknowledged write (the failover window when a
/// leader is killed during the run) as JSON.
async fn failover(args: &BenchArgs) -> anyhow::Result<()> {
    let client = std::sync::Arc::new(Client::new(&args.client.config())?);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let clients = args.clients.first().copied().unwrap_or(4).max(1);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    for c in 0..clients {
        let (client, tx) = (client.clone(), tx.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                if client.post("default", &format!("failover-{c}-{i}"), None).await.is_ok() {
                    let _ = tx.send(Instant::now());
                }
            }
        });
    }
    drop(tx);
    let start = Instant::now();
    let (mut last, mut max_gap, mut acks) = (start, Duration::ZERO, 0u64);
    while let Some(at) = rx.recv().await {
        acks += 1;
        if at > last {
            max_gap = max_gap.max(at - last);
            last = at;
        }
    }
    println!(
        "{}",
        json!({ "mode": "failover", "acks": acks, "max_gap_ms": max_gap.as_millis() as u64 })
    );
    Ok(())
}
