//! `make fuzz`: the parsers that face the network or the disk, fed
//! arbitrary bytes for a bounded time (`FUZZ_SECS` per target, default 30).
//! Not part of `make test` (every target is `#[ignore]`d); stable toolchain
//! only: proptest generates the inputs.
//!
//! Two properties per target: no panic (a panic fails the run, with the
//! shrunk input), and no allocation out of proportion to the input. A
//! counting global allocator records the peak live bytes while one input is
//! parsed; more than [`ALLOC_PER_INPUT_BYTE`] times the input plus
//! [`ALLOC_SLACK`] is a failure: a length field an attacker controls must
//! not make us reserve memory the input does not back.
//!
//! Run one target with `make fuzz FUZZ_TARGET=snapshot` (a test-name
//! filter). Targets run one at a time (`--test-threads=1`) so the allocation
//! counts are not mixed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let grow = new_size - layout.size();
            let live = LIVE.fetch_add(grow, Ordering::Relaxed) + grow;
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ALLOC_PER_INPUT_BYTE: usize = 16;
const ALLOC_SLACK: usize = 1 << 20;

fn budget() -> Duration {
    let secs = std::env::var("FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    Duration::from_secs(secs)
}

/// Runs `check` on inputs from `strategy` until the time budget is spent,
/// checking the allocation bound around each call.
fn fuzz<S, F>(name: &str, strategy: S, size: fn(&S::Value) -> usize, check: F)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(&S::Value),
{
    let deadline = Instant::now() + budget();
    let mut rounds = 0u64;
    while Instant::now() < deadline {
        let mut runner = TestRunner::new(Config { cases: 512, ..Config::default() });
        let result = runner.run(&strategy, |input| {
            let before = LIVE.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            check(&input);
            let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
            let allowed = size(&input) * ALLOC_PER_INPUT_BYTE + ALLOC_SLACK;
            if peak > allowed {
                return Err(TestCaseError::fail(format!(
                    "{name}: {peak} bytes allocated for a {}-byte input (allowed {allowed})",
                    size(&input)
                )));
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{name}: {e}");
        }
        rounds += 1;
    }
    eprintln!("fuzz {name}: {} inputs in {:?}", rounds * 512, budget());
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// Bytes biased towards the syntax the parser looks for.
fn syntax_bytes(alphabet: &'static [u8], max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![3 => proptest::sample::select(alphabet), 1 => any::<u8>()],
        0..max,
    )
}

/// The size of a byte-vector input (a `fn` pointer over the strategy's
/// value type, hence `&Vec`).
#[allow(clippy::ptr_arg)]
fn len(v: &Vec<u8>) -> usize {
    v.len()
}

#[test]
#[ignore = "fuzzing: run with make fuzz"]
fn fuzz_query_strings_and_form_bodies() {
    fuzz("form", syntax_bytes(b"=&%+abc019AF;", 4096), len, |input| {
        let _ = raftq::api::extract::form_pairs(input);
        let text = String::from_utf8_lossy(input);
        if let Ok(params) = raftq::api::extract::Params::parse(Some(&text)) {
            let _ = params.u64("seq");
            let _ = params.bool("force");
            let _ = raftq::api::extract::consistency(&params);
        }
        let _ = raftq::api::extract::name("queue", &text);
    });
}

#[test]
#[ignore = "fuzzing: run with make fuzz"]
fn fuzz_event_bodies() {
    let content_types = ["application/x-www-form-urlencoded", "text/plain", "application/json", ""];
    fuzz(
        "event body",
        (syntax_bytes(b"{}\"event=:%\\u0", 4096), 0..content_types.len(), 0usize..8192),
        |(b, _, _)| b.len(),
        |(body, ct, max)| {
            let mut headers = axum::http::HeaderMap::new();
            if !content_types[*ct].is_empty() {
                headers.insert(
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderValue::from_static(content_types[*ct]),
                );
            }
            let _ = raftq::api::extract::event(&headers, body, *max);
        },
    );
}

#[test]
#[ignore = "fuzzing: run with make fuzz"]
fn fuzz_maze_lines() {
    fuzz("maze line", syntax_bytes(b"0123456789|FUBPS\r\n", 256), len, |input| {
        let _ = raftq::maze::protocol::parse_line(&String::from_utf8_lossy(input));
        let _ = raftq::maze_net::clients::parse_user_id(&String::from_utf8_lossy(input));
    });
}

#[test]
#[ignore = "fuzzing: run with make fuzz"]
fn fuzz_sse_frames() {
    fuzz(
        "sse",
        proptest::collection::vec(syntax_bytes(b"data:id event\r\n{}\"seq0123:", 512), 0..8),
        |chunks| chunks.iter().map(Vec::len).sum(),
        |chunks| {
            let mut parser = raftq::consumer::sse::SseParser::new();
            for chunk in chunks {
                if parser.feed(chunk).is_err() {
                    return;
                }
                while let Some(frame) = parser.next_frame() {
                    let _ = raftq::consumer::sse::WatchFrame::decode(&frame);
                }
            }
        },
    );
}

/// A valid snapshot, to mutate: the fuzzer then also reaches the records.
fn valid_snapshot() -> Vec<u8> {
    let meta = raftq::raft::types::SnapshotMeta::default();
    let mut w = raftq::raft::snapshot::Writer::new(Vec::new(), &meta).unwrap();
    w.record(0, b"q/default", b"{}").unwrap();
    w.record(1, b"default\0\0\0\0\0\0\0\0\x01", b"hello").unwrap();
    w.finish().unwrap()
}

#[test]
#[ignore = "fuzzing: run with make fuzz"]
fn fuzz_snapshot_files_and_chunks() {
    let valid = valid_snapshot();
    let mutated = (proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8), 0..valid.len())
        .prop_map(move |(flips, cut)| {
            let mut file = valid.clone();
            for (at, byte) in flips {
                let i = at % file.len();
                file[i] = byte;
            }
            file.truncate(cut.max(1));
            file
        });
    fuzz("snapshot", prop_oneof![mutated, bytes(2048)], len, |input| {
        if let Ok(reader) = raftq::raft::snapshot::Reader::new(&input[..]) {
            let _ = reader.validate();
        }
        let _ = raftq::raft::network::decode_snapshot_header(input);
    });
}

#[test]
#[ignore = "fuzzing: run with make fuzz"]
fn fuzz_internal_rpc_bodies() {
    fuzz("rpc", syntax_bytes(b"{}[]\":,Maze Lines epoch Queue Enqueue 0123", 4096), len, |input| {
        if let Ok(op) = serde_json::from_slice::<raftq::raft::types::Op>(input) {
            let _ =
                raftq::replica::forward::check_forwarded(&op, &raftq::maze::MazeLimits::default());
        }
        let _ = serde_json::from_slice::<
            openraft::raft::AppendEntriesRequest<raftq::raft::types::TypeConfig>,
        >(input);
    });
}

#[test]
#[ignore = "fuzzing: run with make fuzz"]
fn fuzz_flags_and_peer_headers() {
    fuzz("flags", syntax_bytes(b"0123456789.kKmMgGiBsmhd% ", 64), len, |input| {
        let text = String::from_utf8_lossy(input);
        let _ = raftq::units::parse_bytes(&text);
        let _ = raftq::units::parse_duration(&text);
        let _ = raftq::node::disk::parse_min_free(&text);
        let _ = raftq::raft::peer::verdict(7, Some("u"), Some(&text), Some(&text), true);
        let _ = raftq::consumer::line::parse_line(&text);
    });
}
