//! The queue core's scenario files (`src/queue/testdata/*.txt`), run by
//! `sm::datadriven`: each file starts from an empty [`QueueState`].
//!
//! Commands (arguments are `key=value`):
//! - `limits retention= events= keys= queues=`: the limits of later commands
//!   (unset ones keep their value; the start is 100 each).
//! - `enqueue q= event= [key=]`, `dequeue q= [expect=]`, `alloc name= count=`,
//!   `compact q= upto=`: apply; prints the outcome, then each effect.
//! - `state`: every queue, sequence and remembered idempotency key, and
//!   the work-queue state (slots, policies, cursors, counters) if any.
//! - Work queues: `time ms=` sets the entry time of later commands (start
//!   0); `lease q= [max=] [ttl=] [nonce=]`, `ack q= seq= token=`,
//!   `nack q= seq= token= [delay=]`, `extend q= seq= token= [ttl=]`,
//!   `batch q= events=a,b,c [key=] [delay=]` (`events=` empty: no events),
//!   `policy q= [max=] [dlq=] [ttl=]`, `cursor q= group= seq= [if=]`,
//!   `sweep [q=] [max=]` apply; `available q=` prints what GET would show.

use super::{Command, Effect, Limits, QueuePolicy, QueueState};
use crate::sm::datadriven::{self, Case};

fn run(state: &mut QueueState, limits: &mut Limits, now: &mut u64, case: &Case) -> String {
    let queue = || case.str_arg("q").unwrap_or("q").to_owned();
    let token = || case.str_arg("token").unwrap_or_default().to_owned();
    let command = match case.cmd.as_str() {
        "limits" => {
            *limits = Limits {
                retention_events: case.arg("retention", limits.retention_events),
                queue_events_max: case.arg("events", limits.queue_events_max),
                idempotency_keys_max: case.arg("keys", limits.idempotency_keys_max),
                queues_max: case.arg("queues", limits.queues_max),
                leases_max: case.arg("leases", limits.leases_max),
                delayed_max: case.arg("delayed", limits.delayed_max),
            };
            return "ok".into();
        }
        "state" => {
            let mut out = Vec::new();
            for (name, meta) in state.queues() {
                out.push(format!("queue {name}: {meta:?} pending={}", meta.len()));
            }
            for (name, next) in state.sequences() {
                out.push(format!("sequence {name}: next={next}"));
            }
            for (key, entry) in state.idempotency_window() {
                out.push(format!("key {key}: {entry:?}"));
            }
            for queue in state.work_queues() {
                out.push(format!("work {queue}: {:?}", state.work_stats(queue)));
                for (seq, slot) in state.slots(queue) {
                    out.push(format!("  slot {seq}: {slot:?}"));
                }
            }
            for (queue, policy) in state.policies() {
                out.push(format!("policy {queue}: {policy:?}"));
            }
            for (queue, group, seq) in state.cursors() {
                out.push(format!("cursor {queue}/{group}: {seq}"));
            }
            if out.is_empty() {
                out.push("empty".into());
            }
            return out.join("\n");
        }
        "enqueue" => Command::Enqueue {
            queue: queue(),
            event: case.str_arg("event").unwrap_or_default().to_owned(),
            idempotency_key: case.str_arg("key").map(str::to_owned),
        },
        "dequeue" => Command::Dequeue { queue: queue(), expect_seq: case.opt_arg("expect") },
        "alloc" => Command::AllocSeq {
            name: case.str_arg("name").unwrap_or("s").to_owned(),
            count: case.arg("count", 1),
        },
        "compact" => Command::Compact { queue: queue(), upto: case.arg("upto", 0) },
        "time" => {
            *now = case.arg("ms", *now);
            return "ok".into();
        }
        "available" => return format!("{:?}", state.available(&queue(), *now)),
        "lease" => Command::Lease {
            queue: queue(),
            max: case.arg("max", 1),
            ttl_ms: case.opt_arg("ttl"),
            nonce: case.arg("nonce", 7),
        },
        "ack" => Command::Ack { queue: queue(), seq: case.arg("seq", 0), token: token() },
        "nack" => Command::Nack {
            queue: queue(),
            seq: case.arg("seq", 0),
            token: token(),
            delay_ms: case.arg("delay", 0),
        },
        "extend" => Command::Extend {
            queue: queue(),
            seq: case.arg("seq", 0),
            token: token(),
            ttl_ms: case.opt_arg("ttl"),
        },
        "batch" => Command::EnqueueBatch {
            queue: queue(),
            events: case
                .str_arg("events")
                .unwrap_or_default()
                .split(',')
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect(),
            idempotency_key: case.str_arg("key").map(str::to_owned),
            delay_ms: case.arg("delay", 0),
        },
        "policy" => Command::SetPolicy {
            queue: queue(),
            policy: QueuePolicy {
                max_deliveries: case.opt_arg("max"),
                dead_letter: case.str_arg("dlq").map(str::to_owned),
                lease_ttl_ms: case.opt_arg("ttl"),
            },
        },
        "cursor" => Command::SetCursor {
            queue: queue(),
            group: case.str_arg("group").unwrap_or("g").to_owned(),
            seq: case.arg("seq", 0),
            if_seq: case.opt_arg("if"),
        },
        "sweep" => Command::Sweep {
            queue: case.str_arg("q").map(str::to_owned),
            max: case.arg("max", 100),
        },
        other => panic!("line {}: unknown command {other}", case.line),
    };
    let mut effects: Vec<Effect> = Vec::new();
    let outcome = state.apply_at(&command, limits, *now, &mut effects);
    let mut out = vec![format!("{outcome:?}")];
    out.extend(effects.iter().map(|e| format!("  {e:?}")));
    out.join("\n")
}

#[test]
fn scenarios() {
    for file in datadriven::files("src/queue/testdata") {
        let mut state = QueueState::new();
        let mut limits = Limits {
            retention_events: 100,
            queue_events_max: 100,
            idempotency_keys_max: 100,
            queues_max: 100,
            leases_max: 100,
            delayed_max: 100,
        };
        let mut now = 0;
        datadriven::run_file(&file, |case| run(&mut state, &mut limits, &mut now, case));
    }
}
