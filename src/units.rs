//! Humane sizes and durations for flags: `1GiB`, `512MB`, `4096`; `30s`,
//! `10m`, `24h`, `7d`, `250ms`. Used as clap value parsers, so a bad value
//! is refused at startup with the reason.
//!
//! Durations are parsed by `humantime`, which also takes compound and long
//! forms (`1h 30m`, `2days`, `500msec`); fractions stay refused, as before.
//! Sizes stay a small table here:
//! `bytesize` and `parse-size` accept fractions (`1.5GiB`), which these
//! flags refuse, and would need a filter around them larger than the table.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("{0:?} is not a size: use a number of bytes with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 1GiB")]
    Size(String),
    #[error("{0:?} is not a duration: use a number with a unit (ms, s, m, h, d), e.g. 30s or 7d")]
    Duration(String),
    #[error("{0:?} is too large")]
    Overflow(String),
}

/// Splits `"512 MiB"` into (512, "MiB").
fn split_number(input: &str) -> Option<(u64, &str)> {
    let s = input.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number = s[..digits].parse().ok()?;
    Some((number, s[digits..].trim()))
}

/// A byte count: a plain number, or one with a decimal (KB = 1000) or
/// binary (KiB = 1024) unit; case-insensitive.
pub fn parse_bytes(input: &str) -> Result<u64, UnitError> {
    let (number, unit) = split_number(input).ok_or_else(|| UnitError::Size(input.into()))?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return Err(UnitError::Size(input.into())),
    };
    number.checked_mul(factor).ok_or_else(|| UnitError::Overflow(input.into()))
}

/// A duration with a unit (`ms`, `s`, `m`, `h`, `d`, or any other form
/// `humantime` knows, e.g. `1h 30m`). A bare number is refused:
/// `--retention-age 7` could mean seconds or days.
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    // humantime 2.2 also reads fractions (`1.5h`); these flags never did,
    // and whole units say the same without rounding (`1h 30m`).
    if input.contains('.') {
        return Err(UnitError::Duration(input.into()));
    }
    match humantime::parse_duration(input.trim()) {
        Ok(duration) => Ok(duration),
        Err(humantime::DurationError::NumberOverflow) => Err(UnitError::Overflow(input.into())),
        Err(_) => Err(UnitError::Duration(input.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("10mb"), Ok(10_000_000));
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes(" 3kb "), Ok(3000));
        for bad in ["", "GiB", "1.5GiB", "-1", "1 parsecs", "1GiB2"] {
            assert!(matches!(parse_bytes(bad), Err(UnitError::Size(_))), "{bad:?}");
        }
        assert!(matches!(parse_bytes("99999999999TiB"), Err(UnitError::Overflow(_))));
        assert!(matches!(parse_bytes("99999999999999999999"), Err(UnitError::Size(_))));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "7", "s", "1.5h", "5 fortnights", "-3s", "3S"] {
            assert!(matches!(parse_duration(bad), Err(UnitError::Duration(_))), "{bad:?}");
        }
        assert!(matches!(parse_duration("999999999999999999d"), Err(UnitError::Overflow(_))));
    }

    #[test]
    fn humantime_forms_are_accepted_too() {
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("2days"), Ok(Duration::from_secs(2 * 86_400)));
        assert_eq!(parse_duration(" 30s "), Ok(Duration::from_secs(30)));
    }
}
