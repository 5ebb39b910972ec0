//! The error table of docs/api.md against this tier: every documented
//! status and code must be asserted by some test here. A new row (or a new
//! code in a row) without a test here fails this one.
//!
//! A textual check, kept cheap: each code appears quoted, and each status
//! as its `StatusCode` constant, in the tier's test sources (not in this
//! file, which names neither). Where each pair is asserted:
//!
//! - 307 `not_leader`: `admin.rs` (a transfer asked of a follower);
//! - 400, 404, 405, 409, 413, 415, 410, 507 `full`: `errors.rs`;
//! - 401 `unauthorized`: `errors.rs`, and `admin.rs` for the admin token;
//! - 403 `admin_forbidden`, 429 `rate_limited`: `admin.rs`;
//! - 500 `internal`, 503 (all four), 507 `disk_full`: `errors.rs`;
//! - the work-queue codes (`lease_lost`, `cursor_conflict`, `invalid_policy`,
//!   `invalid_batch`, `too_many_waiters`): `work.rs`.

/// The sources searched: every test module of the tier but this one.
const SOURCES: &[(&str, &str)] = &[
    ("admin.rs", include_str!("admin.rs")),
    ("errors.rs", include_str!("errors.rs")),
    ("lifecycle.rs", include_str!("lifecycle.rs")),
    ("work.rs", include_str!("work.rs")),
];

const API_DOC: &str = include_str!("../../docs/api.md");

/// `(status, codes)` of each row of the error table: the rows whose first
/// cell is a 3-digit status, the codes being the backticked words of the
/// second cell.
fn documented() -> Vec<(u16, Vec<String>)> {
    API_DOC
        .lines()
        .filter_map(|line| {
            let mut cells = line.strip_prefix('|')?.split('|').map(str::trim);
            let status: u16 = cells.next()?.parse().ok()?;
            let codes = cells.next()?.split('`').skip(1).step_by(2).map(String::from).collect();
            Some((status, codes))
        })
        .collect()
}

/// `StatusCode::NOT_FOUND` for 404: the constant's name is its reason
/// phrase, upper-cased, with underscores.
fn constant(status: u16) -> String {
    let code = reqwest::StatusCode::from_u16(status).expect("a valid status");
    let reason = code.canonical_reason().expect("a registered status");
    format!("StatusCode::{}", reason.to_uppercase().replace([' ', '-'], "_"))
}

#[test]
fn every_documented_status_and_code_is_asserted_in_this_tier() {
    let rows = documented();
    // The table as docs/api.md has it today; fewer rows means the parser
    // (or the table's layout) broke, not that there is less to check.
    assert!(rows.len() >= 14, "the error table was not found: {rows:?}");
    let in_sources = |needle: &str| SOURCES.iter().any(|(_, text)| text.contains(needle));
    let mut missing = Vec::new();
    for (status, codes) in &rows {
        assert!(!codes.is_empty(), "row {status} names no code");
        let constant = constant(*status);
        if !in_sources(&constant) {
            missing.push(constant);
        }
        for code in codes {
            let quoted = format!("\"{code}\"");
            if !in_sources(&quoted) {
                missing.push(format!("{status} {quoted}"));
            }
        }
    }
    assert!(missing.is_empty(), "documented in docs/api.md, never asserted here: {missing:?}");
}
