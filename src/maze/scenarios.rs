//! The maze core's scenario files (`src/maze/testdata/*.txt`), run by
//! `sm::datadriven`: each file starts from an empty [`MazeState`], all
//! users in the audience.
//!
//! Commands (arguments are `key=value`):
//! - `limits pending= line= edges=`: the limits of later commands (unset
//!   ones keep their value; the start is 100, 1024 and 1000).
//! - `connected users=1,2` (only these users) or `connected` (everyone).
//! - `reset`; `lines [epoch=]` with the source lines as input (each ends
//!   in `\n`; epoch defaults to the current one); `skip [epoch=] seq=`:
//!   apply; prints the outcome, each notification, the count of unreached
//!   recipients, then each storage effect.
//! - `state`: the cursor, the buffered lines and the follow edges.

use super::{
    Audience, ConnectedUsers, MazeCommand, MazeEffect, MazeLimits, MazeState, Notification,
    NotificationSink,
};
use crate::sm::datadriven::{self, Case};

#[derive(Default)]
struct Sink {
    notes: Vec<Notification>,
    unreached: u64,
}

impl NotificationSink for Sink {
    fn notify(&mut self, notification: Notification) {
        self.notes.push(notification);
    }

    fn unreached(&mut self, recipients: u64) {
        self.unreached += recipients;
    }
}

struct Scenario {
    state: MazeState,
    limits: MazeLimits,
    /// `None`: everyone.
    connected: Option<ConnectedUsers>,
}

fn run(s: &mut Scenario, case: &Case) -> String {
    let command = match case.cmd.as_str() {
        "limits" => {
            s.limits = MazeLimits {
                pending_max: case.arg("pending", s.limits.pending_max),
                line_bytes_max: case.arg("line", s.limits.line_bytes_max),
                follow_edges_max: case.arg("edges", s.limits.follow_edges_max),
            };
            return "ok".into();
        }
        "connected" => {
            s.connected = case.str_arg("users").map(|users| {
                users.split(',').filter_map(|u| u.parse().ok()).collect::<ConnectedUsers>()
            });
            return "ok".into();
        }
        "state" => {
            let mut out = vec![format!(
                "epoch={} next={} pending={} edges={}",
                s.state.epoch(),
                s.state.next(),
                s.state.pending_len(),
                s.state.follower_count()
            )];
            out.extend(
                s.state.pending_lines().map(|(seq, line)| format!("pending {seq}: {line:?}")),
            );
            out.extend(s.state.follow_edges().map(|(a, b)| format!("follow {b} -> {a}")));
            return out.join("\n");
        }
        "reset" => MazeCommand::Reset,
        "lines" => MazeCommand::Lines {
            epoch: case.arg("epoch", s.state.epoch()),
            lines: case.input.lines().map(|l| format!("{l}\n")).collect(),
        },
        "skip" => {
            MazeCommand::Skip { epoch: case.arg("epoch", s.state.epoch()), seq: case.arg("seq", 0) }
        }
        other => panic!("line {}: unknown command {other}", case.line),
    };
    let audience = match &s.connected {
        Some(users) => Audience::Connected(users),
        None => Audience::Everyone,
    };
    let mut effects: Vec<MazeEffect> = Vec::new();
    let mut sink = Sink::default();
    let outcome = s.state.apply_for(&command, &s.limits, audience, &mut effects, &mut sink);
    let mut out = vec![format!("{outcome:?}")];
    for n in &sink.notes {
        out.push(format!("  notify {:?} {:?}", n.recipients, n.line));
    }
    if sink.unreached > 0 {
        out.push(format!("  unreached {}", sink.unreached));
    }
    out.extend(effects.iter().map(|e| format!("  {e:?}")));
    out.join("\n")
}

#[test]
fn scenarios() {
    for file in datadriven::files("src/maze/testdata") {
        let mut s = Scenario {
            state: MazeState::new(),
            limits: MazeLimits { pending_max: 100, line_bytes_max: 1024, follow_edges_max: 1000 },
            connected: None,
        };
        datadriven::run_file(&file, |case| run(&mut s, case));
    }
}
