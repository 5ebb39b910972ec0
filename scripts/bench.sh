#!/usr/bin/env bash
# make bench: raftq vs etcd vs NATS JetStream, 3 members each on loopback,
# measured in one run and printed as one table (scripts/bench_table.py).
#
# Why peers in the same run: this machine is shared and noisy; absolute
# numbers drift by 2x between runs, ratios much less.
#
# Load generators: `oha` (an independent HTTP load generator, installed with
# `cargo install oha --locked` when missing) for the HTTP systems (raftq
# `POST /event` over HTTPS to the leader, etcd's v3 JSON gateway `PUT`), and
# `raftq bench` (one client design for all three; NATS has no HTTP).
# Every measurement is one JSON line appended to $OUT (default
# bench-results.jsonl); the table is printed from those lines at the end,
# appended to $OUT and written to ${OUT%.jsonl}.md.
#
# Parts, chosen with BENCH_ONLY (comma-separated; default all):
#   rows      writes/s at BENCH_CLIENTS (1,16,64), p99, put+delete 8+8, CPU
#   failover  BENCH_KILLS (5) kill -9 of the leader under load, per system
#   maze      scripts/bench-maze.sh (BENCH_MAZE=0 skips it in `all`)
#   work      work queues: batch publish and lease+ack, raftq vs NATS
#   table     only re-print the table from an existing $OUT
#   writes    rows,failover,maze (what `writes` meant before)
# BENCH_SYSTEMS (default raftq,etcd,nats) limits rows and failover to some.
# `all` empties $OUT first; any other choice appends to it, and the table
# takes the newest line of each measurement, so one part can be redone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/raftq/target}"
SECONDS_PER_RUN="${BENCH_SECONDS:-10}"
CLIENTS="${BENCH_CLIENTS:-1,16,64}"
OUT="${OUT:-bench-results.jsonl}"
ONLY="${BENCH_ONLY:-all}"
KILLS="${BENCH_KILLS:-5}"
BATCH_CLIENTS="${BENCH_BATCH_CLIENTS:-1,16}"
WORKERS="${BENCH_WORKERS:-16}"
EVENT_BYTES=100
# Events queued before each lease-ack and put-delete row of `raftq bench`.
PREFILL="${BENCH_PREFILL:-100000}"
SYSTEMS="${BENCH_SYSTEMS:-raftq,etcd,nats}"

PARTS=",$ONLY,"
PARTS="${PARTS//,all,/,rows,failover,maze,work,}"
PARTS="${PARTS//,writes,/,rows,failover,maze,}"
for part in ${PARTS//,/ }; do
    case "$part" in rows | failover | maze | work | table) ;;
    *) echo "BENCH_ONLY: comma-separated all, rows, failover, maze, work, writes, table (got $part)" >&2; exit 2 ;;
    esac
done
want() { [[ $PARTS == *",$1,"* ]]; }
system() { [[ ",$SYSTEMS," == *",$1,"* ]]; }
if [ "${BENCH_MAZE:-1}" != 1 ]; then PARTS="${PARTS//,maze,/,}"; fi

print_table() {
    python3 scripts/bench_table.py "$OUT" | tee "${OUT%.jsonl}.md" | tee -a "$OUT"
}
if [ "$PARTS" = ",table," ]; then print_table; exit 0; fi

WORK="$(mktemp -d /tmp/raftq-bench.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 130" INT TERM

# Fails the run with the tail of the logs matching $2 (a glob under $WORK).
die_logs() {
    echo "bench: $1" >&2
    for log in "$WORK"/$2; do [ -f "$log" ] && { echo "--- $log" >&2; tail -20 "$log" >&2; }; done
    exit 1
}

# BENCH_RAFTQ: a raftq binary already built with --features bench-nats
# (skips the build).
if [ -n "${BENCH_RAFTQ:-}" ]; then
    RAFTQ=$BENCH_RAFTQ
else
    echo "== building raftq (release, with the NATS client of raftq bench)"
    cargo build --release --features bench-nats --bin raftq
    RAFTQ="$CARGO_TARGET_DIR/release/raftq"
fi
if [ "$ONLY" = all ]; then : >"$OUT"; fi

OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
if want rows && ! [ -x "$OHA" ]; then
    echo "== installing oha (cargo install oha --locked)"
    # Its own target dir: never mixed with raftq's build.
    CARGO_TARGET_DIR="$CARGO_TARGET_DIR/oha-install" cargo install oha --locked
fi
if want rows; then "$OHA" --version; fi

# Debian packages the run needs (root installs them; otherwise says how).
need_pkg() { # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y "$2" >/dev/null || { apt-get update >/dev/null && apt-get install -y "$2" >/dev/null; }
    else
        echo "$1 missing: sudo apt-get install -y $2" >&2; exit 1
    fi
}

"$RAFTQ" certs --out "$WORK/certs" --hosts 127.0.0.1,localhost >/dev/null
CLK_TCK=$(getconf CLK_TCK)

# CPU seconds (utime + stime) used so far by the given PIDs.
cpu_seconds() {
    local ticks=0 pid fields
    for pid in "$@"; do
        # Fields after the command name, which may hold spaces: utime and
        # stime are the 12th and 13th after the closing parenthesis.
        fields=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        ticks=$((ticks + $(echo "$fields" | awk '{print $12 + $13}')))
    done
    python3 -c 'import sys; print(int(sys.argv[1]) / int(sys.argv[2]))' "$ticks" "$CLK_TCK"
}

# Runs COMMAND... with the cluster's CPU use measured around it; prints the
# command's JSON lines with "cpu_seconds" and "wall_seconds" added and
# appends them to $OUT.
with_cpu() { # target tool workload -- command...
    local target=$1 tool=$2 workload=$3
    shift 4
    local c0 c1 t0 t1
    c0=$(cpu_seconds "${NODE_PIDS[@]}")
    t0=$(date +%s.%N)
    "$@" >"$WORK/row.out" || die_logs "$target $tool $workload failed" "$target*.log"
    t1=$(date +%s.%N)
    c1=$(cpu_seconds "${NODE_PIDS[@]}")
    python3 - "$target" "$tool" "$workload" "$c0" "$c1" "$t0" "$t1" "$WORK/row.out" <<'PY' | tee -a "$OUT"
import json, sys
target, tool, workload = sys.argv[1:4]
c0, c1, t0, t1 = (float(x) for x in sys.argv[4:8])
for line in open(sys.argv[8]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    d = json.loads(line)
    d.setdefault("target", target)
    d["target"], d["tool"], d["workload"] = target, tool, workload
    d["cpu_seconds"] = round(c1 - c0, 2)
    d["wall_seconds"] = round(t1 - t0, 2)
    print(json.dumps(d))
PY
}

# One oha run summarised as a JSON line: only the statuses listed in OK
# count as done (a 307 or 503 storm must not look like throughput).
oha_json() { # clients ok-statuses -- oha args...
    local clients=$1 ok=$2 json
    shift 3
    # Its own file: the put+delete row runs two at once.
    json=$(mktemp "$WORK/oha.XXXXXX")
    "$OHA" --no-tui --output-format json -z "${SECONDS_PER_RUN}s" -c "$clients" "$@" >"$json" 2>"$json.err" \
        || die_logs "oha failed: $*" "${json##*/}.err"
    python3 - "$clients" "$ok" "$json" <<'PY'
import json, sys
clients, ok, path = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
d = json.load(open(path))
codes = {str(k): int(v) for k, v in (d.get("statusCodeDistribution") or {}).items()}
done = sum(v for k, v in codes.items() if k in ok)
secs = d["summary"]["total"]
pct = d.get("latencyPercentiles") or {}
ms = lambda v: round(v * 1000, 2) if isinstance(v, (int, float)) else None
print(json.dumps({
    "clients": clients, "seconds": round(secs, 2), "writes": done,
    "writes_per_sec": round(done / secs) if secs else 0,
    "statuses": codes, "not_ok": sum(codes.values()) - done,
    # Requests still in flight when the run ends are cancelled: not errors.
    "errors": sum(v for k, v in (d.get("errorDistribution") or {}).items() if "deadline" not in k),
    "p50_ms": ms(pct.get("p50")), "p99_ms": ms(pct.get("p99")),
}))
PY
}

# --- raftq -----------------------------------------------------------------

declare -a RAFTQ_PID NODE_PIDS
raftq_url() { echo "https://127.0.0.1:$((28080 + $1))"; }
start_raftq() { # i seeds data-dir-prefix
    local i=$1 seeds=$2 dir=$3
    "$RAFTQ" serve --data-dir "$WORK/$dir$i" \
        --api-addr "127.0.0.1:$((28080 + i))" --raft-addr "127.0.0.1:$((21210 + i))" \
        --gossip-addr "127.0.0.1:$((21310 + i))" --advertise-host 127.0.0.1 --no-maze \
        --tls-cert "$WORK/certs/node.pem" --tls-key "$WORK/certs/node-key.pem" --tls-ca "$WORK/certs/ca.pem" \
        ${seeds:+--seeds "$seeds"} >>"$WORK/raftq$i.log" 2>&1 &
    RAFTQ_PID[i]=$!
    PIDS+=($!)
}
start_raftq_cluster() { # data-dir-prefix
    start_raftq 1 "" "$1"
    start_raftq 2 "127.0.0.1:21311" "$1"
    start_raftq 3 "127.0.0.1:21311" "$1"
    raftq_wait_whole
    NODE_PIDS=("${RAFTQ_PID[@]}")
}
stop_raftq() {
    for pid in "${RAFTQ_PID[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${RAFTQ_PID[@]}"; do wait "$pid" 2>/dev/null || true; done
}
status() { curl -sk --max-time 2 "$(raftq_url "$1")/status" || true; }
# Whole: every node answers, sees 3 voters and the same leader, and has
# applied to within 1 000 entries of the highest commit index (under load
# applied trails commit by a few entries at any instant).
raftq_whole() {
    local seen=""
    for i in 1 2 3; do
        seen+=$(status "$i" | python3 -c '
import json, sys
d = json.load(sys.stdin)
ok = len(d["voters"]) == 3 and d["leader_id"]
print(":".join(str(d[k]) for k in ("leader_id", "applied_index", "commit_index")) if ok else "x", end=" ")' 2>/dev/null || echo "x ")
    done
    python3 -c '
import sys
v = sys.argv[1].split()
if len(v) != 3 or "x" in v:
    sys.exit(1)
nodes = [x.split(":") for x in v]
top = max(int(n[2]) for n in nodes)
sys.exit(0 if len({n[0] for n in nodes}) == 1 and all(top - int(n[1]) <= 1000 for n in nodes) else 1)' "$seen"
}
raftq_wait_whole() {
    for _ in $(seq 1 300); do raftq_whole && return 0; sleep 0.2; done
    die_logs "raftq cluster is not whole after 60 s" "raftq*.log"
}
raftq_leader() {
    for i in 1 2 3; do
        if status "$i" | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["role"]=="leader" else 1)' 2>/dev/null; then
            echo "$i"; return 0
        fi
    done
    return 1
}

# Fills the default queue so that the put+delete row's deleters never find
# it empty (DELETE /event answers 204 then, which is not a dequeue).
raftq_prefill() { # url events
    python3 -c 'import json, sys; line = json.dumps({"event": "x" * int(sys.argv[1])}) + "\n"; sys.stdout.write(line * 500)' "$EVENT_BYTES" >"$WORK/batch.ndjson"
    for _ in $(seq 1 $(($2 / 500))); do
        curl -sk --fail --max-time 10 -o /dev/null -H 'content-type: application/x-ndjson' \
            --data-binary "@$WORK/batch.ndjson" "$1/events" || die_logs "prefill failed" "raftq*.log"
    done
}

BODY=$(python3 -c 'import sys; sys.stdout.write("x" * int(sys.argv[1]))' "$EVENT_BYTES")

raftq_rows() {
    local L url c
    L=$(raftq_leader) || die_logs "raftq has no leader" "raftq*.log"
    url=$(raftq_url "$L")
    echo "leader: node $L"
    for c in ${CLIENTS//,/ }; do
        with_cpu raftq oha writes -- oha_json "$c" 201 -- --insecure -m POST -T text/plain -d "$BODY" "$url/event"
    done
    # put+delete: 8 clients POST while 8 others DELETE, two oha processes.
    raftq_prefill "$url" 60000
    with_cpu raftq oha put-delete -- oha_put_delete \
        "oha_json 8 201 -- --insecure -m POST -T text/plain -d $BODY $url/event" \
        "oha_json 8 200 -- --insecure -m DELETE $url/event"
    bench_rows raftq --insecure --url "$url"
}

# `raftq bench` rows against one system: writes at each client count (one
# command per count, so that each row has its own CPU figure) and
# put-delete with 8+8 clients.
bench_rows() { # target bench-args...
    local target=$1 c
    shift
    for c in ${CLIENTS//,/ }; do
        with_cpu "$target" raftq-bench writes -- "$RAFTQ" bench --target "$target" "$@" \
            --clients "$c" --seconds "$SECONDS_PER_RUN"
    done
    with_cpu "$target" raftq-bench put-delete -- "$RAFTQ" bench --target "$target" "$@" \
        --workload put-delete --prefill "$PREFILL" --clients 16 --seconds "$SECONDS_PER_RUN"
}

# Runs two oha summaries at once (argument strings, split on spaces: no
# argument holds one) and merges them into one put+delete line.
oha_put_delete() { # put-command delete-command
    # shellcheck disable=SC2086 # word splitting intended, see above
    (set -f; $1 >"$WORK/put.json") &
    local put=$!
    # shellcheck disable=SC2086
    (set -f; $2 >"$WORK/delete.json")
    wait "$put"
    python3 - "$WORK/put.json" "$WORK/delete.json" <<'PY'
import json, sys
put, delete = (json.load(open(p)) for p in sys.argv[1:3])
done = put["writes"] + delete["writes"]
secs = max(put["seconds"], delete["seconds"])
print(json.dumps({
    "clients": put["clients"] + delete["clients"], "seconds": secs, "writes": done,
    "writes_per_sec": round(done / secs) if secs else 0,
    "puts": put["writes"], "deletes": delete["writes"],
    "not_ok": put["not_ok"] + delete["not_ok"], "errors": put["errors"] + delete["errors"],
    "statuses": {"put": put["statuses"], "delete": delete["statuses"]},
    "p50_ms": max(put["p50_ms"] or 0, delete["p50_ms"] or 0),
    "p99_ms": max(put["p99_ms"] or 0, delete["p99_ms"] or 0),
}))
PY
}

# kill -9 of the leader under load, BENCH_KILLS times: 4 `raftq bench
# --failover` clients write through every node; each kill is timed from the
# kill to the first acknowledged write after it. The killed node is
# restarted on its data dir and the cluster is whole again before the next.
failover() { # target urls leader-fn kill-fn restart-fn whole-fn log-glob
    local target=$1 urls=$2 leader_fn=$3 kill_fn=$4 restart_fn=$5 whole_fn=$6 logs=$7
    local bench k L
    : >"$WORK/kills"
    "$RAFTQ" bench --target "$target" --insecure --failover --clients 4 --seconds 600 \
        --url "$urls" --acks-out "$WORK/acks" >"$WORK/failover.json" &
    bench=$!
    PIDS+=("$bench")
    sleep 3
    for k in $(seq 1 "$KILLS"); do
        L=$("$leader_fn") || die_logs "$target: no leader before kill $k" "$logs"
        date +%s%6N >>"$WORK/kills"
        "$kill_fn" "$L"
        echo "kill $k: $target node $L"
        # The killed node comes back only once the others have a leader, so
        # that its return never shortens or lengthens the window measured.
        for _ in $(seq 1 150); do "$leader_fn" >/dev/null && break; sleep 0.1; done
        sleep 1
        "$restart_fn" "$L"
        for _ in $(seq 1 300); do "$whole_fn" && break; sleep 0.2; done
        "$whole_fn" || die_logs "$target: not whole after restarting node $L" "$logs"
        sleep 2
    done
    kill -TERM "$bench"
    wait "$bench" || die_logs "$target: failover client failed" "$logs"
    python3 - "$target" "$WORK/kills" "$WORK/acks" "$WORK/failover.json" <<'PY' | tee -a "$OUT"
import bisect, json, statistics, sys
target, kills, acks, summary = sys.argv[1:5]
kills = [int(x) for x in open(kills)]
acks = sorted(int(x) for x in open(acks))
# Per kill: from the kill to the ack that ends the longest silence between
# the kill and the next kill. Not simply the first ack after the kill: an
# answer already on its way when the leader died lands a millisecond later.
per_kill = []
for n, k in enumerate(kills):
    end = kills[n + 1] if n + 1 < len(kills) else float("inf")
    lo = max(bisect.bisect_right(acks, k) - 1, 0)
    hi = bisect.bisect_left(acks, end)
    gaps = [(acks[i + 1] - max(acks[i], k), i + 1) for i in range(lo, hi - 1) if acks[i + 1] > k]
    per_kill.append(round((acks[max(gaps)[1]] - k) / 1000) if gaps else None)
done = [x for x in per_kill if x is not None]
d = json.loads(open(summary).read().strip().splitlines()[-1])
print(json.dumps({
    "target": target, "tool": "raftq-bench", "workload": "failover", "clients": d["clients"],
    "kills": len(kills), "per_kill_ms": per_kill,
    "median_ms": statistics.median(done) if done else None,
    "max_ms": max(done) if done else None, "max_gap_ms": d["max_gap_ms"], "acks": d["acks"],
}))
PY
}
raftq_kill() { kill -9 "${RAFTQ_PID[$1]}"; wait "${RAFTQ_PID[$1]}" 2>/dev/null || true; }
raftq_restart() { if [ "$1" = 1 ]; then start_raftq 1 "" raftq; else start_raftq "$1" "127.0.0.1:21311" raftq; fi; }

# --- etcd ------------------------------------------------------------------

declare -a ETCD_PID
ETCD_CLUSTER="e1=http://127.0.0.1:22381,e2=http://127.0.0.1:22382,e3=http://127.0.0.1:22383"
etcd_url() { echo "http://127.0.0.1:$((22370 + $1))"; }
start_etcd() { # i (on a restart the data dir holds the membership)
    local i=$1
    "$ETCD" --name "e$i" --data-dir "$WORK/etcd$i" \
        --listen-client-urls "$(etcd_url "$i")" --advertise-client-urls "$(etcd_url "$i")" \
        --listen-peer-urls "http://127.0.0.1:$((22380 + i))" --initial-advertise-peer-urls "http://127.0.0.1:$((22380 + i))" \
        --initial-cluster "$ETCD_CLUSTER" --initial-cluster-state new --logger zap --log-level error \
        >>"$WORK/etcd$i.log" 2>&1 &
    ETCD_PID[i]=$!
    PIDS+=($!)
}
etcd_status() { curl -s --max-time 2 -X POST "$(etcd_url "$1")/v3/maintenance/status" -d '{}' || true; }
etcd_leader() {
    for i in 1 2 3; do
        if etcd_status "$i" | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["leader"]==d["header"]["member_id"] else 1)' 2>/dev/null; then
            echo "$i"; return 0
        fi
    done
    return 1
}
etcd_whole() { # every member answers and names the same leader
    local leaders=""
    for i in 1 2 3; do
        leaders+=$(etcd_status "$i" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["leader"] if d.get("leader") else "x", end=" ")' 2>/dev/null || echo "x ")
    done
    python3 -c 'import sys; v = sys.argv[1].split(); sys.exit(0 if len(v) == 3 and "x" not in v and len(set(v)) == 1 else 1)' "$leaders"
}
etcd_kill() { kill -9 "${ETCD_PID[$1]}"; wait "${ETCD_PID[$1]}" 2>/dev/null || true; }
etcd_restart() { start_etcd "$1"; }
b64() { printf '%s' "$1" | base64 -w0; }

etcd_rows() {
    local E url c put delete
    E=$(etcd_leader) || die_logs "etcd has no leader" "etcd*.log"
    url=$(etcd_url "$E")
    echo "etcd leader: e$E"
    put="{\"key\":\"$(b64 bench/oha)\",\"value\":\"$(b64 "$BODY")\"}"
    for c in ${CLIENTS//,/ }; do
        with_cpu etcd oha writes -- oha_json "$c" 200 -- -m POST -T application/json -d "$put" "$url/v3/kv/put"
    done
    # put+delete: 8 clients put, 8 delete-range over every bench/ key (what
    # the putters just wrote); each request is one replicated write.
    delete="{\"key\":\"$(b64 bench/)\",\"range_end\":\"$(b64 bench0)\"}"
    with_cpu etcd oha put-delete -- oha_put_delete \
        "oha_json 8 200 -- -m POST -T application/json -d $put $url/v3/kv/put" \
        "oha_json 8 200 -- -m POST -T application/json -d $delete $url/v3/kv/deleterange"
    bench_rows etcd --insecure --url "$url"
}

# --- NATS ------------------------------------------------------------------

declare -a NATS_PID
NATS_URLS="nats://127.0.0.1:24221,nats://127.0.0.1:24222,nats://127.0.0.1:24223"
start_nats_cluster() {
    local routes="nats://127.0.0.1:24231,nats://127.0.0.1:24232,nats://127.0.0.1:24233" i
    rm -rf "$WORK"/nats?
    for i in 1 2 3; do
        # Default JetStream settings: no fsync per message (sync_interval 2 min).
        nats-server -n "n$i" -a 127.0.0.1 -p "$((24220 + i))" -m "$((24240 + i))" \
            -js -sd "$WORK/nats$i" --cluster_name raftq-bench \
            --cluster "nats://127.0.0.1:$((24230 + i))" --routes "$routes" \
            >>"$WORK/nats$i.log" 2>&1 &
        NATS_PID[i]=$!
        PIDS+=($!)
    done
    for _ in $(seq 1 150); do nats_ready && break; sleep 0.2; done
    nats_ready || die_logs "NATS cluster did not form" "nats*.log"
    NODE_PIDS=("${NATS_PID[@]}")
}
nats_ready() { # every server sees the same JetStream meta leader
    for i in 1 2 3; do
        curl -s --max-time 2 "http://127.0.0.1:$((24240 + i))/jsz" \
            | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d.get("meta_cluster",{}).get("leader") and d["meta_cluster"].get("cluster_size")==3 else 1)' 2>/dev/null || return 1
    done
}
stop_nats() {
    for pid in "${NATS_PID[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${NATS_PID[@]}"; do wait "$pid" 2>/dev/null || true; done
}
nats_bench() { RUST_LOG="${RUST_LOG:-warn}" "$RAFTQ" bench --target nats --url "$NATS_URLS" "$@"; }

# --- the run -----------------------------------------------------------------

if want rows; then
    # The floor under one client's writes: a synced append on this disk.
    echo "== disk: fdatasync latency where the nodes keep their data"
    python3 scripts/fsync_floor.py "$WORK" 3 | tee -a "$OUT"
fi
if want rows || want failover; then
    if system raftq; then
        echo "== raftq: 3 nodes"
        start_raftq_cluster raftq
        if want rows; then raftq_rows; fi
        if want failover; then
            echo "== raftq: failover, $KILLS kills of the leader under load"
            failover raftq "$(raftq_url 1),$(raftq_url 2),$(raftq_url 3)" \
                raftq_leader raftq_kill raftq_restart raftq_whole "raftq*.log"
        fi
        stop_raftq
    fi
    if system etcd; then
        echo "== etcd: 3 members"
        need_pkg etcd etcd-server
        ETCD=$(command -v etcd)
        "$ETCD" --version | head -1
        for i in 1 2 3; do start_etcd "$i"; done
        for _ in $(seq 1 150); do etcd_whole && break; sleep 0.2; done
        etcd_whole || die_logs "etcd cluster did not form" "etcd*.log"
        NODE_PIDS=("${ETCD_PID[@]}")
        if want rows; then etcd_rows; fi
        if want failover; then
            echo "== etcd: failover, $KILLS kills of the leader under load"
            failover etcd "$(etcd_url 1),$(etcd_url 2),$(etcd_url 3)" \
                etcd_leader etcd_kill etcd_restart etcd_whole "etcd*.log"
        fi
        for pid in "${ETCD_PID[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    fi
    if system nats && want rows; then
        echo "== NATS JetStream: 3 servers, stream R3 on file storage"
        need_pkg nats-server nats-server
        nats-server --version
        start_nats_cluster
        RUST_LOG="${RUST_LOG:-warn}" bench_rows nats --url "$NATS_URLS"
        stop_nats
    fi
fi

if want maze; then RAFTQ="$RAFTQ" OUT="$OUT" bash scripts/bench-maze.sh; fi

if want work; then
    # Each JSON line gets "target"; `raftq bench` prints one per client count.
    echo "== raftq work queues: 3 fresh nodes"
    start_raftq_cluster work
    L=$(raftq_leader) || die_logs "raftq has no leader" "raftq*.log"
    RURL=$(raftq_url "$L")
    "$RAFTQ" bench --insecure --url "$RURL" --workload batch --clients "$BATCH_CLIENTS" --seconds "$SECONDS_PER_RUN" | tee -a "$OUT"
    "$RAFTQ" bench --insecure --url "$RURL" --workload lease-ack --prefill "$PREFILL" --clients "$WORKERS" --seconds "$SECONDS_PER_RUN" | tee -a "$OUT"
    stop_raftq

    echo "== NATS JetStream: 3 servers, work-queue stream R3 on file storage"
    need_pkg nats-server nats-server
    start_nats_cluster
    nats_bench --workload batch --clients "$BATCH_CLIENTS" --seconds "$SECONDS_PER_RUN" | tee -a "$OUT"
    nats_bench --workload lease-ack --prefill "$PREFILL" --clients "$WORKERS" --seconds "$SECONDS_PER_RUN" | tee -a "$OUT"
    stop_nats
fi

echo "== results in $OUT"
print_table
