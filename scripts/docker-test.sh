#!/usr/bin/env bash
# The Docker acceptance test (issue 4, acceptance 1), run by `make test` and
# `make docker-test`.
#
# Builds raftq:latest (scripts/docker-build.sh, as `make docker` does, but the
# local path by default: it packs the binary the cargo tests just ran, in
# seconds, where the Dockerfile path would compile RocksDB again), makes a
# user-defined network with fixed container IPs (the node certificate must
# name them: Raft peers verify each other's address), writes the certificates
# into a Docker volume with the image itself, starts three containers (the
# later two with RAFTQ_SEEDS naming the first), runs the seed transcript with
# the real curl against the container IPs and compares every output byte for
# byte, `docker stop`s the leader, checks that the survivors still hold the
# event and take a new write, `docker start`s the stopped container and checks
# that it rejoins with the same node id and sees the queue. Containers,
# network and volume are always removed (DOCKER_TEST_KEEP=1 keeps them on
# failure).
#
# Without a Docker engine it prints "SKIPPED: no Docker engine" and exits 0.
#
# Environment:
#   IMAGE        image to build and run (default raftq:latest)
#   NO_BUILD=1   use IMAGE as it is
#   RAFTQ_DOCKER_MODE  how to build it (default here: local; auto, dockerfile)
#   WAIT_SECS    deadline for the cluster to form or re-form (default 60)
#   everything scripts/docker-build.sh reads (RAFTQ, RAFTQ_DOCKER_MODE, ...)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The two Dockerfiles share their runtime stage (from the "--- runtime"
# marker on) except for where the binary comes from; checked even without
# Docker, so that one cannot drift from the other unnoticed.
runtime_stage() { sed -n '/^# --- runtime/,$p' "$ROOT/$1" | grep -v -e '^# --- runtime' -e '^COPY '; }
if ! diff <(runtime_stage Dockerfile) <(runtime_stage docker/Dockerfile.local) >&2; then
    echo "docker test: the runtime stages of Dockerfile and docker/Dockerfile.local differ (above)" >&2
    exit 1
fi

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    echo "SKIPPED: no Docker engine (docker info does not answer); the Docker test did not run"
    exit 0
fi

# The local build path makes its base image with debootstrap, as root. A
# developer's Docker without root and without that image cannot build it:
# say so rather than fail `make test` (CI runs as root).
base_image=${BASE_IMAGE:-raftq-base:bookworm}
base_cache=${BASE_CACHE:-${HOME:-/root}/.cache/raftq/docker/raftq-base-bookworm.tar.gz}
if [[ $(id -u) != 0 && ${RAFTQ_DOCKER_MODE:-local} == local && ! -f $base_cache ]] \
    && ! docker image inspect "$base_image" >/dev/null 2>&1; then
    echo "SKIPPED: the Docker test needs the base image $base_image, and making it needs root" \
        "(run 'sudo make docker' once); the Docker test did not run"
    exit 0
fi

: "${IMAGE:=raftq:latest}"
: "${WAIT_SECS:=60}"

# The demo's narrated, checked steps (seed_transcript, survivors_carry_on,
# wait_for_rejoin, run, run_read, show_status from demo.sh; wait_for_leader
# from cluster.sh), pointed at the containers by the overrides below.
# shellcheck source=scripts/demo.sh
source "$ROOT/scripts/demo.sh"

PREFIX=raftq-dtest-$$
NETWORK=$PREFIX
VOLUME=$PREFIX-certs
NAMES=("" "$PREFIX-n1" "$PREFIX-n2" "$PREFIX-n3")
IPS=()
API_PORT=8080
GOSSIP_PORT=1111

api_url() { echo "https://${IPS[$1]}:$API_PORT"; }

fail() {
    echo
    echo "DOCKER TEST FAILED: $*" >&2
    dump_logs >&2
    exit 1
}

dump_logs() {
    local i
    for ((i = 1; i <= NODES; i++)); do
        echo "----- docker logs --tail 40 ${NAMES[i]}"
        docker logs --tail 40 "${NAMES[i]}" 2>&1 | sed "s/^/[n$i] /" || true
    done
}

cleanup() {
    local status=$?
    if ((status != 0)) && [[ ${DOCKER_TEST_KEEP:-0} == 1 ]]; then
        echo "kept: containers ${NAMES[*]:1}, network $NETWORK, volume $VOLUME" >&2
        return
    fi
    docker rm -f -v "${NAMES[@]:1}" >/dev/null 2>&1 || true
    docker network rm "$NETWORK" >/dev/null 2>&1 || true
    docker volume rm "$VOLUME" >/dev/null 2>&1 || true
}

# A /24 that neither Docker nor the host routes use yet; sets IPS[1..3].
create_network() {
    local third subnet
    for third in $(shuf -i 16-250 -n 10); do
        subnet=172.29.$third
        ip route 2>/dev/null | grep -q "^$subnet\." && continue
        if docker network create --subnet "$subnet.0/24" "$NETWORK" >/dev/null 2>&1; then
            IPS=("" "$subnet.11" "$subnet.12" "$subnet.13")
            echo "\$ docker network create --subnet $subnet.0/24 $NETWORK"
            return 0
        fi
    done
    fail "could not create a network on any 172.29.x.0/24"
}

# One CA and one node certificate covering the three IPs, made by the image's
# own `raftq certs` and owned by its user (uid 10001), in a volume.
make_certs() {
    local hosts="localhost,127.0.0.1,${IPS[1]},${IPS[2]},${IPS[3]}"
    echo "\$ raftq certs --out /certs --hosts $hosts   # in a container, into volume $VOLUME"
    docker volume create "$VOLUME" >/dev/null
    docker run --rm --user 0 -v "$VOLUME:/certs" --entrypoint sh "$IMAGE" -c \
        "raftq certs --out /certs --hosts $hosts >/dev/null && chown -R 10001:10001 /certs" \
        || fail "raftq certs in a container failed"
}

start_container() {
    local i=$1 seeds=()
    ((i == 1)) || seeds=(-e "RAFTQ_SEEDS=${IPS[1]}:$GOSSIP_PORT")
    echo "\$ docker run -d --name ${NAMES[i]} --network $NETWORK --ip ${IPS[i]} -v $VOLUME:/certs:ro ${seeds[*]:+${seeds[*]} }$IMAGE"
    docker run -d --name "${NAMES[i]}" --hostname "n$i" --network "$NETWORK" --ip "${IPS[i]}" \
        -v "$VOLUME:/certs:ro" "${seeds[@]}" "$IMAGE" >/dev/null \
        || fail "docker run of n$i failed"
}

container_running() { [[ $(docker inspect -f '{{.State.Running}}' "${NAMES[$1]}" 2>/dev/null) == true ]]; }

wait_for_api() {
    local i=$1 deadline=$((SECONDS + WAIT_SECS))
    until curl -sk --max-time 2 -o /dev/null "$(api_url "$i")/status"; do
        container_running "$i" || fail "container n$i exited"
        ((SECONDS < deadline)) || fail "n$i does not answer $(api_url "$i")/status"
        sleep 0.5
    done
}

# The image's HEALTHCHECK (curl on /healthz inside the container) passes.
wait_healthy() {
    local i=$1 deadline=$((SECONDS + WAIT_SECS)) health
    while :; do
        health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "${NAMES[i]}")
        [[ $health == healthy ]] && break
        [[ $health != none ]] || fail "the image has no HEALTHCHECK"
        ((SECONDS < deadline)) || fail "n$i is not healthy after ${WAIT_SECS}s (health: $health)"
        sleep 1
    done
    echo "n$i: docker health status is healthy"
}

main() {
    command -v curl >/dev/null 2>&1 || die "curl is required (make deps installs it)"
    command -v python3 >/dev/null 2>&1 || die "python3 is required to read /status JSON"
    local t0=$SECONDS
    if [[ ${NO_BUILD:-0} != 1 ]]; then
        IMAGE=$IMAGE RAFTQ_DOCKER_MODE=${RAFTQ_DOCKER_MODE:-local} bash "$ROOT/scripts/docker-build.sh" \
            || fail "building $IMAGE failed"
    fi
    echo "docker test: image $IMAGE ready after $((SECONDS - t0))s"
    local user
    user=$(docker image inspect -f '{{.Config.User}}' "$IMAGE")
    [[ -n $user && $user != 0* && $user != root* ]] || fail "$IMAGE runs as root (User=$user)"

    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    say "Three containers on a user-defined network; n1 bootstraps, n2 and n3 join it by gossip."
    create_network
    make_certs
    start_container 1
    wait_for_api 1
    start_container 2
    start_container 3
    local started=$SECONDS
    wait_for_leader "$WAIT_SECS" 1 2 3 || fail "the cluster did not form"
    echo "cluster formed in $((SECONDS - started))s: n$LEADER leads, $NODES voters"

    seed_transcript
    wait_healthy "$LEADER"

    say "docker stop the leader. Who leads now?"
    wait_for_leader "$WAIT_SECS" 1 2 3 || fail "no agreed leader before the stop"
    local stopped=$LEADER stopped_id=${NODE_IDS[LEADER]}
    show_status "$stopped"
    echo "\$ docker stop ${NAMES[stopped]}"
    docker stop "${NAMES[stopped]}" >/dev/null || fail "docker stop failed"
    survivors_carry_on "$stopped"

    say "docker start the stopped container (same data volume, same IP): it rejoins."
    echo "\$ docker start ${NAMES[stopped]}"
    docker start "${NAMES[stopped]}" >/dev/null || fail "docker start failed"
    wait_for_rejoin "$stopped" "$stopped_id"
    say "The restarted node sees the queue: GET prints event3, DELETE pops it."
    local S
    S=$(api_url "$stopped")
    run_read "event3" "curl -sk $S/event"
    run "event3" "curl -skL -X DELETE $S/event"
    run "" "curl -sk $S/event"

    echo
    echo "docker test OK in $((SECONDS - t0))s"
}

main "$@"
