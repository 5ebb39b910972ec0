#!/usr/bin/env bash
# Three raftq nodes on loopback, one terminal: `make cluster`.
#
# Every output line is prefixed with its node ([n1], [n2], [n3]). Ctrl-C stops
# all three. Node 1 bootstraps the cluster; nodes 2 and 3 join through gossip
# (--seeds naming node 1). Rerunning reuses the data dirs: the nodes restart
# with their identities and logs.
#
#   node   API (HTTPS)             Raft    gossip (UDP)   maze source / clients
#   n1     https://127.0.0.1:8081  1211    1311           9091 / 9191
#   n2     https://127.0.0.1:8082  1212    1312           9092 / 9192
#   n3     https://127.0.0.1:8083  1213    1313           9093 / 9193
#
# Environment:
#   RAFTQ         the binary; else $CARGO_TARGET_DIR/debug/raftq, target/debug/raftq,
#                 ~/.cache/raftq/target/debug/raftq; if none exists: cargo build
#   CLUSTER_DIR   certs/ and the data dirs n1..n3 (default ./cluster-data)
#   API_BASE RAFT_BASE GOSSIP_BASE MAZE_SOURCE_BASE MAZE_CLIENT_BASE
#                 node i listens on BASE+i (defaults 8080 1210 1310 9090 9190)
#   WAIT_SECS     how long to wait for the cluster to form (default 60)
#
# scripts/demo.sh sources this file for its helpers; `main` runs only when
# the file is executed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

: "${API_BASE:=8080}"
: "${RAFT_BASE:=1210}"
: "${GOSSIP_BASE:=1310}"
: "${MAZE_SOURCE_BASE:=9090}"
: "${MAZE_CLIENT_BASE:=9190}"
: "${WAIT_SECS:=60}"
NODES=3
HOST=127.0.0.1

# PIDS[i] is the raftq process of node i (never a wrapper): only these are
# ever signalled.
PIDS=()

die() {
    echo "error: $*" >&2
    exit 1
}

api_port() { echo $((API_BASE + $1)); }
api_url() { echo "https://$HOST:$(api_port "$1")"; }
gossip_addr() { echo "$HOST:$((GOSSIP_BASE + $1))"; }

# Sets RAFTQ to an executable raftq binary, building one only if none exists.
find_raftq() {
    if [[ -n ${RAFTQ:-} ]]; then
        [[ -x $RAFTQ ]] && return 0
        echo "warning: RAFTQ=$RAFTQ is not executable; looking elsewhere" >&2
    fi
    local candidate
    for candidate in ${CARGO_TARGET_DIR:+"$CARGO_TARGET_DIR/debug/raftq"} \
        "$ROOT/target/debug/raftq" "${HOME:-/nonexistent}/.cache/raftq/target/debug/raftq"; do
        if [[ -x $candidate ]]; then
            RAFTQ=$candidate
            return 0
        fi
    done
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/raftq/target}
    echo "no raftq binary found: cargo build --bin raftq (the first build compiles RocksDB)"
    (cd "$ROOT" && cargo build --bin raftq)
    RAFTQ=$CARGO_TARGET_DIR/debug/raftq
    [[ -x $RAFTQ ]] || die "cargo build did not produce $RAFTQ"
}

# Writes one CA and one node certificate for localhost,127.0.0.1 into DIR/certs,
# unless they are already there (a rerun keeps the same CA).
ensure_certs() {
    local dir=$1
    if [[ -f $dir/certs/ca.pem && -f $dir/certs/node.pem && -f $dir/certs/node-key.pem ]]; then
        return 0
    fi
    mkdir -p "$dir/certs"
    "$RAFTQ" certs --out "$dir/certs" --hosts localhost,127.0.0.1
    local f
    for f in ca.pem node.pem node-key.pem; do
        [[ -f $dir/certs/$f ]] || die "raftq certs did not write $dir/certs/$f"
    done
}

# Fails if a TCP port of node i is already taken (gossip is UDP: not checked).
check_ports_free() {
    local i=$1 port
    for port in $((API_BASE + i)) $((RAFT_BASE + i)) $((MAZE_SOURCE_BASE + i)) \
        $((MAZE_CLIENT_BASE + i)); do
        if (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; then
            die "port $port (node n$i) is already in use; set the *_BASE variables to move"
        fi
    done
}

# Sets NODE_ARGS to the `raftq serve` arguments of node i with data under DIR.
# Node 1 has no --seeds: with an empty data dir it bootstraps the cluster.
node_args() {
    local i=$1 dir=$2
    NODE_ARGS=(serve
        --data-dir "$dir/n$i"
        --api-addr "$HOST:$((API_BASE + i))"
        --raft-addr "$HOST:$((RAFT_BASE + i))"
        --gossip-addr "$(gossip_addr "$i")"
        --advertise-host "$HOST"
        --maze-source-addr "$HOST:$((MAZE_SOURCE_BASE + i))"
        --maze-client-addr "$HOST:$((MAZE_CLIENT_BASE + i))"
        --tls-cert "$dir/certs/node.pem"
        --tls-key "$dir/certs/node-key.pem"
        --tls-ca "$dir/certs/ca.pem")
    if ((i != 1)); then
        NODE_ARGS+=(--seeds "$(gossip_addr 1)")
    fi
}

prefix_lines() {
    local line
    while IFS= read -r line || [[ -n $line ]]; do
        printf '%s %s\n' "$1" "$line"
    done
}

# Starts node i in the background; PIDS[i] becomes its pid. With LOG, its
# output is appended to that file; without, printed with an [ni] prefix.
start_node() {
    local i=$1 dir=$2 log=${3:-}
    node_args "$i" "$dir"
    mkdir -p "$dir/n$i"
    if [[ -n $log ]]; then
        echo "=== $(date '+%F %T') $RAFTQ ${NODE_ARGS[*]}" >>"$log"
        "$RAFTQ" "${NODE_ARGS[@]}" >>"$log" 2>&1 &
    else
        "$RAFTQ" "${NODE_ARGS[@]}" > >(prefix_lines "[n$i]") 2>&1 &
    fi
    PIDS[i]=$!
}

is_running() { [[ -n ${PIDS[$1]:-} ]] && kill -0 "${PIDS[$1]}" 2>/dev/null; }

# TERM every node still running, KILL those alive after 5 s, reap them all.
stop_nodes() {
    local i pid waited=0 stopping=""
    for i in "${!PIDS[@]}"; do
        if is_running "$i"; then
            stopping+=" n$i"
            kill -TERM "${PIDS[i]}" 2>/dev/null || true
        fi
    done
    [[ -z $stopping ]] || echo "stopping$stopping" >&2
    while ((waited < 50)); do
        local alive=0
        for i in "${!PIDS[@]}"; do is_running "$i" && alive=1; done
        ((alive)) || break
        sleep 0.1
        waited=$((waited + 1))
    done
    for i in "${!PIDS[@]}"; do
        if is_running "$i"; then
            echo "n$i did not stop within 5 s: kill -9 ${PIDS[i]}" >&2
            kill -KILL "${PIDS[i]}" 2>/dev/null || true
        fi
    done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

# /status of node i as one line: "node_id role leader_id voter_count", with
# "-" for a missing or null field. Fails if the node does not answer JSON.
# Assumes the SPEC §2 fields: node_id, role, leader_id, voters (a list or map).
status_fields() {
    local json
    json=$(curl -sk --max-time 2 "$(api_url "$1")/status") || return 1
    python3 -c '
import json, sys
try:
    status = json.loads(sys.stdin.read())
except ValueError:
    sys.exit(1)
if not isinstance(status, dict):
    sys.exit(1)
def field(name):
    value = status.get(name)
    return "-" if value is None or value == "" else str(value)
voters = status.get("voters")
count = len(voters) if isinstance(voters, (list, dict)) else (voters if isinstance(voters, int) else 0)
print(field("node_id"), field("role").lower(), field("leader_id"), count)
' <<<"$json"
}

# Polls /status of the given nodes until every one reports NODES voters and
# the same leader_id, and that leader is one of them with role "leader".
# Sets LEADER (node index) and NODE_IDS[i]. Gives up after SECS seconds and
# prints what it last saw.
wait_for_leader() {
    local secs=$1
    shift
    local deadline=$((SECONDS + secs)) i line seen
    local -a fields
    while :; do
        LEADER=""
        local agreed="" ok=1
        seen=""
        for i in "$@"; do
            if ! line=$(status_fields "$i"); then
                ok=0
                seen+="  n$i: no /status answer"$'\n'
                continue
            fi
            seen+="  n$i: node_id role leader_id voters = $line"$'\n'
            read -ra fields <<<"$line"
            NODE_IDS[i]=${fields[0]}
            [[ ${fields[3]} == "$NODES" && ${fields[2]} != - ]] || ok=0
            [[ -z $agreed || $agreed == "${fields[2]}" ]] || ok=0
            agreed=${fields[2]}
            if [[ ${fields[1]} == leader && ${fields[0]} == "${fields[2]}" ]]; then LEADER=$i; fi
        done
        if ((ok)) && [[ -n $LEADER && ${NODE_IDS[LEADER]} == "$agreed" ]]; then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            echo "no agreed leader with $NODES voters among nodes $* after ${secs}s; last seen:" >&2
            printf '%s' "$seen" >&2
            return 1
        fi
        sleep 0.5
    done
}
NODE_IDS=()
LEADER=""

# Waits until node i answers /status at all (it has bound its API port).
wait_for_status() {
    local i=$1 secs=$2
    local deadline=$((SECONDS + secs))
    until curl -sk --max-time 2 -o /dev/null "$(api_url "$i")/status"; do
        is_running "$i" || return 1
        ((SECONDS < deadline)) || return 1
        sleep 0.3
    done
}

print_try_commands() {
    local leader=$1 follower=$2
    cat <<EOF

Try it (n$leader leads; n$follower follows):
  curl -k  -X POST -d event="event1" $(api_url "$leader")/event
  curl -k  $(api_url "$follower")/event
  curl -kL -X POST -d event="event2" $(api_url "$follower")/event
  curl -k  -X DELETE $(api_url "$leader")/event
  curl -k  $(api_url "$follower")/event
  curl -k  $(api_url "$follower")/status
  $RAFTQ status --url $(api_url "$follower") --ca $CLUSTER_DIR/certs/ca.pem
Failover: kill -9 the leader's pid (n$leader: ${PIDS[leader]}) and keep curling the others.
Ctrl-C stops all nodes.

EOF
}

main() {
    command -v curl >/dev/null 2>&1 || die "curl is required (make deps installs it)"
    find_raftq
    : "${CLUSTER_DIR:=./cluster-data}"
    mkdir -p "$CLUSTER_DIR"
    CLUSTER_DIR=$(cd "$CLUSTER_DIR" && pwd)

    local i
    for ((i = 1; i <= NODES; i++)); do check_ports_free "$i"; done
    ensure_certs "$CLUSTER_DIR"

    trap stop_nodes EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    echo "raftq cluster: $RAFTQ, data and certs in $CLUSTER_DIR"
    start_node 1 "$CLUSTER_DIR"
    wait_for_status 1 30 || echo "warning: n1 does not answer /status yet; starting n2, n3 anyway" >&2
    for ((i = 2; i <= NODES; i++)); do start_node "$i" "$CLUSTER_DIR"; done
    echo "pids: n1=${PIDS[1]} n2=${PIDS[2]} n3=${PIDS[3]}"

    if ! command -v python3 >/dev/null 2>&1; then
        echo "(python3 not found: not waiting for the cluster to form)"
        print_try_commands 1 2
    elif wait_for_leader "$WAIT_SECS" 1 2 3; then
        local follower=1
        ((LEADER == 1)) && follower=2
        print_try_commands "$LEADER" "$follower"
    else
        echo "warning: the cluster has not formed yet; the nodes keep running" >&2
    fi

    # Keep running until Ctrl-C or until every node has exited. A node that
    # exits (or is killed to watch a failover) is reported and forgotten.
    local status
    while ((${#PIDS[@]} > 0)); do
        for i in "${!PIDS[@]}"; do
            is_running "$i" && continue
            status=0
            wait "${PIDS[i]}" 2>/dev/null || status=$?
            echo "[n$i] exited (status $status)"
            unset 'PIDS[i]'
        done
        sleep 1
    done
    echo "all nodes have exited"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
