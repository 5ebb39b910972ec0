#!/usr/bin/env bash
# Makes tests/data/openraft09-cluster.tar.gz: three data dirs written by a
# raftq build of main at 401a137 (openraft 0.9.25, the last commit before the
# port to 0.10), for tests/cluster/upgrade.rs. Not run by CI: the old build
# takes as long as a cold build.
#
#   git worktree add /tmp/raftq-09 401a137
#   (cd /tmp/raftq-09 && cargo build --bin raftq)
#   tests/data/make-openraft09-fixture.sh /tmp/raftq-09/target/debug/raftq
#
# The test pins what this script writes (cluster UUID, last log index 81,
# event bodies, seqs): a new fixture needs those constants updated.
set -euo pipefail
OLD=${1:?usage: $0 OLD_RAFTQ_BINARY}
OUT="$(cd "$(dirname "$0")" && pwd)/openraft09-cluster.tar.gz"
DIR=$(mktemp -d /tmp/raftq-fixture.XXXXXX)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$DIR"' EXIT
"$OLD" certs --out "$DIR/certs" --hosts 127.0.0.1,localhost >/dev/null
for i in 1 2 3; do
    "$OLD" serve --data-dir "$DIR/n$i" --api-addr "127.0.0.1:3808$i" --raft-addr "127.0.0.1:3121$i" \
        --gossip-addr "127.0.0.1:3131$i" --maze-source-addr "127.0.0.1:3141$i" \
        --maze-client-addr "127.0.0.1:3151$i" --seeds 127.0.0.1:31311 --bootstrap-expect 3 \
        --snapshot-logs 30 --tls-cert "$DIR/certs/node.pem" --tls-key "$DIR/certs/node-key.pem" \
        --tls-ca "$DIR/certs/ca.pem" >"$DIR/n$i.log" 2>&1 &
    PIDS+=($!)
done
C=(curl -sfk --max-time 15)
for _ in $(seq 1 200); do
    "${C[@]}" https://127.0.0.1:38081/status | grep -q '"leader_id":[0-9]' && break
    sleep 0.3
done
API=https://127.0.0.1:38081
for i in $(seq 1 60); do "${C[@]}" -L -X POST -d "event=e$i" "$API/event" >/dev/null; done
for _ in $(seq 1 10); do "${C[@]}" -L -X DELETE "$API/event" >/dev/null; done
"${C[@]}" -L -X POST -H 'Idempotency-Key: k1' -d event=once "$API/queues/idem/event" >/dev/null
"${C[@]}" -L -X POST "$API/sequences/ids?count=5" >/dev/null
"${C[@]}" -L -X PUT -H 'Content-Type: application/json' \
    -d '{"max_deliveries":5,"dead_letter":"jobs-dlq","lease_ttl":"300s"}' "$API/queues/jobs/policy" >/dev/null
for i in 1 2 3; do "${C[@]}" -L -X POST -d "event=job$i" "$API/queues/jobs/event" >/dev/null; done
"${C[@]}" -L -X POST "$API/queues/jobs/lease?ttl=1s" >/dev/null
"${C[@]}" -L -X PUT -H 'Content-Type: application/json' -d '{"seq":42}' "$API/queues/jobs/cursors/billing" >/dev/null
python3 -c 'import socket,time; s=socket.create_connection(("127.0.0.1",31411)); s.sendall(b"1|F|60|50\n2|F|61|50\n3|B\n"); time.sleep(2)'
sleep 1
"${C[@]}" "$API/status"; echo
kill -TERM "${PIDS[@]}"; wait "${PIDS[@]}" 2>/dev/null || true; PIDS=()
for i in 1 2 3; do rm -f "$DIR/n$i"/db/LOG "$DIR/n$i"/db/LOG.old.*; done
tar czf "$OUT" -C "$DIR" n1 n2 n3 --owner=0 --group=0 --mtime=2026-11-30
echo "wrote $OUT"
