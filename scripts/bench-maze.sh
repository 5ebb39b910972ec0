#!/usr/bin/env bash
# Follower-maze benchmark (part of make bench): the reference workload
# (default 10M events, 100 clients) against the Go reference server fmaze
# (when FMAZE=/path/to/fmaze is set), a single raftq node and a 3-node
# cluster, measured in the same run with the same pacing. Prints one JSON
# line per run with the wall time and each server process's peak RSS
# (VmHWM) and CPU seconds (and the verifier's), and appends it to $OUT.
#
#   FMAZE=...             fmaze binary, built by the operator (docs/benchmarks.md)
#   FMAZE_FLUSH=...       fmaze's -flush-interval (default: fmaze's own, 10s). Its
#                         wall time includes waiting for that ticker to flush the
#                         last notifications of quiet users: anywhere within one
#                         interval. A short one (100ms) gives a stable figure.
#   BENCH_MAZE_PACING=... reference (default: the reference program's pacing,
#                         whose wall time predicts the reference's) or bulk
#   BENCH_MAZE_EVENTS=... events per run (default 10000000)
#   RAFTQ_MAZE_COALESCE_MS=0 measures the nodes without source coalescing
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# `times` prints the locale's decimal point; the parsing below wants a dot.
export LC_ALL=C

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/raftq/target}"
RAFTQ="${RAFTQ:-$CARGO_TARGET_DIR/release/raftq}"
EVENTS="${BENCH_MAZE_EVENTS:-10000000}"
PACING="${BENCH_MAZE_PACING:-reference}"
FMAZE="${FMAZE:-}"
FMAZE_FLUSH="${FMAZE_FLUSH:-}"
OUT="${OUT:-bench-results.jsonl}"
WORK="$(mktemp -d /tmp/raftq-bench-maze.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

[ -x "$RAFTQ" ] || cargo build --release --bin raftq
"$RAFTQ" certs --out "$WORK/certs" --hosts 127.0.0.1,localhost >/dev/null

declare -a NODE_PID
start() { # name index seeds
    local name=$1 i=$2 seeds=$3
    "$RAFTQ" serve --data-dir "$WORK/$name$i" \
        --api-addr "127.0.0.1:$((38080 + i))" --raft-addr "127.0.0.1:$((31210 + i))" \
        --gossip-addr "127.0.0.1:$((31310 + i))" --advertise-host 127.0.0.1 \
        --maze-source-addr "127.0.0.1:$((39090 + i))" --maze-client-addr "127.0.0.1:$((39190 + i))" \
        --tls-cert "$WORK/certs/node.pem" --tls-key "$WORK/certs/node-key.pem" --tls-ca "$WORK/certs/ca.pem" \
        ${seeds:+--seeds "$seeds"} >"$WORK/$name$i.log" 2>&1 &
    NODE_PID[$i]=$!
    PIDS+=($!)
}
voters_ok() { # n expected
    curl -sk --max-time 2 "https://127.0.0.1:$((38080 + 1))/status" \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if len(d["voters"])==int(sys.argv[1]) and d["role"]=="leader" else 1)' "$1" 2>/dev/null
}
peak_rss_mib() { awk '/VmHWM/ {printf "%d", $2/1024}' "/proc/$1/status" 2>/dev/null || echo -1; }
TICKS=$(getconf CLK_TCK)
# User + system CPU seconds a live process has used (fields 14 and 15 of stat).
# "null" for a process that is gone (it is then left out of cores_busy).
cpu_seconds() { awk -v t="$TICKS" '{printf "%.1f", ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || echo null; }

run() { # target label nodes source clients pid...
    local target=$1 label=$2 n=$3 source=$4 clients=$5
    shift 5
    local t0 t1 result cpu0=()
    for pid in "$@"; do cpu0+=("$(cpu_seconds "$pid")"); done
    t0=$(date +%s.%N)
    # `times` in the substitution's shell reports its children: the
    # verifier's CPU, which shares the machine with the servers.
    result=$( { totalEvents="$EVENTS" "$RAFTQ" maze-verify --pacing "$PACING" \
        --source "$source" --clients "$clients" 2>"$WORK/verify-$label.log" || true; \
        times >"$WORK/times-$label"; } )
    t1=$(date +%s.%N)
    local verifier_cpu
    verifier_cpu=$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/);
        printf "%.1f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$WORK/times-$label")
    # Raft entries the source proposed (one log write and fsync per node each).
    local batches=null
    if [ "$target" = maze ]; then
        batches=$(curl -sk --max-time 5 "https://127.0.0.1:38081/status" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["maze"]["source_batches"])' \
            2>/dev/null || echo null)
    fi
    local rss=() cpu=() k=0
    for pid in "$@"; do
        rss+=("$(peak_rss_mib "$pid")")
        cpu+=("$(python3 -c 'import sys
a, b = sys.argv[1:3]
print("null" if "null" in (a, b) else round(float(a) - float(b), 1))' \
            "$(cpu_seconds "$pid")" "${cpu0[$k]}")")
        k=$((k + 1))
    done
    python3 - "$target" "$label" "$n" "$PACING" "$t0" "$t1" "$result" "$batches" "$verifier_cpu" \
        "${rss[*]}" "${cpu[*]}" <<'PY' | tee -a "$OUT"
import json, sys
target, label, n, pacing, t0, t1, result, batches, verifier_cpu = sys.argv[1:10]
rss = [int(x) for x in sys.argv[10].split()]
cpu = [json.loads(x) for x in sys.argv[11].split()]
verifier_cpu = float(verifier_cpu) if verifier_cpu else None
wall = float(t1) - float(t0)
known = [x for x in cpu if x is not None] + ([verifier_cpu] if verifier_cpu is not None else [])
r = json.loads(result) if result.strip().startswith("{") else {"result": "fail", "error": result}
line = {"target": target}
if target == "maze":
    line["nodes"] = int(n)
    line["source_batches"] = json.loads(batches)
line.update({"label": label, "pacing": pacing, "result": r.get("result"),
             "events": r.get("events"), "wall_seconds": round(float(t1) - float(t0), 1),
             "events_per_sec": r.get("events_per_sec"), "peak_rss_mib": rss,
             # CPU seconds during the run: each server process, and the
             # verifier; cores_busy is their sum over the wall time (the
             # machine's cores bound it).
             "cpu_seconds": cpu, "verifier_cpu_seconds": verifier_cpu,
             "cores_busy": round(sum(known) / wall, 2) if wall > 0 else None,
             "error": r.get("error")})
print(json.dumps(line))
PY
}

if [ -n "$FMAZE" ]; then
    echo "== fmaze (Go reference server, no persistence): $EVENTS events, $PACING pacing"
    "$FMAZE" -event-source-listen 127.0.0.1:39089 -clients-listen 127.0.0.1:39189 \
        ${FMAZE_FLUSH:+-flush-interval "$FMAZE_FLUSH"} >"$WORK/fmaze.log" 2>&1 &
    FMAZE_PID=$!
    PIDS+=($!)
    run fmaze fmaze 1 127.0.0.1:39089 127.0.0.1:39189 "$FMAZE_PID"
    kill -9 "$FMAZE_PID"
    wait "$FMAZE_PID" 2>/dev/null || true
else
    echo "fmaze: not measured (set FMAZE=/path/to/fmaze; see docs/benchmarks.md)"
fi

echo "== maze: single node, $EVENTS events, $PACING pacing"
start single 1 ""
for _ in $(seq 1 100); do voters_ok 1 && break; sleep 0.2; done
run maze single 1 127.0.0.1:39091 127.0.0.1:39191 "${NODE_PID[1]}"
kill -9 "${NODE_PID[1]}"
# The cluster reuses node 1's ports: wait until the old process is gone.
wait "${NODE_PID[1]}" 2>/dev/null || true

echo "== maze: 3 nodes, $EVENTS events, $PACING pacing (source and clients on the leader)"
start cluster 1 ""
start cluster 2 127.0.0.1:31311
start cluster 3 127.0.0.1:31311
for _ in $(seq 1 150); do voters_ok 3 && break; sleep 0.2; done
run maze cluster 3 127.0.0.1:39091 127.0.0.1:39191 "${NODE_PID[1]}" "${NODE_PID[2]}" "${NODE_PID[3]}"
