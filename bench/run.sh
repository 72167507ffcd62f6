#!/usr/bin/env bash
# Runs the usage-authz benchmark suite on loopback and writes BENCHMARKS.md
# (and the raw figures to bench/results.json).
#
# Usage: bench/run.sh [suite options]
#   e.g. bench/run.sh --measure-secs 2 --rounds 1   for a quicker, noisier run
#   (see: target/release/usage-authz-bench suite --help)
#
# What it does:
#   1. installs Envoy 1.40.0 into .venv with scripts/install-envoy.sh if missing;
#   2. builds usage-authz and the load generator in release mode;
#   3. runs every server pinned to CPU 0 and the load generator on CPU 1.
# Nothing listens or connects outside 127.0.0.1. Ports 19101-19112 must be
# free. About 5 minutes on 2 cores after the build.
set -euo pipefail

cd "$(dirname "$0")/.."

SERVER_CPUS=0
CLIENT_CPUS=1

if [[ "$(nproc --all)" -lt 2 ]]; then
    echo "bench/run.sh: needs at least 2 CPUs (one for the servers, one for the load generator)" >&2
    exit 1
fi

if ! command -v taskset >/dev/null; then
    echo "bench/run.sh: installing util-linux for taskset" >&2
    apt-get install -y util-linux
fi

# The shared installer pins the Envoy version that envoy/ and bench/envoy.yaml
# are written for, and prints the binary's path.
envoy_bin=$(scripts/install-envoy.sh)

build_started=$(date +%s%N)
cargo build --release -p usage-authz --bin usage-authz
cargo build --release -p usage-authz-bench
build_seconds=$(awk -v start="$build_started" -v end="$(date +%s%N)" 'BEGIN { printf "%.1f", (end - start) / 1e9 }')

revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git diff --quiet HEAD -- . ':(exclude)BENCHMARKS.md' ':(exclude)bench/results.json' 2>/dev/null \
    || [[ -n "$(git ls-files --others --exclude-standard -- src bench Cargo.toml Cargo.lock ':(exclude)bench/results.json' 2>/dev/null)" ]]; then
    revision="$revision with uncommitted changes"
fi

echo "bench/run.sh: load average before the suite: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
taskset -c "$CLIENT_CPUS" target/release/usage-authz-bench suite \
    --usage-authz target/release/usage-authz \
    --envoy "$envoy_bin" \
    --envoy-config bench/envoy.yaml \
    --server-cpus "$SERVER_CPUS" \
    --client-cpus "$CLIENT_CPUS" \
    --command "bench/run.sh" \
    --revision "$revision" \
    --build-seconds "$build_seconds" \
    --out BENCHMARKS.md \
    --json bench/results.json \
    "$@"
