#!/usr/bin/env bash
# Screenshots of the web console for docs/console.md, from a real run: the
# ignored test `console_screenshots` starts a 3-node cluster with some
# traffic, opens the leader's /ui/ in headless Chromium and writes one PNG
# per view into docs/console/ (RAFTQ_SCREENSHOTS=DIR writes elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/raftq/target}"
cargo test --test cluster console_screenshots -- --ignored --nocapture
ls -l "${RAFTQ_SCREENSHOTS:-docs/console}"
