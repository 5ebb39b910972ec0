//! The follower-maze wire format (SPEC §3): one event per line,
//! `seq|type[|from[|to]]`, ending in `\n` or `\r\n`.
//!
//! ```text
//! seq|F|from|to   follow: from now follows to   notify to
//! seq|U|from|to   unfollow                      notify nobody
//! seq|B           broadcast                     notify every connected user
//! seq|P|from|to   private message               notify to
//! seq|S|from      status update of from         notify the current followers of from
//! ```
//!
//! Lines arrive from the network, so [`parse_line`] is strict and total: it
//! never panics, and anything but exactly the fields a type needs is an error
//! (the state machine counts it as malformed and skips it). Numbers are plain
//! ASCII decimal `u64`s: no sign, no spaces, no other digits; leading zeros
//! are accepted (`007` is 7). Only one line ending is stripped, so a stray
//! `\r` or a second `\n` makes the line malformed rather than silently fixed:
//! the notification repeats the line byte for byte, and a client must never
//! receive two lines where the source sent one.
//!
//! Pure: no I/O, and parsing allocates nothing.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::MazeSeq;

/// A follower-maze user id.
pub type UserId = u64;

/// What an event does; `from`/`to` as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// `F`: `from` now follows `to`; `to` is notified.
    Follow { from: UserId, to: UserId },
    /// `U`: `from` no longer follows `to`; nobody is notified.
    Unfollow { from: UserId, to: UserId },
    /// `B`: every connected user is notified.
    Broadcast,
    /// `P`: a private message from `from`; only `to` is notified.
    Private { from: UserId, to: UserId },
    /// `S`: a status update of `from`; its current followers are notified.
    Status { from: UserId },
}

impl EventKind {
    /// The type letter on the wire.
    pub fn letter(&self) -> char {
        match self {
            EventKind::Follow { .. } => 'F',
            EventKind::Unfollow { .. } => 'U',
            EventKind::Broadcast => 'B',
            EventKind::Private { .. } => 'P',
            EventKind::Status { .. } => 'S',
        }
    }
}

/// One parsed source line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: MazeSeq,
    pub kind: EventKind,
}

/// The canonical wire form, without a line ending: `parse_line` of it (with
/// or without a line ending) gives the event back.
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let letter = self.kind.letter();
        match self.kind {
            EventKind::Follow { from, to }
            | EventKind::Unfollow { from, to }
            | EventKind::Private { from, to } => write!(f, "{}|{letter}|{from}|{to}", self.seq),
            EventKind::Broadcast => write!(f, "{}|{letter}", self.seq),
            EventKind::Status { from } => write!(f, "{}|{letter}|{from}", self.seq),
        }
    }
}

/// Why a line is not an event. Unit variants: the state machine only counts
/// malformed lines, and a counter needs no payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty line")]
    Empty,
    /// Not an ASCII decimal number, or beyond the seq space (see [`parse_line`]).
    #[error("sequence number is not a decimal number below 2^64 - 1")]
    BadSeq,
    #[error("sequence number 0 (sequences start at 1)")]
    SeqZero,
    #[error("unknown event type")]
    UnknownType,
    #[error("missing field")]
    MissingField,
    #[error("extra field")]
    ExtraField,
    #[error("user id is not a decimal u64")]
    BadUser,
    /// A stored line whose own seq is not the one it was stored under (only
    /// from `MazeState::restore_pending`: damaged storage, never the network).
    #[error("line of seq {parsed} stored under seq {stored}")]
    SeqMismatch { stored: MazeSeq, parsed: MazeSeq },
}

/// Parses one source line. A single trailing `"\n"` or `"\r\n"` is allowed
/// and ignored. Strict otherwise: `seq|type[|from[|to]]` with exactly the
/// fields the type needs (`F`/`U`/`P`: `seq|T|from|to`, `B`: `seq|B`, `S`:
/// `seq|S|from`), decimal `u64` numbers without signs or spaces, and
/// `1 <= seq < u64::MAX`. The last seq is refused because no seq could follow
/// it: the state machine's next expected seq must stay representable.
///
/// Errors are checked field by field from the left: a bad seq wins over a
/// bad type, a wrong field count over a bad user id.
pub fn parse_line(line: &str) -> Result<Event, ParseError> {
    let body = strip_line_ending(line);
    if body.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut fields = body.split('|');
    // `split` yields at least one (possibly empty) field.
    let seq = parse_seq(fields.next().unwrap_or_default())?;
    let letter = fields.next().ok_or(ParseError::MissingField)?;
    let users_needed = match letter {
        "F" | "U" | "P" => 2,
        "B" => 0,
        "S" => 1,
        _ => return Err(ParseError::UnknownType),
    };
    let users = [fields.next(), fields.next()];
    let users_given = users.iter().flatten().count();
    if users_given < users_needed {
        return Err(ParseError::MissingField);
    }
    if users_given > users_needed || fields.next().is_some() {
        return Err(ParseError::ExtraField);
    }
    let user = |i: usize| users[i].and_then(parse_decimal).ok_or(ParseError::BadUser);
    let kind = match letter {
        "F" => EventKind::Follow { from: user(0)?, to: user(1)? },
        "U" => EventKind::Unfollow { from: user(0)?, to: user(1)? },
        "P" => EventKind::Private { from: user(0)?, to: user(1)? },
        "S" => EventKind::Status { from: user(0)? },
        _ => EventKind::Broadcast,
    };
    Ok(Event { seq, kind })
}

/// `line` without one trailing `\r\n` or `\n`.
fn strip_line_ending(line: &str) -> &str {
    line.strip_suffix("\r\n").or_else(|| line.strip_suffix('\n')).unwrap_or(line)
}

fn parse_seq(field: &str) -> Result<MazeSeq, ParseError> {
    match parse_decimal(field) {
        Some(0) => Err(ParseError::SeqZero),
        Some(MazeSeq::MAX) | None => Err(ParseError::BadSeq),
        Some(seq) => Ok(seq),
    }
}

/// A non-empty run of ASCII digits that fits a `u64`. Not `str::parse`: that
/// accepts a leading `+`.
fn parse_decimal(field: &str) -> Option<u64> {
    if field.is_empty() {
        return None;
    }
    field.bytes().try_fold(0u64, |acc, byte| {
        let digit = byte.is_ascii_digit().then(|| u64::from(byte - b'0'))?;
        acc.checked_mul(10)?.checked_add(digit)
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::Config as ProptestConfig;

    use super::*;

    const ENDINGS: [&str; 3] = ["", "\n", "\r\n"];

    fn ev(seq: MazeSeq, kind: EventKind) -> Event {
        Event { seq, kind }
    }

    #[test]
    fn every_valid_form_parses_with_every_line_ending() {
        let cases = [
            ("1|F|60|50", ev(1, EventKind::Follow { from: 60, to: 50 })),
            ("2|U|12|9", ev(2, EventKind::Unfollow { from: 12, to: 9 })),
            ("542532|B", ev(542532, EventKind::Broadcast)),
            ("43|P|32|56", ev(43, EventKind::Private { from: 32, to: 56 })),
            ("634|S|32", ev(634, EventKind::Status { from: 32 })),
            ("7|F|3|3", ev(7, EventKind::Follow { from: 3, to: 3 })),
            ("8|P|0|0", ev(8, EventKind::Private { from: 0, to: 0 })),
            ("007|S|0042", ev(7, EventKind::Status { from: 42 })),
            (
                "18446744073709551614|P|18446744073709551615|18446744073709551615",
                ev(u64::MAX - 1, EventKind::Private { from: u64::MAX, to: u64::MAX }),
            ),
        ];
        for (body, want) in cases {
            for ending in ENDINGS {
                let line = format!("{body}{ending}");
                assert_eq!(parse_line(&line), Ok(want), "{line:?}");
            }
        }
    }

    #[test]
    fn every_malformed_form_is_an_error() {
        use ParseError::*;
        let cases: &[(&str, ParseError)] = &[
            // Nothing there.
            ("", Empty),
            ("\n", Empty),
            ("\r\n", Empty),
            ("\n\n", BadSeq),
            ("\r", BadSeq),
            ("\n\r", BadSeq),
            ("|", BadSeq),
            // Bad seq.
            ("x|B", BadSeq),
            ("|B", BadSeq),
            ("-1|B", BadSeq),
            ("+1|B", BadSeq),
            (" 1|B", BadSeq),
            ("1 |B", BadSeq),
            ("1.0|B", BadSeq),
            ("1e3|B", BadSeq),
            ("0x1|B", BadSeq),
            ("１|B", BadSeq),
            ("٣|B", BadSeq),
            ("18446744073709551615|B", BadSeq),
            ("18446744073709551616|B", BadSeq),
            ("99999999999999999999999999|B", BadSeq),
            ("0|B", SeqZero),
            ("000|B", SeqZero),
            // Bad type.
            ("1", MissingField),
            ("1|", UnknownType),
            ("1|X", UnknownType),
            ("1|b", UnknownType),
            ("1|f|1|2", UnknownType),
            ("1|FF|1|2", UnknownType),
            ("1| B", UnknownType),
            ("1|B ", UnknownType),
            ("1|Б", UnknownType),
            ("1|B\r", UnknownType),
            ("1|B\n\n", UnknownType),
            ("1|B\r\n\r\n", UnknownType),
            ("1|B\n2|B\n", UnknownType),
            // Wrong field count.
            ("1|F", MissingField),
            ("1|F|1", MissingField),
            ("1|U|1", MissingField),
            ("1|P|1", MissingField),
            ("1|S", MissingField),
            ("1|B|", ExtraField),
            ("1|B|1", ExtraField),
            ("1|S|1|2", ExtraField),
            ("1|S|1|", ExtraField),
            ("1|F|1|2|", ExtraField),
            ("1|F|1|2|3", ExtraField),
            ("1|P|1|2|3|4|5", ExtraField),
            // Bad user ids.
            ("1|F||2", BadUser),
            ("1|F|1|", BadUser),
            ("1|S|", BadUser),
            ("1|S|a", BadUser),
            ("1|S|-1", BadUser),
            ("1|S|+1", BadUser),
            ("1|S| 1", BadUser),
            ("1|S|1 ", BadUser),
            ("1|P|1|2\r", BadUser),
            ("1|P|1|2\r\r\n", BadUser),
            ("1|P|1|٢", BadUser),
            ("1|P|1|18446744073709551616", BadUser),
            ("1|S|é", BadUser),
        ];
        for (line, want) in cases {
            assert_eq!(parse_line(line).as_ref(), Err(want), "{line:?}");
            // Appending a line ending fixes nothing, unless the line ends in
            // a bare "\r" that the "\n" completes into a CRLF.
            if line.ends_with('\r') {
                continue;
            }
            for ending in ["\n", "\r\n"] {
                let with_ending = format!("{line}{ending}");
                assert!(parse_line(&with_ending).is_err(), "{with_ending:?}");
            }
        }
    }

    #[test]
    fn display_is_the_wire_form() {
        let cases = [
            (ev(1, EventKind::Follow { from: 60, to: 50 }), "1|F|60|50"),
            (ev(2, EventKind::Unfollow { from: 12, to: 9 }), "2|U|12|9"),
            (ev(3, EventKind::Broadcast), "3|B"),
            (ev(4, EventKind::Private { from: 32, to: 56 }), "4|P|32|56"),
            (ev(5, EventKind::Status { from: 32 }), "5|S|32"),
        ];
        for (event, want) in cases {
            assert_eq!(event.to_string(), want);
        }
    }

    #[test]
    fn errors_have_lowercase_messages() {
        let err = ParseError::SeqMismatch { stored: 3, parsed: 4 };
        assert_eq!(err.to_string(), "line of seq 4 stored under seq 3");
        assert_eq!(ParseError::Empty.to_string(), "empty line");
    }

    fn user() -> impl Strategy<Value = UserId> {
        prop_oneof![0u64..10, any::<u64>()]
    }

    fn event() -> impl Strategy<Value = Event> {
        let kind = prop_oneof![
            (user(), user()).prop_map(|(from, to)| EventKind::Follow { from, to }),
            (user(), user()).prop_map(|(from, to)| EventKind::Unfollow { from, to }),
            Just(EventKind::Broadcast),
            (user(), user()).prop_map(|(from, to)| EventKind::Private { from, to }),
            user().prop_map(|from| EventKind::Status { from }),
        ];
        (prop_oneof![1u64..10, 1..u64::MAX], kind).prop_map(|(seq, kind)| Event { seq, kind })
    }

    /// Strings close to valid lines, so the strict paths get exercised and
    /// not just the first check.
    fn near_line() -> impl Strategy<Value = String> {
        "[0-9|FUBPSfxé +\\-\r\n]{0,24}"
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 1024,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn formatted_events_round_trip(event in event(), ending in 0..ENDINGS.len()) {
            let line = format!("{event}{}", ENDINGS[ending]);
            prop_assert_eq!(parse_line(&line), Ok(event));
        }

        #[test]
        fn arbitrary_strings_never_panic(line in any::<String>()) {
            let _ = parse_line(&line);
        }

        /// Whatever parses, parses to an event whose canonical form means the
        /// same; and every accepted line has exactly 2, 3 or 4 fields.
        #[test]
        fn near_valid_strings_never_panic_and_accepted_ones_are_canonical(line in near_line()) {
            if let Ok(event) = parse_line(&line) {
                prop_assert_eq!(parse_line(&event.to_string()), Ok(event));
                let body = strip_line_ending(&line);
                prop_assert!(!body.contains(['\r', '\n', ' ']), "{:?}", line);
                prop_assert!((2..=4).contains(&body.split('|').count()));
            }
        }
    }
}
