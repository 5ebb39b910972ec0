//! The queue core's scenario files (`src/queue/testdata/*.txt`), run by
//! `sm::datadriven`: each file starts from an empty [`QueueState`].
//!
//! Commands (arguments are `key=value`):
//! - `limits retention= events= keys= queues=`: the limits of later commands
//!   (unset ones keep their value; the start is 100 each).
//! - `enqueue q= event= [key=]`, `dequeue q= [expect=]`, `alloc name= count=`,
//!   `compact q= upto=`: apply; prints the outcome, then each effect.
//! - `state`: every queue, sequence and remembered idempotency key.

use super::{Command, Effect, Limits, QueueState};
use crate::sm::datadriven::{self, Case};

fn run(state: &mut QueueState, limits: &mut Limits, case: &Case) -> String {
    let queue = || case.str_arg("q").unwrap_or("q").to_owned();
    let command = match case.cmd.as_str() {
        "limits" => {
            *limits = Limits {
                retention_events: case.arg("retention", limits.retention_events),
                queue_events_max: case.arg("events", limits.queue_events_max),
                idempotency_keys_max: case.arg("keys", limits.idempotency_keys_max),
                queues_max: case.arg("queues", limits.queues_max),
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
        other => panic!("line {}: unknown command {other}", case.line),
    };
    let mut effects: Vec<Effect> = Vec::new();
    let outcome = state.apply(&command, limits, &mut effects);
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
        };
        datadriven::run_file(&file, |case| run(&mut state, &mut limits, case));
    }
}
