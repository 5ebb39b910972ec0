//! Server-Sent Events: an incremental parser (the WHATWG "event stream"
//! interpretation) and the decoding of raftq's watch frames (docs/api.md,
//! `GET /events/watch`). Pure: bytes in, frames out; no I/O.
//!
//! The parser keeps at most one partial line and one frame's data, each
//! bounded by [`FRAME_BYTES_MAX`], so a hostile or broken server cannot make
//! it grow without limit.

use std::collections::VecDeque;

use serde::Deserialize;

use crate::queue::Seq;
use crate::wire;

/// Largest line or frame accepted. An event is at most 1 MiB by default and
/// JSON escaping can grow it up to six times (`\u0000`).
/// The largest event a node accepts, JSON-escaped at worst (`\u00XX`, six
/// bytes per byte), plus room for the frame's fields.
pub const FRAME_BYTES_MAX: usize = crate::cli::MAX_EVENT_BYTES_LIMIT * 6 + 4096;
/// Frames parsed but not yet taken; past this the caller is not draining.
const QUEUED_FRAMES_MAX: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an SSE line or frame is larger than {FRAME_BYTES_MAX} bytes")]
    TooLarge,
    #[error("more than {QUEUED_FRAMES_MAX} SSE frames parsed and not taken")]
    Backlog,
    #[error("an SSE line is not UTF-8")]
    NotUtf8,
}

/// One dispatched SSE frame: what an `EventSource` would hand to a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The `event:` field; `message` when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field of this frame, if it had one.
    pub id: Option<String>,
}

/// Incremental SSE parser: feed it byte chunks as they arrive, take frames.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` starting this one belongs to it.
    after_cr: bool,
    started: bool,
    event: String,
    data: String,
    id: Option<String>,
    /// The block being read has had at least one field or comment line.
    block_open: bool,
    frames: VecDeque<RawFrame>,
    blocks: u64,
    retry_ms: Option<u64>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse `chunk`; complete frames become available through
    /// [`SseParser::next_frame`].
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), SseError> {
        let mut rest = chunk;
        if !self.started && !rest.is_empty() {
            self.started = true;
            // A UTF-8 byte order mark may open the stream; it is not data.
            if let Some(stripped) = rest.strip_prefix(b"\xEF\xBB\xBF") {
                rest = stripped;
            }
        }
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (line, tail) = rest.split_at(end);
            self.push_line_bytes(line)?;
            self.end_line()?;
            rest = &tail[1..];
            if tail[0] == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.push_line_bytes(rest)
    }

    /// The next complete frame, oldest first.
    pub fn next_frame(&mut self) -> Option<RawFrame> {
        self.frames.pop_front()
    }

    /// Whether a complete frame is waiting to be taken.
    pub fn has_frames(&self) -> bool {
        !self.frames.is_empty()
    }

    /// Blocks (blank-line-terminated groups of lines) seen so far, including
    /// ones that dispatch nothing such as a lone `retry:`: a liveness count.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// The last `retry:` value the server sent, in milliseconds.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > FRAME_BYTES_MAX {
            return Err(SseError::TooLarge);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), SseError> {
        let line = std::mem::take(&mut self.line);
        let line = String::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        if line.is_empty() {
            return self.dispatch();
        }
        self.block_open = true;
        if line.starts_with(':') {
            return Ok(()); // a comment
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.data.len() + value.len() + 1 > FRAME_BYTES_MAX {
                    return Err(SseError::TooLarge);
                }
                self.data.push_str(value);
                self.data.push('\n');
            }
            // An id containing NUL is ignored, as the standard says.
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry_ms = value.parse().ok();
            }
            _ => {} // unknown fields are ignored
        }
        Ok(())
    }

    fn dispatch(&mut self) -> Result<(), SseError> {
        if self.block_open {
            self.blocks += 1;
            self.block_open = false;
        }
        let event = std::mem::take(&mut self.event);
        let id = self.id.take();
        if self.data.is_empty() {
            return Ok(());
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the trailing '\n' added after the last data line
        if self.frames.len() >= QUEUED_FRAMES_MAX {
            return Err(SseError::Backlog);
        }
        let event = if event.is_empty() { "message".to_string() } else { event };
        self.frames.push_back(RawFrame { event, data, id });
        Ok(())
    }
}

/// A raftq watch frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchFrame {
    /// `event: event`: the queue's event `seq`.
    Event { seq: Seq, event: String },
    /// `event: heartbeat`: the serving node's latest applied seq and oldest
    /// retained seq of the queue.
    Heartbeat { head: Seq, oldest: Seq },
    /// `event: gone`: seq `next` was compacted before it could be sent; the
    /// server closes the stream after this frame.
    Gone { oldest: Seq, head: Seq, next: Seq },
    /// A frame type this client does not know (ignored, for compatibility
    /// with newer servers).
    Other { event: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("`{event}` frame with bad data {data:?}: {reason}")]
    BadData { event: String, data: String, reason: String },
    #[error("event frame id {id:?} does not match its seq {seq}")]
    IdMismatch { id: String, seq: Seq },
}

fn parse<'a, T: Deserialize<'a>>(frame: &'a RawFrame) -> Result<T, DecodeError> {
    serde_json::from_str(&frame.data).map_err(|e| DecodeError::BadData {
        event: frame.event.clone(),
        data: frame.data.chars().take(200).collect(),
        reason: e.to_string(),
    })
}

impl WatchFrame {
    pub fn decode(frame: &RawFrame) -> Result<WatchFrame, DecodeError> {
        match frame.event.as_str() {
            wire::frame::EVENT => {
                let data: wire::frame::EventData = parse(frame)?;
                if let Some(id) = &frame.id {
                    if id.parse::<Seq>().ok() != Some(data.seq) {
                        return Err(DecodeError::IdMismatch { id: id.clone(), seq: data.seq });
                    }
                }
                Ok(WatchFrame::Event { seq: data.seq, event: data.event })
            }
            wire::frame::HEARTBEAT => {
                let data: wire::frame::Heartbeat = parse(frame)?;
                Ok(WatchFrame::Heartbeat { head: data.head, oldest: data.oldest })
            }
            wire::frame::GONE => {
                let data: wire::frame::Gone = parse(frame)?;
                Ok(WatchFrame::Gone { oldest: data.oldest, head: data.head, next: data.next })
            }
            other => Ok(WatchFrame::Other { event: other.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames_of<T: AsRef<[u8]>>(chunks: &[T]) -> Vec<RawFrame> {
        let mut p = SseParser::new();
        for c in chunks {
            p.feed(c.as_ref()).unwrap();
        }
        std::iter::from_fn(|| p.next_frame()).collect()
    }

    fn raw(event: &str, data: &str, id: Option<&str>) -> RawFrame {
        RawFrame { event: event.into(), data: data.into(), id: id.map(Into::into) }
    }

    /// The agreed wire format, byte for byte as the server writes it.
    const STREAM: &str = "retry: 1000\n\n\
        event: heartbeat\ndata: {\"head\":8,\"oldest\":1}\n\n\
        id: 7\nevent: event\ndata: {\"seq\":7,\"event\":\"a\\nb\"}\n\n\
        id: 8\nevent: event\ndata: {\"seq\":8,\"event\":\"\"}\n\n\
        event: gone\ndata: {\"oldest\":20,\"head\":30,\"next\":9}\n\n";

    fn decoded(frames: &[RawFrame]) -> Vec<WatchFrame> {
        frames.iter().map(|f| WatchFrame::decode(f).unwrap()).collect()
    }

    #[test]
    fn parses_the_agreed_wire_format() {
        let mut p = SseParser::new();
        p.feed(STREAM.as_bytes()).unwrap();
        assert_eq!(p.retry_ms(), Some(1000));
        assert_eq!(p.blocks(), 5, "the retry-only block counts as a sign of life");
        let frames: Vec<_> = std::iter::from_fn(|| p.next_frame()).collect();
        assert_eq!(
            decoded(&frames),
            vec![
                WatchFrame::Heartbeat { head: 8, oldest: 1 },
                WatchFrame::Event { seq: 7, event: "a\nb".into() },
                WatchFrame::Event { seq: 8, event: String::new() },
                WatchFrame::Gone { oldest: 20, head: 30, next: 9 },
            ]
        );
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_frames() {
        let whole = frames_of(&[STREAM.as_bytes()]);
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            assert_eq!(frames_of(&[&bytes[..cut], &bytes[cut..]]), whole, "cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(frames_of(&singles), whole);
    }

    #[test]
    fn crlf_and_cr_line_endings_are_accepted() {
        let lf = frames_of(&["event: e\ndata: x\ndata: y\n\n"]);
        assert_eq!(lf, vec![raw("e", "x\ny", None)]);
        assert_eq!(frames_of(&["event: e\r\ndata: x\r\ndata: y\r\n\r\n"]), lf);
        assert_eq!(frames_of(&["event: e\rdata: x\rdata: y\r\r"]), lf);
        // A CRLF split across chunks is one line end, not two.
        assert_eq!(frames_of(&["event: e\r", "\ndata: x\r", "\ndata: y\r\n\r", "\n"]), lf);
    }

    #[test]
    fn standard_field_rules() {
        // Comments, unknown fields, no space after the colon, a field with no
        // colon, a BOM at the start, default event type "message".
        let frames = frames_of(&["\u{FEFF}: hello\nfoo: bar\ndata:x\ndata\nid: 3\n\n"]);
        assert_eq!(frames, vec![raw("message", "x\n", Some("3"))]);
        // Only one leading space is stripped.
        assert_eq!(frames_of(&["data:  two\n\n"]), vec![raw("message", " two", None)]);
        // A block without data dispatches nothing and does not leak its type.
        assert_eq!(frames_of(&["event: x\n\ndata: d\n\n"]), vec![raw("message", "d", None)]);
        // Incomplete trailing frame is held back.
        assert_eq!(frames_of(&["data: d\n"]), vec![]);
        // A non-numeric retry is ignored.
        let mut p = SseParser::new();
        p.feed(b"retry: 5x\n\nretry: 250\n\nretry: soon\n\n").unwrap();
        assert_eq!(p.retry_ms(), Some(250));
    }

    #[test]
    fn oversized_lines_and_frames_are_refused() {
        let mut p = SseParser::new();
        let big = vec![b'a'; FRAME_BYTES_MAX / 2 + 1];
        p.feed(b"data: ").unwrap();
        p.feed(&big).unwrap();
        assert_eq!(p.feed(&big), Err(SseError::TooLarge));

        let mut p = SseParser::new();
        let half = format!("data: {}\n", "b".repeat(FRAME_BYTES_MAX / 2));
        p.feed(half.as_bytes()).unwrap();
        assert_eq!(p.feed(half.as_bytes()), Err(SseError::TooLarge));
    }

    #[test]
    fn an_undrained_parser_refuses_more_frames() {
        let mut p = SseParser::new();
        let frame = b"data: x\n\n";
        for _ in 0..QUEUED_FRAMES_MAX {
            p.feed(frame).unwrap();
        }
        assert_eq!(p.feed(frame), Err(SseError::Backlog));
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut p = SseParser::new();
        assert_eq!(p.feed(b"data: \xff\n"), Err(SseError::NotUtf8));
    }

    #[test]
    fn decode_checks_data_and_id() {
        let ok = raw("event", r#"{"seq":5,"event":"x"}"#, Some("5"));
        assert_eq!(WatchFrame::decode(&ok), Ok(WatchFrame::Event { seq: 5, event: "x".into() }));
        let no_id = raw("event", r#"{"seq":5,"event":"x"}"#, None);
        assert!(WatchFrame::decode(&no_id).is_ok());
        let wrong_id = raw("event", r#"{"seq":5,"event":"x"}"#, Some("6"));
        assert_eq!(
            WatchFrame::decode(&wrong_id),
            Err(DecodeError::IdMismatch { id: "6".into(), seq: 5 })
        );
        for (event, data) in [
            ("event", "not json"),
            ("event", r#"{"seq":-1,"event":"x"}"#),
            ("event", r#"{"seq":1}"#),
            ("heartbeat", r#"{"head":"7","oldest":1}"#),
            ("gone", r#"{"oldest":1,"head":2}"#),
        ] {
            assert!(
                matches!(
                    WatchFrame::decode(&raw(event, data, None)),
                    Err(DecodeError::BadData { .. })
                ),
                "{event} {data}"
            );
        }
        assert_eq!(
            WatchFrame::decode(&raw("future-thing", "{}", None)),
            Ok(WatchFrame::Other { event: "future-thing".into() })
        );
    }

    /// Writes frames the way an SSE server may: any line ending, optional
    /// space after the colon, comments in between.
    fn encode(frames: &[(Seq, String)], ending: &str, space: bool) -> Vec<u8> {
        let sp = if space { " " } else { "" };
        let mut out = String::new();
        for (seq, event) in frames {
            let data = serde_json::json!({ "seq": seq, "event": event }).to_string();
            out.push_str(&format!(":c{ending}id:{sp}{seq}{ending}event:{sp}event{ending}"));
            out.push_str(&format!("data:{sp}{data}{ending}{ending}"));
        }
        out.into_bytes()
    }

    proptest! {
        #[test]
        fn round_trip_with_arbitrary_bodies_and_chunking(
            bodies in proptest::collection::vec(any::<String>(), 0..8),
            ending in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
            space in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let frames: Vec<(Seq, String)> =
                bodies.into_iter().enumerate().map(|(i, b)| (i as Seq + 1, b)).collect();
            let bytes = encode(&frames, ending, space);
            let mut cuts: Vec<usize> =
                cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let mut p = SseParser::new();
            for pair in cuts.windows(2) {
                p.feed(&bytes[pair[0]..pair[1]]).unwrap();
            }
            let got: Vec<(Seq, String)> = std::iter::from_fn(|| p.next_frame())
                .map(|f| match WatchFrame::decode(&f).unwrap() {
                    WatchFrame::Event { seq, event } => (seq, event),
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            prop_assert_eq!(got, frames);
        }
    }
}
