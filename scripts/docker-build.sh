#!/usr/bin/env bash
# Build the raftq Docker image: `make docker`.
#
# Two ways to the same image (docs/docker.md compares them):
#
#   dockerfile  `docker build` of the top-level Dockerfile: a Rust builder
#               stage compiles raftq (release profile), a debian:bookworm-slim
#               stage runs it. Needs the base images from a registry.
#   local       For machines whose Docker engine cannot pull. The binary is
#               built on the host (cargo, the dev profile `make test` already
#               builds; the host must be Debian bookworm or have an older
#               glibc), the base image is made here with
#               `debootstrap --variant=minbase bookworm` + ca-certificates +
#               curl and `docker import`ed, and docker/Dockerfile.local packs
#               the binary onto it. No registry is contacted.
#
# auto (the default) takes the Dockerfile path when every base image it names
# is present or can be pulled, else the local path.
#
# Environment:
#   RAFTQ_DOCKER_MODE  auto | dockerfile | local (default auto)
#   IMAGE              tag to build (default raftq:latest)
#   RAFTQ              local path: the binary to pack (default: cargo build
#                      --bin raftq, then $CARGO_TARGET_DIR/debug/raftq)
#   BASE_IMAGE         local path: the imported base (default raftq-base:bookworm)
#   BASE_CACHE         local path: the cached rootfs tarball, reused by later
#                      builds and after `docker system prune`
#                      (default ~/.cache/raftq/docker/raftq-base-bookworm.tar.gz)
#   DEBIAN_MIRROR      for debootstrap (default http://deb.debian.org/debian)
#   PULL_TIMEOUT       seconds a pull of a base image may take (default 900)
#
# Making the base needs root (debootstrap, chroot) and, if debootstrap is
# missing, apt-get; it runs once per machine (about 2-4 minutes), later builds
# import the cached tarball or find the image.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

: "${RAFTQ_DOCKER_MODE:=auto}"
: "${IMAGE:=raftq:latest}"
: "${BASE_IMAGE:=raftq-base:bookworm}"
: "${BASE_CACHE:=${HOME:-/root}/.cache/raftq/docker/raftq-base-bookworm.tar.gz}"
: "${DEBIAN_MIRROR:=http://deb.debian.org/debian}"
SUITE=bookworm

say() { echo "docker-build: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# The external images the Dockerfile's FROM lines name (stage names skipped).
dockerfile_bases() {
    awk 'toupper($1) == "FROM" {
             image = ""
             for (i = 2; i <= NF; i++) if ($i !~ /^--/) { image = $i; break }
             if (image != "" && !(image in stage)) print image
             for (i = 2; i < NF; i++) if (toupper($i) == "AS") stage[$(i + 1)] = 1
         }' "$ROOT/Dockerfile"
}

# True when every base image is present locally or could be pulled now.
bases_available() {
    local image
    for image in $(dockerfile_bases); do
        docker image inspect "$image" >/dev/null 2>&1 && continue
        say "pulling $image"
        # A registry that answers slowly must not hang make test forever.
        if ! timeout "${PULL_TIMEOUT:-900}" docker pull -q "$image" >/dev/null 2>"$WORK/pull.err"; then
            say "cannot pull $image: $(tail -n 1 "$WORK/pull.err")"
            return 1
        fi
    done
}

build_dockerfile() {
    say "Dockerfile path: docker build -t $IMAGE $ROOT"
    docker build -t "$IMAGE" "$ROOT"
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && return 0
    [[ $(id -u) == 0 ]] || die "debootstrap is missing: sudo apt-get install -y debootstrap"
    say "installing debootstrap (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y debootstrap >/dev/null \
        || { apt-get update >/dev/null && apt-get install -y debootstrap >/dev/null; } \
        || die "apt-get install debootstrap failed"
}

# debootstrap a minimal bookworm with ca-certificates and curl (the
# HEALTHCHECK's client) into a tarball at BASE_CACHE.
make_base_tarball() {
    [[ $(id -u) == 0 ]] || die "making the base image needs root (debootstrap); run make docker as root once"
    ensure_debootstrap
    local rootfs=$WORK/rootfs
    say "debootstrap --variant=minbase $SUITE from $DEBIAN_MIRROR (once per machine, a few minutes)"
    if ! debootstrap --variant=minbase --include=ca-certificates,curl \
        "$SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1; then
        tail -n 20 "$WORK/debootstrap.log" >&2
        die "debootstrap failed (full log above)"
    fi
    # What a container never needs; apt and dpkg stay so that derived images
    # can still install packages.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/tmp/*
    mkdir -p "$(dirname "$BASE_CACHE")"
    tar --numeric-owner -C "$rootfs" -czf "$BASE_CACHE.tmp" .
    mv "$BASE_CACHE.tmp" "$BASE_CACHE"
    say "base rootfs cached in $BASE_CACHE ($(du -h "$BASE_CACHE" | cut -f1))"
}

ensure_base_image() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "base image $BASE_IMAGE present"
        return 0
    fi
    [[ -s $BASE_CACHE ]] || make_base_tarball
    say "docker import $BASE_CACHE $BASE_IMAGE"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase --include=ca-certificates,curl $SUITE" \
        "$BASE_CACHE" "$BASE_IMAGE" >/dev/null
}

# Sets BINARY to an up-to-date raftq built on this host.
host_binary() {
    if [[ -n ${RAFTQ:-} ]]; then
        [[ -x $RAFTQ ]] || die "RAFTQ=$RAFTQ is not executable"
        BINARY=$RAFTQ
        return 0
    fi
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/raftq/target}
    say "cargo build --bin raftq (set RAFTQ=path to pack an existing binary instead)"
    (cd "$ROOT" && cargo build --quiet --bin raftq)
    BINARY=$CARGO_TARGET_DIR/debug/raftq
    [[ -x $BINARY ]] || die "cargo build did not produce $BINARY"
}

build_local() {
    say "local path: host binary on a debootstrapped $SUITE base (no registry needed)"
    ensure_base_image
    host_binary
    local context=$WORK/context
    mkdir -p "$context"
    cp "$ROOT/docker/Dockerfile.local" "$context/Dockerfile"
    # Debug info is most of a dev binary's size and no use in a container.
    if command -v strip >/dev/null 2>&1; then
        strip --strip-debug -o "$context/raftq" "$BINARY"
    else
        cp "$BINARY" "$context/raftq"
    fi
    say "docker build -t $IMAGE (docker/Dockerfile.local FROM $BASE_IMAGE, binary $BINARY)"
    docker build -q --build-arg "BASE=$BASE_IMAGE" -t "$IMAGE" "$context" >/dev/null
    # A host newer than bookworm links against a newer glibc than the base has.
    docker run --rm --entrypoint raftq "$IMAGE" --version >/dev/null \
        || die "the host binary does not run on the $SUITE base (built on a newer system?)"
}

main() {
    command -v docker >/dev/null 2>&1 || die "docker is not installed"
    docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/raftq-docker-build.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    case $RAFTQ_DOCKER_MODE in
    dockerfile) build_dockerfile ;;
    local) build_local ;;
    auto)
        if bases_available; then
            build_dockerfile
        else
            say "no registry: falling back to the local path"
            build_local
        fi
        ;;
    *) die "RAFTQ_DOCKER_MODE must be auto, dockerfile or local (got $RAFTQ_DOCKER_MODE)" ;;
    esac
    say "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
