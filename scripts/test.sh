#!/usr/bin/env bash
# Runs every test: unit tests, the gRPC integration tests and the end-to-end
# tests through a real Envoy 1.40.0, which this script installs into .venv.
# Arguments replace the default `--all-targets` selection of `cargo test`,
# e.g. `scripts/test.sh --test envoy_e2e`.
# Everything the tests start listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_BIN=$(scripts/install-envoy.sh)
export ENVOY_BIN
echo "using Envoy at $ENVOY_BIN" >&2

if [[ $# -eq 0 ]]; then
    set -- --all-targets
fi
cargo test --locked "$@"
