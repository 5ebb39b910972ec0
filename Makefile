# raftq: the front door. `make` or `make help` lists the targets; CI runs
# `.ci/run`, which runs `make test`.
#
# One cargo profile (dev) for everything: the binary, the tests and clippy
# share one build of the dependencies. RocksDB alone takes 12-30 minutes to
# compile on 2 cores, so every clone on a machine shares one target dir.

SHELL := /bin/bash
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

export CARGO_TARGET_DIR ?= $(HOME)/.cache/raftq/target
RAFTQ = $(CARGO_TARGET_DIR)/debug/raftq

# Test threads per test binary. The cluster tests spawn real 3-node clusters
# and the CI machine has 2 cores. Set through RUST_TEST_THREADS rather than
# `-- --test-threads=N`: criterion benches (built by --all-targets) reject
# libtest's --test-threads flag, and libtest reads the variable anyway.
TEST_THREADS ?= 2

# Extra hosts (names or IPs) for `make certs`, comma-separated.
CERT_HOSTS ?=
COMMA := ,
EMPTY :=
SPACE := $(EMPTY) $(EMPTY)
# localhost,127.0.0.1 plus CERT_HOSTS, without empty entries from stray commas.
CERT_HOST_LIST = $(subst $(SPACE),$(COMMA),$(strip $(subst $(COMMA),$(SPACE),localhost,127.0.0.1,$(CERT_HOSTS))))

# System packages. RocksDB's bindgen needs libclang plus clang's own headers
# (stddef.h), both from libclang-dev; its C++ sources need a C++ compiler.
APT_PACKAGES = libclang-dev curl

# The pure modules (style guide §2 item 1) must not import I/O crates. The
# check skips comments and the trailing `#[cfg(test)] mod ...` block, where
# tests may read their testdata files. Files are listed one per line, never
# by wildcard: `make lint-imports` fails on a listed file that does not exist,
# so a moved or renamed module cannot drop out of the check unnoticed.
PURE_FILES = \
	src/queue/mod.rs \
	src/queue/retention.rs \
	src/queue/state.rs \
	src/queue/work.rs \
	src/maze/coalesce.rs \
	src/maze/protocol.rs \
	src/maze/state.rs \
	src/membership/reconcile.rs \
	src/membership/bootstrap.rs \
	src/raft/peer_check.rs \
	src/raft/frame.rs \
	src/consumer/sse.rs \
	src/consumer/cursor.rs \
	src/consumer/line.rs \
	src/units.rs \
	src/cmd/maze_verify/workload.rs
# The replicated core (src/sm/): one `PURE_FILES += src/sm/FILE.rs` line per file.
PURE_FILES += src/sm/mod.rs
PURE_FILES += src/sm/core.rs
PURE_FILES += src/sm/command.rs
PURE_FILES += src/sm/dump.rs
PURE_FILES += src/sm/notify.rs
PURE_FILES += src/maze/mod.rs
PURE_FILES += src/replica/view.rs
PURE_FILES += src/wire.rs
FORBIDDEN_IMPORTS = \b(tokio|axum|rocksdb|reqwest|chitchat)\b|\bopenraft::(Raft\b|\{[^}]*\bRaft\b)|\bstd::(net|fs)\b|\bstd::\{[^}]*\b(net|fs)\b

# Wall-clock start of this make invocation, for the elapsed-time lines.
T0 := $(shell date +%s)
ELAPSED = e=$$(( $$(date +%s) - $(T0) )); echo "$$((e / 60))m$$((e % 60))s"

.PHONY: help deps build bin run certs cluster demo lint lint-imports fmt test bench docker clean-data
.PHONY: docker-test fuzz

help:
	@echo "raftq make targets:"
	@echo "  run         one node on 127.0.0.1:8080 (dev certs, RocksDB in ./data)"
	@echo "  test        everything CI runs: lint + all tests (RUST_TEST_THREADS=$(TEST_THREADS))"
	@echo "  cluster     three nodes on loopback (API 8081-8083); Ctrl-C stops them"
	@echo "  demo        the SPEC seed curl transcript with a leader kill, checked"
	@echo "  build       cargo build of the binary and every test target"
	@echo "  lint        fmt --check, clippy -D warnings, doc -D warnings, pure-module imports"
	@echo "  fmt         cargo fmt --all (rewrites files)"
	@echo "  certs       CA + node certificate into ./certs (CERT_HOSTS=h1,h2 adds hosts)"
	@echo "  bench       raftq vs etcd vs NATS (oha + raftq bench), one table; BENCH_ONLY=table re-prints it"
	@echo "  fuzz        network/disk parsers on arbitrary bytes (FUZZ_SECS=30 per target, FUZZ_TARGET=filter)"
	@echo "  docker      raftq:latest from the Dockerfile, or without a registry from a local base"
	@echo "  docker-test 3 containers: seed transcript, docker stop/start of the leader"
	@echo "  deps        install (root) or explain (non-root) missing system packages"
	@echo "  clean-data  rm -rf ./data"
	@echo "CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)"

# Cheap when everything is present: three file checks, no apt-get.
# chromium (Debian's, for the console's browser tests in tests/cluster/
# console.rs, which skip without it) is installed as root, only suggested
# otherwise.
deps:
	@missing=""; \
	have_libclang=no; \
	if [ -n "$${LIBCLANG_PATH:-}" ]; then have_libclang=yes; \
	elif { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -q 'libclang[-.0-9]*\.so' \
	  || ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then \
	  if ls /usr/lib/llvm-*/lib/clang/*/include/stddef.h /usr/lib/clang/*/include/stddef.h \
	       >/dev/null 2>&1; then have_libclang=yes; fi; \
	fi; \
	[ "$$have_libclang" = yes ] || missing="$$missing libclang-dev"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || missing="$$missing g++"; \
	if [ "$$(id -u)" = 0 ]; then \
	  command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	  command -v iptables >/dev/null 2>&1 || missing="$$missing iptables"; \
	  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	    || [ -n "$${RAFTQ_CHROMIUM:-}" ] || missing="$$missing chromium"; \
	fi; \
	if [ "$$(id -u)" != 0 ] && ! command -v chromium >/dev/null 2>&1 \
	   && ! command -v chromium-browser >/dev/null 2>&1 && [ -z "$${RAFTQ_CHROMIUM:-}" ]; then \
	  echo "make deps: chromium not found: the console's browser tests will skip."; \
	  echo "    sudo apt-get install -y chromium"; \
	fi; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	echo "make deps: missing system packages:$$missing"; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y $$missing || { apt-get update && apt-get install -y $$missing; }; \
	else \
	  echo "Install them with:"; \
	  echo "    sudo apt-get update && sudo apt-get install -y$$missing"; \
	  echo "(RocksDB's build needs libclang for bindgen and a C++ compiler; the demo needs curl.)"; \
	  exit 1; \
	fi

build: deps
	cargo build --bins --tests
	@echo "make build: done in $$($(ELAPSED))"

# The binary alone, for run/certs/cluster/demo.
bin: deps
	cargo build --bin raftq

run: bin
	$(RAFTQ) serve --data-dir ./data --api-addr 127.0.0.1:8080 \
		--raft-addr 127.0.0.1:1112 --gossip-addr 127.0.0.1:1111

certs: bin
	$(RAFTQ) certs --out certs --hosts $(CERT_HOST_LIST)

cluster: bin
	RAFTQ=$(RAFTQ) bash scripts/cluster.sh

demo: bin
	RAFTQ=$(RAFTQ) bash scripts/demo.sh

lint-imports:
	@bad=0; \
	for f in $(PURE_FILES); do \
	  if [ ! -f "$$f" ]; then \
	    bad=1; \
	    echo "$$f: listed in the Makefile's PURE_FILES but does not exist (moved? update the list)"; \
	    continue; \
	  fi; \
	  hits=$$(awk 'cfg_test && /^[[:space:]]*(pub(\([a-z]+\))? )?mod [A-Za-z_]+/ { exit } \
	               { cfg_test = ($$0 ~ /^[[:space:]]*#\[cfg\(test\)\]/); \
	                 line = $$0; sub(/\/\/.*/, "", line); print line }' "$$f" \
	          | grep -nE '$(FORBIDDEN_IMPORTS)' || true); \
	  if [ -n "$$hits" ]; then \
	    bad=1; \
	    echo "$$f: pure module imports an I/O crate (style guide §2 item 1):"; \
	    echo "$$hits" | sed -E 's/^([0-9]+):/    line \1: /'; \
	  fi; \
	done; \
	if [ "$$bad" = 1 ]; then exit 1; fi; \
	echo "lint-imports: pure modules are free of I/O imports ($(words $(PURE_FILES)) files)"

lint: deps lint-imports
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

fmt:
	cargo fmt --all

test: deps lint
	@echo "make test: cargo test --all-targets (RUST_TEST_THREADS=$(TEST_THREADS))"
	@RUST_TEST_THREADS=$(TEST_THREADS) cargo test --all-targets \
		|| { echo "make test: FAILED after $$($(ELAPSED))"; exit 1; }
	@# The binary cargo test just built: `cargo build --bin raftq` alone would
	@# resolve features without the dev-dependencies and rebuild a dozen crates.
	@RAFTQ=$(RAFTQ) bash scripts/docker-test.sh \
		|| { echo "make test: docker test FAILED after $$($(ELAPSED))"; exit 1; }
	@echo "make test: passed in $$($(ELAPSED))"

# Release build with the bench-nats feature, then every system in one run;
# see scripts/bench.sh for BENCH_ONLY, BENCH_SYSTEMS, BENCH_KILLS and OUT.
bench:
	@bash scripts/bench.sh

# Not part of `test`: every target in tests/fuzz.rs is #[ignore]d and runs
# for FUZZ_SECS seconds. One thread, so that the allocation counts of one
# input are not mixed with another target's.
FUZZ_SECS ?= 30
FUZZ_TARGET ?= fuzz_
fuzz: deps
	FUZZ_SECS=$(FUZZ_SECS) cargo test --test fuzz -- --ignored --test-threads=1 --nocapture $(FUZZ_TARGET)

# The Dockerfile when its base images can be pulled, else the host binary on
# a debootstrapped base (scripts/docker-build.sh, docs/docker.md).
docker: deps
	bash scripts/docker-build.sh

# Skips with a SKIPPED line when no Docker engine answers.
docker-test: deps
	bash scripts/docker-test.sh

clean-data:
	rm -rf ./data
