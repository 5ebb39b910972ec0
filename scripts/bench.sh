#!/usr/bin/env bash
# make bench: raftq vs etcd, both 3 nodes on loopback with fsync, loaded by
# the same client (`raftq bench`) in the same run. Prints one JSON line per
# measurement and keeps them in $OUT (default bench-results.jsonl).
#
# Why a peer in the same run: this machine is shared and noisy; absolute
# numbers drift by 2x between runs, ratios much less.
#
# Then the work queues: batch publish (BENCH_BATCH_CLIENTS, default 1,16) and
# lease+ack (BENCH_WORKERS, default 16) against raftq and against NATS
# JetStream's work-queue stream (3 servers, R3, file storage) as the peer.
# BENCH_ONLY=work runs only that part; BENCH_ONLY=writes only the rest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/raftq/target}"
SECONDS_PER_RUN="${BENCH_SECONDS:-10}"
CLIENTS="${BENCH_CLIENTS:-1,16,64}"
OUT="${OUT:-bench-results.jsonl}"
ONLY="${BENCH_ONLY:-all}"
BATCH_CLIENTS="${BENCH_BATCH_CLIENTS:-1,16}"
WORKERS="${BENCH_WORKERS:-16}"
PREFILL=(${BENCH_PREFILL:+--prefill "$BENCH_PREFILL"}) # events queued before each lease-ack row
case "$ONLY" in all | work | writes) ;; *) echo "BENCH_ONLY: all, work or writes" >&2; exit 2 ;; esac
WORK="$(mktemp -d /tmp/raftq-bench.XXXXXX)"
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "== building raftq (release, with the NATS peer of the work-queue part)"
cargo build --release --features bench-nats --bin raftq
RAFTQ="$CARGO_TARGET_DIR/release/raftq"
: > "$OUT"

"$RAFTQ" certs --out "$WORK/certs" --hosts 127.0.0.1,localhost >/dev/null

start_raftq() { # i seeds [data-dir prefix]
    local i=$1 seeds=$2 dir=${3:-raftq}
    "$RAFTQ" serve --data-dir "$WORK/$dir$i" \
        --api-addr "127.0.0.1:$((28080 + i))" --raft-addr "127.0.0.1:$((21210 + i))" \
        --gossip-addr "127.0.0.1:$((21310 + i))" --advertise-host 127.0.0.1 --no-maze \
        --tls-cert "$WORK/certs/node.pem" --tls-key "$WORK/certs/node-key.pem" --tls-ca "$WORK/certs/ca.pem" \
        ${seeds:+--seeds "$seeds"} >"$WORK/raftq$i.log" 2>&1 &
    RAFTQ_PID[$i]=$!
    PIDS+=($!)
}

status() { curl -sk --max-time 2 "https://127.0.0.1:$((28080 + $1))/status" || true; }

wait_formed() {
    for _ in $(seq 1 150); do
        local ok=0
        for i in 1 2 3; do
            status "$i" | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if len(d["voters"])==3 and d["leader_id"] else 1)' 2>/dev/null && ok=$((ok + 1))
        done
        [ "$ok" = 3 ] && return 0
        sleep 0.2
    done
    echo "raftq cluster did not form" >&2
    tail -20 "$WORK"/raftq*.log >&2
    exit 1
}

leader_index() {
    for i in 1 2 3; do
        if status "$i" | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["role"]=="leader" else 1)' 2>/dev/null; then
            echo "$i"; return 0
        fi
    done
    return 1
}

declare -a RAFTQ_PID
if [ "$ONLY" != work ]; then
echo "== raftq: 3 nodes"
start_raftq 1 ""
start_raftq 2 "127.0.0.1:21311"
start_raftq 3 "127.0.0.1:21311"
wait_formed
L=$(leader_index)
echo "leader: node $L"
"$RAFTQ" bench --insecure --url "https://127.0.0.1:$((28080 + L))" --clients "$CLIENTS" --seconds "$SECONDS_PER_RUN" | tee -a "$OUT"

echo "== raftq: failover (kill -9 of the leader under load)"
"$RAFTQ" bench --insecure --failover --clients 4 --seconds 12 \
    --url "https://127.0.0.1:28081,https://127.0.0.1:28082,https://127.0.0.1:28083" > "$WORK/failover.json" &
BENCH=$!
sleep 4
L=$(leader_index)
kill -9 "${RAFTQ_PID[$L]}"
wait "$BENCH"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["target"]="raftq"; print(json.dumps(d))' "$WORK/failover.json" | tee -a "$OUT"
for pid in "${RAFTQ_PID[@]}"; do kill -9 "$pid" 2>/dev/null || true; done

echo "== etcd: 3 members"
if ! command -v etcd >/dev/null 2>&1; then
    if [ -x /usr/bin/etcd ]; then :
    elif [ "$(id -u)" = 0 ]; then
        apt-get install -y etcd-server >/dev/null || { apt-get update >/dev/null && apt-get install -y etcd-server >/dev/null; }
    else
        echo "etcd missing: sudo apt-get install -y etcd-server" >&2; exit 1
    fi
fi
ETCD=$(command -v etcd || echo /usr/bin/etcd)
"$ETCD" --version | head -1
CLUSTER="e1=http://127.0.0.1:22381,e2=http://127.0.0.1:22382,e3=http://127.0.0.1:22383"
declare -a ETCD_PID
for i in 1 2 3; do
    "$ETCD" --name "e$i" --data-dir "$WORK/etcd$i" \
        --listen-client-urls "http://127.0.0.1:$((22370 + i))" --advertise-client-urls "http://127.0.0.1:$((22370 + i))" \
        --listen-peer-urls "http://127.0.0.1:$((22380 + i))" --initial-advertise-peer-urls "http://127.0.0.1:$((22380 + i))" \
        --initial-cluster "$CLUSTER" --initial-cluster-state new --logger zap --log-level error \
        >"$WORK/etcd$i.log" 2>&1 &
    ETCD_PID[$i]=$!
    PIDS+=($!)
done
etcd_leader() {
    for i in 1 2 3; do
        if curl -s --max-time 2 -X POST "http://127.0.0.1:$((22370 + i))/v3/maintenance/status" -d '{}' \
            | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["leader"]==d["header"]["member_id"] else 1)' 2>/dev/null; then
            echo "$i"; return 0
        fi
    done
    return 1
}
for _ in $(seq 1 100); do etcd_leader >/dev/null && break; sleep 0.2; done
E=$(etcd_leader)
echo "etcd leader: e$E"
"$RAFTQ" bench --target etcd --insecure --url "http://127.0.0.1:$((22370 + E))" --clients "$CLIENTS" --seconds "$SECONDS_PER_RUN" | tee -a "$OUT"

for pid in "${ETCD_PID[@]}"; do kill -9 "$pid" 2>/dev/null || true; done

if [ "${BENCH_MAZE:-1}" = 1 ]; then RAFTQ="$RAFTQ" OUT="$OUT" bash scripts/bench-maze.sh; fi
fi

if [ "$ONLY" != writes ]; then
# Each JSON line gets "target"; `raftq bench` prints one per client count.
echo "== raftq work queues: 3 fresh nodes"
start_raftq 1 "" work
start_raftq 2 "127.0.0.1:21311" work
start_raftq 3 "127.0.0.1:21311" work
wait_formed
L=$(leader_index)
echo "leader: node $L"
RURL="https://127.0.0.1:$((28080 + L))"
"$RAFTQ" bench --insecure --url "$RURL" --workload batch --clients "$BATCH_CLIENTS" --seconds "$SECONDS_PER_RUN" | tee -a "$OUT"
"$RAFTQ" bench --insecure --url "$RURL" --workload lease-ack "${PREFILL[@]}" --clients "$WORKERS" --seconds "$SECONDS_PER_RUN" | tee -a "$OUT"
for pid in "${RAFTQ_PID[@]}"; do kill -9 "$pid" 2>/dev/null || true; done

echo "== NATS JetStream: 3 servers, work-queue stream R3 on file storage"
if ! command -v nats-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y nats-server >/dev/null || { apt-get update >/dev/null && apt-get install -y nats-server >/dev/null; }
    else
        echo "nats-server missing: sudo apt-get install -y nats-server" >&2; exit 1
    fi
fi
nats-server --version
ROUTES="nats://127.0.0.1:24231,nats://127.0.0.1:24232,nats://127.0.0.1:24233"
for i in 1 2 3; do
    # Default JetStream settings: no fsync per message (sync_interval 2 min).
    nats-server -n "n$i" -a 127.0.0.1 -p "$((24220 + i))" -m "$((24240 + i))" \
        -js -sd "$WORK/nats$i" --cluster_name raftq-bench \
        --cluster "nats://127.0.0.1:$((24230 + i))" --routes "$ROUTES" \
        >"$WORK/nats$i.log" 2>&1 &
    PIDS+=($!)
done
nats_ready() { # every server sees the same JetStream meta leader
    for i in 1 2 3; do
        curl -s --max-time 2 "http://127.0.0.1:$((24240 + i))/jsz" \
            | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d.get("meta_cluster",{}).get("leader") and d["meta_cluster"].get("cluster_size")==3 else 1)' 2>/dev/null || return 1
    done
}
for _ in $(seq 1 150); do nats_ready && break; sleep 0.2; done
nats_ready || { echo "NATS cluster did not form" >&2; tail -20 "$WORK"/nats*.log >&2; exit 1; }
NURLS="nats://127.0.0.1:24221,nats://127.0.0.1:24222,nats://127.0.0.1:24223"
RUST_LOG="${RUST_LOG:-warn}" "$RAFTQ" bench --target nats --url "$NURLS" --workload batch --clients "$BATCH_CLIENTS" --seconds "$SECONDS_PER_RUN" | tee -a "$OUT"
RUST_LOG="${RUST_LOG:-warn}" "$RAFTQ" bench --target nats --url "$NURLS" --workload lease-ack "${PREFILL[@]}" --clients "$WORKERS" --seconds "$SECONDS_PER_RUN" | tee -a "$OUT"
fi
echo "== results in $OUT"
