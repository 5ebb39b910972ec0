#!/usr/bin/env bash
# The seed demo, narrated and checked: `make demo`.
#
# Starts three nodes on loopback (like scripts/cluster.sh, logs to files in a
# temp dir), runs the SPEC §2 curl transcript with the real curl, kill -9s the
# leader, carries on against the survivors, restarts the killed node on its
# data dir and waits until it is back. Every command is printed before it
# runs and its output is compared byte for byte with the expected one.
# Exit 0 and "demo OK" only if everything matched; otherwise expected vs got,
# the tails of the node logs, and exit 1 (the temp dir is kept).
#
# Environment (defaults differ from cluster.sh so both can run at once):
#   RAFTQ         the binary (found or built like cluster.sh does)
#   DEMO_DIR      work dir (default: a new mktemp -d); DEMO_KEEP=1 keeps it
#   API_BASE RAFT_BASE GOSSIP_BASE MAZE_SOURCE_BASE MAZE_CLIENT_BASE
#                 node i listens on BASE+i (18080 11210 11310 19090 19190)
#   WAIT_SECS     deadline for the cluster to form or re-form (default 30)
#   READ_RETRY_SECS  how long a read may keep failing with an error right
#                 after an election (default 5); a wrong event is never retried
set -euo pipefail

: "${API_BASE:=18080}"
: "${RAFT_BASE:=11210}"
: "${GOSSIP_BASE:=11310}"
: "${MAZE_SOURCE_BASE:=19090}"
: "${MAZE_CLIENT_BASE:=19190}"
: "${WAIT_SECS:=30}"
: "${READ_RETRY_SECS:=5}"

# shellcheck source=scripts/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"

DEMO_OK=0

log_file() { echo "$DEMO_DIR/n$1.log"; }

dump_logs() {
    local i
    for ((i = 1; i <= NODES; i++)); do
        [[ -f $(log_file "$i") ]] || continue
        echo "----- last 40 lines of $(log_file "$i")"
        tail -n 40 "$(log_file "$i")" | sed "s/^/[n$i] /"
    done
}

fail() {
    echo
    echo "DEMO FAILED: $*" >&2
    dump_logs >&2
    exit 1
}

cleanup() {
    stop_nodes
    if ((DEMO_OK)) && [[ ${DEMO_KEEP:-0} != 1 ]]; then
        rm -rf "$DEMO_DIR"
    else
        echo "demo files kept in $DEMO_DIR" >&2
    fi
}

say() { printf '\n# %s\n' "$*"; }

# run EXPECTED COMMAND: print "$ COMMAND", run it, print its output, and fail
# unless it exited 0 and its stdout is exactly EXPECTED (byte for byte,
# trailing newlines included; "" = prints nothing).
run() {
    local expected=$1 command=$2 got rc
    printf '$ %s\n' "$command"
    capture "$command"
    got=$CAPTURED rc=$CAPTURED_RC
    [[ -n $got ]] && printf '%s\n' "$got"
    check "$expected" "$got" "$rc" "$command"
}

# Like run, for reads right after an election: while the command fails or
# answers a JSON error (e.g. 503 while the new leader settles), retry for up to
# READ_RETRY_SECS. Any other answer, a wrong event included, is final.
run_read() {
    local expected=$1 command=$2 got rc
    local deadline=$((SECONDS + READ_RETRY_SECS))
    printf '$ %s\n' "$command"
    while :; do
        capture "$command"
        got=$CAPTURED rc=$CAPTURED_RC
        if [[ $rc == 0 && $got != '{"error"'* ]] || ((SECONDS >= deadline)); then
            break
        fi
        printf '  (not ready: exit %s, %q; retrying)\n' "$rc" "$got"
        sleep 0.5
    done
    [[ -n $got ]] && printf '%s\n' "$got"
    check "$expected" "$got" "$rc" "$command"
}

# Sets CAPTURED to the exact stdout of COMMAND and CAPTURED_RC to its status.
capture() {
    CAPTURED_RC=0
    # The trailing "x" keeps trailing newlines, which $(...) would strip.
    CAPTURED=$(
        eval "$1"
        rc=$?
        printf x
        exit "$rc"
    ) || CAPTURED_RC=$?
    CAPTURED=${CAPTURED%x}
}

check() {
    local expected=$1 got=$2 rc=$3 command=$4
    if [[ $rc != 0 ]]; then
        fail "$(printf '%s\n  exited with status %s (curl: 7 = cannot connect, 28 = timeout, 35/60 = TLS)' "$command" "$rc")"
    fi
    if [[ $got != "$expected" ]]; then
        fail "$(printf '%s\n  expected: %q\n  got:      %q' "$command" "$expected" "$got")"
    fi
}

# The node indexes other than the given ones, in order.
others() {
    local i skip out=()
    for ((i = 1; i <= NODES; i++)); do
        for skip in "$@"; do [[ $i == "$skip" ]] && continue 2; done
        out+=("$i")
    done
    echo "${out[@]}"
}

# Narrated /status of node i: the fields the demo relies on.
show_status() {
    local i=$1 line id role leader voters
    printf '$ curl -sk %s/status\n' "$(api_url "$i")"
    line=$(status_fields "$i") || fail "n$i does not answer /status"
    read -r id role leader voters <<<"$line"
    echo "  node_id=$id role=$role leader_id=$leader voters=$voters"
}

# The SPEC §2 transcript on a formed cluster: node LEADER leads, the other
# two follow. Leaves event2 in the queue.
seed_transcript() {
    local leader=$LEADER f1 f2
    read -r f1 f2 <<<"$(others "$leader")"
    local L F1 F2
    L=$(api_url "$leader") F1=$(api_url "$f1") F2=$(api_url "$f2")

    say "The seed transcript. n$leader ($L) is the leader; n$f1 and n$f2 follow."
    say "POST to the leader: 201, prints nothing."
    run "" "curl -sk -X POST -d event=\"event1\" $L/event"
    say "GET on a follower: a linearizable read, prints event1."
    run "event1" "curl -sk $F1/event"
    say "POST to a follower: 307 to the leader; -L re-sends method and body."
    run "" "curl -skL -X POST -d event=\"event2\" $F1/event"
    say "DELETE on the leader: an atomic pop, prints the event it removed."
    run "event1" "curl -sk -X DELETE $L/event"
    say "GET on the other follower: prints event2."
    run "event2" "curl -sk $F2/event"
}

# After node DOWN (the old leader) went away with event2 queued: waits for a
# leader among the other two, sets LEADER and FOLLOWER, and checks that
# event2 survived and that the survivors take a write. Leaves event3 queued.
survivors_carry_on() {
    local down=$1 s1 s2 started=$SECONDS
    read -r s1 s2 <<<"$(others "$down")"
    wait_for_leader "$WAIT_SECS" "$s1" "$s2" || fail "no new leader among n$s1 and n$s2"
    FOLLOWER=$s1
    ((FOLLOWER == LEADER)) && FOLLOWER=$s2
    echo "n$LEADER was elected within $((SECONDS - started))s; n$FOLLOWER follows"
    local L F1
    L=$(api_url "$LEADER") F1=$(api_url "$FOLLOWER")

    say "Nothing acknowledged was lost: GET on a survivor prints event2."
    run_read "event2" "curl -sk $F1/event"
    say "POST through the follower, redirected to the new leader."
    run "" "curl -skL -X POST -d event=\"event3\" $F1/event"
    say "DELETE through the follower: prints event2."
    run "event2" "curl -skL -X DELETE $F1/event"
    say "GET on the new leader: prints event3."
    run "event3" "curl -sk $L/event"
}

# Waits until node i, back after a restart, is a voter that agrees on the
# leader with the others, under its old node id ID.
wait_for_rejoin() {
    local i=$1 id=$2 started=$SECONDS
    wait_for_leader "$WAIT_SECS" 1 2 3 || fail "n$i did not rejoin"
    [[ ${NODE_IDS[i]} == "$id" ]] || fail "n$i came back as node_id ${NODE_IDS[i]}, was $id"
    echo "n$i is back as voter $id after $((SECONDS - started))s; n$LEADER leads"
}

main() {
    command -v curl >/dev/null 2>&1 || die "curl is required (make deps installs it)"
    command -v python3 >/dev/null 2>&1 || die "python3 is required to read /status JSON"
    find_raftq
    DEMO_DIR=${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/raftq-demo.XXXXXX")}
    mkdir -p "$DEMO_DIR"
    DEMO_DIR=$(cd "$DEMO_DIR" && pwd)
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    local i
    for ((i = 1; i <= NODES; i++)); do check_ports_free "$i"; done
    ensure_certs "$DEMO_DIR" >/dev/null

    say "Three nodes on 127.0.0.1 (binary $RAFTQ, files in $DEMO_DIR)."
    say "n1 bootstraps a new cluster; n2 and n3 join through gossip (--seeds $(gossip_addr 1))."
    start_node 1 "$DEMO_DIR" "$(log_file 1)"
    wait_for_status 1 "$WAIT_SECS" || fail "n1 does not answer $(api_url 1)/status"
    for ((i = 2; i <= NODES; i++)); do start_node "$i" "$DEMO_DIR" "$(log_file "$i")"; done
    local started=$SECONDS
    wait_for_leader "$WAIT_SECS" 1 2 3 || fail "the cluster did not form"
    echo "cluster formed in $((SECONDS - started))s: n$LEADER leads, $NODES voters"

    seed_transcript

    say "Leader kill. Who leads now?"
    wait_for_leader "$WAIT_SECS" 1 2 3 || fail "no agreed leader before the kill"
    local killed=$LEADER killed_id=${NODE_IDS[LEADER]}
    show_status "$killed"
    say "kill -9 the leader n$killed (pid ${PIDS[killed]})."
    echo "\$ kill -9 ${PIDS[killed]}"
    kill -9 "${PIDS[killed]}"
    wait "${PIDS[killed]}" 2>/dev/null || true
    unset 'PIDS[killed]'
    survivors_carry_on "$killed"
    local F1
    F1=$(api_url "$FOLLOWER")
    say "DELETE: prints event3."
    run "event3" "curl -skL -X DELETE $F1/event"
    say "GET on the empty queue: 204, prints nothing."
    run "" "curl -sk $F1/event"

    say "Restart n$killed on its data dir: it rejoins with its old identity and log."
    start_node "$killed" "$DEMO_DIR" "$(log_file "$killed")"
    echo "\$ raftq ${NODE_ARGS[*]} &   # the same command line as before"
    wait_for_rejoin "$killed" "$killed_id"
    show_status "$killed"
    say "The restarted node has caught up: its queue is empty too."
    run_read "" "curl -sk $(api_url "$killed")/event"

    DEMO_OK=1
    echo
    echo "demo OK"
}

# scripts/docker-test.sh sources this file for its helpers.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
