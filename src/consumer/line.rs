//! The one-line-per-event output of `raftq consume` (docs/consumers.md).
//!
//! `SEQ<TAB>BODY`, where BODY is the event with `\` written as `\\`, newline
//! as `\n`, carriage return as `\r`, tab as `\t` and every other control
//! character (Unicode category Cc) as `\u{HEX}`. So a line never contains a
//! line break whatever the event holds, `cut -f2-` gives the escaped body, and
//! [`unescape`] gives the exact event back.

use std::fmt::Write;

use crate::queue::Seq;

/// `SEQ<TAB>escaped body`, without the line end.
pub fn format_line(seq: Seq, event: &str) -> String {
    let mut out = String::with_capacity(event.len() + 24);
    let _ = write!(out, "{seq}\t");
    escape_into(&mut out, event);
    out
}

/// `{"seq":N,"event":"..."}` (the `--json` format).
pub fn format_json(seq: Seq, event: &str) -> String {
    serde_json::json!({ "seq": seq, "event": event }).to_string()
}

pub fn escape_into(out: &mut String, event: &str) {
    for c in event.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnescapeError {
    #[error("bad escape at byte {0}")]
    BadEscape(usize),
    #[error("no TAB between seq and body")]
    NoTab,
    #[error("bad seq {0:?}")]
    BadSeq(String),
}

/// The exact event body of an escaped BODY.
pub fn unescape(escaped: &str) -> Result<String, UnescapeError> {
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.char_indices();
    while let Some((at, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next().map(|(_, c)| c) {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                if chars.next().map(|(_, c)| c) != Some('{') {
                    return Err(UnescapeError::BadEscape(at));
                }
                let mut hex = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('}') => break,
                        Some(h) if h.is_ascii_hexdigit() && hex.len() < 6 => hex.push(h),
                        _ => return Err(UnescapeError::BadEscape(at)),
                    }
                }
                let c = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or(UnescapeError::BadEscape(at))?;
                out.push(c);
            }
            _ => return Err(UnescapeError::BadEscape(at)),
        }
    }
    Ok(out)
}

/// Parse one output line back into `(seq, event)`.
pub fn parse_line(line: &str) -> Result<(Seq, String), UnescapeError> {
    let (seq, body) = line.split_once('\t').ok_or(UnescapeError::NoTab)?;
    let seq = seq.parse().map_err(|_| UnescapeError::BadSeq(seq.to_string()))?;
    Ok((seq, unescape(body)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(format_line(7, "plain text"), "7\tplain text");
        assert_eq!(format_line(8, "a\nb\tc\\d\re"), "8\ta\\nb\\tc\\\\d\\re");
        assert_eq!(format_line(9, "nul\0 bel\x07 nel\u{85}"), "9\tnul\\u{0} bel\\u{7} nel\\u{85}");
        assert_eq!(format_line(10, ""), "10\t");
        assert_eq!(format_line(11, "ünïcødé ✓"), "11\tünïcødé ✓");
        let json: serde_json::Value = serde_json::from_str(&format_json(3, "a\"b\n")).unwrap();
        assert_eq!(json, serde_json::json!({ "seq": 3, "event": "a\"b\n" }));
    }

    #[test]
    fn bad_escapes_are_errors() {
        for bad in ["\\", "\\x", "\\u", "\\u{", "\\u{110000}", "\\u{zz}", "\\u{1234567}"] {
            assert!(unescape(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_line("no tab"), Err(UnescapeError::NoTab));
        assert_eq!(parse_line("x\ty"), Err(UnescapeError::BadSeq("x".into())));
    }

    proptest! {
        #[test]
        fn any_event_is_one_line_and_round_trips(seq in any::<u64>(), event in any::<String>()) {
            let line = format_line(seq, &event);
            prop_assert_eq!(line.lines().count(), 1);
            prop_assert!(!line.chars().any(|c| c.is_control() && c != '\t'));
            prop_assert_eq!(parse_line(&line), Ok((seq, event)));
        }
    }
}
