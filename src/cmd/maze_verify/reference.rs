//! The pure parts of `--pacing reference`: how a batch goes on the wire and
//! what the client side does with every notification.
//!
//! The reference program writes each shuffled batch through a buffered
//! writer and flushes it: one `write` per batch on a blocking socket. Its
//! clients parse every notification into an event and check that each user
//! gets its events in seq order, all on one busy thread. Reproducing both
//! is what makes our wall time predict the reference's: a server that turns
//! each small read into its own Raft entry pays for it here, and the
//! verifier competes with the server for the machine's cores as the
//! reference does.

/// One batch as the single buffer the reference writes and flushes.
pub fn batch_bytes(batch: &[String]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(batch.iter().map(String::len).sum());
    for line in batch {
        bytes.extend_from_slice(line.as_bytes());
    }
    bytes
}

/// A notification parsed the way the reference's client does: every field
/// checked, not just compared as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub seq: u64,
    pub kind: u8,
    pub from: Option<u64>,
    pub to: Option<u64>,
}

/// Parses one received line (`seq|kind[|from[|to]]\n`). Deliberately its
/// own parser, not the server's, so that a server-side parsing bug cannot
/// hide from the check.
pub fn parse(line: &[u8]) -> Result<Parsed, String> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
    let body = text
        .strip_suffix('\n')
        .map(|body| body.strip_suffix('\r').unwrap_or(body))
        .ok_or_else(|| format!("{text:?} has no line ending"))?;
    let fields: Vec<&str> = body.split('|').collect();
    let number = |i: usize| -> Result<u64, String> {
        fields[i].parse().map_err(|_| format!("{body:?}: field {i} is not a number"))
    };
    let seq = number(0)?;
    let kind = match fields.get(1).map(|kind| kind.as_bytes()) {
        Some([kind]) => *kind,
        _ => return Err(format!("{body:?}: no event type")),
    };
    let arity = match kind {
        b'B' => 2,
        b'S' => 3,
        b'F' | b'U' | b'P' => 4,
        _ => return Err(format!("{body:?}: unknown event type")),
    };
    if fields.len() != arity {
        return Err(format!("{body:?}: {} fields for type {}", fields.len(), kind as char));
    }
    let from = if arity > 2 { Some(number(2)?) } else { None };
    let to = if arity > 3 { Some(number(3)?) } else { None };
    Ok(Parsed { seq, kind, from, to })
}

/// One user's order check: every notification parses and its seq is above
/// the previous one's.
#[derive(Debug, Default)]
pub struct OrderCheck {
    last_seq: u64,
}

impl OrderCheck {
    pub fn check(&mut self, line: &[u8]) -> Result<Parsed, String> {
        let parsed = parse(line)?;
        if parsed.seq <= self.last_seq {
            return Err(format!("seq {} after seq {}: out of order", parsed.seq, self.last_seq));
        }
        self.last_seq = parsed.seq;
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_one_buffer_in_batch_order() {
        let batch = vec!["3|B\n".to_string(), "1|S|7\n".to_string(), "2|P|1|2\n".to_string()];
        assert_eq!(batch_bytes(&batch), b"3|B\n1|S|7\n2|P|1|2\n");
        assert!(batch_bytes(&[]).is_empty());
    }

    #[test]
    fn parses_every_event_type() {
        let p = |line: &str| parse(line.as_bytes()).unwrap();
        assert_eq!(p("9|B\n"), Parsed { seq: 9, kind: b'B', from: None, to: None });
        assert_eq!(p("1|S|7\r\n"), Parsed { seq: 1, kind: b'S', from: Some(7), to: None });
        for kind in ["F", "U", "P"] {
            let parsed = p(&format!("5|{kind}|1|2\n"));
            assert_eq!((parsed.seq, parsed.from, parsed.to), (5, Some(1), Some(2)));
        }
    }

    #[test]
    fn rejects_malformed_notifications() {
        for bad in [
            "9|B",         // no line ending
            "x|B\n",       // seq not a number
            "9|Q\n",       // unknown type
            "9|BB\n",      // type too long
            "9\n",         // no type
            "9|S\n",       // missing from
            "9|B|1\n",     // extra field
            "9|P|1\n",     // missing to
            "9|F|1|y\n",   // to not a number
            "9|U|1|2|3\n", // extra field
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
        assert!(parse(&[0xff, b'\n']).is_err());
    }

    #[test]
    fn order_check_wants_strictly_rising_seqs() {
        let mut order = OrderCheck::default();
        assert_eq!(order.check(b"2|B\n").unwrap().seq, 2);
        assert_eq!(order.check(b"5|S|1\n").unwrap().seq, 5);
        let error = order.check(b"4|B\n").unwrap_err();
        assert!(error.contains("out of order"), "{error}");
        // A repeat is out of order too.
        let mut repeat = OrderCheck::default();
        repeat.check(b"1|B\n").unwrap();
        assert!(repeat.check(b"1|B\n").is_err());
        assert!(OrderCheck::default().check(b"nonsense\n").is_err());
    }
}
